"""Binding overhead and a comparison with TenSEAL CKKS, for one 101,770-value update.

    python hefl-py/bench/bench_envelope.py [--values N] [--repeats R] [--no-rust]

1. hefl from Python (``hefl.Envelope.seal``, ``hefl.KeylessSum`` of 3 and 10 updates,
   ``Envelope.open``) against the same calls in Rust (``cargo run -p hefl-py --example
   bench_envelope``, built with the same profile as the installed extension: pass
   ``--profile release`` after ``maturin develop --release``). Medians; the ratio is
   Python / Rust.
2. When ``tenseal`` is importable: the same update under CKKS (N = 8192, coefficient moduli
   [60, 40, 40, 60], scale 2^40; 4,096 slots per ciphertext, so 25 ciphertexts) in the same
   process: encrypt, sum of 3 and 10, decrypt, bytes.

Both run on one thread (``RAYON_NUM_THREADS=1`` unless set) so that the numbers compare.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

os.environ.setdefault("RAYON_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import hefl  # noqa: E402

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]


def timed(repeats: int, f: Callable[[], T]) -> tuple[float, T]:
    """Median milliseconds of ``repeats`` calls, and the last result."""
    samples = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = f()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3, result  # type: ignore[return-value]


def hefl_python(values: int, repeats: int) -> dict[str, float]:
    path = Path(tempfile.mkdtemp()) / "hefl.key"
    key_id = hefl.generate_key(path)
    envelope = hefl.Envelope(hefl.SecretKey.load(path), values, max_parties=10)
    update = ((np.arange(values) % 200).astype(np.float32) - 100) * np.float32(1e-3)
    seal, sealed = timed(repeats, lambda: envelope.seal(update, party=0))
    # Each party's own encryption: a sum refuses the same one twice.
    uploads = [envelope.seal(update, party=party) for party in range(10)]

    def sum_of(parties: int) -> bytes:
        total = hefl.KeylessSum(key_id, values, max_parties=10)
        for party, upload in enumerate(uploads[:parties]):
            total.add(upload, party)
        return total.to_bytes()

    sum3, aggregate = timed(repeats, lambda: sum_of(3))
    sum10, _ = timed(repeats, lambda: sum_of(10))
    open_, mean = timed(repeats, lambda: envelope.open(aggregate, [0, 1, 2]))
    assert np.allclose(mean, update, atol=2.0**-15)
    return {"seal_ms": seal, "sum3_ms": sum3, "sum10_ms": sum10, "open_ms": open_,
            "bytes": len(sealed)}


def hefl_rust(values: int, repeats: int, profile: str) -> dict[str, float]:
    out = subprocess.run(
        ["cargo", "run", "--quiet", "--locked", "--profile", profile, "-p", "hefl-py",
         "--example", "bench_envelope", "--", str(values), str(repeats)],
        cwd=REPO, check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)


def tenseal_ckks(values: int, repeats: int) -> dict[str, float] | None:
    try:
        import tenseal as ts  # type: ignore[import-not-found]  # noqa: PLC0415
    except ImportError:
        return None
    context = ts.context(
        ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40, 60], n_threads=1
    )
    context.global_scale = 2**40
    slots = 8192 // 2
    update = ((np.arange(values) % 200).astype(np.float64) - 100) * 1e-3
    chunks = [update[i : i + slots] for i in range(0, values, slots)]
    encrypt, cts = timed(repeats, lambda: [ts.ckks_vector(context, c) for c in chunks])
    size = sum(len(c.serialize()) for c in cts)

    def sum_of(parties: int) -> list:
        total = [c + c for c in cts]  # new ciphertexts: the received ones stay as they are
        for _ in range(parties - 2):
            for t, c in zip(total, cts):
                t += c
        return total

    sum3, summed = timed(repeats, lambda: sum_of(3))
    sum10, _ = timed(repeats, lambda: sum_of(10))
    decrypt, plain = timed(repeats, lambda: np.concatenate([c.decrypt() for c in summed]))
    assert np.allclose(plain / 3, update, atol=1e-4)
    return {"seal_ms": encrypt, "sum3_ms": sum3, "sum10_ms": sum10, "open_ms": decrypt,
            "bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=101_770)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--profile", default="dev", help="cargo profile of the Rust side")
    parser.add_argument("--no-rust", action="store_true")
    args = parser.parse_args()
    print(f"{args.values} values, median of {args.repeats}, "
          f"RAYON_NUM_THREADS={os.environ['RAYON_NUM_THREADS']}")
    python = hefl_python(args.values, args.repeats)
    rows = [("seal (encode + encrypt)", "seal_ms"), ("sum of 3 (validate + add)", "sum3_ms"),
            ("sum of 10", "sum10_ms"), ("open (decrypt + decode)", "open_ms")]
    if not args.no_rust:
        rust = hefl_rust(args.values, args.repeats, args.profile)
        print("\n| operation | Rust (ms) | Python (ms) | Python / Rust |\n|---|---:|---:|---:|")
        for label, field in rows:
            print(f"| {label} | {rust[field]:.2f} | {python[field]:.2f} | "
                  f"{python[field] / rust[field]:.3f} |")
    ckks = tenseal_ckks(args.values, args.repeats)
    if ckks is None:
        print("\nTenSEAL is not installed: no CKKS comparison")
        return
    print("\n| operation | hefl (ms) | TenSEAL CKKS (ms) | CKKS / hefl |\n|---|---:|---:|---:|")
    for label, field in rows:
        print(f"| {label} | {python[field]:.2f} | {ckks[field]:.2f} | "
              f"{ckks[field] / python[field]:.1f}x |")
    f32 = 4 * args.values
    print(f"| bytes of one update | {python['bytes']:,} ({python['bytes'] / f32:.2f}x f32) | "
          f"{ckks['bytes']:,} ({ckks['bytes'] / f32:.2f}x f32) | "
          f"{ckks['bytes'] / python['bytes']:.1f}x |")


if __name__ == "__main__":
    main()
