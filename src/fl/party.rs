//! A party's run: the one training loop of every mode and every transport.
//!
//! [`run_party`] follows a server's [`Plan`](super::Plan) round by round, moving bytes
//! through an [`Uplink`]: the network transport implements it, and so does the in-process
//! [`HubUplink`](super::HubUplink) that [`run`](super::run) gives each party thread. The
//! local and centralized baselines run the same loop with one party whose update is the
//! aggregate (with one client, FedSGD is ordinary mini-batch training).

use super::client::{Client, Update};
use super::config::ValidConfig;
use super::envelope::{Envelope, EnvelopeCost, EnvelopeError};
use super::error::{PartyError, UplinkError};
use super::metrics::{EpochMetrics, Observer, Overhead, RunMetrics};
use super::plan::ValidPlan;
use super::server::{PartyId, Published, Round};
use super::setup::{envelope, rounding_rng, setup};
use crate::data::{Dataset, Mnist};
use crate::he::keys::SecretKey;
use rand_chacha::ChaCha20Rng;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

/// What the server said to a submission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submitted {
    /// The update is in the round.
    Accepted,
    /// The round closed before the update arrived: this party is left out of it.
    Late(String),
}

/// Moves one party's bytes to and from the server.
pub trait Uplink {
    /// Sends this party's sealed update for `round`.
    fn submit(&mut self, round: Round, bytes: Vec<u8>) -> Result<Submitted, UplinkError>;
    /// Waits for `round`'s published sum.
    fn fetch(&mut self, round: Round) -> Result<Published, UplinkError>;
    /// Tells the server this party skipped `round`: its sum could not be a sum of valid
    /// updates, for `reason` (the server logs it for its operator).
    fn skipped(&mut self, round: Round, reason: &str) -> Result<(), UplinkError>;
}

/// Runs party `party`'s side of a federated run as `plan` says, on its shard of `data`.
///
/// Each round: compute the update, seal it, submit it (if the round already closed, the
/// party is left out of it and says so to `observer`), fetch the round's sum, open it and
/// step. After each epoch the party evaluates its model on the test set.
///
/// A sum that cannot be a sum of valid updates (a weight outside (0, parties], a value
/// beyond what the parties' clipped updates can add up to: some party sent garbage) costs
/// one round, not the run: the party skips that round's step, notes it to `observer` and
/// to the server ([`Uplink::skipped`]), and goes on. Every party opens the same bytes with
/// the same key, so all skip the same rounds and their models stay identical.
pub fn run_party(
    plan: &ValidPlan,
    party: PartyId,
    data: &Mnist,
    key: Option<Arc<SecretKey>>,
    uplink: &mut dyn Uplink,
    observer: &mut dyn Observer,
) -> Result<RunMetrics, PartyError> {
    let started = Instant::now();
    let parties = plan.config.parties;
    if party.0 as usize >= parties {
        return Err(PartyError::NotInFederation { party, parties });
    }
    let mut setup = setup(plan.config(), data, Some(party))?;
    let client = setup
        .clients
        .pop()
        .ok_or(PartyError::NotInFederation { party, parties })?;
    run_client(
        plan,
        client,
        Some(&setup.test),
        key,
        uplink,
        observer,
        started,
    )
}

/// A party's run once its client is built: `test` is `None` for parties that do not
/// report (in one process only party 0 evaluates; all models are identical).
pub(crate) fn run_client(
    plan: &ValidPlan,
    mut client: Client,
    test: Option<&Dataset>,
    key: Option<Arc<SecretKey>>,
    uplink: &mut dyn Uplink,
    observer: &mut dyn Observer,
    started: Instant,
) -> Result<RunMetrics, PartyError> {
    let config = plan.config();
    let envelope = envelope(config, plan.key_id, key, client.model().num_params())?;
    let mut exchange = Federated {
        rng: rounding_rng(config.seed, client.id()),
        nominal: (config.batch_size * config.strategy.steps_per_round()) as f32,
        envelope,
        uplink,
        cost: EnvelopeCost::default(),
        overhead: Overhead {
            privacy: config.privacy,
            ..Overhead::default()
        },
        skipped: Vec::new(),
    };
    let epochs = train(
        config,
        plan.rounds_per_epoch,
        &mut client,
        test,
        &mut exchange,
        observer,
        started,
    )?;
    let mut overhead = exchange.overhead;
    overhead.client_cpu = exchange.cost;
    overhead.skipped_rounds = exchange.skipped;
    Ok(RunMetrics {
        config: config.clone().into_inner(),
        party_samples: vec![client.num_samples()],
        epochs,
        total_seconds: started.elapsed().as_secs_f64(),
        overhead: Some(overhead),
        final_params: client.model().params().to_vec(),
    })
}

/// Trains one client alone (local and centralized baselines): its update is the aggregate.
pub(crate) fn run_alone(
    config: &ValidConfig,
    mut client: Client,
    test: &Dataset,
    observer: &mut dyn Observer,
    started: Instant,
) -> Result<RunMetrics, PartyError> {
    let rounds_per_epoch = config.rounds_per_epoch(client.num_samples());
    let epochs = train(
        config,
        rounds_per_epoch,
        &mut client,
        Some(test),
        &mut Alone,
        observer,
        started,
    )?;
    Ok(RunMetrics {
        config: config.clone().into_inner(),
        party_samples: vec![client.num_samples()],
        epochs,
        total_seconds: started.elapsed().as_secs_f64(),
        overhead: None,
        final_params: client.model().params().to_vec(),
    })
}

/// How a party turns its update into the round's aggregate.
trait Exchange {
    /// The mean update to apply for `round`, given this party's `update`; `None` if the
    /// round is skipped (its sum could not be a sum of valid updates).
    fn aggregate<'a>(
        &'a mut self,
        round: Round,
        update: &'a Update,
        observer: &mut dyn Observer,
    ) -> Result<Option<Cow<'a, [f32]>>, PartyError>;
}

/// One trainer: its update is the aggregate.
struct Alone;

impl Exchange for Alone {
    fn aggregate<'a>(
        &'a mut self,
        _round: Round,
        update: &'a Update,
        _observer: &mut dyn Observer,
    ) -> Result<Option<Cow<'a, [f32]>>, PartyError> {
        Ok(Some(Cow::Borrowed(&update.values)))
    }
}

/// A federation member: seal, submit, fetch, open.
struct Federated<'u> {
    envelope: Envelope,
    rng: ChaCha20Rng,
    /// Samples a round's update stands for at full weight.
    nominal: f32,
    uplink: &'u mut dyn Uplink,
    cost: EnvelopeCost,
    overhead: Overhead,
    /// Rounds skipped because their sum could not be a sum of valid updates.
    skipped: Vec<u64>,
}

impl Exchange for Federated<'_> {
    fn aggregate<'a>(
        &'a mut self,
        round: Round,
        update: &'a Update,
        observer: &mut dyn Observer,
    ) -> Result<Option<Cow<'a, [f32]>>, PartyError> {
        let sealing = Instant::now();
        let weight = update.samples as f32 / self.nominal;
        let bytes = self
            .envelope
            .seal(&update.values, weight, &mut self.rng, &mut self.cost)
            .map_err(|source| PartyError::Envelope { round, source })?;
        self.overhead.seal_seconds += sealing.elapsed().as_secs_f64();
        let uplink_error = |source| PartyError::Uplink { round, source };
        if let Submitted::Late(reason) = self.uplink.submit(round, bytes).map_err(uplink_error)? {
            observer.note(&format!("left out of {round}: {reason}"));
        }
        let published = self.uplink.fetch(round).map_err(uplink_error)?;
        let opening = Instant::now();
        let parties = u32::try_from(published.parties.len()).unwrap_or(u32::MAX);
        let opened = self
            .envelope
            .open(&published.bytes, parties, &mut self.cost);
        self.overhead.open_seconds += opening.elapsed().as_secs_f64();
        match opened {
            Ok(mean) => Ok(Some(Cow::Owned(mean))),
            Err(EnvelopeError::Decode(invalid)) => {
                let reason = format!("its sum is not a sum of valid updates: {invalid}");
                let list: Vec<String> = published.parties.iter().map(|p| p.0.to_string()).collect();
                observer.note(&format!(
                    "skipped {round} (parties {}): {reason}",
                    list.join(", ")
                ));
                if let Err(e) = self.uplink.skipped(round, &reason) {
                    observer.note(&format!("could not tell the server about {round}: {e}"));
                }
                self.skipped.push(round.0);
                Ok(None)
            }
            Err(source) => Err(PartyError::Envelope { round, source }),
        }
    }
}

/// The training loop of every mode: `epochs` passes of `rounds_per_epoch` rounds, each
/// computing the client's update, exchanging it for the round's aggregate and applying that;
/// after each epoch, evaluation on `test` (if this party reports).
fn train(
    config: &ValidConfig,
    rounds_per_epoch: usize,
    client: &mut Client,
    test: Option<&Dataset>,
    exchange: &mut dyn Exchange,
    observer: &mut dyn Observer,
    started: Instant,
) -> Result<Vec<EpochMetrics>, PartyError> {
    observer.start(config, rounds_per_epoch.saturating_mul(config.epochs));
    let mut epochs = Vec::new();
    let mut round = Round(0);
    for epoch in 1..=config.epochs {
        let epoch_start = Instant::now();
        let mut loss_sum = 0.0f64;
        for _ in 0..rounds_per_epoch {
            let update = client.compute_update(config.strategy, config.batch_size);
            loss_sum += f64::from(update.loss);
            match exchange.aggregate(round, &update, observer)? {
                Some(aggregate) => client.apply(config.strategy, &aggregate),
                None => client.skip(config.strategy),
            }
            round = Round(round.0 + 1);
            observer.round(round.0 as usize);
        }
        let Some(test) = test else { continue };
        let eval = client.model().evaluate(test.images.view(), &test.labels);
        let metrics = EpochMetrics {
            epoch,
            test_accuracy: eval.accuracy,
            test_loss: eval.loss,
            train_loss: loss_sum / rounds_per_epoch as f64,
            wall_seconds: epoch_start.elapsed().as_secs_f64(),
            elapsed_seconds: started.elapsed().as_secs_f64(),
            rounds: rounds_per_epoch,
            epsilon: client.epsilon(config.batch_size),
        };
        observer.epoch(config, &metrics);
        epochs.push(metrics);
    }
    Ok(epochs)
}
