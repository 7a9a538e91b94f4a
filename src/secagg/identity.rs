//! A party's identity for secure aggregation: an X25519 static key pair, the Ed25519 signing
//! key derived from it, its file (mode 0600, like the HE key file, through
//! [`crate::secret_file`]) and its public lines.
//!
//! On disk (`hefl identity --out FILE`) the identity is JSON:
//!
//! ```text
//! {"format":"hefl-identity","version":1,"x25519_public":"<64 hex>","x25519_secret":"<64 hex>"}
//! ```
//!
//! The Ed25519 key is not stored: it is derived from the X25519 secret (see [`Identity`]), so
//! files of version 1 written before it existed carry it too.
//!
//! Its public lines, which the coordinator collects into the roster, are the public keys only:
//!
//! ```text
//! hefl-x25519-v1 <64 hex>
//! hefl-ed25519-v1 <64 hex>
//! ```
//!
//! The second line is new with `robust` secure aggregation (which signs its messages); a
//! public file of one line, from an older hefl, still parses ([`PublicLines::parse`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hkdf::Hkdf;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
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
/// The first word of the signing key's public line.
const SIGNING_LINE_TAG: &str = "hefl-ed25519-v1";
/// HKDF-SHA256's info for the Ed25519 seed, derived from the X25519 secret.
const SIGNING_SEED_LABEL: &[u8] = b"hefl/v1/identity/ed25519";
/// What an error quotes of text that did not parse.
const QUOTED_CHARS: usize = 100;

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
    /// A signing key's public line that does not parse.
    #[error("public line {found:?}: expected `{SIGNING_LINE_TAG} <64 hex digits>`")]
    SigningLine {
        /// What was given (at most 100 characters).
        found: String,
    },
    /// Public lines that are not one `hefl-x25519-v1` line and at most one
    /// `hefl-ed25519-v1` line.
    #[error(
        "public lines: {reason}; expected `{PUBLIC_LINE_TAG} <64 hex digits>`, then \
         `{SIGNING_LINE_TAG} <64 hex digits>` (as `hefl identity` prints them)"
    )]
    PublicLines {
        /// What is wrong.
        reason: String,
    },
}

/// At most [`QUOTED_CHARS`] characters of `text`, for an error message.
fn quoted(text: &str) -> String {
    text.chars().take(QUOTED_CHARS).collect()
}

/// The 32 bytes of `text`: 64 hex digits, optionally after `tag` (surrounding white space
/// ignored).
fn parse_tagged(text: &str, tag: &str) -> Option<[u8; 32]> {
    let hex_part = text
        .trim()
        .strip_prefix(tag)
        .map(str::trim_start)
        .unwrap_or(text.trim());
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut bytes).ok()?;
    Some(bytes)
}

/// Display (64 hex), Debug (`Name(<64 hex>)`), FromStr (a public line with `$tag`, or the bare
/// 64 hex digits a roster stores; else the error `$error`) and serde (64 hex) of a 32-byte
/// public key.
macro_rules! public_key_text {
    ($name:ident, $tag:expr, $error:ident) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }

        /// Parses a public line (its tag, then 64 hex digits; surrounding white space ignored)
        /// or the bare 64 hex digits a roster stores.
        impl FromStr for $name {
            type Err = IdentityError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                parse_tagged(text, $tag)
                    .map(Self)
                    .ok_or_else(|| IdentityError::$error {
                        found: quoted(text.trim()),
                    })
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.to_string().serialize(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(&text, &mut bytes).map_err(|_| {
                    serde::de::Error::custom(format!(
                        "public key {:?}: expected 64 hex digits",
                        quoted(&text)
                    ))
                })?;
                Ok(Self(bytes))
            }
        }
    };
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

public_key_text!(PartyPublicKey, PUBLIC_LINE_TAG, PublicLine);

/// A party's Ed25519 public key, which checks the signatures of its `robust` messages; in its
/// public line (`hefl-ed25519-v1 <64 hex>`) and the roster.
///
/// ```
/// use hefl::secagg::{Identity, SigningPublicKey};
///
/// let id = Identity::from_secret_bytes([3; 32]);
/// let signature = id.sign(b"round 7");
/// assert!(id.signing_public().verify(b"round 7", &signature));
/// assert!(!id.signing_public().verify(b"round 8", &signature));
/// let text = id.signing_public().to_string();
/// assert_eq!(text.parse::<SigningPublicKey>()?, id.signing_public());
/// # Ok::<(), hefl::secagg::IdentityError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SigningPublicKey(pub [u8; 32]);

impl SigningPublicKey {
    /// The public line: `hefl-ed25519-v1 <64 hex>`.
    pub fn to_line(&self) -> String {
        format!("{SIGNING_LINE_TAG} {self}")
    }

    /// The key as a curve point: `None` when the bytes are not one, or are one of small
    /// order (a "weak" key, for which forged signatures exist).
    pub(crate) fn as_dalek(&self) -> Option<VerifyingKey> {
        VerifyingKey::from_bytes(&self.0)
            .ok()
            .filter(|key| !key.is_weak())
    }

    /// Whether `signature` is this key's over `message`, by strict verification (RFC 8032
    /// with canonical encodings and no small-order points: ed25519-dalek's `verify_strict`).
    /// False for a key that is not a valid point.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.as_dalek().is_some_and(|key| {
            key.verify_strict(message, &Signature::from_bytes(signature))
                .is_ok()
        })
    }
}

public_key_text!(SigningPublicKey, SIGNING_LINE_TAG, SigningLine);

/// The parser of a party's public lines, as `hefl identity` prints them (and a coordinator
/// keeps them, one file per party).
#[derive(Debug)]
pub struct PublicLines;

impl PublicLines {
    /// The X25519 key and, when present, the Ed25519 key of a party's public lines: one
    /// `hefl-x25519-v1 <64 hex>` line (or 64 bare hex digits: a file of an older hefl) and
    /// at most one `hefl-ed25519-v1 <64 hex>` line, in any order; blank lines and surrounding
    /// white space are ignored.
    ///
    /// ```
    /// use hefl::secagg::{Identity, PublicLines};
    ///
    /// let id = Identity::from_secret_bytes([3; 32]);
    /// let both = PublicLines::parse(&id.public_lines())?;
    /// assert_eq!(both, (id.public(), Some(id.signing_public())));
    /// let old = PublicLines::parse(&id.public().to_line())?;
    /// assert_eq!(old, (id.public(), None));
    /// assert!(PublicLines::parse(&id.signing_public().to_line()).is_err());
    /// # Ok::<(), hefl::secagg::IdentityError>(())
    /// ```
    pub fn parse(text: &str) -> Result<(PartyPublicKey, Option<SigningPublicKey>), IdentityError> {
        let mut exchange = None;
        let mut signing = None;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let twice = |tag: &str| IdentityError::PublicLines {
                reason: format!("two `{tag}` lines"),
            };
            if line.starts_with(SIGNING_LINE_TAG) {
                if signing.replace(line.parse::<SigningPublicKey>()?).is_some() {
                    return Err(twice(SIGNING_LINE_TAG));
                }
            } else if exchange.replace(line.parse::<PartyPublicKey>()?).is_some() {
                return Err(twice(PUBLIC_LINE_TAG));
            }
        }
        let exchange = exchange.ok_or_else(|| IdentityError::PublicLines {
            reason: format!("no `{PUBLIC_LINE_TAG}` line in {:?}", quoted(text.trim())),
        })?;
        Ok((exchange, signing))
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

/// A party's Ed25519 signing key. Wiped on drop (ed25519-dalek's `ZeroizeOnDrop`); its
/// `Debug` prints no byte of it.
struct Ed25519Secret(SigningKey);

impl fmt::Debug for Ed25519Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ed25519Secret(..)")
    }
}

/// A party's X25519 static key pair and the Ed25519 signing key derived from it. Secrets are
/// wiped on drop (the dalek crates' `ZeroizeOnDrop`) and never printed by `Debug`.
///
/// The Ed25519 key's 32-byte seed is HKDF-SHA256 of the X25519 secret (no salt, info
/// `hefl/v1/identity/ed25519`). Deriving is safe: HKDF's output under a label used nowhere
/// else is a pseudorandom key independent of every other use of the secret (X25519 uses the
/// secret's bytes themselves, never an HKDF output), and knowing the Ed25519 public key, or
/// signatures, reveals nothing of the seed, hence of the X25519 secret (HKDF is one-way). So
/// the two keys share no bytes, and an identity file of version 1 needs nothing new: its
/// signing key is the same whenever it is loaded.
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
    signing: Ed25519Secret,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("public", &self.public)
            .field("signing_public", &self.signing_public())
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
        let mut seed = Zeroizing::new([0u8; 32]);
        let expanded =
            Hkdf::<Sha256>::new(None, secret.as_bytes()).expand(SIGNING_SEED_LABEL, &mut seed[..]);
        // 32 bytes is far below HKDF-SHA256's limit of 255 * 32.
        debug_assert!(expanded.is_ok());
        let signing = Ed25519Secret(SigningKey::from_bytes(&seed));
        Self {
            secret,
            public,
            signing,
        }
    }

    /// The X25519 public key.
    pub fn public(&self) -> PartyPublicKey {
        self.public
    }

    /// The Ed25519 public key.
    pub fn signing_public(&self) -> SigningPublicKey {
        SigningPublicKey(self.signing.0.verifying_key().to_bytes())
    }

    /// The Ed25519 signature of `message` (deterministic, RFC 8032).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.0.sign(message).to_bytes()
    }

    /// The public lines, as `hefl identity` prints them: `hefl-x25519-v1 <64 hex>`, a line
    /// break, `hefl-ed25519-v1 <64 hex>` (no final line break). [`PublicLines::parse`] reads
    /// them back.
    pub fn public_lines(&self) -> String {
        format!(
            "{}\n{}",
            self.public.to_line(),
            self.signing_public().to_line()
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_a_tampered_message_or_another_key_is_refused() {
        let id = Identity::from_secret_bytes([7; 32]);
        let other = Identity::from_secret_bytes([8; 32]);
        let message = b"hefl/v1/adv round 3";
        let signature = id.sign(message);
        assert!(id.signing_public().verify(message, &signature));
        // Negative controls: another message, another key, a flipped signature bit.
        assert!(
            !id.signing_public()
                .verify(b"hefl/v1/adv round 4", &signature)
        );
        assert!(!other.signing_public().verify(message, &signature));
        let mut flipped = signature;
        flipped[5] ^= 1;
        assert!(!id.signing_public().verify(message, &flipped));
        // Keys that are not valid points (y = 2 is on no point of edwards25519), or of small
        // order (y = 1, the identity), verify nothing.
        let point_with_y = |y: u8| {
            let mut bytes = [0u8; 32];
            bytes[0] = y;
            bytes
        };
        for key in [point_with_y(2), point_with_y(1)] {
            let key = SigningPublicKey(key);
            assert!(key.as_dalek().is_none(), "{key:?}");
            assert!(!key.verify(message, &signature));
        }
    }

    #[test]
    fn the_signing_key_is_derived_by_hkdf_and_shares_no_bytes_with_x25519() {
        let secret = [7u8; 32];
        let id = Identity::from_secret_bytes(secret);
        // Deterministic: the same secret (an identity file loaded again) gives the same key.
        assert_eq!(
            Identity::from_secret_bytes(secret).signing_public(),
            id.signing_public()
        );
        assert_eq!(
            id.sign(b"m"),
            Identity::from_secret_bytes(secret).sign(b"m")
        );
        // HKDF-SHA256(no salt, the X25519 secret, "hefl/v1/identity/ed25519"), as documented.
        let mut seed = [0u8; 32];
        Hkdf::<Sha256>::new(None, &secret)
            .expand(b"hefl/v1/identity/ed25519", &mut seed)
            .unwrap();
        let expected = SigningKey::from_bytes(&seed).verifying_key().to_bytes();
        assert_eq!(id.signing_public(), SigningPublicKey(expected));
        // Distinct from every X25519 byte string of the identity.
        assert_ne!(id.signing_public().0, id.public().0);
        assert_ne!(id.signing_public().0, secret);
        assert_ne!(seed, secret);
        assert_ne!(
            Identity::from_secret_bytes([8; 32]).signing_public(),
            id.signing_public()
        );
        // Debug prints neither secret nor seed.
        let debug = format!("{id:?} {:?}", id.signing);
        for bytes in [secret, seed, id.signing.0.to_bytes()] {
            assert!(!debug.contains(&hex::encode(&bytes[..4])), "{debug}");
        }
    }

    #[test]
    fn public_lines_parse_in_the_new_two_line_and_the_old_one_line_forms() {
        let id = Identity::from_secret_bytes([7; 32]);
        let lines = id.public_lines();
        assert_eq!(
            lines,
            format!(
                "hefl-x25519-v1 {}\nhefl-ed25519-v1 {}",
                id.public(),
                id.signing_public()
            )
        );
        let both = (id.public(), Some(id.signing_public()));
        assert_eq!(PublicLines::parse(&lines).unwrap(), both);
        // As a file: a final line break, blank lines, the lines swapped.
        let swapped = format!(
            "\n{}\n\n{}\n",
            id.signing_public().to_line(),
            id.public().to_line()
        );
        assert_eq!(PublicLines::parse(&swapped).unwrap(), both);
        // The old one-line file, and bare hex, carry no signing key.
        let old = format!("{}\n", id.public().to_line());
        assert_eq!(PublicLines::parse(&old).unwrap(), (id.public(), None));
        assert_eq!(
            PublicLines::parse(&id.public().to_string()).unwrap(),
            (id.public(), None)
        );
        // Refused: no X25519 line, a line twice, a broken Ed25519 line.
        let err = PublicLines::parse(&id.signing_public().to_line()).unwrap_err();
        assert!(
            err.to_string().contains("no `hefl-x25519-v1` line"),
            "{err}"
        );
        let twice = format!("{lines}\n{}", id.public().to_line());
        let err = PublicLines::parse(&twice).unwrap_err();
        assert!(
            err.to_string().contains("two `hefl-x25519-v1` lines"),
            "{err}"
        );
        let err = PublicLines::parse(&format!("{}\nhefl-ed25519-v1 12ab", id.public().to_line()))
            .unwrap_err();
        assert!(
            matches!(&err, IdentityError::SigningLine { found } if found == "hefl-ed25519-v1 12ab"),
            "{err}"
        );
        // Keys round-trip through their text and serde forms.
        let key = id.signing_public();
        assert_eq!(key.to_line().parse::<SigningPublicKey>().unwrap(), key);
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(json, format!("\"{key}\""));
        assert_eq!(
            serde_json::from_str::<SigningPublicKey>(&json).unwrap(),
            key
        );
        assert!(serde_json::from_str::<SigningPublicKey>("\"12ab\"").is_err());
    }

    #[test]
    fn an_identity_file_gives_the_same_signing_key_when_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("party.id");
        let id = Identity::generate().unwrap();
        id.write_new(&path, false).unwrap();
        let loaded = Identity::load(&path).unwrap();
        assert_eq!(loaded.signing_public(), id.signing_public());
        // The file format is unchanged: no Ed25519 field on disk.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("ed25519") && !text.contains(&id.signing_public().to_string()));
    }
}
