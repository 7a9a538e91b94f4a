//! The shared secret key: key files, key ids, and the GLWE secret key derived from a seed.
//!
//! A key file holds a 32-byte seed drawn from the operating system's CSPRNG. The GLWE secret
//! key is derived from the seed with tfhe's `SecretRandomGenerator` (AES-CTR CSPRNG, seeded
//! through an XOF under the domain separator `heflGLWE`), so the file stays small and the key
//! reproducible on every client. The public [`KeyId`] is
//! `SHA-256("hefl/v1/key-id" || 0x00 || seed)`: it names the key in ciphertext headers so a
//! server can refuse ciphertexts made under another key, and reveals nothing about the seed.
//!
//! On disk (`keys/hefl.key` by default) the file is JSON, written with mode 0600 through
//! [`crate::secret_file`]:
//!
//! ```text
//! {"format":"hefl-key","version":1,"parameter_set":"V1_8_PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128",
//!  "key_id":"<64 hex>","seed":"<64 hex>"}
//! ```
//!
//! Loading refuses a file readable or writable by group or others, a file of another format
//! version or parameter set, and a file whose key id does not match its seed. Who gets the
//! file: `keys/README.md` and `docs/formats.md#the-key-file`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tfhe::core_crypto::commons::math::random::{DefaultRandomGenerator, XofSeed};
use tfhe::core_crypto::prelude::{
    GlweSecretKey, GlweSecretKeyOwned, SecretRandomGenerator,
    allocate_and_generate_new_binary_glwe_secret_key,
};
use zeroize::{Zeroize, Zeroizing};

use super::ntt::{KeyNtt, NttError};
use super::params::PARAMS;
use crate::secret_file::{self, SecretFileError};

/// Bytes of secret seed in a key file.
pub const SEED_BYTES: usize = 32;

/// Key file format tag and version written by this release.
const FILE_FORMAT: &str = "hefl-key";
/// Current key file version; files of any other version are refused.
pub const KEY_FILE_VERSION: u32 = 1;
/// Upper bound on a key file's size: a valid one is about 250 bytes.
const MAX_KEY_FILE_BYTES: u64 = 4096;
/// Domain-separation label of the key id hash.
const KEY_ID_LABEL: &[u8] = b"hefl/v1/key-id\0";
/// XOF domain separator of the secret-key derivation (8 bytes, as tfhe's XofSeed requires).
const SECRET_KEY_DOMAIN: [u8; XofSeed::DOMAIN_SEP_LEN] = *b"heflGLWE";

/// Everything that can go wrong creating, writing, reading or parsing key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The operating system's random source failed.
    #[error("cannot draw a key seed from the operating system's random source: {0}")]
    Entropy(getrandom::Error),
    /// Refusing to replace an existing key.
    #[error(
        "refusing to overwrite the existing key file {path}: every client holding it would lose \
         access; pass --force to replace it"
    )]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// The key file is readable or writable by group or others.
    #[error(
        "key file {path} has mode {mode:04o}: it must not be accessible to group or others; \
         run `chmod 600 {path}`"
    )]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// An I/O error on a key file (or its temporary sibling, or its directory).
    #[error("key file {path}: {source}")]
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is too large to be a key file.
    #[error("key file {path} is {found} bytes; a hefl key file is at most {limit} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        found: u64,
        /// The limit.
        limit: u64,
    },
    /// The path is a directory, a device, a link or another file that is not a regular one.
    #[error("key file {path} is {found}, expected a regular file")]
    NotRegularFile {
        /// The path.
        path: PathBuf,
        /// What it is, e.g. "a directory".
        found: &'static str,
    },
    /// The file is not a parseable hefl key file.
    #[error("key file {path} is not a hefl key file: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file has another format version.
    #[error("key file {path} has format version {found}, this hefl reads version {expected}")]
    Version {
        /// The file.
        path: PathBuf,
        /// Version this release reads.
        expected: u32,
        /// Version in the file.
        found: u32,
    },
    /// The file is for another parameter set.
    #[error("key file {path} is for parameter set {found:?}, this hefl uses {expected}")]
    ParameterSet {
        /// The file.
        path: PathBuf,
        /// Parameter set this release uses.
        expected: &'static str,
        /// Parameter set named in the file.
        found: String,
    },
    /// The stored key id is not the hash of the stored seed (corrupted or edited file).
    #[error("key file {path} says key id {stored} but its seed hashes to {computed}")]
    KeyIdMismatch {
        /// The file.
        path: PathBuf,
        /// Key id written in the file.
        stored: KeyId,
        /// Key id of the seed in the file.
        computed: KeyId,
    },
    /// A key id string is not 64 hex digits.
    #[error("invalid key id {found:?}: expected 64 hex digits")]
    KeyIdSyntax {
        /// The offending text (truncated).
        found: String,
    },
    /// The precomputed fast product could not be set up.
    #[error(transparent)]
    Ntt(#[from] NttError),
}

/// Key files are secret files: their failures, in the words of a key file (`--force`,
/// `chmod 600`).
impl From<SecretFileError> for KeyError {
    fn from(error: SecretFileError) -> Self {
        match error {
            SecretFileError::Io { path, source } => Self::Io { path, source },
            SecretFileError::AlreadyExists { path } => Self::AlreadyExists { path },
            SecretFileError::InsecurePermissions { path, mode } => {
                Self::InsecurePermissions { path, mode }
            }
            SecretFileError::TooLarge { path, found, limit } => {
                Self::TooLarge { path, found, limit }
            }
            SecretFileError::NotRegularFile { path, found } => Self::NotRegularFile { path, found },
            // Key files carry no integrity header: these come from state files only.
            error @ (SecretFileError::Integrity { .. } | SecretFileError::NotChecked { .. }) => {
                Self::Malformed {
                    path: PathBuf::new(),
                    reason: error.to_string(),
                }
            }
        }
    }
}

/// The public identifier of a shared key: `SHA-256("hefl/v1/key-id" || 0x00 || seed)`.
///
/// Displayed and parsed as 64 lowercase hex digits. Knowing it reveals nothing about the key;
/// the server uses it to refuse ciphertexts made under another key.
///
/// ```
/// use hefl::he::keys::{KeyFile, KeyId};
///
/// let key = KeyFile::from_seed([7; 32]);
/// let text = key.key_id().to_string();
/// assert_eq!(text.len(), 64);
/// assert_eq!(text.parse::<KeyId>().unwrap(), key.key_id());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyId(pub [u8; 32]);

impl KeyId {
    /// The key id of a seed.
    ///
    /// ```
    /// use hefl::he::keys::KeyId;
    ///
    /// assert_ne!(KeyId::of_seed(&[0; 32]), KeyId::of_seed(&[1; 32]));
    /// ```
    pub fn of_seed(seed: &[u8; SEED_BYTES]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(KEY_ID_LABEL);
        hasher.update(seed);
        Self(hasher.finalize().into())
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl FromStr for KeyId {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| KeyError::KeyIdSyntax {
            found: s.chars().take(80).collect(),
        })?;
        Ok(Self(bytes))
    }
}

/// The on-disk representation of a key file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFileOnDisk {
    format: String,
    version: u32,
    parameter_set: String,
    key_id: String,
    seed: String,
}

impl Drop for KeyFileOnDisk {
    fn drop(&mut self) {
        self.seed.zeroize();
    }
}

/// A shared key as stored on disk: a 32-byte secret seed and its public key id, under
/// [`PARAMS`].
///
/// The seed is wiped from memory when the value is dropped, and never printed by `Debug`.
///
/// ```
/// use hefl::he::keys::KeyFile;
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("hefl.key");
/// let key = KeyFile::generate()?;
/// key.write_new(&path, false)?;
/// // A second keygen to the same path is refused unless forced.
/// assert!(KeyFile::generate()?.write_new(&path, false).is_err());
/// let loaded = KeyFile::load(&path)?;
/// assert_eq!(loaded.key_id(), key.key_id());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct KeyFile {
    seed: Zeroizing<[u8; SEED_BYTES]>,
    key_id: KeyId,
}

impl fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFile")
            .field("key_id", &self.key_id)
            .field("parameter_set", &PARAMS.name())
            .finish_non_exhaustive()
    }
}

impl KeyFile {
    /// A fresh key: a 32-byte seed from the operating system's CSPRNG (`getrandom`).
    ///
    /// ```
    /// use hefl::he::keys::KeyFile;
    ///
    /// let a = KeyFile::generate()?;
    /// let b = KeyFile::generate()?;
    /// assert_ne!(a.key_id(), b.key_id());
    /// # Ok::<(), hefl::he::keys::KeyError>(())
    /// ```
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = Zeroizing::new([0u8; SEED_BYTES]);
        getrandom::fill(&mut seed[..]).map_err(KeyError::Entropy)?;
        Ok(Self::from_seed_zeroizing(seed))
    }

    /// A key from a known seed. Meant for tests and reproducible examples: a real key must
    /// come from [`KeyFile::generate`].
    ///
    /// ```
    /// use hefl::he::keys::KeyFile;
    ///
    /// assert_eq!(KeyFile::from_seed([1; 32]).key_id(), KeyFile::from_seed([1; 32]).key_id());
    /// ```
    pub fn from_seed(seed: [u8; SEED_BYTES]) -> Self {
        Self::from_seed_zeroizing(Zeroizing::new(seed))
    }

    fn from_seed_zeroizing(seed: Zeroizing<[u8; SEED_BYTES]>) -> Self {
        let key_id = KeyId::of_seed(&seed);
        Self { seed, key_id }
    }

    /// The public key id.
    ///
    /// ```
    /// let key = hefl::he::keys::KeyFile::from_seed([3; 32]);
    /// println!("{}", key.key_id());
    /// ```
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Writes the key to `path` with mode 0600, creating missing parent directories.
    ///
    /// Refuses to replace an existing file unless `force`, and even then replaces only a
    /// regular file. Written by [`secret_file::write_private_atomic`]: to a temporary sibling
    /// first and moved into place, so a crash never leaves a half-written key, and the
    /// no-overwrite check is atomic (a hard link that fails if `path` exists).
    ///
    /// ```
    /// use hefl::he::keys::{KeyError, KeyFile};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("keys").join("hefl.key");
    /// KeyFile::generate()?.write_new(&path, false)?;
    /// let refused = KeyFile::generate()?.write_new(&path, false);
    /// assert!(matches!(refused, Err(KeyError::AlreadyExists { .. })));
    /// KeyFile::generate()?.write_new(&path, true)?; // --force
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write_new(&self, path: &Path, force: bool) -> Result<(), KeyError> {
        let on_disk = KeyFileOnDisk {
            format: FILE_FORMAT.to_owned(),
            version: KEY_FILE_VERSION,
            parameter_set: PARAMS.name().to_owned(),
            key_id: self.key_id.to_string(),
            seed: hex::encode(&self.seed[..]),
        };
        secret_file::write_private_json(path, &on_disk, force)?;
        Ok(())
    }

    /// Reads and validates a key file: permissions (no access for group or others), size,
    /// format, version, parameter set, and that the key id is the hash of the seed.
    ///
    /// ```
    /// use hefl::he::keys::{KeyError, KeyFile};
    /// use std::os::unix::fs::PermissionsExt;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("hefl.key");
    /// KeyFile::generate()?.write_new(&path, false)?;
    /// std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    /// let err = KeyFile::load(&path).unwrap_err();
    /// assert!(matches!(err, KeyError::InsecurePermissions { mode: 0o644, .. }));
    /// assert!(err.to_string().contains("chmod 600"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = secret_file::read_private(path, MAX_KEY_FILE_BYTES)?;
        Self::parse(&text, path)
    }

    /// Parses and validates the contents of a key file, as [`KeyFile::load`] does after
    /// reading it: size, format, version, parameter set, and that the key id is the hash of
    /// the seed. `path` only names the source in errors.
    ///
    /// ```
    /// use hefl::he::keys::{KeyError, KeyFile};
    /// use std::path::Path;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("hefl.key");
    /// let key = KeyFile::from_seed([5; 32]);
    /// key.write_new(&path, false)?;
    /// let text = std::fs::read(&path)?;
    /// assert_eq!(KeyFile::parse(&text, &path)?.key_id(), key.key_id());
    /// let err = KeyFile::parse(b"{}", Path::new("x.key")).unwrap_err();
    /// assert!(matches!(err, KeyError::Malformed { .. }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn parse(text: &[u8], path: &Path) -> Result<Self, KeyError> {
        let malformed = |reason: String| KeyError::Malformed {
            path: path.to_path_buf(),
            reason,
        };
        if text.len() as u64 > MAX_KEY_FILE_BYTES {
            return Err(KeyError::TooLarge {
                path: path.to_path_buf(),
                found: text.len() as u64,
                limit: MAX_KEY_FILE_BYTES,
            });
        }
        let on_disk: KeyFileOnDisk =
            serde_json::from_slice(text).map_err(|e| malformed(e.to_string()))?;
        if on_disk.format != FILE_FORMAT {
            return Err(malformed(format!(
                "format tag is {:?}, expected {FILE_FORMAT:?}",
                on_disk.format
            )));
        }
        if on_disk.version != KEY_FILE_VERSION {
            return Err(KeyError::Version {
                path: path.to_path_buf(),
                expected: KEY_FILE_VERSION,
                found: on_disk.version,
            });
        }
        if on_disk.parameter_set != PARAMS.name() {
            return Err(KeyError::ParameterSet {
                path: path.to_path_buf(),
                expected: PARAMS.name(),
                found: on_disk.parameter_set.chars().take(100).collect(),
            });
        }
        let mut seed = Zeroizing::new([0u8; SEED_BYTES]);
        hex::decode_to_slice(&on_disk.seed, &mut seed[..])
            .map_err(|_| malformed("the seed is not 64 hex digits".to_owned()))?;
        let stored: KeyId = on_disk
            .key_id
            .parse()
            .map_err(|_| malformed("the key id is not 64 hex digits".to_owned()))?;
        let key = Self::from_seed_zeroizing(seed);
        if key.key_id != stored {
            return Err(KeyError::KeyIdMismatch {
                path: path.to_path_buf(),
                stored,
                computed: key.key_id,
            });
        }
        Ok(key)
    }

    /// Derives the GLWE secret key (and its precomputed FFT and NTT forms) from the seed.
    ///
    /// This is what clients encrypt and decrypt with; derive it once and keep it.
    ///
    /// ```
    /// use hefl::he::keys::KeyFile;
    ///
    /// let key = KeyFile::from_seed([5; 32]).secret_key()?;
    /// assert_eq!(key.key_id(), KeyFile::from_seed([5; 32]).key_id());
    /// # Ok::<(), hefl::he::keys::KeyError>(())
    /// ```
    pub fn secret_key(&self) -> Result<SecretKey, KeyError> {
        let xof = XofSeed::new(self.seed.to_vec(), SECRET_KEY_DOMAIN);
        let mut generator = SecretRandomGenerator::<DefaultRandomGenerator>::new(xof);
        let glwe: GlweSecretKeyOwned<u64> = allocate_and_generate_new_binary_glwe_secret_key(
            PARAMS.glwe_dimension(),
            PARAMS.polynomial_size(),
            &mut generator,
        );
        let (prk, _) = hkdf::Hkdf::<Sha256>::extract(None, &self.seed[..]);
        let mut seed_prk = Zeroizing::new([0u8; 32]);
        seed_prk.copy_from_slice(&prk);
        let mut state_mac = Zeroizing::new([0u8; 32]);
        expand_seed_prk(&seed_prk, &[STATE_MAC_LABEL], &mut state_mac[..]);
        let key = SecretKey {
            key_id: self.key_id,
            ntt: KeyNtt::new(glwe.as_ref(), PARAMS.polynomial_size().0)?,
            glwe,
            state_mac,
            seed_prk,
        };
        Ok(key)
    }
}

/// The GLWE secret key of a shared key, with its product against masks precomputed.
///
/// Holding one is what it takes to encrypt ([`SecretKey::encrypt`]) and decrypt
/// ([`SecretKey::decrypt`]); a server never has one. Wiped from memory on drop.
///
/// ```
/// use hefl::he::keys::KeyFile;
///
/// let key = KeyFile::from_seed([9; 32]).secret_key()?;
/// let ciphertext = key.encrypt(&[1 << 40, 0u64.wrapping_sub(1 << 40)])?;
/// let decrypted = key.decrypt(&ciphertext)?;
/// // Decryption returns the plaintext plus a small noise (|e| <= 2^17).
/// assert!((decrypted[0].wrapping_sub(1 << 40) as i64).abs() <= 1 << 17);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SecretKey {
    key_id: KeyId,
    glwe: GlweSecretKeyOwned<u64>,
    pub(crate) ntt: KeyNtt,
    /// HKDF-SHA256(seed, info `hefl/v1/state-mac`): the key of the MAC on the parties'
    /// checkpoints ([`SecretKey::state_mac_key`]). Domain-separated from the GLWE key's
    /// derivation and the key id; wiped on drop.
    state_mac: Zeroizing<[u8; 32]>,
    /// HKDF-Extract(no salt, seed): every other secret derived from the seed is an
    /// HKDF-Expand of it under a label of its own ([`SecretKey::derive_secret`]). Wiped on drop.
    seed_prk: Zeroizing<[u8; 32]>,
}

/// HKDF-SHA256-Expand of `prk` with the concatenation of `info` into `out` (at most 8160
/// bytes, which every caller is far below).
fn expand_seed_prk(prk: &[u8; 32], info: &[&[u8]], out: &mut [u8]) {
    // `from_prk` refuses only a PRK shorter than the hash; `expand` only more than 255 blocks.
    if let Ok(hk) = hkdf::Hkdf::<Sha256>::from_prk(prk) {
        let expanded = hk.expand_multi_info(info, out);
        debug_assert!(expanded.is_ok(), "HKDF output of {} bytes", out.len());
    }
}

/// The HKDF label of the checkpoints' MAC key.
const STATE_MAC_LABEL: &[u8] = b"hefl/v1/state-mac";

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl SecretKey {
    /// The public id of this key.
    ///
    /// ```
    /// use hefl::he::keys::KeyFile;
    ///
    /// let file = KeyFile::from_seed([2; 32]);
    /// assert_eq!(file.secret_key()?.key_id(), file.key_id());
    /// # Ok::<(), hefl::he::keys::KeyError>(())
    /// ```
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The underlying tfhe GLWE secret key, for use with tfhe's own `core_crypto` functions
    /// (e.g. to check interoperability). Treat it as the secret it is.
    ///
    /// ```
    /// use hefl::he::keys::KeyFile;
    ///
    /// let key = KeyFile::from_seed([4; 32]).secret_key()?;
    /// let glwe = key.as_glwe_secret_key();
    /// assert!(glwe.as_ref().iter().all(|&bit| bit <= 1));
    /// # Ok::<(), hefl::he::keys::KeyError>(())
    /// ```
    pub fn as_glwe_secret_key(&self) -> GlweSecretKey<&[u64]> {
        self.glwe.as_view()
    }

    /// The key of the MAC on a party's checkpoints
    /// ([`Integrity::Mac`](crate::secret_file::Integrity)): derived from the seed with
    /// HKDF-SHA256 under its own label, so it reveals nothing of the GLWE key, and a checkpoint
    /// edited by anyone without the shared key is refused.
    pub fn state_mac_key(&self) -> &[u8; 32] {
        &self.state_mac
    }

    /// A secret derived from the key's seed by HKDF-SHA256 (no salt) under `info`: the
    /// canary tags of secure aggregation ([`crate::secagg`]) use it with their own label,
    /// so what they reveal says nothing of the GLWE key or of any other derived secret.
    pub(crate) fn derive_secret(&self, info: &[&[u8]], out: &mut [u8]) {
        expand_seed_prk(&self.seed_prk, info, out);
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.glwe.as_mut().zeroize();
    }
}
