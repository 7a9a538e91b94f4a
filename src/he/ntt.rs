//! The only expensive step of GLWE encryption and decryption, the negacyclic product of a
//! mask polynomial with the binary secret key, done with a key precomputed in NTT form.
//!
//! tfhe's `encrypt_glwe_ciphertext` / `decrypt_glwe_ciphertext` spend almost all their time in a
//! Karatsuba product. `tfhe_ntt::native_binary64::Plan32` computes the same product exactly
//! (u64 coefficients times a binary polynomial, modulo X^N + 1 and 2^64) through three 32-bit
//! prime NTTs and a CRT reconstruction. `Plan32::negacyclic_polymul` transforms both operands
//! on every call; since the key never changes, [`KeyNtt`] transforms it once, so each product
//! costs one forward transform of the mask, a pointwise product and one inverse transform
//! (6 prime NTTs instead of 9).
//!
//! Decryption needs less: it rounds the summed mask to k ≤ [`ROUNDED_MAX_BITS`] bits first (the
//! rounding [`Widths`](super::Widths) budgets for), and the product of a signed k-bit
//! polynomial with a binary one has coefficients below N·2^(k−1) in magnitude, which two of the
//! three primes already determine: [`KeyNtt::sub_rounded_product`] costs 4 prime NTTs and a
//! two-prime CRT instead of 6 NTTs and a three-prime one.

use tfhe_ntt::native_binary64::Plan32;
use tfhe_ntt::prime32::Plan as PrimePlan;
use zeroize::Zeroize;

use super::pack::round_to;

/// The three primes behind `Plan32`. tfhe-ntt keeps them crate-private (`primes32::P0..P2`) and
/// does not expose its per-prime plans, which the pointwise product against a precomputed key
/// needs. [`KeyNtt::new`] checks the whole pipeline against `Plan32::negacyclic_polymul`, so a
/// tfhe-ntt release that changed them would be refused, not silently wrong.
const PLAN32_PRIMES: [u32; 3] = [0x3F5A_0001, 0x3F5D_0001, 0x3F76_0001];

/// The first two primes as u64, and their product (a 60-bit number).
const P0: u64 = PLAN32_PRIMES[0] as u64;
const P1: u64 = PLAN32_PRIMES[1] as u64;
const P01: u64 = P0 * P1;
/// P0^-1 mod P1, for the two-prime CRT.
const P0_INV_MOD_P1: u64 = pow_mod(P0, P1 - 2, P1);

/// The widest rounded mask [`KeyNtt::sub_rounded_product`] multiplies exactly: the product's
/// coefficients lie in (−N·2^(k−1), N·2^(k−1)] with N = 2048, so for k ≤ 48 they are below
/// 2^58 < P0·P1/2 in magnitude and the centred CRT of the two residues is the integer itself.
pub(crate) const ROUNDED_MAX_BITS: u32 = 48;

/// base^exp mod m for m < 2^32 (a const fn, for [`P0_INV_MOD_P1`] by Fermat).
const fn pow_mod(base: u64, mut exp: u64, m: u64) -> u64 {
    let (mut result, mut base) = (1, base % m);
    while exp > 0 {
        if exp & 1 == 1 {
            result = result * base % m;
        }
        base = base * base % m;
        exp >>= 1;
    }
    result
}

/// Why the precomputed product could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NttError {
    /// tfhe-ntt has no negacyclic plan for this polynomial size.
    #[error("tfhe-ntt has no negacyclic NTT plan for polynomial size {0}")]
    NoPlan(usize),
    /// The precomputed-key product disagreed with `Plan32::negacyclic_polymul`.
    #[error(
        "the precomputed NTT key product disagrees with tfhe-ntt's Plan32 reference \
         (did tfhe-ntt change its primes?)"
    )]
    SelfCheck,
}

/// Per-task scratch buffers for [`KeyNtt`] products (one per rayon task, never shared).
pub(crate) struct Scratch {
    residues: [Vec<u32>; 3],
    product: Vec<u64>,
}

impl Scratch {
    pub(crate) fn new(polynomial_size: usize) -> Self {
        Self {
            residues: std::array::from_fn(|_| vec![0; polynomial_size]),
            product: vec![0; polynomial_size],
        }
    }
}

/// Direction of the accumulation: encryption adds the mask-key product to the body,
/// decryption subtracts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Accumulate {
    Add,
    Sub,
}

/// A binary GLWE secret key in NTT form, ready for fast products with masks.
pub(crate) struct KeyNtt {
    polynomial_size: usize,
    plan: Plan32,
    primes: [PrimePlan; 3],
    /// For each of the k key polynomials, its three residue NTTs (as `Plan32::fwd_binary`).
    key: Vec<[Vec<u32>; 3]>,
}

impl KeyNtt {
    /// Transforms the k binary key polynomials (concatenated in `key`, each of length
    /// `polynomial_size`) and checks the result against tfhe-ntt's reference product.
    pub(crate) fn new(key: &[u64], polynomial_size: usize) -> Result<Self, NttError> {
        let n = polynomial_size;
        let no_plan = || NttError::NoPlan(n);
        let plan = Plan32::try_new(n).ok_or_else(no_plan)?;
        let primes = [
            PrimePlan::try_new(n, PLAN32_PRIMES[0]).ok_or_else(no_plan)?,
            PrimePlan::try_new(n, PLAN32_PRIMES[1]).ok_or_else(no_plan)?,
            PrimePlan::try_new(n, PLAN32_PRIMES[2]).ok_or_else(no_plan)?,
        ];
        let key_polys = key
            .chunks_exact(n)
            .map(|poly| {
                let mut residues: [Vec<u32>; 3] = std::array::from_fn(|_| vec![0; n]);
                let [r0, r1, r2] = &mut residues;
                plan.fwd_binary(poly, r0, r1, r2);
                residues
            })
            .collect();
        let this = Self {
            polynomial_size: n,
            plan,
            primes,
            key: key_polys,
        };
        this.self_check(key)?;
        Ok(this)
    }

    /// Compares one product per key polynomial with `Plan32::negacyclic_polymul` on a fixed
    /// pseudo-random (public, non-secret) left operand.
    fn self_check(&self, key: &[u64]) -> Result<(), NttError> {
        let n = self.polynomial_size;
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let lhs: Vec<u64> = (0..n)
            .map(|_| {
                // splitmix64: any fixed full-width values will do.
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^ (z >> 31)
            })
            .collect();
        let mut scratch = Scratch::new(n);
        let mut reference = vec![0u64; n];
        for (index, key_poly) in key.chunks_exact(n).enumerate() {
            self.plan.negacyclic_polymul(&mut reference, &lhs, key_poly);
            let mut ours = vec![0u64; n];
            self.accumulate_product(&mut ours, &lhs, index, &mut scratch, Accumulate::Add);
            let mut same = ours == reference;
            // The rounded path against the same reference on rounded masks, at the widest and
            // a narrow width.
            for bits in [ROUNDED_MAX_BITS, 20] {
                let rounded: Vec<u64> = lhs.iter().map(|&w| round_to(w, bits)).collect();
                self.plan
                    .negacyclic_polymul(&mut reference, &rounded, key_poly);
                ours.fill(0);
                self.sub_rounded_product(&mut ours, &lhs, bits, index, &mut scratch);
                same &= ours
                    .iter()
                    .zip(&reference)
                    .all(|(o, r)| o.wrapping_add(*r) == 0);
            }
            reference.zeroize();
            ours.zeroize();
            if !same {
                return Err(NttError::SelfCheck);
            }
        }
        Ok(())
    }

    /// `acc[j] ±= (mask_poly * s_index)[j]` for `j < acc.len()`, wrapping modulo 2^64, the
    /// product being negacyclic (modulo X^N + 1). `acc` may be shorter than N (the last,
    /// partly filled ciphertext of a vector).
    pub(crate) fn accumulate_product(
        &self,
        acc: &mut [u64],
        mask_poly: &[u64],
        index: usize,
        scratch: &mut Scratch,
        direction: Accumulate,
    ) {
        let Scratch { residues, product } = scratch;
        let [r0, r1, r2] = &mut *residues;
        self.plan.fwd(mask_poly, r0, r1, r2);
        // Pointwise product with the 1/N of the inverse transform, exactly as
        // `Plan32::negacyclic_polymul` does between its transforms.
        for ((prime, r), k) in self
            .primes
            .iter()
            .zip(residues.iter_mut())
            .zip(&self.key[index])
        {
            prime.mul_assign_normalize(r, k);
        }
        let [r0, r1, r2] = &mut *residues;
        self.plan.inv(product, r0, r1, r2);
        match direction {
            Accumulate::Add => acc
                .iter_mut()
                .zip(product.iter())
                .for_each(|(a, p)| *a = a.wrapping_add(*p)),
            Accumulate::Sub => acc
                .iter_mut()
                .zip(product.iter())
                .for_each(|(a, p)| *a = a.wrapping_sub(*p)),
        }
    }

    /// `acc[j] -= (round(mask_poly, bits) * s_index)[j]`, wrapping modulo 2^64, for
    /// `j < acc.len()`: the mask rounded to its top `bits` bits (to nearest, as
    /// [`round_to`]), `bits` at most [`ROUNDED_MAX_BITS`]. Exact for the rounded mask.
    pub(crate) fn sub_rounded_product(
        &self,
        acc: &mut [u64],
        mask_poly: &[u64],
        bits: u32,
        index: usize,
        scratch: &mut Scratch,
    ) {
        debug_assert!((1..=ROUNDED_MAX_BITS).contains(&bits));
        let shift = 64 - bits;
        let [r0, r1, _] = &mut scratch.residues;
        // Both loops are written for the autovectorizer; `dispatch` compiles them for the
        // widest instruction set the CPU has (AVX2 where present).
        let arch = pulp::Arch::new();
        arch.dispatch(|| {
            for ((m, x0), x1) in mask_poly.iter().zip(r0.iter_mut()).zip(r1.iter_mut()) {
                // The rounded mask as a signed `bits`-bit integer v, offset to u = v + 2^47 in
                // [0, 2^48) and split in two 24-bit halves for 32-bit Shoup arithmetic (so the
                // loop vectorizes); the offset is taken off again modulo each prime.
                let v = (round_to(*m, bits) as i64) >> shift;
                let u = v.wrapping_add(1 << 47) as u64;
                let (hi, lo) = ((u >> 24) as u32, (u as u32) & 0xFF_FFFF);
                *x0 = reduce_split::<{ P0 as u32 }>(hi, lo);
                *x1 = reduce_split::<{ P1 as u32 }>(hi, lo);
            }
        });
        for ((prime, r), k) in self
            .primes
            .iter()
            .zip([&mut *r0, &mut *r1])
            .zip(&self.key[index])
        {
            prime.fwd(r);
            prime.mul_assign_normalize(r, k);
            prime.inv(r);
        }
        let inv = Shoup::new(P0_INV_MOD_P1 as u32, P1 as u32);
        arch.dispatch(|| {
            for ((a, &x0), &x1) in acc.iter_mut().zip(r0.iter()).zip(r1.iter()) {
                // x ≡ x0 (mod P0), x ≡ x1 (mod P1), 0 <= x < P0·P1; then centred.
                let v1 = inv.mul(x1 + 2 * P1 as u32 - x0);
                let x = u64::from(x0) + P0 * u64::from(v1);
                let above = (P01 / 2).wrapping_sub(x) >> 63;
                let signed = x.wrapping_sub(P01 & above.wrapping_neg());
                *a = a.wrapping_sub(signed << shift);
            }
        });
    }
}

/// Multiplication by a constant w modulo a prime p < 2^31 (Shoup): one widening product for
/// the quotient estimate, then wrapping 32-bit arithmetic.
#[derive(Clone, Copy)]
struct Shoup {
    w: u32,
    /// floor(w·2^32 / p).
    w_shoup: u64,
    p: u32,
}

impl Shoup {
    const fn new(w: u32, p: u32) -> Self {
        Self {
            w,
            w_shoup: ((w as u64) << 32) / p as u64,
            p,
        }
    }

    /// a·w mod p for any a < 2^32.
    #[inline(always)]
    fn mul(self, a: u32) -> u32 {
        let q = ((u64::from(a) * self.w_shoup) >> 32) as u32;
        // a·w − q·p lies in [0, 2p), so the wrapping 32-bit arithmetic is exact.
        let r = a.wrapping_mul(self.w).wrapping_sub(q.wrapping_mul(self.p));
        r.min(r.wrapping_sub(self.p))
    }
}

/// (hi·2^24 + lo − 2^47) mod P for hi, lo < 2^24: a value offset by 2^47 and split in
/// halves, reduced to [0, P).
#[inline(always)]
fn reduce_split<const P: u32>(hi: u32, lo: u32) -> u32 {
    let offset = ((1u64 << 47) % P as u64) as u32;
    // < 2P + 2^24 + P < 4P < 2^32.
    let r = Shoup::new(1 << 24, P).mul(hi) + lo + (P - offset);
    let r = r.min(r.wrapping_sub(2 * P));
    r.min(r.wrapping_sub(P))
}

impl Drop for KeyNtt {
    fn drop(&mut self) {
        for residues in &mut self.key {
            for r in residues.iter_mut() {
                r.zeroize();
            }
        }
    }
}
