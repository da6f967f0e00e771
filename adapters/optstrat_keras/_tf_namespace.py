"""An array namespace over TensorFlow tensors, for the optstrat core on the Keras TensorFlow backend.

array-api-compat supports NumPy, PyTorch and JAX arrays but not TensorFlow
tensors, so this module is the namespace the Keras adapter passes to the core
on that backend: ``schedule(step, xp=<this module>)``. It provides the
array-API functions and dtypes that the core calls, with their array-API
signatures, built on ``tf`` operations that trace under ``tf.function`` and
compile with XLA. A function the core starts to use must be added here;
the Keras tests run every schedule and clipper kind through this module.

Clippers infer the namespace from their input and take no ``xp`` argument,
so their inputs are wrapped in :class:`TensorFlowArray`, which names this
module through ``__array_namespace__``. Every function here accepts wrapped
and plain tensors and returns plain ``tf.Tensor`` objects.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import tensorflow as tf

__all__ = [
    "TensorFlowArray",
    "abs",
    "arange",
    "asarray",
    "astype",
    "bfloat16",
    "bool",
    "ceil",
    "call_core",
    "cos",
    "exp",
    "float16",
    "float32",
    "float64",
    "finfo",
    "floor",
    "floor_divide",
    "full_like",
    "iinfo",
    "int8",
    "int16",
    "int32",
    "int64",
    "isfinite",
    "isinf",
    "isnan",
    "log",
    "log1p",
    "logical_and",
    "logical_not",
    "logical_or",
    "max",
    "maximum",
    "min",
    "minimum",
    "ones",
    "ones_like",
    "remainder",
    "reshape",
    "sign",
    "sin",
    "sort",
    "sqrt",
    "sum",
    "unwrap",
    "where",
    "zeros",
    "zeros_like",
]

bool = tf.bool  # noqa: A001 - the array API names the dtype ``bool``
int8 = tf.int8
int16 = tf.int16
int32 = tf.int32
int64 = tf.int64
float16 = tf.float16
bfloat16 = tf.bfloat16
float32 = tf.float32
float64 = tf.float64

class TensorFlowArray:
    """A TensorFlow tensor tagged with this namespace, so that array-api-compat can infer it.

    ``shape``, ``dtype``, ``device`` and ``ndim`` come from the tensor. Python
    operators and indexing act on the tensor and return plain tensors.
    """

    __slots__ = ("tensor",)

    def __init__(self, tensor: Any) -> None:
        self.tensor = _tensor(tensor)

    def __array_namespace__(self, *, api_version: str | None = None) -> Any:
        return sys.modules[__name__]

    def __repr__(self) -> str:
        return f"TensorFlowArray({self.tensor!r})"

    @property
    def shape(self) -> tuple[int | None, ...]:
        return tuple(self.tensor.shape)

    @property
    def dtype(self) -> tf.DType:
        return self.tensor.dtype

    @property
    def device(self) -> str:
        return self.tensor.device

    @property
    def ndim(self) -> int:
        return self.tensor.shape.rank

    def __getitem__(self, key: Any) -> tf.Tensor:
        return self.tensor[key]

    def __neg__(self) -> tf.Tensor:
        return -self.tensor

    def __pos__(self) -> tf.Tensor:
        return self.tensor

    def __abs__(self) -> tf.Tensor:
        return tf.abs(self.tensor)

    def __invert__(self) -> tf.Tensor:
        return ~self.tensor


def _binary(name: str, reflected: str | None = None) -> None:
    def forward(self: TensorFlowArray, other: Any) -> Any:
        return getattr(self.tensor, name)(unwrap(other))

    forward.__name__ = name
    setattr(TensorFlowArray, name, forward)
    if reflected is not None:

        def backward(self: TensorFlowArray, other: Any) -> Any:
            return getattr(self.tensor, reflected)(unwrap(other))

        backward.__name__ = reflected
        setattr(TensorFlowArray, reflected, backward)


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "and", "or", "xor"):
    _binary(f"__{_name}__", f"__r{_name}__")
for _name in ("lt", "le", "gt", "ge", "eq", "ne"):
    _binary(f"__{_name}__")
# Defining __eq__ removes the default hash, which is fine because the wrapper is never a dict key.
TensorFlowArray.__hash__ = None  # type: ignore[assignment]


def _convert_wrapped(value: TensorFlowArray, dtype: Any = None, name: Any = None, as_ref: bool = False) -> Any:
    if dtype is not None and not tf.as_dtype(dtype).is_compatible_with(value.tensor.dtype):
        return NotImplemented
    return value.tensor


# TensorFlow operators and functions then accept a wrapped tensor anywhere a tensor goes,
# such as on the right of ``tensor == wrapped``.
tf.register_tensor_conversion_function(TensorFlowArray, _convert_wrapped)


def call_core(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a core function as plain Python, also inside ``tf.function``.

    The core branches only on Python values and selects with ``where``, so
    AutoGraph has nothing to convert. Left to itself, it would try anyway and
    log a warning on syntax it does not support (array-api-compat uses ``:=``).
    """
    return tf.autograph.experimental.do_not_convert(function)(*args, **kwargs)


def unwrap(value: Any) -> Any:
    """Return the tensor inside a :class:`TensorFlowArray`, or ``value`` unchanged."""
    if isinstance(value, TensorFlowArray):
        return value.tensor
    return value


def _tensor(value: Any, dtype: Any = None) -> tf.Tensor:
    value = unwrap(value)
    if not isinstance(value, tf.Tensor):
        # Variables (tf.Variable, keras.Variable) are read here, and Python numbers converted.
        value = tf.convert_to_tensor(value) if tf.is_tensor(value) else tf.convert_to_tensor(value, dtype=dtype)
    return value if dtype is None or value.dtype == dtype else tf.cast(value, dtype)


def _pair(x1: Any, x2: Any) -> tuple[tf.Tensor, tf.Tensor]:
    """Convert two operands to tensors, giving a Python scalar the dtype of the tensor beside it."""
    x1 = unwrap(x1)
    x2 = unwrap(x2)
    if tf.is_tensor(x1) and not tf.is_tensor(x2):
        x1 = _tensor(x1)
        return x1, tf.convert_to_tensor(x2, dtype=x1.dtype)
    if tf.is_tensor(x2) and not tf.is_tensor(x1):
        x2 = _tensor(x2)
        return tf.convert_to_tensor(x1, dtype=x2.dtype), x2
    return _tensor(x1), _tensor(x2)


def _is_floating(dtype: tf.DType) -> bool:
    return dtype.is_floating


def asarray(obj: Any, /, *, dtype: Any = None, device: Any = None, copy: Any = None) -> tf.Tensor:
    """Convert ``obj`` to a tensor of ``dtype``, accepting and ignoring ``device`` and ``copy``.

    Tensors are immutable and placed by TensorFlow, so there is nothing to copy
    or move. A Python float without ``dtype`` becomes float32, as in TensorFlow.
    """
    return _tensor(obj, dtype)


def astype(x: Any, dtype: Any, /, *, copy: bool = True, device: Any = None) -> tf.Tensor:
    return tf.cast(_tensor(x), dtype)


def zeros(shape: Any, *, dtype: Any = None, device: Any = None) -> tf.Tensor:
    return tf.zeros(shape, dtype=tf.float32 if dtype is None else dtype)


def ones(shape: Any, *, dtype: Any = None, device: Any = None) -> tf.Tensor:
    return tf.ones(shape, dtype=tf.float32 if dtype is None else dtype)


def arange(start: Any, /, stop: Any = None, step: Any = 1, *, dtype: Any = None, device: Any = None) -> tf.Tensor:
    if stop is None:
        start, stop = 0, start
    return tf.range(start, stop, step, dtype=dtype)


def full_like(x: Any, /, fill_value: Any, *, dtype: Any = None, device: Any = None) -> tf.Tensor:
    x = _tensor(x)
    dtype = x.dtype if dtype is None else dtype
    return tf.fill(tf.shape(x), tf.cast(fill_value, dtype))


def zeros_like(x: Any, /, *, dtype: Any = None, device: Any = None) -> tf.Tensor:
    return tf.zeros_like(_tensor(x), dtype=dtype)


def ones_like(x: Any, /, *, dtype: Any = None, device: Any = None) -> tf.Tensor:
    return tf.ones_like(_tensor(x), dtype=dtype)


def reshape(x: Any, /, shape: tuple[int, ...], *, copy: Any = None) -> tf.Tensor:
    return tf.reshape(_tensor(x), shape)


def where(condition: Any, x1: Any, x2: Any, /) -> tf.Tensor:
    x1, x2 = _pair(x1, x2)
    return tf.where(_tensor(condition), x1, x2)


def maximum(x1: Any, x2: Any, /) -> tf.Tensor:
    return tf.maximum(*_pair(x1, x2))


def minimum(x1: Any, x2: Any, /) -> tf.Tensor:
    return tf.minimum(*_pair(x1, x2))


def floor_divide(x1: Any, x2: Any, /) -> tf.Tensor:
    return tf.math.floordiv(*_pair(x1, x2))


def remainder(x1: Any, x2: Any, /) -> tf.Tensor:
    return tf.math.floormod(*_pair(x1, x2))


def logical_and(x1: Any, x2: Any, /) -> tf.Tensor:
    return tf.logical_and(*_pair(x1, x2))


def logical_or(x1: Any, x2: Any, /) -> tf.Tensor:
    return tf.logical_or(*_pair(x1, x2))


def logical_not(x: Any, /) -> tf.Tensor:
    return tf.logical_not(_tensor(x))


def floor(x: Any, /) -> tf.Tensor:
    x = _tensor(x)
    return tf.floor(x) if _is_floating(x.dtype) else x


def ceil(x: Any, /) -> tf.Tensor:
    x = _tensor(x)
    return tf.math.ceil(x) if _is_floating(x.dtype) else x


def abs(x: Any, /) -> tf.Tensor:  # noqa: A001 - array API name
    return tf.abs(_tensor(x))


def sign(x: Any, /) -> tf.Tensor:
    return tf.sign(_tensor(x))


def sqrt(x: Any, /) -> tf.Tensor:
    return tf.sqrt(_tensor(x))


def exp(x: Any, /) -> tf.Tensor:
    return tf.exp(_tensor(x))


def log(x: Any, /) -> tf.Tensor:
    return tf.math.log(_tensor(x))


def log1p(x: Any, /) -> tf.Tensor:
    return tf.math.log1p(_tensor(x))


def cos(x: Any, /) -> tf.Tensor:
    return tf.cos(_tensor(x))


def sin(x: Any, /) -> tf.Tensor:
    return tf.sin(_tensor(x))


def isfinite(x: Any, /) -> tf.Tensor:
    x = _tensor(x)
    if _is_floating(x.dtype):
        return tf.math.is_finite(x)
    return tf.ones_like(x, dtype=tf.bool)


def isnan(x: Any, /) -> tf.Tensor:
    x = _tensor(x)
    if _is_floating(x.dtype):
        return tf.math.is_nan(x)
    return tf.zeros_like(x, dtype=tf.bool)


def isinf(x: Any, /) -> tf.Tensor:
    x = _tensor(x)
    if _is_floating(x.dtype):
        return tf.math.is_inf(x)
    return tf.zeros_like(x, dtype=tf.bool)


def sum(x: Any, /, *, axis: Any = None, dtype: Any = None, keepdims: bool = False) -> tf.Tensor:  # noqa: A001
    x = _tensor(x, dtype)
    return tf.reduce_sum(x, axis=axis, keepdims=keepdims)


def max(x: Any, /, *, axis: Any = None, keepdims: bool = False) -> tf.Tensor:  # noqa: A001
    return tf.reduce_max(_tensor(x), axis=axis, keepdims=keepdims)


def min(x: Any, /, *, axis: Any = None, keepdims: bool = False) -> tf.Tensor:  # noqa: A001
    return tf.reduce_min(_tensor(x), axis=axis, keepdims=keepdims)


def sort(x: Any, /, *, axis: int = -1, descending: bool = False, stable: bool = True) -> tf.Tensor:
    return tf.sort(_tensor(x), axis=axis, direction="DESCENDING" if descending else "ASCENDING")


def iinfo(type: Any, /) -> np.iinfo:  # noqa: A002 - array API signature
    """Return the integer limits of a TensorFlow dtype, or of the dtype of a tensor."""
    dtype = type.dtype if hasattr(type, "dtype") else type
    return np.iinfo(tf.as_dtype(dtype).as_numpy_dtype)


def finfo(type: Any, /) -> Any:  # noqa: A002 - array API signature
    """Return the floating-point limits of a TensorFlow dtype, or of the dtype of a tensor."""
    dtype = type.dtype if hasattr(type, "dtype") else type
    numpy_dtype = tf.as_dtype(dtype).as_numpy_dtype
    if numpy_dtype == tf.bfloat16.as_numpy_dtype:
        import ml_dtypes

        return ml_dtypes.finfo(numpy_dtype)
    return np.finfo(numpy_dtype)
