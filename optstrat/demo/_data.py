"""Data, initial weights, batch order and the run record that every framework of the demo shares.

Everything here is NumPy, so each framework starts from the same numbers and
trains on the same batches in the same order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "Digits",
    "Monitor",
    "Run",
    "Settings",
    "batch_indices",
    "initial_weights",
    "load_digits",
    "steps_per_epoch",
]

INPUTS = 64
HIDDEN = 64
CLASSES = 10
TEST_FRACTION = 0.2


@dataclasses.dataclass(frozen=True)
class Digits:
    """The digits data set split into train and test, features standardized, float32 and int64."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclasses.dataclass(frozen=True)
class Settings:
    """Training options shared by every framework: schedule, clipping, epochs, batch size, momentum, seed."""

    schedule: Any
    max_norm: float
    epochs: int
    batch_size: int
    momentum: float
    seed: int


@dataclasses.dataclass
class Run:
    """The record of one framework's training run.

    ``lr`` and ``grad_norm`` have one entry per optimizer update: the learning
    rate read back from the framework's optimizer and the global L2 norm of the
    gradients before clipping. ``loss`` (mean training cross-entropy) and
    ``test_accuracy`` have one entry per epoch. ``seconds`` is the wall time of
    building and training the model, without importing the framework.
    """

    framework: str
    lr: list[float] = dataclasses.field(default_factory=list)
    grad_norm: list[float] = dataclasses.field(default_factory=list)
    loss: list[float] = dataclasses.field(default_factory=list)
    test_accuracy: list[float] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    import_seconds: float = 0.0
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class Monitor:
    """Callbacks a framework's training loop calls: ``batch(done, total)`` and ``epoch(run, epoch)``."""

    batch: Callable[[int, int], None]
    epoch: Callable[[Run, int], None]


def load_digits(seed: int) -> Digits:
    """Load scikit-learn's bundled digits (no download), split 80/20 by ``seed`` and standardize.

    The mean and standard deviation come from the training part only. Pixels
    that are constant there are centred and left unscaled.
    """
    from sklearn.datasets import load_digits as load_bundled

    bundle = load_bundled()
    features = np.asarray(bundle.data, dtype=np.float64)
    labels = np.asarray(bundle.target, dtype=np.int64)

    order = np.random.default_rng(seed).permutation(len(labels))
    test_count = round(len(labels) * TEST_FRACTION)
    test, train = order[:test_count], order[test_count:]

    mean = features[train].mean(axis=0)
    std = features[train].std(axis=0)
    std[std == 0] = 1.0
    standardized = ((features - mean) / std).astype(np.float32)
    return Digits(standardized[train], labels[train], standardized[test], labels[test])


def initial_weights(seed: int) -> dict[str, np.ndarray]:
    """Return float32 weights of the 64-64-10 MLP, kernels in (inputs, outputs) layout.

    Every weight and bias is drawn from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), the
    bounds of PyTorch's default ``nn.Linear`` initialization.
    """
    rng = np.random.default_rng([seed, 1])
    weights = {}
    for name, fan_in, fan_out in (("1", INPUTS, HIDDEN), ("2", HIDDEN, CLASSES)):
        bound = 1.0 / np.sqrt(fan_in)
        weights[f"kernel{name}"] = rng.uniform(-bound, bound, size=(fan_in, fan_out)).astype(np.float32)
        weights[f"bias{name}"] = rng.uniform(-bound, bound, size=(fan_out,)).astype(np.float32)
    return weights


def batch_indices(train_count: int, batch_size: int, epochs: int, seed: int) -> list[list[np.ndarray]]:
    """Return for each epoch the list of index arrays of its batches, in training order.

    Each epoch is a fresh permutation; the last batch of an epoch is smaller
    when ``batch_size`` does not divide ``train_count``.
    """
    rng = np.random.default_rng([seed, 2])
    epochs_batches = []
    for _ in range(epochs):
        order = rng.permutation(train_count)
        epochs_batches.append([order[start : start + batch_size] for start in range(0, train_count, batch_size)])
    return epochs_batches


def steps_per_epoch(train_count: int, batch_size: int) -> int:
    """Return the number of optimizer updates in one epoch (the last batch may be smaller)."""
    return -(-train_count // batch_size)
