//! Wire format of a [`CompactVector`] (version 3), and its validating parser. (What each field
//! is for, and hefl's other formats: `docs/formats.md`.)
//!
//! ```text
//! magic      8 bytes   "HEFLGLWE"
//! version    u16 LE    WIRE_VERSION (3)
//! header     bincode 1.3 (fixed-width little-endian integers, at most 512 bytes):
//!              parameter_set: String, glwe_dimension: u64, polynomial_size: u64,
//!              key_id: [u8; 32], plaintext_len: u64, summands: u32,
//!              body_bits: u32, mask_bits: u32 (0: seeds form), seed_count: u32,
//!              context: { run: [u8; 32], round: u64, party: u32 } (a sum: party u32::MAX)
//! seeds      seed_count x u128 LE, strictly increasing (seeds form: one per summand)
//! mask       switched form only: ceil(len / N) x k x N values of mask_bits bits, packed
//! bodies     len values of body_bits bits, packed
//! ```
//!
//! Packing: blocks of 64 values, each block exactly `bits` little-endian u64 words, value i
//! at bits i·bits of its block, the last block zero-padded (refused otherwise, so every
//! accepted message has one encoding).
//!
//! [`CompactVector::parse_submission`] and [`CompactVector::parse_aggregate`] check the magic
//! and version (version 1, the full-ciphertext format of hefl 0.1, is refused naming both),
//! parse the header under a size limit, validate every field against the parameter set and
//! the caller's [`Expected`] (key id, length, widths, form, summand and seed counts), and
//! check the lengths exactly, all before allocating; any failure is a typed [`WireError`] and
//! no input makes them panic.
//!
//! The format has no MAC: GLWE ciphertexts are malleable by design (that is what makes them
//! summable), so integrity and authenticity of messages come from the transport (TLS) and
//! the protocol layer, not from here. A tampered seed or body decrypts to garbage, which the
//! client's decoder refuses ([`crate::fl::Encoding::decode`]).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use bincode::Options;

use super::ciphertext::MAX_PLAINTEXT_LEN;
use super::compact::{CompactVector, Masks, add_masks, mask_words};
use super::context::Context;
use super::keys::KeyId;
pub(crate) use super::pack::le_word;
use super::pack::round_to;
use super::pack::{pack_into, packed_len, padding_is_zero, unpack_add, unpack_to};
use super::params::PARAMS;
use super::widths::{DownloadForm, Widths};

/// First bytes of every serialized [`CompactVector`].
const MAGIC: [u8; 8] = *b"HEFLGLWE";
/// Version of the wire format this release writes and reads: 3, compact ciphertexts bound to
/// their run, round and party (2 had no [`Context`]; 1 was hefl 0.1's full ciphertexts).
pub const WIRE_VERSION: u16 = 3;

/// Upper bound on the bincode header (the real one is about 160 bytes).
const HEADER_LIMIT: u64 = 512;
/// Bytes of one seed.
const SEED_BYTES: usize = 16;

/// What the receiver expects of a federation's messages, checked before any body is read.
///
/// ```
/// use hefl::he::{DownloadForm, Expected, Widths, keys::KeyFile};
///
/// let key_id = KeyFile::from_seed([1; 32]).key_id();
/// let widths = Widths::new(22, 3, DownloadForm::Seeds)?;
/// let expect = Expected { key_id, plaintext_len: 101_770, widths };
/// assert_eq!(expect.widths.body_bits(), 25);
/// # Ok::<(), hefl::he::HeadroomError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expected {
    /// The key id the ciphertexts must be under.
    pub key_id: KeyId,
    /// The exact plaintext length.
    pub plaintext_len: usize,
    /// The federation's widths and download form (and its party count, the most summands an
    /// aggregate may hold).
    pub widths: Widths,
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
    Header(#[source] HeaderError),
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
    /// Summand count outside 1..=max.
    #[error("ciphertext sums {found} encryptions, expected between 1 and {max}")]
    Summands {
        /// Largest acceptable.
        max: u32,
        /// Count in the message.
        found: u32,
    },
    /// A width other than the federation's.
    #[error("{what} of {found} bits, expected {expected}")]
    Width {
        /// Which width (body or mask).
        what: &'static str,
        /// The federation's width (0: no switched mask).
        expected: u32,
        /// Width in the message.
        found: u32,
    },
    /// A seed count other than the form needs.
    #[error("{found} seeds for {summands} summands, expected {expected} ({form} form)")]
    SeedCount {
        /// Summands in the message.
        summands: u32,
        /// Seeds the form needs.
        expected: u32,
        /// Seeds in the message.
        found: u32,
        /// The form expected.
        form: super::DownloadForm,
    },
    /// Seeds not strictly increasing: repeated (one encryption counted twice) or out of order.
    #[error(
        "seed {index} does not follow seed {previous} in increasing order (repeated or reordered seeds)"
    )]
    SeedOrder {
        /// Position of the offending seed.
        index: usize,
        /// Position of the seed before it.
        previous: usize,
    },
    /// An upload whose seed is already in the sum (the same encryption sent twice).
    #[error("this upload's seed is already in the sum: the same encryption cannot count twice")]
    RepeatedSeed,
    /// Nonzero bits in the padding after the last value.
    #[error("nonzero padding after the last packed value of the {part}")]
    Padding {
        /// Which part.
        part: &'static str,
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
    summands: u32,
    body_bits: u32,
    mask_bits: u32,
    seed_count: u32,
    context: Context,
}

fn bincode_options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(HEADER_LIMIT)
        .allow_trailing_bytes()
}

const PREFIX_LEN: usize = MAGIC.len() + size_of::<u16>();

/// What kind of message a parser expects.
#[derive(Clone, Copy)]
enum Kind {
    /// One party's upload: one summand, one seed.
    Submission,
    /// A round's sum of at most this many parties, in the federation's download form.
    Aggregate(u32),
}

/// A validated message: its header and the byte ranges of its parts.
struct Parts<'a> {
    header: Header,
    seeds: &'a [u8],
    mask: &'a [u8],
    bodies: &'a [u8],
}

impl CompactVector {
    fn header(&self) -> Header {
        let (mask_bits, seed_count) = match &self.masks {
            Masks::Seeds(seeds) => (0, seeds.len() as u32),
            Masks::Summed { bits, .. } => (*bits, 0),
        };
        Header {
            parameter_set: PARAMS.name().to_owned(),
            glwe_dimension: PARAMS.glwe_dimension().0 as u64,
            polynomial_size: PARAMS.polynomial_size().0 as u64,
            key_id: self.key_id.0,
            plaintext_len: self.plaintext_len as u64,
            summands: self.summands,
            body_bits: self.body_bits,
            mask_bits,
            seed_count,
            context: self.context,
        }
    }

    /// The context this message names (see [`Context`]).
    pub fn context(&self) -> Context {
        self.context
    }

    /// Names the context this message is for: a party's upload when it seals, the server's
    /// published sum when it closes a round.
    pub fn set_context(&mut self, context: Context) {
        self.context = context;
    }

    /// Rewrites the context in a message's header, in place (the header's size does not
    /// change). Refuses bytes whose header does not parse.
    pub fn restamp(bytes: &mut [u8], context: Context) -> Result<(), WireError> {
        let (mut header, rest) = read_header(bytes)?;
        let end = bytes.len() - rest.len();
        header.context = context;
        let mut out = &mut bytes[PREFIX_LEN..end];
        bincode_options()
            .serialize_into(&mut out, &header)
            .map_err(|e| WireError::Header(HeaderError::Decode(e)))
    }

    /// The context a message names, read from its header alone (checked: magic, version and a
    /// header that parses), without parsing the rest.
    pub fn context_of(bytes: &[u8]) -> Result<Context, WireError> {
        let (header, _) = read_header(bytes)?;
        Ok(header.context)
    }

    /// An upper bound on the size of any valid message of the federation `expected` (an
    /// upload or an aggregate of up to all its parties), saturating at `usize::MAX`: what a
    /// receiver may accept before parsing.
    ///
    /// ```
    /// use hefl::he::{CompactVector, DownloadForm, Expected, Widths, keys::KeyFile};
    ///
    /// let key = KeyFile::from_seed([1; 32]).secret_key()?;
    /// let widths = Widths::new(22, 3, DownloadForm::Seeds)?;
    /// let expected = Expected { key_id: key.key_id(), plaintext_len: 5000, widths };
    /// let upload = key.prepare(5000)?.seal(&[7; 5000], &widths)?.to_bytes();
    /// assert!(upload.len() <= CompactVector::max_wire_len(&expected));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_wire_len(expected: &Expected) -> usize {
        let len = expected.plaintext_len;
        let widths = expected.widths;
        let seeds = (widths.parties() as usize).saturating_mul(SEED_BYTES);
        let mask = widths.mask_bits().map_or(0, |bits| {
            packed_len(
                PARAMS.ciphertexts_for(len).saturating_mul(mask_words()),
                bits,
            )
        });
        packed_len(len, widths.body_bits())
            .saturating_add(seeds.max(mask.saturating_add(SEED_BYTES)))
            .saturating_add(PREFIX_LEN + HEADER_LIMIT as usize)
    }

    /// Size of [`CompactVector::to_bytes`] output.
    pub fn wire_len(&self) -> usize {
        let header = bincode_options()
            .serialized_size(&self.header())
            .map_or(HEADER_LIMIT as usize, |n| n as usize);
        let masks = match &self.masks {
            Masks::Seeds(seeds) => seeds.len() * SEED_BYTES,
            Masks::Summed { bits, words } => packed_len(words.len(), *bits),
        };
        PREFIX_LEN + header + masks + packed_len(self.plaintext_len, self.body_bits)
    }

    /// Serializes to the wire format (see the [wire module](crate::he::wire)); a switched sum
    /// rounds its mask to `mask_bits` here.
    ///
    /// ```
    /// use hefl::he::{CompactVector, DownloadForm, Expected, Widths, keys::KeyFile};
    ///
    /// let key = KeyFile::from_seed([1; 32]).secret_key()?;
    /// let widths = Widths::new(22, 3, DownloadForm::Seeds)?;
    /// let upload = key.prepare(3)?.seal(&[1, 2, 3], &widths)?;
    /// let bytes = upload.to_bytes();
    /// assert_eq!(&bytes[..8], b"HEFLGLWE");
    /// assert_eq!(bytes.len(), upload.wire_len());
    /// let expected = Expected { key_id: key.key_id(), plaintext_len: 3, widths };
    /// assert_eq!(CompactVector::parse_submission(&bytes, &expected)?, upload);
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
        match &self.masks {
            Masks::Seeds(seeds) => {
                for seed in seeds {
                    out.extend_from_slice(&seed.to_le_bytes());
                }
            }
            Masks::Summed { bits, words } => {
                let rounded: Vec<u64> = words.par_iter().map(|&w| round_to(w, *bits)).collect();
                pack_into(&rounded, *bits, &mut out);
            }
        }
        pack_into(&self.bodies, self.body_bits, &mut out);
        out
    }

    /// Parses and validates one party's upload (one summand, one seed, the federation's body
    /// width) from untrusted bytes.
    ///
    /// ```
    /// use hefl::he::{CompactVector, DownloadForm, Expected, WireError, Widths, keys::KeyFile};
    ///
    /// let key = KeyFile::from_seed([1; 32]).secret_key()?;
    /// let widths = Widths::new(22, 3, DownloadForm::Seeds)?;
    /// let bytes = key.prepare(3)?.seal(&[1, 2, 3], &widths)?.to_bytes();
    /// let expect = |key_id, plaintext_len, widths| Expected { key_id, plaintext_len, widths };
    ///
    /// let other = KeyFile::from_seed([2; 32]).key_id();
    /// let wrong_key = CompactVector::parse_submission(&bytes, &expect(other, 3, widths));
    /// assert!(matches!(wrong_key, Err(WireError::KeyId { .. })));
    /// let wrong_len = CompactVector::parse_submission(&bytes, &expect(key.key_id(), 4, widths));
    /// assert!(matches!(wrong_len, Err(WireError::Length { .. })));
    /// let wider = Widths::new(27, 100, DownloadForm::Seeds)?;
    /// let wrong_width = CompactVector::parse_submission(&bytes, &expect(key.key_id(), 3, wider));
    /// assert!(matches!(wrong_width, Err(WireError::Width { .. })));
    /// let truncated = CompactVector::parse_submission(&bytes[..100], &expect(key.key_id(), 3, widths));
    /// assert!(matches!(truncated, Err(WireError::Truncated { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn parse_submission(bytes: &[u8], expected: &Expected) -> Result<Self, WireError> {
        Self::parse(bytes, expected, Kind::Submission)
    }

    /// Parses and validates a round's sum of at most `max_parties` uploads (and at most the
    /// federation's party count) in the federation's download form.
    pub fn parse_aggregate(
        bytes: &[u8],
        expected: &Expected,
        max_parties: u32,
    ) -> Result<Self, WireError> {
        Self::parse(bytes, expected, Kind::Aggregate(max_parties))
    }

    fn parse(bytes: &[u8], expected: &Expected, kind: Kind) -> Result<Self, WireError> {
        let parts = validate(bytes, expected, kind)?;
        let len = expected.plaintext_len;
        let mut bodies = vec![0u64; len];
        unpack_to(parts.bodies, parts.header.body_bits, len, &mut bodies);
        let masks = match parts.header.mask_bits {
            0 => Masks::Seeds(parts.seeds.chunks_exact(SEED_BYTES).map(le_seed).collect()),
            bits => {
                let count = PARAMS.ciphertexts_for(len) * mask_words();
                let mut words = vec![0u64; count];
                unpack_to(parts.mask, bits, count, &mut words);
                Masks::Summed { bits, words }
            }
        };
        Ok(Self {
            key_id: expected.key_id,
            plaintext_len: len,
            summands: parts.header.summands,
            body_bits: parts.header.body_bits,
            bodies,
            masks,
            context: parts.header.context,
        })
    }

    /// Validates untrusted bytes exactly as [`CompactVector::parse_submission`] does, then
    /// adds the upload into `self` straight from the buffer: bodies unpacked into the running
    /// sum, the seed merged in order (or, for a switched sum, its mask regenerated and added).
    /// This is the server's fold. On any error `self` is unchanged.
    ///
    /// ```
    /// use hefl::he::{DownloadForm, Expected, Widths, keys::KeyFile};
    ///
    /// let key = KeyFile::from_seed([1; 32]).secret_key()?;
    /// let widths = Widths::new(22, 3, DownloadForm::Seeds)?;
    /// let expected = Expected { key_id: key.key_id(), plaintext_len: 2, widths };
    /// let delta = 1u64 << 42;
    /// let mut sum = key.prepare(2)?.seal(&[delta, 2 * delta], &widths)?;
    /// let other = key.prepare(2)?.seal(&[3 * delta, 4 * delta], &widths)?.to_bytes();
    /// sum.add_submission(&other, &expected)?;
    /// let words = key.decrypt(&sum.expand())?;
    /// assert_eq!(words.iter().map(|w| w.wrapping_add(delta / 2) >> 42).collect::<Vec<_>>(), [4, 6]);
    /// // The same upload twice is refused, and the sum is unchanged.
    /// assert!(sum.add_submission(&other, &expected).is_err());
    /// assert_eq!(sum.summands(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add_submission(&mut self, bytes: &[u8], expected: &Expected) -> Result<(), WireError> {
        let parts = validate(bytes, expected, Kind::Submission)?;
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
        if self.body_bits != parts.header.body_bits {
            return Err(WireError::Width {
                what: "bodies",
                expected: self.body_bits,
                found: parts.header.body_bits,
            });
        }
        let summands = self.summands.checked_add(1).ok_or(WireError::Summands {
            max: u32::MAX - self.summands,
            found: 1,
        })?;
        let seed = le_seed(parts.seeds);
        match &mut self.masks {
            // In place: the server's running list grows by one seed, without a new list per
            // submission.
            Masks::Seeds(seeds) => match seeds.binary_search(&seed) {
                Ok(_) => return Err(WireError::RepeatedSeed),
                Err(at) => seeds.insert(at, seed),
            },
            Masks::Summed { words, .. } => add_masks(&[seed], words),
        }
        unpack_add(
            parts.bodies,
            self.body_bits,
            self.plaintext_len,
            &mut self.bodies,
        );
        self.summands = summands;
        Ok(())
    }
}

/// A little-endian u128 from exactly sixteen bytes (a seed).
fn le_seed(chunk: &[u8]) -> u128 {
    let mut seed = [0u8; SEED_BYTES];
    seed.copy_from_slice(chunk);
    u128::from_le_bytes(seed)
}

/// Checks every field of a message against `expected` and `kind`; returns its header and the
/// exact byte ranges of its seeds, mask and bodies.
fn validate<'a>(bytes: &'a [u8], expected: &Expected, kind: Kind) -> Result<Parts<'a>, WireError> {
    let (header, rest) = read_header(bytes)?;
    validate_header(&header, expected, kind)?;
    validate_body(header, rest, expected)
}

/// The header of a message and the bytes after it: magic, version and the bincode header
/// checked, nothing else.
fn read_header(bytes: &[u8]) -> Result<(Header, &[u8]), WireError> {
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
    Ok((header, rest))
}

/// The exact byte ranges of a message's seeds, mask and bodies after its validated header.
fn validate_body<'a>(
    header: Header,
    rest: &'a [u8],
    expected: &Expected,
) -> Result<Parts<'a>, WireError> {
    // Bounded by MAX_PLAINTEXT_LEN and the u32 counts: no overflow in usize on 64 bits.
    let len = expected.plaintext_len;
    let seeds_len = header.seed_count as usize * SEED_BYTES;
    let mask_len = match header.mask_bits {
        0 => 0,
        bits => packed_len(PARAMS.ciphertexts_for(len) * mask_words(), bits),
    };
    let bodies_len = packed_len(len, header.body_bits);
    let needed = seeds_len + mask_len + bodies_len;
    let found = rest.len();
    if found < needed {
        return Err(WireError::Truncated {
            part: "seeds, mask and bodies",
            needed: needed as u64,
            found: found as u64,
        });
    }
    if found > needed {
        return Err(WireError::TrailingBytes {
            body: needed as u64,
            found: (found - needed) as u64,
        });
    }
    let (seeds, rest) = rest.split_at(seeds_len);
    let (mask, bodies) = rest.split_at(mask_len);
    let mut previous: Option<u128> = None;
    for (index, seed) in seeds.chunks_exact(SEED_BYTES).map(le_seed).enumerate() {
        if previous.is_some_and(|p| p >= seed) {
            return Err(WireError::SeedOrder {
                index,
                previous: index - 1,
            });
        }
        previous = Some(seed);
    }
    if !padding_is_zero(bodies, header.body_bits, len) {
        return Err(WireError::Padding { part: "bodies" });
    }
    if header.mask_bits != 0
        && !padding_is_zero(
            mask,
            header.mask_bits,
            PARAMS.ciphertexts_for(len) * mask_words(),
        )
    {
        return Err(WireError::Padding { part: "mask" });
    }
    Ok(Parts {
        header,
        seeds,
        mask,
        bodies,
    })
}

/// Why a ciphertext header does not parse.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// Longer than the limit.
    #[error("header exceeds the {limit}-byte limit")]
    TooLong {
        /// The limit.
        limit: u64,
    },
    /// bincode refused it.
    #[error(transparent)]
    Decode(#[from] bincode::Error),
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
        bincode::ErrorKind::SizeLimit => WireError::Header(HeaderError::TooLong {
            limit: HEADER_LIMIT,
        }),
        other => WireError::Header(HeaderError::Decode(Box::new(other))),
    }
}

fn validate_header(header: &Header, expected: &Expected, kind: Kind) -> Result<(), WireError> {
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
    let widths = expected.widths;
    if header.body_bits != widths.body_bits() {
        return Err(WireError::Width {
            what: "bodies",
            expected: widths.body_bits(),
            found: header.body_bits,
        });
    }
    let (max, form) = match kind {
        Kind::Submission => (1, DownloadForm::Seeds),
        Kind::Aggregate(max) => (max.min(widths.parties()), widths.form()),
    };
    if header.summands == 0 || header.summands > max {
        return Err(WireError::Summands {
            max,
            found: header.summands,
        });
    }
    let mask_bits = match form {
        DownloadForm::Switched => widths.mask_bits().unwrap_or(0),
        _ => 0,
    };
    if header.mask_bits != mask_bits {
        return Err(WireError::Width {
            what: "switched mask",
            expected: mask_bits,
            found: header.mask_bits,
        });
    }
    let seeds = if mask_bits == 0 { header.summands } else { 0 };
    if header.seed_count != seeds {
        return Err(WireError::SeedCount {
            summands: header.summands,
            expected: seeds,
            found: header.seed_count,
            form,
        });
    }
    Ok(())
}
