//! Fixed-point encoding of f32 vectors into u64 GLWE plaintexts, and the headroom check that
//! keeps a sum exact.
//!
//! # Encoding
//!
//! A value x is clipped to [-c, c], scaled by 2^f and rounded **stochastically** to an integer
//! z (up with probability equal to the fractional part, so E\[z\] = x·2^f: the rounding adds
//! variance, not bias). z is stored in two's complement modulo 2^t in the top t bits of a
//! u64: the plaintext is z·Δ with Δ = 2^(64−t). Summing P vectors adds the z's modulo 2^t;
//! decoding rounds a word to the nearest multiple of Δ (removing encryption noise and the
//! rounding of compact ciphertexts), sign-extends the t-bit integer and divides by 2^f.
//!
//! The rounding's random bits come from an AES-128-CTR keystream (tfhe-csprng's block cipher,
//! the one that makes ciphertext masks), 32 bits per value, under a key drawn from the
//! caller's generator: value i rounds up when its 32 keystream bits, read as an integer u,
//! satisfy u < floor(frac·2^32). That is exact whenever frac has at most 32 bits, which holds
//! for every f32 with |x·2^f| ≥ 2^−9 (24-bit mantissa); below that the probability of rounding
//! up falls short of frac by less than 2^−32, a bias under 2^−32 of a step.
//!
//! # Headroom, checked by [`FixedPoint::new`]
//!
//! With M = ceil(c·2^f) the largest |z| one party can produce and P = `max_parties`, every
//! sum of P values must fit a signed t-bit integer: P·M < 2^(t−1); [`FixedPoint::sized`]
//! takes the least such t. For M = 2^19 (c = 8, f = 16) a party's value needs b = 20 bits
//! and a sum t = b + ceil(log2(P + 1)). What the decoding budget Δ/2 = 2^(63−t) must
//! absorb (encryption noise, rounded ciphertext bodies and masks) is checked by
//! [`crate::he::Widths`], which sizes the compact ciphertexts from t and P.
//!
//! # Choosing the parameters
//!
//! - **c** (`clip`) bounds each coordinate. Gradients and local-step model deltas of an MNIST
//!   MLP are almost all far below 1 in magnitude; c = 8 clips essentially nothing. Clipping is
//!   the only biased step, so err on the large side.
//! - **f** (`frac_bits`) sets the resolution 2^−f. Stochastic rounding keeps the sum unbiased
//!   at any f; its standard deviation per coordinate is at most 2^−f−1 per party. The default
//!   f = 16 ends the demo 0.14 points above f = 24, a run-to-run difference (the precision
//!   table of `docs/performance.md#precision`), and makes ciphertexts 8 bits per value
//!   smaller.
//! - **t** (`total_bits`) follows from c, f and P: with c = 8 and f = 16, b = 20 and
//!   t = 20 + ceil(log2(P + 1)): 22 for 3 parties, 27 for 100, 30 for 1000.
//!
//! ```
//! use hefl::quant::{FixedPoint, FixedPointParams};
//! use rand::SeedableRng;
//!
//! let fp = FixedPoint::default(); // c = 8, f = 16, t = 27, up to 100 parties
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
//! let a = fp.encode(&[0.5, -1.25, 100.0], &mut rng)?;
//! let b = fp.encode(&[0.25, 0.25, -3.0], &mut rng)?;
//! let sum: Vec<u64> = a.iter().zip(&b).map(|(x, y)| x.wrapping_add(*y)).collect();
//! // 100.0 was clipped to 8.0.
//! assert_eq!(fp.decode_sum(&sum, 2)?, [0.75, -1.0, 5.0]);
//! assert_eq!(fp.decode_mean(&sum, 2, 2.0)?, [0.375, -0.5, 2.5]);
//!
//! // A setting that could overflow is refused, with a suggestion.
//! let err = FixedPoint::new(FixedPointParams { clip: 8.0, frac_bits: 40, total_bits: 39, max_parties: 100 })
//!     .unwrap_err();
//! assert!(err.to_string().contains("total_bits 51"));
//! # Ok::<(), hefl::quant::QuantError>(())
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::he::csprng::KeyStream;
use crate::he::pack::round_small;
use rayon::prelude::*;

/// Values per keystream read of stochastic rounding (8 KiB of keystream); a parallel task
/// takes at least eight of these chunks.
const ROUNDING_CHUNK: usize = 2048;

/// Words per parallel task when decoding and range-checking sums.
const DECODE_CHUNK: usize = 8192;

/// f of the defaults: 16 fractional bits (the precision table of `docs/performance.md#precision`).
pub const DEFAULT_FRAC_BITS: u32 = 16;
/// c of the defaults: values are clipped to [-8, 8].
pub const DEFAULT_CLIP: f32 = 8.0;

/// The four numbers of a fixed-point encoding, named so they cannot be swapped at a call
/// site. Validate them with [`FixedPoint::new`].
///
/// ```
/// use hefl::quant::{FixedPoint, FixedPointParams};
///
/// let params = FixedPointParams { clip: 4.0, frac_bits: 20, total_bits: 26, max_parties: 3 };
/// assert_eq!(FixedPoint::new(params)?.params(), params);
/// # Ok::<(), hefl::quant::QuantError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FixedPointParams {
    /// c: values are clipped to [-c, c].
    pub clip: f32,
    /// f: values are scaled by 2^f before rounding (resolution 2^-f).
    pub frac_bits: u32,
    /// t: integers are stored modulo 2^t in the top t bits of a u64 (Δ = 2^(64-t)).
    pub total_bits: u32,
    /// P: the largest number of parties whose sum must decode exactly.
    pub max_parties: u32,
}

impl FixedPointParams {
    /// The defaults: c = 8, f = 16, t = 27 (the least for 100 parties), up to 100 parties
    /// (see the [module docs](self)).
    ///
    /// ```
    /// use hefl::quant::FixedPointParams;
    ///
    /// let d = FixedPointParams::DEFAULT;
    /// assert_eq!((d.clip, d.frac_bits, d.total_bits, d.max_parties), (8.0, 16, 27, 100));
    /// ```
    pub const DEFAULT: Self = Self {
        clip: DEFAULT_CLIP,
        frac_bits: DEFAULT_FRAC_BITS,
        total_bits: 27,
        max_parties: 100,
    };
}

impl Default for FixedPointParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for FixedPointParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "clip {}, frac_bits {}, total_bits {}, max_parties {}",
            self.clip, self.frac_bits, self.total_bits, self.max_parties
        )
    }
}

/// Errors of fixed-point configuration, encoding and decoding.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    /// A parameter outside its domain.
    #[error("invalid fixed-point parameters ({params}): {reason}")]
    Invalid {
        /// The refused parameters.
        params: FixedPointParams,
        /// What is wrong.
        reason: String,
    },
    /// A sum of `max_parties` clipped values could wrap around modulo 2^t.
    #[error(
        "fixed-point overflow: {max_parties} parties x {max_magnitude} (= ceil({clip} x 2^{frac_bits})) \
         = {worst} must stay below 2^{} = {limit} for total_bits {total_bits}; {}",
        .total_bits - 1, Suggestion(.suggestion)
    )]
    Overflow {
        /// c.
        clip: f32,
        /// f.
        frac_bits: u32,
        /// t.
        total_bits: u32,
        /// P.
        max_parties: u32,
        /// M = ceil(c·2^f).
        max_magnitude: u128,
        /// P·M.
        worst: u128,
        /// 2^(t-1).
        limit: u128,
        /// A setting that works, if any keeps c and P.
        suggestion: Option<FixedPointParams>,
    },
    /// A NaN or infinite input value.
    #[error("value {value} at index {index} is not finite")]
    NonFinite {
        /// Position in the input.
        index: usize,
        /// The value.
        value: f32,
    },
    /// Decoding a sum of more parties than the configuration allows (or of none).
    #[error(
        "cannot decode a sum of {parties} parties: this encoding is valid for 1 to {max_parties}"
    )]
    Parties {
        /// Parties in the sum.
        parties: u32,
        /// The configured maximum.
        max_parties: u32,
    },
    /// A mean divisor that is not a positive finite number.
    #[error("mean divisor {0} is not a positive finite number")]
    Divisor(f64),
}

/// Formats the "setting that works" part of a headroom error.
struct Suggestion<'a>(&'a Option<FixedPointParams>);

impl fmt::Display for Suggestion<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(p) => write!(f, "a setting that works: {p}"),
            None => write!(
                f,
                "no total_bits up to 63 works for this clip and party count: lower clip or \
                 max_parties"
            ),
        }
    }
}

/// M = ceil(c·2^f), saturating at u128::MAX (far beyond any valid t).
fn max_magnitude(clip: f32, frac_bits: u32) -> u128 {
    // Float-to-int `as` saturates; c·2^f is exact in f64 for f <= 62.
    (f64::from(clip) * 2f64.powi(frac_bits as i32)).ceil() as u128
}

fn worst_sum(clip: f32, frac_bits: u32, max_parties: u32) -> u128 {
    u128::from(max_parties).saturating_mul(max_magnitude(clip, frac_bits))
}

/// Refuses the first NaN or infinite value (a diverged model), naming its index.
fn check_finite(values: &[f32]) -> Result<(), QuantError> {
    // A pass without early exit (it vectorizes), then the search only on failure.
    if values.iter().fold(true, |ok, v| ok & v.is_finite()) {
        return Ok(());
    }
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(QuantError::NonFinite {
            index,
            value: values[index],
        }),
        None => Ok(()),
    }
}

fn fits_overflow(clip: f32, frac_bits: u32, total_bits: u32, max_parties: u32) -> bool {
    worst_sum(clip, frac_bits, max_parties) < 1u128 << (total_bits - 1)
}

/// t = the least total_bits for which P·M < 2^(t-1), if one up to 63 exists.
fn least_total_bits(clip: f32, frac_bits: u32, max_parties: u32) -> Option<u32> {
    (2..=63).find(|&t| fits_overflow(clip, frac_bits, t, max_parties))
}

/// A working setting keeping c and P: the least t for the requested f, or, if no t up to 63
/// fits, the largest f that fits t = 63.
fn suggest(params: &FixedPointParams) -> Option<FixedPointParams> {
    let frac_bits = (0..=params.frac_bits.min(62))
        .rev()
        .find(|&f| fits_overflow(params.clip, f, 63, params.max_parties))?;
    let total_bits = least_total_bits(params.clip, frac_bits, params.max_parties)?;
    Some(FixedPointParams {
        total_bits,
        frac_bits,
        ..*params
    })
}

/// A validated fixed-point encoding: [`FixedPointParams`] whose sums of up to `max_parties`
/// vectors cannot wrap around.
///
/// ```
/// use hefl::quant::{FixedPoint, FixedPointParams, QuantError};
///
/// assert!(FixedPoint::new(FixedPointParams::DEFAULT).is_ok());
/// // 200 parties x 2^19 can reach 2^26.6: t = 27 bits could wrap.
/// let err = FixedPoint::new(FixedPointParams { max_parties: 200, ..FixedPointParams::DEFAULT });
/// assert!(matches!(err, Err(QuantError::Overflow { .. })));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FixedPoint {
    params: FixedPointParams,
    /// 2^f.
    scale: f64,
    /// 64 - t: the plaintext is z << shift.
    shift: u32,
}

impl Default for FixedPoint {
    /// [`FixedPointParams::DEFAULT`] (validated by a unit test).
    fn default() -> Self {
        Self::from_valid(FixedPointParams::DEFAULT)
    }
}

impl FixedPoint {
    /// Validates the parameters: c finite and positive, 1 <= P, f <= 62, 2 <= t <= 63, and the
    /// headroom condition of the [module docs](self).
    ///
    /// ```
    /// use hefl::quant::{FixedPoint, FixedPointParams};
    ///
    /// let err = FixedPoint::new(FixedPointParams { clip: 8.0, frac_bits: 24, total_bits: 32, max_parties: 100 })
    ///     .unwrap_err()
    ///     .to_string();
    /// assert!(err.contains("100 parties x 134217728 (= ceil(8 x 2^24)) = 13421772800 must stay below 2^31"));
    /// assert!(err.contains("a setting that works: clip 8, frac_bits 24, total_bits 35, max_parties 100"));
    /// ```
    pub fn new(params: FixedPointParams) -> Result<Self, QuantError> {
        let invalid = |reason: &str| QuantError::Invalid {
            params,
            reason: reason.to_owned(),
        };
        let FixedPointParams {
            clip,
            frac_bits,
            total_bits,
            max_parties,
        } = params;
        if !(clip.is_finite() && clip > 0.0) {
            return Err(invalid("clip must be a positive finite number"));
        }
        if max_parties == 0 {
            return Err(invalid("max_parties must be at least 1"));
        }
        if frac_bits > 62 {
            return Err(invalid("frac_bits must be at most 62"));
        }
        if !(2..=63).contains(&total_bits) {
            return Err(invalid("total_bits must be between 2 and 63"));
        }
        if !fits_overflow(clip, frac_bits, total_bits, max_parties) {
            return Err(QuantError::Overflow {
                clip,
                frac_bits,
                total_bits,
                max_parties,
                max_magnitude: max_magnitude(clip, frac_bits),
                worst: worst_sum(clip, frac_bits, max_parties),
                limit: 1 << (total_bits - 1),
                suggestion: suggest(&params),
            });
        }
        Ok(Self::from_valid(params))
    }

    /// The defaults with another party count: c = 8, f = 16 and the least t for
    /// `max_parties` ([`FixedPoint::sized`]).
    ///
    /// ```
    /// use hefl::quant::FixedPoint;
    ///
    /// assert_eq!(FixedPoint::for_parties(3)?.params().total_bits, 22);
    /// assert_eq!(FixedPoint::for_parties(100)?.params().total_bits, 27);
    /// assert_eq!(FixedPoint::for_parties(1000)?.params().total_bits, 30);
    /// assert!(FixedPoint::for_parties(0).is_err());
    /// # Ok::<(), hefl::quant::QuantError>(())
    /// ```
    pub fn for_parties(max_parties: u32) -> Result<Self, QuantError> {
        Self::sized(DEFAULT_CLIP, DEFAULT_FRAC_BITS, max_parties)
    }

    /// The encoding with clip c and f fractional bits for up to `max_parties`, with the least
    /// t that cannot wrap: the least t with P·ceil(c·2^f) < 2^(t−1) (see the
    /// [module docs](self)). Refuses, with a setting that works, when no t up to 63 fits.
    ///
    /// ```
    /// use hefl::quant::FixedPoint;
    ///
    /// assert_eq!(FixedPoint::sized(8.0, 24, 3)?.params().total_bits, 30);
    /// assert_eq!(FixedPoint::sized(1.0, 12, 10)?.params().total_bits, 17);
    /// assert!(FixedPoint::sized(8.0, 62, 3).is_err());
    /// # Ok::<(), hefl::quant::QuantError>(())
    /// ```
    pub fn sized(clip: f32, frac_bits: u32, max_parties: u32) -> Result<Self, QuantError> {
        let total_bits = least_total_bits(clip, frac_bits.min(62), max_parties).unwrap_or(63);
        Self::new(FixedPointParams {
            clip,
            frac_bits,
            total_bits,
            max_parties,
        })
    }

    fn from_valid(params: FixedPointParams) -> Self {
        Self {
            params,
            scale: 2f64.powi(params.frac_bits as i32),
            shift: 64 - params.total_bits,
        }
    }

    /// The validated parameters.
    ///
    /// ```
    /// use hefl::quant::{FixedPoint, FixedPointParams};
    ///
    /// assert_eq!(FixedPoint::default().params(), FixedPointParams::DEFAULT);
    /// ```
    pub fn params(&self) -> FixedPointParams {
        self.params
    }

    /// Δ = 2^(64-t), the plaintext weight of one unit of z.
    ///
    /// ```
    /// assert_eq!(hefl::quant::FixedPoint::default().delta(), 1 << 37);
    /// ```
    pub fn delta(&self) -> u64 {
        1 << self.shift
    }

    /// M = ceil(c·2^f): the largest |z| one party's value can quantize to.
    ///
    /// ```
    /// assert_eq!(hefl::quant::FixedPoint::default().max_magnitude(), 8 << 16);
    /// ```
    pub fn max_magnitude(&self) -> i64 {
        // Validated: M < 2^(t-1) <= 2^62.
        (f64::from(self.params.clip) * self.scale).ceil() as i64
    }

    /// Clips, scales by 2^f and rounds stochastically: z = floor(x·2^f) + 1 with probability
    /// frac(x·2^f), so E\[z\] = clip(x)·2^f (see the [module docs](self) for the keystream).
    ///
    /// `rng` gives one 128-bit AES key per call; the rounding bits come from that key's
    /// keystream. They protect no secret (the values are encrypted afterwards), so a seeded
    /// generator makes runs reproducible. Refuses NaN and infinite values.
    ///
    /// ```
    /// use hefl::quant::FixedPoint;
    /// use rand::SeedableRng;
    ///
    /// let fp = FixedPoint::default();
    /// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    /// let z = fp.quantize(&[1.0, -8.0, 9.0, 0.5 / (1 << 16) as f32], &mut rng)?;
    /// assert_eq!(&z[..3], &[1 << 16, -8 << 16, 8 << 16]);
    /// assert!(z[3] == 0 || z[3] == 1); // half a step: rounds either way
    /// assert!(fp.quantize(&[f32::NAN], &mut rng).is_err());
    /// # Ok::<(), hefl::quant::QuantError>(())
    /// ```
    pub fn quantize<R: rand::Rng + ?Sized>(
        &self,
        values: &[f32],
        rng: &mut R,
    ) -> Result<Vec<i64>, QuantError> {
        self.rounded(values, rng, |z| z)
    }

    /// Stochastic rounding of `values` (checked finite) with a keystream keyed from `rng`,
    /// each integer mapped through `map`.
    fn rounded<T: Copy + Default + Send, R: rand::Rng + ?Sized>(
        &self,
        values: &[f32],
        rng: &mut R,
        map: impl Fn(i64) -> T + Sync,
    ) -> Result<Vec<T>, QuantError> {
        check_finite(values)?;
        let key = rng.random::<u128>();
        let blocks = KeyStream::blocks_for(ROUNDING_CHUNK * size_of::<u32>());
        let clip = self.params.clip;
        let scale = self.scale;
        // |z| <= M + 1 below.
        let magic = self.max_magnitude() < 1 << 51;
        let mut out = vec![T::default(); values.len()];
        // Chunk i always reads keystream blocks from i·blocks, so threads do not change the
        // result.
        out.par_chunks_mut(ROUNDING_CHUNK)
            .zip(values.par_chunks(ROUNDING_CHUNK))
            .enumerate()
            // Several chunks per task: each task sets up a keystream and buffers.
            .with_min_len(8)
            .for_each_init(
                || {
                    let stream = KeyStream::new(key);
                    (
                        stream,
                        vec![0u32; ROUNDING_CHUNK],
                        vec![0f64; ROUNDING_CHUNK],
                    )
                },
                |(stream, bits, rounded), (index, (out, chunk))| {
                    let bits = &mut bits[..chunk.len()];
                    let rounded = &mut rounded[..chunk.len()];
                    stream.fill_u32(index as u128 * blocks, bits);
                    // Written for the autovectorizer; `dispatch` compiles the loops for the
                    // widest instruction set the CPU has (AVX2: vector floor and compare).
                    let arch = pulp::Arch::new();
                    arch.dispatch(|| {
                        for ((r, &value), &u) in rounded.iter_mut().zip(chunk).zip(bits.iter()) {
                            // Exact: an f32 times a power of two is an f64 without rounding,
                            // and so are its floor and fraction.
                            let scaled = f64::from(value.max(-clip).min(clip)) * scale;
                            let floor = scaled.floor();
                            // Up with probability frac: u < trunc(frac·2^32) exactly when
                            // u + 1 <= frac·2^32 (u + 1 is an integer), compared in f64.
                            let up = f64::from(u) + 1.0 <= (scaled - floor) * 4_294_967_296.0;
                            *r = floor + if up { 1.0 } else { 0.0 };
                        }
                    });
                    // Below 2^51 an integral f64 converts to i64 with `round_small`, which
                    // vector units can do (`as i64` is scalar).
                    arch.dispatch(|| {
                        for (o, &z) in out.iter_mut().zip(rounded.iter()) {
                            *o = map(match magic {
                                true => round_small(z).0,
                                false => z as i64,
                            });
                        }
                    });
                },
            );
        Ok(out)
    }

    /// z as a plaintext word: two's complement modulo 2^t in the top t bits, z·Δ mod 2^64.
    ///
    /// ```
    /// let fp = hefl::quant::FixedPoint::default();
    /// assert_eq!(fp.to_plaintext(1), fp.delta());
    /// assert_eq!(fp.to_plaintext(-1), fp.delta().wrapping_neg());
    /// ```
    pub fn to_plaintext(&self, z: i64) -> u64 {
        (z as u64) << self.shift
    }

    /// Rounds a decrypted word to the nearest multiple of Δ and returns the signed t-bit
    /// integer it encodes: the inverse of [`FixedPoint::to_plaintext`] up to noise below Δ/2.
    ///
    /// ```
    /// let fp = hefl::quant::FixedPoint::default();
    /// let noisy = fp.to_plaintext(-5).wrapping_add(12_345);
    /// assert_eq!(fp.from_plaintext(noisy), -5);
    /// ```
    pub fn from_plaintext(&self, word: u64) -> i64 {
        let half = 1u64 << (self.shift - 1);
        // The arithmetic shift sign-extends the top t bits.
        (word.wrapping_add(half) as i64) >> self.shift
    }

    /// [`FixedPoint::quantize`] then [`FixedPoint::to_plaintext`]: the u64 words to encrypt.
    ///
    /// ```
    /// use hefl::quant::FixedPoint;
    /// use rand::SeedableRng;
    ///
    /// let fp = FixedPoint::default();
    /// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    /// assert_eq!(fp.encode(&[-2.0], &mut rng)?, [fp.to_plaintext(-2 << 16)]);
    /// # Ok::<(), hefl::quant::QuantError>(())
    /// ```
    pub fn encode<R: rand::Rng + ?Sized>(
        &self,
        values: &[f32],
        rng: &mut R,
    ) -> Result<Vec<u64>, QuantError> {
        self.rounded(values, rng, |z| self.to_plaintext(z))
    }

    /// Like [`FixedPoint::encode`], each integer multiplied by `times` before it becomes a
    /// word: z·times·Δ. The product is exact; the caller sizes the encoding for it (an
    /// encoding whose `max_parties` counts `times` units per party, so that sums of such words
    /// still cannot wrap). Refuses a `times` whose products could exceed 2^(t−1).
    ///
    /// ```
    /// use hefl::quant::FixedPoint;
    /// use rand::SeedableRng;
    ///
    /// let fp = FixedPoint::sized(8.0, 16, 10)?;
    /// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    /// assert_eq!(fp.encode_times(&[-2.0], 5, &mut rng)?, [fp.to_plaintext(-10 << 16)]);
    /// assert!(fp.encode_times(&[1.0], 11, &mut rng).is_err());
    /// # Ok::<(), hefl::quant::QuantError>(())
    /// ```
    pub fn encode_times<R: rand::Rng + ?Sized>(
        &self,
        values: &[f32],
        times: u32,
        rng: &mut R,
    ) -> Result<Vec<u64>, QuantError> {
        self.check_parties(times)?;
        let times = i64::from(times);
        self.rounded(values, rng, |z| self.to_plaintext(z * times))
    }

    /// The integer sums encoded in decrypted words ([`FixedPoint::from_plaintext`] of each).
    ///
    /// ```
    /// let fp = hefl::quant::FixedPoint::default();
    /// let words = [fp.to_plaintext(3), fp.to_plaintext(-7)];
    /// assert_eq!(fp.decode_integers(&words), [3, -7]);
    /// ```
    pub fn decode_integers(&self, sum: &[u64]) -> Vec<i64> {
        sum.iter().map(|&w| self.from_plaintext(w)).collect()
    }

    fn check_parties(&self, parties: u32) -> Result<(), QuantError> {
        if parties == 0 || parties > self.params.max_parties {
            return Err(QuantError::Parties {
                parties,
                max_parties: self.params.max_parties,
            });
        }
        Ok(())
    }

    /// Decodes the decrypted sum of `parties` encoded vectors to the sum of their (clipped)
    /// values. Refuses more parties than `max_parties`: beyond it the sum may have wrapped or
    /// the noise may have reached Δ/2.
    ///
    /// ```
    /// let fp = hefl::quant::FixedPoint::default();
    /// let sum = [fp.to_plaintext(3 << 15)];
    /// assert_eq!(fp.decode_sum(&sum, 3)?, [1.5]);
    /// assert!(fp.decode_sum(&sum, 101).is_err());
    /// # Ok::<(), hefl::quant::QuantError>(())
    /// ```
    pub fn decode_sum(&self, sum: &[u64], parties: u32) -> Result<Vec<f32>, QuantError> {
        self.decode_scaled(sum, parties, 1.0)
    }

    /// Like [`FixedPoint::decode_sum`], divided by `divisor`: the party count for a plain mean,
    /// or the total weight when each party pre-multiplied its values by its weight.
    ///
    /// ```
    /// let fp = hefl::quant::FixedPoint::default();
    /// let sum = [fp.to_plaintext(3 << 15)];
    /// assert_eq!(fp.decode_mean(&sum, 3, 3.0)?, [0.5]);
    /// assert!(fp.decode_mean(&sum, 3, 0.0).is_err());
    /// # Ok::<(), hefl::quant::QuantError>(())
    /// ```
    pub fn decode_mean(
        &self,
        sum: &[u64],
        parties: u32,
        divisor: f64,
    ) -> Result<Vec<f32>, QuantError> {
        if !(divisor.is_finite() && divisor > 0.0) {
            return Err(QuantError::Divisor(divisor));
        }
        self.decode_scaled(sum, parties, divisor)
    }

    fn decode_scaled(
        &self,
        sum: &[u64],
        parties: u32,
        divisor: f64,
    ) -> Result<Vec<f32>, QuantError> {
        self.check_parties(parties)?;
        // z·factor computed as (z·2^shift)·(factor·2^-shift): the word rounded to a multiple of
        // Δ, converted from two 32-bit halves (i64 to f64 has no vector instruction before
        // AVX-512; i32 and u32 to f64 do), with one rounding, as `z as f64` has for t <= 53.
        let factor = 1.0 / (self.scale * divisor) / self.delta() as f64;
        let half = 1u64 << (self.shift - 1);
        let keep = !((1u64 << self.shift) - 1);
        let mut out = vec![0f32; sum.len()];
        out.par_chunks_mut(DECODE_CHUNK)
            .zip(sum.par_chunks(DECODE_CHUNK))
            .for_each(|(out, sum)| {
                pulp::Arch::new().dispatch(|| {
                    for (o, &w) in out.iter_mut().zip(sum) {
                        let r = w.wrapping_add(half) & keep;
                        let high = f64::from((r >> 32) as u32 as i32);
                        let low = f64::from(r as u32);
                        *o = ((high * 4_294_967_296.0 + low) * factor) as f32;
                    }
                })
            });
        Ok(out)
    }

    /// The index of the first word whose integer ([`FixedPoint::from_plaintext`]) exceeds
    /// `bound` in magnitude, if any: one parallel pass of two comparisons per word (no
    /// shift), then a search only when some word does.
    ///
    /// ```
    /// let fp = hefl::quant::FixedPoint::default();
    /// let words = [fp.to_plaintext(5), fp.to_plaintext(-7), fp.to_plaintext(6)];
    /// assert_eq!(fp.first_beyond(&words, 7), None);
    /// assert_eq!(fp.first_beyond(&words, 6), Some(1));
    /// assert_eq!(fp.first_beyond(&words, 5), Some(1));
    /// ```
    pub fn first_beyond(&self, words: &[u64], bound: u64) -> Option<usize> {
        // z > bound exactly when word + half, as i64, is above (bound + 1)·2^shift − 1, and
        // z < −bound when it is below −bound·2^shift; beyond the i64 range nothing is.
        let half = 1u64 << (self.shift - 1);
        let clamp = |x: i128| x.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        let above = clamp(((i128::from(bound) + 1) << self.shift) - 1);
        let below = clamp(-(i128::from(bound) << self.shift));
        let beyond = |w: &u64| {
            let a = w.wrapping_add(half) as i64;
            (a > above) | (a < below)
        };
        let any = words.par_chunks(DECODE_CHUNK).any(|chunk| {
            pulp::Arch::new().dispatch(|| chunk.iter().fold(false, |found, w| found | beyond(w)))
        });
        any.then(|| words.iter().position(beyond)).flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert_eq!(
            FixedPoint::new(FixedPointParams::DEFAULT).ok(),
            Some(FixedPoint::default())
        );
    }

    #[test]
    fn suggestions_are_valid() {
        for max_parties in [1, 2, 3, 10, 100, 127, 128, 1000, 100_000] {
            for frac_bits in [0, 16, 24, 40, 62] {
                for clip in [0.01f32, 1.0, 8.0, 1e6] {
                    let p = FixedPointParams {
                        clip,
                        frac_bits,
                        total_bits: 63,
                        max_parties,
                    };
                    if let Some(s) = suggest(&p) {
                        assert!(FixedPoint::new(s).is_ok(), "{s}");
                    }
                }
            }
        }
    }
}
