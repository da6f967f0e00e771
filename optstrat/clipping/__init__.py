"""Gradient clipping: norms, stateless clippers and the clipper protocol."""

from optstrat.clipping._base import (
    DEFAULT_NONFINITE,
    NONFINITE_POLICIES,
    ClipInfo,
    Clipper,
    EmptyState,
    NonFiniteGradientError,
)
from optstrat.clipping._global import ClipByGlobalNorm
from optstrat.clipping._norms import global_norm

__all__ = [
    "DEFAULT_NONFINITE",
    "NONFINITE_POLICIES",
    "ClipByGlobalNorm",
    "ClipInfo",
    "Clipper",
    "EmptyState",
    "NonFiniteGradientError",
    "global_norm",
]
