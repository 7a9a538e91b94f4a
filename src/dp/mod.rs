//! The DP variant: privacy accounting for DP-SGD (Rényi DP of the sampled Gaussian).
//!
//! HE mode has no DP option; this mode exists beside it so users can compare the two on
//! cost and accuracy.

mod accountant;

pub use accountant::{default_orders, epsilon, epsilon_at_orders, noise_multiplier_for, rdp_step};

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
}

impl DpSgd {
    /// ε after `steps` steps at sampling rate `q` (see [`epsilon`]).
    pub fn epsilon(&self, q: f64, steps: u64) -> f64 {
        epsilon(q, self.noise_multiplier, steps, self.delta).0
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
