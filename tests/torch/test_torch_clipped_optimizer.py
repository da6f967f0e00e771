"""ClippedOptimizer: clipping, skipped updates, GradScaler, schedulers and exact resume in real training loops."""

from __future__ import annotations

import copy
import math

import pytest

torch = pytest.importorskip("torch")

import optstrat as ops  # noqa: E402
from optstrat.clipping import EmptyState, NonFiniteGradientError  # noqa: E402
from optstrat_torch import ClippedOptimizer, ScheduleLR, clip_, clip_grad_norm_  # noqa: E402

SCHEDULE = ops.WarmupCosine(peak_value=0.05, warmup_steps=3, decay_steps=20)


def make_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def make_batches(count, seed=1):
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        inputs = torch.randn(16, 4, generator=generator)
        targets = inputs.sum(dim=1, keepdim=True) * 3.0
        batches.append((inputs, targets))
    return batches


def loss_of(model, batch):
    inputs, targets = batch
    return torch.nn.functional.mse_loss(model(inputs), targets)


def backward(model, batch, scaler=None):
    loss = loss_of(model, batch)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    return loss


def params_of(model):
    return [param.detach().clone() for param in model.parameters()]


def adam_state_of(optimizer):
    return {
        index: {name: value.clone() for name, value in state.items()}
        for index, state in enumerate(optimizer.state[param] for group in optimizer.param_groups for param in group["params"])
    }


def assert_tensors_equal(actual, expected):
    assert len(actual) == len(expected)
    for ours, reference in zip(actual, expected):
        assert torch.equal(ours, reference)


def assert_adam_states_equal(actual, expected):
    assert actual.keys() == expected.keys()
    for index in actual:
        assert actual[index].keys() == expected[index].keys()
        for name in actual[index]:
            assert torch.equal(actual[index][name], expected[index][name]), (index, name)


def poison_grad(model, value=math.nan):
    first = next(model.parameters())
    first.grad[0, 0] = value


# Training loops -------------------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer_class", [torch.optim.SGD, torch.optim.Adam])
def test_step_equals_manual_loop(optimizer_class):
    model, reference = make_model(), make_model()
    inner = optimizer_class(model.parameters(), lr=0.1)
    reference_inner = optimizer_class(reference.parameters(), lr=0.1)
    optimizer = ClippedOptimizer(inner, ops.ClipByGlobalNorm(max_norm=0.5), scheduler=ScheduleLR(inner, SCHEDULE))
    reference_scheduler = ScheduleLR(reference_inner, SCHEDULE)

    for batch in make_batches(8):
        optimizer.zero_grad()
        backward(model, batch)
        optimizer.step()

        reference_inner.zero_grad()
        backward(reference, batch)
        norm = clip_grad_norm_(reference.parameters(), max_norm=0.5)
        reference_inner.step()
        reference_scheduler.step()

        assert torch.equal(optimizer.last_clip_info.norm, norm)
        assert_tensors_equal(params_of(model), params_of(reference))
    assert optimizer.applied_steps == 8
    assert optimizer.skipped_steps == 0
    assert optimizer.schedulers[0].last_epoch == 8
    assert inner.param_groups[0]["lr"] == SCHEDULE(8)


def test_clipping_close_to_torch_loop():
    model, reference = make_model(), make_model()
    optimizer = ClippedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), ops.ClipByGlobalNorm(max_norm=0.5))
    reference_optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)

    for batch in make_batches(5):
        optimizer.zero_grad()
        backward(model, batch)
        optimizer.step()
        reference_optimizer.zero_grad()
        backward(reference, batch)
        torch.nn.utils.clip_grad_norm_(reference.parameters(), max_norm=0.5, foreach=True)
        reference_optimizer.step()

    # torch divides by norm + 1e-6, the only difference.
    for ours, theirs in zip(params_of(model), params_of(reference)):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_training_reduces_loss():
    model = make_model()
    inner = torch.optim.Adam(model.parameters(), lr=0.02)
    optimizer = ClippedOptimizer(inner, ops.AutoClip(percentile=50.0, history_size=16))
    batches = make_batches(60)
    first_loss = loss_of(model, batches[0]).item()

    for batch in batches:
        optimizer.zero_grad()
        backward(model, batch)
        optimizer.step()

    assert loss_of(model, batches[0]).item() < 0.2 * first_loss
    assert int(optimizer.clipper_state.count) == 16
    assert optimizer.applied_steps == 60


def test_closure_is_called_once():
    model = make_model()
    optimizer = ClippedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), ops.ClipByGlobalNorm(max_norm=1.0))
    batch = make_batches(1)[0]
    calls = []

    def closure():
        calls.append(1)
        optimizer.zero_grad()
        return backward(model, batch)

    with torch.no_grad():
        loss = optimizer.step(closure)

    assert len(calls) == 1
    assert loss.item() == pytest.approx(loss_of(make_model(), batch).item())
    assert optimizer.applied_steps == 1


def test_stateful_clipper_state_kept_in_wrapper():
    clipper = ops.ZClip(alpha=0.5, z_threshold=1.0, warmup_steps=2)
    model, reference = make_model(), make_model()
    optimizer = ClippedOptimizer(torch.optim.SGD(model.parameters(), lr=0.01), clipper)
    reference_optimizer = torch.optim.SGD(reference.parameters(), lr=0.01)
    reference_state = clipper.init([param.detach() for param in reference.parameters()])

    for batch in make_batches(6):
        optimizer.zero_grad()
        backward(model, batch)
        optimizer.step()
        reference_optimizer.zero_grad()
        backward(reference, batch)
        reference_state, _ = clip_(reference.parameters(), clipper, reference_state)
        reference_optimizer.step()

    assert_tensors_equal(list(optimizer.clipper_state), list(reference_state))
    assert_tensors_equal(params_of(model), params_of(reference))


def test_passthrough_attributes():
    model = make_model()
    inner = torch.optim.Adam(model.parameters(), lr=0.1)
    optimizer = ClippedOptimizer(inner, ops.ClipByGlobalNorm(max_norm=1.0))
    backward(model, make_batches(1)[0])

    optimizer.zero_grad()

    assert optimizer.param_groups is inner.param_groups
    assert optimizer.state is inner.state
    assert optimizer.defaults is inner.defaults
    assert all(param.grad is None for param in model.parameters())
    extra = torch.nn.Parameter(torch.zeros(3))
    optimizer.add_param_group({"params": [extra]})
    assert inner.param_groups[-1]["params"] == [extra]
    assert optimizer.last_clip_info is None
    assert "ClippedOptimizer" in repr(optimizer)


# Skipped updates -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_value", [math.nan, math.inf])
def test_skip_leaves_params_and_adam_state(bad_value):
    model = make_model()
    inner = torch.optim.Adam(model.parameters(), lr=0.05)
    optimizer = ClippedOptimizer(inner, ops.ClipByGlobalNorm(max_norm=1.0), scheduler=ScheduleLR(inner, SCHEDULE))
    batches = make_batches(4)
    for batch in batches[:2]:
        optimizer.zero_grad()
        backward(model, batch)
        optimizer.step()
    params_before = params_of(model)
    adam_before = adam_state_of(inner)
    lr_before = inner.param_groups[0]["lr"]

    optimizer.zero_grad()
    backward(model, batches[2])
    poison_grad(model, bad_value)
    optimizer.step()

    assert optimizer.skipped_steps == 1
    assert optimizer.applied_steps == 2
    assert not bool(optimizer.last_clip_info.finite)
    assert_tensors_equal(params_of(model), params_before)
    assert_adam_states_equal(adam_state_of(inner), adam_before)
    assert all(state["step"].item() == 2 for state in adam_before.values())
    assert inner.param_groups[0]["lr"] == lr_before
    assert optimizer.schedulers[0].last_epoch == 2
    for param in model.parameters():
        assert torch.equal(param.grad, torch.zeros_like(param.grad))

    optimizer.zero_grad()
    backward(model, batches[3])
    optimizer.step()

    assert optimizer.applied_steps == 3
    assert optimizer.schedulers[0].last_epoch == 3
    assert all(state["step"].item() == 3 for state in adam_state_of(inner).values())


def test_skip_as_first_step_gives_no_warning():
    # torch warns when a scheduler steps before its optimizer; a skipped first step steps neither.
    model = make_model()
    inner = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer = ClippedOptimizer(inner, ops.ClipByGlobalNorm(max_norm=1.0), scheduler=ScheduleLR(inner, SCHEDULE))

    for index, batch in enumerate(make_batches(3)):
        optimizer.zero_grad()
        backward(model, batch)
        if index == 0:
            poison_grad(model)
        optimizer.step()

    assert (optimizer.skipped_steps, optimizer.applied_steps) == (1, 2)


def test_propagate_without_scaler_applies_update():
    model = make_model()
    optimizer = ClippedOptimizer(
        torch.optim.SGD(model.parameters(), lr=0.1), ops.ClipByGlobalNorm(max_norm=1.0, nonfinite="propagate")
    )
    backward(model, make_batches(1)[0])
    poison_grad(model)

    optimizer.step()

    assert optimizer.applied_steps == 1
    assert optimizer.skipped_steps == 0
    assert math.isnan(next(model.parameters())[0, 0].item())


def test_error_policy_raises_and_changes_nothing():
    model = make_model()
    inner = torch.optim.Adam(model.parameters(), lr=0.1)
    optimizer = ClippedOptimizer(inner, ops.ClipByGlobalNorm(max_norm=1.0, nonfinite="error"))
    backward(model, make_batches(1)[0])
    poison_grad(model, math.inf)
    params_before = params_of(model)
    grads_before = [param.grad.clone() for param in model.parameters()]

    with pytest.raises(NonFiniteGradientError, match="gradients contain NaN or infinity"):
        optimizer.step()

    assert_tensors_equal(params_of(model), params_before)
    assert_tensors_equal([param.grad for param in model.parameters()], grads_before)
    assert len(inner.state) == 0
    assert (optimizer.applied_steps, optimizer.skipped_steps) == (0, 0)


# GradScaler ----------------------------------------------------------------------------------------


def test_grad_scaler_equals_manual_amp_loop():
    model, reference = make_model(), make_model()
    inner = torch.optim.Adam(model.parameters(), lr=0.05)
    reference_inner = torch.optim.Adam(reference.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)
    reference_scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)
    optimizer = ClippedOptimizer(
        inner, ops.ClipByGlobalNorm(max_norm=0.5), scheduler=ScheduleLR(inner, SCHEDULE), grad_scaler=scaler
    )
    reference_scheduler = ScheduleLR(reference_inner, SCHEDULE)

    for batch in make_batches(6):
        optimizer.zero_grad()
        backward(model, batch, scaler)
        optimizer.step()

        reference_inner.zero_grad()
        backward(reference, batch, reference_scaler)
        reference_scaler.unscale_(reference_inner)
        clip_grad_norm_(reference.parameters(), max_norm=0.5)
        reference_scaler.step(reference_inner)
        reference_scaler.update()
        reference_scheduler.step()

        assert_tensors_equal(params_of(model), params_of(reference))
        assert scaler.get_scale() == reference_scaler.get_scale()
    # The scale grows every two finite steps.
    assert scaler.get_scale() == 2.0**13


@pytest.mark.parametrize("policy", ["skip", "propagate"])
def test_grad_scaler_overflow_skips_whole_update(policy):
    model = make_model()
    inner = torch.optim.Adam(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    optimizer = ClippedOptimizer(
        inner,
        ops.ClipByGlobalNorm(max_norm=0.5, nonfinite=policy),
        scheduler=ScheduleLR(inner, SCHEDULE),
        grad_scaler=scaler,
    )
    batches = make_batches(3)
    optimizer.zero_grad()
    backward(model, batches[0], scaler)
    optimizer.step()
    params_before = params_of(model)
    adam_before = adam_state_of(inner)

    optimizer.zero_grad()
    backward(model, batches[1], scaler)
    poison_grad(model, math.inf)  # as a float16 overflow would leave it
    optimizer.step()

    assert optimizer.skipped_steps == 1
    assert_tensors_equal(params_of(model), params_before)
    assert_adam_states_equal(adam_state_of(inner), adam_before)
    assert optimizer.schedulers[0].last_epoch == 1
    assert scaler.get_scale() == 2.0**15

    optimizer.zero_grad()
    backward(model, batches[2], scaler)
    optimizer.step()

    assert optimizer.applied_steps == 2
    assert optimizer.schedulers[0].last_epoch == 2


def test_grad_scaler_error_policy_updates_scaler():
    model = make_model()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    optimizer = ClippedOptimizer(
        torch.optim.SGD(model.parameters(), lr=0.1),
        ops.ClipByGlobalNorm(max_norm=0.5, nonfinite="error"),
        grad_scaler=scaler,
    )
    batches = make_batches(2)
    backward(model, batches[0], scaler)
    poison_grad(model, math.inf)

    with pytest.raises(NonFiniteGradientError):
        optimizer.step()

    assert scaler.get_scale() == 2.0**15
    optimizer.zero_grad()
    backward(model, batches[1], scaler)
    optimizer.step()
    assert optimizer.applied_steps == 1


def test_disabled_grad_scaler_is_ignored():
    model, reference = make_model(), make_model()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    optimizer = ClippedOptimizer(
        torch.optim.SGD(model.parameters(), lr=0.1), ops.ClipByGlobalNorm(max_norm=0.5), grad_scaler=scaler
    )
    reference_optimizer = ClippedOptimizer(torch.optim.SGD(reference.parameters(), lr=0.1), ops.ClipByGlobalNorm(max_norm=0.5))

    for batch in make_batches(3):
        for wrapper, net in ((optimizer, model), (reference_optimizer, reference)):
            wrapper.zero_grad()
            backward(net, batch, scaler)
            wrapper.step()

    assert_tensors_equal(params_of(model), params_of(reference))


# State dict and resume -----------------------------------------------------------------------------


def build_run(seed=0):
    model = make_model(seed)
    inner = torch.optim.Adam(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=3)
    optimizer = ClippedOptimizer(
        inner,
        ops.AutoClip(percentile=25.0, history_size=5),
        scheduler=ScheduleLR(inner, SCHEDULE),
        grad_scaler=scaler,
    )
    return model, optimizer


def run_steps(model, optimizer, batches, poison_at=()):
    for index, batch in enumerate(batches):
        optimizer.zero_grad()
        backward(model, batch, optimizer.grad_scaler)
        if index in poison_at:
            poison_grad(model)
        optimizer.step()


def test_resume_is_exact(tmp_path):
    batches = make_batches(10)
    model, optimizer = build_run()
    run_steps(model, optimizer, batches[:5], poison_at=(2,))
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, path)
    run_steps(model, optimizer, batches[5:], poison_at=(1,))

    checkpoint = torch.load(path, weights_only=True)
    resumed_model, resumed = build_run(seed=7)
    resumed_model.load_state_dict(checkpoint["model"])
    resumed.load_state_dict(checkpoint["optimizer"])
    assert (resumed.applied_steps, resumed.skipped_steps) == (4, 1)
    assert resumed.last_clip_info is None
    run_steps(resumed_model, resumed, batches[5:], poison_at=(1,))

    assert_tensors_equal(params_of(resumed_model), params_of(model))
    assert_adam_states_equal(adam_state_of(resumed.optimizer), adam_state_of(optimizer.optimizer))
    assert_tensors_equal(list(resumed.clipper_state), list(optimizer.clipper_state))
    assert resumed.grad_scaler.state_dict() == optimizer.grad_scaler.state_dict()
    assert resumed.schedulers[0].last_epoch == optimizer.schedulers[0].last_epoch == 8
    assert (resumed.applied_steps, resumed.skipped_steps) == (8, 2)


def test_state_dict_contents():
    model, optimizer = build_run()
    run_steps(model, optimizer, make_batches(2))

    state = optimizer.state_dict()

    assert set(state) == {
        "optimizer", "clipper", "clipper_state", "schedulers", "grad_scaler", "applied_steps", "skipped_steps"
    }
    assert state["clipper"] == ops.AutoClip(percentile=25.0, history_size=5).to_config()
    assert set(state["clipper_state"]) == {"norms", "count", "index"}
    assert state["clipper_state"]["count"].item() == 2
    # A copy: stepping on does not change the saved state.
    run_steps(model, optimizer, make_batches(1))
    assert state["clipper_state"]["count"].item() == 2


def test_stateless_clipper_state_dict_round_trip():
    model = make_model()
    optimizer = ClippedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), ops.ClipByGlobalNorm(max_norm=1.0))
    state = optimizer.state_dict()

    assert state["clipper_state"] == {}
    assert state["schedulers"] == []
    assert state["grad_scaler"] is None
    optimizer.load_state_dict(copy.deepcopy(state))
    assert optimizer.clipper_state == EmptyState()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda state: state.pop("clipper_state"), "state_dict is missing 'clipper_state'"),
        (
            lambda state: state.update(clipper=ops.AutoClip(percentile=50.0, history_size=5).to_config()),
            "the saved clipper .* differs from this wrapper's",
        ),
        (lambda state: state.update(clipper={"kind": "nope"}), "state_dict\\['clipper'\\] is not a valid clipper config"),
        (lambda state: state.update(schedulers=[]), "the saved state has 0 schedulers but this wrapper has 1"),
        (lambda state: state.update(grad_scaler=None), "the saved state has no grad_scaler but this wrapper has one"),
        (
            lambda state: state["clipper_state"].update(norms=torch.zeros(3)),
            "state_dict\\['clipper_state'\\]\\['norms'\\] has shape \\(3,\\) but this clipper needs \\(5,\\)",
        ),
        (
            lambda state: state["clipper_state"].pop("index"),
            "state_dict\\['clipper_state'\\] must be a dict with the fields \\['norms', 'count', 'index'\\]",
        ),
        (lambda state: state.update(skipped_steps=-1), "state_dict\\['skipped_steps'\\] must be"),
    ],
)
def test_invalid_state_dict_raises_before_change(change, message):
    model, optimizer = build_run()
    run_steps(model, optimizer, make_batches(2))
    state = copy.deepcopy(optimizer.state_dict())
    change(state)
    _, fresh = build_run()
    before = copy.deepcopy(fresh.state_dict())

    with pytest.raises(ValueError, match=message):
        fresh.load_state_dict(state)

    after = fresh.state_dict()
    assert after["applied_steps"] == before["applied_steps"]
    assert_tensors_equal(list(after["clipper_state"].values()), list(before["clipper_state"].values()))
    assert after["optimizer"]["state"] == {}


def test_state_dict_of_wrong_type_raises():
    _, optimizer = build_run()

    with pytest.raises(TypeError, match="state_dict must be a dict from ClippedOptimizer.state_dict\\(\\), got list"):
        optimizer.load_state_dict([])


# Constructor checks --------------------------------------------------------------------------------


def test_invalid_arguments_raise():
    model = make_model()
    inner = torch.optim.SGD(model.parameters(), lr=0.1)
    other = torch.optim.SGD(make_model().parameters(), lr=0.1)
    clipper = ops.ClipByGlobalNorm(max_norm=1.0)

    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer, got 'sgd' \\(str\\)"):
        ClippedOptimizer("sgd", clipper)
    with pytest.raises(TypeError, match="clipper must be an optstrat clipper .*got 1.0 \\(float\\)"):
        ClippedOptimizer(inner, 1.0)
    with pytest.raises(TypeError, match="grad_scaler must be None or a torch.amp.GradScaler, got 2 \\(int\\)"):
        ClippedOptimizer(inner, clipper, grad_scaler=2)
    with pytest.raises(TypeError, match="scheduler is a ReduceLROnPlateau, whose step\\(\\) needs a metric"):
        ClippedOptimizer(inner, clipper, scheduler=torch.optim.lr_scheduler.ReduceLROnPlateau(inner))
    with pytest.raises(TypeError, match="scheduler\\[1\\] must be a torch.optim.lr_scheduler.LRScheduler"):
        ClippedOptimizer(inner, clipper, scheduler=[ScheduleLR(inner, SCHEDULE), "cosine"])
    with pytest.raises(ValueError, match="scheduler must be built on the wrapped optimizer"):
        ClippedOptimizer(inner, clipper, scheduler=ScheduleLR(other, SCHEDULE))


def test_several_schedulers_all_step():
    model = make_model()
    inner = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    lr_scheduler = ScheduleLR(inner, SCHEDULE)
    step_scheduler = torch.optim.lr_scheduler.StepLR(inner, step_size=1, gamma=0.5)
    optimizer = ClippedOptimizer(inner, ops.ClipByGlobalNorm(max_norm=1.0), scheduler=[lr_scheduler, step_scheduler])

    run_steps(model, optimizer, make_batches(3))

    assert lr_scheduler.last_epoch == step_scheduler.last_epoch == 3
