#!/usr/bin/env bash
# HE FedAvg on MNIST over Flower's deployment engine, offline on loopback: generates a shared
# key, starts a SuperLink and three SuperNodes (each given the key file in its node config),
# runs the app, then checks that the three nodes ended with identical models and prints
# their accuracy on the MNIST test set.
#
#   MNIST_DIR=../shared/mnist examples/flower/run.sh [ROUNDS]
#
# Needs `pip install './hefl-py[flower]'` in the active Python. Work files (key, logs, final
# models) go to $HEFL_FLOWER_WORK or a fresh temporary directory, printed at the end.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
rounds="${1:-5}"
: "${MNIST_DIR:?set MNIST_DIR to the folder holding the MNIST IDX files}"
export MNIST_DIR="$(cd "$MNIST_DIR" && pwd)"
work="${HEFL_FLOWER_WORK:-$(mktemp -d)}"
mkdir -p "$work/logs" "$work/models"
export FLWR_HOME="$work/flwr-home" FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
unset HEFL_KEY

free_port() { python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

key="$work/keys/hefl.key"
key_id="$(python -c 'import hefl, sys; print(hefl.generate_key(sys.argv[1]))' "$key")"
echo "shared key $key (mode 0600), key id $key_id"

link_port="$(free_port)"
mkdir -p "$FLWR_HOME"
cat > "$FLWR_HOME/config.toml" <<TOML
[superlink]
default = "hefl-local"

[superlink.hefl-local]
address = "127.0.0.1:$link_port"
insecure = true
TOML

flower-superlink --insecure --disable-runtime-dependency-installation \
    --host 127.0.0.1 --port "$link_port" > "$work/logs/superlink.log" 2>&1 &
pids+=($!)
for node in 0 1 2; do
    flower-supernode --insecure --superlink "127.0.0.1:$link_port" --port "$(free_port)" \
        --node-config "partition-id=$node num-partitions=3 hefl-key='$key' hefl-model-out='$work/models/node$node.npz'" \
        > "$work/logs/supernode$node.log" 2>&1 &
    pids+=($!)
done
# Wait until the SuperLink listens (the ServerApp itself waits for the three nodes).
for _ in $(seq 120); do
    python -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' \
        "$link_port" 2>/dev/null && break
    sleep 0.5
done

# The ServerApp gets the public key id only.
flwr run "$here" hefl-local --stream \
    --run-config "hefl-key-id='$key_id' num-server-rounds=$rounds" | tee "$work/logs/run.log"

cd "$here" && python - "$work/models" "$rounds" <<'PY'
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path.cwd()))
from hefl.flower import load_model  # noqa: E402
from hefl_mnist import task  # noqa: E402

models, rounds = Path(sys.argv[1]), int(sys.argv[2])
finals = []
for node in range(3):
    saved = load_model(models / f"node{node}.npz")
    assert saved.rounds == rounds, f"node {node} applied {saved.rounds} rounds"
    finals.append({name: saved.arrays[name].numpy() for name in task.initial_model()})
identical = all(
    a[name].tobytes() == b[name].tobytes() for a, b in zip(finals, finals[1:]) for name in a
)
test = task.load(task.mnist_dir({}), "t10k", 0, 1)
print(f"after {rounds} rounds: models identical on all 3 nodes: {identical}; "
      f"test accuracy {task.accuracy(finals[0], test):.4f}")
sys.exit(0 if identical else 1)
PY
echo "work files: $work"
