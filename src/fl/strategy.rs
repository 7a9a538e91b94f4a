//! How the parties' updates are combined each round.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How the parties' updates are combined each round.
///
/// hefl applies the strategy on every client, where Flower applies it on the server: the
/// server holds no model and, in `he` mode, cannot read an update, so it can only add; each
/// client turns the decrypted sum into the mean and steps its own copy of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Strategy {
    /// Federated SGD: every party sends the gradient of one local batch; the
    /// sample-weighted mean gradient is applied by every party's optimizer.
    FedSgd,
    /// Federated averaging: every party takes `local_steps` optimizer steps on
    /// its own data and sends the model delta; deltas are averaged weighted by
    /// the number of samples each party used.
    FedAvg {
        /// Local optimizer steps per round (at least 1).
        local_steps: usize,
    },
}

impl Strategy {
    /// Local optimizer steps in one round: 1 for FedSGD, `local_steps` for FedAvg.
    ///
    /// ```
    /// use hefl::fl::Strategy;
    ///
    /// assert_eq!(Strategy::FedSgd.steps_per_round(), 1);
    /// assert_eq!(Strategy::FedAvg { local_steps: 5 }.steps_per_round(), 5);
    /// ```
    pub fn steps_per_round(self) -> usize {
        match self {
            Self::FedSgd => 1,
            Self::FedAvg { local_steps } => local_steps.max(1),
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FedSgd => f.write_str("fedsgd"),
            Self::FedAvg { local_steps } => write!(f, "fedavg (k = {local_steps})"),
        }
    }
}

/// How the round's mean update moves the global model.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// The mean is a gradient: `optimizer` (with learning rate `lr`) steps the model with it
    /// (FedSGD; the optimizer's state is part of what all parties hold identically).
    Gradient {
        /// The optimizer.
        optimizer: crate::model::OptimizerKind,
        /// Its learning rate.
        lr: f32,
    },
    /// The mean is a model delta: it is added to the model (FedAvg, and Flower's).
    Delta,
}
