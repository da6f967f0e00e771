"""Warmup-stable-decay: linear warmup, a constant stretch, then a decay of a chosen shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from optstrat._validate import check_choice, check_int, check_number
from optstrat.config import register
from optstrat.schedules._base import Schedule, StepArray
from optstrat.schedules._cosine import cosine_weight, steps_until

__all__ = ["WarmupStableDecay"]

DECAY_SHAPES = ("linear", "cosine", "1-sqrt")


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


@register("wsd")
@dataclass(frozen=True)
class WarmupStableDecay(Schedule):
    """Linear warmup to ``peak_value``, a stable stretch at it, a decay to ``end_value``, then held.

    With W = ``warmup_steps``, S = ``stable_steps``, D = ``decay_steps`` and
    q = (t - W - S) / D the progress of the decay:

    value(t) = init_value + (peak_value - init_value) * t / W    for t < W
    value(t) = peak_value                                        for W <= t < W + S
    value(t) = end_value + (peak_value - end_value) * shape(q)   for W + S <= t < W + S + D
    value(t) = end_value                                         for t >= W + S + D

    where shape(q) is 1 - q for ``decay_shape="linear"``, (1 + cos(pi * q)) / 2
    for ``"cosine"`` and 1 - sqrt(q) for ``"1-sqrt"``. The decay starts at
    ``peak_value`` on its first step and reaches ``end_value`` at t = W + S + D,
    so every join is continuous.

    Constraints: W, S and D are integers >= 0. A phase of length 0 is skipped:
    W = 0 starts at ``peak_value``, S = 0 decays right after the warmup, and
    D = 0 drops to ``end_value`` at t = W + S.

    Reproduces Hugging Face ``transformers.get_wsd_schedule(optimizer,
    num_warmup_steps=W, num_decay_steps=D, num_stable_steps=S,
    warmup_type="linear", decay_type=decay_shape, min_lr_ratio=m)`` with
    ``num_cycles=0.5``, the optimizer's learning rate as ``peak_value`` and
    ``init_value = end_value = m * peak_value``. Hugging Face takes
    ``num_training_steps`` N instead of S as S = N - W - D.

    >>> schedule = WarmupStableDecay(peak_value=1.0, warmup_steps=2, stable_steps=2, decay_steps=2, end_value=0.1)
    >>> [schedule(t) for t in range(8)]
    [0.0, 0.5, 1.0, 1.0, 1.0, 0.55, 0.1, 0.1]
    """

    peak_value: float
    warmup_steps: int
    stable_steps: int
    decay_steps: int
    init_value: float = 0.0
    end_value: float = 0.0
    decay_shape: str = "linear"

    def __post_init__(self) -> None:
        _set(self, "peak_value", check_number("peak_value", self.peak_value))
        _set(self, "warmup_steps", check_int("warmup_steps", self.warmup_steps, low=0))
        _set(self, "stable_steps", check_int("stable_steps", self.stable_steps, low=0))
        _set(self, "decay_steps", check_int("decay_steps", self.decay_steps, low=0))
        _set(self, "init_value", check_number("init_value", self.init_value))
        _set(self, "end_value", check_number("end_value", self.end_value))
        _set(self, "decay_shape", check_choice("decay_shape", self.decay_shape, DECAY_SHAPES))

    def _evaluate(self, step: StepArray) -> Any:
        xp = step.xp
        decay_start = self.warmup_steps + self.stable_steps

        value = step.constant(self.peak_value)
        if self.warmup_steps > 0:
            count = step.clamp(high=self.warmup_steps)
            rising = self.init_value + (self.peak_value - self.init_value) * step.fraction(count, self.warmup_steps)
            value = xp.where(step.ge(self.warmup_steps), value, rising)
        if self.decay_steps > 0:
            decayed = self.end_value + (self.peak_value - self.end_value) * self._shape(step.shifted(decay_start))
        else:
            decayed = step.constant(self.end_value)
        return xp.where(step.ge(decay_start), decayed, value)

    def _shape(self, local: StepArray) -> Any:
        """Return shape(q) for the local step of the decay, from 1 at its start to 0 at its end."""
        count = local.clamp(high=self.decay_steps)
        if self.decay_shape == "cosine":
            return cosine_weight(local, count, self.decay_steps)
        # The fraction still to run, from the exact integer distance to the end.
        left = steps_until(local, count, self.decay_steps) / float(self.decay_steps)
        if self.decay_shape == "linear":
            return left
        # 1 - sqrt(q) = (1 - q) / (1 + sqrt(q)), which keeps its precision as q nears 1.
        return left / (1.0 + local.xp.sqrt(local.fraction(count, self.decay_steps)))

    def _horizon(self) -> int | None:
        return self.warmup_steps + self.stable_steps + self.decay_steps
