"""The demo in Keras 3: ``KerasSchedule``, ``ClippedOptimizer`` and ``TrainingLogger`` inside ``model.fit``.

Keras picks its backend from KERAS_BACKEND once, when it is first imported;
``optstrat.demo`` sets the variable before it imports this module.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np

import optstrat_keras
from optstrat.clipping import ClipByGlobalNorm
from optstrat.demo._data import CLASSES, HIDDEN, INPUTS, Digits, Monitor, Run, Settings

__all__ = ["describe", "train"]


def describe() -> str:
    """Return the framework, its backend, the versions and the optstrat objects used, in one line."""
    return (
        f"Keras {keras.__version__} on {keras.backend.backend()}, SGD with optstrat_keras.KerasSchedule, "
        "wrapped in optstrat_keras.ClippedOptimizer, logged by optstrat_keras.TrainingLogger"
    )


def train(
    digits: Digits,
    weights: dict[str, np.ndarray],
    batches: list[list[np.ndarray]],
    settings: Settings,
    monitor: Monitor,
) -> Run:
    """Train the MLP with ``model.fit`` and return the record of the run."""
    run = Run("keras", detail=f"keras {keras.__version__}, backend {keras.backend.backend()}")
    started = time.perf_counter()

    model = keras.Sequential(
        [
            keras.Input(shape=(INPUTS,)),
            keras.layers.Dense(HIDDEN, activation="relu"),
            keras.layers.Dense(CLASSES),
        ]
    )
    model.set_weights([weights["kernel1"], weights["bias1"], weights["kernel2"], weights["bias2"]])
    inner = keras.optimizers.SGD(
        learning_rate=optstrat_keras.KerasSchedule(settings.schedule), momentum=settings.momentum
    )
    optimizer = optstrat_keras.ClippedOptimizer(inner, ClipByGlobalNorm(max_norm=settings.max_norm))
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )

    logger = optstrat_keras.TrainingLogger()
    report = _Report(run, logger, monitor, steps=len(batches[0]))
    model.fit(
        _batches_in_order(digits, batches),
        epochs=len(batches),
        steps_per_epoch=len(batches[0]),
        validation_data=(digits.x_test, digits.y_test),
        callbacks=[logger, report],
        shuffle=False,
        verbose=0,
    )

    run.seconds = time.perf_counter() - started
    return run


def _batches_in_order(digits: Digits, batches: list[list[np.ndarray]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    # One generator over all epochs: with steps_per_epoch set, fit keeps drawing from it
    # across epochs, so Keras trains on exactly the batch order of the other frameworks.
    for epoch_batches in batches:
        for indices in epoch_batches:
            yield digits.x_train[indices], digits.y_train[indices]


class _Report(keras.callbacks.Callback):
    """Copy what TrainingLogger recorded into the run and report batches and epochs to the monitor."""

    def __init__(self, run: Run, logger: Any, monitor: Monitor, steps: int) -> None:
        super().__init__()
        self.run = run
        self.logger = logger
        self.monitor = monitor
        self.steps = steps

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.monitor.batch(batch + 1, self.steps)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        self.run.lr = [float(value) for value in self.logger.batch_history.get("lr", [])]
        self.run.grad_norm = [float(value) for value in self.logger.batch_history.get("grad_norm", [])]
        self.run.loss.append(float(logs["loss"]))
        self.run.test_accuracy.append(float(logs["val_accuracy"]))
        self.monitor.epoch(self.run, epoch)
