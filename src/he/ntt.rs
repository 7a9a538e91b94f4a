//! The only expensive step of GLWE encryption and decryption: the negacyclic product of a
//! mask polynomial with the binary secret key, exact modulo 2^64, against a key transformed once.
//!
//! tfhe's `encrypt_glwe_ciphertext` / `decrypt_glwe_ciphertext` spend almost all their time in a
//! Karatsuba product. [`KeyNtt`] computes the same product with tfhe-fft, the f64 FFT that tfhe
//! uses for bootstrapping, made exact by splitting the mask into small limbs:
//!
//! - Each mask word, as a signed integer v (the full 64-bit word for encryption; for decryption
//!   the summed mask rounded to its top k bits, the rounding [`Widths`](super::Widths) budgets
//!   for, shifted down), is cut into one limb when |v| ≤ 2^32 (k ≤ [`ONE_LIMB_MAX_BITS`]) or two
//!   signed 32-bit limbs v = lo + 2^32·hi (mod 2^64) with |lo|, |hi| ≤ 2^31.
//! - The product of a limb polynomial with the binary key has integer coefficients below
//!   N·2^32 = 2^43 in magnitude. The FFT computes them with an error below 1/2, so rounding to
//!   the nearest integer gives them exactly; the limbs are then recombined with wrapping shifts.
//! - Why the error is below 1/2: Percival's bound for an FFT convolution (Brent and Percival,
//!   "Rapid multiplication modulo the sum and difference of highly composite numbers", 2003)
//!   is ‖x‖·‖y‖·((1+ε)^(3n)(1+ε√5)^(3n+1)(1+β)^(3n) − 1) with ε = 2^-53, n the number of
//!   radix-2 levels and β the twiddle-factor error. Here ‖x‖ ≤ 2^32·√N and ‖y‖ ≤ √N (a
//!   binary key), so ‖x‖·‖y‖ ≤ 2^43 with N = 2048, and with n = 12 (ten levels for the
//!   1024-point transform, two more for the twists) and β = 2ε the factor is about 191ε =
//!   2^-45.4, so the error is at most 2^-2.4 ≈ 0.19. Measured errors are far smaller: about
//!   0.003 on worst-case operands (every limb at its largest magnitude, the all-ones key), one
//!   or two units in the last place of a 2^43 result; the unit tests assert under 1/64.
//! - As a guard against an implementation that breaks that bound, every coefficient's distance
//!   to the nearest integer is checked against [`FFT_TOLERANCE`]; a product with any coefficient
//!   further off is recomputed exactly with `tfhe_ntt::native_binary64::Plan32` (three 32-bit
//!   prime NTTs and a CRT), which also serves as the reference of [`KeyNtt`]'s self-check.
//!
//! Encryption costs two forward and two inverse 1024-point FFTs per ciphertext (against six
//! 2048-point prime NTTs and a three-prime CRT with `Plan32`), decryption one of each at the
//! default widths.

use dyn_stack::{PodBuffer, PodStack};
use tfhe_fft::c64;
use tfhe_fft::ordered::FftAlgo;
use tfhe_fft::unordered::{Method, Plan as FftPlan};
use tfhe_ntt::native_binary64::Plan32;
use tfhe_ntt::prime32::Plan as PrimePlan;
use zeroize::Zeroize;

use super::pack::{round_small, round_to, small_to_f64};

/// The three primes behind `Plan32`. tfhe-ntt keeps them crate-private (`primes32::P0..P2`) and
/// does not expose its per-prime plans, which the pointwise product against a precomputed key
/// needs. [`KeyNtt::new`] checks the whole pipeline against `Plan32::negacyclic_polymul`, so a
/// tfhe-ntt release that changed them would be refused, not silently wrong.
const PLAN32_PRIMES: [u32; 3] = [0x3F5A_0001, 0x3F5D_0001, 0x3F76_0001];

/// The widest rounded mask multiplied as one limb: its signed value lies in [−2^32, 2^32).
const ONE_LIMB_MAX_BITS: u32 = 33;

/// The largest distance to the nearest integer an FFT coefficient may have before its product is
/// recomputed exactly (the proven error bound is about 0.19; see the module docs).
const FFT_TOLERANCE: f64 = 0.25;

/// Why the precomputed product could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NttError {
    /// tfhe-ntt has no negacyclic plan for this polynomial size.
    #[error("tfhe-ntt has no negacyclic NTT plan for polynomial size {0}")]
    NoPlan(usize),
    /// The precomputed-key product disagreed with `Plan32::negacyclic_polymul`.
    #[error(
        "the precomputed key product disagrees with tfhe-ntt's Plan32 reference \
         (did tfhe-ntt change its primes, or tfhe-fft its accuracy?)"
    )]
    SelfCheck,
}

/// Per-task scratch buffers for [`KeyNtt`] products (one per rayon task, never shared).
pub(crate) struct Scratch {
    /// One FFT buffer per limb (N/2 complex values each).
    limbs: [Vec<c64>; 2],
    /// tfhe-fft's working memory.
    stack: PodBuffer,
    /// The exact path's residues.
    residues: [Vec<u32>; 3],
    /// One product polynomial (N words).
    product: Vec<u64>,
}

/// The 1024-point plan (for N = 2048). Radix-4 decimation in frequency over the whole length,
/// as tfhe's fixed-algorithm build: a fixed choice keeps runs reproducible (a measured plan
/// would differ between machines and runs, in speed only).
fn fft_plan(half: usize) -> FftPlan {
    FftPlan::new(
        half,
        Method::UserProvided {
            base_algo: FftAlgo::Dif4,
            base_n: half,
        },
    )
}

/// Direction of the accumulation: encryption adds the mask-key product to the body,
/// decryption subtracts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Accumulate {
    Add,
    Sub,
}

/// A binary GLWE secret key in FFT (and NTT) form, ready for fast products with masks.
pub(crate) struct KeyNtt {
    polynomial_size: usize,
    fft: FftPlan,
    /// The twisting factors e^(iπj/N), j < N/2, that make the N/2-point cyclic FFT of a folded
    /// polynomial a negacyclic one of length N (tfhe's `Twisties`).
    twist: Vec<c64>,
    /// For each of the k key polynomials, its twisted FFT divided by N/2 (the inverse FFT's
    /// normalisation).
    key_fourier: Vec<Vec<c64>>,
    /// The exact path: `Plan32`, its three prime plans and the key's residue NTTs (as
    /// `Plan32::fwd_binary`).
    plan: Plan32,
    primes: [PrimePlan; 3],
    key_residues: Vec<[Vec<u32>; 3]>,
}

impl KeyNtt {
    /// Transforms the k binary key polynomials (concatenated in `key`, each of length
    /// `polynomial_size`) and checks the result against tfhe-ntt's reference product.
    pub(crate) fn new(key: &[u64], polynomial_size: usize) -> Result<Self, NttError> {
        let n = polynomial_size;
        let half = n / 2;
        let no_plan = || NttError::NoPlan(n);
        let plan = Plan32::try_new(n).ok_or_else(no_plan)?;
        let primes = [
            PrimePlan::try_new(n, PLAN32_PRIMES[0]).ok_or_else(no_plan)?,
            PrimePlan::try_new(n, PLAN32_PRIMES[1]).ok_or_else(no_plan)?,
            PrimePlan::try_new(n, PLAN32_PRIMES[2]).ok_or_else(no_plan)?,
        ];
        let key_residues = key
            .chunks_exact(n)
            .map(|poly| {
                let mut residues: [Vec<u32>; 3] = std::array::from_fn(|_| vec![0; n]);
                let [r0, r1, r2] = &mut residues;
                plan.fwd_binary(poly, r0, r1, r2);
                residues
            })
            .collect();
        let fft = fft_plan(half);
        let unit = std::f64::consts::PI / n as f64;
        let twist: Vec<c64> = (0..half)
            .map(|j| {
                let (im, re) = (j as f64 * unit).sin_cos();
                c64::new(re, im)
            })
            .collect();
        let mut stack = PodBuffer::new(fft.fft_scratch());
        let scale = 1.0 / half as f64;
        let key_fourier = key
            .chunks_exact(n)
            .map(|poly| {
                let (low, high) = poly.split_at(half);
                let mut fourier: Vec<c64> = low
                    .iter()
                    .zip(high)
                    .zip(&twist)
                    .map(|((&x, &y), w)| c64::new(x as f64, y as f64) * w)
                    .collect();
                fft.fwd(&mut fourier, PodStack::new(&mut stack));
                fourier.iter_mut().for_each(|z| *z *= scale);
                fourier
            })
            .collect();
        let this = Self {
            polynomial_size: n,
            fft,
            twist,
            key_fourier,
            plan,
            primes,
            key_residues,
        };
        this.self_check(key)?;
        Ok(this)
    }

    /// Scratch buffers for one rayon task's products.
    pub(crate) fn scratch(&self) -> Scratch {
        let n = self.polynomial_size;
        Scratch {
            limbs: std::array::from_fn(|_| vec![c64::default(); n / 2]),
            stack: PodBuffer::new(self.fft.fft_scratch()),
            residues: std::array::from_fn(|_| vec![0; n]),
            product: vec![0; n],
        }
    }

    /// Compares products per key polynomial with `Plan32::negacyclic_polymul` on a fixed
    /// pseudo-random (public, non-secret) left operand: the full 64-bit product (two limbs) and
    /// rounded ones at one limb's widest width, at 48 and at 20 bits; and the exact path too.
    fn self_check(&self, key: &[u64]) -> Result<(), NttError> {
        let n = self.polynomial_size;
        // Any fixed full-width values will do.
        let lhs = splitmix64(0x9E37_79B9_7F4A_7C15, n);
        let mut scratch = self.scratch();
        let mut reference = vec![0u64; n];
        let mut same = true;
        for (index, key_poly) in key.chunks_exact(n).enumerate() {
            for bits in [64, ONE_LIMB_MAX_BITS, 48, 20] {
                let rounded: Vec<u64> = lhs.iter().map(|&w| round_to(w, bits)).collect();
                self.plan
                    .negacyclic_polymul(&mut reference, &rounded, key_poly);
                let error = self.fft_product(&lhs, bits, index, &mut scratch);
                same &= error <= FFT_TOLERANCE && scratch.product == reference;
                self.exact_product(&lhs, bits, index, &mut scratch);
                same &= scratch.product == reference;
            }
        }
        reference.zeroize();
        scratch.product.zeroize();
        if same {
            Ok(())
        } else {
            Err(NttError::SelfCheck)
        }
    }

    /// `acc[j] ±= (round(mask_poly, bits) * s_index)[j]` for `j < acc.len()`, wrapping modulo
    /// 2^64, the product being negacyclic (modulo X^N + 1): the mask rounded to its top `bits`
    /// bits (to nearest, as [`round_to`]; 64 leaves it as it is), exact for the rounded mask.
    /// `acc` may be shorter than N (the last, partly filled ciphertext of a vector). Through
    /// the FFT, one limb when `bits` is at most [`ONE_LIMB_MAX_BITS`]; exactly through `Plan32`
    /// when the FFT's distance to the integers exceeds [`FFT_TOLERANCE`].
    pub(crate) fn accumulate_product(
        &self,
        acc: &mut [u64],
        mask_poly: &[u64],
        bits: u32,
        index: usize,
        scratch: &mut Scratch,
        direction: Accumulate,
    ) {
        // A NaN distance fails the comparison too.
        let within = self.fft_product(mask_poly, bits, index, scratch) <= FFT_TOLERANCE;
        if !within {
            self.exact_product(mask_poly, bits, index, scratch);
        }
        let product = &scratch.product;
        match direction {
            Accumulate::Add => acc
                .iter_mut()
                .zip(product)
                .for_each(|(a, p)| *a = a.wrapping_add(*p)),
            Accumulate::Sub => acc
                .iter_mut()
                .zip(product)
                .for_each(|(a, p)| *a = a.wrapping_sub(*p)),
        }
    }

    /// `scratch.product = round(mask_poly, bits) * s_index` through the FFT (see the module
    /// docs); returns the largest distance of a coefficient to its integer (NaN if one is not
    /// finite).
    fn fft_product(
        &self,
        mask_poly: &[u64],
        bits: u32,
        index: usize,
        scratch: &mut Scratch,
    ) -> f64 {
        let shift = 64 - bits.min(64);
        let two_limbs = bits > ONE_LIMB_MAX_BITS;
        let Scratch {
            limbs: [lo, hi],
            stack,
            product,
            ..
        } = scratch;
        // The loops are written for the autovectorizer, in `WithSimd` ops so that `dispatch`
        // compiles them for the widest instruction set the CPU has (AVX2 where present).
        let arch = pulp::Arch::new();
        match two_limbs {
            true => arch.dispatch(Fold::<true> {
                mask: mask_poly,
                bits,
                lo,
                hi,
            }),
            false => arch.dispatch(Fold::<false> {
                mask: mask_poly,
                bits,
                lo,
                hi,
            }),
        }
        let key = &self.key_fourier[index];
        for buffer in [&mut *lo, &mut *hi]
            .into_iter()
            .take(1 + usize::from(two_limbs))
        {
            let pointwise = |buffer: &mut [c64], key: &[c64], conjugate: bool| {
                arch.dispatch(Pointwise {
                    buffer,
                    key,
                    conjugate,
                });
            };
            pointwise(buffer, &self.twist, false);
            self.fft.fwd(buffer, PodStack::new(stack));
            pointwise(buffer, key, false);
            self.fft.inv(buffer, PodStack::new(stack));
            // The untwist: times the conjugate twist.
            pointwise(buffer, &self.twist, true);
        }
        let error_bits = match two_limbs {
            true => arch.dispatch(Unfold::<true> {
                lo,
                hi,
                product,
                shift,
            }),
            false => arch.dispatch(Unfold::<false> {
                lo,
                hi,
                product,
                shift,
            }),
        };
        // Distances are non-negative, so their bit patterns order as they do; infinity's and
        // NaN's are above every finite one.
        f64::from_bits(error_bits)
    }

    /// `scratch.product = round(mask_poly, bits) * s_index` exactly, through `Plan32`'s three
    /// prime NTTs against the precomputed key residues and its CRT.
    fn exact_product(&self, mask_poly: &[u64], bits: u32, index: usize, scratch: &mut Scratch) {
        let Scratch {
            residues, product, ..
        } = scratch;
        product
            .iter_mut()
            .zip(mask_poly)
            .for_each(|(p, &m)| *p = round_to(m, bits));
        let [r0, r1, r2] = &mut *residues;
        self.plan.fwd(product, r0, r1, r2);
        // Pointwise product with the 1/N of the inverse transform, exactly as
        // `Plan32::negacyclic_polymul` does between its transforms.
        for ((prime, r), k) in self
            .primes
            .iter()
            .zip(residues.iter_mut())
            .zip(&self.key_residues[index])
        {
            prime.mul_assign_normalize(r, k);
        }
        let [r0, r1, r2] = &mut *residues;
        self.plan.inv(product, r0, r1, r2);
    }
}

/// `len` pseudo-random (public, fixed) words: splitmix64 from `seed`, for the self-check.
fn splitmix64(mut state: u64, len: usize) -> Vec<u64> {
    (0..len)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        })
        .collect()
}

/// The FFT input of a mask polynomial before its twist: each word rounded to `bits` bits as a
/// signed integer (see the module docs), cut into limbs (`lo` alone, or `lo` and `hi` when
/// `TWO`) and folded (coefficient j as the real part, j + N/2 as the imaginary part).
struct Fold<'a, const TWO: bool> {
    mask: &'a [u64],
    bits: u32,
    lo: &'a mut [c64],
    hi: &'a mut [c64],
}

impl<const TWO: bool> pulp::WithSimd for Fold<'_, TWO> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Self { mask, bits, lo, hi } = self;
        let shift = 64 - bits.min(64);
        // The word as the signed integer the product multiplies, and its limbs: the value
        // itself, or its sign-extended low 32 bits and the rest (each at most 2^31).
        let limbs = |word: u64| {
            let v = (round_to(word, bits) as i64) >> shift;
            if TWO {
                // v = low + 2^32·high modulo 2^64 (all the product needs), both in i32: the
                // subtraction wraps only for v near 2^63, where high wraps to -2^31.
                let low = v as i32;
                let high = (v.wrapping_sub(i64::from(low)) >> 32) as i32;
                (f64::from(low), f64::from(high))
            } else {
                (small_to_f64(v), 0.0)
            }
        };
        let (low, high) = mask.split_at(mask.len() / 2);
        for (((x, y), l), h) in low.iter().zip(high).zip(lo.iter_mut()).zip(hi.iter_mut()) {
            let (xl, xh) = limbs(*x);
            let (yl, yh) = limbs(*y);
            *l = c64::new(xl, yl);
            if TWO {
                *h = c64::new(xh, yh);
            }
        }
    }
}

/// `buffer *= key` (or `conj(key)` when `conjugate`), pointwise: the twist, the product in the
/// Fourier domain, the untwist.
struct Pointwise<'a> {
    buffer: &'a mut [c64],
    key: &'a [c64],
    conjugate: bool,
}

impl pulp::WithSimd for Pointwise<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        // pulp's complex product (one fmaddsub per vector of complex numbers).
        let (buffer, buffer_tail) = S::as_mut_simd_c64s(self.buffer);
        let (key, key_tail) = S::as_simd_c64s(self.key);
        if self.conjugate {
            for (z, k) in buffer.iter_mut().zip(key) {
                *z = simd.conj_mul_c64s(*k, *z);
            }
            for (z, k) in buffer_tail.iter_mut().zip(key_tail) {
                *z *= k.conj();
            }
        } else {
            for (z, k) in buffer.iter_mut().zip(key) {
                *z = simd.mul_c64s(*z, *k);
            }
            for (z, k) in buffer_tail.iter_mut().zip(key_tail) {
                *z *= k;
            }
        }
    }
}

/// The inverse of [`Fold`] after the inverse FFT and the untwist: rounds every coefficient of
/// every limb to the nearest integer, recombines the limbs modulo 2^64 and shifts the product
/// back up. Returns the bit pattern of the largest distance to an integer.
struct Unfold<'a, const TWO: bool> {
    lo: &'a [c64],
    hi: &'a [c64],
    product: &'a mut [u64],
    shift: u32,
}

impl<const TWO: bool> pulp::WithSimd for Unfold<'_, TWO> {
    type Output = u64;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> u64 {
        let Self {
            lo,
            hi,
            product,
            shift,
        } = self;
        // Distances are non-negative, so their bit patterns order as i64s do (a signed maximum
        // vectorizes; an unsigned 64-bit one does not on AVX2).
        let mut error = 0i64;
        let mut round = |value: f64| {
            let (integer, distance) = round_small(value);
            error = error.max(distance.to_bits() as i64);
            integer
        };
        let (low, high) = product.split_at_mut(product.len() / 2);
        for (((x, y), l), h) in low.iter_mut().zip(high.iter_mut()).zip(lo).zip(hi) {
            let (mut xv, mut yv) = (round(l.re), round(l.im));
            if TWO {
                xv = xv.wrapping_add(round(h.re) << 32);
                yv = yv.wrapping_add(round(h.im) << 32);
            }
            *x = (xv as u64) << shift;
            *y = (yv as u64) << shift;
        }
        error as u64
    }
}

impl Drop for KeyNtt {
    fn drop(&mut self) {
        for residues in &mut self.key_residues {
            for r in residues.iter_mut() {
                r.zeroize();
            }
        }
        for fourier in &mut self.key_fourier {
            for z in fourier.iter_mut() {
                z.re.zeroize();
                z.im.zeroize();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: usize = 2048;

    /// Deterministic full-width words.
    fn words(seed: u64) -> Vec<u64> {
        splitmix64(seed, N)
    }

    /// The FFT product against `Plan32::negacyclic_polymul` on the rounded mask; returns the
    /// FFT's largest distance to an integer.
    fn check(ntt: &KeyNtt, key: &[u64], mask: &[u64], bits: u32) -> f64 {
        let rounded: Vec<u64> = mask.iter().map(|&w| round_to(w, bits)).collect();
        let mut reference = vec![0u64; N];
        ntt.plan.negacyclic_polymul(&mut reference, &rounded, key);
        let mut scratch = ntt.scratch();
        let error = ntt.fft_product(mask, bits, 0, &mut scratch);
        assert!(error.is_finite(), "finite FFT output");
        assert!(scratch.product == reference, "{bits}-bit product differs");
        // And through the public entry points, accumulating into a short `acc`.
        let mut acc = vec![7u64; 1000];
        ntt.accumulate_product(&mut acc, mask, bits, 0, &mut scratch, Accumulate::Sub);
        for (a, r) in acc.iter().zip(&reference) {
            assert_eq!(a.wrapping_add(*r), 7);
        }
        error
    }

    #[test]
    fn fft_products_are_exact_with_a_wide_margin_even_at_the_worst_case() {
        // A random binary key, and the all-ones key that maximises ‖s‖.
        let random: Vec<u64> = words(1).iter().map(|w| w >> 63).collect();
        let ones = vec![1u64; N];
        let mut worst = 0.0f64;
        for key in [&random, &ones] {
            let ntt = KeyNtt::new(key, N).expect("key transforms");
            for bits in [64, 48, 40, ONE_LIMB_MAX_BITS + 1, ONE_LIMB_MAX_BITS, 20, 1] {
                for seed in 0..4 {
                    worst = worst.max(check(&ntt, key, &words(seed + 10), bits));
                }
                // Every limb at its largest magnitude, all of one sign: two limbs near -2^31
                // each, or one limb at -2^32 (the rounded mask 2^63).
                let extreme = if bits > ONE_LIMB_MAX_BITS {
                    0x8000_0000_8000_0000
                } else {
                    1 << 63
                };
                worst = worst.max(check(&ntt, key, &vec![extreme; N], bits));
                // Where v - low overflows an i64: v = 2^63 - 1, low = -1.
                worst = worst.max(check(&ntt, key, &vec![u64::MAX >> 1; N], bits));
            }
        }
        // The proven bound is about 0.19 (module docs) and the fallback starts at 0.25; the
        // worst case measures about 0.003, one or two units in the last place of a 2^43 result.
        assert!(worst < 1.0 / 64.0, "largest FFT error {worst}");
    }

    #[test]
    fn a_product_off_tolerance_is_recomputed_exactly() {
        let key: Vec<u64> = words(4).iter().map(|w| w >> 63).collect();
        let mut ntt = KeyNtt::new(&key, N).expect("key transforms");
        // A key transform off by a relative 2^-20 (an FFT gone wrong) moves the products'
        // coefficients far from the integers: the check must catch it and the exact path
        // (the key's residues, untouched) give the right product.
        for z in &mut ntt.key_fourier[0] {
            *z *= 1.0 + 2f64.powi(-20);
        }
        let mask = words(5);
        let mut scratch = ntt.scratch();
        for bits in [64, ONE_LIMB_MAX_BITS, 20] {
            let rounded: Vec<u64> = mask.iter().map(|&w| round_to(w, bits)).collect();
            let mut reference = vec![0u64; N];
            ntt.plan.negacyclic_polymul(&mut reference, &rounded, &key);
            let mut acc = vec![3u64; N];
            ntt.accumulate_product(&mut acc, &mask, bits, 0, &mut scratch, Accumulate::Add);
            for (a, r) in acc.iter().zip(&reference) {
                assert_eq!(a.wrapping_sub(*r), 3, "{bits} bits");
            }
        }
    }

    #[test]
    fn the_exact_path_matches_the_reference() {
        let key: Vec<u64> = words(2).iter().map(|w| w >> 63).collect();
        let ntt = KeyNtt::new(&key, N).expect("key transforms");
        let mask = words(3);
        let mut scratch = ntt.scratch();
        for bits in [64, 30] {
            let rounded: Vec<u64> = mask.iter().map(|&w| round_to(w, bits)).collect();
            let mut reference = vec![0u64; N];
            ntt.plan.negacyclic_polymul(&mut reference, &rounded, &key);
            ntt.exact_product(&mask, bits, 0, &mut scratch);
            assert!(scratch.product == reference);
        }
    }
}
