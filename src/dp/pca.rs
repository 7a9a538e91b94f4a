//! DP-PCA (Abadi et al. 2016, Section 4): the principal components of the training images,
//! computed from a covariance released with Gaussian noise, as a fixed projection of the
//! model's inputs.
//!
//! Every image is scaled to L2 norm 1, so adding or removing one changes the (uncentred)
//! covariance `Σ x̂ x̂ᵀ` by a matrix of Frobenius norm 1; its upper triangle (the diagonal
//! included), which determines it, changes by at most that in L2 norm. Releasing the upper
//! triangle with N(0, σ_p²) noise on every entry is therefore the Gaussian mechanism with
//! noise multiplier σ_p, applied once to the whole data set ([`DpPca::mechanism`]); the
//! accountant composes it with DP-SGD's steps ([`super::DpSgd::epsilon`]). The projection on
//! the top eigenvectors of the noisy matrix is post-processing. In a federation every party
//! releases its own shard's noisy covariance, as it adds its own noise to its gradients, and
//! all use the top eigenvectors of their sum.

use super::SampledGaussian;
use crate::model::{InputProjection, ModelError};
use ndarray::{Array2, ArrayView2, linalg::general_mat_mul};
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

/// Most principal components a projection may keep (MNIST has 784 pixels).
pub const MAX_PCA_COMPONENTS: usize = 784;

/// DP-PCA's settings: how many principal components the inputs are projected on, and the
/// noise of the covariance release.
///
/// Abadi et al. used 60 components, with σ_p = 16, 7 and 4 for their ε = 0.5, 2 and 8
/// settings. The release costs little ε when σ_p is large against DP-SGD's effective noise:
/// at ε = 2 (δ = 10⁻⁵), σ_p = 8 adds about 0.1 to DP-SGD's ε.
///
/// ```
/// use hefl::dp::{Accountant, DpPca};
///
/// let pca = DpPca { components: 60, noise_multiplier: 8.0 };
/// let alone = pca.epsilon(Accountant::Pld, 1e-5);
/// assert!(alone > 0.4 && alone < 0.6, "{alone}");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DpPca {
    /// k: the principal components kept (the model's first layer takes k inputs).
    pub components: usize,
    /// σ_p: the noise of the covariance release, a multiple of its sensitivity 1.
    pub noise_multiplier: f64,
}

impl DpPca {
    /// The release as the accountant sees it: one Gaussian mechanism on all the data.
    pub fn mechanism(&self) -> SampledGaussian {
        SampledGaussian {
            q: 1.0,
            sigma: self.noise_multiplier,
            steps: 1,
        }
    }

    /// ε of the release alone at `delta` (what it would cost without training).
    pub fn epsilon(&self, accountant: super::Accountant, delta: f64) -> f64 {
        accountant.epsilon_composed(&[self.mechanism()], delta)
    }
}

/// The upper triangle of `Σ x̂ x̂ᵀ` over the rows x of `images` scaled to norm 1 (rows of
/// zeros left out), with N(0, `sigma`²) noise added to every entry of the upper triangle
/// (the diagonal included) and mirrored below it: a `d × d` row-major matrix, d the width
/// of the images. Pass a [`crate::he::csprng::SecureRng`] for real runs.
///
/// ```
/// use hefl::dp::noisy_covariance;
/// use hefl::he::csprng::SecureRng;
/// use ndarray::array;
///
/// let images = array![[3.0f32, 4.0], [0.0, 2.0]];
/// let cov = noisy_covariance(images.view(), 0.0, &mut SecureRng::from_key(1));
/// let expected = [0.36 + 0.0, 0.48, 0.48, 0.64 + 1.0];
/// assert!(cov.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-6), "{cov:?}");
/// let noisy = noisy_covariance(images.view(), 1.0, &mut SecureRng::from_key(1));
/// assert_eq!(noisy[1], noisy[2]); // symmetric
/// ```
pub fn noisy_covariance<R: rand::Rng + ?Sized>(
    images: ArrayView2<'_, f32>,
    sigma: f64,
    rng: &mut R,
) -> Vec<f64> {
    let d = images.ncols();
    let mut normalized = images.to_owned();
    for mut row in normalized.rows_mut() {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.mapv_inplace(|v| v / norm);
        }
    }
    let mut cov = Array2::<f32>::zeros((d, d));
    general_mat_mul(1.0, &normalized.t(), &normalized, 0.0, &mut cov);
    let mut out: Vec<f64> = cov.iter().map(|&v| f64::from(v)).collect();
    for i in 0..d {
        for j in i..d {
            let z: f64 = StandardNormal.sample(rng);
            // The product is symmetric up to rounding: take the upper entry for both.
            let value = out[i * d + j] + sigma * z;
            out[i * d + j] = value;
            out[j * d + i] = value;
        }
    }
    out
}

/// The projection on the `components` eigenvectors of the symmetric `d × d` matrix
/// `matrix` (row-major) with the largest eigenvalues, largest first; each eigenvector's
/// sign is fixed so that its largest-magnitude entry is positive.
///
/// ```
/// use hefl::dp::principal_components;
///
/// // Eigenvalues 3 (along (1, 1)) and 1 (along (1, -1)).
/// let p = principal_components(&[2.0, 1.0, 1.0, 2.0], 2, 1)?;
/// let h = std::f32::consts::FRAC_1_SQRT_2;
/// assert!((p.matrix()[0] - h).abs() < 1e-6 && (p.matrix()[1] - h).abs() < 1e-6);
/// # Ok::<(), hefl::model::ModelError>(())
/// ```
pub fn principal_components(
    matrix: &[f64],
    d: usize,
    components: usize,
) -> Result<InputProjection, ModelError> {
    if components == 0 || components > d || matrix.len() != d * d {
        return Err(ModelError::ProjectionSize {
            inputs: d,
            outputs: components,
            expected: d * d,
            found: matrix.len(),
        });
    }
    let eigen = nalgebra::DMatrix::from_row_slice(d, d, matrix).symmetric_eigen();
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| eigen.eigenvalues[b].total_cmp(&eigen.eigenvalues[a]));
    let mut projection = vec![0.0f32; d * components];
    for (c, &index) in order.iter().take(components).enumerate() {
        let vector = eigen.eigenvectors.column(index);
        let largest =
            vector.iter().copied().fold(
                0.0f64,
                |best, v| if v.abs() > best.abs() { v } else { best },
            );
        let sign = if largest < 0.0 { -1.0 } else { 1.0 };
        for (i, v) in vector.iter().enumerate() {
            projection[i * components + c] = (sign * v) as f32;
        }
    }
    InputProjection::new(d, components, projection)
}
