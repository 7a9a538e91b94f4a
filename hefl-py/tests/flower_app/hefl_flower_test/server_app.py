"""ServerApp: HE FedAvg, asserting from inside that this process never sees a key."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from flwr.app import Array, ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

import hefl
from hefl.flower import HeFedAvg

from . import task

app = ServerApp()


def _key_files_visible(context: Context) -> list[str]:
    """Every string this process was configured with that names a loadable hefl key file or
    identity file."""
    values = [*os.environ.values(), *map(str, context.run_config.values())]
    values += map(str, context.node_config.values())
    found = []
    for value in values:
        for candidate in {value, *value.split(os.pathsep)}:
            for load in (hefl.key_id, hefl.Identity.load):
                try:
                    if os.path.isfile(candidate):
                        load(candidate)
                        found.append(candidate)
                except (hefl.HeflError, OSError):
                    pass
    return found


class CheckedHeFedAvg(HeFedAvg):
    """HeFedAvg that asserts every array it receives or keeps is ciphertext (in a run that
    must succeed)."""

    def __init__(self, result_dir: Path, wait_nodes: int, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.result_dir = result_dir
        self.wait_nodes = wait_nodes
        self.checked_arrays = 0
        self.synchronized: list[int] = []

    def configure_train(self, server_round, arrays, config, grid):  # type: ignore[no-untyped-def]
        if server_round >= 2:  # the late node joins after round 1
            deadline = time.monotonic() + 120
            while len(list(grid.get_node_ids())) < self.wait_nodes:
                assert time.monotonic() < deadline, "the late node never connected"
                time.sleep(0.5)
        return super().configure_train(server_round, arrays, config, grid)

    def synchronize(self, grid, timeout=600):  # type: ignore[no-untyped-def]
        self.synchronized = [
            n for n in grid.get_node_ids() if self._view(n).confirmed != self._round
        ]
        return super().synchronize(grid, timeout)

    def aggregate_train(self, server_round, replies):  # type: ignore[no-untyped-def]
        replies = list(replies)
        for reply in replies:
            assert not reply.has_error(), reply.error.reason
            assert "arrays" not in reply.content
            for record in reply.content.array_records.values():
                for array in record.values():
                    assert array.stype == hefl.STYPE, array.stype
                    self.checked_arrays += 1
        arrays, metrics = super().aggregate_train(server_round, replies)
        assert arrays is None  # the server holds no model
        (self.result_dir / f"round-{server_round}.done").write_text(str(len(replies)))
        return arrays, metrics


@app.main()
def main(grid: Grid, context: Context) -> None:
    result_dir = Path(str(context.run_config["result-dir"]))
    leaks = _key_files_visible(context)
    assert not leaks, f"the ServerApp can see key files: {leaks}"
    assert "HEFL_KEY" not in os.environ
    assert "hefl-key" not in context.run_config and "hefl-key" not in context.node_config

    initial = ArrayRecord({k: Array(v) for k, v in task.initial_model().items()})
    if int(context.run_config["examples-scale"]) != 1:
        # A run that must fail: every node's num-examples exceeds max_examples, so round 1
        # has no valid update and the strategy raises (the ServerApp exits non-zero).
        failing = HeFedAvg(
            key_id=str(context.run_config["hefl-key-id"]),
            max_examples=task.MAX_EXAMPLES,
            min_available_nodes=3,
            min_train_nodes=3,
        )
        failing.start(grid=grid, initial_arrays=initial, num_rounds=1, timeout=120)
        return
    # Strict secure aggregation: the roster is public, the ServerApp may read it from its
    # run config (nodes never take theirs from there).
    strict = str(context.run_config.get("secure-agg", "")) == "strict"
    secure: dict = {}
    if strict:
        secure = dict(
            secure_agg="strict",
            roster=str(context.run_config["hefl-roster"]),
            roster_fingerprint=str(context.run_config["hefl-roster-fingerprint"]),
            min_available_nodes=3,  # round 1's set is the whole roster
            min_train_nodes=3,
        )
    else:
        secure = dict(max_parties=10, min_available_nodes=2, min_train_nodes=2)
    strategy = CheckedHeFedAvg(
        result_dir,
        int(context.run_config["wait-nodes"]),
        frac_bits=24,  # the acceptance: within 1e-5 of plaintext FedAvg
        key_id=str(context.run_config["hefl-key-id"]),
        max_examples=task.MAX_EXAMPLES,
        # One node evaluates per round; the others get the last aggregate from synchronize.
        fraction_evaluate=0.34,
        min_evaluate_nodes=1,
        **secure,
    )
    result = strategy.start(
        grid=grid,
        initial_arrays=initial,
        num_rounds=int(context.run_config["num-server-rounds"]),
        timeout=120,
    )
    assert len(result.arrays) == 0  # the model lives on the nodes
    summary = {
        "aggregates": strategy._round,
        "parties": [len(strategy._kept[r][0]) for r in sorted(strategy._kept)],
        "voids": [strategy._kept[r].void for r in sorted(strategy._kept)],
        "numbering": {str(node): view.party for node, view in strategy._nodes.items()},
        "checked_arrays": strategy.checked_arrays,
        "synchronized": len(strategy.synchronized),
        "applied": {str(node): view.confirmed for node, view in strategy._nodes.items()},
        "train_metrics": {
            str(r): dict(m) for r, m in result.train_metrics_clientapp.items()
        },
        "evaluate_metrics": {
            str(r): dict(m) for r, m in result.evaluate_metrics_clientapp.items()
        },
        "key_files_visible": _key_files_visible(context),
    }
    (result_dir / "server.json").write_text(json.dumps(summary, indent=1))
