"""Closed-form oracles and validation for constant, step, exponential, cosine, warmup and join."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import optstrat as ops

INT32_MAX = 2**31 - 1


def steps_around(*boundaries: int) -> list[int]:
    steps = {0, 1, INT32_MAX, 10**7}
    for boundary in boundaries:
        steps.update(b for b in (boundary - 1, boundary, boundary + 1) if b >= 0)
    return sorted(steps)


def oracle_step_decay(init_value, decay_rate, decay_steps, t):
    return init_value * decay_rate ** (t // decay_steps)


def oracle_exponential(init_value, transition_steps, decay_rate, begin, staircase, end_value, t):
    elapsed = max(t - begin, 0)
    power = elapsed // transition_steps if staircase else elapsed / transition_steps
    try:
        value = init_value * decay_rate**power
    except OverflowError:
        value = math.inf
    if end_value is None:
        return value
    return max(value, end_value) if decay_rate < 1 else min(value, end_value)


def oracle_cosine(init_value, decay_steps, end_value, exponent, t):
    fraction = min(t, decay_steps) / decay_steps
    return end_value + (init_value - end_value) * ((1 + math.cos(math.pi * fraction)) / 2) ** exponent


def oracle_warmup_cosine(peak, warmup, decay, init, end, exponent, t):
    if t < warmup:
        return init + (peak - init) * t / warmup
    return oracle_cosine(peak, decay - warmup, end, exponent, t - warmup)


def assert_matches(schedule, oracle, steps):
    # 1 + cos(x) near x = pi cancels in the float64 oracle itself, hence 1e-9 and not 1e-15.
    for step in steps:
        assert schedule(step) == pytest.approx(oracle(step), rel=1e-9, abs=1e-300), step
    values = schedule(np.asarray(steps, dtype=np.int64))
    np.testing.assert_allclose(values, [oracle(step) for step in steps], rtol=1e-9, atol=1e-300)


@given(
    init_value=st.floats(1e-4, 10.0),
    decay_rate=st.floats(0.0, 1.0),
    decay_steps=st.integers(1, 10_000),
)
def test_step_decay_oracle(init_value, decay_rate, decay_steps):
    schedule = ops.StepDecay(init_value=init_value, decay_rate=decay_rate, decay_steps=decay_steps)
    steps = steps_around(decay_steps, 2 * decay_steps, 7 * decay_steps)
    assert_matches(schedule, lambda t: oracle_step_decay(init_value, decay_rate, decay_steps, t), steps)


@given(
    init_value=st.floats(1e-4, 10.0),
    transition_steps=st.integers(1, 1000),
    decay_rate=st.floats(0.05, 3.0),
    begin=st.integers(0, 1000),
    staircase=st.booleans(),
    end_fraction=st.one_of(st.none(), st.floats(0.01, 4.0)),
)
def test_exponential_decay_oracle(init_value, transition_steps, decay_rate, begin, staircase, end_fraction):
    end_value = None if end_fraction is None else init_value * end_fraction
    schedule = ops.ExponentialDecay(
        init_value=init_value,
        transition_steps=transition_steps,
        decay_rate=decay_rate,
        transition_begin=begin,
        staircase=staircase,
        end_value=end_value,
    )
    steps = steps_around(begin, begin + transition_steps, begin + 5 * transition_steps)
    if end_value is None and decay_rate > 1:
        steps = [step for step in steps if step < begin + 100 * transition_steps]

    def oracle(t):
        return oracle_exponential(init_value, transition_steps, decay_rate, begin, staircase, end_value, t)

    for step in steps:
        assert schedule(step) == pytest.approx(oracle(step), rel=1e-9, abs=1e-300), step


@given(
    init_value=st.floats(1e-4, 10.0),
    decay_steps=st.integers(1, 100_000),
    end_fraction=st.floats(0.0, 1.0),
    exponent=st.floats(0.5, 3.0),
)
def test_cosine_decay_oracle(init_value, decay_steps, end_fraction, exponent):
    end_value = init_value * end_fraction
    schedule = ops.CosineDecay(init_value=init_value, decay_steps=decay_steps, end_value=end_value, exponent=exponent)
    steps = steps_around(decay_steps // 2, decay_steps)
    assert_matches(schedule, lambda t: oracle_cosine(init_value, decay_steps, end_value, exponent, t), steps)


@given(
    peak=st.floats(1e-4, 10.0),
    warmup=st.integers(0, 1000),
    length=st.integers(1, 10_000),
    init_fraction=st.floats(0.0, 1.0),
    end_fraction=st.floats(0.0, 1.0),
)
def test_warmup_cosine_oracle(peak, warmup, length, init_fraction, end_fraction):
    decay = warmup + length
    init, end = peak * init_fraction, peak * end_fraction
    schedule = ops.WarmupCosine(peak_value=peak, warmup_steps=warmup, decay_steps=decay, init_value=init, end_value=end)
    steps = steps_around(warmup, decay)
    assert_matches(schedule, lambda t: oracle_warmup_cosine(peak, warmup, decay, init, end, 1.0, t), steps)


def test_warmup_cosine_anchor():
    schedule = ops.WarmupCosine(peak_value=1.0, warmup_steps=2, decay_steps=6, end_value=0.1)
    expected = [0.0, 0.5, 1.0, 0.868198, 0.55, 0.231802, 0.1, 0.1, 0.1]
    assert [round(schedule(t), 6) for t in range(9)] == expected


def test_warmup_is_continuous_at_its_end():
    inner = ops.ExponentialDecay(init_value=0.3, transition_steps=5, decay_rate=0.5)
    schedule = ops.Warmup(schedule=inner, warmup_steps=10, init_value=0.01)

    assert schedule(0) == pytest.approx(0.01)
    assert schedule(10) == inner(0)
    assert schedule(9) == pytest.approx(0.01 + (0.3 - 0.01) * 0.9)
    assert schedule(15) == inner(5)


def test_warmup_zero_steps_is_inner():
    inner = ops.CosineDecay(init_value=1.0, decay_steps=10)
    schedule = ops.Warmup(schedule=inner, warmup_steps=0)
    for step in range(15):
        assert schedule(step) == inner(step)


def test_join_anchor():
    schedule = ops.Join(
        schedules=[ops.Constant(value=1.0), ops.ExponentialDecay(init_value=1.0, transition_steps=1, decay_rate=0.5)],
        boundaries=[3],
    )
    assert [schedule(t) for t in range(6)] == [1.0, 1.0, 1.0, 1.0, 0.5, 0.25]


def test_join_boundary_at_zero_skips_first():
    schedule = ops.Join(schedules=[ops.Constant(value=1.0), ops.Constant(value=0.5)], boundaries=[0])
    assert schedule(0) == 0.5
    assert schedule(np.asarray([0, 1])).tolist() == [0.5, 0.5]


def test_join_does_not_leak_non_finite_values():
    growing = ops.ExponentialDecay(init_value=1.0, transition_steps=1, decay_rate=1e300)
    schedule = ops.Join(schedules=[growing, ops.Constant(value=0.5)], boundaries=[3])
    with np.errstate(over="ignore"):
        values = schedule(np.asarray([0, 2, 3, 4]))
    assert values.tolist() == [1.0, math.inf, 0.5, 0.5]


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: ops.Constant(value="a"), TypeError, "value must be a real number, got 'a'"),
        (lambda: ops.Constant(value=math.nan), ValueError, "value must be a finite number, got nan"),
        (lambda: ops.Constant(value=True), TypeError, r"value must be a real number, got True \(bool\)"),
        (lambda: ops.StepDecay(init_value=1.0, decay_rate=0.5, decay_steps=0), ValueError,
         "decay_steps must be a positive integer, got 0"),
        (lambda: ops.StepDecay(init_value=1.0, decay_rate=0.5, decay_steps=2.5), TypeError,
         r"decay_steps must be an integer, got 2.5 \(float\)"),
        (lambda: ops.StepDecay(init_value=1.0, decay_rate=-0.5, decay_steps=2), ValueError,
         "decay_rate must be a finite number >= 0, got -0.5"),
        (lambda: ops.ExponentialDecay(init_value=1.0, transition_steps=0, decay_rate=0.5), ValueError,
         "transition_steps must be a positive integer, got 0"),
        (lambda: ops.ExponentialDecay(init_value=1.0, transition_steps=2, decay_rate=0.0), ValueError,
         "decay_rate must be a finite number > 0, got 0.0"),
        (lambda: ops.ExponentialDecay(init_value=1.0, transition_steps=2, decay_rate=0.5, transition_begin=-1),
         ValueError, "transition_begin must be a non-negative integer, got -1"),
        (lambda: ops.ExponentialDecay(init_value=1.0, transition_steps=2, decay_rate=0.5, staircase=1), TypeError,
         r"staircase must be True or False, got 1 \(int\)"),
        (lambda: ops.ExponentialDecay(init_value=1.0, transition_steps=2, decay_rate=0.5, end_value=math.inf),
         ValueError, "end_value must be a finite number, got inf"),
        (lambda: ops.CosineDecay(init_value=1.0, decay_steps=0), ValueError,
         "decay_steps must be a positive integer, got 0"),
        (lambda: ops.CosineDecay(init_value=1.0, decay_steps=10, exponent=0.0), ValueError,
         "exponent must be a finite number > 0, got 0.0"),
        (lambda: ops.Warmup(schedule=1.0, warmup_steps=3), TypeError, "schedule must be a schedule, got 1.0"),
        (lambda: ops.Warmup(schedule=ops.Constant(value=1.0), warmup_steps=-3), ValueError,
         "warmup_steps must be a non-negative integer, got -3"),
        (lambda: ops.WarmupCosine(peak_value=1.0, warmup_steps=10, decay_steps=10), ValueError,
         "decay_steps must be greater than warmup_steps because it counts the warmup, "
         "got decay_steps=10 and warmup_steps=10"),
        (lambda: ops.Join(schedules=[], boundaries=[]), ValueError, r"schedules must contain at least one schedule"),
        (lambda: ops.Join(schedules=ops.Constant(value=1.0), boundaries=[]), TypeError,
         "schedules must be a list of schedules"),
        (lambda: ops.Join(schedules=[ops.Constant(value=1.0)] * 2, boundaries=[]), ValueError,
         "boundaries must have one item fewer than schedules, got 0 boundaries for 2 schedules"),
        (lambda: ops.Join(schedules=[ops.Constant(value=1.0)] * 3, boundaries=[5, 5]), ValueError,
         r"boundaries must be strictly increasing, got \[5, 5\]"),
        (lambda: ops.Join(schedules=[ops.Constant(value=1.0)] * 2, boundaries=[-1]), ValueError,
         r"boundaries\[0\] must be a non-negative integer, got -1"),
        (lambda: ops.Join(schedules=[ops.Constant(value=1.0), "x"], boundaries=[1]), TypeError,
         r"schedules\[1\] must be a schedule, got 'x'"),
    ],
)
def test_invalid_fields_raise(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_integer_values_become_floats():
    schedule = ops.StepDecay(init_value=1, decay_rate=1, decay_steps=1e3)
    assert isinstance(schedule.init_value, float)
    assert isinstance(schedule.decay_rate, float)
    assert schedule.decay_steps == 1000
    assert isinstance(schedule.decay_steps, int)
