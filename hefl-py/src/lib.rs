//! Python bindings of hefl: the extension module `hefl._hefl`, re-exported by the Python
//! package `hefl` (see `python/hefl/__init__.py` for the documented API and
//! `python/hefl/_hefl.pyi` for its types).
//!
//! Three things cross the boundary: key files ([`SecretKey`], [`generate_key`], [`key_id`]),
//! a client's [`Envelope`] (seal a float32 vector with a weight, open an aggregate into the
//! weighted mean) and the server's [`KeylessSum`] (validate and add sealed updates knowing
//! only the public key id). All of hefl's work goes through [`bridge`], the one module that
//! touches the library's API.
//!
//! The GIL is released (`Python::detach`) around every call that derives keys, encrypts,
//! decrypts, parses or sums; numpy inputs are copied into Rust memory first (another Python
//! thread may write to an array while the GIL is released), whereas `bytes` objects are
//! immutable and stay borrowed. Every error becomes an exception class of `hefl.errors`,
//! whose message names what was expected and what came.

pub mod bridge;

/// Rust's allocations in this module (an update's words, ciphertexts and wire bytes, a few
/// MB per call) come from mimalloc, as in the `hefl` CLI: it keeps freed pages for reuse,
/// where glibc's malloc in a Python process returns them to the system after each call and
/// faults them in again on the next (measured: about 1,000 page faults and a third more time
/// per sealed 101,770-value update). The module sets [`hefl::alloc::keep_freed_pages`] when it
/// loads. Python's own objects are unaffected.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::sync::Arc;

use numpy::{PyArray1, PyArrayDescrMethods, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use bridge::{KeylessSum as RustSum, OpenError, SealError, Sealer, SetupError, SumError};
use hefl::fl::{EnvelopeError, PayloadError};
use hefl::he::WireError;
use hefl::he::keys::{KeyError, SecretKey as RustKey};

pyo3::import_exception!(hefl.errors, KeyFileError);
pyo3::import_exception!(hefl.errors, KeyFileExistsError);
pyo3::import_exception!(hefl.errors, InsecureKeyFileError);
pyo3::import_exception!(hefl.errors, KeyMismatchError);
pyo3::import_exception!(hefl.errors, MessageError);
pyo3::import_exception!(hefl.errors, LengthError);
pyo3::import_exception!(hefl.errors, EncodeError);
pyo3::import_exception!(hefl.errors, DecodeError);
pyo3::import_exception!(hefl.errors, SumFullError);
pyo3::import_exception!(hefl.errors, ConfigError);

/// Default largest number of parties an aggregate may sum (hefl's default fixed point).
const DEFAULT_MAX_PARTIES: u32 = 100;
/// Fractional bits of the fixed-point encoding unless given: hefl's default (16).
const DEFAULT_FRAC_BITS: u32 = hefl::quant::DEFAULT_FRAC_BITS;

fn key_error(error: KeyError) -> PyErr {
    let message = error.to_string();
    match error {
        KeyError::InsecurePermissions { .. } => InsecureKeyFileError::new_err(message),
        KeyError::AlreadyExists { .. } => KeyFileExistsError::new_err(message),
        KeyError::KeyIdSyntax { .. } => PyValueError::new_err(message),
        _ => KeyFileError::new_err(message),
    }
}

fn setup_error(error: SetupError) -> PyErr {
    match error {
        SetupError::Key(e) => key_error(e),
        e @ SetupError::Length { .. } => LengthError::new_err(e.to_string()),
        e @ (SetupError::Quant(_) | SetupError::Headroom(_)) => ConfigError::new_err(e.to_string()),
    }
}

/// A refused message: under another key, or anything else that fails validation.
fn payload_error(error: &PayloadError, what: &str) -> PyErr {
    let message = format!("{what} refused: {error}");
    match error {
        PayloadError::Wire(WireError::KeyId { .. }) => KeyMismatchError::new_err(message),
        _ => MessageError::new_err(message),
    }
}

fn envelope_error(error: EnvelopeError, what: &str) -> PyErr {
    match error {
        EnvelopeError::Payload(e) => payload_error(&e, what),
        e @ EnvelopeError::Decode(_) => DecodeError::new_err(e.to_string()),
        e @ (EnvelopeError::Quant(_) | EnvelopeError::He(_)) => EncodeError::new_err(e.to_string()),
        e @ EnvelopeError::Length { .. } => LengthError::new_err(e.to_string()),
        e @ EnvelopeError::Weight(_) => PyValueError::new_err(e.to_string()),
    }
}

/// Copies a 1-D, C-contiguous float32 numpy array into Rust memory, refusing anything else
/// with a message that says what was expected.
fn copy_f32_vector(values: &Bound<'_, PyAny>) -> PyResult<Vec<f32>> {
    let array = values.cast::<PyUntypedArray>().map_err(|_| {
        PyTypeError::new_err(format!(
            "values must be a numpy.ndarray of dtype float32, got {}",
            values
                .get_type()
                .name()
                .map_or_else(|_| "an unknown type".to_owned(), |n| n.to_string())
        ))
    })?;
    let dtype = array.dtype();
    if !dtype.is_equiv_to(&numpy::dtype::<f32>(values.py())) {
        return Err(PyTypeError::new_err(format!(
            "values must have dtype float32, got {dtype}; convert with values.astype(numpy.float32)"
        )));
    }
    if array.ndim() != 1 {
        return Err(LengthError::new_err(format!(
            "values must be a 1-D array, got shape {:?}; flatten it with values.ravel()",
            array.shape()
        )));
    }
    if !array.is_c_contiguous() {
        return Err(PyValueError::new_err(
            "values must be a C-contiguous array, got a strided view; copy it with \
             numpy.ascontiguousarray(values)",
        ));
    }
    let typed = array.cast::<PyArray1<f32>>()?;
    let readonly = typed.try_readonly()?;
    Ok(readonly.as_slice()?.to_vec())
}

/// The secret key shared by all clients, loaded from a key file written by
/// `hefl.generate_key` or `hefl keygen`.
#[pyclass(frozen, module = "hefl")]
struct SecretKey {
    key: Arc<RustKey>,
}

#[pymethods]
impl SecretKey {
    /// Loads and checks a key file (mode 0600, format, parameter set, key id) and derives
    /// the GLWE secret key.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let key = py.detach(|| bridge::load_key(&path)).map_err(key_error)?;
        Ok(Self { key })
    }

    /// The public key id: 64 hex digits.
    #[getter]
    fn key_id(&self) -> String {
        self.key.key_id().to_string()
    }

    fn __repr__(&self) -> String {
        format!("SecretKey(key_id='{}')", self.key.key_id())
    }
}

/// Writes a fresh key file (mode 0600) and returns its key id.
#[pyfunction]
#[pyo3(signature = (path, *, force = false))]
fn generate_key(py: Python<'_>, path: PathBuf, force: bool) -> PyResult<String> {
    let key_id = py
        .detach(|| bridge::generate_key(&path, force))
        .map_err(key_error)?;
    Ok(key_id.to_string())
}

/// The public key id of a key file, after checking it as `SecretKey.load` does.
#[pyfunction]
fn key_id(py: Python<'_>, path: PathBuf) -> PyResult<String> {
    let key_id = py
        .detach(|| bridge::inspect_key(&path))
        .map_err(key_error)?;
    Ok(key_id.to_string())
}

/// A client's envelope for updates of a fixed length under a shared key.
#[pyclass(frozen, module = "hefl")]
struct Envelope {
    sealer: Sealer,
    key_id: String,
}

#[pymethods]
impl Envelope {
    #[new]
    #[pyo3(signature = (key, length, *, max_parties = DEFAULT_MAX_PARTIES, frac_bits = DEFAULT_FRAC_BITS))]
    fn new(key: &SecretKey, length: usize, max_parties: u32, frac_bits: u32) -> PyResult<Self> {
        let sealer =
            Sealer::new(key.key.clone(), length, max_parties, frac_bits).map_err(setup_error)?;
        Ok(Self {
            sealer,
            key_id: key.key.key_id().to_string(),
        })
    }

    /// Values per update.
    #[getter]
    fn length(&self) -> usize {
        self.sealer.values()
    }

    /// The largest number of updates an aggregate may sum.
    #[getter]
    fn max_parties(&self) -> u32 {
        self.sealer.max_parties()
    }

    /// The public id of the envelope's key.
    #[getter]
    fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Seals `values * weight` and `weight` into ciphertext bytes.
    #[pyo3(signature = (values, weight = 1.0))]
    fn seal<'py>(
        &self,
        py: Python<'py>,
        values: &Bound<'py, PyAny>,
        weight: f32,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let values = copy_f32_vector(values)?;
        let sealed = py
            .detach(|| self.sealer.seal(&values, weight))
            .map_err(|e| match e {
                e @ SealError::Entropy(_) => EncodeError::new_err(e.to_string()),
                SealError::Envelope(e) => envelope_error(e, "update"),
            })?;
        Ok(PyBytes::new(py, &sealed))
    }

    /// Decrypts the sum of `parties` sealed updates into their weighted mean.
    fn open<'py>(
        &self,
        py: Python<'py>,
        aggregate: &[u8],
        parties: u32,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let mean = py
            .detach(|| self.sealer.open(aggregate, parties))
            .map_err(|e| match e {
                e @ OpenError::Parties { .. } => PyValueError::new_err(e.to_string()),
                OpenError::Envelope(e) => envelope_error(e, "aggregate"),
            })?;
        Ok(PyArray1::from_vec(py, mean))
    }

    fn __repr__(&self) -> String {
        format!(
            "Envelope(key_id='{}', length={}, max_parties={})",
            self.key_id,
            self.sealer.values(),
            self.sealer.max_parties()
        )
    }
}

/// The server's running sum of sealed updates: knows a key id, never a key.
#[pyclass(module = "hefl")]
struct KeylessSum {
    sum: RustSum,
    length: usize,
}

#[pymethods]
impl KeylessSum {
    #[new]
    #[pyo3(signature = (key_id, length, *, max_parties = DEFAULT_MAX_PARTIES, frac_bits = DEFAULT_FRAC_BITS))]
    fn new(key_id: &str, length: usize, max_parties: u32, frac_bits: u32) -> PyResult<Self> {
        let sum = RustSum::new(key_id, length, max_parties, frac_bits).map_err(setup_error)?;
        Ok(Self { sum, length })
    }

    /// Validates one sealed update exactly as `hefl serve` does and adds it.
    fn add(&mut self, py: Python<'_>, message: &[u8]) -> PyResult<()> {
        let sum = &mut self.sum;
        py.detach(|| sum.add(message)).map_err(|e| match e {
            e @ SumError::Full { .. } => SumFullError::new_err(e.to_string()),
            SumError::Payload(e) => payload_error(&e, "submission"),
        })
    }

    /// Updates added so far.
    #[getter]
    fn count(&self) -> u32 {
        self.sum.count()
    }

    /// Values per update.
    #[getter]
    fn length(&self) -> usize {
        self.length
    }

    /// The key id submissions must be under.
    #[getter]
    fn key_id(&self) -> String {
        self.sum.key_id().to_string()
    }

    /// An upper bound on the size of a valid submission.
    #[getter]
    fn max_message_len(&self) -> usize {
        self.sum.max_message_len()
    }

    /// The aggregate's bytes.
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let sum = &self.sum;
        let bytes = py.detach(|| sum.to_bytes()).ok_or_else(|| {
            PyValueError::new_err("the sum is empty: add at least one update before to_bytes()")
        })?;
        Ok(PyBytes::new(py, &bytes))
    }

    fn __len__(&self) -> usize {
        self.sum.count() as usize
    }

    fn __repr__(&self) -> String {
        format!(
            "KeylessSum(key_id='{}', length={}, count={})",
            self.sum.key_id(),
            self.length,
            self.sum.count()
        )
    }
}

/// The compiled core of the `hefl` package.
#[pymodule]
fn _hefl(m: &Bound<'_, PyModule>) -> PyResult<()> {
    hefl::alloc::keep_freed_pages();
    m.add_class::<SecretKey>()?;
    m.add_class::<Envelope>()?;
    m.add_class::<KeylessSum>()?;
    m.add_function(wrap_pyfunction!(generate_key, m)?)?;
    m.add_function(wrap_pyfunction!(key_id, m)?)?;
    m.add("DEFAULT_MAX_PARTIES", DEFAULT_MAX_PARTIES)?;
    m.add("DEFAULT_FRAC_BITS", DEFAULT_FRAC_BITS)?;
    // The `stype` of a Flower Array carrying hefl ciphertext bytes: names the wire version.
    m.add("STYPE", format!("hefl.glwe.v{}", hefl::he::WIRE_VERSION))?;
    Ok(())
}
