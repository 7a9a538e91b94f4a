//! How many bits a compact ciphertext keeps, and the check that every sum still decodes.
//!
//! A compact upload ([`CompactVector`](super::CompactVector)) sends its mask as a public
//! 128-bit seed and its body b = a·s + m + e rounded to its top `body_bits` bits. The sum of P
//! uploads goes back in one of two [`DownloadForm`]s: the summed bodies with the P seeds, or
//! the summed bodies with the summed mask switched to `mask_bits` bits. Decoding rounds each
//! decrypted word to the nearest multiple of Δ = 2^(64−t), so it is exact while the error
//! stays below the budget Δ/2 = 2^(63−t). [`Widths::new`] adds up every term, in units of the
//! 2^64 torus:
//!
//! - **encryption noise**: P·2^17, the TUniform(17) bound of [`PARAMS`], per party;
//! - **rounded bodies**: rounding to the nearest multiple of 2^(64−k) moves a body by at most
//!   2^(63−k), no key involved: P·2^(63−k_up) for the sum. With
//!   k_up = t + 1 + ceil(log2 P) this is at most half the budget;
//! - **rounded mask**: decryption multiplies the key by the summed mask rounded to k_down bits
//!   (the switched form sends it so; the seeds form regenerates the exact sum and rounds it the
//!   same way, because a product of masks of at most 33 bits costs one FFT limb instead of two).
//!   Rounding each of the N mask coefficients by at most h/2 (h = 2^(64−k_down)) moves the
//!   decryption by the sum of the roundings over the key's ones, |Σ δ_j s_j| ≤ N·h/2 in the worst case. The rounding errors of a uniform mask
//!   are independent and uniform, so Hoeffding's inequality bounds the sum by
//!   h·sqrt(N·ln(2/ε)/2) except with probability ε; hefl takes ε = 2^−128 per coefficient
//!   (the security level of the parameter set). Given half the budget that needs
//!   k_down = t + 11 for N = 2048, as tfhe's own modulus-switch noise formula gives; hefl
//!   takes the least width whose three terms fit the whole budget (t + 10 for few parties,
//!   whose rounded bodies use little of it); 64 bits, no rounding, adds nothing.
//!
//! A setting whose terms cannot fit (too many parties, or t so large that a width would exceed
//! 64 bits) is refused with the numbers, before any data moves. (For users:
//! `docs/security.md#sums-always-decode`.)
//!
//! ```
//! use hefl::he::{DownloadForm, Widths};
//!
//! // 3 parties, t = 22 (c = 8, f = 16): 25-bit bodies.
//! let seeds = Widths::new(22, 3, DownloadForm::Seeds)?;
//! assert_eq!((seeds.body_bits(), seeds.mask_bits()), (25, None));
//! let switched = Widths::new(22, 3, DownloadForm::Switched)?;
//! assert_eq!(switched.mask_bits(), Some(32));
//! // t = 60 would need 64-bit-plus bodies.
//! assert!(Widths::new(60, 3, DownloadForm::Seeds).is_err());
//! # Ok::<(), hefl::he::HeadroomError>(())
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::params::PARAMS;

/// How the round's sum travels back to the clients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DownloadForm {
    /// [`DownloadForm::Seeds`] up to [`SEEDS_UP_TO`] parties, [`DownloadForm::Switched`]
    /// beyond (see [`DownloadForm::resolve`]).
    #[default]
    Auto,
    /// The summed bodies and every party's 16-byte seed: as large as one upload plus 16 bytes
    /// per party, exact (no rounding added), and each client regenerates the P masks.
    Seeds,
    /// The summed bodies and the summed mask, switched to `mask_bits`: the server regenerates
    /// the masks once, and the download is about twice the upload whatever the party count.
    Switched,
}

/// The largest party count for which [`DownloadForm::Auto`] sends seeds. Measured by
/// `hefl bench-report` (2 cores, 101,770 values): regenerating the masks costs a client about
/// 0.1 ms per party (0.095 to 0.11 across runs), and the switched form downloads about
/// 470-510 KB more, which takes about 39 ms at 100 Mbit/s; the two cross near 350 to 400
/// parties. Below, seeds cost clients less
/// time than the bigger download and keep the server free of mask work.
pub const SEEDS_UP_TO: u32 = 400;

impl DownloadForm {
    /// The form a federation of `parties` uses: `Auto` resolved by [`SEEDS_UP_TO`].
    ///
    /// ```
    /// use hefl::he::DownloadForm;
    ///
    /// assert_eq!(DownloadForm::Auto.resolve(400), DownloadForm::Seeds);
    /// assert_eq!(DownloadForm::Auto.resolve(1000), DownloadForm::Switched);
    /// assert_eq!(DownloadForm::Seeds.resolve(1000), DownloadForm::Seeds);
    /// ```
    pub fn resolve(self, parties: u32) -> Self {
        match self {
            Self::Auto if parties <= SEEDS_UP_TO => Self::Seeds,
            Self::Auto => Self::Switched,
            form => form,
        }
    }
}

impl FromStr for DownloadForm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "seeds" => Ok(Self::Seeds),
            "switched" => Ok(Self::Switched),
            other => Err(format!(
                "unknown download form {other:?}: expected auto, seeds or switched"
            )),
        }
    }
}

impl fmt::Display for DownloadForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Auto => "auto",
            Self::Seeds => "seeds",
            Self::Switched => "switched",
        })
    }
}

/// Failure probability per coefficient of the Hoeffding bound on the summed mask's
/// rounding: 2^-128.
const FAILURE_LOG2: f64 = -128.0;

/// The widths of a federation's compact ciphertexts, checked to decode (see the
/// [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Widths {
    total_bits: u32,
    parties: u32,
    body_bits: u32,
    product_bits: u32,
    form: DownloadForm,
}

/// The terms of the decoding budget for one setting, in units of the 2^64 torus.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ErrorBudget {
    /// Δ/2 = 2^(63−t): what the sum of the terms must stay below.
    pub budget: f64,
    /// P·2^17.
    pub noise: f64,
    /// P·2^(63−k_up).
    pub bodies: f64,
    /// The Hoeffding bound of the summed mask's rounding to k_down bits (0 at 64 bits).
    pub mask: f64,
}

impl ErrorBudget {
    /// The sum of the terms.
    pub fn total(&self) -> f64 {
        self.noise + self.bodies + self.mask
    }

    fn fits(&self) -> bool {
        self.total() < self.budget
    }
}

impl fmt::Display for ErrorBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "noise 2^{:.2} + rounded bodies 2^{:.2}",
            self.noise.log2(),
            self.bodies.log2()
        )?;
        if self.mask > 0.0 {
            write!(f, " + rounded mask 2^{:.2}", self.mask.log2())?;
        }
        write!(
            f,
            " = 2^{:.2}, budget delta/2 = 2^{:.0}",
            self.total().log2(),
            self.budget.log2()
        )
    }
}

/// Why a setting's sums could fail to decode.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum HeadroomError {
    /// Zero parties, or t outside 2..=63.
    #[error(
        "compact ciphertexts need 1 or more parties and total_bits 2 to 63, found {parties} parties and total_bits {total_bits}"
    )]
    Invalid {
        /// t.
        total_bits: u32,
        /// P.
        parties: u32,
    },
    /// The rounded bodies would need more than 64 bits.
    #[error(
        "{parties} parties at total_bits {total_bits} need {needed}-bit bodies (t + 1 + ceil(log2 P)), \
         more than a 64-bit word: lower frac_bits, clip or the party count"
    )]
    TooWide {
        /// t.
        total_bits: u32,
        /// P.
        parties: u32,
        /// k_up.
        needed: u32,
    },
    /// No width keeps the error below the budget.
    #[error(
        "sums of {parties} parties at total_bits {total_bits} could fail to decode ({form} download): \
         {budget}; lower frac_bits, clip or the party count"
    )]
    Budget {
        /// t.
        total_bits: u32,
        /// P.
        parties: u32,
        /// The download form.
        form: DownloadForm,
        /// The terms at the widest setting.
        budget: ErrorBudget,
    },
}

impl Widths {
    /// The widths for sums of up to `parties` values of `total_bits` bits downloaded in
    /// `form` (`Auto` resolved by party count), or why no width decodes.
    pub fn new(total_bits: u32, parties: u32, form: DownloadForm) -> Result<Self, HeadroomError> {
        if parties == 0 || !(2..=63).contains(&total_bits) {
            return Err(HeadroomError::Invalid {
                total_bits,
                parties,
            });
        }
        let body_bits = total_bits + 1 + ceil_log2(parties);
        if body_bits > 64 {
            return Err(HeadroomError::TooWide {
                total_bits,
                parties,
                needed: body_bits,
            });
        }
        let form = form.resolve(parties);
        let fits = |k: u32| budget(total_bits, parties, body_bits, k).fits();
        let Some(product_bits) = (total_bits..=64).find(|&k| fits(k)) else {
            return Err(HeadroomError::Budget {
                total_bits,
                parties,
                form,
                budget: budget(total_bits, parties, body_bits, 64),
            });
        };
        Ok(Self {
            total_bits,
            parties,
            body_bits,
            product_bits,
            form,
        })
    }

    /// t: the plaintext's top bits that carry the sum.
    pub fn total_bits(&self) -> u32 {
        self.total_bits
    }

    /// P: the most parties a sum may hold.
    pub fn parties(&self) -> u32 {
        self.parties
    }

    /// k_up: bits kept of every body.
    pub fn body_bits(&self) -> u32 {
        self.body_bits
    }

    /// k_down: bits kept of the summed mask in the switched form; `None` for seeds.
    pub fn mask_bits(&self) -> Option<u32> {
        (self.form == DownloadForm::Switched).then_some(self.product_bits)
    }

    /// k_down in either form: the bits of the summed mask that decryption multiplies by the
    /// key (64: not rounded).
    pub fn product_bits(&self) -> u32 {
        self.product_bits
    }

    /// The download form ([`DownloadForm::Seeds`] or [`DownloadForm::Switched`]).
    pub fn form(&self) -> DownloadForm {
        self.form
    }

    /// Every term of the decoding budget at these widths.
    ///
    /// ```
    /// use hefl::he::{DownloadForm, Widths};
    ///
    /// let b = Widths::new(22, 3, DownloadForm::Switched)?.budget();
    /// assert!(b.total() < b.budget);
    /// assert!(b.bodies <= b.budget / 2.0);
    /// # Ok::<(), hefl::he::HeadroomError>(())
    /// ```
    pub fn budget(&self) -> ErrorBudget {
        budget(
            self.total_bits,
            self.parties,
            self.body_bits,
            self.product_bits,
        )
    }
}

fn ceil_log2(n: u32) -> u32 {
    n.next_power_of_two().trailing_zeros()
}

fn budget(total_bits: u32, parties: u32, body_bits: u32, product_bits: u32) -> ErrorBudget {
    let p = f64::from(parties);
    let pow2 = |e: f64| e.exp2();
    let mask = (product_bits < 64).then(|| {
        let k = product_bits;
        let n = PARAMS.values_per_ciphertext() as f64 * PARAMS.glwe_dimension().0 as f64;
        let h = pow2(64.0 - f64::from(k));
        let hoeffding = h * (n * (2f64.ln() - FAILURE_LOG2 * 2f64.ln()) / 2.0).sqrt();
        // Never above the worst case N·h/2.
        hoeffding.min(n * h / 2.0)
    });
    let mask = mask.unwrap_or(0.0);
    ErrorBudget {
        budget: pow2(63.0 - f64::from(total_bits)),
        noise: p * pow2(f64::from(PARAMS.noise_bound_log2())),
        bodies: p * pow2(63.0 - f64::from(body_bits)),
        mask,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_widths() {
        // c = 8, f = 16: t = 20 + ceil(log2(P + 1)).
        for (parties, t, k_up) in [(3, 22, 25), (100, 27, 35), (1000, 30, 41)] {
            let w = Widths::new(t, parties, DownloadForm::Switched).unwrap();
            assert_eq!(w.body_bits(), k_up);
            // The issue's t + 11 assumes half the budget; the least width may be one less.
            let k_down = w.mask_bits().unwrap();
            assert!(
                (t + 10..=t + 11).contains(&k_down),
                "P = {parties}: {k_down}"
            );
            let b = w.budget();
            assert!(b.total() < b.budget, "P = {parties}: {b}");
        }
    }

    #[test]
    fn noise_alone_can_exhaust_the_budget() {
        // 2^17 per party against 2^(63-45) = 2^18: two parties fit the noise, not the bodies.
        let err = Widths::new(45, 4, DownloadForm::Seeds).unwrap_err();
        assert!(matches!(err, HeadroomError::Budget { .. }), "{err}");
        assert!(err.to_string().contains("budget delta/2 = 2^18"), "{err}");
    }
}
