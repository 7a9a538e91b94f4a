//! Which Shamir shares lie on one polynomial: Lagrange interpolation to coefficients and
//! Gao's Reed–Solomon decoder, over vsss-rs's GF(2^8) (the field its shares live in).
//!
//! Shamir shares of one secret byte, T-of-k, are a Reed–Solomon codeword: the values at
//! x₁, …, x_m of a polynomial of degree < T. Gao's algorithm ("A new algorithm for decoding
//! Reed–Solomon codes", 2002) finds that polynomial from m shares of which at most
//! ⌊(m − T)/2⌋ are wrong, in O(m²) field operations, without trying subsets. [`super::shamir`]
//! uses it only to *choose* which T shares to combine: the secret is still recovered by
//! vsss-rs from T shares and accepted only if the caller's check holds.
//!
//! Every polynomial here is derived from secret shares, so each is zeroized on drop.

use vsss_rs::Gf256;
use zeroize::Zeroizing;

/// Coefficients, lowest degree first, without trailing zeros (the zero polynomial is empty).
type Poly = Zeroizing<Vec<Gf256>>;

fn zero() -> Gf256 {
    Gf256::from(0u8)
}

fn one() -> Gf256 {
    Gf256::from(1u8)
}

fn trimmed(mut coefficients: Vec<Gf256>) -> Poly {
    while coefficients.last() == Some(&zero()) {
        coefficients.pop();
    }
    Zeroizing::new(coefficients)
}

/// p(x), by Horner's rule.
pub(super) fn evaluate(p: &[Gf256], x: Gf256) -> Gf256 {
    p.iter().rev().fold(zero(), |acc, &c| acc * x + c)
}

/// a − b (in characteristic 2, a + b).
fn sub(a: &[Gf256], b: &[Gf256]) -> Poly {
    let mut out = vec![zero(); a.len().max(b.len())];
    for (o, c) in out.iter_mut().zip(a) {
        *o += *c;
    }
    for (o, c) in out.iter_mut().zip(b) {
        *o -= *c;
    }
    trimmed(out)
}

fn mul(a: &[Gf256], b: &[Gf256]) -> Poly {
    if a.is_empty() || b.is_empty() {
        return trimmed(Vec::new());
    }
    let mut out = vec![zero(); a.len() + b.len() - 1];
    for (i, &ca) in a.iter().enumerate() {
        for (j, &cb) in b.iter().enumerate() {
            out[i + j] += ca * cb;
        }
    }
    trimmed(out)
}

/// (quotient, remainder) of a / b; `None` if b is the zero polynomial.
fn div_rem(a: &[Gf256], b: &[Gf256]) -> Option<(Poly, Poly)> {
    let lead = *b.last()?;
    let inverse = one() / lead;
    let mut remainder = a.to_vec();
    if remainder.len() < b.len() {
        return Some((trimmed(Vec::new()), trimmed(remainder)));
    }
    let mut quotient = vec![zero(); remainder.len() - b.len() + 1];
    for shift in (0..quotient.len()).rev() {
        let factor = remainder[shift + b.len() - 1] * inverse;
        quotient[shift] = factor;
        for (r, &c) in remainder[shift..].iter_mut().zip(b) {
            *r -= factor * c;
        }
    }
    Some((trimmed(quotient), trimmed(remainder)))
}

/// Lagrange interpolation over fixed, distinct, non-zero points: the basis polynomials
/// ℓ_i(x) = Π_{j≠i} (x − x_j) / (x_i − x_j) are computed once, then each column of values
/// costs m² multiplications.
pub(super) struct Interpolator {
    /// Π (x − x_i).
    vanishing: Vec<Gf256>,
    basis: Vec<Vec<Gf256>>,
}

impl Interpolator {
    /// The interpolator over `xs` (distinct; callers refuse duplicates first).
    pub(super) fn new(xs: &[u8]) -> Self {
        let xs: Vec<Gf256> = xs.iter().map(|&x| Gf256::from(x)).collect();
        let mut vanishing = vec![one()];
        for &x in &xs {
            // (x − a)·p: shift up, minus a·p.
            let mut next = vec![zero(); vanishing.len() + 1];
            for (i, &c) in vanishing.iter().enumerate() {
                next[i + 1] += c;
                next[i] -= x * c;
            }
            vanishing = next;
        }
        let basis = xs
            .iter()
            .map(|&x| {
                // Π (x − x_j) / (x − x_i), by synthetic division, then scaled to 1 at x_i.
                let mut quotient = vec![zero(); vanishing.len() - 1];
                let mut carry = zero();
                for i in (0..quotient.len()).rev() {
                    carry = vanishing[i + 1] + x * carry;
                    quotient[i] = carry;
                }
                let at_x = evaluate(&quotient, x);
                // Non-zero because the points are distinct; a zero would mean a duplicate.
                let scale = if at_x == zero() { zero() } else { one() / at_x };
                quotient.iter().map(|&c| c * scale).collect()
            })
            .collect();
        Self { vanishing, basis }
    }

    /// The polynomial of degree < m through (x_i, `ys[i]`).
    fn interpolate(&self, ys: impl Iterator<Item = u8>) -> Poly {
        let mut out = vec![zero(); self.basis.len()];
        for (basis, y) in self.basis.iter().zip(ys) {
            let y = Gf256::from(y);
            for (o, &c) in out.iter_mut().zip(basis) {
                *o += y * c;
            }
        }
        trimmed(out)
    }

    /// Gao's decoder: the polynomial of degree < `threshold` that differs from the values
    /// `ys` (one per point) in at most ⌊(m − threshold)/2⌋ places, or `None` when there is
    /// no such polynomial.
    pub(super) fn decode(&self, ys: impl Iterator<Item = u8>, threshold: usize) -> Option<Poly> {
        let points = self.basis.len();
        let (mut r0, mut r1) = (trimmed(self.vanishing.clone()), self.interpolate(ys));
        let (mut v0, mut v1) = (trimmed(Vec::new()), trimmed(vec![one()]));
        // Extended Euclid on (Π (x − x_i), interpolant), stopped at the first remainder of
        // degree < (m + T)/2; only the cofactor of the interpolant (v) is needed.
        while !r1.is_empty() && 2 * (r1.len() - 1) >= points + threshold {
            let (quotient, remainder) = div_rem(&r0, &r1)?;
            let v = sub(&v0, &mul(&quotient, &v1));
            (r0, r1) = (r1, remainder);
            (v0, v1) = (v1, v);
        }
        let (message, remainder) = div_rem(&r1, &v1)?;
        (remainder.is_empty() && message.len() <= threshold).then_some(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed polynomial of degree < t, and its values at 1..=m.
    fn codeword(t: usize, m: u8) -> (Vec<Gf256>, Vec<u8>) {
        let p: Vec<Gf256> = (0..t).map(|i| Gf256::from((i * 37 + 11) as u8)).collect();
        let ys = (1..=m)
            .map(|x| u8::from(evaluate(&p, Gf256::from(x))))
            .collect();
        (p, ys)
    }

    #[test]
    fn interpolation_returns_the_polynomial() {
        let (p, ys) = codeword(5, 5);
        let xs: Vec<u8> = (1..=5).collect();
        let found = Interpolator::new(&xs).interpolate(ys.into_iter());
        assert_eq!(&found[..], &p[..]);
    }

    #[test]
    fn division_undoes_multiplication() {
        let (a, _) = codeword(7, 1);
        let (b, _) = codeword(3, 1);
        let product = mul(&a, &b);
        let (quotient, remainder) = div_rem(&product, &b).unwrap();
        assert_eq!(&quotient[..], &a[..]);
        assert!(remainder.is_empty());
        assert!(div_rem(&a, &[]).is_none());
    }

    #[test]
    fn gao_corrects_up_to_half_the_redundancy() {
        for (t, m) in [(3usize, 7u8), (8, 14), (50, 99), (1, 5)] {
            let (p, mut ys) = codeword(t, m);
            let errors = (m as usize - t) / 2;
            for (i, y) in ys.iter_mut().enumerate().take(errors) {
                *y ^= 1 + i as u8;
            }
            let xs: Vec<u8> = (1..=m).collect();
            let found = Interpolator::new(&xs).decode(ys.iter().copied(), t);
            assert_eq!(found.as_deref().map(|f| &f[..]), Some(&p[..]), "{t}-of-{m}");
        }
    }

    #[test]
    fn gao_returns_the_zero_polynomial_for_all_zero_values() {
        let xs: Vec<u8> = (1..=6).collect();
        let found = Interpolator::new(&xs).decode([0u8; 6].into_iter(), 3);
        assert_eq!(found.map(|f| f.len()), Some(0));
    }
}
