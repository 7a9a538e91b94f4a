//! A party's identity for secure aggregation: an X25519 static key pair, its file (mode 0600,
//! like the HE key file, through [`crate::secret_file`]) and its public line.
//!
//! On disk (`hefl identity --out FILE`) the identity is JSON:
//!
//! ```text
//! {"format":"hefl-identity","version":1,"x25519_public":"<64 hex>","x25519_secret":"<64 hex>"}
//! ```
//!
//! Its public line, which the coordinator collects into the roster, is
//! `hefl-x25519-v1 <64 hex>`: the public key only.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use crate::he::csprng::{EntropyError, SecureRng};
use crate::secret_file::{self, SecretFileError};

/// Format tag of identity files.
const FILE_FORMAT: &str = "hefl-identity";
/// The identity file version this release reads and writes.
pub const IDENTITY_FILE_VERSION: u32 = 1;
/// A valid identity file is about 200 bytes.
const MAX_IDENTITY_FILE_BYTES: u64 = 4096;
/// The first word of a public line.
const PUBLIC_LINE_TAG: &str = "hefl-x25519-v1";

/// Why an identity or a public line could not be made, written, read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The operating system's random source failed.
    #[error(transparent)]
    Entropy(#[from] EntropyError),
    /// The file could not be written or read, or is accessible to group or others.
    #[error(transparent)]
    File(#[from] SecretFileError),
    /// The file is not a hefl identity file.
    #[error("identity file {path} is not a hefl identity file: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file has another format version.
    #[error("identity file {path} has format version {found}, this hefl reads version {expected}")]
    Version {
        /// The file.
        path: PathBuf,
        /// The version this release reads.
        expected: u32,
        /// The version in the file.
        found: u32,
    },
    /// The stored public key is not the secret's.
    #[error(
        "identity file {path} stores the public key {stored} but its secret's is {computed}: \
         the file was edited or corrupted"
    )]
    PublicMismatch {
        /// The file.
        path: PathBuf,
        /// The public key written in the file.
        stored: PartyPublicKey,
        /// The public key of the stored secret.
        computed: PartyPublicKey,
    },
    /// A public line that does not parse.
    #[error("public line {found:?}: expected `{PUBLIC_LINE_TAG} <64 hex digits>`")]
    PublicLine {
        /// What was given (at most 100 characters).
        found: String,
    },
}

/// A party's X25519 public key, as it appears in public lines and rosters.
///
/// It is a point on Curve25519: recovering the secret from it is the elliptic-curve discrete
/// logarithm problem, so publishing it (in the roster, to the server) leaks nothing.
///
/// ```
/// use hefl::secagg::{Identity, PartyPublicKey};
///
/// let id = Identity::from_secret_bytes([3; 32]);
/// let line = id.public().to_line();
/// assert!(line.starts_with("hefl-x25519-v1 "));
/// assert_eq!(line.parse::<PartyPublicKey>()?, id.public());
/// # Ok::<(), hefl::secagg::IdentityError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartyPublicKey(pub [u8; 32]);

impl PartyPublicKey {
    /// The public line: `hefl-x25519-v1 <64 hex>`.
    pub fn to_line(&self) -> String {
        format!("{PUBLIC_LINE_TAG} {self}")
    }

    pub(crate) fn as_dalek(&self) -> PublicKey {
        PublicKey::from(self.0)
    }
}

impl fmt::Display for PartyPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PartyPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PartyPublicKey({self})")
    }
}

/// Parses a public line (`hefl-x25519-v1 <64 hex>`, surrounding white space ignored) or the
/// bare 64 hex digits a roster stores.
impl FromStr for PartyPublicKey {
    type Err = IdentityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let hex_part = text
            .strip_prefix(PUBLIC_LINE_TAG)
            .map(str::trim_start)
            .unwrap_or(text);
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut bytes).map_err(|_| IdentityError::PublicLine {
            found: text.chars().take(100).collect(),
        })?;
        Ok(Self(bytes))
    }
}

impl Serialize for PartyPublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_string().serialize(s)
    }
}

impl<'de> Deserialize<'de> for PartyPublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&text, &mut bytes).map_err(|_| {
            serde::de::Error::custom(format!(
                "public key {:?}: expected 64 hex digits",
                text.chars().take(100).collect::<String>()
            ))
        })?;
        Ok(Self(bytes))
    }
}

/// The on-disk form of an identity.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityOnDisk {
    format: String,
    version: u32,
    x25519_public: String,
    x25519_secret: String,
}

impl Drop for IdentityOnDisk {
    fn drop(&mut self) {
        self.x25519_secret.zeroize();
    }
}

/// A party's X25519 static key pair. The secret is wiped on drop (x25519-dalek's
/// `ZeroizeOnDrop`) and never printed by `Debug`.
///
/// ```
/// use hefl::secagg::Identity;
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("party-0.id");
/// let id = Identity::generate()?;
/// id.write_new(&path, false)?;
/// assert_eq!(Identity::load(&path)?.public(), id.public());
/// assert!(!format!("{id:?}").contains("secret"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Identity {
    secret: StaticSecret,
    public: PartyPublicKey,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A fresh identity: 32 bytes from tfhe's AES-CTR CSPRNG under an OS-seeded key
    /// ([`SecureRng`]), clamped by X25519.
    pub fn generate() -> Result<Self, IdentityError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        SecureRng::from_os()?.fill_bytes(&mut bytes[..]);
        Ok(Self::from_secret_bytes(*bytes))
    }

    /// The identity of known secret bytes: for tests and reproducible examples only.
    pub fn from_secret_bytes(bytes: [u8; 32]) -> Self {
        let secret = StaticSecret::from(bytes);
        let public = PartyPublicKey(PublicKey::from(&secret).to_bytes());
        Self { secret, public }
    }

    /// The public key.
    pub fn public(&self) -> PartyPublicKey {
        self.public
    }

    pub(crate) fn secret(&self) -> &StaticSecret {
        &self.secret
    }

    /// Writes the identity to `path` with mode 0600 (creating parent directories), refusing
    /// to replace an existing file unless `force` (see
    /// [`secret_file::write_private_atomic`]).
    pub fn write_new(&self, path: &Path, force: bool) -> Result<(), IdentityError> {
        let on_disk = IdentityOnDisk {
            format: FILE_FORMAT.to_owned(),
            version: IDENTITY_FILE_VERSION,
            x25519_public: self.public.to_string(),
            x25519_secret: hex::encode(self.secret.as_bytes()),
        };
        secret_file::write_private_json(path, &on_disk, force)?;
        Ok(())
    }

    /// Reads an identity file: refuses one that group or others can access, one too large,
    /// of another format or version, and one whose public key is not its secret's.
    ///
    /// ```
    /// use hefl::secagg::{Identity, IdentityError};
    /// use hefl::secret_file::SecretFileError;
    /// use std::os::unix::fs::PermissionsExt;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("party.id");
    /// Identity::generate()?.write_new(&path, false)?;
    /// std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640))?;
    /// let err = Identity::load(&path).unwrap_err();
    /// assert!(matches!(err, IdentityError::File(SecretFileError::InsecurePermissions { mode: 0o640, .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let text = secret_file::read_private(path, MAX_IDENTITY_FILE_BYTES)?;
        Self::parse(&text, path)
    }

    /// Parses the contents of an identity file as [`Identity::load`] does; `path` only names
    /// the source in errors.
    pub fn parse(text: &[u8], path: &Path) -> Result<Self, IdentityError> {
        let malformed = |reason: String| IdentityError::Malformed {
            path: path.to_path_buf(),
            reason,
        };
        let on_disk: IdentityOnDisk =
            serde_json::from_slice(text).map_err(|e| malformed(e.to_string()))?;
        if on_disk.format != FILE_FORMAT {
            return Err(malformed(format!(
                "format tag is {:?}, expected {FILE_FORMAT:?}",
                on_disk.format.chars().take(40).collect::<String>()
            )));
        }
        if on_disk.version != IDENTITY_FILE_VERSION {
            return Err(IdentityError::Version {
                path: path.to_path_buf(),
                expected: IDENTITY_FILE_VERSION,
                found: on_disk.version,
            });
        }
        let mut secret = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(&on_disk.x25519_secret, &mut secret[..])
            .map_err(|_| malformed("the secret is not 64 hex digits".to_owned()))?;
        let stored: PartyPublicKey = on_disk
            .x25519_public
            .parse()
            .map_err(|_| malformed("the public key is not 64 hex digits".to_owned()))?;
        let identity = Self::from_secret_bytes(*secret);
        if identity.public != stored {
            return Err(IdentityError::PublicMismatch {
                path: path.to_path_buf(),
                stored,
                computed: identity.public,
            });
        }
        Ok(identity)
    }
}
