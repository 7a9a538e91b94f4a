//! The multilayer perceptron that every party trains, and its optimizers.
//!
//! The model keeps all of its parameters in **one flat `Vec<f32>`**, because
//! federated aggregation (plain, encrypted or differentially private) works on
//! flat vectors: a gradient, a model delta and a parameter vector share one
//! layout, documented on [`Mlp`], and nothing has to be copied between a
//! "layered" and a "flat" view.
//!
//! A trained model is saved and loaded as a safetensors file ([`write_model`],
//! [`read_model`]; the format is documented in [`file`](mod@file) and, for users, in
//! `docs/formats.md#the-model-file`).
//!
//! This module knows nothing of parties, encryption or networks.
//!
//! ```
//! use hefl::model::{Mlp, Optimizer, OptimizerKind};
//! use ndarray::Array2;
//!
//! let mut mlp = Mlp::new(&[4, 8, 3], 7).unwrap();
//! let x = Array2::<f32>::ones((2, 4));
//! let (loss, grad) = mlp.loss_and_gradient(x.view(), &[0, 2]);
//! assert!(loss.is_finite());
//! let mut opt = Optimizer::new(OptimizerKind::Adam, 1e-3, mlp.num_params());
//! opt.step(mlp.params_mut(), &grad);
//! ```

mod activation;
mod average;
pub mod file;
mod optim;
mod projection;
mod schedule;

pub use activation::Activation;
pub use average::{Ema, EmaState};
pub use file::{
    MAX_MODEL_FILE_BYTES, MAX_MODEL_LAYERS, MAX_MODEL_PARAMS, MODEL_FORMAT, MODEL_FORMAT_VERSION,
    ModelFileError, ModelFormatError, model_from_bytes, model_to_bytes, read_model, write_model,
};
pub use optim::{Optimizer, OptimizerKind, OptimizerState, OptimizerStateError};
pub use projection::InputProjection;
pub use schedule::LrSchedule;

use ndarray::{
    Array2, ArrayView1, ArrayView2, ArrayViewMut2, Axis, CowArray, Ix2, linalg::general_mat_mul,
};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

/// The default architecture: 784 inputs, one hidden layer of 128 ReLU units, 10 classes.
pub const DEFAULT_LAYERS: [usize; 3] = [784, 128, 10];

/// Why a model could not be built or a parameter vector not accepted.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ModelError {
    /// Fewer than two layer sizes, or a zero-width layer.
    #[error("an MLP needs at least an input and an output layer, all of width >= 1; got {0:?}")]
    BadLayers(Vec<usize>),
    /// A flat parameter vector of the wrong length.
    #[error("parameter vector has {found} values, this {layers:?} MLP has {expected}")]
    WrongLength {
        /// The architecture.
        layers: Vec<usize>,
        /// Its parameter count.
        expected: usize,
        /// What was offered.
        found: usize,
    },
    /// Inputs of another width than the model's first layer.
    #[error("the model takes {inputs} inputs per example, the data has {found}")]
    WrongInputWidth {
        /// The first layer's width.
        inputs: usize,
        /// The data's.
        found: usize,
    },
    /// Not one label per example.
    #[error("{examples} examples but {labels} labels")]
    LabelCount {
        /// Examples (rows) in the data.
        examples: usize,
        /// Labels given.
        labels: usize,
    },
    /// An input projection that does not fit the first layer.
    #[error("an input projection to {outputs} values, the model's first layer takes {inputs}")]
    ProjectionMismatch {
        /// The projection's output width.
        outputs: usize,
        /// The first layer's width.
        inputs: usize,
    },
    /// A projection matrix of another size than its widths imply.
    #[error("a projection from {inputs} to {outputs} values has {expected} entries, got {found}")]
    ProjectionSize {
        /// Raw input width.
        inputs: usize,
        /// Projected width.
        outputs: usize,
        /// inputs x outputs.
        expected: usize,
        /// What was offered.
        found: usize,
    },
    /// A label that is not one of the model's classes.
    #[error("label {label} is not one of the model's {classes} classes")]
    LabelOutOfRange {
        /// The first such label.
        label: u8,
        /// The last layer's width.
        classes: usize,
    },
}

/// A fully connected network with ReLU (or tanh: [`Activation`]) hidden layers and a
/// softmax output, trained with cross-entropy; optionally behind a fixed
/// [`InputProjection`] of its raw inputs (DP-PCA's principal components), which is not a
/// parameter.
///
/// # Parameter layout
///
/// For each layer `l` (from the input), the weight matrix `W_l` of shape
/// `(fan_in, fan_out)` in row-major order, then the bias `b_l` of length
/// `fan_out`. The forward pass computes `h_{l+1} = act(h_l W_l + b_l)` (no
/// activation on the last layer), `h_0` being the input (projected, with a projection). For
/// the default 784-128-10 network that is 784*128 + 128 + 128*10 + 10 = 101,770 values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mlp {
    layers: Vec<usize>,
    params: Vec<f32>,
    /// The hidden layers' activation (absent from older serializations: ReLU).
    #[serde(default)]
    activation: Activation,
    /// A fixed projection of the raw inputs onto the first layer's inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    projection: Option<InputProjection>,
}

/// Where one layer's weights and bias sit in the flat vector.
#[derive(Clone, Copy, Debug)]
struct LayerSpan {
    fan_in: usize,
    fan_out: usize,
    weights: usize,
    bias: usize,
}

impl LayerSpan {
    fn end(&self) -> usize {
        self.bias + self.fan_out
    }
}

fn spans(layers: &[usize]) -> Vec<LayerSpan> {
    let mut offset = 0;
    layers
        .windows(2)
        .map(|w| {
            let span = LayerSpan {
                fan_in: w[0],
                fan_out: w[1],
                weights: offset,
                bias: offset + w[0] * w[1],
            };
            offset = span.end();
            span
        })
        .collect()
}

/// Number of parameters of an MLP with these layer sizes.
///
/// ```
/// assert_eq!(hefl::model::param_count(&hefl::model::DEFAULT_LAYERS), 101_770);
/// ```
pub fn param_count(layers: &[usize]) -> usize {
    spans(layers).last().map_or(0, LayerSpan::end)
}

impl Mlp {
    /// A ReLU network with the given layer sizes (input first, classes last), weights
    /// drawn with He initialisation (normal, variance 2 / fan_in) from `seed` and
    /// zero biases. The same seed gives the same network on every machine.
    pub fn new(layers: &[usize], seed: u64) -> Result<Self, ModelError> {
        Self::with_activation(layers, Activation::Relu, seed)
    }

    /// A network with the given layer sizes and hidden activation, its weights drawn from
    /// `seed` with the activation's initialisation ([`Activation::Relu`]: He, as
    /// [`Mlp::new`]; [`Activation::Tanh`]: LeCun, variance 1 / fan_in), zero biases.
    ///
    /// ```
    /// use hefl::model::{Activation, Mlp};
    ///
    /// let relu = Mlp::with_activation(&[4, 3], Activation::Relu, 1)?;
    /// assert_eq!(relu, Mlp::new(&[4, 3], 1)?);
    /// let tanh = Mlp::with_activation(&[4, 3], Activation::Tanh, 1)?;
    /// assert_eq!(tanh.activation(), Activation::Tanh);
    /// # Ok::<(), hefl::model::ModelError>(())
    /// ```
    pub fn with_activation(
        layers: &[usize],
        activation: Activation,
        seed: u64,
    ) -> Result<Self, ModelError> {
        if layers.len() < 2 || layers.contains(&0) {
            return Err(ModelError::BadLayers(layers.to_vec()));
        }
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut params = vec![0.0f32; param_count(layers)];
        for span in spans(layers) {
            let std = activation.init_variance(span.fan_in).sqrt();
            let normal = Normal::new(0.0f32, std).expect("init std is finite and positive");
            for w in &mut params[span.weights..span.bias] {
                *w = normal.sample(&mut rng);
            }
        }
        Ok(Self {
            layers: layers.to_vec(),
            params,
            activation,
            projection: None,
        })
    }

    /// This network with its hidden activation set to `activation` (parameters kept).
    pub fn set_activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// This network behind `projection` (parameters kept): raw inputs are projected before
    /// the first layer. Refused unless the projection's output width is the first layer's.
    ///
    /// ```
    /// use hefl::model::{InputProjection, Mlp, ModelError};
    /// use ndarray::Array2;
    ///
    /// // Keep the first two of four raw inputs.
    /// let p = InputProjection::new(4, 2, vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0])?;
    /// let mlp = Mlp::new(&[2, 3], 1)?.set_projection(Some(p))?;
    /// assert_eq!(mlp.input_width(), 4);
    /// assert_eq!(mlp.logits(Array2::ones((5, 4)).view()).dim(), (5, 3));
    /// let p = InputProjection::new(4, 3, vec![0.0; 12])?;
    /// assert!(matches!(
    ///     Mlp::new(&[2, 3], 1)?.set_projection(Some(p)),
    ///     Err(ModelError::ProjectionMismatch { outputs: 3, inputs: 2 })
    /// ));
    /// # Ok::<(), ModelError>(())
    /// ```
    pub fn set_projection(
        mut self,
        projection: Option<InputProjection>,
    ) -> Result<Self, ModelError> {
        if let Some(p) = &projection
            && p.outputs() != self.layers[0]
        {
            return Err(ModelError::ProjectionMismatch {
                outputs: p.outputs(),
                inputs: self.layers[0],
            });
        }
        self.projection = projection;
        Ok(self)
    }

    /// The hidden layers' activation.
    pub fn activation(&self) -> Activation {
        self.activation
    }

    /// The fixed input projection, if the model has one.
    pub fn projection(&self) -> Option<&InputProjection> {
        self.projection.as_ref()
    }

    /// The width of the raw inputs the model takes: the projection's input width, else the
    /// first layer's.
    pub fn input_width(&self) -> usize {
        self.projection
            .as_ref()
            .map_or(self.layers[0], InputProjection::inputs)
    }

    /// `x` projected as the first layer expects it (borrowed unchanged without a projection).
    fn projected<'a>(&self, x: ArrayView2<'a, f32>) -> CowArray<'a, f32, Ix2> {
        match &self.projection {
            None => CowArray::from(x),
            Some(p) => CowArray::from(p.project(x)),
        }
    }

    /// A network with the given layer sizes and parameters (in the flat layout of the type
    /// docs), e.g. a run's final parameters or a model read from a file.
    ///
    /// ```
    /// use hefl::model::{Mlp, ModelError};
    ///
    /// let mlp = Mlp::from_params(&[3, 2], vec![0.5; 8])?;
    /// assert_eq!(mlp.params(), &[0.5; 8]);
    /// assert!(matches!(
    ///     Mlp::from_params(&[3, 2], vec![0.5; 7]),
    ///     Err(ModelError::WrongLength { expected: 8, found: 7, .. })
    /// ));
    /// # Ok::<(), ModelError>(())
    /// ```
    pub fn from_params(layers: &[usize], params: Vec<f32>) -> Result<Self, ModelError> {
        if layers.len() < 2 || layers.contains(&0) {
            return Err(ModelError::BadLayers(layers.to_vec()));
        }
        let expected = param_count(layers);
        if params.len() != expected {
            return Err(ModelError::WrongLength {
                layers: layers.to_vec(),
                expected,
                found: params.len(),
            });
        }
        Ok(Self {
            layers: layers.to_vec(),
            params,
            activation: Activation::Relu,
            projection: None,
        })
    }

    /// Layer sizes, input first.
    pub fn layers(&self) -> &[usize] {
        &self.layers
    }

    /// Total number of parameters (the length of every flat vector of this model).
    pub fn num_params(&self) -> usize {
        self.params.len()
    }

    /// The flat parameter vector (layout in the type docs).
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// The flat parameter vector, for optimizers and aggregation.
    pub fn params_mut(&mut self) -> &mut [f32] {
        &mut self.params
    }

    /// Replaces all parameters; the length must match.
    pub fn set_params(&mut self, params: &[f32]) -> Result<(), ModelError> {
        if params.len() != self.params.len() {
            return Err(ModelError::WrongLength {
                layers: self.layers.clone(),
                expected: self.params.len(),
                found: params.len(),
            });
        }
        self.params.copy_from_slice(params);
        Ok(())
    }

    fn weights(&self, span: &LayerSpan) -> ArrayView2<'_, f32> {
        ArrayView2::from_shape(
            (span.fan_in, span.fan_out),
            &self.params[span.weights..span.bias],
        )
        .expect("span matches layer shape")
    }

    fn bias(&self, span: &LayerSpan) -> ArrayView1<'_, f32> {
        ArrayView1::from(&self.params[span.bias..span.end()])
    }

    /// Pre-activations of every layer for a batch of (projected) inputs (rows are
    /// examples); the last entry is the logits. Hidden activations are the activation of the
    /// entries before it.
    fn forward_all(&self, x: ArrayView2<'_, f32>) -> Vec<Array2<f32>> {
        assert_eq!(
            x.ncols(),
            self.layers[0],
            "input width must match the first layer"
        );
        let spans = spans(&self.layers);
        let mut outs: Vec<Array2<f32>> = Vec::with_capacity(spans.len());
        for (i, span) in spans.iter().enumerate() {
            let mut z = Array2::<f32>::zeros((x.nrows(), span.fan_out));
            z += &self.bias(span);
            match outs.last() {
                None => general_mat_mul(1.0, &x, &self.weights(span), 1.0, &mut z),
                Some(prev) => {
                    let h = self.activate(prev);
                    general_mat_mul(1.0, &h, &self.weights(span), 1.0, &mut z)
                }
            }
            debug_assert_eq!(outs.len(), i);
            outs.push(z);
        }
        outs
    }

    /// The activation of every entry of a pre-activation.
    fn activate(&self, z: &Array2<f32>) -> Array2<f32> {
        match self.activation {
            // The function itself, not `apply` through a match per value: the ReLU model's
            // arithmetic stays as it always was.
            Activation::Relu => z.mapv(relu),
            Activation::Tanh => z.mapv(f32::tanh),
        }
    }

    /// Logits for a batch of raw inputs (rows are examples; projected first if the model
    /// has a projection).
    pub fn logits(&self, x: ArrayView2<'_, f32>) -> Array2<f32> {
        let x = self.projected(x);
        self.forward_all(x.view())
            .pop()
            .expect("an MLP has at least one layer")
    }

    /// Mean cross-entropy loss and the gradient of that mean with respect to
    /// every parameter, as a flat vector in the parameter layout.
    ///
    /// Panics if `labels.len()` differs from the batch size or a label is not a
    /// valid class; both come from validated datasets, not from peers.
    pub fn loss_and_gradient(&self, x: ArrayView2<'_, f32>, labels: &[u8]) -> (f32, Vec<f32>) {
        let mut grad = vec![0.0f32; self.params.len()];
        let loss = self.loss_and_gradient_into(x, labels, &mut grad);
        (loss, grad)
    }

    /// As [`Mlp::loss_and_gradient`], writing the gradient into `grad`
    /// (overwritten, not accumulated) to avoid an allocation per step.
    pub fn loss_and_gradient_into(
        &self,
        x: ArrayView2<'_, f32>,
        labels: &[u8],
        grad: &mut [f32],
    ) -> f32 {
        assert_eq!(grad.len(), self.params.len(), "gradient buffer length");
        let x = self.projected(x);
        let x = x.view();
        let backward = self.backward(x, labels);
        self.write_gradient(x, &backward, grad);
        backward.loss
    }

    /// DP-SGD's gradient: the **sum** over the batch of each example's gradient clipped
    /// to L2 norm at most `max_norm` (`g_b · min(1, C / (‖g_b‖ + 1e-6))`, as Opacus
    /// clips), written into `grad`. Returns the mean loss and each example's gradient
    /// norm before clipping.
    ///
    /// No per-example backward pass: for a dense layer the example's weight gradient is
    /// the outer product of its input `a_b` and output delta `δ_b`, so its squared norm
    /// is `‖a_b‖²·‖δ_b‖²` (plus `‖δ_b‖²` for the bias), and the clipped sum is
    /// `aᵀ·diag(c)·δ`: one batched backward pass and the same matrix products as plain SGD.
    ///
    /// ```
    /// use hefl::model::Mlp;
    /// use ndarray::Array2;
    ///
    /// let mlp = Mlp::new(&[4, 3, 2], 1)?;
    /// let x = Array2::from_shape_fn((5, 4), |(i, j)| (i * 4 + j) as f32 / 10.0);
    /// let mut grad = vec![0.0; mlp.num_params()];
    /// let clipped = mlp.clipped_gradient_sum_into(x.view(), &[0, 1, 0, 1, 1], 0.5, &mut grad);
    /// assert_eq!(clipped.norms.len(), 5);
    /// let norm = grad.iter().map(|g| g * g).sum::<f32>().sqrt();
    /// assert!(norm <= 5.0 * 0.5 + 1e-4); // a sum of five vectors of norm <= 0.5
    /// # Ok::<(), hefl::model::ModelError>(())
    /// ```
    pub fn clipped_gradient_sum_into(
        &self,
        x: ArrayView2<'_, f32>,
        labels: &[u8],
        max_norm: f32,
        grad: &mut [f32],
    ) -> ClippedBatch {
        assert_eq!(grad.len(), self.params.len(), "gradient buffer length");
        let x = self.projected(x);
        let x = x.view();
        let mut backward = self.backward(x, labels);
        let batch = x.nrows();
        // The deltas are those of the mean loss: each example's own is `batch` times larger.
        let scale = batch as f32;
        let mut sq_norms = vec![0.0f32; batch];
        for (l, delta) in backward.deltas.iter().enumerate() {
            let input = layer_input(x, &backward.hidden, l);
            for (b, sq) in sq_norms.iter_mut().enumerate() {
                let a2: f32 = input.row(b).iter().map(|v| v * v).sum();
                let d2: f32 = delta.row(b).iter().map(|v| v * v).sum();
                *sq += (a2 + 1.0) * d2 * scale * scale;
            }
        }
        let norms: Vec<f32> = sq_norms.iter().map(|s| s.sqrt()).collect();
        for delta in &mut backward.deltas {
            for (mut row, norm) in delta.rows_mut().into_iter().zip(&norms) {
                let factor = (max_norm / (norm + 1e-6)).min(1.0) * scale;
                row.mapv_inplace(|v| v * factor);
            }
        }
        self.write_gradient(x, &backward, grad);
        ClippedBatch {
            loss: backward.loss,
            norms,
        }
    }

    /// One forward and one backward pass on (projected) inputs: the mean loss, the hidden
    /// activations and every layer's output delta (for the mean loss).
    fn backward(&self, x: ArrayView2<'_, f32>, labels: &[u8]) -> Backward {
        let batch = x.nrows();
        assert_eq!(labels.len(), batch, "one label per example");
        let spans = spans(&self.layers);
        let mut pre = self.forward_all(x);
        let logits = pre.pop().expect("an MLP has at least one layer");
        let (loss, mut delta) = softmax_cross_entropy(logits, labels);
        let hidden: Vec<Array2<f32>> = pre.iter().map(|z| self.activate(z)).collect();
        let mut deltas = Vec::with_capacity(spans.len());
        for (l, span) in spans.iter().enumerate().rev() {
            let next = (l > 0).then(|| {
                let mut back = Array2::<f32>::zeros((batch, span.fan_in));
                general_mat_mul(1.0, &delta, &self.weights(span).t(), 0.0, &mut back);
                match self.activation {
                    Activation::Relu => back.zip_mut_with(&pre[l - 1], |d, &z| {
                        if z <= 0.0 {
                            *d = 0.0;
                        }
                    }),
                    Activation::Tanh => back.zip_mut_with(&hidden[l - 1], |d, &h| {
                        *d *= 1.0 - h * h;
                    }),
                }
                back
            });
            deltas.push(delta);
            match next {
                Some(back) => delta = back,
                None => break,
            }
        }
        deltas.reverse();
        Backward {
            loss,
            hidden,
            deltas,
        }
    }

    /// `grad` = for every layer, input activations transposed times delta, and the
    /// column sums of delta.
    fn write_gradient(&self, x: ArrayView2<'_, f32>, backward: &Backward, grad: &mut [f32]) {
        for (l, span) in spans(&self.layers).iter().enumerate() {
            let delta = &backward.deltas[l];
            let (gw, gb) = grad[span.weights..span.end()].split_at_mut(span.fan_in * span.fan_out);
            let mut gw = ArrayViewMut2::from_shape((span.fan_in, span.fan_out), gw)
                .expect("span matches layer shape");
            let input = layer_input(x, &backward.hidden, l);
            general_mat_mul(1.0, &input.t(), delta, 0.0, &mut gw);
            gb.copy_from_slice(
                delta
                    .sum_axis(Axis(0))
                    .as_slice()
                    .expect("fresh array is contiguous"),
            );
        }
    }

    /// [`Mlp::evaluate`] for a model and data that may not fit each other (a model read from a
    /// file): refuses inputs of another width than the first layer and labels that are not
    /// one of the last layer's classes, instead of panicking.
    ///
    /// ```
    /// use hefl::model::{Mlp, ModelError};
    /// use ndarray::Array2;
    ///
    /// let mlp = Mlp::new(&[4, 3], 1)?;
    /// assert!(mlp.try_evaluate(Array2::zeros((2, 4)).view(), &[0, 2]).is_ok());
    /// assert_eq!(
    ///     mlp.try_evaluate(Array2::zeros((2, 5)).view(), &[0, 2]),
    ///     Err(ModelError::WrongInputWidth { inputs: 4, found: 5 })
    /// );
    /// assert_eq!(
    ///     mlp.try_evaluate(Array2::zeros((2, 4)).view(), &[0, 3]),
    ///     Err(ModelError::LabelOutOfRange { label: 3, classes: 3 })
    /// );
    /// # Ok::<(), ModelError>(())
    /// ```
    pub fn try_evaluate(
        &self,
        x: ArrayView2<'_, f32>,
        labels: &[u8],
    ) -> Result<Evaluation, ModelError> {
        let (inputs, classes) = (self.input_width(), self.layers[self.layers.len() - 1]);
        if x.ncols() != inputs {
            return Err(ModelError::WrongInputWidth {
                inputs,
                found: x.ncols(),
            });
        }
        if x.nrows() != labels.len() {
            return Err(ModelError::LabelCount {
                examples: x.nrows(),
                labels: labels.len(),
            });
        }
        if let Some(&label) = labels.iter().find(|&&l| usize::from(l) >= classes) {
            return Err(ModelError::LabelOutOfRange { label, classes });
        }
        Ok(self.evaluate(x, labels))
    }

    /// Mean cross-entropy loss and accuracy (fraction in 0..=1) over a dataset,
    /// evaluated in chunks so memory stays small.
    pub fn evaluate(&self, x: ArrayView2<'_, f32>, labels: &[u8]) -> Evaluation {
        const CHUNK: usize = 2000;
        let n = x.nrows();
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        for start in (0..n).step_by(CHUNK) {
            let end = (start + CHUNK).min(n);
            let logits = self.logits(x.slice(ndarray::s![start..end, ..]));
            for (row, &label) in logits.rows().into_iter().zip(&labels[start..end]) {
                let (argmax, lse) = argmax_and_logsumexp(row);
                loss_sum += f64::from(lse - row[usize::from(label)]);
                correct += usize::from(argmax == usize::from(label));
            }
        }
        Evaluation {
            loss: if n == 0 { 0.0 } else { loss_sum / n as f64 },
            accuracy: if n == 0 {
                0.0
            } else {
                correct as f64 / n as f64
            },
        }
    }
}

/// What [`Mlp::clipped_gradient_sum_into`] reports besides the gradient.
#[derive(Clone, Debug, PartialEq)]
pub struct ClippedBatch {
    /// Mean cross-entropy loss of the batch.
    pub loss: f32,
    /// Each example's gradient norm before clipping.
    pub norms: Vec<f32>,
}

/// A batch's backward pass.
struct Backward {
    loss: f32,
    /// The activation of each hidden layer's pre-activation: the input of layers 1, 2, ...
    hidden: Vec<Array2<f32>>,
    /// Each layer's output delta for the mean loss.
    deltas: Vec<Array2<f32>>,
}

/// The input of layer `l`: the batch itself for the first layer, else a hidden activation.
fn layer_input<'a>(
    x: ArrayView2<'a, f32>,
    hidden: &'a [Array2<f32>],
    l: usize,
) -> ArrayView2<'a, f32> {
    match l {
        0 => x,
        _ => hidden[l - 1].view(),
    }
}

/// Test-set quality of a model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Fraction of examples classified correctly, in 0..=1.
    pub accuracy: f64,
}

fn relu(z: f32) -> f32 {
    z.max(0.0)
}

fn argmax_and_logsumexp(row: ArrayView1<'_, f32>) -> (usize, f32) {
    let (mut best, mut max) = (0, f32::NEG_INFINITY);
    for (i, &v) in row.iter().enumerate() {
        if v > max {
            (best, max) = (i, v);
        }
    }
    let sum: f32 = row.iter().map(|&v| (v - max).exp()).sum();
    (best, max + sum.ln())
}

/// Mean cross-entropy of softmax(logits), and its gradient with respect to the
/// logits, (softmax - onehot) / batch, computed in place.
fn softmax_cross_entropy(mut logits: Array2<f32>, labels: &[u8]) -> (f32, Array2<f32>) {
    let batch = logits.nrows().max(1) as f32;
    let mut loss = 0.0f32;
    for (mut row, &label) in logits.rows_mut().into_iter().zip(labels) {
        let (_, lse) = argmax_and_logsumexp(row.view());
        let label = usize::from(label);
        assert!(
            label < row.len(),
            "label {label} outside {} classes",
            row.len()
        );
        loss += lse - row[label];
        row.mapv_inplace(|v| (v - lse).exp() / batch);
        row[label] -= 1.0 / batch;
    }
    (loss / batch, logits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn random_batch(n: usize, d: usize, classes: usize, seed: u64) -> (Array2<f32>, Vec<u8>) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let x = Array2::from_shape_fn((n, d), |_| rng.random_range(-1.0f32..1.0));
        let y = (0..n).map(|_| rng.random_range(0..classes) as u8).collect();
        (x, y)
    }

    #[test]
    fn default_has_101770_params() {
        let mlp = Mlp::new(&DEFAULT_LAYERS, 0).unwrap();
        assert_eq!(mlp.num_params(), 101_770);
    }

    #[test]
    fn rejects_bad_layers() {
        assert!(matches!(Mlp::new(&[784], 0), Err(ModelError::BadLayers(_))));
        assert!(matches!(
            Mlp::new(&[784, 0, 10], 0),
            Err(ModelError::BadLayers(_))
        ));
    }

    #[test]
    fn same_seed_same_model_other_seed_differs() {
        let a = Mlp::new(&[10, 5, 3], 1).unwrap();
        assert_eq!(a, Mlp::new(&[10, 5, 3], 1).unwrap());
        assert_ne!(a, Mlp::new(&[10, 5, 3], 2).unwrap());
    }

    #[test]
    fn set_params_checks_length() {
        let mut a = Mlp::new(&[3, 2], 1).unwrap();
        assert!(matches!(
            a.set_params(&[0.0; 7]),
            Err(ModelError::WrongLength {
                expected: 8,
                found: 7,
                ..
            })
        ));
        a.set_params(&[0.5; 8]).unwrap();
        assert_eq!(a.params(), &[0.5; 8]);
    }

    /// Central finite differences in f64-free form: the MLP is f32, so use a
    /// step that balances truncation and rounding error and compare with a
    /// relative tolerance on every parameter of a small network with two
    /// hidden layers.
    #[test]
    fn gradient_matches_finite_differences() {
        for activation in Activation::ALL {
            gradient_matches_finite_differences_with(activation, None);
        }
        // Behind a projection the gradient is that of the projected inputs.
        let projection = InputProjection::new(
            8,
            6,
            (0..48)
                .map(|i| ((i * 7) % 11) as f32 / 11.0 - 0.5)
                .collect(),
        )
        .unwrap();
        gradient_matches_finite_differences_with(Activation::Tanh, Some(projection));
    }

    fn gradient_matches_finite_differences_with(
        activation: Activation,
        projection: Option<InputProjection>,
    ) {
        let layers = [6, 5, 4, 3];
        let inputs = projection.as_ref().map_or(6, InputProjection::inputs);
        let mut mlp = Mlp::with_activation(&layers, activation, 3)
            .unwrap()
            .set_projection(projection)
            .unwrap();
        // Move biases off zero so every ReLU is well inside one side.
        for (i, p) in mlp.params_mut().iter_mut().enumerate() {
            *p += 0.01 * ((i % 7) as f32 - 3.0);
        }
        let (x, y) = random_batch(5, inputs, 3, 9);
        let (_, grad) = mlp.loss_and_gradient(x.view(), &y);
        let h = 1e-2f32;
        let mut worst = 0.0f32;
        for (i, &analytic) in grad.iter().enumerate() {
            let orig = mlp.params()[i];
            mlp.params_mut()[i] = orig + h;
            let plus = mlp.loss_and_gradient(x.view(), &y).0;
            mlp.params_mut()[i] = orig - h;
            let minus = mlp.loss_and_gradient(x.view(), &y).0;
            mlp.params_mut()[i] = orig;
            let numeric = (plus - minus) / (2.0 * h);
            let err = (numeric - analytic).abs() / (numeric.abs() + analytic.abs()).max(1e-2);
            worst = worst.max(err);
        }
        assert!(
            worst < 2e-2,
            "{activation}: worst relative gradient error {worst}"
        );
        // The clipped sum with a bound no example reaches is the batch's summed gradient.
        let mut clipped = vec![0.0; mlp.num_params()];
        mlp.clipped_gradient_sum_into(x.view(), &y, 1e6, &mut clipped);
        for (c, g) in clipped.iter().zip(&grad) {
            assert!(
                (c - 5.0 * g).abs() < 1e-4,
                "{activation}: {c} against {}",
                5.0 * g
            );
        }
    }

    #[test]
    fn tanh_clipped_norms_are_the_per_example_gradient_norms() {
        let (x, y) = random_batch(4, 6, 3, 2);
        let mlp = Mlp::with_activation(&[6, 5, 3], Activation::Tanh, 4).unwrap();
        let mut sum = vec![0.0; mlp.num_params()];
        let clipped = mlp.clipped_gradient_sum_into(x.view(), &y, 1e6, &mut sum);
        for (b, norm) in clipped.norms.iter().enumerate() {
            let one = x.slice(ndarray::s![b..b + 1, ..]);
            let (_, g) = mlp.loss_and_gradient(one, &y[b..b + 1]);
            let expected = g.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!(
                (norm - expected).abs() < 1e-4 * expected.max(1.0),
                "{norm} {expected}"
            );
        }
    }

    #[test]
    fn loss_matches_evaluate_and_training_lowers_it() {
        let (x, y) = random_batch(64, 20, 4, 5);
        let mut mlp = Mlp::new(&[20, 16, 4], 5).unwrap();
        let before = mlp.evaluate(x.view(), &y);
        let (loss, _) = mlp.loss_and_gradient(x.view(), &y);
        assert!((f64::from(loss) - before.loss).abs() < 1e-4);
        let mut opt = Optimizer::new(OptimizerKind::Adam, 1e-2, mlp.num_params());
        for _ in 0..200 {
            let (_, g) = mlp.loss_and_gradient(x.view(), &y);
            opt.step(mlp.params_mut(), &g);
        }
        let after = mlp.evaluate(x.view(), &y);
        assert!(after.loss < before.loss * 0.5, "{before:?} -> {after:?}");
        assert!(after.accuracy > 0.9, "memorising 64 points: {after:?}");
    }
}
