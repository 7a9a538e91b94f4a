//! A small synthetic stand-in for MNIST, for tests, examples and benchmarks: ten
//! well-separated classes (class c lights up pixel block c), and the IDX files that hold it.

use super::{Dataset, IMAGE_PIXELS, IMAGE_SIDE, Mnist};
use std::path::Path;

/// Pixel byte `c` of synthetic example `r`: 230 in the block of the example's class, a
/// fixed low pattern elsewhere.
fn pixel(r: usize, c: usize) -> u8 {
    if c / 78 == r % 10 {
        230
    } else {
        ((r * 31 + c * 17) % 13) as u8 * 2
    }
}

/// `n` synthetic examples, labels cycling 0..9, pixels scaled to [0, 1] exactly as the IDX
/// reader scales bytes (so [`write_idx_dir`] and [`load_mnist_dir`](super::load_mnist_dir)
/// give back the same values).
///
/// ```
/// let data = hefl::data::synthetic::separable(100);
/// assert_eq!((data.len(), data.images.ncols()), (100, 784));
/// assert_eq!(data.labels[13], 3);
/// ```
pub fn separable(n: usize) -> Dataset {
    Dataset {
        images: ndarray::Array2::from_shape_fn((n, IMAGE_PIXELS), |(r, c)| {
            f32::from(pixel(r, c)) / 255.0
        }),
        labels: (0..n).map(|r| (r % 10) as u8).collect(),
    }
}

/// A synthetic [`Mnist`] with `train` training and `test` test examples.
pub fn separable_mnist(train: usize, test: usize) -> Mnist {
    Mnist {
        train: separable(train),
        test: separable(test),
    }
}

/// Writes the four raw IDX files of a synthetic data set of `train` and `test` examples
/// into `dir` (which must exist), under MNIST's file names.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// hefl::data::synthetic::write_idx_dir(dir.path(), 60, 20)?;
/// let loaded = hefl::data::load_mnist_dir(dir.path())?;
/// assert_eq!(loaded, hefl::data::synthetic::separable_mnist(60, 20));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn write_idx_dir(dir: &Path, train: usize, test: usize) -> std::io::Result<()> {
    for (prefix, n) in [("train", train), ("t10k", test)] {
        let count = u32::try_from(n).map_err(std::io::Error::other)?;
        let side = IMAGE_SIDE as u32;
        let mut images = Vec::with_capacity(16 + n * IMAGE_PIXELS);
        for word in [0x0803, count, side, side] {
            images.extend_from_slice(&word.to_be_bytes());
        }
        for r in 0..n {
            images.extend((0..IMAGE_PIXELS).map(|c| pixel(r, c)));
        }
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images)?;
        let mut labels = Vec::with_capacity(8 + n);
        for word in [0x0801, count] {
            labels.extend_from_slice(&word.to_be_bytes());
        }
        labels.extend((0..n).map(|r| (r % 10) as u8));
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels)?;
    }
    Ok(())
}
