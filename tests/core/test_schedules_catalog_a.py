"""Linear, polynomial, inverse-time, inverse-sqrt, multistep, piecewise, scale and clamp schedules.

Each kind is checked against an oracle written here from its formula, one step
at a time, with Python integers, ``fractions.Fraction`` and ``decimal``. The
steps are every boundary b - 1, b and b + 1, the end, far past it, 2**31 - 1
and a huge Python int. Step and exponential decay are checked the same way for
their float32 precision.
"""

from __future__ import annotations

import decimal
import math
import re
from fractions import Fraction

import numpy as np
import pytest

import optstrat
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
    Schedule,
    StepDecay,
)

INT32_MAX = 2**31 - 1
HUGE_STEP = 2**80


# Oracles: each takes the schedule's fields and one Python int step ---------------------------


# Decimal arithmetic with 40 significant digits: far more than float64 needs, so an oracle's own
# rounding never shows in a comparison at rtol 1e-12.
PRECISE = decimal.Context(prec=40, Emin=-10**9, Emax=10**9)


def exact(value: Fraction) -> float:
    return float(value)


def precise(value) -> decimal.Decimal:
    return PRECISE.create_decimal_from_float(value) if isinstance(value, float) else decimal.Decimal(value)


def linear_oracle(init_value, end_value, transition_steps, transition_begin, step):
    done = min(max(step - transition_begin, 0), transition_steps)
    start, end = Fraction(init_value), Fraction(end_value)
    return exact(start + (end - start) * Fraction(done, transition_steps))


def polynomial_oracle(init_value, end_value, transition_steps, power, transition_begin, cycle, step):
    elapsed = max(step - transition_begin, 0)
    if cycle:
        cycles = max(-(-elapsed // transition_steps), 1)
        cycle_end = transition_steps * cycles
    else:
        elapsed = min(elapsed, transition_steps)
        cycle_end = transition_steps
    left = PRECISE.divide(precise(cycle_end - elapsed), precise(cycle_end))
    shape = PRECISE.power(left, precise(power)) if left else decimal.Decimal(0)
    return float(precise(end_value) + (precise(init_value) - precise(end_value)) * shape)


def inverse_time_oracle(init_value, decay_rate, decay_steps, staircase, step):
    elapsed = Fraction(step // decay_steps) if staircase else Fraction(step, decay_steps)
    return exact(Fraction(init_value) / (1 + Fraction(decay_rate) * elapsed))


def inverse_sqrt_oracle(peak_value, warmup_steps, timescale, step):
    # Hugging Face get_inverse_sqrt_schedule: the factor, times the peak learning rate.
    if timescale is None:
        timescale = warmup_steps or 10_000
    if step < warmup_steps:
        factor = Fraction(step, max(1, warmup_steps))
        return exact(Fraction(peak_value) * factor)
    shifted = PRECISE.divide(precise(step + timescale - warmup_steps), precise(timescale))
    return float(precise(peak_value) / PRECISE.sqrt(shifted))


def multistep_oracle(init_value, boundaries, decay_rate, step):
    passed = sum(1 for boundary in boundaries if boundary <= step)
    return exact(Fraction(init_value) * Fraction(decay_rate) ** passed)


def piecewise_constant_oracle(boundaries, values, step):
    return values[sum(1 for boundary in boundaries if boundary <= step)]


def piecewise_linear_oracle(boundaries, values, step):
    if step <= boundaries[0]:
        return values[0]
    if step >= boundaries[-1]:
        return values[-1]
    index = max(i for i, boundary in enumerate(boundaries) if boundary <= step)
    start, stop = boundaries[index], boundaries[index + 1]
    low, high = Fraction(values[index]), Fraction(values[index + 1])
    return exact(low + (high - low) * Fraction(step - start, stop - start))


def step_decay_oracle(init_value, decay_rate, decay_steps, step):
    return float(precise(init_value) * PRECISE.power(precise(decay_rate), step // decay_steps))


def exponential_oracle(init_value, transition_steps, decay_rate, transition_begin, staircase, step):
    elapsed = max(step - transition_begin, 0)
    if staircase:
        exponent = precise(elapsed // transition_steps)
    else:
        exponent = PRECISE.divide(precise(elapsed), precise(transition_steps))
    return float(precise(init_value) * PRECISE.power(precise(decay_rate), exponent))


# Cases: a schedule, its oracle and the steps where its value changes shape ----------------------


_CASE_COUNTS: dict[str, int] = {}


def case(schedule, oracle, boundaries):
    steps = {0, 1, 2, INT32_MAX - 1, INT32_MAX}
    for boundary in boundaries:
        steps.update({boundary - 1, boundary, boundary + 1, 10 * boundary + 7})
    steps = sorted(step for step in steps if step >= 0)
    index = _CASE_COUNTS.get(schedule.kind, 0)
    _CASE_COUNTS[schedule.kind] = index + 1
    return pytest.param(schedule, oracle, steps, id=f"{schedule.kind}-{index}")


# Array tests pad their steps to one length, so JAX reuses the operations it compiled for
# an earlier case instead of compiling each one again for a new shape.
PADDED_LENGTH = 48


def int32_steps(steps):
    kept = [step for step in steps if step <= INT32_MAX]
    assert len(kept) <= PADDED_LENGTH
    return kept + [kept[-1]] * (PADDED_LENGTH - len(kept))


def evaluate_int32(schedule, xp, steps):
    """Return ``schedule`` at ``steps`` given as an int32 array of ``xp``, as float64 NumPy values."""
    values = schedule(xp.asarray(int32_steps(steps), dtype=xp.int32))
    return np.asarray(values, dtype=np.float64)[: len(steps)]


# Steps for the precision check: dense at the start and spread up to 2**31 - 1.
PRECISION_GRID = np.concatenate([np.arange(0, 1024), np.geomspace(1, INT32_MAX, 1024).astype(np.int64)])


def fields(**values):
    return values


LINEAR = [
    fields(init_value=1.0, end_value=0.0, transition_steps=4, transition_begin=2),
    fields(init_value=0.0, end_value=3e-4, transition_steps=2000, transition_begin=0),
    fields(init_value=0.25, end_value=1.0, transition_steps=1, transition_begin=0),
    fields(init_value=5.0, end_value=1e-3, transition_steps=3 * 10**9, transition_begin=10),
]
POLYNOMIAL = [
    fields(init_value=1.0, end_value=0.0, transition_steps=4, power=2.0, transition_begin=0, cycle=False),
    fields(init_value=1.0, end_value=0.1, transition_steps=1000, power=0.5, transition_begin=7, cycle=False),
    fields(init_value=0.0, end_value=1.0, transition_steps=10**6, power=3.0, transition_begin=0, cycle=False),
    fields(init_value=1.0, end_value=0.0, transition_steps=4, power=1.0, transition_begin=0, cycle=True),
    fields(init_value=2.0, end_value=1e-4, transition_steps=997, power=1.7, transition_begin=3, cycle=True),
    fields(init_value=2.0, end_value=0.0, transition_steps=2**31 + 5, power=2.0, transition_begin=0, cycle=True),
    fields(init_value=1.0, end_value=0.5, transition_steps=1, power=3.0, transition_begin=0, cycle=True),
]
INVERSE_TIME = [
    fields(init_value=1.0, decay_rate=0.5, decay_steps=2, staircase=False),
    fields(init_value=1.0, decay_rate=0.5, decay_steps=2, staircase=True),
    fields(init_value=3e-3, decay_rate=7.0, decay_steps=1000, staircase=False),
    fields(init_value=1.0, decay_rate=0.0, decay_steps=5, staircase=True),
]
INVERSE_SQRT = [
    fields(peak_value=1.0, warmup_steps=4, timescale=None),
    fields(peak_value=1.0, warmup_steps=0, timescale=None),
    fields(peak_value=5e-4, warmup_steps=4000, timescale=10_000),
    fields(peak_value=1.0, warmup_steps=1, timescale=1),
]
MULTISTEP = [
    fields(init_value=1.0, boundaries=(2, 5, 5), decay_rate=0.1),
    fields(init_value=0.1, boundaries=(0, 30, 80), decay_rate=0.5),
    fields(init_value=2.0, boundaries=(), decay_rate=0.3),
    fields(init_value=1.0, boundaries=(10, 20), decay_rate=0.0),
    fields(init_value=1.0, boundaries=(3, INT32_MAX), decay_rate=3.0),
]
PIECEWISE_CONSTANT = [
    fields(boundaries=(2, 4), values=(1.0, 0.5, 0.05)),
    fields(boundaries=(0,), values=(1.0, 0.25)),
    fields(boundaries=(), values=(0.7,)),
    fields(boundaries=(100, 2**40), values=(0.1, 0.01, 0.001)),
]
PIECEWISE_LINEAR = [
    fields(boundaries=(0, 4, 8), values=(1.0, 0.1, 0.001)),
    fields(boundaries=(3, 5), values=(0.0, 1.0)),
    fields(boundaries=(6,), values=(0.3,)),
    fields(boundaries=(10, 1000, 10**9), values=(0.0, 1.0, 0.25)),
]
STEP_DECAY = [
    fields(init_value=1.0, decay_rate=0.5, decay_steps=3),
    fields(init_value=1.0, decay_rate=0.97, decay_steps=1),
    fields(init_value=1.0, decay_rate=0.1, decay_steps=2**31 + 1),
]
EXPONENTIAL = [
    fields(init_value=1.0, transition_steps=2, decay_rate=0.5, transition_begin=0, staircase=False),
    fields(init_value=1.0, transition_steps=1, decay_rate=0.999, transition_begin=0, staircase=False),
    fields(init_value=1.0, transition_steps=7, decay_rate=1e-3, transition_begin=5, staircase=False),
    fields(init_value=1.0, transition_steps=10, decay_rate=0.1, transition_begin=0, staircase=True),
]


def bind(oracle, values):
    return lambda step: oracle(**values, step=step)


def clamp_oracle(inner, min_value, max_value):
    def oracle(step):
        value = inner(step)
        if min_value is not None:
            value = max(value, min_value)
        if max_value is not None:
            value = min(value, max_value)
        return value

    return oracle


CASES = (
    [case(Linear(**v), bind(linear_oracle, v), [v["transition_begin"], v["transition_begin"] + v["transition_steps"]]) for v in LINEAR]
    + [
        case(
            Polynomial(**v),
            bind(polynomial_oracle, v),
            [v["transition_begin"] + k * v["transition_steps"] for k in range(4)],
        )
        for v in POLYNOMIAL
    ]
    + [case(InverseTime(**v), bind(inverse_time_oracle, v), [v["decay_steps"], 3 * v["decay_steps"]]) for v in INVERSE_TIME]
    + [case(InverseSqrt(**v), bind(inverse_sqrt_oracle, v), [v["warmup_steps"]]) for v in INVERSE_SQRT]
    + [case(MultiStep(**v), bind(multistep_oracle, v), v["boundaries"]) for v in MULTISTEP]
    + [case(PiecewiseConstant(**v), bind(piecewise_constant_oracle, v), v["boundaries"]) for v in PIECEWISE_CONSTANT]
    + [case(PiecewiseLinear(**v), bind(piecewise_linear_oracle, v), v["boundaries"]) for v in PIECEWISE_LINEAR]
    + [case(StepDecay(**v), bind(step_decay_oracle, v), [v["decay_steps"], 5 * v["decay_steps"]]) for v in STEP_DECAY]
    + [
        case(ExponentialDecay(**v), bind(exponential_oracle, v), [v["transition_begin"], 40 * v["transition_steps"]])
        for v in EXPONENTIAL
    ]
    + [
        case(
            Scale(schedule=Linear(**LINEAR[0]), factor=-2.5),
            lambda step: -2.5 * linear_oracle(**LINEAR[0], step=step),
            [2, 6],
        ),
        case(
            Scale(schedule=InverseTime(**INVERSE_TIME[2]), factor=0.0),
            lambda step: 0.0,
            [1000],
        ),
        case(
            Clamp(schedule=InverseTime(**INVERSE_TIME[0]), min_value=0.3),
            clamp_oracle(bind(inverse_time_oracle, INVERSE_TIME[0]), 0.3, None),
            [2, 4, 8],
        ),
        case(
            Clamp(schedule=PiecewiseLinear(**PIECEWISE_LINEAR[3]), min_value=0.3, max_value=0.75),
            clamp_oracle(bind(piecewise_linear_oracle, PIECEWISE_LINEAR[3]), 0.3, 0.75),
            [10, 760, 1000, 10**8],
        ),
    ]
)


# Values against the oracles ---------------------------------------------------------------------


@pytest.mark.parametrize(("schedule", "oracle", "steps"), CASES)
def test_python_steps_match_oracle(schedule, oracle, steps):
    for step in steps:
        assert schedule(step) == pytest.approx(oracle(step), rel=1e-12, abs=1e-300), step


@pytest.mark.parametrize(("schedule", "oracle", "steps"), CASES)
def test_huge_python_step_matches_oracle(schedule, oracle, steps):
    value = schedule(HUGE_STEP)
    assert value == pytest.approx(oracle(HUGE_STEP), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("schedule", "oracle", "steps"), CASES)
def test_int32_arrays_match_oracle(schedule, oracle, steps, xp):
    steps = int32_steps(steps)
    values = schedule(xp.asarray(steps, dtype=xp.int32))
    float_dtype = xp.asarray(0.0).dtype

    assert values.shape == (len(steps),)
    assert values.dtype == float_dtype
    rtol = 1e-6 if float_dtype == xp.float32 else 1e-12
    expected = [oracle(step) for step in steps]
    np.testing.assert_allclose(np.asarray(values, dtype=np.float64), expected, rtol=rtol, atol=1e-35)


@pytest.mark.parametrize(("schedule", "oracle", "steps"), CASES)
def test_zero_dim_int32_step_at_max(schedule, oracle, steps):
    value = schedule(np.asarray(INT32_MAX, dtype=np.int32))

    assert value.shape == ()
    assert float(value) == pytest.approx(oracle(INT32_MAX), rel=1e-12, abs=1e-300)


@pytest.mark.parametrize(("schedule", "oracle", "steps"), CASES)
def test_float32_precision_between_boundaries(schedule, oracle, steps):
    # PyTorch evaluates int32 steps in float32 (its default dtype) and, unlike JAX,
    # does not compile each operation for each new shape, so a dense grid is cheap.
    torch = pytest.importorskip("torch", reason="torch is not installed")

    grid = np.concatenate([PRECISION_GRID, int32_steps(steps)]).astype(np.int32)
    computed = schedule(torch.from_numpy(grid))
    assert computed.dtype == torch.float32
    values = computed.double().numpy()
    expected = np.asarray([oracle(int(step)) for step in grid])

    assert np.all(np.isfinite(values) | ~np.isfinite(expected))
    np.testing.assert_allclose(values, expected, rtol=1e-6, atol=1e-35)


@pytest.mark.parametrize(("schedule", "oracle", "steps"), CASES)
def test_jit_matches_oracle(schedule, oracle, steps):
    jax = pytest.importorskip("jax", reason="jax is not installed")
    steps = int32_steps(steps)

    values = jax.jit(schedule)(jax.numpy.asarray(steps, dtype=jax.numpy.int32))

    expected = [oracle(step) for step in steps]
    np.testing.assert_allclose(np.asarray(values, dtype=np.float64), expected, rtol=1e-6, atol=1e-35)


# Documented values at the edges -------------------------------------------------------------------


def test_anchor_values():
    def values(schedule, count):
        return [round(schedule(step), 6) for step in range(count)]

    assert values(Linear(init_value=1.0, end_value=0.0, transition_steps=4, transition_begin=2), 9) == [
        1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0, 0.0
    ]
    assert values(Polynomial(init_value=1.0, end_value=0.0, transition_steps=4, cycle=True), 10) == [
        1.0, 0.75, 0.5, 0.25, 0.0, 0.375, 0.25, 0.125, 0.0, 0.25
    ]
    assert values(MultiStep(init_value=1.0, boundaries=[2, 5, 5], decay_rate=0.1), 8) == [
        1.0, 1.0, 0.1, 0.1, 0.1, 0.001, 0.001, 0.001
    ]
    assert values(InverseTime(init_value=1.0, decay_rate=0.5, decay_steps=2, staircase=True), 6) == [
        1.0, 1.0, 0.666667, 0.666667, 0.5, 0.5
    ]
    assert values(InverseSqrt(peak_value=1.0, warmup_steps=4), 9) == [
        0.0, 0.25, 0.5, 0.75, 1.0, 0.894427, 0.816497, 0.755929, 0.707107
    ]
    assert values(InverseSqrt(peak_value=1.0, warmup_steps=0), 3) == [1.0, 0.99995, 0.9999]


def test_ends_are_exact():
    linear = Linear(init_value=0.3, end_value=0.7, transition_steps=3, transition_begin=5)
    polynomial = Polynomial(init_value=0.3, end_value=0.7, transition_steps=3, power=2.5, transition_begin=5)

    for schedule in (linear, polynomial):
        assert schedule(5) == 0.3
        assert schedule(8) == 0.7
        assert schedule(10**6) == 0.7


def test_boundary_at_zero_applies_to_first_update():
    assert MultiStep(init_value=1.0, boundaries=[0, 0], decay_rate=0.5)(0) == 0.25
    assert PiecewiseConstant(boundaries=[0], values=[1.0, 0.25])(0) == 0.25
    assert PiecewiseLinear(boundaries=[0, 2], values=[4.0, 2.0])(0) == 4.0


def test_zero_rates_give_no_nan(xp):
    schedules = [
        StepDecay(init_value=1.0, decay_rate=0.0, decay_steps=3),
        MultiStep(init_value=1.0, boundaries=[2], decay_rate=0.0),
        InverseTime(init_value=1.0, decay_rate=0.0, decay_steps=1),
    ]
    steps = [0, 1, 2, 3, INT32_MAX]

    assert evaluate_int32(schedules[0], xp, steps).tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert evaluate_int32(schedules[1], xp, steps).tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert evaluate_int32(schedules[2], xp, steps).tolist() == [1.0] * 5


def test_growth_overflows_to_inf_without_nan(xp):
    growth = ExponentialDecay(init_value=1.0, transition_steps=1, decay_rate=2.0)
    steps = [0, 10, 2000, INT32_MAX]
    values = evaluate_int32(growth, xp, steps)

    np.testing.assert_allclose(values[:2], [1.0, 1024.0], rtol=1e-6)
    assert np.isposinf(values[2:]).all()
    assert growth(2000) == math.inf
    assert growth(np.asarray([0.0, 200.0, 5000.0], dtype=np.float32)).tolist() == [1.0, math.inf, math.inf]
    assert ExponentialDecay(init_value=0.0, transition_steps=1, decay_rate=2.0)(5000) == 0.0
    assert Scale(schedule=growth, factor=0.0)(5000) == 0.0
    assert evaluate_int32(Clamp(schedule=growth, max_value=8.0), xp, steps).tolist() == [1.0, 8.0, 8.0, 8.0]


def test_multistep_growth_levels_overflow_to_inf():
    schedule = MultiStep(init_value=1.0, boundaries=list(range(1, 700)), decay_rate=10.0)

    assert schedule(3) == pytest.approx(1000.0)
    assert schedule(699) == math.inf
    assert MultiStep(init_value=0.0, boundaries=list(range(1, 700)), decay_rate=10.0)(699) == 0.0


class NanSchedule(Schedule):
    """A schedule whose every value is nan, to see what the transforms do with it."""

    def _evaluate(self, step):
        return step.constant(math.nan)


def test_clamp_keeps_nan(xp):
    for clamp in (Clamp(schedule=NanSchedule(), min_value=0.1), Clamp(schedule=NanSchedule(), max_value=0.1)):
        assert np.isnan(evaluate_int32(clamp, xp, [0, 7])).all()
        assert math.isnan(clamp(3))


def test_divisor_past_int32_counts_no_decay(xp):
    schedule = StepDecay(init_value=1.0, decay_rate=0.5, decay_steps=2**31)
    polynomial = Polynomial(init_value=1.0, end_value=0.0, transition_steps=2**31, cycle=True)
    steps = [0, INT32_MAX]

    assert evaluate_int32(schedule, xp, steps).tolist() == [1.0, 1.0]
    np.testing.assert_allclose(evaluate_int32(polynomial, xp, steps), [1.0, 2.0**-31], rtol=1e-6)


def test_float_steps_keep_their_dtype(xp):
    steps = [0, 3, 7, 10**6]
    for schedule in (
        Polynomial(init_value=1.0, end_value=0.0, transition_steps=10, power=2.0, cycle=True),
        InverseSqrt(peak_value=1.0, warmup_steps=4),
        PiecewiseLinear(boundaries=[0, 4], values=[1.0, 0.0]),
        ExponentialDecay(init_value=1.0, transition_steps=3, decay_rate=0.5),
    ):
        values = schedule(xp.asarray(int32_steps(steps), dtype=xp.float32))
        assert values.dtype == xp.float32
        expected = [schedule(step) for step in int32_steps(steps)]
        np.testing.assert_allclose(np.asarray(values), expected, rtol=1e-6, atol=1e-35)


# Validation --------------------------------------------------------------------------------------

LINEAR_OK = dict(init_value=1.0, end_value=0.0, transition_steps=10)
POLYNOMIAL_OK = dict(init_value=1.0, end_value=0.0, transition_steps=10)
INVERSE_TIME_OK = dict(init_value=1.0, decay_rate=0.5, decay_steps=10)
INVERSE_SQRT_OK = dict(peak_value=1.0, warmup_steps=10)
MULTISTEP_OK = dict(init_value=1.0, boundaries=[5], decay_rate=0.1)
CONSTANT_OK = dict(boundaries=[5], values=[1.0, 0.5])
LINEAR_POINTS_OK = dict(boundaries=[0, 5], values=[1.0, 0.5])
INNER = Linear(**LINEAR_OK)

INVALID = [
    (Linear, LINEAR_OK, "init_value", "a", TypeError, "init_value must be a real number, got 'a' (str)"),
    (Linear, LINEAR_OK, "init_value", math.inf, ValueError, "init_value must be a finite number, got inf"),
    (Linear, LINEAR_OK, "end_value", math.nan, ValueError, "end_value must be a finite number, got nan"),
    (Linear, LINEAR_OK, "end_value", None, TypeError, "end_value must be a real number, got None (NoneType)"),
    (Linear, LINEAR_OK, "transition_steps", 0, ValueError, "transition_steps must be a positive integer, got 0"),
    (Linear, LINEAR_OK, "transition_steps", 2.5, TypeError, "transition_steps must be an integer, got 2.5 (float)"),
    (Linear, LINEAR_OK, "transition_begin", -1, ValueError, "transition_begin must be a non-negative integer, got -1"),
    (Polynomial, POLYNOMIAL_OK, "init_value", True, TypeError, "init_value must be a real number, got True (bool)"),
    (Polynomial, POLYNOMIAL_OK, "end_value", -math.inf, ValueError, "end_value must be a finite number, got -inf"),
    (Polynomial, POLYNOMIAL_OK, "transition_steps", -3, ValueError, "transition_steps must be a positive integer, got -3"),
    (Polynomial, POLYNOMIAL_OK, "power", 0.0, ValueError, "power must be a finite number > 0, got 0.0"),
    (Polynomial, POLYNOMIAL_OK, "power", -1, ValueError, "power must be a finite number > 0, got -1"),
    (Polynomial, POLYNOMIAL_OK, "transition_begin", -2, ValueError, "transition_begin must be a non-negative integer, got -2"),
    (Polynomial, POLYNOMIAL_OK, "cycle", 1, TypeError, "cycle must be True or False, got 1 (int)"),
    (InverseTime, INVERSE_TIME_OK, "init_value", "1", TypeError, "init_value must be a real number, got '1' (str)"),
    (InverseTime, INVERSE_TIME_OK, "decay_rate", -0.5, ValueError, "decay_rate must be a finite number >= 0, got -0.5"),
    (InverseTime, INVERSE_TIME_OK, "decay_steps", 0, ValueError, "decay_steps must be a positive integer, got 0"),
    (InverseTime, INVERSE_TIME_OK, "staircase", "yes", TypeError, "staircase must be True or False, got 'yes' (str)"),
    (InverseSqrt, INVERSE_SQRT_OK, "peak_value", math.nan, ValueError, "peak_value must be a finite number, got nan"),
    (InverseSqrt, INVERSE_SQRT_OK, "warmup_steps", -1, ValueError, "warmup_steps must be a non-negative integer, got -1"),
    (InverseSqrt, INVERSE_SQRT_OK, "timescale", 0, ValueError, "timescale must be a positive integer, got 0"),
    (InverseSqrt, INVERSE_SQRT_OK, "timescale", 0.5, TypeError, "timescale must be an integer, got 0.5 (float)"),
    (MultiStep, MULTISTEP_OK, "init_value", [1.0], TypeError, "init_value must be a real number, got [1.0] (list)"),
    (MultiStep, MULTISTEP_OK, "boundaries", [5, 2], ValueError, "boundaries must be non-decreasing, got [5, 2]"),
    (MultiStep, MULTISTEP_OK, "boundaries", [-1], ValueError, "boundaries[0] must be a non-negative integer, got -1"),
    (MultiStep, MULTISTEP_OK, "boundaries", [1, 2.5], TypeError, "boundaries[1] must be an integer, got 2.5 (float)"),
    (MultiStep, MULTISTEP_OK, "boundaries", 5, TypeError, "boundaries must be a list of numbers, got 5 (int)"),
    (MultiStep, MULTISTEP_OK, "decay_rate", -0.1, ValueError, "decay_rate must be a finite number >= 0, got -0.1"),
    (PiecewiseConstant, CONSTANT_OK, "boundaries", [5, 5], ValueError, "boundaries must be strictly increasing, got [5, 5]"),
    (PiecewiseConstant, CONSTANT_OK, "boundaries", "5", TypeError, "boundaries must be a list of numbers, got '5' (str)"),
    (PiecewiseConstant, CONSTANT_OK, "values", [1.0], ValueError, "values must have one item more than boundaries, got 1 values for 1 boundaries"),
    (PiecewiseConstant, CONSTANT_OK, "values", [1.0, math.inf], ValueError, "values[1] must be a finite number, got inf"),
    (PiecewiseConstant, CONSTANT_OK, "values", [], ValueError, "values must have at least 1 item, got []"),
    (PiecewiseLinear, LINEAR_POINTS_OK, "boundaries", [], ValueError, "boundaries must have at least 1 item, got []"),
    (PiecewiseLinear, LINEAR_POINTS_OK, "boundaries", [5, 0], ValueError, "boundaries must be strictly increasing, got [5, 0]"),
    (PiecewiseLinear, LINEAR_POINTS_OK, "boundaries", [-5, 0], ValueError, "boundaries[0] must be a non-negative integer, got -5"),
    (PiecewiseLinear, LINEAR_POINTS_OK, "values", [1.0, 0.5, 0.2], ValueError, "values must have as many items as boundaries, got 3 values for 2 boundaries"),
    (PiecewiseLinear, LINEAR_POINTS_OK, "values", [1.0, "x"], TypeError, "values[1] must be a real number, got 'x' (str)"),
    (Scale, dict(schedule=INNER, factor=2.0), "schedule", 1.0, TypeError, "schedule must be a schedule, got 1.0 (float)"),
    (Scale, dict(schedule=INNER, factor=2.0), "factor", math.nan, ValueError, "factor must be a finite number, got nan"),
    (Clamp, dict(schedule=INNER, min_value=0.1), "schedule", "linear", TypeError, "schedule must be a schedule, got 'linear' (str)"),
    (Clamp, dict(schedule=INNER, min_value=0.1), "min_value", math.inf, ValueError, "min_value must be a finite number, got inf"),
    (Clamp, dict(schedule=INNER, min_value=0.1), "max_value", "1", TypeError, "max_value must be a real number, got '1' (str)"),
    (Clamp, dict(schedule=INNER, min_value=0.1), "min_value", None, ValueError, "min_value or max_value must be given, got min_value=None and max_value=None"),
    (Clamp, dict(schedule=INNER, min_value=0.1), "max_value", 0.05, ValueError, "min_value must be <= max_value, got min_value=0.1 and max_value=0.05"),
]


@pytest.mark.parametrize(
    ("cls", "valid", "name", "bad", "error", "message"),
    INVALID,
    ids=[f"{cls.kind}-{name}-{bad!r}" for cls, _, name, bad, _, _ in INVALID],
)
def test_invalid_field_raises(cls, valid, name, bad, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        cls(**{**valid, name: bad})


def test_integers_become_floats():
    schedule = Polynomial(init_value=1, end_value=0, transition_steps=10.0, power=2)
    points = PiecewiseLinear(boundaries=[0, 1e3], values=[1, 0])

    assert type(schedule.init_value) is float
    assert type(schedule.end_value) is float
    assert type(schedule.power) is float
    assert type(schedule.transition_steps) is int
    assert points.boundaries == (0, 1000)
    assert [type(value) for value in points.values] == [float, float]
    assert type(Clamp(schedule=INNER, min_value=0).min_value) is float
    assert type(Scale(schedule=INNER, factor=3).factor) is float


# Config round trip --------------------------------------------------------------------------------

ROUND_TRIP = [
    Linear(init_value=1.0, end_value=0.0, transition_steps=4, transition_begin=2),
    Polynomial(init_value=2.0, end_value=1e-4, transition_steps=97, power=1.7, transition_begin=3, cycle=True),
    InverseTime(init_value=1.0, decay_rate=0.5, decay_steps=2, staircase=True),
    InverseSqrt(peak_value=1.0, warmup_steps=4),
    InverseSqrt(peak_value=1.0, warmup_steps=4, timescale=100),
    MultiStep(init_value=1.0, boundaries=[2, 5, 5], decay_rate=0.1),
    PiecewiseConstant(boundaries=[2, 4], values=[1.0, 0.5, 0.05]),
    PiecewiseLinear(boundaries=[0, 4, 8], values=[1.0, 0.1, 0.001]),
    Scale(schedule=MultiStep(init_value=1.0, boundaries=[3], decay_rate=0.5), factor=0.1),
    Clamp(schedule=InverseTime(init_value=1.0, decay_rate=1.0, decay_steps=1), min_value=0.2),
    Clamp(schedule=Scale(schedule=INNER, factor=2.0), max_value=1.5),
]


@pytest.mark.parametrize("schedule", ROUND_TRIP, ids=lambda schedule: schedule.kind)
def test_config_round_trip(schedule):
    config = schedule.to_config()
    rebuilt = optstrat.from_config(config)

    assert rebuilt == schedule
    assert hash(rebuilt) == hash(schedule)
    assert optstrat.from_spec(optstrat.to_spec(schedule)) == schedule
    np.testing.assert_array_equal(rebuilt(np.arange(12)), schedule(np.arange(12)))


def test_config_writes_every_field():
    assert InverseSqrt(peak_value=1, warmup_steps=4).to_config() == {
        "kind": "inverse_sqrt",
        "peak_value": 1.0,
        "warmup_steps": 4,
        "timescale": None,
    }
    assert Clamp(schedule=INNER, min_value=0.2).to_config() == {
        "kind": "clamp",
        "schedule": {
            "kind": "linear",
            "init_value": 1.0,
            "end_value": 0.0,
            "transition_steps": 10,
            "transition_begin": 0,
        },
        "min_value": 0.2,
        "max_value": None,
    }
    assert MultiStep(init_value=1, boundaries=(2, 5), decay_rate=0.5).to_config() == {
        "kind": "multistep",
        "init_value": 1.0,
        "boundaries": [2, 5],
        "decay_rate": 0.5,
    }


def test_from_spec_builds_each_kind():
    specs = {
        "linear(init_value=1, end_value=0, transition_steps=1e3)": Linear(
            init_value=1.0, end_value=0.0, transition_steps=1000
        ),
        "polynomial(init_value=1, end_value=0, transition_steps=10, power=2, cycle=True)": Polynomial(
            init_value=1.0, end_value=0.0, transition_steps=10, power=2.0, cycle=True
        ),
        "inverse_time(init_value=1, decay_rate=0.5, decay_steps=2)": InverseTime(
            init_value=1.0, decay_rate=0.5, decay_steps=2
        ),
        "inverse_sqrt(peak_value=1e-3, warmup_steps=100)": InverseSqrt(peak_value=1e-3, warmup_steps=100),
        "multistep(init_value=1, boundaries=[2, 5, 5], decay_rate=0.1)": MultiStep(
            init_value=1.0, boundaries=(2, 5, 5), decay_rate=0.1
        ),
        "piecewise_constant(boundaries=[2], values=[1, 0.5])": PiecewiseConstant(boundaries=(2,), values=(1.0, 0.5)),
        "piecewise_linear(boundaries=[0, 4], values=[1, 0])": PiecewiseLinear(boundaries=(0, 4), values=(1.0, 0.0)),
        "scale(schedule=linear(init_value=1, end_value=0, transition_steps=4), factor=0.5)": Scale(
            schedule=Linear(init_value=1.0, end_value=0.0, transition_steps=4), factor=0.5
        ),
        "clamp(schedule=inverse_time(init_value=1, decay_rate=1, decay_steps=1), min_value=0.1)": Clamp(
            schedule=InverseTime(init_value=1.0, decay_rate=1.0, decay_steps=1), min_value=0.1
        ),
    }
    for spec, expected in specs.items():
        assert optstrat.from_spec(spec) == expected, spec


def test_omitted_fields_take_defaults():
    schedule = optstrat.from_config({"kind": "polynomial", "init_value": 1.0, "end_value": 0.0, "transition_steps": 5})

    assert schedule.power == 1.0
    assert schedule.transition_begin == 0
    assert schedule.cycle is False
    assert optstrat.from_config({"kind": "inverse_sqrt", "peak_value": 1.0, "warmup_steps": 0}).effective_timescale == 10_000
