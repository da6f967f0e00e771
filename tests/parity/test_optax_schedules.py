"""Parity of optstrat schedules with the live optax schedule functions, in float32.

Both sides evaluate the same int32 step array with JAX. Each kind is compared at
random valid parameters, at 0, at b - 1, b and b + 1 for every boundary b, far
past the end, at the int32 maximum and at random steps. The known differences
are tested by name at the end of the file.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st

import optstrat as ops

INT32_MAX = 2**31 - 1
# optax floors count / transition_steps in float32 for a staircase. Below 2**23 the
# count is exact in float32 and the rounded quotient can only cross an integer when
# the exact quotient is one (see late_staircase_steps).
STAIRCASE_LIMIT = 2**23 - 1
FLOAT32_EPS = 2.0**-23
FLOAT32_TINY = float(np.finfo(np.float32).tiny)
# optstrat's float32 power is exp(fraction) * exp(whole) with fraction in [0, 1). For a
# power below e times the smallest normal float32, exp(whole) is subnormal, and XLA on
# CPU flushes it to 0, so such a power (times init_value) can come out as 0.
FLUSHED_TO_ZERO = math.e * FLOAT32_TINY
RTOL = 1e-6
# A fixed length keeps one compiled kernel per operation across examples.
STEP_COUNT = 48

positive_values = st.floats(1e-4, 10.0)
fractions = st.floats(0.0, 1.0)


def step_array(boundaries, extra, *, limit=INT32_MAX):
    """Return STEP_COUNT int32 steps: 0, each boundary and its neighbours, the limit, then ``extra``."""
    steps = [0, 1, limit, limit - 1]
    for boundary in boundaries:
        steps += [boundary - 1, boundary, boundary + 1, 2 * boundary + 7, 1000 * boundary + 3]
    steps = [min(max(step, 0), limit) for step in steps]
    steps += [step % (limit + 1) for step in extra]
    return jnp.asarray(steps[:STEP_COUNT], dtype=jnp.int32)


extra_steps = st.lists(st.integers(0, INT32_MAX), min_size=STEP_COUNT, max_size=STEP_COUNT)


def assert_within(actual, expected, steps, tolerance):
    """Check |actual - expected| <= tolerance elementwise, naming the worst step on failure.

    Values below FLUSHED_TO_ZERO may be 0 on either side. A larger floor comes in ``tolerance``.
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.broadcast_to(np.asarray(expected, dtype=np.float64), actual.shape)
    assert np.array_equal(np.isinf(actual), np.isinf(expected)), f"infinite values differ at steps {steps}"
    finite = np.isfinite(expected)
    error = np.where(finite, np.abs(np.where(finite, actual - expected, 0.0)), 0.0)
    allowed = np.broadcast_to(np.asarray(tolerance, dtype=np.float64), error.shape) + FLUSHED_TO_ZERO
    if error.size == 0:
        return
    worst = int(np.argmax(error - allowed))
    assert np.all(error <= allowed), (
        f"step {int(steps[worst])}: optstrat {actual[worst]!r}, optax {expected[worst]!r}, "
        f"difference {error[worst]:.3g} exceeds {allowed[worst]:.3g}"
    )


def evaluate(schedule, reference, steps):
    actual = schedule(steps)
    expected = reference(steps)
    assert actual.dtype == jnp.float32
    assert actual.shape == steps.shape
    return actual, expected


def exponential_tolerance(expected, steps, init_value, transition_steps, decay_rate, transition_begin, staircase):
    """Return the float32 error bound of init_value * decay_rate ** p at each step.

    Both sides round the exponent p to float32, an error amplified by
    |p * ln(decay_rate)|. optax also rounds decay_rate itself to float32. That
    changes ln(decay_rate) by up to 2**-24, so the value moves by up to
    p * 2**-24 relative. optstrat takes the logarithm of the exact decay_rate.
    The floor is FLUSHED_TO_ZERO scaled by init_value.
    """
    local = np.maximum(np.asarray(steps, dtype=np.float64) - transition_begin, 0.0)
    exponent = local / transition_steps
    if staircase:
        exponent = np.floor(exponent)
    conditioning = FLOAT32_EPS * exponent * (4 * abs(math.log(decay_rate)) + 1)
    return (RTOL + conditioning) * np.abs(np.asarray(expected, dtype=np.float64)) + FLUSHED_TO_ZERO * abs(init_value)


def late_staircase_steps(steps, transition_steps, transition_begin=0):
    """Return a mask of the steps where optax's staircase may switch one step late.

    Under jit, XLA on CPU computes ``count / transition_steps`` as ``count *
    float32(1 / transition_steps)``. At an exact multiple k * transition_steps
    that product can round to just below k, so optax floors to k - 1.
    """
    local = np.maximum(np.asarray(steps, dtype=np.int64) - transition_begin, 0)
    reciprocal = np.float32(1.0) / np.float32(transition_steps)
    rounded = np.floor(local.astype(np.float32) * reciprocal)
    return rounded != local // transition_steps


def assert_staircase(actual, expected, schedule, steps, tolerance, floor, transition_steps, transition_begin=0):
    """Compare with optax, and with the float64 Python value where optax may switch late.

    ``tolerance`` applies to the optax comparison, and ``RTOL`` relative plus ``floor`` to the other.
    """
    late = late_staircase_steps(steps, transition_steps, transition_begin)
    exact = np.array([schedule(int(step)) for step in np.asarray(steps)[late]])
    tolerance = np.broadcast_to(tolerance, late.shape)
    assert_within(np.asarray(actual)[~late], np.asarray(expected)[~late], np.asarray(steps)[~late], tolerance[~late])
    assert_within(np.asarray(actual)[late], exact, np.asarray(steps)[late], RTOL * np.abs(exact) + floor)


def difference_tolerance(expected, *levels):
    """Return RTOL relative plus RTOL times the largest level, for values formed as differences.

    1 + cos(x) near x = pi and (init - end) * fraction + end lose relative
    precision near 0 in float32 on both sides, so the absolute floor scales
    with the schedule's largest level.
    """
    scale = max(abs(level) for level in levels)
    return RTOL * np.abs(np.asarray(expected, dtype=np.float64)) + RTOL * scale


@given(value=st.floats(-10.0, 10.0), extra=extra_steps)
def test_constant(value, extra):
    steps = step_array([], extra)

    actual, expected = evaluate(ops.Constant(value=value), optax.constant_schedule(value), steps)

    assert_within(actual, expected, steps, RTOL * abs(value))


@st.composite
def exponential_parameters(draw):
    decay_rate = draw(st.one_of(st.floats(0.05, 0.9999), st.floats(1.0001, 3.0)))
    init_value = draw(positive_values)
    end_value = None
    # A growing schedule needs a cap, or float32 overflows to inf at different steps on each side.
    if decay_rate > 1.0 or draw(st.booleans()):
        factor = draw(st.floats(1.0, 100.0)) if decay_rate > 1.0 else draw(fractions)
        end_value = init_value * factor
    return {
        "init_value": init_value,
        "transition_steps": draw(st.integers(1, 10_000)),
        "decay_rate": decay_rate,
        "transition_begin": draw(st.integers(0, 1000)),
        "staircase": draw(st.booleans()),
        "end_value": end_value,
    }


@given(parameters=exponential_parameters(), extra=extra_steps)
def test_exponential_decay(parameters, extra):
    schedule = ops.ExponentialDecay(**parameters)
    reference = optax.exponential_decay(**parameters)
    begin, length = parameters["transition_begin"], parameters["transition_steps"]
    boundaries = [begin, begin + length, begin + 3 * length]
    limit = STAIRCASE_LIMIT if parameters["staircase"] else INT32_MAX
    steps = step_array(boundaries, extra, limit=limit)

    actual, expected = evaluate(schedule, reference, steps)

    init_value = parameters["init_value"]
    tolerance = exponential_tolerance(
        expected, steps, init_value, length, parameters["decay_rate"], begin, parameters["staircase"]
    )
    if parameters["staircase"]:
        floor = FLUSHED_TO_ZERO * init_value
        assert_staircase(actual, expected, schedule, steps, tolerance, floor, length, begin)
    else:
        assert_within(actual, expected, steps, tolerance)


@given(
    init_value=positive_values,
    decay_rate=st.floats(0.01, 1.0),
    decay_steps=st.integers(1, 10_000),
    extra=extra_steps,
)
def test_step_decay(init_value, decay_rate, decay_steps, extra):
    schedule = ops.StepDecay(init_value=init_value, decay_rate=decay_rate, decay_steps=decay_steps)
    reference = optax.exponential_decay(
        init_value=init_value, transition_steps=decay_steps, decay_rate=decay_rate, staircase=True
    )
    steps = step_array([decay_steps, 5 * decay_steps], extra, limit=STAIRCASE_LIMIT)

    actual, expected = evaluate(schedule, reference, steps)

    tolerance = exponential_tolerance(expected, steps, init_value, decay_steps, decay_rate, 0, True)
    assert_staircase(actual, expected, schedule, steps, tolerance, FLUSHED_TO_ZERO * init_value, decay_steps)


@given(
    init_value=positive_values,
    decay_steps=st.integers(1, 100_000),
    end_fraction=fractions,
    exponent=st.floats(1.0, 3.0),
    extra=extra_steps,
)
def test_cosine_decay(init_value, decay_steps, end_fraction, exponent, extra):
    end_value = init_value * end_fraction
    schedule = ops.CosineDecay(init_value=init_value, decay_steps=decay_steps, end_value=end_value, exponent=exponent)
    reference = optax.cosine_decay_schedule(
        init_value=init_value, decay_steps=decay_steps, alpha=end_value / init_value, exponent=exponent
    )
    steps = step_array([decay_steps // 2, decay_steps], extra)

    actual, expected = evaluate(schedule, reference, steps)

    assert_within(actual, expected, steps, difference_tolerance(expected, init_value, end_value))


@given(
    peak_value=positive_values,
    warmup_steps=st.integers(0, 1000),
    cosine_steps=st.integers(1, 100_000),
    init_fraction=fractions,
    end_fraction=fractions,
    exponent=st.floats(1.0, 3.0),
    extra=extra_steps,
)
def test_warmup_cosine(peak_value, warmup_steps, cosine_steps, init_fraction, end_fraction, exponent, extra):
    parameters = {
        "init_value": peak_value * init_fraction,
        "peak_value": peak_value,
        "warmup_steps": warmup_steps,
        "decay_steps": warmup_steps + cosine_steps,
        "end_value": peak_value * end_fraction,
        "exponent": exponent,
    }
    schedule = ops.WarmupCosine(**parameters)
    reference = optax.warmup_cosine_decay_schedule(**parameters)
    steps = step_array([warmup_steps, warmup_steps + cosine_steps], extra)

    actual, expected = evaluate(schedule, reference, steps)

    assert_within(actual, expected, steps, difference_tolerance(expected, peak_value))


@st.composite
def simple_pairs(draw):
    """Draw an optstrat schedule with its optax equivalent and its largest level."""
    init_value = draw(positive_values)
    kind = draw(st.sampled_from(["constant", "cosine", "exponential"]))
    if kind == "constant":
        return ops.Constant(value=init_value), optax.constant_schedule(init_value), init_value
    if kind == "cosine":
        decay_steps = draw(st.integers(1, 1000))
        end_value = init_value * draw(fractions)
        schedule = ops.CosineDecay(init_value=init_value, decay_steps=decay_steps, end_value=end_value)
        reference = optax.cosine_decay_schedule(init_value, decay_steps, alpha=end_value / init_value)
        return schedule, reference, init_value
    transition_steps = draw(st.integers(1, 1000))
    decay_rate = draw(st.floats(0.05, 0.99))
    end_value = init_value * draw(fractions)
    schedule = ops.ExponentialDecay(
        init_value=init_value, transition_steps=transition_steps, decay_rate=decay_rate, end_value=end_value
    )
    reference = optax.exponential_decay(init_value, transition_steps, decay_rate, end_value=end_value)
    # The clamp to end_value keeps the exponent bounded, so a difference floor covers its rounding.
    return schedule, reference, init_value


@given(
    pairs=st.lists(simple_pairs(), min_size=1, max_size=4),
    gaps=st.lists(st.integers(1, 5000), min_size=3, max_size=3),
    first=st.integers(0, 100),
    extra=extra_steps,
)
def test_join(pairs, gaps, first, extra):
    boundaries = [first]
    for gap in gaps[: len(pairs) - 2]:
        boundaries.append(boundaries[-1] + gap)
    boundaries = boundaries[: len(pairs) - 1]
    schedule = ops.Join(schedules=[pair[0] for pair in pairs], boundaries=boundaries)
    reference = optax.join_schedules([pair[1] for pair in pairs], boundaries)
    steps = step_array(boundaries, extra)

    actual, expected = evaluate(schedule, reference, steps)

    assert_within(actual, expected, steps, difference_tolerance(expected, *(pair[2] for pair in pairs)))


@given(
    pair=simple_pairs(),
    warmup_steps=st.integers(0, 2000),
    init_fraction=fractions,
    extra=extra_steps,
)
def test_warmup(pair, warmup_steps, init_fraction, extra):
    inner, inner_reference, level = pair
    init_value = level * init_fraction
    schedule = ops.Warmup(schedule=inner, warmup_steps=warmup_steps, init_value=init_value)
    ramp = optax.linear_schedule(
        init_value=init_value, end_value=float(inner_reference(0)), transition_steps=warmup_steps
    )
    reference = optax.join_schedules([ramp, inner_reference], [warmup_steps])
    steps = step_array([warmup_steps, warmup_steps // 2], extra)

    actual, expected = evaluate(schedule, reference, steps)

    assert_within(actual, expected, steps, difference_tolerance(expected, level))


# Known differences.


@pytest.mark.parametrize("transition_steps", [0, -5])
def test_exponential_nonpositive_transition_steps(transition_steps):
    # optax returns the constant init_value, while optstrat rejects the parameter.
    reference = optax.exponential_decay(init_value=0.5, transition_steps=transition_steps, decay_rate=0.5)
    assert float(reference(jnp.asarray(100, dtype=jnp.int32))) == 0.5
    with pytest.raises(ValueError, match=f"transition_steps must be a positive integer, got {transition_steps}"):
        ops.ExponentialDecay(init_value=0.5, transition_steps=transition_steps, decay_rate=0.5)


def test_exponential_zero_decay_rate():
    # optax returns the constant init_value, while optstrat rejects the parameter.
    reference = optax.exponential_decay(init_value=0.5, transition_steps=10, decay_rate=0.0)
    assert float(reference(jnp.asarray(100, dtype=jnp.int32))) == 0.5
    with pytest.raises(ValueError, match="decay_rate must be a finite number > 0, got 0.0"):
        ops.ExponentialDecay(init_value=0.5, transition_steps=10, decay_rate=0.0)


def test_exponential_negative_transition_begin():
    # optax falls back to transition_begin=0, while optstrat rejects the parameter.
    reference = optax.exponential_decay(init_value=1.0, transition_steps=1, decay_rate=0.5, transition_begin=-3)
    assert float(reference(jnp.asarray(2, dtype=jnp.int32))) == 0.25
    with pytest.raises(ValueError, match="transition_begin must be a non-negative integer, got -3"):
        ops.ExponentialDecay(init_value=1.0, transition_steps=1, decay_rate=0.5, transition_begin=-3)


def test_step_decay_zero_rate():
    # optax's exponential_decay with decay_rate=0 is constant, but StepDecay drops to 0 after decay_steps.
    reference = optax.exponential_decay(init_value=1.0, transition_steps=4, decay_rate=0.0, staircase=True)
    schedule = ops.StepDecay(init_value=1.0, decay_rate=0.0, decay_steps=4)
    steps = jnp.asarray([0, 3, 4, 100], dtype=jnp.int32)

    np.testing.assert_array_equal(schedule(steps), [1.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(reference(steps), [1.0, 1.0, 1.0, 1.0])


def test_staircase_late_at_multiples():
    # XLA on CPU divides by the constant 425 as a multiplication by float32(1 / 425),
    # so 425 / 425 becomes 0.99999994 and optax's staircase switches one step late.
    reference = jax.jit(optax.exponential_decay(init_value=1.0, transition_steps=425, decay_rate=0.5, staircase=True))
    schedule = ops.ExponentialDecay(init_value=1.0, transition_steps=425, decay_rate=0.5, staircase=True)
    steps = jnp.asarray([424, 425, 426], dtype=jnp.int32)

    np.testing.assert_array_equal(reference(steps), [1.0, 1.0, 0.5])
    np.testing.assert_array_equal(schedule(steps), [1.0, 0.5, 0.5])
    np.testing.assert_array_equal(late_staircase_steps([424, 425, 426], 425), [False, True, False])


def test_staircase_above_float32_exact_counts():
    # optax converts the count to float32 before the floor, so from 2**24 on a
    # staircase step can come up to 64 steps early. optstrat floors the integer.
    length = 2**20
    step = 2047 * length - 1
    schedule = ops.ExponentialDecay(init_value=1.0, transition_steps=length, decay_rate=0.999, staircase=True)
    reference = optax.exponential_decay(init_value=1.0, transition_steps=length, decay_rate=0.999, staircase=True)
    steps = jnp.asarray([step], dtype=jnp.int32)

    # optax also rounds decay_rate to float32 before raising it to the power.
    rounded_rate = float(np.float32(0.999))

    assert float(schedule(steps)[0]) == pytest.approx(0.999**2046, rel=RTOL)
    assert float(reference(steps)[0]) == pytest.approx(rounded_rate**2047, rel=RTOL)
    assert schedule(step) == pytest.approx(0.999**2046, rel=1e-12)


def test_warmup_cosine_zero_peak():
    # optax sets alpha to 0 when peak_value is 0, so it ignores end_value. optstrat decays to end_value.
    schedule = ops.WarmupCosine(peak_value=0.0, warmup_steps=2, decay_steps=6, end_value=0.1)
    reference = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=0.0, warmup_steps=2, decay_steps=6, end_value=0.1
    )
    steps = jnp.asarray([6, 100], dtype=jnp.int32)

    np.testing.assert_allclose(schedule(steps), [0.1, 0.1], rtol=RTOL)
    np.testing.assert_array_equal(reference(steps), [0.0, 0.0])
