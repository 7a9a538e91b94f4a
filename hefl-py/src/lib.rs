//! Python bindings of hefl: the extension module `hefl._hefl`, re-exported by the Python
//! package `hefl` (see `python/hefl/__init__.py` for the documented API and
//! `python/hefl/_hefl.pyi` for its types).
//!
//! Five things cross the boundary: key files ([`SecretKey`], [`generate_key`], [`key_id`]),
//! a client's [`Envelope`] (seal a float32 vector with its example count, open an aggregate
//! into the example-weighted mean), the server's [`KeylessSum`] (validate and add sealed
//! updates knowing only the public key id), the party machine [`Party`] (`hefl::fl::Party`:
//! one party's side of every round, which `hefl.flower` drives and `hefl join` runs), and
//! `strict` secure aggregation's [`Identity`] and [`Roster`] (as `hefl identity` and
//! `hefl roster` make them). All of hefl's work goes through [`bridge`], the one module that
//! touches the library's API.
//!
//! The GIL is released (`Python::detach`) around every call that derives keys, encrypts,
//! decrypts, parses, sums or copies a model; numpy inputs are copied into Rust memory first
//! (another Python thread may write to an array while the GIL is released), whereas `bytes`
//! objects are immutable and stay borrowed. Every error becomes an exception class of
//! `hefl.errors`, whose message names what was expected and what came.

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
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use numpy::{PyArray1, PyArrayDescrMethods, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use bridge::{
    Bounds, CredentialsError, FlowerSettings, KeylessSum as RustSum, PartyMachine, PartySealError,
    PlanError, RestoreError, SealError, Sealer, SetupError, SumError,
};
use hefl::fl::{
    EncodeError as RustEncodeError, EnvelopeError, PayloadError, PlanPartyError, PublishedError,
    Received, SealError as RustSealError, SetupError as PartySetupError,
    SnapshotError as RustSnapshotError, StateError as RustStateError,
};
use hefl::he::keys::{KeyError, SecretKey as RustKey};
use hefl::he::{Context, WireError};
use hefl::secagg::{
    Identity as RustIdentity, IdentityError, Mode, Roster as RustRoster,
    RosterError as RustRosterError, SecAggError,
};
use hefl::secret_file::SecretFileError;

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
pyo3::import_exception!(hefl.errors, ProtocolError);
pyo3::import_exception!(hefl.errors, OutOfOrderError);
pyo3::import_exception!(hefl.errors, SnapshotError);
pyo3::import_exception!(hefl.errors, StateError);
pyo3::import_exception!(hefl.errors, SecureAggError);
pyo3::import_exception!(hefl.errors, RosterError);

/// Default largest number of parties an aggregate may sum (hefl's default fixed point).
const DEFAULT_MAX_PARTIES: u32 = 100;
/// Fractional bits of the fixed-point encoding unless given: hefl's default (16).
const DEFAULT_FRAC_BITS: u32 = hefl::quant::DEFAULT_FRAC_BITS;
/// Values beyond [-CLIP, CLIP] of an update are clipped to it (hefl's default).
const CLIP: f32 = hefl::quant::DEFAULT_CLIP;

fn key_error(error: KeyError) -> PyErr {
    let message = error.to_string();
    match error {
        KeyError::InsecurePermissions { .. } => InsecureKeyFileError::new_err(message),
        KeyError::AlreadyExists { .. } => KeyFileExistsError::new_err(message),
        KeyError::KeyIdSyntax { .. } => PyValueError::new_err(message),
        _ => KeyFileError::new_err(message),
    }
}

fn party_setup_error(error: PartySetupError) -> PyErr {
    let message = error.to_string();
    match error {
        PartySetupError::KeyMismatch { .. } => KeyMismatchError::new_err(message),
        PartySetupError::Length { .. } => LengthError::new_err(message),
        PartySetupError::MissingKey
        | PartySetupError::Headroom(_)
        | PartySetupError::Rules { .. }
        | PartySetupError::SecureAggNeedsHe
        | PartySetupError::BlinderParty { .. } => ConfigError::new_err(message),
    }
}

fn setup_error(error: SetupError) -> PyErr {
    match error {
        SetupError::Key(e) => key_error(e),
        SetupError::Party(e) => party_setup_error(e),
        e @ SetupError::Length { .. } => LengthError::new_err(e.to_string()),
        e @ SetupError::NoFit(_) => ConfigError::new_err(e.to_string()),
        e @ SetupError::Entropy(_) => PyOSError::new_err(e.to_string()),
        e @ (SetupError::NoCredentials { .. } | SetupError::Roster(_)) => {
            RosterError::new_err(e.to_string())
        }
        SetupError::SecAgg(e) => secagg_error(e),
    }
}

/// A refusal of secure aggregation: the roster's (fingerprint, party, policy, key, identity)
/// as [`RosterError`], the rest (a second seal of a round, a set without this party) as
/// [`SecureAggError`].
fn secagg_error(error: SecAggError) -> PyErr {
    match error {
        e @ (SecAggError::Roster(_) | SecAggError::NonContributory { .. }) => {
            RosterError::new_err(e.to_string())
        }
        e => SecureAggError::new_err(e.to_string()),
    }
}

fn identity_error(error: IdentityError) -> PyErr {
    let message = error.to_string();
    match error {
        IdentityError::File(SecretFileError::InsecurePermissions { .. }) => {
            InsecureKeyFileError::new_err(message)
        }
        IdentityError::File(SecretFileError::AlreadyExists { .. }) => {
            KeyFileExistsError::new_err(message)
        }
        IdentityError::PublicLine { .. } => RosterError::new_err(message),
        _ => KeyFileError::new_err(message),
    }
}

fn credentials_error(error: CredentialsError) -> PyErr {
    match error {
        CredentialsError::Identity(e) => identity_error(e),
        e @ CredentialsError::RosterFile { .. } => KeyFileError::new_err(e.to_string()),
        e @ (CredentialsError::Roster(_) | CredentialsError::NotInRoster { .. }) => {
            RosterError::new_err(e.to_string())
        }
    }
}

fn roster_error(error: RustRosterError) -> PyErr {
    RosterError::new_err(error.to_string())
}

/// The secure aggregation mode named `mode` (`None`: none).
fn secure_agg_mode(mode: Option<&str>) -> PyResult<Option<Mode>> {
    mode.map(|m| m.parse::<Mode>().map_err(PyValueError::new_err))
        .transpose()
}

fn plan_error(error: PlanError) -> PyErr {
    match error {
        PlanError::Party(PlanPartyError::Setup(e)) => party_setup_error(e),
        e => ConfigError::new_err(e.to_string()),
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
        e @ (EnvelopeError::Encode(RustEncodeError::Quant(_) | RustEncodeError::Samples { .. })
        | EnvelopeError::He(_)) => EncodeError::new_err(e.to_string()),
        e @ EnvelopeError::Length { .. } => LengthError::new_err(e.to_string()),
        e @ EnvelopeError::Parties { .. } => PyValueError::new_err(e.to_string()),
        e @ EnvelopeError::Context { .. } => MessageError::new_err(format!("{what} refused: {e}")),
        e @ EnvelopeError::NothingSealed => PyValueError::new_err(e.to_string()),
        EnvelopeError::SecAgg(e) => secagg_error(e),
        e @ EnvelopeError::Robust(_) => SecureAggError::new_err(e.to_string()),
    }
}

fn sum_error(error: SumError, what: &str) -> PyErr {
    match error {
        e @ SumError::Full { .. } => SumFullError::new_err(e.to_string()),
        SumError::Payload(e) => payload_error(&e, what),
        e @ SumError::Context { .. } => MessageError::new_err(format!("{what} refused: {e}")),
    }
}

/// A run's 32 bytes from its 64 hex digits (`None`: all zero, no run named).
fn run_bytes(run: Option<&str>) -> PyResult<[u8; 32]> {
    let mut bytes = [0; 32];
    if let Some(text) = run {
        hex::decode_to_slice(text, &mut bytes).map_err(|_| {
            PyValueError::new_err(format!(
                "run must be 64 hex digits (hefl.run_fingerprint or Party.fingerprint), got \
                 {:?}",
                text.chars().take(80).collect::<String>()
            ))
        })?;
    }
    Ok(bytes)
}

fn published_error(error: Box<PublishedError>) -> PyErr {
    let message = error.to_string();
    match *error {
        PublishedError::Gap { .. } => OutOfOrderError::new_err(message),
        PublishedError::Parties { .. }
        | PublishedError::TooFew { .. }
        | PublishedError::NextSet { .. }
        | PublishedError::UnexpectedVoid { .. } => ProtocolError::new_err(message),
        PublishedError::Open { round, source } => {
            envelope_error(source, &format!("the sum of {round}"))
        }
    }
}

fn state_error(error: RustStateError) -> PyErr {
    StateError::new_err(format!("party state refused: {error}"))
}

fn restore_error(error: RestoreError) -> PyErr {
    StateError::new_err(format!("party state refused: {error}"))
}

fn snapshot_error(error: RustSnapshotError) -> PyErr {
    match error {
        RustSnapshotError::Open(e) => payload_error(&e, "model snapshot"),
        RustSnapshotError::State(e) => state_error(e),
        e @ RustSnapshotError::Widths(_) => ConfigError::new_err(e.to_string()),
        e => SnapshotError::new_err(format!("model snapshot refused: {e}")),
    }
}

fn party_seal_error(error: PartySealError) -> PyErr {
    match error {
        e @ PartySealError::Length { .. } => LengthError::new_err(e.to_string()),
        PartySealError::Party(RustSealError::Envelope(e)) => envelope_error(e, "update"),
        PartySealError::Party(e @ RustSealError::Round { .. }) => {
            ProtocolError::new_err(e.to_string())
        }
    }
}

/// Copies a 1-D, C-contiguous float32 numpy array into Rust memory, refusing anything else
/// with a message that names the argument (`what`) and says what was expected.
fn copy_f32_vector(values: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<f32>> {
    let array = values.cast::<PyUntypedArray>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{what} must be a numpy.ndarray of dtype float32, got {}",
            values
                .get_type()
                .name()
                .map_or_else(|_| "an unknown type".to_owned(), |n| n.to_string())
        ))
    })?;
    let dtype = array.dtype();
    if !dtype.is_equiv_to(&numpy::dtype::<f32>(values.py())) {
        return Err(PyTypeError::new_err(format!(
            "{what} must have dtype float32, got {dtype}; convert with {what}.astype(numpy.float32)"
        )));
    }
    if array.ndim() != 1 {
        return Err(LengthError::new_err(format!(
            "{what} must be a 1-D array, got shape {:?}; flatten it with {what}.ravel()",
            array.shape()
        )));
    }
    if !array.is_c_contiguous() {
        return Err(PyValueError::new_err(format!(
            "{what} must be a C-contiguous array, got a strided view; copy it with \
             numpy.ascontiguousarray({what})"
        )));
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

/// The fingerprint (64 hex digits) of a Flower-style run: what every [`Party`] of these settings
/// names in its uploads' headers, and what a server's `KeylessSum(run=...)` checks. It
/// hashes only public values (the key id, the bounds, `min_parties`, `snapshot_every`, the
/// run's public name `run` and, with secure aggregation, the roster's fingerprint), so it
/// tells the server nothing it does not know.
#[pyfunction]
#[allow(clippy::too_many_arguments)] // Python's keyword arguments
#[pyo3(signature = (key_id, length, *, max_parties, max_examples, frac_bits = DEFAULT_FRAC_BITS, min_parties = 1, snapshot_every = None, run = String::new(), roster_fingerprint = None))]
fn run_fingerprint(
    key_id: &str,
    length: usize,
    max_parties: u32,
    max_examples: u64,
    frac_bits: u32,
    min_parties: u32,
    snapshot_every: Option<u64>,
    run: String,
    roster_fingerprint: Option<&str>,
) -> PyResult<String> {
    let key_id = key_id
        .parse()
        .map_err(|e: KeyError| setup_error(e.into()))?;
    let bounds = Bounds {
        length,
        max_parties,
        max_examples,
        frac_bits,
    };
    let roster = roster_fingerprint
        .map(str::parse)
        .transpose()
        .map_err(roster_error)?;
    let fingerprint =
        bridge::fingerprint(key_id, bounds, min_parties, snapshot_every, &run, roster);
    Ok(hex::encode(fingerprint))
}

/// Writes a fresh identity file (mode 0600) for `strict` secure aggregation and returns its
/// public line, as `hefl identity --out PATH` does.
#[pyfunction]
#[pyo3(signature = (path, *, force = false))]
fn generate_identity(py: Python<'_>, path: PathBuf, force: bool) -> PyResult<String> {
    let public = py
        .detach(|| bridge::generate_identity(&path, force))
        .map_err(identity_error)?;
    Ok(public.to_line())
}

/// A party's identity for `strict` secure aggregation: an X25519 key pair, loaded from a file
/// of mode 0600. The secret never leaves Rust and is wiped when the object is freed.
#[pyclass(frozen, module = "hefl")]
struct Identity {
    identity: Arc<RustIdentity>,
}

#[pymethods]
impl Identity {
    /// Loads an identity file (`hefl identity` or `hefl.generate_identity`), refusing one
    /// that group or others can access.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let identity = py
            .detach(|| bridge::load_identity(&path))
            .map_err(identity_error)?;
        Ok(Self { identity })
    }

    /// The public line, `hefl-x25519-v1 <64 hex>`, for the coordinator's roster.
    #[getter]
    fn public(&self) -> String {
        self.identity.public().to_line()
    }

    fn __repr__(&self) -> String {
        format!("Identity(public='{}')", self.identity.public())
    }
}

/// The roster of a `strict` secure-aggregation federation: the HE key id, every party's
/// public key and the policy; compared out of band by its fingerprint.
#[pyclass(frozen, module = "hefl")]
struct Roster {
    roster: Arc<RustRoster>,
}

#[pymethods]
impl Roster {
    /// A roster of the parties whose public lines are `publics` (party i's at index i) for
    /// the key `key_id`, each sum of at least `min_parties` (default: all), as `hefl roster`
    /// assembles it.
    #[new]
    #[pyo3(signature = (key_id, publics, *, min_parties = None, secure_agg = "strict"))]
    fn new(
        key_id: &str,
        publics: Vec<String>,
        min_parties: Option<u32>,
        secure_agg: &str,
    ) -> PyResult<Self> {
        let mode = secure_agg.parse::<Mode>().map_err(PyValueError::new_err)?;
        let roster =
            bridge::make_roster(key_id, &publics, mode, min_parties).map_err(setup_error)?;
        Ok(Self {
            roster: Arc::new(roster),
        })
    }

    /// Reads and validates a roster file (`hefl roster --out PATH`).
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let roster = py
            .detach(|| bridge::load_roster(&path))
            .map_err(credentials_error)?;
        Ok(Self {
            roster: Arc::new(roster),
        })
    }

    /// Parses and validates a roster file's contents.
    #[staticmethod]
    fn from_bytes(data: &[u8]) -> PyResult<Self> {
        let roster = RustRoster::parse(data).map_err(roster_error)?;
        Ok(Self {
            roster: Arc::new(roster),
        })
    }

    /// The roster file's contents (JSON).
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.roster.to_json())
    }

    /// The SHA-256 fingerprint, 64 hex digits, to compare out of band.
    #[getter]
    fn fingerprint(&self) -> String {
        self.roster.fingerprint().to_string()
    }

    /// The HE key's id.
    #[getter]
    fn key_id(&self) -> String {
        self.roster.key_id().to_string()
    }

    /// The mode (`"strict"`).
    #[getter]
    fn mode(&self) -> String {
        self.roster.policy().mode.to_string()
    }

    /// Parties in the roster (ids 0 to `parties - 1`).
    #[getter]
    fn parties(&self) -> u32 {
        self.roster.policy().parties
    }

    /// The fewest parties a published sum may hold.
    #[getter]
    fn min_parties(&self) -> u32 {
        self.roster.policy().min_parties
    }

    /// Refuses this roster unless its fingerprint is `expected` (compared out of band).
    fn check_fingerprint(&self, expected: &str) -> PyResult<()> {
        let expected = expected.parse().map_err(roster_error)?;
        self.roster
            .check_fingerprint(expected)
            .map_err(roster_error)
    }

    /// The party id the roster gives `identity`.
    fn party_of(&self, identity: &Identity) -> PyResult<u32> {
        bridge::party_of(&self.roster, &identity.identity).map_err(credentials_error)
    }

    fn __repr__(&self) -> String {
        format!(
            "Roster(fingerprint='{}', parties={}, min_parties={}, mode='{}')",
            self.roster.fingerprint(),
            self.roster.policy().parties,
            self.roster.policy().min_parties,
            self.roster.policy().mode
        )
    }
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
    #[pyo3(signature = (key, length, *, max_parties = DEFAULT_MAX_PARTIES, max_examples = 1, frac_bits = DEFAULT_FRAC_BITS))]
    fn new(
        py: Python<'_>,
        key: &SecretKey,
        length: usize,
        max_parties: u32,
        max_examples: u64,
        frac_bits: u32,
    ) -> PyResult<Self> {
        let bounds = Bounds {
            length,
            max_parties,
            max_examples,
            frac_bits,
        };
        let sealer = py
            .detach(|| Sealer::new(key.key.clone(), bounds))
            .map_err(setup_error)?;
        Ok(Self {
            sealer,
            key_id: key.key.key_id().to_string(),
        })
    }

    /// Values per update.
    #[getter]
    fn length(&self) -> usize {
        self.sealer.bounds().length
    }

    /// The largest number of updates an aggregate may sum.
    #[getter]
    fn max_parties(&self) -> u32 {
        self.sealer.bounds().max_parties
    }

    /// The largest example count an update may carry.
    #[getter]
    fn max_examples(&self) -> u64 {
        self.sealer.bounds().max_examples
    }

    /// Fractional bits of the fixed point.
    #[getter]
    fn frac_bits(&self) -> u32 {
        self.sealer.bounds().frac_bits
    }

    /// The public id of the envelope's key.
    #[getter]
    fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Seals `values` weighted by `examples` into ciphertext bytes, as party `party`'s
    /// upload for round `round` of run `run` (64 hex digits; `None`: all zero). The header names
    /// all three; a sum refuses an upload that names another.
    #[pyo3(signature = (values, examples = 1, *, party, round = 0, run = None))]
    fn seal<'py>(
        &self,
        py: Python<'py>,
        values: &Bound<'py, PyAny>,
        examples: u64,
        party: u32,
        round: u64,
        run: Option<&str>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let values = copy_f32_vector(values, "values")?;
        let context = Context {
            run: run_bytes(run)?,
            round,
            party,
        };
        let sealed = py
            .detach(|| self.sealer.seal(&values, examples, context))
            .map_err(|e| match e {
                e @ SealError::Entropy(_) => PyOSError::new_err(e.to_string()),
                SealError::Envelope(e) => envelope_error(e, "update"),
            })?;
        Ok(PyBytes::new(py, &sealed.bytes))
    }

    /// Decrypts the sum of the updates of `parties` into their example-weighted mean;
    /// refuses a sum of another round `round` or run `run` (as given to `seal`).
    #[pyo3(signature = (aggregate, parties, *, round = 0, run = None))]
    fn open<'py>(
        &self,
        py: Python<'py>,
        aggregate: &[u8],
        parties: Vec<u32>,
        round: u64,
        run: Option<&str>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let context = Context::sum(run_bytes(run)?, round);
        let mean = py
            .detach(|| self.sealer.open(aggregate, &parties, context))
            .map_err(|e| envelope_error(e, "aggregate"))?;
        Ok(PyArray1::from_vec(py, mean))
    }

    fn __repr__(&self) -> String {
        let bounds = self.sealer.bounds();
        format!(
            "Envelope(key_id='{}', length={}, max_parties={}, max_examples={}, frac_bits={})",
            self.key_id, bounds.length, bounds.max_parties, bounds.max_examples, bounds.frac_bits
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
    #[allow(clippy::too_many_arguments)] // Python's keyword arguments
    #[pyo3(signature = (key_id, length, *, max_parties = DEFAULT_MAX_PARTIES, max_examples = 1, frac_bits = DEFAULT_FRAC_BITS, round = 0, run = None, secure_agg = None))]
    fn new(
        key_id: &str,
        length: usize,
        max_parties: u32,
        max_examples: u64,
        frac_bits: u32,
        round: u64,
        run: Option<&str>,
        secure_agg: Option<&str>,
    ) -> PyResult<Self> {
        let bounds = Bounds {
            length,
            max_parties,
            max_examples,
            frac_bits,
        };
        let blinded = secure_agg_mode(secure_agg)?.is_some();
        let sum =
            RustSum::new(key_id, bounds, run_bytes(run)?, round, blinded).map_err(setup_error)?;
        Ok(Self { sum, length })
    }

    /// Validates one sealed update exactly as `hefl serve` does, as party `party`'s upload
    /// for this sum's run and round (what its header must name), and adds it.
    fn add(&mut self, py: Python<'_>, message: &[u8], party: u32) -> PyResult<()> {
        let sum = &mut self.sum;
        py.detach(|| sum.add(message, party))
            .map_err(|e| sum_error(e, "submission"))
    }

    /// Validates a model snapshot of this federation as `hefl serve` does: party `party`'s
    /// encryption of its model before round `round` of this sum's run.
    fn check_snapshot(
        &self,
        py: Python<'_>,
        snapshot: &[u8],
        round: u64,
        party: u32,
    ) -> PyResult<()> {
        let sum = &self.sum;
        py.detach(|| sum.check_snapshot(snapshot, round, party))
            .map_err(|e| sum_error(e, "model snapshot"))
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

/// One party's side of a federation: `hefl::fl::Party`, the machine `hefl join` runs.
///
/// Frozen, with the machine behind a mutex taken with the GIL released: calls from several
/// Python threads run one at a time, none holds the GIL while it works.
#[pyclass(frozen, module = "hefl")]
struct Party {
    machine: Mutex<PartyMachine>,
}

impl Party {
    /// Runs `f` on the machine with the GIL released: the lock is taken without the GIL, so
    /// a thread waiting for another's call never stalls Python. (A panic inside a call left
    /// the machine as the library left it.)
    fn with<T: Send>(&self, py: Python<'_>, f: impl FnOnce(&mut PartyMachine) -> T + Send) -> T {
        py.detach(|| {
            let mut machine: MutexGuard<'_, PartyMachine> =
                self.machine.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut machine)
        })
    }
}

#[pymethods]
impl Party {
    #[new]
    #[allow(clippy::too_many_arguments)] // Python's keyword arguments
    #[pyo3(signature = (key, initial, *, max_parties, max_examples, party, frac_bits = DEFAULT_FRAC_BITS, min_parties = 1, snapshot_every = None, run = String::new(), seed = None, secure_agg = None, identity = None, roster = None, roster_fingerprint = None))]
    fn new(
        py: Python<'_>,
        key: &SecretKey,
        initial: &Bound<'_, PyAny>,
        max_parties: u32,
        max_examples: u64,
        party: u32,
        frac_bits: u32,
        min_parties: u32,
        snapshot_every: Option<u64>,
        run: String,
        seed: Option<u64>,
        secure_agg: Option<&str>,
        identity: Option<&Identity>,
        roster: Option<&Roster>,
        roster_fingerprint: Option<&str>,
    ) -> PyResult<Self> {
        let initial = copy_f32_vector(initial, "initial")?;
        let secure_agg = secure_agg_mode(secure_agg)?;
        let credentials = match (identity, roster, roster_fingerprint) {
            (None, None, None) => None,
            (Some(identity), Some(roster), Some(expected)) => Some(
                bridge::credentials(
                    Arc::clone(&identity.identity),
                    Arc::clone(&roster.roster),
                    expected,
                )
                .map_err(roster_error)?,
            ),
            _ => {
                return Err(PyValueError::new_err(
                    "secure aggregation needs identity, roster and roster_fingerprint together",
                ));
            }
        };
        let settings = FlowerSettings {
            bounds: Bounds {
                length: initial.len(),
                max_parties,
                max_examples,
                frac_bits,
            },
            min_parties,
            snapshot_every,
            party,
            label: run,
            seed,
            secure_agg,
        };
        let machine = py
            .detach(|| {
                PartyMachine::flower(key.key.clone(), initial, &settings, credentials.as_ref())
            })
            .map_err(setup_error)?;
        Ok(Self {
            machine: Mutex::new(machine),
        })
    }

    /// Party `party` of the hefl plan `plan_json`, as `hefl join` runs it.
    #[staticmethod]
    #[pyo3(signature = (plan_json, party, key = None))]
    fn from_plan(
        py: Python<'_>,
        plan_json: &str,
        party: u32,
        key: Option<&SecretKey>,
    ) -> PyResult<Self> {
        let key = key.map(|k| k.key.clone());
        let machine = py
            .detach(|| PartyMachine::from_plan(plan_json, party, key))
            .map_err(plan_error)?;
        Ok(Self {
            machine: Mutex::new(machine),
        })
    }

    /// A copy of the global model.
    #[getter]
    fn model<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        let model = self.with(py, |m| m.model().to_vec());
        PyArray1::from_vec(py, model)
    }

    /// The round this party is on: the next whose sum it applies.
    #[getter]
    fn next_round(&self, py: Python<'_>) -> u64 {
        self.with(py, |m| m.next_round())
    }

    /// Rounds skipped so far (their sums were not sums of valid updates).
    #[getter]
    fn skipped(&self, py: Python<'_>) -> Vec<u64> {
        self.with(py, |m| m.skipped().to_vec())
    }

    /// Rounds that were void so far (`strict` secure aggregation).
    #[getter]
    fn voided(&self, py: Python<'_>) -> Vec<u64> {
        self.with(py, |m| m.voided().to_vec())
    }

    /// Whether this party is in its next round's party set (always without secure
    /// aggregation). A party that is not must not seal: it asks to rejoin.
    #[getter]
    fn is_member(&self, py: Python<'_>) -> bool {
        self.with(py, |m| m.is_member())
    }

    /// This party's id.
    #[getter]
    fn party(&self, py: Python<'_>) -> u32 {
        self.with(py, |m| m.federation().party.0)
    }

    /// Values of the model.
    #[getter]
    fn length(&self, py: Python<'_>) -> usize {
        self.with(py, |m| m.federation().length)
    }

    /// The run's fingerprint (public), 64 hex digits.
    #[getter]
    fn fingerprint(&self, py: Python<'_>) -> String {
        hex::encode(self.with(py, |m| m.federation().run))
    }

    /// Seals `update` for the round this party is on, weighted by `examples`: the bytes to
    /// send and the count of clipped values.
    fn seal<'py>(
        &self,
        py: Python<'py>,
        update: &Bound<'py, PyAny>,
        examples: u64,
    ) -> PyResult<(Bound<'py, PyBytes>, usize)> {
        let update = copy_f32_vector(update, "update")?;
        let sealed = self
            .with(py, |m| m.seal(&update, examples))
            .map_err(party_seal_error)?;
        Ok((PyBytes::new(py, &sealed.bytes), sealed.clipped))
    }

    /// Seals the update `trained - model` weighted by `examples`.
    fn seal_model<'py>(
        &self,
        py: Python<'py>,
        trained: &Bound<'py, PyAny>,
        examples: u64,
    ) -> PyResult<(Bound<'py, PyBytes>, usize)> {
        let trained = copy_f32_vector(trained, "trained")?;
        let sealed = self
            .with(py, |m| m.seal_model(&trained, examples))
            .map_err(party_seal_error)?;
        Ok((PyBytes::new(py, &sealed.bytes), sealed.clipped))
    }

    /// Takes round `round`'s published outcome: the sum `aggregate` of the updates of
    /// `parties`, or (`strict` secure aggregation) a `void` round without one; `next_set` is
    /// the next round's party set announced with it (`None`: unchanged).
    #[pyo3(signature = (round, parties, aggregate, *, void = false, next_set = None))]
    fn receive(
        &self,
        py: Python<'_>,
        round: u64,
        parties: Vec<u32>,
        aggregate: &[u8],
        void: bool,
        next_set: Option<Vec<u32>>,
    ) -> PyResult<(&'static str, Option<String>)> {
        let received = self
            .with(py, |m| {
                m.receive(round, &parties, aggregate, void, next_set.as_deref())
            })
            .map_err(published_error)?;
        Ok(match received {
            Received::Applied { .. } => ("applied", None),
            Received::Skipped { reason, .. } => ("skipped", Some(reason.to_string())),
            Received::Stale { .. } => ("stale", None),
            Received::Void { .. } => ("void", None),
        })
    }

    /// The encrypted model snapshot of this party's state: its round and bytes.
    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<(u64, Bound<'py, PyBytes>)> {
        let (round, bytes) = self.with(py, |m| m.snapshot()).map_err(snapshot_error)?;
        Ok((round, PyBytes::new(py, &bytes)))
    }

    /// Resyncs from the model snapshot the server announced as of `round`.
    fn resync(&self, py: Python<'_>, round: u64, snapshot: &[u8]) -> PyResult<()> {
        self.with(py, |m| m.resync(round, snapshot))
            .map_err(snapshot_error)
    }

    /// The party's checkpoint (plaintext model: keep it where the key is).
    fn state<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let bytes = self.with(py, |m| m.state());
        PyBytes::new(py, &bytes)
    }

    /// Continues from a checkpoint of `state()`.
    fn restore(&self, py: Python<'_>, state: &[u8]) -> PyResult<()> {
        self.with(py, |m| m.restore(state)).map_err(restore_error)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        self.with(py, |m| {
            format!(
                "Party(party={}, length={}, next_round={}, skipped={})",
                m.federation().party.0,
                m.federation().length,
                m.next_round(),
                m.skipped().len()
            )
        })
    }
}

/// The compiled core of the `hefl` package.
#[pymodule]
fn _hefl(m: &Bound<'_, PyModule>) -> PyResult<()> {
    hefl::alloc::keep_freed_pages();
    m.add_class::<SecretKey>()?;
    m.add_class::<Envelope>()?;
    m.add_class::<KeylessSum>()?;
    m.add_class::<Party>()?;
    m.add_class::<Identity>()?;
    m.add_class::<Roster>()?;
    m.add_function(wrap_pyfunction!(generate_key, m)?)?;
    m.add_function(wrap_pyfunction!(key_id, m)?)?;
    m.add_function(wrap_pyfunction!(run_fingerprint, m)?)?;
    m.add_function(wrap_pyfunction!(generate_identity, m)?)?;
    m.add("DEFAULT_MAX_PARTIES", DEFAULT_MAX_PARTIES)?;
    m.add("DEFAULT_FRAC_BITS", DEFAULT_FRAC_BITS)?;
    m.add("CLIP", CLIP)?;
    // The `stype` of a Flower Array carrying hefl ciphertext bytes: names the wire version.
    m.add("STYPE", format!("hefl.glwe.v{}", hefl::he::WIRE_VERSION))?;
    Ok(())
}
