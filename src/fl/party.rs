//! A party's run: the one training loop of every mode and every transport.
//!
//! [`run_party`] follows a server's [`Plan`](super::Plan) round by round, moving bytes
//! through an [`Uplink`]: the network transport implements it, and so does the in-process
//! [`HubUplink`](super::HubUplink) that [`run`](super::run) gives each party thread. The
//! local and centralized baselines run the same loop with one party whose update is the
//! aggregate (with one client, FedSGD is ordinary mini-batch training).

use super::checkpoint::{Checkpoints, Progress};
use super::client::{Client, Update};
use super::config::{Privacy, ValidConfig};
use super::envelope::{Envelope, EnvelopeCost, EnvelopeError};
use super::error::{PartyError, UplinkError};
use super::metrics::{EpochMetrics, Observer, Overhead, RunMetrics};
use super::plan::ValidPlan;
use super::server::{PartyId, Published, Round};
use super::setup::{envelope, rounding_rng, setup};
use crate::data::{Dataset, Mnist};
use crate::he::PreparedEncryption;
use crate::he::keys::SecretKey;
use rand_chacha::ChaCha20Rng;
use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the server said to a submission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submitted {
    /// The update is in the round.
    Accepted,
    /// The round closed before the update arrived: this party is left out of it.
    Late(String),
    /// This party's update for the round was already in (a retried submission).
    AlreadyIn,
}

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
}

impl Default for PartyOptions {
    /// The default [`Retry`], no checkpoints (every 16 rounds when a directory is given:
    /// the server keeps sums for a restart at most [`DEFAULT_KEEP_ROUNDS`](super::DEFAULT_KEEP_ROUNDS) rounds back).
    fn default() -> Self {
        Self {
            retry: Retry::default(),
            state_dir: None,
            checkpoint_every: 16,
        }
    }
}

/// How a party waits out a lost server: it asks again after `first_delay`, doubling the
/// wait up to `max_delay`, until `give_up_after` has passed since the first failure. A
/// server that comes back within that window (restarted from its `--state-dir`) finds the
/// party where it was: it resends its update for the open round (a server that already
/// has it answers [`Submitted::AlreadyIn`]) and goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// First wait after a failure.
    pub first_delay: Duration,
    /// Longest wait between two attempts.
    pub max_delay: Duration,
    /// Give up once the server has been unreachable this long.
    pub give_up_after: Duration,
}

impl Default for Retry {
    /// 0.5 s, doubling to 15 s, for up to 5 minutes.
    fn default() -> Self {
        Self {
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(15),
            give_up_after: Duration::from_secs(300),
        }
    }
}

impl Retry {
    /// Calls `attempt` until it succeeds, fails for good, or the server has been
    /// unreachable for `give_up_after`; notes each wait to `observer` as `what: error`.
    pub fn call<T>(
        &self,
        what: &str,
        observer: &mut dyn Observer,
        mut attempt: impl FnMut() -> Result<T, UplinkError>,
    ) -> Result<T, UplinkError> {
        let mut failing_since: Option<Instant> = None;
        let mut delay = self.first_delay;
        loop {
            match attempt() {
                Err(e) if e.is_transient() => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    let left = self.give_up_after.saturating_sub(since.elapsed());
                    if left.is_zero() {
                        return Err(e);
                    }
                    let wait = delay.min(left);
                    observer.note(&format!(
                        "{what}: {e}; retrying in {:.1} s (giving up in {:.0} s)",
                        wait.as_secs_f64(),
                        left.as_secs_f64()
                    ));
                    std::thread::sleep(wait);
                    delay = (delay * 2).min(self.max_delay);
                }
                other => return other,
            }
        }
    }
}

/// Moves one party's bytes to and from the server.
pub trait Uplink {
    /// Sends this party's sealed update for `round`.
    fn submit(&mut self, round: Round, bytes: Vec<u8>) -> Result<Submitted, UplinkError>;
    /// Waits for `round`'s published sum.
    fn fetch(&mut self, round: Round) -> Result<Published, UplinkError>;
    /// Tells the server (with the next fetch) that this party may still ask for sums from
    /// `round` on: its last checkpoint is there, and a restart would go back to it. Without
    /// it the server drops a sum once every party has fetched it.
    fn keep_from(&mut self, round: Round);
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
    options: &PartyOptions,
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
        options,
        started,
    )
}

/// A party's run once its client is built: `test` is `None` for parties that do not
/// report (in one process only party 0 evaluates; all models are identical).
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_client(
    plan: &ValidPlan,
    mut client: Client,
    test: Option<&Dataset>,
    key: Option<Arc<SecretKey>>,
    uplink: &mut dyn Uplink,
    observer: &mut dyn Observer,
    options: &PartyOptions,
    started: Instant,
) -> Result<RunMetrics, PartyError> {
    let config = plan.config();
    let envelope = envelope(config, plan.key_id, key, client.model().num_params())?;
    let mut exchange = Federated {
        rng: rounding_rng(config.seed, client.id()),
        preparing: match config.privacy {
            Privacy::He => Preparing::new(envelope.clone()),
            _ => Preparing::default(),
        },
        prepared: None,
        nominal: (config.batch_size * config.strategy.steps_per_round()) as f32,
        envelope,
        uplink,
        cost: EnvelopeCost::default(),
        overhead: Overhead {
            privacy: config.privacy,
            ..Overhead::default()
        },
        retry: options.retry,
    };
    let total_rounds = plan.total_rounds();
    let checkpoints = options
        .state_dir
        .as_deref()
        .map(|dir| Checkpoints::new(dir, plan, client.id(), options.checkpoint_every));
    let mut progress = Progress::default();
    if let Some(checkpoints) = &checkpoints {
        if let Some(resumed) =
            checkpoints.load(&mut client, Some(&mut exchange.rng), total_rounds)?
        {
            observer.note(&format!(
                "resuming from the checkpoint in {}: round {} of {total_rounds}",
                options
                    .state_dir
                    .as_deref()
                    .unwrap_or(Path::new("."))
                    .display(),
                resumed.next_round
            ));
            progress = resumed;
        }
    }
    train(
        config,
        plan.rounds_per_epoch,
        &mut client,
        test,
        &mut exchange,
        observer,
        started,
        &mut progress,
        checkpoints.as_ref(),
    )?;
    let mut overhead = exchange.overhead;
    overhead.client_cpu = exchange.cost;
    overhead.skipped_rounds = std::mem::take(&mut progress.skipped);
    Ok(metrics(config, &client, progress, started, Some(overhead)))
}

/// A finished party's metrics.
fn metrics(
    config: &ValidConfig,
    client: &Client,
    progress: Progress,
    started: Instant,
    overhead: Option<Overhead>,
) -> RunMetrics {
    RunMetrics {
        config: config.clone().into_inner(),
        party_samples: vec![client.num_samples()],
        epochs: progress.epochs,
        total_seconds: started.elapsed().as_secs_f64(),
        overhead,
        final_params: client.model().params().to_vec(),
    }
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
    let mut progress = Progress::default();
    train(
        config,
        rounds_per_epoch,
        &mut client,
        Some(test),
        &mut Alone,
        observer,
        started,
        &mut progress,
        None,
    )?;
    Ok(metrics(config, &client, progress, started, None))
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
    /// The generator that rounds this party's updates, if it has one (a checkpoint saves it).
    fn rounding(&self) -> Option<&ChaCha20Rng> {
        None
    }
    /// A checkpoint was saved at `round`: the server should keep the sums from there on.
    fn checkpointed(&mut self, _round: Round) {}
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

/// What a background preparation returns: the encryption of zero (`None` in plain mode) and
/// its cost.
type Preparation = Result<(Option<PreparedEncryption>, EnvelopeCost), EnvelopeError>;

/// A federation member: seal, submit, fetch, open; in `he` mode it prepares the next
/// round's encryption of zero on a second thread from the moment it has submitted this
/// round's update until it seals the next one (while it waits for the sum, opens it and
/// computes the next update).
struct Federated<'u> {
    envelope: Envelope,
    /// The background preparation of the next update's encryption of zero (`he`).
    preparing: Preparing,
    /// The encryption of zero prepared for the next update (`he`), used once.
    prepared: Option<PreparedEncryption>,
    rng: ChaCha20Rng,
    /// Samples a round's update stands for at full weight.
    nominal: f32,
    uplink: &'u mut dyn Uplink,
    cost: EnvelopeCost,
    overhead: Overhead,
    retry: Retry,
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
            Ok(Err(source)) => Err(PartyError::Envelope { round, source }),
            Err(panic) => std::panic::resume_unwind(panic),
        }
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

impl Exchange for Federated<'_> {
    fn rounding(&self) -> Option<&ChaCha20Rng> {
        Some(&self.rng)
    }

    fn checkpointed(&mut self, round: Round) {
        self.uplink.keep_from(round);
    }

    fn aggregate<'a>(
        &'a mut self,
        round: Round,
        update: &'a Update,
        observer: &mut dyn Observer,
    ) -> Result<Option<Cow<'a, [f32]>>, PartyError> {
        self.finish_preparing(round)?;
        let sealing = Instant::now();
        let weight = update.samples as f32 / self.nominal;
        let bytes = self
            .envelope
            .seal(
                &update.values,
                weight,
                self.prepared.take(),
                &mut self.rng,
                &mut self.cost,
            )
            .map_err(|source| PartyError::Envelope { round, source })?;
        self.overhead.seal_seconds += sealing.elapsed().as_secs_f64();
        let uplink_error = |source| PartyError::Uplink { round, source };
        let uplink = &mut *self.uplink;
        let retry = self.retry;
        let submitted = retry
            .call(&format!("sending {round}"), observer, || {
                uplink.submit(round, bytes.clone())
            })
            .map_err(uplink_error)?;
        if let Submitted::Late(reason) = submitted {
            observer.note(&format!("left out of {round}: {reason}"));
        }
        // The next round's encryption of zero, made while this round's sum is on its way.
        self.preparing.start();
        // After the connection broke the server may have restarted without this round's
        // updates: send ours again before waiting (a refusal there is the fetch's to tell).
        let mut resend = false;
        let published = retry
            .call(&format!("waiting for {round}"), observer, || {
                if resend {
                    uplink.submit(round, bytes.clone())?;
                }
                let fetched = uplink.fetch(round);
                resend = fetched.as_ref().is_err_and(UplinkError::is_transient);
                fetched
            })
            .map_err(uplink_error)?;
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
                Ok(None)
            }
            Err(source) => Err(PartyError::Envelope { round, source }),
        }
    }
}

/// The training loop of every mode: `epochs` passes of `rounds_per_epoch` rounds, each
/// computing the client's update, exchanging it for the round's aggregate and applying that;
/// after each epoch, evaluation on `test` (if this party reports). Runs from
/// `progress.next_round` (a resumed run) and, with `checkpoints`, saves one at every
/// epoch's end and every `checkpoints.every` rounds.
#[allow(clippy::too_many_arguments)]
fn train(
    config: &ValidConfig,
    rounds_per_epoch: usize,
    client: &mut Client,
    test: Option<&Dataset>,
    exchange: &mut dyn Exchange,
    observer: &mut dyn Observer,
    started: Instant,
    progress: &mut Progress,
    checkpoints: Option<&Checkpoints>,
) -> Result<(), PartyError> {
    let per_epoch = rounds_per_epoch as u64;
    let total = per_epoch.saturating_mul(config.epochs as u64);
    observer.start(config, total as usize);
    let mut epoch_start = Instant::now();
    if checkpoints.is_some() {
        exchange.checkpointed(Round(progress.next_round));
    }
    while progress.next_round < total {
        let round = Round(progress.next_round);
        let update = client.compute_update(config.strategy, config.batch_size);
        progress.loss_sum += f64::from(update.loss);
        match exchange.aggregate(round, &update, observer)? {
            Some(aggregate) => client.apply(config.strategy, &aggregate),
            None => {
                client.skip(config.strategy);
                progress.skipped.push(round.0);
            }
        }
        progress.next_round += 1;
        observer.round(progress.next_round as usize);
        let epoch_end = progress.next_round % per_epoch == 0;
        if epoch_end {
            if let Some(test) = test {
                let eval = client.model().evaluate(test.images.view(), &test.labels);
                let metrics = EpochMetrics {
                    epoch: (progress.next_round / per_epoch) as usize,
                    test_accuracy: eval.accuracy,
                    test_loss: eval.loss,
                    train_loss: progress.loss_sum / rounds_per_epoch as f64,
                    wall_seconds: epoch_start.elapsed().as_secs_f64(),
                    elapsed_seconds: started.elapsed().as_secs_f64(),
                    rounds: rounds_per_epoch,
                    epsilon: client.epsilon(config.batch_size),
                };
                observer.epoch(config, &metrics);
                progress.epochs.push(metrics);
            }
            progress.loss_sum = 0.0;
            epoch_start = Instant::now();
        }
        if let Some(checkpoints) = checkpoints {
            if epoch_end || progress.next_round % checkpoints.every == 0 {
                checkpoints.save(client, exchange.rounding(), progress)?;
                exchange.checkpointed(Round(progress.next_round));
            }
        }
    }
    Ok(())
}
