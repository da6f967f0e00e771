"""Adaptive gradient clipping (AGC): unit-wise clipping relative to the parameter norm."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from optstrat._validate import check_choice, check_number
from optstrat.clipping._base import (
    DEFAULT_NONFINITE,
    ClipInfo,
    Clipper,
    apply_factors,
    as_threshold,
    check_nonfinite,
    factor_to_limit,
    make_info,
    measure,
    smallest,
)
from optstrat.clipping._norms import unit_l2_norms
from optstrat.clipping._tree import match_params
from optstrat.config import register

__all__ = ["AdaptiveClip", "UNIT_AXES", "unit_axes"]

UNIT_AXES = ("last", "first")


def unit_axes(shape: tuple[int, ...], unit_axis: str) -> tuple[int, ...] | None:
    """Return the axes a unit norm reduces over for an array of ``shape``; None means all axes.

    ``unit_axis="last"`` follows ``optax.adaptive_grad_clip`` (optax 0.2.8),
    which expects output units on the last axis, as in Flax and Keras kernels.
    An array with at most one dimension larger than 1 is one unit. Otherwise
    rank 2 and 3 reduce over axis 0, rank 4 over (0, 1, 2) and rank 5 over
    (0, 1, 2, 3). Rank 6 and above, which optax rejects, reduce over every axis
    but the last.

    ``unit_axis="first"`` follows timm's ``adaptive_clip_grad`` for PyTorch's
    (out, in, ...) layout: rank 0 and 1 are one unit, and higher ranks reduce
    over every axis but the first.
    """
    rank = len(shape)
    if unit_axis == "first":
        return None if rank <= 1 else tuple(range(1, rank))
    if sum(1 for size in shape if size != 1) <= 1:
        return None
    if rank in (2, 3):
        return (0,)
    return tuple(range(rank - 1))


@register("adaptive_clip")
@dataclass(frozen=True)
class AdaptiveClip(Clipper):
    """Clip each unit's gradient to ``clipping`` times its parameter norm (AGC).

    For each unit i (a slice of an array along its output axis, see
    :func:`unit_axes`): limit_i = clipping * max(||W_i||, eps) and
    G_i <- G_i * min(1, limit_i / ||G_i||), with L2 norms over the unit.
    This is Brock et al. 2021, "High-Performance Large-Scale Image
    Recognition Without Normalization" (arXiv 2102.06171). ``clipping >= 0``
    and ``eps >= 0``; with ``clipping=0`` every gradient becomes zero, and
    zero units stay zero (no 0/0). ``update`` needs ``params``, with the same
    structure and shapes as ``grads``. ``ClipInfo.scale`` is the smallest
    unit factor and ``ClipInfo.norm`` the global L2 norm before clipping.

    ``unit_axis="last"`` reproduces ``optax.adaptive_grad_clip(clipping,
    eps)`` (the same units for ranks 0 to 5). ``unit_axis="first"``
    reproduces timm's ``adaptive_clip_grad(parameters, clip_factor=clipping,
    eps=eps)`` for PyTorch weights. Both divide by ``max(||G_i||, 1e-6)``
    instead of ``||G_i||``, which differs only for units whose gradient norm
    is below 1e-6 and above their limit.

    >>> import numpy as np
    >>> clipper = AdaptiveClip(clipping=0.1, unit_axis="first")
    >>> grads, _, info = clipper.update([np.array([1.0, 0.0])], clipper.init(None), [np.array([3.0, 4.0])])
    >>> grads[0].tolist(), float(info.scale)
    ([0.5, 0.0], 0.5)
    """

    clipping: float = 0.01
    eps: float = 1e-3
    unit_axis: str = "last"
    nonfinite: str = DEFAULT_NONFINITE

    def __post_init__(self) -> None:
        object.__setattr__(self, "clipping", check_number("clipping", self.clipping, low=0.0))
        object.__setattr__(self, "eps", check_number("eps", self.eps, low=0.0))
        object.__setattr__(self, "unit_axis", check_choice("unit_axis", self.unit_axis, UNIT_AXES))
        object.__setattr__(self, "nonfinite", check_nonfinite(self.nonfinite))

    def update(self, grads: Any, state: Any, params: Any = None) -> tuple[Any, Any, ClipInfo]:
        measured = measure(grads, self.nonfinite)
        xp = measured.xp
        finite = measured.finite
        param_leaves = match_params(grads, params, measured.leaves, xp)

        factors = []
        for grad, param in zip(measured.leaves, param_leaves):
            factor = self._unit_factors(xp, grad, param, measured.norm)
            if self.nonfinite == "propagate":
                factors.append(xp.where(finite, factor, xp.ones_like(factor)))
            else:
                factors.append(xp.where(finite, factor, xp.zeros_like(factor)))

        scale = smallest(xp, factors, measured.norm)
        clipped = apply_factors(xp, measured.leaves, factors, finite, self.nonfinite)
        return measured.rebuild(clipped), state, make_info(xp, measured.norm, scale, finite, scale < 1)

    def _unit_factors(self, xp: Any, grad: Any, param: Any, like: Any) -> Any:
        """Return min(1, limit / ||G_i||) per unit, shaped to broadcast against ``grad``."""
        if math.prod(grad.shape) == 0:
            return xp.ones_like(like)
        axes = unit_axes(tuple(grad.shape), self.unit_axis)
        grad_norm = unit_l2_norms(grad, xp, axes)
        param_norm = unit_l2_norms(param, xp, axes)
        floored = xp.maximum(param_norm, as_threshold(xp, self.eps, param_norm))
        limit = as_threshold(xp, self.clipping, param_norm) * floored
        return factor_to_limit(xp, grad_norm, limit)
