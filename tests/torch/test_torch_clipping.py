"""In-place clipping of torch gradients: anchors, parity with torch.nn.utils.clip_grad_norm_, policies, inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

torch = pytest.importorskip("torch")

import optstrat as ops  # noqa: E402
from optstrat.clipping import NonFiniteGradientError  # noqa: E402
from optstrat_torch import clip_, clip_grad_norm_  # noqa: E402
from tests.kind_examples import CLIPPER_EXAMPLES  # noqa: E402

# torch.nn.utils.clip_grad_norm_ multiplies by min(1, max_norm / (norm + TORCH_EPSILON)).
TORCH_EPSILON = 1e-6
NORM_TYPES = [2.0, 1.0, math.inf, 3.0]


def params_with_grads(*grads, dtype=None):
    """Return parameters whose ``.grad`` is a copy of each of ``grads`` (None stays None)."""
    params = []
    for grad in grads:
        values = torch.as_tensor(grad if grad is not None else [0.0], dtype=dtype)
        param = torch.nn.Parameter(torch.zeros_like(values))
        param.grad = None if grad is None else values.clone()
        params.append(param)
    return params


def grads_of(params):
    return [param.grad for param in params]


def anchor_params(dtype=torch.float32):
    return params_with_grads([3.0, 4.0], [12.0], dtype=dtype)


# Anchors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("norm_type", "expected"), [(2.0, 13.0), (1.0, 19.0), (math.inf, 12.0), ("inf", 12.0)])
def test_anchor_norms(norm_type, expected):
    params = params_with_grads([3.0, -4.0], [12.0])

    norm = clip_grad_norm_(params, max_norm=100.0, norm_type=norm_type)

    assert norm.dtype == torch.float32
    assert norm.shape == ()
    assert norm.item() == expected


def test_anchor_clipped_to_one():
    params = anchor_params()

    norm = clip_grad_norm_(params, max_norm=1.0)

    assert norm.item() == 13.0
    torch.testing.assert_close(params[0].grad, torch.tensor([3.0, 4.0]) / 13.0)
    torch.testing.assert_close(params[1].grad, torch.tensor([12.0]) / 13.0)


def test_anchor_at_max_norm_unchanged():
    params = anchor_params()
    torch_params = anchor_params()

    clip_grad_norm_(params, max_norm=13.0)
    torch.nn.utils.clip_grad_norm_(torch_params, max_norm=13.0)

    assert torch.equal(params[0].grad, torch.tensor([3.0, 4.0]))
    assert torch.equal(params[1].grad, torch.tensor([12.0]))
    # torch scales by 13 / (13 + 1e-6), just below 1.
    assert torch.all(torch_params[0].grad < params[0].grad)


def test_anchor_below_max_norm_is_unchanged():
    params = anchor_params()

    clip_grad_norm_(params, max_norm=100.0)

    assert torch.equal(params[0].grad, torch.tensor([3.0, 4.0]))
    assert torch.equal(params[1].grad, torch.tensor([12.0]))


def test_zero_max_norm_gives_zeros_without_nan():
    zero_params = params_with_grads([0.0, 0.0], [0.0])
    anchor = anchor_params()

    assert clip_grad_norm_(zero_params, max_norm=0.0).item() == 0.0
    clip_grad_norm_(anchor, max_norm=0.0)

    for grad in grads_of(zero_params) + grads_of(anchor):
        assert torch.equal(grad, torch.zeros_like(grad))


def test_float64_gradients_give_float64_norm():
    params = anchor_params(dtype=torch.float64)

    norm = clip_grad_norm_(params, max_norm=1.0)

    assert norm.dtype == torch.float64
    assert norm.item() == 13.0
    assert params[0].grad.dtype == torch.float64


def test_float16_norm_no_overflow():
    # 10**5 values of 300 have norm 94868.3, above the float16 maximum of 65504.
    grad = torch.full((10**5,), 300.0, dtype=torch.float16)
    params = params_with_grads(grad)
    torch_params = params_with_grads(grad)

    norm = clip_grad_norm_(params, max_norm=1.0)
    torch_norm = torch.nn.utils.clip_grad_norm_(torch_params, max_norm=1.0)

    assert norm.dtype == torch.float32
    assert norm.item() == pytest.approx(300.0 * math.sqrt(10**5), rel=1e-6)
    assert params[0].grad.dtype == torch.float16
    torch.testing.assert_close(params[0].grad, torch.full_like(grad, 1.0 / math.sqrt(10**5)))
    # torch measures in float16, so its norm overflows and every gradient becomes 0.
    assert math.isinf(torch_norm.item())
    assert torch.equal(torch_params[0].grad, torch.zeros_like(grad))


def test_tiny_float32_norm_no_underflow():
    grads = [[0.0], [1e-30, 1e-30]]
    params = params_with_grads(*grads)
    torch_params = params_with_grads(*grads)

    norm = clip_grad_norm_(params, max_norm=1.0)
    torch_norm = torch.nn.utils.clip_grad_norm_(torch_params, max_norm=1.0)

    assert norm.item() == pytest.approx(math.sqrt(2.0) * 1e-30, rel=1e-6)
    # torch squares in float32, where 1e-60 underflows to 0.
    assert torch_norm.item() == 0.0


def test_mixed_dtypes_keep_their_dtype():
    params = [*params_with_grads([3.0, 4.0], dtype=torch.float16), *params_with_grads([12.0], dtype=torch.float32)]

    norm = clip_grad_norm_(params, max_norm=1.0)

    assert norm.item() == 13.0
    assert params[0].grad.dtype == torch.float16
    assert params[1].grad.dtype == torch.float32
    torch.testing.assert_close(params[0].grad, torch.tensor([3.0, 4.0], dtype=torch.float16) / 13.0)


# Parameters: tensors, generators, None gradients -----------------------------------------------------


def test_none_grads_are_skipped():
    params = params_with_grads([3.0, 4.0], None)

    norm = clip_grad_norm_(params, max_norm=1.0)

    assert norm.item() == 5.0
    torch.testing.assert_close(params[0].grad, torch.tensor([0.6, 0.8]))
    assert params[1].grad is None


def test_generator_is_read_once():
    params = anchor_params()

    norm = clip_grad_norm_((param for param in params), max_norm=1.0)

    assert norm.item() == 13.0
    torch.testing.assert_close(params[1].grad, torch.tensor([12.0]) / 13.0)


def test_model_parameters_generator():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    model(torch.randn(4, 3)).sum().backward()
    expected = torch.linalg.vector_norm(torch.cat([param.grad.flatten() for param in model.parameters()]))

    norm = clip_grad_norm_(model.parameters(), max_norm=0.1)

    torch.testing.assert_close(norm, expected)
    clipped = torch.linalg.vector_norm(torch.cat([param.grad.flatten() for param in model.parameters()]))
    torch.testing.assert_close(clipped, torch.tensor(0.1))


def test_single_tensor_parameter():
    (param,) = params_with_grads([3.0, 4.0])

    assert clip_grad_norm_(param, max_norm=1.0).item() == 5.0
    torch.testing.assert_close(param.grad, torch.tensor([0.6, 0.8]))


@pytest.mark.parametrize("parameters", [[], (), "generator"])
def test_no_gradients_give_zero_norm(parameters):
    if parameters == "generator":
        parameters = (param for param in params_with_grads(None, None))

    norm = clip_grad_norm_(parameters, max_norm=1.0)

    assert torch.equal(norm, torch.tensor(0.0))


def test_gradients_are_changed_in_place():
    params = anchor_params()
    before = grads_of(params)
    pointers = [grad.data_ptr() for grad in before]

    clip_grad_norm_(params, max_norm=1.0)

    assert all(param.grad is grad for param, grad in zip(params, before))
    assert [grad.data_ptr() for grad in grads_of(params)] == pointers


def test_norm_is_not_part_of_the_autograd_graph():
    weight = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    (weight * weight).sum().backward()

    norm = clip_grad_norm_([weight], max_norm=1.0)

    assert not norm.requires_grad
    assert not weight.grad.requires_grad


# Parity with torch.nn.utils.clip_grad_norm_ --------------------------------------------------------


@st.composite
def gradient_arrays(draw, dtype=np.float64):
    count = draw(st.integers(min_value=1, max_value=4))
    shapes = draw(st.lists(hnp.array_shapes(min_dims=0, max_dims=3, max_side=5), min_size=count, max_size=count))
    # Magnitudes below 2**-20 are left out: torch squares float32 values in float32, so tiny
    # norms underflow there (see test_tiny_float32_norm_no_underflow).
    width = np.dtype(dtype).itemsize * 8
    magnitudes = st.floats(min_value=2.0**-20, max_value=100.0, width=width)
    elements = st.one_of(st.just(0.0), magnitudes, magnitudes.map(lambda value: -value))
    return [draw(hnp.arrays(dtype, shape, elements=elements)) for shape in shapes]


def torch_scale_ratio(norm, max_norm):
    """Return optstrat's scale divided by torch's, which adds 1e-6 to the norm."""
    ours = min(1.0, max_norm / norm) if norm > 0 else 1.0
    theirs = min(1.0, max_norm / (norm + TORCH_EPSILON))
    return ours / theirs


@given(
    arrays=gradient_arrays(),
    max_norm=st.floats(min_value=0.01, max_value=300.0),
    norm_type=st.sampled_from(NORM_TYPES),
)
def test_clip_grad_norm_matches_torch_float64(arrays, max_norm, norm_type):
    params = params_with_grads(*arrays)
    torch_params = params_with_grads(*arrays)

    norm = clip_grad_norm_(params, max_norm, norm_type)
    torch_norm = torch.nn.utils.clip_grad_norm_(torch_params, max_norm, norm_type)

    assert norm.dtype == torch_norm.dtype == torch.float64
    torch.testing.assert_close(norm, torch_norm, rtol=1e-12, atol=0.0)
    ratio = torch_scale_ratio(torch_norm.item(), max_norm)
    # The ratio is 1 + 1e-6 / norm where both clip, and at most that where only torch clips.
    assert 1.0 <= ratio <= 1.0 + TORCH_EPSILON / max(torch_norm.item(), 1e-300) + 1e-15
    for ours, theirs in zip(grads_of(params), grads_of(torch_params)):
        torch.testing.assert_close(ours, theirs * ratio, rtol=1e-12, atol=0.0)


@given(
    arrays=gradient_arrays(dtype=np.float32),
    max_norm=st.floats(min_value=0.01, max_value=300.0),
    norm_type=st.sampled_from(NORM_TYPES),
)
def test_clip_grad_norm_matches_torch_float32(arrays, max_norm, norm_type):
    params = params_with_grads(*arrays)
    torch_params = params_with_grads(*arrays)

    norm = clip_grad_norm_(params, max_norm, norm_type)
    torch_norm = torch.nn.utils.clip_grad_norm_(torch_params, max_norm, norm_type)

    assert norm.dtype == torch_norm.dtype == torch.float32
    # optstrat accumulates float32 gradients in float64, torch in float32.
    torch.testing.assert_close(norm, torch_norm, rtol=1e-5, atol=0.0)
    ratio = torch_scale_ratio(norm.item(), max_norm)
    for ours, theirs in zip(grads_of(params), grads_of(torch_params)):
        torch.testing.assert_close(ours, theirs * ratio, rtol=1e-5, atol=1e-30)


# Non-finite gradients ------------------------------------------------------------------------------

NONFINITE_VALUES = [math.nan, math.inf, -math.inf]


def nonfinite_params(bad_value):
    return params_with_grads([3.0, 4.0], [12.0, bad_value])


@pytest.mark.parametrize("bad_value", NONFINITE_VALUES)
def test_skip_zeroes_grads_reports_not_finite(bad_value):
    params = nonfinite_params(bad_value)

    _, info = clip_(params, ops.ClipByGlobalNorm(max_norm=1.0, nonfinite="skip"))

    assert not bool(info.finite)
    assert info.scale.item() == 0.0
    for grad in grads_of(params):
        assert torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize("bad_value", NONFINITE_VALUES)
def test_skip_is_the_default_of_clip_grad_norm(bad_value):
    params = nonfinite_params(bad_value)

    norm = clip_grad_norm_(params, max_norm=1.0)

    assert not math.isfinite(norm.item())
    for grad in grads_of(params):
        assert torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize("bad_value", NONFINITE_VALUES)
def test_error_leaves_grads_untouched(bad_value):
    params = nonfinite_params(bad_value)
    before = [grad.clone() for grad in grads_of(params)]

    with pytest.raises(NonFiniteGradientError, match="gradients contain NaN or infinity"):
        clip_grad_norm_(params, max_norm=1.0, nonfinite="error")

    for grad, old in zip(grads_of(params), before):
        torch.testing.assert_close(grad, old, rtol=0.0, atol=0.0, equal_nan=True)


@pytest.mark.parametrize("norm_type", NORM_TYPES)
def test_error_policy_raises_before_any_change(norm_type):
    params = params_with_grads([30.0, 40.0], [1.0, math.nan])
    clipper = ops.ClipByGlobalNorm(max_norm=1.0, norm_type=norm_type, nonfinite="error")

    with pytest.raises(NonFiniteGradientError):
        clip_(params, clipper)

    assert torch.equal(params[0].grad, torch.tensor([30.0, 40.0]))


@pytest.mark.parametrize("bad_value", NONFINITE_VALUES)
def test_propagate_leaves_gradients_as_they_are(bad_value):
    params = nonfinite_params(bad_value)
    before = [grad.clone() for grad in grads_of(params)]

    _, info = clip_(params, ops.ClipByGlobalNorm(max_norm=1.0, nonfinite="propagate"))

    assert not bool(info.finite)
    for grad, old in zip(grads_of(params), before):
        torch.testing.assert_close(grad, old, rtol=0.0, atol=0.0, equal_nan=True)


def test_torch_turns_infinity_into_nan_and_zeros():
    # The known difference: torch multiplies by max_norm / inf = 0, so finite values become
    # 0 and infinite ones NaN. optstrat's default policy zeroes the whole update instead.
    params = nonfinite_params(math.inf)

    torch.nn.utils.clip_grad_norm_(params, max_norm=1.0)

    assert torch.equal(params[0].grad, torch.zeros(2))
    assert params[1].grad[0].item() == 0.0
    assert math.isnan(params[1].grad[1].item())


# clip_ with every clipper --------------------------------------------------------------------------

CLIPPERS = [
    pytest.param(clipper, id=f"{kind}-{index}")
    for kind, clippers in CLIPPER_EXAMPLES.items()
    for index, clipper in enumerate(clippers)
]


def assert_states_equal(ours, reference):
    assert type(ours) is type(reference)
    for our_field, reference_field in zip(ours, reference):
        assert torch.equal(torch.as_tensor(our_field), torch.as_tensor(reference_field))


@pytest.mark.parametrize("clipper", CLIPPERS)
def test_clip_matches_core_update(clipper):
    generator = torch.Generator().manual_seed(1)
    shapes = [(3, 4), (4,), (2, 3, 2)]
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in shapes]
    state = None
    reference_state = clipper.init([torch.zeros(shape) for shape in shapes])

    for round_index in range(4):
        grads = [torch.randn(shape, generator=generator) * 10.0 ** (round_index - 1) for shape in shapes]
        for param, grad in zip(params, grads):
            param.grad = grad.clone()
        with torch.no_grad():
            expected, reference_state, expected_info = clipper.update(
                [grad.clone() for grad in grads], reference_state, [param.detach() for param in params]
            )

        state, info = clip_(params, clipper, state)

        assert_states_equal(state, reference_state)
        if type(clipper) is ops.ClipByGlobalNorm:
            # The torch._foreach_* fast path sums in another order, so its norm, and with it
            # the scale, may differ from the core's by float32 rounding. test_torch_foreach.py
            # checks that it equals the core given the same norm.
            for param, value in zip(params, expected):
                torch.testing.assert_close(param.grad, value, rtol=1e-6, atol=0.0)
            torch.testing.assert_close(info.norm, expected_info.norm, rtol=1e-6, atol=0.0)
            torch.testing.assert_close(info.scale, expected_info.scale, rtol=1e-6, atol=0.0)
            assert torch.equal(info.finite, expected_info.finite)
            assert torch.equal(info.clipped, expected_info.clipped)
            continue
        for param, value in zip(params, expected):
            assert torch.equal(param.grad, value)
        for field, expected_field in zip(info, expected_info):
            assert torch.equal(field, expected_field)


def test_clip_passes_params_of_present_gradients():
    # Adaptive clipping needs each gradient's parameter, and a parameter without a gradient is left out.
    first = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    without_grad = torch.nn.Parameter(torch.tensor([1.0, 1.0, 1.0]))
    last = torch.nn.Parameter(torch.tensor([0.0, 0.0]))
    first.grad = torch.tensor([1.0, 0.0])
    last.grad = torch.tensor([1.0, 0.0])

    _, info = clip_([first, without_grad, last], ops.AdaptiveClip(clipping=0.1, unit_axis="first"))

    torch.testing.assert_close(first.grad, torch.tensor([0.5, 0.0]))
    # A zero parameter uses the eps floor: limit 0.1 * 1e-3.
    torch.testing.assert_close(last.grad, torch.tensor([1e-4, 0.0]))
    assert without_grad.grad is None
    assert bool(info.clipped)


def test_clip_without_gradients_returns_state_unchanged():
    clipper = ops.ClipByGlobalNorm(max_norm=1.0)
    params = params_with_grads(None)
    state = clipper.init([])

    new_state, info = clip_(params, clipper, state)

    assert new_state is state
    assert info.norm.item() == 0.0
    assert info.scale.item() == 1.0
    assert bool(info.finite)
    assert not bool(info.clipped)


# Input checks --------------------------------------------------------------------------------------


def test_non_clipper_raises():
    with pytest.raises(TypeError, match="clipper must be an optstrat clipper such as ClipByGlobalNorm.*got 'norm' \\(str\\)"):
        clip_(anchor_params(), "norm")


def test_non_iterable_parameters_raise():
    with pytest.raises(TypeError, match="parameters must be a tensor or an iterable of tensors.*got int"):
        clip_grad_norm_(3, max_norm=1.0)


def test_non_tensor_parameter_raises():
    with pytest.raises(TypeError, match=r"parameters\[1\] must be a torch.Tensor, got float"):
        clip_grad_norm_([anchor_params()[0], 2.0], max_norm=1.0)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"max_norm": -1.0}, "max_norm must be a finite number >= 0, got -1.0"),
        ({"max_norm": math.nan}, "max_norm must be a finite number >= 0, got nan"),
        ({"max_norm": 1.0, "norm_type": 0}, "norm_type must be a number > 0 or 'inf', got 0"),
        ({"max_norm": 1.0, "nonfinite": "ignore"}, "nonfinite must be one of 'skip', 'error', 'propagate', got 'ignore'"),
    ],
)
def test_invalid_clip_grad_norm_arguments_raise(arguments, message):
    params = anchor_params()

    with pytest.raises(ValueError, match=message):
        clip_grad_norm_(params, **arguments)

    assert torch.equal(params[0].grad, torch.tensor([3.0, 4.0]))
