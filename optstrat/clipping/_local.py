"""Clipping of each value and of each tensor on its own."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from optstrat._validate import check_number
from optstrat.clipping._base import (
    DEFAULT_NONFINITE,
    ClipInfo,
    Clipper,
    apply_factors,
    as_array,
    as_threshold,
    check_nonfinite,
    factor_to_limit,
    make_info,
    measure,
    smallest,
)
from optstrat.clipping._norms import check_norm_type, leaf_norms, norm_of_leaves
from optstrat.config import register

__all__ = ["ClipByNorm", "ClipByValue"]


@register("clip_by_value")
@dataclass(frozen=True)
class ClipByValue(Clipper):
    """Clip every gradient value to the interval [-max_value, max_value].

    g <- min(max(g, -max_value), max_value), elementwise, in the gradient's
    dtype (so for float16 the bound is ``max_value`` rounded to float16).
    ``max_value >= 0``; ``max_value=0`` makes every gradient zero.
    ``ClipInfo.scale`` is the smallest factor applied to any value,
    min(1, max_value / max|g|), and ``clipped`` whether any |g| exceeded
    ``max_value``.

    Reproduces ``torch.nn.utils.clip_grad_value_(params, clip_value=max_value)``,
    ``optax.clip(max_delta=max_value)`` and Keras's ``clipvalue=max_value``.
    They keep NaN as NaN and clip infinity to the bound; here non-finite
    gradients follow ``nonfinite`` instead.

    >>> import numpy as np
    >>> clipper = ClipByValue(max_value=1.0)
    >>> grads, _, info = clipper.update([np.array([3.0, -40.0]), np.array([0.5])], clipper.init(None))
    >>> [grad.tolist() for grad in grads], float(info.scale)
    ([[1.0, -1.0], [0.5]], 0.025)
    """

    max_value: float
    nonfinite: str = DEFAULT_NONFINITE

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_value", check_number("max_value", self.max_value, low=0.0))
        object.__setattr__(self, "nonfinite", check_nonfinite(self.nonfinite))

    def update(self, grads: Any, state: Any, params: Any = None) -> tuple[Any, Any, ClipInfo]:
        measured = measure(grads, self.nonfinite)
        xp = measured.xp
        finite = measured.finite

        largest = norm_of_leaves(measured.leaves, xp, math.inf)
        factor = factor_to_limit(xp, largest, as_threshold(xp, self.max_value, largest))
        if self.nonfinite == "propagate":
            scale = xp.where(finite, factor, xp.ones_like(factor))
        else:
            scale = xp.where(finite, factor, xp.zeros_like(factor))

        clipped = [self._clip_leaf(xp, leaf, finite) for leaf in measured.leaves]
        info = make_info(xp, measured.norm, xp.astype(scale, measured.norm.dtype), finite, scale < 1)
        return measured.rebuild(clipped), state, info

    def _clip_leaf(self, xp: Any, leaf: Any, finite: Any) -> Any:
        if math.prod(leaf.shape) == 0:
            return leaf
        bound = as_threshold(xp, self.max_value, leaf)
        clamped = xp.minimum(xp.maximum(leaf, -bound), bound)
        fallback = leaf if self.nonfinite == "propagate" else xp.zeros_like(leaf)
        return as_array(xp, xp.where(finite, clamped, fallback))


@register("clip_by_norm")
@dataclass(frozen=True)
class ClipByNorm(Clipper):
    """Scale each gradient tensor on its own so that its norm is at most ``max_norm``.

    g_i <- g_i * max_norm / max(||g_i||, max_norm) = g_i * min(1, max_norm / ||g_i||)
    for each array g_i, where ||.|| is the ``norm_type``-norm (2 by default,
    1, ``inf`` or any p > 0). ``max_norm >= 0``; zero tensors stay zero, also
    with ``max_norm=0`` (no 0/0). ``ClipInfo.scale`` is the smallest factor
    over the tensors and ``ClipInfo.norm`` the global L2 norm before clipping.

    Reproduces Keras's per-variable ``clipnorm=max_norm`` (for ``norm_type=2``)
    up to rounding. When one variable contains infinity, Keras turns only that
    variable into NaN, while here the ``nonfinite`` policy applies to all.
    PyTorch and Optax have no per-tensor norm clipping.

    >>> import numpy as np
    >>> clipper = ClipByNorm(max_norm=5.0)
    >>> grads, _, info = clipper.update([np.array([6.0, 8.0]), np.array([0.5])], clipper.init(None))
    >>> [grad.tolist() for grad in grads], float(info.scale)
    ([[3.0, 4.0], [0.5]], 0.5)
    """

    max_norm: float
    norm_type: float = 2.0
    nonfinite: str = DEFAULT_NONFINITE

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_norm", check_number("max_norm", self.max_norm, low=0.0))
        object.__setattr__(self, "norm_type", check_norm_type(self.norm_type))
        object.__setattr__(self, "nonfinite", check_nonfinite(self.nonfinite))

    def update(self, grads: Any, state: Any, params: Any = None) -> tuple[Any, Any, ClipInfo]:
        measured = measure(grads, self.nonfinite)
        xp = measured.xp
        finite = measured.finite

        factors = []
        for norm in leaf_norms(measured.leaves, xp, self.norm_type):
            factor = factor_to_limit(xp, norm, as_threshold(xp, self.max_norm, norm))
            if self.nonfinite == "propagate":
                factors.append(xp.where(finite, factor, xp.ones_like(factor)))
            else:
                factors.append(xp.where(finite, factor, xp.zeros_like(factor)))

        scale = smallest(xp, factors, measured.norm)
        clipped = apply_factors(xp, measured.leaves, factors, finite, self.nonfinite)
        return measured.rebuild(clipped), state, make_info(xp, measured.norm, scale, finite, scale < 1)
