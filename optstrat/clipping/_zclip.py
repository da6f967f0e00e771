"""ZClip: clip global-norm spikes detected by a z-score against running statistics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from optstrat import _xp
from optstrat._validate import check_int, check_number
from optstrat.clipping._base import (
    DEFAULT_NONFINITE,
    as_threshold,
    check_nonfinite,
)
from optstrat.clipping._global import LimitClipper
from optstrat.clipping._norms import accumulation, safe_sqrt
from optstrat.clipping._tree import flatten, namespace_of_leaves
from optstrat.config import register

__all__ = ["ZCLIP_EPS", "ZClip", "ZClipState"]

#: Added to the standard deviation in the z-score, as in the ZClip reference code.
ZCLIP_EPS = 1e-6


class ZClipState(NamedTuple):
    """The state of :class:`ZClip`, 0-d arrays of the gradients' namespace.

    ``mean`` and ``variance`` are the running statistics of the global L2
    norm, in the norm's dtype. ``count`` is the number of finite updates seen,
    an int32 that stops at ``warmup_steps``.
    """

    mean: Any
    variance: Any
    count: Any


@register("zclip")
@dataclass(frozen=True)
class ZClip(LimitClipper):
    """Clip global-norm spikes to ``mean + z_threshold * std`` of an EMA of past norms (ZClip).

    Warmup: the first ``warmup_steps`` finite updates pass unchanged and only
    record their global L2 norm. At the end of warmup, mean and variance are
    the mean and population variance of those norms. After warmup, with norm
    the current global L2 norm and std = sqrt(variance):

    - z = (norm - mean) / (std + 1e-6);
    - if z > z_threshold, threshold = mean + z_threshold * std and
      g <- g * threshold / norm. The effective norm is then the threshold,
      otherwise the norm itself;
    - mean <- alpha * mean + (1 - alpha) * effective, then
      variance <- alpha * variance + (1 - alpha) * (effective - mean)^2 with
      the updated mean.

    Non-finite updates change nothing in the state. ``0 <= alpha <= 1``
    (``alpha=1`` keeps the warmup statistics), ``z_threshold > 0`` and
    ``warmup_steps >= 1``. With one warmup step the variance starts at 0.

    This is ZClip (Kumar et al. 2025, "ZClip: Adaptive Spike Mitigation for
    LLM Pre-Training", arXiv 2504.02507) in the variant that clips an outlier
    to mean + z_threshold * std. The reference code (bluorion-com/ZClip,
    ``zclip/zclip.py``) has the same warmup, z-score and statistics update,
    but differs in three ways. By default it clips a spike to
    mean + z_threshold**2 * std / z (``clip_option="adaptive_scaling"``, a
    lower threshold for larger spikes). It also caps every update at
    ``max_grad_norm``, 1.0 by default and during warmup too, unless that is
    None. And it scales by ``threshold / (norm + 1e-6)``.

    >>> import numpy as np
    >>> clipper = ZClip(warmup_steps=2)
    >>> state = clipper.init([np.zeros(2)])
    >>> for grad in ([3.0, 4.0], [6.0, 8.0], [300.0, 400.0]):
    ...     grads, state, info = clipper.update([np.array(grad)], state)
    >>> [round(value, 6) for value in grads[0].tolist()], float(info.norm), round(float(info.scale), 6)
    ([8.25, 11.0], 500.0, 0.0275)
    """

    alpha: float = 0.97
    z_threshold: float = 2.5
    warmup_steps: int = 25
    nonfinite: str = DEFAULT_NONFINITE

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", check_number("alpha", self.alpha, low=0.0, high=1.0))
        object.__setattr__(
            self, "z_threshold", check_number("z_threshold", self.z_threshold, low=0.0, low_inclusive=False)
        )
        object.__setattr__(self, "warmup_steps", check_int("warmup_steps", self.warmup_steps, low=1))
        object.__setattr__(self, "nonfinite", check_nonfinite(self.nonfinite))

    def init(self, grads: Any) -> ZClipState:
        """Return zero statistics in the namespace, device and norm dtype of ``grads``."""
        leaves, _ = flatten(grads)
        xp = namespace_of_leaves(leaves, container=grads)
        device = _xp.device_of(leaves[0]) if leaves else None
        zero = xp.asarray(0.0, dtype=accumulation(xp, leaves).result, device=device)
        return ZClipState(mean=zero, variance=zero, count=xp.asarray(0, dtype=xp.int32, device=device))

    def check_state(self, state: Any) -> Any:
        """Raise TypeError unless ``state`` is a ZClipState; return its running mean."""
        if not isinstance(state, ZClipState):
            raise TypeError(f"state must be the ZClipState that init or update returned, got {type(state).__name__}")
        return state.mean

    def limit_for(self, xp: Any, norm: Any, finite: Any, state: ZClipState) -> tuple[Any, ZClipState]:
        """Return the limit for a step with global L2 norm ``norm``, and the updated running statistics."""
        mean = state.mean
        variance = state.variance
        # A non-finite norm changes nothing, so the mean replaces it here and no inf - inf occurs.
        recorded_norm = xp.where(finite, xp.astype(norm, mean.dtype), mean)

        # Warmup: Welford's running mean and population variance of the recorded norms.
        warming = state.count < self.warmup_steps
        recorded = xp.astype(state.count + 1, mean.dtype)
        delta = recorded_norm - mean
        warm_mean = mean + delta / recorded
        warm_variance = variance + (delta * (recorded_norm - warm_mean) - variance) / recorded

        # After warmup: the z-score against the running statistics decides the threshold.
        std = safe_sqrt(xp, variance)
        z_score = (recorded_norm - mean) / (std + ZCLIP_EPS)
        z_threshold = as_threshold(xp, self.z_threshold, mean)
        spike = (z_score > z_threshold) & xp.logical_not(warming)
        threshold = mean + z_threshold * std
        effective = xp.where(spike, threshold, recorded_norm)
        ema_mean = self.alpha * mean + (1 - self.alpha) * effective
        ema_variance = self.alpha * variance + (1 - self.alpha) * (effective - ema_mean) ** 2

        new_state = ZClipState(
            mean=xp.where(finite, xp.where(warming, warm_mean, ema_mean), mean),
            variance=xp.where(finite, xp.where(warming, warm_variance, ema_variance), variance),
            count=xp.where(finite & warming, state.count + 1, state.count),
        )
        # Outside a spike the limit is the norm itself, so the factor is exactly 1.
        limit = xp.astype(xp.where(spike, threshold, recorded_norm), norm.dtype)
        return limit, new_state
