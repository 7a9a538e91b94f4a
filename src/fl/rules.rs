//! When a round closes, whom it waits for, how long the server keeps what it published, and
//! when it gives up: the one home of these rules.
//!
//! [`RoundRules`] travel in the [`Plan`](super::Plan), so that a client can check what
//! depends on them (a published sum must hold at least [`RoundRules::min_parties`] updates),
//! and are validated once, with the plan ([`Plan::validate`](super::Plan::validate)). The
//! [`Server`](super::Server) runs its rounds by them, the [`Hub`](super::Hub) its clock, and
//! an in-process run ([`run_with`](super::run_with)) exactly as a deployment's `hefl serve`.

use super::config::{ConfigError, Field, check_range};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::time::Duration;

/// Longest round deadline a plan may set.
pub const MAX_ROUND_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Most published aggregates a server keeps by default.
pub const DEFAULT_KEEP_ROUNDS: usize = 64;
/// Missed rounds in a row after which a party is gone, by default.
pub const DEFAULT_ABSENT_AFTER: u32 = 3;
/// Rounds between encrypted model snapshots, by default (see [`RoundRules::snapshot_every`]).
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 32;
/// Most missed rounds `absent_after` may allow.
const MAX_ABSENT_AFTER: usize = 1_000_000;
/// Most published rounds a server may be asked to keep.
const MAX_KEEP_ROUNDS: usize = 100_000;
/// Shortest and longest join and idle timeouts accepted.
const TIMEOUT_RANGE: (Duration, Duration) = (
    Duration::from_millis(100),
    Duration::from_secs(7 * 24 * 3600),
);

/// How a federation's rounds run: the one home of these rules, carried in the
/// [`Plan`](super::Plan) and validated once with it.
///
/// ```
/// use hefl::fl::{Field, RoundRules};
/// use std::time::Duration;
///
/// let rules = RoundRules { min_parties: Some(2), ..RoundRules::default() };
/// assert!(rules.validate(3).is_ok());
/// assert_eq!(rules.min_parties(3), 2);
/// assert_eq!(RoundRules::default().min_parties(3), 3);
/// let err = RoundRules { min_parties: Some(4), ..rules }.validate(3).unwrap_err();
/// assert_eq!(err.to_string(), "min_parties is 4, expected 1 to 3");
/// let idle = RoundRules { idle_timeout: Duration::from_secs(5), ..rules };
/// assert_eq!(idle.validate(3).unwrap_err().field(), Field::IdleTimeout);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundRules {
    /// Time from a round's opening to its deadline.
    #[serde(rename = "round_timeout_ms", with = "millis")]
    pub round_timeout: Duration,
    /// A round closes at its deadline if at least this many parties submitted (`None`: all
    /// of them). Clients refuse a published sum of fewer.
    #[serde(default)]
    pub min_parties: Option<u32>,
    /// A party that missed this many rounds in a row is gone: rounds stop waiting for it (and
    /// keeping sums for it) until it submits on time again.
    #[serde(default = "default_absent_after")]
    pub absent_after: u32,
    /// The first round's clock starts when every party is ready (its data loaded), or after
    /// this long if `min_parties` are.
    #[serde(
        rename = "join_timeout_ms",
        with = "millis",
        default = "default_join_timeout"
    )]
    pub join_timeout: Duration,
    /// The server gives up when no party has been heard from (joined, an update accepted, the
    /// last sum fetched for the first time) for this long. Longer than the round deadline.
    #[serde(
        rename = "idle_timeout_ms",
        with = "millis",
        default = "default_idle_timeout"
    )]
    pub idle_timeout: Duration,
    /// Most published sums the server keeps for parties that fall behind (a memory bound); a
    /// sum is dropped sooner once no party may still ask for it.
    #[serde(default = "default_keep_rounds")]
    pub keep_rounds: usize,
    /// Every this many rounds one party uploads its model, encrypted like an update (a
    /// snapshot): a party further behind than the kept sums resyncs from the latest snapshot
    /// and the sums after it. At most `keep_rounds`.
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every: u64,
}

fn default_absent_after() -> u32 {
    DEFAULT_ABSENT_AFTER
}

fn default_join_timeout() -> Duration {
    Duration::from_secs(300)
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(600)
}

fn default_keep_rounds() -> usize {
    DEFAULT_KEEP_ROUNDS
}

fn default_snapshot_every() -> u64 {
    DEFAULT_SNAPSHOT_EVERY
}

impl Default for RoundRules {
    /// Every party in every round, a 30-second deadline, a party gone after 3 missed rounds,
    /// 5 minutes to join, 10 minutes of silence before the server gives up, 64 sums kept, a
    /// snapshot every 32 rounds.
    fn default() -> Self {
        Self {
            round_timeout: Duration::from_secs(30),
            min_parties: None,
            absent_after: DEFAULT_ABSENT_AFTER,
            join_timeout: default_join_timeout(),
            idle_timeout: default_idle_timeout(),
            keep_rounds: DEFAULT_KEEP_ROUNDS,
            snapshot_every: DEFAULT_SNAPSHOT_EVERY,
        }
    }
}

impl RoundRules {
    /// The fewest parties a round may close with in a federation of `parties`.
    pub fn min_parties(&self, parties: u32) -> u32 {
        self.min_parties.unwrap_or(parties)
    }

    /// Checks every bound for a federation of `parties`: a deadline of more than 0 and at
    /// most a day, `min_parties` from 1 to `parties`, `absent_after` from 1 to 1,000,000,
    /// join and idle timeouts from 100 ms to 7 days with the idle timeout longer than the
    /// deadline (a server must not give up on parties that wait for a round in progress),
    /// `keep_rounds` from 1 to 100,000 and `snapshot_every` from 1 to `keep_rounds`.
    pub fn validate(&self, parties: u32) -> Result<(), ConfigError> {
        if self.round_timeout.is_zero() || self.round_timeout > MAX_ROUND_TIMEOUT {
            return Err(ConfigError::Invalid {
                field: Field::RoundTimeout,
                expected: format!("more than 0 and at most {MAX_ROUND_TIMEOUT:?}"),
                found: format!("{:?}", self.round_timeout),
            });
        }
        check_range(
            Field::MinParties,
            self.min_parties(parties) as usize,
            1,
            parties as usize,
        )?;
        check_range(
            Field::AbsentAfter,
            self.absent_after as usize,
            1,
            MAX_ABSENT_AFTER,
        )?;
        for (field, value) in [
            (Field::JoinTimeout, self.join_timeout),
            (Field::IdleTimeout, self.idle_timeout),
        ] {
            if !(TIMEOUT_RANGE.0..=TIMEOUT_RANGE.1).contains(&value) {
                return Err(ConfigError::Invalid {
                    field,
                    expected: "a duration from 100ms to 7 days".into(),
                    found: format!("{value:?}"),
                });
            }
        }
        if self.idle_timeout <= self.round_timeout {
            return Err(ConfigError::Invalid {
                field: Field::IdleTimeout,
                expected: format!(
                    "longer than the round deadline ({:?}): parties waiting for a round are \
                     not idle",
                    self.round_timeout
                ),
                found: format!("{:?}", self.idle_timeout),
            });
        }
        check_range(Field::KeepRounds, self.keep_rounds, 1, MAX_KEEP_ROUNDS)?;
        check_range(
            Field::SnapshotEvery,
            usize::try_from(self.snapshot_every).unwrap_or(usize::MAX),
            1,
            self.keep_rounds,
        )
    }
}

/// A duration as whole milliseconds in JSON.
pub(crate) mod millis {
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
