"""Learning-rate and hyperparameter schedules: immutable, pure functions of the step."""

from optstrat.schedules._base import Schedule
from optstrat.schedules._composite import Join, Warmup, WarmupCosine
from optstrat.schedules._cosine import CosineDecay
from optstrat.schedules._cyclic import CosineRestarts, Cyclic, OneCycle
from optstrat.schedules._piecewise import MultiStep, PiecewiseConstant, PiecewiseLinear
from optstrat.schedules._polynomial import InverseSqrt, InverseTime, Linear, Polynomial
from optstrat.schedules._simple import Constant, ExponentialDecay, StepDecay
from optstrat.schedules._transform import Clamp, Scale
from optstrat.schedules._wsd import WarmupStableDecay

__all__ = [
    "Clamp",
    "Constant",
    "CosineDecay",
    "CosineRestarts",
    "Cyclic",
    "ExponentialDecay",
    "InverseSqrt",
    "InverseTime",
    "Join",
    "Linear",
    "MultiStep",
    "OneCycle",
    "PiecewiseConstant",
    "PiecewiseLinear",
    "Polynomial",
    "Scale",
    "Schedule",
    "StepDecay",
    "Warmup",
    "WarmupCosine",
    "WarmupStableDecay",
]
