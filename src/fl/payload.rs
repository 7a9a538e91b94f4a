//! What an update looks like on the wire in each privacy mode, and how a server folds them.
//!
//! Both modes send the same thing in different envelopes: the client weights its update,
//! appends its weight and quantizes the vector ([`Encoding`](super::Encoding)). In `he` mode the words are encrypted
//! ([`CompactVector`]); in `plain` (and `dp`) mode they travel as they are, packed to the bits
//! a sum needs ([`PlainSum`]). The server
//! adds the vectors (integer addition modulo 2^64, exact and independent of arrival order), and
//! each client divides the sum by the summed weight in the last slot. So the total weight,
//! and hence each party's data size, travels encrypted in `he` mode, and the two modes differ
//! by encryption alone: fed the same updates they produce bit-identical models (tested).

use crate::he::pack::{pack_into, packed_len, padding_is_zero, unpack_add, unpack_to};
use crate::he::wire::le_word;
use crate::he::{CompactVector, Context, Expected, MAX_PLAINTEXT_LEN, WireError};
use rayon::prelude::*;

/// A vector a server can parse from untrusted bytes, add up and send back, without a key.
///
/// The server is generic over this trait; with [`CompactVector`] as the type, nothing the
/// server holds can be anything but ciphertext.
pub trait Summable: Sized + Send + 'static {
    /// What a submission is checked against (length, key id).
    type Expect: Clone + Send + Sync + 'static;

    /// The name of the privacy mode, as users type it (`plain`, `he`).
    const MODE: &'static str;

    /// Parses one party's submission, checking every field against `expect`.
    fn parse_submission(bytes: &[u8], expect: &Self::Expect) -> Result<Self, PayloadError>;

    /// Parses an aggregate of at most `max_parties` submissions.
    fn parse_aggregate(
        bytes: &[u8],
        expect: &Self::Expect,
        max_parties: u32,
    ) -> Result<Self, PayloadError>;

    /// Validates `bytes` exactly as [`Summable::parse_submission`] does and adds the
    /// submission into `self` without keeping a parsed copy (a server folds each message
    /// once, holding only the running sum). On any error `self` is unchanged.
    fn add_submission(&mut self, bytes: &[u8], expect: &Self::Expect) -> Result<(), PayloadError>;

    /// Adds a public plaintext (one word per value, on this sum's grid) without a key:
    /// secure aggregation's correction (`--secure-agg robust`), exact, adding no noise. On
    /// any error `self` is unchanged.
    fn add_public(&mut self, words: &[u64]) -> Result<(), PayloadError>;

    /// The wire bytes.
    fn to_bytes(&self) -> Vec<u8>;

    /// An upper bound on the size of any valid message for `expect` (the transport's body
    /// limit).
    fn max_wire_len(expect: &Self::Expect) -> usize;

    /// The [`Context`] a message names (run, round, sender), read from its header alone: what
    /// a receiver compares with the context it expects before anything else.
    fn context_of(bytes: &[u8]) -> Result<Context, PayloadError>;

    /// Names what this (summed) message is for: a published sum gets its round's context.
    fn set_context(&mut self, context: Context);

    /// Rewrites the context in a message's header, in place (benchmarks cycle a few messages
    /// through many senders). Refuses bytes whose header does not parse.
    fn restamp(bytes: &mut [u8], context: Context) -> Result<(), PayloadError>;
}

/// Why a payload was refused.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// A ciphertext message failed validation.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// Homomorphic addition refused the operands.
    #[error(transparent)]
    He(#[from] crate::he::HeError),
    /// A plain message failed validation.
    #[error("malformed plain message: {0}")]
    Plain(#[from] PlainError),
    /// A message this run does not take at all (e.g. a model snapshot where the plan has
    /// none).
    #[error("unexpected message: {0}")]
    Unexpected(&'static str),
}

/// Why a plain message ([`PlainSum`]) was refused: what was expected and what came.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlainError {
    /// Fewer bytes than the header.
    #[error("{found} bytes, shorter than the {expected}-byte header")]
    Short {
        /// Bytes received.
        found: usize,
        /// The header's length.
        expected: usize,
    },
    /// The first eight bytes are not a plain message's magic at all.
    #[error("not a hefl plain message: magic {found:02x?}, expected \"HEFLPLN3\"")]
    Magic {
        /// The first eight bytes.
        found: [u8; 8],
    },
    /// A plain message of another version of the format (`HEFLPLN2`: 64-bit words, before
    /// hefl packed them).
    #[error(
        "plain message of wire format version {found:?}, this hefl reads version '3' \
         (magic \"HEFLPLN3\"): the sender runs another hefl release"
    )]
    Version {
        /// The version character after `HEFLPLN`.
        found: char,
    },
    /// Another number of values.
    #[error("{found} values, expected {expected}")]
    Length {
        /// Values the header announces (or the sum holds).
        found: u64,
        /// Values expected.
        expected: u64,
    },
    /// Words of another width than the federation's.
    #[error("words of {found} bits, expected {expected} (the federation's encoding)")]
    Width {
        /// Bits the header announces (or the sum holds).
        found: u32,
        /// Bits expected.
        expected: u32,
    },
    /// A summand count of 0 or above the bound.
    #[error("sums {found} updates, expected between 1 and {max}")]
    Summands {
        /// The header's count.
        found: u32,
        /// The most allowed.
        max: u32,
    },
    /// A body of another size than the header announces.
    #[error("body of {found} bytes, expected {expected} ({len} values of {bits} bits, packed)")]
    Body {
        /// Bytes after the header.
        found: usize,
        /// The packed size of the header's values.
        expected: usize,
        /// Values.
        len: usize,
        /// Bits per value.
        bits: u32,
    },
    /// Nonzero bits after the last packed value.
    #[error("nonzero padding after the last packed value")]
    Padding,
}

/// What a plain message is checked against: its exact number of words and the bits each
/// word keeps on the wire (its top bits; the federation's sums need no more).
///
/// A federation's updates and sums keep the t bits of its encoding
/// ([`Encoding::total_bits`](super::Encoding::total_bits): a sum of every party fits them
/// without wrapping), model snapshots 32 (one f32 per word).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlainShape {
    /// Words per message.
    pub len: usize,
    /// Bits kept of every word, 1 to 64.
    pub bits: u32,
}

/// Fixed-point words in the clear (the `plain` and `dp` privacy modes), with the number of
/// submissions summed into them.
///
/// Each word is a value in its top `bits` bits (a torus word, as `he` plaintexts are), and
/// travels as those bits alone, packed as `he` bodies are (see [`crate::he::wire`]): 64
/// values per block of `bits` little-endian u64 words. Sums add modulo 2^64, which on these
/// words is addition modulo 2^bits: the packed sum is exact and as wide as an update.
///
/// Wire format (version 3): `HEFLPLN3`, then `len: u64 LE`, `summands: u32 LE`,
/// `bits: u32 LE`, the [`Context`] (`run`: 32 bytes, `round: u64 LE`, `party: u32 LE`), then
/// `len` values of `bits` bits, packed, the last block zero-padded.
///
/// ```
/// use hefl::fl::{PlainShape, PlainSum, Summable};
///
/// let shape = PlainShape { len: 3, bits: 8 };
/// let bytes = PlainSum::fresh(vec![1 << 56, 2 << 56, 3 << 56], 8).to_bytes();
/// let mut sum = PlainSum::parse_submission(&bytes, &shape)?;
/// sum.add_submission(&bytes, &shape)?;
/// assert_eq!(sum.words(), [2 << 56, 4 << 56, 6 << 56]);
/// assert!(PlainSum::parse_submission(&bytes, &PlainShape { len: 4, ..shape }).is_err());
/// assert!(PlainSum::parse_submission(&bytes, &PlainShape { bits: 16, ..shape }).is_err());
/// assert!(sum.add_submission(&bytes[..30], &shape).is_err());
/// assert_eq!(sum.words(), [2 << 56, 4 << 56, 6 << 56]);
/// # Ok::<(), hefl::fl::PayloadError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlainSum {
    words: Vec<u64>,
    bits: u32,
    summands: u32,
    context: Context,
}

/// The magic of this version; earlier versions differ in the last character.
const PLAIN_MAGIC: &[u8; 8] = b"HEFLPLN3";
const PLAIN_HEADER: usize = 8 + 8 + 4 + 4 + 32 + 8 + 4;
/// Where the [`Context`] starts in the header.
const CONTEXT_AT: usize = 24;

impl PlainSum {
    /// One party's words, each kept to its top `bits` bits (the rest zeroed; `bits` is
    /// taken within 1 to 64), in the default context (see [`Summable::set_context`]).
    pub fn fresh(words: Vec<u64>, bits: u32) -> Self {
        Self::sealed(words, bits, Context::default())
    }

    /// One party's words for `context`, each kept to its top `bits` bits (the rest zeroed;
    /// `bits` is taken within 1 to 64).
    pub fn sealed(mut words: Vec<u64>, bits: u32, context: Context) -> Self {
        let bits = bits.clamp(1, 64);
        let kept = u64::MAX << (64 - bits);
        words.par_iter_mut().for_each(|w| *w &= kept);
        Self {
            words,
            bits,
            summands: 1,
            context,
        }
    }

    /// The (summed) words.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// The (summed) words, taken.
    pub fn into_words(self) -> Vec<u64> {
        self.words
    }

    /// Bits kept of every word.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// The context this message names.
    pub fn context(&self) -> Context {
        self.context
    }

    /// How many submissions are summed in.
    pub fn summands(&self) -> u32 {
        self.summands
    }

    fn parse(bytes: &[u8], shape: &PlainShape, max_summands: u32) -> Result<Self, PayloadError> {
        let (summands, body) = Self::validate(bytes, shape, max_summands)?;
        let mut words = vec![0u64; shape.len];
        unpack_to(body, shape.bits, shape.len, &mut words);
        Ok(Self {
            words,
            bits: shape.bits,
            summands,
            context: Self::header_context(bytes)?,
        })
    }

    /// A message's header, its size, magic and version checked.
    fn header(bytes: &[u8]) -> Result<&[u8], PlainError> {
        let header = bytes.get(..PLAIN_HEADER).ok_or(PlainError::Short {
            found: bytes.len(),
            expected: PLAIN_HEADER,
        })?;
        let (magic, version) = (&header[..7], header[7]);
        if magic != &PLAIN_MAGIC[..7] {
            let mut found = [0u8; 8];
            found.copy_from_slice(&header[..8]);
            return Err(PlainError::Magic { found });
        }
        if version != PLAIN_MAGIC[7] {
            return Err(PlainError::Version {
                found: char::from(version),
            });
        }
        Ok(header)
    }

    /// The context in a message's header (magic, version and size checked).
    fn header_context(bytes: &[u8]) -> Result<Context, PlainError> {
        let header = &Self::header(bytes)?[CONTEXT_AT..];
        let mut run = [0u8; 32];
        run.copy_from_slice(&header[..32]);
        Ok(Context {
            run,
            round: le_word(&header[32..40]),
            party: u32::from_le_bytes([header[40], header[41], header[42], header[43]]),
        })
    }

    /// Checks a message's header, shape and padding; returns its summand count and body.
    fn validate<'a>(
        bytes: &'a [u8],
        shape: &PlainShape,
        max_summands: u32,
    ) -> Result<(u32, &'a [u8]), PlainError> {
        let header = Self::header(bytes)?;
        let u32_at = |at: usize| {
            u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        let (found_len, summands, bits) = (le_word(&header[8..16]), u32_at(16), u32_at(20));
        if found_len != shape.len as u64 || shape.len > MAX_PLAINTEXT_LEN {
            return Err(PlainError::Length {
                found: found_len,
                expected: shape.len as u64,
            });
        }
        if bits != shape.bits || !(1..=64).contains(&bits) {
            return Err(PlainError::Width {
                found: bits,
                expected: shape.bits,
            });
        }
        if summands == 0 || summands > max_summands {
            return Err(PlainError::Summands {
                found: summands,
                max: max_summands,
            });
        }
        let body = &bytes[PLAIN_HEADER..];
        let expected = packed_len(shape.len, bits);
        if body.len() != expected {
            return Err(PlainError::Body {
                found: body.len(),
                expected,
                len: shape.len,
                bits,
            });
        }
        if !padding_is_zero(body, bits, shape.len) {
            return Err(PlainError::Padding);
        }
        Ok((summands, body))
    }
}

impl Summable for PlainSum {
    /// The exact number of words and their width.
    type Expect = PlainShape;
    const MODE: &'static str = "plain";

    fn parse_submission(bytes: &[u8], shape: &PlainShape) -> Result<Self, PayloadError> {
        Self::parse(bytes, shape, 1)
    }

    fn parse_aggregate(
        bytes: &[u8],
        shape: &PlainShape,
        max_parties: u32,
    ) -> Result<Self, PayloadError> {
        Self::parse(bytes, shape, max_parties)
    }

    fn add_submission(&mut self, bytes: &[u8], shape: &PlainShape) -> Result<(), PayloadError> {
        if self.words.len() != shape.len {
            return Err(PlainError::Length {
                found: self.words.len() as u64,
                expected: shape.len as u64,
            }
            .into());
        }
        if self.bits != shape.bits {
            return Err(PlainError::Width {
                found: self.bits,
                expected: shape.bits,
            }
            .into());
        }
        let room = u32::MAX - self.summands;
        let (summands, body) = Self::validate(bytes, shape, room.min(1))?;
        unpack_add(body, self.bits, shape.len, &mut self.words);
        self.summands += summands;
        Ok(())
    }

    fn add_public(&mut self, words: &[u64]) -> Result<(), PayloadError> {
        Ok(crate::he::add_public_words(
            &mut self.words,
            words,
            self.bits,
        )?)
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PLAIN_HEADER + packed_len(self.words.len(), self.bits));
        out.extend_from_slice(PLAIN_MAGIC);
        out.extend_from_slice(&(self.words.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.summands.to_le_bytes());
        out.extend_from_slice(&self.bits.to_le_bytes());
        out.extend_from_slice(&self.context.run);
        out.extend_from_slice(&self.context.round.to_le_bytes());
        out.extend_from_slice(&self.context.party.to_le_bytes());
        pack_into(&self.words, self.bits, &mut out);
        out
    }

    fn max_wire_len(shape: &PlainShape) -> usize {
        let len = shape.len.min(MAX_PLAINTEXT_LEN);
        PLAIN_HEADER + packed_len(len, shape.bits.clamp(1, 64))
    }

    fn context_of(bytes: &[u8]) -> Result<Context, PayloadError> {
        Ok(Self::header_context(bytes)?)
    }

    fn set_context(&mut self, context: Context) {
        self.context = context;
    }

    fn restamp(bytes: &mut [u8], context: Context) -> Result<(), PayloadError> {
        Self::header_context(bytes)?;
        let at = CONTEXT_AT;
        bytes[at..at + 32].copy_from_slice(&context.run);
        bytes[at + 32..at + 40].copy_from_slice(&context.round.to_le_bytes());
        bytes[at + 40..at + 44].copy_from_slice(&context.party.to_le_bytes());
        Ok(())
    }
}

impl Summable for CompactVector {
    /// Key id, plaintext length and widths: the federation's.
    type Expect = Expected;
    const MODE: &'static str = "he";

    /// Parses the round's first upload as the start of its sum: in the switched download
    /// form, its mask is regenerated at once (each later one as it is folded).
    fn parse_submission(bytes: &[u8], expect: &Expected) -> Result<Self, PayloadError> {
        let upload = CompactVector::parse_submission(bytes, expect)?;
        Ok(match expect.widths.mask_bits() {
            Some(bits) => upload.into_switched(bits),
            None => upload,
        })
    }

    fn parse_aggregate(
        bytes: &[u8],
        expect: &Expected,
        max_parties: u32,
    ) -> Result<Self, PayloadError> {
        Ok(CompactVector::parse_aggregate(bytes, expect, max_parties)?)
    }

    fn add_submission(&mut self, bytes: &[u8], expect: &Expected) -> Result<(), PayloadError> {
        Ok(CompactVector::add_submission(self, bytes, expect)?)
    }

    fn add_public(&mut self, words: &[u64]) -> Result<(), PayloadError> {
        Ok(CompactVector::add_public(self, words)?)
    }

    fn to_bytes(&self) -> Vec<u8> {
        CompactVector::to_bytes(self)
    }

    fn max_wire_len(expect: &Expected) -> usize {
        CompactVector::max_wire_len(expect)
    }

    fn context_of(bytes: &[u8]) -> Result<Context, PayloadError> {
        Ok(CompactVector::context_of(bytes)?)
    }

    fn set_context(&mut self, context: Context) {
        CompactVector::set_context(self, context);
    }

    fn restamp(bytes: &mut [u8], context: Context) -> Result<(), PayloadError> {
        Ok(CompactVector::restamp(bytes, context)?)
    }
}
