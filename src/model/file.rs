//! An [`Mlp`] saved as a [safetensors](https://huggingface.co/docs/safetensors) file, so that
//! a trained model outlives its run and loads in Python without hefl.
//!
//! # Format
//!
//! A safetensors file (8-byte little-endian header length, JSON header, raw tensor data)
//! holding, for every layer `i` from the input (`i = 0 .. layers.len() - 2`), two
//! little-endian `F32` tensors:
//!
//! | tensor            | shape         | holds                                             |
//! |-------------------|---------------|---------------------------------------------------|
//! | `layer{i}.weight` | `[out, in]`   | `W_i` transposed: row `o` holds the weights into output unit `o` |
//! | `layer{i}.bias`   | `[out]`       | `b_i`                                             |
//!
//! where `in = layers[i]` and `out = layers[i + 1]`. The weight's shape is PyTorch's
//! `nn.Linear.weight` convention, so layer `i` computes `h @ weight.T + bias`, followed by the
//! `activation` (ReLU or tanh) on every layer but the last (whose outputs are the logits of a
//! softmax). In the flat parameter vector of [`Mlp`] the same matrix sits as `[in, out]`,
//! row-major: the file transposes it.
//!
//! A model with a fixed input projection (DP-PCA, [`super::InputProjection`]) has one more
//! tensor, `projection.weight` of shape `[layers[0], input_width]`, and the raw input `x`
//! first becomes `x @ projection.weight.T` (no bias, no activation). No other tensor is
//! allowed.
//!
//! The header's `__metadata__` (strings only, as safetensors requires) holds:
//!
//! | key              | value                                   | checked on read |
//! |------------------|-----------------------------------------|-----------------|
//! | `format`         | `hefl-mlp` ([`MODEL_FORMAT`])            | must match      |
//! | `format_version` | `1`, or `2` ([`MODEL_FORMAT_VERSION`]) for a model with tanh or a projection | must be one of them |
//! | `layers`         | layer widths, input first: `784,128,10` | shapes follow from it |
//! | `activation`     | `relu` or `tanh` (hidden layers)        | must be one of them; absent: `relu` (version 1 only) |
//! | `input_width`    | raw input width of `projection.weight`: `784` (version 2, with a projection only) | its shape follows from it |
//! | `hefl_version`   | the writing hefl's version              | no              |
//!
//! A ReLU model without a projection is written as version 1, byte-compatible with what
//! hefl wrote before version 2 existed, so older readers still read it; anything else is
//! version 2, which older readers refuse instead of computing it with the wrong activation.
//!
//! The order of the entries in the header is not fixed; the tensors' data is stored as the
//! safetensors crate orders it (by name).
//!
//! # Reading untrusted files
//!
//! [`read_model`] and [`model_from_bytes`] refuse, with an error naming what was expected:
//! a file larger than [`MAX_MODEL_FILE_BYTES`]; anything the safetensors crate refuses (bad
//! header, offsets that do not cover the data, sizes that overflow); a missing or different
//! `format` or `format_version`; an `activation` other than `relu` or `tanh` (or tanh in a
//! version 1 file); an `input_width` that does not parse or bound the projection's size, or
//! one without a `projection.weight` or the reverse; `layers` that do not parse, have fewer than 2 or more than
//! [`MAX_MODEL_LAYERS`] entries, a zero width or [`MAX_MODEL_PARAMS`] parameters or more; a
//! missing tensor, an extra tensor, a dtype other than `F32`, and any shape other than the one
//! `layers` implies (which is how the chaining of one layer's output into the next one's input
//! is checked). Values are not checked: a diverged model with NaN weights reads back as it was
//! written, bit for bit.
//!
//! ```
//! use hefl::model::{Mlp, model_from_bytes, model_to_bytes};
//!
//! let mlp = Mlp::new(&[784, 16, 10], 7)?;
//! let bytes = model_to_bytes(&mlp)?;
//! assert_eq!(model_from_bytes(&bytes)?, mlp);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use super::{Activation, InputProjection, LayerSpan, Mlp, spans};
use crate::secret_file::{self, Access, SecretFileError};
use safetensors::{Dtype, SafeTensorError, SafeTensors, tensor::TensorView};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The `format` entry of a hefl model file's `__metadata__`.
pub const MODEL_FORMAT: &str = "hefl-mlp";

/// The newest `format_version` of a hefl model file's `__metadata__`: `2` adds the tanh
/// activation and the input projection. Files of ReLU models without a projection are still
/// written as version `1` ([`MODEL_FORMAT_VERSIONS`]).
pub const MODEL_FORMAT_VERSION: &str = "2";

/// Every `format_version` this hefl reads, oldest first.
pub const MODEL_FORMAT_VERSIONS: [&str; 2] = ["1", MODEL_FORMAT_VERSION];

/// The tensor of a model's input projection.
const PROJECTION_NAME: &str = "projection.weight";

/// Parameters in all that a model file may hold: the largest vector hefl aggregates (the
/// training configuration's bound, `hefl::he::MAX_PLAINTEXT_LEN`); a model must have fewer.
pub const MAX_MODEL_PARAMS: usize = 1 << 26;

/// Layer widths (input and output included) that a model file may list.
pub const MAX_MODEL_LAYERS: usize = 256;

/// Largest model file read: the largest model's data plus 1 MiB for the header.
pub const MAX_MODEL_FILE_BYTES: u64 = 4 * MAX_MODEL_PARAMS as u64 + (1 << 20);

/// Longest piece of a file quoted in an error message.
const QUOTE_LIMIT: usize = 80;

/// Why bytes are not a hefl model file, or a model cannot be written as one.
#[derive(Debug, thiserror::Error)]
pub enum ModelFormatError {
    /// More bytes than [`MAX_MODEL_FILE_BYTES`].
    #[error("{found} bytes, more than the limit of {limit} bytes for a model file")]
    TooLarge {
        /// Bytes offered.
        found: u64,
        /// [`MAX_MODEL_FILE_BYTES`].
        limit: u64,
    },
    /// The safetensors container itself is malformed.
    #[error("not a valid safetensors file: {0}")]
    Container(#[from] SafeTensorError),
    /// A required `__metadata__` entry is absent.
    #[error(
        "no `{key}` in the safetensors __metadata__: a hefl model file has format \
         \"{MODEL_FORMAT}\", format_version \"{MODEL_FORMAT_VERSION}\" and layers such as \
         \"784,128,10\""
    )]
    MissingMetadata {
        /// The missing key.
        key: &'static str,
    },
    /// A `__metadata__` entry that is not one of the values a hefl model file may hold.
    #[error("__metadata__ `{key}` is {found:?}, expected {expected}")]
    BadMetadata {
        /// The key.
        key: &'static str,
        /// What would have been accepted.
        expected: String,
        /// What the file says (shortened when long).
        found: String,
    },
    /// A `__metadata__` entry with a value other than the one required.
    #[error("__metadata__ `{key}` is {found:?}, expected {expected:?}")]
    WrongMetadata {
        /// The key.
        key: &'static str,
        /// The required value.
        expected: &'static str,
        /// What the file says (shortened when long).
        found: String,
    },
    /// The layer widths do not parse or are out of bounds.
    #[error("layers {found:?}: expected {expected}")]
    BadLayers {
        /// The widths as written (shortened when long).
        found: String,
        /// What would have been accepted.
        expected: String,
    },
    /// A tensor the layers require is absent.
    #[error("tensor `{name}` is missing: expected F32 of shape {shape:?}")]
    MissingTensor {
        /// Its name.
        name: String,
        /// The shape it should have.
        shape: Vec<usize>,
    },
    /// A tensor that no layer has.
    #[error("unexpected tensor `{name}`: an MLP with layers {layers} has only {expected}")]
    UnexpectedTensor {
        /// Its name (shortened when long).
        name: String,
        /// The layer widths.
        layers: String,
        /// The tensors it has.
        expected: String,
    },
    /// A tensor of another element type.
    #[error("tensor `{name}` has dtype {found}, expected F32")]
    WrongDtype {
        /// Its name.
        name: String,
        /// Its dtype.
        found: Dtype,
    },
    /// A tensor of another shape than its layer's.
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?} ({why})")]
    WrongShape {
        /// Its name.
        name: String,
        /// The shape the layers imply.
        expected: Vec<usize>,
        /// Its shape.
        found: Vec<usize>,
        /// Where the expected shape comes from.
        why: String,
    },
}

/// Why a model file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    /// The file could not be read or written (or is too large, or not a regular file).
    #[error(transparent)]
    File(#[from] SecretFileError),
    /// The file's content is not a valid hefl model.
    #[error("{path}: {source}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: ModelFormatError,
    },
}

/// Serializes `model` in the format of the module docs.
///
/// Fails only for a model outside the bounds a file may hold ([`MAX_MODEL_LAYERS`],
/// [`MAX_MODEL_PARAMS`]), which [`model_from_bytes`] would refuse.
pub fn model_to_bytes(model: &Mlp) -> Result<Vec<u8>, ModelFormatError> {
    let layers = model.layers();
    check_layers(layers).map_err(|expected| ModelFormatError::BadLayers {
        found: layers_text(layers),
        expected,
    })?;
    let params = model.params();
    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = spans(layers)
        .iter()
        .enumerate()
        .flat_map(|(i, span)| {
            let weights = &params[span.weights..span.bias];
            // `[in, out]` row-major in the model, `[out, in]` in the file.
            let transposed = (0..span.fan_out)
                .flat_map(|o| (0..span.fan_in).map(move |i| weights[i * span.fan_out + o]));
            let bias = params[span.bias..span.end()].iter().copied();
            [
                (weight_name(i), weight_shape(span), le_bytes(transposed)),
                (bias_name(i), vec![span.fan_out], le_bytes(bias)),
            ]
        })
        .collect();
    let projection = model.projection();
    if let Some(p) = projection {
        parse_input_width(&p.inputs().to_string(), layers)?;
        let matrix = p.matrix();
        // `[inputs, outputs]` row-major in the model, `[outputs, inputs]` in the file.
        let transposed = (0..p.outputs())
            .flat_map(|o| (0..p.inputs()).map(move |i| matrix[i * p.outputs() + o]));
        data.push((
            PROJECTION_NAME.to_owned(),
            vec![p.outputs(), p.inputs()],
            le_bytes(transposed),
        ));
    }
    let version = if model.activation() == Activation::Relu && projection.is_none() {
        MODEL_FORMAT_VERSIONS[0]
    } else {
        MODEL_FORMAT_VERSION
    };
    let views = data
        .iter()
        .map(|(name, shape, bytes)| {
            Ok((
                name.as_str(),
                TensorView::new(Dtype::F32, shape.clone(), bytes)?,
            ))
        })
        .collect::<Result<Vec<_>, SafeTensorError>>()?;
    let mut metadata = HashMap::from([
        ("format".to_owned(), MODEL_FORMAT.to_owned()),
        ("format_version".to_owned(), version.to_owned()),
        ("layers".to_owned(), layers_text(layers)),
        (
            "activation".to_owned(),
            model.activation().name().to_owned(),
        ),
        (
            "hefl_version".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        ),
    ]);
    if let Some(p) = projection {
        metadata.insert("input_width".to_owned(), p.inputs().to_string());
    }
    Ok(safetensors::serialize(views, Some(metadata))?)
}

/// Parses a model file's bytes, refusing anything but a model in the format of the module
/// docs (see "Reading untrusted files" there).
///
/// ```
/// use hefl::model::{Mlp, ModelFormatError, model_from_bytes, model_to_bytes};
///
/// let bytes = model_to_bytes(&Mlp::new(&[4, 3], 1)?)?;
/// let err = model_from_bytes(&bytes[..bytes.len() - 1]).unwrap_err();
/// assert!(matches!(err, ModelFormatError::Container(_)), "{err}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn model_from_bytes(bytes: &[u8]) -> Result<Mlp, ModelFormatError> {
    let found = bytes.len() as u64;
    if found > MAX_MODEL_FILE_BYTES {
        return Err(ModelFormatError::TooLarge {
            found,
            limit: MAX_MODEL_FILE_BYTES,
        });
    }
    let (_, header) = SafeTensors::read_metadata(bytes)?;
    let tensors = SafeTensors::deserialize(bytes)?;
    let empty = HashMap::new();
    let metadata = header.metadata().as_ref().unwrap_or(&empty);
    let entry = |key: &'static str| {
        metadata
            .get(key)
            .ok_or(ModelFormatError::MissingMetadata { key })
    };
    let format = entry("format")?;
    if format != MODEL_FORMAT {
        return Err(ModelFormatError::WrongMetadata {
            key: "format",
            expected: MODEL_FORMAT,
            found: quote(format),
        });
    }
    let version = entry("format_version")?;
    if !MODEL_FORMAT_VERSIONS.contains(&version.as_str()) {
        return Err(ModelFormatError::WrongMetadata {
            key: "format_version",
            expected: MODEL_FORMAT_VERSION,
            found: quote(version),
        });
    }
    let newest = version == MODEL_FORMAT_VERSION;
    let activation = parse_activation(metadata.get("activation"), newest)?;
    let layers = parse_layers(entry("layers")?)?;
    let input_width = match metadata.get("input_width") {
        Some(text) if newest => Some(parse_input_width(text, &layers)?),
        Some(text) => {
            return Err(ModelFormatError::BadMetadata {
                key: "input_width",
                expected: format!("no input_width in a version {version} file"),
                found: quote(text),
            });
        }
        None => None,
    };
    let spans = spans(&layers);
    let mut expected_names: Vec<String> = (0..spans.len())
        .flat_map(|i| [weight_name(i), bias_name(i)])
        .collect();
    if input_width.is_some() {
        expected_names.push(PROJECTION_NAME.to_owned());
    }
    for name in tensors.names() {
        if !expected_names.iter().any(|n| n == name) {
            return Err(ModelFormatError::UnexpectedTensor {
                name: quote(name),
                layers: layers_text(&layers),
                expected: expected_names.join(", "),
            });
        }
    }
    let mut params = vec![0.0f32; super::param_count(&layers)];
    for (i, span) in spans.iter().enumerate() {
        let weights = f32_tensor(&tensors, &weight_name(i), weight_shape(span), || {
            format!(
                "[out, in] = [layers[{}], layers[{i}]] of layers {}",
                i + 1,
                layers_text(&layers)
            )
        })?;
        // `[out, in]` in the file, `[in, out]` row-major in the model.
        for (k, value) in weights.enumerate() {
            let (o, i) = (k / span.fan_in, k % span.fan_in);
            params[span.weights + i * span.fan_out + o] = value;
        }
        let bias = f32_tensor(&tensors, &bias_name(i), vec![span.fan_out], || {
            format!(
                "[out] = [layers[{}]] of layers {}",
                i + 1,
                layers_text(&layers)
            )
        })?;
        for (slot, value) in params[span.bias..span.end()].iter_mut().zip(bias) {
            *slot = value;
        }
    }
    let projection = match input_width {
        None => None,
        Some(inputs) => {
            let outputs = layers[0];
            let values = f32_tensor(&tensors, PROJECTION_NAME, vec![outputs, inputs], || {
                format!(
                    "[layers[0], input_width] = [{outputs}, {inputs}] of layers {}",
                    layers_text(&layers)
                )
            })?;
            // `[outputs, inputs]` in the file, `[inputs, outputs]` row-major in the model.
            let mut matrix = vec![0.0f32; inputs * outputs];
            for (k, value) in values.enumerate() {
                let (o, i) = (k / inputs, k % inputs);
                matrix[i * outputs + o] = value;
            }
            Some(matrix)
        }
    };
    // The layers and the projection's size were checked, and the params sized from them:
    // none of this can fail.
    let bad = |e: super::ModelError| ModelFormatError::BadLayers {
        found: layers_text(&layers),
        expected: e.to_string(),
    };
    let projection = match (projection, input_width) {
        (Some(matrix), Some(inputs)) => {
            Some(InputProjection::new(inputs, layers[0], matrix).map_err(bad)?)
        }
        _ => None,
    };
    Mlp::from_params(&layers, params)
        .map(|mlp| mlp.set_activation(activation))
        .and_then(|mlp| mlp.set_projection(projection))
        .map_err(bad)
}

/// The hidden activation a file names: `relu` when absent (hefl's files before version 2
/// wrote it as information only); `tanh` only in a version 2 file.
fn parse_activation(text: Option<&String>, newest: bool) -> Result<Activation, ModelFormatError> {
    let Some(text) = text else {
        return Ok(Activation::Relu);
    };
    let expected = if newest {
        "relu or tanh"
    } else {
        "relu in a version 1 file (tanh needs format_version 2)"
    };
    match text.parse::<Activation>() {
        Ok(Activation::Relu) => Ok(Activation::Relu),
        Ok(activation) if newest => Ok(activation),
        _ => Err(ModelFormatError::BadMetadata {
            key: "activation",
            expected: expected.to_owned(),
            found: quote(text),
        }),
    }
}

/// The raw input width of a model's projection, at least 1 and small enough that the
/// projection and the layers together stay under [`MAX_MODEL_PARAMS`].
fn parse_input_width(text: &str, layers: &[usize]) -> Result<usize, ModelFormatError> {
    let params = super::param_count(layers);
    let bad = || ModelFormatError::BadMetadata {
        key: "input_width",
        expected: format!(
            "a width of at least 1 whose projection onto {} inputs keeps the model under \
             {MAX_MODEL_PARAMS} values",
            layers[0]
        ),
        found: quote(text),
    };
    let width = text.trim().parse::<usize>().map_err(|_| bad())?;
    let size = width
        .checked_mul(layers[0])
        .and_then(|s| s.checked_add(params));
    if width == 0 || size.is_none_or(|s| s >= MAX_MODEL_PARAMS) {
        return Err(bad());
    }
    Ok(width)
}

/// Writes `model` to `path` in the format of the module docs, atomically (a temporary file
/// beside it, flushed to disk, then renamed over `path`; parent folders created; an existing
/// regular file replaced), readable as the umask allows: a model is not a secret.
///
/// ```
/// use hefl::model::{Mlp, read_model, write_model};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("models").join("mlp.safetensors");
/// let mlp = Mlp::new(&[784, 32, 10], 3)?;
/// write_model(&path, &mlp)?;
/// assert_eq!(read_model(&path)?, mlp);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn write_model(path: &Path, model: &Mlp) -> Result<(), ModelFileError> {
    let bytes = model_to_bytes(model).map_err(|source| ModelFileError::Format {
        path: path.to_path_buf(),
        source,
    })?;
    secret_file::write_atomic(path, &bytes, true, Access::Default)?;
    Ok(())
}

/// Reads a model written by [`write_model`] (or by anyone following the format of the module
/// docs), refusing a file of more than [`MAX_MODEL_FILE_BYTES`] or anything
/// [`model_from_bytes`] refuses; errors name the file.
pub fn read_model(path: &Path) -> Result<Mlp, ModelFileError> {
    let bytes = secret_file::read_limited(path, MAX_MODEL_FILE_BYTES)?;
    model_from_bytes(&bytes).map_err(|source| ModelFileError::Format {
        path: path.to_path_buf(),
        source,
    })
}

fn weight_name(layer: usize) -> String {
    format!("layer{layer}.weight")
}

fn bias_name(layer: usize) -> String {
    format!("layer{layer}.bias")
}

fn weight_shape(span: &LayerSpan) -> Vec<usize> {
    vec![span.fan_out, span.fan_in]
}

/// `784,128,10`.
fn layers_text(layers: &[usize]) -> String {
    layers
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn le_bytes(values: impl Iterator<Item = f32>) -> Vec<u8> {
    values.flat_map(f32::to_le_bytes).collect()
}

/// `text`, cut to [`QUOTE_LIMIT`] characters, for an error message.
fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE_LIMIT) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

/// The layer widths of a `layers` entry, within the bounds of the module docs.
fn parse_layers(text: &str) -> Result<Vec<usize>, ModelFormatError> {
    let bad = |expected: String| ModelFormatError::BadLayers {
        found: quote(text),
        expected,
    };
    // Counted before parsing, so that a huge list costs no allocation.
    if text.split(',').count() > MAX_MODEL_LAYERS {
        return Err(bad(format!("at most {MAX_MODEL_LAYERS} widths")));
    }
    let layers = text
        .split(',')
        .map(|w| w.trim().parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad("comma-separated widths such as \"784,128,10\"".into()))?;
    check_layers(&layers).map_err(bad)?;
    Ok(layers)
}

/// Whether a model file may hold an MLP with these widths; if not, what is expected.
fn check_layers(layers: &[usize]) -> Result<(), String> {
    if !(2..=MAX_MODEL_LAYERS).contains(&layers.len()) {
        return Err(format!("2 to {MAX_MODEL_LAYERS} widths, input first"));
    }
    if layers.contains(&0) {
        return Err("every width at least 1".into());
    }
    let params = layers.windows(2).try_fold(0usize, |acc, w| {
        w[0].checked_mul(w[1])?.checked_add(w[1])?.checked_add(acc)
    });
    if params.is_none_or(|p| p >= MAX_MODEL_PARAMS) {
        return Err(format!("fewer than {MAX_MODEL_PARAMS} parameters in all"));
    }
    Ok(())
}

/// The values of the `F32` tensor `name`, refused unless its shape is `shape` (`why` says
/// where that shape comes from).
fn f32_tensor<'a>(
    tensors: &SafeTensors<'a>,
    name: &str,
    shape: Vec<usize>,
    why: impl FnOnce() -> String,
) -> Result<impl Iterator<Item = f32> + 'a, ModelFormatError> {
    let tensor = tensors
        .tensor(name)
        .map_err(|_| ModelFormatError::MissingTensor {
            name: name.to_owned(),
            shape: shape.clone(),
        })?;
    if tensor.dtype() != Dtype::F32 {
        return Err(ModelFormatError::WrongDtype {
            name: name.to_owned(),
            found: tensor.dtype(),
        });
    }
    if tensor.shape() != shape {
        return Err(ModelFormatError::WrongShape {
            name: name.to_owned(),
            expected: shape,
            found: tensor.shape().to_vec(),
            why: why(),
        });
    }
    // safetensors checked that the data holds exactly shape x 4 bytes.
    Ok(tensor.data().chunks_exact(4).map(|b| {
        let mut le = [0u8; 4];
        le.copy_from_slice(b);
        f32::from_le_bytes(le)
    }))
}
