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

use super::config::ConfigError;
use super::error::{RefusalKind, UplinkError};
use super::party::{Submitted, Uplink};
use super::payload::{PlainSum, Summable};
use super::plan::ValidPlan;
use super::server::{PartyId, Published, Refusal, Round, Server, ServerConfig};
use crate::he::EncryptedVector;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What a finished server reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServeReport {
    /// Rounds published.
    pub rounds: u64,
    /// Rounds published without every party.
    pub short_rounds: u64,
}

/// Something a server operator should know, reported through the hub's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HubEvent {
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
            Self::ShortRound { round, parties, of } => write!(
                f,
                "{round} closed at its deadline with parties {} ({} of {of}); later rounds with the same parties are not logged",
                party_list(parties),
                parties.len()
            ),
            Self::Complete { round } => write!(f, "{round} closed with every party again"),
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
            Self::EpochDone {
                epoch,
                rounds,
                total_rounds,
            } => write!(f, "epoch {epoch} done ({rounds} of {total_rounds} rounds)"),
        }
    }
}

/// A [`Server`] of either payload type, behind one object-safe interface: the one place
/// where the plan's privacy mode picks what the server folds.
trait Rounds: Send {
    fn submit(
        &mut self,
        party: PartyId,
        round: Round,
        bytes: &[u8],
        now: Instant,
    ) -> Result<(), Refusal>;
    fn tick(&mut self, now: Instant) -> bool;
    fn aggregate(&self, round: Round) -> Result<Option<Published>, Refusal>;
    fn current_round(&self) -> Round;
    fn deadline(&self) -> Instant;
}

impl<S: Summable> Rounds for Server<S> {
    fn submit(
        &mut self,
        party: PartyId,
        round: Round,
        bytes: &[u8],
        now: Instant,
    ) -> Result<(), Refusal> {
        Server::submit(self, party, round, bytes, now)
    }
    fn tick(&mut self, now: Instant) -> bool {
        Server::tick(self, now)
    }
    fn aggregate(&self, round: Round) -> Result<Option<Published>, Refusal> {
        Server::aggregate(self, round)
    }
    fn current_round(&self) -> Round {
        Server::current_round(self)
    }
    fn deadline(&self) -> Instant {
        Server::deadline(self)
    }
}

struct State {
    server: Box<dyn Rounds>,
    report: ServeReport,
    /// Parties that fetched the last round's sum.
    last_fetched: BTreeSet<PartyId>,
    /// The parties in the last round's sum and when it was published.
    last_published: Option<(Vec<PartyId>, Instant)>,
    /// The parties of the last round published without every party, until one has all.
    short: Option<Vec<PartyId>>,
    /// Skip reports already logged, as (round, party), for rounds still kept.
    skip_reports: BTreeSet<(Round, PartyId)>,
    /// Seconds spent validating and folding submissions.
    server_seconds: f64,
}

/// One federation's server, clock and waiters (see the [module docs](self)).
pub struct Hub {
    plan: ValidPlan,
    state: Mutex<State>,
    changed: Condvar,
    stopped: AtomicBool,
    max_submission_len: usize,
    keep_rounds: usize,
    log: Box<dyn Fn(&HubEvent) + Send + Sync>,
}

impl Hub {
    /// A hub for `plan` whose first round opens now. A round closes when every party has
    /// submitted, or at its deadline (`plan.round_timeout` after it opened) with at least
    /// `min_parties` (default: all). `log` receives an event per epoch and per round closed
    /// without every party.
    ///
    /// ```
    /// use hefl::fl::{Hub, PartyId, PlainSum, Round, Summable, TrainConfig, plan_for};
    /// use std::time::Duration;
    ///
    /// let config = TrainConfig { parties: 2, epochs: 1, layers: vec![784, 1, 10], ..TrainConfig::default() };
    /// let plan = plan_for(&config, 100, Some(1), None, Duration::from_secs(30))?;
    /// let update = PlainSum::fresh(vec![1; plan.wire_slots()]).to_bytes(); // 795 + weight
    /// let hub = Hub::new(plan, None, |_: &hefl::fl::HubEvent| {})?;
    /// hub.submit(PartyId(0), Round(0), &update)?;
    /// assert!(hub.fetch(PartyId(0), Round(0), Duration::ZERO)?.is_none()); // party 1 missing
    /// hub.submit(PartyId(1), Round(0), &update)?;
    /// let sum = hub.fetch(PartyId(0), Round(0), Duration::ZERO)?.expect("published");
    /// assert_eq!(sum.parties, [PartyId(0), PartyId(1)]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(
        plan: ValidPlan,
        min_parties: Option<u32>,
        log: impl Fn(&HubEvent) + Send + Sync + 'static,
    ) -> Result<Self, ConfigError> {
        let parties = u32::try_from(plan.config.parties).unwrap_or(u32::MAX);
        let config = ServerConfig {
            min_parties: min_parties.unwrap_or(parties),
            round_timeout: plan.round_timeout,
            ..ServerConfig::new(parties)
        };
        let keep_rounds = config.keep_rounds;
        let now = Instant::now();
        let server: Box<dyn Rounds> = match plan.expected_he() {
            Some(expect) => Box::new(Server::<EncryptedVector>::new(config, expect, now)?),
            None => Box::new(Server::<PlainSum>::new(config, plan.wire_slots(), now)?),
        };
        let max_submission_len = plan.max_message_len();
        Ok(Self {
            plan,
            state: Mutex::new(State {
                server,
                report: ServeReport::default(),
                last_fetched: BTreeSet::new(),
                last_published: None,
                short: None,
                skip_reports: BTreeSet::new(),
                server_seconds: 0.0,
            }),
            changed: Condvar::new(),
            stopped: AtomicBool::new(false),
            max_submission_len,
            keep_rounds,
            log: Box::new(log),
        })
    }

    /// The run's plan.
    pub fn plan(&self) -> &ValidPlan {
        &self.plan
    }

    /// The size of the largest valid submission (a transport's body limit).
    pub fn max_submission_len(&self) -> usize {
        self.max_submission_len
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in Server; its state is still the
        // last consistent one (every method validates before it mutates).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Validates and folds `party`'s update for `round` (see [`Server::submit`]).
    pub fn submit(&self, party: PartyId, round: Round, bytes: &[u8]) -> Result<(), Refusal> {
        let mut state = self.state();
        let start = Instant::now();
        let result = state.server.submit(party, round, bytes, start);
        state.server_seconds += start.elapsed().as_secs_f64();
        result?;
        self.after_change(&mut state);
        Ok(())
    }

    /// `round`'s published sum, waiting at most `wait` for it (`Ok(None)` if it is still
    /// open then). While waiting, closes the open round at its deadline if enough parties
    /// are in.
    pub fn fetch(
        &self,
        party: PartyId,
        round: Round,
        wait: Duration,
    ) -> Result<Option<Published>, Refusal> {
        let until = Instant::now() + wait;
        let mut state = self.state();
        loop {
            let now = Instant::now();
            if state.server.tick(now) {
                self.after_change(&mut state);
            }
            if let Some(published) = state.server.aggregate(round)? {
                if round.0 + 1 == self.plan.total_rounds() {
                    state.last_fetched.insert(party);
                    self.changed.notify_all();
                }
                return Ok(Some(published));
            }
            if now >= until || self.is_stopped() {
                return Ok(None);
            }
            let wake = until
                .min(state.server.deadline())
                .max(now + Duration::from_millis(1));
            state = self
                .changed
                .wait_timeout(state, wake - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Notes that `party` skipped `round`, a published round whose sum it found could not
    /// be a sum of valid updates (`reason`), and logs it once per party and round
    /// ([`HubEvent::Skipped`]). Refuses a round that is not published or no longer kept.
    pub fn skipped(&self, party: PartyId, round: Round, reason: &str) -> Result<(), Refusal> {
        let mut state = self.state();
        let current = state.server.current_round();
        let published = state
            .server
            .aggregate(round)?
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
                parties: published.parties,
                reason,
            });
        }
        Ok(())
    }

    /// Whether the run is over: the last round is published and every party in it has
    /// fetched it, or one round timeout has passed since it was published.
    pub fn is_finished(&self) -> bool {
        self.finished(&self.state())
    }

    fn finished(&self, state: &State) -> bool {
        state.last_published.as_ref().is_some_and(|(parties, at)| {
            parties.iter().all(|p| state.last_fetched.contains(p))
                || at.elapsed() >= self.plan.round_timeout
        })
    }

    /// Blocks until [`Hub::is_finished`] or [`Hub::stop`], letting the rounds' deadlines
    /// pass meanwhile; returns what was published.
    pub fn wait_finished(&self) -> ServeReport {
        let mut state = self.state();
        loop {
            let now = Instant::now();
            if state.server.tick(now) {
                self.after_change(&mut state);
            }
            if self.finished(&state) || self.is_stopped() {
                return state.report.clone();
            }
            let wake = match &state.last_published {
                Some((_, at)) => *at + self.plan.round_timeout,
                None => state.server.deadline(),
            };
            let timeout = wake
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            state = self
                .changed
                .wait_timeout(state, timeout)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Ends the run early (a party in this process failed): waiters return at once.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let _guard = self.state();
        self.changed.notify_all();
    }

    /// Whether [`Hub::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Rounds published so far.
    pub fn report(&self) -> ServeReport {
        self.state().report.clone()
    }

    /// Wall-clock seconds spent validating and folding submissions.
    pub fn server_seconds(&self) -> f64 {
        self.state().server_seconds
    }

    /// Logs newly closed rounds (epoch ends and rounds without every party) and wakes
    /// waiters.
    fn after_change(&self, state: &mut State) {
        let current = state.server.current_round().0;
        if current == state.report.rounds {
            return;
        }
        let parties = self.plan.config.parties;
        let per_epoch = self.plan.rounds_per_epoch as u64;
        for r in state.report.rounds..current {
            let Ok(Some(published)) = state.server.aggregate(Round(r)) else {
                continue;
            };
            if published.parties.len() < parties {
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
            if r + 1 == self.plan.total_rounds() {
                state.last_published = Some((published.parties, Instant::now()));
            }
        }
        state.report.rounds = current;
        self.changed.notify_all();
    }
}

/// The in-process uplink: a party's calls go straight to the [`Hub`].
pub struct HubUplink {
    hub: Arc<Hub>,
    party: PartyId,
}

impl HubUplink {
    /// `party`'s connection to `hub`.
    pub fn new(hub: Arc<Hub>, party: PartyId) -> Self {
        Self { hub, party }
    }
}

impl Uplink for HubUplink {
    fn submit(&mut self, round: Round, bytes: Vec<u8>) -> Result<Submitted, UplinkError> {
        match self.hub.submit(self.party, round, &bytes) {
            Ok(()) => Ok(Submitted::Accepted),
            Err(refusal) if refusal.is_late() => Ok(Submitted::Late(refusal.to_string())),
            Err(refusal) => Err(refused(&refusal)),
        }
    }

    fn fetch(&mut self, round: Round) -> Result<Published, UplinkError> {
        loop {
            if let Some(published) = self
                .hub
                .fetch(self.party, round, Duration::from_secs(1))
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
}

fn refused(refusal: &Refusal) -> UplinkError {
    UplinkError::Refused {
        kind: RefusalKind::from(refusal),
        reason: refusal.to_string(),
    }
}
