//! hefl's integration tests, one binary (each test file a module; shared helpers in
//! [`util`]): the library and the `hefl` command end to end, on synthetic data, on real
//! MNIST when `MNIST_DIR` points at it, and on loopback for the network transport.

mod cli;
mod data;
mod docs;
mod dp;
mod fuzz_corpus;
mod he;
mod hostile;
mod model_file;
#[cfg(feature = "net")]
mod network;
mod party;
mod perf;
mod quant;
mod robust;
mod secagg;
mod server;
mod train;
mod util;
