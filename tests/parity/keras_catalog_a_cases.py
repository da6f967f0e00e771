"""Parity of polynomial, piecewise-constant and inverse-time schedules with live Keras schedules.

``test_catalog_a_parity.py`` runs this module in a subprocess with
``KERAS_BACKEND=jax``, because Keras picks its backend when it is first
imported. The file name does not start with ``test_``, so a normal run does not
collect it; Keras is imported inside the tests, so the doctest collector can
import this module without loading Keras. To run it by hand::

    KERAS_BACKEND=jax python -m pytest tests/parity/keras_catalog_a_cases.py -q -p no:cacheprovider

Keras evaluates in float32 and optstrat is compared in float64 (Python ints).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import optstrat as ops

FLOAT32_EPS = 2.0**-23
FLOAT32_TINY = float(np.finfo(np.float32).tiny)
RTOL = 1e-6
# Keras's float32 ceil(t / D) and t / D stay exact-enough below this step.
MAX_STEP = 10**6
# Keras runs on a fixed number of steps, so JAX reuses its compiled operations across examples.
STEP_COUNT = 40

extra_steps = st.lists(st.integers(0, MAX_STEP), min_size=STEP_COUNT, max_size=STEP_COUNT)


def keras_schedules():
    if os.environ.get("KERAS_BACKEND") != "jax":
        pytest.skip("run by test_catalog_a_parity.py with KERAS_BACKEND=jax")
    keras = pytest.importorskip("keras", reason="keras is not installed")
    assert keras.backend.backend() == "jax"
    return keras.optimizers.schedules


def step_list(boundaries, extra):
    steps = [0, 1, MAX_STEP]
    for boundary in boundaries:
        steps += [boundary - 1, boundary, boundary + 1, 3 * boundary + 5]
    steps = [min(max(step, 0), MAX_STEP) for step in steps] + list(extra)
    return steps[:STEP_COUNT]


def keras_values(schedule, steps):
    import jax.numpy as jnp

    values = np.asarray(schedule(jnp.asarray(steps, dtype=jnp.int32)))
    assert values.dtype == np.float32
    return values.astype(np.float64)


def assert_close(actual, expected, steps, tolerance):
    actual = np.asarray(actual, dtype=np.float64)
    error = np.abs(actual - expected)
    allowed = np.broadcast_to(np.asarray(tolerance, dtype=np.float64), error.shape) + FLOAT32_TINY
    worst = int(np.argmax(error - allowed))
    assert np.all(error <= allowed), (
        f"step {steps[worst]}: optstrat {actual[worst]!r}, keras {expected[worst]!r}, "
        f"difference {error[worst]:.3g} exceeds {allowed[worst]:.3g}"
    )


@given(
    init_value=st.floats(1e-4, 10.0),
    end_value=st.floats(0.0, 10.0),
    decay_steps=st.integers(1, 10**5),
    power=st.floats(1.0, 4.0),
    cycle=st.booleans(),
    extra=extra_steps,
)
def test_polynomial_matches_polynomial_decay(init_value, end_value, decay_steps, power, cycle, extra):
    schedules = keras_schedules()
    schedule = ops.Polynomial(
        init_value=init_value, end_value=end_value, transition_steps=decay_steps, power=power, cycle=cycle
    )
    reference = schedules.PolynomialDecay(init_value, decay_steps, end_value, power=power, cycle=cycle)
    steps = step_list([decay_steps * k for k in range(1, 5)], extra)

    expected = keras_values(reference, steps)
    actual = np.asarray([schedule(step) for step in steps])

    # Keras computes the cycle count ceil(t / D) in float32, and XLA may multiply by a
    # rounded 1 / D. So on a cycle end (t a positive multiple of D) Keras can land in
    # the next cycle and give the value of the cycle ending at (k + 1) * D. optstrat
    # counts cycles on integers and gives end_value there.
    if cycle:
        for index, step in enumerate(steps):
            if step > 0 and step % decay_steps == 0 and abs(expected[index] - end_value) > 1e-6 * max(1.0, end_value):
                next_cycle = (1 - 1 / (step // decay_steps + 1)) ** power
                assert expected[index] == pytest.approx(end_value + (init_value - end_value) * next_cycle, rel=1e-5)
                expected[index] = end_value

    # Keras forms (init - end) * (1 - t / D) ** power + end in float32, where 1 - t / D
    # is off by up to 2**-24. With power >= 1 the value moves by at most power * 2**-24 * |init - end|.
    scale = max(abs(init_value), abs(end_value))
    tolerance = RTOL * np.abs(expected) + 4 * FLOAT32_EPS * (1 + power) * scale
    assert_close(actual, expected, steps, tolerance)


def test_polynomial_cycle_anchor():
    schedules = keras_schedules()
    schedule = ops.Polynomial(init_value=1.0, end_value=0.0, transition_steps=4, cycle=True)
    reference = schedules.PolynomialDecay(1.0, 4, 0.0, cycle=True)
    steps = list(range(10))

    expected = keras_values(reference, steps)

    np.testing.assert_allclose(expected, [1, 0.75, 0.5, 0.25, 0, 0.375, 0.25, 0.125, 0, 0.25], rtol=1e-6)
    np.testing.assert_allclose([schedule(step) for step in steps], expected, rtol=1e-6)


@given(
    # Keras's PiecewiseConstantDecay fails with IndexError for empty boundaries (keras 3.15.1).
    boundaries=st.lists(st.integers(0, 10**5), min_size=1, max_size=6, unique=True).map(sorted),
    data=st.data(),
    extra=extra_steps,
)
def test_piecewise_constant_matches_shifted_piecewise_constant_decay(boundaries, data, extra):
    schedules = keras_schedules()
    values = data.draw(st.lists(st.floats(-10.0, 10.0), min_size=len(boundaries) + 1, max_size=len(boundaries) + 1))
    schedule = ops.PiecewiseConstant(boundaries=boundaries, values=values)
    # Keras switches to values[i + 1] at step boundaries[i] + 1, one step after optstrat.
    reference = schedules.PiecewiseConstantDecay([boundary - 1 for boundary in boundaries], values)
    steps = step_list(boundaries, extra)

    expected = keras_values(reference, steps)
    actual = [schedule(step) for step in steps]

    assert_close(actual, expected, steps, RTOL * np.abs(expected))


def test_piecewise_constant_keras_switches_one_step_later():
    schedules = keras_schedules()
    unshifted = schedules.PiecewiseConstantDecay([2, 4], [1.0, 0.5, 0.1])
    schedule = ops.PiecewiseConstant(boundaries=[2, 4], values=[1.0, 0.5, 0.1])
    steps = list(range(6))

    np.testing.assert_allclose(keras_values(unshifted, steps), [1.0, 1.0, 1.0, 0.5, 0.5, 0.1], rtol=1e-6)
    assert [schedule(step) for step in steps] == [1.0, 1.0, 0.5, 0.5, 0.1, 0.1]


@given(
    init_value=st.floats(1e-4, 10.0),
    decay_steps=st.integers(1, 10**4),
    decay_rate=st.floats(0.0, 10.0),
    staircase=st.booleans(),
    extra=extra_steps,
)
def test_inverse_time_matches_inverse_time_decay(init_value, decay_steps, decay_rate, staircase, extra):
    schedules = keras_schedules()
    schedule = ops.InverseTime(
        init_value=init_value, decay_rate=decay_rate, decay_steps=decay_steps, staircase=staircase
    )
    reference = schedules.InverseTimeDecay(init_value, decay_steps, decay_rate, staircase=staircase)
    steps = step_list([decay_steps, 2 * decay_steps], extra)

    expected = keras_values(reference, steps)
    actual = [schedule(step) for step in steps]

    # Keras rounds four times in float32: t / D, the product with decay_rate, the sum and the division.
    assert_close(actual, expected, steps, (RTOL + 4 * FLOAT32_EPS) * np.abs(expected))
