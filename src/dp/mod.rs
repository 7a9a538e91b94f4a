//! The DP variant: DP-SGD's settings and its privacy accounting, by privacy loss
//! distribution ([`pld_epsilon`], the default) or Rényi DP ([`epsilon`]) of the
//! Poisson-subsampled Gaussian mechanism.
//!
//! HE mode has no DP option; this mode exists beside it so users can compare the two on
//! cost and accuracy. The measured comparison, the accountants against Google's
//! dp-accounting and the tuning study are in the guide `docs/dp.md`.

mod accountant;
mod pca;
mod pld;

pub(crate) use accountant::smallest_noise_for;
pub use accountant::{default_orders, epsilon, epsilon_at_orders, noise_multiplier_for, rdp_step};
pub use pca::{DpPca, MAX_PCA_COMPONENTS, noisy_covariance, principal_components};
pub use pld::{
    GRID_INTERVAL, MAX_GRID, MIN_SIGMA, TRUNCATION, WINDOW_TAIL, pld_epsilon, pld_epsilon_composed,
};

use std::fmt;
use std::str::FromStr;

use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

/// Adds independent N(0, std²) noise to every value (floating-point Gaussian: see the
/// caveat on [`DpSgd`]). Pass a [`crate::he::csprng::SecureRng`] for real runs.
///
/// ```
/// use hefl::{dp::add_gaussian_noise, he::csprng::SecureRng};
///
/// let mut v = vec![0.0f32; 4];
/// add_gaussian_noise(&mut v, 2.0, &mut SecureRng::from_key(1));
/// assert!(v.iter().all(|x| *x != 0.0));
/// ```
pub fn add_gaussian_noise<R: rand::Rng + ?Sized>(values: &mut [f32], std: f32, rng: &mut R) {
    for v in values {
        let z: f64 = StandardNormal.sample(rng);
        *v += std * z as f32;
    }
}

/// One mechanism of a run, as the accountants see it: `steps` releases of the Gaussian
/// mechanism with noise multiplier `sigma`, each on a Poisson sample of rate `q` (DP-SGD's
/// steps), or, with `q = 1` and one step, a single Gaussian release of the whole data
/// (DP-PCA's covariance).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampledGaussian {
    /// Sampling rate, in (0, 1].
    pub q: f64,
    /// Noise standard deviation as a multiple of the sensitivity.
    pub sigma: f64,
    /// Releases.
    pub steps: u64,
}

/// Which accountant turns (q, σ, steps, δ) into ε.
///
/// Both analyse the same mechanism (Poisson sampling, add/remove adjacency) and both are
/// upper bounds; PLD is tight to its discretisation, RDP is loose (Opacus's MNIST setting,
/// q = 64/60,000, σ = 1, 938 steps, δ = 10⁻⁵: PLD 0.155, RDP 0.68), so calibrating σ with RDP
/// adds more noise than a target ε needs.
///
/// ```
/// use hefl::dp::Accountant;
///
/// let q = 64.0 / 60_000.0;
/// let pld = Accountant::Pld.epsilon(q, 1.0, 938, 1e-5);
/// let rdp = Accountant::Rdp.epsilon(q, 1.0, 938, 1e-5);
/// assert!(pld < 0.16 && rdp > 0.67, "{pld} {rdp}");
/// assert_eq!("rdp".parse::<Accountant>(), Ok(Accountant::Rdp));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accountant {
    /// Privacy loss distribution, composed by FFT ([`pld_epsilon`]).
    #[default]
    Pld,
    /// Rényi DP at Opacus's orders ([`epsilon`]).
    Rdp,
}

impl Accountant {
    /// Both accountants, PLD first.
    pub const ALL: [Self; 2] = [Self::Pld, Self::Rdp];

    /// ε after `steps` steps at sampling rate `q` with noise multiplier `sigma`, at `delta`.
    pub fn epsilon(self, q: f64, sigma: f64, steps: u64, delta: f64) -> f64 {
        match self {
            Self::Pld => pld_epsilon(q, sigma, steps, delta),
            Self::Rdp => epsilon(q, sigma, steps, delta).0,
        }
    }

    /// ε at `delta` of several mechanisms run one after the other on the same data:
    /// composed exactly (PLD: their loss distributions convolved; RDP: their Rényi
    /// divergences added at every order), not by adding ε's.
    ///
    /// ```
    /// use hefl::dp::{Accountant, SampledGaussian};
    ///
    /// let sgd = SampledGaussian { q: 0.01, sigma: 1.0, steps: 1_000 };
    /// let pca = SampledGaussian { q: 1.0, sigma: 8.0, steps: 1 };
    /// for accountant in Accountant::ALL {
    ///     assert_eq!(
    ///         accountant.epsilon_composed(&[sgd], 1e-5),
    ///         accountant.epsilon(0.01, 1.0, 1_000, 1e-5)
    ///     );
    ///     assert!(accountant.epsilon_composed(&[pca, sgd], 1e-5) > accountant.epsilon(0.01, 1.0, 1_000, 1e-5));
    /// }
    /// ```
    pub fn epsilon_composed(self, mechanisms: &[SampledGaussian], delta: f64) -> f64 {
        match (self, mechanisms) {
            (Self::Rdp, [one]) => epsilon(one.q, one.sigma, one.steps, delta).0,
            (Self::Rdp, _) => accountant::composed_epsilon(mechanisms, delta, &default_orders()).0,
            (Self::Pld, _) => pld_epsilon_composed(mechanisms, delta),
        }
    }

    /// The smallest noise multiplier (to within 1% of the target ε, from below) that keeps
    /// `steps` steps at rate `q` within `target_epsilon` at `delta`, by bisection; `None`
    /// if that needs σ above 10⁴. For RDP this is [`noise_multiplier_for`].
    ///
    /// ```
    /// use hefl::dp::Accountant;
    ///
    /// let sigma = Accountant::Pld.noise_multiplier_for(1.0, 1e-5, 0.01, 1000).unwrap();
    /// let eps = Accountant::Pld.epsilon(0.01, sigma, 1000, 1e-5);
    /// assert!(eps <= 1.0 && eps >= 0.99, "{sigma} gives {eps}");
    /// ```
    pub fn noise_multiplier_for(
        self,
        target_epsilon: f64,
        delta: f64,
        q: f64,
        steps: u64,
    ) -> Option<f64> {
        accountant::smallest_noise_for(target_epsilon, |sigma| self.epsilon(q, sigma, steps, delta))
    }
}

impl FromStr for Accountant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "pld" => Ok(Self::Pld),
            "rdp" => Ok(Self::Rdp),
            other => Err(format!("unknown accountant {other:?}: expected pld or rdp")),
        }
    }
}

impl fmt::Display for Accountant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Pld => "pld",
            Self::Rdp => "rdp",
        })
    }
}

/// How DP-SGD forms its batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sampling {
    /// Each example joins a batch independently with probability q = batch / local size
    /// (the sampled Gaussian mechanism the accountant analyses). Batch sizes vary.
    #[default]
    Poisson,
    /// Shuffled fixed-size batches. The accountant's Poisson analysis is then only an
    /// approximation (the common practice, not a proof).
    Shuffle,
}

/// DP-SGD settings of one client (or of the one centralized trainer).
///
/// Each step: every example's gradient clipped to L2 norm `max_grad_norm` (C), summed,
/// Gaussian noise N(0, σ²C²) added to every coordinate (σ = `noise_multiplier`), divided by
/// the expected batch size. Noise and Poisson batches come from [`crate::he::csprng::SecureRng`]
/// (tfhe's AES-CTR CSPRNG). Caveat: the noise is floating-point Gaussian (ziggurat on f64,
/// rounded to f32); like Opacus's default sampler, it is not a discrete Gaussian, and
/// floating-point samplers are known to leak through the low-order bits of their outputs
/// (Mironov 2012); the guarantee assumes ideal real-valued noise.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DpSgd {
    /// σ: noise standard deviation as a multiple of C.
    pub noise_multiplier: f64,
    /// C: per-example gradient L2 bound.
    pub max_grad_norm: f32,
    /// δ of the reported (ε, δ) guarantee.
    pub delta: f64,
    /// Batch formation.
    pub sampling: Sampling,
    /// The accountant that reports ε and calibrates σ (absent from older plans: PLD).
    #[serde(default)]
    pub accountant: Accountant,
    /// A DP-PCA projection of the inputs computed before training, whose Gaussian release
    /// the accountant composes with the steps' (absent from older plans: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pca: Option<DpPca>,
}

impl DpSgd {
    /// ε after `steps` steps at sampling rate `q`, by this run's accountant: the steps
    /// composed with the DP-PCA release when the run has one.
    ///
    /// ```
    /// use hefl::dp::{Accountant, DpPca, DpSgd, Sampling};
    ///
    /// let dp = DpSgd {
    ///     noise_multiplier: 1.0,
    ///     max_grad_norm: 1.0,
    ///     delta: 1e-5,
    ///     sampling: Sampling::Poisson,
    ///     accountant: Accountant::Pld,
    ///     pca: None,
    /// };
    /// let with_pca = DpSgd { pca: Some(DpPca { components: 60, noise_multiplier: 8.0 }), ..dp };
    /// assert!(with_pca.epsilon(0.01, 1_000) > dp.epsilon(0.01, 1_000));
    /// assert!(with_pca.epsilon(0.01, 0) > 0.0); // the projection alone
    /// ```
    pub fn epsilon(&self, q: f64, steps: u64) -> f64 {
        self.accountant
            .epsilon_composed(&self.mechanisms(q, steps), self.delta)
    }

    /// The mechanisms of a run of `steps` steps at rate `q`: the DP-PCA release (if any),
    /// then the steps.
    pub fn mechanisms(&self, q: f64, steps: u64) -> Vec<SampledGaussian> {
        let sgd = SampledGaussian {
            q,
            sigma: self.noise_multiplier,
            steps,
        };
        match self.pca {
            Some(pca) => vec![pca.mechanism(), sgd],
            None => vec![sgd],
        }
    }
}

/// Input perturbation, the data-level baseline: each example L2-normalised to norm 1,
/// then N(0, σ²) added to every feature with σ = sqrt(2 ln(1.25/δ)) / ε, the Gaussian
/// mechanism for sensitivity 1 (valid as stated for ε ≤ 1; a weaker, per-example local
/// guarantee than DP-SGD's, computed once before training).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputDp {
    /// ε of each perturbed example.
    pub epsilon: f64,
    /// δ of each perturbed example.
    pub delta: f64,
}

impl InputDp {
    /// σ of the added noise.
    ///
    /// ```
    /// let sigma = hefl::dp::InputDp { epsilon: 1.0, delta: 1e-5 }.sigma();
    /// assert!((sigma - 4.8448).abs() < 1e-3);
    /// ```
    pub fn sigma(&self) -> f64 {
        (2.0 * (1.25 / self.delta).ln()).sqrt() / self.epsilon
    }

    /// Normalises and perturbs every row of `images` in place.
    pub fn apply<R: rand::Rng + ?Sized>(&self, images: &mut ndarray::Array2<f32>, rng: &mut R) {
        Self::normalize(images);
        let sigma = self.sigma() as f32;
        for mut row in images.rows_mut() {
            if let Some(values) = row.as_slice_mut() {
                add_gaussian_noise(values, sigma, rng);
            }
        }
    }

    /// L2-normalises every row (what test images get, without noise, so that the model
    /// sees inputs of the scale it was trained on).
    pub fn normalize(images: &mut ndarray::Array2<f32>) {
        for mut row in images.rows_mut() {
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            if norm > 0.0 {
                row.mapv_inplace(|v| v / norm);
            }
        }
    }
}
