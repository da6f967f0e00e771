"""Schedules with one formula: constant, step and exponential decays."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from optstrat._validate import check_bool, check_int, check_number
from optstrat.config import register
from optstrat.schedules._base import Schedule, StepArray

__all__ = ["Constant", "ExponentialDecay", "StepDecay", "power"]


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
    staircase=True)``. The floor is computed on integers, and the power
    stays within 1e-6 relative of float64 on float32 backends while the value
    is a normal float32 number (see :func:`power`). ``decay_rate=0`` gives
    ``init_value`` before ``decay_steps`` and 0 from then on.

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
        return _scale(step, self.init_value, power(step, self.decay_rate, [(decays, 1.0)]))

    def _horizon(self) -> int | None:
        if self.decay_rate == 1.0 or self.init_value == 0.0:
            return 0
        if self.decay_rate == 0.0:
            return self.decay_steps
        return None


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
    constant. On float32 backends the value stays within 1e-6 relative of
    float64 while it is a normal float32 number (see :func:`power`). With
    ``decay_rate > 1`` and no ``end_value`` it becomes inf once it passes the
    dtype's range.

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
        exponent = [(transitions, 1.0)]
        if not self.staircase:
            exponent.append((remainder, 1.0 / self.transition_steps))
        value = _scale(step, self.init_value, power(step, self.decay_rate, exponent))
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


def power(step: StepArray, base: float, exponent: list[tuple[Any, float]]) -> Any:
    """Return ``base ** sum(count * weight)`` for integer ``count`` arrays and positive Python ``weight``.

    ``base`` is a non-negative Python float and every ``count`` is a
    non-negative integer array of the step's dtype (``StepArray.divmod``
    output). The value is within a few float32 ulps of the float64 one on
    float32 backends, at any count below 2**31; see :func:`_split_power`.
    A value beyond the dtype's range becomes 0 or inf without overflow warnings.
    """
    if base == 0.0:
        # 0 ** 0 is 1 and 0 ** p is 0 for p > 0, without taking log(0).
        is_zero = None
        for count, _ in exponent:
            zero = count == 0
            is_zero = zero if is_zero is None else step.xp.logical_and(is_zero, zero)
        return step.xp.where(is_zero, step.as_float(1.0), step.as_float(0.0))
    if step.dtype == getattr(step.xp, "float64", None):
        return _float64_power(step, base, exponent)
    return _split_power(step, base, exponent)


def _float64_power(step: StepArray, base: float, exponent: list[tuple[Any, float]]) -> Any:
    total = step.constant(0.0)
    for count, weight in exponent:
        total = total + step.as_float(count) * weight
    if base <= 1.0:
        # The power underflows to 0 quietly.
        return step.as_float(base) ** total
    # Above this exponent base ** total overflows float64; select inf instead of computing it.
    largest = _FLOAT64_SAFE_EXPONENT / math.log(base)
    bounded = step.as_float(base) ** step.xp.minimum(total, step.as_float(largest))
    return step.xp.where(total > largest, step.as_float(math.inf), bounded)


def _scale(step: StepArray, factor: float, value: Any) -> Any:
    # A zero factor gives 0 even where ``value`` overflowed to inf, instead of 0 * inf = nan.
    if factor == 0.0:
        return step.constant(0.0)
    return factor * value


# exp(x) underflows to 0 below -limit and overflows to inf above +limit in float32.
_FLOAT32_LIMIT = 120.0
# The largest exponent of e that exp() takes in float64 without overflowing (exp(709) = 8.2e307).
_FLOAT64_SAFE_EXPONENT = 709.0
# The largest exponent of e that exp() takes in float32 without overflowing (exp(88) = 1.65e38).
_FLOAT32_SAFE_EXPONENT = 88.0
# Counts are split into high * 2**16 + low; coefficients are cut to multiples of 2**-17.
_LIMB = 2**16
_GRID = 2.0**-17


def _split_power(step: StepArray, base: float, exponent: list[tuple[Any, float]]) -> Any:
    """Return ``base ** sum(count * weight)`` in float32 (or narrower) within a few ulps.

    The plain ``exp(p * log(base))`` is off by about ``|p * log(base)| * 1e-7``
    relative in float32, 5e-6 once the value is 1e-30 of its start. Here each
    count is split exactly on integers into ``high * 2**16 + low`` and each
    coefficient ``k = weight * log(base)`` into ``k_exact + k_rest``, where
    ``k_exact`` is a multiple of 2**-17 below 128. Then ``high * k_exact`` and
    ``low * k_exact`` are exact float32 products while the value is in range,
    their integer and fractional parts add exactly, and only the small
    products with ``k_rest`` round. The result is ``exp(fraction) *
    exp(whole)``, with ``fraction`` in [0, 1) and ``whole`` an integer.
    """
    xp = step.xp
    log_base = math.log(base)
    if log_base == 0.0:
        return step.constant(1.0)
    saturated = None
    whole = step.constant(0.0)
    fraction = step.constant(0.0)
    rest = step.constant(0.0)
    for count, weight in exponent:
        coefficient = weight * log_base

        # A count past this one puts the value out of float32's range, so it saturates
        # to 0 or inf. The clamp keeps every product below the limit elsewhere.
        largest = math.floor(_FLOAT32_LIMIT / abs(coefficient))
        beyond = count > step.integer(largest)
        saturated = beyond if saturated is None else xp.logical_or(saturated, beyond)
        high, low = step.divmod(_LIMB, xp.minimum(count, step.integer(largest)))

        for multiplier, factor in ((high, coefficient * _LIMB), (low, coefficient)):
            exact = math.trunc(factor / _GRID) * _GRID
            multiplier = step.as_float(multiplier)
            part = multiplier * exact
            part_floor = xp.floor(part)
            whole = whole + part_floor
            fraction = fraction + (part - part_floor)
            rest = rest + multiplier * (factor - exact)

    # fraction is a sum of multiples of 2**-17 below 4, so it is exact; rest rounds once here.
    carry = xp.floor(fraction)
    whole = whole + carry
    fraction = fraction - carry + rest
    carry = xp.floor(fraction)
    whole = whole + carry
    fraction = fraction - carry

    # The where() between the two exp() calls also keeps XLA from rewriting
    # exp(fraction) * exp(whole) into exp(fraction + whole), which rounds the sum.
    overflowed = whole > _FLOAT32_SAFE_EXPONENT
    bounded = xp.minimum(whole, step.as_float(_FLOAT32_SAFE_EXPONENT))
    scale = xp.where(overflowed, step.as_float(math.inf), xp.exp(bounded))
    value = xp.exp(fraction) * scale
    return xp.where(saturated, step.as_float(math.inf if log_base > 0.0 else 0.0), value)
