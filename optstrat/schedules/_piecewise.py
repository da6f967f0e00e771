"""Schedules defined by boundaries: multistep decay, piecewise constant and piecewise linear."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from optstrat._validate import check_int_sequence, check_number, check_number_sequence
from optstrat.config import register
from optstrat.schedules._base import Schedule, StepArray
from optstrat.schedules._polynomial import interpolate, progress

__all__ = ["MultiStep", "PiecewiseConstant", "PiecewiseLinear"]


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


def _select(step: StepArray, boundaries: Sequence[int], levels: Sequence[float]) -> Any:
    """Return ``levels[i]`` with i the number of boundaries <= t (non-decreasing boundaries, repeats counted)."""
    value = step.constant(levels[0])
    for boundary, level in zip(boundaries, levels[1:]):
        value = step.xp.where(step.ge(boundary), step.as_float(level), value)
    return value


def _decay_levels(init_value: float, decay_rate: float, count: int) -> tuple[float, ...]:
    """Return ``init_value * decay_rate ** k`` for k = 0..count in float64, inf past its range."""
    levels = []
    for exponent in range(count + 1):
        try:
            factor = decay_rate**exponent
        except OverflowError:
            factor = math.inf
        # init_value 0 stays 0 where the factor overflowed, instead of 0 * inf = nan.
        levels.append(init_value * factor if init_value != 0.0 else 0.0)
    return tuple(levels)


@register("multistep")
@dataclass(frozen=True)
class MultiStep(Schedule):
    """Multiply by ``decay_rate`` at each boundary; repeated boundaries multiply again.

    value(t) = init_value * decay_rate ** k, with k the number of items of
    ``boundaries`` that are <= t, repeats counted

    ``boundaries`` are non-negative and non-decreasing (a boundary at 0 decays
    from the first update on); ``decay_rate`` must be at least 0. Each level
    ``init_value * decay_rate ** k`` is computed once in float64, so every
    backend returns it correctly rounded to its dtype. Empty ``boundaries``
    give a constant.

    Reproduces ``torch.optim.lr_scheduler.MultiStepLR(milestones,
    gamma=decay_rate)`` with ``boundaries=sorted(milestones)`` and
    ``init_value`` the optimizer's learning rate (or ``init_value=1.0`` with
    ``relative=True`` in the PyTorch adapter). Like torch, the value changes
    at t = boundary and duplicated milestones compound.

    >>> MultiStep(init_value=1.0, boundaries=[2, 5, 5], decay_rate=0.5)(5)
    0.125
    """

    init_value: float
    boundaries: tuple[int, ...]
    decay_rate: float

    def __post_init__(self) -> None:
        _set(self, "init_value", check_number("init_value", self.init_value))
        _set(self, "boundaries", check_int_sequence("boundaries", self.boundaries, low=0, non_decreasing=True))
        _set(self, "decay_rate", check_number("decay_rate", self.decay_rate, low=0.0))

    def _evaluate(self, step: StepArray) -> Any:
        levels = _decay_levels(self.init_value, self.decay_rate, len(self.boundaries))
        return _select(step, self.boundaries, levels)

    def _horizon(self) -> int | None:
        if not self.boundaries or self.decay_rate == 1.0 or self.init_value == 0.0:
            return 0
        return self.boundaries[-1]


@register("piecewise_constant")
@dataclass(frozen=True)
class PiecewiseConstant(Schedule):
    """Constant pieces: ``values[i]`` from ``boundaries[i - 1]`` up to ``boundaries[i]``.

    value(t) = values[i], with i the number of items of ``boundaries`` that are <= t

    ``boundaries`` are non-negative and strictly increasing; ``values`` has
    one item more than ``boundaries``. The value changes at t = boundary.

    Reproduces ``optax.piecewise_constant_schedule(init_value,
    boundaries_and_scales)`` with ``boundaries`` its sorted keys and
    ``values`` the running products ``[init_value, init_value * s1,
    init_value * s1 * s2, ...]``. Reproduces
    ``keras.optimizers.schedules.PiecewiseConstantDecay(boundaries=[b - 1 for
    b in boundaries], values)``: Keras switches one step later, at t =
    boundary + 1, so its boundaries are one less than these.

    >>> PiecewiseConstant(boundaries=[2, 4], values=[1.0, 0.5, 0.1])(2)
    0.5
    """

    boundaries: tuple[int, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        boundaries = check_int_sequence("boundaries", self.boundaries, low=0, increasing=True)
        values = check_number_sequence("values", self.values, min_length=1)
        if len(values) != len(boundaries) + 1:
            raise ValueError(
                "values must have one item more than boundaries, "
                f"got {len(values)} values for {len(boundaries)} boundaries"
            )
        _set(self, "boundaries", boundaries)
        _set(self, "values", values)

    def _evaluate(self, step: StepArray) -> Any:
        return _select(step, self.boundaries, self.values)

    def _horizon(self) -> int | None:
        return self.boundaries[-1] if self.boundaries else 0


@register("piecewise_linear")
@dataclass(frozen=True)
class PiecewiseLinear(Schedule):
    """Straight lines through the points ``(boundaries[i], values[i])``, held outside them.

    For boundaries[i] <= t <= boundaries[i + 1]:
    value(t) = values[i] + (values[i + 1] - values[i]) * (t - boundaries[i]) / (boundaries[i + 1] - boundaries[i])

    value(t) = values[0] before the first boundary and values[-1] from the
    last one on. ``boundaries`` are non-negative and strictly increasing, so
    no piece has zero length; ``values`` has the same length, at least 1.

    Reproduces ``optax.piecewise_interpolate_schedule("linear", init_value,
    boundaries_and_scales)`` for t >= 0 with ``boundaries=[0, *sorted keys]``
    and ``values`` the running products ``[init_value, init_value * s1, ...]``
    (the keys must be positive and distinct).

    >>> PiecewiseLinear(boundaries=[0, 4, 8], values=[1.0, 0.1, 0.01])(2)
    0.55
    """

    boundaries: tuple[int, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        boundaries = check_int_sequence("boundaries", self.boundaries, low=0, increasing=True, min_length=1)
        values = check_number_sequence("values", self.values, min_length=1)
        if len(values) != len(boundaries):
            raise ValueError(
                "values must have as many items as boundaries, "
                f"got {len(values)} values for {len(boundaries)} boundaries"
            )
        _set(self, "boundaries", boundaries)
        _set(self, "values", values)

    def _evaluate(self, step: StepArray) -> Any:
        value = step.constant(self.values[0])
        points = zip(self.boundaries, self.boundaries[1:], self.values, self.values[1:])
        for start, stop, start_value, stop_value in points:
            local = step.shifted(start)
            length = stop - start
            done_fraction, left_fraction = progress(local, local.clamp(high=length), length)
            line = interpolate(start_value, stop_value, done_fraction, left_fraction)
            value = step.xp.where(step.ge(start), line, value)
        return value

    def _horizon(self) -> int | None:
        return self.boundaries[-1]
