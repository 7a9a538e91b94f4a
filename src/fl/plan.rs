//! The plan a server hands every party: the run's configuration and schedule.

use super::config::{ConfigError, Field, Mode, Privacy, TrainConfig, ValidConfig, check_range};
use super::payload::{PlainSum, Summable};
use crate::data::Partition;
use crate::he::keys::KeyId;
use crate::he::{CompactVector, Expected};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ops::Deref;
use std::time::Duration;

/// Longest run a plan may ask for, in rounds (a bound on untrusted input).
pub const MAX_ROUNDS: u64 = 100_000_000;
/// Longest round deadline a plan may set.
pub const MAX_ROUND_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

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
    /// The server's round deadline.
    #[serde(rename = "round_timeout_ms", with = "millis")]
    pub round_timeout: Duration,
}

impl Plan {
    /// Rounds in the whole run.
    ///
    /// ```
    /// use hefl::fl::{Plan, TrainConfig};
    /// use std::time::Duration;
    ///
    /// let plan = Plan {
    ///     config: TrainConfig { epochs: 2, ..TrainConfig::default() },
    ///     rounds_per_epoch: 313,
    ///     key_id: None,
    ///     round_timeout: Duration::from_secs(30),
    /// };
    /// assert_eq!(plan.total_rounds(), 626);
    /// ```
    pub fn total_rounds(&self) -> u64 {
        (self.config.epochs as u64).saturating_mul(self.rounds_per_epoch as u64)
    }

    /// Checks a plan, the server's before it listens and the one a client receives (untrusted
    /// input) before anything is allocated from it: the configuration passes
    /// [`TrainConfig::validate`] in federated mode, the schedule is bounded, and a key id is
    /// given exactly when privacy is `he`.
    pub fn validate(&self) -> Result<ValidPlan, ConfigError> {
        if self.config.mode != Mode::Federated {
            return Err(ConfigError::Invalid {
                field: Field::Mode,
                expected: "federated".into(),
                found: self.config.mode.to_string(),
            });
        }
        let config = self.config.validate()?;
        check_range(
            Field::RoundsPerEpoch,
            self.rounds_per_epoch,
            1,
            (MAX_ROUNDS / config.epochs as u64) as usize,
        )?;
        if self.round_timeout.is_zero() || self.round_timeout > MAX_ROUND_TIMEOUT {
            return Err(ConfigError::Invalid {
                field: Field::RoundTimeout,
                expected: format!("more than 0 and at most {MAX_ROUND_TIMEOUT:?}"),
                found: format!("{:?}", self.round_timeout),
            });
        }
        match (config.privacy, self.key_id) {
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
        Ok(ValidPlan {
            plan: self.clone(),
            config,
        })
    }
}

/// A [`Plan`] that passed [`Plan::validate`].
#[derive(Clone, Debug, PartialEq)]
pub struct ValidPlan {
    plan: Plan,
    config: ValidConfig,
}

impl ValidPlan {
    /// The validated configuration.
    pub fn config(&self) -> &ValidConfig {
        &self.config
    }

    /// Values on the wire per update: the model's parameters and the update's weight.
    pub fn wire_slots(&self) -> usize {
        crate::model::param_count(&self.config.layers) + 1
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

    /// An upper bound on any valid message of this run, a submission or an aggregate (the
    /// transports' body limit).
    pub fn max_message_len(&self) -> usize {
        match self.expected_he() {
            Some(expect) => <CompactVector as Summable>::max_wire_len(&expect),
            None => <PlainSum as Summable>::max_wire_len(&self.wire_slots()),
        }
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
/// use hefl::fl::{TrainConfig, plan_for};
/// use std::time::Duration;
///
/// let plan = plan_for(&TrainConfig::default(), 60_000, None, None, Duration::from_secs(30))?;
/// assert_eq!(plan.rounds_per_epoch, 313);
/// # Ok::<(), hefl::fl::ConfigError>(())
/// ```
pub fn plan_for(
    config: &TrainConfig,
    train_size: usize,
    rounds_per_epoch: Option<usize>,
    key_id: Option<KeyId>,
    round_timeout: Duration,
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
        round_timeout,
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

/// A duration as whole milliseconds in JSON.
mod millis {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        u64::try_from(d.as_millis())
            .unwrap_or(u64::MAX)
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}
