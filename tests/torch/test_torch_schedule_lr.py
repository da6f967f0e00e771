"""ScheduleLR on real torch optimizers: values, groups, tensor lr, state dicts, input checks, warnings."""

from __future__ import annotations

import io
import warnings

import pytest

torch = pytest.importorskip("torch")

import optstrat as ops  # noqa: E402
from optstrat_torch import ScheduleLR  # noqa: E402
from tests.kind_examples import SCHEDULE_EXAMPLES  # noqa: E402

EXAMPLES = [
    pytest.param(schedule, id=f"{kind}-{index}")
    for kind, schedules in SCHEDULE_EXAMPLES.items()
    for index, schedule in enumerate(schedules)
]
COSINE = ops.CosineDecay(init_value=1.0, decay_steps=10, end_value=0.1)
WARMUP = ops.WarmupCosine(peak_value=0.5, warmup_steps=3, decay_steps=12, end_value=0.05)


def make_optimizer(*group_lrs, lr_type=float):
    """Return an SGD optimizer with one small weight per parameter group."""
    groups = [{"params": [torch.nn.Parameter(torch.ones(3))], "lr": lr_type(lr)} for lr in group_lrs]
    return torch.optim.SGD(groups)


def lr_tensor(value):
    return torch.tensor(value, dtype=torch.float64)


def group_lrs(optimizer):
    return [group["lr"] for group in optimizer.param_groups]


def advance(optimizer, scheduler, steps):
    """Run ``steps`` iterations of torch's loop: optimizer.step(), then scheduler.step()."""
    for _ in range(steps):
        optimizer.step()
        scheduler.step()


@pytest.mark.parametrize("schedule", EXAMPLES)
def test_sgd_training_uses_schedule_at_each_step(schedule):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    inputs = torch.randn(16, 4, dtype=torch.float64)
    targets = torch.randn(16, 1, dtype=torch.float64)
    optimizer = torch.optim.SGD(model.parameters(), lr=123.0)
    scheduler = ScheduleLR(optimizer, schedule)

    for step in range(60):
        expected = schedule(step)
        assert optimizer.param_groups[0]["lr"] == expected
        assert scheduler.get_last_lr() == [expected]
        assert scheduler.last_epoch == step

        optimizer.zero_grad()
        # A small loss keeps training stable under learning rates up to 3.
        loss = 1e-3 * torch.nn.functional.mse_loss(model(inputs), targets)
        loss.backward()
        before = [param.detach().clone() for param in model.parameters()]
        optimizer.step()
        for param, old in zip(model.parameters(), before):
            # Plain SGD adds -lr * grad, so each change shows which lr the update used.
            torch.testing.assert_close(param.detach() - old, -expected * param.grad, rtol=1e-9, atol=1e-15)
        scheduler.step()


def test_long_run_has_no_drift():
    schedule = ops.ExponentialDecay(init_value=1.0, transition_steps=1, decay_rate=0.999)
    optimizer = make_optimizer(1.0)
    scheduler = ScheduleLR(optimizer, schedule)
    optimizer.step()

    for step in range(1, 3001):
        scheduler.step()
        assert optimizer.param_groups[0]["lr"] == schedule(step)


def test_lr_written_by_others_is_replaced_next_step():
    optimizer = make_optimizer(1.0)
    scheduler = ScheduleLR(optimizer, COSINE)
    advance(optimizer, scheduler, 3)

    optimizer.param_groups[0]["lr"] = 7.0
    advance(optimizer, scheduler, 1)

    assert optimizer.param_groups[0]["lr"] == COSINE(4)


def test_per_group_schedules():
    schedules = [COSINE, ops.StepDecay(init_value=0.2, decay_rate=0.5, decay_steps=3), ops.Constant(value=0.01)]
    optimizer = make_optimizer(1.0, 1.0, 1.0)
    scheduler = ScheduleLR(optimizer, schedules)

    for step in range(25):
        expected = [schedule(step) for schedule in schedules]
        assert group_lrs(optimizer) == expected
        assert scheduler.get_last_lr() == expected
        advance(optimizer, scheduler, 1)


def test_tuple_of_schedules_is_accepted():
    optimizer = make_optimizer(1.0, 1.0)
    scheduler = ScheduleLR(optimizer, (COSINE, WARMUP))

    assert scheduler.schedules == (COSINE, WARMUP)
    assert group_lrs(optimizer) == [COSINE(0), WARMUP(0)]


def test_one_schedule_drives_every_group():
    optimizer = make_optimizer(0.3, 0.7)
    scheduler = ScheduleLR(optimizer, WARMUP)
    advance(optimizer, scheduler, 5)

    assert group_lrs(optimizer) == [WARMUP(5), WARMUP(5)]


def test_relative_mode_scales_initial_lr():
    factor = ops.WarmupCosine(peak_value=1.0, warmup_steps=2, decay_steps=9, end_value=0.1)
    optimizer = make_optimizer(0.1, 0.02)
    scheduler = ScheduleLR(optimizer, factor, relative=True)

    for step in range(15):
        assert group_lrs(optimizer) == [0.1 * factor(step), 0.02 * factor(step)]
        advance(optimizer, scheduler, 1)
    assert scheduler.base_lrs == [0.1, 0.02]
    assert [group["initial_lr"] for group in optimizer.param_groups] == [0.1, 0.02]


def test_relative_mode_keeps_existing_initial_lr():
    optimizer = make_optimizer(0.5)
    optimizer.param_groups[0]["initial_lr"] = 2.0

    ScheduleLR(optimizer, COSINE, relative=True)

    assert optimizer.param_groups[0]["lr"] == 2.0 * COSINE(0)


def test_tensor_lr_is_filled_in_place():
    optimizer = make_optimizer(0.1, 0.2, lr_type=lr_tensor)
    lr_tensors = group_lrs(optimizer)
    scheduler = ScheduleLR(optimizer, [COSINE, WARMUP])

    for step in range(14):
        current = group_lrs(optimizer)
        assert current[0] is lr_tensors[0]
        assert current[1] is lr_tensors[1]
        assert current[0].item() == COSINE(step)
        assert current[1].item() == WARMUP(step)
        last = scheduler.get_last_lr()
        assert isinstance(last[0], torch.Tensor)
        assert last[0] is not lr_tensors[0]
        assert last[0].item() == COSINE(step)
        advance(optimizer, scheduler, 1)


def test_float32_tensor_lr_rounds_to_float32():
    optimizer = make_optimizer(0.1, lr_type=torch.tensor)
    scheduler = ScheduleLR(optimizer, COSINE)
    advance(optimizer, scheduler, 3)

    lr = optimizer.param_groups[0]["lr"]
    assert lr.dtype == torch.float32
    assert torch.equal(lr, torch.tensor(COSINE(3), dtype=torch.float32))


def test_relative_tensor_lr_is_filled_in_place():
    optimizer = make_optimizer(0.1, lr_type=lr_tensor)
    lr = optimizer.param_groups[0]["lr"]
    scheduler = ScheduleLR(optimizer, COSINE, relative=True)
    advance(optimizer, scheduler, 4)

    assert optimizer.param_groups[0]["lr"] is lr
    assert lr.item() == pytest.approx(0.1 * COSINE(4), rel=1e-15)


def test_last_epoch_argument_resumes_one_step_later():
    optimizer = make_optimizer(1.0)
    scheduler = ScheduleLR(optimizer, COSINE, last_epoch=4)

    # As in every torch scheduler, the constructor takes one step from last_epoch.
    assert scheduler.last_epoch == 5
    assert optimizer.param_groups[0]["lr"] == COSINE(5)


def test_relative_last_epoch_needs_initial_lr():
    optimizer = make_optimizer(1.0)

    with pytest.raises(KeyError, match="initial_lr"):
        ScheduleLR(optimizer, COSINE, relative=True, last_epoch=3)


# State dicts ---------------------------------------------------------------------------------------


def save_and_load(state):
    """Send ``state`` through torch.save and torch.load(weights_only=True)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def lrs_over(optimizer, scheduler, steps):
    values = []
    for _ in range(steps):
        values.append(scheduler.get_last_lr())
        advance(optimizer, scheduler, 1)
    return values


@pytest.mark.parametrize("saved_after", [0, 1, 4, 11, 20])
def test_state_dict_resumes_exactly(saved_after):
    schedules = [WARMUP, ops.StepDecay(init_value=0.3, decay_rate=0.5, decay_steps=4)]
    reference_optimizer = make_optimizer(1.0, 1.0)
    reference = ScheduleLR(reference_optimizer, schedules)
    expected = lrs_over(reference_optimizer, reference, saved_after + 15)

    optimizer = make_optimizer(1.0, 1.0)
    scheduler = ScheduleLR(optimizer, schedules)
    advance(optimizer, scheduler, saved_after)
    state = save_and_load(scheduler.state_dict())

    fresh_optimizer = make_optimizer(5.0, 5.0)
    fresh = ScheduleLR(fresh_optimizer, schedules)
    fresh.load_state_dict(state)

    assert fresh.last_epoch == saved_after
    assert group_lrs(fresh_optimizer) == [schedule(saved_after) for schedule in schedules]
    assert lrs_over(fresh_optimizer, fresh, 15) == expected[saved_after:]


def test_state_dict_resumes_with_optimizer_state():
    optimizer = make_optimizer(1.0)
    scheduler = ScheduleLR(optimizer, COSINE)
    advance(optimizer, scheduler, 6)
    optimizer_state = save_and_load(optimizer.state_dict())
    scheduler_state = save_and_load(scheduler.state_dict())

    fresh_optimizer = make_optimizer(1.0)
    fresh = ScheduleLR(fresh_optimizer, COSINE)
    fresh_optimizer.load_state_dict(optimizer_state)
    fresh.load_state_dict(scheduler_state)

    assert fresh_optimizer.param_groups[0]["lr"] == COSINE(6)
    advance(fresh_optimizer, fresh, 1)
    assert fresh_optimizer.param_groups[0]["lr"] == COSINE(7)


def test_relative_state_dict_restores_base_lrs():
    optimizer = make_optimizer(0.1, 0.02)
    scheduler = ScheduleLR(optimizer, COSINE, relative=True)
    advance(optimizer, scheduler, 3)
    state = save_and_load(scheduler.state_dict())

    fresh_optimizer = make_optimizer(1.0, 1.0)
    fresh = ScheduleLR(fresh_optimizer, COSINE, relative=True)
    fresh.load_state_dict(state)

    assert fresh.base_lrs == [0.1, 0.02]
    assert group_lrs(fresh_optimizer) == [0.1 * COSINE(3), 0.02 * COSINE(3)]
    advance(fresh_optimizer, fresh, 1)
    assert group_lrs(fresh_optimizer) == [0.1 * COSINE(4), 0.02 * COSINE(4)]


def test_tensor_lr_state_dict_resumes_in_place():
    optimizer = make_optimizer(0.1, lr_type=lr_tensor)
    scheduler = ScheduleLR(optimizer, COSINE)
    advance(optimizer, scheduler, 5)
    state = save_and_load(scheduler.state_dict())

    fresh_optimizer = make_optimizer(0.1, lr_type=lr_tensor)
    lr = fresh_optimizer.param_groups[0]["lr"]
    fresh = ScheduleLR(fresh_optimizer, COSINE)
    fresh.load_state_dict(state)

    assert fresh_optimizer.param_groups[0]["lr"] is lr
    assert lr.item() == COSINE(5)
    assert fresh.get_last_lr()[0].item() == COSINE(5)


def test_state_dict_holds_configs_not_objects():
    optimizer = make_optimizer(1.0, 1.0)
    scheduler = ScheduleLR(optimizer, [COSINE, WARMUP])
    advance(optimizer, scheduler, 2)

    state = scheduler.state_dict()

    assert state["schedules"] == [COSINE.to_config(), WARMUP.to_config()]
    assert state["last_epoch"] == 2
    assert state["relative"] is False
    assert "optimizer" not in state
    assert_plain_types(state)


def assert_plain_types(value):
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str)
            assert_plain_types(item)
    elif isinstance(value, list):
        for item in value:
            assert_plain_types(item)
    else:
        assert value is None or isinstance(value, (bool, int, float, str, torch.Tensor)), repr(value)


def test_state_dict_loading_does_not_change_saved_dict():
    optimizer = make_optimizer(1.0)
    scheduler = ScheduleLR(optimizer, COSINE)
    state = scheduler.state_dict()
    copy = dict(state)

    ScheduleLR(make_optimizer(1.0), COSINE).load_state_dict(state)

    assert state == copy


def test_different_schedule_in_state_raises():
    optimizer = make_optimizer(1.0)
    scheduler = ScheduleLR(optimizer, COSINE)
    state = scheduler.state_dict()
    other = ScheduleLR(make_optimizer(1.0), ops.CosineDecay(init_value=1.0, decay_steps=20, end_value=0.1))

    with pytest.raises(ValueError, match="saved schedule of parameter group 0 differs") as error:
        other.load_state_dict(state)
    assert "'decay_steps': 10" in str(error.value)
    assert "'decay_steps': 20" in str(error.value)


def test_different_relative_flag_in_state_raises():
    state = ScheduleLR(make_optimizer(1.0), COSINE).state_dict()
    other = ScheduleLR(make_optimizer(1.0), COSINE, relative=True)

    with pytest.raises(ValueError, match="relative=False but this scheduler has relative=True"):
        other.load_state_dict(state)


def test_state_with_other_group_count_raises():
    state = ScheduleLR(make_optimizer(1.0), COSINE).state_dict()
    other = ScheduleLR(make_optimizer(1.0, 1.0), COSINE)

    with pytest.raises(ValueError, match="the saved state has 1 schedules but this scheduler has 2"):
        other.load_state_dict(state)


def test_failed_load_leaves_scheduler_unchanged():
    optimizer = make_optimizer(1.0)
    scheduler = ScheduleLR(optimizer, COSINE)
    advance(optimizer, scheduler, 2)
    state = ScheduleLR(make_optimizer(1.0), WARMUP).state_dict()

    with pytest.raises(ValueError):
        scheduler.load_state_dict(state)

    assert scheduler.last_epoch == 2
    assert optimizer.param_groups[0]["lr"] == COSINE(2)


def test_torch_scheduler_state_is_rejected():
    optimizer = make_optimizer(1.0)
    state = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2).state_dict()
    scheduler = ScheduleLR(make_optimizer(1.0), COSINE)

    with pytest.raises(ValueError, match="state_dict is missing 'schedules', 'relative'"):
        scheduler.load_state_dict(state)


def test_invalid_schedule_config_in_state_raises():
    scheduler = ScheduleLR(make_optimizer(1.0), COSINE)
    state = scheduler.state_dict()
    state["schedules"] = [{"kind": "cosine_decay", "init_value": 1.0, "decay_steps": 0}]

    with pytest.raises(ValueError, match=r"state_dict\['schedules'\]\[0\] is not a valid schedule config"):
        scheduler.load_state_dict(state)


def test_negative_last_epoch_in_state_raises():
    scheduler = ScheduleLR(make_optimizer(1.0), COSINE)
    state = scheduler.state_dict()
    state["last_epoch"] = -3

    with pytest.raises(ValueError, match=r"state_dict\['last_epoch'\] must be a non-negative integer, got -3"):
        scheduler.load_state_dict(state)


def test_state_that_is_not_a_dict_raises():
    scheduler = ScheduleLR(make_optimizer(1.0), COSINE)

    with pytest.raises(TypeError, match="state_dict must be a dict from ScheduleLR.state_dict"):
        scheduler.load_state_dict([1, 2])


# Input checks --------------------------------------------------------------------------------------


def test_wrong_schedule_list_length_raises():
    optimizer = make_optimizer(1.0, 1.0)

    with pytest.raises(ValueError, match="the optimizer has 2 parameter groups, got a list of 3"):
        ScheduleLR(optimizer, [COSINE, COSINE, COSINE])


def test_float_schedule_raises_with_hint():
    with pytest.raises(TypeError, match=r"schedule must be an optstrat Schedule, got 0.1 \(float\); use optstrat.Constant"):
        ScheduleLR(make_optimizer(1.0), 0.1)


def test_function_schedule_raises_with_hint():
    with pytest.raises(TypeError, match="schedule must be an optstrat Schedule.*use torch.optim.lr_scheduler.LambdaLR"):
        ScheduleLR(make_optimizer(1.0), lambda step: 0.1)


def test_config_dict_schedule_raises_with_hint():
    with pytest.raises(TypeError, match="schedule must be an optstrat Schedule.*optstrat.from_config"):
        ScheduleLR(make_optimizer(1.0), COSINE.to_config())


def test_non_schedule_item_in_list_raises():
    with pytest.raises(TypeError, match=r"schedule\[1\] must be an optstrat Schedule, got 'cosine' \(str\)"):
        ScheduleLR(make_optimizer(1.0, 1.0), [COSINE, "cosine"])


def test_non_optimizer_raises():
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer, got 'sgd' \\(str\\)"):
        ScheduleLR("sgd", COSINE)


def test_non_bool_relative_raises():
    with pytest.raises(TypeError, match="relative must be True or False, got 1 \\(int\\)"):
        ScheduleLR(make_optimizer(1.0), COSINE, relative=1)


def test_last_epoch_below_minus_one_raises():
    with pytest.raises(ValueError, match="last_epoch must be an integer >= -1, got -2"):
        ScheduleLR(make_optimizer(1.0), COSINE, last_epoch=-2)


def test_fractional_last_epoch_raises():
    with pytest.raises(TypeError, match="last_epoch must be an integer, got 1.5"):
        ScheduleLR(make_optimizer(1.0), COSINE, last_epoch=1.5)


# What training frameworks rely on ------------------------------------------------------------------


def test_construction_and_loop_emit_no_warnings():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimizer = make_optimizer(1.0)
        scheduler = ScheduleLR(optimizer, COSINE)
        advance(optimizer, scheduler, 12)
        scheduler.get_last_lr()
        scheduler.get_lr()
        scheduler.load_state_dict(scheduler.state_dict())

    assert [str(warning.message) for warning in caught] == []


def test_step_before_optimizer_step_warns():
    optimizer = make_optimizer(1.0)
    scheduler = ScheduleLR(optimizer, COSINE)

    with pytest.warns(UserWarning, match=r"lr_scheduler.step\(\)` before `optimizer.step\(\)"):
        scheduler.step()


def test_scheduler_api_of_training_frameworks():
    optimizer = make_optimizer(1.0, 0.5)
    scheduler = ScheduleLR(optimizer, COSINE)

    assert isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler)
    assert scheduler.optimizer is optimizer
    assert scheduler.last_epoch == 0
    advance(optimizer, scheduler, 3)
    assert scheduler.last_epoch == 3
    assert scheduler.get_last_lr() == [COSINE(3), COSINE(3)]
    # The Hugging Face Trainer logs get_last_lr()[0], and Lightning calls step() with no argument.
    assert isinstance(scheduler.get_last_lr()[0], float)


def test_deprecated_step_with_epoch_uses_closed_form():
    optimizer = make_optimizer(1.0)
    scheduler = ScheduleLR(optimizer, COSINE)
    optimizer.step()

    with pytest.warns(UserWarning, match="epoch parameter in `scheduler.step\\(\\)` was not necessary"):
        scheduler.step(7)

    assert scheduler.last_epoch == 7
    assert optimizer.param_groups[0]["lr"] == COSINE(7)


def test_works_inside_sequential_lr():
    optimizer = make_optimizer(1.0)
    first = ScheduleLR(optimizer, ops.Constant(value=0.5))
    second = ScheduleLR(optimizer, COSINE)
    sequential = torch.optim.lr_scheduler.SequentialLR(optimizer, [first, second], milestones=[3])
    expected = ops.Join(schedules=[ops.Constant(value=0.5), COSINE], boundaries=[3])

    for step in range(16):
        assert optimizer.param_groups[0]["lr"] == expected(step)
        optimizer.step()
        sequential.step()
