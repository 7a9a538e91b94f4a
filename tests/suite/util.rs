//! Helpers shared by the test modules.

use hefl::data::Mnist;
use std::path::{Path, PathBuf};

/// The synthetic task most tests train on: 600 training and 200 test examples of ten
/// well-separated classes.
pub fn tiny_mnist() -> Mnist {
    hefl::data::synthetic::separable_mnist(600, 200)
}

/// Writes [`tiny_mnist`] as IDX files into `dir`, for the `hefl` binary to read.
pub fn write_tiny_mnist(dir: &Path) {
    hefl::data::synthetic::write_idx_dir(dir, 600, 200).expect("write the synthetic IDX files");
}

/// Real MNIST from `$MNIST_DIR`, or `None` with the reason printed (the test then skips).
pub fn real_mnist() -> Option<Mnist> {
    let Some(dir) = std::env::var_os("MNIST_DIR").map(PathBuf::from) else {
        eprintln!("skipped: MNIST_DIR is not set (CI sets MNIST_DIR=../shared/mnist)");
        return None;
    };
    match hefl::data::load_mnist_dir(&dir) {
        Ok(m) => Some(m),
        Err(e) => {
            eprintln!("skipped: no MNIST in {}: {e}", dir.display());
            None
        }
    }
}
