"""The schedule base class and the step handling every kind shares."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from optstrat import _xp
from optstrat.config import to_config

__all__ = ["Schedule", "StepArray"]

# Python ints at or above this, on a schedule with no horizon, are evaluated in
# float64 because NumPy's int64 cannot hold every such int.
_LARGEST_EXACT_STEP = 2**62


class StepArray:
    """A step array prepared for a schedule's formula.

    ``count`` is the step clamped to be non-negative, in its own dtype (an
    integer dtype keeps boundaries and floors exact). ``xp`` is its namespace
    and ``dtype`` the floating dtype the value is computed in.
    """

    __slots__ = ("count", "xp", "dtype", "device")

    def __init__(self, count: Any, xp: Any, dtype: Any, device: Any) -> None:
        self.count = count
        self.xp = xp
        self.dtype = dtype
        self.device = device

    @property
    def is_integer(self) -> bool:
        """Whether the step has an integer dtype."""
        return not _is_float_dtype(self.xp, self.count.dtype)

    def as_float(self, value: Any) -> Any:
        """Convert an array or a Python number into the schedule's floating dtype."""
        if isinstance(value, (int, float)):
            return _xp.scalar(self.xp, value, self.dtype, self.device)
        return self.xp.astype(value, self.dtype)

    def constant(self, value: float) -> Any:
        """Return ``value`` broadcast to the step's shape in the floating dtype."""
        return self.xp.zeros_like(self.count, dtype=self.dtype) + value

    def clamp(self, low: int | None = None, high: int | None = None) -> Any:
        """Return the count clamped to ``[low, high]``, limits clipped to the count's dtype."""
        count = self.count
        if low is not None:
            count = self.xp.maximum(count, self.integer(low))
        if high is not None:
            count = self.xp.minimum(count, self.integer(high))
        return count

    def integer(self, value: int) -> Any:
        """Return a Python int as a 0-d array of the count's dtype, saturated to its range."""
        if self.is_integer:
            info = _iinfo(self.xp, self.count.dtype)
            value = min(max(value, info[0]), info[1])
        return _xp.scalar(self.xp, value, self.count.dtype, self.device)

    def ge(self, boundary: int) -> Any:
        """Return ``count >= boundary`` elementwise, correct even when ``boundary`` exceeds the dtype."""
        if self.is_integer and boundary > _iinfo(self.xp, self.count.dtype)[1]:
            return self.xp.zeros_like(self.count, dtype=self.xp.bool)
        return self.count >= self.integer(boundary)

    def divmod(self, divisor: int, count: Any = None) -> tuple[Any, Any]:
        """Return ``(count // divisor, count % divisor)`` in the count's dtype, exact on integers."""
        count = self.count if count is None else count
        if self.is_integer and divisor > _iinfo(self.xp, count.dtype)[1]:
            # Every count of this dtype is below the divisor; saturating it would give 1 at the maximum.
            return self.xp.zeros_like(count), count
        if self.is_integer:
            quotient = self.xp.floor_divide(count, self.integer(divisor))
        else:
            quotient = self.xp.floor(count / divisor)
        return quotient, count - quotient * self.integer(divisor)

    def fraction(self, count: Any, length: int) -> Any:
        """Return ``count / length`` in the floating dtype (``count`` in ``[0, length]``)."""
        return self.as_float(count) / float(length)

    def shifted(self, offset: int) -> StepArray:
        """Return a StepArray for ``max(count - offset, 0)`` (the local step of a later phase)."""
        if offset == 0:
            return self
        local = self.xp.maximum(self.count - self.integer(offset), self.integer(0))
        if self.is_integer and offset > _iinfo(self.xp, self.count.dtype)[1]:
            local = self.xp.zeros_like(self.count)
        return StepArray(local, self.xp, self.dtype, self.device)


class Schedule:
    """Base class of every schedule: an immutable, pure function of the step.

    Subclasses are frozen dataclasses registered with
    :func:`optstrat.config.register`. They validate their fields in
    ``__post_init__`` and implement :meth:`_evaluate` on a :class:`StepArray`;
    this class handles scalars, arrays and negative steps.

    ``schedule(step)`` on a Python or NumPy integer returns a Python float
    computed in float64, and a negative step raises ValueError. On an array of
    any array-API namespace it returns an array of that namespace on the same
    device, with the step's shape, and negative entries count as 0. A
    namespace can be passed as ``xp`` for arrays that array-api-compat does
    not support.
    """

    kind: ClassVar[str]

    def __call__(self, step: Any, *, xp: Any = None) -> Any:
        if xp is None and _xp.is_scalar(step):
            return self._call_scalar(step)
        if xp is None:
            if not _xp.is_array(step):
                raise TypeError(
                    f"step must be an integer or an array, got {step!r} ({type(step).__name__})"
                )
            return self._call_array(step, _xp.array_namespace(step), known=True)
        return self._call_array(step, xp, known=False)

    def _call_scalar(self, step: Any) -> float:
        if isinstance(step, (float, np.floating)):
            if not math.isfinite(step):
                raise ValueError(f"step must be a finite number >= 0, got {step!r}")
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step!r}")
        horizon = self._horizon()
        if isinstance(step, (float, np.floating)):
            count = np.asarray(step if horizon is None else min(step, horizon), dtype=np.float64)
        else:
            count = np.asarray(self._reduce_large_step(int(step), horizon))
        prepared = StepArray(count, np, np.float64, "cpu")
        return float(self._evaluate(prepared))

    def _reduce_large_step(self, step: int, horizon: int | None) -> int | float:
        if horizon is not None:
            step = min(step, horizon)
        if step < _LARGEST_EXACT_STEP:
            return step
        # NOTE: a step of 2**62 or more (past the horizon, if any) is evaluated in
        # float64, so its integer parts (staircase floors, cycle indices) are rounded.
        return float(step)

    def _call_array(self, step: Any, xp: Any, *, known: bool) -> Any:
        if known:
            device = _xp.device_of(step)
            dtype = _xp.default_float_dtype(xp, step)
        else:
            device = None
            dtype = _fallback_float(xp, step)
        count = xp.maximum(step, xp.zeros_like(step))
        prepared = StepArray(count, xp, dtype, device)
        horizon = self._horizon()
        if horizon is not None:
            # The value no longer changes after the horizon, so clamping there keeps
            # later steps exact and keeps formulas such as growing powers from overflowing.
            prepared = StepArray(prepared.clamp(high=horizon), xp, dtype, device)
        return self._evaluate(prepared)

    def _evaluate(self, step: StepArray) -> Any:
        """Return the schedule's value at ``step.count`` as an array in ``step.dtype``."""
        raise NotImplementedError

    def _horizon(self) -> int | None:
        """Return the first step from which the value never changes, or None if there is none.

        Both call paths clamp the step to this horizon before evaluating, so it
        must be exact: a horizon that is too early changes the schedule.
        """
        return None

    def to_config(self) -> dict[str, Any]:
        """Return the config dict (JSON types, every field written out) that rebuilds this schedule."""
        return to_config(self)


def _is_float_dtype(xp: Any, dtype: Any) -> bool:
    for name in ("float16", "bfloat16", "float32", "float64"):
        if hasattr(xp, name) and dtype == getattr(xp, name):
            return True
    return False


def _iinfo(xp: Any, dtype: Any) -> tuple[int, int]:
    info = xp.iinfo(dtype)
    return int(info.min), int(info.max)


def _fallback_float(xp: Any, step: Any) -> Any:
    if _is_float_dtype(xp, step.dtype):
        return step.dtype
    return xp.float32
