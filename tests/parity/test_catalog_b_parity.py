"""Parity of cosine_restarts, one_cycle, cyclic and wsd with the live framework objects they reproduce.

References are computed by the real libraries over random parameters:
torch.optim.lr_scheduler (float64, stepped through torch's loop), Optax
(float32, under ``jax.vmap``) and Keras 3 (float32, in a subprocess with
``KERAS_BACKEND=jax`` because Keras fixes its backend when imported). Hugging
Face transformers is not a dependency, so ``get_wsd_schedule`` is written out
below from its source and checked against its published anchors. Each
library's known difference is a test of its own.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import optstrat as ops  # noqa: E402

lr_scheduler = torch.optim.lr_scheduler

# torch and the oracles compute in float64; 1 + cos cancels near a cycle's end, hence an absolute part.
RTOL = 1e-9
# Optax and Keras compute in float32.
FLOAT32_RTOL = 2e-5

lrs = st.floats(min_value=1e-4, max_value=10.0)


def make_optimizer(lr):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def torch_curve(scheduler, steps):
    """Return the learning rate of the first ``steps`` updates in torch's loop.

    The scheduler is stepped ``steps - 1`` times, so it never computes the value
    of an update that is not recorded.
    """
    curve = [scheduler.optimizer.param_groups[0]["lr"]]
    for _ in range(steps - 1):
        scheduler.optimizer.step()
        scheduler.step()
        curve.append(scheduler.optimizer.param_groups[0]["lr"])
    return curve


def curve_of(schedule, steps):
    """Return ``schedule`` at steps 0 to ``steps - 1``, from one call on a NumPy array."""
    return np.asarray(schedule(np.arange(steps))).tolist()


def assert_close(ours, reference, *, rtol, scale):
    assert len(ours) == len(reference)
    for step, (our_value, reference_value) in enumerate(zip(ours, reference)):
        assert math.isclose(our_value, reference_value, rel_tol=rtol, abs_tol=rtol * scale), (
            f"step {step}: optstrat {our_value!r}, reference {reference_value!r}"
        )


# torch --------------------------------------------------------------------------------------------


@given(
    lr=lrs,
    end_fraction=st.floats(0.0, 1.0),
    first_period=st.integers(1, 15),
    period_mult=st.integers(1, 3),
    steps=st.integers(1, 150),
)
def test_cosine_restarts_matches_cosine_annealing_warm_restarts(lr, end_fraction, first_period, period_mult, steps):
    end_value = lr * end_fraction
    scheduler = lr_scheduler.CosineAnnealingWarmRestarts(
        make_optimizer(lr), T_0=first_period, T_mult=period_mult, eta_min=end_value
    )
    schedule = ops.CosineRestarts(
        init_value=lr, first_period=first_period, period_mult=float(period_mult), end_value=end_value
    )

    reference = torch_curve(scheduler, steps)
    assert_close(curve_of(schedule, steps), reference, rtol=RTOL, scale=lr)


def test_cosine_annealing_warm_restarts_rejects_fractional_period_mult():
    # Known difference: torch takes only an integer T_mult; cosine_restarts takes any
    # period_mult >= 1 with Keras' cycle lengths (checked against Keras below).
    with pytest.raises(ValueError, match="Expected integer T_mult >= 1"):
        lr_scheduler.CosineAnnealingWarmRestarts(make_optimizer(1.0), T_0=3, T_mult=1.5)
    assert ops.CosineRestarts(init_value=1.0, first_period=3, period_mult=1.5)(3) == 1.0


@given(
    max_lr=lrs,
    total_steps=st.integers(1, 300),
    pct_start=st.floats(0.0, 1.0),
    div_factor=st.floats(1.0, 100.0),
    final_div_factor=st.floats(1.0, 1e5),
    anneal=st.sampled_from(["cos", "linear"]),
    three_phase=st.booleans(),
)
def test_one_cycle_matches_one_cycle_lr(max_lr, total_steps, pct_start, div_factor, final_div_factor, anneal, three_phase):
    # torch divides by zero when pct_start * total_steps == 1 (see the known-difference test).
    assume(float(pct_start * total_steps) != 1.0)
    scheduler = lr_scheduler.OneCycleLR(
        make_optimizer(max_lr),
        max_lr=max_lr,
        total_steps=total_steps,
        pct_start=pct_start,
        anneal_strategy=anneal,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        three_phase=three_phase,
        cycle_momentum=False,
    )
    schedule = ops.OneCycle(
        max_value=max_lr,
        total_steps=total_steps,
        pct_start=pct_start,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        anneal=anneal,
        three_phase=three_phase,
    )

    # Steps 0 to total_steps - 1: torch raises two steps later (see below).
    reference = torch_curve(scheduler, total_steps)
    assert_close(curve_of(schedule, total_steps), reference, rtol=RTOL, scale=max_lr)


def test_one_cycle_lr_past_total_steps():
    scheduler = lr_scheduler.OneCycleLR(make_optimizer(1.0), max_lr=1.0, total_steps=10, cycle_momentum=False)
    schedule = ops.OneCycle(max_value=1.0, total_steps=10)
    torch_curve(scheduler, 10)
    scheduler.optimizer.step()
    scheduler.step()

    # Known difference: at t = total_steps torch continues the last cosine past its end
    # (0.049519, the value of t = 8 mirrored), but one_cycle stays at the minimum.
    assert scheduler.optimizer.param_groups[0]["lr"] == pytest.approx(schedule(8), rel=RTOL)
    assert schedule(10) == schedule(9) == pytest.approx(4e-6, rel=RTOL)
    # One more step raises in torch, and one_cycle still gives the minimum.
    scheduler.optimizer.step()
    with pytest.raises(ValueError, match="Tried to step 11 times"):
        scheduler.step()
    assert schedule(11) == schedule(9)


def test_one_cycle_lr_empty_warmup():
    # Known difference: pct_start * total_steps == 1 gives a warmup of length 0 that contains
    # step 0. torch computes 0 / 0 there, and one_cycle gives the warmup's end value.
    with pytest.raises(ZeroDivisionError):
        lr_scheduler.OneCycleLR(make_optimizer(1.0), max_lr=1.0, total_steps=4, pct_start=0.25, cycle_momentum=False)
    assert ops.OneCycle(max_value=1.0, total_steps=4, pct_start=0.25)(0) == 1.0


@given(
    base_lr=st.floats(0.0, 1.0),
    amplitude=lrs,
    up=st.integers(1, 30),
    down=st.one_of(st.none(), st.integers(0, 30)),
    mode=st.sampled_from(["triangular", "triangular2", "exp_range"]),
    gamma=st.floats(0.5, 1.0),
    steps=st.integers(1, 200),
)
def test_cyclic_matches_cyclic_lr(base_lr, amplitude, up, down, mode, gamma, steps):
    max_lr = base_lr + amplitude
    scheduler = lr_scheduler.CyclicLR(
        make_optimizer(max_lr),
        base_lr=base_lr,
        max_lr=max_lr,
        step_size_up=up,
        step_size_down=down,
        mode=mode,
        gamma=gamma,
        cycle_momentum=False,
    )
    schedule = ops.Cyclic(
        base_value=base_lr, max_value=max_lr, step_size_up=up, step_size_down=down, mode=mode, gamma=gamma
    )

    reference = torch_curve(scheduler, steps)
    assert_close(curve_of(schedule, steps), reference, rtol=RTOL, scale=max_lr)


def test_cyclic_lr_divides_by_zero_without_a_rise():
    # Known difference: step_size_up=0 makes torch compute 0 / 0 at every cycle start;
    # cyclic starts each cycle at max_value.
    with pytest.raises(ZeroDivisionError):
        lr_scheduler.CyclicLR(
            make_optimizer(1.0), base_lr=0.1, max_lr=1.0, step_size_up=0, step_size_down=4, cycle_momentum=False
        )
    schedule = ops.Cyclic(base_value=0.1, max_value=1.0, step_size_up=0, step_size_down=4)
    assert [schedule(t) for t in range(5)] == pytest.approx([1.0, 0.775, 0.55, 0.325, 1.0])


# Keras --------------------------------------------------------------------------------------------

KERAS_WORKER = """
import json, sys
import numpy as np
import keras

for line in sys.stdin:
    request = json.loads(line)
    schedule = keras.optimizers.schedules.CosineDecayRestarts(**request["arguments"])
    values = schedule(np.asarray(request["steps"], dtype="int64"))
    print(json.dumps([float(value) for value in np.asarray(values)]), flush=True)
"""


@pytest.fixture(scope="module")
def keras_restarts():
    """Return a function that evaluates keras CosineDecayRestarts in a live Keras process (JAX backend)."""
    pytest.importorskip("keras")
    environment = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    with tempfile.TemporaryFile(mode="w+") as log:
        worker = subprocess.Popen(
            [sys.executable, "-c", KERAS_WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=environment,
        )

        def evaluate(arguments, steps):
            worker.stdin.write(json.dumps({"arguments": arguments, "steps": list(steps)}) + "\n")
            worker.stdin.flush()
            line = worker.stdout.readline()
            if not line:
                log.seek(0)
                pytest.fail(f"the Keras worker exited with code {worker.wait()}:\n{log.read()}")
            return json.loads(line)

        try:
            yield evaluate
        finally:
            worker.stdin.close()
            worker.wait(timeout=60)
            worker.stdout.close()


def steps_next_to_restarts(first_period, period_mult, limit):
    """Return {step: cycle index} for the integer steps within 1e-4 relative of a real cycle start."""
    near, start, length, index = {}, Fraction(0), Fraction(first_period), 0
    while start <= limit:
        tolerance = 1e-4 * max(float(start), 1.0)
        for step in range(math.floor(start - tolerance), math.ceil(start + tolerance) + 1):
            if step >= 0 and abs(step - start) <= tolerance:
                near[step] = index
        start, length, index = start + length, length * Fraction(period_mult), index + 1
    return near


@settings(max_examples=20)
@given(
    init_value=lrs,
    first_period=st.integers(1, 20),
    # Multiples of 1/64 are exact in float32, so Keras and optstrat use the same multiplier.
    period_mult=st.one_of(st.just(1.0), st.integers(64, 256).map(lambda k: k / 64)),
    value_mult=st.floats(0.0, 1.0),
    alpha=st.floats(0.0, 0.5),
)
def test_cosine_restarts_matches_keras(keras_restarts, init_value, first_period, period_mult, value_mult, alpha):
    end_value = alpha * init_value
    schedule = ops.CosineRestarts(
        init_value=init_value,
        first_period=first_period,
        period_mult=period_mult,
        value_mult=value_mult,
        end_value=end_value,
    )
    steps = list(range(400))
    reference = keras_restarts(
        {
            "initial_learning_rate": init_value,
            "first_decay_steps": first_period,
            "t_mul": period_mult,
            "m_mul": value_mult,
            "alpha": alpha,
        },
        steps,
    )

    ours = curve_of(schedule, len(steps))
    near_restarts = steps_next_to_restarts(first_period, period_mult, steps[-1])
    for step, keras_value in zip(steps, reference):
        accepted = [ours[step]]
        # Known difference: Keras finds the cycle with a float32 logarithm, so within
        # about 1e-4 of a real restart it may still be in the previous cycle (near
        # end_value) or already in the next one (near that cycle's peak).
        if step in near_restarts:
            index = near_restarts[step]
            accepted += [end_value, end_value + (init_value - end_value) * value_mult**index]
        assert any(
            math.isclose(keras_value, value, rel_tol=FLOAT32_RTOL, abs_tol=FLOAT32_RTOL * init_value)
            for value in accepted
        ), f"step {step}: Keras {keras_value!r}, optstrat {accepted[0]!r}"


def test_cosine_restarts_keras_anchors(keras_restarts):
    arguments = {"initial_learning_rate": 1.0, "first_decay_steps": 3, "t_mul": 1.0, "m_mul": 0.5, "alpha": 0.1}
    reference = keras_restarts(arguments, range(8))
    schedule = ops.CosineRestarts(init_value=1.0, first_period=3, value_mult=0.5, end_value=0.1)
    assert_close([schedule(t) for t in range(8)], reference, rtol=FLOAT32_RTOL, scale=1.0)
    assert reference == pytest.approx([1, 0.775, 0.325, 0.55, 0.4375, 0.2125, 0.325, 0.26875], abs=1e-6)


# Optax --------------------------------------------------------------------------------------------


# Every example evaluates Optax on the same grid of steps, so JAX compiles each operation once.
OPTAX_GRID = 512


def optax_values(schedule, steps):
    jax = pytest.importorskip("jax")
    grid = np.asarray(jax.vmap(schedule)(jax.numpy.arange(OPTAX_GRID)))
    return [float(grid[step]) for step in steps]


@given(
    init_value=lrs,
    end_fraction=st.floats(0.0, 0.9),
    first_period=st.integers(1, 10),
    period_mult=st.integers(1, 3),
    value_mult=st.floats(0.0, 1.0),
    cycles=st.integers(1, 4),
)
def test_cosine_restarts_matches_optax_sgdr(init_value, end_fraction, first_period, period_mult, value_mult, cycles):
    optax = pytest.importorskip("optax")
    end_value = init_value * end_fraction
    schedule = ops.CosineRestarts(
        init_value=init_value,
        first_period=first_period,
        period_mult=float(period_mult),
        value_mult=value_mult,
        end_value=end_value,
    )
    # sgdr joins warmup_cosine_decay_schedule pieces; with no warmup each piece is cycle k.
    pieces = []
    for index in range(cycles):
        peak = end_value + (init_value - end_value) * value_mult**index
        length = first_period * period_mult**index
        pieces.append(
            {"init_value": peak, "peak_value": peak, "warmup_steps": 0, "decay_steps": length, "end_value": end_value}
        )
    reference = optax.sgdr_schedule(pieces)
    steps = list(range(sum(piece["decay_steps"] for piece in pieces)))

    assert_close(curve_of(schedule, len(steps)), optax_values(reference, steps), rtol=FLOAT32_RTOL, scale=init_value)


@given(
    peak_value=lrs,
    total_steps=st.integers(3, 200),
    peak_fraction=st.floats(0.0, 1.0),
    div_factor=st.floats(1.0, 100.0),
    final_div_factor=st.floats(1.0, 1e4),
)
def test_one_cycle_matches_optax_cosine_onecycle(peak_value, total_steps, peak_fraction, div_factor, final_div_factor):
    optax = pytest.importorskip("optax")
    # The peak at an integer step k in [1, total_steps - 2]: pct_start * total_steps - 1 = k here,
    # floor(pct_start * transition_steps) = k in optax with transition_steps = total_steps - 1.
    peak_step = 1 + round(peak_fraction * (total_steps - 3))
    schedule = ops.OneCycle(
        max_value=peak_value,
        total_steps=total_steps,
        pct_start=(peak_step + 1) / total_steps,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
    )
    reference = optax.cosine_onecycle_schedule(
        transition_steps=total_steps - 1,
        peak_value=peak_value,
        pct_start=(peak_step + 0.5) / (total_steps - 1),
        div_factor=div_factor,
        final_div_factor=final_div_factor,
    )
    steps = list(range(total_steps + 3))

    assert_close(curve_of(schedule, len(steps)), optax_values(reference, steps), rtol=FLOAT32_RTOL, scale=peak_value)


@given(
    peak_value=lrs,
    total_steps=st.integers(5, 200),
    peak_fraction=st.floats(0.0, 1.0),
    div_factor=st.floats(1.0, 100.0),
    final_div_factor=st.floats(1.0, 1e4),
)
def test_one_cycle_matches_optax_linear_onecycle(peak_value, total_steps, peak_fraction, div_factor, final_div_factor):
    optax = pytest.importorskip("optax")
    # Three linear phases end at k, 2k and total_steps - 1, with 1 <= k and 2k <= total_steps - 2.
    peak_step = 1 + round(peak_fraction * ((total_steps - 2) // 2 - 1))
    schedule = ops.OneCycle(
        max_value=peak_value,
        total_steps=total_steps,
        pct_start=(peak_step + 1) / total_steps,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        anneal="linear",
        three_phase=True,
    )
    reference = optax.linear_onecycle_schedule(
        transition_steps=total_steps - 1,
        peak_value=peak_value,
        pct_start=(peak_step + 0.5) / (total_steps - 1),
        pct_final=(2 * peak_step + 0.5) / (total_steps - 1),
        div_factor=div_factor,
        final_div_factor=final_div_factor,
    )
    steps = list(range(total_steps + 3))

    assert_close(curve_of(schedule, len(steps)), optax_values(reference, steps), rtol=FLOAT32_RTOL, scale=peak_value)


@pytest.mark.parametrize(("total_steps", "pct_start"), [(10, 0.3), (20, 0.25), (100, 0.3), (8, 0.5)])
def test_optax_onecycle_is_one_step_later_than_torch(total_steps, pct_start):
    optax = pytest.importorskip("optax")
    # Known difference: with the same arguments optax peaks at floor(pct_start * T) and
    # ends at T, one step after torch's pct_start * T - 1 and T - 1, with a warmup one step
    # longer. So from the peak on, optax at t + 1 equals one_cycle at t.
    schedule = ops.OneCycle(max_value=1.0, total_steps=total_steps, pct_start=pct_start)
    reference = optax.cosine_onecycle_schedule(total_steps, 1.0, pct_start=pct_start)
    peak = max(round(pct_start * total_steps) - 1, 0)
    steps = list(range(peak, total_steps + 2))

    shifted = optax_values(reference, [step + 1 for step in steps])
    assert_close([schedule(t) for t in steps], shifted, rtol=FLOAT32_RTOL, scale=1.0)
    assert optax_values(reference, [0]) == pytest.approx([schedule(0)], rel=FLOAT32_RTOL)


# Hugging Face get_wsd_schedule ------------------------------------------------------------------------


def hf_wsd_factor(step, warmup, stable, decay, warmup_type, decay_type, min_lr_ratio, num_cycles=0.5):
    """Return the factor of transformers' _get_wsd_scheduler_lambda (transformers 5.x)."""
    if step < warmup:
        progress = float(step) / float(max(1, warmup))
        if warmup_type == "linear":
            factor = progress
        elif warmup_type == "cosine":
            factor = 0.5 * (1.0 - math.cos(math.pi * progress))
        else:
            factor = 1.0 - math.sqrt(1.0 - progress)
        return max(0.0, factor * (1.0 - min_lr_ratio) + min_lr_ratio)
    if step < warmup + stable:
        return 1.0
    if step < warmup + stable + decay:
        progress = float(step - warmup - stable) / float(max(1, decay))
        if decay_type == "linear":
            factor = 1.0 - progress
        elif decay_type == "cosine":
            factor = 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))
        else:
            factor = 1.0 - math.sqrt(progress)
        return max(0.0, factor * (1.0 - min_lr_ratio) + min_lr_ratio)
    return min_lr_ratio


@given(
    lr=lrs,
    warmup=st.integers(0, 50),
    stable=st.integers(0, 50),
    decay=st.integers(0, 50),
    min_lr_ratio=st.floats(0.0, 1.0),
    decay_type=st.sampled_from(["linear", "cosine", "1-sqrt"]),
)
def test_wsd_matches_hugging_face_formula(lr, warmup, stable, decay, min_lr_ratio, decay_type):
    schedule = ops.WarmupStableDecay(
        peak_value=lr,
        warmup_steps=warmup,
        stable_steps=stable,
        decay_steps=decay,
        init_value=min_lr_ratio * lr,
        end_value=min_lr_ratio * lr,
        decay_shape=decay_type,
    )
    steps = range(warmup + stable + decay + 5)
    reference = [lr * hf_wsd_factor(t, warmup, stable, decay, "linear", decay_type, min_lr_ratio) for t in steps]

    assert_close(curve_of(schedule, len(steps)), reference, rtol=RTOL, scale=lr)


def test_wsd_hugging_face_anchors():
    # get_wsd_schedule(W=2, D=2, num_training_steps=7, decay_type="linear", min_lr_ratio=0.1).
    warmup, decay, total = 2, 2, 7
    stable = total - warmup - decay
    reference = [hf_wsd_factor(t, warmup, stable, decay, "linear", "linear", 0.1) for t in range(9)]
    assert reference == pytest.approx([0.1, 0.55, 1, 1, 1, 1, 0.55, 0.1, 0.1])
    schedule = ops.WarmupStableDecay(
        peak_value=1.0, warmup_steps=warmup, stable_steps=stable, decay_steps=decay, init_value=0.1, end_value=0.1
    )
    assert_close([schedule(t) for t in range(9)], reference, rtol=RTOL, scale=1.0)

    # (W=2, D=2, S=1, warmup "cosine", decay "1-sqrt"): wsd has a linear warmup only,
    # which agrees with the cosine one at the midpoint of a 2-step warmup.
    reference = [hf_wsd_factor(t, 2, 1, 2, "cosine", "1-sqrt", 0.0) for t in range(7)]
    assert reference == pytest.approx([0, 0.5, 1, 1, 0.292893, 0, 0], abs=1e-6)
    schedule = ops.WarmupStableDecay(peak_value=1.0, warmup_steps=2, stable_steps=1, decay_steps=2, decay_shape="1-sqrt")
    assert_close([schedule(t) for t in range(7)], reference, rtol=RTOL, scale=1.0)
