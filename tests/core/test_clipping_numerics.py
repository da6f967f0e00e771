"""Numerics of the clipping core: precision, overflow, low-precision dtypes, 0/0 and derivatives."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from optstrat.clipping import (
    AdaptiveClip,
    AutoClip,
    ClipByGlobalNorm,
    ClipByNorm,
    ClipByValue,
    ZClip,
    global_norm,
)
from optstrat.clipping._norms import accumulation

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
jnp = jax.numpy

TRUE_NORM_1000 = math.sqrt(1000) * 300.0  # 9486.832980505138
TRUE_NORM_100000 = math.sqrt(100000) * 300.0  # 94868.32980505138


def to_float64(array):
    if isinstance(array, torch.Tensor):
        return array.detach().double().numpy()
    if isinstance(array, jax.Array):
        return np.asarray(array.astype(jnp.float32), dtype=np.float64)
    return np.asarray(array, dtype=np.float64)


def full(namespace, shape, value, dtype_name):
    if namespace == "numpy":
        return np.full(shape, value, dtype=getattr(np, dtype_name))
    if namespace == "torch":
        return torch.full(shape if isinstance(shape, tuple) else (shape,), value, dtype=getattr(torch, dtype_name))
    return jnp.full(shape, value, dtype=getattr(jnp, dtype_name))


def test_jax_runs_without_float64():
    # The float32 path (rescaled by a power of two) is what JAX uses by default.
    assert not jax.config.jax_enable_x64
    assert accumulation(jnp, [jnp.zeros(2)]).rescale
    assert not accumulation(np, [np.zeros(2, dtype=np.float32)]).rescale


# Low-precision anchors: 1000 and 100000 values of 300 -------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "dtype_name"),
    [("numpy", "float16"), ("torch", "float16"), ("jax", "float16"), ("torch", "bfloat16"), ("jax", "bfloat16")],
)
@pytest.mark.parametrize(("count", "true_norm"), [(1000, TRUE_NORM_1000), (100000, TRUE_NORM_100000)])
def test_low_precision_norm_is_float32_and_finite(namespace, dtype_name, count, true_norm):
    grads = [full(namespace, count, 300.0, dtype_name)]

    norm = global_norm(grads)
    output, _, info = ClipByGlobalNorm(max_norm=1.0).update(grads, None)

    assert str(norm.dtype).endswith("float32")
    # float16 and bfloat16 represent 300 exactly, so the only error is float32 rounding.
    assert float(norm) == pytest.approx(true_norm, rel=1e-6)
    assert bool(info.finite)
    assert output[0].dtype == grads[0].dtype
    expected = 300.0 / true_norm
    np.testing.assert_allclose(to_float64(output[0]), expected, rtol=2**-7 if dtype_name == "bfloat16" else 2**-10)


@pytest.mark.parametrize("namespace", ["numpy", "torch", "jax"])
def test_mixed_precision_norm(namespace):
    dtypes = ["float16", "float32"] + (["bfloat16"] if namespace != "numpy" else [])
    grads = [full(namespace, 4, 3.0, name) for name in dtypes]

    norm = global_norm(grads)

    assert str(norm.dtype).endswith("float32")
    assert float(norm) == pytest.approx(6.0 * math.sqrt(len(dtypes)), rel=1e-7)


@pytest.mark.parametrize("namespace", ["numpy", "torch"])
def test_float64_input_gives_float64_norm(namespace):
    grads = [full(namespace, 3, 1e200, "float64"), full(namespace, 2, 1.0, "float32")]

    norm = global_norm(grads)

    assert str(norm.dtype).endswith("float64")
    assert float(norm) == pytest.approx(math.sqrt(3) * 1e200, rel=1e-15)


# Huge and tiny float32 values -------------------------------------------------------------------


@pytest.mark.parametrize("namespace", ["numpy", "torch", "jax"])
@pytest.mark.parametrize(
    ("value", "count", "norm_type", "expected"),
    [
        (1e38, 3, 2.0, math.sqrt(3) * 1e38),
        (3e37, 100, 2.0, 10 * 3e37),
        (1e37, 3, 1.0, 3e37),
        (1e37, 3, 3.0, 3 ** (1 / 3) * 1e37),
        (1e37, 3, 0.5, 9e37),
        (3e38, 3, math.inf, 3e38),
        (1e-30, 10, 2.0, math.sqrt(10) * 1e-30),
        (1e-30, 10, 3.0, 10 ** (1 / 3) * 1e-30),
        (1e-30, 10, 0.5, 100 * 1e-30),
        (1e-20, 1000, 2.0, math.sqrt(1000) * 1e-20),
    ],
)
def test_extreme_float32_norms_are_accurate(namespace, value, count, norm_type, expected):
    grads = [full(namespace, count, value, "float32")]

    norm = global_norm(grads, norm_type)
    clipped, _, info = ClipByNorm(max_norm=1.0, norm_type=norm_type).update(grads, None)

    assert str(norm.dtype).endswith("float32")
    assert float(norm) == pytest.approx(expected, rel=2e-6)
    assert bool(info.finite)
    # XLA flushes subnormal float32 factors (1 / norm below 2**-126) to zero.
    if 1.0 < expected < 2.0**126 or (expected > 1.0 and namespace != "jax"):
        assert float(global_norm(clipped, norm_type)) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("namespace", ["numpy", "torch", "jax"])
def test_norm_overflow_keeps_finite_flag(namespace):
    grads = [full(namespace, 10, 3e38, "float32")]

    _, _, info = ClipByGlobalNorm(max_norm=1.0).update(grads, None)

    assert math.isinf(float(info.norm))
    assert bool(info.finite)


@pytest.mark.parametrize("namespace", ["numpy", "torch", "jax"])
def test_squares_overflowing_float32_are_clipped(namespace):
    grads = [full(namespace, 4, 2e30, "float32"), full(namespace, 1, 1.0, "float32")]

    output, _, info = ClipByGlobalNorm(max_norm=1.0).update(grads, None)

    assert float(info.norm) == pytest.approx(4e30, rel=1e-6)
    np.testing.assert_allclose(to_float64(output[0]), 0.5, rtol=1e-6)
    np.testing.assert_allclose(to_float64(output[1]), 0.25e-30, rtol=1e-6)


@st.composite
def float32_arrays(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    exponent = draw(st.sampled_from([-30, -15, 0, 15, 30, 36]))
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 300, size=rng.integers(1, 6))
    return [(rng.normal(size=size) * 10.0**exponent).astype(np.float32) for size in sizes]


def reference_norm(values, norm_type):
    """The p-norm of all values, computed in float64 from their largest magnitude."""
    flat = np.concatenate(values).astype(np.float64)
    largest = np.max(np.abs(flat))
    if norm_type == math.inf or largest == 0:
        return largest
    return largest * np.sum((np.abs(flat) / largest) ** norm_type) ** (1 / norm_type)


@given(values=float32_arrays(), norm_type=st.sampled_from([2.0, 1.0, 3.0, 0.5, math.inf]))
def test_norm_matches_float64_reference(values, norm_type):
    expected = reference_norm(values, norm_type)
    if not expected < np.finfo(np.float32).max:
        return

    for namespace_values in (values, [torch.asarray(v) for v in values]):
        assert float(global_norm(namespace_values, norm_type)) == pytest.approx(expected, rel=1e-6)


@given(values=float32_arrays(), cuts=st.lists(st.integers(0, 1500), max_size=6))
def test_norm_independent_of_grouping(values, cuts):
    flat = np.concatenate(values)
    pieces = np.split(flat, sorted(cut % (flat.size + 1) for cut in cuts))

    for convert in (np.asarray, torch.asarray):
        whole = float(global_norm([convert(flat)]))
        assert float(global_norm([convert(piece) for piece in pieces])) == pytest.approx(whole, rel=1e-6)
        assert float(global_norm([convert(value) for value in values])) == pytest.approx(whole, rel=1e-6)


# The JAX float32 path compiles per shape, so it runs on a fixed table instead of Hypothesis.
JAX_SIZES = (5, 300, 64, 1, 1000)


@pytest.mark.parametrize("exponent", [-30, -15, 0, 15, 30, 36])
@pytest.mark.parametrize("seed", [0, 1])
def test_jax_float32_norm_accuracy_and_grouping(exponent, seed):
    rng = np.random.default_rng(seed)
    values = [(rng.normal(size=size) * 10.0**exponent).astype(np.float32) for size in JAX_SIZES]
    flat = np.concatenate(values)
    pieces = np.split(flat, [700, 701, 1200])
    norm = jax.jit(global_norm, static_argnums=1)

    for norm_type in (2.0, 1.0, 3.0, 0.5, math.inf):
        expected = reference_norm(values, norm_type)
        if not expected < np.finfo(np.float32).max:
            continue
        whole = float(norm([jnp.asarray(flat)], norm_type))
        assert whole == pytest.approx(expected, rel=1e-6)
        assert float(norm([jnp.asarray(value) for value in values], norm_type)) == pytest.approx(whole, rel=1e-6)
        assert float(norm([jnp.asarray(piece) for piece in pieces], norm_type)) == pytest.approx(whole, rel=1e-6)


# No 0/0 at the edges (NumPy warnings are errors in this suite) -------------------------------------


EDGE_CLIPPERS = [
    pytest.param(ClipByGlobalNorm(max_norm=0.0), id="global-0"),
    pytest.param(ClipByGlobalNorm(max_norm=0.0, norm_type=0.5), id="global-p0.5-0"),
    pytest.param(ClipByGlobalNorm(max_norm=0.0, norm_type=3.0), id="global-p3-0"),
    pytest.param(ClipByGlobalNorm(max_norm=0.0, norm_type=math.inf), id="global-inf-0"),
    pytest.param(ClipByNorm(max_norm=0.0), id="norm-0"),
    pytest.param(ClipByNorm(max_norm=0.0, norm_type=1.0), id="norm-l1-0"),
    pytest.param(ClipByValue(max_value=0.0), id="value-0"),
    pytest.param(AdaptiveClip(clipping=0.0, eps=0.0), id="agc-0"),
    pytest.param(AdaptiveClip(clipping=0.01, eps=0.0, unit_axis="first"), id="agc-eps-0"),
    pytest.param(AutoClip(percentile=0.0, history_size=2), id="autoclip-0"),
    pytest.param(AutoClip(percentile=100.0, history_size=1), id="autoclip-100"),
    pytest.param(ZClip(alpha=0.0, warmup_steps=1), id="zclip-alpha-0"),
    pytest.param(ZClip(alpha=1.0, z_threshold=1e-9, warmup_steps=2), id="zclip-alpha-1"),
]


@pytest.mark.parametrize("clipper", EDGE_CLIPPERS)
@pytest.mark.parametrize("namespace", ["numpy", "torch", "jax"])
def test_zero_gradients_never_divide_zero_by_zero(clipper, namespace):
    grads = [full(namespace, (2, 3), 0.0, "float32"), full(namespace, 3, 0.0, "float16")]
    update = jax.jit(clipper.update) if namespace == "jax" else clipper.update
    state = clipper.init(grads)

    for _ in range(4):
        output, state, info = update(grads, state, grads)
        for value in output:
            assert np.all(to_float64(value) == 0.0)
        assert float(info.norm) == 0.0
        assert float(info.scale) == 1.0
        assert bool(info.finite)
    for field in state:
        assert np.all(np.isfinite(to_float64(field)))


@pytest.mark.parametrize("clipper", EDGE_CLIPPERS)
def test_edges_with_gradients_stay_finite(clipper):
    steps = [np.array([[3.0, 4.0]]), np.array([[0.0, 0.0]]), np.array([[3.0, 4.0]]), np.array([[600.0, 800.0]])]
    params = [np.zeros((1, 2))]
    state = clipper.init([steps[0]])

    for grad in steps:
        output, state, info = clipper.update([grad], state, params)
        assert np.all(np.isfinite(output[0]))
        assert 0.0 <= float(info.scale) <= 1.0
    for field in state:
        assert np.all(np.isfinite(np.asarray(field)))


# Derivatives through the clippers ---------------------------------------------------------------


DIFFERENTIABLE_CLIPPERS = [
    pytest.param(ClipByGlobalNorm(max_norm=1.0), id="global"),
    pytest.param(ClipByGlobalNorm(max_norm=0.0), id="global-0"),
    pytest.param(ClipByGlobalNorm(max_norm=1.0, norm_type=0.5), id="global-p0.5"),
    pytest.param(ClipByGlobalNorm(max_norm=1.0, norm_type=3.0), id="global-p3"),
    pytest.param(ClipByGlobalNorm(max_norm=1.0, norm_type=1.0), id="global-l1"),
    pytest.param(ClipByGlobalNorm(max_norm=1.0, norm_type=math.inf), id="global-inf"),
    pytest.param(ClipByNorm(max_norm=1.0), id="norm"),
    pytest.param(ClipByNorm(max_norm=1.0, norm_type=0.5), id="norm-p0.5"),
    pytest.param(ClipByValue(max_value=1.0), id="value"),
    pytest.param(AdaptiveClip(), id="agc-last"),
    pytest.param(AdaptiveClip(unit_axis="first"), id="agc-first"),
    pytest.param(AutoClip(history_size=3), id="autoclip"),
    pytest.param(ZClip(warmup_steps=1), id="zclip"),
]


def differentiable_loss(clipper, xp_sum):
    def loss(grad, param):
        state = clipper.init([grad])
        total = 0.0
        for _ in range(3):
            output, state, info = clipper.update([grad], state, [param])
            total = total + xp_sum(output[0]) + info.norm + info.scale
        return total

    return loss


@pytest.mark.parametrize("clipper", DIFFERENTIABLE_CLIPPERS)
def test_jax_grad_is_finite(clipper):
    derivative = jax.jit(jax.grad(differentiable_loss(clipper, jnp.sum), argnums=(0, 1)))

    for grad_value in (0.0, 2.0):
        grad = jnp.full((2, 3), grad_value, dtype=jnp.float32)
        for result in derivative(grad, grad):
            assert np.all(np.isfinite(np.asarray(result))), grad_value


@pytest.mark.parametrize("clipper", DIFFERENTIABLE_CLIPPERS)
@pytest.mark.parametrize("grad_value", [0.0, 2.0])
def test_torch_autograd_is_finite(clipper, grad_value):
    grad = torch.full((2, 3), grad_value, requires_grad=True)
    param = torch.full((2, 3), grad_value, requires_grad=True)

    differentiable_loss(clipper, torch.sum)(grad, param).backward()

    assert torch.all(torch.isfinite(grad.grad))
    assert param.grad is None or torch.all(torch.isfinite(param.grad))


def test_jax_grad_of_clipped_norm_direction():
    # Below the threshold the clipper is the identity, so its Jacobian is the identity.
    clipper = ClipByGlobalNorm(max_norm=10.0)
    jacobian = jax.jacobian(lambda grad: clipper.update([grad], None)[0][0])(jnp.array([0.3, 0.4]))
    np.testing.assert_allclose(np.asarray(jacobian), np.eye(2), rtol=1e-6)
