//! The server's side of a round: collect one update per party, fold them, publish the sum.
//!
//! [`Server`] is a state machine with no clock of its own and no I/O: transports call
//! [`Server::submit`] with the bytes a party sent, [`Server::tick`] with the time, and
//! [`Server::aggregate`] when a party asks for a round's sum. It holds no key and no model.
//! It is generic over the [`Summable`] payload, so a `Server<EncryptedVector>` (the `he`
//! mode) can only ever hold ciphertexts: there is no field, argument or method through which
//! a plaintext vector or a key could reach it.

use super::config::{ConfigError, Field, MAX_PARTIES, check_range};
use super::payload::{PayloadError, Summable};
use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A party's index, `0..parties`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartyId(pub u32);

impl fmt::Display for PartyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "party {}", self.0)
    }
}

/// A round number, starting at 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Round(pub u64);

impl fmt::Display for Round {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "round {}", self.0)
    }
}

/// Most published aggregates a server keeps by default.
pub const DEFAULT_KEEP_ROUNDS: usize = 64;
/// Missed rounds in a row after which a party is gone, by default.
pub const DEFAULT_ABSENT_AFTER: u32 = 3;

/// How a server runs its rounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Parties in the federation, with ids `0..parties`.
    pub parties: u32,
    /// A round closes at its deadline only if at least this many parties submitted.
    pub min_parties: u32,
    /// Time from a round's opening to its deadline.
    pub round_timeout: Duration,
    /// Most published aggregates kept for parties that fall behind (a memory bound). An
    /// aggregate is dropped sooner, once every party not [gone](Server::is_gone) has
    /// fetched it.
    pub keep_rounds: usize,
    /// A party that missed this many rounds in a row is gone: rounds stop waiting for it
    /// (and keeping aggregates for it) until it submits on time again.
    pub absent_after: u32,
}

impl ServerConfig {
    /// Refuses a federation without parties, a `min_parties` outside `1..=parties`, a zero
    /// deadline, and keeping no published round.
    ///
    /// ```
    /// use hefl::fl::{Field, ServerConfig};
    ///
    /// let bad = ServerConfig { min_parties: 4, ..ServerConfig::new(3) };
    /// assert_eq!(bad.validate().unwrap_err().field(), Field::MinParties);
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        let parties = self.parties as usize;
        check_range(Field::Parties, parties, 1, MAX_PARTIES)?;
        check_range(Field::MinParties, self.min_parties as usize, 1, parties)?;
        if self.round_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                field: Field::RoundTimeout,
                expected: "a positive duration".into(),
                found: "0".into(),
            });
        }
        if self.absent_after == 0 {
            return Err(ConfigError::Invalid {
                field: Field::AbsentAfter,
                expected: "at least one missed round".into(),
                found: "0".into(),
            });
        }
        if self.keep_rounds == 0 {
            return Err(ConfigError::Invalid {
                field: Field::KeepRounds,
                expected: "at least one published round kept".into(),
                found: "0".into(),
            });
        }
        Ok(())
    }

    /// All `parties` required, a 30-second deadline, at most 64 aggregates kept, a party
    /// gone after 3 missed rounds in a row.
    ///
    /// ```
    /// let c = hefl::fl::ServerConfig::new(3);
    /// assert_eq!((c.parties, c.min_parties), (3, 3));
    /// ```
    pub fn new(parties: u32) -> Self {
        Self {
            parties,
            min_parties: parties,
            round_timeout: Duration::from_secs(30),
            keep_rounds: DEFAULT_KEEP_ROUNDS,
            absent_after: DEFAULT_ABSENT_AFTER,
        }
    }
}

/// A closed round: the sum of the included parties' updates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The round.
    pub round: Round,
    /// The parties whose updates are in the sum, ascending.
    pub parties: Vec<PartyId>,
    /// The summed payload's wire bytes (shared, not copied, per reader).
    pub bytes: Arc<Vec<u8>>,
}

/// Why the server refused a request. The round and the other parties' submissions are
/// unaffected by a refusal.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The server has no such party.
    #[error("unknown {party}: this federation has parties 0 to {}", .parties - 1)]
    UnknownParty {
        /// The party named in the request.
        party: PartyId,
        /// Parties in the federation.
        parties: u32,
    },
    /// An update for a round other than the open one.
    #[error("update for {sent}, server is on {current}")]
    WrongRound {
        /// Round named in the update.
        sent: Round,
        /// The open round.
        current: Round,
    },
    /// A second update from the same party in one round.
    #[error("{party} already submitted an update for {round}")]
    Duplicate {
        /// The party.
        party: PartyId,
        /// The round.
        round: Round,
    },
    /// The update's bytes failed validation (key id, parameter set, length, shape).
    #[error("{party}, {round}: {source}")]
    Payload {
        /// The party.
        party: PartyId,
        /// The round.
        round: Round,
        /// What was wrong.
        source: PayloadError,
    },
    /// The round asked for is not open yet.
    #[error("no aggregate for {asked}: the server is on {current}")]
    NotYet {
        /// The round asked for.
        asked: Round,
        /// The open round.
        current: Round,
    },
    /// The aggregate asked for is no longer kept: the asking party missed it.
    #[error(
        "no aggregate for {asked}: it was dropped (the server is on {current}; it keeps a sum until every party not gone has fetched it, and at most {kept}). This party cannot catch up: restart it from a checkpoint (--state-dir) newer than {asked}, or leave it out of this federation"
    )]
    NoSuchAggregate {
        /// The round asked for.
        asked: Round,
        /// The open round.
        current: Round,
        /// Most rounds kept.
        kept: usize,
    },
}

impl Refusal {
    /// Whether the party's update for the round is already in (a retried submission).
    pub fn is_duplicate(&self) -> bool {
        matches!(self, Self::Duplicate { .. })
    }

    /// Whether the request named a round the server has already closed: the sender
    /// missed the deadline and is left out of that round.
    pub fn is_late(&self) -> bool {
        matches!(self, Self::WrongRound { sent, current } if sent < current)
    }
}

/// A server's state between rounds: what its checkpoint holds ([`Server::snapshot`]). The
/// open round's submissions are not in it: after a restart the parties send them again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSnapshot {
    /// The open round.
    pub round: Round,
    /// Rounds each party missed in a row.
    pub missed: Vec<u32>,
    /// The first round each party has not fetched.
    pub next_fetch: Vec<u64>,
    /// The oldest round each party may still ask for.
    pub keep_from: Vec<u64>,
    /// The sums still kept.
    pub published: Vec<Published>,
}

/// Runs rounds over payloads of type `S`: collects one update per party, folds them,
/// publishes the sum.
///
/// A state machine with no clock of its own and no I/O: transports call
/// [`Server::submit`] with the bytes a party sent, [`Server::tick`] with the time, and
/// [`Server::aggregate`] when a party asks for a round's sum. It holds no key and no model,
/// and as a `Server<EncryptedVector>` (the `he` mode) nothing it holds can be anything but
/// ciphertext: no field, argument or method lets a plaintext vector or a key reach it.
///
/// ```
/// use hefl::fl::{PartyId, PlainSum, Round, Server, ServerConfig, Summable};
/// use std::time::Instant;
///
/// let now = Instant::now();
/// let mut server = Server::<PlainSum>::new(ServerConfig::new(2), 3, now)?;
/// server.submit(PartyId(0), Round(0), &PlainSum::fresh(vec![1, 2, 3]).to_bytes(), now)?;
/// assert!(server.aggregate(Round(0))?.is_none()); // still waiting for party 1
/// server.submit(PartyId(1), Round(0), &PlainSum::fresh(vec![10, 20, 30]).to_bytes(), now)?;
/// let published = server.aggregate(Round(0))?.expect("both parties in");
/// assert_eq!(published.parties, [PartyId(0), PartyId(1)]);
/// let sum = PlainSum::parse_aggregate(&published.bytes, &3, 2)?;
/// assert_eq!(sum.words(), [11, 22, 33]);
/// assert_eq!(server.current_round(), Round(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Server<S: Summable> {
    config: ServerConfig,
    expect: S::Expect,
    round: Round,
    /// When the open round opened; `None` before the first round's clock starts
    /// ([`Server::waiting`]).
    opened: Option<Instant>,
    submitted: BTreeSet<PartyId>,
    /// Rounds each party missed in a row (left out of the sum).
    missed: Vec<u32>,
    /// The first round each party has not fetched yet.
    next_fetch: Vec<u64>,
    /// The oldest round each party may still ask for (its last checkpoint).
    keep_from: Vec<u64>,
    /// Parties the open round still waits for (not gone, not yet submitted).
    waiting_for: usize,
    sum: Option<S>,
    published: VecDeque<Published>,
}

impl<S: Summable> Server<S> {
    /// A server whose first round opens at `now`; submissions are checked against `expect`.
    pub fn new(config: ServerConfig, expect: S::Expect, now: Instant) -> Result<Self, ConfigError> {
        let mut server = Self::waiting(config, expect)?;
        server.start(now);
        Ok(server)
    }

    /// A server whose first round's clock has not started: it takes submissions, but round
    /// 0 closes only with every party until [`Server::start`] (so a deadline cannot pass
    /// before the parties have joined).
    pub fn waiting(config: ServerConfig, expect: S::Expect) -> Result<Self, ConfigError> {
        config.validate()?;
        let parties = config.parties as usize;
        Ok(Self {
            config,
            expect,
            round: Round(0),
            opened: None,
            submitted: BTreeSet::new(),
            missed: vec![0; parties],
            next_fetch: vec![0; parties],
            keep_from: vec![0; parties],
            waiting_for: parties,
            sum: None,
            published: VecDeque::new(),
        })
    }

    /// The state between rounds, for a checkpoint.
    pub fn snapshot(&self) -> ServerSnapshot {
        ServerSnapshot {
            round: self.round,
            missed: self.missed.clone(),
            next_fetch: self.next_fetch.clone(),
            keep_from: self.keep_from.clone(),
            published: self.published.iter().cloned().collect(),
        }
    }

    /// A server that continues from `snapshot` (its open round starting afresh at `now`),
    /// checking it as input: one entry per party, kept sums before the open round, in
    /// order, each a valid sum of its parties' updates under `expect`.
    pub fn restore(
        config: ServerConfig,
        expect: S::Expect,
        snapshot: ServerSnapshot,
        now: Instant,
    ) -> Result<Self, String> {
        let mut server = Self::waiting(config, expect).map_err(|e| e.to_string())?;
        let parties = config.parties as usize;
        if snapshot.missed.len() != parties
            || snapshot.next_fetch.len() != parties
            || snapshot.keep_from.len() != parties
        {
            return Err(format!(
                "state for another number of parties, expected {parties}"
            ));
        }
        let mut previous: Option<Round> = None;
        for published in &snapshot.published {
            if published.round >= snapshot.round || previous.is_some_and(|p| p >= published.round) {
                return Err(format!("kept sums out of order at {}", published.round));
            }
            previous = Some(published.round);
            let summed = u32::try_from(published.parties.len()).unwrap_or(u32::MAX);
            if published.parties.iter().any(|p| p.0 >= config.parties) {
                return Err(format!(
                    "{} names a party this federation does not have",
                    published.round
                ));
            }
            S::parse_aggregate(&published.bytes, &server.expect, summed)
                .map_err(|e| format!("the kept sum of {}: {e}", published.round))?;
        }
        server.round = snapshot.round;
        server.missed = snapshot.missed;
        server.next_fetch = snapshot.next_fetch;
        server.keep_from = snapshot.keep_from;
        server.published = snapshot.published.into();
        server.waiting_for = (0..config.parties)
            .filter(|&p| !server.is_gone(PartyId(p)))
            .count();
        server.start(now);
        Ok(server)
    }

    /// Starts the open round's clock at `now` (once; later calls change nothing).
    pub fn start(&mut self, now: Instant) {
        self.opened.get_or_insert(now);
        self.close_if_ready(now);
    }

    /// Whether the first round's clock has started.
    pub fn is_started(&self) -> bool {
        self.opened.is_some()
    }

    /// Whether `party` missed [`ServerConfig::absent_after`] rounds in a row: rounds do
    /// not wait for it, nor keep aggregates for it, until it submits on time again.
    pub fn is_gone(&self, party: PartyId) -> bool {
        self.missed
            .get(party.0 as usize)
            .is_some_and(|&m| m >= self.config.absent_after)
    }

    /// Rounds `party` missed in a row.
    pub fn missed(&self, party: PartyId) -> u32 {
        self.missed.get(party.0 as usize).copied().unwrap_or(0)
    }

    /// The first round `party` has not fetched.
    pub fn next_fetch(&self, party: PartyId) -> Round {
        Round(self.next_fetch.get(party.0 as usize).copied().unwrap_or(0))
    }

    /// Notes that `party` fetched `round`'s sum and may still ask for the sums from
    /// `keep_from` on (its last checkpoint; `None`: none before `round + 1`). A sum is
    /// dropped once no party that is not gone may ask for it.
    pub fn fetched(&mut self, party: PartyId, round: Round, keep_from: Option<Round>) {
        let p = party.0 as usize;
        if let (Some(next), Some(keep)) = (self.next_fetch.get_mut(p), self.keep_from.get_mut(p)) {
            *next = (*next).max(round.0 + 1);
            *keep = keep_from.map_or(round.0 + 1, |k| k.0.min(round.0 + 1));
        }
        self.drop_fetched();
    }

    fn drop_fetched(&mut self) {
        while let Some(oldest) = self.published.front() {
            let needed = (0..self.config.parties)
                .map(PartyId)
                .any(|p| !self.is_gone(p) && self.keep_from[p.0 as usize] <= oldest.round.0);
            if needed && self.published.len() <= self.config.keep_rounds {
                break;
            }
            self.published.pop_front();
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// What submissions are checked against.
    pub fn expect(&self) -> &S::Expect {
        &self.expect
    }

    /// The open round.
    pub fn current_round(&self) -> Round {
        self.round
    }

    /// When the open round's deadline passes (`None` before the clock starts).
    pub fn deadline(&self) -> Option<Instant> {
        self.opened.map(|opened| opened + self.config.round_timeout)
    }

    /// Parties that have submitted to the open round so far.
    pub fn submitted(&self) -> impl Iterator<Item = PartyId> + '_ {
        self.submitted.iter().copied()
    }

    /// Validates and folds one party's update into the open round; closes the round when
    /// every party expected has submitted. A refused update changes nothing.
    pub fn submit(
        &mut self,
        party: PartyId,
        round: Round,
        bytes: &[u8],
        now: Instant,
    ) -> Result<(), Refusal> {
        if party.0 >= self.config.parties {
            return Err(Refusal::UnknownParty {
                party,
                parties: self.config.parties,
            });
        }
        if round != self.round {
            return Err(Refusal::WrongRound {
                sent: round,
                current: self.round,
            });
        }
        if self.submitted.contains(&party) {
            return Err(Refusal::Duplicate { party, round });
        }
        let payload_error = |source| Refusal::Payload {
            party,
            round,
            source,
        };
        match self.sum.as_mut() {
            Some(sum) => sum
                .add_submission(bytes, &self.expect)
                .map_err(payload_error)?,
            None => {
                self.sum = Some(S::parse_submission(bytes, &self.expect).map_err(payload_error)?)
            }
        }
        self.submitted.insert(party);
        if !self.is_gone(party) {
            self.waiting_for -= 1;
        }
        self.close_if_ready(now);
        Ok(())
    }

    /// Lets time pass: closes the open round if its deadline has passed and at least
    /// `min_parties` have submitted. Returns whether a round closed.
    pub fn tick(&mut self, now: Instant) -> bool {
        self.close_if_ready(now)
    }

    /// The published sum of `round`: `Ok(None)` while that round is open.
    pub fn aggregate(&self, round: Round) -> Result<Option<Published>, Refusal> {
        if round == self.round {
            return Ok(None);
        }
        if round > self.round {
            return Err(Refusal::NotYet {
                asked: round,
                current: self.round,
            });
        }
        self.published
            .iter()
            .find(|p| p.round == round)
            .cloned()
            .map(Some)
            .ok_or(Refusal::NoSuchAggregate {
                asked: round,
                current: self.round,
                kept: self.config.keep_rounds,
            })
    }

    fn close_if_ready(&mut self, now: Instant) -> bool {
        let enough = self.submitted.len() >= self.config.min_parties as usize;
        let due = self.deadline().is_some_and(|deadline| now >= deadline);
        let everyone = self.submitted.len() == self.config.parties as usize;
        if !(everyone || (enough && self.is_started() && (self.waiting_for == 0 || due))) {
            return false;
        }
        let Some(sum) = self.sum.take() else {
            return false;
        };
        let submitted = std::mem::take(&mut self.submitted);
        for (p, missed) in self.missed.iter_mut().enumerate() {
            if submitted.contains(&PartyId(p as u32)) {
                *missed = 0;
            } else {
                *missed = missed.saturating_add(1);
            }
        }
        self.waiting_for = (0..self.config.parties)
            .filter(|&p| !self.is_gone(PartyId(p)))
            .count();
        let parties: Vec<PartyId> = submitted.into_iter().collect();
        self.published.push_back(Published {
            round: self.round,
            parties,
            bytes: Arc::new(sum.to_bytes()),
        });
        self.drop_fetched();
        self.round = Round(self.round.0 + 1);
        self.opened = Some(now);
        true
    }
}
