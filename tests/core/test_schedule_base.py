"""Step handling shared by every schedule: scalars, arrays, namespaces and negative steps."""

from __future__ import annotations

import math

import numpy as np
import pytest

import optstrat
from tests.kind_examples import SCHEDULE_EXAMPLES

EXAMPLES = [
    pytest.param(example, id=f"{kind}-{index}")
    for kind, items in SCHEDULE_EXAMPLES.items()
    for index, example in enumerate(items)
]


@pytest.mark.parametrize("example", EXAMPLES)
def test_python_int_gives_python_float(example):
    assert type(example(0)) is float
    assert type(example(np.int64(7))) is float
    assert type(example(np.int32(7))) is float


@pytest.mark.parametrize("example", EXAMPLES)
def test_negative_scalar_step_raises(example):
    with pytest.raises(ValueError, match=r"step must be >= 0, got -1"):
        example(-1)


@pytest.mark.parametrize("example", EXAMPLES)
@pytest.mark.parametrize("step", [math.nan, math.inf])
def test_non_finite_scalar_step_raises(example, step):
    with pytest.raises(ValueError, match="step must be a finite number >= 0"):
        example(step)


@pytest.mark.parametrize("example", EXAMPLES)
@pytest.mark.parametrize("step", [True, "3", None, [1, 2]])
def test_non_numeric_step_raises(example, step):
    with pytest.raises(TypeError, match="step must be an integer or an array"):
        example(step)


@pytest.mark.parametrize("example", EXAMPLES)
def test_array_matches_scalars(example, xp):
    steps = list(range(0, 40)) + [1000, 2**31 - 1]
    values = example(xp.asarray(steps))
    expected = [example(step) for step in steps]

    assert values.shape == (len(steps),)
    assert values.dtype == xp.asarray(0.0).dtype
    np.testing.assert_allclose(np.asarray(values, dtype=np.float64), expected, rtol=2e-6, atol=1e-12)


@pytest.mark.parametrize("example", EXAMPLES)
def test_int32_steps_give_float32_or_default(example, xp):
    steps = xp.asarray([0, 3, 2**31 - 1], dtype=xp.int32)
    values = example(steps)

    assert values.dtype == xp.asarray(0.0).dtype
    np.testing.assert_allclose(
        np.asarray(values, dtype=np.float64), [example(0), example(3), example(2**31 - 1)], rtol=2e-6, atol=1e-12
    )


@pytest.mark.parametrize("example", EXAMPLES)
def test_float32_steps_keep_dtype(example, xp):
    values = example(xp.asarray([0.0, 5.0], dtype=xp.float32))
    assert values.dtype == xp.float32


@pytest.mark.parametrize("example", EXAMPLES)
def test_step_shape_is_kept(example, xp):
    scalar = example(xp.asarray(4))
    grid = example(xp.reshape(xp.arange(12), (3, 4)))

    assert scalar.shape == ()
    assert grid.shape == (3, 4)


@pytest.mark.parametrize("example", EXAMPLES)
def test_negative_array_steps_count_as_zero(example):
    values = example(np.asarray([-5, -1, 0]))
    assert values.tolist() == [example(0)] * 3


@pytest.mark.parametrize("example", EXAMPLES)
def test_huge_python_int_is_evaluated(example):
    huge = 2**80
    value = example(huge)
    assert math.isfinite(value)
    horizon = example._horizon()
    if horizon is not None:
        assert value == example(horizon)


def test_schedules_are_hashable_values():
    first = optstrat.CosineDecay(init_value=1, decay_steps=10)
    second = optstrat.CosineDecay(init_value=1.0, decay_steps=10)

    assert first == second
    assert hash(first) == hash(second)
    assert isinstance(first.init_value, float)
    with pytest.raises(AttributeError):
        first.init_value = 2.0
