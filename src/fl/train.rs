//! The training loop shared by every mode, its configuration and its metrics.

use super::client::Client;
use super::federation::{Federation, Overhead, RoundError};
use super::privacy::Privacy;
use crate::data::{DataError, Dataset, Mnist, Partition, partition};
use crate::dp::{DpSgd, InputDp};
use crate::he::SecureRng;
use crate::he::keys::SecretKey;
use crate::model::{Mlp, ModelError, OptimizerKind};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

/// Who trains on what.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One party alone on its own shard.
    Local,
    /// All training data in one place.
    Centralized,
    /// Several parties, updates aggregated every round.
    Federated,
}

impl Mode {
    /// Every mode, in the order reports list them.
    pub const ALL: [Mode; 3] = [Mode::Local, Mode::Centralized, Mode::Federated];
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "local" => Ok(Self::Local),
            "centralized" | "centralised" => Ok(Self::Centralized),
            "federated" => Ok(Self::Federated),
            other => Err(format!(
                "unknown mode {other:?}: expected local, centralized or federated"
            )),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Local => "local",
            Self::Centralized => "centralized",
            Self::Federated => "federated",
        })
    }
}

/// How the parties' updates are combined each round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Strategy {
    /// Federated SGD: every party sends the gradient of one local batch; the
    /// sample-weighted mean gradient is applied by every party's optimizer.
    FedSgd,
    /// Federated averaging: every party takes `local_steps` optimizer steps on
    /// its own data and sends the model delta; deltas are averaged weighted by
    /// the number of samples each party used.
    FedAvg {
        /// Local optimizer steps per round (at least 1).
        local_steps: usize,
    },
}

impl Strategy {
    pub(crate) fn steps_per_round(self) -> usize {
        match self {
            Self::FedSgd => 1,
            Self::FedAvg { local_steps } => local_steps.max(1),
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FedSgd => f.write_str("fedsgd"),
            Self::FedAvg { local_steps } => write!(f, "fedavg (k = {local_steps})"),
        }
    }
}

/// Everything that defines a training run. Serialized into the metrics file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Who trains on what.
    pub mode: Mode,
    /// Number of parties the training set is split into (local mode trains on
    /// party 0's shard of this split; centralized ignores it).
    pub parties: usize,
    /// How the training set is split among parties.
    pub partition: Partition,
    /// How updates are combined (federated mode).
    pub strategy: Strategy,
    /// What the server sees of an update (federated mode): `plain` fixed-point words or
    /// `he` ciphertexts of the same words.
    #[serde(default)]
    pub privacy: Privacy,
    /// DP-SGD settings, used exactly when `privacy` is `dp` (also for the local and
    /// centralized baselines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp: Option<DpSgd>,
    /// Input perturbation of the training images before any training (any mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_dp: Option<InputDp>,
    /// Passes over each party's data.
    pub epochs: usize,
    /// Learning rate.
    pub lr: f32,
    /// Samples per local batch.
    pub batch_size: usize,
    /// The optimizer every party runs.
    pub optimizer: OptimizerKind,
    /// Seeds the initial model, the partition and every batch order.
    pub seed: u64,
    /// Layer sizes, input first.
    pub layers: Vec<usize>,
    /// Use only the first N training images (quick runs); `None` = all.
    pub train_subset: Option<usize>,
    /// Evaluate on only the first N test images; `None` = all.
    pub test_subset: Option<usize>,
}

impl TrainConfig {
    /// Rounds in one epoch (one pass over the largest shard): `ceil(shard / batch)` with
    /// FedSGD, `k` times fewer with FedAvg, at least 1.
    ///
    /// ```
    /// use hefl::fl::{Strategy, TrainConfig};
    ///
    /// let config = TrainConfig::default(); // batch 64, FedSGD
    /// assert_eq!(config.rounds_per_epoch(20_000), 313);
    /// let fedavg = TrainConfig { strategy: Strategy::FedAvg { local_steps: 5 }, ..config };
    /// assert_eq!(fedavg.rounds_per_epoch(20_000), 63);
    /// ```
    /// The largest shard of a training set of `train_size` images (after
    /// `train_subset`) split IID as the mode says: all of it when centralized, else
    /// `ceil(n / parties)`.
    ///
    /// ```
    /// use hefl::fl::{Mode, TrainConfig};
    ///
    /// assert_eq!(TrainConfig::default().largest_iid_shard(60_000), 20_000);
    /// let central = TrainConfig { mode: Mode::Centralized, ..TrainConfig::default() };
    /// assert_eq!(central.largest_iid_shard(60_000), 60_000);
    /// ```
    pub fn largest_iid_shard(&self, train_size: usize) -> usize {
        let n = self.train_subset.unwrap_or(train_size).min(train_size);
        match self.mode {
            Mode::Centralized => n,
            Mode::Local | Mode::Federated => n.div_ceil(self.parties.max(1)),
        }
    }

    /// Rounds in one epoch: enough for the party with `largest_shard` samples to pass over
    /// its data once (batches of `batch_size`, `steps_per_round` of them per round).
    ///
    /// ```
    /// let config = hefl::fl::TrainConfig::default(); // FedSGD, batch 64
    /// assert_eq!(config.rounds_per_epoch(20_000), 313);
    /// ```
    pub fn rounds_per_epoch(&self, largest_shard: usize) -> usize {
        largest_shard
            .div_ceil(self.batch_size.max(1))
            .div_ceil(self.strategy.steps_per_round())
            .max(1)
    }

    /// The run's name in reports: the mode, with the privacy mode for federated runs
    /// (`local`, `centralized`, `federated-plain`, `federated-he`).
    ///
    /// ```
    /// use hefl::fl::{Mode, Privacy, TrainConfig};
    ///
    /// let config = TrainConfig { privacy: Privacy::He, ..TrainConfig::default() };
    /// assert_eq!(config.label(), "federated-he");
    /// assert_eq!(TrainConfig { mode: Mode::Local, ..config }.label(), "local");
    /// ```
    pub fn label(&self) -> String {
        let base = match (self.mode, self.privacy) {
            (Mode::Federated, privacy) => format!("{}-{privacy}", self.mode),
            (_, Privacy::Dp) => format!("{}-dp", self.mode),
            (mode, _) => mode.to_string(),
        };
        match self.input_dp {
            Some(input) => format!("{base}-input-dp{}", input.epsilon),
            None => base,
        }
    }
}

impl Default for TrainConfig {
    /// The paper's setting: 3 IID parties, default MLP, Adam at 1.5e-3, batch 64.
    fn default() -> Self {
        Self {
            mode: Mode::Federated,
            parties: 3,
            partition: Partition::Iid,
            strategy: Strategy::FedSgd,
            privacy: Privacy::Plain,
            dp: None,
            input_dp: None,
            epochs: 10,
            lr: 1.5e-3,
            batch_size: 64,
            optimizer: OptimizerKind::Adam,
            seed: 42,
            layers: crate::model::DEFAULT_LAYERS.to_vec(),
            train_subset: None,
            test_subset: None,
        }
    }
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A configuration value out of range.
    #[error("invalid training configuration: {0}")]
    Config(String),
    /// The data could not be split as asked.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The model could not be built.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A federated round failed.
    #[error(transparent)]
    Round(#[from] Box<RoundError>),
    /// The parties' models differ after a round: they did not apply the same aggregate.
    #[error("party models diverged after epoch {epoch}: party {party} differs from party 0")]
    Diverged {
        /// The epoch after which the check failed.
        epoch: usize,
        /// The first party whose model differs.
        party: usize,
    },
}

/// Test-set results after one epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Fraction of test images classified correctly, 0..=1.
    pub test_accuracy: f64,
    /// Mean test cross-entropy.
    pub test_loss: f64,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    /// Wall-clock seconds this epoch took (training and evaluation).
    pub wall_seconds: f64,
    /// Wall-clock seconds since the run started.
    pub elapsed_seconds: f64,
    /// Aggregation rounds run in this epoch.
    pub rounds: usize,
    /// DP runs: the (ε, δ) guarantee's ε spent so far by each party.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
}

/// A whole run: its configuration and one entry per epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunMetrics {
    /// The configuration that produced these numbers.
    pub config: TrainConfig,
    /// Training samples per party, in party order.
    pub party_samples: Vec<usize>,
    /// Per-epoch test results.
    pub epochs: Vec<EpochMetrics>,
    /// Wall-clock seconds of the whole run.
    pub total_seconds: f64,
    /// Federated runs: time spent sealing, summing and opening updates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overhead: Option<Overhead>,
    /// The final model's parameters (party 0's; in federated runs every party's is
    /// identical). Not written to metrics files.
    #[serde(skip)]
    pub final_params: Vec<f32>,
}

impl RunMetrics {
    /// The last epoch's test accuracy, if any epoch ran.
    pub fn final_accuracy(&self) -> Option<f64> {
        self.epochs.last().map(|e| e.test_accuracy)
    }
}

/// Receives progress from [`run`]; every method has an empty default.
pub trait Observer {
    /// Called once before training with the total number of rounds.
    fn start(&mut self, _config: &TrainConfig, _total_rounds: usize) {}
    /// Called after every aggregation round.
    fn round(&mut self, _round: usize) {}
    /// Called after every epoch's evaluation.
    fn epoch(&mut self, _config: &TrainConfig, _metrics: &EpochMetrics) {}
    /// Something the user should know (a party left out of a round, ...).
    fn note(&mut self, _message: &str) {}
}

/// An observer that ignores everything.
impl Observer for () {}

fn validate(config: &TrainConfig) -> Result<(), TrainError> {
    let bad = |msg: String| Err(TrainError::Config(msg));
    if config.epochs == 0 {
        return bad("--epochs must be at least 1".into());
    }
    if config.batch_size == 0 {
        return bad("--batch-size must be at least 1".into());
    }
    if config.parties == 0 {
        return bad("--parties must be at least 1".into());
    }
    if !(config.lr.is_finite() && config.lr > 0.0) {
        return bad(format!("--lr must be a positive number, got {}", config.lr));
    }
    match (config.privacy, &config.dp) {
        (Privacy::Dp, None) => return bad("privacy dp needs DP-SGD settings".into()),
        (Privacy::Dp, Some(dp)) => {
            if !(dp.noise_multiplier.is_finite() && dp.noise_multiplier > 0.0) {
                return bad(format!(
                    "--noise-multiplier must be positive, got {}",
                    dp.noise_multiplier
                ));
            }
            if !(dp.max_grad_norm.is_finite() && dp.max_grad_norm > 0.0) {
                return bad(format!(
                    "--max-grad-norm must be positive, got {}",
                    dp.max_grad_norm
                ));
            }
            if !(dp.delta > 0.0 && dp.delta < 1.0) {
                return bad(format!("--delta must be in (0, 1), got {}", dp.delta));
            }
        }
        (_, Some(_)) => {
            return bad(format!(
                "DP-SGD settings need --privacy dp ({} mode has no DP option)",
                config.privacy
            ));
        }
        (_, None) => {}
    }
    if let Some(input_dp) = config.input_dp {
        let valid = input_dp.epsilon.is_finite()
            && input_dp.epsilon > 0.0
            && input_dp.delta > 0.0
            && input_dp.delta < 1.0;
        if !valid {
            return bad(format!(
                "--input-dp needs a positive epsilon and a delta in (0, 1), got {input_dp:?}"
            ));
        }
    }
    if config.strategy == (Strategy::FedAvg { local_steps: 0 }) {
        return bad("--local-steps must be at least 1".into());
    }
    if config.layers.first() != Some(&crate::data::IMAGE_PIXELS)
        || config.layers.last() != Some(&crate::data::NUM_CLASSES)
    {
        return bad(format!(
            "layers must start with {} inputs and end with {} classes, got {:?}",
            crate::data::IMAGE_PIXELS,
            crate::data::NUM_CLASSES,
            config.layers
        ));
    }
    Ok(())
}

/// The indices of the training examples of each party the mode trains.
fn shard_indices(config: &TrainConfig, train: &Dataset) -> Result<Vec<Vec<usize>>, TrainError> {
    Ok(match config.mode {
        Mode::Centralized => vec![(0..train.len()).collect()],
        Mode::Local | Mode::Federated => {
            let mut parts = partition(
                &train.labels,
                config.parties,
                config.partition,
                config.seed ^ 0x5EED_05A4D,
            )?;
            if config.mode == Mode::Local {
                parts.truncate(1);
            }
            parts
        }
    })
}

/// Sets `config`'s DP noise multiplier to the smallest that keeps the whole run within
/// `target_epsilon` (to within 1%), for a training set of `train_size` images split as
/// `config` says (IID shard sizes); returns it. Refused unless `config` is a DP run.
pub fn calibrate_noise(
    config: &mut TrainConfig,
    train_size: usize,
    target_epsilon: f64,
) -> Result<f64, TrainError> {
    let Some(delta) = config.dp.as_ref().map(|dp| dp.delta) else {
        return Err(TrainError::Config(
            "--target-epsilon needs --privacy dp".into(),
        ));
    };
    if !(target_epsilon.is_finite() && target_epsilon > 0.0) {
        return Err(TrainError::Config(format!(
            "--target-epsilon must be positive, got {target_epsilon}"
        )));
    }
    let shard = config.largest_iid_shard(train_size);
    let q = (config.batch_size as f64 / shard.max(1) as f64).min(1.0);
    let rounds = config.rounds_per_epoch(shard) * config.epochs;
    let steps = (rounds * config.strategy.steps_per_round()) as u64;
    let sigma =
        crate::dp::noise_multiplier_for(target_epsilon, delta, q, steps).ok_or_else(|| {
            TrainError::Config(format!(
                "epsilon {target_epsilon} is out of reach for {steps} steps at sampling rate {q}"
            ))
        })?;
    if let Some(dp) = config.dp.as_mut() {
        dp.noise_multiplier = sigma;
    }
    Ok(sigma)
}

/// The clients of `config`'s parties (all starting from the seeded initial model; only
/// party `only` if given) and the test set, after validating the configuration.
pub(crate) fn clients_and_test_set(
    config: &TrainConfig,
    data: &Mnist,
    only: Option<usize>,
) -> Result<(Vec<Client>, Dataset), TrainError> {
    validate(config)?;
    let mut train = match config.train_subset {
        Some(n) => data.train.take(n),
        None => data.train.clone(),
    };
    let mut test = match config.test_subset {
        Some(n) => data.test.take(n),
        None => data.test.clone(),
    };
    if let Some(input_dp) = config.input_dp {
        let mut rng = SecureRng::from_os()
            .map_err(|e| TrainError::Config(format!("input noise generator: {e}")))?;
        input_dp.apply(&mut train.images, &mut rng);
        InputDp::normalize(&mut test.images);
    }
    let shards = shard_indices(config, &train)?;
    if let Some(empty) = shards.iter().position(Vec::is_empty) {
        return Err(TrainError::Config(format!(
            "party {empty} has no training samples; use fewer parties or a larger Dirichlet alpha"
        )));
    }
    let initial = Mlp::new(&config.layers, config.seed)?;
    let mut clients = Vec::with_capacity(shards.len());
    for (id, indices) in shards.iter().enumerate() {
        if only.is_some_and(|party| party != id) {
            continue;
        }
        let mut client = Client::new(
            id,
            train.subset(indices),
            initial.clone(),
            config.optimizer,
            config.lr,
            config.seed,
        );
        if let (Privacy::Dp, Some(dp)) = (config.privacy, config.dp) {
            let rng = SecureRng::from_os()
                .map_err(|e| TrainError::Config(format!("DP noise generator: {e}")))?;
            client.enable_dp(dp, rng);
        }
        clients.push(client);
    }
    Ok((clients, test))
}

/// Trains as `config` says on `data`, evaluating on the test set after every
/// epoch, and reports progress to `observer`.
///
/// One epoch is one pass over the largest party's shard: with FedSGD that is
/// `ceil(shard / batch)` rounds, with FedAvg `k` times fewer. Federated runs go
/// through a [`Server`](super::Server) in this process with the configured
/// privacy mode; `key` is the shared key for `he` (refused if missing).
pub fn run(
    config: &TrainConfig,
    data: &Mnist,
    key: Option<Arc<SecretKey>>,
    observer: &mut dyn Observer,
) -> Result<RunMetrics, TrainError> {
    let started = Instant::now();
    let (mut clients, test) = clients_and_test_set(config, data, None)?;
    let largest = clients.iter().map(Client::num_samples).max().unwrap_or(0);
    let rounds_per_epoch = config.rounds_per_epoch(largest);
    let num_params = clients[0].model().num_params();
    let mut federation = match config.mode {
        Mode::Federated => Some(Federation::new(config, clients.len(), num_params, key)?),
        Mode::Local | Mode::Centralized => None,
    };
    observer.start(config, rounds_per_epoch * config.epochs);

    let mut epochs = Vec::with_capacity(config.epochs);
    let mut round = 0;
    for epoch in 1..=config.epochs {
        let epoch_start = Instant::now();
        let mut loss_sum = 0.0f64;
        for _ in 0..rounds_per_epoch {
            let loss = match federation.as_mut() {
                Some(federation) => federation.round(&mut clients).map_err(Box::new)?,
                None => {
                    // One party: its update is the aggregate.
                    let update = clients[0].compute_update(config.strategy, config.batch_size);
                    clients[0].apply(config.strategy, &update.values);
                    update.loss
                }
            };
            loss_sum += f64::from(loss);
            round += 1;
            observer.round(round);
        }
        if let Some(party) = clients
            .iter()
            .position(|c| c.model().params() != clients[0].model().params())
        {
            return Err(TrainError::Diverged { epoch, party });
        }
        let eval = clients[0]
            .model()
            .evaluate(test.images.view(), &test.labels);
        let metrics = EpochMetrics {
            epoch,
            test_accuracy: eval.accuracy,
            test_loss: eval.loss,
            train_loss: loss_sum / rounds_per_epoch as f64,
            wall_seconds: epoch_start.elapsed().as_secs_f64(),
            elapsed_seconds: started.elapsed().as_secs_f64(),
            rounds: rounds_per_epoch,
            epsilon: clients[0].epsilon(config.batch_size),
        };
        observer.epoch(config, &metrics);
        epochs.push(metrics);
    }
    Ok(RunMetrics {
        config: config.clone(),
        party_samples: clients.iter().map(Client::num_samples).collect(),
        epochs,
        total_seconds: started.elapsed().as_secs_f64(),
        overhead: federation.as_ref().map(Federation::overhead),
        final_params: clients[0].model().params().to_vec(),
    })
}
