//! The one error type of the data module.

use std::path::PathBuf;

/// Everything that can go wrong reading, downloading or partitioning data.
///
/// Messages name the file (or URL) and say what was expected and what was found.
/// `file` fields hold a path or URL as text, because downloaded bytes are checked
/// before they become a file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An I/O operation on a file or directory failed.
    #[error("{}: {action} failed: {source}", path.display())]
    Io {
        /// File or directory operated on.
        path: PathBuf,
        /// What was being done ("reading", "creating directory", ...).
        action: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },

    /// None of the accepted names of an IDX file exists in the directory.
    #[error(
        "no {name} file in {}: looked for {}",
        dir.display(),
        candidates.join(", ")
    )]
    Missing {
        /// Directory searched.
        dir: PathBuf,
        /// Canonical name of the file, such as `train-images-idx3-ubyte`.
        name: String,
        /// Every file name that would have been accepted.
        candidates: Vec<String>,
    },

    /// The bytes start like gzip but do not decompress.
    #[error("{file}: corrupt gzip data: {source}")]
    Gzip {
        /// File or URL.
        file: String,
        /// The decompressor's error.
        source: std::io::Error,
    },

    /// The (decompressed) content exceeds the size accepted for an IDX file.
    #[error("{file}: larger than the limit of {limit} bytes for an IDX file")]
    TooLarge {
        /// File or URL.
        file: String,
        /// Limit in bytes.
        limit: u64,
    },

    /// Wrong IDX magic number (data type and number of dimensions).
    #[error(
        "{file}: wrong IDX magic number: expected {expected:#010x} ({kind}), found {found:#010x}"
    )]
    BadMagic {
        /// File or URL.
        file: String,
        /// "images" or "labels".
        kind: &'static str,
        /// Magic number for that kind.
        expected: u32,
        /// Magic number in the file (big-endian, zero-padded if the file is shorter).
        found: u32,
    },

    /// The file ends inside its IDX header.
    #[error("{file}: truncated IDX header: expected {expected} bytes, found {found}")]
    ShortHeader {
        /// File or URL.
        file: String,
        /// Header length.
        expected: usize,
        /// Bytes in the file.
        found: usize,
    },

    /// Image dimensions other than 28x28.
    #[error("{file}: wrong image size: expected {}x{}, found {}x{}", expected.0, expected.1, found.0, found.1)]
    BadDimensions {
        /// File or URL.
        file: String,
        /// `(rows, columns)` expected.
        expected: (usize, usize),
        /// `(rows, columns)` in the header.
        found: (u32, u32),
    },

    /// The data after the header is not as long as the header's count announces:
    /// a truncated file (or trailing garbage).
    #[error(
        "{file}: header announces {count} items, i.e. {expected} bytes of data, found {found} bytes{}",
        if found < expected { " (truncated file)" } else { " (trailing bytes)" }
    )]
    Length {
        /// File or URL.
        file: String,
        /// Item count in the header.
        count: u32,
        /// Data bytes that count implies.
        expected: u64,
        /// Data bytes present.
        found: u64,
    },

    /// A label outside `0..NUM_CLASSES`.
    #[error("{file}: label {value} at index {index} is out of range: expected 0..={max}")]
    BadLabel {
        /// File or URL.
        file: String,
        /// Position of the label.
        index: usize,
        /// The label found.
        value: u8,
        /// Largest valid label.
        max: u8,
    },

    /// An image file and its label file disagree on the number of examples.
    #[error(
        "{labels_file} holds {labels} labels but {images_file} holds {images} images: expected the same count"
    )]
    CountMismatch {
        /// The image file.
        images_file: String,
        /// Images it holds.
        images: usize,
        /// The label file.
        labels_file: String,
        /// Labels it holds.
        labels: usize,
    },

    /// The HTTP request failed (connection, TLS, timeout, protocol).
    #[cfg(feature = "download")]
    #[error("downloading {url}: {source}")]
    Http {
        /// URL requested.
        url: String,
        /// The HTTP client's error.
        source: Box<ureq::Error>,
    },

    /// The server answered with an error status.
    #[error("downloading {url}: server answered HTTP {status}, expected 200")]
    HttpStatus {
        /// URL requested.
        url: String,
        /// Status code received.
        status: u16,
    },

    /// The response body exceeded the download size limit.
    #[error("downloading {url}: response larger than the limit of {limit} bytes")]
    DownloadTooLarge {
        /// URL requested.
        url: String,
        /// Limit in bytes.
        limit: u64,
    },

    /// Downloaded content whose SHA-256 is wrong; it was not saved.
    #[error(
        "{file}: SHA-256 of the decompressed content is {found}, expected {expected}; not saved"
    )]
    Checksum {
        /// URL downloaded.
        file: String,
        /// Expected SHA-256, hex.
        expected: String,
        /// SHA-256 of what came, hex.
        found: String,
    },

    /// A file already in the data directory has the wrong SHA-256; it is left alone.
    #[error(
        "{}: SHA-256 of the decompressed content is {found}, expected {expected}; remove the file to download it again",
        path.display()
    )]
    ExistingChecksum {
        /// The file.
        path: PathBuf,
        /// Expected SHA-256, hex.
        expected: String,
        /// SHA-256 of the file's content, hex.
        found: String,
    },

    /// [`partition`](super::partition) was asked for zero parties.
    #[error("cannot partition data among 0 parties: expected at least 1")]
    NoParties,

    /// More parties than examples, so some party would get nothing.
    #[error(
        "cannot partition {samples} examples among {parties} parties: expected at most {samples} parties"
    )]
    TooManyParties {
        /// Parties requested.
        parties: usize,
        /// Examples available.
        samples: usize,
    },

    /// A Dirichlet concentration that is not a finite positive number.
    #[error("Dirichlet alpha must be finite and > 0, found {alpha}")]
    BadAlpha {
        /// The alpha given.
        alpha: f64,
    },

    /// A partition scheme string that does not parse.
    #[error(
        "invalid partition scheme '{input}': {reason}; expected 'iid' or 'dirichlet:ALPHA' (e.g. 'dirichlet:0.5')"
    )]
    ParsePartition {
        /// The string given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
}
