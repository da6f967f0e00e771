"""Clipping by the global norm of all gradients."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from optstrat._validate import check_number
from optstrat.clipping._base import (
    DEFAULT_NONFINITE,
    ClipInfo,
    Clipper,
    EmptyState,
    check_nonfinite,
    raise_if_nonfinite,
)
from optstrat.clipping._norms import check_norm_type, norm_of_leaves
from optstrat.clipping._tree import flatten, namespace_of_leaves
from optstrat.config import register

__all__ = ["ClipByGlobalNorm", "apply_scale", "global_scale"]


@register("clip_by_global_norm")
@dataclass(frozen=True)
class ClipByGlobalNorm(Clipper):
    """Scale all gradients together so that their global norm is at most ``max_norm``.

    scale = min(1, max_norm / norm), where norm is the global ``norm_type``-norm.

    Reproduces ``optax.clip_by_global_norm(max_norm)`` exactly and Keras's
    ``global_clipnorm``; ``torch.nn.utils.clip_grad_norm_`` divides by
    ``norm + 1e-6`` instead, a relative difference of about ``1e-6 / norm``.
    Zero gradients with ``max_norm=0`` stay zero (optax gives NaN there).

    >>> import numpy as np
    >>> clipper = ClipByGlobalNorm(max_norm=1.0)
    >>> grads, _, info = clipper.update([np.array([3.0, 4.0])], clipper.init(None))
    >>> grads[0].tolist(), float(info.norm)
    ([0.6, 0.8], 5.0)
    """

    max_norm: float
    norm_type: float = 2.0
    nonfinite: str = DEFAULT_NONFINITE

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_norm", check_number("max_norm", self.max_norm, low=0.0))
        object.__setattr__(self, "norm_type", check_norm_type(self.norm_type))
        object.__setattr__(self, "nonfinite", check_nonfinite(self.nonfinite))

    def update(self, grads: Any, state: Any = EmptyState(), params: Any = None) -> tuple[Any, Any, ClipInfo]:
        leaves, rebuild = flatten(grads)
        xp = namespace_of_leaves(leaves)
        norm = norm_of_leaves(leaves, xp, self.norm_type)
        l2_norm = norm if self.norm_type == 2.0 else norm_of_leaves(leaves, xp, 2.0)
        finite = xp.isfinite(l2_norm) & xp.isfinite(norm)
        raise_if_nonfinite(finite, l2_norm, self.nonfinite)

        scale = global_scale(xp, norm, self.max_norm, finite, self.nonfinite)
        clipped = apply_scale(xp, leaves, scale, finite, self.nonfinite)
        info = ClipInfo(norm=l2_norm, scale=scale, finite=finite, clipped=scale < 1)
        return rebuild(clipped), state, info


def global_scale(xp: Any, norm: Any, max_norm: float, finite: Any, nonfinite: str) -> Any:
    """Return min(1, max_norm / norm) without 0/0, and the policy's factor for non-finite norms."""
    one = xp.ones_like(norm)
    safe_norm = xp.where(norm > max_norm, norm, one)
    scale = xp.where(norm > max_norm, max_norm / safe_norm, one)
    if nonfinite == "propagate":
        return xp.where(finite, scale, one)
    return xp.where(finite, scale, xp.zeros_like(norm))


def apply_scale(xp: Any, leaves: list[Any], scale: Any, finite: Any, nonfinite: str) -> list[Any]:
    """Multiply each array by ``scale`` in float32 or wider, keeping its dtype.

    With the "skip" and "error" policies a non-finite input gives zeros, not
    ``inf * 0 = NaN``.
    """
    result = []
    for leaf in leaves:
        if math.prod(leaf.shape) == 0:
            result.append(leaf)
            continue
        wide = leaf.dtype if leaf.dtype in (xp.float32, getattr(xp, "float64", None)) else xp.float32
        product = xp.astype(leaf, wide) * xp.astype(scale, wide)
        if nonfinite != "propagate":
            product = xp.where(finite, product, xp.zeros_like(product))
        result.append(xp.astype(product, leaf.dtype))
    return result
