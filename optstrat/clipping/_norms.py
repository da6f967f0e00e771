"""Norms of gradient collections, accumulated in float32 or wider without overflow.

Float16, bfloat16 and float32 values are accumulated in float64 where the
namespace computes in float64 (NumPy, PyTorch, array-api-strict, JAX with
64-bit mode): every square of a float32 value is exact there, and no sum of
them overflows. Elsewhere (JAX by default), and for float64 input, the values
are first multiplied by a power of two chosen from their largest magnitude, so
that their squares neither overflow nor vanish. This costs a second pass over
the data, but keeps the norm finite and accurate for every result that the
output dtype can hold, including float32 values whose squares overflow float32.
The largest magnitude is taken over all arrays together, so the norm does not
depend on how the values are split into arrays beyond rounding.

Every square root and power is guarded by ``where`` so that derivatives
(``jax.grad``, torch autograd) stay finite at zero gradients."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from optstrat import _xp
from optstrat._validate import check_number
from optstrat.clipping._tree import flatten, namespace_of_leaves

__all__ = [
    "Accumulation",
    "accumulation",
    "as_array",
    "check_norm_type",
    "global_norm",
    "l2_norm_and_finite",
    "leaf_norms",
    "norm_of_leaves",
    "safe_sqrt",
    "unit_l2_norms",
]

# A float64 value at or above this rounds to infinity in float32 (the float32
# maximum plus half of its unit in the last place).
_FLOAT32_OVERFLOW = 2.0**128 - 2.0**103

# (band, shift): values whose largest magnitude is above band are multiplied by
# 1/shift before squaring, those below 1/band by shift (see _power_of_two_scale).
_FLOAT32_BAND = (2.0**40, 2.0**80)
_FLOAT64_BAND = (2.0**400, 2.0**600)


class Accumulation(NamedTuple):
    """The accumulation plan for the norm of a group of arrays.

    ``dtype`` is the dtype the values are summed in and ``result`` the dtype of
    the returned norm. ``rescale`` is whether the values are multiplied by a
    power of two chosen from their largest magnitude before squaring.
    """

    dtype: Any
    result: Any
    rescale: bool


def check_norm_type(value: Any) -> float:
    """Return ``norm_type`` as a float: ``inf`` (also the strings "inf" and "infinity") or any p > 0."""
    if isinstance(value, str) and value.lower() in ("inf", "infinity"):
        return math.inf
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == math.inf:
        return math.inf
    valid = "a number > 0 or 'inf'"
    try:
        return check_number("norm_type", value, low=0.0, low_inclusive=False)
    except TypeError:
        raise TypeError(f"norm_type must be {valid}, got {value!r} ({type(value).__name__})") from None
    except ValueError:
        raise ValueError(f"norm_type must be {valid}, got {value!r}") from None


def accumulation(xp: Any, leaves: list[Any]) -> Accumulation:
    """Return the accumulation plan for ``leaves``: float64 input gives a float64 norm, other input float32."""
    float64 = getattr(xp, "float64", None)
    if float64 is not None and any(leaf.dtype == float64 for leaf in leaves):
        return Accumulation(float64, float64, True)
    # NOTE: PyTorch tensors on Apple's MPS device have no float64, so casting them fails.
    # The float32 rescaled path would suit them, but the plan is not chosen by device.
    if _xp.supports_float64(xp):
        return Accumulation(float64, xp.float32, False)
    return Accumulation(xp.float32, xp.float32, True)


def global_norm(grads: Any, norm_type: float | str = 2.0, *, xp: Any = None) -> Any:
    """Measure the global p-norm of ``grads`` without changing them.

    norm = (sum over all arrays and elements of |g|^p)^(1/p); for p = inf the
    largest magnitude. ``grads`` is a list, tuple or dict of arrays from one
    namespace. The norm is a 0-d array of that namespace: float32 for float16,
    bfloat16 and float32 input (accumulated so that it is finite whenever the
    true norm fits in float32) and float64 when any input is float64. An empty
    input, and arrays with no elements, have norm 0. NaN in the input gives a
    NaN norm; infinity without NaN gives an infinite norm.

    Equals ``torch.nn.utils.get_total_norm(grads, norm_type)`` and
    ``optax.tree.norm(grads)`` up to rounding, except where those overflow in
    float16 or float32.

    >>> import numpy as np
    >>> float(global_norm([np.array([3.0, 4.0]), np.array([12.0])]))
    13.0
    >>> float(global_norm({"w": np.array([3.0, -4.0])}, norm_type="inf"))
    4.0
    """
    norm_type = check_norm_type(norm_type)
    leaves, _ = flatten(grads)
    namespace = namespace_of_leaves(leaves, xp=xp, container=grads)
    return norm_of_leaves(leaves, namespace, norm_type)


def norm_of_leaves(leaves: list[Any], xp: Any, norm_type: float) -> Any:
    """Return the global ``norm_type``-norm of ``leaves`` as a 0-d array (see :func:`global_norm`)."""
    if norm_type == 2.0:
        return l2_norm_and_finite(leaves, xp)[0]

    plan = accumulation(xp, leaves)
    present = _present(leaves)
    if not present:
        return _zero(xp, leaves, plan.result)
    if norm_type == math.inf:
        return as_array(xp, _largest(xp, present, plan.result))
    if norm_type == 1.0:
        total = _sum_all(xp, [xp.sum(xp.abs(xp.astype(leaf, plan.dtype))) for leaf in present])
        return as_array(xp, _narrow(xp, total, plan.result))
    return as_array(xp, _p_norm(xp, present, plan, norm_type))


def leaf_norms(leaves: list[Any], xp: Any, norm_type: float) -> list[Any]:
    """Return the ``norm_type``-norm of each array, each as a 0-d array."""
    return [norm_of_leaves([leaf], xp, norm_type) for leaf in leaves]


def l2_norm_and_finite(leaves: list[Any], xp: Any) -> tuple[Any, Any]:
    """Return the global L2 norm of ``leaves`` and whether every value is finite, as 0-d arrays."""
    plan = accumulation(xp, leaves)
    present = _present(leaves)
    if not present:
        zero = _zero(xp, leaves, plan.result)
        return zero, xp.isfinite(zero)

    if not plan.rescale:
        total = _sum_all(xp, [xp.sum(_square(xp.astype(leaf, plan.dtype))) for leaf in present])
        return as_array(xp, _narrow(xp, safe_sqrt(xp, total), plan.result)), as_array(xp, xp.isfinite(total))

    largest = _largest(xp, present, plan.dtype)
    finite = xp.isfinite(largest)
    scale, inverse = _power_of_two_scale(xp, largest, plan.dtype)
    total = _sum_all(xp, [xp.sum(_square(xp.astype(leaf, plan.dtype) * scale)) for leaf in present])
    return as_array(xp, xp.where(finite, safe_sqrt(xp, total) * inverse, largest)), as_array(xp, finite)


def unit_l2_norms(leaf: Any, xp: Any, axes: tuple[int, ...] | None) -> Any:
    """Return the L2 norm of each unit of ``leaf``, reduced over ``axes`` with kept dimensions.

    ``axes=None`` reduces over the whole array. The result broadcasts against
    ``leaf`` and stays in the accumulation dtype (float64 wherever the
    namespace has it, else float32), so gradient and parameter norms share a
    dtype and products of them do not overflow. ``leaf`` must have at least
    one element.
    """
    plan = accumulation(xp, [leaf])
    values = xp.astype(leaf, plan.dtype)
    if not plan.rescale:
        return safe_sqrt(xp, xp.sum(_square(values), axis=axes, keepdims=True))

    largest = xp.max(xp.abs(values), axis=axes, keepdims=True)
    scale, inverse = _power_of_two_scale(xp, largest, plan.dtype)
    total = xp.sum(_square(values * scale), axis=axes, keepdims=True)
    return xp.where(xp.isfinite(largest), safe_sqrt(xp, total) * inverse, largest)


def _p_norm(xp: Any, leaves: list[Any], plan: Accumulation, norm_type: float) -> Any:
    # Each |g| is divided by the largest one, so every term and the sum stay in [0, count].
    # The power-of-two prescaling keeps that divisor a normal number, because XLA divides
    # by a broadcast scalar through its reciprocal, which is flushed to zero when subnormal.
    largest = _largest(xp, leaves, plan.dtype)
    finite = xp.isfinite(largest)
    present = finite & (largest > 0)
    scale, _ = _power_of_two_scale(xp, largest, plan.dtype)
    divisor = xp.where(present, largest * scale, xp.ones_like(largest))
    terms = [_safe_power(xp, xp.abs(xp.astype(leaf, plan.dtype)) * scale / divisor, norm_type) for leaf in leaves]
    total = _sum_all(xp, [xp.sum(term) for term in terms])

    # For p < 1 the root total**(1/p) can exceed the dtype's range; it becomes
    # infinity there instead of overflowing, which NumPy would report as a warning.
    positive = total > 0
    safe_total = xp.where(positive, total, xp.ones_like(total))
    safe_largest = xp.where(present, largest, xp.ones_like(largest))
    log_limit = math.log(float(xp.finfo(plan.dtype).max)) - xp.log(safe_largest)
    fits = xp.log(safe_total) / norm_type <= log_limit
    powered = xp.where(fits, safe_total, xp.ones_like(total)) ** (1.0 / norm_type)
    root = xp.where(fits, powered, xp.zeros_like(total) + math.inf)
    root = xp.where(positive, root, xp.zeros_like(total))
    norm = xp.where(finite, largest * root, largest)
    return _narrow(xp, norm, plan.result)


def _power_of_two_scale(xp: Any, largest: Any, dtype: Any) -> tuple[Any, Any]:
    """Return a power of two ``scale`` and its inverse that bring ``largest`` near 1.

    ``largest * scale`` lies in [2**-69, 2**48] for float32 ([2**-474, 2**424]
    for float64), so squares of the scaled values neither overflow nor lose
    the terms that matter, and every factor is a normal number (exact to apply,
    never flushed to zero).
    """
    band, shift = _FLOAT64_BAND if dtype == getattr(xp, "float64", None) else _FLOAT32_BAND
    big = largest > band
    small = largest < 1.0 / band
    one = xp.ones_like(largest)
    scale = xp.where(big, one * (1.0 / shift), xp.where(small, one * shift, one))
    inverse = xp.where(big, one * shift, xp.where(small, one * (1.0 / shift), one))
    return scale, inverse


def as_array(xp: Any, value: Any) -> Any:
    """Return ``value`` as an array of ``xp``.

    NumPy reductions, and arithmetic on 0-d arrays, return NumPy scalars; they
    become 0-d arrays here. Arrays pass through untouched (``torch.asarray``
    would warn about ``requires_grad``).
    """
    if isinstance(value, np.generic):
        return xp.asarray(value)
    return value


def _present(leaves: list[Any]) -> list[Any]:
    return [leaf for leaf in leaves if math.prod(leaf.shape) > 0]


def _zero(xp: Any, leaves: list[Any], dtype: Any) -> Any:
    device = _xp.device_of(leaves[0]) if leaves else None
    return xp.asarray(0.0, dtype=dtype, device=device)


def _largest(xp: Any, leaves: list[Any], dtype: Any) -> Any:
    # The largest magnitude is exact in the input dtype, and widening it is exact too.
    result = None
    for leaf in leaves:
        value = xp.astype(xp.max(xp.abs(leaf)), dtype)
        # maximum ignores NaN in some namespaces, so NaN is carried explicitly.
        result = value if result is None else xp.where(xp.isnan(value), value, xp.maximum(result, value))
    return result


def _sum_all(xp: Any, totals: list[Any]) -> Any:
    result = totals[0]
    for total in totals[1:]:
        result = result + total
    return result


def _square(values: Any) -> Any:
    return values * values


def safe_sqrt(xp: Any, total: Any) -> Any:
    """Return sqrt(total) for total >= 0, with a finite derivative at 0 (``jax.grad``, autograd).

    The inner ``where`` keeps autodiff away from sqrt's infinite slope at 0. A NaN total
    stays NaN, so a NaN gradient never reports a norm of 0.
    """
    positive = total > 0
    root = xp.where(positive, xp.sqrt(xp.where(positive, total, xp.ones_like(total))), xp.zeros_like(total))
    return xp.where(xp.isnan(total), total, root)


def _safe_power(xp: Any, ratio: Any, exponent: float) -> Any:
    # ratio**p has an infinite derivative at 0 for p < 1; the inner where avoids it.
    positive = ratio > 0
    return xp.where(positive, xp.where(positive, ratio, xp.ones_like(ratio)) ** exponent, xp.zeros_like(ratio))


def _narrow(xp: Any, value: Any, dtype: Any) -> Any:
    """Cast a norm to ``dtype``; float64 values beyond the float32 range become infinity silently."""
    if value.dtype == dtype:
        return value
    value = xp.where(value >= _FLOAT32_OVERFLOW, xp.zeros_like(value) + math.inf, value)
    return xp.astype(value, dtype)
