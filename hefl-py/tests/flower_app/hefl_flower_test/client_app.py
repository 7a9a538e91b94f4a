"""ClientApp: ordinary Flower train/evaluate functions; HeflMod does all the encryption."""

from __future__ import annotations

from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from hefl.flower import HeflMod

from . import task

app = ClientApp(mods=[HeflMod(train_metrics=["train-loss"], evaluate_metrics=["eval-acc"])])


def _model(msg: Message) -> dict:
    return {name: array.numpy() for name, array in msg.content["arrays"].items()}


@app.train()
def train(msg: Message, context: Context) -> Message:
    index = int(context.node_config["partition-id"])
    steps = int(context.run_config["local-steps"])
    model, loss = task.train(_model(msg), index, steps)
    # A run config "examples-scale" above 1 makes every node exceed max_examples (a run
    # that must fail).
    examples = task.EXAMPLES[index] * int(context.run_config.get("examples-scale", 1))
    metrics = MetricRecord({"num-examples": examples, "train-loss": loss})
    content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in model.items()}), "metrics": metrics})
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    index = int(context.node_config["partition-id"])
    metrics = MetricRecord(
        {"eval-acc": task.accuracy(_model(msg), index), "num-examples": task.EXAMPLES[index]}
    )
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
