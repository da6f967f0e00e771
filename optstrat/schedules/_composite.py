"""Schedules built from other schedules: warmup, warmup then cosine, and join."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from optstrat._validate import check_int, check_int_sequence, check_number
from optstrat.config import register
from optstrat.schedules._base import Schedule, StepArray
from optstrat.schedules._cosine import CosineDecay

__all__ = ["Join", "Warmup", "WarmupCosine", "evaluate_part"]


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


def check_schedule(name: str, value: Any) -> Schedule:
    """Return ``value`` if it is a Schedule (a config dict is built into one), or raise TypeError."""
    if isinstance(value, dict):
        from optstrat.config import from_config

        value = from_config(value)
    if not isinstance(value, Schedule):
        raise TypeError(f"{name} must be a schedule, got {value!r} ({type(value).__name__})")
    return value


def evaluate_part(schedule: Schedule, step: StepArray) -> Any:
    """Evaluate a schedule that is part of another at ``step``, clamped to the part's own horizon.

    A top-level call clamps the step at the schedule's horizon before its
    formula runs. A composite must do the same for each part, because a part
    such as a growing exponential with an ``end_value`` overflows past its
    horizon.
    """
    horizon = schedule._horizon()
    if horizon is not None:
        step = StepArray(step.clamp(high=horizon), step.xp, step.dtype, step.device)
    return schedule._evaluate(step)


@register("warmup")
@dataclass(frozen=True)
class Warmup(Schedule):
    """Linear warmup from ``init_value`` to ``schedule(0)``, then ``schedule`` on its own clock.

    value(t) = init_value + (schedule(0) - init_value) * t / warmup_steps  for t < warmup_steps
    value(t) = schedule(t - warmup_steps)                                  otherwise

    The warmup ends exactly at ``schedule(0)``, so the join is continuous.
    ``warmup_steps=0`` gives ``schedule`` itself. With ``init_value=0`` the
    first update has a learning rate of 0, as in optax's ``warmup_*``
    schedules and Hugging Face's. Pass a small ``init_value`` to avoid that.

    Reproduces ``optax.join_schedules([optax.linear_schedule(init_value,
    schedule(0), warmup_steps), schedule], [warmup_steps])``, and torch's
    ``SequentialLR([LinearLR(start_factor=init_value / schedule(0),
    total_iters=warmup_steps), ...], milestones=[warmup_steps])`` where
    ``LinearLR`` allows that start (0 < start_factor <= 1).

    >>> Warmup(schedule=CosineDecay(init_value=1.0, decay_steps=4), warmup_steps=2)(1)
    0.5
    """

    schedule: Schedule
    warmup_steps: int
    init_value: float = 0.0
    # schedule(0) is computed when built, because torch.compile fails on the NumPy code that a Python step runs.
    _target: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _set(self, "schedule", check_schedule("schedule", self.schedule))
        _set(self, "warmup_steps", check_int("warmup_steps", self.warmup_steps, low=0))
        _set(self, "init_value", check_number("init_value", self.init_value))
        _set(self, "_target", self.schedule(0))

    def _evaluate(self, step: StepArray) -> Any:
        after = evaluate_part(self.schedule, step.shifted(self.warmup_steps))
        if self.warmup_steps == 0:
            return after
        count = step.clamp(high=self.warmup_steps)
        rising = self.init_value + (self._target - self.init_value) * step.fraction(count, self.warmup_steps)
        return step.xp.where(step.ge(self.warmup_steps), after, rising)

    def _horizon(self) -> int | None:
        horizon = self.schedule._horizon()
        return None if horizon is None else self.warmup_steps + horizon


@register("warmup_cosine")
@dataclass(frozen=True)
class WarmupCosine(Schedule):
    """Linear warmup to ``peak_value``, then cosine decay to ``end_value``, then held.

    ``decay_steps`` counts the warmup, as in optax: the cosine runs from step
    ``warmup_steps`` to step ``decay_steps``. It equals
    ``Warmup(CosineDecay(peak_value, decay_steps - warmup_steps, end_value,
    exponent), warmup_steps, init_value)``.

    Reproduces ``optax.warmup_cosine_decay_schedule(init_value, peak_value,
    warmup_steps, decay_steps, end_value, exponent)`` and
    ``keras.optimizers.schedules.CosineDecay(init_value, decay_steps -
    warmup_steps, alpha=end_value / peak_value, warmup_target=peak_value,
    warmup_steps=warmup_steps)``. ``decay_steps`` must exceed ``warmup_steps``.

    >>> WarmupCosine(peak_value=1.0, warmup_steps=2, decay_steps=6, end_value=0.1)(4)
    0.55
    """

    peak_value: float
    warmup_steps: int
    decay_steps: int
    init_value: float = 0.0
    end_value: float = 0.0
    exponent: float = 1.0
    _composite: Warmup = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _set(self, "peak_value", check_number("peak_value", self.peak_value))
        _set(self, "warmup_steps", check_int("warmup_steps", self.warmup_steps, low=0))
        _set(self, "decay_steps", check_int("decay_steps", self.decay_steps, low=1))
        if self.decay_steps <= self.warmup_steps:
            raise ValueError(
                "decay_steps must be greater than warmup_steps because it counts the warmup, "
                f"got decay_steps={self.decay_steps!r} and warmup_steps={self.warmup_steps!r}"
            )
        _set(self, "init_value", check_number("init_value", self.init_value))
        _set(self, "end_value", check_number("end_value", self.end_value))
        _set(self, "exponent", check_number("exponent", self.exponent, low=0.0, low_inclusive=False))
        decay = CosineDecay(
            init_value=self.peak_value,
            decay_steps=self.decay_steps - self.warmup_steps,
            end_value=self.end_value,
            exponent=self.exponent,
        )
        _set(self, "_composite", Warmup(schedule=decay, warmup_steps=self.warmup_steps, init_value=self.init_value))

    def _evaluate(self, step: StepArray) -> Any:
        return self._composite._evaluate(step)

    def _horizon(self) -> int | None:
        return self.decay_steps


@register("join")
@dataclass(frozen=True)
class Join(Schedule):
    """Switch between schedules at boundaries; each later schedule starts at its own step 0.

    value(t) = schedules[0](t) for t < boundaries[0], and
    value(t) = schedules[i + 1](t - boundaries[i]) for boundaries[i] <= t < boundaries[i + 1].

    Reproduces ``optax.join_schedules(schedules, boundaries)``. Boundaries are
    strictly increasing and non-negative; a boundary at 0 means the first
    schedule is never used. Each piece is selected with ``where``, so a
    non-finite value in one piece never reaches another.

    >>> Join(schedules=[Constant(value=1.0), Constant(value=0.5)], boundaries=[3])(3)
    0.5
    """

    schedules: tuple[Schedule, ...]
    boundaries: tuple[int, ...]

    def __post_init__(self) -> None:
        if isinstance(self.schedules, (str, bytes, dict)) or not isinstance(self.schedules, Iterable):
            raise TypeError(f"schedules must be a list of schedules, got {self.schedules!r}")
        schedules = tuple(check_schedule(f"schedules[{index}]", item) for index, item in enumerate(self.schedules))
        if not schedules:
            raise ValueError("schedules must contain at least one schedule, got []")
        _set(self, "schedules", schedules)
        boundaries = check_int_sequence("boundaries", self.boundaries, low=0, increasing=True)
        if len(boundaries) != len(schedules) - 1:
            raise ValueError(
                "boundaries must have one item fewer than schedules, "
                f"got {len(boundaries)} boundaries for {len(schedules)} schedules"
            )
        _set(self, "boundaries", boundaries)

    def _evaluate(self, step: StepArray) -> Any:
        value = evaluate_part(self.schedules[0], step)
        for boundary, schedule in zip(self.boundaries, self.schedules[1:]):
            later = evaluate_part(schedule, step.shifted(boundary))
            value = step.xp.where(step.ge(boundary), later, value)
        return value

    def _horizon(self) -> int | None:
        last = self.schedules[-1]._horizon()
        if last is None:
            return None
        start = self.boundaries[-1] if self.boundaries else 0
        return start + last

