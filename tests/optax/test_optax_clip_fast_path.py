"""The one-pass path of ``clip_by_global_norm`` in the Optax adapter, held equal to the core's ClipByGlobalNorm."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import optstrat as ops
from optstrat.clipping import EmptyState, NonFiniteGradientError
from optstrat_optax import clip, clip_by_global_norm
from optstrat_optax._clipping import _takes_fast_path

# Both sum the same float32 squares, but XLA may order the sums differently under jit.
RTOL = 1e-6


@st.composite
def gradient_lists(draw):
    count = draw(st.integers(min_value=1, max_value=4))
    rng = np.random.default_rng(draw(st.integers(min_value=0, max_value=2**32 - 1)))
    grads = []
    for _ in range(count):
        dtype = draw(st.sampled_from([jnp.float16, jnp.bfloat16, jnp.float32]))
        shape = draw(st.sampled_from([(0,), (1,), (7,), (3, 5), (300,)]))
        exponent = draw(st.integers(min_value=-8, max_value=8) if dtype == jnp.float16 else st.integers(min_value=-30, max_value=30))
        grads.append(jnp.asarray(rng.standard_normal(shape) * 2.0**exponent, dtype=dtype))
    return grads


def core_update(grads, clipper):
    """Return the core's result, computed eagerly on the same JAX arrays."""
    clipped, _, info = clipper.update(list(grads), EmptyState())
    return clipped, info


def jitted_update(grads, clipper):
    transform = clip(clipper)
    clipped, state = jax.jit(transform.update)(list(grads), transform.init(list(grads)))
    return clipped, state.info


def assert_leaves_close(actual, expected):
    assert len(actual) == len(expected)
    for ours, reference in zip(actual, expected):
        assert ours.dtype == reference.dtype
        assert ours.shape == reference.shape
        rtol = RTOL if reference.dtype == jnp.float32 else 1e-2
        np.testing.assert_allclose(np.asarray(ours, dtype=np.float64), np.asarray(reference, dtype=np.float64), rtol=rtol, atol=0.0)


@settings(max_examples=20)  # each example compiles a new jit program
@given(grads=gradient_lists(), fraction=st.sampled_from([0.0, 0.01, 0.5, 1.0, 2.0]))
def test_matches_core(grads, fraction):
    reference_norm = float(ops.global_norm(grads))
    clipper = ops.ClipByGlobalNorm(max_norm=reference_norm * fraction)
    expected, expected_info = core_update(grads, clipper)

    clipped, info = jitted_update(grads, clipper)

    assert_leaves_close(clipped, expected)
    assert info.norm.dtype == expected_info.norm.dtype == jnp.float32
    np.testing.assert_allclose(info.norm, expected_info.norm, rtol=RTOL, atol=0.0)
    np.testing.assert_allclose(info.scale, expected_info.scale, rtol=RTOL, atol=0.0)
    assert bool(info.finite)


def test_no_clipping_returns_same_values():
    grads = [jnp.array([3.0, -4.0]), jnp.array([12.0], dtype=jnp.bfloat16)]

    clipped, info = jitted_update(grads, ops.ClipByGlobalNorm(max_norm=100.0))

    for ours, original in zip(clipped, grads):
        assert ours.dtype == original.dtype
        np.testing.assert_array_equal(ours, original)
    assert float(info.scale) == 1.0
    assert not bool(info.clipped)


@pytest.mark.parametrize(
    ("grads", "expected_norm"),
    [
        # Squares of 1e30 overflow float32; the norm fits.
        ([jnp.full((1000,), 1e30), jnp.array([-2e30])], math.sqrt(1000 * 1e60 + 4e60)),
        # Squares of 1e-30 underflow float32.
        ([jnp.full((100,), 1e-30), jnp.array([0.0, 3e-31])], math.sqrt(100 * 1e-60 + 9e-62)),
        ([jnp.zeros(5), jnp.zeros((2, 2))], 0.0),
        ([jnp.zeros((0,)), jnp.array([3.0, 4.0])], 5.0),
    ],
    ids=["overflowing-squares", "underflowing-squares", "zeros", "empty-leaf"],
)
def test_values_outside_float32_squares(grads, expected_norm):
    clipper = ops.ClipByGlobalNorm(max_norm=1.0)
    expected, expected_info = core_update(grads, clipper)

    clipped, info = jitted_update(grads, clipper)

    assert float(info.norm) == pytest.approx(expected_norm, rel=RTOL)
    np.testing.assert_allclose(info.norm, expected_info.norm, rtol=RTOL)
    assert bool(info.finite)
    assert_leaves_close(clipped, expected)


@pytest.mark.parametrize("bad_value", [math.nan, math.inf, -math.inf])
def test_skip_zeroes_without_nan(bad_value):
    grads = [jnp.array([3.0, bad_value]), jnp.array([1.0], dtype=jnp.float16)]

    clipped, info = jitted_update(grads, ops.ClipByGlobalNorm(max_norm=1.0, nonfinite="skip"))

    for leaf in clipped:
        np.testing.assert_array_equal(leaf, jnp.zeros_like(leaf))
    assert not bool(info.finite)
    assert float(info.scale) == 0.0
    assert bool(info.clipped)


@pytest.mark.parametrize("bad_value", [math.nan, math.inf])
def test_propagate_leaves_values(bad_value):
    grads = [jnp.array([3.0, bad_value]), jnp.array([1.0])]

    clipped, info = jitted_update(grads, ops.ClipByGlobalNorm(max_norm=1.0, nonfinite="propagate"))

    for ours, original in zip(clipped, grads):
        np.testing.assert_array_equal(ours, original)
    assert not bool(info.finite)
    assert float(info.scale) == 1.0


def test_error_raises_eagerly_and_skips_under_jit():
    grads = [jnp.array([3.0, math.inf])]
    transform = clip_by_global_norm(1.0, nonfinite="error")
    state = transform.init(grads)

    with pytest.raises(NonFiniteGradientError, match="gradients contain NaN or infinity"):
        transform.update(grads, state)
    clipped, state = jax.jit(transform.update)(grads, state)

    np.testing.assert_array_equal(clipped[0], jnp.zeros(2))
    assert not bool(state.info.finite)


def test_gradient_through_clipping():
    # jax.grad through both jax.lax.cond branches stays finite, also at zero gradients.
    def clipped_sum(scale):
        grads = [jnp.array([3.0, 4.0]) * scale, jnp.zeros(2)]
        transform = clip_by_global_norm(1.0)
        clipped, _ = transform.update(grads, transform.init(grads))
        return sum(jnp.sum(leaf) for leaf in clipped)

    assert float(jax.grad(clipped_sum)(0.1)) == pytest.approx(7.0, rel=1e-6)
    assert float(jax.grad(clipped_sum)(10.0)) == pytest.approx(0.0, abs=1e-6)
    assert math.isfinite(float(jax.grad(clipped_sum)(0.0)))


def test_vmap_over_batches():
    transform = clip_by_global_norm(1.0)
    grads = [jnp.array([[3.0, 4.0], [0.3, 0.4]])]

    clipped, state = jax.vmap(lambda leaf: transform.update([leaf], transform.init([leaf])))(grads[0])

    np.testing.assert_allclose(clipped[0], jnp.array([[0.6, 0.8], [0.3, 0.4]]), rtol=RTOL)
    np.testing.assert_allclose(state.info.norm, jnp.array([5.0, 0.5]), rtol=RTOL)


def test_which_clippers_take_fast_path():
    leaves = [jnp.zeros(2), jnp.zeros(3, dtype=jnp.bfloat16)]

    assert _takes_fast_path(ops.ClipByGlobalNorm(max_norm=1.0), leaves)
    assert not _takes_fast_path(ops.ClipByGlobalNorm(max_norm=1.0, norm_type=1.0), leaves)
    assert _takes_fast_path(ops.AutoClip(), leaves)
    assert _takes_fast_path(ops.ZClip(), leaves)
    assert not _takes_fast_path(ops.ClipByNorm(max_norm=1.0), leaves)
    assert not _takes_fast_path(ops.ClipByGlobalNorm(max_norm=1.0), [])
    assert not _takes_fast_path(ops.ClipByGlobalNorm(max_norm=1.0), [jnp.zeros(2, dtype=jnp.int32)])


LIMIT_CLIPPERS = {
    "zclip": ops.ZClip(alpha=0.5, z_threshold=1.0, warmup_steps=3),
    "autoclip": ops.AutoClip(percentile=50.0, history_size=4),
}


@pytest.mark.parametrize("name", LIMIT_CLIPPERS)
def test_limit_clippers_match_core_over_steps(name):
    clipper = LIMIT_CLIPPERS[name]
    rng = np.random.default_rng(5)
    # A calm start, a spike, calm again, a tiny step, a NaN step and another spike.
    scales = [1.0, 1.1, 0.9, 1.0, 8.0, 1.0, 0.05, math.nan, 30.0]
    shapes = [(40, 3), (7,), (1,)]
    transform = clip(clipper)
    update = jax.jit(transform.update)
    first = [jnp.zeros(shape, dtype=jnp.float32) for shape in shapes]
    state = transform.init(first)
    core_state = clipper.init(first)
    clipped_steps = 0

    for scale in scales:
        grads = [jnp.asarray(rng.standard_normal(shape) * scale, dtype=jnp.float32) for shape in shapes]
        expected, core_state, expected_info = clipper.update(list(grads), core_state)
        clipped, state = update(list(grads), state)

        assert_leaves_close(clipped, expected)
        np.testing.assert_allclose(state.info.norm, expected_info.norm, rtol=RTOL)
        np.testing.assert_allclose(state.info.scale, expected_info.scale, rtol=RTOL)
        assert bool(state.info.finite) == bool(expected_info.finite)
        for ours, reference in zip(state.clipper_state, core_state):
            np.testing.assert_allclose(np.asarray(ours), np.asarray(reference), rtol=RTOL)
        clipped_steps += int(bool(state.info.clipped))
    # The spikes are clipped, so clipped and calm steps were both compared.
    assert clipped_steps >= 1

