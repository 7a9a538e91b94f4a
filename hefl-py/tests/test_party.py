"""The party machine from Python (``hefl.Party``): the rules every driver shares (order,
the skip rule, resync, checkpoints), the example-count weighting and its error bound, and
refusals of bad input."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import pytest

import hefl
from wire import garbage_under_header


def parties(
    key: hefl.SecretKey, initial: np.ndarray, ids: Sequence[int], **bounds: object
) -> list[hefl.Party]:
    """Parties of one federation (seeded: reproducible rounding)."""
    bounds = {"max_parties": 3, "max_examples": 1000, **bounds}
    return [
        hefl.Party(key, initial, party=i, seed=100 + i, **bounds)  # type: ignore[arg-type]
        for i in ids
    ]


def publish(
    key_id: str, senders: Sequence[hefl.Party], uploads: Sequence[bytes], **bounds: object
) -> bytes:
    """The server's part: the keyless sum of the senders' uploads, for the run and round the
    first sender is on (what each upload's header must name)."""
    bounds = {"max_parties": 3, "max_examples": 1000, **bounds}
    first = senders[0]
    total = hefl.KeylessSum(
        key_id,
        first.length,
        round=first.next_round,
        run=first.fingerprint,
        **bounds,  # type: ignore[arg-type]
    )
    for sender, upload in zip(senders, uploads, strict=True):
        total.add(upload, sender.party)
    return total.to_bytes()


# --- a round ----------------------------------------------------------------------------


def test_every_party_applies_the_example_weighted_mean(key: hefl.SecretKey) -> None:
    initial = np.array([0.5, -0.25, 1.0], np.float32)
    a, b, c = parties(key, initial, [0, 4, 9])
    trained = [initial + np.float32(d) for d in (1.0, 2.0, -1.0)]
    uploads = [p.seal_model(t, n)[0] for p, t, n in zip((a, b), trained, (10, 30))]
    aggregate = publish(key.key_id, (a, b), uploads)
    for party in (a, b, c):  # c did not train: it applies the sum all the same
        assert party.receive(0, [0, 4], aggregate) == ("applied", None)
        assert party.model.tobytes() == (initial + np.float32(1.75)).tobytes()
        assert (party.next_round, party.skipped) == (1, [])
    assert (a.party, a.length, a.fingerprint) == (0, 3, c.fingerprint)
    assert "next_round=1" in repr(a)


def test_garbage_under_a_well_formed_header_is_skipped_by_every_party(
    key: hefl.SecretKey,
) -> None:
    initial = np.zeros(50, np.float32)
    group = parties(key, initial, [0, 1, 2])
    honest = [p.seal_model(initial + np.float32(0.5), 10)[0] for p in group[:2]]
    bad = garbage_under_header(group[2].seal_model(initial + np.float32(0.5), 10)[0])
    aggregate = publish(key.key_id, group, [*honest, bad])  # the server accepts it
    outcomes = [p.receive(0, [0, 1, 2], aggregate) for p in group]
    assert {o[0] for o in outcomes} == {"skipped"}
    assert len({o[1] for o in outcomes}) == 1 and "total weight" in str(outcomes[0][1])
    for party in group:
        assert party.skipped == [0] and party.next_round == 1
        assert party.model.tobytes() == initial.tobytes()
    # Negative control: the same round without the garbage is applied.
    clean = parties(key, initial, [0, 1, 2])
    uploads = [p.seal_model(initial + np.float32(0.5), 10)[0] for p in clean]
    assert clean[0].receive(0, [0, 1, 2], publish(key.key_id, clean, uploads)) == ("applied", None)


def test_sums_are_applied_in_order_each_once(key: hefl.SecretKey) -> None:
    initial = np.zeros(4, np.float32)
    (a,) = parties(key, initial, [0])
    (leader,) = parties(key, initial, [0])  # a copy of a that publishes ahead of it
    sums = []
    for r in range(3):
        up, _ = leader.seal(np.full(4, r + 1, np.float32), 1)
        sums.append(publish(key.key_id, [leader], [up]))
        assert leader.receive(r, [0], sums[-1])[0] == "applied"
    with pytest.raises(hefl.OutOfOrderError, match="round 2 came before that of round 0"):
        a.receive(2, [0], sums[2])
    assert a.next_round == 0 and a.model.tolist() == [0.0] * 4
    assert a.receive(0, [0], sums[0])[0] == "applied"
    assert a.receive(0, [0], sums[0]) == ("stale", None)  # once
    assert a.receive(1, [0], sums[1])[0] == "applied"
    assert a.model.tolist() == [3.0] * 4 and a.next_round == 2


@pytest.mark.parametrize(
    "parties_in_sum, error, match",
    [
        ([], hefl.ProtocolError, r"names parties \[\]"),
        ([1, 0], hefl.ProtocolError, "ascending"),
        ([0, 0], hefl.ProtocolError, "distinct"),
        ([2**32 - 1], hefl.ProtocolError, "below 4294967295"),
        ([0], hefl.ProtocolError, "sums 1 updates, fewer than the 2"),
        ([0, 1, 2], hefl.MessageError, "sums 2 encryptions"),
    ],
)
def test_refused_sums_change_nothing(
    key: hefl.SecretKey, parties_in_sum: list[int], error: type[Exception], match: str
) -> None:
    initial = np.zeros(4, np.float32)
    group = parties(key, initial, [0, 1], min_parties=2)
    aggregate = publish(key.key_id, group, [p.seal(np.ones(4, np.float32), 1)[0] for p in group])
    with pytest.raises(error, match=match):
        group[0].receive(0, parties_in_sum, aggregate)
    assert group[0].next_round == 0 and group[0].model.tolist() == [0.0] * 4
    assert group[0].receive(0, [0, 1], aggregate)[0] == "applied"


def test_a_sum_under_another_key_is_refused(key: hefl.SecretKey, other_key: hefl.SecretKey) -> None:
    (mine,) = parties(key, np.zeros(4, np.float32), [0])
    (theirs,) = parties(other_key, np.zeros(4, np.float32), [0])
    aggregate = publish(other_key.key_id, [theirs], [theirs.seal(np.ones(4, np.float32), 1)[0]])
    with pytest.raises(hefl.KeyMismatchError, match="round 0"):
        mine.receive(0, [0], aggregate)
    assert mine.next_round == 0


# --- clip, resolution, error bound ------------------------------------------------------


def test_the_clip_applies_to_the_update_and_is_counted(key: hefl.SecretKey) -> None:
    """The issue's case: an update value of +40 with 440 of at most 1,000 examples came out
    4.9 off. The clip (8) applies to the update itself, whatever its example count."""
    initial = np.zeros(4, np.float32)
    (a,) = parties(key, initial, [0], max_parties=1)
    upload, clipped = a.seal_model(np.array([40, -40, 7.5, 0.25], np.float32), 440)
    assert clipped == 2
    assert a.receive(0, [0], publish(key.key_id, [a], [upload], max_parties=1))[0] == "applied"
    assert np.all(np.abs(a.model - [8, -8, 7.5, 0.25]) <= 2.0**-16)
    # Negative control: nothing beyond the clip, nothing counted.
    (b,) = parties(key, initial, [0], max_parties=1)
    assert b.seal_model(np.array([8, -8, 7.5, 0], np.float32), 440)[1] == 0


def test_examples_beyond_the_bound_are_refused(key: hefl.SecretKey) -> None:
    (a,) = parties(key, np.zeros(4, np.float32), [0], max_examples=100)
    for examples in (0, 101):
        with pytest.raises(hefl.EncodeError, match=f"{examples} samples, expected 1 to 100"):
            a.seal(np.zeros(4, np.float32), examples)
    with pytest.raises(hefl.EncodeError, match="not finite"):
        a.seal(np.array([0, np.nan, 0, 0], np.float32), 1)
    with pytest.raises(hefl.LengthError, match="a trained model of 5 values, expected 4"):
        a.seal_model(np.zeros(5, np.float32), 1)


def one_round(
    key: hefl.SecretKey,
    updates: list[np.ndarray],
    examples: list[int],
    **bounds: object,
) -> tuple[np.ndarray, np.ndarray]:
    """One round from a zero model: every party's update, sealed with its example count,
    summed and applied; returns (the model after the round, the exact weighted mean)."""
    n = len(updates[0])
    initial = np.zeros(n, np.float32)
    group = parties(key, initial, range(len(updates)), **bounds)
    uploads = [p.seal(u, c)[0] for p, u, c in zip(group, updates, examples)]
    aggregate = publish(key.key_id, group, uploads, **bounds)
    ids = list(range(len(updates)))
    assert group[0].receive(0, ids, aggregate)[0] == "applied"
    exact = sum(c * u.astype(np.float64) for u, c in zip(updates, examples)) / sum(examples)
    return group[0].model, exact


def bound_of(frac_bits: int, model: np.ndarray) -> np.ndarray:
    """The documented bound per value: 2^-frac_bits, plus the rounding of the mean to
    float32 (half an ulp) and of the model addition (half an ulp; from a zero model, the
    same value)."""
    return 2.0**-frac_bits + np.spacing(np.abs(model)).astype(np.float64)


def updates_of(n: int, parties: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.clip(rng.normal(0, 2, n), -7.9, 7.9).astype(np.float32) for _ in range(parties)]


@pytest.mark.parametrize("examples", [[1], [3, 1000, 17]])
def test_the_documented_error_bound_is_met(key: hefl.SecretKey, examples: list[int]) -> None:
    """Each value of the mean is within 2^-16 of the exact example-weighted mean of the
    (clipped) updates, plus float32 rounding; and the bound is tight (not off by 2x)."""
    updates = updates_of(20_000, len(examples), seed=len(examples))
    model, exact = one_round(key, updates, examples, max_examples=1000)
    error = np.abs(model - exact)
    assert np.all(error <= bound_of(16, model)), error.max() / 2.0**-16
    if len(examples) == 1:  # one party: its rounding error alone, up to 2^-16
        assert error.max() > 0.9 * 2.0**-16, error.max() / 2.0**-16


def test_the_resolution_does_not_depend_on_max_examples(key: hefl.SecretKey) -> None:
    """3 parties at frac_bits 14: the largest max_parties and frac_bits for which
    max_examples 10^7 still fits (up to 11,184,810). Counts 1, 400, 999 fit both bounds;
    with the same rounding the two settings give the same bits, within 2^-14 of the exact
    mean. Negative control: the former weighting (n / max_examples applied before rounding)
    misses the bound by orders of magnitude at 10^7."""
    examples = [1, 400, 999]
    updates = updates_of(20_000, 3, seed=7)
    models = {}
    for max_examples in (1_000, 10_000_000):
        model, exact = one_round(key, updates, examples, max_examples=max_examples, frac_bits=14)
        assert np.all(np.abs(model - exact) <= bound_of(14, model)), max_examples
        models[max_examples] = model
    assert models[1_000].tobytes() == models[10_000_000].tobytes()
    # The former scheme, in float64: w = n / max, w·u rounded to 2^-14, divided by Σw.
    rng = np.random.default_rng(0)
    scale = 2.0**14
    for max_examples, far in ((1_000, False), (10_000_000, True)):
        weights = [c / max_examples for c in examples]
        total = sum(
            np.floor(w * u * scale + rng.random(u.shape)) / scale for w, u in zip(weights, updates)
        )
        former = total / sum(weights)
        beyond = np.abs(former - exact).max() > 100 * 2.0**-14
        assert beyond == far, (max_examples, np.abs(former - exact).max())


# --- snapshots and resync ---------------------------------------------------------------


def run_rounds(key: hefl.SecretKey, group: list[hefl.Party], rounds: int, **bounds: object) -> None:
    for _ in range(rounds):
        r = group[0].next_round
        ups = [
            p.seal(np.full(p.length, 0.125 * (r + 1), np.float32), 1 + p.party)[0] for p in group
        ]
        aggregate = publish(key.key_id, group, ups, **bounds)
        for p in group:
            assert p.receive(r, [p.party for p in group], aggregate)[0] == "applied"


def test_a_party_resyncs_from_a_snapshot_bit_for_bit(key: hefl.SecretKey) -> None:
    initial = np.linspace(-1, 1, 30).astype(np.float32)
    group = parties(key, initial, [0, 1], snapshot_every=2)
    run_rounds(key, group, 3)
    round_, snapshot = group[0].snapshot()
    assert round_ == 3
    total = hefl.KeylessSum(
        key.key_id, 30, max_parties=3, max_examples=1000, run=group[0].fingerprint
    )
    total.check_snapshot(snapshot, round_, 0)  # what the server validates before keeping it
    with pytest.raises(hefl.MessageError, match="a message for party 0, round 3"):
        total.check_snapshot(snapshot, round_, 1)  # party 0's snapshot as party 1's
    with pytest.raises(hefl.MessageError, match="of 31 values, expected 43"):  # a sum
        total.check_snapshot(publish(key.key_id, [group[0]], [group[0].seal(initial, 1)[0]]), 3, 0)
    (late,) = parties(key, initial, [7], snapshot_every=2)
    late.resync(round_, snapshot)
    assert late.model.tobytes() == group[0].model.tobytes() and late.next_round == 3
    run_rounds(key, [*group, late], 2)
    assert late.model.tobytes() == group[0].model.tobytes()


def test_refused_snapshots_change_nothing(key: hefl.SecretKey, other_key: hefl.SecretKey) -> None:
    initial = np.zeros(8, np.float32)
    group = parties(key, initial, [0], snapshot_every=1)
    run_rounds(key, group, 2)
    round_, snapshot = group[0].snapshot()

    def fresh(**changes: object) -> hefl.Party:
        return parties(key, initial, [5], **{"snapshot_every": 1, **changes})[0]  # type: ignore[arg-type]

    with pytest.raises(hefl.SnapshotError, match="of round 2, announced as round 1"):
        fresh().resync(1, snapshot)
    with pytest.raises(hefl.SnapshotError, match="another run"):
        fresh(run="another").resync(round_, snapshot)
    with pytest.raises(hefl.SnapshotError, match="takes no model snapshots"):
        fresh(snapshot_every=None).resync(round_, snapshot)
    with pytest.raises(hefl.SnapshotError, match="takes no model snapshots"):
        fresh(snapshot_every=None).snapshot()
    with pytest.raises(hefl.KeyMismatchError):
        parties(other_key, initial, [5], snapshot_every=1)[0].resync(round_, snapshot)
    with pytest.raises(hefl.MessageError):
        fresh().resync(round_, snapshot[:-3])
    ahead = parties(key, initial, [0], snapshot_every=1)
    run_rounds(key, ahead, 3)
    with pytest.raises(hefl.SnapshotError, match="on round 3 already"):
        ahead[0].resync(round_, snapshot)
    assert ahead[0].next_round == 3
    untouched = fresh()
    with pytest.raises(hefl.SnapshotError):
        untouched.resync(1, snapshot)
    assert untouched.next_round == 0 and untouched.model.tobytes() == initial.tobytes()


# --- checkpoints ------------------------------------------------------------------------


def test_state_restores_into_a_fresh_party(key: hefl.SecretKey) -> None:
    initial = np.linspace(0, 1, 16).astype(np.float32)
    group = parties(key, initial, [0, 1])
    run_rounds(key, group, 2)
    state = group[0].state()
    (fresh,) = parties(key, np.zeros(16, np.float32), [0])
    fresh.restore(state)
    assert fresh.state() == state  # model, round, skipped and the rounding generator
    assert fresh.model.tobytes() == group[0].model.tobytes() and fresh.next_round == 2


@pytest.mark.parametrize(
    "mangle, changes, match",
    [
        (lambda s: s[:-1], {}, "not a hefl party state"),
        (lambda s: b"\x07" + s[1:], {}, "format 7"),
        (lambda s: b"", {}, "not a hefl party state"),
        (lambda s: s, {"party": 1}, "party 0's, expected party 1's"),
        (lambda s: s, {"run": "another"}, "another run"),
        (lambda s: s, {"min_parties": 2}, "another run"),
        (lambda s: s + b"\0", {}, "not a hefl party state"),
        (lambda s: s + bytes(9_000_000), {}, "more than the .* a state of this model can take"),
    ],
)
def test_refused_states_change_nothing(
    key: hefl.SecretKey, mangle: Callable[[bytes], bytes], changes: dict, match: str
) -> None:
    initial = np.zeros(16, np.float32)
    group = parties(key, initial, [0])
    run_rounds(key, group, 1)
    bounds = {"party": 0, **changes}
    target = hefl.Party(key, initial, max_parties=3, max_examples=1000, **bounds)  # type: ignore[arg-type]
    before = target.state()
    with pytest.raises(hefl.StateError, match=match):
        target.restore(mangle(group[0].state()))
    assert target.state() == before


def test_a_state_of_another_model_shape_is_refused(key: hefl.SecretKey) -> None:
    (small,) = parties(key, np.zeros(4, np.float32), [0])
    (large,) = parties(key, np.zeros(5, np.float32), [0])
    with pytest.raises(hefl.StateError):
        large.restore(small.state())


# --- setup ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bounds, error, match",
    [
        ({"max_parties": 0}, hefl.ConfigError, ""),
        ({"min_parties": 0}, hefl.ConfigError, "minimum of 0"),
        ({"min_parties": 4}, hefl.ConfigError, "minimum of 4"),
        ({"max_examples": 0}, hefl.ConfigError, "bound of 0"),
        ({"max_parties": 100, "max_examples": 10**7}, hefl.ConfigError, "max_parties="),
        ({"party": -1}, OverflowError, ""),
    ],
)
def test_bounds_that_cannot_work_are_refused(
    key: hefl.SecretKey, bounds: dict, error: type[Exception], match: str
) -> None:
    settings = {"max_parties": 3, "max_examples": 10, "party": 0, **bounds}
    with pytest.raises(error, match=match or None):
        hefl.Party(key, np.zeros(3, np.float32), **settings)


def test_the_initial_model_is_checked(key: hefl.SecretKey) -> None:
    settings = {"max_parties": 3, "max_examples": 10, "party": 0}
    with pytest.raises(hefl.LengthError, match="length must be between 1"):
        hefl.Party(key, np.zeros(0, np.float32), **settings)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="initial must have dtype float32"):
        hefl.Party(key, np.zeros(3), **settings)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="update must be a numpy.ndarray"):
        hefl.Party(key, np.zeros(3, np.float32), **settings).seal([0.0, 0.0, 0.0], 1)  # type: ignore[arg-type,arg-type]


PLAN = {
    "config": {
        "mode": "federated",
        "parties": 3,
        "partition": {"kind": "iid"},
        "strategy": {"kind": "fedsgd"},
        "privacy": "plain",
        "frac_bits": 16,
        "download": "auto",
        "epochs": 1,
        "lr": 0.0015,
        "batch_size": 10,
        "optimizer": "adam",
        "seed": 42,
        "layers": [784, 4, 10],
        "train_subset": None,
        "test_subset": None,
    },
    "rounds_per_epoch": 1,
    "key_id": None,
    "round_timeout_ms": 30000,
    "min_parties": None,
    "absent_after": 3,
    "join_timeout_ms": 300000,
    "idle_timeout_ms": 600000,
    "keep_rounds": 64,
    "snapshot_every": 32,
}


def test_a_party_of_a_hefl_plan(key: hefl.SecretKey, other_key: hefl.SecretKey) -> None:
    plain = json.dumps(PLAN)
    a = hefl.Party.from_plan(plain, 1)
    assert (a.party, a.length, a.next_round) == (1, 784 * 4 + 4 + 4 * 10 + 10, 0)
    # The plan's seed makes the initial model: every party of the plan starts from it.
    assert a.model.tobytes() == hefl.Party.from_plan(plain, 2).model.tobytes()
    assert np.abs(a.model).max() > 0
    with pytest.raises(hefl.StateError, match="party 1's, expected party 2's"):
        hefl.Party.from_plan(plain, 2).restore(a.state())
    he = json.dumps({**PLAN, "key_id": key.key_id, "config": {**PLAN["config"], "privacy": "he"}})
    assert hefl.Party.from_plan(he, 0, key).length == a.length
    with pytest.raises(hefl.ConfigError, match="needs the shared key"):
        hefl.Party.from_plan(he, 0)
    with pytest.raises(hefl.KeyMismatchError, match="key id mismatch"):
        hefl.Party.from_plan(he, 0, other_key)
    with pytest.raises(hefl.ConfigError, match="party 3 is not in"):
        hefl.Party.from_plan(plain, 3)
    with pytest.raises(hefl.ConfigError, match="not a hefl plan"):
        hefl.Party.from_plan("{", 0)
    with pytest.raises(hefl.ConfigError, match="refused"):
        hefl.Party.from_plan(json.dumps({**PLAN, "rounds_per_epoch": 0}), 0)


# --- the GIL ----------------------------------------------------------------------------


def test_the_party_releases_the_gil(key: hefl.SecretKey) -> None:
    """While another thread seals, receives, snapshots and checkpoints a large model, this
    thread keeps running Python."""
    n = 1 << 21
    group = parties(key, np.zeros(n, np.float32), [0], snapshot_every=1)
    party = group[0]
    trained = np.full(n, 0.5, np.float32)
    started = time.perf_counter()
    upload, _ = party.seal_model(trained, 1)
    one_seal = time.perf_counter() - started
    aggregate = publish(key.key_id, [party], [upload])
    done = threading.Event()

    def work() -> None:
        party.seal_model(trained, 1)
        party.receive(0, [0], aggregate)
        party.snapshot()
        party.restore(party.state())
        party.seal_model(trained, 1)
        done.set()

    worker = threading.Thread(target=work)
    ticks = [time.perf_counter()]
    worker.start()
    while not done.is_set():
        ticks.append(time.perf_counter())
    worker.join()
    assert party.next_round == 1
    longest_stall = max(b - a for a, b in zip(ticks, ticks[1:]))
    assert longest_stall < one_seal / 2, (longest_stall, one_seal)
