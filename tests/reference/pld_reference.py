"""Reference epsilons for hefl's PLD accountant (tests/suite/dp.rs, `pld_*` tests).

For each case (q, sigma, steps, delta) of the Poisson-subsampled Gaussian mechanism
(add/remove adjacency, DP-SGD's), computes epsilon with:

- Google's dp-accounting `PLDAccountant` (privacy loss distribution, connect-the-dots,
  discretisation interval 1e-4, pessimistic): the value hefl's `pld` must match to 1%;
- Microsoft's prv-accountant `DPSGDAccountant` (the PRV accountant Opacus wraps as
  `PRVAccountant`, eps_error 0.01, delta_error delta / 1000): lower bound, estimate and
  upper bound. hefl's `pld` must not fall below the lower bound (it never under-reports);
- dp-accounting's `RdpAccountant`, for scale (its own orders, not Opacus's).

Writes tests/reference/pld_cases.json. In a throwaway virtualenv:

    python3 -m venv /tmp/dpref && /tmp/dpref/bin/pip install dp-accounting prv-accountant
    /tmp/dpref/bin/python tests/reference/pld_reference.py

Last run: dp-accounting 0.6.0, prv-accountant 0.2.0, numpy 2.4.6, scipy 1.17.1.
"""
import json
import os
import time
from importlib.metadata import version

import dp_accounting
from dp_accounting.pld import pld_privacy_accountant
from prv_accountant.dpsgd import DPSGDAccountant

# (q, sigma, steps, delta): small and large sampling rates, sigma 0.6 to 4, 100 to 10,000
# steps. The first is the (Opacus's MNIST example: batch 64 of 60,000, one epoch).
CASES = [
    (64 / 60000, 1.0, 938, 1e-5),
    (0.0032, 1.1, 3130, 1e-5),
    (0.04, 1.5, 2250, 1e-5),
    (0.01, 1.0, 10000, 1e-5),
    (0.001, 0.6, 10000, 1e-5),
    (0.003, 3.0, 10000, 1e-5),
    (0.05, 0.8, 2000, 1e-5),
    (0.0512, 1.2, 390, 1e-5),
    (0.1, 4.0, 100, 1e-5),
    (0.2, 2.0, 500, 1e-6),
    (1.0, 4.0, 100, 1e-5),
]


def event(q, sigma, steps):
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
    )


def main():
    rows = []
    for q, sigma, steps, delta in CASES:
        start = time.time()
        pld = pld_privacy_accountant.PLDAccountant()
        pld.compose(event(q, sigma, steps))
        pld_eps = pld.get_epsilon(delta)
        pld_seconds = time.time() - start
        rdp = dp_accounting.rdp.RdpAccountant()
        rdp.compose(event(q, sigma, steps))
        prv = DPSGDAccountant(
            noise_multiplier=sigma,
            sampling_probability=q,
            eps_error=0.01,
            delta_error=delta / 1000,
            max_steps=steps,
        )
        lower, estimate, upper = prv.compute_epsilon(delta=delta, num_steps=steps)
        row = {
            "q": q,
            "sigma": sigma,
            "steps": steps,
            "delta": delta,
            "dp_accounting_pld": pld_eps,
            "dp_accounting_pld_seconds": round(pld_seconds, 3),
            "prv_lower": lower,
            "prv_estimate": estimate,
            "prv_upper": upper,
            "dp_accounting_rdp": rdp.get_epsilon(delta),
        }
        print(row, flush=True)
        rows.append(row)
    out = {
        "generated_by": "tests/reference/pld_reference.py",
        "versions": {p: version(p) for p in ["dp-accounting", "prv-accountant", "numpy", "scipy"]},
        "cases": rows,
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pld_cases.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
