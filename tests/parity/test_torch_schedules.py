"""Parity of ScheduleLR with live torch.optim.lr_scheduler objects stepped over random parameters.

Each test drives two identical optimizers, one with ScheduleLR and one with
the torch scheduler that the schedule's docstring names, through torch's loop
(``optimizer.step()``, then ``scheduler.step()``) and compares the learning
rate of every update. torch's schedulers compute each value from the previous
one, so values agree to rounding (``rtol=1e-9``), not bit for bit. Where
torch departs from optstrat, the test states how.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import optstrat as ops  # noqa: E402
from optstrat_torch import ScheduleLR  # noqa: E402
from tests.kind_examples import SCHEDULE_EXAMPLES  # noqa: E402

lr_scheduler = torch.optim.lr_scheduler

RTOL = 1e-9
base_lrs = st.floats(min_value=1e-4, max_value=10.0)


def make_optimizer(*group_lrs):
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in group_lrs]
    return torch.optim.SGD(groups)


def lr_curve(scheduler, steps):
    """Return the learning rates of the first ``steps`` updates, one list per update."""
    optimizer = scheduler.optimizer
    curve = []
    for _ in range(steps):
        curve.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return curve


def assert_curves_close(ours, reference, *, scale):
    assert len(ours) == len(reference)
    for step, (our_lrs, reference_lrs) in enumerate(zip(ours, reference)):
        for our_lr, reference_lr in zip(our_lrs, reference_lrs):
            assert math.isclose(our_lr, reference_lr, rel_tol=RTOL, abs_tol=RTOL * scale), (
                f"step {step}: ScheduleLR {our_lr!r}, torch {reference_lr!r}"
            )


@given(
    lr=base_lrs,
    decay_rate=st.floats(min_value=0.0, max_value=2.0),
    decay_steps=st.integers(min_value=1, max_value=20),
    steps=st.integers(min_value=1, max_value=80),
)
def test_step_decay_matches_step_lr(lr, decay_rate, decay_steps, steps):
    schedule = ops.StepDecay(init_value=lr, decay_rate=decay_rate, decay_steps=decay_steps)
    ours = lr_curve(ScheduleLR(make_optimizer(lr), schedule), steps)
    optimizer = make_optimizer(lr)
    reference = lr_curve(lr_scheduler.StepLR(optimizer, step_size=decay_steps, gamma=decay_rate), steps)

    assert_curves_close(ours, reference, scale=lr)


@given(
    lr=base_lrs,
    decay_rate=st.floats(min_value=0.01, max_value=1.5),
    steps=st.integers(min_value=1, max_value=100),
)
def test_exponential_decay_matches_exponential_lr(lr, decay_rate, steps):
    schedule = ops.ExponentialDecay(init_value=lr, transition_steps=1, decay_rate=decay_rate)
    ours = lr_curve(ScheduleLR(make_optimizer(lr), schedule), steps)
    optimizer = make_optimizer(lr)
    reference = lr_curve(lr_scheduler.ExponentialLR(optimizer, gamma=decay_rate), steps)

    assert_curves_close(ours, reference, scale=lr)


@given(
    lr=base_lrs,
    end_fraction=st.floats(min_value=0.0, max_value=2.0),
    decay_steps=st.integers(min_value=1, max_value=40),
)
def test_cosine_decay_matches_cosine_annealing_lr(lr, end_fraction, decay_steps):
    end_value = lr * end_fraction
    schedule = ops.CosineDecay(init_value=lr, decay_steps=decay_steps, end_value=end_value)
    steps = 2 * decay_steps + 1
    ours = lr_curve(ScheduleLR(make_optimizer(lr), schedule), steps)
    optimizer = make_optimizer(lr)
    reference = lr_curve(lr_scheduler.CosineAnnealingLR(optimizer, T_max=decay_steps, eta_min=end_value), steps)

    assert_curves_close(ours[: decay_steps + 1], reference[: decay_steps + 1], scale=lr)
    # Known difference past T_max: torch's cosine rises again, mirrored about T_max with
    # period 2 * T_max, while optstrat stays at end_value.
    for step in range(decay_steps + 1, steps):
        assert ours[step] == [end_value]
        mirrored = schedule(2 * decay_steps - step)
        assert math.isclose(reference[step][0], mirrored, rel_tol=RTOL, abs_tol=RTOL * lr)


@given(
    lr=base_lrs,
    start_factor=st.floats(min_value=1e-3, max_value=1.0),
    end_fraction=st.floats(min_value=0.0, max_value=1.0),
    warmup_steps=st.integers(min_value=0, max_value=20),
    cosine_steps=st.integers(min_value=1, max_value=30),
)
def test_warmup_cosine_matches_linear_then_cosine_annealing(
    lr, start_factor, end_fraction, warmup_steps, cosine_steps
):
    decay_steps = warmup_steps + cosine_steps
    end_value = lr * end_fraction
    schedule = ops.WarmupCosine(
        peak_value=lr,
        warmup_steps=warmup_steps,
        decay_steps=decay_steps,
        init_value=lr * start_factor,
        end_value=end_value,
    )
    steps = decay_steps + 1
    ours = lr_curve(ScheduleLR(make_optimizer(lr), schedule), steps)
    optimizer = make_optimizer(lr)
    warmup = lr_scheduler.LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warmup_steps)
    cosine = lr_scheduler.CosineAnnealingLR(optimizer, T_max=cosine_steps, eta_min=end_value)
    reference = lr_curve(lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps]), steps)

    # The curves are compared up to decay_steps. Past it torch's cosine rises again (see the cosine test).
    assert_curves_close(ours, reference, scale=lr)


@given(
    lr=base_lrs,
    start_factor=st.floats(min_value=1e-3, max_value=1.0),
    decay_rate=st.floats(min_value=0.5, max_value=1.0),
    warmup_steps=st.integers(min_value=0, max_value=20),
    steps=st.integers(min_value=1, max_value=60),
)
def test_warmup_matches_linear_then_exponential_lr(lr, start_factor, decay_rate, warmup_steps, steps):
    decay = ops.ExponentialDecay(init_value=lr, transition_steps=1, decay_rate=decay_rate)
    schedule = ops.Warmup(schedule=decay, warmup_steps=warmup_steps, init_value=lr * start_factor)
    ours = lr_curve(ScheduleLR(make_optimizer(lr), schedule), steps)
    optimizer = make_optimizer(lr)
    warmup = lr_scheduler.LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warmup_steps)
    exponential = lr_scheduler.ExponentialLR(optimizer, gamma=decay_rate)
    reference = lr_curve(lr_scheduler.SequentialLR(optimizer, [warmup, exponential], milestones=[warmup_steps]), steps)

    assert_curves_close(ours, reference, scale=lr)


def test_warmup_from_zero_has_no_torch_composition():
    # optstrat's warmups may start at 0 (init_value=0.0, the default). torch's LinearLR
    # rejects start_factor=0, so no SequentialLR reproduces that first step.
    optimizer = make_optimizer(1.0)

    with pytest.raises(ValueError, match="Starting multiplicative factor"):
        lr_scheduler.LinearLR(optimizer, start_factor=0.0, total_iters=4)


@given(value=base_lrs, steps=st.integers(min_value=1, max_value=40))
def test_constant_matches_constant_factor_schedulers(value, steps):
    schedule = ops.Constant(value=value)
    ours = lr_curve(ScheduleLR(make_optimizer(value), schedule), steps)
    lambda_optimizer = make_optimizer(value)
    by_lambda = lr_curve(lr_scheduler.LambdaLR(lambda_optimizer, lr_lambda=lambda step: 1.0), steps)
    constant_optimizer = make_optimizer(value)
    by_constant = lr_curve(lr_scheduler.ConstantLR(constant_optimizer, factor=1.0, total_iters=steps), steps)

    assert ours == [[value]] * steps
    assert by_lambda == ours
    assert by_constant == ours


@given(lrs=st.lists(base_lrs, min_size=1, max_size=3), decay_steps=st.integers(min_value=1, max_value=30))
def test_relative_cosine_matches_per_group(lrs, decay_steps):
    # Relative mode scales each group's initial_lr, as torch does. CosineAnnealingLR's
    # eta_min is absolute, so only end_value=0 gives the same curve for groups of different lr.
    schedule = ops.CosineDecay(init_value=1.0, decay_steps=decay_steps, end_value=0.0)
    steps = decay_steps + 1
    ours = lr_curve(ScheduleLR(make_optimizer(*lrs), schedule, relative=True), steps)
    optimizer = make_optimizer(*lrs)
    reference = lr_curve(lr_scheduler.CosineAnnealingLR(optimizer, T_max=decay_steps), steps)

    assert_curves_close(ours, reference, scale=max(lrs))


EXAMPLES = [
    pytest.param(schedule, id=f"{kind}-{index}")
    for kind, schedules in SCHEDULE_EXAMPLES.items()
    for index, schedule in enumerate(schedules)
]


@pytest.mark.parametrize("schedule", EXAMPLES)
def test_relative_mode_equals_lambda_lr(schedule):
    # LambdaLR multiplies each initial_lr by lr_lambda(step) in closed form, which is
    # what relative mode does, so the two agree exactly for every kind.
    steps = 40
    ours = lr_curve(ScheduleLR(make_optimizer(0.1, 0.03), schedule, relative=True), steps)
    optimizer = make_optimizer(0.1, 0.03)
    reference = lr_curve(lr_scheduler.LambdaLR(optimizer, lr_lambda=schedule), steps)

    assert ours == reference
