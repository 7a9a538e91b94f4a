"""A deterministic task: a small tanh MLP on synthetic 3-class data, trained by full-batch
gradient descent, so that the test can recompute plaintext FedAvg exactly."""

from __future__ import annotations

import numpy as np

FEATURES, HIDDEN, CLASSES = 20, 16, 3
EXAMPLES = (120, 200, 80)  # per partition: unequal, so the weighting matters
MAX_EXAMPLES = 250
LEARNING_RATE = np.float32(0.5)


def initial_model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(42)
    return {
        "w1": (rng.standard_normal((FEATURES, HIDDEN)) * 0.3).astype(np.float32),
        "b1": np.zeros(HIDDEN, np.float32),
        "w2": (rng.standard_normal((HIDDEN, CLASSES)) * 0.3).astype(np.float32),
        "b2": np.zeros(CLASSES, np.float32),
    }


def partition(index: int) -> tuple[np.ndarray, np.ndarray]:
    teacher = np.random.default_rng(7).standard_normal((FEATURES, CLASSES))
    rng = np.random.default_rng(1000 + index)
    x = rng.standard_normal((EXAMPLES[index], FEATURES)) + 0.5 * index
    y = np.argmax(x @ teacher, axis=1)
    return x.astype(np.float32), y


def _forward(model: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hidden = np.tanh(x @ model["w1"] + model["b1"])
    logits = hidden @ model["w2"] + model["b2"]
    logits = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    return hidden, probs / probs.sum(axis=1, keepdims=True)


def train(model: dict[str, np.ndarray], index: int, steps: int) -> tuple[dict[str, np.ndarray], float]:
    """``steps`` full-batch gradient steps on partition ``index``; returns the model and loss."""
    x, y = partition(index)
    model = {k: v.copy() for k, v in model.items()}
    onehot = np.eye(CLASSES, dtype=np.float32)[y]
    loss = 0.0
    for _ in range(steps):
        hidden, probs = _forward(model, x)
        loss = float(-np.log(probs[np.arange(len(y)), y] + 1e-9).mean())
        dlogits = (probs - onehot) / np.float32(len(y))
        dhidden = (dlogits @ model["w2"].T) * (1 - hidden**2)
        grads = {
            "w2": hidden.T @ dlogits,
            "b2": dlogits.sum(axis=0),
            "w1": x.T @ dhidden,
            "b1": dhidden.sum(axis=0),
        }
        for name, grad in grads.items():
            model[name] = (model[name] - LEARNING_RATE * grad).astype(np.float32)
    return model, loss


def accuracy(model: dict[str, np.ndarray], index: int) -> float:
    x, y = partition(index)
    return float((np.argmax(_forward(model, x)[1], axis=1) == y).mean())
