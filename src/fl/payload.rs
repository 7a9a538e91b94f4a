//! What an update looks like on the wire in each privacy mode, and how a server folds them.
//!
//! Both modes send the same thing in different envelopes: the client scales its update by
//! its weight w (FedAvg: its share of the nominal samples per round), appends w itself, and
//! quantizes the vector with [`FixedPoint`]. In `he` mode the words are encrypted
//! ([`CompactVector`]); in `plain` mode they travel as they are ([`PlainSum`]). The server
//! adds the vectors (integer addition modulo 2^64, exact and independent of arrival order), and
//! each client divides the sum by the summed weight in the last slot. So the total weight,
//! and hence each party's data size, travels encrypted in `he` mode, and the two modes differ
//! by encryption alone: fed the same updates they produce bit-identical models (tested).

use crate::he::wire::le_word;
use crate::he::{CompactVector, Expected, WireError};
use crate::quant::FixedPoint;
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
    #[error("malformed plain update: {0}")]
    Plain(String),
}

/// Fixed-point words sent in the clear (the `plain` privacy mode), with the number of
/// submissions summed into them.
///
/// Wire format: `HEFLPLN1`, then `len: u64 LE`, `summands: u32 LE`, then `len` u64 LE words.
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
}

const PLAIN_MAGIC: &[u8; 8] = b"HEFLPLN1";
const PLAIN_HEADER: usize = 8 + 8 + 4;

impl PlainSum {
    /// One party's words.
    pub fn fresh(words: Vec<u64>) -> Self {
        Self { words, summands: 1 }
    }

    /// The (summed) words.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    fn parse(bytes: &[u8], len: usize, max_summands: u32) -> Result<Self, PayloadError> {
        let (summands, body) = Self::validate(bytes, len, max_summands)?;
        Ok(Self {
            words: body.chunks_exact(8).map(le_word).collect(),
            summands,
        })
    }

    /// Checks a message's header and length; returns its summand count and body.
    fn validate(bytes: &[u8], len: usize, max_summands: u32) -> Result<(u32, &[u8]), PayloadError> {
        let bad = |m: String| PayloadError::Plain(m);
        let header = bytes.get(..PLAIN_HEADER).ok_or_else(|| {
            bad(format!(
                "{} bytes, shorter than the {PLAIN_HEADER}-byte header",
                bytes.len()
            ))
        })?;
        if &header[..8] != PLAIN_MAGIC {
            return Err(bad("magic is not HEFLPLN1".into()));
        }
        let found_len = le_word(&header[8..16]);
        let summands = u32::from_le_bytes([header[16], header[17], header[18], header[19]]);
        if found_len != len as u64 {
            return Err(bad(format!("{found_len} values, expected {len}")));
        }
        if summands == 0 || summands > max_summands {
            return Err(bad(format!(
                "sums {summands} updates, expected between 1 and {max_summands}"
            )));
        }
        let body = &bytes[PLAIN_HEADER..];
        if body.len() != len * 8 {
            return Err(bad(format!(
                "body of {} bytes, expected {} for {len} values",
                body.len(),
                len * 8
            )));
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
            return Err(PayloadError::Plain(format!(
                "cannot add {len} values to a sum of {}",
                self.words.len()
            )));
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
        for w in &self.words {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out
    }

    fn max_wire_len(len: &usize) -> usize {
        PLAIN_HEADER + len.saturating_mul(8)
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
}

/// The weighted vector a client quantizes: `values * weight` followed by `weight`.
///
/// ```
/// assert_eq!(hefl::fl::weighted(&[1.0, -2.0], 0.5), [0.5, -1.0, 0.5]);
/// ```
pub fn weighted(values: &[f32], weight: f32) -> Vec<f32> {
    values
        .iter()
        .map(|v| v * weight)
        .chain(std::iter::once(weight))
        .collect()
}

/// Turns summed integers (the decoded aggregate of [`weighted`] vectors) into the weighted
/// mean: every slot but the last divided by the last (the total weight).
///
/// Refuses a sum that `parties` valid updates cannot add up to: each party's weight is in
/// (0, 1] and each of its values is clipped to [-c, c] before encoding, so the total weight
/// must be in (0, parties] and every summed value within `parties`·c. Garbage from any party
/// (random words under a well-formed header) fails these checks with overwhelming
/// probability; the caller skips such a round.
///
/// ```
/// use hefl::quant::FixedPoint;
///
/// let fp = FixedPoint::default();
/// let sum = [fp.to_plaintext(3 << 16), fp.to_plaintext(2 << 16)];
/// assert_eq!(hefl::fl::weighted_mean(&fp, &sum, 2)?, [1.5]);
/// // A total weight of 3 cannot come from 2 parties:
/// let sum = [fp.to_plaintext(3 << 16), fp.to_plaintext(3 << 16)];
/// assert!(hefl::fl::weighted_mean(&fp, &sum, 2).is_err());
/// # Ok::<(), hefl::fl::DecodeError>(())
/// ```
pub fn weighted_mean(fp: &FixedPoint, sum: &[u64], parties: u32) -> Result<Vec<f32>, DecodeError> {
    let (weight, values) = sum.split_last().ok_or(DecodeError::Empty)?;
    let total = fp.decode_sum(std::slice::from_ref(weight), parties)?[0];
    let weight_units = i128::from(fp.from_plaintext(*weight));
    let one = 1i128 << fp.params().frac_bits;
    if weight_units <= 0 || weight_units > one * i128::from(parties) {
        return Err(DecodeError::Weight { total, parties });
    }
    let bound =
        u64::try_from(i128::from(fp.max_magnitude()) * i128::from(parties)).unwrap_or(u64::MAX);
    if let Some(slot) = fp.first_beyond(values, bound) {
        return Err(DecodeError::OutOfRange {
            slot,
            parties,
            clip: fp.params().clip,
        });
    }
    Ok(fp.decode_mean(values, parties, f64::from(total))?)
}

/// Why an aggregate could not be turned into a mean update: it cannot be a sum of valid
/// updates.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The aggregate has no slots.
    #[error("empty aggregate")]
    Empty,
    /// The summed weight is not what the parties' weights can add up to.
    #[error("total weight is {total}, expected a number in (0, {parties}] for {parties} parties")]
    Weight {
        /// The decoded total weight.
        total: f32,
        /// Parties in the sum.
        parties: u32,
    },
    /// A summed value beyond what the parties' clipped values can add up to.
    #[error(
        "value {slot} is beyond {parties} x {clip}, the most {parties} clipped updates add up to"
    )]
    OutOfRange {
        /// Its index in the update.
        slot: usize,
        /// Parties in the sum.
        parties: u32,
        /// The clip bound c of one party's values.
        clip: f32,
    },
    /// The fixed-point decoder refused.
    #[error(transparent)]
    Quant(#[from] crate::quant::QuantError),
}
