//! Training: one loop for the local, centralized and federated modes.
//!
//! Every mode is a set of [`Client`]s running rounds:
//!
//! * **local**: one client holding only party 0's shard (the "local model"
//!   baseline: what a party gets without collaborating);
//! * **centralized**: one client holding all the training data (the upper
//!   baseline: what pooling the data would give);
//! * **federated**: `P` clients, one per shard. Each round every client computes
//!   an update on its own data, the updates are combined by the [`Strategy`]
//!   (FedSGD: one batch gradient each; FedAvg: `k` local steps, deltas weighted
//!   by sample count), and every client applies the same aggregate, so all
//!   models stay identical without anyone holding a central copy.
//!
//! With one client, FedSGD reduces exactly to ordinary mini-batch training, so
//! the baselines and the federated run share every line of the loop.

mod client;
mod train;

pub use client::{Client, Update};
pub use train::{
    EpochMetrics, Mode, Observer, RunMetrics, Strategy, TrainConfig, TrainError, aggregate_plain,
    run,
};
