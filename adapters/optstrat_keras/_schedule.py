"""KerasSchedule: any optstrat schedule as a Keras ``LearningRateSchedule``."""

from __future__ import annotations

from typing import Any

import keras

import optstrat
from optstrat.schedules import Schedule

__all__ = ["KerasSchedule", "tensorflow_namespace"]


def tensorflow_namespace() -> Any:
    """Return the array namespace over TensorFlow tensors (imported on first use)."""
    from optstrat_keras import _tf_namespace

    return _tf_namespace


@keras.saving.register_keras_serializable(package="optstrat")
class KerasSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """An optstrat schedule as a Keras learning-rate schedule.

    ``KerasSchedule(schedule)(step)`` is ``schedule(step)`` evaluated on the
    backend tensor: a jax array on JAX, a torch tensor on PyTorch and a
    ``tf.Tensor`` on TensorFlow. On TensorFlow the core runs on a namespace of
    ``tf`` operations, so it traces under ``tf.function`` and compiles with
    XLA. The value is float32 unless the step is a wider float. Keras calls
    the schedule with ``optimizer.iterations``, the number of updates already
    applied, which is the step optstrat schedules count.

    ``get_config()`` returns ``{"schedule": schedule.to_config()}`` and the
    class is registered as ``optstrat>KerasSchedule``, so a model compiled
    with it saves to and loads from a ``.keras`` file.

    >>> import keras
    >>> from optstrat_keras import KerasSchedule
    >>> lr = KerasSchedule(WarmupCosine(peak_value=1.0, warmup_steps=2, decay_steps=6))
    >>> optimizer = keras.optimizers.SGD(learning_rate=lr)
    >>> round(float(lr(1)), 6), round(float(lr(4)), 6)
    (0.5, 0.5)
    >>> KerasSchedule.from_config(lr.get_config()).schedule == lr.schedule
    True
    """

    def __init__(self, schedule: Schedule | dict[str, Any]) -> None:
        if isinstance(schedule, dict):
            schedule = optstrat.from_config(schedule)
        if not isinstance(schedule, Schedule):
            raise TypeError(
                f"schedule must be an optstrat schedule or its config dict, "
                f"got {schedule!r} ({type(schedule).__name__})"
            )
        self.schedule = schedule

    def __call__(self, step: Any) -> Any:
        step = keras.ops.convert_to_tensor(step)
        if keras.backend.backend() == "tensorflow":
            namespace = tensorflow_namespace()
            return namespace.call_core(self.schedule, step, xp=namespace)
        return self.schedule(step)

    def get_config(self) -> dict[str, Any]:
        return {"schedule": self.schedule.to_config()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> KerasSchedule:
        return cls(optstrat.from_config(config["schedule"]))

    def __repr__(self) -> str:
        return f"KerasSchedule({self.schedule!r})"
