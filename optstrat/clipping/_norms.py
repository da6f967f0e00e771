"""Norms of gradient collections, accumulated in float32 or wider without overflow."""

from __future__ import annotations

import math
from typing import Any

from optstrat import _xp
from optstrat._validate import check_number
from optstrat.clipping._tree import flatten, namespace_of_leaves

__all__ = ["accumulation_dtype", "check_norm_type", "global_norm", "leaf_norms", "norm_of_leaves"]

# Squares of float32 values up to 2**128 overflow float32. Where float64 is not
# available, a second sum of squares of values scaled by 2**-66 stays finite
# for every norm up to the float32 maximum and is used when the plain sum overflows.
_SCALE_EXPONENT = 66


def check_norm_type(value: Any) -> float:
    """Return ``norm_type`` as a float: ``inf`` or any p > 0."""
    if isinstance(value, str) and value.lower() in ("inf", "infinity"):
        return math.inf
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == math.inf:
        return math.inf
    return check_number("norm_type", value, low=0.0, low_inclusive=False)


def accumulation_dtype(xp: Any, dtype: Any) -> Any:
    """Return float64 for float64 input and float32 for float16, bfloat16 and float32 input."""
    if hasattr(xp, "float64") and dtype == xp.float64:
        return xp.float64
    return xp.float32


def global_norm(grads: Any, norm_type: float | str = 2.0, *, xp: Any = None) -> Any:
    """Measure the global p-norm of ``grads`` without changing them.

    ``grads`` is a list, tuple or dict of arrays from one namespace. The norm
    is a 0-d array of that namespace: float32 for float16, bfloat16 and float32
    input (accumulated so that it never overflows while the true norm fits in
    float32) and float64 when any input is float64. An empty input has norm 0.

    >>> import numpy as np
    >>> float(global_norm([np.array([3.0, 4.0]), np.array([12.0])]))
    13.0
    """
    norm_type = check_norm_type(norm_type)
    leaves, _ = flatten(grads)
    namespace = namespace_of_leaves(leaves, xp=xp)
    return norm_of_leaves(leaves, namespace, norm_type)


def norm_of_leaves(leaves: list[Any], xp: Any, norm_type: float) -> Any:
    """Return the global ``norm_type``-norm of ``leaves`` (see :func:`global_norm`)."""
    dtype = _result_dtype(leaves, xp)
    device = _xp.device_of(leaves[0]) if leaves else None
    present = [leaf for leaf in leaves if math.prod(leaf.shape) > 0]
    if not present:
        return xp.asarray(0.0, dtype=dtype, device=device)
    if norm_type == math.inf:
        maxima = [xp.max(xp.abs(xp.astype(leaf, dtype))) for leaf in present]
        return _reduce_max(xp, maxima)
    if norm_type == 2.0:
        return _l2_norm(present, xp, dtype)
    if norm_type == 1.0:
        wide = _wide_dtype(xp, dtype)
        total = sum(xp.sum(xp.abs(xp.astype(leaf, wide))) for leaf in present)
        return xp.astype(total, dtype)
    return _p_norm(present, xp, dtype, norm_type)


def leaf_norms(leaves: list[Any], xp: Any, norm_type: float) -> list[Any]:
    """Return the ``norm_type``-norm of each array, each as a 0-d array."""
    return [norm_of_leaves([leaf], xp, norm_type) for leaf in leaves]


def _l2_norm(leaves: list[Any], xp: Any, dtype: Any) -> Any:
    wide = _wide_dtype(xp, dtype)
    if wide != dtype or dtype == getattr(xp, "float64", None):
        # float64 holds the square of every float32 value, so one pass suffices.
        total = sum(xp.sum(_square(xp.astype(leaf, wide))) for leaf in leaves)
        return xp.astype(xp.sqrt(total), dtype)
    scale = 2.0**-_SCALE_EXPONENT
    plain = []
    scaled = []
    for leaf in leaves:
        values = xp.astype(leaf, dtype)
        plain.append(xp.sum(_square(values)))
        scaled.append(xp.sum(_square(values * scale)))
    plain_total = sum(plain)
    scaled_norm = xp.sqrt(sum(scaled)) * 2.0**_SCALE_EXPONENT
    return xp.where(xp.isinf(plain_total) & xp.isfinite(scaled_norm), scaled_norm, xp.sqrt(plain_total))


def _p_norm(leaves: list[Any], xp: Any, dtype: Any, norm_type: float) -> Any:
    # Dividing by the largest magnitude keeps every term in [0, 1], so the sum cannot overflow.
    wide = _wide_dtype(xp, dtype)
    largest = _reduce_max(xp, [xp.max(xp.abs(xp.astype(leaf, wide))) for leaf in leaves])
    divisor = xp.where(largest > 0, largest, xp.ones_like(largest))
    total = sum(xp.sum((xp.abs(xp.astype(leaf, wide)) / divisor) ** norm_type) for leaf in leaves)
    return xp.astype(largest * total ** (1.0 / norm_type), dtype)


def _square(values: Any) -> Any:
    return values * values


def _reduce_max(xp: Any, values: list[Any]) -> Any:
    result = values[0]
    for value in values[1:]:
        # maximum ignores NaN in some namespaces, so NaN is carried explicitly.
        result = xp.where(xp.isnan(value), value, xp.maximum(result, value))
    return result


def _wide_dtype(xp: Any, dtype: Any) -> Any:
    if _xp.supports_float64(xp):
        return xp.float64
    return dtype


def _result_dtype(leaves: list[Any], xp: Any) -> Any:
    for leaf in leaves:
        if hasattr(xp, "float64") and leaf.dtype == xp.float64:
            return xp.float64
    return xp.float32
