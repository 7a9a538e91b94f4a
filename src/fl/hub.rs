//! The hub: one federation's [`Server`], its clock and the wait for published rounds, shared
//! by every transport.
//!
//! The [`Server`] state machine has no clock and no I/O; the hub owns one behind a lock,
//! lets time pass for it (a waiter ticks the server when the round's deadline comes), wakes
//! waiters when a round closes, logs what a server operator needs to know, and tells when
//! the run is over. It does no I/O either: transports call [`Hub::submit`] and
//! [`Hub::fetch`] with what a party sent. In one process, [`HubUplink`] does so directly
//! (one thread per party, [`run`](super::run)); over the network, the HTTP handlers do
//! ([`transport::http`](crate::transport)). Either way the same [`run_party`](super::run_party)
//! loop drives the same hub, so a simulation exercises deadlines and `min_parties` exactly
//! as a deployment does.

use super::checkpoint::{CheckpointError, ServerStore};
use super::config::ConfigError;
use super::error::{RefusalKind, UplinkError};
use super::payload::PlainSum;
use super::plan::{RunId, ValidPlan};
use super::rules::RoundRules;
use super::server::{ModelSnapshot, PartyId, Published, Refusal, Round, Server};
use super::uplink::{Submitted, Uplink};
use crate::he::CompactVector;
use std::collections::{BTreeSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A party the run ended without: it had not fetched the last sum, or the open round was
/// waiting for it, when the server gave up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    /// The party.
    pub party: PartyId,
    /// The first round it missed (left out of, or did not fetch).
    pub since: Round,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (missing since {})", self.party, self.since)
    }
}

/// What a finished server reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServeReport {
    /// Rounds published.
    pub rounds: u64,
    /// Rounds published without every party.
    pub short_rounds: u64,
    /// Strict secure aggregation: rounds voided (a member missed the deadline, or the server
    /// restarted while the round was open) since this server started.
    pub void_rounds: u64,
    /// Parties the run ended without, when it ended because no party had been heard from
    /// for the idle timeout (empty when every party fetched the last sum).
    pub missing: Vec<Missing>,
    /// Why the server stopped taking rounds: its checkpoint could not be written, after
    /// retries (the last good one is intact). `None` for a run that ended otherwise.
    pub store_failed: Option<String>,
}

/// Something a server operator should know, reported through the hub's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HubEvent {
    /// The first round's clock started.
    Started {
        /// The parties that were ready (had loaded their data).
        joined: Vec<PartyId>,
        /// Parties in the federation.
        of: usize,
    },
    /// A round closed at its deadline without every party, and with other parties than the
    /// round before (later rounds with the same parties are not logged again).
    ShortRound {
        /// The round.
        round: Round,
        /// The parties in its sum.
        parties: Vec<PartyId>,
        /// Parties in the federation.
        of: usize,
    },
    /// A round closed with every party again, after rounds without some.
    Complete {
        /// The round.
        round: Round,
    },
    /// Strict secure aggregation: a round was voided (nobody steps); the next round's set
    /// leaves out the members that had not submitted.
    Void {
        /// The round.
        round: Round,
        /// The members that had submitted (empty after a restart).
        submitted: Vec<PartyId>,
        /// The next round's party set.
        next_set: Vec<PartyId>,
    },
    /// Strict secure aggregation: a party left out of the open round's set asked to rejoin.
    Rejoining {
        /// The party.
        party: PartyId,
        /// The first round whose set holds it.
        from: Round,
    },
    /// A party missed `absent_after` rounds in a row: rounds stop waiting for it.
    Gone {
        /// The party.
        party: PartyId,
        /// The first round it missed.
        since: Round,
    },
    /// A party skipped a round whose sum could not be a sum of valid updates (a party sent
    /// garbage): every party skips it alike, and training goes on.
    Skipped {
        /// The round.
        round: Round,
        /// The party that reported it.
        party: PartyId,
        /// The parties in that round's sum (one or more of them sent garbage).
        parties: Vec<PartyId>,
        /// What the party found, as it said it (control characters removed, truncated).
        reason: String,
    },
    /// The server's checkpoint could not be written, after retries: the server stops taking
    /// rounds (a restart resumes from the last one written, which is intact).
    StoreFailed {
        /// What went wrong.
        reason: String,
    },
    /// A party's model snapshot was kept: parties further behind than the kept sums resync
    /// from it.
    SnapshotKept {
        /// The round it is of (the model before that round).
        round: Round,
        /// The party that uploaded it.
        party: PartyId,
        /// Its size.
        bytes: usize,
    },
    /// An epoch's last round closed.
    EpochDone {
        /// 1-based epoch number.
        epoch: u64,
        /// Rounds closed so far.
        rounds: u64,
        /// Rounds in the run.
        total_rounds: u64,
    },
}

/// `0, 1, 2`.
fn party_list(parties: &[PartyId]) -> String {
    let list: Vec<String> = parties.iter().map(|p| p.0.to_string()).collect();
    list.join(", ")
}

impl std::fmt::Display for HubEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Started { joined, of } => write!(
                f,
                "round 0 started with parties {} ({} of {of} ready)",
                party_list(joined),
                joined.len()
            ),
            Self::ShortRound { round, parties, of } => write!(
                f,
                "{round} closed at its deadline with parties {} ({} of {of}); later rounds with the same parties are not logged",
                party_list(parties),
                parties.len()
            ),
            Self::Complete { round } => write!(f, "{round} closed with every party again"),
            Self::Void {
                round,
                submitted,
                next_set,
            } if submitted.is_empty() => write!(
                f,
                "{round} is void: the server restarted while it was open (its updates were not kept); nobody steps; the next round's set is {}",
                party_list(next_set)
            ),
            Self::Void {
                round,
                submitted,
                next_set,
            } => write!(
                f,
                "{round} is void: a member of its party set missed the deadline (submitted: {}); nobody steps; the next round's set is {}",
                party_list(submitted),
                party_list(next_set)
            ),
            Self::Rejoining { party, from } => write!(
                f,
                "{party} asked to rejoin: it is in the party set from {from} on"
            ),
            Self::Gone { party, since } => write!(
                f,
                "{party} is gone: it missed every round since {since}; rounds no longer wait for it until it submits on time"
            ),
            Self::Skipped {
                round,
                party,
                parties,
                reason,
            } => write!(
                f,
                "{party} skipped {round} (parties {}): {reason}",
                party_list(parties)
            ),
            Self::StoreFailed { reason } => write!(
                f,
                "could not write the checkpoint, after retries: {reason}; stopping (the last good checkpoint is intact: free the disk and restart with the same --state-dir)"
            ),
            Self::SnapshotKept {
                round,
                party,
                bytes,
            } => write!(
                f,
                "kept {party}'s model snapshot of {round} ({bytes} bytes of ciphertext, or words in plain mode)"
            ),
            Self::EpochDone {
                epoch,
                rounds,
                total_rounds,
            } => write!(f, "epoch {epoch} done ({rounds} of {total_rounds} rounds)"),
        }
    }
}

/// A [`Server`] of either payload type: the one place where the plan's privacy mode picks
/// what the server folds.
enum AnyServer {
    Plain(Server<PlainSum>),
    He(Server<CompactVector>),
}

/// Calls the same method on whichever server it is.
macro_rules! either {
    ($server:expr, $s:ident => $call:expr) => {
        match $server {
            AnyServer::Plain($s) => $call,
            AnyServer::He($s) => $call,
        }
    };
}

struct State {
    server: AnyServer,
    report: ServeReport,
    /// Parties that are ready: loaded their data and said so ([`Hub::ready`]), or submitted.
    ready: BTreeSet<PartyId>,
    /// The parties of the last round published without every party, until one has all.
    short: Option<Vec<PartyId>>,
    /// Parties logged as gone (until they are back).
    gone: BTreeSet<PartyId>,
    /// Skip reports already logged, as (round, party), for recent rounds.
    skip_reports: BTreeSet<(Round, PartyId)>,
    /// The parties in each of the last rounds' sums (for skip reports, which may come after
    /// the sum itself was dropped).
    recent: VecDeque<(Round, Vec<PartyId>)>,
    /// When a party was last heard from (joined, an update accepted, the last sum fetched
    /// for the first time).
    heard: Instant,
    /// Seconds spent validating and folding submissions.
    server_seconds: f64,
    /// Where the server's checkpoint goes (`--state-dir`).
    store: Option<ServerStore>,
    /// When each party was last heard from (any request that reached the hub).
    seen: Vec<Option<Instant>>,
    /// When the last round closed (or the first round's clock started).
    last_close: Option<Instant>,
    /// The last rounds published, for [`Hub::status`].
    timings: VecDeque<RoundStatus>,
}

/// What an operator sees of a running federation ([`Hub::status`]; `GET /v1/status`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Status {
    /// The open round (the number of rounds published).
    pub round: u64,
    /// Rounds in the run.
    pub total_rounds: u64,
    /// Every party fetched the last sum.
    pub finished: bool,
    /// The hub stopped taking rounds (its checkpoint could not be written, or shut down).
    pub stopped: bool,
    /// Seconds since the hub was created.
    pub uptime_seconds: f64,
    /// Each party's state.
    pub parties: Vec<PartyStatus>,
    /// The last rounds published, oldest first (at most 16).
    pub recent_rounds: Vec<RoundStatus>,
}

/// One party as the server sees it ([`Status`]).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PartyStatus {
    /// The party.
    pub party: u32,
    /// It said it was ready (its data loaded) or submitted.
    pub ready: bool,
    /// Seconds since its last request reached the hub (`None`: never).
    pub last_seen_seconds: Option<f64>,
    /// Consecutive rounds it missed.
    pub rounds_missed: u32,
    /// The server counts it as gone (absent for `absent_after` rounds).
    pub gone: bool,
    /// The first round whose sum it has not fetched.
    pub next_fetch: u64,
}

/// One published round ([`Status`]).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RoundStatus {
    /// The round.
    pub round: u64,
    /// Parties in its sum.
    pub parties: usize,
    /// Seconds from the previous round's close (or round 0's start) to its own.
    pub seconds: f64,
    /// Bytes of its published sum (what each party downloads; 0 when void).
    pub sum_bytes: usize,
    /// Strict secure aggregation: the round was void.
    pub void: bool,
}

/// Rounds kept for [`Status::recent_rounds`].
const STATUS_ROUNDS: usize = 16;

/// One federation's server, clock and waiters: the [`Server`] state machine behind a lock, with
/// time passing for it and the wait for published rounds (see [`Hub::new`]).
pub struct Hub {
    plan: ValidPlan,
    rules: RoundRules,
    parties: u32,
    created: Instant,
    state: Mutex<State>,
    changed: Condvar,
    /// Called with every notification of `changed` ([`Hub::watch`]).
    watchers: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
    stopped: AtomicBool,
    max_submission_len: usize,
    max_snapshot_len: usize,
    keep_rounds: usize,
    log: Box<dyn Fn(&HubEvent) + Send + Sync>,
}

impl Hub {
    /// A hub for `plan`, run by its [`RoundRules`]. Round 0's clock starts when every party
    /// is ready ([`Hub::ready`]: its data loaded; or a first submission), or at the join timeout if
    /// `min_parties` have. A round closes when every party not gone has submitted, or at its
    /// deadline with at least `min_parties` (default: all). `log` receives what an operator
    /// should know ([`HubEvent`]).
    ///
    /// ```
    /// use hefl::fl::{Hub, PartyId, PlainSum, Round, RoundRules, Summable, TrainConfig, plan_for};
    /// use hefl::he::Context;
    ///
    /// let config = TrainConfig { parties: 2, epochs: 1, layers: vec![784, 1, 10], ..TrainConfig::default() };
    /// let plan = plan_for(&config, 100, Some(1), None, RoundRules::default())?;
    /// let run = plan.fingerprint();
    /// // Party `party`'s update for round 0: 795 parameters and the weight.
    /// let shape = plan.expected_plain();
    /// let update = |party| PlainSum::sealed(vec![1 << 50; shape.len], shape.bits, Context { run, round: 0, party }).to_bytes();
    /// let (a, b) = (update(0), update(1));
    /// let hub = Hub::new(plan, |_: &hefl::fl::HubEvent| {})?;
    /// hub.submit(PartyId(0), Round(0), &a)?;
    /// assert!(hub.fetch(PartyId(0), Round(0), std::time::Duration::ZERO, None)?.is_none()); // party 1 missing
    /// assert!(hub.submit(PartyId(1), Round(0), &a).is_err()); // party 0's, copied
    /// hub.submit(PartyId(1), Round(0), &b)?;
    /// let sum = hub.fetch(PartyId(0), Round(0), std::time::Duration::ZERO, None)?.expect("published");
    /// assert_eq!(sum.parties, [PartyId(0), PartyId(1)]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(
        plan: ValidPlan,
        log: impl Fn(&HubEvent) + Send + Sync + 'static,
    ) -> Result<Self, ConfigError> {
        let rules = plan.rules;
        let parties = u32::try_from(plan.config.parties).unwrap_or(u32::MAX);
        let server = match plan.expected_he() {
            Some(expect) => {
                let snapshots = plan.snapshot_expected_he()?.ok_or(ConfigError::Needs {
                    field: super::config::Field::KeyId,
                    needs: "model snapshots under the same key".into(),
                })?;
                let server = Server::waiting(parties, rules, expect)?
                    .with_run(plan.fingerprint())
                    .with_snapshots(snapshots);
                AnyServer::He(match plan.config.secure_agg {
                    Some(_) => server.with_party_sets(),
                    None => server,
                })
            }
            None => AnyServer::Plain(
                Server::waiting(parties, rules, plan.expected_plain())?
                    .with_run(plan.fingerprint())
                    .with_snapshots(plan.snapshot_expected_plain()?),
            ),
        };
        let max_submission_len = plan.max_message_len();
        let max_snapshot_len = plan.max_snapshot_len()?;
        let now = Instant::now();
        Ok(Self {
            plan,
            rules,
            parties,
            created: now,
            state: Mutex::new(State {
                server,
                report: ServeReport::default(),
                ready: BTreeSet::new(),
                short: None,
                gone: BTreeSet::new(),
                skip_reports: BTreeSet::new(),
                recent: VecDeque::new(),
                heard: now,
                server_seconds: 0.0,
                store: None,
                seen: vec![None; parties as usize],
                last_close: None,
                timings: VecDeque::new(),
            }),
            changed: Condvar::new(),
            watchers: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
            max_submission_len,
            max_snapshot_len,
            keep_rounds: rules.keep_rounds,
            log: Box::new(log),
        })
    }

    /// Like [`Hub::new`], with the server's checkpoint in `state_dir` (see
    /// [`checkpoint`](super::checkpoint)): written at once (so the run's id is kept from the
    /// start) and after every round that closes, and continued from when the directory
    /// already holds one of this plan (then the open round starts at once; the parties resend
    /// their updates for it). The run's id is the one kept there, else the plan's, else a
    /// fresh one; a checkpoint of another plan or another run is refused. Returns the hub
    /// and the round it resumed at, if it did.
    pub fn with_state_dir(
        plan: ValidPlan,
        state_dir: &Path,
        log: impl Fn(&HubEvent) + Send + Sync + 'static,
    ) -> Result<(Self, Option<Round>), CheckpointError> {
        let stored = ServerStore::stored_run_id(state_dir)?;
        let run_id = match (plan.run_id, stored) {
            (Some(ours), Some(theirs)) if ours != theirs => {
                return Err(CheckpointError::Refused {
                    path: state_dir.join("server.state"),
                    reason: format!(
                        "it is run {theirs}'s, and the plan names run {ours}: serve without a run id in the plan, use another --state-dir, or delete it to start over"
                    ),
                });
            }
            (ours, theirs) => match theirs.or(ours) {
                Some(id) => id,
                None => RunId::generate().map_err(CheckpointError::RunId)?,
            },
        };
        let hub = Self::new(plan.with_run_id(Some(run_id)), log)?;
        let mut store = ServerStore::new(
            state_dir,
            &hub.plan,
            hub.max_submission_len,
            hub.max_snapshot_len,
        );
        let loaded = store.load()?;
        let mut state = hub.state();
        let mut resumed = None;
        if let Some((saved, short_rounds)) = loaded {
            let round = saved.round;
            let recent: Vec<(Round, Vec<PartyId>)> = saved
                .published
                .iter()
                .map(|p| (p.round, p.parties.clone()))
                .collect();
            let now = Instant::now();
            let total = hub.plan.total_rounds();
            let refused = |e: super::server::RestoreError| CheckpointError::Refused {
                path: state_dir.join("server.state"),
                reason: e.to_string(),
            };
            either!(&mut state.server, s => s.restore(saved, total, now)).map_err(refused)?;
            state.report.rounds = round.0;
            state.report.short_rounds = short_rounds;
            state.recent = recent.into();
            resumed = Some(round);
        } else {
            // Round 0's state, now: the run's id is kept before any party sees the plan.
            let fresh = either!(&state.server, s => s.state());
            store.save(&fresh, 0)?;
        }
        state.store = Some(store);
        drop(state);
        Ok((hub, resumed))
    }

    /// The run's plan.
    pub fn plan(&self) -> &ValidPlan {
        &self.plan
    }

    /// The size of the largest valid submission (a transport's body limit).
    pub fn max_submission_len(&self) -> usize {
        self.max_submission_len
    }

    /// The size of the largest valid model snapshot (a transport's body limit for it).
    pub fn max_snapshot_len(&self) -> usize {
        self.max_snapshot_len
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in Server; its state is still the
        // last consistent one (every method validates before it mutates).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that `party` joined (it asked for the plan): it is heard from. Loading its data
    /// comes next; round 0's clock waits for [`Hub::ready`].
    pub fn join(&self, party: PartyId) {
        if party.0 >= self.parties {
            return;
        }
        let mut state = self.state();
        state.heard = Instant::now();
        Self::seen(&mut state, party);
    }

    /// Notes that `party` is ready (its data loaded, its checkpoint read): round 0's clock
    /// starts once every party is, or at the join timeout once `min_parties` are. So a party
    /// slow to load its data is never left out of round 0 by a clock that started without it.
    pub fn ready(&self, party: PartyId) {
        if party.0 >= self.parties {
            return;
        }
        let mut state = self.state();
        state.heard = Instant::now();
        Self::seen(&mut state, party);
        if state.ready.insert(party) {
            self.advance(&mut state, Instant::now());
        }
    }

    /// Validates and folds `party`'s update for `round` (see [`Server::submit`]).
    pub fn submit(&self, party: PartyId, round: Round, bytes: &[u8]) -> Result<(), Refusal> {
        let mut state = self.state();
        Self::seen(&mut state, party);
        let start = Instant::now();
        let result = either!(&mut state.server, s => s.submit(party, round, bytes, start));
        state.server_seconds += start.elapsed().as_secs_f64();
        result?;
        state.heard = Instant::now();
        state.ready.insert(party);
        state.gone.remove(&party);
        self.advance(&mut state, Instant::now());
        Ok(())
    }

    /// Strict secure aggregation: `party`, left out of the open round's party set, asks to
    /// rejoin; returns the first round whose set holds it (see [`Server::rejoin`]).
    pub fn rejoin(&self, party: PartyId) -> Result<Round, Refusal> {
        let mut state = self.state();
        Self::seen(&mut state, party);
        let current = either!(&state.server, s => s.current_round());
        let asked_before = either!(&state.server, s => s.is_rejoining(party));
        let from = either!(&mut state.server, s => s.rejoin(party))?;
        state.heard = Instant::now();
        if from > current && !asked_before {
            (self.log)(&HubEvent::Rejoining { party, from });
        }
        Ok(from)
    }

    /// `round`'s published sum, waiting at most `wait` for it (`Ok(None)` if it is still
    /// open then). While waiting, lets the open round's deadline pass.
    ///
    /// `keep_from` is the oldest round `party` may still ask for (its last checkpoint; `None`:
    /// nothing before `round`): the server keeps the sums from there on.
    pub fn fetch(
        &self,
        party: PartyId,
        round: Round,
        wait: Duration,
        keep_from: Option<Round>,
    ) -> Result<Option<Published>, Refusal> {
        let until = Instant::now() + wait;
        let mut state = self.state();
        Self::seen(&mut state, party);
        loop {
            self.advance(&mut state, Instant::now());
            if self.is_stopped() {
                return Ok(None);
            }
            if let Some(published) = either!(&state.server, s => s.aggregate(round))? {
                let last = round.0 + 1 == self.plan.total_rounds();
                let first_time = either!(&state.server, s => s.next_fetch(party)) <= round;
                either!(&mut state.server, s => s.fetched(party, round, keep_from));
                if last && first_time {
                    state.heard = Instant::now();
                    // Saved, so that a server restarted on a run every party has finished
                    // knows it is over rather than waiting for parties that are gone.
                    self.save(&mut state);
                    self.notify_changed();
                }
                return Ok(Some(published));
            }
            if Instant::now() >= until || self.is_stopped() {
                return Ok(None);
            }
            state = self.wait(state, Some(until));
        }
    }

    /// Validates and keeps `party`'s model snapshot of the model before `round`, if newer
    /// than the one kept (see [`Server::put_snapshot`]).
    pub fn put_snapshot(&self, party: PartyId, round: Round, bytes: &[u8]) -> Result<(), Refusal> {
        let mut state = self.state();
        either!(&mut state.server, s => s.put_snapshot(party, round, bytes))?;
        (self.log)(&HubEvent::SnapshotKept {
            round,
            party,
            bytes: bytes.len(),
        });
        self.save(&mut state);
        Ok(())
    }

    /// The latest model snapshot.
    pub fn snapshot(&self) -> Result<ModelSnapshot, Refusal> {
        either!(&self.state().server, s => s.snapshot())
    }

    /// Notes that `party` skipped `round`, a published round whose sum it found could not
    /// be a sum of valid updates (`reason`), and logs it once per party and round
    /// ([`HubEvent::Skipped`]). Refuses a round that is not published or no longer kept.
    pub fn skipped(&self, party: PartyId, round: Round, reason: &str) -> Result<(), Refusal> {
        let mut state = self.state();
        let current = either!(&state.server, s => s.current_round());
        if round >= current {
            return Err(Refusal::NotYet {
                asked: round,
                current,
            });
        }
        let parties = state
            .recent
            .iter()
            .find(|(r, _)| *r == round)
            .map(|(_, parties)| parties.clone())
            .ok_or(Refusal::NoSuchAggregate {
                asked: round,
                current,
                kept: self.keep_rounds,
            })?;
        let keep_from = Round(current.0.saturating_sub(self.keep_rounds as u64));
        state.skip_reports.retain(|(r, _)| *r >= keep_from);
        if state.skip_reports.insert((round, party)) {
            let reason: String = reason
                .chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect();
            (self.log)(&HubEvent::Skipped {
                round,
                party,
                parties,
                reason,
            });
        }
        Ok(())
    }

    /// Whether the run is over: every party fetched the last sum.
    pub fn is_finished(&self) -> bool {
        self.finished(&self.state())
    }

    fn finished(&self, state: &State) -> bool {
        let total = self.plan.total_rounds();
        (0..self.parties).all(|p| either!(&state.server, s => s.next_fetch(PartyId(p))).0 >= total)
    }

    fn idle(&self, state: &State, now: Instant) -> bool {
        now >= state.heard + self.rules.idle_timeout
    }

    /// Blocks until the run is over: every party fetched the last sum, or no party has been
    /// heard from for the idle timeout (then the report names the parties missing), or
    /// [`Hub::stop`]. Lets the rounds' deadlines pass meanwhile.
    pub fn wait_finished(&self) -> ServeReport {
        let mut state = self.state();
        loop {
            let now = Instant::now();
            self.advance(&mut state, now);
            if self.finished(&state) || self.is_stopped() {
                return state.report.clone();
            }
            if self.idle(&state, now) {
                state.report.missing = self.missing(&state);
                return state.report.clone();
            }
            state = self.wait(state, None);
        }
    }

    /// The parties the run is waiting for: those that have not fetched the last sum once it
    /// is published, else those the open round has not heard from.
    fn missing(&self, state: &State) -> Vec<Missing> {
        let server = &state.server;
        let current = either!(server, s => s.current_round());
        let submitted: BTreeSet<PartyId> = either!(server, s => s.submitted().collect());
        let done = current.0 >= self.plan.total_rounds();
        (0..self.parties)
            .map(PartyId)
            .filter(|&p| {
                if done {
                    either!(server, s => s.next_fetch(p)) < current
                } else {
                    !submitted.contains(&p)
                }
            })
            .map(|party| {
                let missed = u64::from(either!(server, s => s.missed(party)));
                let since = if missed > 0 {
                    Round(current.0.saturating_sub(missed))
                } else {
                    either!(server, s => s.next_fetch(party)).min(current)
                };
                Missing { party, since }
            })
            .collect()
    }

    /// Waits on the condition variable until something changes, `until`, or the next time
    /// the state machine needs the clock (the open round's deadline, the join timeout, the
    /// idle timeout), whichever comes first.
    fn wait<'a>(
        &self,
        state: MutexGuard<'a, State>,
        until: Option<Instant>,
    ) -> MutexGuard<'a, State> {
        let now = Instant::now();
        let clock = match either!(&state.server, s => s.deadline()) {
            Some(deadline) => deadline,
            None => self.created + self.rules.join_timeout,
        };
        let wake = [
            Some(clock),
            until,
            Some(state.heard + self.rules.idle_timeout),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now)
        .max(now + Duration::from_millis(1));
        self.changed
            .wait_timeout(state, wake - now)
            .unwrap_or_else(|p| p.into_inner())
            .0
    }

    /// Ends the run early (a party in this process failed): waiters return at once.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let _guard = self.state();
        self.notify_changed();
    }

    /// Whether [`Hub::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Calls `on_change` whenever a round closes, the run ends or the hub stops: what a
    /// waiter polling [`Hub::fetch`] with no wait needs to know to ask again (the HTTP
    /// server's long polls wait this way, without holding a thread each). `on_change` runs
    /// with the hub's lock held: it must only signal, never call the hub.
    pub fn watch(&self, on_change: impl Fn() + Send + Sync + 'static) {
        self.watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(on_change));
    }

    /// What an operator sees: the open round, each party's state, the last rounds' times and
    /// sizes. Cheap (one pass over the parties under the lock); nothing in it is secret (no
    /// message contents, no tokens).
    pub fn status(&self) -> Status {
        let state = self.state();
        let now = Instant::now();
        let parties = (0..self.parties)
            .map(|p| {
                let id = PartyId(p);
                PartyStatus {
                    party: p,
                    ready: state.ready.contains(&id),
                    last_seen_seconds: state.seen[p as usize]
                        .map(|t| now.duration_since(t).as_secs_f64()),
                    rounds_missed: either!(&state.server, s => s.missed(id)),
                    gone: either!(&state.server, s => s.is_gone(id)),
                    next_fetch: either!(&state.server, s => s.next_fetch(id)).0,
                }
            })
            .collect();
        Status {
            round: either!(&state.server, s => s.current_round()).0,
            total_rounds: self.plan.total_rounds(),
            finished: self.finished(&state),
            stopped: self.is_stopped(),
            uptime_seconds: now.duration_since(self.created).as_secs_f64(),
            parties,
            recent_rounds: state.timings.iter().cloned().collect(),
        }
    }

    /// Notes that `party` was heard from now.
    fn seen(state: &mut State, party: PartyId) {
        if let Some(slot) = state.seen.get_mut(party.0 as usize) {
            *slot = Some(Instant::now());
        }
    }

    /// Wakes the threads waiting on the hub and tells its watchers.
    fn notify_changed(&self) {
        self.changed.notify_all();
        for watcher in self
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            watcher();
        }
    }

    /// Rounds published so far.
    pub fn report(&self) -> ServeReport {
        self.state().report.clone()
    }

    /// Wall-clock seconds spent validating and folding submissions.
    pub fn server_seconds(&self) -> f64 {
        self.state().server_seconds
    }

    /// Lets time pass for the state machine: starts round 0's clock when the parties have
    /// joined, closes the open round at its deadline; then logs newly closed rounds (epoch
    /// ends, changes in who is in, parties gone) and wakes waiters.
    fn advance(&self, state: &mut State, now: Instant) {
        let started = either!(&state.server, s => s.is_started());
        if !started {
            let all = state.ready.len() == self.parties as usize;
            let min = self.rules.min_parties(self.parties) as usize;
            let timed_out = now >= self.created + self.rules.join_timeout;
            if all || (timed_out && state.ready.len() >= min) {
                either!(&mut state.server, s => s.start(now));
                state.last_close = Some(now);
                (self.log)(&HubEvent::Started {
                    joined: state.ready.iter().copied().collect(),
                    of: self.parties as usize,
                });
            }
        }
        either!(&mut state.server, s => s.tick(now));
        let current = either!(&state.server, s => s.current_round()).0;
        if current == state.report.rounds {
            return;
        }
        let parties = self.parties as usize;
        let per_epoch = self.plan.rounds_per_epoch as u64;
        for r in state.report.rounds..current {
            let Ok(Some(published)) = either!(&state.server, s => s.aggregate(Round(r))) else {
                continue;
            };
            let since = state
                .last_close
                .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
            state.last_close = Some(now);
            state.timings.push_back(RoundStatus {
                round: published.round.0,
                parties: published.parties.len(),
                seconds: since,
                sum_bytes: published.bytes.len(),
                void: published.void,
            });
            while state.timings.len() > STATUS_ROUNDS {
                state.timings.pop_front();
            }
            if published.void {
                state.report.void_rounds += 1;
                (self.log)(&HubEvent::Void {
                    round: published.round,
                    submitted: published.parties.clone(),
                    next_set: published.next_set.clone().unwrap_or_default(),
                });
            }
            state
                .recent
                .push_back((published.round, published.parties.clone()));
            while state.recent.len() > self.keep_rounds {
                state.recent.pop_front();
            }
            if published.void {
                // Logged above; neither short nor complete.
            } else if published.parties.len() < parties {
                state.report.short_rounds += 1;
                if state.short.as_ref() != Some(&published.parties) {
                    (self.log)(&HubEvent::ShortRound {
                        round: published.round,
                        parties: published.parties.clone(),
                        of: parties,
                    });
                    state.short = Some(published.parties.clone());
                }
            } else if state.short.take().is_some() {
                (self.log)(&HubEvent::Complete {
                    round: published.round,
                });
            }
            if (r + 1) % per_epoch == 0 {
                (self.log)(&HubEvent::EpochDone {
                    epoch: (r + 1) / per_epoch,
                    rounds: r + 1,
                    total_rounds: self.plan.total_rounds(),
                });
            }
        }
        for party in (0..self.parties).map(PartyId) {
            if either!(&state.server, s => s.is_gone(party)) && state.gone.insert(party) {
                let missed = u64::from(either!(&state.server, s => s.missed(party)));
                (self.log)(&HubEvent::Gone {
                    party,
                    since: Round(current.saturating_sub(missed)),
                });
            }
        }
        state.report.rounds = current;
        self.save(state);
        self.notify_changed();
    }

    /// Writes the server's checkpoint, if it keeps one, retrying a failed write twice. If it
    /// keeps failing, the hub stops before anyone can see what it could not save (the lock
    /// is held throughout): no sum is served that a restart would not have.
    fn save(&self, state: &mut State) {
        let short_rounds = state.report.short_rounds;
        let Some(store) = state.store.as_mut() else {
            return;
        };
        let saved = either!(&state.server, s => s.state());
        let mut failure = None;
        for wait in [
            Duration::ZERO,
            Duration::from_millis(100),
            Duration::from_millis(500),
        ] {
            std::thread::sleep(wait);
            match store.save(&saved, short_rounds) {
                Ok(()) => return,
                Err(e) => failure = Some(e.to_string()),
            }
        }
        let reason = failure.unwrap_or_default();
        (self.log)(&HubEvent::StoreFailed {
            reason: reason.clone(),
        });
        state.report.store_failed = Some(reason);
        state.store = None;
        self.stopped.store(true, Ordering::SeqCst);
        self.notify_changed();
    }
}

/// The in-process uplink: a party's calls go straight to the [`Hub`].
pub struct HubUplink {
    hub: Arc<Hub>,
    party: PartyId,
}

impl HubUplink {
    /// `party`'s connection to `hub`; the party joins the federation ([`Hub::join`]).
    pub fn new(hub: Arc<Hub>, party: PartyId) -> Self {
        hub.join(party);
        Self { hub, party }
    }
}

impl Uplink for HubUplink {
    fn submit(&mut self, round: Round, bytes: &[u8]) -> Result<Submitted, UplinkError> {
        match self.hub.submit(self.party, round, bytes) {
            Ok(()) => Ok(Submitted::Accepted),
            Err(refusal) => match refusal.submitted() {
                Some(submitted) => Ok(submitted),
                None => Err(refused(&refusal)),
            },
        }
    }

    fn fetch(&mut self, round: Round, keep_from: Option<Round>) -> Result<Published, UplinkError> {
        loop {
            if let Some(published) = self
                .hub
                .fetch(self.party, round, Duration::from_secs(1), keep_from)
                .map_err(|r| refused(&r))?
            {
                return Ok(published);
            }
            if self.hub.is_stopped() {
                return Err(UplinkError::Stopped);
            }
        }
    }

    fn skipped(&mut self, round: Round, reason: &str) -> Result<(), UplinkError> {
        self.hub
            .skipped(self.party, round, reason)
            .map_err(|r| refused(&r))
    }

    fn rejoin(&mut self, _round: Round) -> Result<Round, UplinkError> {
        self.hub.rejoin(self.party).map_err(|r| refused(&r))
    }

    fn put_snapshot(&mut self, round: Round, bytes: &[u8]) -> Result<(), UplinkError> {
        self.hub
            .put_snapshot(self.party, round, bytes)
            .map_err(|r| refused(&r))
    }

    fn ready(&mut self) -> Result<(), UplinkError> {
        self.hub.ready(self.party);
        Ok(())
    }

    fn snapshot(&mut self) -> Result<ModelSnapshot, UplinkError> {
        self.hub.snapshot().map_err(|r| refused(&r))
    }
}

fn refused(refusal: &Refusal) -> UplinkError {
    UplinkError::Refused {
        kind: RefusalKind::from(refusal),
        reason: refusal.to_string(),
    }
}
