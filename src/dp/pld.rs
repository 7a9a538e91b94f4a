//! Privacy loss distribution (PLD) accounting of the Poisson-subsampled Gaussian mechanism
//! (DP-SGD), tight where the RDP bound of [`super::accountant`] is loose.
//!
//! Neighbouring datasets differ by adding or removing one example (the relation Opacus and
//! Google's dp-accounting use). In units of the noise, one step releases x ∼ N(0, 1) without
//! the example and x ∼ N(μ, 1), μ = 1/σ, with it; the example is in the batch with probability
//! q. Two pairs of distributions dominate the mechanism:
//!
//! - *remove*: P = (1 − q)·N(0, 1) + q·N(μ, 1) against Q = N(0, 1), privacy loss
//!   ℓ(x) = ln(1 − q + q·e^{μx − μ²/2}), increasing in x;
//! - *add*: P = N(0, 1) against the same mixture as Q, loss −ℓ(x).
//!
//! For each pair the loss distribution of one step is discretised on the grid ε_k = k·h
//! (h = [`GRID_INTERVAL`]) with the *connect-the-dots* construction of Doroshenko, Ghazi,
//! Kamath, Kumar and Manurangsi ("Connect the Dots: Tighter Discrete Approximations of Privacy
//! Loss Distributions", PETS 2022), which dp-accounting uses by default: the probability of
//! every interval [ε_k, ε_{k+1}] is split between its two ends so that both its P-mass and its
//! Q-mass are kept. The discrete pair is then a refinement of the true one (merging the two
//! ends back is post-processing), so its hockey-stick divergence is at least the true one at
//! every ε: the discretisation is pessimistic, never reporting less than the true ε, without
//! the upward drift of rounding every loss up. Mass beyond the truncation of the noise
//! (|x| > [`TRUNCATION`] standard deviations) goes to the end of the grid that over-reports
//! (the lowest grid point, or an infinite loss).
//!
//! T steps compose by convolving the discrete PLD with itself T times: one real FFT, every
//! frequency raised to the power T, one inverse FFT (realfft / rustfft), over a window of
//! losses that Chernoff bounds show to hold all but [`WINDOW_TAIL`] of the composed mass; that
//! tail is added to the infinite-loss mass. ε for a δ is the smallest ε with
//! δ(ε) = P[L = ∞] + E[(1 − e^{ε − L})₊] ≤ δ, the larger of the two pairs' values.
//!
//! Checked against dp-accounting's `PLDAccountant` and the PRV accountant that Opacus uses,
//! on the cases of `tests/reference/pld_reference.py`.

use super::SampledGaussian;
use super::accountant::{log_add, log_sub};
use realfft::RealFftPlanner;
use realfft::num_complex::Complex;
use realfft::num_traits::Pow;

/// The discretisation interval of privacy losses, dp-accounting's default: 10⁻⁴ nats.
/// Coarsened by powers of two only when the composed window would exceed [`MAX_GRID`]
/// points (losses in the hundreds, far beyond any ε a user asks for).
pub const GRID_INTERVAL: f64 = 1e-4;

/// Noise truncation, in standard deviations: the single-step probability beyond it on either
/// side is Φ̄(9.3) ≈ 7·10⁻²¹ (dp-accounting discards e^{−50} ≈ 2·10⁻²²).
pub const TRUNCATION: f64 = 9.3;

/// Composed probability left outside the FFT window on each side (and counted as an infinite
/// loss): dp-accounting's tail truncation.
pub const WINDOW_TAIL: f64 = 1e-15;

/// The coarsest grid interval tried (in nats); beyond it ε is reported as +∞.
pub const MAX_INTERVAL: f64 = 1.0;

/// The smallest noise multiplier [`pld_epsilon`] accounts for; below it ε is reported as +∞.
pub const MIN_SIGMA: f64 = 1e-6;

/// Most grid points of one composed distribution (2²¹: 16 MiB of f64 per buffer).
pub const MAX_GRID: usize = 1 << 21;

/// Standard normal upper tail Φ̄(x) = P[Z > x], accurate far into the tail.
fn upper_tail(x: f64) -> f64 {
    0.5 * libm::erfc(x / std::f64::consts::SQRT_2)
}

/// P[a < Z < b] for a standard normal Z and a ≤ b (±∞ allowed), computed from the tail that
/// keeps its precision.
fn normal_mass(a: f64, b: f64) -> f64 {
    let mass = if a >= 0.0 {
        upper_tail(a) - upper_tail(b)
    } else if b <= 0.0 {
        upper_tail(-b) - upper_tail(-a)
    } else {
        1.0 - upper_tail(-a) - upper_tail(b)
    };
    mass.max(0.0)
}

/// One dominating pair of the subsampled Gaussian (see the module docs).
#[derive(Clone, Copy, Debug)]
struct Pair {
    /// μ = 1/σ.
    mu: f64,
    /// ln q and ln(1 − q).
    ln_q: f64,
    ln_1q: f64,
    /// Weight of N(μ, 1) in P (remove: q) and in Q (add: q); the rest is N(0, 1).
    p_shifted: f64,
    q_shifted: f64,
    /// Remove: the loss is ℓ(x), increasing. Add: −ℓ(x), decreasing.
    remove: bool,
}

impl Pair {
    fn new(q: f64, sigma: f64, remove: bool) -> Self {
        Self {
            mu: 1.0 / sigma,
            ln_q: q.ln(),
            ln_1q: (-q).ln_1p(),
            p_shifted: if remove { q } else { 0.0 },
            q_shifted: if remove { 0.0 } else { q },
            remove,
        }
    }

    /// ℓ(x) = ln(1 − q + q·e^{μx − μ²/2}).
    fn ell(&self, x: f64) -> f64 {
        log_add(
            self.ln_1q,
            self.ln_q + self.mu * x - 0.5 * self.mu * self.mu,
        )
    }

    /// The privacy loss at x.
    fn loss(&self, x: f64) -> f64 {
        if self.remove {
            self.ell(x)
        } else {
            -self.ell(x)
        }
    }

    /// The x at which ℓ(x) = e, −∞ when e is at or below ℓ's infimum ln(1 − q).
    fn ell_inverse(&self, e: f64) -> f64 {
        if e <= self.ln_1q {
            return f64::NEG_INFINITY;
        }
        (log_sub(e, self.ln_1q) - self.ln_q + 0.5 * self.mu * self.mu) / self.mu
    }

    /// The x at which the loss is `eps` (±∞ outside the loss's range).
    fn x_at(&self, eps: f64) -> f64 {
        if self.remove {
            self.ell_inverse(eps)
        } else {
            self.ell_inverse(-eps)
        }
    }

    /// Mass of a mixture (1 − w)·N(0, 1) + w·N(μ, 1) on the x-interval between a and b.
    fn mixture_mass(&self, shifted: f64, a: f64, b: f64) -> f64 {
        let (a, b) = if a <= b { (a, b) } else { (b, a) };
        let plain = if shifted < 1.0 {
            (1.0 - shifted) * normal_mass(a, b)
        } else {
            0.0
        };
        let moved = if shifted > 0.0 {
            shifted * normal_mass(a - self.mu, b - self.mu)
        } else {
            0.0
        };
        plain + moved
    }

    /// The P- and Q-mass of the x-interval between a and b.
    fn masses(&self, a: f64, b: f64) -> (f64, f64) {
        (
            self.mixture_mass(self.p_shifted, a, b),
            self.mixture_mass(self.q_shifted, a, b),
        )
    }

    /// The losses of the noise truncated to [−[`TRUNCATION`], μ + [`TRUNCATION`]].
    fn loss_range(&self) -> (f64, f64) {
        let (l_a, l_b) = (self.loss(-TRUNCATION), self.loss(self.mu + TRUNCATION));
        (l_a.min(l_b), l_a.max(l_b))
    }

    /// The connect-the-dots discretisation of one step on the grid of interval `h`.
    fn discretise(&self, h: f64) -> Discrete {
        let (l_lo, l_hi) = self.loss_range();
        let k_lo = (l_lo / h).floor() as i64;
        let k_hi = ((l_hi / h).ceil() as i64).max(k_lo + 1);
        let width = (k_hi - k_lo + 1) as usize;
        let mut mass = vec![0.0; width];
        // Below the grid: the P-mass of losses under ε_{k_lo}, moved up to ε_{k_lo}.
        let below = self.x_at(k_lo as f64 * h);
        let far_low = if self.remove {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
        mass[0] += self.masses(far_low, below).0;
        let mut x_left = below;
        for i in 0..width - 1 {
            let eps_left = (k_lo + i as i64) as f64 * h;
            let x_right = self.x_at(eps_left + h);
            let (p, r) = self.masses(x_left, x_right);
            // Split p between ε_left and ε_left + h keeping the Q-mass r:
            // a + b = p, a·e^{−ε_left} + b·e^{−ε_left − h} = r.
            let upper = ((p - (r.ln() + eps_left).exp()) / -(-h).exp_m1()).clamp(0.0, p);
            mass[i] += p - upper;
            mass[i + 1] += upper;
            x_left = x_right;
        }
        // Above the grid: an infinite loss.
        let far_high = if self.remove {
            f64::INFINITY
        } else {
            f64::NEG_INFINITY
        };
        let infinite = self.masses(x_left, far_high).0;
        Discrete {
            h,
            k_lo,
            mass,
            infinite,
        }
    }
}

/// A discrete PLD: `mass[i]` at loss (k_lo + i)·h, plus `infinite` at +∞.
#[derive(Clone, Debug)]
struct Discrete {
    h: f64,
    k_lo: i64,
    mass: Vec<f64>,
    infinite: f64,
}

impl Discrete {
    /// ln E[e^{t·L}] over the finite part, from the (ln mass, loss) of its support points.
    fn log_mgf(support: &[(f64, f64)], t: f64) -> f64 {
        let top = support
            .iter()
            .map(|(ln_m, loss)| ln_m + t * loss)
            .fold(f64::NEG_INFINITY, f64::max);
        if top == f64::NEG_INFINITY {
            return top;
        }
        let sum: f64 = support
            .iter()
            .map(|(ln_m, loss)| (ln_m + t * loss - top).exp())
            .sum();
        top + sum.ln()
    }

    /// The support of the finite part: (ln mass, loss) of every point with mass.
    fn support(&self) -> Vec<(f64, f64)> {
        self.mass
            .iter()
            .enumerate()
            .filter(|(_, m)| **m > 0.0)
            .map(|(i, m)| (m.ln(), (self.k_lo + i as i64) as f64 * self.h))
            .collect()
    }

    /// The largest grid index of the finite part.
    fn k_hi(&self) -> i64 {
        self.k_lo + self.mass.len() as i64 - 1
    }
}

/// Discrete PLDs on one grid, each composed with itself a number of times, then with each
/// other: the loss of a run of several mechanisms (DP-PCA's one Gaussian release, then
/// DP-SGD's steps).
struct Composition<'a> {
    h: f64,
    parts: &'a [(Discrete, u64)],
}

impl Composition<'_> {
    /// Grid indices [lo, hi] that hold all but [`WINDOW_TAIL`] of the composition on each
    /// side (Chernoff: P[S ≥ u] ≤ e^{Σ T_i·Λ_i(t) − t·u} for every t > 0); `None` when they
    /// are beyond this grid's indices.
    fn window(&self) -> Option<(i64, i64)> {
        let ln_tail = WINDOW_TAIL.ln();
        let supports: Vec<(Vec<(f64, f64)>, f64)> = self
            .parts
            .iter()
            .map(|(d, steps)| (d.support(), *steps as f64))
            .collect();
        let log_mgf = |t: f64| {
            supports
                .iter()
                .map(|(support, steps)| steps * Discrete::log_mgf(support, t))
                .sum::<f64>()
        };
        let (mut upper, mut lower) = (f64::INFINITY, f64::NEG_INFINITY);
        // t from 10⁻⁴ to 10⁹ (in 1/nats), five per decade.
        for j in 0..=65 {
            let t = 10f64.powf(-4.0 + f64::from(j) / 5.0);
            upper = upper.min((log_mgf(t) - ln_tail) / t);
            lower = lower.max(-(log_mgf(-t) - ln_tail) / t);
        }
        let (hi, lo) = ((upper / self.h).ceil(), (lower / self.h).floor());
        // A window beyond i64 grid indices: this grid cannot hold the composition.
        let limit = i64::MAX as f64 / 2.0;
        if !(hi.abs() < limit && lo.abs() < limit) {
            return None;
        }
        let (mut max_k, mut min_k) = (0i64, 0i64);
        for (d, steps) in self.parts {
            let steps = i64::try_from(*steps).ok()?;
            max_k = max_k.checked_add(d.k_hi().checked_mul(steps)?)?;
            min_k = min_k.checked_add(d.k_lo.checked_mul(steps)?)?;
        }
        let hi = (hi as i64).min(max_k);
        let lo = (lo as i64).max(min_k);
        Some((lo, hi.max(lo)))
    }

    /// ε for `delta` (+∞ when the infinite-loss mass alone exceeds δ); `None` when the
    /// window needs more than [`MAX_GRID`] points.
    fn epsilon(&self, delta: f64) -> Option<f64> {
        let finite: f64 = self
            .parts
            .iter()
            .map(|(d, steps)| (1.0 - d.infinite).powf(*steps as f64))
            .product();
        let infinite = 1.0 - finite + WINDOW_TAIL;
        if infinite > delta {
            return Some(f64::INFINITY);
        }
        let (lo, hi) = self.window()?;
        let span = hi
            .checked_sub(lo)
            .and_then(|d| d.checked_add(1))
            .and_then(|d| usize::try_from(d).ok())?;
        if span > MAX_GRID {
            return None;
        }
        let longest = self
            .parts
            .iter()
            .map(|(d, _)| d.mass.len())
            .max()
            .unwrap_or(0);
        let n = span.max(longest).max(2).next_power_of_two();
        if n > MAX_GRID {
            return None;
        }
        let composed = convolve_powers(self.parts, n);
        // Position j holds the sums S with S − Σ T_i·k_lo_i ≡ j (mod n); inside the window
        // that is S = lo + ((j + Σ T_i·k_lo_i − lo) mod n).
        let n_i = n as i64;
        let base: i128 = self
            .parts
            .iter()
            .map(|(d, steps)| d.k_lo as i128 * i128::from(*steps))
            .sum();
        let shift = (base - i128::from(lo)).rem_euclid(n as i128) as i64;
        let mut by_loss = vec![0.0; n];
        for (j, m) in composed.iter().enumerate() {
            by_loss[(j as i64 + shift).rem_euclid(n_i) as usize] = m.max(0.0);
        }
        Some(epsilon_of(&by_loss, lo, self.h, infinite, delta))
    }
}

/// The convolution of every part's mass with itself `steps` times, and of the results with
/// each other, modulo `n`: real FFTs, powers, their product, one inverse FFT.
fn convolve_powers(parts: &[(Discrete, u64)], n: usize) -> Vec<f64> {
    let mut planner = RealFftPlanner::<f64>::new();
    let forward = planner.plan_fft_forward(n);
    let inverse = planner.plan_fft_inverse(n);
    let mut spectrum: Option<Vec<Complex<f64>>> = None;
    for (d, steps) in parts {
        let mut input = vec![0.0; n];
        for (i, m) in d.mass.iter().enumerate() {
            input[i % n] += m;
        }
        let mut part = forward.make_output_vec();
        // Lengths come from the planner itself, so processing cannot fail.
        if forward.process(&mut input, &mut part).is_err() {
            return vec![0.0; n];
        }
        for z in &mut part {
            *z = Pow::pow(&*z, *steps);
        }
        spectrum = Some(match spectrum {
            None => part,
            Some(mut product) => {
                product.iter_mut().zip(&part).for_each(|(a, b)| *a *= b);
                product
            }
        });
    }
    let Some(mut spectrum) = spectrum else {
        return vec![0.0; n];
    };
    // The first and last bins of a real signal's spectrum are real.
    let last = spectrum.len() - 1;
    spectrum[0] = Complex::new(spectrum[0].re, 0.0);
    spectrum[last] = Complex::new(spectrum[last].re, 0.0);
    let mut output = inverse.make_output_vec();
    if inverse.process(&mut spectrum, &mut output).is_err() {
        return vec![0.0; n];
    }
    let scale = 1.0 / n as f64;
    output.iter_mut().for_each(|v| *v *= scale);
    output
}

/// The smallest ε ≥ 0 with δ(ε) = infinite + Σ_i m_i·(1 − e^{ε − ε_i})₊ ≤ `delta`, for masses
/// `by_loss[j]` at losses ε_j = (lo + j)·h. Between grid points δ is linear in e^ε, so the
/// crossing is solved exactly.
fn epsilon_of(by_loss: &[f64], lo: i64, h: f64, infinite: f64, delta: f64) -> f64 {
    // Walking down from the top: above = infinite + Σ_{i>j} m_i,
    // weighted = Σ_{i>j} m_i·e^{ε_j − ε_i}, so that δ(ε_j) = above − weighted.
    let (mut above, mut weighted) = (infinite, 0.0);
    let decay = (-h).exp();
    for j in (0..by_loss.len()).rev() {
        let eps_j = (lo as f64 + j as f64) * h;
        let delta_j = above - weighted;
        if delta_j > delta {
            // δ(ε) = above − weighted·e^{ε − ε_j} on [ε_j, ε_{j+1}].
            let eps = eps_j + ((above - delta) / weighted).ln();
            return eps.max(0.0);
        }
        if eps_j <= 0.0 {
            return 0.0;
        }
        above += by_loss[j];
        weighted = (weighted + by_loss[j]) * decay;
    }
    ((lo as f64) * h).max(0.0)
}

/// ε of `steps` steps of the Poisson-subsampled Gaussian mechanism (sampling rate `q`, noise
/// multiplier `sigma`) at `delta`, by PLD accounting (see the module docs): never below the
/// true ε, and within about 10⁻³ relative of dp-accounting's `PLDAccountant`. +∞ when no
/// finite ε has that δ (as when σ vanishes, and below [`MIN_SIGMA`]); 0 without steps or
/// sampling.
///
/// ```
/// use hefl::dp::pld_epsilon;
///
/// // Opacus's MNIST example: q = 64/60,000, σ = 1, one epoch; RDP says 0.68.
/// let eps = pld_epsilon(64.0 / 60_000.0, 1.0, 938, 1e-5);
/// assert!((eps - 0.1552).abs() < 0.0015, "{eps}");
/// assert_eq!(pld_epsilon(0.01, 1.0, 0, 1e-5), 0.0);
/// assert_eq!(pld_epsilon(0.01, 0.0, 10, 1e-5), f64::INFINITY);
/// ```
pub fn pld_epsilon(q: f64, sigma: f64, steps: u64, delta: f64) -> f64 {
    pld_epsilon_composed(&[SampledGaussian { q, sigma, steps }], delta)
}

/// ε at `delta` of a run of several sampled Gaussian mechanisms one after the other (each
/// repeated its number of steps), by PLD accounting: their privacy loss distributions are
/// composed on one grid (one FFT each, the spectra raised to their step counts and
/// multiplied), as dp-accounting composes different mechanisms. With one mechanism this is
/// [`pld_epsilon`]; DP-PCA's Gaussian release composed with DP-SGD's steps is two.
///
/// ```
/// use hefl::dp::{SampledGaussian, pld_epsilon, pld_epsilon_composed};
///
/// let sgd = SampledGaussian { q: 0.01, sigma: 1.0, steps: 1_000 };
/// let pca = SampledGaussian { q: 1.0, sigma: 8.0, steps: 1 };
/// let alone = pld_epsilon(0.01, 1.0, 1_000, 1e-5);
/// let both = pld_epsilon_composed(&[pca, sgd], 1e-5);
/// assert!(both > alone && both < alone + pld_epsilon(1.0, 8.0, 1, 1e-5), "{alone} {both}");
/// ```
pub fn pld_epsilon_composed(mechanisms: &[SampledGaussian], delta: f64) -> f64 {
    let active: Vec<SampledGaussian> = mechanisms
        .iter()
        .filter(|m| m.steps > 0 && m.q > 0.0)
        .map(|m| SampledGaussian {
            q: m.q.min(1.0),
            ..*m
        })
        .collect();
    if active.is_empty() {
        return 0.0;
    }
    // Below σ = 10⁻⁶ the losses (μ²/2 > 5·10¹¹) are beyond the grid: report no finite ε,
    // which over-reports only when q·steps is below δ.
    if active
        .iter()
        .any(|m| m.sigma.is_nan() || m.sigma < MIN_SIGMA)
        || delta.is_nan()
        || delta <= 0.0
    {
        return f64::INFINITY;
    }
    [true, false]
        .into_iter()
        .map(|remove| {
            let pairs: Vec<(Pair, u64)> = active
                .iter()
                .map(|m| (Pair::new(m.q, m.sigma, remove), m.steps))
                .collect();
            pairs_epsilon(&pairs, delta)
        })
        .fold(0.0, f64::max)
}

/// One direction's ε for the composition of `pairs` (each its number of times), on the
/// finest grid (from [`GRID_INTERVAL`], doubling) on which every single step fits
/// [`MAX_GRID`] / 4 points and the composed window fits [`MAX_GRID`].
fn pairs_epsilon(pairs: &[(Pair, u64)], delta: f64) -> f64 {
    let mut h = GRID_INTERVAL;
    for (pair, _) in pairs {
        let (l_lo, l_hi) = pair.loss_range();
        while (l_hi - l_lo) / h > (MAX_GRID / 4) as f64 {
            h *= 2.0;
        }
    }
    while h <= MAX_INTERVAL {
        let parts: Vec<(Discrete, u64)> = pairs
            .iter()
            .map(|(pair, steps)| (pair.discretise(h), *steps))
            .collect();
        if let Some(eps) = (Composition { h, parts: &parts }).epsilon(delta) {
            return eps;
        }
        h *= 2.0;
    }
    f64::INFINITY
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The discretisation keeps the mass and, for a valid pair, E_P[e^{−L}] ≤ 1.
    #[test]
    fn discretised_step_is_a_distribution() {
        for (q, sigma) in [(0.001, 1.0), (0.05, 0.8), (1.0, 2.0)] {
            for remove in [true, false] {
                let d = Pair::new(q, sigma, remove).discretise(GRID_INTERVAL);
                let total: f64 = d.mass.iter().sum::<f64>() + d.infinite;
                assert!((total - 1.0).abs() < 1e-12, "{q} {sigma} {remove}: {total}");
                let q_mass: f64 = d
                    .mass
                    .iter()
                    .enumerate()
                    .map(|(i, m)| m * (-((d.k_lo + i as i64) as f64 * d.h)).exp())
                    .sum();
                assert!(q_mass <= 1.0 + 1e-12, "{q_mass}");
                assert!(q_mass > 1.0 - 1e-9, "{q_mass}");
            }
        }
    }

    /// Without sampling, T Gaussian steps are one Gaussian mechanism of noise σ/√T, whose
    /// exact δ(ε) = Φ(−ε/μ + μ/2) − e^ε Φ(−ε/μ − μ/2) (Balle and Wang 2018) gives ε.
    #[test]
    fn composed_gaussian_matches_the_closed_form() {
        let exact_delta = |mu: f64, eps: f64| {
            upper_tail(eps / mu - mu / 2.0) - eps.exp() * upper_tail(eps / mu + mu / 2.0)
        };
        for (sigma, steps) in [(4.0, 16u64), (10.0, 100), (2.0, 1)] {
            let eps = pld_epsilon(1.0, sigma, steps, 1e-5);
            let mu = (steps as f64).sqrt() / sigma;
            // Pessimistic: the true δ at our ε is at most 1e-5, and barely below it.
            let d = exact_delta(mu, eps);
            assert!(
                d <= 1e-5 * (1.0 + 1e-6),
                "sigma {sigma}: {eps} has delta {d}"
            );
            let d_lower = exact_delta(mu, eps * 0.995);
            assert!(d_lower > 1e-5, "sigma {sigma}: {eps} is loose ({d_lower})");
        }
    }
}
