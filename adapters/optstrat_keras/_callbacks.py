"""TrainingLogger: a callback that records the learning rate and the gradient norm of every batch."""

from __future__ import annotations

import math
from typing import Any

import keras

from optstrat_keras._optimizer import ClippedOptimizer

__all__ = ["TrainingLogger"]


class TrainingLogger(keras.callbacks.Callback):
    """Record the learning rate and, under a ClippedOptimizer, the gradient norm and clip rate.

    After every training batch the callback appends to ``batch_history`` and
    adds to the batch ``logs``, and after every epoch it appends to
    ``history`` and adds to the epoch ``logs`` (so ``model.fit(...).history``
    has them too):

    - ``"lr"``: the learning rate the optimizer applied, read back from it.
      Under a :class:`ClippedOptimizer` it is the ``applied_learning_rate``
      variable after the step. Otherwise it is ``optimizer.learning_rate``
      read before the step, the value that the update is about to use. An
      epoch records the value of its last batch.

    When the model's optimizer is a ClippedOptimizer, or a
    ``LossScaleOptimizer`` around one:

    - ``"grad_norm"``: the global L2 norm of the gradients before clipping.
      An epoch records the mean over its batches with a finite norm (NaN if
      there is none), since skipped steps are counted apart.
    - ``"clip_fraction"``: the fraction of steps clipped since the epoch began.
    - ``"skipped_steps"``: the number of steps skipped since the epoch began.

    The fractions and counts come from the optimizer's counters, so they count
    every step even when ``steps_per_execution`` runs several steps per batch
    callback. ``"lr"`` and ``"grad_norm"`` are those of the last step of the
    batch. Reading the values synchronizes the device once per batch, and on
    JAX it also writes the training state back to the model variables.

    >>> from optstrat_keras import TrainingLogger
    >>> logger = TrainingLogger()
    >>> logger.history, logger.batch_history
    ({}, {})
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list[float]] = {}
        self.batch_history: dict[str, list[float]] = {}
        self._epoch_start: dict[str, int] = {}
        self._epoch_norms: list[float] = []
        self._epoch_lr: float | None = None
        self._lr_before_step: float | None = None

    def _clipped_optimizer(self) -> ClippedOptimizer | None:
        optimizer = self.model.optimizer
        while isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            optimizer = optimizer.inner_optimizer
        return optimizer if isinstance(optimizer, ClippedOptimizer) else None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch_norms = []
        self._epoch_lr = None
        optimizer = self._clipped_optimizer()
        self._epoch_start = _counters(optimizer) if optimizer is not None else {}

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        optimizer = self.model.optimizer
        if optimizer is not None and self._clipped_optimizer() is None:
            self._lr_before_step = _to_float(optimizer.learning_rate)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        optimizer = self._clipped_optimizer()
        values: dict[str, float] = {}
        if optimizer is not None:
            counters = _counters(optimizer)
            values["lr"] = _to_float(optimizer.applied_learning_rate)
            values["grad_norm"] = _to_float(optimizer.grad_norm)
            values.update(_epoch_rates(self._epoch_start, counters))
            self._epoch_norms.append(values["grad_norm"])
        elif self._lr_before_step is not None:
            values["lr"] = self._lr_before_step
        if "lr" in values:
            self._epoch_lr = values["lr"]
        _append(self.batch_history, values)
        if logs is not None:
            logs.update(values)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        optimizer = self._clipped_optimizer()
        values: dict[str, float] = {}
        if self._epoch_lr is not None:
            values["lr"] = self._epoch_lr
        if optimizer is not None and self._epoch_norms:
            finite_norms = [norm for norm in self._epoch_norms if math.isfinite(norm)]
            values["grad_norm"] = math.fsum(finite_norms) / len(finite_norms) if finite_norms else math.nan
            values.update(_epoch_rates(self._epoch_start, _counters(optimizer)))
        _append(self.history, values)
        if logs is not None:
            logs.update(values)


def _to_float(value: Any) -> float:
    # float() converts the backend's 0-d tensor directly. keras.ops.convert_to_numpy calls
    # np.array(), which NumPy 2 warns about for TensorFlow and PyTorch tensors.
    if isinstance(value, keras.Variable):
        value = value.value
    return float(value)


def _counters(optimizer: ClippedOptimizer) -> dict[str, int]:
    if not optimizer.built:
        return {"steps": 0, "clipped": 0, "skipped": 0}
    return {
        "steps": int(_to_float(optimizer.step_count)),
        "clipped": int(_to_float(optimizer.clip_count)),
        "skipped": int(_to_float(optimizer.skip_count)),
    }


def _epoch_rates(start: dict[str, int], now: dict[str, int]) -> dict[str, float]:
    steps = now["steps"] - start["steps"]
    clipped = now["clipped"] - start["clipped"]
    return {
        "clip_fraction": clipped / steps if steps else 0.0,
        "skipped_steps": float(now["skipped"] - start["skipped"]),
    }


def _append(history: dict[str, list[float]], values: dict[str, float]) -> None:
    for key, value in values.items():
        history.setdefault(key, []).append(value)
