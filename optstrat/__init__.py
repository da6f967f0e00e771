"""optstrat: learning-rate schedules and gradient clipping, written once for every framework.

The core imports no deep-learning framework. Schedules are immutable, pure
functions of the step that evaluate on Python ints and on arrays of any
array-API namespace. Clippers follow one ``init`` / ``update`` protocol.
Adapters bind both to PyTorch (``optstrat_torch``), Optax (``optstrat_optax``)
and Keras 3 (``optstrat_keras``).
"""

from optstrat import clipping, schedules
from optstrat.clipping import (
    AdaptiveClip,
    AutoClip,
    ClipByGlobalNorm,
    ClipByNorm,
    ClipByValue,
    ClipInfo,
    Clipper,
    ZClip,
    global_norm,
)
from optstrat.config import dump, from_config, from_spec, kinds, load, to_spec
from optstrat.schedules import (
    Clamp,
    Constant,
    CosineDecay,
    CosineRestarts,
    Cyclic,
    ExponentialDecay,
    InverseSqrt,
    InverseTime,
    Join,
    Linear,
    MultiStep,
    OneCycle,
    PiecewiseConstant,
    PiecewiseLinear,
    Polynomial,
    Scale,
    Schedule,
    StepDecay,
    Warmup,
    WarmupCosine,
    WarmupStableDecay,
)

__version__ = "0.1.0"

__all__ = [
    "AdaptiveClip",
    "AutoClip",
    "Clamp",
    "ClipByGlobalNorm",
    "ClipByNorm",
    "ClipByValue",
    "ClipInfo",
    "Clipper",
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
    "ZClip",
    "clipping",
    "dump",
    "from_config",
    "from_spec",
    "global_norm",
    "kinds",
    "load",
    "schedules",
    "to_spec",
]
