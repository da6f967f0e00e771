"""Clipping by the global norm of all gradients."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

from optstrat._validate import check_number
from optstrat.clipping._base import (
    DEFAULT_NONFINITE,
    ClipInfo,
    Clipper,
    apply_factors,
    as_threshold,
    check_nonfinite,
    check_state_namespace,
    factor_to_limit,
    make_info,
    measure,
)
from optstrat.clipping._norms import check_norm_type, norm_of_leaves
from optstrat.config import register

__all__ = ["ClipByGlobalNorm", "LimitClipper", "scale_to_limit"]


@register("clip_by_global_norm")
@dataclass(frozen=True)
class ClipByGlobalNorm(Clipper):
    """Scale all gradients together so that their global norm is at most ``max_norm``.

    g <- g * min(1, max_norm / norm), where norm is the ``norm_type``-norm of
    all gradients taken together: ``norm_type`` is 2 (default), 1, ``inf``
    (the largest magnitude) or any p > 0. ``max_norm >= 0``; with
    ``max_norm=0`` every gradient becomes zero, and zero gradients stay zero
    (no 0/0). ``ClipInfo.norm`` is the L2 norm even when ``norm_type`` is
    another p. Finite gradients whose norm exceeds the float32 range (about
    3.4e38, for float32 and lower-precision input) have an infinite norm, so
    they are clipped to zero while ``ClipInfo.finite`` stays True.

    Reproduces ``optax.clip_by_global_norm(max_norm)`` and Keras's
    ``global_clipnorm=max_norm`` up to rounding. Optax differs in two cases: it
    gives NaN for zero gradients with ``max_norm=0``, and it squares float16
    values in float16, so their norm can overflow and the update become zero.
    ``torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)`` divides by
    ``norm + 1e-6``, so its clipped gradients are smaller by a relative
    ``1e-6 / norm``. The norm itself matches theirs up to rounding, but stays
    finite where float16 or float32 squares overflow.

    >>> import numpy as np
    >>> clipper = ClipByGlobalNorm(max_norm=5.0)
    >>> grads, _, info = clipper.update({"w": np.array([6.0, 8.0])}, clipper.init(None))
    >>> grads["w"].tolist(), float(info.norm), float(info.scale)
    ([3.0, 4.0], 10.0, 0.5)
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
        if self.norm_type == 2.0:
            norm = measured.norm
        else:
            norm = norm_of_leaves(measured.leaves, xp, self.norm_type)

        limit = as_threshold(xp, self.max_norm, norm)
        clipped_grads, info = scale_to_limit(measured, norm, limit, self.nonfinite)
        return clipped_grads, state, info


def scale_to_limit(measured: Any, norm: Any, limit: Any, nonfinite: str) -> tuple[Any, ClipInfo]:
    """Scale every gradient by min(1, limit / norm) under the non-finite policy.

    Returns the rebuilt gradients and the ClipInfo; the stateful clippers
    reuse this with their own limit.
    """
    xp = measured.xp
    factor = factor_to_limit(xp, norm, limit)
    if nonfinite == "propagate":
        scale = xp.where(measured.finite, factor, xp.ones_like(factor))
    else:
        scale = xp.where(measured.finite, factor, xp.zeros_like(factor))
    leaves = apply_factors(xp, measured.leaves, [scale] * len(measured.leaves), measured.finite, nonfinite)
    info = make_info(xp, measured.norm, xp.astype(scale, measured.norm.dtype), measured.finite, scale < 1)
    return measured.rebuild(leaves), info


class LimitClipper(Clipper):
    """Base class of the clippers that scale every gradient by min(1, limit / norm), with a limit from their state.

    ``norm`` is the global L2 norm, and the limit depends only on it, on
    whether every value is finite, and on the state. ``update`` measures the
    norm, calls :meth:`limit_for` and scales. An adapter that measures and
    scales in place calls :meth:`check_state` and :meth:`limit_for` itself
    and gets the same result.
    """

    @abc.abstractmethod
    def check_state(self, state: Any) -> Any:
        """Raise unless ``state`` is a state of this clipper; return a state array, whose namespace the gradients share."""

    @abc.abstractmethod
    def limit_for(self, xp: Any, norm: Any, finite: Any, state: Any) -> tuple[Any, Any]:
        """Return the limit (a 0-d array of ``norm``'s dtype) and the state after a step with this norm.

        ``norm`` is the global L2 norm of the gradients as a 0-d array, and
        ``finite`` is True when every value was finite. On a non-finite step
        the state comes back unchanged.
        """

    def update(self, grads: Any, state: Any, params: Any = None) -> tuple[Any, Any, ClipInfo]:
        state_array = self.check_state(state)
        measured = measure(grads, self.nonfinite, state_array=state_array)
        check_state_namespace(measured.xp, state_array, measured.leaves)
        limit, new_state = self.limit_for(measured.xp, measured.norm, measured.finite, state)
        clipped, info = scale_to_limit(measured, measured.norm, limit, self.nonfinite)
        return clipped, new_state, info
