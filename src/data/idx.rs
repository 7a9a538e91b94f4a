//! The IDX file format (LeCun's, used by MNIST), gzip-compressed or raw.
//!
//! An IDX file is a big-endian header (magic `0x0000_08NN`: unsigned bytes, `NN`
//! dimensions; then one `u32` size per dimension) followed by the data. Headers are
//! untrusted: the whole (decompressed) content is read first, under [`MAX_IDX_BYTES`],
//! and the header's counts must match the bytes actually present before anything is
//! allocated from them.

use std::borrow::Cow;
use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use ndarray::Array2;

use super::{DataError, Dataset, IMAGE_PIXELS, IMAGE_SIDE, Mnist, NUM_CLASSES};

/// Largest decompressed IDX file accepted, in bytes (1 GiB; MNIST's largest is 47 MB).
/// Guards against corrupt headers and gzip bombs.
pub const MAX_IDX_BYTES: u64 = 1 << 30;

/// Magic number of an IDX file of unsigned bytes with 3 dimensions (images).
const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (labels).
const LABELS_MAGIC: u32 = 0x0000_0801;
const IMAGES_HEADER: usize = 16;
const LABELS_HEADER: usize = 8;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Canonical names of the four MNIST files, in the order train images, train labels,
/// test images, test labels.
pub(crate) const MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// File names accepted for a canonical name such as `train-images-idx3-ubyte`: itself,
/// the dotted variant `train-images.idx3-ubyte` (as some mirrors spell it), each raw
/// or with `.gz`.
pub(crate) fn candidate_names(canonical: &str) -> Vec<String> {
    let mut names = vec![canonical.to_string()];
    if let Some((stem, rest)) = canonical.rsplit_once("-idx") {
        names.push(format!("{stem}.idx{rest}"));
    }
    let gz: Vec<String> = names.iter().map(|n| format!("{n}.gz")).collect();
    names
        .into_iter()
        .zip(gz)
        .flat_map(|(a, b)| [a, b])
        .collect()
}

/// The first existing file in `dir` accepted for `canonical`, or [`DataError::Missing`].
pub(crate) fn find_file(dir: &Path, canonical: &str) -> Result<PathBuf, DataError> {
    let candidates = candidate_names(canonical);
    candidates
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| DataError::Missing {
            dir: dir.to_path_buf(),
            name: canonical.to_string(),
            candidates,
        })
}

/// Whether `bytes` start with the gzip magic number.
pub(crate) fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

/// Gzip-compressed `bytes` decompressed, at most `limit` bytes of output. `file`
/// names the source in errors.
pub(crate) fn gunzip(bytes: &[u8], file: &str, limit: u64) -> Result<Vec<u8>, DataError> {
    // MNIST's ratio is about 5:1; start there and let the vector grow if needed.
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(5).min(limit as usize));
    MultiGzDecoder::new(bytes)
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|source| DataError::Gzip {
            file: file.to_string(),
            source,
        })?;
    if out.len() as u64 > limit {
        return Err(DataError::TooLarge {
            file: file.to_string(),
            limit,
        });
    }
    Ok(out)
}

/// The whole content of `path`, decompressed if it is gzip (by magic number, not by
/// name), at most `limit` bytes.
pub(crate) fn read_content(path: &Path, limit: u64) -> Result<Vec<u8>, DataError> {
    let file_name = path.display().to_string();
    let io_err = |source| DataError::Io {
        path: path.to_path_buf(),
        action: "reading",
        source,
    };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let mut bytes = Vec::new();
    // A compressed file is never larger than the content limit, so this bounds both.
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    decode_content(Cow::Owned(bytes), &file_name, limit).map(Cow::into_owned)
}

/// A file's raw `bytes` decompressed if they are gzip (by magic number), at most `limit`
/// bytes of content. `file` names the source in errors.
fn decode_content<'a>(
    bytes: Cow<'a, [u8]>,
    file: &str,
    limit: u64,
) -> Result<Cow<'a, [u8]>, DataError> {
    if is_gzip(&bytes) {
        gunzip(&bytes, file, limit).map(Cow::Owned)
    } else if bytes.len() as u64 > limit {
        Err(DataError::TooLarge {
            file: file.to_string(),
            limit,
        })
    } else {
        Ok(bytes)
    }
}

/// The big-endian `u32` at `at`, zero-padded where `bytes` ends early.
fn be_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    for (dst, src) in word.iter_mut().zip(bytes.iter().skip(at)) {
        *dst = *src;
    }
    u32::from_be_bytes(word)
}

/// Checks the magic number and that the whole header is present.
fn check_header(
    bytes: &[u8],
    file: &str,
    kind: &'static str,
    magic: u32,
    header_len: usize,
) -> Result<(), DataError> {
    let found = be_u32(bytes, 0);
    if found != magic {
        return Err(DataError::BadMagic {
            file: file.to_string(),
            kind,
            expected: magic,
            found,
        });
    }
    if bytes.len() < header_len {
        return Err(DataError::ShortHeader {
            file: file.to_string(),
            expected: header_len,
            found: bytes.len(),
        });
    }
    Ok(())
}

/// Checks the header's item count (at offset 4) against the data actually present;
/// returns the count and the data.
fn checked_data<'a>(
    bytes: &'a [u8],
    file: &str,
    header_len: usize,
    item_bytes: u64,
) -> Result<(usize, &'a [u8]), DataError> {
    let count = be_u32(bytes, 4);
    let data = &bytes[header_len..];
    let expected = u64::from(count) * item_bytes;
    if expected != data.len() as u64 {
        return Err(DataError::Length {
            file: file.to_string(),
            count,
            expected,
            found: data.len() as u64,
        });
    }
    Ok((count as usize, data))
}

/// Parses IDX image content (already decompressed): 28x28 unsigned bytes per image,
/// returned as an `(n, IMAGE_PIXELS)` matrix scaled to `[0, 1]`. `file` names the
/// source in errors.
pub(crate) fn parse_images(bytes: &[u8], file: &str) -> Result<Array2<f32>, DataError> {
    check_header(bytes, file, "images", IMAGES_MAGIC, IMAGES_HEADER)?;
    let dims = (be_u32(bytes, 8), be_u32(bytes, 12));
    if dims != (IMAGE_SIDE as u32, IMAGE_SIDE as u32) {
        return Err(DataError::BadDimensions {
            file: file.to_string(),
            expected: (IMAGE_SIDE, IMAGE_SIDE),
            found: dims,
        });
    }
    let (count, pixels) = checked_data(bytes, file, IMAGES_HEADER, IMAGE_PIXELS as u64)?;
    // Division by 255 keeps 255 exactly 1.0 and vectorises.
    let scaled: Vec<f32> = pixels.iter().map(|&p| f32::from(p) / 255.0).collect();
    Array2::from_shape_vec((count, IMAGE_PIXELS), scaled).map_err(|_| DataError::Length {
        file: file.to_string(),
        count: count as u32,
        expected: (count * IMAGE_PIXELS) as u64,
        found: pixels.len() as u64,
    })
}

/// Parses IDX label content (already decompressed): one byte per label, each in
/// `0..NUM_CLASSES`. `file` names the source in errors.
pub(crate) fn parse_labels(bytes: &[u8], file: &str) -> Result<Vec<u8>, DataError> {
    check_header(bytes, file, "labels", LABELS_MAGIC, LABELS_HEADER)?;
    let (_, labels) = checked_data(bytes, file, LABELS_HEADER, 1)?;
    if let Some((index, &value)) = labels
        .iter()
        .enumerate()
        .find(|&(_, &l)| usize::from(l) >= NUM_CLASSES)
    {
        return Err(DataError::BadLabel {
            file: file.to_string(),
            index,
            value,
            max: (NUM_CLASSES - 1) as u8,
        });
    }
    Ok(labels.to_vec())
}

/// Reads an IDX image file (gzip or raw, detected by its first bytes) into an
/// `(n, IMAGE_PIXELS)` matrix of pixels scaled to `[0, 1]`.
///
/// Errors name the file and what was expected and found: wrong magic number, image
/// size other than 28x28, a length that does not match the header's count.
pub fn read_idx_images(path: &Path) -> Result<Array2<f32>, DataError> {
    let bytes = read_content(path, MAX_IDX_BYTES)?;
    parse_images(&bytes, &path.display().to_string())
}

/// Reads an IDX label file (gzip or raw, detected by its first bytes); every label
/// must be in `0..NUM_CLASSES`.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    let bytes = read_content(path, MAX_IDX_BYTES)?;
    parse_labels(&bytes, &path.display().to_string())
}

/// Parses the bytes of an IDX image file as [`read_idx_images`] reads them from disk:
/// gzip or raw (detected by the first bytes), at most [`MAX_IDX_BYTES`] of content.
/// `file` names the source in errors.
///
/// ```
/// let mut idx = vec![0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 28, 0, 0, 0, 28];
/// idx.extend([255; 784]);
/// let images = hefl::data::parse_idx_images(&idx, "one.idx")?;
/// assert_eq!(images.dim(), (1, 784));
/// assert!(hefl::data::parse_idx_images(&idx[..100], "cut.idx").is_err());
/// # Ok::<(), hefl::data::DataError>(())
/// ```
pub fn parse_idx_images(bytes: &[u8], file: &str) -> Result<Array2<f32>, DataError> {
    let content = decode_content(Cow::Borrowed(bytes), file, MAX_IDX_BYTES)?;
    parse_images(&content, file)
}

/// Parses the bytes of an IDX label file as [`read_idx_labels`] reads them from disk:
/// gzip or raw (detected by the first bytes), at most [`MAX_IDX_BYTES`] of content, every
/// label in `0..NUM_CLASSES`. `file` names the source in errors.
///
/// ```
/// let idx = [0, 0, 8, 1, 0, 0, 0, 2, 7, 3];
/// assert_eq!(hefl::data::parse_idx_labels(&idx, "two.idx")?, [7, 3]);
/// assert!(hefl::data::parse_idx_labels(&[0, 0, 8, 1, 0, 0, 0, 1, 10], "bad.idx").is_err());
/// # Ok::<(), hefl::data::DataError>(())
/// ```
pub fn parse_idx_labels(bytes: &[u8], file: &str) -> Result<Vec<u8>, DataError> {
    let content = decode_content(Cow::Borrowed(bytes), file, MAX_IDX_BYTES)?;
    parse_labels(&content, file)
}

/// Reads an image file and its label file into a [`Dataset`], checking that their
/// counts agree.
fn read_pair(images_path: &Path, labels_path: &Path) -> Result<Dataset, DataError> {
    let images = read_idx_images(images_path)?;
    let labels = read_idx_labels(labels_path)?;
    if images.nrows() != labels.len() {
        return Err(DataError::CountMismatch {
            images_file: images_path.display().to_string(),
            images: images.nrows(),
            labels_file: labels_path.display().to_string(),
            labels: labels.len(),
        });
    }
    Ok(Dataset { images, labels })
}

/// Reads MNIST from the four IDX files in `dir`.
///
/// Each file may be gzip-compressed or raw (told apart by content, not by name) and be
/// called `train-images-idx3-ubyte` or `train-images.idx3-ubyte`, with or without
/// `.gz`; likewise `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and
/// `t10k-labels-idx1-ubyte`. A missing file gives [`DataError::Missing`].
///
/// ```no_run
/// let mnist = hefl::data::load_mnist_dir(std::path::Path::new("../shared/mnist"))?;
/// assert_eq!(mnist.train.len(), 60_000);
/// # Ok::<(), hefl::data::DataError>(())
/// ```
pub fn load_mnist_dir(dir: &Path) -> Result<Mnist, DataError> {
    let [train_images, train_labels, test_images, test_labels] =
        MNIST_FILES.map(|name| find_file(dir, name));
    let (train_images, train_labels) = (train_images?, train_labels?);
    let (test_images, test_labels) = (test_images?, test_labels?);
    // The training images are most of the work: decode them beside the rest.
    let (train, test) = std::thread::scope(|scope| {
        let train = scope.spawn(|| read_pair(&train_images, &train_labels));
        let test = read_pair(&test_images, &test_labels);
        (train.join(), test)
    });
    let train = train.unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
    Ok(Mnist { train, test: test? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_names_cover_both_spellings() {
        assert_eq!(
            candidate_names("t10k-labels-idx1-ubyte"),
            vec![
                "t10k-labels-idx1-ubyte",
                "t10k-labels-idx1-ubyte.gz",
                "t10k-labels.idx1-ubyte",
                "t10k-labels.idx1-ubyte.gz",
            ]
        );
    }

    #[test]
    fn gzip_bomb_is_refused() {
        use flate2::{Compression, write::GzEncoder};
        use std::io::Write;
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(&[0u8; 10_000]).expect("in-memory write");
        let gz = enc.finish().expect("in-memory gzip");
        assert!(matches!(
            gunzip(&gz, "bomb", 1000),
            Err(DataError::TooLarge { limit: 1000, .. })
        ));
        assert_eq!(
            gunzip(&gz, "ok", 10_000).map(|v| v.len()).ok(),
            Some(10_000)
        );
    }

    #[test]
    fn corrupt_gzip_is_an_error() {
        let bytes = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 1, 2, 3];
        assert!(matches!(
            gunzip(&bytes, "x.gz", 100),
            Err(DataError::Gzip { .. })
        ));
    }

    #[test]
    fn tiny_inputs_never_panic() {
        for len in 0..20 {
            let mut bytes = vec![0u8; len];
            if len >= 4 {
                bytes[3] = 3;
                bytes[2] = 8;
            }
            assert!(parse_images(&bytes, "f").is_err());
            assert!(parse_labels(&bytes, "f").is_err());
        }
    }

    #[test]
    fn huge_count_is_checked_before_allocating() {
        let mut bytes = vec![0, 0, 8, 3];
        bytes.extend(u32::MAX.to_be_bytes());
        bytes.extend(28u32.to_be_bytes());
        bytes.extend(28u32.to_be_bytes());
        let err = parse_images(&bytes, "f").expect_err("count does not match");
        assert!(matches!(
            err,
            DataError::Length {
                count: u32::MAX,
                found: 0,
                ..
            }
        ));
    }
}
