"""HeflMod and HeFedAvg in one process: the protocol's branches (evaluation, partial
participation and catch-up, refusals) against an in-memory grid that calls the ClientApp
directly. The deployment engine itself is exercised in test_flower_e2e.py."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest

import hefl

pytest.importorskip("flwr")
from flwr.app import (  # noqa: E402
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp  # noqa: E402

from hefl.flower import HeflMod, HeFedAvg  # noqa: E402

sys.path.insert(0, str(Path(__file__).with_name("flower_app")))
from hefl_flower_test import client_app, task  # noqa: E402

STEPS = 3


@pytest.fixture(autouse=True, scope="module")
def task_identity() -> Iterable[None]:
    """What a ServerApp process has set before the strategy creates messages."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


class MemoryGrid:
    """The two Grid methods a strategy uses, delivering messages to in-process nodes whose
    Context (and so its state) persists across messages, as on a SuperNode."""

    def __init__(self, app: ClientApp, node_configs: dict[int, dict[str, str | int]]) -> None:
        self.app = app
        self.contexts = {
            node: Context(
                run_id=1,
                node_id=node,
                node_config=config,
                state=RecordDict(),
                run_config={"local-steps": STEPS},
            )
            for node, config in node_configs.items()
        }
        self.trained: list[list[int]] = []  # nodes that trained, per train round
        self.wipe_before_train_round: dict[int, int] = {}
        self.errors: list[str] = []

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def send_and_receive(self, messages: Iterable[Message], timeout: float = 0) -> list[Message]:
        messages = list(messages)
        training = bool(messages) and messages[0].metadata.message_type == MessageType.TRAIN
        if training and messages[0].content.config_records["config"].get("hefl.sync-only"):
            training = False
        if training:
            wiped = self.wipe_before_train_round.get(len(self.trained) + 1)
            if wiped is not None:
                self.contexts[wiped].state = RecordDict()
        replies = []
        for message in messages:
            node = message.metadata.dst_node_id
            # What crosses the wire is bytes: no object is shared with the node.
            message.content = RecordDict(_copy(message.content))
            try:
                replies.append(self.app(message, self.contexts[node]))
            except Exception as error:  # as a SuperNode does: an error reply
                self.errors.append(str(error))
                replies.append(Message(Error(code=0, reason=str(error)), reply_to=message))
        if training:
            self.trained.append(sorted(r.metadata.src_node_id for r in replies if not r.has_error()))
        return replies

    def model(self, node: int) -> dict[str, np.ndarray]:
        record = self.contexts[node].state.array_records["hefl.model"]
        return {name: array.numpy() for name, array in record.items()}


def _copy(content: RecordDict) -> dict:
    out: dict = {}
    for name, record in content.items():
        if isinstance(record, ArrayRecord):
            out[name] = ArrayRecord(
                {k: Array(a.dtype, tuple(a.shape), a.stype, bytes(a.data)) for k, a in record.items()}
            )
        else:
            out[name] = type(record)(dict(record))
    return out


@pytest.fixture(scope="module")
def key_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "hefl.key"
    hefl.generate_key(path)
    return path


def initial() -> ArrayRecord:
    return ArrayRecord({k: Array(v) for k, v in task.initial_model().items()})


def grid_for(key_path: Path, nodes: int = 3) -> MemoryGrid:
    return MemoryGrid(
        client_app.app,
        {100 + i: {"partition-id": i, "hefl-key": str(key_path)} for i in range(nodes)},
    )


def fedavg_reference(participants: list[list[int]]) -> dict[str, np.ndarray]:
    model = {k: v.astype(np.float64) for k, v in task.initial_model().items()}
    for parties in participants:
        start = {k: v.astype(np.float32) for k, v in model.items()}
        trained = [task.train(start, p, STEPS)[0] for p in parties]
        weights = [task.EXAMPLES[p] for p in parties]
        model = {
            n: sum(w * t[n].astype(np.float64) for w, t in zip(weights, trained)) / sum(weights)
            for n in model
        }
    return model


def assert_identical_and_close(grid: MemoryGrid, participants: list[list[int]]) -> None:
    models = [grid.model(node) for node in grid.contexts]
    for other in models[1:]:
        for name in models[0]:
            assert models[0][name].tobytes() == other[name].tobytes(), name
    reference = fedavg_reference(participants)
    for name in reference:
        np.testing.assert_allclose(models[0][name], reference[name], rtol=0, atol=1e-5)


def test_rounds_with_evaluation_match_plaintext_fedavg(key_path: Path) -> None:
    grid = grid_for(key_path)
    strategy = HeFedAvg(frac_bits=24, key_id=hefl.key_id(key_path), max_examples=task.MAX_EXAMPLES, max_parties=3)
    result = strategy.start(grid=grid, initial_arrays=initial(), num_rounds=2)  # type: ignore[arg-type]
    assert grid.trained == [[100, 101, 102]] * 2
    assert_identical_and_close(grid, [[0, 1, 2]] * 2)
    # Only whitelisted metrics reach the server; never num-examples.
    assert all(set(m) == {"train-loss"} for m in result.train_metrics_clientapp.values())
    assert all(set(m) == {"eval-acc"} for m in result.evaluate_metrics_clientapp.values())
    assert all(a.stype == hefl.STYPE for a in result.arrays.values())


def test_nodes_that_miss_rounds_catch_up(key_path: Path) -> None:
    """One node of three trains per round, no evaluation: every node misses rounds, and the
    final synchronization brings all to the same model."""
    grid = grid_for(key_path)
    strategy = HeFedAvg(
        frac_bits=24,
        key_id=hefl.key_id(key_path),
        max_examples=task.MAX_EXAMPLES,
        fraction_train=0.34,
        min_train_nodes=1,
        fraction_evaluate=0.0,
    )
    strategy.start(grid=grid, initial_arrays=initial(), num_rounds=4)  # type: ignore[arg-type]
    assert [len(r) for r in grid.trained] == [1] * 4
    assert_identical_and_close(grid, [[n - 100 for n in r] for r in grid.trained])
    assert strategy.synchronize(grid) == []  # type: ignore[arg-type]


def test_a_node_that_lost_its_state_is_resent_everything(key_path: Path) -> None:
    """Node 101 restarts before round 2 (its state is gone): its round-2 reply is an error,
    and round 3 resends it the initial arrays and every aggregate."""
    grid = grid_for(key_path)
    grid.wipe_before_train_round = {2: 101}
    strategy = HeFedAvg(
        frac_bits=24,
        key_id=hefl.key_id(key_path), max_examples=task.MAX_EXAMPLES, fraction_evaluate=0.0
    )
    strategy.start(grid=grid, initial_arrays=initial(), num_rounds=3)  # type: ignore[arg-type]
    assert "no model" in grid.errors[0]
    assert strategy._aggregates[1][1] == 2
    assert_identical_and_close(grid, [[0, 1, 2], [0, 2], [0, 1, 2]])


def mod_context(node_config: dict, run_config: dict | None = None) -> Context:
    return Context(1, 7, node_config, RecordDict(), run_config or {})


def a_train_message(strategy: HeFedAvg, node: int = 7) -> Message:
    strategy._initial = initial()
    strategy._length = sum(v.size for v in task.initial_model().values())
    return strategy._message(node, ConfigRecord(), MessageType.TRAIN)


def test_the_mod_takes_no_key_from_run_config(key_path: Path) -> None:
    strategy = HeFedAvg(frac_bits=24, key_id=hefl.key_id(key_path), max_examples=10)
    message = a_train_message(strategy)
    for context in (
        mod_context({"partition-id": 0}, {"hefl-key": str(key_path)}),
        mod_context({"hefl-key": str(key_path)}, {"path": str(key_path)}),
    ):
        with pytest.raises(hefl.HeflError, match="run_config"):
            HeflMod()(message, context, lambda m, c: m)


def test_the_mod_needs_a_key_and_the_right_one(
    key_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HEFL_KEY", raising=False)
    strategy = HeFedAvg(frac_bits=24, key_id=hefl.key_id(key_path), max_examples=task.MAX_EXAMPLES)
    with pytest.raises(hefl.HeflError, match="no hefl key on this node"):
        HeflMod()(a_train_message(strategy), mod_context({}), lambda m, c: m)
    other = tmp_path / "other.key"
    hefl.generate_key(other)
    with pytest.raises(hefl.KeyMismatchError, match="the server expects"):
        HeflMod()(a_train_message(strategy), mod_context({"hefl-key": str(other)}), lambda m, c: m)
    monkeypatch.setenv("HEFL_KEY", str(key_path))
    reply = HeflMod()(
        a_train_message(strategy),
        mod_context({"partition-id": 0}, {"local-steps": 1}),
        client_app.train,
    )
    assert [a.stype for a in reply.content["arrays"].values()] == [hefl.STYPE]


def test_the_mod_refuses_a_reply_without_examples_or_beyond_max(key_path: Path) -> None:
    strategy = HeFedAvg(frac_bits=24, key_id=hefl.key_id(key_path), max_examples=100)
    context = {"partition-id": 0, "hefl-key": str(key_path)}

    def train(examples: object):  # type: ignore[no-untyped-def]
        def reply(msg: Message, ctx: Context) -> Message:
            metrics = MetricRecord({} if examples is None else {"num-examples": examples})
            arrays = msg.content["arrays"]
            return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)

        return reply

    with pytest.raises(hefl.HeflError, match="needs a positive 'num-examples'"):
        HeflMod()(a_train_message(strategy), mod_context(context), train(None))
    with pytest.raises(hefl.HeflError, match="more than max_examples=100"):
        HeflMod()(a_train_message(strategy), mod_context(context), train(101))


def _reply(node: int, arrays: ArrayRecord, applied: int = 1) -> Message:
    message = Message(RecordDict(), dst_node_id=node, message_type=MessageType.TRAIN)
    content = RecordDict({"arrays": arrays, "metrics": MetricRecord({"hefl.applied": applied})})
    return Message(content, reply_to=message)


def test_the_server_refuses_plaintext_stale_and_foreign_replies(
    key_path: Path, tmp_path: Path
) -> None:
    key_id = hefl.key_id(key_path)
    strategy = HeFedAvg(frac_bits=24, key_id=key_id, max_examples=10)
    strategy._length = 4
    strategy._aggregates = [(b"round 1's aggregate", 3)]  # the current model has applied it
    envelope = hefl.Envelope(hefl.SecretKey.load(key_path), 4, frac_bits=24)
    sealed = envelope.seal(np.ones(4, np.float32), 0.5)
    other = tmp_path / "other.key"
    hefl.generate_key(other)
    foreign = hefl.Envelope(hefl.SecretKey.load(other), 4, frac_bits=24).seal(
        np.ones(4, np.float32)
    )

    def cipher(data: bytes) -> ArrayRecord:
        return ArrayRecord({"hefl.update": Array("uint8", (len(data),), hefl.STYPE, data)})

    replies = [
        _reply(1, ArrayRecord({"w": Array(np.ones(4, np.float32))})),  # plaintext
        _reply(2, cipher(sealed), applied=0),  # trained on an older model: stale
        _reply(3, cipher(foreign)),  # another key
        _reply(4, cipher(sealed[:-1])),  # truncated
        _reply(5, cipher(sealed)),  # the only valid one
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None
    assert strategy._aggregates[1][1] == 1
    mean = envelope.open(strategy._aggregates[1][0], 1)
    assert np.array_equal(mean, np.ones(4, np.float32))


def test_the_server_refuses_evaluate_fn_and_a_bad_key_id() -> None:
    strategy = HeFedAvg(frac_bits=24, key_id="ab" * 32, max_examples=10)
    with pytest.raises(ValueError, match="holds no model"):
        strategy.start(grid=None, initial_arrays=initial(), evaluate_fn=lambda r, a: None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="64 hex digits"):
        HeFedAvg(frac_bits=24, key_id="not a key id", max_examples=10)
    with pytest.raises(ValueError, match="max_examples"):
        HeFedAvg(frac_bits=24, key_id="ab" * 32, max_examples=0)


def test_the_server_refuses_non_float32_models() -> None:
    strategy = HeFedAvg(frac_bits=24, key_id="ab" * 32, max_examples=10)
    record = ArrayRecord({"w": Array(np.ones(3, np.float64))})
    with pytest.raises(TypeError, match="float32"):
        strategy.start(grid=None, initial_arrays=record)  # type: ignore[arg-type]


def test_saved_model_file_is_private(key_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "node" / "model.npz"
    strategy = HeFedAvg(frac_bits=24, key_id=hefl.key_id(key_path), max_examples=task.MAX_EXAMPLES)
    context = mod_context(
        {"partition-id": 0, "hefl-key": str(key_path), "hefl-model-out": str(out)},
        {"local-steps": 1},
    )
    HeflMod()(a_train_message(strategy), context, client_app.train)
    assert os.stat(out).st_mode & 0o777 == 0o600
    with np.load(out) as saved:
        assert int(saved["hefl_applied"]) == 0
        assert np.array_equal(saved["w1"], task.initial_model()["w1"])
