"""Gradient clipping: norms, stateless and stateful clippers, and the clipper protocol."""

from optstrat.clipping._base import (
    DEFAULT_NONFINITE,
    NONFINITE_POLICIES,
    ClipInfo,
    Clipper,
    EmptyState,
    NonFiniteGradientError,
)
from optstrat.clipping._agc import AdaptiveClip
from optstrat.clipping._autoclip import AutoClip, AutoClipState
from optstrat.clipping._global import ClipByGlobalNorm
from optstrat.clipping._local import ClipByNorm, ClipByValue
from optstrat.clipping._norms import global_norm
from optstrat.clipping._percentile import DEFAULT_SUGGEST_PERCENTILE, suggest_max_norm
from optstrat.clipping._zclip import ZClip, ZClipState

__all__ = [
    "DEFAULT_NONFINITE",
    "DEFAULT_SUGGEST_PERCENTILE",
    "NONFINITE_POLICIES",
    "AdaptiveClip",
    "AutoClip",
    "AutoClipState",
    "ClipByGlobalNorm",
    "ClipByNorm",
    "ClipByValue",
    "ClipInfo",
    "Clipper",
    "EmptyState",
    "NonFiniteGradientError",
    "ZClip",
    "ZClipState",
    "global_norm",
    "suggest_max_norm",
]
