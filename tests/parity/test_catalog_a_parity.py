"""Parity of linear, polynomial, multistep, piecewise, inverse-time and inverse-sqrt schedules with live libraries.

optax schedules are evaluated in float32 on int32 step arrays and compared with
optstrat's float64 values, within optax's own float32 rounding. torch schedulers
are stepped through torch's loop next to ``optstrat_torch.ScheduleLR``. Keras
schedules run in a subprocess with ``KERAS_BACKEND=jax`` (see
``keras_catalog_a_cases.py``), because Keras picks its backend once per process.
Hugging Face is not a dependency, so ``inverse_sqrt`` is compared with
``get_inverse_sqrt_schedule``'s formula written out here and with the factors
that transformers 5.25.0 returned when it was run elsewhere.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import optstrat as ops

INT32_MAX = 2**31 - 1
FLOAT32_EPS = 2.0**-23
FLOAT32_TINY = float(np.finfo(np.float32).tiny)
RTOL = 1e-6
# optax runs on a fixed number of steps, so JAX reuses its compiled operations across examples.
STEP_COUNT = 40

levels = st.floats(-10.0, 10.0)
positive_levels = st.floats(1e-4, 10.0)
extra_steps = st.lists(st.integers(0, INT32_MAX), min_size=STEP_COUNT, max_size=STEP_COUNT)


def step_list(boundaries, extra):
    """Return STEP_COUNT steps: 0, each boundary b with b - 1 and b + 1, the int32 maximum, then ``extra``."""
    steps = [0, 1, INT32_MAX]
    for boundary in boundaries:
        steps += [boundary - 1, boundary, boundary + 1, 3 * boundary + 5]
    steps = [min(max(step, 0), INT32_MAX) for step in steps] + list(extra)
    return steps[:STEP_COUNT]


def assert_close(actual, expected, steps, tolerance, *, library):
    """Check |actual - expected| <= tolerance + the smallest normal float32, naming the worst step."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    error = np.abs(actual - expected)
    allowed = np.broadcast_to(np.asarray(tolerance, dtype=np.float64), error.shape) + FLOAT32_TINY
    worst = int(np.argmax(error - allowed))
    assert np.all(error <= allowed), (
        f"step {steps[worst]}: optstrat {actual[worst]!r}, {library} {expected[worst]!r}, "
        f"difference {error[worst]:.3g} exceeds {allowed[worst]:.3g}"
    )


# optax --------------------------------------------------------------------------------------------


def optax_values(schedule, steps, *, scalar_only=False):
    jax = pytest.importorskip("jax", reason="jax is not installed")
    jnp = jax.numpy
    counts = jnp.asarray(steps, dtype=jnp.int32)
    if scalar_only:
        schedule = jax.vmap(schedule)
    # optax returns init_value itself, not an array, when a piecewise schedule has no boundaries.
    values = jnp.broadcast_to(jnp.asarray(schedule(counts)), counts.shape)
    assert values.dtype == jnp.float32
    return np.asarray(values, dtype=np.float64)


@given(
    init_value=levels,
    end_value=levels,
    transition_steps=st.integers(1, 10**6),
    transition_begin=st.integers(0, 10**5),
    extra=extra_steps,
)
def test_linear_matches_optax_linear_schedule(init_value, end_value, transition_steps, transition_begin, extra):
    optax = pytest.importorskip("optax", reason="optax is not installed")
    schedule = ops.Linear(
        init_value=init_value, end_value=end_value, transition_steps=transition_steps, transition_begin=transition_begin
    )
    reference = optax.linear_schedule(init_value, end_value, transition_steps, transition_begin)
    steps = step_list([transition_begin, transition_begin + transition_steps], extra)

    expected = optax_values(reference, steps)
    actual = [schedule(step) for step in steps]

    # optax forms (init - end) * (1 - c / T) + end in float32: an error of a few
    # float32 ulps of the larger level, which this schedule does not have.
    scale = max(abs(init_value), abs(end_value))
    assert_close(actual, expected, steps, RTOL * np.abs(expected) + 4 * FLOAT32_EPS * scale, library="optax")


@given(
    init_value=levels,
    end_value=levels,
    power=st.floats(0.1, 5.0),
    transition_steps=st.integers(1, 10**6),
    transition_begin=st.integers(0, 10**5),
    extra=extra_steps,
)
def test_polynomial_matches_optax_polynomial_schedule(
    init_value, end_value, power, transition_steps, transition_begin, extra
):
    optax = pytest.importorskip("optax", reason="optax is not installed")
    schedule = ops.Polynomial(
        init_value=init_value,
        end_value=end_value,
        transition_steps=transition_steps,
        power=power,
        transition_begin=transition_begin,
    )
    reference = optax.polynomial_schedule(init_value, end_value, power, transition_steps, transition_begin)
    steps = step_list([transition_begin, transition_begin + transition_steps], extra)

    expected = optax_values(reference, steps)
    actual = [schedule(step) for step in steps]

    # optax's x = 1 - c / T is off by a few float32 ulps, and XLA may divide by
    # multiplying with a rounded 1 / T, so x can be 2**-24 instead of 0 at the end.
    # That moves x ** power by up to |(x +- shift) ** power - x ** power|, which is
    # large for power < 1 near the end. optstrat takes T - c on integers instead.
    done = np.clip(np.asarray(steps, dtype=np.float64) - transition_begin, 0, transition_steps)
    left = (transition_steps - done) / transition_steps
    shift = 4 * FLOAT32_EPS
    moved = np.maximum(
        np.abs((left + shift) ** power - left**power),
        np.abs(np.maximum(left - shift, 0.0) ** power - left**power),
    )
    scale = max(abs(init_value), abs(end_value))
    tolerance = RTOL * np.abs(expected) + 4 * FLOAT32_EPS * scale + abs(init_value - end_value) * moved
    assert_close(actual, expected, steps, tolerance, library="optax")


@given(
    init_value=positive_levels,
    boundaries_and_scales=st.dictionaries(st.integers(0, 10**6), st.floats(0.0, 2.0), max_size=6),
    extra=extra_steps,
)
def test_piecewise_constant_matches_optax_scales(init_value, boundaries_and_scales, extra):
    optax = pytest.importorskip("optax", reason="optax is not installed")
    boundaries = sorted(boundaries_and_scales)
    values = [init_value]
    for boundary in boundaries:
        values.append(values[-1] * boundaries_and_scales[boundary])
    schedule = ops.PiecewiseConstant(boundaries=boundaries, values=values)
    reference = optax.piecewise_constant_schedule(init_value, boundaries_and_scales)
    steps = step_list(boundaries, extra)

    expected = optax_values(reference, steps)
    actual = [schedule(step) for step in steps]

    # optax multiplies the scales in float32, one rounding per boundary.
    tolerance = (RTOL + len(boundaries) * FLOAT32_EPS) * np.abs(expected)
    assert_close(actual, expected, steps, tolerance, library="optax")


# Each example traces optax's schedule under jax.vmap anew, the slowest check here.
@settings(max_examples=15)
@given(
    init_value=positive_levels,
    # optax 0.2.8 piecewise_interpolate_schedule fails on an empty dict and on a step array, so
    # it gets at least one key and is mapped over the steps with jax.vmap.
    boundaries_and_scales=st.dictionaries(st.integers(1, 10**5), st.floats(0.01, 2.0), min_size=1, max_size=5),
    extra=extra_steps,
)
def test_piecewise_linear_matches_optax_linear_interpolation(init_value, boundaries_and_scales, extra):
    optax = pytest.importorskip("optax", reason="optax is not installed")
    keys = sorted(boundaries_and_scales)
    values = [init_value]
    for key in keys:
        values.append(values[-1] * boundaries_and_scales[key])
    schedule = ops.PiecewiseLinear(boundaries=[0, *keys], values=values)
    reference = optax.piecewise_interpolate_schedule("linear", init_value, boundaries_and_scales)
    steps = step_list(keys, extra)

    expected = optax_values(reference, steps, scalar_only=True)
    actual = [schedule(step) for step in steps]

    tolerance = RTOL * np.abs(expected) + (len(keys) + 4) * FLOAT32_EPS * max(values)
    assert_close(actual, expected, steps, tolerance, library="optax")


def test_zero_length_linear_rejected():
    optax = pytest.importorskip("optax", reason="optax is not installed")

    # optax gives init_value forever for transition_steps=0; optstrat raises instead.
    assert float(optax.linear_schedule(1.0, 0.0, 0)(5)) == 1.0
    with pytest.raises(ValueError, match="transition_steps must be a positive integer, got 0"):
        ops.Linear(init_value=1.0, end_value=0.0, transition_steps=0)


# torch --------------------------------------------------------------------------------------------

TORCH_RTOL = 1e-9


def torch_curves(build_reference, schedule, lr, steps):
    """Return the learning rates of ``steps`` updates under ScheduleLR(relative) and a torch scheduler."""
    torch = pytest.importorskip("torch", reason="torch is not installed")
    optstrat_torch = pytest.importorskip("optstrat_torch", reason="optstrat_torch is not importable")

    ours = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    theirs = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    schedulers = [optstrat_torch.ScheduleLR(ours, schedule, relative=True), build_reference(theirs)]
    curves = ([], [])
    for _ in range(steps):
        for curve, scheduler in zip(curves, schedulers):
            curve.append(scheduler.optimizer.param_groups[0]["lr"])
            scheduler.optimizer.step()
            scheduler.step()
    return curves


def assert_curves_close(ours, theirs, scale):
    for step, (our_lr, their_lr) in enumerate(zip(ours, theirs)):
        assert math.isclose(our_lr, their_lr, rel_tol=TORCH_RTOL, abs_tol=TORCH_RTOL * scale), (
            f"step {step}: optstrat {our_lr!r}, torch {their_lr!r}"
        )


@given(
    lr=positive_levels,
    start_factor=st.floats(1e-3, 1.0),
    end_factor=st.floats(0.0, 1.0),
    total_iters=st.integers(1, 40),
    steps=st.integers(1, 90),
)
def test_linear_matches_torch_linear_lr(lr, start_factor, end_factor, total_iters, steps):
    from torch.optim.lr_scheduler import LinearLR

    schedule = ops.Linear(init_value=start_factor, end_value=end_factor, transition_steps=total_iters)

    ours, theirs = torch_curves(
        lambda optimizer: LinearLR(optimizer, start_factor, end_factor, total_iters), schedule, lr, steps
    )

    assert_curves_close(ours, theirs, lr)


@given(
    lr=positive_levels,
    total_iters=st.integers(1, 40),
    power=st.floats(0.1, 5.0),
    steps=st.integers(1, 90),
)
def test_polynomial_matches_torch_polynomial_lr(lr, total_iters, power, steps):
    from torch.optim.lr_scheduler import PolynomialLR

    schedule = ops.Polynomial(init_value=1.0, end_value=0.0, transition_steps=total_iters, power=power)

    ours, theirs = torch_curves(lambda optimizer: PolynomialLR(optimizer, total_iters, power), schedule, lr, steps)

    assert_curves_close(ours, theirs, lr)


@given(
    lr=positive_levels,
    milestones=st.lists(st.integers(0, 60), max_size=6),
    gamma=st.floats(0.01, 2.0),
    steps=st.integers(1, 90),
)
def test_multistep_matches_torch_multistep_lr(lr, milestones, gamma, steps):
    from torch.optim.lr_scheduler import MultiStepLR

    # torch takes milestones in any order and compounds repeats; optstrat wants them sorted.
    schedule = ops.MultiStep(init_value=1.0, boundaries=sorted(milestones), decay_rate=gamma)

    ours, theirs = torch_curves(lambda optimizer: MultiStepLR(optimizer, milestones, gamma), schedule, lr, steps)

    assert_curves_close(ours, theirs, lr)


def test_torch_multistep_duplicates_compound():
    schedule = ops.MultiStep(init_value=1.0, boundaries=[2, 5, 5], decay_rate=0.1)
    from torch.optim.lr_scheduler import MultiStepLR

    ours, theirs = torch_curves(lambda optimizer: MultiStepLR(optimizer, [5, 2, 5], 0.1), schedule, 1.0, 8)

    assert_curves_close(ours, theirs, 1.0)
    assert theirs[5] == pytest.approx(1e-3)


def test_torch_linear_lr_cannot_start_at_zero():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)

    # The same ramp from 0 exists in optstrat; torch's LinearLR rejects start_factor=0.
    with pytest.raises(ValueError):
        torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.0, total_iters=4)
    assert ops.Linear(init_value=0.0, end_value=1.0, transition_steps=4)(1) == 0.25


# Keras (subprocess) ---------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
KERAS_CASES = Path(__file__).with_name("keras_catalog_a_cases.py").relative_to(ROOT)
# A guard against a hung subprocess, not a performance target: the run takes well under a minute.
KERAS_TIMEOUT_SECONDS = 600


def test_keras_schedules_in_subprocess():
    for module in ("keras", "jax"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")

    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, "-m", "pytest", str(KERAS_CASES), "-q", "-p", "no:cacheprovider"]
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=KERAS_TIMEOUT_SECONDS, check=False
    )

    output = f"{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, f"KERAS_BACKEND=jax {' '.join(command)} failed:\n{output}"
    assert " passed" in result.stdout, output


# Hugging Face inverse square root -------------------------------------------------------------------------


def hugging_face_inverse_sqrt(step, warmup_steps, timescale):
    """The factor of transformers' get_inverse_sqrt_schedule, from its definition."""
    if timescale is None:
        timescale = warmup_steps or 10_000
    if step < warmup_steps:
        return float(step) / float(max(1, warmup_steps))
    shift = timescale - warmup_steps
    return 1.0 / math.sqrt((step + shift) / timescale)


@given(
    peak_value=positive_levels,
    warmup_steps=st.integers(0, 10_000),
    timescale=st.one_of(st.none(), st.integers(1, 10**6)),
    extra=extra_steps,
)
def test_inverse_sqrt_matches_hugging_face_formula(peak_value, warmup_steps, timescale, extra):
    schedule = ops.InverseSqrt(peak_value=peak_value, warmup_steps=warmup_steps, timescale=timescale)
    steps = step_list([warmup_steps], extra)

    actual = [schedule(step) for step in steps]
    expected = [peak_value * hugging_face_inverse_sqrt(step, warmup_steps, timescale) for step in steps]

    np.testing.assert_allclose(actual, expected, rtol=1e-12)


def test_inverse_sqrt_hugging_face_anchor_values():
    # Factors of transformers 5.25.0 get_inverse_sqrt_schedule at steps 0, 1, 2, ..., rounded
    # to 6 digits, recorded where transformers was installed (it is not installed here).
    anchors = {
        4: [0.0, 0.25, 0.5, 0.75, 1.0, 0.894427, 0.816497, 0.755929, 0.707107],
        0: [1.0, 0.99995, 0.9999],
    }
    for warmup_steps, values in anchors.items():
        schedule = ops.InverseSqrt(peak_value=1.0, warmup_steps=warmup_steps)
        for step, value in enumerate(values):
            assert schedule(step) == pytest.approx(value, abs=5e-7), (warmup_steps, step)
            assert hugging_face_inverse_sqrt(step, warmup_steps, None) == pytest.approx(value, abs=5e-7)
