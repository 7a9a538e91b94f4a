//! One party of a federation whose server runs elsewhere: it follows the server's [`Plan`]
//! round by round, moving bytes through an [`Uplink`] (the network transport implements it).

use super::client::Client;
use super::federation::{fixed_point, rounding_rng};
use super::privacy::{Envelope, EnvelopeCost, EnvelopeError, Privacy};
use super::server::{PartyId, Round};
use super::train::{EpochMetrics, Mode, Observer, RunMetrics, TrainConfig, TrainError};
use super::{Overhead, clients_and_test_set};
use crate::data::Mnist;
use crate::he::MAX_PLAINTEXT_LEN;
use crate::he::keys::SecretKey;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;

/// Longest run a plan may ask for, in rounds (a sanity bound on untrusted input).
const MAX_ROUNDS: u64 = 100_000_000;

/// What a server tells every party when it joins: the run's configuration and schedule.
///
/// Every party builds the same initial model from `config.seed` and `config.layers`,
/// so the server never holds or sends a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The federated run: strategy, privacy mode, optimizer, seed, model shape, epochs.
    pub config: TrainConfig,
    /// Rounds per epoch, decided by the server.
    pub rounds_per_epoch: usize,
    /// In `he` mode, the public id of the key updates must be encrypted under.
    pub key_id: Option<String>,
    /// The server's round deadline, in milliseconds.
    pub round_timeout_ms: u64,
}

impl Plan {
    /// Rounds in the whole run.
    ///
    /// ```
    /// use hefl::fl::{Mode, Plan, TrainConfig};
    ///
    /// let plan = Plan {
    ///     config: TrainConfig { epochs: 2, ..TrainConfig::default() },
    ///     rounds_per_epoch: 313,
    ///     key_id: None,
    ///     round_timeout_ms: 30_000,
    /// };
    /// assert_eq!(plan.total_rounds(), 626);
    /// ```
    pub fn total_rounds(&self) -> u64 {
        (self.config.epochs as u64).saturating_mul(self.rounds_per_epoch as u64)
    }

    /// Checks a plan received from a server (untrusted input) before anything is allocated
    /// from it.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(format!("server plan refused: {m}")));
        if self.config.mode != Mode::Federated {
            return bad(format!("mode is {}, expected federated", self.config.mode));
        }
        if self.rounds_per_epoch == 0 || self.total_rounds() > MAX_ROUNDS {
            return bad(format!(
                "{} epochs of {} rounds, expected 1 to {MAX_ROUNDS} rounds",
                self.config.epochs, self.rounds_per_epoch
            ));
        }
        let params = self.config.layers.windows(2).try_fold(0usize, |acc, w| {
            w[0].checked_mul(w[1])?.checked_add(w[1])?.checked_add(acc)
        });
        if params.is_none_or(|p| p >= MAX_PLAINTEXT_LEN) {
            return bad(format!(
                "layers {:?} exceed {MAX_PLAINTEXT_LEN} parameters",
                self.config.layers
            ));
        }
        if (self.config.privacy == Privacy::He) != self.key_id.is_some() {
            return bad("a key id is given exactly when privacy is he".into());
        }
        Ok(())
    }
}

/// What the server said to a submission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submitted {
    /// The update is in the round.
    Accepted,
    /// The round closed before the update arrived: this party is left out of it.
    Late(String),
}

/// A transport failure or a refusal the party cannot recover from.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UplinkError(pub String);

/// Moves one party's bytes to and from the server.
pub trait Uplink {
    /// Sends this party's sealed update for `round`.
    fn submit(&mut self, round: Round, bytes: Vec<u8>) -> Result<Submitted, UplinkError>;
    /// Waits for `round`'s published sum: the parties in it and its bytes.
    fn fetch(&mut self, round: Round) -> Result<(Vec<PartyId>, Vec<u8>), UplinkError>;
}

/// Why a party's run stopped.
#[derive(Debug, thiserror::Error)]
pub enum PartyError {
    /// The plan or the local data did not fit.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// The transport failed.
    #[error("{round}: {source}")]
    Uplink {
        /// The round.
        round: Round,
        /// What failed.
        source: UplinkError,
    },
    /// Sealing or opening failed.
    #[error("{round}: {source}")]
    Envelope {
        /// The round.
        round: Round,
        /// What failed.
        source: EnvelopeError,
    },
    /// The key file does not match the server's key id, or is missing.
    #[error("{0}")]
    Key(String),
}

/// Runs party `party`'s side of a federated run as `plan` says, on its shard of `data`.
///
/// Each round: compute the update, seal it, submit it (if the round already closed, the
/// party is left out of it and says so to `observer`), fetch the round's sum, open it and
/// step. After each epoch the party evaluates its model on the test set.
pub fn run_party(
    plan: &Plan,
    party: usize,
    data: &Mnist,
    key: Option<Arc<SecretKey>>,
    uplink: &mut dyn Uplink,
    observer: &mut dyn Observer,
) -> Result<RunMetrics, PartyError> {
    plan.validate()?;
    let started = Instant::now();
    let config = &plan.config;
    if party >= config.parties {
        return Err(TrainError::Config(format!(
            "party {party} is not in this federation of {} parties",
            config.parties
        ))
        .into());
    }
    let (clients, test) = clients_and_test_set(config, data, Some(party))?;
    let mut client: Client = clients
        .into_iter()
        .next()
        .ok_or_else(|| TrainError::Config(format!("no shard for party {party}")))?;
    let fp = fixed_point(config.parties)?;
    let len = client.model().num_params();
    let envelope = match (config.privacy, key) {
        (Privacy::Plain | Privacy::Dp, _) => Envelope::plain(fp, len),
        (Privacy::He, None) => {
            return Err(PartyError::Key(
                "the server runs privacy he: pass the shared key file (--key)".into(),
            ));
        }
        (Privacy::He, Some(key)) => {
            let ours = key.key_id().to_string();
            if plan.key_id.as_deref() != Some(ours.as_str()) {
                return Err(PartyError::Key(format!(
                    "key id mismatch: the server expects {}, this key file is {ours}",
                    plan.key_id.as_deref().unwrap_or("none")
                )));
            }
            Envelope::he(fp, key, len)
        }
    };
    let mut rng = rounding_rng(config.seed, party);
    let nominal = (config.batch_size * config.strategy.steps_per_round()) as f32;
    let mut cost = EnvelopeCost::default();
    let mut overhead = Overhead {
        privacy: config.privacy,
        ..Overhead::default()
    };
    observer.start(config, plan.rounds_per_epoch * config.epochs);

    let mut epochs = Vec::with_capacity(config.epochs);
    let mut round = Round(0);
    for epoch in 1..=config.epochs {
        let epoch_start = Instant::now();
        let mut loss_sum = 0.0f64;
        for _ in 0..plan.rounds_per_epoch {
            let update = client.compute_update(config.strategy, config.batch_size);
            loss_sum += f64::from(update.loss);
            let sealing = Instant::now();
            let weight = update.samples as f32 / nominal;
            let bytes = envelope
                .seal(&update.values, weight, &mut rng, &mut cost)
                .map_err(|source| PartyError::Envelope { round, source })?;
            overhead.seal_seconds += sealing.elapsed().as_secs_f64();
            let uplink_error = |source| PartyError::Uplink { round, source };
            if let Submitted::Late(reason) = uplink.submit(round, bytes).map_err(uplink_error)? {
                observer.note(&format!("left out of {round}: {reason}"));
            }
            let (parties, sum) = uplink.fetch(round).map_err(uplink_error)?;
            let opening = Instant::now();
            let mean = envelope
                .open(&sum, parties.len() as u32, &mut cost)
                .map_err(|source| PartyError::Envelope { round, source })?;
            overhead.open_seconds += opening.elapsed().as_secs_f64();
            client.apply(config.strategy, &mean);
            round = Round(round.0 + 1);
            observer.round(round.0 as usize);
        }
        let eval = client.model().evaluate(test.images.view(), &test.labels);
        let metrics = EpochMetrics {
            epoch,
            test_accuracy: eval.accuracy,
            test_loss: eval.loss,
            train_loss: loss_sum / plan.rounds_per_epoch as f64,
            wall_seconds: epoch_start.elapsed().as_secs_f64(),
            elapsed_seconds: started.elapsed().as_secs_f64(),
            rounds: plan.rounds_per_epoch,
            epsilon: client.epsilon(config.batch_size),
        };
        observer.epoch(config, &metrics);
        epochs.push(metrics);
    }
    overhead.client_cpu = cost;
    Ok(RunMetrics {
        config: config.clone(),
        party_samples: vec![client.num_samples()],
        epochs,
        total_seconds: started.elapsed().as_secs_f64(),
        overhead: Some(overhead),
        final_params: client.model().params().to_vec(),
    })
}

/// The plan a server announces for `config`, without looking at any data: one epoch is
/// one pass over the largest IID shard of `train_size` images (`ceil(train_size / parties)`).
/// Dirichlet shards have sizes only the data knows, so give `rounds_per_epoch` for them.
///
/// ```
/// use hefl::fl::{TrainConfig, plan_for};
///
/// let plan = plan_for(&TrainConfig::default(), 60_000, None, None, 30_000)?;
/// assert_eq!(plan.rounds_per_epoch, 313);
/// # Ok::<(), hefl::fl::TrainError>(())
/// ```
pub fn plan_for(
    config: &TrainConfig,
    train_size: usize,
    rounds_per_epoch: Option<usize>,
    key_id: Option<String>,
    round_timeout_ms: u64,
) -> Result<Plan, TrainError> {
    let config = TrainConfig {
        mode: Mode::Federated,
        ..config.clone()
    };
    let rounds_per_epoch = match (rounds_per_epoch, config.partition) {
        (Some(r), _) => r,
        (None, crate::data::Partition::Iid) => {
            config.rounds_per_epoch(config.largest_iid_shard(train_size))
        }
        (None, partition) => {
            return Err(TrainError::Config(format!(
                "with partition {partition} the shard sizes depend on the labels: \
                 give --rounds-per-epoch"
            )));
        }
    };
    let plan = Plan {
        config,
        rounds_per_epoch,
        key_id,
        round_timeout_ms,
    };
    plan.validate()?;
    Ok(plan)
}
