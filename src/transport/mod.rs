//! Moving a federation's bytes between parties and the server.
//!
//! In one process no transport is needed: [`fl::run`](crate::fl::run) passes the sealed
//! bytes to the [`Server`](crate::fl::Server) by value. Across processes or machines,
//! [`http`] carries the same bytes over HTTP. Transports only move bytes: validating and
//! summing updates is the server's job, training the parties'.

pub mod http;
