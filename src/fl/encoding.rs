//! The client's arithmetic: how an update and its weight become the integers a server sums,
//! and how a sum becomes the weighted mean update (and is refused when no set of valid updates
//! adds up to it).
//!
//! Every update travels as one vector of fixed-point words ([`FixedPoint`]): its weighted
//! values, then its weight in the last slot. The server adds the vectors modulo 2^64 and each
//! client divides the summed values by the summed weight. Two [`Weighting`]s exist:
//!
//! - [`Weighting::Fraction`] (hefl's own runs): a party's weight is w = samples / nominal in
//!   (0, 1] (FedAvg: its share of the samples a full round stands for); it sends w·u, clipped
//!   and rounded to a multiple of 2^-f, and w. Sizes the encoding for P parties of weight at
//!   most 1, the fewest bits; a full round (w = 1) has the resolution 2^-f.
//! - [`Weighting::Examples`] (hefl.flower, where example counts vary by orders of magnitude):
//!   a party sends n·z, its integer example count n times its update z rounded to a multiple
//!   of 2^-f, and n itself. The sum Σ n_i·z_i / Σ n_i is exact in integers, so every value of
//!   the mean is within 2^-f of the exact weighted mean whatever the counts and their bound;
//!   the bound (`max`) costs bits instead (the encoding is sized for P·max units).
//!
//! Both are stochastic rounding (unbiased), clip to [-c, c] first, and count what they clip.

use crate::quant::{FixedPoint, QuantError};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// How a party's update is weighted in the round's mean (see the [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Weighting {
    /// Weight samples / `nominal`, in (0, 1], sent as fixed point with the weighted values.
    Fraction {
        /// The samples a full round's update stands for (batch size times local steps).
        nominal: u64,
    },
    /// The integer example count, from 1 to `max`, multiplying the rounded update.
    Examples {
        /// The largest count a party may send.
        max: u64,
    },
}

/// One update encoded: its words and how many of its values were clipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// The weighted values and the weight, as fixed-point words.
    pub words: Vec<u64>,
    /// Values beyond [-c, c] (after weighting, in [`Weighting::Fraction`]), clipped to it.
    pub clipped: usize,
}

/// Why an update could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// A NaN or infinite value.
    #[error(transparent)]
    Quant(#[from] QuantError),
    /// A sample count the weighting cannot carry.
    #[error("{samples} samples, expected 1 to {max}")]
    Samples {
        /// The count given.
        samples: u64,
        /// The largest allowed.
        max: u64,
    },
}

/// Why a sum could not be turned into a mean update: no set of valid updates adds up to it
/// (some party sent garbage), so every party skips it alike.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The aggregate has no slots.
    #[error("empty aggregate")]
    Empty,
    /// The summed weight is not what the parties' weights can add up to.
    #[error("total weight is {total}, expected {expected} for {parties} parties")]
    Weight {
        /// The decoded total weight.
        total: f64,
        /// What valid weights add up to, as a range.
        expected: String,
        /// Parties in the sum.
        parties: u32,
    },
    /// A summed value beyond what the parties' clipped values can add up to.
    #[error(
        "value {slot} is beyond {parties} x {clip} (weighted), the most {parties} clipped updates add up to"
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
    Quant(#[from] QuantError),
    /// Secure aggregation's checks refused the sum: its party list or canaries say it is not
    /// the sum of the round's party set (a lone ciphertext, a subset sum, a replay).
    #[error(transparent)]
    Refused(#[from] crate::secagg::AggregateRefused),
}

/// A federation's encoding of updates: the fixed point (clip c, f fractional bits, and the
/// least total bits t for its party count and weighting) and the [`Weighting`].
///
/// ```
/// use hefl::fl::{Encoding, Weighting};
/// use rand::SeedableRng;
///
/// let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(0);
/// // hefl's own: weights samples / 64.
/// let own = Encoding::new(8.0, 16, 2, Weighting::Fraction { nominal: 64 })?;
/// let a = own.encode(&[1.0, 2.0], 64, &mut rng)?;
/// let b = own.encode(&[3.0, 6.0], 64, &mut rng)?;
/// let sum: Vec<u64> = a.words.iter().zip(&b.words).map(|(x, y)| x.wrapping_add(*y)).collect();
/// assert_eq!(own.decode(&sum, 2)?, [2.0, 4.0]);
/// // Flower's: integer example counts up to 1000, the mean weighted by them.
/// let counts = Encoding::new(8.0, 16, 2, Weighting::Examples { max: 1000 })?;
/// let a = counts.encode(&[1.0, 20.0], 1, &mut rng)?;
/// let b = counts.encode(&[4.0, 2.0], 3, &mut rng)?;
/// assert_eq!(b.clipped, 0);
/// assert_eq!(a.clipped, 1); // 20 is beyond the clip, 8
/// let sum: Vec<u64> = a.words.iter().zip(&b.words).map(|(x, y)| x.wrapping_add(*y)).collect();
/// assert_eq!(counts.decode(&sum, 2)?, [3.25, 3.5]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Encoding {
    fp: FixedPoint,
    weighting: Weighting,
    /// The most parties a sum may hold.
    parties: u32,
}

impl Encoding {
    /// The encoding of sums of up to `parties` updates clipped to [-`clip`, `clip`] with
    /// resolution 2^-`frac_bits`, weighted as `weighting` says, with the least total bits
    /// that cannot wrap. Refuses (naming a setting that works, if any) a combination no
    /// 63-bit word holds, and a weighting bound of 0 or one whose P·max units exceed 2^32.
    pub fn new(
        clip: f32,
        frac_bits: u32,
        parties: u32,
        weighting: Weighting,
    ) -> Result<Self, QuantError> {
        let units = match weighting {
            Weighting::Fraction { nominal: 0 } | Weighting::Examples { max: 0 } => {
                return Err(QuantError::Invalid {
                    params: crate::quant::FixedPointParams {
                        clip,
                        frac_bits,
                        total_bits: 63,
                        max_parties: parties,
                    },
                    reason: "a weighting bound of 0 samples".into(),
                });
            }
            Weighting::Fraction { .. } => u64::from(parties),
            Weighting::Examples { max } => u64::from(parties).saturating_mul(max),
        };
        let units = u32::try_from(units).map_err(|_| QuantError::Invalid {
            params: crate::quant::FixedPointParams {
                clip,
                frac_bits,
                total_bits: 63,
                max_parties: u32::MAX,
            },
            reason: format!(
                "{parties} parties x {weighting:?} is {units} weight units, more than 2^32: \
                 lower the bound on examples"
            ),
        })?;
        Ok(Self {
            fp: FixedPoint::sized(clip, frac_bits, units)?,
            weighting,
            parties,
        })
    }

    /// The fixed point (its `max_parties` counts weight units: parties, or parties times the
    /// largest example count).
    pub fn fixed_point(&self) -> &FixedPoint {
        &self.fp
    }

    /// The most parties a sum may hold.
    pub fn max_parties(&self) -> u32 {
        self.parties
    }

    /// The weighting.
    pub fn weighting(&self) -> Weighting {
        self.weighting
    }

    /// t: the bits of one plaintext slot.
    pub fn total_bits(&self) -> u32 {
        self.fp.params().total_bits
    }

    /// The resolution of one value of a round's mean: 2^-f (for [`Weighting::Fraction`], of
    /// a full round; a party of weight w < 1 rounds w·u to it).
    pub fn resolution(&self) -> f64 {
        2f64.powi(-(self.fp.params().frac_bits as i32))
    }

    /// Encodes `values` of an update computed from `samples` samples: weighted values, then
    /// the weight (see the [module docs](self)). Refuses NaN or infinite values and a sample
    /// count the weighting cannot carry (0, or beyond `nominal` or `max`).
    pub fn encode<R: rand::Rng + ?Sized>(
        &self,
        values: &[f32],
        samples: u64,
        rng: &mut R,
    ) -> Result<Encoded, EncodeError> {
        let clip = self.fp.params().clip;
        match self.weighting {
            Weighting::Fraction { nominal } => {
                if samples == 0 || samples > nominal {
                    return Err(EncodeError::Samples {
                        samples,
                        max: nominal,
                    });
                }
                let weight = samples as f32 / nominal as f32;
                let weighted: Vec<f32> = values
                    .iter()
                    .map(|v| v * weight)
                    .chain(std::iter::once(weight))
                    .collect();
                let words = self.fp.encode(&weighted, rng)?;
                Ok(Encoded {
                    clipped: count_beyond(&weighted[..values.len()], clip),
                    words,
                })
            }
            Weighting::Examples { max } => {
                let count = u32::try_from(samples)
                    .ok()
                    .filter(|&n| n >= 1 && u64::from(n) <= max)
                    .ok_or(EncodeError::Samples { samples, max })?;
                let mut words = self.fp.encode_times(values, count, rng)?;
                words.push(self.fp.to_plaintext(i64::from(count)));
                Ok(Encoded {
                    clipped: count_beyond(values, clip),
                    words,
                })
            }
        }
    }

    /// The weighted mean of the sum of `parties` encoded updates: every slot but the last
    /// divided by the last (the total weight).
    ///
    /// Refuses a sum that `parties` valid updates cannot add up to: the total weight must be
    /// what `parties` weights can add up to ((0, P] for fractions, [P, P·max] for counts),
    /// and every summed value within what the parties' clipped values can (P·c for
    /// fractions, W·c for a total count W). Garbage from any party (random words under a
    /// well-formed header) fails these checks with overwhelming probability.
    pub fn decode(&self, sum: &[u64], parties: u32) -> Result<Vec<f32>, DecodeError> {
        if parties == 0 || parties > self.parties {
            return Err(QuantError::Parties {
                parties,
                max_parties: self.parties,
            }
            .into());
        }
        let (weight, values) = sum.split_last().ok_or(DecodeError::Empty)?;
        let units = i128::from(self.fp.from_plaintext(*weight));
        let magnitude = i128::from(self.fp.max_magnitude());
        let p = i128::from(parties);
        // (the divisor, the weight units the values may sum, what they may add up to).
        let (divisor, value_units, bound) = match self.weighting {
            Weighting::Fraction { .. } => {
                let one = 1i128 << self.fp.params().frac_bits;
                // The total weight as an f32, as the decoder has always divided by it.
                let total = (units as f64 / one as f64) as f32;
                if units <= 0 || units > one * p {
                    return Err(DecodeError::Weight {
                        total: f64::from(total),
                        expected: format!("a number in (0, {parties}]"),
                        parties,
                    });
                }
                (f64::from(total), parties, magnitude * p)
            }
            Weighting::Examples { max } => {
                let most = p * i128::from(max);
                if units < p || units > most {
                    return Err(DecodeError::Weight {
                        total: units as f64,
                        expected: format!("an integer from {parties} to {most}"),
                        parties,
                    });
                }
                // At most parties·max <= 2^32 (checked by `new`).
                let units32 = u32::try_from(units).unwrap_or(u32::MAX);
                (units as f64, units32, magnitude * units)
            }
        };
        let bound = u64::try_from(bound).unwrap_or(u64::MAX);
        if let Some(slot) = self.fp.first_beyond(values, bound) {
            return Err(DecodeError::OutOfRange {
                slot,
                parties,
                clip: self.fp.params().clip,
            });
        }
        Ok(self.fp.decode_mean(values, value_units, divisor)?)
    }
}

/// Values beyond [-c, c] (NaN is refused by the encoder anyway).
fn count_beyond(values: &[f32], clip: f32) -> usize {
    values
        .par_chunks(1 << 14)
        .map(|chunk| chunk.iter().filter(|v| v.abs() > clip).count())
        .sum()
}
