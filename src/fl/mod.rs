//! Federated training: the round protocol's two state machines (a [`Party`] and a
//! [`Server`]), the one training loop that drives a party, and the hub every transport
//! drives the server through.
//!
//! Every mode is a set of [`Client`]s running rounds:
//!
//! * **local**: one client holding only party 0's shard (the "local model"
//!   baseline: what a party gets without collaborating);
//! * **centralized**: one client holding all the training data (the upper
//!   baseline: what pooling the data would give);
//! * **federated**: `P` clients, one per shard. Each round every client computes
//!   an update on its own data from the global model; its [`Party`] seals it in an
//!   [`Envelope`] of the run's [`Privacy`] mode and it is submitted; a [`Server`] (no key, no
//!   model) validates and sums what they send; each [`Party`] opens the sum and moves the
//!   global model as the [`Strategy`] says ([`Step`]). Every party applies the same sums in
//!   the same order, so all models stay identical without anyone holding a central copy.
//!   See [`payload`] for what travels in each mode and [`Encoding`] for the arithmetic.
//!
//! hefl applies the strategy on every client, where Flower applies it on the server,
//! because its server holds no model and in `he` mode cannot read an update: it can only
//! add ciphertexts.
//!
//! # Two machines, one loop, one hub, two transports
//!
//! ```text
//!   Party (no I/O)       run_party (the only Rust client loop)     Hub (Server + clock, no I/O)
//!   seal      ------->   Uplink::submit  ----------------------->  Hub::submit
//!   receive   <-------   Uplink::fetch   <-----------------------  Hub::fetch (ticks deadlines)
//!   resync    <-------   Uplink::snapshot <----------------------  Hub::snapshot
//!                        HubUplink: in-process threads  |  transport::http: HTTP handlers
//! ```
//!
//! The [`Party`] machine decides everything about a round on the client's side (order,
//! catch-up, the skip rule, resyncing, snapshots); [`run_party`] only moves its bytes and adds
//! retries, checkpoints and evaluation, and the Python binding's `hefl.Party` is the same
//! machine, driven by `hefl.flower` from Flower messages. [`run`] in federated mode is one
//! [`Hub`] and one thread per party, each running [`run_party`]'s loop through a
//! [`HubUplink`]; `hefl serve` puts the same [`Hub`] behind HTTP handlers and `hefl join`
//! runs the same loop through an HTTP uplink. So a simulation is a deployment on one
//! machine: deadlines and `min_parties` ([`RoundRules`], carried in the [`Plan`]) act the
//! same way. The baselines run the same loop with one trainer whose update is the aggregate
//! (with one client, FedSGD is ordinary mini-batch training).
//!
//! Modules depend one way: [`strategy`](Strategy), [`config`](TrainConfig) and the rules at
//! the bottom; payload, encoding, envelope, client, server above them; party (the machine),
//! plan, error, metrics, setup; then the driver (the loop), hub (which implements the
//! in-process uplink) and run.

pub mod checkpoint;
mod client;
mod config;
mod driver;
pub mod encoding;
mod envelope;
mod error;
mod hub;
mod metrics;
pub mod party;
pub mod payload;
mod plan;
mod rules;
mod run;
mod seeds;
mod server;
mod setup;
mod strategy;
mod tune;
mod uplink;

pub use client::{Client, ClientStateError, Update};
pub use config::{
    ConfigError, Field, MAX_BATCH_SIZE, MAX_EPOCHS, MAX_LOCAL_STEPS, MAX_PARTIES, Mode, Privacy,
    TrainConfig, ValidConfig, check_dp_sgd, check_positive, check_probability, check_range,
};
pub use driver::{PartyOptions, run_party};
pub use encoding::{DecodeError, EncodeError, Encoded, Encoding, Weighting};
pub use envelope::{Envelope, EnvelopeCost, EnvelopeError, Sealed};
pub use error::{MalformedAnswer, PartyError, RefusalKind, TrainError, UplinkError};
pub use hub::{Hub, HubEvent, HubUplink, Missing, PartyStatus, RoundStatus, ServeReport, Status};
pub use metrics::{EpochMetrics, Observer, Overhead, RunMetrics};
pub use party::{
    Federation, GlobalModel, Party, PartyState, PublishedError, Received, SealError, SetupError,
    SnapshotError, StateError,
};
pub use payload::{PayloadError, PlainError, PlainShape, PlainSum, Summable};
pub use plan::{MAX_ROUNDS, Plan, PlanPartyError, RunId, ValidPlan, plan_for};
pub use rules::{
    DEFAULT_ABSENT_AFTER, DEFAULT_KEEP_ROUNDS, DEFAULT_SNAPSHOT_EVERY, MAX_ROUND_TIMEOUT,
    RoundRules,
};
pub use run::{run, run_with};
pub use server::{
    ModelSnapshot, PartyId, PartySets, Published, Refusal, RestoreError, Round, Server,
    ServerState, SnapshotRefusal,
};
pub use setup::{calibrate_noise, sampling_rate_and_steps};
pub use strategy::{Step, Strategy};
pub use tune::{
    DEFAULT_VALIDATION_SIZE, DpTrial, TrialResult, TuneObserver, TunedDp, default_grid, run_trial,
    tune, tuning_grid, validation_split,
};
pub use uplink::{Retry, Submitted, Uplink};
