//! MNIST data: reading IDX files, loading and downloading the data set, and splitting
//! it among federated-learning parties.
//!
//! - [`load_mnist_dir`] reads the four standard IDX files (gzip-compressed or raw) from
//!   a directory into a [`Mnist`] of two [`Dataset`]s, images scaled to `[0, 1]`.
//! - [`resolve_data_dir`] decides where the files live: a CLI flag, else `$MNIST_DIR`,
//!   else a per-user cache directory.
//! - [`load_or_download`] (feature `download`) loads from there and, when the files are
//!   missing, first downloads them from a public mirror, verifying the SHA-256 of their
//!   decompressed content before anything is written into the cache.
//! - [`partition`] splits a data set's indices among parties, IID or skewed by label
//!   with a Dirichlet distribution, deterministically from a seed.
//!
//! Files are untrusted input: every header field is checked against the bytes that are
//! actually there before anything is allocated from it, and every failure is a
//! [`DataError`] naming the file and what was expected and found, never a panic.
//!
//! ```no_run
//! # #[cfg(feature = "download")] {
//! use hefl::data::{Partition, load_or_download, partition};
//!
//! let mnist = load_or_download(None)?;
//! let parts = partition(&mnist.train.labels, 3, Partition::Dirichlet { alpha: 0.5 }, 42)?;
//! let first_party = mnist.train.subset(&parts[0]);
//! println!("party 0 holds {} images", first_party.len());
//! # }
//! # Ok::<(), hefl::data::DataError>(())
//! ```

#[cfg(feature = "download")]
mod download;
mod error;
mod idx;
mod partition;
pub mod synthetic;

use std::path::{Path, PathBuf};

use ndarray::{Array2, Axis, s};

#[cfg(feature = "download")]
pub use download::{
    DEFAULT_MIRROR, MAX_DOWNLOAD_BYTES, MIRROR_ENV, MNIST_SHA256, download_mnist,
    download_mnist_with, load_or_download, load_or_download_with,
};
pub use error::DataError;
pub use idx::{
    MAX_IDX_BYTES, load_mnist_dir, parse_idx_images, parse_idx_labels, read_idx_images,
    read_idx_labels,
};
pub use partition::{Partition, partition};

/// Width and height of an MNIST image, in pixels.
pub const IMAGE_SIDE: usize = 28;
/// Pixels in one MNIST image (`IMAGE_SIDE * IMAGE_SIDE`): the length of a row of
/// [`Dataset::images`].
pub const IMAGE_PIXELS: usize = IMAGE_SIDE * IMAGE_SIDE;
/// Number of digit classes; labels are `0..NUM_CLASSES`.
pub const NUM_CLASSES: usize = 10;

/// Environment variable naming the directory that holds the MNIST IDX files.
pub const DATA_DIR_ENV: &str = "MNIST_DIR";

/// Labelled images: row `i` of `images` is the image whose digit is `labels[i]`.
///
/// Images are rows of an `(n, IMAGE_PIXELS)` matrix, row-major 28x28 pixels scaled to
/// `[0, 1]`; labels are in `0..NUM_CLASSES`.
///
/// ```
/// use hefl::data::{Dataset, IMAGE_PIXELS};
/// use ndarray::Array2;
///
/// let data = Dataset {
///     images: Array2::zeros((3, IMAGE_PIXELS)),
///     labels: vec![7, 1, 4],
/// };
/// assert_eq!(data.subset(&[2, 0]).labels, vec![4, 7]);
/// assert_eq!(data.take(2).len(), 2);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// `(n, IMAGE_PIXELS)` pixel intensities in `[0, 1]`.
    pub images: Array2<f32>,
    /// `n` labels in `0..NUM_CLASSES`.
    pub labels: Vec<u8>,
}

impl Dataset {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the data set holds no example.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The examples at `indices`, in that order (an index may repeat).
    ///
    /// # Panics
    ///
    /// If an index is `>= self.len()`: indices come from the program (for example
    /// from [`partition`]), not from outside.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        Dataset {
            images: self.images.select(Axis(0), indices),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
        }
    }

    /// The first `min(n, self.len())` examples.
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        Dataset {
            images: self.images.slice(s![..n, ..]).to_owned(),
            labels: self.labels[..n].to_vec(),
        }
    }
}

/// The MNIST training (60,000 images) and test (10,000 images) sets.
#[derive(Clone, Debug, PartialEq)]
pub struct Mnist {
    /// Training set (`train-images` / `train-labels`).
    pub train: Dataset,
    /// Test set (`t10k-images` / `t10k-labels`).
    pub test: Dataset,
}

/// The directory to read MNIST from: `flag` if given, else `$MNIST_DIR` if set and not
/// empty, else a per-user cache directory: `$XDG_CACHE_HOME/hefl/mnist`, or
/// `$HOME/.cache/hefl/mnist`, or (with neither set) `hefl/mnist` under the system's
/// temporary directory.
///
/// The directory need not exist; [`load_or_download`] creates it when it downloads.
///
/// ```
/// use std::path::Path;
///
/// let dir = hefl::data::resolve_data_dir(Some(Path::new("/data/mnist")));
/// assert_eq!(dir, Path::new("/data/mnist"));
/// ```
pub fn resolve_data_dir(flag: Option<&Path>) -> PathBuf {
    resolve_data_dir_from(
        flag,
        std::env::var_os(DATA_DIR_ENV),
        std::env::var_os("XDG_CACHE_HOME"),
        std::env::var_os("HOME"),
    )
}

/// [`resolve_data_dir`] with the environment passed in, so it can be tested without
/// touching the process environment.
fn resolve_data_dir_from(
    flag: Option<&Path>,
    mnist_dir: Option<std::ffi::OsString>,
    xdg_cache_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> PathBuf {
    let non_empty = |v: Option<std::ffi::OsString>| v.filter(|s| !s.is_empty()).map(PathBuf::from);
    if let Some(flag) = flag {
        return flag.to_path_buf();
    }
    if let Some(dir) = non_empty(mnist_dir) {
        return dir;
    }
    // The XDG spec says to ignore a relative XDG_CACHE_HOME.
    let cache = non_empty(xdg_cache_home)
        .filter(|p| p.is_absolute())
        .or_else(|| non_empty(home).map(|h| h.join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("hefl").join("mnist")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn os(s: &str) -> Option<OsString> {
        Some(OsString::from(s))
    }

    #[test]
    fn data_dir_precedence() {
        let flag = Path::new("/flag");
        assert_eq!(
            resolve_data_dir_from(Some(flag), os("/env"), os("/xdg"), os("/home/u")),
            PathBuf::from("/flag")
        );
        assert_eq!(
            resolve_data_dir_from(None, os("/env"), os("/xdg"), os("/home/u")),
            PathBuf::from("/env")
        );
        assert_eq!(
            resolve_data_dir_from(None, os(""), os("/xdg"), os("/home/u")),
            PathBuf::from("/xdg/hefl/mnist")
        );
        assert_eq!(
            resolve_data_dir_from(None, None, os("relative"), os("/home/u")),
            PathBuf::from("/home/u/.cache/hefl/mnist")
        );
        assert_eq!(
            resolve_data_dir_from(None, None, None, None),
            std::env::temp_dir().join("hefl/mnist")
        );
    }

    #[test]
    fn subset_and_take() {
        let images = Array2::from_shape_fn((4, IMAGE_PIXELS), |(r, _)| r as f32);
        let data = Dataset {
            images,
            labels: vec![0, 1, 2, 3],
        };
        let sub = data.subset(&[3, 1, 3]);
        assert_eq!(sub.labels, vec![3, 1, 3]);
        assert_eq!(sub.images.column(0).to_vec(), vec![3.0, 1.0, 3.0]);
        assert_eq!(data.take(10).len(), 4);
        let first = data.take(1);
        assert_eq!(first.images.dim(), (1, IMAGE_PIXELS));
        assert!(data.take(0).is_empty());
    }
}
