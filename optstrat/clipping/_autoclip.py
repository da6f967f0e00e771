"""AutoClip: clip to a percentile of the recent global gradient norms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from optstrat import _xp
from optstrat._validate import check_int, check_number
from optstrat.clipping._base import DEFAULT_NONFINITE, check_nonfinite
from optstrat.clipping._global import LimitClipper
from optstrat.clipping._norms import accumulation
from optstrat.clipping._percentile import ring_percentile
from optstrat.clipping._tree import flatten, namespace_of_leaves
from optstrat.config import register

__all__ = ["AutoClip", "AutoClipState"]


class AutoClipState(NamedTuple):
    """The state of :class:`AutoClip`, fixed-shape arrays of the gradients' namespace.

    ``norms`` is the ring buffer of the last ``history_size`` finite global L2
    norms, with shape ``(history_size,)`` and the norm's dtype. ``count`` is
    the number of entries filled so far, at most ``history_size``, and
    ``index`` the slot written next. Both counters are int32 0-d arrays.
    """

    norms: Any
    count: Any
    index: Any


@register("autoclip")
@dataclass(frozen=True)
class AutoClip(LimitClipper):
    """Clip by global L2 norm to a percentile of the norms seen so far (AutoClip).

    Each update records the global L2 norm in a ring buffer of the last
    ``history_size`` norms, then clips to threshold = the ``percentile``-th
    percentile of the buffer, current norm included (NumPy's default linear
    interpolation): g <- g * min(1, threshold / norm). The first update is
    never clipped, because its own norm is the only entry. Non-finite updates
    are not recorded. ``0 <= percentile <= 100``, ``history_size >= 1``.

    This is AutoClip (Seetharaman et al. 2020, "AutoClip: Adaptive Gradient
    Clipping for Source Separation Networks", arXiv 2007.14469). Their PyTorch
    code (pseeth/autoclip, ``autoclip.py``) keeps every norm since the start.
    Here only the last ``history_size`` are kept, so the state has a fixed
    shape and the threshold follows the recent norms. Their code clips with
    ``torch.nn.utils.clip_grad_norm_``, whose ``1e-6`` epsilon makes the
    clipped gradients smaller by a relative ``1e-6 / norm``.

    >>> import numpy as np
    >>> clipper = AutoClip(percentile=50.0, history_size=3)
    >>> state = clipper.init([np.zeros(2)])
    >>> for grad in ([3.0, 4.0], [0.6, 0.8], [30.0, 40.0]):
    ...     grads, state, info = clipper.update([np.array(grad)], state)
    >>> grads[0].tolist(), float(info.norm), int(state.count)
    ([3.0, 4.0], 50.0, 3)
    """

    percentile: float = 10.0
    history_size: int = 1000
    nonfinite: str = DEFAULT_NONFINITE

    def __post_init__(self) -> None:
        object.__setattr__(self, "percentile", check_number("percentile", self.percentile, low=0.0, high=100.0))
        object.__setattr__(self, "history_size", check_int("history_size", self.history_size, low=1))
        object.__setattr__(self, "nonfinite", check_nonfinite(self.nonfinite))

    def init(self, grads: Any) -> AutoClipState:
        """Return an empty history in the namespace, device and norm dtype of ``grads``."""
        leaves, _ = flatten(grads)
        xp = namespace_of_leaves(leaves, container=grads)
        device = _xp.device_of(leaves[0]) if leaves else None
        dtype = accumulation(xp, leaves).result
        counter = xp.asarray(0, dtype=xp.int32, device=device)
        return AutoClipState(
            norms=xp.zeros((self.history_size,), dtype=dtype, device=device), count=counter, index=counter
        )

    def check_state(self, state: Any) -> Any:
        """Raise unless ``state`` is an AutoClipState with ``history_size`` slots; return its norm history."""
        if not isinstance(state, AutoClipState):
            raise TypeError(f"state must be the AutoClipState that init or update returned, got {type(state).__name__}")
        if tuple(state.norms.shape) != (self.history_size,):
            raise ValueError(
                f"state.norms must have shape ({self.history_size},) to match history_size, "
                f"got {tuple(state.norms.shape)}; call init of this clipper to start a new state"
            )
        return state.norms

    def limit_for(self, xp: Any, norm: Any, finite: Any, state: AutoClipState) -> tuple[Any, AutoClipState]:
        """Return the percentile of the history with ``norm`` recorded, and that history."""
        size = xp.asarray(self.history_size, dtype=state.count.dtype, device=_xp.device_of(state.count))
        slots = xp.arange(self.history_size, dtype=state.index.dtype, device=_xp.device_of(state.norms))
        recorded = xp.astype(norm, state.norms.dtype)
        norms = xp.where((slots == state.index) & finite, recorded, state.norms)
        count = xp.where(finite, xp.minimum(state.count + 1, size), state.count)
        index = xp.where(finite, (state.index + 1) % size, state.index)

        threshold = ring_percentile(xp, norms, count, self.percentile)
        limit = xp.astype(threshold, norm.dtype)
        return limit, AutoClipState(norms=norms, count=count, index=index)
