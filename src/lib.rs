//! hefl: federated learning whose gradients are aggregated under homomorphic encryption.
//!
//! (Crate documentation is completed as the modules land.)

pub mod data;
pub mod fl;
pub mod he;
pub mod model;
pub mod quant;
pub mod report;
