"""Properties of cosine_restarts, one_cycle, cyclic and wsd that hold for every valid parameter."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import optstrat as ops

INT32_MAX = 2**31 - 1

levels = st.floats(0.0, 10.0)
step_lists = st.lists(st.integers(0, 10**12), min_size=1, max_size=20)

restarts = st.builds(
    ops.CosineRestarts,
    init_value=levels,
    first_period=st.integers(1, 100),
    period_mult=st.one_of(st.just(1.0), st.floats(1.1, 4.0)),
    value_mult=st.floats(0.0, 1.0),
    end_value=levels,
)
one_cycles = st.builds(
    ops.OneCycle,
    max_value=st.floats(1e-3, 10.0),
    total_steps=st.integers(1, 10_000),
    pct_start=st.floats(0.0, 1.0),
    # div_factor > 1 so that the warmup rises: with 1 it is flat at max_value.
    div_factor=st.floats(1.5, 100.0),
    final_div_factor=st.floats(1.0, 1e4),
    anneal=st.sampled_from(["cos", "linear"]),
    three_phase=st.booleans(),
)
cyclics = st.builds(
    ops.Cyclic,
    base_value=levels,
    max_value=levels,
    step_size_up=st.integers(1, 1000),
    step_size_down=st.one_of(st.none(), st.integers(0, 1000)),
    mode=st.sampled_from(["triangular", "triangular2", "exp_range"]),
    gamma=st.floats(0.5, 1.0),
)
wsds = st.builds(
    ops.WarmupStableDecay,
    peak_value=levels,
    warmup_steps=st.integers(0, 1000),
    stable_steps=st.integers(0, 1000),
    decay_steps=st.integers(0, 1000),
    init_value=levels,
    end_value=levels,
    decay_shape=st.sampled_from(["linear", "cosine", "1-sqrt"]),
)


def value_range(schedule):
    if isinstance(schedule, ops.CosineRestarts):
        bounds = (schedule.init_value, schedule.end_value)
    elif isinstance(schedule, ops.OneCycle):
        initial = schedule.max_value / schedule.div_factor
        bounds = (schedule.max_value, initial, initial / schedule.final_div_factor)
    elif isinstance(schedule, ops.Cyclic):
        bounds = (schedule.base_value, schedule.max_value)
    else:
        bounds = (schedule.init_value, schedule.peak_value, schedule.end_value)
    return min(bounds), max(bounds)


@given(schedule=st.one_of(restarts, one_cycles, cyclics, wsds), steps=step_lists)
def test_values_stay_within_their_levels(schedule, steps):
    low, high = value_range(schedule)
    slack = 1e-12 * max(abs(low), abs(high), 1e-300)
    values = [schedule(step) for step in steps] + schedule(np.asarray(steps, dtype=np.int64)).tolist()
    for value in values:
        assert low - slack <= value <= high + slack


@given(schedule=st.one_of(restarts, one_cycles, cyclics, wsds), steps=step_lists)
def test_float32_steps_stay_within_their_levels(schedule, steps):
    torch = pytest.importorskip("torch")
    low, high = value_range(schedule)
    slack = 1e-6 * max(abs(low), abs(high), 1e-30)
    clipped = [min(step, INT32_MAX) for step in steps]
    values = schedule(torch.asarray(clipped, dtype=torch.int32))
    assert values.dtype == torch.float32
    assert bool(((values >= low - slack) & (values <= high + slack)).all())


# Continuity where phases meet ----------------------------------------------------------------------


@given(
    inner=st.one_of(restarts, one_cycles, cyclics, wsds),
    warmup_steps=st.integers(2, 500),
    init_value=levels,
)
def test_warmup_ends_where_the_schedule_starts(inner, warmup_steps, init_value):
    schedule = ops.Warmup(schedule=inner, warmup_steps=warmup_steps, init_value=init_value)
    end = schedule(warmup_steps)
    before, two_before = schedule(warmup_steps - 1), schedule(warmup_steps - 2)

    assert end == inner(0)
    # The ramp's next step would land exactly on the schedule's first value.
    assert before + (before - two_before) == pytest.approx(end, rel=1e-9, abs=1e-12)


@given(schedule=wsds)
def test_wsd_phases_meet(schedule):
    warmup, stable, decay = schedule.warmup_steps, schedule.stable_steps, schedule.decay_steps
    peak = schedule.peak_value

    if warmup >= 2:
        ramp = schedule(warmup - 1) + (schedule(warmup - 1) - schedule(warmup - 2))
        assert ramp == pytest.approx(peak, rel=1e-9, abs=1e-12)
    if warmup > 0:
        assert schedule(0) == schedule.init_value
    if decay > 0:
        # The decay starts at the peak whether or not there is a stable phase.
        assert schedule(warmup + stable) == pytest.approx(peak, rel=1e-12, abs=1e-15)
    assert schedule(warmup + stable + decay) == schedule.end_value


@given(schedule=one_cycles)
def test_one_cycle_step_changes_bounded(schedule):
    # Continuity: no step changes more than a phase of length >= 1 allows
    # (pi / 2 of its range per step for the cosine, its whole range for linear).
    shortest = min(phase.length for phase in schedule._phases)
    assume(shortest >= 1.0)
    _, high = value_range(schedule)
    steps = np.arange(schedule.total_steps + 2)
    values = schedule(steps)
    slope = (math.pi / 2 if schedule.anneal == "cos" else 1.0) * high / shortest
    assert np.all(np.abs(np.diff(values)) <= slope * (1 + 1e-9))


@given(schedule=one_cycles)
def test_one_cycle_peak_step(schedule):
    # The peak is at step pct_start * total_steps - 1, as in torch.
    peak = float(schedule.pct_start * schedule.total_steps) - 1
    values = schedule(np.arange(schedule.total_steps + 1))
    highest = int(np.argmax(values))

    if peak >= 0 and peak == math.floor(peak) and peak <= schedule.total_steps - 1:
        assert highest == int(peak)
        assert values[highest] == schedule.max_value
    else:
        # Between integer steps the peak falls on one of its two neighbours.
        candidates = {min(max(math.floor(peak), 0), schedule.total_steps - 1)}
        candidates.add(min(max(math.ceil(peak), 0), schedule.total_steps - 1))
        assert highest in candidates
        assert values[highest] <= schedule.max_value


@given(schedule=one_cycles, steps=step_lists)
def test_one_cycle_holds_after_the_last_step(schedule, steps):
    last = schedule(schedule.total_steps - 1)
    for step in steps:
        if step >= schedule.total_steps - 1:
            assert schedule(step) == last


# Restarts ------------------------------------------------------------------------------------------


# Eager JAX runs each of the ~150 operations of a 30-cycle schedule on its own, so fewer examples.
@settings(max_examples=15)
@given(
    first_period=st.integers(3, 1000),
    period_mult=st.integers(1, 4),
    value_mult=st.floats(0.5, 1.0),
)
def test_cosine_restarts_restart_at_integer_cycle_starts(first_period, period_mult, value_mult, xp):
    schedule = ops.CosineRestarts(
        init_value=1.0, first_period=first_period, period_mult=float(period_mult), value_mult=value_mult
    )
    starts, lengths = [], []
    start, length = 0, first_period
    while start <= INT32_MAX and len(starts) < 40:
        starts.append(start)
        lengths.append(length)
        start, length = start + length, length * period_mult
    # A fixed length of 40 steps keeps one array shape, so JAX compiles each operation once.
    padded = starts + [starts[-1]] * (40 - len(starts))

    values = schedule(xp.asarray(padded, dtype=xp.int32))
    before = schedule(xp.asarray([max(start - 1, 0) for start in padded], dtype=xp.int32))
    values = np.asarray(values, dtype=np.float64)[: len(starts)]
    before = np.asarray(before, dtype=np.float64)[: len(starts)]
    peaks = np.asarray([value_mult**index for index in range(len(starts))])
    np.testing.assert_allclose(values, peaks, rtol=1e-6)
    # One step before a restart is the end of the previous cycle, at most sin(pi / (2 L)) ** 2 of its peak.
    for index in range(1, len(starts)):
        ceiling = value_mult ** (index - 1) * math.sin(math.pi / (2 * lengths[index - 1])) ** 2
        assert before[index] <= ceiling * (1 + 1e-5) + 1e-12


@given(
    first_period=st.integers(3, 100),
    period_mult=st.floats(1.05, 3.0),
)
def test_cosine_restarts_with_fractional_cycles_restart_at_ceilings(first_period, period_mult):
    # The first step of cycle k is ceil(S(k)) for the real start S(k). One step earlier
    # lies in cycle k - 1, within one step of its end.
    schedule = ops.CosineRestarts(init_value=1.0, first_period=first_period, period_mult=period_mult)
    starts = [cycle.start for cycle in schedule._cycles[1:] if cycle.start <= 10**9]
    values = schedule(np.asarray(starts))
    before = schedule(np.asarray(starts) - 1)

    assert np.all(values > 0.5)
    assert np.all(before < 0.5)


# cyclic ------------------------------------------------------------------------------------------


@given(schedule=cyclics, steps=st.lists(st.integers(0, 10**6), min_size=1, max_size=20))
def test_cyclic_repeats_each_cycle(schedule, steps):
    period = schedule.step_size_up + (
        schedule.step_size_up if schedule.step_size_down is None else schedule.step_size_down
    )
    base = schedule.base_value
    for step in steps:
        now, later = schedule(step), schedule(step + period)
        if schedule.mode == "triangular":
            assert later == pytest.approx(now, rel=1e-12, abs=1e-15)
        elif schedule.mode == "triangular2":
            assert later - base == pytest.approx((now - base) / 2, rel=1e-9, abs=1e-15)
        else:
            scale = schedule.gamma**period
            assert later - base == pytest.approx((now - base) * scale, rel=1e-9, abs=1e-15)


@given(schedule=cyclics)
def test_cyclic_peaks_after_step_size_up(schedule):
    assert schedule(0) == schedule.base_value
    if schedule.mode != "exp_range":
        assert schedule(schedule.step_size_up) == pytest.approx(schedule.max_value, rel=1e-12)


# wsd ---------------------------------------------------------------------------------------------


@given(schedule=wsds, backend=st.sampled_from(["numpy", "torch"]))
def test_wsd_is_monotone_in_each_phase(schedule, backend):
    warmup, stable, decay = schedule.warmup_steps, schedule.stable_steps, schedule.decay_steps
    steps = np.arange(warmup + stable + decay + 3)
    if backend == "torch":
        torch = pytest.importorskip("torch")
        values = schedule(torch.asarray(steps, dtype=torch.int32)).numpy().astype(np.float64)
    else:
        values = schedule(steps)

    rising = np.diff(values[:warmup])
    falling = np.diff(values[warmup + stable :])
    if schedule.peak_value >= schedule.init_value:
        assert np.all(rising >= 0)
    else:
        assert np.all(rising <= 0)
    if stable:
        assert np.all(values[warmup : warmup + stable] == values[warmup])
    if schedule.peak_value >= schedule.end_value:
        assert np.all(falling <= 0)
    else:
        assert np.all(falling >= 0)
