"""Clipping parity with live PyTorch and Optax, and with timm's AGC formula as an oracle.

Known differences, each pinned by a test below:
- torch.nn.utils.clip_grad_norm_ scales by min(1, max_norm / (norm + 1e-6)); optstrat by
  min(1, max_norm / norm), like Optax.
- Optax returns NaN for zero gradients with max_norm=0; optstrat returns zeros.
- Optax squares float16 values in float16 and torch returns a float16 norm, so both
  overflow to an infinite norm and zero gradients where optstrat's float32 norm is finite.
- optax.adaptive_grad_clip and timm divide by max(||G_i||, 1e-6); optstrat by ||G_i||. The
  inputs here keep unit gradient norms above 1e-6, where both agree.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optstrat.clipping import AdaptiveClip, AutoClip, ClipByGlobalNorm, ClipByValue, EmptyState, global_norm

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
jnp = jax.numpy

# torch.nn.utils.clip_grad_norm_ adds this to the norm before dividing.
TORCH_EPSILON = 1e-6


# JAX compiles each operation once per shape, so the Optax tests draw from a fixed pool of shapes.
SHAPE_POOL = [(), (3,), (1, 4), (4, 1), (3, 4), (2, 3, 4), (1, 3, 4), (3, 3, 2, 4), (2, 3, 3, 2, 4)]


@st.composite
def gradient_sets(draw, pooled=False):
    """A list of 1 to 4 float64 arrays of random magnitude; random shapes, or shapes from SHAPE_POOL."""
    seed = draw(st.integers(0, 2**32 - 1))
    exponent = draw(st.floats(-3.0, 3.0))
    rng = np.random.default_rng(seed)
    count = int(rng.integers(1, 5))
    if pooled:
        shapes = [SHAPE_POOL[index] for index in rng.integers(0, len(SHAPE_POOL), size=count)]
    else:
        shapes = [tuple(int(size) for size in rng.integers(1, 5, size=rng.integers(0, 4))) for _ in range(count)]
    return [np.asarray(rng.normal(size=shape) * 10.0**exponent) for shape in shapes]


def torch_params(grads, dtype):
    params = []
    for grad in grads:
        param = torch.nn.Parameter(torch.zeros(grad.shape, dtype=dtype))
        param.grad = torch.tensor(grad, dtype=dtype)
        params.append(param)
    return params


# torch.nn.utils.clip_grad_norm_ and clip_grad_value_ ------------------------------------------------


@given(
    grads=gradient_sets(),
    # Thresholds far below float32's range make the float32 factor underflow differently in each library.
    max_norm=st.just(0.0) | st.floats(1e-30, 100.0),
    norm_type=st.sampled_from([2.0, 1.0, math.inf, 3.0, 0.5]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_global_norm_matches_torch(grads, max_norm, norm_type, dtype):
    params = torch_params(grads, dtype)
    torch_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type))
    torch_clipped = [param.grad.double().numpy() for param in params]

    inputs = [torch.tensor(grad, dtype=dtype) for grad in grads]
    output, _, info = ClipByGlobalNorm(max_norm=max_norm, norm_type=norm_type).update(inputs, EmptyState())

    rtol = 2e-6 if dtype == torch.float32 else 1e-12
    assert float(global_norm(inputs, norm_type)) == pytest.approx(torch_norm, rel=rtol)
    # Undo optstrat's factor and apply torch's, min(1, max_norm / (norm + 1e-6)).
    ours = float(info.scale)
    theirs = min(1.0, max_norm / (torch_norm + TORCH_EPSILON))
    for value, reference, grad in zip(output, torch_clipped, grads):
        assert value.dtype == dtype
        np.testing.assert_allclose(value.double().numpy(), grad * ours, rtol=rtol, atol=1e-300)
        np.testing.assert_allclose(grad * theirs, reference, rtol=rtol, atol=1e-300)
    assert ours == pytest.approx(min(1.0, max_norm / torch_norm) if torch_norm > 0 else 1.0, rel=rtol)


def test_torch_epsilon_difference_at_threshold():
    # With the norm exactly at max_norm torch still scales by 13 / (13 + 1e-6); optstrat leaves it.
    params = torch_params([np.array([3.0, 4.0]), np.array([12.0])], torch.float32)
    torch.nn.utils.clip_grad_norm_(params, 13.0)

    output, _, info = ClipByGlobalNorm(max_norm=13.0).update(
        [torch.tensor([3.0, 4.0]), torch.tensor([12.0])], EmptyState()
    )

    assert params[0].grad.tolist() == pytest.approx([3.0 * 13 / (13 + 1e-6), 4.0 * 13 / (13 + 1e-6)], rel=1e-7)
    assert params[0].grad[1].item() < 4.0
    assert output[0].tolist() == [3.0, 4.0]
    assert float(info.scale) == 1.0


@given(grads=gradient_sets(), max_value=st.floats(0.0, 10.0))
def test_value_matches_torch(grads, max_value):
    params = torch_params(grads, torch.float32)
    torch.nn.utils.clip_grad_value_(params, max_value)

    output, _, _ = ClipByValue(max_value=max_value).update(
        [torch.tensor(grad, dtype=torch.float32) for grad in grads], EmptyState()
    )

    for value, param in zip(output, params):
        assert torch.equal(value, param.grad)


# optax.clip_by_global_norm, optax.clip ------------------------------------------------------------


# Each example runs Optax and optstrat eagerly in JAX, which dispatches slowly, so fewer examples run.
@settings(max_examples=20)
@given(grads=gradient_sets(pooled=True), max_norm=st.floats(1e-3, 100.0))
def test_global_norm_matches_optax(grads, max_norm):
    inputs = [jnp.asarray(grad, dtype=jnp.float32) for grad in grads]
    transform = optax.clip_by_global_norm(max_norm)
    reference, _ = transform.update(inputs, transform.init(inputs))

    output, _, info = ClipByGlobalNorm(max_norm=max_norm).update(inputs, EmptyState())

    assert float(info.norm) == pytest.approx(float(optax.tree.norm(inputs)), rel=2e-6)
    for value, expected in zip(output, reference):
        assert value.dtype == expected.dtype
        np.testing.assert_allclose(np.asarray(value), np.asarray(expected), rtol=2e-6, atol=1e-30)


def test_zero_max_norm_differs_from_optax():
    inputs = [jnp.zeros(3), jnp.zeros((2, 2))]
    transform = optax.clip_by_global_norm(0.0)
    reference, _ = transform.update(inputs, transform.init(inputs))

    output, _, _ = ClipByGlobalNorm(max_norm=0.0).update(inputs, EmptyState())

    assert all(bool(jnp.all(jnp.isnan(value))) for value in reference)
    assert all(bool(jnp.all(value == 0.0)) for value in output)


@given(grads=gradient_sets(pooled=True), max_value=st.floats(0.0, 10.0))
def test_value_matches_optax(grads, max_value):
    inputs = [jnp.asarray(grad, dtype=jnp.float32) for grad in grads]
    transform = optax.clip(max_value)
    reference, _ = transform.update(inputs, transform.init(inputs))

    output, _, _ = ClipByValue(max_value=max_value).update(inputs, EmptyState())

    for value, expected in zip(output, reference):
        np.testing.assert_array_equal(np.asarray(value), np.asarray(expected))


# Float16 and bfloat16: 1000 and 100000 values of 300 ----------------------------------------------


@pytest.mark.parametrize(("count", "torch_norm"), [(1000, 9488.0), (100000, math.inf)])
def test_float16_anchor_against_torch(count, torch_norm):
    params = torch_params([np.full(count, 300.0)], torch.float16)
    reference = torch.nn.utils.clip_grad_norm_(params, 1.0)

    output, _, info = ClipByGlobalNorm(max_norm=1.0).update([torch.full((count,), 300.0, dtype=torch.float16)], None)

    true_norm = math.sqrt(count) * 300.0
    assert reference.dtype == torch.float16
    assert float(reference) == torch_norm
    assert info.norm.dtype == torch.float32
    assert float(info.norm) == pytest.approx(true_norm, rel=1e-6)
    np.testing.assert_allclose(output[0].double().numpy(), 300.0 / true_norm, rtol=2**-10)
    if math.isinf(torch_norm):
        assert torch.all(params[0].grad == 0)


@pytest.mark.parametrize(("count", "dtype"), [(1000, jnp.float16), (100000, jnp.float16), (1000, jnp.bfloat16)])
def test_low_precision_anchor_against_optax(count, dtype):
    inputs = [jnp.full(count, 300.0, dtype=dtype)]
    transform = optax.clip_by_global_norm(1.0)
    reference, _ = transform.update(inputs, transform.init(inputs))

    output, _, info = ClipByGlobalNorm(max_norm=1.0).update(inputs, EmptyState())

    true_norm = math.sqrt(count) * 300.0
    assert float(info.norm) == pytest.approx(true_norm, rel=1e-6)
    ours = np.asarray(output[0].astype(jnp.float32), dtype=np.float64)
    np.testing.assert_allclose(ours, 300.0 / true_norm, rtol=2**-7)
    if dtype == jnp.float16:
        # Optax squares in float16: the norm overflows and the finite gradients become zero.
        assert math.isinf(float(optax.tree.norm(inputs)))
        assert bool(jnp.all(reference[0] == 0))
    else:
        # bfloat16 has float32's range, so optax's norm (9472 in bfloat16) only loses precision.
        np.testing.assert_allclose(np.asarray(reference[0].astype(jnp.float32)), ours, rtol=2**-6)


# AGC: optax.adaptive_grad_clip and timm's adaptive_clip_grad -----------------------------------------


@st.composite
def agc_pairs(draw):
    """(grad, param) pairs of rank 0 to 5 from SHAPE_POOL, with unit norms far above 1e-6."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    pairs = []
    for index in rng.integers(0, len(SHAPE_POOL), size=rng.integers(1, 4)):
        shape = SHAPE_POOL[index]
        param = rng.normal(size=shape) * 10.0 ** rng.uniform(-4, 1)
        grad = rng.normal(size=shape) * 10.0 ** rng.uniform(-2, 1)
        pairs.append((np.asarray(grad), np.asarray(param)))
    return pairs


@settings(max_examples=20)
@given(pairs=agc_pairs(), clipping=st.floats(1e-3, 1.0), eps=st.sampled_from([1e-3, 1e-2]))
def test_agc_last_matches_optax(pairs, clipping, eps):
    grads = [jnp.asarray(grad, dtype=jnp.float32) for grad, _ in pairs]
    params = [jnp.asarray(param, dtype=jnp.float32) for _, param in pairs]
    transform = optax.adaptive_grad_clip(clipping, eps=eps)
    reference, _ = transform.update(grads, transform.init(params), params)

    output, _, _ = AdaptiveClip(clipping=clipping, eps=eps, unit_axis="last").update(grads, EmptyState(), params)

    for value, expected in zip(output, reference):
        assert value.shape == expected.shape
        np.testing.assert_allclose(np.asarray(value), np.asarray(expected), rtol=2e-6, atol=1e-30)


def timm_adaptive_clip(grads, params, clip_factor, eps):
    """timm's adaptive_clip_grad rule in NumPy: unit norms over dims 1..n-1 (whole tensor for ndim <= 1).

    max_norm = clip_factor * max(||W_i||, eps); G_i is kept if ||G_i|| < max_norm,
    else scaled by max_norm / max(||G_i||, 1e-6).
    """
    result = []
    for grad, param in zip(grads, params):
        axes = None if grad.ndim <= 1 else tuple(range(1, grad.ndim))
        param_norm = np.sqrt(np.sum(param**2, axis=axes, keepdims=grad.ndim > 1))
        grad_norm = np.sqrt(np.sum(grad**2, axis=axes, keepdims=grad.ndim > 1))
        max_norm = np.maximum(param_norm, eps) * clip_factor
        clipped = grad * (max_norm / np.maximum(grad_norm, 1e-6))
        result.append(np.where(grad_norm < max_norm, grad, clipped))
    return result


@given(pairs=agc_pairs(), clipping=st.floats(1e-3, 1.0), eps=st.sampled_from([1e-3, 1e-2]))
def test_agc_first_matches_timm_formula(pairs, clipping, eps):
    grads = [grad for grad, _ in pairs]
    params = [param for _, param in pairs]
    expected = timm_adaptive_clip(grads, params, clipping, eps)

    output, _, _ = AdaptiveClip(clipping=clipping, eps=eps, unit_axis="first").update(
        [torch.tensor(grad) for grad in grads], EmptyState(), [torch.tensor(param) for param in params]
    )

    for value, reference in zip(output, expected):
        assert tuple(value.shape) == reference.shape
        np.testing.assert_allclose(value.numpy(), reference, rtol=1e-12, atol=1e-300)


def test_agc_layouts_agree_on_transposed_weights():
    rng = np.random.default_rng(4)
    torch_weight = rng.normal(size=(8, 5))
    torch_grad = rng.normal(size=(8, 5))

    first, _, _ = AdaptiveClip(clipping=0.05, unit_axis="first").update([torch_grad], EmptyState(), [torch_weight])
    last, _, _ = AdaptiveClip(clipping=0.05, unit_axis="last").update([torch_grad.T], EmptyState(), [torch_weight.T])

    np.testing.assert_allclose(first[0], last[0].T, rtol=1e-12)


# AutoClip against its reference loop with torch.nn.utils.clip_grad_norm_ ---------------------------------


@pytest.mark.parametrize("percentile", [10.0, 50.0])
def test_autoclip_matches_torch_reference_loop(percentile):
    rng = np.random.default_rng(12)
    norms_seen = []
    clipper = AutoClip(percentile=percentile, history_size=1000)
    state = None

    for step in range(30):
        grads = [rng.normal(size=(3, 2)) * math.exp(rng.normal()), rng.normal(size=4)]
        # The reference records the total norm, then clips to the percentile of all norms so far.
        params = torch_params(grads, torch.float64)
        norms_seen.append(float(torch.nn.utils.get_total_norm([param.grad for param in params])))
        threshold = float(np.percentile(norms_seen, percentile))
        torch.nn.utils.clip_grad_norm_(params, threshold)

        inputs = [torch.tensor(grad) for grad in grads]
        state = clipper.init(inputs) if state is None else state
        output, state, info = clipper.update(inputs, state)

        norm = norms_seen[-1]
        torch_factor = min(1.0, threshold / (norm + TORCH_EPSILON))
        ours = float(info.scale)
        assert ours == pytest.approx(min(1.0, threshold / norm), rel=1e-12)
        for value, param, grad in zip(output, params, grads):
            np.testing.assert_allclose(value.numpy() * torch_factor / ours, param.grad.numpy(), rtol=1e-12)
        if step == 0:
            assert not bool(info.clipped)
