"""Checks that schedules and clippers run on their fields when built.

Every message names the field, states the rule and echoes the value, for
example ``decay_steps must be a positive integer, got 0``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = [
    "check_choice",
    "check_int",
    "check_number",
    "check_bool",
    "check_int_sequence",
    "check_number_sequence",
]


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    allow_none: bool = False,
) -> float | None:
    """Return ``value`` as a finite Python float, or raise naming ``name``.

    ``low`` and ``high`` bound the value, inclusive unless ``low_inclusive`` or
    ``high_inclusive`` is False. An
    integer becomes a float, so a schedule built with ``1`` computes like one
    built with ``1.0``.
    """
    if value is None and allow_none:
        return None
    if _is_bool(value) or not isinstance(value, (numbers.Real, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    number = float(value)
    rule = _range_rule(low, high, low_inclusive, high_inclusive)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number{rule}, got {value!r}")
    too_low = low is not None and (number < low or (not low_inclusive and number == low))
    too_high = high is not None and (number > high or (not high_inclusive and number == high))
    if too_low or too_high:
        raise ValueError(f"{name} must be a finite number{rule}, got {value!r}")
    return number


def check_int(
    name: str,
    value: Any,
    *,
    low: int | None = None,
    high: int | None = None,
    allow_none: bool = False,
) -> int | None:
    """Return ``value`` as a Python int, or raise naming ``name``.

    An integral float such as ``1e5`` (common in spec strings and YAML) is
    accepted; any other float is a TypeError.
    """
    if value is None and allow_none:
        return None
    if _is_bool(value):
        raise TypeError(f"{name} must be an integer, got {value!r} (bool)")
    if isinstance(value, (numbers.Integral, np.integer)):
        number = int(value)
    elif isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        number = int(value)
    else:
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if (low is not None and number < low) or (high is not None and number > high):
        raise ValueError(f"{name} must be {_int_rule(low, high)}, got {value!r}")
    return number


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` as a bool, or raise TypeError naming ``name``."""
    if not _is_bool(value):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, or raise ValueError listing them."""
    options = tuple(choices)
    if not isinstance(value, str) or value not in options:
        listed = ", ".join(repr(option) for option in options)
        raise ValueError(f"{name} must be one of {listed}, got {value!r}")
    return value


def check_int_sequence(
    name: str,
    values: Any,
    *,
    low: int | None = None,
    increasing: bool = False,
    non_decreasing: bool = False,
    min_length: int = 0,
) -> tuple[int, ...]:
    """Return ``values`` as a tuple of ints, checking each item and the order."""
    items = _as_sequence(name, values)
    checked = tuple(check_int(f"{name}[{index}]", item, low=low) for index, item in enumerate(items))
    _check_length(name, checked, min_length)
    _check_order(name, checked, increasing=increasing, non_decreasing=non_decreasing)
    return checked


def check_number_sequence(
    name: str,
    values: Any,
    *,
    low: float | None = None,
    min_length: int = 0,
) -> tuple[float, ...]:
    """Return ``values`` as a tuple of finite floats, checking each item."""
    items = _as_sequence(name, values)
    checked = tuple(check_number(f"{name}[{index}]", item, low=low) for index, item in enumerate(items))
    _check_length(name, checked, min_length)
    return checked


def _as_sequence(name: str, values: Any) -> tuple[Any, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a list of numbers, got {values!r} ({type(values).__name__})")
    return tuple(values)


def _check_length(name: str, values: tuple[Any, ...], min_length: int) -> None:
    if len(values) < min_length:
        items = "item" if min_length == 1 else "items"
        raise ValueError(f"{name} must have at least {min_length} {items}, got {list(values)!r}")


def _check_order(name: str, values: tuple[Any, ...], *, increasing: bool, non_decreasing: bool) -> None:
    for previous, current in zip(values, values[1:]):
        if increasing and not current > previous:
            raise ValueError(f"{name} must be strictly increasing, got {list(values)!r}")
        if non_decreasing and not current >= previous:
            raise ValueError(f"{name} must be non-decreasing, got {list(values)!r}")


def _range_rule(low: float | None, high: float | None, low_inclusive: bool, high_inclusive: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>=' if low_inclusive else '>'} {low:g}")
    if high is not None:
        parts.append(f"{'<=' if high_inclusive else '<'} {high:g}")
    return (" " + " and ".join(parts)) if parts else ""


def _int_rule(low: int | None, high: int | None) -> str:
    if low == 1 and high is None:
        return "a positive integer"
    if low == 0 and high is None:
        return "a non-negative integer"
    parts = []
    if low is not None:
        parts.append(f">= {low}")
    if high is not None:
        parts.append(f"<= {high}")
    return "an integer " + " and ".join(parts)
