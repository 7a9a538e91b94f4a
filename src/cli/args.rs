//! Arguments shared by several commands, the step from arguments to a library
//! configuration, and the one table from library fields to flag names.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use hefl::data::{Mnist, Partition};
use hefl::dp::{Accountant, DpPca, DpSgd, InputDp, Sampling};
use hefl::fl::{
    ConfigError, Field, Mode, Privacy, Strategy, TrainConfig, ValidConfig, check_positive,
};
use hefl::he::DownloadForm;
use hefl::he::keys::{KeyFile, SecretKey};
use hefl::model::{Activation, Ema, LrSchedule, OptimizerKind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The flag a user types for a library field: the one place that knows both names.
pub fn flag(field: Field) -> String {
    match field {
        Field::Layers => "--hidden".into(),
        Field::KeepRounds => "the number of published rounds kept".into(),
        other => format!("--{}", other.name().replace('_', "-")),
    }
}

/// The message and exit code for a failed command: 2 for a setting out of range (named by
/// its flag), 1 for anything else.
///
/// The message walks the error's chain of causes, each said once: most of hefl's errors
/// already print their cause (`checkpoint {path}: {source}`), so a cause whose text the
/// message already holds is not repeated.
pub fn explain(error: &anyhow::Error) -> (String, u8) {
    if let Some(config) = error.chain().find_map(|e| e.downcast_ref::<ConfigError>()) {
        return (config.render(flag), 2);
    }
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    (message, 1)
}

/// Why a command refuses secure aggregation `robust`: its identities, roster and policy exist
/// (`hefl roster --secure-agg robust`), its rounds do not yet.
const ROBUST_NOT_WIRED: &str = "secure aggregation mode robust: the protocol is not wired into \
     this command yet (`hefl roster --secure-agg robust` makes its roster; run with \
     --secure-agg strict meanwhile)";

/// Parses a `--secure-agg` flag of a command that runs rounds: `strict`; `robust` is refused
/// ([`check_wired`]).
pub fn parse_secure_agg(text: &str) -> Result<hefl::secagg::Mode, String> {
    match text.parse::<hefl::secagg::ModeName>()? {
        hefl::secagg::ModeName::Strict => Ok(hefl::secagg::Mode::Strict),
        hefl::secagg::ModeName::Robust => Err(ROBUST_NOT_WIRED.to_owned()),
    }
}

/// Refuses a mode (of a plan or a roster) whose rounds this build does not run: `robust`.
pub fn check_wired(mode: hefl::secagg::Mode) -> Result<()> {
    match mode {
        hefl::secagg::Mode::Strict => Ok(()),
        hefl::secagg::Mode::Robust(_) => Err(anyhow::anyhow!(ROBUST_NOT_WIRED)),
    }
}

/// Checks a probability-like flag.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let v: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if (0.0..=1.0).contains(&v) && v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{v} is not between 0 and 1"))
    }
}

/// Parses a rate in bytes per second: `16384`, `16KiB` or `1MiB`.
pub fn parse_byte_rate(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |i| text.split_at(i));
    let shift = match unit {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use B, KiB or MiB"
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("{text:?} is not a byte count like 16384, 16KiB or 1MiB"))
}

/// Parses `30s`, `500ms`, `2m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((text, "s"), |i| text.split_at(i));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 500ms or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use ms, s or m"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// `hefl dp-epsilon` flags (bounded by [`DpEpsilonArgs::check`]).
#[derive(Args)]
pub struct DpEpsilonArgs {
    /// Probability that a sample is in a batch: batch size / local dataset size.
    #[arg(long, value_parser = parse_rate, value_name = "Q")]
    pub sampling_rate: f64,
    /// Noise standard deviation as a multiple of the clipping norm.
    #[arg(long, value_name = "SIGMA")]
    pub noise_multiplier: f64,
    /// Number of DP-SGD steps.
    #[arg(long, value_name = "T")]
    pub steps: u64,
    /// The delta of the (epsilon, delta) guarantee.
    #[arg(long, default_value_t = 1e-5, value_parser = parse_rate, value_name = "D")]
    pub delta: f64,
    /// The accountant: `pld` (privacy loss distribution, tight) or `rdp` (Rényi DP at
    /// Opacus's orders, an upper bound that over-reports).
    #[arg(long, default_value = "pld", value_name = "pld|rdp")]
    pub accountant: Accountant,
}

impl DpEpsilonArgs {
    /// Refuses a noise multiplier that is not a positive number, no steps, and a delta
    /// outside (0, 1).
    pub fn check(&self) -> Result<(), ConfigError> {
        check_positive(Field::NoiseMultiplier, self.noise_multiplier)?;
        let steps = usize::try_from(self.steps).unwrap_or(usize::MAX);
        hefl::fl::check_range(Field::Steps, steps, 1, usize::MAX)?;
        hefl::fl::check_probability(Field::Delta, self.delta)
    }
}

/// DP-SGD batch formation.
#[derive(Clone, Copy, ValueEnum)]
pub enum SamplingArg {
    /// Each example independently with probability batch / local samples.
    Poisson,
    /// Shuffled fixed-size batches.
    Shuffle,
}

/// How updates are combined in federated mode.
#[derive(Clone, Copy, ValueEnum)]
pub enum StrategyArg {
    /// Each round every party sends one batch gradient; the mean is applied.
    Fedsgd,
    /// Each round every party takes --local-steps steps and sends its model
    /// delta; deltas are averaged weighted by sample count.
    Fedavg,
}

/// Settings shared by every training command.
#[derive(Args)]
pub struct TrainArgs {
    /// Number of parties the training set is split into.
    #[arg(long, default_value_t = 3)]
    pub parties: usize,
    /// How the data is split: `iid` (shuffled, equal shares) or `dirichlet:ALPHA`
    /// (label skew; smaller ALPHA = more skewed, e.g. dirichlet:0.5).
    #[arg(long, default_value = "iid")]
    pub partition: Partition,
    /// Aggregation strategy for federated mode.
    #[arg(long, value_enum, default_value = "fedsgd")]
    pub strategy: StrategyArg,
    /// Local optimizer steps per round with --strategy fedavg.
    #[arg(long, default_value_t = 5)]
    pub local_steps: usize,
    /// Passes over each party's data.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 1.5e-3)]
    pub lr: f32,
    /// Samples per batch (per party, per step).
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Optimizer: sgd, momentum (0.9) or adam.
    #[arg(long, default_value = "adam")]
    pub optimizer: OptimizerKind,
    /// Seed for the initial model, the partition and batch orders.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Hidden layer widths, comma-separated (input 784, or --dp-pca K, and output 10 are
    /// implied).
    #[arg(long, value_delimiter = ',', default_value = "128")]
    pub hidden: Vec<usize>,
    /// Hidden layers' activation: `relu`, or `tanh` (bounded, for DP-SGD: Papernot et al.
    /// 2021). Saved in the model file.
    #[arg(long, default_value = "relu", value_name = "relu|tanh")]
    pub activation: Activation,
    /// Learning-rate schedule over the run's optimizer steps: `constant`, `cosine` (down to
    /// 0) or `step` (a tenth from half-way, a hundredth from three quarters).
    #[arg(long, default_value = "constant", value_name = "SCHEDULE")]
    pub lr_schedule: LrSchedule,
    /// Evaluate and save an exponential moving average of the parameters with this decay
    /// (e.g. 0.99) instead of the last iterate.
    #[arg(long, value_name = "DECAY")]
    pub ema: Option<f32>,
    /// Use only the first N training images (quick experiments).
    #[arg(long, value_name = "N")]
    pub train_subset: Option<usize>,
    /// Evaluate on only the first N test images.
    #[arg(long, value_name = "N")]
    pub test_subset: Option<usize>,
    /// Folder with the MNIST IDX files (default: $MNIST_DIR, else the user cache).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// What the server sees in federated mode: `plain` (fixed-point updates in
    /// the clear), `he` (the same updates encrypted; the server sums ciphertexts)
    /// or `dp` (DP-SGD on every client, noisy updates in the clear; also applies
    /// to local and centralized training).
    #[arg(long, default_value = "plain")]
    pub privacy: Privacy,
    /// --privacy he: secure aggregation inside the encrypted plaintexts. `strict`:
    /// pairwise blinds from X25519 keys (made in memory for runs in one process), so
    /// that no holder of the shared key can read one party's update from its
    /// ciphertext; every party is in every sum. Without it, any key holder who
    /// obtains one party's ciphertext reads its update (docs/security.md). `robust`
    /// (rounds that survive dropouts) has its roster (`hefl roster`) but no rounds yet.
    #[arg(long, value_name = "strict", value_parser = parse_secure_agg)]
    pub secure_agg: Option<hefl::secagg::Mode>,
    /// DP-SGD: noise standard deviation as a multiple of --max-grad-norm.
    #[arg(long, default_value_t = 1.0, value_name = "SIGMA")]
    pub noise_multiplier: f64,
    /// DP-SGD: choose the noise multiplier so that the run ends at this epsilon
    /// (overrides --noise-multiplier).
    #[arg(long, value_name = "EPS")]
    pub target_epsilon: Option<f64>,
    /// DP-SGD: every example's gradient is clipped to this L2 norm.
    #[arg(long, default_value_t = 1.0, value_name = "C")]
    pub max_grad_norm: f32,
    /// DP-SGD: the delta of the reported (epsilon, delta) guarantee. The default
    /// 1e-5 is below 1/n for every party of a 3-party MNIST split (1/20,000).
    #[arg(long, default_value_t = 1e-5, value_parser = parse_rate, value_name = "D")]
    pub delta: f64,
    /// DP-SGD batches: `poisson` (each example with probability batch/n; what the
    /// accountant analyses) or `shuffle` (fixed-size shuffled batches; the
    /// accountant's epsilon is then an approximation).
    #[arg(long, default_value = "poisson", value_enum)]
    pub dp_sampling: SamplingArg,
    /// DP-SGD: the accountant that reports epsilon and calibrates --target-epsilon:
    /// `pld` (privacy loss distribution, tight) or `rdp` (Rényi DP, over-reports).
    #[arg(long, default_value = "pld", value_name = "pld|rdp")]
    pub accountant: Accountant,
    /// --privacy dp: project the inputs on their first K principal components, computed
    /// before training from a covariance released with Gaussian noise (DP-PCA, Abadi et al.
    /// 2016, who used 60); its epsilon is composed with training's. In-process runs only
    /// (train, dp-sweep, dp-compare), not serve/join.
    #[arg(long, value_name = "K")]
    pub dp_pca: Option<usize>,
    /// --dp-pca: the noise multiplier of the covariance release (larger: less epsilon,
    /// noisier components).
    #[arg(long, default_value_t = 8.0, value_name = "SIGMA_P")]
    pub dp_pca_noise: f64,
    /// Input perturbation baseline: L2-normalise every training image and add
    /// Gaussian noise for (EPS, --delta)-DP per image, before any training.
    #[arg(long, value_name = "EPS")]
    pub input_dp: Option<f64>,
    /// Fractional bits of the fixed-point encoding of federated updates
    /// (resolution 2^-F, values clipped to [-8, 8]); the total bits follow from
    /// F and --parties. 16 ends the demo 0.14 points above 24 (docs/performance.md#precision).
    #[arg(long, default_value_t = hefl::quant::DEFAULT_FRAC_BITS, value_name = "F")]
    pub frac_bits: u32,
    /// --privacy he: how each round's encrypted sum comes back: `seeds` (the
    /// summed bodies plus every party's 16-byte seed; each client regenerates
    /// the masks), `switched` (the server sums the masks and sends them rounded:
    /// about twice the upload) or `auto` (seeds up to 400 parties, where
    /// the two cross at 100 Mbit/s).
    #[arg(long, default_value = "auto", value_name = "FORM")]
    pub download: DownloadForm,
    /// The shared key file for --privacy he (see `hefl keygen`). Without it, a
    /// fresh key is generated in memory for this run only.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
}

impl TrainArgs {
    /// The run these flags describe in `mode` (not validated yet: the library validates).
    pub fn config(&self, mode: Mode) -> TrainConfig {
        let mut layers = vec![self.dp_pca.unwrap_or(hefl::data::IMAGE_PIXELS)];
        layers.extend(&self.hidden);
        layers.push(hefl::data::NUM_CLASSES);
        TrainConfig {
            mode,
            parties: self.parties,
            partition: self.partition,
            privacy: self.privacy,
            // Blinds live in federated sums; the local and centralized baselines have none.
            secure_agg: self.secure_agg.filter(|_| mode == Mode::Federated),
            dp: (self.privacy == Privacy::Dp).then_some(self.dp_sgd()),
            input_dp: self.input_dp.map(|epsilon| InputDp {
                epsilon,
                delta: self.delta,
            }),
            strategy: match self.strategy {
                StrategyArg::Fedsgd => Strategy::FedSgd,
                StrategyArg::Fedavg => Strategy::FedAvg {
                    local_steps: self.local_steps,
                },
            },
            frac_bits: self.frac_bits,
            download: self.download,
            epochs: self.epochs,
            lr: self.lr,
            batch_size: self.batch_size,
            optimizer: self.optimizer,
            seed: self.seed,
            layers,
            train_subset: self.train_subset,
            test_subset: self.test_subset,
            activation: self.activation,
            lr_schedule: self.lr_schedule,
            ema: self.ema.map(|decay| Ema { decay }),
        }
    }

    /// The DP-SGD settings of these flags.
    pub fn dp_sgd(&self) -> DpSgd {
        DpSgd {
            noise_multiplier: self.noise_multiplier,
            max_grad_norm: self.max_grad_norm,
            delta: self.delta,
            sampling: match self.dp_sampling {
                SamplingArg::Poisson => Sampling::Poisson,
                SamplingArg::Shuffle => Sampling::Shuffle,
            },
            accountant: self.accountant,
            pca: self.dp_pca.map(|components| DpPca {
                components,
                noise_multiplier: self.dp_pca_noise,
            }),
        }
    }

    /// The shared key: from --key, else a fresh in-memory key for this run.
    pub fn key(&self) -> Result<Arc<SecretKey>> {
        let file = match &self.key {
            Some(path) => KeyFile::load(path)?,
            None => {
                eprintln!("no --key given: using a fresh in-memory key for this run");
                KeyFile::generate()?
            }
        };
        Ok(Arc::new(file.secret_key()?))
    }

    /// The run these flags describe in `mode`, checked before any work: the library's gate
    /// on the configuration (once), and the flags it holds only in some modes (the DP-SGD
    /// flags without --privacy dp, --target-epsilon, --frac-bits and --download against
    /// `he`'s budget: the demo runs `he` whatever --privacy says), so that every flag has its
    /// bound. --dp-pca is refused without --privacy dp.
    pub fn validated(&self, mode: Mode) -> Result<ValidConfig, ConfigError> {
        if self.dp_pca.is_some() && self.privacy != Privacy::Dp {
            return Err(ConfigError::Needs {
                field: Field::DpPca,
                needs: format!(
                    "--privacy dp (DP-PCA's noise and epsilon belong to the DP variant; \
                     this run is {})",
                    self.privacy
                ),
            });
        }
        hefl::fl::check_dp_sgd(&self.dp_sgd())?;
        if let Some(target) = self.target_epsilon {
            check_positive(Field::TargetEpsilon, target)?;
        }
        let config = self.config(mode);
        if mode == Mode::Federated {
            config.widths()?;
        }
        config.validate()
    }

    /// `config` with the noise multiplier calibrated to --target-epsilon for a training set of
    /// `train_size` images, when the flag is given (validated again: it changed).
    pub fn calibrated(&self, config: ValidConfig, train_size: usize) -> Result<ValidConfig> {
        let Some(target) = self.target_epsilon else {
            return Ok(config);
        };
        let mut config = config.into_inner();
        let sigma = hefl::fl::calibrate_noise(&mut config, train_size, target)?;
        eprintln!(
            "{}: noise multiplier {sigma:.4} for epsilon {target} at delta {}",
            config.label(),
            self.delta
        );
        Ok(config.validate()?)
    }

    /// MNIST from --data-dir, $MNIST_DIR or the user cache (downloaded when missing).
    pub fn load(&self) -> Result<Mnist> {
        load_mnist(self.data_dir.as_deref())
    }
}

/// MNIST from `data_dir` (a --data-dir flag), else $MNIST_DIR, else the user cache
/// (downloaded when missing): how every command finds its data.
pub fn load_mnist(data_dir: Option<&Path>) -> Result<Mnist> {
    hefl::data::load_or_download(data_dir).context("loading MNIST")
}
