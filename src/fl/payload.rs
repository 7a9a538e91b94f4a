//! What an update looks like on the wire in each privacy mode, and how a server folds them.
//!
//! Both modes send the same thing in different envelopes: the client weights its update,
//! appends its weight and quantizes the vector ([`Encoding`](super::Encoding)). In `he` mode the words are encrypted
//! ([`CompactVector`]); in `plain` mode they travel as they are ([`PlainSum`]). The server
//! adds the vectors (integer addition modulo 2^64, exact and independent of arrival order), and
//! each client divides the sum by the summed weight in the last slot. So the total weight,
//! and hence each party's data size, travels encrypted in `he` mode, and the two modes differ
//! by encryption alone: fed the same updates they produce bit-identical models (tested).

use crate::he::wire::le_word;
use crate::he::{CompactVector, Context, Expected, WireError};
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
    /// The first eight bytes are not the plain format's magic.
    #[error("magic is not HEFLPLN2 (an older hefl, or not a plain message)")]
    Magic,
    /// Another number of values.
    #[error("{found} values, expected {expected}")]
    Length {
        /// Values the header announces (or the sum holds).
        found: u64,
        /// Values expected.
        expected: u64,
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
    #[error("body of {found} bytes, expected {expected}")]
    Body {
        /// Bytes after the header.
        found: usize,
        /// 8 per value.
        expected: usize,
    },
}

/// Fixed-point words sent in the clear (the `plain` privacy mode), with the number of
/// submissions summed into them.
///
/// Wire format: `HEFLPLN2`, then `len: u64 LE`, `summands: u32 LE`, the [`Context`] (`run`:
/// 32 bytes, `round: u64 LE`, `party: u32 LE`), then `len` u64 LE words.
///
/// ```
/// use hefl::fl::{PlainSum, Summable};
///
/// let bytes = PlainSum::fresh(vec![1, 2, 3]).to_bytes();
/// let mut sum = PlainSum::parse_submission(&bytes, &3)?;
/// sum.add_submission(&bytes, &3)?;
/// assert_eq!(sum.words(), [2, 4, 6]);
/// assert!(PlainSum::parse_submission(&bytes, &4).is_err());
/// assert!(sum.add_submission(&bytes[..30], &3).is_err());
/// assert_eq!(sum.words(), [2, 4, 6]);
/// # Ok::<(), hefl::fl::PayloadError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlainSum {
    words: Vec<u64>,
    summands: u32,
    context: Context,
}

const PLAIN_MAGIC: &[u8; 8] = b"HEFLPLN2";
const PLAIN_HEADER: usize = 8 + 8 + 4 + 32 + 8 + 4;

impl PlainSum {
    /// One party's words (in the default context; see [`Summable::set_context`]).
    pub fn fresh(words: Vec<u64>) -> Self {
        Self {
            words,
            summands: 1,
            context: Context::default(),
        }
    }

    /// One party's words for `context`.
    pub fn sealed(words: Vec<u64>, context: Context) -> Self {
        Self {
            context,
            ..Self::fresh(words)
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

    /// The context this message names.
    pub fn context(&self) -> Context {
        self.context
    }

    /// How many submissions are summed in.
    pub fn summands(&self) -> u32 {
        self.summands
    }

    fn parse(bytes: &[u8], len: usize, max_summands: u32) -> Result<Self, PayloadError> {
        let (summands, body) = Self::validate(bytes, len, max_summands)?;
        Ok(Self {
            words: body.chunks_exact(8).map(le_word).collect(),
            summands,
            context: Self::header_context(bytes)?,
        })
    }

    /// A message's header, its size and magic checked.
    fn header(bytes: &[u8]) -> Result<&[u8], PlainError> {
        let header = bytes.get(..PLAIN_HEADER).ok_or(PlainError::Short {
            found: bytes.len(),
            expected: PLAIN_HEADER,
        })?;
        if &header[..8] != PLAIN_MAGIC {
            return Err(PlainError::Magic);
        }
        Ok(header)
    }

    /// The context in a message's header (magic and size checked).
    fn header_context(bytes: &[u8]) -> Result<Context, PlainError> {
        let header = Self::header(bytes)?;
        let mut run = [0u8; 32];
        run.copy_from_slice(&header[20..52]);
        Ok(Context {
            run,
            round: le_word(&header[52..60]),
            party: u32::from_le_bytes([header[60], header[61], header[62], header[63]]),
        })
    }

    /// Checks a message's header and length; returns its summand count and body.
    fn validate(bytes: &[u8], len: usize, max_summands: u32) -> Result<(u32, &[u8]), PlainError> {
        let header = Self::header(bytes)?;
        let found_len = le_word(&header[8..16]);
        let summands = u32::from_le_bytes([header[16], header[17], header[18], header[19]]);
        if found_len != len as u64 {
            return Err(PlainError::Length {
                found: found_len,
                expected: len as u64,
            });
        }
        if summands == 0 || summands > max_summands {
            return Err(PlainError::Summands {
                found: summands,
                max: max_summands,
            });
        }
        let body = &bytes[PLAIN_HEADER..];
        if body.len() != len * 8 {
            return Err(PlainError::Body {
                found: body.len(),
                expected: len * 8,
            });
        }
        Ok((summands, body))
    }
}

impl Summable for PlainSum {
    /// The exact number of words.
    type Expect = usize;
    const MODE: &'static str = "plain";

    fn parse_submission(bytes: &[u8], len: &usize) -> Result<Self, PayloadError> {
        Self::parse(bytes, *len, 1)
    }

    fn parse_aggregate(bytes: &[u8], len: &usize, max_parties: u32) -> Result<Self, PayloadError> {
        Self::parse(bytes, *len, max_parties)
    }

    fn add_submission(&mut self, bytes: &[u8], len: &usize) -> Result<(), PayloadError> {
        if self.words.len() != *len {
            return Err(PlainError::Length {
                found: self.words.len() as u64,
                expected: *len as u64,
            }
            .into());
        }
        let room = u32::MAX - self.summands;
        let (summands, body) = Self::validate(bytes, *len, room.min(1))?;
        const CHUNK: usize = 4096;
        self.words
            .par_chunks_mut(CHUNK)
            .zip(body.par_chunks(CHUNK * 8))
            .for_each(|(acc, add)| {
                for (a, b) in acc.iter_mut().zip(add.chunks_exact(8)) {
                    *a = a.wrapping_add(le_word(b));
                }
            });
        self.summands += summands;
        Ok(())
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PLAIN_HEADER + self.words.len() * 8);
        out.extend_from_slice(PLAIN_MAGIC);
        out.extend_from_slice(&(self.words.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.summands.to_le_bytes());
        out.extend_from_slice(&self.context.run);
        out.extend_from_slice(&self.context.round.to_le_bytes());
        out.extend_from_slice(&self.context.party.to_le_bytes());
        for w in &self.words {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out
    }

    fn max_wire_len(len: &usize) -> usize {
        PLAIN_HEADER + len.saturating_mul(8)
    }

    fn context_of(bytes: &[u8]) -> Result<Context, PayloadError> {
        Ok(Self::header_context(bytes)?)
    }

    fn set_context(&mut self, context: Context) {
        self.context = context;
    }

    fn restamp(bytes: &mut [u8], context: Context) -> Result<(), PayloadError> {
        Self::header_context(bytes)?;
        bytes[20..52].copy_from_slice(&context.run);
        bytes[52..60].copy_from_slice(&context.round.to_le_bytes());
        bytes[60..64].copy_from_slice(&context.party.to_le_bytes());
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
