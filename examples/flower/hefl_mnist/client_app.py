"""ClientApp: plain numpy training; ``HeflMod`` encrypts what leaves the node.

The train function sees the decrypted global model and returns its trained model with
``num-examples``; the mod turns that into one ciphertext (the difference to the global model,
times ``num-examples``, and ``num-examples``). Only ``train-loss`` and ``eval-acc`` reach the
server in plaintext."""

from __future__ import annotations

from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from hefl.flower import HeflMod

from . import task

app = ClientApp(mods=[HeflMod(train_metrics=["train-loss"], evaluate_metrics=["eval-acc"])])


def _shard(context: Context, split: str) -> tuple:
    return task.load(
        task.mnist_dir(context.node_config),
        split,
        int(context.node_config["partition-id"]),
        int(context.node_config["num-partitions"]),
    )


def _model(msg: Message) -> dict:
    return {name: array.numpy() for name, array in msg.content["arrays"].items()}


@app.train()
def train(msg: Message, context: Context) -> Message:
    data = _shard(context, "train")
    config = context.run_config
    model, loss = task.train(
        _model(msg),
        data,
        epochs=int(config["local-epochs"]),
        batch=int(config["batch-size"]),
        lr=float(config["learning-rate"]),
        seed=int(msg.content["config"]["server-round"]) * 1000 + context.node_id % 1000,
    )
    metrics = MetricRecord({"num-examples": len(data[1]), "train-loss": loss})
    arrays = ArrayRecord({name: Array(value) for name, value in model.items()})
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    data = _shard(context, "t10k")
    metrics = MetricRecord(
        {"eval-acc": task.accuracy(_model(msg), data), "num-examples": len(data[1])}
    )
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
