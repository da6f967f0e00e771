"""Percentiles of recorded gradient norms: on a ring buffer inside ``jit``, and on a host history."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from optstrat import _xp
from optstrat._validate import check_number

__all__ = ["DEFAULT_SUGGEST_PERCENTILE", "ring_percentile", "suggest_max_norm"]

#: The percentile :func:`suggest_max_norm` uses when none is given.
DEFAULT_SUGGEST_PERCENTILE = 90.0


def ring_percentile(xp: Any, values: Any, count: Any, percentile: float) -> Any:
    """Return the ``percentile`` of the first ``count`` entries of ``values`` as a 0-d array.

    Uses NumPy's default method (linear interpolation between the two nearest
    ranks of the sorted values, rank = percentile / 100 * (count - 1)). The
    count may be a traced 0-d integer array: the unused entries are set to
    infinity, sorted to the end and never read, so the shapes stay fixed under
    ``jax.jit``. A count of 0 gives 0.
    """
    size = values.shape[0]
    slots = xp.arange(size, dtype=count.dtype, device=_xp.device_of(values))
    valid = slots < count
    zeros = xp.zeros_like(values)
    ordered = xp.sort(xp.where(valid, values, zeros + math.inf))
    # The infinities sorted to the end become 0 again, so that no inf - inf can occur below.
    ordered = xp.where(valid, ordered, zeros)

    filled = xp.maximum(xp.astype(count, values.dtype), xp.ones((), dtype=values.dtype, device=_xp.device_of(values)))
    rank = (percentile / 100.0) * (filled - 1)
    lower = xp.floor(rank)
    upper = xp.minimum(lower + 1, filled - 1)
    weight = rank - lower

    low_value = xp.sum(xp.where(slots == xp.astype(lower, count.dtype), ordered, zeros))
    high_value = xp.sum(xp.where(slots == xp.astype(upper, count.dtype), ordered, zeros))
    # NumPy interpolates from the nearer end, which keeps the result inside [low, high].
    difference = high_value - low_value
    return xp.where(weight >= 0.5, high_value - difference * (1 - weight), low_value + difference * weight)


def suggest_max_norm(norms: Any, percentile: float = DEFAULT_SUGGEST_PERCENTILE) -> float:
    """Suggest a ``max_norm`` for global-norm clipping from a recorded history of gradient norms.

    Returns the ``percentile`` (NumPy's default linear interpolation) of the
    finite entries of ``norms``, as a Python float. ``norms`` is a sequence of
    numbers or 0-d arrays, or an array on the host (``ClipInfo.norm`` values
    logged during a run, or ``optstrat_keras.TrainingLogger`` records).
    NaN and infinite entries are ignored; negative entries raise ValueError,
    and so does a history with no finite entry.

    The default percentile, 90, places the threshold above nine in ten of the
    recorded updates, so a fixed ``max_norm`` chosen this way leaves typical
    updates unscaled and caps only the spikes, which is what fixed clipping is
    for. AutoClip (:class:`AutoClip`, percentile 10 by default) instead
    recomputes the threshold every step and clips most updates.

    >>> suggest_max_norm([1.0, 2.0, 3.0, 4.0, 100.0], percentile=50)
    3.0
    """
    percentile = check_number("percentile", percentile, low=0.0, high=100.0)
    values = _host_values(norms)
    if values.size == 0:
        raise ValueError("norms must contain at least one finite value, got an empty history")
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise ValueError(f"norms must contain at least one finite value, got only non-finite values ({values.size})")
    negative = np.flatnonzero(np.isfinite(values) & (values < 0))
    if negative.size:
        index = int(negative[0])
        raise ValueError(f"norms must be non-negative, got {float(values[index])!r} at index {index}")
    return float(np.percentile(finite, percentile))


def _host_values(norms: Any) -> np.ndarray:
    if isinstance(norms, (str, bytes)):
        raise TypeError(f"norms must be a sequence of numbers or an array, got {type(norms).__name__}")
    try:
        values = np.asarray(norms, dtype=np.float64)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(
            "norms must be a sequence of numbers or an array in host memory "
            f"(move device tensors to the CPU first), got {type(norms).__name__}: {error}"
        ) from None
    return values.reshape(-1)
