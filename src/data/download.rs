//! Downloading MNIST from a public mirror into the data directory.
//!
//! A file is fetched whole into memory (under [`MAX_DOWNLOAD_BYTES`]), decompressed,
//! and its SHA-256 compared with the published one. Only then is it written, to a
//! temporary file in the target directory that is renamed into place: a bad or
//! interrupted download never leaves a file that the loader would pick up.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::idx::{MAX_IDX_BYTES, find_file, gunzip, is_gzip, read_content};
use super::{DataError, Mnist, load_mnist_dir, resolve_data_dir};

/// Mirror used when `$HEFL_MNIST_MIRROR` is not set: serves `<name>.gz` for each
/// canonical file name in [`MNIST_SHA256`].
pub const DEFAULT_MIRROR: &str = "https://ossci-datasets.s3.amazonaws.com/mnist/";

/// Environment variable that overrides [`DEFAULT_MIRROR`].
pub const MIRROR_ENV: &str = "HEFL_MNIST_MIRROR";

/// Largest response body accepted, in bytes (MNIST's largest file is 9.9 MB gzipped,
/// 47 MB raw).
pub const MAX_DOWNLOAD_BYTES: u64 = 64 << 20;

/// Canonical name and SHA-256 (hex) of the decompressed content of each MNIST file.
pub const MNIST_SHA256: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    (
        "train-labels-idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    (
        "t10k-images-idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    (
        "t10k-labels-idx1-ubyte",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
];

/// Loads MNIST from [`resolve_data_dir`]`(flag)`; if a file is missing there, first
/// downloads the missing files from `$HEFL_MNIST_MIRROR` (or [`DEFAULT_MIRROR`]) with
/// [`download_mnist`]. Progress goes to stderr.
///
/// A file that is present but damaged is reported, not replaced.
///
/// ```no_run
/// let mnist = hefl::data::load_or_download(None)?;
/// println!("{} training images", mnist.train.len());
/// # Ok::<(), hefl::data::DataError>(())
/// ```
pub fn load_or_download(flag: Option<&Path>) -> Result<Mnist, DataError> {
    let dir = resolve_data_dir(flag);
    let mirror = std::env::var(MIRROR_ENV)
        .ok()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| DEFAULT_MIRROR.to_string());
    load_or_download_with(&dir, &mirror, &MNIST_SHA256)
}

/// [`load_or_download`] with the directory, mirror and expected checksums given
/// explicitly (`files` as in [`download_mnist_with`]); for tests and other data sets
/// in MNIST's format.
pub fn load_or_download_with(
    dir: &Path,
    base_url: &str,
    files: &[(&str, &str)],
) -> Result<Mnist, DataError> {
    match load_mnist_dir(dir) {
        Err(DataError::Missing { name, .. }) => {
            eprintln!(
                "{name} not found in {}: downloading from {base_url}",
                dir.display()
            );
            download_mnist_with(dir, base_url, files)?;
            load_mnist_dir(dir)
        }
        other => other,
    }
}

/// Downloads the four MNIST files from `base_url` into `dir` (created if needed),
/// verifying each against [`MNIST_SHA256`]. See [`download_mnist_with`].
pub fn download_mnist(dir: &Path, base_url: &str) -> Result<(), DataError> {
    download_mnist_with(dir, base_url, &MNIST_SHA256)
}

/// Downloads `<base_url>/<name>.gz` into `dir` for each `(name, sha256_hex)` in
/// `files`, refusing content whose decompressed SHA-256 differs from `sha256_hex`.
///
/// A file already in `dir` under any accepted name (see
/// [`load_mnist_dir`](super::load_mnist_dir)) is checked instead of downloaded, and a
/// mismatch there is an error ([`DataError::ExistingChecksum`]): the file is left alone.
/// A verified download is saved as `<name>.gz` (or `<name>` if the server sent it
/// uncompressed) through a temporary file and a rename; a refused one is not saved.
/// Progress goes to stderr.
///
/// ```no_run
/// // A private mirror of Fashion-MNIST, which uses MNIST's file names.
/// hefl::data::download_mnist_with(
///     std::path::Path::new("fashion"),
///     "https://mirror.example/fashion-mnist/",
///     &[("train-labels-idx1-ubyte", "<sha-256 of the decompressed file, hex>")],
/// )?;
/// # Ok::<(), hefl::data::DataError>(())
/// ```
pub fn download_mnist_with(
    dir: &Path,
    base_url: &str,
    files: &[(&str, &str)],
) -> Result<(), DataError> {
    std::fs::create_dir_all(dir).map_err(|source| DataError::Io {
        path: dir.to_path_buf(),
        action: "creating directory",
        source,
    })?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_global(Some(Duration::from_secs(600)))
        .build()
        .into();
    for &(name, expected) in files {
        let expected = expected.to_ascii_lowercase();
        if let Ok(existing) = find_file(dir, name) {
            let found = sha256_hex(&read_content(&existing, MAX_IDX_BYTES)?);
            if found != expected {
                return Err(DataError::ExistingChecksum {
                    path: existing,
                    expected,
                    found,
                });
            }
            eprintln!("{}: present, checksum ok", existing.display());
            continue;
        }
        let url = format!("{}/{name}.gz", base_url.trim_end_matches('/'));
        eprintln!("downloading {url}");
        let body = fetch(&agent, &url)?;
        let compressed = is_gzip(&body);
        let found = if compressed {
            sha256_hex(&gunzip(&body, &url, MAX_IDX_BYTES)?)
        } else {
            sha256_hex(&body)
        };
        if found != expected {
            return Err(DataError::Checksum {
                file: url,
                expected,
                found,
            });
        }
        let target = dir.join(if compressed {
            format!("{name}.gz")
        } else {
            name.to_string()
        });
        write_atomically(&target, &body)?;
        eprintln!(
            "  {} bytes, checksum ok -> {}",
            body.len(),
            target.display()
        );
    }
    Ok(())
}

/// GET `url` into memory, at most [`MAX_DOWNLOAD_BYTES`].
fn fetch(agent: &ureq::Agent, url: &str) -> Result<Vec<u8>, DataError> {
    let http_err = |source: ureq::Error| match source {
        ureq::Error::StatusCode(status) => DataError::HttpStatus {
            url: url.to_string(),
            status,
        },
        ureq::Error::BodyExceedsLimit(limit) => DataError::DownloadTooLarge {
            url: url.to_string(),
            limit,
        },
        other => DataError::Http {
            url: url.to_string(),
            source: Box::new(other),
        },
    };
    let mut response = agent.get(url).call().map_err(http_err)?;
    response
        .body_mut()
        .with_config()
        .limit(MAX_DOWNLOAD_BYTES)
        .read_to_vec()
        .map_err(http_err)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes `bytes` to `target` through a temporary file in the same directory and a
/// rename, so `target` is either absent or complete.
fn write_atomically(target: &Path, bytes: &[u8]) -> Result<(), DataError> {
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = target.with_file_name(format!(".{file_name}.{}.part", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp).map_err(io_err(&temp, "creating"))?;
        file.write_all(bytes).map_err(io_err(&temp, "writing"))?;
        file.sync_all().map_err(io_err(&temp, "writing"))?;
        std::fs::rename(&temp, target).map_err(io_err(target, "renaming temporary file to"))
    })();
    if result.is_err() {
        // Best effort: the error being returned matters more than a failed clean-up.
        let _ = std::fs::remove_file(&temp);
    }
    result
}

fn io_err(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> DataError {
    let path: PathBuf = path.to_path_buf();
    move |source| DataError::Io {
        path,
        action,
        source,
    }
}
