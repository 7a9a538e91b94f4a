"""Time Flower's SecAgg+ on one vector, for `hefl bench-report`'s robust section.

What is timed is Flower's own code, stage by stage as Flower's client mod
(`flwr/client/mod/secure_aggregation/secaggplus_mod.py`: `_setup`, `_share_keys`,
`_collect_masked_vectors`, `_unmask`) and server workflow
(`flwr/server/workflow/secure_aggregation/secaggplus_workflow.py`: `unmask_stage`) run it,
calling the functions they call (`flwr.common.secure_aggregation` and Flower's asymmetric
primitives), without Flower's messaging, gRPC or protobuf framing:

- client, "keys and shares": two SECP384R1 key pairs (PEM), Shamir shares of the mask seed
  and of the PEM private key (PyCryptodome, GF(2^128)), one ECDH + HKDF + Fernet encryption
  per neighbour, one Fernet decryption per neighbour's share message, the unmask answer;
- client, "mask": the private mask and one ECDH + mask per neighbour (numpy's MT19937,
  `pseudo_rand_gen`), added into the quantized vector mod 2^32;
- client, "encode" (reported apart, as hefl's encoding is): Flower's weighting and
  stochastic quantization;
- server, "unmask": every secret rebuilt from its shares (`combine_shares`), the private
  masks of the alive nodes and the pair masks of the dropped ones regenerated and removed,
  mod 2^32 (dequantization, decoding, is left out as hefl's decryption is).

Each row gives P nodes, k neighbours and threshold T; Flower's `num_shares` is k + 1 (its
neighbourhood counts the node itself). A client's received share messages carry random
shares of the right length (its work does not depend on their values); the server's
shares are real. Bytes are the payloads Flower sends (PEM keys, Fernet tokens, the
masked arrays as `ndarray_to_bytes`, node ids as 8 bytes), without framing.

Prints one JSON object per row on stdout. Exits with status 3 if Flower cannot be
imported. `--self-check` runs a whole small round (every node's client stages, then the
server's) and checks that the unmasked sum equals the sum of the quantized vectors.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

try:
    import numpy as np
    import flwr
    from flwr.common import ndarray_to_bytes
    from flwr.common.secure_aggregation.crypto.shamir import (
        combine_shares,
        create_shares,
    )
    from flwr.common.secure_aggregation.crypto.symmetric_encryption import (
        decrypt,
        encrypt,
        generate_shared_key,
    )
    from flwr.common.secure_aggregation.ndarrays_arithmetic import (
        factor_combine,
        parameters_addition,
        parameters_mod,
        parameters_multiply,
        parameters_subtraction,
    )
    from flwr.common.secure_aggregation.quantization import quantize
    from flwr.common.secure_aggregation.secaggplus_utils import (
        pseudo_rand_gen,
        share_keys_plaintext_concat,
        share_keys_plaintext_separate,
    )

    try:  # flwr >= 1.40
        from flwr.supercore.primitives.asymmetric import (
            bytes_to_private_key,
            bytes_to_public_key,
            generate_key_pairs,
            private_key_to_bytes,
            public_key_to_bytes,
        )
    except ImportError:  # older releases kept them beside the symmetric primitives
        from flwr.common.secure_aggregation.crypto.symmetric_encryption import (  # type: ignore[attr-defined,no-redef]
            bytes_to_private_key,
            bytes_to_public_key,
            generate_key_pairs,
            private_key_to_bytes,
            public_key_to_bytes,
        )
except ImportError as error:
    print(f"cannot import Flower's secure aggregation: {error}", file=sys.stderr)
    sys.exit(3)

# Flower's defaults (SecAggPlusWorkflow).
CLIPPING_RANGE = 8.0
QUANTIZATION_RANGE = 4_194_304
MODULUS_RANGE = 2**32
MAX_WEIGHT = 1000.0
# Bytes of a node id in Flower's messages (uint64).
ID_BYTES = 8

Arrays = list[Any]
T = TypeVar("T")


@dataclass
class Node:
    """One node's secure aggregation state, as `SecAggPlusState` keeps it."""

    nid: int
    sk1: bytes
    pk1: bytes
    sk2: bytes
    pk2: bytes
    rd_seed: bytes = b""
    ss2: dict[int, bytes] = field(default_factory=dict)
    seed_shares: dict[int, bytes] = field(default_factory=dict)
    sk1_shares: dict[int, bytes] = field(default_factory=dict)


def setup(nid: int) -> Node:
    """Stage 0 (`_setup`): two key pairs, serialized."""
    sk1, pk1 = generate_key_pairs()
    sk2, pk2 = generate_key_pairs()
    return Node(
        nid,
        private_key_to_bytes(sk1),
        public_key_to_bytes(pk1),
        private_key_to_bytes(sk2),
        public_key_to_bytes(pk2),
    )


def share_keys(
    node: Node, keys: dict[int, tuple[bytes, bytes]], threshold: int, num_shares: int
) -> list[tuple[int, bytes]]:
    """Stage 1 (`_share_keys`): its checks, the shares, one encrypted message per neighbour."""
    if len(keys) < threshold:
        raise ValueError("Available neighbours number smaller than threshold")
    flat = [pk for pair in keys.values() for pk in pair]
    if len(set(flat)) != len(flat):
        raise ValueError("Some public keys are identical")
    if keys[node.nid] != (node.pk1, node.pk2):
        raise ValueError("Own public keys are displayed in dict incorrectly")
    node.rd_seed = os.urandom(32)
    b_shares = create_shares(node.rd_seed, threshold, num_shares)
    sk1_shares = create_shares(node.sk1, threshold, num_shares)
    sent = []
    for idx, (nid, (_, pk2)) in enumerate(keys.items()):
        if nid == node.nid:
            node.seed_shares[nid] = b_shares[idx]
            node.sk1_shares[nid] = sk1_shares[idx]
            continue
        shared = generate_shared_key(
            bytes_to_private_key(node.sk2), bytes_to_public_key(pk2)
        )
        node.ss2[nid] = shared
        plaintext = share_keys_plaintext_concat(
            node.nid, nid, b_shares[idx], sk1_shares[idx]
        )
        sent.append((nid, encrypt(shared, plaintext)))
    return sent


def receive(node: Node, messages: list[tuple[int, bytes]]) -> None:
    """Stage 2, first half (`_collect_masked_vectors`): decrypt and keep the shares."""
    for src, ciphertext in messages:
        plaintext = decrypt(node.ss2[src], ciphertext)
        actual_src, dst, seed_share, sk1_share = share_keys_plaintext_separate(
            plaintext
        )
        if actual_src != src or dst != node.nid:
            raise ValueError(f"share message from {actual_src} to {dst}, not {src}")
        node.seed_shares[src] = seed_share
        node.sk1_shares[src] = sk1_share


def encode(values: Any, num_examples: int) -> Arrays:
    """Stage 2, Flower's weighting and quantization of the update."""
    q_ratio = round(num_examples / MAX_WEIGHT * QUANTIZATION_RANGE)
    parameters = parameters_multiply([values], q_ratio / QUANTIZATION_RANGE)
    quantized = quantize(parameters, CLIPPING_RANGE, QUANTIZATION_RANGE)
    return factor_combine(q_ratio, quantized)


def mask(
    node: Node, quantized: Arrays, keys: dict[int, tuple[bytes, bytes]], available: list[int]
) -> Arrays:
    """Stage 2, second half: the private mask, one pair mask per neighbour whose share
    message arrived (`available`), mod 2^32."""
    dims = [a.shape for a in quantized]
    masked = parameters_addition(
        quantized, pseudo_rand_gen(node.rd_seed, MODULUS_RANGE, dims)
    )
    for nid in available:
        shared = generate_shared_key(
            bytes_to_private_key(node.sk1), bytes_to_public_key(keys[nid][0])
        )
        pair = pseudo_rand_gen(shared, MODULUS_RANGE, dims)
        if node.nid > nid:
            masked = parameters_addition(masked, pair)
        else:
            masked = parameters_subtraction(masked, pair)
    return parameters_mod(masked, MODULUS_RANGE)


def unmask(
    node: Node, threshold: int, active: list[int], dead: list[int]
) -> tuple[list[int], list[bytes]]:
    """Stage 3 (`_unmask`): seed shares of the active neighbours, key shares of the dead."""
    if len(active) < threshold:
        raise ValueError("Available neighbours number smaller than threshold")
    shares = [node.seed_shares[nid] for nid in active]
    shares += [node.sk1_shares[nid] for nid in dead]
    return active + dead, shares


def server_unmask(
    masked_sum: Arrays,
    collected: dict[int, list[bytes]],
    active: set[int],
    neighbours: dict[int, set[int]],
    pk1: dict[int, bytes],
    threshold: int,
) -> Arrays:
    """The server's `unmask_stage` from the collected shares to the unmasked sum mod 2^32."""
    masked = masked_sum
    dims = [a.shape for a in masked]
    for nid, share_list in collected.items():
        if len(share_list) < threshold:
            raise ValueError("Not enough shares to recover secret in unmask vectors stage")
        secret = combine_shares(share_list)
        if nid in active:
            masked = parameters_subtraction(
                masked, pseudo_rand_gen(secret, MODULUS_RANGE, dims)
            )
            continue
        for other in neighbours[nid] - {nid}:
            shared = generate_shared_key(
                bytes_to_private_key(secret), bytes_to_public_key(pk1[other])
            )
            pair = pseudo_rand_gen(shared, MODULUS_RANGE, dims)
            if nid > other:
                masked = parameters_addition(masked, pair)
            else:
                masked = parameters_subtraction(masked, pair)
    return parameters_mod(masked, MODULUS_RANGE)


def ring_neighbours(
    parties: int, num_shares: int, rng: random.Random
) -> dict[int, set[int]]:
    """The workflow's `setup_stage` graph: shuffled ids, offsets -s/2..s/2 (self included)."""
    ids = list(range(parties))
    rng.shuffle(ids)
    half = num_shares >> 1
    return {
        nid: {ids[(idx + off) % parties] for off in range(-half, half + 1)}
        for idx, nid in enumerate(ids)
    }


def timed(f: Callable[[], T], clock: Callable[[], float] = time.process_time) -> tuple[T, float]:
    """`f()` and the seconds it took on `clock` (process CPU time by default)."""
    start = clock()
    out = f()
    return out, clock() - start


def client_round(
    parties: int, neighbours_k: int, threshold: int, values: Any
) -> tuple[dict[str, float], dict[str, int]]:
    """One client's round (node 0) beside k neighbours prepared outside the clock."""
    num_shares = neighbours_k + 1
    me, cost_setup = timed(lambda: setup(0))
    others = [setup(nid) for nid in range(1, neighbours_k + 1)]
    keys = {n.nid: (n.pk1, n.pk2) for n in [me, *others]}
    sent, cost_share = timed(lambda: share_keys(me, keys, threshold, num_shares))
    seed_len, sk1_len = len(me.seed_shares[0]), len(me.sk1_shares[0])
    received = []
    for other in others:
        shared = generate_shared_key(
            bytes_to_private_key(other.sk2), bytes_to_public_key(me.pk2)
        )
        plaintext = share_keys_plaintext_concat(
            other.nid, me.nid, os.urandom(seed_len), os.urandom(sk1_len)
        )
        received.append((other.nid, encrypt(shared, plaintext)))
    _, cost_receive = timed(lambda: receive(me, received))
    quantized, cost_encode = timed(lambda: encode(values, 1))
    available = [src for src, _ in received]
    masked, cost_mask = timed(lambda: mask(me, quantized, keys, available))
    active = sorted(keys)
    (ids, shares), cost_unmask = timed(lambda: unmask(me, threshold, active, []))
    masked_bytes = sum(len(ndarray_to_bytes(a)) for a in masked)
    up = (
        len(me.pk1)
        + len(me.pk2)
        + sum(ID_BYTES + len(ct) for _, ct in sent)
        + masked_bytes
        + sum(ID_BYTES + len(s) for s in shares)
    )
    down = (
        sum(ID_BYTES + len(a) + len(b) for a, b in keys.values())
        + sum(ID_BYTES + len(ct) for _, ct in received)
        + ID_BYTES * len(ids)
    )
    seconds = {
        "keys_and_shares": cost_setup + cost_share + cost_receive + cost_unmask,
        "mask": cost_mask,
        "encode": cost_encode,
    }
    sizes = {"masked_vector": masked_bytes, "extra_up": up - masked_bytes, "extra_down": down}
    return seconds, sizes


def server_fixture(
    parties: int, num_shares: int, threshold: int, dropouts: int, length: int, seed: int
) -> tuple[Arrays, dict[int, list[bytes]], set[int], dict[int, set[int]], dict[int, bytes]]:
    """A round's collected shares with `dropouts` nodes dead: real shares of every node's
    mask seed (alive) or PEM key (dead), as many as its alive neighbours hold."""
    rng = random.Random(seed)
    neighbours = ring_neighbours(parties, num_shares, rng)
    dead = set(rng.sample(range(parties), dropouts))
    active = set(range(parties)) - dead
    pk1: dict[int, bytes] = {}
    collected: dict[int, list[bytes]] = {}
    for nid in range(parties):
        sk, pk = generate_key_pairs()
        pk1[nid] = public_key_to_bytes(pk)
        secret = os.urandom(32) if nid in active else private_key_to_bytes(sk)
        shares = create_shares(secret, threshold, num_shares)
        holders = sorted(neighbours[nid])
        collected[nid] = [s for s, h in zip(shares, holders) if h in active]
    gen = np.random.default_rng(seed)
    masked_sum = [
        gen.integers(0, MODULUS_RANGE, size=1, dtype=np.int64),
        gen.integers(0, MODULUS_RANGE, size=length, dtype=np.int64),
    ]
    return masked_sum, collected, active, neighbours, pk1


def measure_row(
    parties: int,
    neighbours_k: int,
    threshold: int,
    dropouts: list[int],
    length: int,
    repeats: int,
    server_budget: float,
) -> dict[str, Any]:
    """Medians of `repeats` client rounds, and of up to `repeats` server unmasks per dropout
    count (at least one; no more once `server_budget` seconds are spent on that count)."""
    values = np.random.default_rng(7).uniform(-0.1, 0.1, length)
    # One untimed warm-up round, then `repeats`.
    rounds = [client_round(parties, neighbours_k, threshold, values) for _ in range(repeats + 1)][1:]
    client = {key: statistics.median(r[key] for r, _ in rounds) for key in rounds[0][0]}
    server = []
    for d in dropouts:
        fixture = server_fixture(parties, neighbours_k + 1, threshold, d, length, seed=parties + d)
        masked_sum, collected, active, neighbours, pk1 = fixture
        times: list[float] = []
        while not times or (len(times) < repeats and sum(times) < server_budget):
            _, seconds = timed(
                lambda: server_unmask(masked_sum, collected, active, neighbours, pk1, threshold),
                time.perf_counter,
            )
            times.append(seconds)
        server.append({"dropouts": d, "unmask": statistics.median(times), "runs": len(times)})
    return {
        "parties": parties,
        "neighbours": neighbours_k,
        "threshold": threshold,
        "num_shares": neighbours_k + 1,
        "client": client,
        "client_runs": repeats,
        "bytes": rounds[0][1],
        "server": server,
    }


def self_check(parties: int = 7, num_shares: int = 5, threshold: int = 3, length: int = 50) -> None:
    """A whole round with every node and two dropouts; the unmasked sum must be exact."""
    rng = random.Random(1)
    neighbours = ring_neighbours(parties, num_shares, rng)
    nodes = {nid: setup(nid) for nid in range(parties)}
    keys_of = {
        nid: {m: (nodes[m].pk1, nodes[m].pk2) for m in sorted(neighbours[nid])}
        for nid in nodes
    }
    inbox: dict[int, list[tuple[int, bytes]]] = {nid: [] for nid in nodes}
    for nid, node in nodes.items():
        for dst, ct in share_keys(node, keys_of[nid], threshold, num_shares):
            inbox[dst].append((nid, ct))
    dead = {1, 4}
    active = set(nodes) - dead
    gen = np.random.default_rng(3)
    total = None
    masked_sum = None
    for nid in sorted(active):
        receive(nodes[nid], inbox[nid])
        quantized = encode(gen.uniform(-0.1, 0.1, length), 1)
        masked = mask(nodes[nid], quantized, keys_of[nid], [src for src, _ in inbox[nid]])
        total = quantized if total is None else parameters_addition(total, quantized)
        masked_sum = masked if masked_sum is None else parameters_addition(masked_sum, masked)
    collected: dict[int, list[bytes]] = {nid: [] for nid in nodes}
    for nid in sorted(active):
        members = neighbours[nid]
        ids, shares = unmask(
            nodes[nid], threshold, sorted(members & active), sorted(members & dead)
        )
        for owner, share in zip(ids, shares):
            collected[owner].append(share)
    pk1 = {nid: node.pk1 for nid, node in nodes.items()}
    assert masked_sum is not None and total is not None
    unmasked = server_unmask(masked_sum, collected, active, neighbours, pk1, threshold)
    expected = parameters_mod([a.astype(np.int64) for a in total], MODULUS_RANGE)
    for got, want in zip(unmasked, expected):
        if not np.array_equal(got, want):
            raise SystemExit("self-check failed: the unmasked sum is not the sum")
    print("self-check passed: the unmasked sum of", len(active), "nodes is exact")


def main() -> None:
    """Parse the rows and print one JSON object per row."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=101_770)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--server-budget",
        type=float,
        default=3.0,
        help="seconds after which the server's unmask is not repeated",
    )
    parser.add_argument(
        "--row",
        action="append",
        default=[],
        metavar="P:k:T:d,d,...",
        help="nodes, neighbours, threshold and the dropout counts to unmask with",
    )
    parser.add_argument("--self-check", action="store_true")
    args = parser.parse_args()
    if args.self_check:
        self_check()
        return
    for row in args.row:
        parties, neighbours_k, threshold, drops = row.split(":")
        dropouts = [int(d) for d in drops.split(",") if d]
        result = measure_row(
            int(parties),
            int(neighbours_k),
            int(threshold),
            dropouts,
            args.values,
            args.repeats,
            args.server_budget,
        )
        result["flower"] = flwr.__version__
        result["python"] = platform.python_version()
        result["numpy"] = np.__version__
        result["values"] = args.values
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
