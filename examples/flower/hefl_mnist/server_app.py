"""ServerApp: HE FedAvg. It gets the clients' public key id, never the key; it holds the
public initial model and ciphertexts, never a trained model."""

from __future__ import annotations

from flwr.app import Array, ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from hefl.flower import HeFedAvg

from . import task

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    key_id = str(context.run_config["hefl-key-id"])
    if not key_id:
        raise SystemExit("pass --run-config \"hefl-key-id='<64 hex digits>'\"")
    strategy = HeFedAvg(
        key_id=key_id,
        max_examples=task.MAX_EXAMPLES,
        max_parties=3,  # three nodes: the fewest bits per value
        min_available_nodes=3,
        min_train_nodes=3,
        min_evaluate_nodes=3,
    )
    initial = ArrayRecord({k: Array(v) for k, v in task.initial_model().items()})
    strategy.start(
        grid=grid,
        initial_arrays=initial,
        num_rounds=int(context.run_config["num-server-rounds"]),
        timeout=600,
    )
