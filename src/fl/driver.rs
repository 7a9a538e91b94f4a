//! Driving a party: the one training loop of every mode and every transport.
//!
//! [`run_party`] follows a server's [`Plan`](super::Plan) round by round: its client computes
//! an update from the global model, the [`Party`] state machine seals it, the driver moves the
//! bytes through an [`Uplink`] (the network transport, or the in-process
//! [`HubUplink`](super::HubUplink) that [`run`](super::run) gives each party thread) and hands
//! what comes back to the machine, which decides everything else (order, catch-up, the skip
//! rule, resyncing, snapshots). The driver adds only what needs a clock, a disk or a thread:
//! retries, the background preparation of encryptions, checkpoints, evaluation and progress.
//! The local and centralized baselines run the same loop with one trainer whose update is
//! the aggregate (with one client, FedSGD is ordinary mini-batch training).

use super::checkpoint::{Checkpoints, Progress};
use super::client::{Client, Update};
use super::config::{ConfigError, Field, Privacy, ValidConfig};
use super::envelope::{Envelope, EnvelopeCost, EnvelopeError};
use super::error::{PartyError, TrainError, UplinkError};
use super::metrics::{EpochMetrics, Observer, Overhead, RunMetrics};
use super::party::{GlobalModel, Party, Received};
use super::plan::{PlanPartyError, ValidPlan};
use super::server::{PartyId, Round};
use super::setup::setup;
use super::uplink::{Retry, Submitted, Uplink};
use crate::data::{Dataset, Mnist};
use crate::he::PreparedEncryption;
use crate::he::keys::SecretKey;
use crate::model::EmaState;
use crate::secagg::{Credentials, plan_policy};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Fresh encryptions a party tries for one round when copies of its upload keep getting in
/// first (each copy needs the attacker to see the new upload and win the race again).
const MAX_RESEALS: u32 = 3;

/// How a party runs besides the plan: how it waits out a lost server, and where it keeps
/// its checkpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartyOptions {
    /// Retrying a lost server.
    pub retry: Retry,
    /// Where to keep checkpoints (none without); a checkpoint found there is resumed from
    /// (see [`checkpoint`](super::checkpoint)).
    pub state_dir: Option<PathBuf>,
    /// Rounds between checkpoints, besides every epoch's end.
    pub checkpoint_every: u64,
    /// Secure aggregation: this party's identity and roster (required by a plan with
    /// secure aggregation; a plan without it, or weaker than the roster, is refused).
    pub secure_agg: Option<Credentials>,
}

impl Default for PartyOptions {
    /// The default [`Retry`], no checkpoints (every 16 rounds when a directory is given:
    /// the server keeps sums for a restart at most
    /// [`DEFAULT_KEEP_ROUNDS`](super::DEFAULT_KEEP_ROUNDS) rounds back).
    fn default() -> Self {
        Self {
            retry: Retry::default(),
            state_dir: None,
            checkpoint_every: 16,
            secure_agg: None,
        }
    }
}

/// Runs party `party`'s side of a federated run as `plan` says, on its shard of `data`.
///
/// Each round: compute the update, seal it, submit it (if the round already closed, the
/// party is left out of it and says so to `observer`), fetch the round's sum and hand it to
/// the [`Party`] machine, which applies it, or skips it when it cannot be a sum of valid
/// updates (then the party tells `observer` and the server, [`Uplink::skipped`]). A party
/// whose sums the server no longer keeps resyncs from the latest model snapshot. After each
/// epoch the party evaluates its model on the test set.
pub fn run_party(
    plan: &ValidPlan,
    party: PartyId,
    data: &Mnist,
    key: Option<Arc<SecretKey>>,
    uplink: &mut dyn Uplink,
    observer: &mut dyn Observer,
    options: &PartyOptions,
) -> Result<RunMetrics, PartyError> {
    let started = Instant::now();
    let parties = plan.config.parties;
    if party.0 as usize >= parties {
        return Err(PartyError::NotInFederation { party, parties });
    }
    match (plan.config.secure_agg, &options.secure_agg) {
        (Some(mode), None) => return Err(PartyError::NoCredentials { mode }),
        (mode, Some(credentials)) => {
            let policy = mode.map(|m| plan_policy(m, parties as u32, plan.rules.min_parties));
            credentials
                .check_plan(party, plan.key_id, policy)
                .map_err(crate::secagg::SecAggError::from)?;
        }
        (None, None) => {}
    }
    let mut setup = setup(plan.config(), data, Some(party))?;
    let client = setup
        .clients
        .pop()
        .ok_or(PartyError::NotInFederation { party, parties })?;
    Member {
        plan,
        client,
        test: Some(&setup.test),
        key,
        options,
        started,
        secure_agg: options.secure_agg.clone(),
    }
    .run(uplink, observer)
}

/// One federation member's run: what [`run_party`] sets up, and what
/// [`run`](super::run) gives each party thread.
pub(crate) struct Member<'a> {
    pub(crate) plan: &'a ValidPlan,
    pub(crate) client: Client,
    /// The test set, for the party that reports (in one process only party 0 evaluates:
    /// all models are identical).
    pub(crate) test: Option<&'a Dataset>,
    pub(crate) key: Option<Arc<SecretKey>>,
    pub(crate) options: &'a PartyOptions,
    pub(crate) started: Instant,
    /// `strict` secure aggregation: this party's identity and the roster.
    pub(crate) secure_agg: Option<Credentials>,
}

impl Member<'_> {
    /// Runs the member's rounds through `uplink`, reporting to `observer`.
    pub(crate) fn run(
        self,
        uplink: &mut dyn Uplink,
        observer: &mut dyn Observer,
    ) -> Result<RunMetrics, PartyError> {
        let Self {
            plan,
            mut client,
            test,
            key,
            options,
            started,
            secure_agg,
        } = self;
        let config = plan.config();
        if let (Some(ema), Some(_)) = (config.ema, &options.state_dir) {
            // The average is not part of a checkpoint: a resumed run would report another.
            return Err(PartyError::Train(TrainError::Config(
                ConfigError::Invalid {
                    field: Field::Ema,
                    expected: "no EMA in a run that keeps checkpoints (--state-dir)".into(),
                    found: ema.decay.to_string(),
                },
            )));
        }
        let mut party = Party::for_plan(plan, client.id(), key.clone())?;
        if let Some(credentials) = secure_agg {
            let blinder = credentials.blinder(client.id(), party.federation().run)?;
            party = party
                .with_secure_agg(blinder)
                .map_err(PlanPartyError::from)?;
        }
        let checkpoints = options.state_dir.as_deref().map(|dir| {
            Checkpoints::new(
                dir,
                plan,
                client.id(),
                options.checkpoint_every,
                key.as_deref(),
            )
        });
        let mut progress = Progress::default();
        if let Some(checkpoints) = &checkpoints
            && let Some(resumed) = checkpoints.load(&mut party, &mut client, plan.total_rounds())?
        {
            observer.note(&format!(
                "resuming from the checkpoint in {}: round {} of {}",
                checkpoints.dir().display(),
                party.next_round().0,
                plan.total_rounds()
            ));
            progress = resumed;
        }
        let preparing = match config.privacy {
            Privacy::He => Preparing::new(party.envelope().clone()),
            _ => Preparing::default(),
        };
        let ema = config.ema.map(|ema| ema.start(party.model()));
        let mut member = Federated {
            keep_from: checkpoints.as_ref().map(|_| party.next_round()),
            party,
            preparing,
            prepared: None,
            uplink,
            cost: EnvelopeCost::default(),
            overhead: Overhead {
                privacy: config.privacy,
                ..Overhead::default()
            },
            retry: options.retry,
            checkpoints,
            rejoining: None,
        };
        // Data loaded and checkpoint read: round 0's clock may start.
        let retry = options.retry;
        retry
            .call("telling the server this party is ready", observer, || {
                member.uplink.ready()
            })
            .map_err(|source| PartyError::Uplink {
                round: member.party.next_round(),
                source,
            })?;
        let mut training = Training {
            config,
            rounds_per_epoch: plan.rounds_per_epoch,
            client,
            test,
            started,
            progress,
            ema,
        };
        training.run(&mut member, observer)?;
        let Federated {
            party,
            cost,
            mut overhead,
            ..
        } = member;
        overhead.client_cpu = cost;
        overhead.skipped_rounds = party.skipped().to_vec();
        overhead.void_rounds = party.voided().to_vec();
        Ok(training.metrics(party.model(), Some(overhead)))
    }
}

/// Trains one client alone (local and centralized baselines): its update is the aggregate.
pub(crate) fn run_alone(
    config: &ValidConfig,
    client: Client,
    test: &Dataset,
    observer: &mut dyn Observer,
    started: Instant,
) -> Result<RunMetrics, PartyError> {
    let rounds_per_epoch = config.rounds_per_epoch(client.num_samples());
    let total_rounds = (rounds_per_epoch as u64).saturating_mul(config.epochs as u64);
    let mut alone = Alone {
        model: GlobalModel::new(client.model().params().to_vec(), config.step())
            .with_schedule(config.lr_schedule, total_rounds),
        next_round: Round(0),
    };
    let mut training = Training {
        config,
        rounds_per_epoch,
        ema: config.ema.map(|ema| ema.start(client.model().params())),
        client,
        test: Some(test),
        started,
        progress: Progress::default(),
    };
    training.run(&mut alone, observer)?;
    Ok(training.metrics(alone.model.params(), None))
}

/// How a round's update becomes the step of the global model.
trait Rounds {
    /// The next round to run.
    fn next_round(&self) -> Round;
    /// The global model.
    fn model(&self) -> &[f32];
    /// Exchanges this party's `update` for `round`'s aggregate and applies it (or skips the
    /// round, or resyncs: [`Rounds::next_round`] says where the party is afterwards).
    fn exchange(
        &mut self,
        round: Round,
        update: &Update,
        saved: (&Client, &Progress),
        observer: &mut dyn Observer,
    ) -> Result<(), PartyError>;
    /// Whether this party sealed `round`'s update before a restart and has not had its sum:
    /// then it resends those bytes, and computes no update (the checkpoint saved with them
    /// holds the training state after that round's batch).
    fn sealed_before(&self, _round: Round) -> bool {
        false
    }
    /// A round ended (`epoch_end`: the last of an epoch): save a checkpoint if one is due.
    fn after_round(
        &mut self,
        _client: &Client,
        _progress: &Progress,
        _epoch_end: bool,
    ) -> Result<(), PartyError> {
        Ok(())
    }
}

/// One trainer: its update is the aggregate.
struct Alone {
    model: GlobalModel,
    next_round: Round,
}

impl Rounds for Alone {
    fn next_round(&self) -> Round {
        self.next_round
    }

    fn model(&self) -> &[f32] {
        self.model.params()
    }

    fn exchange(
        &mut self,
        round: Round,
        update: &Update,
        _saved: (&Client, &Progress),
        _observer: &mut dyn Observer,
    ) -> Result<(), PartyError> {
        self.model.apply(&update.values);
        self.next_round = Round(round.0 + 1);
        Ok(())
    }
}

/// What a background preparation returns: the encryption of zero (`None` in plain mode) and
/// its cost.
type Preparation = Result<(Option<PreparedEncryption>, EnvelopeCost), EnvelopeError>;

/// A federation member: the [`Party`] machine and its uplink; in `he` mode it prepares the
/// next round's encryption of zero on a second thread from the moment it has submitted this
/// round's update until it seals the next one (while it waits for the sum, opens it and
/// computes the next update).
struct Federated<'u> {
    party: Party,
    /// The background preparation of the next update's encryption of zero (`he`).
    preparing: Preparing,
    /// The encryption of zero prepared for the next update (`he`), used once.
    prepared: Option<PreparedEncryption>,
    uplink: &'u mut dyn Uplink,
    cost: EnvelopeCost,
    overhead: Overhead,
    retry: Retry,
    checkpoints: Option<Checkpoints>,
    /// The round of the last checkpoint: the server keeps the sums from there on.
    keep_from: Option<Round>,
    /// Strict secure aggregation: the round from which the server said this party, left
    /// out, is back in the party set (it asked to rejoin).
    rejoining: Option<Round>,
}

impl Federated<'_> {
    /// Waits for the background preparation, if one is running, and keeps its encryption of
    /// zero for the next seal.
    fn finish_preparing(&mut self, round: Round) -> Result<(), PartyError> {
        let Some(finished) = self.preparing.finish() else {
            return Ok(());
        };
        match finished {
            Ok(Ok((prepared, cost))) => {
                self.prepared = prepared;
                self.cost.add(&cost);
                Ok(())
            }
            Ok(Err(source)) => Err(PartyError::Envelope {
                round,
                source: Box::new(source),
            }),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Resyncs from the server's latest model snapshot: the sum of `round` is gone.
    fn resync(&mut self, round: Round, observer: &mut dyn Observer) -> Result<(), PartyError> {
        let uplink = &mut *self.uplink;
        let snapshot = self
            .retry
            .call("fetching the model snapshot", observer, || {
                uplink.snapshot()
            })
            .map_err(|source| PartyError::Uplink { round, source })?;
        self.party
            .resync(snapshot.round, &snapshot.bytes)
            .map_err(|source| PartyError::Resync {
                round,
                source: Box::new(source),
            })?;
        observer.note(&format!(
            "the sum of {round} is no longer kept: resynced from the model snapshot of {}",
            snapshot.round
        ));
        self.overhead.resyncs += 1;
        Ok(())
    }
}

impl Federated<'_> {
    /// Saves a checkpoint (if the party keeps them). A failed write is tried twice more;
    /// then the party stops, its last good checkpoint intact (writes are atomic), naming the
    /// file and the error.
    fn save_checkpoint(&self, client: &Client, progress: &Progress) -> Result<(), PartyError> {
        let Some(checkpoints) = &self.checkpoints else {
            return Ok(());
        };
        let mut saved = checkpoints.save(&self.party, client, progress);
        for wait in [Duration::from_millis(100), Duration::from_millis(500)] {
            if saved.is_ok() {
                break;
            }
            std::thread::sleep(wait);
            saved = checkpoints.save(&self.party, client, progress);
        }
        Ok(saved?)
    }
}

impl Federated<'_> {
    /// Seals this party's `update` for `round` and submits it; returns the bytes sent (the
    /// fetch resends them if the server was lost meanwhile).
    fn submit(
        &mut self,
        round: Round,
        update: &Update,
        (client, progress): (&Client, &Progress),
        observer: &mut dyn Observer,
    ) -> Result<Vec<u8>, PartyError> {
        let resent = self.party.sealed_upload(round).is_some();
        let sealing = Instant::now();
        let sealed = self
            .party
            .seal(
                round,
                &update.values,
                update.samples as u64,
                self.prepared.take(),
                &mut self.cost,
            )
            .map_err(|source| PartyError::Seal {
                round,
                source: Box::new(source),
            })?;
        self.overhead.seal_seconds += sealing.elapsed().as_secs_f64();
        self.overhead.clipped_values += sealed.clipped as u64;
        if resent {
            observer.note(&format!(
                "{round}: sending the upload sealed before the restart again, byte for byte (a blinded round is never sealed twice)"
            ));
        } else if self.party.sealed_upload(round).is_some() {
            // Secure aggregation: "sealed" and its bytes are on disk before they leave.
            self.save_checkpoint(client, progress)?;
        }
        let uplink_error = |source| PartyError::Uplink { round, source };
        let retry = self.retry;
        let mut bytes = sealed.bytes;
        let mut submitted;
        let mut reseals = 0;
        loop {
            let uplink = &mut *self.uplink;
            submitted = retry
                .call(&format!("sending {round}"), observer, || {
                    uplink.submit(round, &bytes)
                })
                .map_err(uplink_error)?;
            if submitted != Submitted::Taken || reseals == MAX_RESEALS {
                break;
            }
            // A copy of our upload got in first (its seed is in the sum): not our fault.
            // The same update in a fresh encryption goes in under our name.
            reseals += 1;
            observer.note(&format!(
                "{round}: a copy of this party's upload reached the server first; sealing it again in a fresh encryption"
            ));
            bytes = self
                .party
                .reseal(round, None, &mut self.cost)
                .map_err(|source| PartyError::Seal {
                    round,
                    source: Box::new(source),
                })?
                .bytes;
        }
        match submitted {
            Submitted::Late { open } => {
                observer.note(&format!(
                    "left out of {round}: it closed before the update arrived (the server is on {open})"
                ));
                self.party.left_out(round);
            }
            Submitted::NotInSet { open } => {
                observer.note(&format!(
                    "left out of {round}: the server's party set for it does not hold this party (the server is on {open}); the next round's set comes with its outcome"
                ));
                self.party.left_out(round);
            }
            Submitted::Accepted | Submitted::AlreadyIn | Submitted::Taken => {}
        }
        Ok(bytes)
    }
}

impl Rounds for Federated<'_> {
    fn next_round(&self) -> Round {
        self.party.next_round()
    }

    fn model(&self) -> &[f32] {
        self.party.model()
    }

    fn exchange(
        &mut self,
        round: Round,
        update: &Update,
        (client, progress): (&Client, &Progress),
        observer: &mut dyn Observer,
    ) -> Result<(), PartyError> {
        self.finish_preparing(round)?;
        let uplink_error = |source| PartyError::Uplink { round, source };
        let retry = self.retry;
        let bytes = if self.party.is_member() {
            self.rejoining = None;
            Some(self.submit(round, update, (client, progress), observer)?)
        } else {
            // Strict secure aggregation: left out of this round's set (a missed deadline, or
            // a resync); its update is dropped, and it asks to be in a later round's (once:
            // again only if that round came and its set did not hold this party).
            if self.rejoining.is_none_or(|from| round >= from) {
                let uplink = &mut *self.uplink;
                let from = retry
                    .call(&format!("asking to rejoin at {round}"), observer, || {
                        uplink.rejoin(round)
                    })
                    .map_err(uplink_error)?;
                observer.note(&format!(
                    "not in the party set of {round} (it missed a deadline, or resynced): asked to rejoin; in the set from {from} on"
                ));
                self.rejoining = Some(from);
            }
            None
        };
        let uplink = &mut *self.uplink;
        // The next round's encryption of zero, made while this round's sum is on its way
        // (unless the one prepared for this round is still unused).
        if self.prepared.is_none() {
            self.preparing.start();
        }
        // After the connection broke the server may have restarted without this round's
        // updates: send ours again before waiting (a refusal there is the fetch's to tell).
        let mut resend = false;
        let keep_from = self.keep_from;
        let fetched = retry.call(&format!("waiting for {round}"), observer, || {
            if let Some(bytes) = bytes.as_deref().filter(|_| resend) {
                uplink.submit(round, bytes)?;
            }
            let fetched = uplink.fetch(round, keep_from);
            resend = fetched.as_ref().is_err_and(UplinkError::is_transient);
            fetched
        });
        let published = match fetched {
            Ok(published) => published,
            Err(e) if e.is_gone() => return self.resync(round, observer),
            Err(source) => return Err(uplink_error(source)),
        };
        let opening = Instant::now();
        let received = self
            .party
            .receive(&published, &mut self.cost)
            .map_err(|source| PartyError::Published {
                round,
                source: Box::new(source),
            })?;
        self.overhead.open_seconds += opening.elapsed().as_secs_f64();
        let list: Vec<String> = published.parties.iter().map(|p| p.0.to_string()).collect();
        match received {
            Received::Skipped { reason, .. } => {
                let reason = format!("its sum is not a sum of valid updates: {reason}");
                observer.note(&format!(
                    "skipped {round} (parties {}): {reason}",
                    list.join(", ")
                ));
                if let Err(e) = self.uplink.skipped(round, &reason) {
                    observer.note(&format!("could not tell the server about {round}: {e}"));
                }
            }
            Received::Void { .. } => observer.note(&format!(
                "{round} is void (submitted: {}): no step; this party's update for it is dropped",
                list.join(", ")
            )),
            Received::Applied { .. } | Received::Stale { .. } => {}
        }
        if let Some(at) = self.party.snapshot_due(&published.parties) {
            // Best effort: another party's, or a later one, serves as well.
            let sent = self
                .party
                .snapshot()
                .map_err(|e| e.to_string())
                .and_then(|(_, bytes)| {
                    self.uplink
                        .put_snapshot(at, &bytes)
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = sent {
                observer.note(&format!("could not upload the model snapshot of {at}: {e}"));
            }
        }
        Ok(())
    }

    fn sealed_before(&self, round: Round) -> bool {
        self.party.sealed_upload(round).is_some()
    }

    fn after_round(
        &mut self,
        client: &Client,
        progress: &Progress,
        epoch_end: bool,
    ) -> Result<(), PartyError> {
        let Some(checkpoints) = &self.checkpoints else {
            return Ok(());
        };
        let next = self.party.next_round();
        if epoch_end || next.0.is_multiple_of(checkpoints.every) {
            self.save_checkpoint(client, progress)?;
            self.keep_from = Some(next);
        }
        Ok(())
    }
}

/// A party's preparation thread (`he`): it prepares one encryption of zero per request, in
/// the background. One thread for the whole run, not one per round, so its allocator heap
/// stays warm (a new thread's megabyte buffers would fault in fresh pages every round).
/// Dropping it lets a preparation still running finish (its encryption of zero is then
/// dropped, zeroized) and joins the thread, so no thread outlives its party.
#[derive(Default)]
struct Preparing {
    /// Requests to the thread (`None` in plain mode).
    requests: Option<mpsc::Sender<()>>,
    results: Option<mpsc::Receiver<std::thread::Result<Preparation>>>,
    thread: Option<JoinHandle<()>>,
    /// Whether a requested preparation has not been collected.
    pending: bool,
}

impl Preparing {
    /// The preparation thread for `envelope`.
    fn new(envelope: Envelope) -> Self {
        let (requests, inbox) = mpsc::channel::<()>();
        let (outbox, results) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            for () in inbox {
                let prepared = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    let mut cost = EnvelopeCost::default();
                    envelope.prepare(&mut cost).map(|prepared| (prepared, cost))
                }));
                if outbox.send(prepared).is_err() {
                    break;
                }
            }
        });
        Self {
            requests: Some(requests),
            results: Some(results),
            thread: Some(thread),
            pending: false,
        }
    }

    /// Starts preparing the next update's encryption of zero (nothing in plain mode).
    fn start(&mut self) {
        if let Some(requests) = &self.requests {
            self.pending = requests.send(()).is_ok();
        }
    }

    /// Waits for the preparation started last, if any (`Err` if it panicked).
    fn finish(&mut self) -> Option<std::thread::Result<Preparation>> {
        if !std::mem::take(&mut self.pending) {
            return None;
        }
        // The thread answers every request it received; it stops only when dropped.
        self.results.as_ref()?.recv().ok()
    }
}

impl Drop for Preparing {
    fn drop(&mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A trainer's run: its client and where it stands.
struct Training<'a> {
    config: &'a ValidConfig,
    rounds_per_epoch: usize,
    client: Client,
    /// The test set, if this party reports.
    test: Option<&'a Dataset>,
    started: Instant,
    progress: Progress,
    /// The moving average of the global model after every round, when the run reports it.
    ema: Option<EmaState>,
}

impl Training<'_> {
    /// The training loop of every mode: `epochs` passes of `rounds_per_epoch` rounds, each
    /// loading the global model, computing the client's update and exchanging it; after each
    /// epoch, evaluation on the test set (if this party reports); after each round, what
    /// `rounds` saves. Runs from `rounds.next_round()` (a resumed run).
    fn run(
        &mut self,
        rounds: &mut dyn Rounds,
        observer: &mut dyn Observer,
    ) -> Result<(), PartyError> {
        let config = self.config;
        let per_epoch = self.rounds_per_epoch as u64;
        let total = per_epoch.saturating_mul(config.epochs as u64);
        observer.start(config, total as usize);
        let mut epoch_start = Instant::now();
        loop {
            let round = rounds.next_round();
            if round.0 >= total {
                return Ok(());
            }
            self.client.load(rounds.model());
            let update = if rounds.sealed_before(round) {
                Update {
                    values: Vec::new(),
                    samples: 0,
                    loss: 0.0,
                }
            } else {
                let update = self
                    .client
                    .compute_update(config.strategy, config.batch_size);
                self.progress.loss_sum += f64::from(update.loss);
                update
            };
            rounds.exchange(round, &update, (&self.client, &self.progress), observer)?;
            if let Some(ema) = self.ema.as_mut() {
                ema.update(rounds.model());
            }
            let next = rounds.next_round().0;
            observer.round(next as usize);
            // An epoch ended (a resync may jump past several: the last is reported).
            let epoch_end = next / per_epoch > round.0 / per_epoch;
            if epoch_end {
                if let Some(test) = self.test {
                    self.client.load(reported(&self.ema, rounds.model()));
                    let eval = self
                        .client
                        .model()
                        .evaluate(test.images.view(), &test.labels);
                    let metrics = EpochMetrics {
                        epoch: (next / per_epoch) as usize,
                        test_accuracy: eval.accuracy,
                        test_loss: eval.loss,
                        train_loss: self.progress.loss_sum / self.rounds_per_epoch as f64,
                        wall_seconds: epoch_start.elapsed().as_secs_f64(),
                        elapsed_seconds: self.started.elapsed().as_secs_f64(),
                        rounds: self.rounds_per_epoch,
                        epsilon: self.client.epsilon(config.batch_size),
                    };
                    observer.epoch(config, &metrics);
                    self.progress.epochs.push(metrics);
                }
                self.progress.loss_sum = 0.0;
                epoch_start = Instant::now();
            }
            rounds.after_round(&self.client, &self.progress, epoch_end)?;
        }
    }

    /// A finished trainer's metrics, with the final global model `params` (as [`reported`]
    /// says).
    fn metrics(&mut self, params: &[f32], overhead: Option<Overhead>) -> RunMetrics {
        RunMetrics {
            config: self.config.clone().into_inner(),
            party_samples: vec![self.client.num_samples()],
            epochs: std::mem::take(&mut self.progress.epochs),
            total_seconds: self.started.elapsed().as_secs_f64(),
            overhead,
            final_params: reported(&self.ema, params).to_vec(),
            input_projection: None,
        }
    }
}

/// The parameters a trainer reports for the global model `params`: their moving average
/// `ema` when the run keeps one.
fn reported<'p>(ema: &'p Option<EmaState>, params: &'p [f32]) -> &'p [f32] {
    ema.as_ref().map_or(params, EmaState::average)
}
