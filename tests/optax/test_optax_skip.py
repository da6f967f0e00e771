"""skip_nonfinite: whole updates skipped on non-finite gradients, under jit and vmap."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optstrat as ops
from optstrat.clipping import NonFiniteGradientError
from optstrat_optax import SkipNonfiniteState, clip_by_global_norm, last_clip_info, skip_nonfinite

SCHEDULE = ops.CosineDecay(init_value=0.1, decay_steps=10, end_value=0.01)


def assert_trees_equal(actual, expected):
    assert jax.tree_util.tree_structure(actual) == jax.tree_util.tree_structure(expected)
    for left, right in zip(jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_array_equal(left, right)


def assert_trees_close(actual, expected):
    # Two separately compiled update functions may round differently by one float32 ulp.
    assert jax.tree_util.tree_structure(actual) == jax.tree_util.tree_structure(expected)
    for left, right in zip(jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(left, right, rtol=1e-6)


def adam_with_schedule():
    return optax.inject_hyperparams(optax.adam)(learning_rate=SCHEDULE)


@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf, -jnp.inf])
def test_nonfinite_gradient_skips_update(bad):
    optimizer = skip_nonfinite(adam_with_schedule(), ops.ClipByGlobalNorm(max_norm=1.0))
    params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array(0.5)}
    update = jax.jit(optimizer.update)
    state = optimizer.init(params)
    finite = {"w": jnp.array([0.3, -0.1]), "b": jnp.array(2.0)}
    updates, state = update(finite, state, params)
    params = optax.apply_updates(params, updates)

    broken = {"w": jnp.array([bad, 1.0]), "b": jnp.array(2.0)}
    updates, skipped = update(broken, state, params)
    new_params = optax.apply_updates(params, updates)

    assert_trees_equal(updates, {"w": jnp.zeros(2), "b": jnp.zeros(())})
    assert_trees_equal(new_params, params)
    assert_trees_equal(skipped.inner_state, state.inner_state)
    assert int(skipped.inner_state.count) == 1
    assert int(skipped.inner_state.inner_state[0].count) == 1
    assert int(skipped.skip_count) == 1
    assert not bool(last_clip_info(skipped).finite)


def test_finite_again_updates_normally():
    optimizer = skip_nonfinite(adam_with_schedule(), ops.ClipByGlobalNorm(max_norm=1.0))
    reference = optax.chain(clip_by_global_norm(1.0), adam_with_schedule())
    params = jnp.array([1.0, -2.0, 0.5])
    grads = [
        jnp.array([0.3, -0.1, 4.0]),
        jnp.array([jnp.nan, 0.0, 1.0]),
        jnp.array([jnp.inf, 0.0, 1.0]),
        jnp.array([-0.2, 0.5, 0.1]),
        jnp.array([1.0, 2.0, 3.0]),
    ]
    update = jax.jit(optimizer.update)
    reference_update = jax.jit(reference.update)
    state = optimizer.init(params)
    reference_state = reference.init(params)

    for grad in grads:
        updates, state = update(grad, state, params)
        if bool(jnp.all(jnp.isfinite(grad))):
            expected, reference_state = reference_update(grad, reference_state, params)
            np.testing.assert_allclose(updates, expected, rtol=1e-6)
        else:
            np.testing.assert_array_equal(updates, np.zeros(3))

    assert int(state.skip_count) == 2
    assert_trees_close(state.inner_state, reference_state[1])
    assert int(state.inner_state.count) == 3
    assert float(state.inner_state.hyperparams["learning_rate"]) == pytest.approx(SCHEDULE(2), rel=1e-6)


def test_without_clipper_measures_and_skips():
    optimizer = skip_nonfinite(optax.sgd(learning_rate=SCHEDULE))
    params = jnp.zeros(2)
    state = optimizer.init(params)

    updates, state = optimizer.update(jnp.array([30.0, 40.0]), state, params)
    info = last_clip_info(state)

    np.testing.assert_allclose(updates, [-3.0, -4.0], rtol=1e-6)
    assert float(info.norm) == pytest.approx(50.0)
    assert float(info.scale) == 1.0
    assert not bool(info.clipped)

    updates, state = optimizer.update(jnp.array([jnp.nan, 1.0]), state, params)

    np.testing.assert_array_equal(updates, [0.0, 0.0])
    assert int(state.skip_count) == 1
    assert int(state.inner_state[1].count) == 1
    assert np.isnan(float(last_clip_info(state).norm))


def test_propagate_clipper_still_skips():
    optimizer = skip_nonfinite(optax.sgd(0.1), ops.ClipByGlobalNorm(max_norm=1.0, nonfinite="propagate"))
    state = optimizer.init(jnp.zeros(2))

    updates, state = jax.jit(optimizer.update)(jnp.array([jnp.nan, 1.0]), state)

    np.testing.assert_array_equal(updates, [0.0, 0.0])
    assert int(state.skip_count) == 1


def test_error_clipper_raises_eagerly():
    optimizer = skip_nonfinite(optax.sgd(0.1), ops.ClipByGlobalNorm(max_norm=1.0, nonfinite="error"))
    state = optimizer.init(jnp.zeros(2))
    with pytest.raises(NonFiniteGradientError, match="gradients contain NaN or infinity"):
        optimizer.update(jnp.array([jnp.nan, 1.0]), state)


def test_skip_under_vmap():
    optimizer = skip_nonfinite(optax.adam(0.1), ops.ClipByGlobalNorm(max_norm=1.0))
    params = jnp.zeros((3, 2))
    grads = jnp.array([[1.0, 1.0], [jnp.nan, 1.0], [0.5, -0.5]])
    states = jax.vmap(optimizer.init)(params)

    updates, states = jax.jit(jax.vmap(optimizer.update))(grads, states, params)

    np.testing.assert_array_equal(states.skip_count, [0, 1, 0])
    np.testing.assert_array_equal(states.inner_state[0].count, [1, 0, 1])
    np.testing.assert_array_equal(updates[1], [0.0, 0.0])
    assert bool(jnp.all(updates[0] != 0.0))


def test_skip_count_saturates():
    optimizer = skip_nonfinite(optax.sgd(0.1))
    state = optimizer.init(jnp.zeros(1))
    state = state._replace(skip_count=jnp.asarray(np.iinfo(np.int32).max, dtype=jnp.int32))

    _, state = optimizer.update(jnp.array([jnp.nan]), state)

    assert int(state.skip_count) == np.iinfo(np.int32).max


def test_extra_args_reach_inner():
    # Polyak SGD needs the loss value as an extra argument of update.
    optimizer = skip_nonfinite(optax.polyak_sgd(max_learning_rate=10.0))
    params = jnp.array([1.0])
    state = optimizer.init(params)

    updates, state = optimizer.update(jnp.array([2.0]), state, params, value=jnp.asarray(4.0))

    # Polyak step size: value / |grad|^2 = 4 / 4 = 1.
    np.testing.assert_allclose(updates, [-2.0], rtol=1e-6)
    assert isinstance(state, SkipNonfiniteState)


def test_init_types_match_update():
    optimizer = skip_nonfinite(optax.adam(0.1), ops.ClipByGlobalNorm(max_norm=1.0))
    params = {"half": jnp.ones(2, dtype=jnp.bfloat16), "single": jnp.ones(3)}
    state = optimizer.init(params)

    _, new_state = optimizer.update(params, state, params)

    assert jax.tree_util.tree_structure(state) == jax.tree_util.tree_structure(new_state)
    for before, after in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(new_state)):
        assert (before.shape, before.dtype) == (after.shape, after.dtype)


def test_rejects_non_transformation():
    with pytest.raises(TypeError, match=r"inner must be an optax.GradientTransformation, got 0\.1 \(float\)"):
        skip_nonfinite(0.1)


def test_rejects_non_clipper():
    with pytest.raises(TypeError, match=r"clipper must be None or an optstrat clipper .* got 'global' \(str\)"):
        skip_nonfinite(optax.sgd(0.1), "global")
