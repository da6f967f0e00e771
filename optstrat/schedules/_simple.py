"""Schedules with one formula: constant, step and exponential decays."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from optstrat._validate import check_bool, check_int, check_number
from optstrat.config import register
from optstrat.schedules._base import Schedule, StepArray

__all__ = ["Constant", "ExponentialDecay", "StepDecay"]


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


@register("constant")
@dataclass(frozen=True)
class Constant(Schedule):
    """The same value at every step.

    Reproduces ``optax.constant_schedule(value)``.

    >>> Constant(value=0.1)(1000)
    0.1
    """

    value: float

    def __post_init__(self) -> None:
        _set(self, "value", check_number("value", self.value))

    def _evaluate(self, step: StepArray) -> Any:
        return step.constant(self.value)

    def _horizon(self) -> int | None:
        return 0


@register("step_decay")
@dataclass(frozen=True)
class StepDecay(Schedule):
    """Multiply by ``decay_rate`` every ``decay_steps`` steps.

    value(t) = init_value * decay_rate ** floor(t / decay_steps)

    Reproduces ``torch.optim.lr_scheduler.StepLR(step_size=decay_steps,
    gamma=decay_rate)`` relative to the optimizer's learning rate ``init_value``,
    and ``optax.exponential_decay(init_value, decay_steps, decay_rate,
    staircase=True)``. The floor is computed on integers.

    >>> StepDecay(init_value=1.0, decay_rate=0.5, decay_steps=3)(6)
    0.25
    """

    init_value: float
    decay_rate: float
    decay_steps: int

    def __post_init__(self) -> None:
        _set(self, "init_value", check_number("init_value", self.init_value))
        _set(self, "decay_rate", check_number("decay_rate", self.decay_rate, low=0.0))
        _set(self, "decay_steps", check_int("decay_steps", self.decay_steps, low=1))

    def _evaluate(self, step: StepArray) -> Any:
        decays, _ = step.divmod(self.decay_steps)
        return self.init_value * _power(step, self.decay_rate, step.as_float(decays))

    def _horizon(self) -> int | None:
        return 0 if self.decay_rate == 1.0 else None


@register("exponential_decay")
@dataclass(frozen=True)
class ExponentialDecay(Schedule):
    """Continuous or staircase exponential decay that starts after ``transition_begin``.

    With d = max(t - transition_begin, 0) and p = d / transition_steps (floored
    when ``staircase``): value(t) = init_value * decay_rate ** p. When
    ``end_value`` is given the value is clamped to it: from below when
    ``decay_rate < 1`` and from above when ``decay_rate > 1``.

    Reproduces ``optax.exponential_decay`` with the same argument names;
    ``keras.optimizers.schedules.ExponentialDecay(initial_learning_rate,
    decay_steps, decay_rate, staircase)`` with ``transition_steps=decay_steps``;
    and ``torch.optim.lr_scheduler.ExponentialLR(gamma)`` with
    ``transition_steps=1`` and ``decay_rate=gamma``. Unlike optax,
    ``transition_steps <= 0`` and ``decay_rate <= 0`` raise instead of giving a
    constant.

    >>> ExponentialDecay(init_value=1.0, transition_steps=2, decay_rate=0.25)(3)
    0.125
    """

    init_value: float
    transition_steps: int
    decay_rate: float
    transition_begin: int = 0
    staircase: bool = False
    end_value: float | None = None

    def __post_init__(self) -> None:
        _set(self, "init_value", check_number("init_value", self.init_value))
        _set(self, "transition_steps", check_int("transition_steps", self.transition_steps, low=1))
        _set(self, "decay_rate", check_number("decay_rate", self.decay_rate, low=0.0, low_inclusive=False))
        _set(self, "transition_begin", check_int("transition_begin", self.transition_begin, low=0))
        _set(self, "staircase", check_bool("staircase", self.staircase))
        _set(self, "end_value", check_number("end_value", self.end_value, allow_none=True))

    def _evaluate(self, step: StepArray) -> Any:
        local = step.shifted(self.transition_begin)
        transitions, remainder = local.divmod(self.transition_steps)
        exponent = step.as_float(transitions)
        if not self.staircase:
            exponent = exponent + local.fraction(remainder, self.transition_steps)
        value = self.init_value * _power(step, self.decay_rate, exponent)
        if self.end_value is None:
            return value
        if self.decay_rate < 1.0:
            return step.xp.maximum(value, step.as_float(self.end_value))
        return step.xp.minimum(value, step.as_float(self.end_value))

    def _horizon(self) -> int | None:
        if self.decay_rate == 1.0 or self.init_value == 0.0:
            return 0
        if self.end_value is None:
            return None
        # The value reaches end_value once decay_rate ** p crosses end_value / init_value.
        ratio = self.end_value / self.init_value if self.init_value != 0 else 0.0
        if ratio <= 0.0:
            return None
        transitions = math.log(ratio) / math.log(self.decay_rate)
        if transitions <= 0:
            return 0
        return self.transition_begin + (math.ceil(transitions) + 1) * self.transition_steps


def _power(step: StepArray, base: float, exponent: Any) -> Any:
    """Return ``base ** exponent`` for a non-negative Python ``base`` and a float array ``exponent``."""
    if base == 0.0:
        # 0 ** 0 is 1 and 0 ** p is 0 for p > 0, without taking log(0).
        return step.xp.where(exponent == 0, step.as_float(1.0), step.as_float(0.0))
    return step.xp.exp(exponent * math.log(base))
