//! Rényi-DP accounting of the sampled Gaussian mechanism (DP-SGD with Poisson sampling).
//!
//! One DP-SGD step with sampling rate q and noise multiplier σ is (α, ε_α)-RDP with
//! ε_α = log(A_α) / (α − 1), where A_α = E_{z∼N(0,σ²)}[((1 − q) + q·e^{(2z − 1)/(2σ²)})^α]
//! (Mironov, Talwar and Zhang, "Rényi Differential Privacy of the Sampled Gaussian
//! Mechanism", 2019). A_α is computed in log space: as a finite binomial sum for integer α,
//! and with the paper's two convergent series (erfc terms) for fractional α. T steps compose
//! to T·ε_α. The (ε, δ) guarantee is the minimum over orders of the conversion of Balle et
//! al. 2020 (Theorem 21), as used by Opacus and Google's dp-accounting:
//! ε = ε_α·T + log((α − 1)/α) − (log δ + log α)/(α − 1).
//!
//! Checked against Opacus's published test value and against A_α computed independently by
//! numerical integration with mpmath (`tests/reference/rdp_mpmath.py`).

use std::f64::consts::{LN_2, PI};

/// The orders Opacus uses by default: 1.1, 1.2, ..., 10.9, then 12, 13, ..., 63.
///
/// ```
/// let orders = hefl::dp::default_orders();
/// assert_eq!(orders.len(), 99 + 52);
/// assert_eq!((orders[0], orders[98], orders[99], orders[150]), (1.1, 10.9, 12.0, 63.0));
/// ```
pub fn default_orders() -> Vec<f64> {
    (1..100)
        .map(|x| 1.0 + f64::from(x) / 10.0)
        .chain((12..64).map(f64::from))
        .collect()
}

/// log(e^a + e^b), exact at −∞ and +∞ (NaN stays NaN).
pub(super) fn log_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY || hi == f64::INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// log(e^a − e^b) for a ≥ b; −∞ when they are equal, NaN when both are +∞ (the difference
/// is unknown).
pub(super) fn log_sub(a: f64, b: f64) -> f64 {
    if b == f64::NEG_INFINITY {
        return a;
    }
    if b == f64::INFINITY {
        return f64::NAN;
    }
    if a <= b {
        return f64::NEG_INFINITY;
    }
    a + (-(b - a).exp()).ln_1p()
}

/// log(erfc(x)), accurate where erfc underflows (large x) through its asymptotic series.
fn log_erfc(x: f64) -> f64 {
    if x < 20.0 {
        return libm::erfc(x).ln();
    }
    let inv2 = 1.0 / (x * x);
    // erfc(x) = e^{−x²}/(x√π) · (1 − 1/(2x²) + 3/(4x⁴) − 15/(8x⁶) + ...)
    let series = 1.0 - 0.5 * inv2 + 0.75 * inv2 * inv2 - 1.875 * inv2 * inv2 * inv2;
    -x * x - x.ln() - 0.5 * PI.ln() + series.ln()
}

/// m / (2σ²), the exponent of the Gaussian terms: 0 when m is 0 (even when σ² underflows),
/// +∞ rather than NaN when σ is too small for the quotient. Divides by σ twice so that σ²
/// itself never underflows.
fn gaussian_exponent(m: f64, sigma: f64) -> f64 {
    if m == 0.0 {
        0.0
    } else {
        m / 2.0 / sigma / sigma
    }
}

/// log |C(α, i)| for real α ≥ 0 and its sign (the generalized binomial coefficient).
fn log_binomial(alpha: f64, i: u64) -> (f64, f64) {
    let mut log_abs = 0.0;
    let mut sign = 1.0;
    for k in 0..i {
        let factor = (alpha - k as f64) / (k as f64 + 1.0);
        if factor < 0.0 {
            sign = -sign;
        }
        log_abs += factor.abs().ln();
    }
    (log_abs, sign)
}

/// log A_α for integer α: Σ_i C(α, i) (1 − q)^{α−i} q^i e^{(i² − i)/(2σ²)}.
fn log_a_integer(q: f64, sigma: f64, alpha: u64) -> f64 {
    let (ln_q, ln_1q) = (q.ln(), (-q).ln_1p());
    (0..=alpha).fold(f64::NEG_INFINITY, |acc, i| {
        let (log_coef, _) = log_binomial(alpha as f64, i);
        let i_f = i as f64;
        let term = log_coef
            + i_f * ln_q
            + (alpha - i) as f64 * ln_1q
            + gaussian_exponent(i_f * i_f - i_f, sigma);
        log_add(acc, term)
    })
}

/// log A_α for fractional α: the two series of Mironov et al. 2019 (Section 3.3), split at
/// z₀ = σ² log(1/q − 1) + 1/2, summed until both terms fall below e^{−30} of the total.
/// NaN when a term is not a number (σ so small that ∞ − ∞ appears).
fn log_a_fractional(q: f64, sigma: f64, alpha: f64) -> f64 {
    let (ln_q, ln_1q) = (q.ln(), (-q).ln_1p());
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let (mut log_a0, mut log_a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let sqrt2_sigma = std::f64::consts::SQRT_2 * sigma;
    for i in 0u64.. {
        let (log_coef, sign) = log_binomial(alpha, i);
        let i_f = i as f64;
        let j = alpha - i_f;
        let log_t0 = log_coef + i_f * ln_q + j * ln_1q;
        let log_t1 = log_coef + j * ln_q + i_f * ln_1q;
        let log_e0 = -LN_2 + log_erfc((i_f - z0) / sqrt2_sigma);
        let log_e1 = -LN_2 + log_erfc((z0 - j) / sqrt2_sigma);
        let log_s0 = log_t0 + gaussian_exponent(i_f * i_f - i_f, sigma) + log_e0;
        let log_s1 = log_t1 + gaussian_exponent(j * j - j, sigma) + log_e1;
        if log_s0.is_nan() || log_s1.is_nan() {
            return f64::NAN;
        }
        if sign > 0.0 {
            log_a0 = log_add(log_a0, log_s0);
            log_a1 = log_add(log_a1, log_s1);
        } else {
            log_a0 = log_sub(log_a0, log_s0);
            log_a1 = log_sub(log_a1, log_s1);
        }
        if log_s0.max(log_s1) < -30.0 || i > 100_000 {
            break;
        }
    }
    log_add(log_a0, log_a1)
}

/// log A_α for fractional α, never below the true value by more than rounding: the series
/// of [`log_a_fractional`] when it lies where convexity puts log A_α, else the convexity
/// upper bound.
///
/// log A_α is convex in α with log A₀ = log A₁ = 0 (Hölder), so between the integers k and
/// k + 1 it lies below the chord through them and above the extensions of the chords
/// (k − 1, k) and (k + 1, k + 2). The integer values are sums of positive terms, reliable
/// at any σ; the series cancels terms of alternating sign and fails when σ is tiny (it
/// returned 0 for σ = 1e-160, where the true ε is beyond any f64).
fn log_a_fractional_checked(q: f64, sigma: f64, alpha: f64) -> f64 {
    let k = alpha.floor();
    let integer = |n: f64| {
        if n < 1.0 {
            0.0
        } else {
            log_a_integer(q, sigma, n as u64)
        }
    };
    let (below, at, above, next) = (
        integer(k - 1.0),
        integer(k),
        integer(k + 1.0),
        integer(k + 2.0),
    );
    let t = alpha - k;
    let upper = (1.0 - t) * at + t * above;
    if !upper.is_finite() {
        return f64::INFINITY;
    }
    let lower = (at + t * (at - below)).max(above - (1.0 - t) * (next - above));
    let series = log_a_fractional(q, sigma, alpha);
    let slack = 1e-9 * (upper.abs() + lower.abs()) + 1e-12;
    if series.is_finite() && series >= lower - slack && series <= upper + slack {
        series
    } else {
        upper
    }
}

/// RDP ε_α of one step of the sampled Gaussian mechanism (sampling rate `q`, noise
/// multiplier `sigma`) at order `alpha` > 1. Grows without bound as the noise vanishes:
/// +∞ once it is beyond an f64 (or `sigma` is not a positive number), never a smaller
/// number.
///
/// ```
/// use hefl::dp::rdp_step;
///
/// // Without sampling it is the Gaussian mechanism: α / (2σ²).
/// assert!((rdp_step(1.0, 2.0, 8.0) - 1.0).abs() < 1e-12);
/// assert_eq!(rdp_step(0.0, 2.0, 8.0), 0.0);
/// assert_eq!(rdp_step(0.01, 1e-160, 2.5), f64::INFINITY);
/// ```
pub fn rdp_step(q: f64, sigma: f64, alpha: f64) -> f64 {
    if q <= 0.0 {
        return 0.0;
    }
    if sigma.is_nan() || sigma <= 0.0 {
        return f64::INFINITY;
    }
    if q >= 1.0 {
        return alpha * gaussian_exponent(1.0, sigma);
    }
    let log_a = if alpha.fract() == 0.0 {
        log_a_integer(q, sigma, alpha as u64)
    } else {
        log_a_fractional_checked(q, sigma, alpha)
    };
    if log_a.is_nan() {
        return f64::INFINITY;
    }
    log_a / (alpha - 1.0)
}

/// (ε, δ) after `steps` DP-SGD steps: the best order's conversion (see the module docs).
/// Returns ε and the order that gave it; ε is +∞ (order NaN) when every order's bound is
/// beyond an f64, as it is when the noise vanishes.
///
/// ```
/// use hefl::dp::epsilon;
///
/// // Opacus's published test value: σ = 1.5, q = 0.04, 2250 steps, δ = 1e-5.
/// let (eps, _) = epsilon(0.04, 1.5, 2250, 1e-5);
/// assert!((eps - 7.32911117143).abs() < 1e-6, "{eps}");
/// assert_eq!(epsilon(0.01, 1e-160, 100, 1e-5).0, f64::INFINITY);
/// ```
pub fn epsilon(q: f64, sigma: f64, steps: u64, delta: f64) -> (f64, f64) {
    epsilon_at_orders(q, sigma, steps, delta, &default_orders())
}

/// [`epsilon`] over given orders.
pub fn epsilon_at_orders(q: f64, sigma: f64, steps: u64, delta: f64, orders: &[f64]) -> (f64, f64) {
    orders
        .iter()
        .map(|&alpha| {
            // No step releases nothing (and 0 · ∞ would be NaN).
            let rdp = match steps {
                0 => 0.0,
                _ => rdp_step(q, sigma, alpha) * steps as f64,
            };
            let eps =
                rdp + ((alpha - 1.0) / alpha).ln() - (delta.ln() + alpha.ln()) / (alpha - 1.0);
            (eps.max(0.0), alpha)
        })
        .filter(|(eps, _)| !eps.is_nan())
        .fold((f64::INFINITY, f64::NAN), |best, cur| {
            if cur.0 < best.0 { cur } else { best }
        })
}

/// (ε, δ) of several mechanisms composed: their RDP added at every order of `orders`, then
/// the conversion of the module docs at the best order. Returns ε and that order.
pub(super) fn composed_epsilon(
    mechanisms: &[super::SampledGaussian],
    delta: f64,
    orders: &[f64],
) -> (f64, f64) {
    orders
        .iter()
        .map(|&alpha| {
            let rdp: f64 = mechanisms
                .iter()
                .filter(|m| m.steps > 0)
                .map(|m| rdp_step(m.q, m.sigma, alpha) * m.steps as f64)
                .sum();
            let eps =
                rdp + ((alpha - 1.0) / alpha).ln() - (delta.ln() + alpha.ln()) / (alpha - 1.0);
            (eps.max(0.0), alpha)
        })
        .filter(|(eps, _)| !eps.is_nan())
        .fold((f64::INFINITY, f64::NAN), |best, cur| {
            if cur.0 < best.0 { cur } else { best }
        })
}

/// The smallest noise multiplier (to within 1% of the target ε) for which `steps` steps at
/// sampling rate `q` stay within `target_epsilon` at `delta`: a bisection, as Opacus's
/// `get_noise_multiplier` does. `None` if the target cannot be met (σ above 10⁴).
///
/// ```
/// use hefl::dp::{epsilon, noise_multiplier_for};
///
/// let sigma = noise_multiplier_for(8.0, 1e-5, 0.04, 2250).unwrap();
/// let (eps, _) = epsilon(0.04, sigma, 2250, 1e-5);
/// assert!(eps <= 8.0 && eps > 7.92, "{sigma} gives {eps}");
/// ```
pub fn noise_multiplier_for(target_epsilon: f64, delta: f64, q: f64, steps: u64) -> Option<f64> {
    smallest_noise_for(target_epsilon, |sigma| epsilon(q, sigma, steps, delta).0)
}

/// The bisection of [`noise_multiplier_for`] over any accountant's ε(σ), non-increasing in
/// σ: the σ it returns gives an ε within 1% below `target_epsilon`; `None` above σ = 10⁴.
pub(crate) fn smallest_noise_for(target_epsilon: f64, eps: impl Fn(f64) -> f64) -> Option<f64> {
    let (mut low, mut high) = (0.0f64, 10.0f64);
    let mut at_high = eps(high);
    while at_high > target_epsilon {
        high *= 2.0;
        if high > 1e4 {
            return None;
        }
        at_high = eps(high);
    }
    // Invariant: eps(high) = at_high <= target < eps(low).
    loop {
        if target_epsilon - at_high <= 0.01 * target_epsilon {
            return Some(high);
        }
        let mid = 0.5 * (low + high);
        let at_mid = eps(mid);
        if at_mid > target_epsilon {
            low = mid;
        } else {
            (high, at_high) = (mid, at_mid);
        }
    }
}
