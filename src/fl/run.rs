//! Running a whole experiment in one process: the baselines with one trainer, a federation
//! as one [`Hub`] and one thread per party, each running [`run_party`](super::run_party)'s
//! loop against the hub through a [`HubUplink`].

use super::client::Client;
use super::config::{Mode, Privacy, TrainConfig, ValidConfig};
use super::driver::{Member, PartyOptions, run_alone};
use super::error::{PartyError, TrainError, UplinkError};
use super::hub::{Hub, HubEvent, HubUplink};
use super::metrics::{Observer, RunMetrics};
use super::plan::ValidPlan;
use super::rules::RoundRules;
use super::server::PartyId;
use super::setup::{Setup, setup};
use crate::data::Mnist;
use crate::he::keys::SecretKey;
use crate::secagg::{Credentials, Identity, Policy, Roster};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Trains as `config` says on `data`, evaluating on the test set after every epoch, and
/// reports progress to `observer`, with the default [`RoundRules`].
///
/// One epoch is one pass over the largest party's shard: with FedSGD that is
/// `ceil(shard / batch)` rounds, with FedAvg `k` times fewer. Federated runs go through a
/// [`Hub`] in this process with the configured privacy mode; `key` is the shared key for
/// `he` (refused if missing).
pub fn run(
    config: &TrainConfig,
    data: &Mnist,
    key: Option<Arc<SecretKey>>,
    observer: &mut dyn Observer,
) -> Result<RunMetrics, TrainError> {
    run_with(
        &config.validate()?,
        RoundRules::default(),
        data,
        key,
        observer,
    )
}

/// [`run`] of a configuration already validated, with the server's round rules given: a
/// simulation of a deployment whose parties all run here (`rules` act as `hefl serve`'s:
/// deadlines, `min_parties`, absences).
pub fn run_with(
    config: &ValidConfig,
    rules: RoundRules,
    data: &Mnist,
    key: Option<Arc<SecretKey>>,
    observer: &mut dyn Observer,
) -> Result<RunMetrics, TrainError> {
    let started = Instant::now();
    let config = config.clone();
    let Setup {
        mut clients,
        test,
        projection,
    } = setup(&config, data, None)?;
    let mut metrics = match config.mode {
        Mode::Local | Mode::Centralized => {
            let client = clients
                .pop()
                .ok_or(TrainError::EmptyShard { party: PartyId(0) })?;
            let metrics = run_alone(&config, client, &test, observer, started)
                .map_err(|e| party_error(PartyId(0), e))?;
            check_finite(PartyId(0), &metrics.final_params)?;
            metrics
        }
        Mode::Federated => {
            let key_id = match (config.privacy, &key) {
                (Privacy::He, None) => return Err(TrainError::MissingKey),
                (Privacy::He, Some(key)) => Some(key.key_id()),
                (Privacy::Plain | Privacy::Dp, _) => None,
            };
            let largest = clients.iter().map(Client::num_samples).max().unwrap_or(0);
            let rounds_per_epoch = config.rounds_per_epoch(largest);
            let plan = ValidPlan::new(config, rounds_per_epoch, key_id, rules)?;
            federate(&plan, clients, &test, key, observer, started)?
        }
    };
    metrics.input_projection = projection;
    Ok(metrics)
}

/// With secure aggregation, one fresh identity per party (made in memory) and their roster
/// (every party in every sum), party 0's first; otherwise none.
fn in_memory_secure_agg(
    plan: &ValidPlan,
    key: Option<&SecretKey>,
) -> Result<Vec<Credentials>, TrainError> {
    let (Some(mode), Some(key)) = (plan.config.secure_agg, key) else {
        return Ok(Vec::new());
    };
    let parties = plan.config.parties as u32;
    let identities = (0..parties)
        .map(|_| Identity::generate())
        .collect::<Result<Vec<_>, _>>()?;
    let policy = Policy {
        mode,
        parties,
        min_parties: parties,
    };
    let keys = identities.iter().map(Identity::public).collect();
    let roster = Arc::new(Roster::new(key.key_id(), keys, policy)?);
    Ok(identities
        .into_iter()
        .map(|identity| Credentials::shared(Arc::new(identity), Arc::clone(&roster)))
        .collect())
}

/// Refuses a final model with NaN or infinite parameters: the run diverged, and saying so
/// beats a comparison of NaNs.
fn check_finite(party: PartyId, params: &[f32]) -> Result<(), TrainError> {
    let Some(index) = params.iter().position(|v| !v.is_finite()) else {
        return Ok(());
    };
    Err(TrainError::NonFinite {
        party,
        count: params.iter().filter(|v| !v.is_finite()).count(),
        index,
    })
}

fn party_error(party: PartyId, error: PartyError) -> TrainError {
    TrainError::Party {
        party,
        source: Box::new(error),
    }
}

fn federate(
    plan: &ValidPlan,
    clients: Vec<Client>,
    test: &crate::data::Dataset,
    key: Option<Arc<SecretKey>>,
    observer: &mut dyn Observer,
    started: Instant,
) -> Result<RunMetrics, TrainError> {
    let party_samples: Vec<usize> = clients.iter().map(Client::num_samples).collect();
    let notes = Arc::new(Mutex::new(Vec::<String>::new()));
    let hub = {
        let notes = Arc::clone(&notes);
        Arc::new(
            Hub::new(plan.clone(), move |event: &HubEvent| {
                // Epoch ends are the observer's own epoch lines here; short rounds are news.
                if let HubEvent::ShortRound { .. } = event {
                    let mut notes = notes.lock().unwrap_or_else(|p| p.into_inner());
                    notes.push(event.to_string());
                }
            })
            .map_err(TrainError::Server)?,
        )
    };

    // Secure aggregation in one process: identities made in memory, their roster.
    let mut identities = in_memory_secure_agg(plan, key.as_deref())?.into_iter();

    // Party 0 runs on this thread and reports to `observer`; the others on their own.
    let options = PartyOptions::default();
    let mut clients = clients.into_iter();
    let first = clients
        .next()
        .ok_or(TrainError::EmptyShard { party: PartyId(0) })?;
    let first_secure_agg = identities.next();
    let results = std::thread::scope(|scope| {
        let others: Vec<_> = clients
            .map(|client| {
                let (hub, key) = (Arc::clone(&hub), key.clone());
                let party = client.id();
                let options = &options;
                let secure_agg = identities.next();
                let handle = scope.spawn(move || {
                    let mut uplink = HubUplink::new(Arc::clone(&hub), party);
                    let member = Member {
                        plan,
                        client,
                        test: None,
                        key,
                        options,
                        started,
                        secure_agg,
                    };
                    let result = member.run(&mut uplink, &mut ());
                    if result.is_err() {
                        hub.stop();
                    }
                    result
                });
                (party, handle)
            })
            .collect();
        let mut uplink = HubUplink::new(Arc::clone(&hub), PartyId(0));
        let member = Member {
            plan,
            client: first,
            test: Some(test),
            key: key.clone(),
            options: &options,
            started,
            secure_agg: first_secure_agg,
        };
        let first = member.run(&mut uplink, observer);
        if first.is_err() {
            hub.stop();
        }
        let mut results = vec![(PartyId(0), first)];
        for (party, handle) in others {
            let result = handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            results.push((party, result));
        }
        results
    });
    for note in notes.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
        observer.note(&note);
    }

    // The cause is the failure of a party that was not merely stopped by another's.
    let (runs, mut failures): (Vec<_>, Vec<_>) = results.into_iter().partition(|(_, r)| r.is_ok());
    if !failures.is_empty() {
        let cause = failures
            .iter()
            .position(|(_, r)| {
                !matches!(
                    r,
                    Err(PartyError::Uplink {
                        source: UplinkError::Stopped,
                        ..
                    })
                )
            })
            .unwrap_or(0);
        let (party, result) = failures.swap_remove(cause);
        if let Err(error) = result {
            return Err(party_error(party, error));
        }
    }
    let runs: Vec<(PartyId, RunMetrics)> = runs
        .into_iter()
        .filter_map(|(party, r)| r.ok().map(|run| (party, run)))
        .collect();
    for (party, run) in &runs {
        check_finite(*party, &run.final_params)?;
    }
    let mut runs = runs.into_iter();
    let Some((_, mut metrics)) = runs.next() else {
        return Err(TrainError::EmptyShard { party: PartyId(0) });
    };
    // Bit patterns: the parties must agree exactly, and a float comparison would not.
    let bits = |params: &[f32]| params.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let first = bits(&metrics.final_params);
    for (party, run) in runs {
        if bits(&run.final_params) != first {
            return Err(TrainError::Diverged { party });
        }
        if let (Some(total), Some(other)) = (metrics.overhead.as_mut(), run.overhead) {
            total.client_cpu.add(&other.client_cpu);
        }
    }
    if let Some(overhead) = metrics.overhead.as_mut() {
        overhead.server_seconds = hub.server_seconds();
    }
    metrics.party_samples = party_samples;
    metrics.total_seconds = started.elapsed().as_secs_f64();
    Ok(metrics)
}
