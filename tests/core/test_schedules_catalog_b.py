"""Closed-form oracles, anchors and validation for cosine_restarts, one_cycle, cyclic and wsd.

Each oracle below is plain Python float64 math per step, written from the
formulas in the schedules' docstrings and the reference libraries, without the
core's helpers: exact rationals find the restart cycles, and torch's phase
loop finds the one-cycle phase. The schedules are checked at b - 1, b and b + 1
around every boundary, at the end and far past it. They are also checked at
2**31 - 1 and at a Python int too large for int64, as scalars and as arrays of
every namespace.
"""

from __future__ import annotations

import math
import warnings
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import optstrat as ops

INT32_MAX = 2**31 - 1
HUGE = 10**30
# Rounding errors of a float64 oracle, relative to the largest value of the schedule.
ORACLE_RTOL = 1e-9
ORACLE_ATOL = 1e-15


def around(*boundaries: int) -> set[int]:
    return {b + offset for b in boundaries for offset in (-1, 0, 1) if b + offset >= 0}


# Oracles ------------------------------------------------------------------------------------------


def restart_cycle(first_period: int, period_mult: float, t: int) -> tuple[int, Fraction, Fraction]:
    """Return the cycle index of step ``t``, and its exact start and length."""
    if period_mult == 1.0:
        return t // first_period, Fraction(t // first_period * first_period), Fraction(first_period)
    ratio = Fraction(period_mult)
    index, start, length = 0, Fraction(0), Fraction(first_period)
    while start + length <= t:
        index, start, length = index + 1, start + length, length * ratio
    return index, start, length


def restart_starts(first_period: int, period_mult: float, limit: int) -> list[int]:
    """Return the first integer step of every cycle that starts at or below ``limit``."""
    starts, start, length = [], Fraction(0), Fraction(first_period)
    while start <= limit:
        starts.append(math.ceil(start))
        start, length = start + length, length * Fraction(period_mult)
    return starts


def oracle_cosine_restarts(init_value, first_period, period_mult, value_mult, end_value, t):
    index, start, length = restart_cycle(first_period, period_mult, t)
    left = float((start + length - t) / length)
    # (1 + cos(pi * f)) / 2 with f = 1 - left, in the form that keeps its precision near f = 1.
    weight = math.sin(math.pi * left / 2) ** 2
    return end_value + (init_value - end_value) * value_mult**index * weight


def oracle_one_cycle(max_value, total_steps, pct_start, div_factor, final_div_factor, anneal, three_phase, t):
    """Follow torch's OneCycleLR.get_lr, with the step held at total_steps - 1."""
    t = min(t, total_steps - 1)
    initial = max_value / div_factor
    minimum = initial / final_div_factor
    if three_phase:
        phases = [
            (float(pct_start * total_steps) - 1, initial, max_value),
            (float(2 * pct_start * total_steps) - 2, max_value, initial),
            (total_steps - 1, initial, minimum),
        ]
    else:
        phases = [(float(pct_start * total_steps) - 1, initial, max_value), (total_steps - 1, max_value, minimum)]
    start_step = 0.0
    for index, (end_step, start_value, end_value) in enumerate(phases):
        if t <= end_step or index == len(phases) - 1:
            if end_step == start_step:
                return end_value  # the documented value of a phase of length 0
            pct = (t - start_step) / (end_step - start_step)
            if anneal == "cos":
                return end_value + (start_value - end_value) / 2.0 * (math.cos(math.pi * pct) + 1)
            return (end_value - start_value) * pct + start_value
        start_step = end_step
    raise AssertionError("unreachable")


def oracle_cyclic(base_value, max_value, up, down, mode, gamma, t):
    period = up + down
    cycle, position = divmod(t, period)
    if up > 0 and position <= up:
        fraction = position / up
    else:
        fraction = (period - position) / down
    if mode == "triangular2":
        fraction *= 0.5**cycle
    elif mode == "exp_range":
        fraction *= gamma**t
    return base_value + (max_value - base_value) * fraction


def oracle_wsd(peak, warmup, stable, decay, init, end, shape, t):
    if t < warmup:
        return init + (peak - init) * t / warmup
    if t < warmup + stable:
        return peak
    if t < warmup + stable + decay:
        progress = (t - warmup - stable) / decay
        if shape == "linear":
            factor = 1.0 - progress
        elif shape == "cosine":
            factor = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            factor = 1.0 - math.sqrt(progress)
        return end + (peak - end) * factor
    return end


def assert_matches_oracle(schedule, oracle, steps, scale):
    steps = sorted(steps)
    for step in steps:
        assert schedule(step) == pytest.approx(oracle(step), rel=ORACLE_RTOL, abs=ORACLE_ATOL * scale), step
    exact = [step for step in steps if step < 2**62]
    values = schedule(np.asarray(exact, dtype=np.int64))
    expected = [oracle(step) for step in exact]
    np.testing.assert_allclose(values, expected, rtol=ORACLE_RTOL, atol=ORACLE_ATOL * scale)


def assert_float32_close(schedule, xp, oracle, steps, scale):
    """Check values of a float32 backend within 1e-6 relative of the float64 oracle."""
    steps = sorted(step for step in steps if step <= INT32_MAX)
    values = schedule(xp.asarray(steps, dtype=xp.int32))
    values = np.asarray(values, dtype=np.float64)
    expected = np.asarray([oracle(step) for step in steps])
    # float32 rounds a value to 6e-8 relative, and 1e-12 of the scale covers values rounded to 0.
    np.testing.assert_allclose(values, expected, rtol=1e-6, atol=1e-12 * scale)


# cosine_restarts ----------------------------------------------------------------------------------


@given(
    init_value=st.floats(1e-3, 10.0),
    first_period=st.integers(1, 50),
    period_mult=st.sampled_from([1.0, 2.0, 3.0, 1.5, 1.25, 2.7]),
    value_mult=st.sampled_from([1.0, 0.5, 0.9, 0.0]),
    end_fraction=st.floats(0.0, 0.5),
)
def test_cosine_restarts_oracle(init_value, first_period, period_mult, value_mult, end_fraction):
    end_value = init_value * end_fraction
    schedule = ops.CosineRestarts(
        init_value=init_value,
        first_period=first_period,
        period_mult=period_mult,
        value_mult=value_mult,
        end_value=end_value,
    )
    if period_mult == 1.0:
        starts = [k * first_period for k in (*range(20), 1000, 10**6)]
        steps = around(*starts) | {HUGE, HUGE + first_period // 2}
    else:
        starts = restart_starts(first_period, period_mult, 10**5)
        steps = around(*starts)
    steps |= {0, INT32_MAX, 2**62 + 12345}

    def oracle(t):
        return oracle_cosine_restarts(init_value, first_period, period_mult, value_mult, end_value, t)

    assert_matches_oracle(schedule, oracle, steps, scale=init_value)


@pytest.mark.parametrize("period_mult", [1.0, 2.0, 1.5, 3.3])
def test_cosine_restarts_float32_every_restart(period_mult, xp):
    schedule = ops.CosineRestarts(init_value=1.0, first_period=7, period_mult=period_mult, value_mult=0.8, end_value=0.01)
    starts = restart_starts(7, period_mult, INT32_MAX) if period_mult > 1.0 else [0, 7, 70, 7 * 10**8]
    steps = around(*starts) | {INT32_MAX}

    def oracle(t):
        return oracle_cosine_restarts(1.0, 7, period_mult, 0.8, 0.01, t)

    assert_float32_close(schedule, xp, oracle, steps, scale=1.0)


def test_cosine_restarts_anchors():
    torch_and_keras = ops.CosineRestarts(init_value=1.0, first_period=3, period_mult=2.0)
    expected = [1, 0.75, 0.25, 1, 0.933013, 0.75, 0.5, 0.25, 0.066987, 1, 0.982963]
    assert [torch_and_keras(t) for t in range(11)] == pytest.approx(expected, abs=5e-7)

    # Keras CosineDecayRestarts(1.0, 3, t_mul=1.0, m_mul=0.5, alpha=0.1): the floor is alpha * init.
    keras_decaying = ops.CosineRestarts(init_value=1.0, first_period=3, value_mult=0.5, end_value=0.1)
    expected = [1, 0.775, 0.325, 0.55, 0.4375, 0.2125, 0.325, 0.26875]
    assert [keras_decaying(t) for t in range(8)] == pytest.approx(expected, abs=5e-7)


def test_cosine_restarts_fractional_cycles_follow_real_starts():
    # period_mult = 1.5 from 2 steps: cycles of 2, 3, 4.5, 6.75 steps start at 0, 2, 5, 9.5, 16.25.
    schedule = ops.CosineRestarts(init_value=1.0, first_period=2, period_mult=1.5)
    assert restart_starts(2, 1.5, 20) == [0, 2, 5, 10, 17]
    assert schedule(9) == pytest.approx((1 + math.cos(math.pi * 4 / 4.5)) / 2)
    assert schedule(10) == pytest.approx((1 + math.cos(math.pi * 0.5 / 6.75)) / 2)
    assert schedule(10) < 1.0


def test_cosine_restarts_without_later_peaks():
    schedule = ops.CosineRestarts(init_value=1.0, first_period=4, value_mult=0.0, end_value=0.25)
    assert schedule(0) == 1.0
    assert [schedule(t) for t in range(4, 12)] == [0.25] * 8
    assert schedule._horizon() == 4


def test_cosine_restarts_decaying_peaks_reach_a_horizon():
    schedule = ops.CosineRestarts(init_value=1.0, first_period=10, period_mult=1.0, value_mult=0.5, end_value=0.1)
    horizon = schedule._horizon()
    assert horizon is not None
    assert horizon % 10 == 0
    assert schedule(horizon) == 0.1
    assert schedule(HUGE) == 0.1
    # 0.9 * 0.5 ** 50 still shows in float64 next to 0.1; by the horizon the peaks are exactly 0.
    assert schedule(500) > 0.1
    assert schedule(horizon - 10) == 0.1


def test_cosine_restarts_beyond_listed_cycles():
    # Growing cycles are listed up to 2**63; a float step past the last one gives its end value.
    schedule = ops.CosineRestarts(init_value=1.0, first_period=3, period_mult=2.0, end_value=0.1)
    assert schedule(2**80) == 0.1
    assert schedule(np.asarray([1e30, 5.0])).tolist() == pytest.approx([0.1, schedule(5)])
    assert schedule(2**63 - 1) == pytest.approx(
        oracle_cosine_restarts(1.0, 3, 2.0, 1.0, 0.1, 2**63 - 1), rel=1e-9
    )


def test_cosine_restarts_huge_step_exact():
    schedule = ops.CosineRestarts(init_value=1.0, first_period=7)
    for step in (HUGE, HUGE + 3, 2**80 + 5):
        assert schedule(step) == schedule(step % 7)


# one_cycle ----------------------------------------------------------------------------------------


def one_cycle_boundaries(total_steps, pct_start, three_phase):
    ends = [float(pct_start * total_steps) - 1, total_steps - 1]
    if three_phase:
        ends.insert(1, float(2 * pct_start * total_steps) - 2)
    return [math.floor(end) for end in ends] + [math.ceil(end) for end in ends]


@given(
    max_value=st.floats(1e-3, 10.0),
    total_steps=st.integers(1, 5000),
    pct_start=st.floats(0.0, 1.0),
    div_factor=st.floats(1.0, 100.0),
    final_div_factor=st.floats(1.0, 1e5),
    anneal=st.sampled_from(["cos", "linear"]),
    three_phase=st.booleans(),
)
def test_one_cycle_oracle(max_value, total_steps, pct_start, div_factor, final_div_factor, anneal, three_phase):
    schedule = ops.OneCycle(
        max_value=max_value,
        total_steps=total_steps,
        pct_start=pct_start,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        anneal=anneal,
        three_phase=three_phase,
    )
    steps = around(*one_cycle_boundaries(total_steps, pct_start, three_phase), total_steps)
    steps |= {0, total_steps // 2, 10 * total_steps, INT32_MAX, HUGE}

    def oracle(t):
        return oracle_one_cycle(max_value, total_steps, pct_start, div_factor, final_div_factor, anneal, three_phase, t)

    assert_matches_oracle(schedule, oracle, steps, scale=max_value)


@pytest.mark.parametrize(("anneal", "three_phase"), [("cos", False), ("linear", True), ("cos", True)])
def test_one_cycle_float32(anneal, three_phase, xp):
    schedule = ops.OneCycle(max_value=0.5, total_steps=1000, pct_start=0.25, anneal=anneal, three_phase=three_phase)
    steps = around(*one_cycle_boundaries(1000, 0.25, three_phase)) | set(range(0, 1000, 37)) | {INT32_MAX}

    def oracle(t):
        return oracle_one_cycle(0.5, 1000, 0.25, 25.0, 1e4, anneal, three_phase, t)

    assert_float32_close(schedule, xp, oracle, steps, scale=0.5)


def test_one_cycle_anchors():
    schedule = ops.OneCycle(max_value=1.0, total_steps=10)
    expected = [0.04, 0.52, 1, 0.950485, 0.811746, 0.611262, 0.388742, 0.188258, 0.049519, 4e-6]
    assert [schedule(t) for t in range(10)] == pytest.approx(expected, abs=5e-7)
    # torch extrapolates to 0.049519 at t = total_steps, but this schedule stays at the minimum.
    assert schedule(10) == pytest.approx(4e-6)

    linear = ops.OneCycle(max_value=1.0, total_steps=10, anneal="linear", three_phase=True)
    expected = [0.04, 0.52, 1, 0.52, 0.04, 0.0320008, 0.0240016, 0.0160024, 0.0080032, 4e-6]
    assert [linear(t) for t in range(10)] == pytest.approx(expected, abs=5e-8)


@pytest.mark.parametrize(
    ("total_steps", "pct_start", "three_phase", "expected"),
    [
        # pct_start * total_steps = 1: the warmup has length 0 and contains step 0, so it gives its end value.
        (4, 0.25, False, [1.0, None, None, 4e-5]),
        (4, 0.25, True, [1.0, None, None, 4e-5]),
        # No warmup at all: step 0 already lies 1 / total_steps into the decay, as in torch.
        (4, 0.0, False, [None, None, None, 4e-5]),
        # A single step is the last one, so it takes the minimum; with pct_start = 1 it is the peak.
        (1, 0.3, False, [4e-5]),
        (1, 1.0, False, [1.0]),
        # The whole run warms up, so the last step is the peak.
        (5, 1.0, False, [0.1, None, None, None, 1.0]),
        # Three phases with pct_start > 0.5 never reach the third phase.
        (10, 0.8, True, [0.1, None, None, None, None, None, None, 1.0, None, None]),
    ],
)
def test_one_cycle_degenerate_phases(total_steps, pct_start, three_phase, expected):
    schedule = ops.OneCycle(
        max_value=1.0, total_steps=total_steps, pct_start=pct_start, div_factor=10.0, final_div_factor=2500.0,
        three_phase=three_phase,
    )
    values = [schedule(t) for t in range(total_steps + 3)]
    assert all(math.isfinite(value) for value in values)
    for step, value in enumerate(expected):
        if value is not None:
            assert values[step] == pytest.approx(value, rel=1e-12), step
    assert values[total_steps:] == [values[total_steps - 1]] * 3
    arrays = schedule(np.arange(total_steps + 3, dtype=np.int32))
    np.testing.assert_allclose(arrays, values, rtol=1e-12)


# cyclic -------------------------------------------------------------------------------------------


@given(
    base_value=st.floats(0.0, 1.0),
    amplitude=st.floats(1e-3, 10.0),
    up=st.integers(0, 300),
    down=st.one_of(st.none(), st.integers(0, 300)),
    mode=st.sampled_from(["triangular", "triangular2", "exp_range"]),
    gamma=st.floats(0.9, 1.0),
)
def test_cyclic_oracle(base_value, amplitude, up, down, mode, gamma):
    if up == 0 and not down:
        up = 1
    effective_down = up if down is None else down
    max_value = base_value + amplitude
    schedule = ops.Cyclic(
        base_value=base_value, max_value=max_value, step_size_up=up, step_size_down=down, mode=mode, gamma=gamma
    )
    period = up + effective_down
    steps = around(*(k * period + offset for k in range(4) for offset in (0, up)), 1000 * period)
    steps |= {0, INT32_MAX, HUGE, HUGE + up}

    def oracle(t):
        return oracle_cyclic(base_value, max_value, up, effective_down, mode, gamma, t)

    assert_matches_oracle(schedule, oracle, steps, scale=max_value)


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
def test_cyclic_float32(mode, xp):
    schedule = ops.Cyclic(base_value=0.01, max_value=0.5, step_size_up=200, step_size_down=300, mode=mode, gamma=0.999)
    steps = around(*(k * 500 + offset for k in range(30) for offset in (0, 200))) | {INT32_MAX, 10**6 + 17}

    def oracle(t):
        return oracle_cyclic(0.01, 0.5, 200, 300, mode, 0.999, t)

    assert_float32_close(schedule, xp, oracle, steps, scale=0.5)


def test_cyclic_anchors():
    schedule = ops.Cyclic(base_value=0.1, max_value=1.0, step_size_up=2, step_size_down=3)
    expected = [0.1, 0.55, 1, 0.7, 0.4, 0.1, 0.55, 1, 0.7, 0.4, 0.1, 0.55]
    assert [schedule(t) for t in range(12)] == pytest.approx(expected, rel=1e-12)

    halving = ops.Cyclic(base_value=0.1, max_value=1.0, step_size_up=2, mode="triangular2")
    expected = [0.1, 0.55, 1, 0.55, 0.1, 0.325, 0.55, 0.325, 0.1, 0.2125]
    assert [halving(t) for t in range(10)] == pytest.approx(expected, rel=1e-12)


def test_cyclic_zero_length_halves():
    # No rise: every cycle starts at its peak (torch divides by zero there).
    falling = ops.Cyclic(base_value=0.0, max_value=1.0, step_size_up=0, step_size_down=4)
    assert [falling(t) for t in range(6)] == [1.0, 0.75, 0.5, 0.25, 1.0, 0.75]
    # No fall: a sawtooth that drops back to base_value in one step, as in torch.
    rising = ops.Cyclic(base_value=0.0, max_value=1.0, step_size_up=4, step_size_down=0)
    assert [rising(t) for t in range(6)] == [0.0, 0.25, 0.5, 0.75, 0.0, 0.25]


def test_cyclic_horizons():
    halving = ops.Cyclic(base_value=0.1, max_value=1.0, step_size_up=2, mode="triangular2")
    assert halving(halving._horizon()) == 0.1
    assert halving(HUGE) == 0.1
    shrinking = ops.Cyclic(base_value=0.1, max_value=1.0, step_size_up=2, mode="exp_range", gamma=0.5)
    assert shrinking(shrinking._horizon() + 1) == 0.1
    assert ops.Cyclic(base_value=0.1, max_value=1.0, step_size_up=2)._horizon() is None
    assert ops.Cyclic(base_value=0.3, max_value=0.3, step_size_up=2)._horizon() == 0


# wsd ----------------------------------------------------------------------------------------------


@given(
    peak=st.floats(1e-3, 10.0),
    warmup=st.integers(0, 2000),
    stable=st.integers(0, 2000),
    decay=st.integers(0, 10**5),
    init_fraction=st.floats(0.0, 1.0),
    end_fraction=st.floats(0.0, 1.0),
    shape=st.sampled_from(["linear", "cosine", "1-sqrt"]),
)
def test_wsd_oracle(peak, warmup, stable, decay, init_fraction, end_fraction, shape):
    init, end = peak * init_fraction, peak * end_fraction
    schedule = ops.WarmupStableDecay(
        peak_value=peak,
        warmup_steps=warmup,
        stable_steps=stable,
        decay_steps=decay,
        init_value=init,
        end_value=end,
        decay_shape=shape,
    )
    last = warmup + stable + decay
    steps = around(warmup, warmup + stable, last, warmup + stable + decay // 2) | {0, INT32_MAX, HUGE}

    def oracle(t):
        return oracle_wsd(peak, warmup, stable, decay, init, end, shape, t)

    assert_matches_oracle(schedule, oracle, steps, scale=peak)


@pytest.mark.parametrize("shape", ["linear", "cosine", "1-sqrt"])
def test_wsd_float32(shape, xp):
    schedule = ops.WarmupStableDecay(
        peak_value=0.3, warmup_steps=1000, stable_steps=5000, decay_steps=10**6, decay_shape=shape
    )
    steps = around(1000, 6000, 10**6 + 6000) | set(range(10**6 + 5000, 10**6 + 6001, 97)) | {INT32_MAX}

    def oracle(t):
        return oracle_wsd(0.3, 1000, 5000, 10**6, 0.0, 0.0, shape, t)

    assert_float32_close(schedule, xp, oracle, steps, scale=0.3)


def test_wsd_anchors():
    # Hugging Face get_wsd_schedule(W=2, D=2, N=7, decay_type="linear", min_lr_ratio=0.1) with lr 1.
    linear = ops.WarmupStableDecay(
        peak_value=1.0, warmup_steps=2, stable_steps=3, decay_steps=2, init_value=0.1, end_value=0.1
    )
    assert [linear(t) for t in range(9)] == pytest.approx([0.1, 0.55, 1, 1, 1, 1, 0.55, 0.1, 0.1], rel=1e-12)

    # HF (W=2, D=2, S=1, warmup "cosine", decay "1-sqrt"): a cosine warmup over 2 steps equals the linear one.
    sqrt = ops.WarmupStableDecay(peak_value=1.0, warmup_steps=2, stable_steps=1, decay_steps=2, decay_shape="1-sqrt")
    assert [sqrt(t) for t in range(7)] == pytest.approx([0, 0.5, 1, 1, 0.292893, 0, 0], abs=5e-7)


def test_wsd_zero_length_phases():
    no_warmup = ops.WarmupStableDecay(peak_value=1.0, warmup_steps=0, stable_steps=2, decay_steps=2, init_value=0.5)
    assert [no_warmup(t) for t in range(5)] == [1.0, 1.0, 1.0, 0.5, 0.0]
    no_stable = ops.WarmupStableDecay(peak_value=1.0, warmup_steps=2, stable_steps=0, decay_steps=2)
    assert [no_stable(t) for t in range(5)] == [0.0, 0.5, 1.0, 0.5, 0.0]
    no_decay = ops.WarmupStableDecay(peak_value=1.0, warmup_steps=2, stable_steps=2, decay_steps=0, end_value=0.2)
    assert [no_decay(t) for t in range(6)] == [0.0, 0.5, 1.0, 1.0, 0.2, 0.2]
    nothing = ops.WarmupStableDecay(peak_value=1.0, warmup_steps=0, stable_steps=0, decay_steps=0, end_value=0.2)
    assert [nothing(t) for t in range(3)] == [0.2, 0.2, 0.2]
    assert nothing(np.asarray([0, 5])).tolist() == [0.2, 0.2]


# Degenerate inputs give finite values everywhere ----------------------------------------------------


DEGENERATE = [
    ops.OneCycle(max_value=1.0, total_steps=1),
    ops.OneCycle(max_value=1.0, total_steps=2, pct_start=0.5, three_phase=True),
    ops.OneCycle(max_value=1.0, total_steps=4, pct_start=0.25, anneal="linear"),
    ops.OneCycle(max_value=1.0, total_steps=3, pct_start=1.0, three_phase=True),
    ops.OneCycle(max_value=1.0, total_steps=7, pct_start=0.0, three_phase=True),
    ops.Cyclic(base_value=0.0, max_value=1.0, step_size_up=0, step_size_down=1),
    ops.Cyclic(base_value=0.0, max_value=1.0, step_size_up=1, step_size_down=0, mode="triangular2"),
    ops.Cyclic(base_value=0.0, max_value=1.0, step_size_up=1, mode="exp_range", gamma=1e-300),
    ops.WarmupStableDecay(peak_value=1.0, warmup_steps=0, stable_steps=0, decay_steps=0),
    ops.WarmupStableDecay(peak_value=1.0, warmup_steps=1, stable_steps=0, decay_steps=1, decay_shape="1-sqrt"),
    ops.CosineRestarts(init_value=1.0, first_period=1),
    ops.CosineRestarts(init_value=1.0, first_period=1, period_mult=2.0, value_mult=0.0),
]


@pytest.mark.parametrize("schedule", DEGENERATE, ids=repr)
def test_degenerate_schedules_stay_finite(schedule, xp):
    steps = list(range(12)) + [1000, INT32_MAX]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = np.asarray(schedule(xp.asarray(steps)), dtype=np.float64)
        scalars = [schedule(step) for step in steps]
    assert np.isfinite(values).all()
    assert all(math.isfinite(value) for value in scalars)


# Jit ----------------------------------------------------------------------------------------------


def test_catalog_b_traces_under_jax_jit():
    jax = pytest.importorskip("jax")
    schedules = [
        ops.CosineRestarts(init_value=1.0, first_period=3, period_mult=2.0, value_mult=0.5, end_value=0.1),
        ops.OneCycle(max_value=1.0, total_steps=100, three_phase=True),
        ops.Cyclic(base_value=0.1, max_value=1.0, step_size_up=5, mode="exp_range", gamma=0.99),
        ops.WarmupStableDecay(peak_value=1.0, warmup_steps=5, stable_steps=5, decay_steps=20, decay_shape="cosine"),
    ]
    for schedule in schedules:
        compiled = jax.jit(schedule.__call__)
        steps = [0, 1, 3, 9, 10, 21, 99, 1000, INT32_MAX]
        values = [float(compiled(jax.numpy.asarray(step, dtype=jax.numpy.int32))) for step in steps]
        assert values == pytest.approx([schedule(step) for step in steps], rel=1e-6, abs=1e-12)
        assert compiled._cache_size() == 1


# Fixes in cosine_decay, warmup and join ------------------------------------------------------------


def test_cosine_decay_longer_than_int32_steps(xp):
    decay_steps = 2**31 + 10
    schedule = ops.CosineDecay(init_value=1.0, decay_steps=decay_steps)
    steps = [2**30, INT32_MAX - 5, INT32_MAX]
    values = np.asarray(schedule(xp.asarray(steps, dtype=xp.int32)), dtype=np.float64)
    expected = [math.sin(math.pi * (decay_steps - t) / (2 * decay_steps)) ** 2 for t in steps]
    np.testing.assert_allclose(values, expected, rtol=1e-6)


def test_huge_horizon_and_huge_step():
    schedule = ops.CosineDecay(init_value=1.0, decay_steps=2**70, end_value=0.5)
    assert schedule(2**71) == 0.5
    assert schedule(2**69) == pytest.approx(0.5 + 0.5 * (1 + math.cos(math.pi / 2)) / 2)


def test_parts_of_composites_are_clamped_at_their_horizon():
    # The first part overflows past its horizon if evaluated there; the join must not evaluate it there.
    growing = ops.ExponentialDecay(init_value=1.0, transition_steps=1, decay_rate=2.0, end_value=3.0)
    endless = ops.ExponentialDecay(init_value=1.0, transition_steps=1, decay_rate=0.5)
    join = ops.Join(schedules=[growing, endless], boundaries=[10])
    warmup = ops.Join(schedules=[ops.Warmup(schedule=growing, warmup_steps=2), endless], boundaries=[10])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert join(np.asarray([5, 5000])).tolist() == [3.0, 0.0]
        assert warmup(np.asarray([1, 5000])).tolist() == [0.5, 0.0]


def test_join_rejects_a_non_iterable():
    with pytest.raises(TypeError, match="schedules must be a list of schedules, got 3"):
        ops.Join(schedules=3, boundaries=[])


def test_warmup_then_restarts_is_continuous():
    inner = ops.CosineRestarts(init_value=0.8, first_period=5, period_mult=2.0)
    schedule = ops.Warmup(schedule=inner, warmup_steps=4, init_value=0.0)
    values = [schedule(t) for t in range(6)]
    assert values[4] == inner(0)
    assert values[3] - values[2] == pytest.approx(values[4] - values[3])


# Validation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: ops.CosineRestarts(init_value=math.nan, first_period=3), ValueError,
         "init_value must be a finite number, got nan"),
        (lambda: ops.CosineRestarts(init_value=1.0, first_period=0), ValueError,
         "first_period must be a positive integer, got 0"),
        (lambda: ops.CosineRestarts(init_value=1.0, first_period=2.5), TypeError,
         r"first_period must be an integer, got 2.5 \(float\)"),
        (lambda: ops.CosineRestarts(init_value=1.0, first_period=3, period_mult=0.5), ValueError,
         "period_mult must be a finite number >= 1, got 0.5"),
        (lambda: ops.CosineRestarts(init_value=1.0, first_period=3, value_mult=1.5), ValueError,
         "value_mult must be a finite number >= 0 and <= 1, got 1.5"),
        (lambda: ops.CosineRestarts(init_value=1.0, first_period=3, value_mult=-0.1), ValueError,
         "value_mult must be a finite number >= 0 and <= 1, got -0.1"),
        (lambda: ops.CosineRestarts(init_value=1.0, first_period=3, end_value="0"), TypeError,
         "end_value must be a real number, got '0'"),
        (lambda: ops.CosineRestarts(init_value=1.0, first_period=1, period_mult=1.01), ValueError,
         r"period_mult must be 1 or large enough that at most 1024 cycles start below 2\*\*63, "
         r"got period_mult=1.01 with first_period=1"),
        (lambda: ops.OneCycle(max_value=math.inf, total_steps=10), ValueError,
         "max_value must be a finite number, got inf"),
        (lambda: ops.OneCycle(max_value=1.0, total_steps=0), ValueError,
         "total_steps must be a positive integer, got 0"),
        (lambda: ops.OneCycle(max_value=1.0, total_steps=10, pct_start=1.5), ValueError,
         "pct_start must be a finite number >= 0 and <= 1, got 1.5"),
        (lambda: ops.OneCycle(max_value=1.0, total_steps=10, div_factor=0.0), ValueError,
         "div_factor must be a finite number > 0, got 0.0"),
        (lambda: ops.OneCycle(max_value=1.0, total_steps=10, final_div_factor=-1.0), ValueError,
         "final_div_factor must be a finite number > 0, got -1.0"),
        (lambda: ops.OneCycle(max_value=1.0, total_steps=10, anneal="cosine"), ValueError,
         "anneal must be one of 'cos', 'linear', got 'cosine'"),
        (lambda: ops.OneCycle(max_value=1.0, total_steps=10, three_phase="yes"), TypeError,
         r"three_phase must be True or False, got 'yes' \(str\)"),
        (lambda: ops.Cyclic(base_value=None, max_value=1.0, step_size_up=2), TypeError,
         "base_value must be a real number, got None"),
        (lambda: ops.Cyclic(base_value=0.1, max_value=math.nan, step_size_up=2), ValueError,
         "max_value must be a finite number, got nan"),
        (lambda: ops.Cyclic(base_value=0.1, max_value=1.0, step_size_up=-1), ValueError,
         "step_size_up must be a non-negative integer, got -1"),
        (lambda: ops.Cyclic(base_value=0.1, max_value=1.0, step_size_up=2, step_size_down=-2), ValueError,
         "step_size_down must be a non-negative integer, got -2"),
        (lambda: ops.Cyclic(base_value=0.1, max_value=1.0, step_size_up=0), ValueError,
         "step_size_up \\+ step_size_down must be at least 1, got step_size_up=0 and step_size_down=None"),
        (lambda: ops.Cyclic(base_value=0.1, max_value=1.0, step_size_up=2, mode="cosine"), ValueError,
         "mode must be one of 'triangular', 'triangular2', 'exp_range', got 'cosine'"),
        (lambda: ops.Cyclic(base_value=0.1, max_value=1.0, step_size_up=2, gamma=0.0), ValueError,
         "gamma must be a finite number > 0 and <= 1, got 0.0"),
        (lambda: ops.Cyclic(base_value=0.1, max_value=1.0, step_size_up=2, gamma=1.01), ValueError,
         "gamma must be a finite number > 0 and <= 1, got 1.01"),
        (lambda: ops.WarmupStableDecay(peak_value="1", warmup_steps=1, stable_steps=1, decay_steps=1), TypeError,
         "peak_value must be a real number, got '1'"),
        (lambda: ops.WarmupStableDecay(peak_value=1.0, warmup_steps=-1, stable_steps=1, decay_steps=1),
         ValueError, "warmup_steps must be a non-negative integer, got -1"),
        (lambda: ops.WarmupStableDecay(peak_value=1.0, warmup_steps=1, stable_steps=-5, decay_steps=1),
         ValueError, "stable_steps must be a non-negative integer, got -5"),
        (lambda: ops.WarmupStableDecay(peak_value=1.0, warmup_steps=1, stable_steps=1, decay_steps=1.5),
         TypeError, r"decay_steps must be an integer, got 1.5 \(float\)"),
        (lambda: ops.WarmupStableDecay(peak_value=1.0, warmup_steps=1, stable_steps=1, decay_steps=1,
                                       init_value=math.inf), ValueError, "init_value must be a finite number, got inf"),
        (lambda: ops.WarmupStableDecay(peak_value=1.0, warmup_steps=1, stable_steps=1, decay_steps=1,
                                       end_value=math.nan), ValueError, "end_value must be a finite number, got nan"),
        (lambda: ops.WarmupStableDecay(peak_value=1.0, warmup_steps=1, stable_steps=1, decay_steps=1,
                                       decay_shape="sqrt"), ValueError,
         "decay_shape must be one of 'linear', 'cosine', '1-sqrt', got 'sqrt'"),
    ],
)
def test_invalid_fields_raise(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_cosine_restarts_slow_growth_long_period():
    schedule = ops.CosineRestarts(init_value=1.0, first_period=10**15, period_mult=1.01)
    assert schedule(10**15) == pytest.approx(1.0, rel=1e-15)
    assert schedule(10**15 - 1) < 1e-20


# Config -------------------------------------------------------------------------------------------


CONFIGS = [
    ops.CosineRestarts(init_value=0.1, first_period=100, period_mult=1.5, value_mult=0.7, end_value=1e-4),
    ops.OneCycle(max_value=3e-4, total_steps=10_000, pct_start=0.25, anneal="linear", three_phase=True),
    ops.Cyclic(base_value=1e-4, max_value=1e-2, step_size_up=500, step_size_down=1500, mode="exp_range", gamma=0.999),
    ops.Cyclic(base_value=1e-4, max_value=1e-2, step_size_up=500),
    ops.WarmupStableDecay(peak_value=3e-4, warmup_steps=2000, stable_steps=50_000, decay_steps=10_000,
                          end_value=3e-5, decay_shape="1-sqrt"),
]


@pytest.mark.parametrize("schedule", CONFIGS, ids=lambda schedule: schedule.kind)
def test_config_round_trip(schedule):
    config = schedule.to_config()
    assert config["kind"] == schedule.kind
    assert "_cycles" not in config
    assert "_phases" not in config
    rebuilt = ops.from_config(config)
    assert rebuilt == schedule
    assert hash(rebuilt) == hash(schedule)
    assert ops.from_spec(ops.to_spec(schedule)) == schedule
    assert rebuilt(12345) == schedule(12345)


def test_from_spec_defaults():
    assert ops.from_spec("cyclic(base_value=0.1, max_value=1.0, step_size_up=4)") == ops.Cyclic(
        base_value=0.1, max_value=1.0, step_size_up=4, step_size_down=None, mode="triangular", gamma=1.0
    )
    assert ops.from_spec("one_cycle(max_value=0.1, total_steps=1e3)").total_steps == 1000
    assert ops.from_spec("wsd(peak_value=1, warmup_steps=1, stable_steps=2, decay_steps=3)").decay_shape == "linear"
    assert ops.from_spec("cosine_restarts(init_value=1, first_period=10)").period_mult == 1.0
