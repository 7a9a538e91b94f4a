//! Files that hold secrets: created readable and writable by their owner only, refused when
//! group or others can access them, read under a size limit, and replaced atomically.
//!
//! Key files (`hefl::he::keys::KeyFile`) are written and read here; the transport's tokens
//! file and the checkpoints are meant to follow, so that every secret on disk gets the same
//! treatment. Files that are not secret but must never be seen half-written (model files,
//! `hefl::model::write_model`) use the same atomic write with [`Access::Default`] and the same
//! bounded read ([`read_limited`]). This module depends on nothing else in hefl.
//!
//! On unix a secret file has mode 0600 and reading refuses any group or world permission bit.
//! Elsewhere there are no POSIX modes: the file's ACL is the user's concern and the mode check
//! passes.
//!
//! ```
//! use hefl::secret_file::{read_private, write_private_atomic, SecretFileError};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("secrets").join("token");
//! write_private_atomic(&path, b"s3cret", false)?;
//! assert_eq!(&read_private(&path, 64)?[..], b"s3cret");
//! // Without `replace`, an existing file stays as it is.
//! let refused = write_private_atomic(&path, b"other", false);
//! assert!(matches!(refused, Err(SecretFileError::AlreadyExists { .. })));
//! write_private_atomic(&path, b"other", true)?;
//! assert_eq!(&read_private(&path, 64)?[..], b"other");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use zeroize::Zeroizing;

/// Why a secret file could not be created, read or replaced.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// An I/O error on the file, its temporary sibling or its directory.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory the operation failed on.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The target exists and replacing it was not asked for.
    #[error("refusing to replace the existing file {path}")]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// The file is readable or writable by group or others.
    #[error(
        "{path} has mode {mode:04o}: a file holding secrets must not be accessible to group or \
         others; run `chmod 600 {path}`"
    )]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is larger than the caller's limit.
    #[error("{path} is {found} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Bytes found (at least; reading stops after `limit + 1`).
        found: u64,
        /// The caller's limit.
        limit: u64,
    },
    /// The path names a directory, a device, a link or another file that is not a regular one.
    #[error("{path} is {found}, expected a regular file")]
    NotRegularFile {
        /// The path.
        path: PathBuf,
        /// What it is, e.g. "a directory" or "a character device".
        found: &'static str,
    },
    /// A state file whose checksum or MAC does not match its contents: damaged (a flipped byte,
    /// a torn write on a failing disk) or edited.
    #[error(
        "{path} is damaged or was edited: its {integrity} does not match its contents; restore it from a backup, or remove it to start over"
    )]
    Integrity {
        /// The file.
        path: PathBuf,
        /// "SHA-256 checksum" or "MAC".
        integrity: &'static str,
    },
    /// Not a state file written by [`with_integrity`] (no header, or another kind of check).
    #[error("{path} is not a hefl state file of this version (no {expected} header)")]
    NotChecked {
        /// The file.
        path: PathBuf,
        /// The header expected.
        expected: &'static str,
    },
}

/// How a state file proves it is whole ([`with_integrity`], [`check_integrity`]).
#[derive(Clone, Copy)]
pub enum Integrity<'a> {
    /// A SHA-256 checksum of the contents: refuses a damaged file (a flipped byte, a torn
    /// write), not a deliberate edit, which can recompute it.
    Checksum,
    /// HMAC-SHA256 under a 32-byte key the writer and the reader share: refuses an edit by
    /// anyone without the key too. The tag is a pseudorandom function of the key and the
    /// contents, so storing it beside them reveals nothing about the key.
    Mac(&'a [u8; 32]),
}

impl std::fmt::Debug for Integrity<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a key.
        f.write_str(match self {
            Self::Checksum => "Checksum",
            Self::Mac(_) => "Mac(..)",
        })
    }
}

/// The header of a state file: magic, then the kind of check (1: checksum, 2: MAC).
const STATE_MAGIC: &[u8; 8] = b"HEFLSTA1";
const STATE_HEADER: usize = 8 + 1 + 32;

impl Integrity<'_> {
    fn kind(&self) -> u8 {
        match self {
            Self::Checksum => 1,
            Self::Mac(_) => 2,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Checksum => "SHA-256 checksum",
            Self::Mac(_) => "MAC",
        }
    }

    fn tag(&self, payload: &[u8]) -> [u8; 32] {
        use hmac::Mac;
        use sha2::Digest;
        match self {
            Self::Checksum => sha2::Sha256::new()
                .chain_update(STATE_MAGIC)
                .chain_update([self.kind()])
                .chain_update(payload)
                .finalize()
                .into(),
            Self::Mac(key) => {
                // A 32-byte key is always a valid HMAC key.
                let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&key[..])
                    .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
                mac.update(STATE_MAGIC);
                mac.update(&[self.kind()]);
                mac.update(payload);
                mac.finalize().into_bytes().into()
            }
        }
    }
}

/// `payload` with a header that proves it whole: the magic `HEFLSTA1`, the kind of check, and
/// the checksum or MAC of the payload (see [`Integrity`]). Write the result atomically.
///
/// ```
/// use hefl::secret_file::{Integrity, check_integrity, with_integrity};
/// use std::path::Path;
///
/// let key = [7u8; 32];
/// let mut file = with_integrity(b"state", Integrity::Mac(&key));
/// let path = Path::new("party-0.checkpoint");
/// assert_eq!(check_integrity(path, &file, Integrity::Mac(&key))?, b"state");
/// assert!(check_integrity(path, &file, Integrity::Mac(&[8; 32])).is_err());
/// assert!(check_integrity(path, &file, Integrity::Checksum).is_err());
/// let last = file.len() - 1;
/// file[last] ^= 1;
/// assert!(check_integrity(path, &file, Integrity::Mac(&key)).is_err());
/// # Ok::<(), hefl::secret_file::SecretFileError>(())
/// ```
pub fn with_integrity(payload: &[u8], integrity: Integrity<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(STATE_HEADER + payload.len());
    out.extend_from_slice(STATE_MAGIC);
    out.push(integrity.kind());
    out.extend_from_slice(&integrity.tag(payload));
    out.extend_from_slice(payload);
    out
}

/// The payload of a state file read from `path` (named in errors) if its header's check
/// matches; refuses a file without the header, one checked another way, and one whose
/// checksum or MAC does not match (compared in constant time).
pub fn check_integrity<'b>(
    path: &Path,
    bytes: &'b [u8],
    integrity: Integrity<'_>,
) -> Result<&'b [u8], SecretFileError> {
    let not_checked = || SecretFileError::NotChecked {
        path: path.to_path_buf(),
        expected: "HEFLSTA1",
    };
    let header = bytes.get(..STATE_HEADER).ok_or_else(not_checked)?;
    if &header[..8] != STATE_MAGIC {
        return Err(not_checked());
    }
    let payload = &bytes[STATE_HEADER..];
    let expected = integrity.tag(payload);
    let same = header[9..]
        .iter()
        .zip(expected)
        .fold(0u8, |diff, (a, b)| diff | (a ^ b))
        == 0;
    if header[8] != integrity.kind() || !same {
        return Err(SecretFileError::Integrity {
            path: path.to_path_buf(),
            integrity: integrity.name(),
        });
    }
    Ok(payload)
}

/// Creates a new file (never replacing one) readable and writable by its owner only
/// (mode 0600 on unix).
///
/// ```
/// use std::os::unix::fs::PermissionsExt;
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("secret");
/// hefl::secret_file::create_private(&path)?;
/// assert_eq!(std::fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
/// assert!(hefl::secret_file::create_private(&path).is_err());
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn create_private(path: &Path) -> io::Result<File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Refuses a file that group or others can access, naming `path` and its mode (in octal).
/// Without POSIX modes (not unix) there is nothing to check.
///
/// ```
/// use hefl::secret_file::{check_private, SecretFileError};
/// use std::os::unix::fs::PermissionsExt;
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("secret");
/// std::fs::write(&path, b"x")?;
/// std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640))?;
/// let err = check_private(&path, &std::fs::metadata(&path)?).unwrap_err();
/// assert!(matches!(err, SecretFileError::InsecurePermissions { mode: 0o640, .. }));
/// assert!(err.to_string().contains("0640"), "{err}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn check_private(path: &Path, metadata: &Metadata) -> Result<(), SecretFileError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(SecretFileError::InsecurePermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = (path, metadata);
    Ok(())
}

/// Reads a secret file: refuses anything but a regular file, a file group or others can
/// access ([`check_private`]) and a file of more than `limit` bytes.
///
/// The bytes are wiped from memory when the result is dropped; they are read into one buffer
/// of the file's size, so no reallocation leaves a copy behind (unless the file grows while
/// it is read).
///
/// ```
/// use hefl::secret_file::{read_private, write_private_atomic, SecretFileError};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("secret");
/// write_private_atomic(&path, &[7; 100], false)?;
/// assert_eq!(read_private(&path, 100)?.len(), 100);
/// let err = read_private(&path, 99).unwrap_err();
/// assert!(matches!(err, SecretFileError::TooLarge { found: 100, limit: 99, .. }));
/// assert!(matches!(read_private(dir.path(), 99), Err(SecretFileError::NotRegularFile { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn read_private(path: &Path, limit: u64) -> Result<Zeroizing<Vec<u8>>, SecretFileError> {
    read_regular(path, limit, Access::OwnerOnly)
}

/// Reads a file that need not be secret: refuses anything but a regular file and a file of
/// more than `limit` bytes, as [`read_private`] does, without the permission check.
///
/// ```
/// use hefl::secret_file::{read_limited, write_atomic, Access, SecretFileError};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("model");
/// write_atomic(&path, &[7; 100], false, Access::Default)?;
/// assert_eq!(read_limited(&path, 100)?.len(), 100);
/// let err = read_limited(&path, 99).unwrap_err();
/// assert!(matches!(err, SecretFileError::TooLarge { found: 100, limit: 99, .. }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, SecretFileError> {
    let mut bytes = read_regular(path, limit, Access::Default)?;
    Ok(std::mem::take(&mut *bytes))
}

/// [`read_private`] and [`read_limited`]: the permission check only for [`Access::OwnerOnly`].
fn read_regular(
    path: &Path,
    limit: u64,
    access: Access,
) -> Result<Zeroizing<Vec<u8>>, SecretFileError> {
    let io = |source| SecretFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Checked before opening too: opening a named pipe would block.
    require_regular(path, &fs::metadata(path).map_err(io)?)?;
    let file = File::open(path).map_err(io)?;
    let metadata = file.metadata().map_err(io)?;
    require_regular(path, &metadata)?;
    if access == Access::OwnerOnly {
        check_private(path, &metadata)?;
    }
    let too_large = |found| SecretFileError::TooLarge {
        path: path.to_path_buf(),
        found,
        limit,
    };
    if metadata.len() > limit {
        return Err(too_large(metadata.len()));
    }
    // The file's size plus one byte, to see the end without growing the buffer.
    let capacity = usize::try_from(metadata.len().saturating_add(1)).map_err(|_| {
        too_large(metadata.len()) // a size above usize::MAX: only on 32-bit targets
    })?;
    let mut bytes = Zeroizing::new(Vec::with_capacity(capacity));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    let found = bytes.len() as u64;
    if found > limit {
        return Err(too_large(found));
    }
    Ok(bytes)
}

/// Writes `bytes` as the secret file `path`, atomically: creates missing parent directories,
/// writes a temporary sibling with mode 0600, flushes it to disk, moves it into place and (on
/// unix) flushes the directory, so a crash leaves either the old file or the new one, never a
/// half-written one.
///
/// Without `replace` an existing `path` is refused ([`SecretFileError::AlreadyExists`]), and
/// the check is atomic: the new file is put in place by a hard link, which fails if `path`
/// appeared meanwhile. With `replace`, only a regular file is replaced: a directory, a device,
/// a named pipe or a symbolic link at `path` is refused ([`SecretFileError::NotRegularFile`],
/// also without `replace`, so that the message says why and not "pass --force").
///
/// ```
/// use hefl::secret_file::{write_private_atomic, SecretFileError};
///
/// let dir = tempfile::tempdir()?;
/// let refused = write_private_atomic(dir.path(), b"secret", true);
/// assert!(matches!(refused, Err(SecretFileError::NotRegularFile { found: "a directory", .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn write_private_atomic(
    path: &Path,
    bytes: &[u8],
    replace: bool,
) -> Result<(), SecretFileError> {
    write_atomic(path, bytes, replace, Access::OwnerOnly)
}

/// Writes `value` as pretty-printed JSON and a newline to `path` with
/// [`write_private_atomic`], through a buffer zeroised once written: how the key, identity and
/// tokens files are written. (An encoding error, which the plain structs written here cannot
/// have, is reported as an I/O error on `path`.)
pub fn write_private_json<T: serde::Serialize>(
    path: &Path,
    value: &T,
    replace: bool,
) -> Result<(), SecretFileError> {
    // Room for any of these files but a tokens file of hundreds of parties, so that the
    // buffer is rarely reallocated (a reallocation leaves a copy this cannot zeroise).
    let mut text = Zeroizing::new(Vec::with_capacity(4096));
    serde_json::to_writer_pretty(&mut *text, value).map_err(|e| SecretFileError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    text.push(b'\n');
    write_private_atomic(path, &text, replace)
}

/// Who may read a file written by [`write_atomic`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Its owner only: mode 0600 on unix, for secrets.
    OwnerOnly,
    /// Whoever the process's umask lets read it (usually everyone): for files that are not
    /// secret, such as models.
    Default,
}

/// Writes `bytes` as `path` atomically, exactly as [`write_private_atomic`] does (parent
/// directories created, temporary sibling flushed to disk, moved into place, directory
/// flushed; `replace` as there), with the file readable as `access` says.
///
/// ```
/// use hefl::secret_file::{write_atomic, Access};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("models").join("mlp.safetensors");
/// write_atomic(&path, b"weights", false, Access::Default)?;
/// write_atomic(&path, b"better weights", true, Access::Default)?;
/// assert_eq!(std::fs::read(&path)?, b"better weights");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn write_atomic(
    path: &Path,
    bytes: &[u8],
    replace: bool,
    access: Access,
) -> Result<(), SecretFileError> {
    let io = |at: &Path| {
        let path = at.to_path_buf();
        move |source| SecretFileError::Io { path, source }
    };
    let already_exists = || SecretFileError::AlreadyExists {
        path: path.to_path_buf(),
    };
    match fs::symlink_metadata(path) {
        // Not a regular file: refused whether or not replacing was asked for.
        Ok(existing) => {
            require_regular(path, &existing)?;
            if !replace {
                return Err(already_exists());
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(path)(e)),
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::create_dir_all(parent).map_err(io(parent))?;

    let tmp = temp_sibling(path);
    let write_tmp = || -> io::Result<()> {
        let mut file = match access {
            Access::OwnerOnly => create_private(&tmp)?,
            Access::Default => fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?,
        };
        file.write_all(bytes)?;
        file.sync_all()
    };
    if let Err(e) = write_tmp() {
        let _ = fs::remove_file(&tmp);
        return Err(io(&tmp)(e));
    }
    let placed = if replace {
        fs::rename(&tmp, path)
    } else {
        // hard_link fails if `path` appeared meanwhile: no silent overwrite.
        fs::hard_link(&tmp, path).and_then(|()| fs::remove_file(&tmp))
    };
    if let Err(e) = placed {
        let _ = fs::remove_file(&tmp);
        if e.kind() == io::ErrorKind::AlreadyExists {
            return Err(already_exists());
        }
        return Err(io(path)(e));
    }
    // The rename or link is durable only once the directory entry is.
    #[cfg(unix)]
    File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(io(parent))?;
    Ok(())
}

/// Refuses anything but a regular file, saying what `path` is instead.
fn require_regular(path: &Path, metadata: &Metadata) -> Result<(), SecretFileError> {
    if metadata.is_file() {
        return Ok(());
    }
    Err(SecretFileError::NotRegularFile {
        path: path.to_path_buf(),
        found: kind_of(metadata),
    })
}

/// What a file that is not a regular file is, in words.
fn kind_of(metadata: &Metadata) -> &'static str {
    let file_type = metadata.file_type();
    if file_type.is_dir() {
        return "a directory";
    }
    if file_type.is_symlink() {
        return "a symbolic link";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_char_device() {
            return "a character device";
        }
        if file_type.is_block_device() {
            return "a block device";
        }
        if file_type.is_fifo() {
            return "a named pipe";
        }
        if file_type.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

/// A sibling of `path` for writing before the move into place, unique within this process
/// (pid and a counter) so that concurrent writers never share one.
fn temp_sibling(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    path.with_file_name(name)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn refuses_to_replace_a_device() {
        let dev = Path::new("/dev/full");
        if !dev.exists() {
            eprintln!("skipped: no /dev/full");
            return;
        }
        let err = write_private_atomic(dev, b"secret", true).unwrap_err();
        assert!(
            matches!(
                err,
                SecretFileError::NotRegularFile {
                    found: "a character device",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("/dev/full"), "{err}");
    }

    #[test]
    fn refuses_to_replace_a_symbolic_link_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        let link = dir.path().join("link");
        fs::write(&target, b"kept").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = write_private_atomic(&link, b"secret", true).unwrap_err();
        assert!(
            matches!(err, SecretFileError::NotRegularFile { .. }),
            "{err}"
        );
        assert_eq!(fs::read(&target).unwrap(), b"kept");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn replaces_a_regular_file_with_a_private_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_private_atomic(&path, b"new", true).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(&read_private(&path, 3).unwrap()[..], b"new");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn read_refuses_group_or_world_access() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write_private_atomic(&path, b"x", false).unwrap();
        for mode in [0o604, 0o620, 0o700 | 0o001] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = read_private(&path, 10).unwrap_err();
            assert!(
                matches!(err, SecretFileError::InsecurePermissions { mode: m, .. } if m == mode),
                "mode {mode:o}: {err}"
            );
        }
    }
}

/// Proves that files can be written in `dir` before any work depends on it: creates the
/// directory if missing, then writes, syncs and removes a probe file. Refuses a directory
/// that is full, read-only or not a directory, naming it and the error.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// hefl::secret_file::probe_writable(&dir.path().join("state"))?;
/// let file = dir.path().join("a-file");
/// std::fs::write(&file, b"x")?;
/// assert!(hefl::secret_file::probe_writable(&file).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn probe_writable(dir: &Path) -> Result<(), SecretFileError> {
    let io = |at: &Path| {
        let path = at.to_path_buf();
        move |source| SecretFileError::Io { path, source }
    };
    fs::create_dir_all(dir).map_err(io(dir))?;
    let probe = temp_sibling(&dir.join(".hefl-write-probe"));
    let written = (|| -> io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)?;
        file.write_all(&[0u8; 4096])?;
        file.sync_all()
    })();
    let removed = fs::remove_file(&probe);
    written.map_err(io(&probe))?;
    removed.map_err(io(&probe))
}
