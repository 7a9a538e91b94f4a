//! What a run reports: per-epoch test results, the cost of the privacy envelope, progress.

use super::config::{Privacy, TrainConfig};
use super::envelope::EnvelopeCost;
use crate::model::{InputProjection, Mlp, ModelError};
use serde::{Deserialize, Serialize};

/// Test-set results after one epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Fraction of test images classified correctly, 0..=1.
    pub test_accuracy: f64,
    /// Mean test cross-entropy.
    pub test_loss: f64,
    /// Mean training loss over the epoch's batches of the reporting party (party 0 in a
    /// federation run in one process).
    pub train_loss: f64,
    /// Wall-clock seconds this epoch took (training and evaluation).
    pub wall_seconds: f64,
    /// Wall-clock seconds since the run started.
    pub elapsed_seconds: f64,
    /// Aggregation rounds run in this epoch.
    pub rounds: usize,
    /// DP runs: the (ε, δ) guarantee's ε spent so far by each party.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
}

/// A whole run: its configuration and one entry per epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunMetrics {
    /// The configuration that produced these numbers.
    pub config: TrainConfig,
    /// Training samples per party, in party order (one entry for a single party's run).
    pub party_samples: Vec<usize>,
    /// Per-epoch test results.
    pub epochs: Vec<EpochMetrics>,
    /// Wall-clock seconds of the whole run.
    pub total_seconds: f64,
    /// Federated runs: time spent sealing, summing and opening updates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overhead: Option<Overhead>,
    /// The final model's parameters (party 0's; in federated runs every party's is
    /// identical). Not written to metrics files.
    #[serde(skip)]
    pub final_params: Vec<f32>,
    /// The DP-PCA projection the run's inputs went through (part of the final model). Not
    /// written to metrics files.
    #[serde(skip)]
    pub input_projection: Option<InputProjection>,
}

impl RunMetrics {
    /// The last epoch's test accuracy, if any epoch ran.
    pub fn final_accuracy(&self) -> Option<f64> {
        self.epochs.last().map(|e| e.test_accuracy)
    }

    /// The run's final model (party 0's): the configuration's layers and activation with
    /// [`RunMetrics::final_params`], behind the run's input projection if it had one. Fails
    /// for metrics read back from a metrics file, which does not hold the parameters.
    pub fn final_model(&self) -> Result<Mlp, ModelError> {
        Mlp::from_params(&self.config.layers, self.final_params.clone())?
            .set_activation(self.config.activation)
            .set_projection(self.input_projection.clone())
    }
}

/// Where the time of a federated run's envelopes went.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Overhead {
    /// The privacy mode.
    pub privacy: Privacy,
    /// Wall-clock seconds the reporting party spent sealing updates (encode + encrypt).
    pub seal_seconds: f64,
    /// Wall-clock seconds in the server (validating and summing submissions); known only
    /// when the server runs in the same process.
    pub server_seconds: f64,
    /// Wall-clock seconds the reporting party spent opening aggregates (decrypt + decode).
    pub open_seconds: f64,
    /// CPU seconds per operation, summed over the parties in this process.
    pub client_cpu: EnvelopeCost,
    /// Rounds the reporting party skipped because their sum could not be a sum of valid
    /// updates (some party sent garbage).
    #[serde(default)]
    pub skipped_rounds: Vec<u64>,
    /// Strict secure aggregation: rounds that were void for the reporting party (a member
    /// missed the deadline, or the server restarted): no step.
    #[serde(default)]
    pub void_rounds: Vec<u64>,
    /// Values of the reporting party's updates beyond the clip bound, clipped to it.
    #[serde(default)]
    pub clipped_values: u64,
    /// Times the reporting party resynced from a model snapshot (it fell behind further than
    /// the sums the server keeps).
    #[serde(default)]
    pub resyncs: u64,
}

impl Overhead {
    /// Wall-clock seconds spent on envelopes and the server's sum.
    pub fn total_seconds(&self) -> f64 {
        self.seal_seconds + self.server_seconds + self.open_seconds
    }
}

/// Receives progress from a run; every method has an empty default.
pub trait Observer {
    /// Called once before training with the total number of rounds.
    fn start(&mut self, _config: &TrainConfig, _total_rounds: usize) {}
    /// Called after every aggregation round with the number of rounds done.
    fn round(&mut self, _round: usize) {}
    /// Called after every epoch's evaluation.
    fn epoch(&mut self, _config: &TrainConfig, _metrics: &EpochMetrics) {}
    /// Something the user should know (a party left out of a round, ...).
    fn note(&mut self, _message: &str) {}
}

/// An observer that ignores everything.
impl Observer for () {}
