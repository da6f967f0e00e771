"""Cosine-shaped schedules."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from optstrat._validate import check_int, check_number
from optstrat.config import register
from optstrat.schedules._base import Schedule, StepArray

__all__ = ["CosineDecay", "cosine_weight", "cosine_weight_left", "half_cosine", "steps_until"]


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


def half_cosine(step: StepArray, fraction: Any) -> Any:
    """Return (1 + cos(pi * fraction)) / 2: 1 at fraction 0, 0 at fraction 1."""
    return 0.5 * (1.0 + step.xp.cos(math.pi * fraction))


def cosine_weight(step: StepArray, count: Any, length: int) -> Any:
    """Return (1 + cos(pi * count / length)) / 2 for an integer ``count`` in ``[0, length]``.

    The second half uses the identity (1 + cos(pi * f)) / 2 = sin(pi * (1 - f) / 2) ** 2,
    which avoids the cancellation of 1 + cos near f = 1. The sine form takes the
    exact integer ``length - count``, so the result stays within float32
    rounding of the float64 value at every step. The first half keeps the
    plain form, exact at f = 0 and f = 1/2 as in torch and optax.
    """
    xp = step.xp
    early = 0.5 * (1.0 + xp.cos((math.pi / length) * step.as_float(count)))
    late = xp.sin((0.5 * math.pi / length) * steps_until(step, count, length))
    first_half = count * 2 <= step.integer(length) if length < 2**30 else count <= step.integer(length // 2)
    return xp.where(first_half, early, late * late)


def cosine_weight_left(step: StepArray, left: Any) -> Any:
    """Return (1 + cos(pi * (1 - left))) / 2 for the fraction ``left`` of a phase still to run.

    It is computed as sin(pi * left / 2) ** 2. That form keeps its relative
    precision near ``left = 0``, the end of the phase where 1 + cos cancels.
    Near ``left = 1`` it is flat, so a rounding error in ``left`` barely moves
    it. ``left`` must be accurate itself, so compute it from the exact distance
    to the phase's end (:func:`steps_until`).
    """
    half_turn = step.xp.sin((0.5 * math.pi) * left)
    return half_turn * half_turn


def steps_until(step: StepArray, count: Any, end: int) -> Any:
    """Return ``end - count`` in the floating dtype, subtracting on integers first.

    ``end`` may exceed the count's integer dtype (a 2**40-step decay on int32
    steps): the part of ``end`` beyond the dtype's maximum is added as a
    Python float, so no integer operation overflows.
    """
    reachable = end
    if step.is_integer:
        reachable = min(end, int(step.xp.iinfo(step.count.dtype).max))
    remaining = step.as_float(step.integer(reachable) - count)
    if reachable == end:
        return remaining
    return remaining + float(end - reachable)


@register("cosine_decay")
@dataclass(frozen=True)
class CosineDecay(Schedule):
    """Half-cosine decay from ``init_value`` to ``end_value`` over ``decay_steps``, then held.

    With c = min(t, decay_steps):
    value(t) = end_value + (init_value - end_value) * ((1 + cos(pi * c / decay_steps)) / 2) ** exponent

    Reproduces ``optax.cosine_decay_schedule(init_value, decay_steps,
    alpha=end_value / init_value, exponent)``; ``keras.optimizers.schedules.CosineDecay(
    initial_learning_rate, decay_steps, alpha=end_value / init_value)``; and
    ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=decay_steps,
    eta_min=end_value)`` for t <= T_max (torch rises again after T_max, this
    schedule stays at ``end_value``).

    >>> CosineDecay(init_value=1.0, decay_steps=4, end_value=0.1)(2)
    0.55
    """

    init_value: float
    decay_steps: int
    end_value: float = 0.0
    exponent: float = 1.0

    def __post_init__(self) -> None:
        _set(self, "init_value", check_number("init_value", self.init_value))
        _set(self, "decay_steps", check_int("decay_steps", self.decay_steps, low=1))
        _set(self, "end_value", check_number("end_value", self.end_value))
        _set(self, "exponent", check_number("exponent", self.exponent, low=0.0, low_inclusive=False))

    def _evaluate(self, step: StepArray) -> Any:
        count = step.clamp(high=self.decay_steps)
        cosine = cosine_weight(step, count, self.decay_steps)
        if self.exponent != 1.0:
            cosine = cosine**self.exponent
        return self.end_value + (self.init_value - self.end_value) * cosine

    def _horizon(self) -> int | None:
        return self.decay_steps
