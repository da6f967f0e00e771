"""Array-namespace helpers shared by schedules and clippers.

The core never imports a deep-learning framework. It infers the namespace of an
input array with ``array_api_compat`` and calls only a small set of functions on
it, so an adapter can pass a namespace of its own. The Keras adapter builds one
from TensorFlow operations for the TensorFlow backend. The functions the core
uses are:

``asarray, astype, where, maximum, minimum, floor, ceil, cos, sin, sqrt, exp,
log, log1p, abs, sign, isfinite, isnan, isinf, sum, max, min, sort, arange,
zeros, ones, reshape, zeros_like, ones_like, logical_and, logical_or,
logical_not, floor_divide, remainder, iinfo, finfo``, the dtypes ``bool, int32,
int64, float16, float32, float64`` and Python operators on arrays.
"""

from __future__ import annotations

import numbers
import sys
from typing import Any

import array_api_compat
import numpy as np

__all__ = [
    "array_namespace",
    "default_float_dtype",
    "device_of",
    "is_array",
    "is_scalar",
    "scalar",
    "supports_float64",
]


def is_scalar(value: Any) -> bool:
    """Tell whether ``value`` is a Python or NumPy real scalar (``bool`` excluded)."""
    if isinstance(value, (bool, np.bool_)):
        return False
    return isinstance(value, (numbers.Real, np.integer, np.floating))


def is_array(value: Any) -> bool:
    """Tell whether ``value`` is an array of a namespace that array-api-compat supports."""
    if _is_torch_tensor(value):
        return True
    return array_api_compat.is_array_api_obj(value) and not is_scalar(value)


def array_namespace(*arrays: Any) -> Any:
    """Return the array-API namespace of ``arrays``; raise TypeError when they mix namespaces."""
    if arrays and all(_is_torch_tensor(array) for array in arrays):
        import array_api_compat.torch as torch_namespace

        return torch_namespace
    return array_api_compat.array_namespace(*arrays)


def scalar(xp: Any, value: float, dtype: Any, device: Any) -> Any:
    """Return a Python number as a 0-d array of ``dtype`` on ``device``.

    JAX gets no device: an array created without one is uncommitted and goes
    to the device of the committed arrays it meets, while placing it on a
    device adds a sharding step to every eager call.
    """
    if array_api_compat.is_jax_namespace(xp):
        return xp.asarray(value, dtype=dtype)
    return xp.asarray(value, dtype=dtype, device=device)


def device_of(array: Any) -> Any:
    """Return the device of ``array`` as its namespace names it."""
    if _is_torch_tensor(array):
        return array.device
    return array_api_compat.device(array)


def _is_torch_tensor(value: Any) -> bool:
    """Tell whether ``value`` is a torch.Tensor, without importing torch.

    array-api-compat caches its type checks with ``functools.lru_cache``, and
    ``torch.compile`` warns about every such call it traces, so torch tensors
    take this check instead. It gives the same namespace and device.
    """
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def default_float_dtype(xp: Any, like: Any = None) -> Any:
    """Return the floating dtype a schedule evaluates in for an input like ``like``.

    A floating input keeps its dtype. An integer input gives the namespace's
    default floating dtype: float64 for NumPy, ``torch.get_default_dtype()`` for
    PyTorch and float32 for JAX unless 64-bit mode is on.
    """
    if like is not None and _is_floating(xp, like.dtype):
        return like.dtype
    if like is not None:
        return xp.asarray(0.0, device=device_of(like)).dtype
    return xp.asarray(0.0).dtype


def supports_float64(xp: Any) -> bool:
    """Tell whether ``xp`` computes in float64 (JAX without 64-bit mode does not)."""
    if array_api_compat.is_jax_namespace(xp):
        return xp.asarray(0.0).dtype == xp.float64
    return hasattr(xp, "float64")


def _is_floating(xp: Any, dtype: Any) -> bool:
    return dtype in _floating_dtypes(xp)


def _floating_dtypes(xp: Any) -> tuple[Any, ...]:
    names = ("float16", "bfloat16", "float32", "float64")
    return tuple(getattr(xp, name) for name in names if hasattr(xp, name))
