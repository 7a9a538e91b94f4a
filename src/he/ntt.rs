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

use tfhe_ntt::native_binary64::Plan32;
use tfhe_ntt::prime32::Plan as PrimePlan;
use zeroize::Zeroize;

/// The three primes behind `Plan32`. tfhe-ntt keeps them crate-private (`primes32::P0..P2`) and
/// does not expose its per-prime plans, which the pointwise product against a precomputed key
/// needs. [`KeyNtt::new`] checks the whole pipeline against `Plan32::negacyclic_polymul`, so a
/// tfhe-ntt release that changed them would be refused, not silently wrong.
const PLAN32_PRIMES: [u32; 3] = [0x3F5A_0001, 0x3F5D_0001, 0x3F76_0001];

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
            let same = ours == reference;
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
