"""One party, written once: the Python binding's party, fed the published sums that the
Rust party (``run_party``) was fed, ends with the same model bytes and the same skips.

The fixture ``tests/fixtures/party-transcript/`` (at the repository root) is written by the
Rust suite: a hefl plan, a test key file, and the transcript of party ``party``'s rounds: each
round's published sum and who is in it (a garbage round the party must skip, a round it was
left out of), the round after which it restarted from its checkpoint, and what the Rust party
ended with (skipped rounds, next round, model as little-endian float32 bytes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import hefl

FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "party-transcript"


@pytest.fixture(scope="module")
def transcript() -> dict:
    if not (FIXTURE / "transcript.json").is_file():
        pytest.skip(f"no party transcript at {FIXTURE} (the Rust suite writes it)")
    return json.loads((FIXTURE / "transcript.json").read_text())


def load_key(tmp_path: Path) -> hefl.SecretKey | None:
    """The fixture's key file, copied with mode 0600 (git does not keep modes)."""
    source = FIXTURE / "key.json"
    if not source.is_file():
        return None
    path = tmp_path / "key.json"
    shutil.copyfile(source, path)
    path.chmod(0o600)
    return hefl.SecretKey.load(path)


def test_the_python_party_matches_the_rust_party(transcript: dict, tmp_path: Path) -> None:
    plan = (FIXTURE / "plan.json").read_text()
    key = load_key(tmp_path)
    party_id = int(transcript["party"])
    party = hefl.Party.from_plan(plan, party_id, key)
    restart_after = transcript.get("restart_after")
    events = transcript["events"]
    kinds = set()
    restarted = False
    for event in events:
        aggregate = (FIXTURE / event["sum"]).read_bytes()
        outcome, reason = party.receive(int(event["round"]), list(event["parties"]), aggregate)
        kinds.add(outcome)
        if event.get("left_out"):
            kinds.add("left out")
        assert outcome in ("applied", "skipped"), (event, outcome, reason)
        if restart_after is not None and int(event["round"]) == int(restart_after):
            state = party.state()
            party = hefl.Party.from_plan(plan, party_id, key)
            party.restore(state)
            assert party.state() == state
            restarted = True
    # The transcript exercises what it claims: a skip, a round left out, a restart.
    assert {"applied", "skipped", "left out"} <= kinds, kinds
    assert restarted or restart_after is None
    expected = transcript["expected"]
    assert party.skipped == list(expected["skipped"])
    assert party.next_round == int(expected["next_round"])
    model = np.frombuffer((FIXTURE / expected["model"]).read_bytes(), dtype="<f4")
    assert party.model.tobytes() == model.astype(np.float32).tobytes()
