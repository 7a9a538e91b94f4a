"""The model and data: hefl's MLP (784-128-10, ReLU, 101,770 parameters) in numpy, trained
by mini-batch SGD on an IID shard of MNIST read from the IDX files."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

SIZES = (784, 128, 10)
# Bound on any node's examples (its integer FedAvg weight): MNIST's size.
MAX_EXAMPLES = 60_000


def mnist_dir(node_config: dict) -> Path:
    """Where the IDX files are: node config ``mnist-dir``, else ``$MNIST_DIR``."""
    where = node_config.get("mnist-dir") or os.environ.get("MNIST_DIR")
    if not where:
        raise RuntimeError("set MNIST_DIR or --node-config \"mnist-dir='/path/to/mnist'\"")
    return Path(str(where))


def _idx(path: Path) -> np.ndarray:
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.exists():
            opener = gzip.open if candidate.suffix == ".gz" else open
            with opener(candidate, "rb") as file:
                data = file.read()
            dims = data[3]
            shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
            return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)
    raise FileNotFoundError(f"{path} (or .gz) not found")


def load(directory: Path, split: str, partition: int, partitions: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``partition``-th of ``partitions`` IID shards of ``split`` ("train" or "t10k")."""
    images = _idx(directory / f"{split}-images-idx3-ubyte").reshape(-1, 784)
    labels = _idx(directory / f"{split}-labels-idx1-ubyte")
    order = np.random.default_rng(0).permutation(len(labels))
    shard = np.array_split(order, partitions)[partition]
    return (images[shard] / np.float32(255)).astype(np.float32), labels[shard].astype(np.int64)


def initial_model(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    model = {}
    for layer, (fan_in, fan_out) in enumerate(zip(SIZES, SIZES[1:])):
        limit = np.sqrt(6 / fan_in)  # He-uniform
        model[f"w{layer}"] = rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32)
        model[f"b{layer}"] = np.zeros(fan_out, np.float32)
    return model


def _logits(model: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hidden = np.maximum(x @ model["w0"] + model["b0"], 0)
    return hidden, hidden @ model["w1"] + model["b1"]


def train(
    model: dict[str, np.ndarray],
    data: tuple[np.ndarray, np.ndarray],
    epochs: int,
    batch: int,
    lr: float,
    seed: int,
) -> tuple[dict[str, np.ndarray], float]:
    x, y = data
    model = {k: v.copy() for k, v in model.items()}
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(epochs):
        for idx in np.array_split(rng.permutation(len(y)), max(1, len(y) // batch)):
            hidden, logits = _logits(model, x[idx])
            logits -= logits.max(axis=1, keepdims=True)
            probs = np.exp(logits)
            probs /= probs.sum(axis=1, keepdims=True)
            losses.append(float(-np.log(probs[np.arange(len(idx)), y[idx]] + 1e-9).mean()))
            dlogits = probs
            dlogits[np.arange(len(idx)), y[idx]] -= 1
            dlogits /= len(idx)
            dhidden = (dlogits @ model["w1"].T) * (hidden > 0)
            grads = {
                "w1": hidden.T @ dlogits,
                "b1": dlogits.sum(axis=0),
                "w0": x[idx].T @ dhidden,
                "b0": dhidden.sum(axis=0),
            }
            for name, grad in grads.items():
                model[name] -= np.float32(lr) * grad.astype(np.float32)
    return model, float(np.mean(losses))


def accuracy(model: dict[str, np.ndarray], data: tuple[np.ndarray, np.ndarray]) -> float:
    x, y = data
    return float((np.argmax(_logits(model, x)[1], axis=1) == y).mean())
