"""End to end on Flower's deployment engine, offline on loopback: a SuperLink and three
SuperNodes as separate processes run HE FedAvg (tests/flower_app); the third node starts only
after round 1 and catches up. The three node models, read back from the files the nodes
write, must be bit-identical and equal to a plaintext FedAvg reference; the ServerApp asserts
from inside that it sees no key. A second run, in which every node's num-examples exceeds
max_examples, must end failed (the ServerApp raises, so it exits non-zero), with the reason
naming the nodes. A third test runs strict secure aggregation on its own SuperLink and nodes,
each node with an identity file and the roster."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import hefl

pytest.importorskip("flwr")
import hefl.flower  # noqa: E402

APP = Path(__file__).with_name("flower_app")
sys.path.insert(0, str(APP))
from hefl_flower_test import task  # noqa: E402

ROUNDS = 3
LOCAL_STEPS = 5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class Processes:
    """Started processes, each in its own process group, all ended at teardown."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs = logs
        self.env = env
        self.running: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.may_exit: set[str] = set()

    def start(
        self,
        name: str,
        args: list[str],
        env: dict[str, str] | None = None,
        may_exit: bool = False,
    ) -> None:
        log = open(self.logs / f"{name}.log", "wb")
        process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env or self.env,
            start_new_session=True,
        )
        self.running.append((name, process))
        if may_exit:
            self.may_exit.add(name)

    def check_alive(self) -> None:
        for name, process in self.running:
            if process.poll() is not None and name not in self.may_exit:
                raise AssertionError(f"{name} exited with {process.returncode}:\n{self.tail(name)}")

    def exited(self, name: str) -> bool:
        return any(n == name and p.poll() is not None for n, p in self.running)

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.logs / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        for _, process in reversed(self.running):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for _, process in self.running:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    env = {k: v for k, v in os.environ.items() if k != hefl.flower.KEY_ENV}
    env.update(
        FLWR_HOME=str(tmp_path / "flwr-home"),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        OPENBLAS_NUM_THREADS="1",
        OMP_NUM_THREADS="1",
        RAYON_NUM_THREADS="1",
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    started = Processes(logs, env)
    yield started
    started.stop()


def wait_for(condition, what: str, processes: Processes, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        processes.check_alive()
        run_over = processes.exited("flwr-run") and not condition()
        if run_over or time.monotonic() > deadline:
            logs = "\n".join(f"--- {n}\n{processes.tail(n)}" for n, _ in processes.running)
            why = "the run ended" if run_over else "timed out"
            raise AssertionError(f"{why} before {what}\n{logs}")
        time.sleep(0.5)


def plaintext_fedavg() -> dict[str, np.ndarray]:
    """FedAvg in the clear: round 1 with partitions 0 and 1, later rounds with all three."""
    model = {k: v.astype(np.float64) for k, v in task.initial_model().items()}
    for round_ in range(1, ROUNDS + 1):
        parties = [0, 1] if round_ == 1 else [0, 1, 2]
        start = {k: v.astype(np.float32) for k, v in model.items()}
        trained = [task.train(start, p, LOCAL_STEPS)[0] for p in parties]
        weights = [task.EXAMPLES[p] for p in parties]
        model = {
            name: sum(w * t[name].astype(np.float64) for w, t in zip(weights, trained))
            / sum(weights)
            for name in model
        }
    return model


def start_superlink(processes: Processes) -> int:
    """A SuperLink on loopback, and the `flwr` configuration naming it; returns its port."""
    link_port = free_port()
    flwr_home = Path(processes.env["FLWR_HOME"])
    flwr_home.mkdir()
    (flwr_home / "config.toml").write_text(
        '[superlink]\ndefault = "hefl-test"\n\n'
        f'[superlink.hefl-test]\naddress = "127.0.0.1:{link_port}"\ninsecure = true\n'
    )
    processes.start(
        "superlink",
        [
            "flower-superlink",
            "--insecure",
            "--disable-runtime-dependency-installation",
            "--host",
            "127.0.0.1",
            "--port",
            str(link_port),
        ],
    )
    return link_port


def start_supernode(
    processes: Processes, index: int, link_port: int, node_config: str, env: dict[str, str]
) -> None:
    processes.start(
        f"supernode{index}",
        [
            "flower-supernode",
            "--insecure",
            "--superlink",
            f"127.0.0.1:{link_port}",
            "--port",
            str(free_port()),
            "--node-config",
            node_config,
        ],
        env=env,
    )


def test_he_fedavg_on_the_deployment_engine(tmp_path: Path, processes: Processes) -> None:
    keys = tmp_path / "keys"
    key_path = keys / "hefl.key"
    key_id = hefl.generate_key(key_path)
    results = tmp_path / "results"
    results.mkdir()
    models = tmp_path / "models"
    link_port = start_superlink(processes)

    def start_node(index: int, key_in_env: bool) -> None:
        node_config = f"partition-id={index} hefl-model-out='{models / f'node{index}.npz'}'"
        env = dict(processes.env)
        if key_in_env:
            env[hefl.flower.KEY_ENV] = str(key_path)
        else:
            node_config += f" hefl-key='{key_path}'"
        start_supernode(processes, index, link_port, node_config, env)

    start_node(0, key_in_env=False)
    start_node(1, key_in_env=False)
    wait_for(lambda: listening(link_port), "the SuperLink", processes, 60)
    run_config = (
        f"hefl-key-id='{key_id}' result-dir='{results}' num-server-rounds={ROUNDS} "
        f"local-steps={LOCAL_STEPS} wait-nodes=3"
    )
    # --stream keeps `flwr run` attached, writing the ServerApp's log until the run ends.
    processes.start(
        "flwr-run",
        ["flwr", "run", str(APP), "hefl-test", "--stream", "--run-config", run_config],
        may_exit=True,
    )

    wait_for(lambda: (results / "round-1.done").exists(), "round 1", processes, 90)
    start_node(2, key_in_env=True)  # the late node: key from HEFL_KEY
    wait_for(lambda: (results / "server.json").exists(), "the run's end", processes, 240)

    server = json.loads((results / "server.json").read_text())
    assert server["key_files_visible"] == []
    assert server["aggregates"] == ROUNDS
    assert server["parties"] == [2] + [3] * (ROUNDS - 1)
    assert server["checked_arrays"] == 2 + 3 * (ROUNDS - 1)
    assert server["synchronized"] == 2  # one node evaluated round 3; two were behind
    assert sorted(server["applied"].values()) == [ROUNDS] * 3
    for metrics in server["train_metrics"].values():
        assert set(metrics) == {"train-loss", "hefl.clipped"}  # never num-examples
        assert metrics["hefl.clipped"] == 0
    for metrics in server["evaluate_metrics"].values():
        assert set(metrics) == {"eval-acc"}

    finals = []
    for index in range(3):
        path = models / f"node{index}.npz"
        wait_for(path.exists, f"node {index}'s model", processes, 30)
        saved = hefl.flower.load_model(path)
        assert saved.rounds == ROUNDS and saved.skipped == []
        finals.append({name: saved.arrays[name].numpy() for name in task.initial_model()})
    for other in finals[1:]:
        for name in finals[0]:
            assert finals[0][name].tobytes() == other[name].tobytes(), name
    reference = plaintext_fedavg()
    for name, value in reference.items():
        np.testing.assert_allclose(finals[0][name], value, rtol=0, atol=1e-5, err_msg=name)
    # The models did train: far from the initial weights.
    initial = task.initial_model()
    assert max(np.abs(finals[0][n] - initial[n]).max() for n in initial) > 0.05

    # A run in which every node fails ends failed, with the nodes and their error.
    started = subprocess.run(
        ["flwr", "run", str(APP), "hefl-test", "--format", "json", "--run-config",
         f"hefl-key-id='{key_id}' examples-scale=1000"],
        env=processes.env, capture_output=True, text=True, timeout=120, check=True,
    )
    run_id = json.loads(started.stdout)["run-id"]
    deadline = time.monotonic() + 120
    while True:
        listed = subprocess.run(
            ["flwr", "ls", "hefl-test", "--run-id", str(run_id), "--format", "json"],
            env=processes.env, capture_output=True, text=True, timeout=60, check=True,
        )
        run = json.loads(listed.stdout)["runs"][0]
        if run["status"].startswith("finished") or time.monotonic() > deadline:
            break
        processes.check_alive()
        time.sleep(1)
    assert run["status"] == "finished:failed", run
    details = run["status-details"]
    assert "0 valid updates, fewer than min_results=1" in details, details
    assert details.count("more than max_examples=250") == 3, details


def test_strict_secure_aggregation_on_the_deployment_engine(
    tmp_path: Path, processes: Processes
) -> None:
    """Three SuperNodes with identities (two from node config, one from the environment) and
    a roster numbering them in another order than they start; the ServerApp runs strict
    secure aggregation from the public roster in its run config. Every round is published
    with the three parties; the node models are bit-identical and equal plaintext FedAvg."""
    keys = tmp_path / "keys"
    key_path = keys / "hefl.key"
    key_id = hefl.generate_key(key_path)
    identities = [keys / f"party-{i}.id" for i in range(3)]
    publics = [hefl.generate_identity(path) for path in identities]
    roster_path = keys / "roster.json"
    roster_path.write_bytes(hefl.Roster(key_id, publics, min_parties=2).to_bytes())
    fingerprint = hefl.Roster.load(roster_path).fingerprint
    results = tmp_path / "results"
    results.mkdir()
    models = tmp_path / "models"
    link_port = start_superlink(processes)

    holds = {0: 2, 1: 0, 2: 1}  # node index -> the roster party whose identity it holds
    for index, party in holds.items():
        node_config = (
            f"partition-id={index} hefl-model-out='{models / f'node{index}.npz'}' "
            f"hefl-key='{key_path}'"
        )
        env = dict(processes.env)
        secure = {
            "hefl-identity": str(identities[party]),
            "hefl-roster": str(roster_path),
            "hefl-roster-fingerprint": fingerprint,
        }
        if index == 2:  # from the environment, as the simulation engine can set it
            env.update(
                HEFL_IDENTITY=secure["hefl-identity"],
                HEFL_ROSTER=secure["hefl-roster"],
                HEFL_ROSTER_FINGERPRINT=secure["hefl-roster-fingerprint"],
            )
        else:
            node_config += "".join(f" {k}='{v}'" for k, v in secure.items())
        start_supernode(processes, index, link_port, node_config, env)
    wait_for(lambda: listening(link_port), "the SuperLink", processes, 60)
    run_config = (
        f"hefl-key-id='{key_id}' result-dir='{results}' num-server-rounds={ROUNDS} "
        f"local-steps={LOCAL_STEPS} wait-nodes=3 secure-agg='strict' "
        f"hefl-roster='{roster_path}' hefl-roster-fingerprint='{fingerprint}'"
    )
    processes.start(
        "flwr-run",
        ["flwr", "run", str(APP), "hefl-test", "--stream", "--run-config", run_config],
        may_exit=True,
    )
    wait_for(lambda: (results / "server.json").exists(), "the run's end", processes, 300)

    server = json.loads((results / "server.json").read_text())
    assert server["key_files_visible"] == []  # neither the key nor any identity
    assert server["aggregates"] == ROUNDS
    assert server["parties"] == [3] * ROUNDS and server["voids"] == [False] * ROUNDS
    assert sorted(server["numbering"].values()) == [0, 1, 2]
    for metrics in server["train_metrics"].values():
        assert metrics["hefl.void"] == 0 and metrics["hefl.clipped"] == 0

    finals = []
    for index in range(3):
        path = models / f"node{index}.npz"
        wait_for(path.exists, f"node {index}'s model", processes, 30)
        saved = hefl.flower.load_model(path)
        assert saved.rounds == ROUNDS and saved.skipped == []
        finals.append({name: saved.arrays[name].numpy() for name in task.initial_model()})
    for other in finals[1:]:
        for name in finals[0]:
            assert finals[0][name].tobytes() == other[name].tobytes(), name
    model = {k: v.astype(np.float64) for k, v in task.initial_model().items()}
    for _ in range(ROUNDS):
        start = {k: v.astype(np.float32) for k, v in model.items()}
        trained = [task.train(start, p, LOCAL_STEPS)[0] for p in range(3)]
        model = {
            name: sum(w * t[name].astype(np.float64) for w, t in zip(task.EXAMPLES, trained))
            / sum(task.EXAMPLES)
            for name in model
        }
    for name, value in model.items():
        np.testing.assert_allclose(finals[0][name], value, rtol=0, atol=1e-5, err_msg=name)
