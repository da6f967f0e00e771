"""Flattening of gradient containers: a sequence or a mapping of arrays from one namespace."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from optstrat import _xp

__all__ = ["flatten", "namespace_of_leaves"]


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


def namespace_of_leaves(leaves: list[Any], name: str = "grads", xp: Any = None) -> Any:
    """Return the one array namespace of ``leaves``; raise TypeError naming two that differ."""
    if xp is not None:
        return xp
    if not leaves:
        import numpy as np

        return _xp.array_namespace(np.zeros(0))
    first = None
    for index, leaf in enumerate(leaves):
        if not _xp.is_array(leaf):
            raise TypeError(f"{name}[{index}] must be an array, got {type(leaf).__name__}")
        namespace = _xp.array_namespace(leaf)
        if first is None:
            first = namespace
        elif namespace is not first:
            raise TypeError(
                f"{name} mixes array namespaces: {name}[0] is {first.__name__} and "
                f"{name}[{index}] is {namespace.__name__}; pass arrays from one namespace"
            )
    return first
