//! Wire format of an [`EncryptedVector`], and its validating parser.
//!
//! ```text
//! magic      8 bytes   "HEFLGLWE"
//! version    u16 LE    WIRE_VERSION
//! header     bincode 1.3 (fixed-width little-endian integers, at most 512 bytes):
//!              parameter_set: String, glwe_dimension: u64, polynomial_size: u64,
//!              key_id: [u8; 32], plaintext_len: u64, ciphertext_count: u64, summands: u32
//! body       ciphertext_count * (k + 1) * N u64 LE, tfhe's GlweCiphertextList layout
//! ```
//!
//! [`EncryptedVector::from_bytes`] checks the magic and version, parses the header under a
//! size limit, validates every header field against the parameter set and the caller's
//! [`Expected`] values, and checks the body length exactly, all before allocating the body.
//! Any failure is a typed [`WireError`]; no input makes it panic.
//!
//! The format has no MAC: GLWE ciphertexts are malleable by design (that is what makes them
//! summable), so integrity and authenticity of messages come from the transport (TLS) and
//! the protocol layer, not from here.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use bincode::Options;

use super::ciphertext::{EncryptedVector, MAX_PLAINTEXT_LEN};
use super::keys::KeyId;
use super::params::PARAMS;

/// First bytes of every serialized [`EncryptedVector`].
const MAGIC: [u8; 8] = *b"HEFLGLWE";
/// Version of the wire format this release writes and reads.
pub const WIRE_VERSION: u16 = 1;
/// Upper bound on the bincode header (the real one is about 150 bytes).
const HEADER_LIMIT: u64 = 512;

/// What the receiver expects of a message, checked before the body is read.
///
/// ```
/// use hefl::he::{Expected, keys::KeyFile};
///
/// let key_id = KeyFile::from_seed([1; 32]).key_id();
/// // A server receiving one fresh encryption per client:
/// let from_client = Expected::fresh(key_id, 101_770);
/// assert_eq!(from_client.max_summands, 1);
/// // A client receiving the sum over at most 3 parties:
/// let aggregate = Expected { key_id, plaintext_len: 101_770, max_summands: 3 };
/// # let _ = aggregate;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expected {
    /// The key id the ciphertext must be under.
    pub key_id: KeyId,
    /// The exact plaintext length.
    pub plaintext_len: usize,
    /// The largest acceptable number of summed encryptions (1 for a fresh encryption).
    pub max_summands: u32,
}

impl Expected {
    /// A fresh encryption (one summand) of `plaintext_len` values under `key_id`.
    ///
    /// ```
    /// use hefl::he::{Expected, keys::KeyFile};
    ///
    /// let e = Expected::fresh(KeyFile::from_seed([1; 32]).key_id(), 10);
    /// assert_eq!((e.plaintext_len, e.max_summands), (10, 1));
    /// ```
    pub fn fresh(key_id: KeyId, plaintext_len: usize) -> Self {
        Self {
            key_id,
            plaintext_len,
            max_summands: 1,
        }
    }
}

/// Why a message was refused.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The message ends early.
    #[error("truncated message: {part} needs {needed} bytes, {found} present")]
    Truncated {
        /// Which part was being read.
        part: &'static str,
        /// Bytes needed.
        needed: u64,
        /// Bytes present.
        found: u64,
    },
    /// Not a hefl ciphertext message.
    #[error("not a hefl ciphertext message: magic {found:02x?}, expected \"HEFLGLWE\"")]
    Magic {
        /// The first bytes found.
        found: [u8; 8],
    },
    /// Another wire format version.
    #[error("wire format version {found}, this hefl reads version {expected}")]
    Version {
        /// Version this release reads.
        expected: u16,
        /// Version in the message.
        found: u16,
    },
    /// The header does not parse (or exceeds its 512-byte limit).
    #[error("malformed ciphertext header: {0}")]
    Header(String),
    /// Made under another parameter set.
    #[error("ciphertext for parameter set {found:?}, expected {expected}")]
    ParameterSet {
        /// Parameter set of this release.
        expected: &'static str,
        /// Parameter set named in the message.
        found: String,
    },
    /// A GLWE shape field contradicts the parameter set.
    #[error("ciphertext {what} is {found}, expected {expected}")]
    Shape {
        /// Which field.
        what: &'static str,
        /// Value of the parameter set.
        expected: u64,
        /// Value in the message.
        found: u64,
    },
    /// Made under another key.
    #[error("ciphertext for key id {found}, expected {expected}")]
    KeyId {
        /// Expected key id.
        expected: KeyId,
        /// Key id in the message.
        found: KeyId,
    },
    /// Another plaintext length.
    #[error("ciphertext of {found} values, expected {expected}")]
    Length {
        /// Expected length.
        expected: usize,
        /// Length in the message.
        found: u64,
    },
    /// Ciphertext count inconsistent with the length.
    #[error("ciphertext count {found} for {plaintext_len} values, expected {expected}")]
    Count {
        /// Length in the message.
        plaintext_len: u64,
        /// ceil(len / N).
        expected: u64,
        /// Count in the message.
        found: u64,
    },
    /// Summand count outside 1..=max.
    #[error("ciphertext sums {found} encryptions, expected between 1 and {max}")]
    Summands {
        /// Largest acceptable.
        max: u32,
        /// Count in the message.
        found: u32,
    },
    /// Bytes after the body.
    #[error("{found} unexpected bytes after the ciphertext body of {body} bytes")]
    TrailingBytes {
        /// Body size.
        body: u64,
        /// Extra bytes.
        found: u64,
    },
}

/// The bincode part of the header.
#[derive(Serialize, Deserialize)]
struct Header {
    parameter_set: String,
    glwe_dimension: u64,
    polynomial_size: u64,
    key_id: [u8; 32],
    plaintext_len: u64,
    ciphertext_count: u64,
    summands: u32,
}

fn bincode_options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(HEADER_LIMIT)
        .allow_trailing_bytes()
}

const PREFIX_LEN: usize = MAGIC.len() + size_of::<u16>();

impl EncryptedVector {
    fn header(&self) -> Header {
        Header {
            parameter_set: PARAMS.name().to_owned(),
            glwe_dimension: PARAMS.glwe_dimension().0 as u64,
            polynomial_size: PARAMS.polynomial_size().0 as u64,
            key_id: self.key_id.0,
            plaintext_len: self.plaintext_len as u64,
            ciphertext_count: self.ciphertext_count().0 as u64,
            summands: self.summands,
        }
    }

    /// An upper bound on the size of any valid message of `plaintext_len` values (magic,
    /// version, the header's size limit, the ciphertexts), saturating at `usize::MAX`: what a
    /// receiver may accept before parsing.
    ///
    /// ```
    /// use hefl::he::{EncryptedVector, keys::KeyFile};
    ///
    /// let key = KeyFile::from_seed([1; 32]).secret_key()?;
    /// let message = key.encrypt(&[7; 5000])?.to_bytes();
    /// let bound = EncryptedVector::max_wire_len(5000);
    /// assert!(message.len() <= bound, "message of {} bytes, bound {bound}", message.len());
    /// assert_eq!(EncryptedVector::max_wire_len(usize::MAX), usize::MAX);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_wire_len(plaintext_len: usize) -> usize {
        PARAMS
            .ciphertexts_for(plaintext_len)
            .saturating_mul(PARAMS.ciphertext_bytes())
            .saturating_add(PREFIX_LEN + HEADER_LIMIT as usize)
    }

    /// Size of [`EncryptedVector::to_bytes`] output.
    ///
    /// ```
    /// use hefl::he::keys::KeyFile;
    ///
    /// let key = KeyFile::from_seed([1; 32]).secret_key()?;
    /// let ct = key.encrypt(&vec![0; 101_770])?;
    /// assert_eq!(ct.wire_len(), ct.to_bytes().len());
    /// assert!(ct.wire_len() > 50 * 32 * 1024);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wire_len(&self) -> usize {
        let header = bincode_options()
            .serialized_size(&self.header())
            .map_or(HEADER_LIMIT as usize, |n| n as usize);
        PREFIX_LEN + header + self.data.len() * size_of::<u64>()
    }

    /// Serializes to the wire format (see the [wire module](crate::he::wire)).
    ///
    /// ```
    /// use hefl::he::{EncryptedVector, Expected, keys::KeyFile};
    ///
    /// let key = KeyFile::from_seed([1; 32]).secret_key()?;
    /// let ct = key.encrypt(&[1, 2, 3])?;
    /// let bytes = ct.to_bytes();
    /// assert_eq!(&bytes[..8], b"HEFLGLWE");
    /// let back = EncryptedVector::from_bytes(&bytes, &Expected::fresh(key.key_id(), 3))?;
    /// assert_eq!(back, ct);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.wire_len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&WIRE_VERSION.to_le_bytes());
        // Serializing a plain struct into a Vec cannot fail, and the header is far below the
        // limit (a test checks the largest one), so this branch is unreachable.
        if let Err(e) = bincode_options().serialize_into(&mut out, &self.header()) {
            unreachable!("hefl header serialization failed: {e}");
        }
        for word in &self.data {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out
    }

    /// Parses and validates untrusted bytes (see the [wire module](crate::he::wire) for the checks).
    ///
    /// ```
    /// use hefl::he::{EncryptedVector, Expected, WireError, keys::KeyFile};
    ///
    /// let key = KeyFile::from_seed([1; 32]).secret_key()?;
    /// let other = KeyFile::from_seed([2; 32]).key_id();
    /// let bytes = key.encrypt(&[1, 2, 3])?.to_bytes();
    ///
    /// let wrong_key = EncryptedVector::from_bytes(&bytes, &Expected::fresh(other, 3));
    /// assert!(matches!(wrong_key, Err(WireError::KeyId { .. })));
    /// let wrong_len = EncryptedVector::from_bytes(&bytes, &Expected::fresh(key.key_id(), 4));
    /// assert!(matches!(wrong_len, Err(WireError::Length { .. })));
    /// let truncated = EncryptedVector::from_bytes(&bytes[..100], &Expected::fresh(key.key_id(), 3));
    /// assert!(matches!(truncated, Err(WireError::Truncated { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_bytes(bytes: &[u8], expected: &Expected) -> Result<Self, WireError> {
        let (header, body) = validate(bytes, expected)?;
        let data = body.chunks_exact(size_of::<u64>()).map(le_word).collect();
        Ok(Self {
            key_id: KeyId(header.key_id),
            plaintext_len: expected.plaintext_len,
            summands: header.summands,
            data,
        })
    }

    /// Validates untrusted bytes exactly as [`EncryptedVector::from_bytes`] does, then adds
    /// the ciphertexts they hold into `self` straight from the buffer (no parsed copy: a
    /// server folding many submissions reads each once). On any error `self` is unchanged.
    ///
    /// ```
    /// use hefl::he::{EncryptedVector, Expected, keys::KeyFile};
    ///
    /// let key = KeyFile::from_seed([1; 32]).secret_key()?;
    /// let expected = Expected::fresh(key.key_id(), 2);
    /// let mut sum = key.encrypt(&[1 << 50, 2 << 50])?;
    /// sum.add_from_bytes(&key.encrypt(&[3 << 50, 4 << 50])?.to_bytes(), &expected)?;
    /// let words = key.decrypt(&sum)?;
    /// assert_eq!(words.iter().map(|w| w.wrapping_add(1 << 49) >> 50).collect::<Vec<_>>(), [4, 6]);
    /// assert_eq!(sum.summands(), 2);
    /// assert!(sum.add_from_bytes(&key.encrypt(&[1])?.to_bytes(), &expected).is_err());
    /// assert_eq!(sum.summands(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add_from_bytes(&mut self, bytes: &[u8], expected: &Expected) -> Result<(), WireError> {
        let (header, body) = validate(bytes, expected)?;
        // The message fits `expected`; the running sum must fit it too.
        if self.key_id != expected.key_id {
            return Err(WireError::KeyId {
                expected: self.key_id,
                found: expected.key_id,
            });
        }
        if self.plaintext_len != expected.plaintext_len {
            return Err(WireError::Length {
                expected: self.plaintext_len,
                found: expected.plaintext_len as u64,
            });
        }
        let summands = self
            .summands
            .checked_add(header.summands)
            .ok_or(WireError::Summands {
                max: u32::MAX - self.summands,
                found: header.summands,
            })?;
        let words = PARAMS.ciphertext_words();
        self.data
            .par_chunks_mut(words)
            .zip(body.par_chunks(words * size_of::<u64>()))
            .for_each(|(acc, add)| {
                for (a, b) in acc.iter_mut().zip(add.chunks_exact(size_of::<u64>())) {
                    *a = a.wrapping_add(le_word(b));
                }
            });
        self.summands = summands;
        Ok(())
    }
}

/// A little-endian u64 from exactly eight bytes (a chunk of a message body).
pub(crate) fn le_word(chunk: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(chunk);
    u64::from_le_bytes(word)
}

/// Checks every field of a message against `expected`; returns its header and its body
/// (exactly the ciphertext words' bytes).
fn validate<'a>(bytes: &'a [u8], expected: &Expected) -> Result<(Header, &'a [u8]), WireError> {
    let prefix = bytes.get(..PREFIX_LEN).ok_or(WireError::Truncated {
        part: "magic and version",
        needed: PREFIX_LEN as u64,
        found: bytes.len() as u64,
    })?;
    let (magic, version) = prefix.split_at(MAGIC.len());
    if magic != MAGIC.as_slice() {
        let mut found = [0u8; 8];
        found.copy_from_slice(magic);
        return Err(WireError::Magic { found });
    }
    let version = u16::from_le_bytes([version[0], version[1]]);
    if version != WIRE_VERSION {
        return Err(WireError::Version {
            expected: WIRE_VERSION,
            found: version,
        });
    }

    let mut rest = &bytes[PREFIX_LEN..];
    let available = rest.len() as u64;
    let header: Header = bincode_options()
        .deserialize_from(&mut rest)
        .map_err(|e| header_error(*e, available))?;
    validate_header(&header, expected)?;

    let words = PARAMS.ciphertext_words() as u64;
    // count <= ceil(MAX_PLAINTEXT_LEN / N) here, so no overflow.
    let body_len = header.ciphertext_count * words * size_of::<u64>() as u64;
    let found = rest.len() as u64;
    if found < body_len {
        return Err(WireError::Truncated {
            part: "ciphertext body",
            needed: body_len,
            found,
        });
    }
    if found > body_len {
        return Err(WireError::TrailingBytes {
            body: body_len,
            found: found - body_len,
        });
    }
    Ok((header, rest))
}

fn header_error(error: bincode::ErrorKind, available: u64) -> WireError {
    match error {
        bincode::ErrorKind::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            WireError::Truncated {
                part: "header",
                needed: available + 1,
                found: available,
            }
        }
        bincode::ErrorKind::SizeLimit => {
            WireError::Header(format!("header exceeds the {HEADER_LIMIT}-byte limit"))
        }
        other => WireError::Header(other.to_string()),
    }
}

fn validate_header(header: &Header, expected: &Expected) -> Result<(), WireError> {
    if header.parameter_set != PARAMS.name() {
        return Err(WireError::ParameterSet {
            expected: PARAMS.name(),
            found: header.parameter_set.chars().take(100).collect(),
        });
    }
    let shape = |what, expected: usize, found: u64| {
        if found == expected as u64 {
            Ok(())
        } else {
            Err(WireError::Shape {
                what,
                expected: expected as u64,
                found,
            })
        }
    };
    shape(
        "GLWE dimension",
        PARAMS.glwe_dimension().0,
        header.glwe_dimension,
    )?;
    shape(
        "polynomial size",
        PARAMS.polynomial_size().0,
        header.polynomial_size,
    )?;
    let key_id = KeyId(header.key_id);
    if key_id != expected.key_id {
        return Err(WireError::KeyId {
            expected: expected.key_id,
            found: key_id,
        });
    }
    if header.plaintext_len != expected.plaintext_len as u64
        || expected.plaintext_len == 0
        || expected.plaintext_len > MAX_PLAINTEXT_LEN
    {
        return Err(WireError::Length {
            expected: expected.plaintext_len,
            found: header.plaintext_len,
        });
    }
    let count = PARAMS.ciphertexts_for(expected.plaintext_len) as u64;
    if header.ciphertext_count != count {
        return Err(WireError::Count {
            plaintext_len: header.plaintext_len,
            expected: count,
            found: header.ciphertext_count,
        });
    }
    if header.summands == 0 || header.summands > expected.max_summands {
        return Err(WireError::Summands {
            max: expected.max_summands,
            found: header.summands,
        });
    }
    Ok(())
}
