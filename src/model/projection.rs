//! A fixed linear projection of a model's raw inputs (DP-PCA's principal components).

use super::ModelError;
use ndarray::{Array2, ArrayView2, linalg::general_mat_mul};
use serde::{Deserialize, Serialize};

/// A fixed linear map from `inputs` raw values to `outputs` values, `x ↦ x·P` with `P` of
/// shape `(inputs, outputs)`, row-major: the columns are the directions projected on (for
/// DP-PCA, the principal components of the training images, see
/// [`crate::dp::DpPca`]). Not a parameter: never trained, never aggregated.
///
/// ```
/// use hefl::model::InputProjection;
/// use ndarray::array;
///
/// // Two inputs onto their sum and their difference.
/// let p = InputProjection::new(2, 2, vec![1.0, 1.0, 1.0, -1.0])?;
/// assert_eq!(p.project(array![[3.0, 1.0]].view()), array![[4.0, 2.0]]);
/// # Ok::<(), hefl::model::ModelError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputProjection {
    inputs: usize,
    outputs: usize,
    matrix: Vec<f32>,
}

impl InputProjection {
    /// The projection by `matrix` (`inputs × outputs`, row-major); refused unless the
    /// length is `inputs · outputs` and both widths are at least 1.
    pub fn new(inputs: usize, outputs: usize, matrix: Vec<f32>) -> Result<Self, ModelError> {
        let expected = inputs.saturating_mul(outputs);
        if inputs == 0 || outputs == 0 || matrix.len() != expected {
            return Err(ModelError::ProjectionSize {
                inputs,
                outputs,
                expected,
                found: matrix.len(),
            });
        }
        Ok(Self {
            inputs,
            outputs,
            matrix,
        })
    }

    /// The raw input width.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// The projected width (the first layer's).
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// The matrix, `inputs × outputs` row-major.
    pub fn matrix(&self) -> &[f32] {
        &self.matrix
    }

    /// `x·P` for a batch `x` (rows are examples).
    ///
    /// Panics if `x` does not have `inputs` columns (callers check widths first:
    /// [`super::Mlp::try_evaluate`]).
    pub fn project(&self, x: ArrayView2<'_, f32>) -> Array2<f32> {
        assert_eq!(x.ncols(), self.inputs, "input width of the projection");
        let p = ArrayView2::from_shape((self.inputs, self.outputs), &self.matrix)
            .expect("length checked in new");
        let mut out = Array2::zeros((x.nrows(), self.outputs));
        general_mat_mul(1.0, &x, &p, 0.0, &mut out);
        out
    }
}
