"""``strict`` secure aggregation from Python (``hefl.Identity``, ``hefl.Roster`` and
``hefl.Party(..., secure_agg="strict")``): models bit-identical to unblinded parties, the
seal-once rule, void rounds and party sets, subset sums refused, and every refusal naming
what was expected and what came."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

import hefl

PARTIES = 3
LENGTH = 6
BOUNDS: dict = {"max_parties": PARTIES, "max_examples": 100}


@pytest.fixture(scope="module")
def identity_paths(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three identity files (mode 0600), as ``hefl identity`` writes them."""
    folder = tmp_path_factory.mktemp("identities")
    paths = [folder / f"party-{i}.id" for i in range(PARTIES)]
    for path in paths:
        hefl.generate_identity(path)
    return paths


@pytest.fixture(scope="module")
def identities(identity_paths: list[Path]) -> list[hefl.Identity]:
    return [hefl.Identity.load(path) for path in identity_paths]


@pytest.fixture(scope="module")
def roster(key: hefl.SecretKey, identities: list[hefl.Identity]) -> hefl.Roster:
    """Every sum holds at least 2 of the 3 parties."""
    return hefl.Roster(key.key_id, [i.public for i in identities], min_parties=2)


def make_parties(
    key: hefl.SecretKey,
    strict: hefl.Roster | None,
    identities: Sequence[hefl.Identity],
    **settings: object,
) -> list[hefl.Party]:
    """The three parties, with ``strict`` secure aggregation over ``strict`` or without,
    their rounding seeded alike either way."""
    common = {**BOUNDS, "min_parties": 2, **settings}
    secure = {}
    out = []
    for i in range(PARTIES):
        if strict is not None:
            secure = {
                "secure_agg": "strict",
                "identity": identities[i],
                "roster": strict,
                "roster_fingerprint": strict.fingerprint,
            }
        out.append(
            hefl.Party(key, np.zeros(LENGTH, np.float32), party=i, seed=7 + i, **common, **secure)  # type: ignore[arg-type]
        )
    return out


def trained(party: int, round_: int) -> np.ndarray:
    return np.linspace(-1, 1, LENGTH, dtype=np.float32) * np.float32((party + 1) / (round_ + 1))


def keyless_sum(key_id: str, first: hefl.Party, uploads: dict[int, bytes], strict: bool) -> bytes:
    """The server's sum of ``uploads`` (party -> bytes) for the round ``first`` is on."""
    total = hefl.KeylessSum(
        key_id,
        LENGTH,
        round=first.next_round,
        run=first.fingerprint,
        secure_agg="strict" if strict else None,
        **BOUNDS,
    )
    for party, upload in sorted(uploads.items()):
        total.add(upload, party)
    return total.to_bytes()


def run_rounds(key: hefl.SecretKey, parties: list[hefl.Party], rounds: int, strict: bool) -> None:
    for round_ in range(rounds):
        uploads = {
            p.party: p.seal_model(p.model + trained(p.party, round_), 10 * (p.party + 1))[0]
            for p in parties
        }
        aggregate = keyless_sum(key.key_id, parties[0], uploads, strict)
        for p in parties:
            assert p.receive(round_, sorted(uploads), aggregate) == ("applied", None)


# --- the acceptance: bit-identical to unblinded parties ---------------------------------


def test_strict_models_are_bit_identical_to_unblinded_ones(
    key: hefl.SecretKey, roster: hefl.Roster, identities: list[hefl.Identity]
) -> None:
    plain = make_parties(key, None, identities)
    strict = make_parties(key, roster, identities)
    run_rounds(key, plain, 3, strict=False)
    run_rounds(key, strict, 3, strict=True)
    for p, s in zip(plain, strict, strict=True):
        assert s.model.tobytes() == p.model.tobytes()
        assert s.next_round == p.next_round == 3
    assert np.abs(plain[0].model).max() > 0.5  # the model moved
    # The uploads differ (blinds and canaries), the fingerprints too (the roster's is in it).
    assert strict[0].fingerprint != plain[0].fingerprint
    assert strict[0].seal_model(trained(0, 3), 1)[0] != plain[0].seal_model(trained(0, 3), 1)[0]


# --- seal once ----------------------------------------------------------------------------


def test_a_round_is_sealed_once_even_across_a_checkpoint(
    key: hefl.SecretKey, roster: hefl.Roster, identities: list[hefl.Identity]
) -> None:
    a, *_ = make_parties(key, roster, identities)
    first, _ = a.seal_model(trained(0, 0), 10)
    # Sealed again (another update): the same bytes, never a second blind on another input.
    assert a.seal_model(trained(0, 5), 50)[0] == first
    # A restarted party (a fresh object restored from the checkpoint) resends them too.
    again, *_ = make_parties(key, roster, identities)
    again.restore(a.state())
    assert again.seal_model(trained(0, 9), 90)[0] == first
    # Negative control: without secure aggregation a second seal is a fresh encryption.
    plain, *_ = make_parties(key, None, identities)
    assert plain.seal_model(trained(0, 0), 10)[0] != plain.seal_model(trained(0, 0), 10)[0]


# --- void rounds and party sets -----------------------------------------------------------


def test_a_void_round_drops_every_update_and_the_next_set_decides_who_seals(
    key: hefl.SecretKey, roster: hefl.Roster, identities: list[hefl.Identity]
) -> None:
    parties = make_parties(key, roster, identities)
    before = [p.model.copy() for p in parties]
    for p in parties[:2]:
        p.seal_model(trained(p.party, 0), 10)
    # Party 2 missed round 0: the round is void, and round 1's set leaves it out.
    for p in parties:
        assert p.receive(0, [0, 1], b"", void=True, next_set=[0, 1]) == ("void", None)
        assert p.voided == [0] and p.next_round == 1
    for p, model in zip(parties, before, strict=True):
        assert p.model.tobytes() == model.tobytes()  # nobody stepped
    assert [p.is_member for p in parties] == [True, True, False]
    with pytest.raises(hefl.SecureAggError, match=r"round 1: party 2 is not in .* \{0, 1\}"):
        parties[2].seal_model(trained(2, 1), 10)
    # Round 1 over {0, 1}: its sum is applied by all three; party 2 is back in round 2's set.
    uploads = {p.party: p.seal_model(trained(p.party, 1), 10)[0] for p in parties[:2]}
    aggregate = keyless_sum(key.key_id, parties[0], uploads, strict=True)
    for p in parties:
        assert p.receive(1, [0, 1], aggregate, next_set=[0, 1, 2]) == ("applied", None)
    assert len({p.model.tobytes() for p in parties}) == 1
    assert all(p.is_member for p in parties)
    # A set below the roster's minimum, or naming a party it does not list, is refused.
    for bad, match in (
        ([0], "has 1 parties, the roster requires at least 2"),
        ([0, 1, 7], "party 7 is not in the roster"),
    ):
        with pytest.raises(hefl.ProtocolError, match=match):
            parties[0].receive(2, [0, 1, 2], b"", void=True, next_set=bad)
    # Without secure aggregation a round is never void.
    plain, *_ = make_parties(key, None, identities)
    with pytest.raises(hefl.ProtocolError, match="never void"):
        plain.receive(0, [0, 1], b"", void=True)


def test_a_subset_sum_is_skipped_under_strict_and_applied_without(
    key: hefl.SecretKey, roster: hefl.Roster, identities: list[hefl.Identity]
) -> None:
    """A server announces the sum of parties 0 and 1 as round 0's, leaving party 2's update
    out. Unblinded parties apply it (the negative control); strict parties skip it, as the
    round's set is {0, 1, 2}: its party list and canaries give it away."""
    for strict in (None, roster):
        parties = make_parties(key, strict, identities)
        uploads = {p.party: p.seal_model(trained(p.party, 0), 10)[0] for p in parties}
        subset = keyless_sum(key.key_id, parties[0], {0: uploads[0], 1: uploads[1]}, bool(strict))
        outcome, reason = parties[2].receive(0, [0, 1], subset)
        if strict is None:
            assert outcome == "applied"
        else:
            assert outcome == "skipped"
            assert "the sum lists parties {0, 1}, the round's set is {0, 1, 2}" in str(reason)
            assert not parties[2].model.any()


# --- refusals -----------------------------------------------------------------------------


def strict_party(
    key: hefl.SecretKey, identity: hefl.Identity, roster: hefl.Roster, **overrides: object
) -> hefl.Party:
    settings: dict = {
        **BOUNDS,
        "min_parties": 2,
        "party": 0,
        "secure_agg": "strict",
        "identity": identity,
        "roster": roster,
        "roster_fingerprint": roster.fingerprint,
        **overrides,
    }
    return hefl.Party(key, np.zeros(LENGTH, np.float32), **settings)


def test_refusals_name_what_was_expected_and_what_came(
    key: hefl.SecretKey,
    other_key: hefl.SecretKey,
    roster: hefl.Roster,
    identities: list[hefl.Identity],
) -> None:
    fp = roster.fingerprint
    strict_party(key, identities[0], roster)  # the settings below differ from these by one
    cases: list[tuple[dict, str]] = [
        (
            {"roster_fingerprint": "ab" * 32},
            f"roster fingerprint {fp} is not the expected {'ab' * 32}",
        ),
        (
            {"party": 3, "max_parties": 3},
            "party 3 is not in the roster, which lists parties 0 to 2",
        ),
        (
            {"party": 1},
            f"party 1's public key in the roster is {identities[1].public.split()[1]}, "
            f"this identity's is {identities[0].public.split()[1]}",
        ),
        ({"secure_agg": None}, "mode: the roster says strict, the plan no secure aggregation"),
        ({"min_parties": 1}, "min_parties: the roster says 2, the plan 1"),
        ({"max_parties": 4}, "parties: the roster says 3, the plan 4"),
    ]
    for overrides, message in cases:
        with pytest.raises(hefl.RosterError) as raised:
            strict_party(key, identities[0], roster, **overrides)
        assert message in str(raised.value), (overrides, str(raised.value))
    with pytest.raises(
        hefl.RosterError,
        match=f"the roster is for key {key.key_id}, this key is {other_key.key_id}",
    ):
        strict_party(other_key, identities[0], roster)
    with pytest.raises(hefl.RosterError, match="needs its identity, the roster"):
        hefl.Party(key, np.zeros(LENGTH, np.float32), party=0, secure_agg="strict", **BOUNDS)
    with pytest.raises(ValueError, match="together"):
        hefl.Party(key, np.zeros(LENGTH, np.float32), party=0, identity=identities[0], **BOUNDS)
    # A stricter minimum is not a weakening.
    strict_party(key, identities[0], roster, min_parties=3)


def test_an_identity_file_others_can_read_is_refused(
    identity_paths: list[Path], tmp_path: Path
) -> None:
    path = tmp_path / "party.id"
    path.write_bytes(identity_paths[0].read_bytes())
    os.chmod(path, 0o600)
    hefl.Identity.load(path)
    os.chmod(path, 0o644)
    with pytest.raises(hefl.InsecureKeyFileError, match="0o?644|644"):
        hefl.Identity.load(path)
    with pytest.raises(hefl.KeyFileExistsError):
        hefl.generate_identity(identity_paths[0])


def test_a_roster_not_listing_this_identity_is_refused(
    key: hefl.SecretKey, roster: hefl.Roster, tmp_path: Path
) -> None:
    hefl.generate_identity(tmp_path / "x.id")
    stranger = hefl.Identity.load(tmp_path / "x.id")
    with pytest.raises(
        hefl.RosterError,
        match=f"{stranger.public.split()[1]} is not in the roster {roster.fingerprint}",
    ):
        roster.party_of(stranger)
    loaded = tmp_path / "roster.json"
    loaded.write_bytes(roster.to_bytes())
    assert hefl.Roster.load(loaded).fingerprint == roster.fingerprint
    with pytest.raises(hefl.RosterError, match="not a hefl roster"):
        hefl.Roster.from_bytes(b"{}")
