"""``strict`` secure aggregation through Flower (HeflMod and HeFedAvg in one process, with
the in-memory grid of test_flower_protocol.py): final models bit-identical to HeFedAvg
without blinds, a node failing in a round voids it and rejoins later, the party numbering is
the roster's, the seal-once rule holds across resent messages and restored state, and every
refusal names what was expected and what came."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import hefl

pytest.importorskip("flwr")
from flwr.app import ConfigRecord, Context, Error, Message, MessageType, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402

from hefl.flower import HeflMod, HeflRunError, HeFedAvg  # noqa: E402
from test_flower_protocol import (  # noqa: E402
    MemoryGrid,
    as_dict,
    client_app,
    fedavg_reference,
    finals,
    initial,
    task,
    task_identity,  # noqa: F401 - the module's autouse fixture
)

NODES = 3
SEED = 5


@pytest.fixture(scope="module")
def identity_paths(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("identities")
    paths = [folder / f"party-{i}.id" for i in range(NODES)]
    for path in paths:
        hefl.generate_identity(path)
    return paths


@pytest.fixture(scope="module")
def roster_path(key_path: Path, identity_paths: list[Path]) -> Path:
    """The roster of the three identities (party i: identity i), at least 2 in a sum."""
    publics = [hefl.Identity.load(p).public for p in identity_paths]
    path = identity_paths[0].parent / "roster.json"
    path.write_bytes(hefl.Roster(hefl.key_id(key_path), publics, min_parties=2).to_bytes())
    return path


@pytest.fixture(scope="module")
def fingerprint(roster_path: Path) -> str:
    return hefl.Roster.load(roster_path).fingerprint


def seeded_app(mods: list[Callable] | None = None) -> ClientApp:
    """The test task's functions behind HeflMod with seeded rounding (reproducible runs)."""
    app = ClientApp(
        mods=[
            *(mods or []),
            HeflMod(train_metrics=["train-loss"], evaluate_metrics=["eval-acc"], seed=SEED),
        ]
    )
    app.train()(client_app.train)
    app.evaluate()(client_app.evaluate)
    return app


def strict_grid(
    key_path: Path,
    models: Path,
    identity_paths: list[Path],
    roster_path: Path,
    fingerprint: str,
    parties: dict[int, int],
    app: ClientApp,
) -> MemoryGrid:
    """Nodes 100 + i on partition i, node n holding the identity of roster party
    ``parties[n]``."""
    return MemoryGrid(
        app,
        {
            100 + i: {
                "partition-id": i,
                "hefl-key": str(key_path),
                "hefl-model-out": str(models / f"node{i}.npz"),
                "hefl-identity": str(identity_paths[parties[100 + i]]),
                "hefl-roster": str(roster_path),
                "hefl-roster-fingerprint": fingerprint,
            }
            for i in range(NODES)
        },
    )


def strict_strategy(
    key_path: Path, roster_path: Path, fingerprint: str, **kwargs: object
) -> HeFedAvg:
    settings: dict = {"frac_bits": 24, "max_examples": task.MAX_EXAMPLES, **kwargs}
    return HeFedAvg(
        key_id=hefl.key_id(key_path),
        secure_agg="strict",
        roster=roster_path,
        roster_fingerprint=fingerprint,
        **settings,
    )


def model_bytes(models: Path) -> list[dict[str, bytes]]:
    return [{n: a.data for n, a in saved.arrays.items()} for saved in finals(models, NODES)]


# --- the acceptance: bit-identical to HeFedAvg without blinds ---------------------------


def test_strict_gives_models_bit_identical_to_he_fedavg(
    key_path: Path, identity_paths: list[Path], roster_path: Path, fingerprint: str, tmp_path: Path
) -> None:
    """The same three nodes, seeds and rounds, once with HeFedAvg and once with strict
    secure aggregation: the final models are the same bits, on every node."""
    plain_models, strict_models = tmp_path / "plain", tmp_path / "strict"
    plain_grid = MemoryGrid(
        seeded_app(),
        {
            100 + i: {
                "partition-id": i,
                "hefl-key": str(key_path),
                "hefl-model-out": str(plain_models / f"node{i}.npz"),
            }
            for i in range(NODES)
        },
    )
    random.seed(3)  # Flower samples nodes with `random`: the plain run's party numbers
    plain = HeFedAvg(
        key_id=hefl.key_id(key_path), frac_bits=24, max_examples=task.MAX_EXAMPLES, max_parties=3
    )
    plain.start(grid=plain_grid, initial_arrays=initial(), num_rounds=3)  # type: ignore[arg-type]
    numbering = {node: view.party for node, view in plain._nodes.items()}
    assert sorted(numbering.values()) == [0, 1, 2]

    # The roster numbers the nodes as the plain run happened to (the rounding is seeded by
    # party number): node n holds the identity of party numbering[n].
    grid = strict_grid(
        key_path, strict_models, identity_paths, roster_path, fingerprint, numbering, seeded_app()
    )
    strict = strict_strategy(key_path, roster_path, fingerprint)
    assert strict.max_parties == 3 and strict.min_results == 2  # the roster's
    result = strict.start(grid=grid, initial_arrays=initial(), num_rounds=3)  # type: ignore[arg-type]
    assert {node: view.party for node, view in strict._nodes.items()} == numbering
    assert grid.trained == [[100, 101, 102]] * 3
    assert all(not kept.void and kept.parties == [0, 1, 2] for kept in strict._kept.values())
    assert all(m["hefl.void"] == 0 for m in result.train_metrics_clientapp.values())

    plain_bits, strict_bits = model_bytes(plain_models), model_bytes(strict_models)
    assert strict_bits == plain_bits
    assert len({tuple(m.values()) for m in strict_bits}) == 1  # identical on every node
    reference = fedavg_reference([[0, 1, 2]] * 3)
    for name, value in as_dict(finals(strict_models, NODES)[0]).items():
        np.testing.assert_allclose(value, reference[name], rtol=0, atol=1e-5)
    assert len(result.arrays) == 0  # the server holds no model


# --- a failing node voids its round -----------------------------------------------------


def drop_update_of(node: int, server_round: int) -> Callable[[Message, Context, Callable], Message]:
    """A mod around HeflMod that loses ``node``'s reply in Flower round ``server_round``
    after HeflMod sealed it (the node crashed after sealing, or the network lost it)."""

    def mod(
        msg: Message, ctx: Context, call_next: Callable[[Message, Context], Message]
    ) -> Message:
        reply = call_next(msg, ctx)
        config = msg.content.config_records.get("config", ConfigRecord())
        if ctx.node_id == node and config.get("server-round") == server_round:
            assert "hefl.update" in reply.content  # it did seal
            return Message(Error(code=2, reason="lost after sealing"), reply_to=msg)
        return reply

    return mod


def test_a_node_failing_in_a_round_voids_it_and_rejoins(
    key_path: Path, identity_paths: list[Path], roster_path: Path, fingerprint: str, tmp_path: Path
) -> None:
    """Node 101 (party 2) loses its sealed update in Flower round 2: round 2 is void (nobody
    steps, its update is in no sum), round 3 runs on parties {0, 1} while node 101 asks to be
    put back, round 4 on all three. Every node ends with the same model: plaintext FedAvg of
    rounds 1, 3 (without partition 1) and 4."""
    numbering = {100: 0, 101: 2, 102: 1}  # the roster's numbering, not the node ids' order
    grid = strict_grid(
        key_path,
        tmp_path,
        identity_paths,
        roster_path,
        fingerprint,
        numbering,
        seeded_app([drop_update_of(101, 2)]),
    )
    strategy = strict_strategy(key_path, roster_path, fingerprint, fraction_evaluate=0.0)
    result = strategy.start(grid=grid, initial_arrays=initial(), num_rounds=4)  # type: ignore[arg-type]
    kept = strategy._kept
    assert [k.void for k in kept.values()] == [False, True, False, False]
    assert kept[1].parties == [0, 1] and kept[1].next_set == [0, 1]  # party 2 left out
    assert kept[1].aggregate == b""
    assert kept[2].parties == [0, 1] and kept[2].next_set == [0, 1, 2]  # it asked back
    assert kept[3].parties == [0, 1, 2]
    assert [m["hefl.void"] for m in result.train_metrics_clientapp.values()] == [0, 1, 0, 0]
    # Node 101 sent no update in round 3 (not in its set), all three in round 4.
    assert grid.trained == [[100, 101, 102], [100, 102], [100, 102], [100, 101, 102]]
    saved = finals(tmp_path, NODES)
    assert len({tuple(a.data for a in s.arrays.values()) for s in saved}) == 1
    assert [s.rounds for s in saved] == [4] * 3
    reference = fedavg_reference([[0, 1, 2], [], [0, 2], [0, 1, 2]])
    for name, value in as_dict(saved[0]).items():
        np.testing.assert_allclose(value, reference[name], rtol=0, atol=1e-5)
    # Negative control: had round 2's sum of the two survivors been applied, the model
    # would differ from that reference.
    other = fedavg_reference([[0, 1, 2], [0, 2], [0, 2], [0, 1, 2]])
    assert max(np.abs(as_dict(saved[0])[n] - other[n]).max() for n in other) > 1e-3


def test_the_run_stops_when_a_void_round_leaves_too_few(
    key_path: Path, identity_paths: list[Path], roster_path: Path, fingerprint: str, tmp_path: Path
) -> None:
    numbering = {100: 0, 101: 1, 102: 2}
    grid = strict_grid(
        key_path, tmp_path, identity_paths, roster_path, fingerprint, numbering, seeded_app()
    )
    strategy = strict_strategy(
        key_path, roster_path, fingerprint, min_results=3, fraction_evaluate=0.0
    )
    grid.hidden = {102}
    with pytest.raises(
        HeflRunError,
        match=r"no valid update from parties \[2\]: the round is void, and the next round's set \[0, 1\] would hold fewer than min_results=3",
    ):
        strategy.start(grid=grid, initial_arrays=initial(), num_rounds=2)  # type: ignore[arg-type]


# --- seal once ----------------------------------------------------------------------------


def node_context(config: dict, run_config: dict | None = None) -> Context:
    return Context(1, 7, config, RecordDict(), run_config or {"local-steps": 1})


def strict_config(key_path: Path, identity: Path, roster_path: Path, fingerprint: str) -> dict:
    return {
        "partition-id": 0,
        "hefl-key": str(key_path),
        "hefl-identity": str(identity),
        "hefl-roster": str(roster_path),
        "hefl-roster-fingerprint": fingerprint,
    }


def train_message(strategy: HeFedAvg, node: int = 7) -> Message:
    strategy._reset(initial())
    strategy._length = sum(v.size for v in task.initial_model().values())
    return strategy._message(node, ConfigRecord(), MessageType.TRAIN)


def test_a_resent_message_gets_the_same_sealed_bytes(
    key_path: Path, identity_paths: list[Path], roster_path: Path, fingerprint: str
) -> None:
    strategy = strict_strategy(key_path, roster_path, fingerprint)
    config = strict_config(key_path, identity_paths[1], roster_path, fingerprint)
    context = node_context(config)
    first = HeflMod()(train_message(strategy), context, client_app.train)
    assert first.content["hefl"]["party"] == 1  # the roster's number for this identity
    sealed = first.content["hefl.update"]["update"].data
    # The same round's message again (another training result): the same bytes.
    again = HeflMod()(train_message(strategy), context, client_app.train)
    assert again.content["hefl.update"]["update"].data == sealed
    # A node restarted from its state (Context.state carries the sealed record) too.
    restarted = node_context(config)
    restarted.state = RecordDict({"hefl.party": context.state.config_records["hefl.party"]})
    assert (
        HeflMod()(train_message(strategy), restarted, client_app.train)
        .content["hefl.update"]["update"]
        .data
        == sealed
    )
    # Negative control: without secure aggregation every message is a fresh encryption.
    plain = HeFedAvg(key_id=hefl.key_id(key_path), max_examples=task.MAX_EXAMPLES)
    plain_context = node_context({"partition-id": 0, "hefl-key": str(key_path)})
    updates = [
        HeflMod()(train_message(plain), plain_context, client_app.train)
        .content["hefl.update"]["update"]
        .data
        for _ in range(2)
    ]
    assert updates[0] != updates[1]


# --- refusals -----------------------------------------------------------------------------


def refusal(message: Message, context: Context) -> str:
    """What HeflMod raises for ``message`` on the node of ``context``."""
    with pytest.raises(hefl.HeflError) as raised:
        HeflMod()(message, context, client_app.train)
    return str(raised.value)


def test_the_node_refuses_a_wrong_roster_fingerprint_or_party_or_a_weakened_policy(
    key_path: Path,
    identity_paths: list[Path],
    roster_path: Path,
    fingerprint: str,
    tmp_path: Path,
) -> None:
    strategy = strict_strategy(key_path, roster_path, fingerprint)
    config = strict_config(key_path, identity_paths[0], roster_path, fingerprint)
    # The fingerprint this node compared out of band is not its roster's.
    wrong = {**config, "hefl-roster-fingerprint": "ab" * 32}
    assert f"roster fingerprint {fingerprint} is not the expected {'ab' * 32}" in refusal(
        train_message(strategy), node_context(wrong)
    )
    # A server running with another roster (another federation's, or substituted).
    stranger = tmp_path / "stranger.id"
    hefl.generate_identity(stranger)
    publics = [
        hefl.Identity.load(p).public for p in (identity_paths[0], identity_paths[1], stranger)
    ]
    other_roster = hefl.Roster(hefl.key_id(key_path), publics, min_parties=2)
    other = strict_strategy(key_path, other_roster.to_bytes(), other_roster.fingerprint)
    assert (
        f"the server's roster has fingerprint {other_roster.fingerprint}, this node's roster "
        f"(compared out of band) is {fingerprint}"
    ) in refusal(train_message(other), node_context(config))
    # An identity the roster does not list (an unknown party).
    unknown = {**config, "hefl-identity": str(stranger)}
    assert (
        f"{hefl.Identity.load(stranger).public.split()[1]} is not in the roster {fingerprint}"
        in refusal(train_message(strategy), node_context(unknown))
    )
    # The server numbers this node as another party than its roster does.
    message = train_message(strategy)
    message.content["hefl"]["party"] = 2
    assert "the server numbers this node party 2, its roster gives its identity party 0" in refusal(
        message, node_context(config)
    )
    # Weakened policies: fewer parties in a sum, another party count, no secure aggregation.
    for field, value, expected in (
        ("min-parties", 1, "min_parties: the roster says 2, the plan 1"),
        ("max-parties", 4, "parties: the roster says 3, the plan 4"),
    ):
        message = train_message(strategy)
        message.content["hefl"][field] = value
        assert expected in refusal(message, node_context(config))
    plain = HeFedAvg(key_id=hefl.key_id(key_path), max_examples=task.MAX_EXAMPLES)
    assert "mode: the roster says strict, the plan no secure aggregation" in refusal(
        train_message(plain), node_context(config)
    )
    # A strict server and a node without an identity and roster.
    bare = {"partition-id": 0, "hefl-key": str(key_path)}
    assert "the server runs strict secure aggregation and this node has no identity" in refusal(
        train_message(strategy), node_context(bare)
    )
    half = {**config}
    del half["hefl-roster"]
    assert "but not hefl-roster" in refusal(train_message(strategy), node_context(half))
    # Negative control: the same messages with the right settings are accepted.
    reply = HeflMod()(train_message(strategy), node_context(config), client_app.train)
    assert not reply.has_error() and "hefl.update" in reply.content


def test_the_node_takes_no_identity_or_roster_from_run_config(
    key_path: Path, identity_paths: list[Path], roster_path: Path, fingerprint: str
) -> None:
    strategy = strict_strategy(key_path, roster_path, fingerprint)
    config = strict_config(key_path, identity_paths[0], roster_path, fingerprint)
    # An identity (a secret) in run_config is refused: the ServerApp sees run_config.
    for run_config in (
        {"local-steps": 1, "hefl-identity": str(identity_paths[0])},
        {"local-steps": 1, "path": str(identity_paths[0])},  # its path under another name
    ):
        message = refusal(train_message(strategy), node_context(config, run_config))
        assert "run_config has a 'hefl-identity' entry" in message
    # A roster and fingerprint in run_config (public: a ServerApp may read them there) never
    # stand in for the node's own.
    public = {
        "local-steps": 1,
        "hefl-roster": str(roster_path),
        "hefl-roster-fingerprint": fingerprint,
        "hefl-identity-public": hefl.Identity.load(identity_paths[0]).public,
    }
    no_roster = {
        k: v for k, v in config.items() if k not in ("hefl-roster", "hefl-roster-fingerprint")
    }
    message = refusal(train_message(strategy), node_context(no_roster, public))
    assert "but not hefl-roster, hefl-roster-fingerprint" in message
    reply = HeflMod()(train_message(strategy), node_context(config, public), client_app.train)
    assert not reply.has_error() and "hefl.update" in reply.content


def test_the_strategy_refuses_settings_the_nodes_would(
    key_path: Path, other_key_path: Path, roster_path: Path, fingerprint: str
) -> None:
    with pytest.raises(hefl.RosterError, match=f"is not the expected {'cd' * 32}"):
        strict_strategy(key_path, roster_path, "cd" * 32)
    with pytest.raises(
        hefl.RosterError, match="the roster is for key .*, this strategy's key_id is"
    ):
        strict_strategy(other_key_path, roster_path, fingerprint)
    with pytest.raises(hefl.RosterError, match="parties: the roster says 3, the plan 4"):
        strict_strategy(key_path, roster_path, fingerprint, max_parties=4)
    with pytest.raises(hefl.RosterError, match="min_parties: the roster says 2, the plan 1"):
        strict_strategy(key_path, roster_path, fingerprint, min_results=1)
    with pytest.raises(ValueError, match="fraction_train must be 1.0"):
        strict_strategy(key_path, roster_path, fingerprint, fraction_train=0.5)
    with pytest.raises(ValueError, match="needs the roster and the roster_fingerprint"):
        HeFedAvg(key_id=hefl.key_id(key_path), max_examples=10, secure_agg="strict")
    with pytest.raises(ValueError, match="'strict' or None"):
        HeFedAvg(
            key_id=hefl.key_id(key_path),
            max_examples=10,
            secure_agg="robust",
            roster=roster_path,
            roster_fingerprint=fingerprint,
        )
    # A stricter minimum is not a weakening.
    assert strict_strategy(key_path, roster_path, fingerprint, min_results=3).min_results == 3
