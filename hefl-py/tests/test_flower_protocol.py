"""HeflMod and HeFedAvg in one process: the protocol's branches (evaluation, partial
participation, catch-up and resync, the skip rule, failures, metrics, model export) against
an in-memory grid that calls the ClientApps directly and keeps each node's Context as a
SuperNode does. The deployment engine itself is exercised in test_flower_e2e.py."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import SimpleNamespace

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
from flwr.serverapp.strategy import FedAvg  # noqa: E402

from hefl.flower import HeflMod, HeflRunError, HeFedAvg, load_model  # noqa: E402
from wire import garbage_under_header  # noqa: E402

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


def _copy(content: RecordDict) -> dict:
    """What crosses the wire is bytes: no object is shared between server and node."""
    out: dict = {}
    for name, record in content.items():
        if isinstance(record, ArrayRecord):
            out[name] = ArrayRecord(
                {
                    k: Array(a.dtype, tuple(a.shape), a.stype, bytes(a.data))
                    for k, a in record.items()
                }
            )
        else:
            out[name] = type(record)(dict(record))
    return out


def _bytes(content: RecordDict) -> int:
    return sum(len(a.data) for record in content.array_records.values() for a in record.values())


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def logged() -> Iterator[Records]:
    """Every line of Flower's logger, and so of hefl.flower's (its child, flwr.hefl)."""
    records = Records()
    logger = logging.getLogger("flwr")
    level = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)
    yield records
    logger.removeHandler(records)
    logger.setLevel(level)


class MemoryGrid:
    """The two Grid methods a strategy uses, delivering messages to in-process nodes. Each
    node's Context persists across messages, and is left as it was when its ClientApp raises,
    as on a SuperNode."""

    def __init__(
        self,
        app: ClientApp,
        node_configs: dict[int, dict[str, str | int]],
        run_config: dict | None = None,
    ) -> None:
        self.apps = {node: app for node in node_configs}
        self.run = SimpleNamespace(run_id=1)  # Grid.run: what HeFedAvg reads of it
        self.contexts = {
            node: Context(
                run_id=1,
                node_id=node,
                node_config=config,
                state=RecordDict(),
                run_config=run_config or {"local-steps": STEPS},
            )
            for node, config in node_configs.items()
        }
        self.trained: list[list[int]] = []  # nodes that sent an update, per train round
        self.wipe_before_train_round: dict[int, int] = {}
        self.hidden: set[int] = set()  # nodes not connected
        self.errors: list[str] = []
        self.sent_bytes: dict[int, list[int]] = {node: [] for node in node_configs}
        self.messages: dict[int, list[RecordDict]] = {node: [] for node in node_configs}

    def get_node_ids(self) -> Iterable[int]:
        return [node for node in self.contexts if node not in self.hidden]

    def send_and_receive(self, messages: Iterable[Message], timeout: float = 0) -> list[Message]:
        messages = list(messages)
        training = bool(messages) and messages[0].metadata.message_type == MessageType.TRAIN
        if training and messages[0].content.config_records["hefl"].get("sync-only"):
            training = False
        if training:
            wiped = self.wipe_before_train_round.get(len(self.trained) + 1)
            if wiped is not None:
                self.contexts[wiped].state = RecordDict()
        replies = []
        for message in messages:
            node = message.metadata.dst_node_id
            message.content = RecordDict(_copy(message.content))
            self.sent_bytes[node].append(_bytes(message.content))
            self.messages[node].append(message.content)
            context = self.contexts[node]
            kept = RecordDict(_copy(context.state))
            try:
                replies.append(self.apps[node](message, context))
            except Exception as error:  # as a SuperNode does: an error reply, state unchanged
                context.state = kept
                self.errors.append(str(error))
                reason = f"{type(error)}:<'{error}'>"
                replies.append(Message(Error(code=2, reason=reason), reply_to=message))
        if training:
            self.trained.append(
                sorted(
                    r.metadata.src_node_id
                    for r in replies
                    if not r.has_error() and "hefl.update" in r.content
                )
            )
        return replies


def initial() -> ArrayRecord:
    return ArrayRecord({k: Array(v) for k, v in task.initial_model().items()})


def grid_for(
    key_path: Path, models: Path, nodes: int = 3, app: ClientApp | None = None, **extra: str
) -> MemoryGrid:
    return MemoryGrid(
        app or client_app.app,
        {
            100 + i: {
                "partition-id": i,
                "hefl-key": str(key_path),
                "hefl-model-out": str(models / f"node{i}.npz"),
                **extra,
            }
            for i in range(nodes)
        },
    )


def strategy_for(key_path: Path, **kwargs: object) -> HeFedAvg:
    settings: dict = {"frac_bits": 24, "max_examples": task.MAX_EXAMPLES, **kwargs}
    return HeFedAvg(key_id=hefl.key_id(key_path), **settings)


def finals(models: Path, nodes: int = 3) -> list[hefl.flower.SavedModel]:
    return [load_model(models / f"node{i}.npz") for i in range(nodes)]


def as_dict(saved: hefl.flower.SavedModel) -> dict[str, np.ndarray]:
    return {name: array.numpy() for name, array in saved.arrays.items()}


def fedavg_reference(participants: list[list[int]]) -> dict[str, np.ndarray]:
    """Plaintext FedAvg, weighted by examples; an empty round leaves the model as it is."""
    model = {k: v.astype(np.float64) for k, v in task.initial_model().items()}
    for parties in participants:
        if not parties:
            continue
        start = {k: v.astype(np.float32) for k, v in model.items()}
        trained = [task.train(start, p, STEPS)[0] for p in parties]
        weights = [task.EXAMPLES[p] for p in parties]
        model = {
            n: sum(w * t[n].astype(np.float64) for w, t in zip(weights, trained)) / sum(weights)
            for n in model
        }
    return model


def assert_identical_and_close(
    models: Path, participants: list[list[int]], nodes: int = 3
) -> list[hefl.flower.SavedModel]:
    saved = finals(models, nodes)
    for other in saved[1:]:
        assert other.rounds == saved[0].rounds and other.skipped == saved[0].skipped
        for name in saved[0].arrays:
            assert saved[0].arrays[name].data == other.arrays[name].data, name
    reference = fedavg_reference(participants)
    for name, value in as_dict(saved[0]).items():
        np.testing.assert_allclose(value, reference[name], rtol=0, atol=1e-5)
    return saved


# --- whole runs -------------------------------------------------------------------------


def test_rounds_with_evaluation_match_plaintext_fedavg(key_path: Path, tmp_path: Path) -> None:
    grid = grid_for(key_path, tmp_path)
    strategy = strategy_for(key_path)
    result = strategy.start(grid=grid, initial_arrays=initial(), num_rounds=2)  # type: ignore[arg-type]
    assert grid.trained == [[100, 101, 102]] * 2
    saved = assert_identical_and_close(tmp_path, [[0, 1, 2]] * 2)
    # The model, read back from every node's file and evaluated: as good as plaintext FedAvg.
    reference = {k: v.astype(np.float32) for k, v in fedavg_reference([[0, 1, 2]] * 2).items()}
    for node in saved:
        assert node.rounds == 2 and node.skipped == []
        for p in range(3):
            assert task.accuracy(as_dict(node), p) == task.accuracy(reference, p)
    # Only whitelisted metrics reach the server; never num-examples.
    assert all(
        set(m) == {"train-loss", "hefl.clipped"} for m in result.train_metrics_clientapp.values()
    )
    assert all(set(m) == {"eval-acc"} for m in result.evaluate_metrics_clientapp.values())
    assert len(result.arrays) == 0  # the model lives on the nodes
    # No record named "arrays" travels: user code cannot mistake ciphertext for a model.
    for contents in grid.messages.values():
        for content in contents:
            assert "arrays" not in content
            for name, record in content.array_records.items():
                assert name.startswith("hefl.")
                if name != "hefl.initial":
                    assert all(a.stype == hefl.STYPE for a in record.values())


def test_nodes_that_miss_rounds_catch_up(key_path: Path, tmp_path: Path) -> None:
    """One node of three trains per round, no evaluation: every node misses rounds, and the
    final synchronization brings all to the same model."""
    grid = grid_for(key_path, tmp_path)
    strategy = strategy_for(key_path, fraction_train=0.34, min_train_nodes=1, fraction_evaluate=0.0)
    strategy.start(grid=grid, initial_arrays=initial(), num_rounds=4)  # type: ignore[arg-type]
    assert [len(r) for r in grid.trained] == [1] * 4
    assert_identical_and_close(tmp_path, [[n - 100 for n in r] for r in grid.trained])
    assert strategy.synchronize(grid) == []  # type: ignore[arg-type]


def test_a_node_that_lost_its_state_is_resent_everything(key_path: Path, tmp_path: Path) -> None:
    """Node 101 restarts before round 2 (its state is gone): it says so instead of training,
    and round 3 sends it the initial arrays and every aggregate."""
    grid = grid_for(key_path, tmp_path)
    grid.wipe_before_train_round = {2: 101}
    strategy = strategy_for(key_path, fraction_evaluate=0.0)
    strategy.start(grid=grid, initial_arrays=initial(), num_rounds=3)  # type: ignore[arg-type]
    assert grid.trained == [[100, 101, 102], [100, 102], [100, 101, 102]]
    assert "hefl.initial" in grid.messages[101][2]
    assert_identical_and_close(tmp_path, [[0, 1, 2], [0, 2], [0, 1, 2]])


# --- the skip rule ----------------------------------------------------------------------


def garbage_in_round(round_: int) -> Callable[[Message, Context, Callable], Message]:
    """A mod around HeflMod that replaces the node's update with garbage under a
    well-formed header in Flower round ``round_``: a malicious key holder."""

    def mod(
        msg: Message, ctx: Context, call_next: Callable[[Message, Context], Message]
    ) -> Message:
        reply = call_next(msg, ctx)
        server_round = msg.content.config_records["config"].get("server-round")
        if server_round == round_ and not reply.has_error() and "hefl.update" in reply.content:
            update = reply.content["hefl.update"]["update"]
            bad = garbage_under_header(bytes(update.data))
            reply.content["hefl.update"] = ArrayRecord(
                {"update": Array("uint8", (len(bad),), hefl.STYPE, bad)}
            )
        return reply

    return mod


@pytest.mark.parametrize("garbage", [True, False])
def test_a_node_sending_garbage_is_skipped_by_every_node(
    key_path: Path, tmp_path: Path, logged: Records, garbage: bool
) -> None:
    grid = grid_for(key_path, tmp_path)
    if garbage:  # node 102: the test app's functions, and garbage in Flower round 2
        bad = ClientApp(mods=[garbage_in_round(2), HeflMod(train_metrics=["train-loss"])])
        bad.train()(client_app.train)
        bad.evaluate()(client_app.evaluate)
        grid.apps[102] = bad
    strategy = strategy_for(key_path, fraction_evaluate=0.0)
    strategy.start(grid=grid, initial_arrays=initial(), num_rounds=3)  # type: ignore[arg-type]
    rounds = [[0, 1, 2], [], [0, 1, 2]] if garbage else [[0, 1, 2]] * 3
    saved = assert_identical_and_close(tmp_path, rounds)
    assert [s.skipped for s in saved] == ([[1]] * 3 if garbage else [[]] * 3)
    # Each node logs its skip, and the server each node's report, with the reason.
    skips = [line for line in logged.lines if "skipped round 1" in line]
    assert len([s for s in skips if s.startswith("node ")]) == (3 if garbage else 0)
    assert len([s for s in skips if s.startswith("HeflMod: ")]) == (3 if garbage else 0)
    assert all("total weight" in s for s in skips)


# --- failures stop the run --------------------------------------------------------------


def test_a_round_without_valid_results_stops_the_run(
    key_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HEFL_KEY", raising=False)
    grid = grid_for(key_path, tmp_path)
    for context in grid.contexts.values():
        del context.node_config["hefl-key"]  # no node has a key
    with pytest.raises(HeflRunError) as raised:
        strategy_for(key_path).start(grid=grid, initial_arrays=initial(), num_rounds=3)  # type: ignore[arg-type]
    message = str(raised.value)
    assert "round 1: 0 valid updates, fewer than min_results=1: the run stops" in message
    for node in (100, 101, 102):
        assert f"node {node}: " in message
    assert message.count("no hefl key on this node") == 3
    assert "HeflMod is missing" not in message


def test_num_examples_beyond_max_examples_stops_the_run(key_path: Path, tmp_path: Path) -> None:
    grid = grid_for(key_path, tmp_path)
    strategy = strategy_for(key_path, max_examples=50)  # partitions hold 120, 200, 80
    with pytest.raises(HeflRunError) as raised:
        strategy.start(grid=grid, initial_arrays=initial(), num_rounds=2)  # type: ignore[arg-type]
    message = str(raised.value)
    assert "round 1: 0 valid updates" in message
    for node, examples in zip((100, 101, 102), task.EXAMPLES):
        assert f"node {node}: " in message
        assert f"num-examples is {examples}, more than max_examples=50" in message


def test_fewer_results_than_min_results_stops_the_run(
    key_path: Path, other_key_path: Path, tmp_path: Path
) -> None:
    grid = grid_for(key_path, tmp_path)
    grid.contexts[101].node_config["hefl-key"] = str(other_key_path)
    with pytest.raises(
        HeflRunError,
        match=r"(?s)2 valid updates, fewer than min_results=3.*node 101: .*KeyMismatchError",
    ):
        strategy_for(key_path, min_results=3).start(
            grid=grid, initial_arrays=initial(), num_rounds=2
        )  # type: ignore[arg-type]
    # Negative control: with min_results 2 the same run goes on without node 101.
    grid = grid_for(key_path, tmp_path / "two")
    grid.contexts[101].node_config["hefl-key"] = str(other_key_path)
    strategy_for(key_path, min_results=2).start(grid=grid, initial_arrays=initial(), num_rounds=2)  # type: ignore[arg-type]
    assert grid.trained == [[100, 102]] * 2


def test_a_missing_heflmod_is_named_as_the_likely_cause(key_path: Path, tmp_path: Path) -> None:
    plain = ClientApp()  # the same functions, without HeflMod
    plain.train()(client_app.train)
    plain.evaluate()(client_app.evaluate)
    grid = grid_for(key_path, tmp_path, app=plain)
    with pytest.raises(HeflRunError) as raised:
        strategy_for(key_path).start(grid=grid, initial_arrays=initial(), num_rounds=1)  # type: ignore[arg-type]
    message = str(raised.value)
    assert "likely cause: HeflMod is missing from the ClientApp" in message
    assert message.count("KeyError") == 3  # the train function found no "arrays"


# --- metrics ----------------------------------------------------------------------------


def metrics_app(mod: HeflMod) -> ClientApp:
    """The test task, replying with a whitelisted, a secret and the examples metric."""
    app = ClientApp(mods=[mod])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        index = int(context.node_config["partition-id"])
        model = {n: a.numpy() for n, a in msg.content["arrays"].items()}
        trained, _ = task.train(model, index, 1)
        metrics = MetricRecord(
            {"num-examples": task.EXAMPLES[index], "loss": float(index + 1), "secret": 7.0}
        )
        arrays = ArrayRecord({k: Array(v) for k, v in trained.items()})
        return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)

    return app


def test_metrics_are_reported_as_documented(
    key_path: Path, tmp_path: Path, logged: Records
) -> None:
    mod = HeflMod(train_metrics=["loss", "num-examples"])
    assert any("'num-examples' in train_metrics is never sent" in line for line in logged.lines)
    grid = grid_for(key_path, tmp_path, app=metrics_app(mod))
    strategy = strategy_for(key_path, fraction_evaluate=0.0)
    result = strategy.start(grid=grid, initial_arrays=initial(), num_rounds=3)  # type: ignore[arg-type]
    for metrics in result.train_metrics_clientapp.values():
        assert set(metrics) == {"loss", "hefl.clipped"}
        # Unweighted: (1 + 2 + 3) / 3, not the example-weighted (120 + 400 + 240) / 400.
        assert metrics["loss"] == pytest.approx(2.0)
        assert metrics["loss"] != pytest.approx((120 + 400 + 240) / 400)
    dropped = [line for line in logged.lines if "not sending train metric 'secret'" in line]
    assert len(dropped) == 1  # once, over 3 rounds of 3 nodes
    assert any("unweighted mean of the whitelisted ones" in line for line in logged.lines)
    assert not any("Weighted by" in line for line in logged.lines)
    # Negative control: FedAvg's own summary says it weights, through the same loggers.
    FedAvg.summary(strategy)
    assert any("Weighted by: 'num-examples'" in line for line in logged.lines)


# --- the clip ---------------------------------------------------------------------------


def test_an_update_beyond_the_clip_is_clipped_and_counted(
    key_path: Path, tmp_path: Path, logged: Records
) -> None:
    app = ClientApp(mods=[HeflMod()])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        model = {n: a.numpy().copy() for n, a in msg.content["arrays"].items()}
        model["b2"][0] += 40.0  # an update of +40: 5x the clip
        model["b2"][1] += 7.5  # within it
        arrays = ArrayRecord({k: Array(v) for k, v in model.items()})
        index = int(context.node_config["partition-id"])
        metrics = MetricRecord({"num-examples": task.EXAMPLES[index]})
        return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)

    grid = grid_for(key_path, tmp_path, app=app)
    strategy = strategy_for(key_path, fraction_evaluate=0.0)
    result = strategy.start(grid=grid, initial_arrays=initial(), num_rounds=1)  # type: ignore[arg-type]
    assert result.train_metrics_clientapp[1]["hefl.clipped"] == 3  # one value on each node
    assert sum("1 of 387 update values were beyond [-8, 8]" in line for line in logged.lines) == 3
    assert any("3 update values beyond [-8, 8] were clipped" in line for line in logged.lines)
    b2 = as_dict(finals(tmp_path)[0])["b2"]
    start = task.initial_model()["b2"]
    assert abs(b2[0] - (start[0] + 8.0)) <= 2.0**-24 + 1e-6  # clipped, not scaled
    assert abs(b2[1] - (start[1] + 7.5)) <= 2.0**-24 + 1e-6


@pytest.mark.parametrize("max_examples", [1_000, 10_000_000])
def test_the_error_bound_holds_whatever_max_examples(
    key_path: Path, tmp_path: Path, max_examples: int
) -> None:
    """One round of HE FedAvg at 2^-14 with 3 nodes (the most parties for which 10^7 examples
    still fit at 2^-14): every value of the model is within 2^-14 of plaintext FedAvg of the
    float32 updates, plus the float32 roundings of the mean and of the model addition, with
    max_examples 10^3 as with 10^7."""
    grid = grid_for(key_path, tmp_path)
    strategy = strategy_for(
        key_path, max_examples=max_examples, max_parties=3, frac_bits=14, fraction_evaluate=0.0
    )
    strategy.start(grid=grid, initial_arrays=initial(), num_rounds=1)  # type: ignore[arg-type]
    start = task.initial_model()
    trained = [task.train(start, p, STEPS)[0] for p in range(3)]
    model = as_dict(finals(tmp_path)[0])
    worst = 0.0
    for name, value in start.items():
        updates = [(t[name] - value).astype(np.float64) for t in trained]  # float32 updates
        mean = sum(n * u for n, u in zip(task.EXAMPLES, updates, strict=True)) / sum(task.EXAMPLES)
        error = np.abs(model[name] - (value + mean))
        slack = np.spacing(np.abs(mean).astype(np.float32)) + np.spacing(np.abs(model[name]))
        assert np.all(error <= 2.0**-14 + slack), (name, error.max() / 2.0**-14)
        worst = max(worst, float(error.max()))
    assert worst > 2.0**-16  # the bound is not loose by orders of magnitude


# --- catch-up and resync ----------------------------------------------------------------


def test_catch_up_is_bounded_for_a_node_that_stays_behind(
    key_path: Path, other_key_path: Path, tmp_path: Path
) -> None:
    """Node 102 has the wrong key: it fails every round. It is sent each aggregate once, so
    its messages stay the size of one aggregate over 20 rounds instead of growing."""
    grid = grid_for(key_path, tmp_path)
    grid.contexts[102].node_config["hefl-key"] = str(other_key_path)
    strategy = strategy_for(key_path, fraction_evaluate=0.0, frac_bits=16)
    strategy.start(grid=grid, initial_arrays=initial(), num_rounds=20)  # type: ignore[arg-type]
    assert grid.trained == [[100, 101]] * 20
    behind, healthy = grid.sent_bytes[102], grid.sent_bytes[100]
    one_aggregate = max(healthy[1:20])  # a healthy node gets one aggregate per round
    assert len(behind) == 21  # 20 rounds and the final synchronization
    assert max(behind[1:]) <= one_aggregate, (behind, one_aggregate)
    assert sum(behind) <= behind[0] + 20 * one_aggregate
    print(
        f"catch-up bytes to the node behind over 20 rounds: {sum(behind)} "
        f"(first message {behind[0]}, one aggregate {one_aggregate}); "
        f"re-sending every missed aggregate would be {behind[0] + 190 * one_aggregate}"
    )


def tiny_app() -> ClientApp:
    """A model of 8 values whose update is a fixed step per partition: 100 rounds are fast."""
    app = ClientApp(mods=[HeflMod()])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        index = int(context.node_config["partition-id"])
        w = msg.content["arrays"]["w"].numpy()
        step = np.linspace(-0.01, 0.01, w.size, dtype=np.float32) * np.float32(index + 1)
        arrays = ArrayRecord({"w": Array((w + step).astype(np.float32))})
        metrics = MetricRecord({"num-examples": 10 * (index + 1)})
        return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)

    return app


def test_a_node_kept_behind_for_100_rounds_resyncs(key_path: Path, tmp_path: Path) -> None:
    """Node 102 trains in round 1, then is disconnected for 100 rounds: snapshots every 10
    rounds, so the server keeps 1 aggregate when it is back; it resyncs from the snapshot of
    round 100 and ends with the others' model, bit for bit."""
    grid = grid_for(key_path, tmp_path, app=tiny_app())

    class Disconnecting(HeFedAvg):
        def configure_train(self, server_round, arrays, config, grid_):  # type: ignore[no-untyped-def]
            grid.hidden = {102} if 2 <= server_round <= 101 else set()
            return super().configure_train(server_round, arrays, config, grid_)

    strategy = Disconnecting(
        key_id=hefl.key_id(key_path), max_examples=30, snapshot_every=10, fraction_evaluate=0.0
    )
    tiny = ArrayRecord({"w": Array(np.zeros(8, np.float32))})
    strategy.start(grid=grid, initial_arrays=tiny, num_rounds=104)  # type: ignore[arg-type]
    back = grid.messages[102][1]  # round 102, 101 aggregates behind
    assert "hefl.initial" not in back and "hefl.snapshot" in back
    assert back["hefl"]["snapshot-round"] == 100
    assert list(back["hefl.aggregates"]) == ["round-100"]
    assert grid.trained[0] == grid.trained[-1] == [100, 101, 102]
    saved = finals(tmp_path)
    assert [s.rounds for s in saved] == [104] * 3
    assert saved[2].arrays["w"].data == saved[0].arrays["w"].data == saved[1].arrays["w"].data
    assert np.abs(saved[0].arrays["w"].numpy()).max() > 0.5  # it did move


# --- the model --------------------------------------------------------------------------


@pytest.mark.parametrize("setting", ["run-config", "environment"])
def test_every_node_writes_its_model_where_the_run_config_says(
    key_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    directory = tmp_path / "models"
    run_config: dict = {"local-steps": STEPS}
    if setting == "run-config":
        run_config["hefl-model-dir"] = str(directory)
    else:
        monkeypatch.setenv("HEFL_MODEL_DIR", str(directory))
    grid = MemoryGrid(
        client_app.app,
        {100 + i: {"partition-id": i, "hefl-key": str(key_path)} for i in range(3)},
        run_config=run_config,
    )
    # Only node 100 trains and evaluates; the others get the model at the end only.
    strategy = strategy_for(key_path, fraction_train=0.34, min_train_nodes=1, fraction_evaluate=0.0)
    strategy.start(grid=grid, initial_arrays=initial(), num_rounds=2)  # type: ignore[arg-type]
    files = sorted(directory.iterdir())
    assert [f.name for f in files] == ["node-100.npz", "node-101.npz", "node-102.npz"]
    saved = [load_model(f) for f in files]
    assert {s.rounds for s in saved} == {2}
    for s in saved[1:]:
        for name in s.arrays:
            assert s.arrays[name].data == saved[0].arrays[name].data
    for f in files:
        assert os.stat(f).st_mode & 0o777 == 0o600
    # Evaluated as any model: as accurate as plaintext FedAvg of the same rounds.
    reference = fedavg_reference([[n - 100 for n in r] for r in grid.trained])
    reference32 = {k: v.astype(np.float32) for k, v in reference.items()}
    for p in range(3):
        assert task.accuracy(as_dict(saved[0]), p) == task.accuracy(reference32, p)


# --- the mod's refusals -----------------------------------------------------------------


def mod_context(node_config: dict, run_config: dict | None = None) -> Context:
    return Context(1, 7, node_config, RecordDict(), run_config or {})


def a_train_message(strategy: HeFedAvg, node: int = 7) -> Message:
    strategy._reset(initial())
    strategy._length = sum(v.size for v in task.initial_model().values())
    return strategy._message(node, ConfigRecord(), MessageType.TRAIN)


def test_the_mod_takes_no_key_from_run_config(key_path: Path) -> None:
    strategy = strategy_for(key_path, max_examples=10)
    message = a_train_message(strategy)
    for context in (
        mod_context({"partition-id": 0}, {"hefl-key": str(key_path)}),
        mod_context({"hefl-key": str(key_path)}, {"path": str(key_path)}),
    ):
        with pytest.raises(hefl.HeflError, match="run_config"):
            HeflMod()(message, context, lambda m, c: m)


def test_the_mod_needs_a_key_and_the_right_one(
    key_path: Path, other_key_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HEFL_KEY", raising=False)
    strategy = strategy_for(key_path)
    with pytest.raises(hefl.HeflError, match="no hefl key on this node"):
        HeflMod()(a_train_message(strategy), mod_context({}), lambda m, c: m)
    with pytest.raises(hefl.KeyMismatchError, match="the server expects"):
        HeflMod()(
            a_train_message(strategy),
            mod_context({"hefl-key": str(other_key_path)}),
            lambda m, c: m,
        )
    monkeypatch.setenv("HEFL_KEY", str(key_path))
    reply = HeflMod()(
        a_train_message(strategy),
        mod_context({"partition-id": 0}, {"local-steps": 1}),
        client_app.train,
    )
    assert [a.stype for a in reply.content["hefl.update"].values()] == [hefl.STYPE]
    assert "arrays" not in reply.content


@pytest.mark.parametrize(
    "examples, match",
    [
        (None, "needs 'num-examples', a positive integer"),
        (12.5, "a positive integer .* got 12.5"),
        (0, "a positive integer .* got 0"),
        (101, "more than max_examples=100"),
    ],
)
def test_the_mod_refuses_a_reply_without_valid_examples(
    key_path: Path, examples: object, match: str
) -> None:
    strategy = strategy_for(key_path, max_examples=100)
    context = mod_context({"partition-id": 0, "hefl-key": str(key_path)})

    def train(msg: Message, ctx: Context) -> Message:
        metrics = MetricRecord({} if examples is None else {"num-examples": examples})  # type: ignore[dict-item]
        return Message(
            RecordDict({"arrays": msg.content["arrays"], "metrics": metrics}), reply_to=msg
        )

    reply = HeflMod()(a_train_message(strategy), context, train)
    assert reply.has_error()
    assert re.search(match, reply.error.reason), reply.error.reason
    # The node keeps what it applied: its state is saved, on the server's round.
    assert "hefl.party" in context.state.config_records


def test_an_integral_float_count_is_accepted(key_path: Path) -> None:
    strategy = strategy_for(key_path, max_examples=100)
    context = mod_context({"partition-id": 0, "hefl-key": str(key_path)})

    def train(msg: Message, ctx: Context) -> Message:
        metrics = MetricRecord({"num-examples": 40.0})
        return Message(
            RecordDict({"arrays": msg.content["arrays"], "metrics": metrics}), reply_to=msg
        )

    assert not HeflMod()(a_train_message(strategy), context, train).has_error()


def _reply(node: int, content: dict, next_round: int = 1) -> Message:
    message = Message(RecordDict(), dst_node_id=node, message_type=MessageType.TRAIN)
    content = {**content, "hefl": ConfigRecord({"next-round": next_round})}
    return Message(RecordDict(content), reply_to=message)


def test_the_server_refuses_plaintext_stale_and_foreign_replies(
    key_path: Path, other_key_path: Path
) -> None:
    key_id = hefl.key_id(key_path)
    strategy = HeFedAvg(key_id=key_id, max_examples=10, max_parties=5)
    strategy._reset(initial())
    strategy._length = 4
    strategy._kept = {0: hefl.flower._Kept([0, 1], b"round 0's aggregate")}  # the current model has applied it
    strategy._round = 1
    strategy._sampled = list(range(1, 7))
    for node in strategy._sampled:
        strategy._view(node)  # nodes 1 to 6 are parties 0 to 5

    def sealed_by(path: Path) -> tuple[bytes, str]:
        """Party 4's upload for round 1 (it applied a sum of round 0) and its run."""
        party = hefl.Party(
            hefl.SecretKey.load(path),
            np.zeros(4, np.float32),
            max_parties=5,
            max_examples=10,
            party=4,
        )
        first = hefl.KeylessSum(
            hefl.key_id(path), 4, max_parties=5, max_examples=10, run=party.fingerprint
        )
        first.add(party.seal(np.zeros(4, np.float32), 1)[0], 4)
        assert party.receive(0, [4], first.to_bytes())[0] == "applied"
        return party.seal(np.ones(4, np.float32), 5)[0], party.fingerprint

    (sealed, run), (foreign, _) = sealed_by(key_path), sealed_by(other_key_path)
    strategy._run = run  # what start() computes from the settings and Flower's run id

    def cipher(data: bytes) -> ArrayRecord:
        return ArrayRecord({"update": Array("uint8", (len(data),), hefl.STYPE, data)})

    replies = [
        _reply(1, {"arrays": ArrayRecord({"w": Array(np.ones(4, np.float32))})}),  # plaintext
        _reply(2, {"hefl.update": cipher(sealed)}, next_round=0),  # on an older model
        _reply(3, {"hefl.update": cipher(foreign)}),  # another key
        _reply(4, {"hefl.update": cipher(sealed[:-1])}),  # truncated
        _reply(6, {"hefl.update": cipher(sealed)}),  # node 5's (party 4's) update, copied
        _reply(5, {"hefl.update": cipher(sealed)}),  # the only valid one
    ]
    arrays, _ = strategy.aggregate_train(2, replies)
    assert arrays is None and strategy._round == 2
    parties, aggregate, *_ = strategy._kept[1]
    assert parties == [4]  # node 5 is party 4
    envelope = hefl.Envelope(hefl.SecretKey.load(key_path), 4, max_parties=5, max_examples=10)
    mean = envelope.open(aggregate, [4], round=1, run=run)
    assert np.array_equal(mean, np.ones(4, np.float32))
    # Negative control: with min_results 2 the same replies stop the run, naming each.
    strategy._round, strategy.min_results = 1, 2
    with pytest.raises(HeflRunError) as raised:
        strategy.aggregate_train(2, replies)
    message = str(raised.value)
    for node, reason in [
        (1, "no update"),
        (2, "round 0"),
        (3, "key"),
        (4, "truncated"),
        (6, "a message for party 4, round 1, .* expected party 5, round 1"),
    ]:
        assert re.search(f"node {node}: .*{reason}", message), (node, message)


def test_the_server_refuses_evaluate_fn_and_bad_settings() -> None:
    strategy = HeFedAvg(key_id="ab" * 32, max_examples=10)
    with pytest.raises(ValueError, match="holds no model"):
        strategy.start(grid=None, initial_arrays=initial(), evaluate_fn=lambda r, a: None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="64 hex digits"):
        HeFedAvg(key_id="not a key id", max_examples=10)
    with pytest.raises(ValueError, match="max_examples"):
        HeFedAvg(key_id="ab" * 32, max_examples=0)
    with pytest.raises(ValueError, match="min_results"):
        HeFedAvg(key_id="ab" * 32, max_examples=10, min_results=0)
    with pytest.raises(hefl.ConfigError, match="min_results=5 is more than max_parties=4"):
        HeFedAvg(key_id="ab" * 32, max_examples=10, max_parties=4, min_results=5)
    with pytest.raises(hefl.ConfigError, match="max_parties=100, max_examples=60000"):
        HeFedAvg(key_id="ab" * 32, max_examples=60_000, max_parties=100)
    assert HeFedAvg(key_id="ab" * 32, max_examples=60_000).max_parties == 21


def test_the_server_refuses_non_float32_models() -> None:
    strategy = HeFedAvg(key_id="ab" * 32, max_examples=10)
    record = ArrayRecord({"w": Array(np.ones(3, np.float64))})
    with pytest.raises(TypeError, match="float32"):
        strategy.start(grid=None, initial_arrays=record)  # type: ignore[arg-type]


def test_module_docstring_examples() -> None:
    import doctest

    result = doctest.testmod(hefl.flower, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 8 and result.failed == 0
