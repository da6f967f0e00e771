"""optstrat clippers as Optax transformations: training, parity with optax, state and errors."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import optstrat as ops
from optstrat.clipping import ClipInfo, Clipper, EmptyState, NonFiniteGradientError
from optstrat_optax import ClipState, clip, clip_by_global_norm, last_clip_info
from tests.kind_examples import CLIPPER_EXAMPLES

CLIPPERS = [
    pytest.param(clipper, id=f"{kind}-{index}")
    for kind, clippers in CLIPPER_EXAMPLES.items()
    for index, clipper in enumerate(clippers)
]


def linear_problem():
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(32, 3)).astype(np.float32)
    weights = np.array([2.0, -3.0, 0.5], dtype=np.float32)
    targets = inputs @ weights + 1.0
    return jnp.asarray(inputs), jnp.asarray(targets)


def mean_squared_error(params, inputs, targets):
    predictions = inputs @ params["w"] + params["b"]
    return jnp.mean((predictions - targets) ** 2)


def train(optimizer, steps):
    """Train the linear model under jit and return the final params, state, losses and pre-clip norms."""
    inputs, targets = linear_problem()
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}

    @jax.jit
    def run(params):
        def body(carry, _):
            params, state = carry
            loss, grads = jax.value_and_grad(mean_squared_error)(params, inputs, targets)
            updates, state = optimizer.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), (loss, optax.tree.norm(grads))

        (params, state), (losses, norms) = jax.lax.scan(body, (params, optimizer.init(params)), None, length=steps)
        return params, state, losses, norms

    return run(params)


def test_linear_model_matches_optax_chain():
    schedule = ops.WarmupCosine(peak_value=0.1, warmup_steps=5, decay_steps=80, end_value=0.01)
    reference_schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=0.1, warmup_steps=5, decay_steps=80, end_value=0.01
    )
    optimizer = optax.chain(clip_by_global_norm(1.0), optax.sgd(learning_rate=schedule))
    reference = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(learning_rate=reference_schedule))

    params, state, losses, norms = train(optimizer, 80)
    reference_params, _, reference_losses, _ = train(reference, 80)

    assert float(losses[-1]) < 0.05 * float(losses[0])
    np.testing.assert_allclose(losses, reference_losses, rtol=1e-5)
    np.testing.assert_allclose(params["w"], reference_params["w"], rtol=1e-5)
    np.testing.assert_allclose(params["b"], reference_params["b"], rtol=1e-5, atol=1e-6)
    info = last_clip_info(state)
    assert float(info.norm) == pytest.approx(float(norms[-1]), rel=1e-6)
    assert bool(info.finite)


def test_clip_state_records_latest_info():
    transform = clip_by_global_norm(2.0)
    grads = {"a": jnp.array([3.0, 4.0]), "b": [jnp.array(12.0)]}
    state = transform.init(grads)

    initial = last_clip_info(state)
    clipped, state = transform.update(grads, state)
    info = last_clip_info(state)

    assert (float(initial.norm), float(initial.scale), bool(initial.finite), bool(initial.clipped)) == (
        0.0,
        1.0,
        True,
        False,
    )
    assert float(info.norm) == pytest.approx(13.0)
    assert float(info.scale) == pytest.approx(2.0 / 13.0)
    assert bool(info.finite)
    assert bool(info.clipped)
    assert state.info is info
    np.testing.assert_allclose(clipped["a"], [6.0 / 13.0, 8.0 / 13.0], rtol=1e-6)
    np.testing.assert_allclose(clipped["b"][0], 24.0 / 13.0, rtol=1e-6)


def test_init_info_matches_update_types():
    grads = {"half": jnp.ones(3, dtype=jnp.bfloat16), "single": jnp.ones((2, 2))}
    transform = clip_by_global_norm(1.0)
    state = transform.init(grads)

    clipped, new_state = transform.update(grads, state)

    assert jax.tree_util.tree_structure(state) == jax.tree_util.tree_structure(new_state)
    for before, after in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(new_state)):
        assert (before.shape, before.dtype) == (after.shape, after.dtype)
    assert clipped["half"].dtype == jnp.bfloat16
    assert new_state.info.norm.dtype == jnp.float32


def test_clip_under_vmap():
    transform = clip_by_global_norm(1.0)
    grads = jnp.array([[3.0, 4.0], [0.3, 0.4]])
    states = jax.vmap(transform.init)(grads)

    clipped, states = jax.jit(jax.vmap(transform.update))(grads, states)

    np.testing.assert_allclose(clipped, [[0.6, 0.8], [0.3, 0.4]], rtol=1e-6)
    np.testing.assert_allclose(states.info.norm, [5.0, 0.5], rtol=1e-6)
    np.testing.assert_array_equal(states.info.clipped, [True, False])


def test_empty_pytree():
    transform = clip_by_global_norm(1.0)
    state = transform.init({})

    clipped, state = jax.jit(transform.update)({}, state)

    assert clipped == {}
    assert float(state.info.norm) == 0.0
    assert isinstance(state.info.norm, jax.Array)


@pytest.mark.parametrize("clipper", CLIPPERS)
def test_every_clipper_matches_core(clipper):
    rng = np.random.default_rng(1)
    params = {"dense": {"kernel": jnp.asarray(rng.normal(size=(4, 3)), dtype=jnp.float32)}, "bias": jnp.ones(3)}
    grads = jax.tree_util.tree_map(lambda leaf: 5.0 * leaf + 0.5, params)
    transform = clip(clipper)

    clipped, state = jax.jit(transform.update)(grads, transform.init(params), params)

    # The reference calls the core on NumPy copies of the flattened leaves, which is
    # fast and accumulates norms in float64, hence the float32-level tolerance.
    leaves, treedef = jax.tree_util.tree_flatten(grads)
    leaves = [np.asarray(leaf) for leaf in leaves]
    param_leaves = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(params)]
    expected, expected_state, expected_info = clipper.update(leaves, clipper.init(param_leaves), param_leaves)
    assert jax.tree_util.tree_structure(clipped) == treedef
    for actual, wanted in zip(jax.tree_util.tree_leaves(clipped), expected):
        np.testing.assert_allclose(actual, wanted, rtol=1e-5, atol=1e-7)
    for actual, wanted in zip(state.info, expected_info):
        np.testing.assert_allclose(actual, wanted, rtol=1e-5)
    for actual, wanted in zip(jax.tree_util.tree_leaves(state.clipper_state), jax.tree_util.tree_leaves(expected_state)):
        np.testing.assert_allclose(actual, wanted, rtol=1e-5)


@dataclasses.dataclass(frozen=True)
class AddParams(Clipper):
    """Add each parameter to its gradient, to show which parameter reaches which gradient."""

    nonfinite: str = "propagate"

    def update(self, grads: Any, state: Any = EmptyState(), params: Any = None) -> tuple[Any, Any, ClipInfo]:
        one = jnp.ones(())
        info = ClipInfo(norm=one, scale=one, finite=jnp.asarray(True), clipped=jnp.asarray(False))
        return [grad + param for grad, param in zip(grads, params)], state, info


def test_params_flattened_like_updates():
    params = {"z": jnp.array([100.0]), "a": [jnp.array([10.0]), jnp.array([1.0])]}
    grads = jax.tree_util.tree_map(jnp.zeros_like, params)
    transform = clip(AddParams())

    clipped, _ = transform.update(grads, transform.init(params), params)

    assert float(clipped["z"][0]) == 100.0
    assert [float(leaf[0]) for leaf in clipped["a"]] == [10.0, 1.0]


def test_params_structure_mismatch_raises():
    transform = clip_by_global_norm(1.0)
    grads = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="params must have the same tree structure as the updates"):
        transform.update(grads, transform.init(grads), {"v": jnp.ones(2)})


def test_clip_rejects_non_clipper():
    with pytest.raises(TypeError, match=r"clipper must be an optstrat clipper .* got 1\.0 \(float\)"):
        clip(1.0)


def test_clip_by_global_norm_checks_max_norm():
    with pytest.raises(ValueError, match="max_norm must be a finite number >= 0, got -1.0"):
        clip_by_global_norm(-1.0)


def test_clip_by_global_norm_checks_nonfinite():
    with pytest.raises(ValueError, match="nonfinite must be one of 'skip', 'error', 'propagate', got 'ignore'"):
        clip_by_global_norm(1.0, nonfinite="ignore")


def test_max_norm_cannot_be_injected():
    optimizer = optax.inject_hyperparams(clip_by_global_norm)(max_norm=1.0)
    with pytest.raises(TypeError, match="max_norm must be a real number, got Array"):
        optimizer.init(jnp.zeros(2))


def test_last_clip_info_without_clip_state():
    state = optax.adam(1e-3).init(jnp.zeros(2))
    with pytest.raises(ValueError, match="opt_state contains no optstrat clipping state"):
        last_clip_info(state)


def test_last_clip_info_with_two_clip_states():
    optimizer = optax.chain(clip_by_global_norm(1.0), clip_by_global_norm(2.0))
    with pytest.raises(ValueError, match="opt_state contains 2 optstrat clipping states"):
        last_clip_info(optimizer.init(jnp.zeros(2)))


def test_last_clip_info_through_inject_hyperparams():
    def clipped_sgd(learning_rate):
        return optax.chain(clip_by_global_norm(1.0), optax.sgd(learning_rate))

    optimizer = optax.inject_hyperparams(clipped_sgd)(learning_rate=ops.Constant(value=0.1))
    state = optimizer.init(jnp.zeros(2))

    _, state = optimizer.update(jnp.array([6.0, 8.0]), state)

    assert float(last_clip_info(state).norm) == pytest.approx(10.0)


def test_nonfinite_error_raises_eagerly():
    transform = clip_by_global_norm(1.0, nonfinite="error")
    grads = [jnp.array([jnp.nan, 1.0])]
    with pytest.raises(NonFiniteGradientError, match="gradients contain NaN or infinity"):
        transform.update(grads, transform.init(grads))


def test_nonfinite_error_skips_under_jit():
    transform = clip_by_global_norm(1.0, nonfinite="error")
    grads = [jnp.array([jnp.nan, 1.0])]

    clipped, state = jax.jit(transform.update)(grads, transform.init(grads))

    np.testing.assert_array_equal(clipped[0], [0.0, 0.0])
    assert not bool(state.info.finite)


def test_nonfinite_skip_gives_zeros():
    transform = clip_by_global_norm(1.0)
    grads = {"a": jnp.array([jnp.inf, 1.0]), "b": jnp.array([2.0])}

    clipped, state = transform.update(grads, transform.init(grads))

    np.testing.assert_array_equal(clipped["a"], [0.0, 0.0])
    np.testing.assert_array_equal(clipped["b"], [0.0])
    assert not bool(state.info.finite)


def test_nonfinite_propagate_known_difference():
    # optax turns every gradient into NaN because the norm is NaN. optstrat's
    # "propagate" leaves the gradients as they are, so only the NaN entry stays NaN.
    grads = {"a": jnp.array([jnp.nan, 1.0]), "b": jnp.array([2.0])}
    transform = clip_by_global_norm(1.0, nonfinite="propagate")

    clipped, state = transform.update(grads, transform.init(grads))
    reference, _ = optax.clip_by_global_norm(1.0).update(grads, optax.EmptyState())

    np.testing.assert_array_equal(clipped["a"], [np.nan, 1.0])
    np.testing.assert_array_equal(clipped["b"], [2.0])
    assert bool(jnp.all(jnp.isnan(reference["a"])))
    assert bool(jnp.all(jnp.isnan(reference["b"])))
    assert not bool(state.info.finite)


def test_zero_grads_zero_max_norm_known_difference():
    # optax computes 0 / 0 here and returns NaN, while optstrat keeps the zeros.
    grads = {"a": jnp.zeros(3), "b": jnp.zeros((2, 2))}

    clipped, state = clip_by_global_norm(0.0).update(grads, clip_by_global_norm(0.0).init(grads))
    reference, _ = optax.clip_by_global_norm(0.0).update(grads, optax.EmptyState())

    np.testing.assert_array_equal(clipped["a"], np.zeros(3))
    np.testing.assert_array_equal(clipped["b"], np.zeros((2, 2)))
    assert bool(jnp.all(jnp.isnan(reference["a"])))
    assert bool(state.info.finite)


def test_large_float32_values_known_difference():
    # optax sums the squares in float32, so a norm above 3.4e38 ** 0.5 overflows to
    # inf and the clipped gradients become 0. optstrat's norm stays finite.
    grads = [jnp.full(3, 1e20, dtype=jnp.float32)]

    clipped, state = clip_by_global_norm(1.0).update(grads, clip_by_global_norm(1.0).init(grads))
    reference, _ = optax.clip_by_global_norm(1.0).update(grads, optax.EmptyState())

    assert float(state.info.norm) == pytest.approx(3**0.5 * 1e20, rel=1e-6)
    np.testing.assert_allclose(clipped[0], np.full(3, 3**-0.5), rtol=1e-6)
    np.testing.assert_array_equal(reference[0], np.zeros(3))


def float32_leaves():
    values = st.one_of(
        st.just(0.0),
        st.floats(-1e3, 1e3, width=32, allow_subnormal=False).filter(lambda value: abs(value) >= 1e-6),
    )
    # A few shapes only: eager JAX compiles each operation once per shape.
    shapes = st.sampled_from([(), (0,), (3,), (2, 2), (1, 2, 3)])
    return hnp.arrays(np.float32, shapes, elements=values)


pytrees = st.recursive(
    float32_leaves(),
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3),
        st.dictionaries(st.sampled_from("abcdefg"), children, min_size=1, max_size=3),
    ),
    max_leaves=6,
)


@given(grads=pytrees, max_norm=st.floats(0.0, 2e3, width=32), at_norm=st.booleans())
def test_global_norm_parity_with_optax(grads, max_norm, at_norm):
    grads = jax.tree_util.tree_map(jnp.asarray, grads)
    norm = float(optax.tree.norm(grads))
    if at_norm:
        max_norm = norm
    # The zero-norm, zero-max_norm case is the known difference tested above.
    assume(not (norm == 0.0 and max_norm == 0.0))
    transform = clip_by_global_norm(max_norm)

    clipped, state = transform.update(grads, transform.init(grads))
    reference, _ = optax.clip_by_global_norm(max_norm).update(grads, optax.EmptyState())

    assert jax.tree_util.tree_structure(clipped) == jax.tree_util.tree_structure(reference)
    assert float(state.info.norm) == pytest.approx(norm, rel=1e-6, abs=1e-30)
    for actual, wanted in zip(jax.tree_util.tree_leaves(clipped), jax.tree_util.tree_leaves(reference)):
        assert actual.dtype == wanted.dtype == jnp.float32
        np.testing.assert_allclose(actual, wanted, rtol=1e-6, atol=1e-30)
