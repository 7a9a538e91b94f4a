//! Flower's SecAgg+ measured in the same run as hefl's `robust` secure aggregation: the
//! script `benches/flower_secaggplus.py` (embedded here) times Flower's own client stages
//! and server unmask on the same vector length, P, k and T, under a Python that has `flwr`.
//!
//! The interpreter is `$HEFL_FLOWER_PYTHON` ([`FLOWER_PYTHON_ENV`]) or `python3`. When it
//! cannot run or has no Flower, [`measure`] says why ([`FlowerError`]) and `bench-report`
//! prints that instead of numbers.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

/// The environment variable naming the Python interpreter with `flwr` installed.
pub const FLOWER_PYTHON_ENV: &str = "HEFL_FLOWER_PYTHON";

/// The measuring script, run with `python -c`.
const SCRIPT: &str = include_str!("../../benches/flower_secaggplus.py");

/// The script's exit status when Flower cannot be imported.
const NO_FLOWER: i32 = 3;

/// Why Flower was not measured.
#[derive(Debug, thiserror::Error)]
pub enum FlowerError {
    /// The interpreter could not be started.
    #[error("cannot run {python}: {source} (set {FLOWER_PYTHON_ENV} to a Python with flwr)", python = .python.display())]
    Spawn {
        /// The interpreter.
        python: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The interpreter has no (usable) Flower.
    #[error("{python} has no Flower: {message} (set {FLOWER_PYTHON_ENV} to a Python with flwr >= 1.41)", python = .python.display())]
    NoFlower {
        /// The interpreter.
        python: PathBuf,
        /// The script's message.
        message: String,
    },
    /// The script failed.
    #[error("the Flower script under {python} failed ({status}): {stderr}", python = .python.display())]
    Failed {
        /// The interpreter.
        python: PathBuf,
        /// Its exit status.
        status: ExitStatus,
        /// The end of its standard error.
        stderr: String,
    },
    /// The script's output does not parse.
    #[error("the Flower script printed no valid row: {reason}")]
    Output {
        /// Why.
        reason: String,
    },
}

/// What to measure at one party count: Flower's `num_shares` is `neighbours` + 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowerShape {
    /// Nodes in the round.
    pub parties: u32,
    /// Neighbours per node (hefl's k).
    pub neighbours: u32,
    /// Shares that rebuild a secret (T).
    pub threshold: u32,
    /// Dropout counts to time the server's unmask with.
    pub dropouts: Vec<u32>,
}

/// Medians of one Flower client's round, seconds of process CPU time.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
pub struct FlowerClient {
    /// Key pairs, shares, their encryption and decryption, the unmask answer.
    pub keys_and_shares: f64,
    /// The private and pair masks (their ECDH included) added into the vector.
    pub mask: f64,
    /// Flower's weighting and quantization (not counted in the client's total).
    pub encode: f64,
}

impl FlowerClient {
    /// The client's secure aggregation work per round (encoding left out, as in hefl).
    pub fn total(&self) -> f64 {
        self.keys_and_shares + self.mask
    }
}

/// What one Flower client sends and receives per round, payload bytes without framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct FlowerBytes {
    /// The masked vector (int64 arrays as `ndarray_to_bytes`).
    pub masked_vector: usize,
    /// Up besides it: two PEM public keys, k Fernet share messages, the unmask shares.
    pub extra_up: usize,
    /// Down: the neighbourhood's public keys, k share messages, the unmask request.
    pub extra_down: usize,
}

/// The server's unmask with some dropouts.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
pub struct FlowerUnmask {
    /// Nodes that dropped after sharing their keys.
    pub dropouts: u32,
    /// Median wall time, seconds.
    pub unmask: f64,
    /// Runs timed.
    pub runs: usize,
}

/// Flower measured at one party count.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct FlowerRow {
    /// Nodes.
    pub parties: u32,
    /// Neighbours per node.
    pub neighbours: u32,
    /// Reconstruction threshold.
    pub threshold: u32,
    /// Flower's `num_shares` (the neighbourhood, the node included).
    pub num_shares: u32,
    /// One client's round.
    pub client: FlowerClient,
    /// Client rounds timed.
    pub client_runs: usize,
    /// One client's bytes.
    pub bytes: FlowerBytes,
    /// The server's unmask per dropout count.
    pub server: Vec<FlowerUnmask>,
    /// Flower's version.
    pub flower: String,
    /// Python's version.
    pub python: String,
    /// numpy's version.
    pub numpy: String,
    /// Values in the vector.
    pub values: usize,
}

impl FlowerRow {
    /// Bytes per value a client uploads: the masked vector and the extra messages.
    pub fn bytes_per_value(&self) -> f64 {
        (self.bytes.masked_vector + self.bytes.extra_up) as f64 / self.values as f64
    }
}

/// The interpreter to run: `$HEFL_FLOWER_PYTHON`, else `python3`.
pub fn flower_python() -> PathBuf {
    std::env::var_os(FLOWER_PYTHON_ENV).map_or_else(|| PathBuf::from("python3"), PathBuf::from)
}

/// Runs the script under `python` for one party count: `repeats` timed client rounds (after
/// a warm-up) and server unmasks per dropout count, on `values` values.
pub fn measure(
    python: &Path,
    shape: &FlowerShape,
    values: usize,
    repeats: usize,
) -> Result<FlowerRow, FlowerError> {
    let dropouts: Vec<String> = shape.dropouts.iter().map(u32::to_string).collect();
    let row = format!(
        "{}:{}:{}:{}",
        shape.parties,
        shape.neighbours,
        shape.threshold,
        dropouts.join(",")
    );
    let output = Command::new(python)
        .args(["-c", SCRIPT, "--values", &values.to_string()])
        .args(["--repeats", &repeats.to_string(), "--row", &row])
        .output()
        .map_err(|source| FlowerError::Spawn {
            python: python.to_path_buf(),
            source,
        })?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The last lines say why, after any traceback.
    let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
    let tail = tail.into_iter().rev().collect::<Vec<_>>().join(" | ");
    if output.status.code() == Some(NO_FLOWER) {
        return Err(FlowerError::NoFlower {
            python: python.to_path_buf(),
            message: tail,
        });
    }
    if !output.status.success() {
        return Err(FlowerError::Failed {
            python: python.to_path_buf(),
            status: output.status,
            stderr: tail,
        });
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().ok_or_else(|| FlowerError::Output {
        reason: "no output".into(),
    })?;
    let row: FlowerRow = serde_json::from_str(line).map_err(|e| FlowerError::Output {
        reason: e.to_string(),
    })?;
    if row.parties != shape.parties || row.server.len() != shape.dropouts.len() {
        return Err(FlowerError::Output {
            reason: format!(
                "a row for {} parties and {} dropout counts, asked {} and {}",
                row.parties,
                row.server.len(),
                shape.parties,
                shape.dropouts.len()
            ),
        });
    }
    Ok(row)
}
