"""Learning-rate and hyperparameter schedules: immutable, pure functions of the step."""

from optstrat.schedules._base import Schedule
from optstrat.schedules._composite import Join, Warmup, WarmupCosine
from optstrat.schedules._cosine import CosineDecay
from optstrat.schedules._simple import Constant, ExponentialDecay, StepDecay

__all__ = [
    "Constant",
    "CosineDecay",
    "ExponentialDecay",
    "Join",
    "Schedule",
    "StepDecay",
    "Warmup",
    "WarmupCosine",
]
