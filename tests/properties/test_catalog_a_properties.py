"""Properties of linear, polynomial, inverse-time, inverse-sqrt, multistep, piecewise, scale and clamp schedules.

Each property is the math a kind promises, checked on random valid parameters
and random steps up to 2**40 with Python ints (float64). Comparisons of two
computed values allow a few float64 ulps; bounds given as fields hold exactly.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st

from optstrat import (
    Clamp,
    ExponentialDecay,
    InverseSqrt,
    InverseTime,
    Linear,
    MultiStep,
    PiecewiseConstant,
    PiecewiseLinear,
    Polynomial,
    Scale,
    StepDecay,
)

# Two values computed by different float64 roundings may differ by a few ulps.
ULPS = 8 * 2.0**-52

levels = st.floats(-10.0, 10.0)
positive_levels = st.floats(1e-4, 10.0)
lengths = st.integers(1, 10**6)
begins = st.integers(0, 10**5)
steps = st.integers(0, 2**40)
step_lists = st.lists(steps, min_size=2, max_size=30).map(sorted)


def values_at(schedule, points):
    return [schedule(point) for point in points]


def assert_non_increasing(values, scale):
    for earlier, later in zip(values, values[1:]):
        assert later <= earlier + ULPS * scale, (earlier, later)


def assert_non_decreasing(values, scale):
    for earlier, later in zip(values, values[1:]):
        assert later >= earlier - ULPS * scale, (earlier, later)


def assert_monotone_towards(values, start, end):
    scale = max(abs(start), abs(end))
    if end <= start:
        assert_non_increasing(values, scale)
    else:
        assert_non_decreasing(values, scale)


def assert_between(values, low, high):
    for value in values:
        assert low <= value <= high, (value, low, high)


@st.composite
def linear_schedules(draw):
    return Linear(
        init_value=draw(levels),
        end_value=draw(levels),
        transition_steps=draw(lengths),
        transition_begin=draw(begins),
    )


@st.composite
def polynomial_schedules(draw, cycle=st.booleans()):
    return Polynomial(
        init_value=draw(levels),
        end_value=draw(levels),
        transition_steps=draw(lengths),
        power=draw(st.floats(0.05, 8.0)),
        transition_begin=draw(begins),
        cycle=draw(cycle),
    )


@given(schedule=linear_schedules(), points=step_lists)
def test_linear_is_monotone_between_its_ends(schedule, points):
    values = values_at(schedule, points)

    assert_monotone_towards(values, schedule.init_value, schedule.end_value)
    assert_between(values, min(schedule.init_value, schedule.end_value), max(schedule.init_value, schedule.end_value))


@given(schedule=linear_schedules(), offset=steps)
def test_linear_holds_ends(schedule, offset):
    begin = schedule.transition_begin

    assert schedule(max(begin - offset, 0)) == schedule.init_value
    assert schedule(begin + schedule.transition_steps + offset) == schedule.end_value


@given(schedule=linear_schedules().filter(lambda linear: linear.transition_steps >= 2), data=st.data())
def test_linear_is_affine_in_the_step(schedule, data):
    begin, length = schedule.transition_begin, schedule.transition_steps
    step = data.draw(st.integers(begin + 1, begin + length - 1))

    # Equal steps change the value by equal amounts: v(t) is the mean of v(t - 1) and v(t + 1).
    midpoint = (schedule(step - 1) + schedule(step + 1)) / 2
    scale = max(abs(schedule.init_value), abs(schedule.end_value))
    assert math.isclose(schedule(step), midpoint, rel_tol=1e-12, abs_tol=ULPS * scale)


@given(schedule=polynomial_schedules(cycle=st.just(False)), points=step_lists)
def test_polynomial_is_monotone_between_its_ends(schedule, points):
    values = values_at(schedule, points)
    low, high = sorted((schedule.init_value, schedule.end_value))

    assert_monotone_towards(values, schedule.init_value, schedule.end_value)
    assert_between(values, low, high)


@given(schedule=polynomial_schedules(cycle=st.just(True)), points=step_lists)
def test_polynomial_cycle_stays_between_its_ends(schedule, points):
    values = values_at(schedule, points)
    low, high = sorted((schedule.init_value, schedule.end_value))

    assert_between(values, low, high)


@given(schedule=polynomial_schedules(cycle=st.just(True)), cycle_index=st.integers(1, 1000))
def test_polynomial_cycle_restarts_lower(schedule, cycle_index):
    length = schedule.transition_steps
    cycle_end = schedule.transition_begin + cycle_index * length

    assert schedule(cycle_end) == schedule.end_value
    if length > 1:
        # The next cycle restarts at (1 - (k * T + 1) / ((k + 1) * T)) ** power of the way, below the last start.
        first = schedule(schedule.transition_begin + 1)
        restart = schedule(cycle_end + 1)
        scale = max(abs(schedule.init_value), abs(schedule.end_value))
        assert abs(restart - schedule.end_value) <= abs(first - schedule.end_value) + ULPS * scale


@given(
    schedule=polynomial_schedules(cycle=st.just(False)),
    offset=steps,
)
def test_polynomial_holds_end_value(schedule, offset):
    end = schedule.transition_begin + schedule.transition_steps

    assert schedule(end + offset) == schedule.end_value
    assert schedule(max(schedule.transition_begin - offset, 0)) == schedule.init_value


@given(linear=linear_schedules(), points=step_lists)
def test_polynomial_of_power_one_is_linear(linear, points):
    schedule = Polynomial(
        init_value=linear.init_value,
        end_value=linear.end_value,
        transition_steps=linear.transition_steps,
        transition_begin=linear.transition_begin,
    )

    assert values_at(schedule, points) == values_at(linear, points)


@given(
    init_value=positive_levels,
    decay_rate=st.floats(0.0, 100.0),
    decay_steps=lengths,
    staircase=st.booleans(),
    points=step_lists,
)
def test_inverse_time_decreases_from_start(init_value, decay_rate, decay_steps, staircase, points):
    schedule = InverseTime(init_value=init_value, decay_rate=decay_rate, decay_steps=decay_steps, staircase=staircase)
    values = values_at(schedule, points)

    assert_non_increasing(values, init_value)
    assert_between(values, 0.0, init_value)
    assert schedule(0) == init_value


@given(init_value=positive_levels, decay_rate=st.floats(0.0, 100.0), decay_steps=lengths, step=steps)
def test_inverse_time_staircase_is_flat_inside_a_stair(init_value, decay_rate, decay_steps, step):
    schedule = InverseTime(init_value=init_value, decay_rate=decay_rate, decay_steps=decay_steps, staircase=True)
    stair_start = step - step % decay_steps

    assert schedule(step) == schedule(stair_start)
    assert schedule(stair_start + decay_steps - 1) == schedule(stair_start)


@given(
    peak_value=positive_levels,
    warmup_steps=st.integers(0, 10**5),
    timescale=st.one_of(st.none(), st.integers(1, 10**6)),
    points=step_lists,
)
def test_inverse_sqrt_rises_then_decays_below_peak(peak_value, warmup_steps, timescale, points):
    schedule = InverseSqrt(peak_value=peak_value, warmup_steps=warmup_steps, timescale=timescale)
    rising = [point for point in points if point <= warmup_steps]
    decaying = [point for point in points if point >= warmup_steps]

    assert_non_decreasing(values_at(schedule, rising), peak_value)
    assert_non_increasing(values_at(schedule, decaying), peak_value)
    assert_between(values_at(schedule, points), 0.0, peak_value)
    assert schedule(warmup_steps) == peak_value


@st.composite
def multistep_schedules(draw, decay_rates=st.floats(0.0, 1.0)):
    return MultiStep(
        init_value=draw(positive_levels),
        boundaries=sorted(draw(st.lists(st.integers(0, 10**6), max_size=8))),
        decay_rate=draw(decay_rates),
    )


@given(schedule=multistep_schedules(), points=step_lists)
def test_multistep_below_one_decreases(schedule, points):
    values = values_at(schedule, points)
    lowest = schedule.init_value * schedule.decay_rate ** len(schedule.boundaries)

    assert_non_increasing(values, schedule.init_value)
    assert_between(values, lowest * (1 - ULPS), schedule.init_value)


@given(schedule=multistep_schedules(st.floats(0.01, 3.0)), step=steps)
def test_multistep_counts_each_boundary_once(schedule, step):
    passed = sum(1 for boundary in schedule.boundaries if boundary <= step)

    assert math.isclose(schedule(step), schedule.init_value * schedule.decay_rate**passed, rel_tol=ULPS)


@st.composite
def piecewise_points(draw, extra_values):
    boundaries = sorted(draw(st.lists(st.integers(0, 10**6), max_size=8, unique=True)))
    values = draw(st.lists(levels, min_size=len(boundaries) + extra_values, max_size=len(boundaries) + extra_values))
    return boundaries, values


@given(points=piecewise_points(extra_values=1), step=steps)
def test_piecewise_constant_takes_the_value_of_its_piece(points, step):
    boundaries, values = points
    schedule = PiecewiseConstant(boundaries=boundaries, values=values)
    piece = sum(1 for boundary in boundaries if boundary <= step)

    assert schedule(step) == values[piece]


@given(points=piecewise_points(extra_values=0).filter(lambda points: len(points[0]) >= 1), samples=step_lists)
def test_piecewise_linear_hits_its_points(points, samples):
    boundaries, values = points
    schedule = PiecewiseLinear(boundaries=boundaries, values=values)

    for boundary, value in zip(boundaries, values):
        assert schedule(boundary) == value
    assert schedule(0) == values[0]
    assert schedule(boundaries[-1] + 10**9) == values[-1]
    assert_between(values_at(schedule, samples), min(values), max(values))


@given(points=piecewise_points(extra_values=0).filter(lambda points: len(points[0]) >= 2), data=st.data())
def test_piecewise_linear_is_monotone_on_each_piece(points, data):
    boundaries, values = points
    schedule = PiecewiseLinear(boundaries=boundaries, values=values)
    piece = data.draw(st.integers(0, len(boundaries) - 2))
    start, stop = boundaries[piece], boundaries[piece + 1]
    inside = sorted(data.draw(st.lists(st.integers(start, stop), min_size=2, max_size=20)))

    assert_monotone_towards(values_at(schedule, inside), values[piece], values[piece + 1])


# Composition ----------------------------------------------------------------------------------------


@st.composite
def any_schedules(draw):
    kind = draw(st.sampled_from(["linear", "polynomial", "inverse_time", "inverse_sqrt", "multistep", "exponential", "step"]))
    if kind == "linear":
        return draw(linear_schedules())
    if kind == "polynomial":
        return draw(polynomial_schedules())
    if kind == "inverse_time":
        return InverseTime(init_value=draw(levels), decay_rate=draw(st.floats(0.0, 10.0)), decay_steps=draw(lengths))
    if kind == "inverse_sqrt":
        return InverseSqrt(peak_value=draw(levels), warmup_steps=draw(st.integers(0, 1000)))
    if kind == "multistep":
        return draw(multistep_schedules(st.floats(0.0, 2.0)))
    if kind == "exponential":
        return ExponentialDecay(
            init_value=draw(levels), transition_steps=draw(lengths), decay_rate=draw(st.floats(0.01, 0.999))
        )
    return StepDecay(init_value=draw(levels), decay_rate=draw(st.floats(0.0, 1.0)), decay_steps=draw(lengths))


@given(
    schedule=any_schedules(),
    first=st.floats(-100.0, 100.0, allow_subnormal=False),
    second=st.floats(-100.0, 100.0, allow_subnormal=False),
    points=step_lists,
)
def test_scale_is_linear(schedule, first, second, points):
    base = np.asarray(values_at(schedule, points))
    scaled = np.asarray(values_at(Scale(schedule=schedule, factor=first), points))
    summed = np.asarray(values_at(Scale(schedule=schedule, factor=first + second), points))
    nested = np.asarray(values_at(Scale(schedule=Scale(schedule=schedule, factor=first), factor=second), points))
    other = np.asarray(values_at(Scale(schedule=schedule, factor=second), points))

    np.testing.assert_array_equal(scaled, first * base)
    # Products below the normal float64 range lose relative precision, hence the absolute term.
    size = np.max(np.abs(base), initial=0.0) * (abs(first) + abs(second))
    np.testing.assert_allclose(summed, scaled + other, rtol=1e-12, atol=ULPS * size + 1e-300)
    np.testing.assert_allclose(nested, first * second * base, rtol=1e-12, atol=1e-300)


@given(
    schedule=any_schedules(),
    bounds=st.tuples(st.one_of(st.none(), levels), st.one_of(st.none(), levels)),
    points=step_lists,
)
def test_clamp_respects_its_bounds(schedule, bounds, points):
    low, high = bounds
    assume(low is not None or high is not None)
    if low is not None and high is not None and low > high:
        low, high = high, low
    clamped = Clamp(schedule=schedule, min_value=low, max_value=high)

    for point in points:
        value, inner = clamped(point), schedule(point)
        if low is not None:
            assert value >= low
        if high is not None:
            assert value <= high
        inside = (low is None or inner >= low) and (high is None or inner <= high)
        if inside:
            assert value == inner


@given(schedule=any_schedules(), offset=steps)
def test_value_is_held_past_the_horizon(schedule, offset):
    horizon = schedule._horizon()
    assume(horizon is not None)

    assert schedule(horizon + offset) == schedule(horizon)
    assert schedule(2**80 + offset) == schedule(horizon)
