//! The server's side of a round: collect one update per party, fold them, publish the sum
//! (the [`Server`] state machine), and keep the latest model snapshot for parties that fall
//! too far behind. Its twin on the parties' side is [`Party`](super::Party).

use super::config::{ConfigError, Field, MAX_PARTIES, check_range};
use super::payload::{PayloadError, Summable};
use super::rules::RoundRules;
use crate::he::Context;
use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

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

/// What the server said to a submission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Submitted {
    /// The update is in the round.
    Accepted,
    /// The round closed before the update arrived: this party is left out of it (its sum is
    /// still applied).
    Late {
        /// The round the server is on.
        open: Round,
    },
    /// This party's update for the round was already in (a retried submission).
    AlreadyIn,
    /// The upload's seed was already in the sum: someone submitted a copy of it first. Not
    /// the sender's fault: it seals the same update again in a fresh encryption and resends.
    Taken,
    /// Strict secure aggregation: the sender is not in the open round's party set (it missed
    /// a deadline and was left out); its update is dropped, and it asks to rejoin
    /// ([`Server::rejoin`]).
    NotInSet {
        /// The open round.
        open: Round,
    },
}

/// A closed round: the sum of the included parties' updates, or (strict secure aggregation)
/// a void round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The round.
    pub round: Round,
    /// The parties whose updates are in the sum, ascending (a void round: those that had
    /// submitted when it was voided).
    pub parties: Vec<PartyId>,
    /// The summed payload's wire bytes (shared, not copied, per reader); empty when void.
    pub bytes: Arc<Vec<u8>>,
    /// Strict secure aggregation: the round is void (a member of its party set missed the
    /// deadline, or the server restarted while it was open): there is no sum, nobody steps,
    /// and every party drops its update for it.
    pub void: bool,
    /// Strict secure aggregation: the party set of the next round, announced with this one
    /// (`None` without secure aggregation: every party, always).
    pub next_set: Option<Vec<PartyId>>,
}

impl Published {
    /// Round `round`'s sum of the updates of `parties` (no party set: without secure
    /// aggregation).
    pub fn sum(round: Round, parties: Vec<PartyId>, bytes: Arc<Vec<u8>>) -> Self {
        Self {
            round,
            parties,
            bytes,
            void: false,
            next_set: None,
        }
    }
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
    /// The aggregate asked for is no longer kept: the asking party missed it (it resyncs
    /// from the latest model snapshot).
    #[error(
        "no aggregate for {asked}: it was dropped (the server is on {current}; it keeps the sums since the latest model snapshot and those a party may still ask for, at most {kept})"
    )]
    NoSuchAggregate {
        /// The round asked for.
        asked: Round,
        /// The open round.
        current: Round,
        /// Most rounds kept.
        kept: usize,
    },
    /// A model snapshot for a round that is not closed yet, or not newer than the one kept.
    #[error("model snapshot for {sent} refused: {reason}")]
    Snapshot {
        /// The round the snapshot is of.
        sent: Round,
        /// Why: the round it names is still to come, or not newer than the kept one.
        reason: SnapshotRefusal,
    },
    /// A message for another run, round or party than the one it is sent as (a copied or
    /// replayed message): refused, naming both.
    #[error("a message for {found}, expected {expected}")]
    Context {
        /// What the server expected.
        expected: Context,
        /// What the message names.
        found: Context,
    },
    /// No model snapshot has been uploaded yet (or the plan has none).
    #[error("no model snapshot yet (the server is on {current})")]
    NoSnapshot {
        /// The open round.
        current: Round,
    },
    /// Strict secure aggregation: an update from a party outside the open round's party set.
    #[error(
        "{party} is not in the party set of {round} (it missed a deadline): its update is dropped; ask to rejoin"
    )]
    NotInSet {
        /// The party.
        party: PartyId,
        /// The open round.
        round: Round,
    },
}

/// Why a model snapshot was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotRefusal {
    /// The round it is of has not been reached: a snapshot of the model before round r can
    /// exist only once round r - 1 is published.
    #[error("the server is only on {current}")]
    Ahead {
        /// The open round.
        current: Round,
    },
    /// A snapshot of the same or a later round is already kept.
    #[error("the server keeps one of {kept} already")]
    Stale {
        /// The round of the kept snapshot.
        kept: Round,
    },
}

/// Why a server's saved state was refused ([`Server::restore`]): it is input, read back from a
/// file.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The rules do not validate.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Per-party entries for another number of parties.
    #[error("state for {found} parties, expected {expected}")]
    Parties {
        /// Parties in the federation.
        expected: usize,
        /// Entries in the state.
        found: usize,
    },
    /// The kept sums are not in ascending order before the open round.
    #[error("kept sums out of order at {0}")]
    Order(Round),
    /// A kept sum names a party the federation does not have.
    #[error("{0} names a party this federation does not have")]
    UnknownParty(Round),
    /// A kept sum, or the model snapshot, does not parse as what the plan produces.
    #[error("the kept {what} of {round}: {source}")]
    Payload {
        /// "sum" or "model snapshot".
        what: &'static str,
        /// Its round.
        round: Round,
        /// What is wrong with it.
        source: PayloadError,
    },
    /// A kept sum of another run or round.
    #[error("a kept message for {found}, expected {expected}")]
    Context {
        /// What the state should hold.
        expected: Context,
        /// What it holds.
        found: Context,
    },
    /// The open round is beyond the run's last.
    #[error("open round {found}, beyond the run's {total} rounds")]
    Beyond {
        /// The saved open round.
        found: Round,
        /// Rounds in the run.
        total: u64,
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

    /// What a refused submission means to its sender when it is not an error: late (the
    /// round closed without it) or already in.
    pub fn submitted(&self) -> Option<Submitted> {
        match self {
            Self::WrongRound { sent, current } if sent < current => {
                Some(Submitted::Late { open: *current })
            }
            Self::Duplicate { .. } => Some(Submitted::AlreadyIn),
            Self::NotInSet { round, .. } => Some(Submitted::NotInSet { open: *round }),
            Self::Payload {
                source: PayloadError::Wire(crate::he::WireError::RepeatedSeed),
                ..
            } => Some(Submitted::Taken),
            _ => None,
        }
    }
}

/// One party's model, sealed as the plan says (encrypted in `he` mode), as it stood before
/// `round`: what a party too far behind resyncs from (see
/// [`RoundRules::snapshot_every`](super::RoundRules::snapshot_every)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSnapshot {
    /// The first round whose sum is not applied in it.
    pub round: Round,
    /// The sealed bytes (shared, not copied, per reader).
    pub bytes: Arc<Vec<u8>>,
}

/// A server's state between rounds: what its checkpoint holds ([`Server::state`]). The
/// open round's submissions are not in it: after a restart the parties send them again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerState {
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
    /// The latest model snapshot, if one was uploaded.
    pub model_snapshot: Option<ModelSnapshot>,
    /// Strict secure aggregation: the open round's party set, and the parties that asked to
    /// rejoin (in the next round's set). `None` without it.
    pub sets: Option<PartySets>,
}

/// The party sets of strict secure aggregation, as a server holds them between requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartySets {
    /// The open round's party set: it publishes only with every one of them.
    pub open: BTreeSet<PartyId>,
    /// Parties that asked to rejoin: announced in the next round's set.
    pub rejoining: BTreeSet<PartyId>,
}

/// Runs rounds over payloads of type `S`: collects one update per party, folds them,
/// publishes the sum.
///
/// A state machine with no clock of its own and no I/O: transports call
/// [`Server::submit`] with the bytes a party sent, [`Server::tick`] with the time, and
/// [`Server::aggregate`] when a party asks for a round's sum. It holds no key and no model,
/// and as a `Server<CompactVector>` (the `he` mode) nothing it holds can be anything but
/// ciphertext: no field, argument or method lets a plaintext vector or a key reach it.
///
/// ```
/// use hefl::fl::{PartyId, PlainShape, PlainSum, Round, RoundRules, Server, Summable};
/// use hefl::he::Context;
/// use std::time::Instant;
///
/// let now = Instant::now();
/// // A server's run id is all zeros until `Server::with_run` names one.
/// let shape = PlainShape { len: 3, bits: 64 };
/// let upload = |party, words| PlainSum::sealed(words, 64, Context { run: [0; 32], round: 0, party }).to_bytes();
/// let mut server = Server::<PlainSum>::new(2, RoundRules::default(), shape, now)?;
/// server.submit(PartyId(0), Round(0), &upload(0, vec![1, 2, 3]), now)?;
/// assert!(server.aggregate(Round(0))?.is_none()); // still waiting for party 1
/// server.submit(PartyId(1), Round(0), &upload(1, vec![10, 20, 30]), now)?;
/// let published = server.aggregate(Round(0))?.expect("both parties in");
/// assert_eq!(published.parties, [PartyId(0), PartyId(1)]);
/// let sum = PlainSum::parse_aggregate(&published.bytes, &shape, 2)?;
/// assert_eq!(sum.words(), [11, 22, 33]);
/// assert_eq!(server.current_round(), Round(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Server<S: Summable> {
    parties: u32,
    rules: RoundRules,
    /// The run's plan fingerprint, in every message's [`Context`].
    run: [u8; 32],
    expect: S::Expect,
    /// What a model snapshot is checked against (`None`: snapshots are refused).
    snapshot_expect: Option<S::Expect>,
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
    model_snapshot: Option<ModelSnapshot>,
    /// Strict secure aggregation's party sets ([`Server::with_party_sets`]).
    sets: Option<PartySets>,
}

impl<S: Summable> Server<S> {
    /// A server of `parties` whose first round opens at `now`; submissions are checked
    /// against `expect`.
    pub fn new(
        parties: u32,
        rules: RoundRules,
        expect: S::Expect,
        now: Instant,
    ) -> Result<Self, ConfigError> {
        let mut server = Self::waiting(parties, rules, expect)?;
        server.start(now);
        Ok(server)
    }

    /// A server whose first round's clock has not started: it takes submissions, but round
    /// 0 closes only with every party until [`Server::start`] (so a deadline cannot pass
    /// before the parties have joined). Refuses `rules` that do not validate for `parties`.
    pub fn waiting(
        parties: u32,
        rules: RoundRules,
        expect: S::Expect,
    ) -> Result<Self, ConfigError> {
        check_range(Field::Parties, parties as usize, 1, MAX_PARTIES)?;
        rules.validate(parties)?;
        let count = parties as usize;
        Ok(Self {
            parties,
            rules,
            run: [0; 32],
            expect,
            snapshot_expect: None,
            round: Round(0),
            opened: None,
            submitted: BTreeSet::new(),
            missed: vec![0; count],
            next_fetch: vec![0; count],
            keep_from: vec![0; count],
            waiting_for: count,
            sum: None,
            published: VecDeque::new(),
            model_snapshot: None,
            sets: None,
        })
    }

    /// Runs strict secure aggregation's rounds: each round has a party set (every party in
    /// round 0) and is published only when every member has submitted; at its deadline with
    /// a member missing it is void (no sum; see [`Published::void`]) if the members that
    /// submitted, with the parties rejoining, are at least `min_parties`, and the next
    /// round's set is those parties. Otherwise it keeps waiting for the missing members. A
    /// party outside the open round's set is refused ([`Refusal::NotInSet`]) until it asks to
    /// rejoin ([`Server::rejoin`]). The published party list and the next set travel with
    /// every round ([`Published::next_set`]).
    pub fn with_party_sets(mut self) -> Self {
        self.sets = Some(PartySets {
            open: (0..self.parties).map(PartyId).collect(),
            rejoining: BTreeSet::new(),
        });
        self
    }

    /// Strict secure aggregation: `party` asks to be in a later round's party set. Returns
    /// the first round whose set holds it: the open round if it is in its set already, else
    /// the next one (announced with the open round's outcome). Without secure aggregation
    /// every party is in every round: the open round.
    pub fn rejoin(&mut self, party: PartyId) -> Result<Round, Refusal> {
        self.check_party(party)?;
        let Some(sets) = self.sets.as_mut() else {
            return Ok(self.round);
        };
        if sets.open.contains(&party) {
            return Ok(self.round);
        }
        sets.rejoining.insert(party);
        Ok(Round(self.round.0 + 1))
    }

    /// Whether `party` asked to rejoin and is to be in the next round's set.
    pub fn is_rejoining(&self, party: PartyId) -> bool {
        self.sets
            .as_ref()
            .is_some_and(|s| s.rejoining.contains(&party))
    }

    /// The open round's party set (`None` without strict secure aggregation: every party).
    pub fn party_set(&self) -> Option<&BTreeSet<PartyId>> {
        self.sets.as_ref().map(|s| &s.open)
    }

    /// Serves the run `run` (its plan's fingerprint): every message must name it in its
    /// [`Context`] (the default, all zeros, is what unbound messages name).
    pub fn with_run(mut self, run: [u8; 32]) -> Self {
        self.run = run;
        self
    }

    /// Takes model snapshots checked against `expect` ([`Server::put_snapshot`]); without
    /// this a server refuses them.
    pub fn with_snapshots(mut self, expect: S::Expect) -> Self {
        self.snapshot_expect = Some(expect);
        self
    }

    /// The state between rounds, for a checkpoint.
    pub fn state(&self) -> ServerState {
        ServerState {
            round: self.round,
            missed: self.missed.clone(),
            next_fetch: self.next_fetch.clone(),
            keep_from: self.keep_from.clone(),
            published: self.published.iter().cloned().collect(),
            model_snapshot: self.model_snapshot.clone(),
            sets: self.sets.clone(),
        }
    }

    /// Continues from `state` (the open round starting afresh at `now`), checking it as
    /// input (a refused state changes nothing): one entry per party, kept sums before the open round, in order, each a valid
    /// sum of its parties' updates, the model snapshot valid, and the open round at most
    /// `total_rounds`.
    pub fn restore(
        &mut self,
        state: ServerState,
        total_rounds: u64,
        now: Instant,
    ) -> Result<(), RestoreError> {
        let parties = self.parties as usize;
        for found in [
            state.missed.len(),
            state.next_fetch.len(),
            state.keep_from.len(),
        ] {
            if found != parties {
                return Err(RestoreError::Parties {
                    expected: parties,
                    found,
                });
            }
        }
        if state.round.0 > total_rounds {
            return Err(RestoreError::Beyond {
                found: state.round,
                total: total_rounds,
            });
        }
        let mut previous: Option<Round> = None;
        for published in &state.published {
            if published.round >= state.round || previous.is_some_and(|p| p >= published.round) {
                return Err(RestoreError::Order(published.round));
            }
            previous = Some(published.round);
            let named = published
                .parties
                .iter()
                .chain(published.next_set.iter().flatten());
            if named.clone().any(|p| p.0 >= self.parties) {
                return Err(RestoreError::UnknownParty(published.round));
            }
            if published.void != published.bytes.is_empty()
                || published.next_set.is_some() != self.sets.is_some()
            {
                return Err(RestoreError::Payload {
                    what: "sum",
                    round: published.round,
                    source: PayloadError::Unexpected(
                        "a void round with a sum, a sum without bytes, or a party set where the plan has none (or none where it has one)",
                    ),
                });
            }
            if published.void {
                continue;
            }
            let summed = u32::try_from(published.parties.len()).unwrap_or(u32::MAX);
            let sum =
                S::parse_aggregate(&published.bytes, &self.expect, summed).map_err(|source| {
                    RestoreError::Payload {
                        what: "sum",
                        round: published.round,
                        source,
                    }
                })?;
            drop(sum);
            let expected = Context::sum(self.run, published.round.0);
            let found =
                S::context_of(&published.bytes).map_err(|source| RestoreError::Payload {
                    what: "sum",
                    round: published.round,
                    source,
                })?;
            if found != expected {
                return Err(RestoreError::Context { expected, found });
            }
        }
        if let Some(snapshot) = &state.model_snapshot {
            let refused = |source| RestoreError::Payload {
                what: "model snapshot",
                round: snapshot.round,
                source,
            };
            let expect = self.snapshot_expect.as_ref().ok_or_else(|| {
                refused(PayloadError::Unexpected(
                    "a model snapshot in a run that has none",
                ))
            })?;
            if snapshot.round > state.round {
                return Err(RestoreError::Order(snapshot.round));
            }
            S::parse_submission(&snapshot.bytes, expect).map_err(refused)?;
        }
        let sets = match (&self.sets, state.sets) {
            (None, None) => None,
            (Some(_), Some(sets)) => {
                let named = sets.open.iter().chain(&sets.rejoining);
                if named.clone().any(|p| p.0 >= self.parties) {
                    return Err(RestoreError::UnknownParty(state.round));
                }
                Some(sets)
            }
            _ => {
                return Err(RestoreError::Payload {
                    what: "party sets",
                    round: state.round,
                    source: PayloadError::Unexpected(
                        "party sets in a run without secure aggregation, or none in a run with it",
                    ),
                });
            }
        };
        self.round = state.round;
        self.sets = sets;
        self.missed = state.missed;
        self.next_fetch = state.next_fetch;
        self.keep_from = state.keep_from;
        self.published = state.published.into();
        self.model_snapshot = state.model_snapshot;
        self.waiting_for = (0..self.parties)
            .filter(|&p| !self.is_gone(PartyId(p)))
            .count();
        if self.sets.is_some() && self.round.0 < total_rounds {
            // The open round's submissions are lost with the old process: it is void, and
            // its members submit fresh updates to the next round, never the same update
            // under another set (see `crate::secagg`).
            self.opened = Some(now);
            let members = self
                .sets
                .as_ref()
                .map(|s| s.open.clone())
                .unwrap_or_default();
            self.void_open_round(now, members.into_iter().collect());
        }
        self.start(now);
        Ok(())
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

    /// Whether `party` missed [`RoundRules::absent_after`] rounds in a row: rounds do not
    /// wait for it, nor keep aggregates for it, until it submits on time again.
    pub fn is_gone(&self, party: PartyId) -> bool {
        self.missed
            .get(party.0 as usize)
            .is_some_and(|&m| m >= self.rules.absent_after)
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
    /// dropped once no party that is not gone may ask for it and a model snapshot newer than
    /// it is kept (or [`RoundRules::keep_rounds`] newer sums are).
    pub fn fetched(&mut self, party: PartyId, round: Round, keep_from: Option<Round>) {
        let p = party.0 as usize;
        if let (Some(next), Some(keep)) = (self.next_fetch.get_mut(p), self.keep_from.get_mut(p)) {
            *next = (*next).max(round.0 + 1);
            *keep = keep_from.map_or(round.0 + 1, |k| k.0.min(round.0 + 1));
        }
        self.drop_fetched();
    }

    fn drop_fetched(&mut self) {
        // The sums since the latest snapshot stay: a party resyncing from it applies them.
        let since_snapshot = match (&self.snapshot_expect, &self.model_snapshot) {
            (None, _) => u64::MAX,
            (Some(_), Some(snapshot)) => snapshot.round.0,
            (Some(_), None) => 0,
        };
        while let Some(oldest) = self.published.front() {
            let needed = oldest.round.0 >= since_snapshot
                || (0..self.parties)
                    .map(PartyId)
                    .any(|p| !self.is_gone(p) && self.keep_from[p.0 as usize] <= oldest.round.0);
            if needed && self.published.len() <= self.rules.keep_rounds {
                break;
            }
            self.published.pop_front();
        }
    }

    /// The parties in the federation.
    pub fn parties(&self) -> u32 {
        self.parties
    }

    /// The rules the rounds run by.
    pub fn rules(&self) -> &RoundRules {
        &self.rules
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
        self.opened.map(|opened| opened + self.rules.round_timeout)
    }

    /// Parties that have submitted to the open round so far.
    pub fn submitted(&self) -> impl Iterator<Item = PartyId> + '_ {
        self.submitted.iter().copied()
    }

    /// Refuses `party`'s message for `round` if it names another context than that. One that
    /// fails the checks against `expect` too is refused for those (another key or shape says
    /// more than another context); one whose header does not parse is left to the caller's
    /// parse, which refuses it in detail.
    fn check_context(
        &self,
        bytes: &[u8],
        party: PartyId,
        round: Round,
        expect: &S::Expect,
    ) -> Result<(), Refusal> {
        let expected = Context {
            run: self.run,
            round: round.0,
            party: party.0,
        };
        match S::context_of(bytes) {
            Ok(found) if found != expected => {
                S::parse_submission(bytes, expect).map_err(|source| Refusal::Payload {
                    party,
                    round,
                    source,
                })?;
                Err(Refusal::Context { expected, found })
            }
            _ => Ok(()),
        }
    }

    fn check_party(&self, party: PartyId) -> Result<(), Refusal> {
        if party.0 >= self.parties {
            return Err(Refusal::UnknownParty {
                party,
                parties: self.parties,
            });
        }
        Ok(())
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
        self.check_party(party)?;
        if round != self.round {
            return Err(Refusal::WrongRound {
                sent: round,
                current: self.round,
            });
        }
        if self
            .sets
            .as_ref()
            .is_some_and(|sets| !sets.open.contains(&party))
        {
            return Err(Refusal::NotInSet { party, round });
        }
        if self.submitted.contains(&party) {
            return Err(Refusal::Duplicate { party, round });
        }
        let payload_error = |source| Refusal::Payload {
            party,
            round,
            source,
        };
        self.check_context(bytes, party, round, &self.expect)?;
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

    /// Validates and keeps `party`'s model snapshot of the model before `round` (which must
    /// be closed: `round` at most the open round) if it is newer than the one kept. A refused
    /// snapshot changes nothing.
    pub fn put_snapshot(
        &mut self,
        party: PartyId,
        round: Round,
        bytes: &[u8],
    ) -> Result<(), Refusal> {
        self.check_party(party)?;
        let refused = |reason| Refusal::Snapshot {
            sent: round,
            reason,
        };
        if round > self.round {
            return Err(refused(SnapshotRefusal::Ahead {
                current: self.round,
            }));
        }
        if let Some(kept) = &self.model_snapshot
            && kept.round >= round
        {
            return Err(refused(SnapshotRefusal::Stale { kept: kept.round }));
        }
        let Some(expect) = &self.snapshot_expect else {
            return Err(Refusal::Payload {
                party,
                round,
                source: PayloadError::Unexpected("a model snapshot: this run takes none"),
            });
        };
        self.check_context(bytes, party, round, expect)?;
        S::parse_submission(bytes, expect).map_err(|source| Refusal::Payload {
            party,
            round,
            source,
        })?;
        self.model_snapshot = Some(ModelSnapshot {
            round,
            bytes: Arc::new(bytes.to_vec()),
        });
        self.drop_fetched();
        Ok(())
    }

    /// The latest model snapshot.
    pub fn snapshot(&self) -> Result<ModelSnapshot, Refusal> {
        self.model_snapshot.clone().ok_or(Refusal::NoSnapshot {
            current: self.round,
        })
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
                kept: self.rules.keep_rounds,
            })
    }

    fn close_if_ready(&mut self, now: Instant) -> bool {
        let min = self.rules.min_parties(self.parties) as usize;
        let due = self.deadline().is_some_and(|deadline| now >= deadline);
        if let Some(sets) = &self.sets {
            if sets.open.iter().all(|p| self.submitted.contains(p)) {
                return self.publish(now);
            }
            let staying = self.submitted.union(&sets.rejoining).count();
            if due && staying >= min {
                let submitted = self.submitted.iter().copied().collect();
                self.void_open_round(now, submitted);
                return true;
            }
            return false;
        }
        let enough = self.submitted.len() >= min;
        let everyone = self.submitted.len() == self.parties as usize;
        if !(everyone || (enough && self.is_started() && (self.waiting_for == 0 || due))) {
            return false;
        }
        self.publish(now)
    }

    /// Publishes the open round's sum of the parties that submitted, and opens the next.
    fn publish(&mut self, now: Instant) -> bool {
        let Some(mut sum) = self.sum.take() else {
            return false;
        };
        sum.set_context(Context::sum(self.run, self.round.0));
        let parties = self.close_round();
        let next_set = self.next_set(&parties);
        self.published.push_back(Published {
            round: self.round,
            parties,
            bytes: Arc::new(sum.to_bytes()),
            void: false,
            next_set,
        });
        self.open_next(now);
        true
    }

    /// Strict secure aggregation: the open round is void; `staying` (its members that
    /// submitted, or after a restart all its members) and the parties rejoining are the next
    /// round's set.
    fn void_open_round(&mut self, now: Instant, staying: Vec<PartyId>) {
        self.sum = None;
        let parties = self.close_round();
        let next_set = self.next_set(&staying);
        self.published.push_back(Published {
            round: self.round,
            parties,
            bytes: Arc::new(Vec::new()),
            void: true,
            next_set,
        });
        self.open_next(now);
    }

    /// Ends the open round's bookkeeping: who missed it, and who submitted (returned).
    fn close_round(&mut self) -> Vec<PartyId> {
        let submitted = std::mem::take(&mut self.submitted);
        for (p, missed) in self.missed.iter_mut().enumerate() {
            if submitted.contains(&PartyId(p as u32)) {
                *missed = 0;
            } else {
                *missed = missed.saturating_add(1);
            }
        }
        self.waiting_for = (0..self.parties)
            .filter(|&p| !self.is_gone(PartyId(p)))
            .count();
        submitted.into_iter().collect()
    }

    /// Strict secure aggregation: the next round's set, `staying` and the parties rejoining
    /// (who are then in it); `None` without it.
    fn next_set(&mut self, staying: &[PartyId]) -> Option<Vec<PartyId>> {
        let sets = self.sets.as_mut()?;
        let rejoining = std::mem::take(&mut sets.rejoining);
        sets.open = staying.iter().copied().chain(rejoining).collect();
        Some(sets.open.iter().copied().collect())
    }

    fn open_next(&mut self, now: Instant) {
        self.drop_fetched();
        self.round = Round(self.round.0 + 1);
        self.opened = Some(now);
    }
}
