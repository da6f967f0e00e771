"""The clipper protocol: ``init``, ``update``, ``ClipInfo`` and the non-finite policy."""

from __future__ import annotations

import abc
import math
from typing import Any, ClassVar, NamedTuple

from optstrat import _xp
from optstrat._validate import check_choice
from optstrat.clipping._norms import as_array, l2_norm_and_finite
from optstrat.clipping._tree import flatten, namespace_of_leaves
from optstrat.config import to_config

__all__ = [
    "DEFAULT_NONFINITE",
    "NONFINITE_POLICIES",
    "ClipInfo",
    "Clipper",
    "EmptyState",
    "Measured",
    "NonFiniteGradientError",
    "apply_factors",
    "as_array",
    "as_threshold",
    "check_nonfinite",
    "check_state_namespace",
    "factor_to_limit",
    "make_info",
    "measure",
    "raise_if_nonfinite",
    "smallest",
]

NONFINITE_POLICIES = ("skip", "error", "propagate")

#: The non-finite policy of every clipper unless ``nonfinite`` is given.
#: ``"skip"`` returns zero gradients and ``finite=False`` in :class:`ClipInfo`;
#: the adapters then skip the whole update. It needs no host synchronization
#: and behaves the same under ``jit``.
DEFAULT_NONFINITE = "skip"


class NonFiniteGradientError(FloatingPointError):
    """Raised by a clipper with ``nonfinite="error"`` when a gradient contains NaN or infinity."""


class ClipInfo(NamedTuple):
    """The record of one clipper update, each field a 0-d array of the gradients' namespace.

    ``norm`` is the global L2 norm before clipping, float32 or float64 when a
    gradient is float64. ``scale`` is the global factor applied: 1 when nothing
    was clipped and 0 when a non-finite update was skipped. For the per-tensor,
    unit-wise and elementwise kinds it is the smallest factor applied to any
    value. ``finite`` is whether every gradient was finite, and ``clipped``
    whether any value was changed (True for a skipped update).
    """

    norm: Any
    scale: Any
    finite: Any
    clipped: Any


class EmptyState(NamedTuple):
    """The state of a stateless clipper."""


class Clipper(abc.ABC):
    """Base class of every clipper: a frozen dataclass with ``init`` and ``update``.

    ``init(grads) -> state`` and ``update(grads, state, params=None) ->
    (clipped_grads, state, ClipInfo)``. Gradients are a list, tuple or dict of
    arrays from one namespace; the structure and dtypes come back unchanged.
    The state is a NamedTuple of fixed-shape arrays (empty for the stateless
    kinds), so it passes through ``jax.jit``, ``vmap`` and ``lax.scan`` and
    into checkpoints.

    Non-finite gradients (NaN or infinity anywhere) follow the clipper's
    ``nonfinite`` policy. ``"skip"`` returns zeros with ``finite=False``.
    ``"error"`` raises :class:`NonFiniteGradientError` after measuring the
    norm and before any gradient or state is changed. Under ``jax.jit`` the
    check cannot run, so there it acts like ``"skip"``. ``"propagate"``
    returns the gradients unchanged, non-finite values included. In every
    policy the stateful clippers leave their state unchanged on a non-finite
    update.
    """

    kind: ClassVar[str]
    nonfinite: str

    def init(self, grads: Any) -> Any:
        """Return the initial state for gradients shaped like ``grads``."""
        return EmptyState()

    @abc.abstractmethod
    def update(self, grads: Any, state: Any, params: Any = None) -> tuple[Any, Any, ClipInfo]:
        """Clip ``grads``; return the clipped gradients, the new state and a ClipInfo."""

    def to_config(self) -> dict[str, Any]:
        """Return the config dict (JSON types, every field written out) that rebuilds this clipper."""
        return to_config(self)


class Measured(NamedTuple):
    """Flattened gradients with their namespace, global L2 norm and finiteness flag."""

    leaves: list[Any]
    rebuild: Any
    xp: Any
    norm: Any
    finite: Any


def measure(grads: Any, nonfinite: str, state_array: Any = None) -> Measured:
    """Flatten ``grads``, measure the global L2 norm and apply the ``"error"`` policy.

    Empty ``grads`` take the namespace of ``state_array`` (the stateful
    clippers pass an array of their state), or NumPy's when it is None.
    """
    leaves, rebuild = flatten(grads)
    if leaves or state_array is None:
        xp = namespace_of_leaves(leaves, container=grads)
    else:
        xp = _xp.array_namespace(state_array)
    norm, finite = l2_norm_and_finite(leaves, xp)
    raise_if_nonfinite(finite, norm, nonfinite)
    return Measured(leaves, rebuild, xp, norm, finite)


def check_nonfinite(value: Any) -> str:
    """Return ``value`` if it is a valid non-finite policy, or raise ValueError listing them."""
    return check_choice("nonfinite", value, NONFINITE_POLICIES)


def raise_if_nonfinite(finite: Any, norm: Any, policy: str) -> None:
    """Raise NonFiniteGradientError for policy ``"error"`` when ``finite`` is concretely False.

    Under ``jax.jit`` the flag is a tracer that cannot become a Python bool;
    there the "error" policy behaves like "skip", as documented. On an
    accelerator the check waits for the device, so only "error" pays for it.
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


def as_threshold(xp: Any, value: float, like: Any) -> Any:
    """Return ``value`` as a 0-d array with the dtype and device of ``like``, saturated to its range.

    A field such as ``max_norm=1e300`` then compares with a float32 norm
    without an overflow (NumPy warns when a Python float overflows float32).
    """
    largest = float(xp.finfo(like.dtype).max)
    return xp.asarray(min(value, largest), dtype=like.dtype, device=_xp.device_of(like))


def factor_to_limit(xp: Any, norm: Any, limit: Any) -> Any:
    """Return min(1, limit / norm): 1 where ``norm <= limit``, so 0/0 never occurs."""
    # NOTE: a float32 factor below 2**-126 (a norm more than 8.5e37 times the limit) is
    # subnormal, and XLA flushes subnormals to zero, so JAX then returns zero gradients
    # where NumPy and PyTorch return the tiny scaled values.
    over = norm > limit
    safe_norm = xp.where(over, norm, xp.ones_like(norm))
    return xp.where(over, limit / safe_norm, xp.ones_like(norm))


def smallest(xp: Any, values: list[Any], like: Any) -> Any:
    """Return the smallest entry of all ``values`` as a 0-d array, or 1 when there is none."""
    result = xp.ones_like(like)
    for value in values:
        result = xp.minimum(result, xp.astype(xp.min(value), like.dtype))
    return result


def apply_factors(xp: Any, leaves: list[Any], factors: list[Any], finite: Any, policy: str) -> list[Any]:
    """Multiply each array by its factor in float32 or wider and cast back to its dtype.

    A factor is a 0-d array or an array that broadcasts against its leaf (the
    unit-wise factors of adaptive clipping). When ``finite`` is False the
    result follows ``policy``: zeros for "skip" and "error" (the input is
    zeroed before the product, so ``inf * 0`` never makes NaN), the input
    unchanged for "propagate". Arrays with no elements come back as they are.
    """
    float64 = getattr(xp, "float64", None)
    result = []
    for leaf, factor in zip(leaves, factors):
        if math.prod(leaf.shape) == 0:
            result.append(leaf)
            continue
        wide = leaf.dtype if leaf.dtype in (xp.float32, float64) else xp.float32
        if policy == "propagate":
            factor = xp.where(finite, factor, xp.ones_like(factor))
            values = leaf
        else:
            factor = xp.where(finite, factor, xp.zeros_like(factor))
            values = xp.where(finite, leaf, xp.zeros_like(leaf))
        product = xp.astype(values, wide) * xp.astype(factor, wide)
        result.append(as_array(xp, xp.astype(product, leaf.dtype)))
    return result


def make_info(xp: Any, norm: Any, scale: Any, finite: Any, clipped: Any) -> ClipInfo:
    """Build a ClipInfo whose fields are 0-d arrays."""
    return ClipInfo(
        norm=as_array(xp, norm),
        scale=as_array(xp, scale),
        finite=as_array(xp, finite),
        clipped=as_array(xp, clipped),
    )


def check_state_namespace(xp: Any, array: Any, leaves: list[Any]) -> None:
    """Raise TypeError when a state array and the gradients come from different namespaces."""
    if not leaves or not _xp.is_array(array):
        return
    state_namespace = _xp.array_namespace(array)
    if state_namespace is not xp:
        raise TypeError(
            f"state and grads must use one array namespace: grads are {xp.__name__} and the state is "
            f"{state_namespace.__name__}; call init with gradients like those passed to update"
        )
