//! The plan a server hands every party: the run's configuration and schedule.

use super::config::{ConfigError, Field, Mode, Privacy, TrainConfig, ValidConfig, check_range};
use super::party::{Federation, Party, SetupError};
use super::payload::{PlainShape, PlainSum, Summable};
use super::rules::RoundRules;
use super::seeds::rounding_rng;
use super::server::PartyId;
use crate::data::Partition;
use crate::he::keys::KeyId;
use crate::he::keys::SecretKey;
use crate::he::{CompactVector, Expected};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::ops::Deref;
use std::sync::Arc;

/// Longest run a plan may ask for, in rounds (a bound on untrusted input).
pub const MAX_ROUNDS: u64 = 100_000_000;

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
    #[serde(with = "key_id_hex")]
    pub key_id: Option<KeyId>,
    /// How rounds run: deadlines, the fewest parties in a sum, absences, what the server
    /// keeps (in the plan's JSON at the top level, as `round_timeout_ms`, `min_parties`, ...).
    #[serde(flatten)]
    pub rules: RoundRules,
    /// The run's id: chosen at random by `hefl serve` at its first start and kept in its
    /// state directory, so that two runs of the same settings have different plans (and
    /// fingerprints): a checkpoint of one is refused by the other, by name. `None` for runs
    /// in one process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<RunId>,
}

/// A run's id: 16 random bytes, 32 hex digits in a plan's JSON. Drawn from the operating
/// system's CSPRNG independently of any key or data, so publishing it reveals nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RunId(pub [u8; 16]);

impl RunId {
    /// A fresh run id from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)?;
        Ok(Self(bytes))
    }
}

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RunId({self})")
    }
}

impl std::str::FromStr for RunId {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(text, &mut bytes)
            .map_err(|_| format!("run id {text:?}: expected 32 hex digits"))?;
        Ok(Self(bytes))
    }
}

impl Serialize for RunId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_string().serialize(s)
    }
}

impl<'de> Deserialize<'de> for RunId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A bounded string: untrusted JSON.
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Plan {
    /// Rounds in the whole run.
    ///
    /// ```
    /// use hefl::fl::{Plan, RoundRules, TrainConfig};
    ///
    /// let plan = Plan {
    ///     config: TrainConfig { epochs: 2, ..TrainConfig::default() },
    ///     rounds_per_epoch: 313,
    ///     key_id: None,
    ///     rules: RoundRules::default(),
    ///     run_id: None,
    /// };
    /// assert_eq!(plan.total_rounds(), 626);
    /// ```
    pub fn total_rounds(&self) -> u64 {
        (self.config.epochs as u64).saturating_mul(self.rounds_per_epoch as u64)
    }

    /// The plan's fingerprint: the SHA-256 of its JSON. A public value computed from public
    /// data (the plan every party receives), so it leaks nothing; checkpoints and model
    /// snapshots carry it, and one of another plan is refused.
    pub fn fingerprint(&self) -> [u8; 32] {
        // Serializing a plain struct of numbers and strings cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        Sha256::digest(&json).into()
    }

    /// Checks a plan, the server's before it listens and the one a client receives (untrusted
    /// input) before anything is allocated from it: the configuration passes
    /// [`TrainConfig::validate`] in federated mode, the schedule is bounded, the round rules
    /// pass [`RoundRules::validate`], and a key id is given exactly when privacy is `he`.
    pub fn validate(&self) -> Result<ValidPlan, ConfigError> {
        let config = self.config.validate()?;
        let valid = ValidPlan::new(config, self.rounds_per_epoch, self.key_id, self.rules)?;
        Ok(valid.with_run_id(self.run_id))
    }
}

/// A [`Plan`] that passed [`Plan::validate`].
#[derive(Clone, Debug, PartialEq)]
pub struct ValidPlan {
    plan: Plan,
    config: ValidConfig,
}

impl ValidPlan {
    /// The plan of an already validated configuration: checks the rest as
    /// [`Plan::validate`] does (federated mode, the schedule, the rules, the key id).
    pub fn new(
        config: ValidConfig,
        rounds_per_epoch: usize,
        key_id: Option<KeyId>,
        rules: RoundRules,
    ) -> Result<Self, ConfigError> {
        if config.mode != Mode::Federated {
            return Err(ConfigError::Invalid {
                field: Field::Mode,
                expected: "federated".into(),
                found: config.mode.to_string(),
            });
        }
        check_range(
            Field::RoundsPerEpoch,
            rounds_per_epoch,
            1,
            (MAX_ROUNDS / config.epochs as u64) as usize,
        )?;
        rules.validate(config.parties as u32)?;
        match (config.privacy, key_id) {
            (Privacy::He, None) => {
                return Err(ConfigError::Needs {
                    field: Field::Privacy,
                    needs: "the public key id of the shared key (he mode)".into(),
                });
            }
            (privacy @ (Privacy::Plain | Privacy::Dp), Some(_)) => {
                return Err(ConfigError::Invalid {
                    field: Field::KeyId,
                    expected: "none: only he mode encrypts".into(),
                    found: format!("a key id with privacy {privacy}"),
                });
            }
            _ => {}
        }
        Ok(Self {
            plan: Plan {
                config: config.clone().into_inner(),
                rounds_per_epoch,
                key_id,
                rules,
                run_id: None,
            },
            config,
        })
    }

    /// The same plan for the run `run_id`.
    pub fn with_run_id(mut self, run_id: Option<RunId>) -> Self {
        self.plan.run_id = run_id;
        self
    }

    /// The validated configuration.
    pub fn config(&self) -> &ValidConfig {
        &self.config
    }

    /// What `party` knows of this federation: the [`Party`](super::Party) machine's
    /// description.
    pub fn federation(&self, party: PartyId) -> Result<Federation, ConfigError> {
        let parties = self.config.parties as u32;
        Ok(Federation {
            party,
            parties,
            id_limit: parties,
            min_parties: self.rules.min_parties(parties),
            length: crate::model::param_count(&self.config.layers),
            encoding: self.config.encoding()?,
            privacy: self.config.privacy,
            he: self.key_id.map(|key_id| (key_id, self.config.download)),
            step: self.config.step(),
            snapshot_every: Some(self.rules.snapshot_every),
            run: self.fingerprint(),
        })
    }

    /// What a server checks model snapshots against: in `he` the key id, length and widths
    /// of a snapshot ([`Federation::snapshot_expected_he`]), else `None`.
    pub fn snapshot_expected_he(&self) -> Result<Option<Expected>, ConfigError> {
        self.federation(PartyId(0))?
            .snapshot_expected_he()
            .map_err(|e| ConfigError::Invalid {
                field: Field::SnapshotEvery,
                expected: "model snapshots whose widths fit".into(),
                found: e.to_string(),
            })
    }

    /// Slots of a model snapshot ([`Federation::snapshot_len`]).
    pub fn snapshot_len(&self) -> Result<usize, ConfigError> {
        Ok(self.federation(PartyId(0))?.snapshot_len())
    }

    /// Values on the wire per update: the model's parameters and the update's weight (and,
    /// with secure aggregation, its two canaries).
    pub fn wire_slots(&self) -> usize {
        let canaries = match self.config.secure_agg {
            Some(_) => crate::secagg::CANARY_SLOTS,
            None => 0,
        };
        crate::model::param_count(&self.config.layers) + 1 + canaries
    }

    /// What the server checks `he` submissions against (key id, length, the widths of
    /// [`TrainConfig::widths`]); `None` in the clear modes.
    pub fn expected_he(&self) -> Option<Expected> {
        let widths = self.config.widths().ok()?;
        self.key_id.map(|key_id| Expected {
            key_id,
            plaintext_len: self.wire_slots(),
            widths,
        })
    }

    /// What the server checks `plain` and `dp` submissions against: the wire slots, each
    /// sent as the encoding's t bits ([`Encoding::total_bits`](super::Encoding::total_bits),
    /// what a sum of every party needs).
    pub fn expected_plain(&self) -> PlainShape {
        // A valid configuration has an encoding (`TrainConfig::validate` builds it); 64 bits
        // would only be a looser bound.
        let bits = self.config.encoding().map_or(64, |e| e.total_bits());
        PlainShape {
            len: self.wire_slots(),
            bits,
        }
    }

    /// An upper bound on any valid message of this run, a submission or an aggregate (the
    /// transports' body limit).
    pub fn max_message_len(&self) -> usize {
        match self.expected_he() {
            Some(expect) => <CompactVector as Summable>::max_wire_len(&expect),
            None => <PlainSum as Summable>::max_wire_len(&self.expected_plain()),
        }
    }

    /// What a server checks plain model snapshots against
    /// ([`Federation::snapshot_expected_plain`](super::Federation::snapshot_expected_plain)).
    pub fn snapshot_expected_plain(&self) -> Result<PlainShape, ConfigError> {
        Ok(self.federation(PartyId(0))?.snapshot_expected_plain())
    }

    /// An upper bound on any valid model snapshot of this run (the transports' body limit for
    /// snapshots).
    pub fn max_snapshot_len(&self) -> Result<usize, ConfigError> {
        Ok(match self.snapshot_expected_he()? {
            Some(expect) => <CompactVector as Summable>::max_wire_len(&expect),
            None => <PlainSum as Summable>::max_wire_len(&self.snapshot_expected_plain()?),
        })
    }
}

impl Deref for ValidPlan {
    type Target = Plan;
    fn deref(&self) -> &Plan {
        &self.plan
    }
}

/// The plan a server announces for `config`, without looking at any data: one epoch is
/// one pass over the largest IID shard of `train_size` images (`ceil(train_size / parties)`).
/// Dirichlet shards have sizes only the data knows, so give `rounds_per_epoch` for them.
///
/// ```
/// use hefl::fl::{RoundRules, TrainConfig, plan_for};
///
/// let plan = plan_for(&TrainConfig::default(), 60_000, None, None, RoundRules::default())?;
/// assert_eq!(plan.rounds_per_epoch, 313);
/// # Ok::<(), hefl::fl::ConfigError>(())
/// ```
pub fn plan_for(
    config: &TrainConfig,
    train_size: usize,
    rounds_per_epoch: Option<usize>,
    key_id: Option<KeyId>,
    rules: RoundRules,
) -> Result<ValidPlan, ConfigError> {
    let config = TrainConfig {
        mode: Mode::Federated,
        ..config.clone()
    };
    check_range(Field::TrainSize, train_size, 1, usize::MAX)?;
    let rounds_per_epoch = match (rounds_per_epoch, config.partition) {
        (Some(r), _) => r,
        (None, Partition::Iid) => config.rounds_per_epoch(config.largest_iid_shard(train_size)),
        (None, partition) => {
            return Err(ConfigError::Needs {
                field: Field::Partition,
                needs: format!(
                    "rounds per epoch to be given: with partition {partition} the shard sizes \
                     depend on the labels"
                ),
            });
        }
    };
    Plan {
        config,
        rounds_per_epoch,
        key_id,
        rules,
        run_id: None,
    }
    .validate()
}

/// A key id as a hex string (or null) in JSON.
mod key_id_hex {
    use super::*;

    pub fn serialize<S: Serializer>(id: &Option<KeyId>, s: S) -> Result<S::Ok, S::Error> {
        id.map(|k| k.to_string()).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<KeyId>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| text.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

impl Party {
    /// Party `party` of `plan` at round 0: the plan's initial model (from its seed, layers
    /// and activation) with its learning-rate schedule, and its rounding generator (from its
    /// seed and the party), as every driver of the plan starts it.
    pub fn for_plan(
        plan: &ValidPlan,
        party: PartyId,
        key: Option<Arc<SecretKey>>,
    ) -> Result<Self, PlanPartyError> {
        let federation = plan.federation(party)?;
        let config = &plan.config;
        let initial =
            crate::model::Mlp::with_activation(&config.layers, config.activation, config.seed)?;
        let rounding = rounding_rng(config.seed, party);
        Ok(
            Self::new(federation, initial.params().to_vec(), key, rounding)?
                .with_lr_schedule(config.lr_schedule, plan.total_rounds()),
        )
    }
}

/// Why a party of a plan could not be set up ([`Party::for_plan`]).
#[derive(Debug, thiserror::Error)]
pub enum PlanPartyError {
    /// The plan's encoding does not fit (a plan that passed validation always does).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The plan's model cannot be built.
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    /// The party cannot be set up (key, rules).
    #[error(transparent)]
    Setup(#[from] SetupError),
}
