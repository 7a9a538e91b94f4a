//! DP-SGD tuned the way practitioners tune it: per target ε, a small grid of expected
//! batch size, optimizer and learning rate, clipping norm and epochs, and of the model-side
//! techniques of the DP-SGD literature (DP-PCA inputs, hidden width, tanh, a learning-rate
//! schedule, an EMA of the parameters), each calibrated to the target by the run's
//! accountant and scored on a validation split carved from the training data (never on the
//! test set).
//!
//! The search itself is not accounted for: every trial sees the same training examples, so
//! choosing the best of k trials by their validation accuracy spends privacy beyond the
//! reported ε unless the selection is made private too (Papernot and Steinke, "Hyperparameter
//! Tuning with Renyi Differential Privacy", ICLR 2022). The reported ε is that of the chosen
//! run alone, as in most of the DP literature.

use super::config::{ConfigError, Field, Privacy, TrainConfig, check_range};
use super::error::TrainError;
use super::metrics::RunMetrics;
use super::run::run;
use super::setup::calibrate_noise;
use crate::data::{Dataset, Mnist};
use crate::data::{IMAGE_PIXELS, NUM_CLASSES};
use crate::dp::{Accountant, DpPca};
use crate::model::{Activation, Ema, LrSchedule, OptimizerKind};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

/// Training images held out for scoring trials: 5,000 of MNIST's 60,000 (as Keras's and
/// many DP papers' validation splits).
pub const DEFAULT_VALIDATION_SIZE: usize = 5_000;

/// One point of the grid: the settings DP-SGD is tuned over. The model-side settings
/// (absent from files written before they existed) default to the base's model: ReLU, the
/// base's hidden layers, constant learning rate, no EMA, no DP-PCA.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DpTrial {
    /// Expected batch size per party (Poisson sampling rate = batch / shard size).
    pub batch_size: usize,
    /// The optimizer every party applies to the mean noisy gradient.
    pub optimizer: OptimizerKind,
    /// Its learning rate.
    pub lr: f32,
    /// C, the per-example clipping norm.
    pub max_grad_norm: f32,
    /// Passes over each party's data.
    pub epochs: usize,
    /// One hidden layer of this width instead of the base's hidden layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<usize>,
    /// The hidden activation.
    #[serde(default)]
    pub activation: Activation,
    /// The learning-rate schedule.
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// The EMA decay of the reported parameters, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema: Option<f32>,
    /// The DP-PCA input projection, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pca: Option<DpPca>,
}

impl DpTrial {
    /// A trial of these DP-SGD settings on the base's model (no model-side technique).
    pub fn sgd(
        batch_size: usize,
        optimizer: OptimizerKind,
        lr: f32,
        max_grad_norm: f32,
        epochs: usize,
    ) -> Self {
        Self {
            batch_size,
            optimizer,
            lr,
            max_grad_norm,
            epochs,
            hidden: None,
            activation: Activation::Relu,
            lr_schedule: LrSchedule::Constant,
            ema: None,
            pca: None,
        }
    }

    /// `base` with this trial's settings (the DP settings of `base` otherwise kept). With
    /// DP-PCA or a hidden width, the layers become `[inputs, hidden..., 10]`, the inputs
    /// being the DP-PCA components or the pixels.
    pub fn apply(&self, base: &TrainConfig) -> TrainConfig {
        let mut config = TrainConfig {
            batch_size: self.batch_size,
            optimizer: self.optimizer,
            lr: self.lr,
            epochs: self.epochs,
            activation: self.activation,
            lr_schedule: self.lr_schedule,
            ema: self.ema.map(|decay| Ema { decay }),
            ..base.clone()
        };
        if let Some(dp) = config.dp.as_mut() {
            dp.max_grad_norm = self.max_grad_norm;
            dp.pca = self.pca;
        }
        let hidden: Vec<usize> = match self.hidden {
            Some(width) => vec![width],
            None => base
                .layers
                .get(1..base.layers.len().saturating_sub(1))
                .map(<[usize]>::to_vec)
                .unwrap_or_default(),
        };
        let inputs = self.pca.map_or(IMAGE_PIXELS, |pca| pca.components);
        config.layers = std::iter::once(inputs)
            .chain(hidden)
            .chain(std::iter::once(NUM_CLASSES))
            .collect();
        config
    }
}

impl std::fmt::Display for DpTrial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "batch {}, {} lr {}, C {}, {} epochs",
            self.batch_size, self.optimizer, self.lr, self.max_grad_norm, self.epochs
        )?;
        if let Some(pca) = self.pca {
            write!(
                f,
                ", pca {} (sigma_p {})",
                pca.components, pca.noise_multiplier
            )?;
        }
        if let Some(width) = self.hidden {
            write!(f, ", hidden {width}")?;
        }
        if self.activation != Activation::Relu {
            write!(f, ", {}", self.activation)?;
        }
        if self.lr_schedule != LrSchedule::Constant {
            write!(f, ", {} lr", self.lr_schedule)?;
        }
        if let Some(decay) = self.ema {
            write!(f, ", ema {decay}")?;
        }
        Ok(())
    }
}

/// The grid `dp-sweep --tune` searches for every target ε: 12 trials, chosen from pilot runs
/// on this MLP and the DP-SGD literature (large batches, many epochs, plain SGD with a large
/// step or Adam with a small one):
///
/// - (optimizer, learning rate): (SGD, 4) and (Adam, 3·10⁻³);
/// - clipping norm C: 0.5 and 1;
/// - (expected batch per party, epochs): (1024, 20), (2048, 20), (2048, 40).
///
/// About 17 minutes for five targets on two cores (each trial 10 to 25 s).
///
/// ```
/// let grid = hefl::fl::default_grid();
/// assert_eq!(grid.len(), 12);
/// assert!(grid.iter().all(|t| t.batch_size >= 1024));
/// ```
pub fn default_grid() -> Vec<DpTrial> {
    let mut grid = Vec::new();
    for (optimizer, lr) in [(OptimizerKind::Sgd, 4.0), (OptimizerKind::Adam, 3e-3)] {
        for max_grad_norm in [0.5, 1.0] {
            for (batch_size, epochs) in [(1024, 20), (2048, 20), (2048, 40)] {
                grid.push(DpTrial::sgd(
                    batch_size,
                    optimizer,
                    lr,
                    max_grad_norm,
                    epochs,
                ));
            }
        }
    }
    grid
}

/// The grid `dp-sweep --tune` searches for target `epsilon` in `mode` (the same for the
/// centralized and the federated variant): the DP-SGD literature's model-side techniques on
/// top of the DP-SGD settings [`default_grid`]'s search chose. Every trial projects the
/// inputs on 60 DP-PCA components (Abadi et al. 2016), with σ_p = 16·√(2/ε) (32 at ε = 0.5,
/// 16 at 2, 8 at 8; Abadi et al. used 16, 7 and 4), and uses plain SGD at rate 4 with C = 1
/// on expected batches of 1,024 images (per party when federated). The four trials:
///
/// - 128 ReLU units, constant rate, 40 epochs (DP-SGD with DP-PCA alone), at rate 4 and at
///   rate 1;
/// - the same, cosine-decayed over 100 epochs, with an EMA of the parameters (decay 0.99);
/// - 256 tanh units (Papernot et al. 2021), cosine-decayed over 100 epochs, with the EMA.
///
/// Chosen from pilot runs at ε = 0.5, 2 and 8 (`docs/dp.md` has them): σ_p = 32 at ε = 2
/// lost 0.6 points against 16; batches of 512 lost 1.8 points against 1,024; a constant
/// rate 4 over 40 epochs diverges at ε = 0.5 (test loss rising from epoch 10), where rate 1
/// gained 6 points.
///
/// ```
/// use hefl::fl::{Mode, tuning_grid};
///
/// let grid = tuning_grid(Mode::Centralized, 2.0);
/// assert_eq!(grid.len(), 4);
/// assert!(grid.iter().all(|t| t.pca.is_some_and(|p| p.noise_multiplier == 16.0)));
/// ```
pub fn tuning_grid(_mode: super::config::Mode, epsilon: f64) -> Vec<DpTrial> {
    let pca = DpPca {
        components: 60,
        noise_multiplier: 16.0 * (2.0 / epsilon).sqrt(),
    };
    let base = DpTrial {
        pca: Some(pca),
        ..DpTrial::sgd(1024, OptimizerKind::Sgd, 4.0, 1.0, 40)
    };
    let decayed = DpTrial {
        lr_schedule: LrSchedule::Cosine,
        ema: Some(0.99),
        epochs: 100,
        ..base
    };
    vec![
        DpTrial {
            hidden: Some(128),
            ..base
        },
        DpTrial {
            hidden: Some(128),
            lr: 1.0,
            ..base
        },
        DpTrial {
            hidden: Some(128),
            ..decayed
        },
        DpTrial {
            hidden: Some(256),
            activation: Activation::Tanh,
            ..decayed
        },
    ]
}

/// Splits `train` into (the rest, `size` validation examples), by a permutation seeded by
/// `seed`. Refused unless both parts are non-empty.
///
/// ```
/// let data = hefl::data::synthetic::separable_mnist(200, 10);
/// let (rest, validation) = hefl::fl::validation_split(&data.train, 50, 7).unwrap();
/// assert_eq!((rest.len(), validation.len()), (150, 50));
/// assert!(hefl::fl::validation_split(&data.train, 200, 7).is_err());
/// ```
pub fn validation_split(
    train: &Dataset,
    size: usize,
    seed: u64,
) -> Result<(Dataset, Dataset), ConfigError> {
    check_range(
        Field::ValidationSize,
        size,
        1,
        train.len().saturating_sub(1).max(1),
    )?;
    if train.len() < 2 {
        return Err(ConfigError::Invalid {
            field: Field::ValidationSize,
            expected: "a training set of at least 2 images".into(),
            found: size.to_string(),
        });
    }
    let mut order: Vec<usize> = (0..train.len()).collect();
    order.shuffle(&mut ChaCha20Rng::seed_from_u64(seed ^ 0x5A11_DA7E));
    let (validation, rest) = order.split_at(size);
    Ok((train.subset(rest), train.subset(validation)))
}

/// One trial's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialResult {
    /// The ε the noise was calibrated to.
    pub target_epsilon: f64,
    /// The settings tried.
    pub trial: DpTrial,
    /// σ calibrated by the run's accountant for this trial's rate and steps.
    pub noise_multiplier: f64,
    /// Accuracy on the validation split after the last epoch (what trials are ranked by).
    pub validation_accuracy: f64,
    /// Accuracy of the same final model on the test set (reported, never used to choose).
    pub test_accuracy: f64,
    /// Wall-clock seconds of the trial.
    pub seconds: f64,
}

/// What `dp-sweep --tune` chose, and everything it tried: the file `hefl dp-compare` reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TunedDp {
    /// The configuration every trial started from (its batch, optimizer, learning rate,
    /// clipping norm and epochs replaced by the trial's).
    pub base: TrainConfig,
    /// The accountant that calibrated σ.
    pub accountant: Accountant,
    /// Training images held out for validation.
    pub validation_size: usize,
    /// The best trial per target ε (highest validation accuracy; the first on ties).
    pub best: Vec<TrialResult>,
    /// Every trial, in the order run.
    pub trials: Vec<TrialResult>,
}

/// Told about every trial as it starts and ends (the CLI's progress bar).
pub trait TuneObserver {
    /// A trial is about to run.
    fn trial_start(&mut self, _target_epsilon: f64, _trial: &DpTrial) {}
    /// A trial ended.
    fn trial_end(&mut self, _result: &TrialResult) {}
}

impl TuneObserver for () {}

/// Runs every trial of `grid(target)` for every target ε on `data`'s training set less a
/// validation split of `validation_size` images (seeded by `base.seed`), `base` being a DP
/// configuration; returns the best trial per target by validation accuracy.
pub fn tune(
    base: &TrainConfig,
    data: &Mnist,
    targets: &[f64],
    grid: &dyn Fn(f64) -> Vec<DpTrial>,
    validation_size: usize,
    observer: &mut dyn TuneObserver,
) -> Result<TunedDp, TrainError> {
    let Some(accountant) = base.dp.as_ref().map(|dp| dp.accountant) else {
        return Err(ConfigError::Needs {
            field: Field::TargetEpsilon,
            needs: "privacy dp".into(),
        }
        .into());
    };
    if base.privacy != Privacy::Dp {
        return Err(ConfigError::Needs {
            field: Field::Privacy,
            needs: "dp for tuning".into(),
        }
        .into());
    }
    let (rest, validation) = validation_split(&data.train, validation_size, base.seed)?;
    let split = Mnist {
        train: rest,
        test: validation,
    };
    let mut trials = Vec::new();
    let mut best = Vec::new();
    for &target in targets {
        let mut best_here: Option<TrialResult> = None;
        for trial in &grid(target) {
            observer.trial_start(target, trial);
            let (result, _) = run_trial(base, trial, target, &split, &data.test)?;
            observer.trial_end(&result);
            if best_here
                .as_ref()
                .is_none_or(|b| result.validation_accuracy > b.validation_accuracy)
            {
                best_here = Some(result.clone());
            }
            trials.push(result);
        }
        best.extend(best_here);
    }
    Ok(TunedDp {
        base: base.clone(),
        accountant,
        validation_size,
        best,
        trials,
    })
}

/// One trial: `trial` applied to `base`, σ calibrated to `target` for `split.train`, trained
/// on `split.train`, scored on `split.test` (the validation split) and on `test`.
pub fn run_trial(
    base: &TrainConfig,
    trial: &DpTrial,
    target: f64,
    split: &Mnist,
    test: &Dataset,
) -> Result<(TrialResult, RunMetrics), TrainError> {
    let mut config = trial.apply(base);
    let sigma = calibrate_noise(&mut config, split.train.len(), target)?;
    let metrics = run(&config, split, None, &mut ())?;
    let model = metrics.final_model()?;
    let test_accuracy = model.evaluate(test.images.view(), &test.labels).accuracy;
    let result = TrialResult {
        target_epsilon: target,
        trial: *trial,
        noise_multiplier: sigma,
        validation_accuracy: metrics.final_accuracy().unwrap_or(0.0),
        test_accuracy,
        seconds: metrics.total_seconds,
    };
    Ok((result, metrics))
}
