"""The clipper protocol, the stateless clippers, non-finite policies, configs and properties."""

from __future__ import annotations

import collections
import math
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import optstrat
from optstrat._xp import device_of, supports_float64
from optstrat.clipping import (
    DEFAULT_NONFINITE,
    DEFAULT_SUGGEST_PERCENTILE,
    AdaptiveClip,
    AutoClip,
    AutoClipState,
    ClipByGlobalNorm,
    ClipByNorm,
    ClipByValue,
    ClipInfo,
    Clipper,
    EmptyState,
    NonFiniteGradientError,
    ZClip,
    ZClipState,
    global_norm,
    suggest_max_norm,
)
from tests.kind_examples import CLIPPER_EXAMPLES

# One instance of each kind and norm type; ZClip with one warmup step so that
# the second update already uses the z-score.
CLIPPERS = [
    pytest.param(ClipByValue(max_value=1.0), id="value"),
    pytest.param(ClipByNorm(max_norm=1.0), id="norm"),
    pytest.param(ClipByNorm(max_norm=1.0, norm_type="inf"), id="norm-inf"),
    pytest.param(ClipByGlobalNorm(max_norm=1.0), id="global"),
    pytest.param(ClipByGlobalNorm(max_norm=1.0, norm_type=1.0), id="global-l1"),
    pytest.param(ClipByGlobalNorm(max_norm=1.0, norm_type="inf"), id="global-inf"),
    pytest.param(ClipByGlobalNorm(max_norm=1.0, norm_type=0.5), id="global-p0.5"),
    pytest.param(ClipByGlobalNorm(max_norm=1.0, norm_type=3.0), id="global-p3"),
    pytest.param(AdaptiveClip(), id="agc-last"),
    pytest.param(AdaptiveClip(unit_axis="first"), id="agc-first"),
    pytest.param(AutoClip(history_size=4), id="autoclip"),
    pytest.param(ZClip(warmup_steps=1), id="zclip"),
]


def to_numpy(array):
    """Copy any supported array to a float64 NumPy array (bool arrays stay bool)."""
    module = type(array).__module__
    if module.startswith("torch"):
        array = array.detach().cpu()
        return array.numpy() if array.dtype == __import__("torch").bool else array.double().numpy()
    if module.startswith("jax"):
        array = np.asarray(array.astype("float32") if array.dtype.name == "bfloat16" else array)
    else:
        array = np.from_dlpack(array) if not isinstance(array, np.ndarray) else array
    return array if array.dtype == np.bool_ else np.asarray(array, dtype=np.float64)


def namespace_name(array):
    return type(array).__module__.split(".")[0]


def run(clipper, grads, params=None, steps=1):
    """Run ``steps`` updates of ``clipper`` on the same ``grads``; params default to ones like grads."""
    if params is None:
        params = grads
    state = clipper.init(grads)
    for _ in range(steps):
        output, state, info = clipper.update(grads, state, params)
    return output, state, info


def anchor_grads(xp, dtype=None):
    dtype = xp.float32 if dtype is None else dtype
    return [xp.asarray([3.0, 4.0], dtype=dtype), xp.asarray([12.0], dtype=dtype)]


# Protocol ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("clipper", CLIPPERS)
def test_info_fields_are_0d_arrays(clipper, xp):
    grads = anchor_grads(xp)
    output, _, info = run(clipper, grads, steps=2)

    assert isinstance(info, ClipInfo)
    for field in info:
        assert namespace_name(field) == namespace_name(grads[0])
        assert tuple(field.shape) == ()
    assert info.norm.dtype == xp.float32
    assert info.scale.dtype == xp.float32
    assert info.finite.dtype == xp.bool
    assert info.clipped.dtype == xp.bool
    assert float(info.norm) == pytest.approx(13.0, rel=1e-6)


@pytest.mark.parametrize("clipper", CLIPPERS)
def test_numpy_info_is_not_numpy_scalar(clipper):
    _, _, info = run(clipper, [np.array([3.0, 4.0], dtype=np.float32)])

    for field in info:
        assert type(field) is np.ndarray
        assert field.shape == ()


@pytest.mark.parametrize("clipper", CLIPPERS)
def test_output_keeps_namespace_dtype_shape_device(clipper, xp):
    dtypes = [xp.float32] + [getattr(xp, name) for name in ("float16", "bfloat16") if hasattr(xp, name)]
    if supports_float64(xp):
        dtypes.append(xp.float64)
    grads = {
        f"g{index}": xp.asarray(np.arange(6.0).reshape(2, 3) - 2.0, dtype=dtype) for index, dtype in enumerate(dtypes)
    }
    grads["scalar"] = xp.asarray(5.0, dtype=xp.float32)
    grads["empty"] = xp.zeros((0, 4), dtype=xp.float32)

    output, _, info = run(clipper, grads, steps=2)

    assert list(output) == list(grads)
    for key, grad in grads.items():
        assert namespace_name(output[key]) == namespace_name(grad)
        assert output[key].dtype == grad.dtype
        assert tuple(output[key].shape) == tuple(grad.shape)
        assert str(device_of(output[key])) == str(device_of(grad))
    assert info.norm.dtype == (xp.float64 if supports_float64(xp) else xp.float32)


class GradPair(NamedTuple):
    weight: object
    bias: object


@pytest.mark.parametrize("clipper", CLIPPERS)
@pytest.mark.parametrize(
    "container",
    [list, tuple, lambda arrays: GradPair(*arrays), lambda arrays: dict(zip("ab", arrays)),
     lambda arrays: collections.OrderedDict(zip("ba", arrays))],
    ids=["list", "tuple", "namedtuple", "dict", "ordered-dict"],
)
def test_container_comes_back_unchanged(clipper, container):
    grads = container([np.array([3.0, 4.0]), np.array([12.0])])

    output, _, _ = run(clipper, grads)

    assert type(output) is type(grads)
    if isinstance(grads, dict):
        assert list(output) == list(grads)
    else:
        assert len(output) == len(grads)


def test_clipper_is_abstract():
    with pytest.raises(TypeError, match="abstract"):
        Clipper()


def test_stateless_state_is_empty():
    clipper = ClipByGlobalNorm(max_norm=1.0)
    state = clipper.init([np.zeros(2)])
    assert state == EmptyState()
    _, new_state, _ = clipper.update([np.zeros(2)], state)
    assert new_state == state


def test_default_nonfinite_policy():
    assert DEFAULT_NONFINITE == "skip"
    for examples in CLIPPER_EXAMPLES.values():
        kind = type(examples[0])
        assert kind.__dataclass_fields__["nonfinite"].default == "skip"


# Inputs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("clipper", CLIPPERS)
def test_mixed_namespaces_raise_naming_both(clipper):
    torch = pytest.importorskip("torch")
    grads = [np.array([1.0]), torch.tensor([1.0])]
    with pytest.raises(TypeError, match=r"grads mixes array namespaces: grads\[0\] is .*numpy and grads\[1\] is .*torch"):
        clipper.update(grads, clipper.init([np.array([1.0])]), grads)


@pytest.mark.parametrize("clipper", CLIPPERS)
def test_mixed_namespaces_name_mapping_keys(clipper):
    torch = pytest.importorskip("torch")
    grads = {"w": np.array([1.0]), "b": torch.tensor([1.0])}
    with pytest.raises(TypeError, match=r"grads\['w'\] is .*numpy and grads\['b'\] is .*torch"):
        clipper.update(grads, clipper.init({"w": np.array([1.0])}), grads)


def test_global_norm_mixed_namespaces_raise():
    jnp = pytest.importorskip("jax.numpy")
    with pytest.raises(TypeError, match=r"grads\[0\] is .*numpy and grads\[1\] is jax.numpy"):
        global_norm([np.array([1.0]), jnp.array([1.0])])


@pytest.mark.parametrize(
    ("grads", "error", "message"),
    [
        (np.array([1.0]), TypeError, "grads must be a list, tuple or dict of arrays, got ndarray"),
        ("abc", TypeError, "grads must be a list, tuple or dict of arrays, got str"),
        ([1.0], TypeError, r"grads\[0\] must be an array, got float"),
        ([np.array([1.0]), [2.0]], TypeError, r"grads\[1\] must be an array, got list"),
        ([np.array([1, 2])], TypeError, r"grads\[0\] must have a floating dtype, got int64"),
        ([np.array([True])], TypeError, r"grads\[0\] must have a floating dtype, got bool"),
        ({"w": np.array([1.0]), "b": (np.array([2.0]),)}, TypeError, r"grads\['b'\] must be an array, got tuple"),
        ({"w": np.array([1], dtype=np.int32)}, TypeError, r"grads\['w'\] must have a floating dtype, got int32"),
    ],
)
def test_bad_gradients_raise(grads, error, message):
    with pytest.raises(error, match=message):
        ClipByGlobalNorm(max_norm=1.0).update(grads, EmptyState())
    with pytest.raises(error, match=message):
        global_norm(grads)


@pytest.mark.parametrize("clipper", CLIPPERS)
@pytest.mark.parametrize("empty", [[], (), {}], ids=["list", "tuple", "dict"])
def test_empty_gradients(clipper, empty):
    state = clipper.init(empty)
    for _ in range(2):
        output, state, info = clipper.update(empty, state, empty)

    assert output == empty
    assert type(output) is type(empty)
    assert float(info.norm) == 0.0
    assert float(info.scale) == 1.0
    assert bool(info.finite)
    assert not bool(info.clipped)


@pytest.mark.parametrize("clipper", CLIPPERS)
def test_zero_size_arrays(clipper, xp):
    grads = [xp.zeros((0,), dtype=xp.float32), xp.zeros((3, 0), dtype=xp.float32), xp.asarray([3.0, 4.0])]

    output, _, info = run(clipper, grads, steps=2)

    assert tuple(output[0].shape) == (0,)
    assert tuple(output[1].shape) == (3, 0)
    assert float(info.norm) == pytest.approx(5.0)
    assert bool(info.finite)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 0.5, 3.0])
def test_global_norm_is_0d_array(norm_type, xp):
    grads = [xp.asarray([3.0, -4.0], dtype=xp.float32)]

    norm = global_norm(grads, norm_type)

    assert namespace_name(norm) == namespace_name(grads[0])
    assert type(norm) is not np.float32
    assert tuple(norm.shape) == ()
    assert norm.dtype == xp.float32


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 0.5, 3.0])
def test_global_norm_of_zero_size_arrays_is_zero(norm_type, xp):
    norm = global_norm([xp.zeros((0,)), xp.zeros((2, 0, 3))], norm_type)
    assert tuple(norm.shape) == ()
    assert float(norm) == 0.0


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 0.5, 3.0])
def test_global_norm_of_empty_input_is_zero(norm_type):
    norm = global_norm([], norm_type)
    assert type(norm) is np.ndarray
    assert norm.dtype == np.float32
    assert float(norm) == 0.0


# Anchors (g = ([3, 4], [12]), global L2 norm 13) -------------------------------------------------------


@pytest.mark.parametrize(
    ("max_norm", "expected", "scale"),
    [
        (1.0, [[3 / 13, 4 / 13], [12 / 13]], 1 / 13),
        (13.0, [[3.0, 4.0], [12.0]], 1.0),
        (100.0, [[3.0, 4.0], [12.0]], 1.0),
        (0.0, [[0.0, 0.0], [0.0]], 0.0),
    ],
)
def test_global_norm_anchors(max_norm, expected, scale, xp):
    output, _, info = run(ClipByGlobalNorm(max_norm=max_norm), anchor_grads(xp))

    for value, reference in zip(output, expected):
        np.testing.assert_allclose(to_numpy(value), reference, rtol=1e-6)
    assert float(info.norm) == pytest.approx(13.0, rel=1e-6)
    assert float(info.scale) == pytest.approx(scale, rel=1e-6)
    assert bool(info.clipped) == (scale < 1)


@pytest.mark.parametrize(
    ("norm_type", "norm", "expected"),
    [
        (math.inf, 12.0, [[0.25, -1 / 3], [1.0]]),
        (1.0, 19.0, [[3 / 19, -4 / 19], [12 / 19]]),
        (3.0, (27 + 64 + 1728) ** (1 / 3), None),
    ],
)
def test_global_p_norm_anchors(norm_type, norm, expected, xp):
    grads = [xp.asarray([3.0, -4.0]), xp.asarray([12.0])]

    output, _, info = run(ClipByGlobalNorm(max_norm=1.0, norm_type=norm_type), grads)

    assert float(global_norm(grads, norm_type)) == pytest.approx(norm, rel=1e-6)
    assert float(info.norm) == pytest.approx(13.0, rel=1e-6)
    assert float(info.scale) == pytest.approx(1 / norm, rel=1e-6)
    if expected is not None:
        for value, reference in zip(output, expected):
            np.testing.assert_allclose(to_numpy(value), reference, rtol=1e-6)


@pytest.mark.parametrize("max_norm", [0.0, 1.0])
def test_zero_gradients_stay_zero(max_norm, xp):
    output, _, info = run(ClipByGlobalNorm(max_norm=max_norm), [xp.zeros((3,)), xp.zeros((2, 2))])

    assert all(np.all(to_numpy(value) == 0.0) for value in output)
    assert float(info.scale) == 1.0
    assert not bool(info.clipped)


def test_per_tensor_norm_anchors(xp):
    output, _, info = run(ClipByNorm(max_norm=1.0), anchor_grads(xp))

    np.testing.assert_allclose(to_numpy(output[0]), [0.6, 0.8], rtol=1e-6)
    np.testing.assert_allclose(to_numpy(output[1]), [1.0], rtol=1e-6)
    assert float(info.scale) == pytest.approx(1 / 12, rel=1e-6)
    assert float(info.norm) == pytest.approx(13.0, rel=1e-6)


def test_per_tensor_norm_at_threshold_is_unchanged(xp):
    grads = [xp.asarray([3.0, 4.0]), xp.asarray([0.0, 0.0])]
    output, _, info = run(ClipByNorm(max_norm=5.0), grads)

    np.testing.assert_array_equal(to_numpy(output[0]), [3.0, 4.0])
    np.testing.assert_array_equal(to_numpy(output[1]), [0.0, 0.0])
    assert float(info.scale) == 1.0
    assert not bool(info.clipped)


def test_per_tensor_norm_matches_keras_formula():
    # Keras clipnorm: g * c / max(||g||, c) per variable.
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=shape) * scale for shape, scale in (((3, 4), 1.0), ((5,), 0.01), ((2, 2, 2), 30.0))]
    output, _, _ = run(ClipByNorm(max_norm=0.5), grads)

    for value, grad in zip(output, grads):
        expected = grad * 0.5 / max(np.linalg.norm(grad), 0.5)
        np.testing.assert_allclose(value, expected, rtol=1e-12)


def test_value_anchor(xp):
    grads = [xp.asarray([3.0, -40.0]), xp.asarray([0.5])]
    output, _, info = run(ClipByValue(max_value=1.0), grads)

    np.testing.assert_array_equal(to_numpy(output[0]), [1.0, -1.0])
    np.testing.assert_array_equal(to_numpy(output[1]), [0.5])
    assert float(info.scale) == pytest.approx(1 / 40, rel=1e-6)
    assert bool(info.clipped)


def test_value_below_bound_is_unchanged(xp):
    grads = [xp.asarray([0.25, -1.0]), xp.asarray([0.5])]
    output, _, info = run(ClipByValue(max_value=1.0), grads)

    np.testing.assert_array_equal(to_numpy(output[0]), [0.25, -1.0])
    assert float(info.scale) == 1.0
    assert not bool(info.clipped)


def test_value_zero_bound_gives_zeros(xp):
    output, _, info = run(ClipByValue(max_value=0.0), anchor_grads(xp))

    assert all(np.all(to_numpy(value) == 0.0) for value in output)
    assert float(info.scale) == 0.0


def test_value_bound_beyond_float16_range():
    grads = [np.array([60000.0, -3.0], dtype=np.float16)]
    output, _, info = run(ClipByValue(max_value=1e6), grads)

    np.testing.assert_array_equal(output[0], grads[0])
    assert output[0].dtype == np.float16
    assert not bool(info.clipped)


def test_huge_thresholds_do_not_overflow():
    grads = [np.array([3.0, 4.0], dtype=np.float32)]
    for clipper in (ClipByGlobalNorm(max_norm=1e300), ClipByNorm(max_norm=1e300), ClipByValue(max_value=1e300)):
        output, _, info = run(clipper, grads)
        np.testing.assert_array_equal(output[0], grads[0])
        assert float(info.scale) == 1.0


# Non-finite policies ----------------------------------------------------------------------------


BAD_VALUES = [pytest.param(math.nan, id="nan"), pytest.param(math.inf, id="inf"), pytest.param(-math.inf, id="-inf")]


def bad_grads(xp, bad):
    return [xp.asarray([bad, 1.0]), xp.asarray([[2.0, 3.0]])]


@pytest.mark.parametrize("bad", BAD_VALUES)
@pytest.mark.parametrize("clipper", CLIPPERS)
def test_skip_returns_zeros(clipper, bad, xp):
    grads = bad_grads(xp, bad)
    output, _, info = run(clipper, grads, steps=2)

    for value in output:
        assert np.all(to_numpy(value) == 0.0)
    assert not bool(info.finite)
    assert float(info.scale) == 0.0
    assert bool(info.clipped)
    assert math.isnan(float(info.norm)) == math.isnan(bad)


@pytest.mark.parametrize("bad", BAD_VALUES)
@pytest.mark.parametrize("clipper", CLIPPERS)
def test_propagate_leaves_gradients_unchanged(clipper, bad, xp):
    clipper = _with_policy(clipper, "propagate")
    grads = bad_grads(xp, bad)
    output, _, info = run(clipper, grads, steps=2)

    for value, grad in zip(output, grads):
        np.testing.assert_array_equal(to_numpy(value), to_numpy(grad))
    assert not bool(info.finite)
    assert float(info.scale) == 1.0
    assert not bool(info.clipped)


@pytest.mark.parametrize("bad", BAD_VALUES)
@pytest.mark.parametrize("clipper", CLIPPERS)
def test_error_raises_before_changing_anything(clipper, bad, xp):
    clipper = _with_policy(clipper, "error")
    grads = bad_grads(xp, bad)
    before = [to_numpy(grad).copy() for grad in grads]
    state = clipper.init(grads)

    with pytest.raises(NonFiniteGradientError, match="gradients contain NaN or infinity"):
        clipper.update(grads, state, grads)

    for grad, original in zip(grads, before):
        np.testing.assert_array_equal(to_numpy(grad), original)


@pytest.mark.parametrize(
    "clipper",
    [ClipByValue(max_value=1.0), ClipByNorm(max_norm=1.0), ClipByGlobalNorm(max_norm=1.0), AdaptiveClip(),
     AutoClip(history_size=4), ZClip(warmup_steps=1)],
    ids=lambda clipper: clipper.kind,
)
def test_error_under_jit_acts_like_skip(clipper):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    clipper = _with_policy(clipper, "error")
    grads = [jnp.asarray([jnp.nan, 1.0]), jnp.asarray([2.0])]
    update = jax.jit(lambda grads, state: clipper.update(grads, state, grads))

    output, _, info = update(grads, clipper.init(grads))

    assert all(np.all(np.asarray(value) == 0.0) for value in output)
    assert not bool(info.finite)


@pytest.mark.parametrize("clipper", CLIPPERS)
def test_error_passes_finite_gradients(clipper):
    output, _, info = run(_with_policy(clipper, "error"), [np.array([0.3, 0.4])])
    assert bool(info.finite)
    assert output[0].shape == (2,)


def _with_policy(clipper, policy):
    config = clipper.to_config()
    config["nonfinite"] = policy
    return optstrat.from_config(config)


# Configs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("clip_by_value(max_value=0.5)", ClipByValue(max_value=0.5)),
        ("clip_by_norm(max_norm=2, norm_type=inf)", ClipByNorm(max_norm=2.0, norm_type=math.inf)),
        ("clip_by_global_norm(max_norm=1.0, norm_type='inf')", ClipByGlobalNorm(max_norm=1.0, norm_type=math.inf)),
        ("adaptive_clip()", AdaptiveClip(clipping=0.01, eps=1e-3, unit_axis="last")),
        ("adaptive_clip(unit_axis='first')", AdaptiveClip(unit_axis="first")),
        ("autoclip()", AutoClip(percentile=10.0, history_size=1000)),
        ("autoclip(history_size=1e2)", AutoClip(history_size=100)),
        ("zclip()", ZClip(alpha=0.97, z_threshold=2.5, warmup_steps=25)),
        ("zclip(nonfinite='error')", ZClip(nonfinite="error")),
    ],
)
def test_spec_defaults(spec, expected):
    clipper = optstrat.from_spec(spec)
    assert clipper == expected
    assert optstrat.from_config(clipper.to_config()) == clipper


def test_config_lists_every_field():
    assert AutoClip().to_config() == {"kind": "autoclip", "percentile": 10.0, "history_size": 1000, "nonfinite": "skip"}
    assert ZClip().to_config() == {
        "kind": "zclip",
        "alpha": 0.97,
        "z_threshold": 2.5,
        "warmup_steps": 25,
        "nonfinite": "skip",
    }
    assert AdaptiveClip().to_config() == {
        "kind": "adaptive_clip",
        "clipping": 0.01,
        "eps": 1e-3,
        "unit_axis": "last",
        "nonfinite": "skip",
    }


def test_kinds_are_registered():
    names = set(optstrat.kinds(Clipper))
    assert {"clip_by_value", "clip_by_norm", "clip_by_global_norm", "adaptive_clip", "autoclip", "zclip"} <= names


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: ClipByValue(max_value=-1.0), ValueError, "max_value must be a finite number >= 0, got -1.0"),
        (lambda: ClipByValue(max_value=math.inf), ValueError, "max_value must be a finite number >= 0, got inf"),
        (lambda: ClipByValue(max_value="1"), TypeError, "max_value must be a real number, got '1' \\(str\\)"),
        (lambda: ClipByValue(max_value=True), TypeError, "max_value must be a real number, got True"),
        (lambda: ClipByValue(max_value=1.0, nonfinite="raise"), ValueError,
         "nonfinite must be one of 'skip', 'error', 'propagate', got 'raise'"),
        (lambda: ClipByNorm(max_norm=-0.5), ValueError, "max_norm must be a finite number >= 0, got -0.5"),
        (lambda: ClipByNorm(max_norm=1.0, norm_type=0), ValueError, "norm_type must be a number > 0 or 'inf', got 0"),
        (lambda: ClipByNorm(max_norm=1.0, norm_type="two"), TypeError, "norm_type must be a number > 0 or 'inf', got 'two'"),
        (lambda: ClipByGlobalNorm(max_norm=math.nan), ValueError, "max_norm must be a finite number >= 0, got nan"),
        (lambda: ClipByGlobalNorm(max_norm=1.0, norm_type=-2.0), ValueError,
         "norm_type must be a number > 0 or 'inf', got -2.0"),
        (lambda: ClipByGlobalNorm(max_norm=1.0, norm_type=math.nan), ValueError,
         "norm_type must be a number > 0 or 'inf', got nan"),
        (lambda: ClipByGlobalNorm(max_norm=1.0, nonfinite=None), ValueError, "nonfinite must be one of"),
        (lambda: AdaptiveClip(clipping=-0.01), ValueError, "clipping must be a finite number >= 0, got -0.01"),
        (lambda: AdaptiveClip(eps=-1e-3), ValueError, "eps must be a finite number >= 0, got -0.001"),
        (lambda: AdaptiveClip(eps=math.inf), ValueError, "eps must be a finite number >= 0, got inf"),
        (lambda: AdaptiveClip(unit_axis="out"), ValueError, "unit_axis must be one of 'last', 'first', got 'out'"),
        (lambda: AdaptiveClip(unit_axis=0), ValueError, "unit_axis must be one of 'last', 'first', got 0"),
        (lambda: AutoClip(percentile=-1.0), ValueError, "percentile must be a finite number >= 0 and <= 100, got -1.0"),
        (lambda: AutoClip(percentile=100.5), ValueError, "percentile must be a finite number >= 0 and <= 100, got 100.5"),
        (lambda: AutoClip(history_size=0), ValueError, "history_size must be a positive integer, got 0"),
        (lambda: AutoClip(history_size=2.5), TypeError, "history_size must be an integer, got 2.5 \\(float\\)"),
        (lambda: AutoClip(nonfinite="ignore"), ValueError, "nonfinite must be one of 'skip', 'error', 'propagate'"),
        (lambda: ZClip(alpha=1.5), ValueError, "alpha must be a finite number >= 0 and <= 1, got 1.5"),
        (lambda: ZClip(alpha=-0.1), ValueError, "alpha must be a finite number >= 0 and <= 1, got -0.1"),
        (lambda: ZClip(z_threshold=0.0), ValueError, "z_threshold must be a finite number > 0, got 0.0"),
        (lambda: ZClip(z_threshold=math.inf), ValueError, "z_threshold must be a finite number > 0, got inf"),
        (lambda: ZClip(warmup_steps=0), ValueError, "warmup_steps must be a positive integer, got 0"),
        (lambda: ZClip(warmup_steps="25"), TypeError, "warmup_steps must be an integer, got '25' \\(str\\)"),
    ],
)
def test_bad_config_raises(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_from_config_validates_fields():
    with pytest.raises(ValueError, match="percentile must be a finite number >= 0 and <= 100, got 250"):
        optstrat.from_config({"kind": "autoclip", "percentile": 250})
    with pytest.raises(ValueError, match="unknown field 'max_norm' for kind 'clip_by_value'"):
        optstrat.from_spec("clip_by_value(max_norm=1.0)")


def test_global_norm_rejects_bad_norm_type():
    with pytest.raises(ValueError, match="norm_type must be a number > 0 or 'inf', got 0"):
        global_norm([np.ones(2)], 0)


# suggest_max_norm -------------------------------------------------------------------------------


def test_suggest_default_percentile():
    norms = np.linspace(1.0, 100.0, 100)
    assert DEFAULT_SUGGEST_PERCENTILE == 90.0
    assert suggest_max_norm(norms) == pytest.approx(np.percentile(norms, 90.0))


def test_suggest_ignores_nonfinite():
    norms = [1.0, math.nan, 2.0, math.inf, 3.0, -math.inf]
    assert suggest_max_norm(norms, percentile=50) == 2.0
    assert suggest_max_norm(norms, percentile=100) == 3.0


def test_suggest_accepts_arrays_of_any_namespace(xp):
    norms = xp.asarray([4.0, 1.0, 3.0, 2.0])
    assert suggest_max_norm([norms[i] for i in range(4)], percentile=0) == 1.0
    if namespace_name(norms) != "array_api_strict":
        assert suggest_max_norm(norms, percentile=100) == 4.0


@pytest.mark.parametrize(
    ("norms", "percentile", "error", "message"),
    [
        ([], 90.0, ValueError, "norms must contain at least one finite value, got an empty history"),
        (np.zeros((0, 3)), 90.0, ValueError, "got an empty history"),
        ([math.nan, math.inf], 90.0, ValueError, r"got only non-finite values \(2\)"),
        ([1.0, -2.0], 90.0, ValueError, "norms must be non-negative, got -2.0 at index 1"),
        ([1.0], 101.0, ValueError, "percentile must be a finite number >= 0 and <= 100, got 101.0"),
        ([1.0], "high", TypeError, "percentile must be a real number"),
        ("1.0", 90.0, TypeError, "norms must be a sequence of numbers or an array, got str"),
        ([[1.0], [2.0, 3.0]], 90.0, TypeError, "norms must be a sequence of numbers or an array in host memory"),
    ],
)
def test_suggest_bad_input(norms, percentile, error, message):
    with pytest.raises(error, match=message):
        suggest_max_norm(norms, percentile=percentile)


# Exports ----------------------------------------------------------------------------------------


def test_exports():
    for name in ("ClipByValue", "ClipByNorm", "ClipByGlobalNorm", "AdaptiveClip", "AutoClip", "ZClip"):
        assert name in optstrat.__all__
        assert name in optstrat.clipping.__all__
        assert getattr(optstrat, name) is getattr(optstrat.clipping, name)
    for name in ("AutoClipState", "ZClipState", "suggest_max_norm", "global_norm", "NonFiniteGradientError"):
        assert name in optstrat.clipping.__all__
    assert AutoClipState._fields == ("norms", "count", "index")
    assert ZClipState._fields == ("mean", "variance", "count")


# Properties -------------------------------------------------------------------------------------


@st.composite
def gradient_lists(draw):
    """A list of 1 to 4 float64 arrays with values spread over many magnitudes."""
    count = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    exponent = draw(st.floats(-20.0, 20.0))
    rng = np.random.default_rng(seed)
    shapes = [tuple(rng.integers(1, 5, size=rng.integers(0, 3))) for _ in range(count)]
    return [np.asarray(rng.normal(size=shape) * 10.0**exponent) for shape in shapes]


NORM_TYPES = st.sampled_from([1.0, 2.0, math.inf, 0.5, 3.0])


@given(grads=gradient_lists(), max_norm=st.floats(0.0, 1e3), norm_type=NORM_TYPES)
def test_global_clip_norm_at_most_max_norm(grads, max_norm, norm_type):
    output, _, info = run(ClipByGlobalNorm(max_norm=max_norm, norm_type=norm_type), grads)

    assert float(global_norm(output, norm_type)) <= max_norm * (1 + 1e-12) + 1e-300
    assert 0.0 <= float(info.scale) <= 1.0


@given(grads=gradient_lists(), max_norm=st.floats(0.0, 1e3), norm_type=NORM_TYPES)
def test_per_tensor_clip_norm_at_most_max_norm(grads, max_norm, norm_type):
    output, _, _ = run(ClipByNorm(max_norm=max_norm, norm_type=norm_type), grads)

    for value in output:
        assert float(global_norm([value], norm_type)) <= max_norm * (1 + 1e-12) + 1e-300


@given(grads=gradient_lists(), max_norm=st.floats(1e-3, 1e3), norm_type=NORM_TYPES)
def test_norm_clippers_keep_direction(grads, max_norm, norm_type):
    for clipper in (ClipByGlobalNorm(max_norm=max_norm, norm_type=norm_type), ClipByNorm(max_norm, norm_type)):
        output, _, info = run(clipper, grads)
        for value, grad in zip(output, grads):
            factor = float(global_norm([value])) / max(float(global_norm([grad])), 1e-300)
            np.testing.assert_allclose(value, grad * factor, rtol=1e-12, atol=1e-300)
            assert 0.0 <= factor <= 1.0 + 1e-12
            assert factor >= float(info.scale) * (1 - 1e-12)


@given(grads=gradient_lists(), norm_type=NORM_TYPES, margin=st.floats(1.0, 100.0))
def test_norm_clippers_identity_below_threshold(grads, norm_type, margin):
    norm = float(global_norm(grads, norm_type))
    largest = max(float(global_norm([grad], norm_type)) for grad in grads)
    magnitude = max(float(global_norm([grad], math.inf)) for grad in grads)
    clippers = [
        ClipByGlobalNorm(max_norm=norm * margin, norm_type=norm_type),
        ClipByNorm(max_norm=largest * margin, norm_type=norm_type),
        ClipByValue(max_value=magnitude * margin),
    ]
    for clipper in clippers:
        output, _, info = run(clipper, grads)
        for value, grad in zip(output, grads):
            np.testing.assert_array_equal(value, grad)
        assert float(info.scale) == 1.0
        assert not bool(info.clipped)


@given(grads=gradient_lists(), max_value=st.floats(0.0, 1e3))
def test_value_clip_bounds(grads, max_value):
    output, _, info = run(ClipByValue(max_value=max_value), grads)

    for value, grad in zip(output, grads):
        assert np.all(np.abs(value) <= max_value)
        assert np.all(np.sign(value) * np.sign(grad) >= 0)
        inside = np.abs(grad) <= max_value
        np.testing.assert_array_equal(value[inside], grad[inside])
        np.testing.assert_array_equal(np.abs(value[~inside]), max_value)
    assert bool(info.clipped) == any(np.any(np.abs(grad) > max_value) for grad in grads)
