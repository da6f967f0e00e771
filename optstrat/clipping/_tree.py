"""Flattening of gradient containers: a sequence or a mapping of arrays from one namespace."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from optstrat import _xp

__all__ = ["flatten", "leaf_label", "match_params", "namespace_of_leaves"]

_FLOATING_NAMES = ("float16", "bfloat16", "float32", "float64")


def flatten(grads: Any, name: str = "grads") -> tuple[list[Any], Callable[[list[Any]], Any]]:
    """Return the arrays of ``grads`` in order and a function that rebuilds the same container."""
    if isinstance(grads, Mapping):
        keys = list(grads)
        container = type(grads)

        def rebuild_mapping(leaves: list[Any]) -> Any:
            pairs = zip(keys, leaves)
            try:
                return container(pairs)
            except TypeError:
                return dict(zip(keys, leaves))

        return [grads[key] for key in keys], rebuild_mapping
    if isinstance(grads, Sequence) and not isinstance(grads, (str, bytes)):
        container = type(grads)

        def rebuild_sequence(leaves: list[Any]) -> Any:
            if hasattr(container, "_fields"):
                return container(*leaves)
            if container in (list, tuple):
                return container(leaves)
            try:
                return container(leaves)
            except TypeError:
                return list(leaves)

        return list(grads), rebuild_sequence
    raise TypeError(
        f"{name} must be a list, tuple or dict of arrays, got {type(grads).__name__}; "
        "adapters flatten framework structures such as pytrees before calling the core"
    )


def leaf_label(container: Any, index: int, name: str = "grads") -> str:
    """Return how messages name array ``index`` of ``container``: ``grads['w']`` or ``grads[0]``."""
    if isinstance(container, Mapping):
        return f"{name}[{list(container)[index]!r}]"
    return f"{name}[{index}]"


def namespace_of_leaves(leaves: list[Any], name: str = "grads", xp: Any = None, container: Any = None) -> Any:
    """Return the one array namespace of ``leaves``.

    Raises TypeError naming the two arrays when the namespaces differ, and when
    an array has no floating dtype. An empty list has the NumPy namespace.
    ``container`` is what ``leaves`` came from, so that messages name a
    mapping's arrays by key.
    """
    if xp is not None:
        return xp
    if not leaves:
        import numpy as np

        return _xp.array_namespace(np.zeros(0))
    first = None
    for index, leaf in enumerate(leaves):
        if not _xp.is_array(leaf):
            raise TypeError(f"{_label(container, index, name)} must be an array, got {type(leaf).__name__}")
        namespace = _xp.array_namespace(leaf)
        if first is None:
            first = namespace
        elif namespace is not first:
            raise TypeError(
                f"{name} mixes array namespaces: {_label(container, 0, name)} is {first.__name__} and "
                f"{_label(container, index, name)} is {namespace.__name__}; pass arrays from one namespace"
            )
        floating = [getattr(namespace, dtype) for dtype in _FLOATING_NAMES if hasattr(namespace, dtype)]
        if leaf.dtype not in floating:
            raise TypeError(f"{_label(container, index, name)} must have a floating dtype, got {leaf.dtype}")
    return first


def _label(container: Any, index: int, name: str) -> str:
    return f"{name}[{index}]" if container is None else leaf_label(container, index, name)


def match_params(grads: Any, params: Any, grad_leaves: list[Any], xp: Any) -> list[Any]:
    """Return the arrays of ``params`` in the order of ``grad_leaves``, checking the structure.

    ``params`` must be the same kind of container as ``grads`` (a sequence of
    the same length or a mapping with the same keys), hold arrays of the same
    namespace, and match each gradient's shape. Raises ValueError (TypeError for
    a wrong type or namespace) naming the first difference.
    """
    if params is None:
        raise ValueError(
            "params is required: this clipper scales each gradient by the norm of its parameter, "
            "so call update(grads, state, params) with the parameters the gradients belong to"
        )
    if isinstance(grads, Mapping) != isinstance(params, Mapping):
        raise ValueError(
            f"params must have the same structure as grads: grads is a {type(grads).__name__} "
            f"and params is a {type(params).__name__}"
        )
    if isinstance(grads, Mapping):
        missing = [key for key in grads if key not in params]
        extra = [key for key in params if key not in grads]
        if missing or extra:
            raise ValueError(
                f"params must have the same keys as grads: missing {missing!r}, unexpected {extra!r}"
            )
        param_leaves = [params[key] for key in grads]
    else:
        param_leaves, _ = flatten(params, name="params")
        if len(param_leaves) != len(grad_leaves):
            raise ValueError(
                f"params must have the same structure as grads: grads has {len(grad_leaves)} arrays "
                f"and params has {len(param_leaves)}"
            )
    param_namespace = namespace_of_leaves(param_leaves, name="params", container=params)
    if param_leaves and param_namespace is not xp:
        raise TypeError(
            f"params and grads must use one array namespace: grads are {xp.__name__} "
            f"and params are {param_namespace.__name__}"
        )
    for index, (grad, param) in enumerate(zip(grad_leaves, param_leaves)):
        if tuple(grad.shape) != tuple(param.shape):
            raise ValueError(
                f"{leaf_label(grads, index, 'params')} has shape {tuple(param.shape)} but "
                f"{leaf_label(grads, index)} has shape {tuple(grad.shape)}; they must match"
            )
    return param_leaves
