"""The torch._foreach_* fast paths, held equal to the core's ClipByGlobalNorm, ZClip and AutoClip."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import array_api_compat.torch as torch_xp  # noqa: E402

import optstrat as ops  # noqa: E402
from optstrat.clipping import EmptyState, NonFiniteGradientError  # noqa: E402
from optstrat.clipping._base import apply_factors, as_threshold, factor_to_limit  # noqa: E402
from optstrat_torch import _foreach, clip_, clip_grad_norm_  # noqa: E402

NORM_TYPES = [2.0, 1.0, math.inf, 3.0, 0.5]
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
# Largest power of two drawn as a magnitude per dtype, far enough from overflow that
# every value and the norm stay finite.
MAX_EXPONENT = {torch.float16: 10, torch.bfloat16: 40, torch.float32: 40, torch.float64: 40}
# The fast path adds float32 row norms in float64, and the core adds exact squares in
# float64. Both round to float32 at the end, so they agree to a few units in the last
# place (2**-23 is one unit at 1.0).
NORM_RTOL = 8 * 2.0**-23
# Both modes: "cpu" trusts float32 row norms and may fall back to the core, "sync-free" is
# what accelerators run, here on CPU tensors.
MODES = {"cpu": False, "sync-free": True}


@st.composite
def gradient_lists(draw, min_count=1):
    """Draw gradients of mixed dtypes, with sizes around the rows and blocks of the CPU mode."""
    count = draw(st.integers(min_value=min_count, max_value=4))
    generator = torch.Generator().manual_seed(draw(st.integers(min_value=0, max_value=2**32 - 1)))
    grads = []
    for _ in range(count):
        dtype = draw(st.sampled_from(DTYPES))
        size = draw(st.sampled_from([0, 1, 7, _foreach.ROW - 1, _foreach.ROW, 2 * _foreach.ROW + 5, _foreach.SHORT + 5, _foreach.BLOCK + 3]))
        exponent = draw(st.integers(min_value=-MAX_EXPONENT[dtype], max_value=MAX_EXPONENT[dtype]))
        values = torch.randn(size, generator=generator, dtype=torch.float64) * 2.0**exponent
        if draw(st.booleans()) and size > 0:
            values[::3] = 0.0
        grads.append(values.to(dtype))
    return grads


def clone_all(grads):
    return [grad.clone() for grad in grads]


def core_update(grads, clipper):
    """Return the core's clipped gradients and ClipInfo for copies of ``grads``."""
    clipped, _, info = clipper.update(clone_all(grads), clipper.init(grads))
    return clipped, info


def core_apply(grads, norm, clipper, finite=True):
    """Return what the core's formula gives with a given norm: g * min(1, max_norm / norm)."""
    limit = as_threshold(torch_xp, clipper.max_norm, norm)
    scale = factor_to_limit(torch_xp, norm, limit)
    finite = torch.tensor(finite)
    return apply_factors(torch_xp, clone_all(grads), [scale] * len(grads), finite, clipper.nonfinite)


def _param(grad):
    param = torch.nn.Parameter(torch.zeros_like(grad))
    param.grad = grad.clone()
    return param


def assert_same_values(actual, expected):
    assert len(actual) == len(expected)
    for ours, reference in zip(actual, expected):
        assert ours.dtype == reference.dtype
        assert ours.shape == reference.shape
        torch.testing.assert_close(ours, reference, rtol=0.0, atol=0.0, equal_nan=True)


def assert_close_to_core(actual, expected):
    for ours, reference in zip(actual, expected):
        assert ours.dtype == reference.dtype
        # A scale one float32 rounding apart can round a float16 or bfloat16 product to the
        # neighbouring value, so each dtype gets its own tolerance.
        tolerance = {"rtol": NORM_RTOL, "atol": 0.0} if reference.dtype in (torch.float32, torch.float64) else {}
        torch.testing.assert_close(ours, reference, **tolerance)


# Equality with the core ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=15)  # each example runs the core in float64 on up to 10**6 values
@given(
    grads=gradient_lists(),
    norm_type=st.sampled_from(NORM_TYPES),
    max_norm_fraction=st.sampled_from([0.0, 0.01, 0.5, 1.0, 2.0]),
)
def test_fast_path_matches_core(mode, grads, norm_type, max_norm_fraction):
    reference_norm = float(ops.global_norm(grads, norm_type))
    clipper = ops.ClipByGlobalNorm(max_norm=reference_norm * max_norm_fraction, norm_type=norm_type)
    expected, expected_info = core_update(grads, clipper)
    clipped = clone_all(grads)

    result = _foreach.clip_by_global_norm_(clipped, clipper, sync_free=MODES[mode])

    if result is None:
        # Only the CPU mode hands back, and only for totals it cannot trust.
        assert mode == "cpu"
        assert float(expected_info.norm) == 0.0 or reference_norm < 2.0**-30
        assert_same_values(clipped, grads)
        return
    assert result.norm.dtype == expected_info.norm.dtype
    assert result.norm.shape == ()
    torch.testing.assert_close(result.norm, torch.tensor(reference_norm, dtype=result.norm.dtype), rtol=NORM_RTOL, atol=0.0)
    torch.testing.assert_close(result.info.norm, expected_info.norm, rtol=NORM_RTOL, atol=0.0)
    assert_same_values(clipped, core_apply(grads, result.norm, clipper))
    assert_close_to_core(clipped, expected)
    assert bool(result.info.finite)
    assert bool(result.info.clipped) == bool(result.info.scale < 1)


@given(grads=gradient_lists(), norm_type=st.sampled_from(NORM_TYPES))
def test_clip_grad_norm_returns_core_norm(grads, norm_type):
    params = [torch.nn.Parameter(torch.zeros_like(grad)) for grad in grads]
    for param, grad in zip(params, grads):
        param.grad = grad.clone()
    reference_norm = ops.global_norm(grads, norm_type)

    norm = clip_grad_norm_(params, max_norm=1.0, norm_type=norm_type)

    assert norm.dtype == reference_norm.dtype
    torch.testing.assert_close(norm, reference_norm, rtol=NORM_RTOL, atol=0.0)


def test_rows_keep_large_float32_norm_accurate():
    # torch 2.13's CPU norm kernel sums this tensor in float32 and comes out about 0.8 % low.
    count = 10**7 + 3
    grad = torch.full((count,), 0.1)
    exact = math.sqrt(count) * float(torch.tensor(0.1))

    result = _foreach.clip_by_global_norm_([grad], ops.ClipByGlobalNorm(max_norm=1e9))

    assert result is not None
    assert abs(result.norm.item() / exact - 1.0) < NORM_RTOL
    assert abs(torch.linalg.vector_norm(grad).item() / exact - 1.0) > 1e-3


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_norm_in_float32(dtype):
    # 10**5 values of 300: the norm 94868.3 is above the float16 maximum of 65504.
    grad = torch.full((10**5,), 300.0, dtype=dtype)
    exact = 300.0 * math.sqrt(10**5)

    norm = clip_grad_norm_(_param(grad), max_norm=1e9)

    assert norm.dtype == torch.float32
    assert abs(norm.item() / exact - 1.0) < NORM_RTOL


# Values outside the float32 kernels' range ---------------------------------------------------------


@pytest.mark.parametrize("norm_type", NORM_TYPES)
def test_overflowing_squares_keep_norm_finite(norm_type):
    # Squares of 1e30 overflow float32; the norm itself fits.
    grads = [torch.full((1000,), 1e30), torch.full((10,), -2e30)]
    params = [_param(grad) for grad in grads]
    reference = ops.global_norm(grads, norm_type)

    norm = clip_grad_norm_(params, max_norm=1.0, norm_type=norm_type)

    assert math.isfinite(norm.item())
    torch.testing.assert_close(norm, reference, rtol=NORM_RTOL, atol=0.0)
    clipped_norm = ops.global_norm([param.grad for param in params], norm_type)
    torch.testing.assert_close(clipped_norm, torch.tensor(1.0), rtol=1e-5, atol=0.0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", [1000, 2 * _foreach.SHORT], ids=["short", "rows"])
def test_overflow_in_both_modes(mode, size):
    grads = [torch.full((size,), 1e30)]
    clipper = ops.ClipByGlobalNorm(max_norm=1.0)
    expected, expected_info = core_update(grads, clipper)
    clipped = clone_all(grads)

    result = _foreach.clip_by_global_norm_(clipped, clipper, sync_free=MODES[mode])

    if mode == "cpu" and size > _foreach.SHORT:
        # The float32 rows overflow, so the CPU mode leaves the gradients to the core.
        assert result is None
        assert_same_values(clipped, grads)
        return
    # Accelerator mode, and short tensors in either mode, square in float64.
    torch.testing.assert_close(result.info.norm, expected_info.norm, rtol=NORM_RTOL, atol=0.0)
    assert_close_to_core(clipped, expected)


@pytest.mark.parametrize("size", [100, 2 * _foreach.SHORT], ids=["short", "rows"])
def test_tiny_values_whose_squares_underflow(size):
    grads = [torch.full((size,), 1e-30), torch.tensor([0.0, 3e-31])]
    params = [_param(grad) for grad in grads]
    reference = ops.global_norm(grads)

    norm = clip_grad_norm_(params, max_norm=1e-40)

    assert norm.item() > 0.0
    torch.testing.assert_close(norm, reference, rtol=NORM_RTOL, atol=0.0)


def test_cpu_mode_hands_underflowing_rows_to_core():
    # Squares of 1e-30 underflow float32, so the row norms are 0 and cannot be trusted.
    grads = [torch.full((2 * _foreach.SHORT,), 1e-30)]
    clipped = clone_all(grads)

    result = _foreach.clip_by_global_norm_(clipped, ops.ClipByGlobalNorm(max_norm=1e-40))

    assert result is None
    assert_same_values(clipped, grads)


def test_norm_beyond_float32_zeroes_like_core():
    # The norm 9.5e38 exceeds the float32 maximum, so it is infinite and the scale 0, as in the core.
    grads = [torch.full((10,), 3e38)]
    clipper = ops.ClipByGlobalNorm(max_norm=1.0)
    expected, expected_info = core_update(grads, clipper)
    params = [_param(grad) for grad in grads]

    _, info = clip_(params, clipper)

    assert math.isinf(info.norm.item())
    assert bool(info.finite) == bool(expected_info.finite)
    assert_same_values([params[0].grad], expected)


# Zero, empty and missing gradients -------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_zero_grads_stay_zero(mode):
    grads = [torch.zeros(5), torch.zeros(3, dtype=torch.float16)]
    clipped = clone_all(grads)

    result = _foreach.clip_by_global_norm_(clipped, ops.ClipByGlobalNorm(max_norm=0.0), sync_free=MODES[mode])

    if result is not None:
        assert result.norm.item() == 0.0
        assert result.info.scale.item() == 1.0
        assert not bool(result.info.clipped)
    assert_same_values(clipped, grads)


def test_zero_grads_through_clip():
    params = [_param(torch.zeros(5)), _param(torch.zeros(2, 2))]

    _, info = clip_(params, ops.ClipByGlobalNorm(max_norm=0.0))

    assert info.norm.item() == 0.0
    assert info.scale.item() == 1.0
    for param in params:
        assert torch.equal(param.grad, torch.zeros_like(param.grad))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("norm_type", NORM_TYPES)
def test_empty_tensors_are_skipped(mode, norm_type):
    grads = [torch.zeros(0), torch.tensor([3.0, -4.0]), torch.zeros(0, 3, dtype=torch.float16)]
    clipped = clone_all(grads)

    result = _foreach.clip_by_global_norm_(
        clipped, ops.ClipByGlobalNorm(max_norm=1.0, norm_type=norm_type), sync_free=MODES[mode]
    )

    expected_norm = {2.0: 5.0, 1.0: 7.0, math.inf: 4.0, 3.0: 91.0 ** (1 / 3), 0.5: (math.sqrt(3) + 2.0) ** 2}[norm_type]
    assert result.norm.item() == pytest.approx(expected_norm, rel=NORM_RTOL)
    assert result.info.norm.item() == pytest.approx(5.0, rel=NORM_RTOL)
    assert clipped[0].shape == (0,)
    assert clipped[2].shape == (0, 3)
    torch.testing.assert_close(clipped[1], torch.tensor([3.0, -4.0]) / expected_norm, rtol=NORM_RTOL, atol=0.0)


@pytest.mark.parametrize("mode", MODES)
def test_only_empty_tensors(mode):
    grads = [torch.zeros(0), torch.zeros(0, 2)]

    result = _foreach.clip_by_global_norm_(grads, ops.ClipByGlobalNorm(max_norm=1.0, norm_type="inf"), sync_free=MODES[mode])

    assert result.norm.item() == 0.0
    assert result.info.scale.item() == 1.0


def test_none_grads_and_generator_take_fast_path():
    with_grad = _param(torch.tensor([30.0, 40.0]))
    without_grad = torch.nn.Parameter(torch.ones(3))
    version = with_grad.grad._version

    norm = clip_grad_norm_((param for param in [without_grad, with_grad]), max_norm=5.0)

    assert norm.item() == 50.0
    torch.testing.assert_close(with_grad.grad, torch.tensor([3.0, 4.0]))
    assert with_grad.grad._version == version + 1
    assert without_grad.grad is None


def test_empty_parameter_list():
    assert torch.equal(clip_grad_norm_([], max_norm=1.0), torch.tensor(0.0))


# The CPU skips the multiply when nothing is clipped --------------------------------------------------


def test_no_clipping_leaves_tensors_unwritten():
    grads = [torch.tensor([3.0, 4.0]), torch.ones(_foreach.ROW + 1, dtype=torch.bfloat16)]
    params = [_param(grad) for grad in grads]
    versions = [param.grad._version for param in params]

    norm = clip_grad_norm_(params, max_norm=1000.0)

    assert norm.item() == pytest.approx(math.sqrt(25.0 + _foreach.ROW + 1), rel=NORM_RTOL)
    # A tensor's version counter counts in-place writes: none happened.
    assert [param.grad._version for param in params] == versions
    assert_same_values([param.grad for param in params], grads)


def test_clipping_writes_each_tensor_once():
    params = [_param(torch.tensor([3.0, 4.0])), _param(torch.tensor([12.0], dtype=torch.float16))]
    versions = [param.grad._version for param in params]

    clip_grad_norm_(params, max_norm=1.0)

    assert [param.grad._version for param in params] == [version + 1 for version in versions]


# Non-finite gradients ----------------------------------------------------------------------------


NONFINITE_VALUES = [math.nan, math.inf, -math.inf]


def nonfinite_grads(bad_value):
    return [torch.tensor([3.0, 4.0]), torch.tensor([12.0, bad_value], dtype=torch.float16), torch.ones(_foreach.ROW + 2)]


@pytest.mark.parametrize("bad_value", NONFINITE_VALUES)
def test_cpu_mode_hands_nonfinite_to_core(bad_value):
    grads = nonfinite_grads(bad_value)
    clipped = clone_all(grads)

    result = _foreach.clip_by_global_norm_(clipped, ops.ClipByGlobalNorm(max_norm=1.0))

    assert result is None
    assert_same_values(clipped, grads)


@pytest.mark.parametrize("bad_value", NONFINITE_VALUES)
def test_sync_free_skip_zeroes_without_nan(bad_value):
    grads = nonfinite_grads(bad_value)
    clipper = ops.ClipByGlobalNorm(max_norm=1.0, nonfinite="skip")
    expected, expected_info = core_update(grads, clipper)
    clipped = clone_all(grads)

    result = _foreach.clip_by_global_norm_(clipped, clipper, sync_free=True)

    assert not bool(result.info.finite)
    assert result.info.scale.item() == 0.0
    assert bool(result.info.clipped)
    assert not bool(expected_info.finite)
    for grad in clipped:
        assert torch.equal(grad, torch.zeros_like(grad))
    assert_same_values(clipped, expected)


@pytest.mark.parametrize("bad_value", NONFINITE_VALUES)
def test_sync_free_propagate_leaves_grads(bad_value):
    grads = nonfinite_grads(bad_value)
    clipper = ops.ClipByGlobalNorm(max_norm=1.0, nonfinite="propagate")
    expected, _ = core_update(grads, clipper)
    clipped = clone_all(grads)

    result = _foreach.clip_by_global_norm_(clipped, clipper, sync_free=True)

    assert not bool(result.info.finite)
    assert result.info.scale.item() == 1.0
    assert_same_values(clipped, grads)
    assert_same_values(clipped, expected)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bad_value", NONFINITE_VALUES)
def test_error_policy_changes_nothing(mode, bad_value):
    grads = nonfinite_grads(bad_value)
    clipped = clone_all(grads)
    versions = [grad._version for grad in clipped]
    clipper = ops.ClipByGlobalNorm(max_norm=1.0, nonfinite="error")

    if mode == "cpu":
        assert _foreach.clip_by_global_norm_(clipped, clipper) is None
    else:
        with pytest.raises(NonFiniteGradientError, match="gradients contain NaN or infinity"):
            _foreach.clip_by_global_norm_(clipped, clipper, sync_free=True)

    assert [grad._version for grad in clipped] == versions
    assert_same_values(clipped, grads)


@pytest.mark.parametrize("policy", ["skip", "propagate", "error"])
@pytest.mark.parametrize("bad_value", NONFINITE_VALUES)
def test_policies_through_clip_match_core(policy, bad_value):
    grads = nonfinite_grads(bad_value)
    clipper = ops.ClipByGlobalNorm(max_norm=1.0, nonfinite=policy)
    params = [_param(grad) for grad in grads]

    if policy == "error":
        with pytest.raises(NonFiniteGradientError):
            clip_(params, clipper)
        assert_same_values([param.grad for param in params], grads)
        return
    expected, expected_info = core_update(grads, clipper)
    _, info = clip_(params, clipper)

    assert_same_values([param.grad for param in params], expected)
    assert not bool(info.finite)
    assert torch.equal(info.scale, expected_info.scale)


# Which gradients take the fast path ------------------------------------------------------------------


def test_supports_plain_dense_float_tensors():
    assert _foreach.supports([torch.zeros(2), torch.zeros(2, dtype=torch.bfloat16)])
    assert _foreach.supports([])
    assert not _foreach.supports([torch.zeros(2, dtype=torch.int32)])
    assert not _foreach.supports([torch.zeros(2, dtype=torch.complex64)])
    assert not _foreach.supports([torch.zeros(2, 2).to_sparse()])
    assert not _foreach.supports([torch.zeros(2, device="meta")])


@pytest.mark.parametrize("rows", [_foreach.SHORT + 5, _foreach.SHORT], ids=["tail", "no-tail"])
def test_non_contiguous_gradient(rows):
    # Full rows, with a tail of 10 values or none, read through a copy because the view is transposed.
    base = torch.randn(rows, 2, generator=torch.Generator().manual_seed(3))
    grad = base.t()
    assert not grad.is_contiguous()
    clipper = ops.ClipByGlobalNorm(max_norm=1.0)
    expected, expected_info = core_update([grad], clipper)
    clipped = grad.clone(memory_format=torch.preserve_format)
    assert not clipped.is_contiguous()

    result = _foreach.clip_by_global_norm_([clipped], clipper)

    torch.testing.assert_close(result.info.norm, expected_info.norm, rtol=NORM_RTOL, atol=0.0)
    assert_close_to_core([clipped], expected)


# Clippers whose limit comes from the global norm and their state ---------------------------------------

LIMIT_CLIPPERS = {
    "zclip": ops.ZClip(alpha=0.5, z_threshold=1.0, warmup_steps=3),
    "autoclip": ops.AutoClip(percentile=50.0, history_size=4),
}


def limit_steps(seed):
    """Return gradient sets for eight steps, whose scales include a spike after a calm start."""
    generator = torch.Generator().manual_seed(seed)
    scales = [1.0, 1.1, 0.9, 1.0, 8.0, 1.0, 0.05, 30.0]
    shapes = [(3 * _foreach.ROW + 7,), (2 * _foreach.SHORT + 3,), (5, 7), (1,)]
    return [[torch.randn(shape, generator=generator) * scale for shape in shapes] for scale in scales]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", LIMIT_CLIPPERS)
@pytest.mark.parametrize("seed", [0, 1])
def test_limit_clippers_match_core_over_steps(mode, name, seed):
    clipper = LIMIT_CLIPPERS[name]
    steps = limit_steps(seed)
    core_state = clipper.init(steps[0])
    fast_state = clipper.init(steps[0])
    clipped_steps = 0

    for grads in steps:
        expected, core_state, expected_info = clipper.update(clone_all(grads), core_state)
        clipped = clone_all(grads)
        result = _foreach.clip_by_limit_(clipped, clipper, fast_state, sync_free=MODES[mode])
        assert result is not None
        fast_state, info = result

        assert_close_to_core(clipped, expected)
        torch.testing.assert_close(info.norm, expected_info.norm, rtol=NORM_RTOL, atol=0.0)
        torch.testing.assert_close(info.scale, expected_info.scale, rtol=NORM_RTOL, atol=0.0)
        assert bool(info.clipped) == bool(expected_info.clipped)
        assert bool(info.finite)
        for ours, reference in zip(fast_state, core_state):
            torch.testing.assert_close(ours, reference, rtol=NORM_RTOL, atol=0.0)
        clipped_steps += int(bool(info.clipped))
    # The spikes are clipped, so the comparison covered clipped steps as well as calm ones.
    assert clipped_steps >= 1


@pytest.mark.parametrize("name", LIMIT_CLIPPERS)
@pytest.mark.parametrize("bad_value", NONFINITE_VALUES)
def test_limit_clippers_nonfinite_step(name, bad_value):
    clipper = LIMIT_CLIPPERS[name]
    grads = nonfinite_grads(bad_value)
    state = clipper.init(grads)
    clipped = clone_all(grads)

    # The CPU mode hands non-finite gradients to the core and changes nothing.
    assert _foreach.clip_by_limit_(clipped, clipper, state) is None
    assert_same_values(clipped, grads)

    # The accelerator mode zeroes them and keeps the state, as the core's "skip" policy does.
    new_state, info = _foreach.clip_by_limit_(clipped, clipper, state, sync_free=True)
    assert not bool(info.finite)
    assert all(bool((grad == 0).all()) for grad in clipped)
    for ours, before in zip(new_state, state):
        torch.testing.assert_close(ours, before, rtol=0.0, atol=0.0)


def test_clip_takes_limit_fast_path_through_clip_():
    # clip_ on plain CPU tensors gives the core's result for a stateful clipper, step after step.
    clipper = LIMIT_CLIPPERS["zclip"]
    steps = limit_steps(2)
    params = [_param(grad) for grad in steps[0]]
    core_state = clipper.init(steps[0])
    state = None

    for grads in steps:
        for param, grad in zip(params, grads):
            param.grad = grad.clone()
        expected, core_state, _ = clipper.update(clone_all(grads), core_state)
        state, info = clip_(params, clipper, state)

        assert_close_to_core([param.grad for param in params], expected)
    torch.testing.assert_close(state.mean, core_state.mean, rtol=NORM_RTOL, atol=0.0)


def test_limit_clipper_rejects_wrong_state():
    clipped = [torch.ones(3)]

    with pytest.raises(TypeError, match="state must be the ZClipState"):
        _foreach.clip_by_limit_(clipped, LIMIT_CLIPPERS["zclip"], EmptyState())
    with pytest.raises(TypeError, match="state and grads must use one array namespace"):
        _foreach.clip_by_limit_(clipped, LIMIT_CLIPPERS["autoclip"], LIMIT_CLIPPERS["autoclip"].init([np.ones(3)]))
    assert_same_values(clipped, [torch.ones(3)])


# Clipping by value ------------------------------------------------------------------------------------


@settings(max_examples=15)  # each example runs the core in float64 on up to 10**6 values
@given(grads=gradient_lists(), max_value_fraction=st.sampled_from([0.0, 0.01, 0.5, 1.0, 2.0]))
def test_clip_by_value_matches_core(grads, max_value_fraction):
    largest = float(ops.global_norm(grads, "inf"))
    clipper = ops.ClipByValue(max_value=largest * max_value_fraction)
    expected, expected_info = core_update(grads, clipper)
    clipped = clone_all(grads)

    info = _foreach.clip_by_value_(clipped, clipper)

    if info is None:
        # Only norms the float32 rows cannot be trusted with go to the core.
        assert float(expected_info.norm) == 0.0 or float(expected_info.norm) < 2.0**-30
        assert_same_values(clipped, grads)
        return
    # Clamping is exact, so every value equals the core's.
    assert_same_values(clipped, expected)
    torch.testing.assert_close(info.norm, expected_info.norm, rtol=NORM_RTOL, atol=0.0)
    assert_same_values([info.scale], [expected_info.scale])
    assert bool(info.clipped) == bool(expected_info.clipped)
    assert bool(info.finite)


def test_clip_by_value_float16_bound_rounds_like_core():
    # 0.1 is not a float16 value, so the bound is 0.1 rounded to float16, as in the core.
    grads = [torch.tensor([0.3, -0.05, -7.0], dtype=torch.float16), torch.full((2 * _foreach.SHORT,), 0.25)]
    clipper = ops.ClipByValue(max_value=0.1)
    expected, expected_info = core_update(grads, clipper)
    params = [_param(grad) for grad in grads]

    state, info = clip_(params, clipper)

    assert_same_values([param.grad for param in params], expected)
    assert bool(info.clipped)
    assert float(params[0].grad[0]) == float(torch.tensor(0.1, dtype=torch.float16))


# Clipping each tensor by its own norm -----------------------------------------------------------------


@settings(max_examples=15)  # each example runs the core in float64 on up to 10**6 values
@given(
    grads=gradient_lists(),
    norm_type=st.sampled_from(NORM_TYPES),
    max_norm_fraction=st.sampled_from([0.0, 0.01, 0.5, 1.0, 2.0]),
)
def test_clip_by_norm_matches_core(grads, norm_type, max_norm_fraction):
    # The threshold is a fraction of the largest tensor norm, so some tensors are clipped and some not.
    largest_norm = max([float(ops.global_norm([grad], norm_type)) for grad in grads], default=0.0)
    clipper = ops.ClipByNorm(max_norm=largest_norm * max_norm_fraction, norm_type=norm_type)
    expected, expected_info = core_update(grads, clipper)
    clipped = clone_all(grads)

    info = _foreach.clip_by_norm_(clipped, clipper)

    if info is None:
        # Only norms the float32 kernels cannot be trusted with go to the core: a global L2
        # norm, or a tensor's p-th power sum, so small that terms could have underflowed.
        def may_underflow(grad, p):
            norm = float(ops.global_norm([grad], p))
            return 1.0 < p < math.inf and 0.0 < norm and norm**p < grad.numel() * 2.0**-86

        assert float(expected_info.norm) < 2.0**-30 or any(may_underflow(grad, clipper.norm_type) for grad in grads)
        assert_same_values(clipped, grads)
        return
    assert_close_to_core(clipped, expected)
    torch.testing.assert_close(info.norm, expected_info.norm, rtol=NORM_RTOL, atol=0.0)
    torch.testing.assert_close(info.scale, expected_info.scale, rtol=NORM_RTOL, atol=0.0)
    assert bool(info.finite)


def test_clip_by_norm_per_tensor():
    grads = [torch.tensor([6.0, 8.0]), torch.full((2 * _foreach.SHORT,), 0.001), torch.zeros(3)]
    params = [_param(grad) for grad in grads]

    state, info = clip_(params, ops.ClipByNorm(max_norm=5.0))

    torch.testing.assert_close(params[0].grad, torch.tensor([3.0, 4.0]))
    assert_same_values([params[1].grad, params[2].grad], grads[1:])
    torch.testing.assert_close(info.scale, torch.tensor(0.5))
    assert bool(info.clipped)


@pytest.mark.parametrize("bad_value", NONFINITE_VALUES)
@pytest.mark.parametrize(
    ("path", "clipper"),
    [
        (_foreach.clip_by_norm_, ops.ClipByNorm(max_norm=1.0)),
        (_foreach.clip_by_value_, ops.ClipByValue(max_value=1.0)),
    ],
    ids=["clip_by_norm", "clip_by_value"],
)
def test_local_paths_hand_nonfinite_to_core(path, clipper, bad_value):
    grads = nonfinite_grads(bad_value)
    clipped = clone_all(grads)

    assert path(clipped, clipper) is None
    assert_same_values(clipped, grads)
