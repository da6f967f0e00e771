"""Adaptive clippers: AGC (unit-wise), AutoClip (percentile history) and ZClip (z-score of an EMA)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import optstrat
from optstrat.clipping import AdaptiveClip, AutoClip, AutoClipState, EmptyState, ZClip, ZClipState
from optstrat.clipping._agc import unit_axes


def to_numpy(array):
    module = type(array).__module__
    if module.startswith("torch"):
        return array.detach().cpu().double().numpy()
    if module.startswith("jax"):
        return np.asarray(array, dtype=np.float64)
    return np.asarray(array if isinstance(array, np.ndarray) else np.from_dlpack(array), dtype=np.float64)


# AGC --------------------------------------------------------------------------------------------


def test_agc_torch_layout_anchor(xp):
    # One unit uses the eps floor: ||W_1|| = 5e-4 < eps, so its limit is 0.01 * 1e-3.
    weight = xp.asarray([[1.0, 0.0], [0.0, 5e-4]])
    grad = xp.asarray([[0.1, 0.0], [0.3, 0.4]])

    output, _, info = AdaptiveClip(clipping=0.01, unit_axis="first").update([grad], EmptyState(), [weight])

    np.testing.assert_allclose(to_numpy(output[0]), [[0.01, 0.0], [6e-6, 8e-6]], rtol=1e-6)
    assert float(info.scale) == pytest.approx(1e-5 / 0.5, rel=1e-6)
    assert bool(info.clipped)


def test_agc_optax_layout_anchor(xp):
    weight = xp.asarray([[1.0, 0.0], [0.0, 5e-4]]).T
    grad = xp.asarray([[0.1, 0.0], [0.3, 0.4]]).T

    output, _, _ = AdaptiveClip(clipping=0.01, unit_axis="last").update([grad], EmptyState(), [weight])

    np.testing.assert_allclose(to_numpy(output[0]), np.array([[0.01, 0.0], [6e-6, 8e-6]]).T, rtol=1e-6)


@pytest.mark.parametrize("unit_axis", ["last", "first"])
@pytest.mark.parametrize(
    ("param", "grad", "expected"),
    [([3.0, 4.0], [1.0, 0.0], [0.5, 0.0]), ([0.0, 0.0], [1.0, 0.0], [1e-4, 0.0]), ([3.0, 4.0], [0.1, 0.2], [0.1, 0.2])],
    ids=["bias", "zero-param", "below-limit"],
)
def test_agc_vector_anchors(unit_axis, param, grad, expected, xp):
    output, _, _ = AdaptiveClip(clipping=0.1, unit_axis=unit_axis).update(
        {"b": xp.asarray(grad)}, EmptyState(), {"b": xp.asarray(param)}
    )
    np.testing.assert_allclose(to_numpy(output["b"]), expected, rtol=1e-6)


@pytest.mark.parametrize("unit_axis", ["last", "first"])
def test_agc_scalar(unit_axis, xp):
    output, _, info = AdaptiveClip(clipping=0.5, unit_axis=unit_axis).update(
        [xp.asarray(4.0)], EmptyState(), [xp.asarray(-2.0)]
    )

    assert tuple(output[0].shape) == ()
    assert float(output[0]) == pytest.approx(1.0)
    assert float(info.scale) == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("shape", "last", "first"),
    [
        ((), None, None),
        ((5,), None, None),
        ((1, 5), None, (1,)),
        ((5, 1), None, (1,)),
        ((1, 1), None, (1,)),
        ((3, 4), (0,), (1,)),
        ((2, 3, 4), (0,), (1, 2)),
        ((1, 3, 4), (0,), (1, 2)),
        ((1, 1, 4), None, (1, 2)),
        ((3, 3, 2, 4), (0, 1, 2), (1, 2, 3)),
        ((2, 3, 3, 2, 4), (0, 1, 2, 3), (1, 2, 3, 4)),
        ((2, 2, 3, 3, 2, 4), (0, 1, 2, 3, 4), (1, 2, 3, 4, 5)),
    ],
)
def test_unit_axes_per_rank(shape, last, first):
    assert unit_axes(shape, "last") == last
    assert unit_axes(shape, "first") == first


@pytest.mark.parametrize("unit_axis", ["last", "first"])
def test_agc_units_clip_independently(unit_axis):
    rng = np.random.default_rng(1)
    param = rng.normal(size=(3, 4, 5))
    grad = rng.normal(size=(3, 4, 5))
    axes = (0,) if unit_axis == "last" else (1, 2)

    output, _, info = AdaptiveClip(clipping=0.3, unit_axis=unit_axis).update([grad], EmptyState(), [param])

    grad_norm = np.sqrt(np.sum(grad**2, axis=axes, keepdims=True))
    limit = 0.3 * np.maximum(np.sqrt(np.sum(param**2, axis=axes, keepdims=True)), 1e-3)
    factor = np.minimum(1.0, limit / grad_norm)
    np.testing.assert_allclose(output[0], grad * factor, rtol=1e-12)
    assert float(info.scale) == pytest.approx(factor.min(), rel=1e-12)


def test_agc_float16_gradients_with_float32_params():
    grad = np.full((4, 3), 300.0, dtype=np.float16)
    param = np.full((4, 3), 1.0, dtype=np.float32)

    output, _, info = AdaptiveClip(clipping=0.01).update([grad], EmptyState(), [param])

    assert output[0].dtype == np.float16
    # Each unit (a column) has gradient norm 600 and parameter norm 2.
    np.testing.assert_allclose(output[0].astype(np.float64), 300.0 * 0.02 / 600.0, rtol=1e-3)
    assert info.norm.dtype == np.float32


def test_agc_requires_params():
    with pytest.raises(ValueError, match=r"params is required: this clipper scales each gradient by the norm"):
        AdaptiveClip().update([np.ones(2)], EmptyState())


@pytest.mark.parametrize(
    ("grads", "params", "error", "message"),
    [
        ([np.ones(2)], [np.ones(2), np.ones(3)], ValueError,
         "params must have the same structure as grads: grads has 1 arrays and params has 2"),
        ({"w": np.ones(2)}, [np.ones(2)], ValueError,
         "params must have the same structure as grads: grads is a dict and params is a list"),
        ({"w": np.ones(2)}, {"v": np.ones(2)}, ValueError,
         r"params must have the same keys as grads: missing \['w'\], unexpected \['v'\]"),
        ({"w": np.ones((2, 3))}, {"w": np.ones((3, 2))}, ValueError,
         r"params\['w'\] has shape \(3, 2\) but grads\['w'\] has shape \(2, 3\); they must match"),
        ([np.ones(2), np.ones(3)], [np.ones(2), np.ones(4)], ValueError,
         r"params\[1\] has shape \(4,\) but grads\[1\] has shape \(3,\)"),
        ([np.ones(2)], np.ones(2), TypeError, "params must be a list, tuple or dict of arrays, got ndarray"),
        ([np.ones(2)], [np.array([1, 2])], TypeError, r"params\[0\] must have a floating dtype, got int64"),
    ],
)
def test_agc_params_structure_errors(grads, params, error, message):
    with pytest.raises(error, match=message):
        AdaptiveClip().update(grads, EmptyState(), params)


def test_agc_params_from_another_namespace():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="params and grads must use one array namespace: grads are .*numpy"):
        AdaptiveClip().update([np.ones(2)], EmptyState(), [torch.ones(2)])


def test_agc_mapping_params_in_any_order():
    grads = {"w": np.array([[1.0, 0.0]]), "b": np.array([1.0, 0.0])}
    params = {"b": np.array([3.0, 4.0]), "w": np.array([[0.0, 0.0]])}

    output, _, _ = AdaptiveClip(clipping=0.1).update(grads, EmptyState(), params)

    np.testing.assert_allclose(output["b"], [0.5, 0.0])
    np.testing.assert_allclose(output["w"], [[1e-4, 0.0]])


# AutoClip ---------------------------------------------------------------------------------------


def autoclip_reference(norm_sequence, percentile, history_size):
    """AutoClip's rule (Seetharaman et al. 2020) on a window of the last ``history_size`` norms.

    Each step appends the norm, takes the percentile of the window with NumPy's
    default linear interpolation, and scales by min(1, threshold / norm), as
    the loop in pseeth/autoclip (``autoclip.py``) does with an unbounded
    history. Returns the threshold and scale of every step.
    """
    history = []
    thresholds = []
    scales = []
    for norm in norm_sequence:
        history.append(norm)
        window = history[-history_size:]
        threshold = float(np.percentile(window, percentile))
        thresholds.append(threshold)
        scales.append(1.0 if norm <= threshold else threshold / norm)
    return thresholds, scales


def norm_stream(seed, steps):
    rng = np.random.default_rng(seed)
    norms = np.exp(rng.normal(size=steps))
    norms[rng.integers(0, steps, size=3)] *= 50.0  # spikes
    return norms


@pytest.mark.parametrize(
    ("percentile", "history_size"), [(10.0, 1000), (10.0, 7), (50.0, 1), (0.0, 5), (100.0, 5), (37.5, 12)]
)
def test_autoclip_matches_reference(percentile, history_size):
    norms = norm_stream(0, 40)
    _, expected_scales = autoclip_reference(norms, percentile, history_size)
    clipper = AutoClip(percentile=percentile, history_size=history_size)
    state = clipper.init([np.zeros(2)])

    for norm, expected in zip(norms, expected_scales):
        grad = np.array([0.6, 0.8]) * norm
        output, state, info = clipper.update([grad], state)
        assert float(info.norm) == pytest.approx(norm, rel=1e-12)
        assert float(info.scale) == pytest.approx(expected, rel=1e-12)
        np.testing.assert_allclose(output[0], grad * expected, rtol=1e-12)
    assert int(state.count) == min(len(norms), history_size)


@given(seed=st.integers(0, 2**32 - 1), percentile=st.floats(0.0, 100.0), history_size=st.integers(1, 20))
def test_autoclip_matches_reference_property(seed, percentile, history_size):
    norms = norm_stream(seed, 30)
    thresholds, expected_scales = autoclip_reference(norms, percentile, history_size)
    clipper = AutoClip(percentile=percentile, history_size=history_size)
    state = clipper.init([np.zeros(1)])

    for norm, expected in zip(norms, expected_scales):
        _, state, info = clipper.update([np.array([norm])], state)
        assert float(info.scale) == pytest.approx(expected, rel=1e-9)


def test_autoclip_first_step_never_clipped(xp):
    clipper = AutoClip(percentile=0.0)
    grads = [xp.asarray([300.0, 400.0])]

    output, state, info = clipper.update(grads, clipper.init(grads))

    np.testing.assert_array_equal(to_numpy(output[0]), [300.0, 400.0])
    assert float(info.scale) == 1.0
    assert not bool(info.clipped)
    assert int(state.count) == 1
    assert int(state.index) == 1


def test_autoclip_state_layout(xp):
    grads = [xp.asarray([1.0, 2.0], dtype=xp.float32)]
    state = AutoClip(history_size=6).init(grads)

    assert isinstance(state, AutoClipState)
    assert tuple(state.norms.shape) == (6,)
    assert state.norms.dtype == xp.float32
    assert state.count.dtype == xp.int32
    assert state.index.dtype == xp.int32
    assert int(state.count) == 0


def test_autoclip_ring_buffer_wraps(xp):
    clipper = AutoClip(percentile=0.0, history_size=3)
    state = clipper.init([xp.zeros(1)])
    for norm in (1.0, 2.0, 3.0, 4.0, 5.0):
        _, state, info = clipper.update([xp.asarray([norm])], state)

    np.testing.assert_array_equal(to_numpy(state.norms), [4.0, 5.0, 3.0])
    assert int(state.count) == 3
    assert int(state.index) == 2
    assert float(info.scale) == pytest.approx(3.0 / 5.0)


@pytest.mark.parametrize("policy", ["skip", "propagate"])
def test_autoclip_nonfinite_not_recorded(policy, xp):
    clipper = AutoClip(history_size=4, nonfinite=policy)
    state = clipper.init([xp.zeros(2)])
    _, state, _ = clipper.update([xp.asarray([3.0, 4.0])], state)

    _, after, info = clipper.update([xp.asarray([math.nan, 4.0])], state)

    assert not bool(info.finite)
    for field, before in zip(after, state):
        np.testing.assert_array_equal(to_numpy(field), to_numpy(before))


def test_autoclip_first_update_nonfinite(xp):
    clipper = AutoClip(history_size=4)
    state = clipper.init([xp.zeros(2)])

    output, state, info = clipper.update([xp.asarray([math.inf, 4.0])], state)

    np.testing.assert_array_equal(to_numpy(output[0]), [0.0, 0.0])
    assert int(state.count) == 0
    _, _, info = clipper.update([xp.asarray([3.0, 4.0])], state)
    assert float(info.scale) == 1.0


def test_autoclip_state_errors():
    clipper = AutoClip(history_size=4)
    with pytest.raises(TypeError, match="state must be the AutoClipState that init or update returned, got EmptyState"):
        clipper.update([np.ones(2)], EmptyState())
    other = AutoClip(history_size=5).init([np.ones(2)])
    with pytest.raises(ValueError, match=r"state.norms must have shape \(4,\) to match history_size, got \(5,\)"):
        clipper.update([np.ones(2)], other)


def test_autoclip_state_from_another_namespace():
    torch = pytest.importorskip("torch")
    clipper = AutoClip(history_size=4)
    with pytest.raises(TypeError, match="state and grads must use one array namespace: grads are .*torch"):
        clipper.update([torch.ones(2)], clipper.init([np.ones(2)]))


# ZClip ------------------------------------------------------------------------------------------


def zclip_reference(norm_sequence, alpha, z_threshold, warmup_steps, eps=1e-6):
    """ZClip's rule (Kumar et al. 2025) with a spike clipped to mean + z_threshold * std.

    Warmup records norms. At its end, mean and variance are the mean and
    population variance of those norms. Afterwards z = (norm - mean) / (std + eps),
    and above z_threshold the norm is clipped to mean + z_threshold * std. The
    EMA statistics are then updated with the clipped norm, the variance with
    the new mean, as in bluorion-com/ZClip (``zclip/zclip.py``). Returns the
    scale of every step.
    """
    buffer = []
    mean = variance = None
    scales = []
    for norm in norm_sequence:
        if mean is None:
            buffer.append(norm)
            if len(buffer) == warmup_steps:
                mean = float(np.mean(buffer))
                variance = float(np.var(buffer))
            scales.append(1.0)
            continue
        std = math.sqrt(variance)
        z_score = (norm - mean) / (std + eps)
        if z_score > z_threshold:
            effective = mean + z_threshold * std
            scales.append(effective / norm)
        else:
            effective = norm
            scales.append(1.0)
        mean = alpha * mean + (1 - alpha) * effective
        variance = alpha * variance + (1 - alpha) * (effective - mean) ** 2
    return scales


@pytest.mark.parametrize(
    ("alpha", "z_threshold", "warmup_steps"),
    [(0.97, 2.5, 25), (0.9, 1.0, 5), (0.5, 0.5, 1), (0.0, 2.0, 3), (1.0, 1.5, 4)],
)
def test_zclip_matches_reference(alpha, z_threshold, warmup_steps):
    norms = norm_stream(3, 60)
    expected_scales = zclip_reference(norms, alpha, z_threshold, warmup_steps)
    clipper = ZClip(alpha=alpha, z_threshold=z_threshold, warmup_steps=warmup_steps)
    state = clipper.init([np.zeros(2)])

    for norm, expected in zip(norms, expected_scales):
        grad = np.array([0.6, 0.8]) * norm
        output, state, info = clipper.update([grad], state)
        assert float(info.scale) == pytest.approx(expected, rel=1e-9)
        np.testing.assert_allclose(output[0], grad * expected, rtol=1e-9)
    assert int(state.count) == min(warmup_steps, len(norms))


@given(
    seed=st.integers(0, 2**32 - 1),
    alpha=st.floats(0.0, 1.0),
    z_threshold=st.floats(0.1, 5.0),
    warmup_steps=st.integers(1, 10),
)
def test_zclip_matches_reference_property(seed, alpha, z_threshold, warmup_steps):
    norms = norm_stream(seed, 30)
    expected_scales = zclip_reference(norms, alpha, z_threshold, warmup_steps)
    clipper = ZClip(alpha=alpha, z_threshold=z_threshold, warmup_steps=warmup_steps)
    state = clipper.init([np.zeros(1)])

    for norm, expected in zip(norms, expected_scales):
        _, state, info = clipper.update([np.array([norm])], state)
        assert float(info.scale) == pytest.approx(expected, rel=1e-7, abs=1e-12)


def test_zclip_warmup_statistics(xp):
    clipper = ZClip(warmup_steps=4)
    state = clipper.init([xp.zeros(1)])
    for norm in (1.0, 2.0, 4.0, 9.0):
        output, state, info = clipper.update([xp.asarray([norm])], state)
        assert float(info.scale) == 1.0

    assert float(state.mean) == pytest.approx(4.0)
    assert float(state.variance) == pytest.approx(np.var([1.0, 2.0, 4.0, 9.0]))
    assert int(state.count) == 4


def test_zclip_state_layout(xp):
    state = ZClip().init([xp.zeros(3, dtype=xp.float32)])

    assert isinstance(state, ZClipState)
    for field in state:
        assert tuple(field.shape) == ()
    assert state.mean.dtype == xp.float32
    assert state.variance.dtype == xp.float32
    assert state.count.dtype == xp.int32


@pytest.mark.parametrize("policy", ["skip", "propagate"])
def test_zclip_nonfinite_leaves_state(policy, xp):
    clipper = ZClip(warmup_steps=2, nonfinite=policy)
    state = clipper.init([xp.zeros(2)])
    for norm in (1.0, 2.0, 3.0):
        _, state, _ = clipper.update([xp.asarray([norm, 0.0])], state)

    _, after, info = clipper.update([xp.asarray([math.inf, 0.0])], state)

    assert not bool(info.finite)
    for field, before in zip(after, state):
        np.testing.assert_array_equal(to_numpy(field), to_numpy(before))


def test_zclip_state_errors():
    with pytest.raises(TypeError, match="state must be the ZClipState that init or update returned, got AutoClipState"):
        ZClip().update([np.ones(2)], AutoClip().init([np.ones(2)]))


# Compiled paths: jit, vmap, lax.scan and checkpoints -------------------------------------------------


STATEFUL = [
    pytest.param(AutoClip(percentile=30.0, history_size=5), id="autoclip"),
    pytest.param(ZClip(alpha=0.8, z_threshold=1.0, warmup_steps=3), id="zclip"),
]


def grad_stream(seed, steps):
    rng = np.random.default_rng(seed)
    norms = norm_stream(seed, steps)
    return [
        {"w": (rng.normal(size=(2, 3)) * norm).astype(np.float32), "b": (rng.normal(size=3) * norm).astype(np.float32)}
        for norm in norms
    ]


def eager_run(clipper, stream, convert):
    state = clipper.init({key: convert(value) for key, value in stream[0].items()})
    results = []
    for grads in stream:
        output, state, info = clipper.update({key: convert(value) for key, value in grads.items()}, state)
        results.append((output, info))
    return results, state


@pytest.mark.parametrize("clipper", STATEFUL)
def test_stateful_jit_matches_numpy(clipper):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    stream = grad_stream(5, 12)
    expected, expected_state = eager_run(clipper, stream, np.asarray)

    update = jax.jit(clipper.update)
    state = clipper.init({key: jnp.asarray(value) for key, value in stream[0].items()})
    for grads, (reference, reference_info) in zip(stream, expected):
        output, state, info = update({key: jnp.asarray(value) for key, value in grads.items()}, state)
        np.testing.assert_allclose(np.asarray(output["w"]), reference["w"], rtol=2e-6)
        assert float(info.scale) == pytest.approx(float(reference_info.scale), rel=2e-6)
    for field, reference_field in zip(state, expected_state):
        np.testing.assert_allclose(np.asarray(field), np.asarray(reference_field), rtol=2e-6)


@pytest.mark.parametrize("clipper", STATEFUL)
def test_stateful_scan_matches_eager(clipper):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    stream = grad_stream(6, 10)
    expected, _ = eager_run(clipper, stream, jnp.asarray)
    stacked = {key: jnp.stack([jnp.asarray(grads[key]) for grads in stream]) for key in stream[0]}

    def step(state, grads):
        output, state, info = clipper.update(grads, state)
        return state, (output, info)

    initial = clipper.init({key: value[0] for key, value in stacked.items()})
    _, (outputs, infos) = jax.lax.scan(step, initial, stacked)

    for index, (reference, reference_info) in enumerate(expected):
        np.testing.assert_allclose(np.asarray(outputs["b"][index]), np.asarray(reference["b"]), rtol=1e-6)
        assert float(infos.scale[index]) == pytest.approx(float(reference_info.scale), rel=1e-6)


@pytest.mark.parametrize("clipper", STATEFUL)
def test_stateful_vmap_over_streams(clipper):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    streams = [grad_stream(seed, 8) for seed in (7, 8, 9)]
    expected = [eager_run(clipper, stream, jnp.asarray)[0] for stream in streams]

    batched_update = jax.jit(jax.vmap(clipper.update))
    first = {key: jnp.stack([jnp.asarray(stream[0][key]) for stream in streams]) for key in streams[0][0]}
    state = jax.vmap(clipper.init)(first)
    for step in range(8):
        grads = {key: jnp.stack([jnp.asarray(stream[step][key]) for stream in streams]) for key in first}
        output, state, info = batched_update(grads, state)
        for batch, reference in enumerate(expected):
            reference_output, reference_info = reference[step]
            np.testing.assert_allclose(np.asarray(output["w"][batch]), np.asarray(reference_output["w"]), rtol=1e-6)
            assert float(info.scale[batch]) == pytest.approx(float(reference_info.scale), rel=1e-6)


@pytest.mark.parametrize("clipper", STATEFUL)
def test_stateful_checkpoint_round_trip(clipper, tmp_path):
    stream = grad_stream(10, 10)
    expected, _ = eager_run(clipper, stream, np.asarray)

    state = clipper.init(stream[0])
    for grads in stream[:5]:
        _, state, _ = clipper.update(grads, state)
    path = tmp_path / "state.npz"
    np.savez(path, **state._asdict())
    with np.load(path) as saved:
        state = type(state)(**{name: saved[name] for name in state._fields})
    rebuilt = optstrat.from_config(clipper.to_config())

    for grads, (reference, _) in zip(stream[5:], expected[5:]):
        output, state, _ = rebuilt.update(grads, state)
        np.testing.assert_array_equal(output["w"], reference["w"])


@pytest.mark.parametrize("clipper", STATEFUL)
def test_stateful_over_namespaces(clipper, xp):
    stream = grad_stream(11, 8)
    expected, _ = eager_run(clipper, stream, np.asarray)

    results, state = eager_run(clipper, stream, lambda value: xp.asarray(value))

    for (output, info), (reference, reference_info) in zip(results, expected):
        np.testing.assert_allclose(to_numpy(output["w"]), reference["w"], rtol=2e-6)
        assert float(info.scale) == pytest.approx(float(reference_info.scale), rel=2e-6)
    for field in state:
        assert type(field).__module__.split(".")[0] == type(xp.zeros(1)).__module__.split(".")[0]
