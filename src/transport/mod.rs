//! Moving a federation's bytes between parties and the server across processes or machines.
//!
//! In one process the parties call the [`Hub`](crate::fl::Hub) through
//! [`HubUplink`](crate::fl::HubUplink); across processes, [`http`] puts the same hub behind
//! HTTP handlers and gives parties an [`Uplink`](crate::fl::Uplink) that calls them.
//! Transports only move bytes and check who is speaking ([`Tokens`]): validating and summing
//! updates is the server's job, training the parties'. Running a federation over the
//! network (tokens, limits, TLS, restarts) is described for operators in the guide
//! `docs/deployment.md`.

#[cfg(feature = "net")]
pub mod http;
#[cfg(feature = "net")]
mod limits;
#[cfg(feature = "net")]
mod metrics;
mod tokens;

#[cfg(feature = "net")]
pub use limits::{Limits, MAX_CONNECTIONS};
pub use tokens::{Tokens, TokensError, parse_tokens};
