//! What defines a training run, and the one gate every run passes: [`TrainConfig::validate`].
//!
//! Every command validates its configuration into a [`ValidConfig`] before it does anything
//! (the server before it binds, a client on the plan it receives, [`run`](super::run)
//! before it loads a batch); deeper code takes a [`ValidConfig`] and relies on it. Errors
//! name the [`Field`], what was expected and what was found, in the library's terms; the
//! CLI maps fields to its flag names in one place.

use super::encoding::{Encoding, Weighting};
use super::strategy::{Step, Strategy};
use crate::data::{IMAGE_PIXELS, NUM_CLASSES, Partition};
use crate::dp::{DpSgd, InputDp, MAX_PCA_COMPONENTS};
use crate::he::{DownloadForm, MAX_PLAINTEXT_LEN, Widths};
use crate::model::{Activation, Ema, LrSchedule, OptimizerKind};
use crate::quant::{DEFAULT_CLIP, DEFAULT_FRAC_BITS};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

/// Smallest Dirichlet concentration a partition may ask for: below it the class shares
/// underflow to zero and the draw cannot deal the data.
pub const MIN_DIRICHLET_ALPHA: f64 = 1e-3;
/// Largest Dirichlet concentration (far beyond it the split is IID anyway).
pub const MAX_DIRICHLET_ALPHA: f64 = 1e6;

/// Largest federation hefl sets up (tokens, fixed-point headroom, per-party state).
pub const MAX_PARTIES: usize = 100_000;
/// Longest run, in epochs.
pub const MAX_EPOCHS: usize = 1_000_000;
/// Largest batch, in samples.
pub const MAX_BATCH_SIZE: usize = 1 << 20;
/// Most FedAvg local steps per round.
pub const MAX_LOCAL_STEPS: usize = 1_000_000;

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

/// What the server gets to see of an update.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Privacy {
    /// Fixed-point words in the clear; the server sums plaintext.
    #[default]
    Plain,
    /// The same words as packed GLWE ciphertexts; the server sums ciphertexts.
    He,
    /// DP-SGD on every client (clipping and Gaussian noise); noisy updates sent in the
    /// clear. The comparison mode: HE itself has no DP option.
    Dp,
}

impl FromStr for Privacy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "plain" => Ok(Self::Plain),
            "he" => Ok(Self::He),
            "dp" => Ok(Self::Dp),
            other => Err(format!(
                "unknown privacy mode {other:?}: expected plain, he or dp"
            )),
        }
    }
}

impl fmt::Display for Privacy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Plain => "plain",
            Self::He => "he",
            Self::Dp => "dp",
        })
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
    /// Secure aggregation inside the `he` plaintexts (`strict`: pairwise blinds from the
    /// roster's keys, see [`crate::secagg`]); `None`: today's shared-key `he`, where any key
    /// holder with one party's ciphertext reads its update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_agg: Option<crate::secagg::Mode>,
    /// DP-SGD settings, used exactly when `privacy` is `dp` (also for the local and
    /// centralized baselines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp: Option<DpSgd>,
    /// Input perturbation of the training images before any training (any mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_dp: Option<InputDp>,
    /// Fractional bits f of the fixed-point encoding of federated updates (resolution
    /// 2^-f; values clipped to [-8, 8]): see [`crate::quant`] and `docs/performance.md#precision`.
    #[serde(default = "default_frac_bits")]
    pub frac_bits: u32,
    /// How the round's encrypted sum travels back in `he` mode: the summed bodies with every
    /// party's seed, or with the summed mask switched to fewer bits ([`DownloadForm`]).
    #[serde(default)]
    pub download: DownloadForm,
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
    /// The hidden layers' activation (absent from older plans: ReLU).
    #[serde(default, skip_serializing_if = "is_default")]
    pub activation: Activation,
    /// How the learning rate decays over the run's optimizer steps (absent: constant).
    #[serde(default, skip_serializing_if = "is_default")]
    pub lr_schedule: LrSchedule,
    /// An exponential moving average of the parameters, evaluated and saved instead of the
    /// last iterate (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema: Option<Ema>,
}

/// Whether a field holds its default (left out of plans and metrics, so that a run without
/// the newer settings serializes as before).
fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// Most fractional bits a run may ask for.
pub const MAX_FRAC_BITS: u32 = 40;

fn default_frac_bits() -> u32 {
    DEFAULT_FRAC_BITS
}

impl TrainConfig {
    /// The encoding of this federation's updates: clip 8, `frac_bits`, the least total bits
    /// for `parties`, each update weighted by its share of the samples a full round stands
    /// for (batch size times local steps; see [`Encoding`]).
    ///
    /// ```
    /// use hefl::fl::{TrainConfig, Weighting};
    ///
    /// let encoding = TrainConfig::default().encoding()?;
    /// let fp = encoding.fixed_point().params();
    /// assert_eq!((fp.frac_bits, fp.total_bits), (16, 22));
    /// assert_eq!(encoding.weighting(), Weighting::Fraction { nominal: 64 });
    /// # Ok::<(), hefl::fl::ConfigError>(())
    /// ```
    pub fn encoding(&self) -> Result<Encoding, ConfigError> {
        check_range(Field::Parties, self.parties, 1, MAX_PARTIES)?;
        check_range(
            Field::FracBits,
            self.frac_bits as usize,
            0,
            MAX_FRAC_BITS as usize,
        )?;
        let nominal = self
            .batch_size
            .saturating_mul(self.strategy.steps_per_round()) as u64;
        Encoding::new(
            DEFAULT_CLIP,
            self.frac_bits,
            self.parties as u32,
            Weighting::Fraction { nominal },
        )
        .map_err(|e| ConfigError::Invalid {
            field: Field::FracBits,
            expected: format!(
                "an encoding whose sums of {} parties fit: {e}",
                self.parties
            ),
            found: self.frac_bits.to_string(),
        })
    }

    /// How the round's mean moves the global model: FedSGD steps the optimizer with the mean
    /// gradient, FedAvg adds the mean delta.
    pub fn step(&self) -> Step {
        match self.strategy {
            Strategy::FedSgd => Step::Gradient {
                optimizer: self.optimizer,
                lr: self.lr,
            },
            Strategy::FedAvg { .. } => Step::Delta,
        }
    }

    /// The compact ciphertext widths of this federation in `he` mode (see [`Widths`]),
    /// refused with the numbers when a sum could fail to decode.
    ///
    /// ```
    /// use hefl::fl::TrainConfig;
    ///
    /// let widths = TrainConfig::default().widths()?;
    /// assert_eq!((widths.body_bits(), widths.mask_bits()), (25, None));
    /// let wide = TrainConfig { frac_bits: 40, ..TrainConfig::default() };
    /// assert!(wide.widths().unwrap_err().to_string().contains("frac_bits"));
    /// # Ok::<(), hefl::fl::ConfigError>(())
    /// ```
    pub fn widths(&self) -> Result<Widths, ConfigError> {
        let encoding = self.encoding()?;
        Widths::new(encoding.total_bits(), self.parties as u32, self.download).map_err(|e| {
            ConfigError::Invalid {
                field: Field::FracBits,
                expected: format!("a setting whose encrypted sums decode: {e}"),
                found: self.frac_bits.to_string(),
            }
        })
    }

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

    /// The optimizer steps of the whole run when the largest shard has `largest_shard`
    /// samples: one per round with FedSGD (the aggregate's step), `local_steps` per round with
    /// FedAvg (each party's local optimizer). What a learning-rate schedule spans.
    ///
    /// ```
    /// use hefl::fl::{Strategy, TrainConfig};
    ///
    /// let config = TrainConfig::default(); // FedSGD, batch 64, 10 epochs
    /// assert_eq!(config.optimizer_steps(20_000), 3_130);
    /// let fedavg = TrainConfig { strategy: Strategy::FedAvg { local_steps: 5 }, ..config };
    /// assert_eq!(fedavg.optimizer_steps(20_000), 3_150);
    /// ```
    pub fn optimizer_steps(&self, largest_shard: usize) -> u64 {
        (self.rounds_per_epoch(largest_shard) as u64)
            .saturating_mul(self.epochs as u64)
            .saturating_mul(self.strategy.steps_per_round() as u64)
    }

    /// Rounds in one epoch: enough for the party with `largest_shard` samples to pass over
    /// its data once (batches of `batch_size`, `steps_per_round` of them per round), at
    /// least 1.
    ///
    /// ```
    /// use hefl::fl::{Strategy, TrainConfig};
    ///
    /// let config = TrainConfig::default(); // FedSGD, batch 64
    /// assert_eq!(config.rounds_per_epoch(20_000), 313);
    /// let fedavg = TrainConfig { strategy: Strategy::FedAvg { local_steps: 5 }, ..config };
    /// assert_eq!(fedavg.rounds_per_epoch(20_000), 63);
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

    /// Checks every field and their combinations; the one gate before any run.
    ///
    /// ```
    /// use hefl::fl::{ConfigError, Field, TrainConfig};
    ///
    /// assert!(TrainConfig::default().validate().is_ok());
    /// let bad = TrainConfig { lr: f32::NAN, ..TrainConfig::default() };
    /// let err = bad.validate().unwrap_err();
    /// assert_eq!(err.field(), Field::Lr);
    /// assert_eq!(err.to_string(), "lr is NaN, expected a positive finite number");
    /// ```
    pub fn validate(&self) -> Result<ValidConfig, ConfigError> {
        check_range(Field::Epochs, self.epochs, 1, MAX_EPOCHS)?;
        check_range(Field::BatchSize, self.batch_size, 1, MAX_BATCH_SIZE)?;
        check_range(Field::Parties, self.parties, 1, MAX_PARTIES)?;
        check_positive(Field::Lr, f64::from(self.lr))?;
        if let Strategy::FedAvg { local_steps } = self.strategy {
            check_range(Field::LocalSteps, local_steps, 1, MAX_LOCAL_STEPS)?;
        }
        // Every party needs a sample: a subset smaller than the party count leaves one empty.
        let parties = match self.mode {
            Mode::Centralized => 1,
            Mode::Local | Mode::Federated => self.parties,
        };
        if let Some(n) = self.train_subset {
            check_range(Field::TrainSubset, n, parties, usize::MAX)?;
        }
        if let Some(n) = self.test_subset {
            check_range(Field::TestSubset, n, 1, usize::MAX)?;
        }
        if let Partition::Dirichlet { alpha } = self.partition
            && !(MIN_DIRICHLET_ALPHA..=MAX_DIRICHLET_ALPHA).contains(&alpha)
        {
            return Err(ConfigError::Invalid {
                field: Field::Partition,
                expected: format!(
                    "dirichlet:ALPHA with ALPHA from {MIN_DIRICHLET_ALPHA} to {MAX_DIRICHLET_ALPHA}"
                ),
                found: format!("dirichlet:{alpha}"),
            });
        }
        match (self.privacy, &self.dp) {
            (Privacy::Dp, None) => {
                return Err(ConfigError::Needs {
                    field: Field::Privacy,
                    needs: "DP-SGD settings (noise multiplier, clipping norm, delta)".into(),
                });
            }
            (Privacy::Dp, Some(dp)) => check_dp_sgd(dp)?,
            (privacy, Some(_)) => {
                return Err(ConfigError::Invalid {
                    field: Field::Privacy,
                    expected: "dp when DP-SGD settings are given".into(),
                    found: privacy.to_string(),
                });
            }
            (_, None) => {}
        }
        if let Some(mode) = self.secure_agg
            && (self.privacy != Privacy::He || self.mode != Mode::Federated || self.parties < 2)
        {
            return Err(ConfigError::Invalid {
                field: Field::SecureAgg,
                expected: format!(
                    "secure aggregation ({mode}) only with --privacy he, federated, 2 parties or more"
                ),
                found: format!("{} {}, {} parties", self.mode, self.privacy, self.parties),
            });
        }
        if let Some(input_dp) = self.input_dp {
            check_positive(Field::InputDp, input_dp.epsilon)?;
            check_probability(Field::Delta, input_dp.delta)?;
            if self.pca().is_some() {
                return Err(ConfigError::Invalid {
                    field: Field::InputDp,
                    expected: "no input perturbation with DP-PCA (both change the inputs)".into(),
                    found: input_dp.epsilon.to_string(),
                });
            }
        }
        if let Some(ema) = self.ema
            && !(0.0..1.0).contains(&ema.decay)
        {
            return Err(ConfigError::Invalid {
                field: Field::Ema,
                expected: "a decay in [0, 1)".into(),
                found: ema.decay.to_string(),
            });
        }
        self.check_layers()?;
        if self.mode == Mode::Federated {
            self.encoding()?;
            if self.privacy == Privacy::He {
                self.widths()?;
            }
        }
        Ok(ValidConfig(self.clone()))
    }

    /// The run's DP-PCA settings, when it is a DP run with a DP-PCA projection.
    pub fn pca(&self) -> Option<crate::dp::DpPca> {
        match self.privacy {
            Privacy::Dp => self.dp.and_then(|dp| dp.pca),
            Privacy::Plain | Privacy::He => None,
        }
    }

    fn check_layers(&self) -> Result<(), ConfigError> {
        // A list of any length may come in: the message shows its ends.
        let found = match self.layers.len() {
            0..=8 => format!("{:?}", self.layers),
            n => format!(
                "{n} layers {:?} ... {:?}",
                &self.layers[..4],
                &self.layers[n - 4..]
            ),
        };
        let invalid = |expected: String| ConfigError::Invalid {
            field: Field::Layers,
            expected,
            found: found.clone(),
        };
        let (inputs, from) = match self.pca() {
            Some(pca) => (pca.components, "the DP-PCA components"),
            None => (IMAGE_PIXELS, "the pixels"),
        };
        if self.layers.len() < 2
            || self.layers.first() != Some(&inputs)
            || self.layers.last() != Some(&NUM_CLASSES)
        {
            return Err(invalid(format!(
                "{inputs} inputs ({from}) first and {NUM_CLASSES} classes last"
            )));
        }
        if self.layers.contains(&0) {
            return Err(invalid("every layer at least 1 wide".into()));
        }
        // A model that trains must also save: the model file lists at most this many widths.
        if self.layers.len() > crate::model::MAX_MODEL_LAYERS {
            return Err(invalid(format!(
                "at most {} layers (the model file's limit), input and output included",
                crate::model::MAX_MODEL_LAYERS
            )));
        }
        let params = self.layers.windows(2).try_fold(0usize, |acc, w| {
            w[0].checked_mul(w[1])?.checked_add(w[1])?.checked_add(acc)
        });
        if params.is_none_or(|p| p >= MAX_PLAINTEXT_LEN) {
            return Err(invalid(format!(
                "fewer than {MAX_PLAINTEXT_LEN} parameters in all"
            )));
        }
        Ok(())
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
            secure_agg: None,
            dp: None,
            input_dp: None,
            frac_bits: DEFAULT_FRAC_BITS,
            download: DownloadForm::Auto,
            epochs: 10,
            lr: 1.5e-3,
            batch_size: 64,
            optimizer: OptimizerKind::Adam,
            seed: 42,
            layers: crate::model::DEFAULT_LAYERS.to_vec(),
            train_subset: None,
            test_subset: None,
            activation: Activation::Relu,
            lr_schedule: LrSchedule::Constant,
            ema: None,
        }
    }
}

/// A [`TrainConfig`] that passed [`TrainConfig::validate`]: code that takes one relies on
/// every field being in range.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidConfig(TrainConfig);

impl Deref for ValidConfig {
    type Target = TrainConfig;
    fn deref(&self) -> &TrainConfig {
        &self.0
    }
}

impl ValidConfig {
    /// The configuration.
    pub fn into_inner(self) -> TrainConfig {
        self.0
    }
}

/// A setting of a run, named as the library names it (the CLI maps each to its flag).
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    Mode,
    Parties,
    Partition,
    Strategy,
    LocalSteps,
    Privacy,
    SecureAgg,
    NoiseMultiplier,
    MaxGradNorm,
    Delta,
    TargetEpsilon,
    InputDp,
    Epochs,
    Lr,
    BatchSize,
    Layers,
    TrainSubset,
    TestSubset,
    TrainSize,
    RoundsPerEpoch,
    KeyId,
    RoundTimeout,
    MinParties,
    KeepRounds,
    SnapshotEvery,
    AbsentAfter,
    JoinTimeout,
    IdleTimeout,
    HeaderTimeout,
    AuthTimeout,
    BodyTimeout,
    MinUploadRate,
    MaxConnections,
    MaxConnectionsPerPeer,
    Steps,
    FracBits,
    ValidationSize,
    Activation,
    LrSchedule,
    Ema,
    DpPca,
    DpPcaNoise,
}

impl Field {
    /// The field's name in the library (and in a plan's JSON).
    pub fn name(self) -> &'static str {
        match self {
            Self::Mode => "mode",
            Self::Parties => "parties",
            Self::Partition => "partition",
            Self::Strategy => "strategy",
            Self::LocalSteps => "local_steps",
            Self::Privacy => "privacy",
            Self::SecureAgg => "secure_agg",
            Self::NoiseMultiplier => "noise_multiplier",
            Self::MaxGradNorm => "max_grad_norm",
            Self::Delta => "delta",
            Self::TargetEpsilon => "target_epsilon",
            Self::InputDp => "input_dp",
            Self::Epochs => "epochs",
            Self::Lr => "lr",
            Self::BatchSize => "batch_size",
            Self::Layers => "layers",
            Self::TrainSubset => "train_subset",
            Self::TestSubset => "test_subset",
            Self::TrainSize => "train_size",
            Self::RoundsPerEpoch => "rounds_per_epoch",
            Self::KeyId => "key_id",
            Self::RoundTimeout => "round_timeout",
            Self::MinParties => "min_parties",
            Self::KeepRounds => "keep_rounds",
            Self::SnapshotEvery => "snapshot_every",
            Self::AbsentAfter => "absent_after",
            Self::JoinTimeout => "join_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::HeaderTimeout => "header_timeout",
            Self::AuthTimeout => "auth_timeout",
            Self::BodyTimeout => "body_timeout",
            Self::MinUploadRate => "min_upload_rate",
            Self::MaxConnections => "max_connections",
            Self::MaxConnectionsPerPeer => "max_connections_per_peer",
            Self::Steps => "steps",
            Self::FracBits => "frac_bits",
            Self::ValidationSize => "validation_size",
            Self::Activation => "activation",
            Self::LrSchedule => "lr_schedule",
            Self::Ema => "ema",
            Self::DpPca => "dp_pca",
            Self::DpPcaNoise => "dp_pca_noise",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a configuration was refused: the field, what was expected, what was found.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A value out of range or of the wrong kind.
    #[error("{field} is {found}, expected {expected}")]
    Invalid {
        /// The setting.
        field: Field,
        /// What would have been accepted.
        expected: String,
        /// What was given.
        found: String,
    },
    /// A setting that needs another one.
    #[error("{field} needs {needs}")]
    Needs {
        /// The setting.
        field: Field,
        /// What it needs.
        needs: String,
    },
}

impl ConfigError {
    /// The setting that was refused.
    pub fn field(&self) -> Field {
        match self {
            Self::Invalid { field, .. } | Self::Needs { field, .. } => *field,
        }
    }

    /// The message with the field written as `name` says (the CLI passes its flag names).
    ///
    /// ```
    /// use hefl::fl::{Field, TrainConfig};
    ///
    /// let err = TrainConfig { epochs: 0, ..TrainConfig::default() }.validate().unwrap_err();
    /// let flag = |f: Field| format!("--{}", f.name().replace('_', "-"));
    /// assert_eq!(err.render(flag), "--epochs is 0, expected 1 to 1000000");
    /// ```
    pub fn render(&self, name: impl Fn(Field) -> String) -> String {
        match self {
            Self::Invalid {
                field,
                expected,
                found,
            } => format!("{} is {found}, expected {expected}", name(*field)),
            Self::Needs { field, needs } => format!("{} needs {needs}", name(*field)),
        }
    }
}

/// Refuses DP-SGD settings out of range: a noise multiplier and clipping norm that are not
/// positive finite numbers, a delta outside (0, 1). [`TrainConfig::validate`] runs it when
/// privacy is `dp`; the CLI runs it on its DP flags in every mode, so that each has its bound.
///
/// ```
/// use hefl::dp::{Accountant, DpSgd, Sampling};
/// use hefl::fl::check_dp_sgd;
///
/// let dp = DpSgd { noise_multiplier: 1.0, max_grad_norm: 1.0, delta: 1e-5, sampling: Sampling::Poisson, accountant: Accountant::Pld, pca: None };
/// assert!(check_dp_sgd(&dp).is_ok());
/// assert!(check_dp_sgd(&DpSgd { delta: 0.0, ..dp }).is_err());
/// ```
pub fn check_dp_sgd(dp: &DpSgd) -> Result<(), ConfigError> {
    check_positive(Field::NoiseMultiplier, dp.noise_multiplier)?;
    check_positive(Field::MaxGradNorm, f64::from(dp.max_grad_norm))?;
    check_probability(Field::Delta, dp.delta)?;
    if let Some(pca) = dp.pca {
        check_range(
            Field::DpPca,
            pca.components,
            1,
            MAX_PCA_COMPONENTS.min(IMAGE_PIXELS),
        )?;
        check_positive(Field::DpPcaNoise, pca.noise_multiplier)?;
    }
    Ok(())
}

/// Refuses `value` outside `min..=max`: the one range check of every count the library and
/// the CLI bound.
///
/// ```
/// use hefl::fl::{Field, check_range};
///
/// assert!(check_range(Field::Parties, 3, 1, 10).is_ok());
/// let err = check_range(Field::Parties, 11, 1, 10).unwrap_err();
/// assert_eq!(err.to_string(), "parties is 11, expected 1 to 10");
/// ```
pub fn check_range(field: Field, value: usize, min: usize, max: usize) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    let expected = if max == usize::MAX {
        format!("at least {min}")
    } else {
        format!("{min} to {max}")
    };
    Err(ConfigError::Invalid {
        field,
        expected,
        found: value.to_string(),
    })
}

/// Refuses anything but a positive finite number.
///
/// ```
/// use hefl::fl::{Field, check_positive};
///
/// assert!(check_positive(Field::Lr, 0.1).is_ok());
/// assert!(check_positive(Field::Lr, f64::NAN).is_err());
/// assert!(check_positive(Field::Lr, f64::INFINITY).is_err());
/// ```
pub fn check_positive(field: Field, value: f64) -> Result<(), ConfigError> {
    if value.is_finite() && value > 0.0 {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        field,
        expected: "a positive finite number".into(),
        found: value.to_string(),
    })
}

/// Refuses anything outside the open interval (0, 1).
///
/// ```
/// use hefl::fl::{Field, check_probability};
///
/// assert!(check_probability(Field::Delta, 1e-5).is_ok());
/// assert!(check_probability(Field::Delta, 0.0).is_err());
/// ```
pub fn check_probability(field: Field, value: f64) -> Result<(), ConfigError> {
    if value > 0.0 && value < 1.0 {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        field,
        expected: "a number strictly between 0 and 1".into(),
        found: value.to_string(),
    })
}
