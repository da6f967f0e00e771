"""The clipper protocol: ``init``, ``update``, ``ClipInfo`` and the non-finite policy."""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

from optstrat._validate import check_choice
from optstrat.config import to_config

__all__ = [
    "DEFAULT_NONFINITE",
    "NONFINITE_POLICIES",
    "ClipInfo",
    "Clipper",
    "EmptyState",
    "NonFiniteGradientError",
]

NONFINITE_POLICIES = ("skip", "error", "propagate")

#: The non-finite policy of every clipper unless ``nonfinite`` is given.
#: ``"skip"`` returns zero gradients and ``finite=False`` in :class:`ClipInfo`;
#: the adapters then skip the whole update. It needs no host synchronization
#: and behaves the same under ``jit``.
DEFAULT_NONFINITE = "skip"


class NonFiniteGradientError(FloatingPointError):
    """Raised by a clipper with ``nonfinite="error"`` when a gradient holds NaN or infinity."""


class ClipInfo(NamedTuple):
    """What a clipper did on one update, each field a 0-d array.

    ``norm`` is the global L2 norm before clipping; ``scale`` the global factor
    applied (1 when nothing was clipped; for per-tensor kinds the smallest
    factor); ``finite`` whether every gradient was finite; ``clipped`` whether
    any value was changed.
    """

    norm: Any
    scale: Any
    finite: Any
    clipped: Any


class EmptyState(NamedTuple):
    """The state of a stateless clipper."""


class Clipper:
    """Base class of every clipper: a frozen dataclass with ``init`` and ``update``.

    ``init(grads) -> state`` and ``update(grads, state, params=None) ->
    (clipped_grads, state, ClipInfo)``. Gradients are a list, tuple or dict of
    arrays from one namespace; the structure and dtypes come back unchanged.
    """

    kind: ClassVar[str]
    nonfinite: str

    def init(self, grads: Any) -> Any:
        """Return the initial state for gradients shaped like ``grads``."""
        return EmptyState()

    def update(self, grads: Any, state: Any, params: Any = None) -> tuple[Any, Any, ClipInfo]:
        """Clip ``grads``; return the clipped gradients, the new state and a ClipInfo."""
        raise NotImplementedError

    def to_config(self) -> dict[str, Any]:
        """Return the config dict (JSON types, every field written out) that rebuilds this clipper."""
        return to_config(self)


def check_nonfinite(value: Any) -> str:
    """Return ``value`` if it is a valid non-finite policy, or raise ValueError listing them."""
    return check_choice("nonfinite", value, NONFINITE_POLICIES)


def raise_if_nonfinite(finite: Any, norm: Any, policy: str) -> None:
    """Raise NonFiniteGradientError for policy ``"error"`` when ``finite`` is concretely False.

    Under ``jax.jit`` the flag is a tracer that cannot become a Python bool;
    there the "error" policy behaves like "skip", as documented.
    """
    if policy != "error":
        return
    try:
        is_finite = bool(finite)
    except TypeError:
        return
    if not is_finite:
        raise NonFiniteGradientError(
            f"gradients contain NaN or infinity (global norm {float(norm)!r}); nothing was changed. "
            "Use nonfinite='skip' to skip such updates or 'propagate' to pass them on"
        )
