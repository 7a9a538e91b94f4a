"""Independent reference for hefl's RDP accountant (tests/dp.rs).

Computes the RDP of one step of the sampled Gaussian mechanism straight from its
definition (Mironov, Talwar, Zhang 2019): eps(alpha) = log(A) / (alpha - 1) with
A = E_{z ~ N(0, sigma^2)} [((1 - q) + q * exp((2z - 1) / (2 sigma^2)))^alpha],
by numerical integration in 50-digit arithmetic. Needs only mpmath:

    python3 tests/reference/rdp_mpmath.py
"""
import mpmath

mpmath.mp.dps = 50

CASES = [
    (0.01, 1.1, 2.0),
    (0.01, 1.1, 2.5),
    (0.04, 1.5, 1.7),
    (0.04, 1.5, 8.0),
    (0.04, 1.5, 10.3),
    (0.1, 0.8, 3.3),
    (0.003, 2.0, 32.0),
    (0.5, 4.0, 5.5),
]


def rdp(q, sigma, alpha):
    q, sigma, alpha = mpmath.mpf(q), mpmath.mpf(sigma), mpmath.mpf(alpha)

    def integrand(z):
        ratio = (1 - q) + q * mpmath.exp((2 * z - 1) / (2 * sigma**2))
        return mpmath.npdf(z, 0, sigma) * ratio**alpha

    a = mpmath.quad(integrand, [-mpmath.inf, 0, 1, mpmath.inf])
    return mpmath.log(a) / (alpha - 1)


for q, sigma, alpha in CASES:
    print(f"({q}, {sigma}, {alpha}, {mpmath.nstr(rdp(q, sigma, alpha), 15)}),")
