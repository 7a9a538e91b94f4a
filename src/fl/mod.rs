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

//!
//! Federated rounds run through the protocol's three roles: [`Client`]s compute
//! updates and seal them in an [`Envelope`] of the run's [`Privacy`] mode; a
//! [`Server`] (no key, no model) validates and sums what they send; the
//! [`Strategy`] says what an update is and how the mean is applied. See
//! [`payload`] for what travels in each mode.

mod client;
mod federation;
mod party;
pub mod payload;
mod privacy;
mod server;
mod train;

pub use client::{Client, Update};
pub use federation::{Overhead, RoundError};
pub use party::{PartyError, Plan, Submitted, Uplink, UplinkError, plan_for, run_party};
pub use payload::{DecodeError, PayloadError, PlainSum, Summable, weighted, weighted_mean};
pub use privacy::{Envelope, EnvelopeCost, EnvelopeError, Privacy};
pub use server::{PartyId, Published, Refusal, Round, Server, ServerConfig, ServerConfigError};
pub(crate) use train::clients_and_test_set;
pub use train::{
    EpochMetrics, Mode, Observer, RunMetrics, Strategy, TrainConfig, TrainError, calibrate_noise,
    run,
};
