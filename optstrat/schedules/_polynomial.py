"""Decays with a polynomial or rational shape: linear, polynomial, inverse time and inverse square root."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from optstrat._validate import check_bool, check_int, check_number
from optstrat.config import register
from optstrat.schedules._base import Schedule, StepArray

__all__ = ["InverseSqrt", "InverseTime", "Linear", "Polynomial", "interpolate", "progress", "remaining"]

# Hugging Face's get_inverse_sqrt_schedule uses this timescale when there is no warmup.
_DEFAULT_TIMESCALE = 10_000


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


def remaining(step: StepArray, done: Any, length: int) -> Any:
    """Return ``length - done`` as a float, subtracted on integers.

    ``done`` is a count of the step's dtype in ``[0, length]``. A ``length``
    past the dtype's maximum is taken as that maximum plus a Python int, so
    nothing overflows and the difference stays exact below 2**24 in float32.
    """
    left = step.as_float(step.integer(length) - done)
    if step.is_integer:
        excess = length - int(step.xp.iinfo(step.count.dtype).max)
        if excess > 0:
            left = left + float(excess)
    return left


def progress(step: StepArray, done: Any, length: int) -> tuple[Any, Any]:
    """Return ``(done / length, (length - done) / length)`` as floats.

    The second fraction comes from :func:`remaining`, so it stays exact
    relative to itself near the end, where ``1 - done / length`` would cancel
    in float32.
    """
    return step.fraction(done, length), remaining(step, done, length) / float(length)


def interpolate(start: float, end: float, done_fraction: Any, left_fraction: Any) -> Any:
    """Return ``start * left_fraction + end * done_fraction``, the line from ``start`` to ``end``.

    The two fractions come from :func:`progress` and add up to 1. Weighting both
    ends keeps the value exact at each of them and free of cancellation when
    ``start`` and ``end`` have the same sign, and it is exactly ``start`` when
    both ends are equal.
    """
    if start == end:
        return 0.0 * done_fraction + end
    return start * left_fraction + end * done_fraction


def _polynomial(
    step: StepArray,
    init_value: float,
    end_value: float,
    power: float,
    done_fraction: Any,
    left_fraction: Any,
) -> Any:
    """Return ``end + (init - end) * left_fraction ** power`` within a few float32 ulps.

    Where ``left_fraction ** power`` is at most 1/2, the power is computed
    directly. Elsewhere the value is ``init + (end - init) * fallen`` with
    ``fallen = 1 - left_fraction ** power = -expm1(power * log(left_fraction))``,
    so neither form cancels. The caller handles ``left_fraction = 0``.

    NOTE: ``left_fraction`` is rounded once to the dtype, so on float32
    backends the relative error grows as about ``power * 1e-7`` and can pass
    1e-6 for powers above 10.
    """
    if power == 1.0:
        return interpolate(init_value, end_value, done_fraction, left_fraction)
    xp = step.xp
    one = step.as_float(1.0)

    # log(left_fraction) from whichever fraction is accurate: log1p(-done) near the
    # start and log(left) near the end.
    near_start = done_fraction < 0.5
    log_left = xp.where(
        near_start,
        xp.log1p(-xp.minimum(done_fraction, step.as_float(0.5))),
        xp.log(xp.where(left_fraction > 0.0, left_fraction, one)),
    )
    exponent = power * log_left

    # Far side: left ** power, corrected for the backend rounding ``power`` to float32.
    remaining = left_fraction**power
    if step.dtype != getattr(xp, "float64", None):
        rounded_power = float(np.float32(power))
        remaining = remaining * (1.0 + (power - rounded_power) * log_left)
    far = end_value + (init_value - end_value) * remaining

    # Near side: 1 - left ** power = -expm1(exponent), with Kahan's
    # expm1(z) = (exp(z) - 1) * z / log(exp(z)), which is accurate for small z.
    bounded = xp.maximum(exponent, step.as_float(-1.0))
    grown = xp.exp(bounded)
    unchanged = grown == 1.0
    # The where() inside log() keeps XLA from simplifying log(exp(z)) to z, which would undo the trick.
    ratio = xp.where(unchanged, one, (grown - 1.0) / xp.log(xp.where(unchanged, step.as_float(2.0), grown)))
    fallen = -bounded * ratio
    near = init_value + (end_value - init_value) * fallen

    return xp.where(exponent > -math.log(2.0), near, far)


@register("linear")
@dataclass(frozen=True)
class Linear(Schedule):
    """Straight line from ``init_value`` to ``end_value`` over ``transition_steps``, then held.

    With c = min(max(t - transition_begin, 0), transition_steps):
    value(t) = init_value + (end_value - init_value) * c / transition_steps

    ``init_value`` is held up to ``transition_begin``, and the value is
    exactly ``end_value`` from step ``transition_begin + transition_steps`` on.
    ``transition_steps`` must be at least 1 and ``transition_begin`` at least
    0. For ``transition_steps=0`` optax gives a constant ``init_value`` and
    torch's LinearLR stays at its start factor, while this schedule raises.

    Reproduces ``optax.linear_schedule(init_value, end_value,
    transition_steps, transition_begin)``. With ``init_value=start_factor``
    and ``end_value=end_factor`` as factors of the optimizer's learning rate
    (``relative=True`` in the PyTorch adapter), it reproduces
    ``torch.optim.lr_scheduler.LinearLR(start_factor, end_factor,
    total_iters=transition_steps)``. torch needs ``0 < start_factor <= 1``,
    and this schedule can also start from 0.

    >>> Linear(init_value=1.0, end_value=0.0, transition_steps=4, transition_begin=2)(3)
    0.75
    """

    init_value: float
    end_value: float
    transition_steps: int
    transition_begin: int = 0

    def __post_init__(self) -> None:
        _set(self, "init_value", check_number("init_value", self.init_value))
        _set(self, "end_value", check_number("end_value", self.end_value))
        _set(self, "transition_steps", check_int("transition_steps", self.transition_steps, low=1))
        _set(self, "transition_begin", check_int("transition_begin", self.transition_begin, low=0))

    def _evaluate(self, step: StepArray) -> Any:
        local = step.shifted(self.transition_begin)
        done = local.clamp(high=self.transition_steps)
        done_fraction, left_fraction = progress(local, done, self.transition_steps)
        return interpolate(self.init_value, self.end_value, done_fraction, left_fraction)

    def _horizon(self) -> int | None:
        if self.init_value == self.end_value:
            return 0
        return self.transition_begin + self.transition_steps


@register("polynomial")
@dataclass(frozen=True)
class Polynomial(Schedule):
    """Polynomial decay from ``init_value`` to ``end_value`` over ``transition_steps``.

    With c = min(max(t - transition_begin, 0), transition_steps) and
    T = transition_steps:
    value(t) = end_value + (init_value - end_value) * (1 - c / T) ** power

    and ``end_value`` is held from step ``transition_begin + T`` on. With
    ``cycle=True`` the decay restarts instead, as in Keras. With
    d = max(t - transition_begin, 0) and the cycle end D = T * max(ceil(d / T), 1):
    value(t) = end_value + (init_value - end_value) * (1 - d / D) ** power

    so each cycle starts lower and ends at ``end_value`` on a multiple of T.
    ``power`` must be positive, ``transition_steps`` at least 1 and
    ``transition_begin`` at least 0. The ceiling is computed on integers and
    D in floating point, so no integer product overflows.

    Reproduces ``optax.polynomial_schedule(init_value, end_value, power,
    transition_steps, transition_begin)``, and
    ``torch.optim.lr_scheduler.PolynomialLR(total_iters=transition_steps,
    power)`` with ``end_value=0`` and ``init_value`` the optimizer's learning
    rate. Reproduces ``keras.optimizers.schedules.PolynomialDecay(
    initial_learning_rate=init_value, decay_steps=transition_steps,
    end_learning_rate=end_value, power, cycle)``, whose ``end_learning_rate``
    defaults to 1e-4 while ``end_value`` has no default. Keras computes
    ceil(d / T) in float32, so with ``cycle=True`` it can return the next
    cycle's value on a cycle end, where this schedule returns ``end_value``.

    >>> Polynomial(init_value=1.0, end_value=0.0, transition_steps=4, power=2.0)(2)
    0.25
    """

    init_value: float
    end_value: float
    transition_steps: int
    power: float = 1.0
    transition_begin: int = 0
    cycle: bool = False

    def __post_init__(self) -> None:
        _set(self, "init_value", check_number("init_value", self.init_value))
        _set(self, "end_value", check_number("end_value", self.end_value))
        _set(self, "transition_steps", check_int("transition_steps", self.transition_steps, low=1))
        _set(self, "power", check_number("power", self.power, low=0.0, low_inclusive=False))
        _set(self, "transition_begin", check_int("transition_begin", self.transition_begin, low=0))
        _set(self, "cycle", check_bool("cycle", self.cycle))

    def _evaluate(self, step: StepArray) -> Any:
        local = step.shifted(self.transition_begin)
        if self.cycle:
            done_fraction, left_fraction, at_end = self._cycle_fractions(local)
        else:
            done = local.clamp(high=self.transition_steps)
            done_fraction, left_fraction = progress(local, done, self.transition_steps)
            at_end = local.ge(self.transition_steps)
        value = _polynomial(step, self.init_value, self.end_value, self.power, done_fraction, left_fraction)
        return step.xp.where(at_end, step.as_float(self.end_value), value)

    def _cycle_fractions(self, local: StepArray) -> tuple[Any, Any, Any]:
        xp = local.xp
        length = self.transition_steps
        cycles, offset = local.divmod(length)

        # The cycle in use is number max(ceil(d / length), 1) and ends at D = length * number.
        # The number is counted in floating point because cycles + 1 overflows int32 when length is 1.
        started = offset > 0
        one = local.as_float(1.0)
        number = xp.maximum(local.as_float(cycles) + xp.where(started, one, local.as_float(0.0)), one)
        at_end = xp.logical_and(xp.logical_not(started), local.count > 0)

        # D - d is length - offset inside a cycle, length at d = 0 and 0 on a cycle end.
        left = xp.where(started, remaining(local, offset, length), local.as_float(0.0))
        left = xp.where(local.count == 0, local.as_float(float(length)), left)
        cycle_end = number * float(length)
        return local.as_float(local.count) / cycle_end, left / cycle_end, at_end

    def _horizon(self) -> int | None:
        if self.init_value == self.end_value:
            return 0
        if self.cycle:
            return None
        return self.transition_begin + self.transition_steps


@register("inverse_time")
@dataclass(frozen=True)
class InverseTime(Schedule):
    """Inverse-time decay: ``init_value / (1 + decay_rate * t / decay_steps)``.

    With p = t / decay_steps, floored on integers when ``staircase``:
    value(t) = init_value / (1 + decay_rate * p)

    ``decay_rate`` must be at least 0 (0 gives a constant) and
    ``decay_steps`` at least 1. The value approaches 0 without a final value.

    Reproduces ``keras.optimizers.schedules.InverseTimeDecay(
    initial_learning_rate, decay_steps, decay_rate, staircase)`` with the same
    values.

    >>> InverseTime(init_value=1.0, decay_rate=0.5, decay_steps=2)(2)
    0.6666666666666666
    """

    init_value: float
    decay_rate: float
    decay_steps: int
    staircase: bool = False

    def __post_init__(self) -> None:
        _set(self, "init_value", check_number("init_value", self.init_value))
        _set(self, "decay_rate", check_number("decay_rate", self.decay_rate, low=0.0))
        _set(self, "decay_steps", check_int("decay_steps", self.decay_steps, low=1))
        _set(self, "staircase", check_bool("staircase", self.staircase))

    def _evaluate(self, step: StepArray) -> Any:
        decays, remainder = step.divmod(self.decay_steps)
        elapsed = step.as_float(decays)
        if not self.staircase:
            elapsed = elapsed + step.fraction(remainder, self.decay_steps)
        return self.init_value / (1.0 + self.decay_rate * elapsed)

    def _horizon(self) -> int | None:
        if self.decay_rate == 0.0 or self.init_value == 0.0:
            return 0
        return None


@register("inverse_sqrt")
@dataclass(frozen=True)
class InverseSqrt(Schedule):
    """Linear warmup to ``peak_value``, then decay with the inverse square root of the step.

    With W = warmup_steps and tau = timescale:
    value(t) = peak_value * t / W                               for t < W
    value(t) = peak_value * sqrt(tau / (t - W + tau))           for t >= W

    ``timescale=None`` takes Hugging Face's default: W, or 10000 when W is 0.
    ``warmup_steps`` must be at least 0 (0 means no warmup, and the value
    starts at ``peak_value``); ``timescale`` must be at least 1. With a
    warmup the first update gets 0, as in Hugging Face.

    Reproduces ``transformers.get_inverse_sqrt_schedule(optimizer,
    num_warmup_steps=warmup_steps, timescale=timescale)`` with ``peak_value``
    the optimizer's learning rate (``relative=True`` with ``peak_value=1.0``
    in the PyTorch adapter).

    >>> InverseSqrt(peak_value=1.0, warmup_steps=4)(8)
    0.7071067811865476
    """

    peak_value: float
    warmup_steps: int
    timescale: int | None = None

    def __post_init__(self) -> None:
        _set(self, "peak_value", check_number("peak_value", self.peak_value))
        _set(self, "warmup_steps", check_int("warmup_steps", self.warmup_steps, low=0))
        _set(self, "timescale", check_int("timescale", self.timescale, low=1, allow_none=True))

    @property
    def effective_timescale(self) -> int:
        """The timescale in use: ``timescale``, or Hugging Face's default when it is None."""
        if self.timescale is not None:
            return self.timescale
        return self.warmup_steps if self.warmup_steps > 0 else _DEFAULT_TIMESCALE

    def _evaluate(self, step: StepArray) -> Any:
        timescale = float(self.effective_timescale)
        local = step.shifted(self.warmup_steps)
        decayed = self.peak_value * step.xp.sqrt(timescale / (step.as_float(local.count) + timescale))
        if self.warmup_steps == 0:
            return decayed
        rising = self.peak_value * step.fraction(step.clamp(high=self.warmup_steps), self.warmup_steps)
        return step.xp.where(step.ge(self.warmup_steps), decayed, rising)

    def _horizon(self) -> int | None:
        return 0 if self.peak_value == 0.0 else None
