"""Schedules that transform the values of another schedule: scale and clamp."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from optstrat._validate import check_number
from optstrat.config import register
from optstrat.schedules._base import Schedule, StepArray
from optstrat.schedules._composite import check_schedule

__all__ = ["Clamp", "Scale"]


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


@register("scale")
@dataclass(frozen=True)
class Scale(Schedule):
    """Another schedule multiplied by a constant ``factor``.

    value(t) = factor * schedule(t)

    ``factor`` is any finite number; ``factor=0`` gives 0 at every step, even
    where ``schedule`` is inf. Use it to turn a relative schedule (factors of
    a base learning rate, as torch's schedulers and Hugging Face's lambdas
    give them) into absolute values, or to share one shape between parameter
    groups with different base values.

    >>> Scale(schedule=Linear(init_value=1.0, end_value=0.0, transition_steps=4), factor=0.1)(2)
    0.05
    """

    schedule: Schedule
    factor: float

    def __post_init__(self) -> None:
        _set(self, "schedule", check_schedule("schedule", self.schedule))
        _set(self, "factor", check_number("factor", self.factor))

    def _evaluate(self, step: StepArray) -> Any:
        if self.factor == 0.0:
            return step.constant(0.0)
        return self.factor * self.schedule._evaluate(step)

    def _horizon(self) -> int | None:
        return 0 if self.factor == 0.0 else self.schedule._horizon()


@register("clamp")
@dataclass(frozen=True)
class Clamp(Schedule):
    """Another schedule held between a floor ``min_value`` and a ceiling ``max_value``.

    value(t) = min(max(schedule(t), min_value), max_value)

    Either bound may be None (no bound on that side), but not both;
    ``min_value <= max_value`` when both are given. A nan from ``schedule``
    stays nan on NumPy, PyTorch and JAX. Use it for a floor under a decay that has none (Keras'
    ExponentialDecay, InverseTime) or a ceiling over a growing schedule.

    >>> Clamp(schedule=InverseTime(init_value=1.0, decay_rate=1.0, decay_steps=1), min_value=0.2)(9)
    0.2
    """

    schedule: Schedule
    min_value: float | None = None
    max_value: float | None = None

    def __post_init__(self) -> None:
        _set(self, "schedule", check_schedule("schedule", self.schedule))
        _set(self, "min_value", check_number("min_value", self.min_value, allow_none=True))
        _set(self, "max_value", check_number("max_value", self.max_value, allow_none=True))
        if self.min_value is None and self.max_value is None:
            raise ValueError("min_value or max_value must be given, got min_value=None and max_value=None")
        if self.min_value is not None and self.max_value is not None and self.min_value > self.max_value:
            raise ValueError(
                "min_value must be <= max_value, "
                f"got min_value={self.min_value!r} and max_value={self.max_value!r}"
            )

    def _evaluate(self, step: StepArray) -> Any:
        value = self.schedule._evaluate(step)
        if self.min_value is not None:
            value = step.xp.maximum(value, step.as_float(self.min_value))
        if self.max_value is not None:
            value = step.xp.minimum(value, step.as_float(self.max_value))
        return value

    def _horizon(self) -> int | None:
        if self.min_value is not None and self.min_value == self.max_value:
            return 0
        return self.schedule._horizon()
