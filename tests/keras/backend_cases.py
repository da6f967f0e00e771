"""Tests of the Keras adapter on the backend that KERAS_BACKEND selects.

``test_backends.py`` runs this module once per backend, each in its own
process, because Keras picks its backend when it is first imported. To run one
backend by hand::

    KERAS_BACKEND=jax OPTSTRAT_KERAS_CASES=1 python -m pytest tests/keras/backend_cases.py -q -p no:cacheprovider

The parity tests against Keras's own schedules depend only on the formulas, so
they run on the JAX backend alone to keep the suite fast.
"""

from __future__ import annotations

import math
import os

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import optstrat as ops
from optstrat.clipping import NonFiniteGradientError
from optstrat_keras import ClippedOptimizer, KerasSchedule, TrainingLogger
from tests.kind_examples import CLIPPER_EXAMPLES, SCHEDULE_EXAMPLES

BACKEND = keras.backend.backend()

only_tensorflow = pytest.mark.skipif(BACKEND != "tensorflow", reason="tests the TensorFlow namespace")
only_jax = pytest.mark.skipif(
    BACKEND != "jax", reason="parity with Keras's formulas is backend-independent; it runs on JAX only"
)

# Keras 3.15.1 ``Variable.__array__`` takes no ``copy`` argument, so NumPy 2 warns
# whenever ``model.save`` converts an optimizer variable. The saved values are unaffected.
keras_variable_array_warning = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

SCHEDULE_CASES = [
    pytest.param(schedule, id=f"{kind}-{index}")
    for kind, schedules in SCHEDULE_EXAMPLES.items()
    for index, schedule in enumerate(schedules)
]
CLIPPER_CASES = [pytest.param(clippers[0], id=kind) for kind, clippers in CLIPPER_EXAMPLES.items()]

STEPS = np.concatenate([np.arange(0, 64), [100, 1000, 123_457, 10**6, 2**31 - 1]])
FLOAT32_RTOL = 1e-6


def to_numpy(value):
    """Return a tensor or a Keras variable as a NumPy array.

    keras.ops.convert_to_numpy calls np.array() on TensorFlow and PyTorch tensors,
    which NumPy 2 reports with a DeprecationWarning, so each backend converts natively.
    """
    if isinstance(value, keras.Variable):
        value = value.value
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.convert_to_tensor(value).numpy()
    if BACKEND == "torch" and not isinstance(value, np.ndarray):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def iteration_dtype():
    """Return the dtype of ``optimizer.iterations`` on this backend ("int" resolves per backend)."""
    return keras.backend.standardize_dtype(keras.Variable(0, dtype="int", trainable=False).dtype)


def reference_values(schedule, steps):
    return np.array([schedule(int(step)) for step in steps])


def linear_model(features=3, initial=0.5):
    """A one-layer linear model without bias, so gradients have a closed form."""
    return keras.Sequential(
        [
            keras.Input((features,)),
            keras.layers.Dense(1, use_bias=False, kernel_initializer=keras.initializers.Constant(initial)),
        ]
    )


def regression_data(batches, batch_size=4, features=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batches * batch_size, features)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [3.0]], dtype="float32")[:features] * 5.0 + 1.0).astype("float32")
    return x, y


def simulate_sgd(x, y, batch_size, steps, schedule, clipper, initial=0.5):
    """Run SGD on the linear model with mean squared error in NumPy, clipping with the core.

    Returns the weights after each step and the ClipInfo of each step. The
    gradient of mean((x @ w - y) ** 2) over a batch of size B is
    2 / B * x.T @ (x @ w - y).
    """
    features = x.shape[1]
    weights = np.full((features, 1), initial, dtype=np.float64)
    state = clipper.init([weights.astype(np.float32)])
    history = []
    infos = []
    batches = len(x) // batch_size
    for step in range(steps):
        start = (step % batches) * batch_size
        xb = x[start : start + batch_size].astype(np.float64)
        yb = y[start : start + batch_size].astype(np.float64)
        grad = 2.0 / batch_size * xb.T @ (xb @ weights - yb)
        clipped, state, info = clipper.update([grad.astype(np.float32)], state, params=[weights.astype(np.float32)])
        weights = weights - schedule(step) * clipped[0].astype(np.float64)
        history.append(weights.copy())
        infos.append(info)
    return history, infos


def fit_linear(optimizer, x, y, batch_size=4, epochs=1, callbacks=(), jit_compile="auto", initial=0.5):
    model = linear_model(x.shape[1], initial)
    model.compile(optimizer=optimizer, loss="mse", jit_compile=jit_compile)
    history = model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0, callbacks=list(callbacks))
    return model, history


# --- KerasSchedule ---------------------------------------------------------------------------


def test_backend_matches_environment():
    assert BACKEND == os.environ["KERAS_BACKEND"]


@pytest.mark.parametrize("schedule", SCHEDULE_CASES)
def test_schedule_matches_core(schedule):
    learning_rate = KerasSchedule(schedule)
    steps = keras.ops.convert_to_tensor(STEPS, dtype=iteration_dtype())
    # Keras passes its iterations variable, and a variable holding every step takes the same path.
    iterations = keras.Variable(STEPS, dtype=iteration_dtype(), trainable=False)
    expected = reference_values(schedule, STEPS)

    values = learning_rate(steps)
    values_from_variable = learning_rate(iterations)

    assert keras.ops.is_tensor(values)
    assert keras.backend.standardize_dtype(values.dtype) == "float32"
    assert tuple(values.shape) == (len(STEPS),)
    np.testing.assert_allclose(to_numpy(values), expected, rtol=FLOAT32_RTOL, atol=1e-12)
    np.testing.assert_allclose(to_numpy(values_from_variable), expected, rtol=FLOAT32_RTOL, atol=1e-12)


def test_schedule_negative_step_counts_as_zero():
    schedule = ops.WarmupCosine(peak_value=1.0, warmup_steps=2, decay_steps=6, init_value=0.25)

    value = KerasSchedule(schedule)(keras.ops.convert_to_tensor(-3, dtype=iteration_dtype()))

    assert float(to_numpy(value)) == pytest.approx(0.25)


@only_tensorflow
@pytest.mark.parametrize("jit_compile", [False, True], ids=["tf_function", "xla"])
def test_schedules_inside_tf_function(jit_compile):
    import tensorflow as tf

    # One function evaluates the last example of every kind, so the test traces and compiles once.
    kinds = list(SCHEDULE_EXAMPLES)
    schedules = [SCHEDULE_EXAMPLES[kind][-1] for kind in kinds]
    learning_rates = [KerasSchedule(schedule) for schedule in schedules]
    iterations = tf.Variable(0, dtype=tf.int64)

    def evaluate_all():
        return [learning_rate(iterations) for learning_rate in learning_rates]

    evaluate = tf.function(evaluate_all, jit_compile=jit_compile)

    values = []
    for step in STEPS:
        iterations.assign(int(step))
        values.append([float(value) for value in evaluate()])

    for kind, schedule, column in zip(kinds, schedules, np.transpose(values)):
        expected = reference_values(schedule, STEPS)
        np.testing.assert_allclose(column, expected, rtol=FLOAT32_RTOL, atol=1e-12, err_msg=kind)
    assert evaluate.experimental_get_tracing_count() == 1


@pytest.mark.skipif(BACKEND != "jax", reason="tests jax.jit")
def test_schedule_inside_jax_jit():
    import jax

    schedule = SCHEDULE_EXAMPLES["warmup_cosine"][0]
    traces = []

    @jax.jit
    def evaluate(step):
        traces.append(step)
        return KerasSchedule(schedule)(step)

    values = [float(evaluate(np.int32(step))) for step in range(20)]

    np.testing.assert_allclose(values, reference_values(schedule, range(20)), rtol=FLOAT32_RTOL, atol=1e-12)
    assert len(traces) == 1


def test_schedule_config_round_trip():
    learning_rate = KerasSchedule(SCHEDULE_EXAMPLES["join"][0])

    config = learning_rate.get_config()
    rebuilt = KerasSchedule.from_config(config)
    serialized = keras.optimizers.schedules.serialize(learning_rate)
    deserialized = keras.optimizers.schedules.deserialize(serialized)

    assert config == {"schedule": learning_rate.schedule.to_config()}
    assert rebuilt.schedule == learning_rate.schedule
    assert isinstance(deserialized, KerasSchedule)
    assert deserialized.schedule == learning_rate.schedule


def test_schedule_accepts_config_dict():
    schedule = ops.CosineDecay(init_value=1.0, decay_steps=10)

    assert KerasSchedule(schedule.to_config()).schedule == schedule


def test_schedule_rejects_non_schedule():
    message = r"schedule must be an optstrat schedule or its config dict, got 0\.1 \(float\)"
    with pytest.raises(TypeError, match=message):
        KerasSchedule(0.1)


# --- ClippedOptimizer inside model.fit -------------------------------------------------------


@pytest.mark.parametrize(
    "jit_compile", [pytest.param("auto", id="default"), pytest.param(True, id="jit_compile")]
)
def test_fit_applies_schedule_and_clips(jit_compile):
    if jit_compile is True and BACKEND == "torch":
        pytest.skip("jit_compile on torch means torch.compile, which this test does not cover")
    schedule = ops.WarmupCosine(peak_value=0.05, warmup_steps=3, decay_steps=12, init_value=0.01)
    clipper = ops.ClipByGlobalNorm(max_norm=2.0)
    x, y = regression_data(batches=4)
    logger = TrainingLogger()
    optimizer = ClippedOptimizer(keras.optimizers.SGD(learning_rate=KerasSchedule(schedule)), clipper)

    model, _ = fit_linear(optimizer, x, y, epochs=2, callbacks=[logger], jit_compile=jit_compile)
    expected_weights, infos = simulate_sgd(x, y, 4, 8, schedule, clipper)

    assert int(to_numpy(optimizer.iterations)) == 8
    np.testing.assert_allclose(logger.batch_history["lr"], reference_values(schedule, range(8)), rtol=FLOAT32_RTOL)
    np.testing.assert_allclose(logger.batch_history["grad_norm"], [float(info.norm) for info in infos], rtol=1e-5)
    np.testing.assert_allclose(to_numpy(model.layers[0].kernel), expected_weights[-1], rtol=1e-5, atol=1e-6)


def test_logger_plain_optimizer_learning_rate():
    schedule = ops.ExponentialDecay(init_value=0.1, transition_steps=2, decay_rate=0.5)
    x, y = regression_data(batches=3)
    logger = TrainingLogger()

    optimizer = keras.optimizers.SGD(learning_rate=KerasSchedule(schedule))

    _, history = fit_linear(optimizer, x, y, epochs=2, callbacks=[logger])

    np.testing.assert_allclose(logger.batch_history["lr"], reference_values(schedule, range(6)), rtol=FLOAT32_RTOL)
    np.testing.assert_allclose(logger.history["lr"], [schedule(2), schedule(5)], rtol=FLOAT32_RTOL)
    assert history.history["lr"] == logger.history["lr"]
    assert "grad_norm" not in logger.batch_history


def test_logger_norms_and_clip_fraction():
    schedule = ops.Constant(value=0.02)
    x, y = regression_data(batches=3, seed=3)
    _, reference_infos = simulate_sgd(x, y, 4, 6, schedule, ops.ClipByGlobalNorm(max_norm=1e9))
    norms = sorted(float(info.norm) for info in reference_infos)
    # A max_norm between the unclipped norms, so some steps clip and some do not.
    clipper = ops.ClipByGlobalNorm(max_norm=(norms[2] + norms[3]) / 2)
    _, infos = simulate_sgd(x, y, 4, 6, schedule, clipper)
    clipped = [bool(info.clipped) for info in infos]
    logger = TrainingLogger()
    optimizer = ClippedOptimizer(keras.optimizers.SGD(learning_rate=KerasSchedule(schedule)), clipper)

    _, history = fit_linear(optimizer, x, y, epochs=2, callbacks=[logger])

    expected_norms = [float(info.norm) for info in infos]
    assert 0 < sum(clipped) < 6
    np.testing.assert_allclose(logger.batch_history["grad_norm"], expected_norms, rtol=1e-5)
    np.testing.assert_allclose(
        logger.history["grad_norm"], [np.mean(expected_norms[:3]), np.mean(expected_norms[3:])], rtol=1e-5
    )
    running = [sum(clipped[:count]) / count for count in (1, 2, 3)] + [
        sum(clipped[3:count]) / (count - 3) for count in (4, 5, 6)
    ]
    np.testing.assert_allclose(logger.batch_history["clip_fraction"], running)
    np.testing.assert_allclose(logger.history["clip_fraction"], [sum(clipped[:3]) / 3, sum(clipped[3:]) / 3])
    assert logger.history["skipped_steps"] == [0.0, 0.0]
    assert history.history["clip_fraction"] == logger.history["clip_fraction"]
    assert int(to_numpy(optimizer.clip_count)) == sum(clipped)
    assert int(to_numpy(optimizer.step_count)) == 6


def assign_values(optimizer, variables, new_variables, new_optimizer_variables):
    for variable, value in zip(variables, new_variables):
        variable.assign(value)
    for variable, value in zip(optimizer.variables, new_optimizer_variables):
        variable.assign(value)


def stateless_assign(stateless_apply, optimizer, variables, grads):
    """Run ``stateless_apply`` on the current values and write the results back, as model.fit does on JAX."""
    optimizer_values = [variable.value for variable in optimizer.variables]
    variable_values = [variable.value for variable in variables]
    assign_values(optimizer, variables, *stateless_apply(optimizer_values, grads, variable_values))


def jax_stateless_apply_all(setups):
    """Return a function that applies every optimizer through one jitted stateless_apply."""
    import jax

    @jax.jit
    def step(optimizer_values, grads, variable_values):
        return [
            optimizer.stateless_apply(values, grads, variables)
            for (optimizer, _), values, variables in zip(setups, optimizer_values, variable_values)
        ]

    def apply_all(grads):
        optimizer_values = [[variable.value for variable in optimizer.variables] for optimizer, _ in setups]
        variable_values = [[variable.value for variable in variables] for _, variables in setups]
        results = step(optimizer_values, grads, variable_values)
        for (optimizer, variables), (new_variables, new_optimizer_variables) in zip(setups, results):
            assign_values(optimizer, variables, new_variables, new_optimizer_variables)

    return apply_all


def test_clipper_kinds_apply_like_core():
    # Every kind updates its own pair of variables from the same gradients, through the path
    # model.fit takes: one tf.function for all kinds on TensorFlow, jitted stateless_apply on
    # JAX, eager apply on PyTorch.
    rng = np.random.default_rng(5)
    kernel = rng.normal(size=(3, 2)).astype("float32")
    bias = rng.normal(size=(2,)).astype("float32")
    steps = [
        [rng.normal(size=(3, 2)).astype("float32") * scale, rng.normal(size=(2,)).astype("float32") * scale]
        for scale in (1.0, 4.0, 0.1, 2.0)
    ]
    learning_rate = 0.1
    setups = []
    for case in CLIPPER_CASES:
        variables = [keras.Variable(kernel), keras.Variable(bias)]
        optimizer = ClippedOptimizer(keras.optimizers.SGD(learning_rate=learning_rate), case.values[0])
        optimizer.build(variables)
        setups.append((optimizer, variables))

    def apply_all(grads):
        for optimizer, variables in setups:
            optimizer.apply(grads, variables)

    if BACKEND == "tensorflow":
        import tensorflow as tf

        apply_all = tf.function(apply_all)
    if BACKEND == "jax":
        apply_all = jax_stateless_apply_all(setups)
    for grads in steps:
        apply_all([keras.ops.convert_to_tensor(grad) for grad in grads])

    for case, (optimizer, variables) in zip(CLIPPER_CASES, setups):
        clipper = case.values[0]
        params = [kernel.astype(np.float64), bias.astype(np.float64)]
        state = clipper.init(steps[0])
        clip_count = 0
        for grads in steps:
            clipped, state, info = clipper.update(grads, state, params=[param.astype(np.float32) for param in params])
            params = [param - learning_rate * grad.astype(np.float64) for param, grad in zip(params, clipped)]
            clip_count += bool(info.clipped)
        for variable, expected in zip(variables, params):
            np.testing.assert_allclose(to_numpy(variable), expected, rtol=1e-5, atol=1e-6, err_msg=case.id)
        assert float(to_numpy(optimizer.grad_norm)) == pytest.approx(float(info.norm), rel=1e-5), case.id
        assert float(to_numpy(optimizer.clip_scale)) == pytest.approx(float(info.scale), rel=1e-5, abs=1e-7), case.id
        assert int(to_numpy(optimizer.clip_count)) == clip_count, case.id
        assert int(to_numpy(optimizer.iterations)) == len(steps), case.id


def test_global_norm_matches_keras_clipnorm():
    # Keras scales by s = c * min(1 / norm, 1 / c), the clipper by min(1, c / norm):
    # equal in exact arithmetic, a few float32 rounding steps apart after Adam.
    schedule = ops.CosineDecay(init_value=0.05, decay_steps=10)
    x, y = regression_data(batches=3, seed=2)
    clipped_optimizer = ClippedOptimizer(
        keras.optimizers.Adam(learning_rate=KerasSchedule(schedule)), ops.ClipByGlobalNorm(max_norm=0.5)
    )
    keras_optimizer = keras.optimizers.Adam(learning_rate=KerasSchedule(schedule), global_clipnorm=0.5)

    ours, _ = fit_linear(clipped_optimizer, x, y, epochs=2)
    theirs, _ = fit_linear(keras_optimizer, x, y, epochs=2)

    np.testing.assert_allclose(to_numpy(ours.layers[0].kernel), to_numpy(theirs.layers[0].kernel), rtol=1e-5, atol=1e-7)
    assert int(to_numpy(clipped_optimizer.iterations)) == int(to_numpy(keras_optimizer.iterations)) == 6


def test_loss_scale_optimizer_wraps_clipper():
    clipper = ops.ClipByGlobalNorm(max_norm=1.0)
    variables = [keras.Variable([[0.5], [0.5], [0.5]])]
    inner = ClippedOptimizer(keras.optimizers.SGD(learning_rate=0.1), clipper)
    optimizer = keras.optimizers.LossScaleOptimizer(inner, initial_scale=2.0**10)
    grad = np.array([[3.0], [4.0], [12.0]], dtype="float32")

    scaled_grads = [keras.ops.convert_to_tensor(grad * 2.0**10)]

    # LossScaleOptimizer receives gradients of the scaled loss and unscales them before the clipper.
    if BACKEND == "jax":
        # LossScaleOptimizer.apply assigns inside ops.cond, which JAX cannot run eagerly,
        # so this calls stateless_apply, as model.fit does on JAX.
        optimizer.build(variables)
        stateless_assign(optimizer.stateless_apply, optimizer, variables, scaled_grads)
    else:
        optimizer.apply(scaled_grads, variables)

    assert float(to_numpy(inner.grad_norm)) == pytest.approx(13.0)
    np.testing.assert_allclose(to_numpy(variables[0]), 0.5 - 0.1 * grad / 13.0, rtol=1e-6)


def test_inner_loss_scale_factor_moves_to_wrapper():
    clipper = ops.ClipByGlobalNorm(max_norm=1.0)
    variables = [keras.Variable([[0.5], [0.5], [0.5]])]
    inner = keras.optimizers.SGD(learning_rate=0.1, loss_scale_factor=128.0)
    optimizer = ClippedOptimizer(inner, clipper)
    grad = np.array([[3.0], [4.0], [12.0]], dtype="float32")

    optimizer.apply([keras.ops.convert_to_tensor(grad * 128.0)], variables)

    assert optimizer.loss_scale_factor == 128.0
    assert inner.loss_scale_factor is None
    assert float(to_numpy(optimizer.scale_loss(keras.ops.convert_to_tensor(2.0)))) == 256.0
    assert float(to_numpy(optimizer.grad_norm)) == pytest.approx(13.0)
    np.testing.assert_allclose(to_numpy(variables[0]), 0.5 - 0.1 * grad / 13.0, rtol=1e-6)


# --- Non-finite gradients ----------------------------------------------------------------------


def nan_batch_data():
    """Return three batches of four rows, the second with a NaN input, and the data without it."""
    x, y = regression_data(batches=3, seed=4)
    x_nan = x.copy()
    x_nan[5, 1] = np.nan
    finite_rows = np.r_[0:4, 8:12]
    return x_nan, y, x[finite_rows], y[finite_rows]


def test_fit_skips_nonfinite_step_whole():
    schedule = ops.ExponentialDecay(init_value=0.05, transition_steps=1, decay_rate=0.5)
    x_nan, y, x_finite, y_finite = nan_batch_data()
    logger = TrainingLogger()
    clipper = ops.ClipByGlobalNorm(max_norm=1.0)
    skipping = ClippedOptimizer(keras.optimizers.Adam(learning_rate=KerasSchedule(schedule)), clipper)
    reference = ClippedOptimizer(keras.optimizers.Adam(learning_rate=KerasSchedule(schedule)), clipper)

    skipped_model, _ = fit_linear(skipping, x_nan, y, callbacks=[logger])
    reference_model, _ = fit_linear(reference, x_finite, y_finite)

    # The skipped step leaves no trace: weights, Adam moments and iterations match a run without that batch.
    np.testing.assert_allclose(
        to_numpy(skipped_model.layers[0].kernel), to_numpy(reference_model.layers[0].kernel), rtol=1e-6
    )
    for ours, theirs in zip(skipping.inner_optimizer.variables, reference.inner_optimizer.variables):
        np.testing.assert_allclose(to_numpy(ours), to_numpy(theirs), rtol=1e-6, err_msg=ours.path)
    assert int(to_numpy(skipping.iterations)) == 2
    assert int(to_numpy(skipping.skip_count)) == 1
    assert int(to_numpy(skipping.step_count)) == 3
    assert logger.history["skipped_steps"] == [1.0]
    # The schedule did not advance on the skipped step: steps 0, 1 and 2 applied lr(0), lr(1), lr(1).
    np.testing.assert_allclose(logger.batch_history["lr"], [schedule(0), schedule(1), schedule(1)], rtol=FLOAT32_RTOL)
    assert math.isnan(logger.batch_history["grad_norm"][1])
    finite_norms = [logger.batch_history["grad_norm"][0], logger.batch_history["grad_norm"][2]]
    assert logger.history["grad_norm"] == [pytest.approx(np.mean(finite_norms))]


def test_apply_skips_nan_gradients():
    model = linear_model()
    variables = model.trainable_variables
    optimizer = ClippedOptimizer(keras.optimizers.Adam(learning_rate=0.1), ops.ClipByGlobalNorm(max_norm=1.0))
    finite_grads = [keras.ops.convert_to_tensor([[3.0], [4.0], [0.0]])]
    nan_grads = [keras.ops.convert_to_tensor([[np.nan], [1.0], [0.0]])]
    optimizer.apply(finite_grads, variables)
    weights_before = [to_numpy(variable) for variable in variables]
    inner_before = [to_numpy(variable) for variable in optimizer.inner_optimizer.variables]

    optimizer.apply(nan_grads, variables)

    for variable, before in zip(variables, weights_before):
        np.testing.assert_array_equal(to_numpy(variable), before)
    for variable, before in zip(optimizer.inner_optimizer.variables, inner_before):
        np.testing.assert_array_equal(to_numpy(variable), before, err_msg=variable.path)
    assert int(to_numpy(optimizer.iterations)) == 1
    assert int(to_numpy(optimizer.skip_count)) == 1
    assert not bool(to_numpy(optimizer.finite))
    assert not bool(to_numpy(optimizer.clipped))
    assert math.isnan(float(to_numpy(optimizer.grad_norm)))

    optimizer.apply(finite_grads, variables)

    assert int(to_numpy(optimizer.iterations)) == 2
    assert int(to_numpy(optimizer.step_count)) == 3


def test_apply_propagate_policy_applies_nan():
    model = linear_model()
    variables = model.trainable_variables
    optimizer = ClippedOptimizer(
        keras.optimizers.SGD(learning_rate=0.1), ops.ClipByGlobalNorm(max_norm=1.0, nonfinite="propagate")
    )

    optimizer.apply([keras.ops.convert_to_tensor([[np.nan], [1.0], [0.0]])], variables)

    assert np.isnan(to_numpy(variables[0])[0, 0])
    assert int(to_numpy(optimizer.iterations)) == 1
    assert int(to_numpy(optimizer.skip_count)) == 0


def test_apply_error_policy_raises_eagerly():
    model = linear_model()
    variables = model.trainable_variables
    optimizer = ClippedOptimizer(
        keras.optimizers.SGD(learning_rate=0.1), ops.ClipByGlobalNorm(max_norm=1.0, nonfinite="error")
    )
    optimizer.build(variables)
    before = to_numpy(variables[0])

    with pytest.raises(NonFiniteGradientError, match="gradients contain NaN or infinity"):
        optimizer.apply([keras.ops.convert_to_tensor([[np.inf], [1.0], [0.0]])], variables)

    np.testing.assert_array_equal(to_numpy(variables[0]), before)
    assert int(to_numpy(optimizer.iterations)) == 0


# --- Construction, configuration and saving ------------------------------------------------------


@pytest.mark.parametrize("argument", ["clipnorm", "clipvalue", "global_clipnorm"])
def test_inner_optimizer_clipping_conflicts(argument):
    inner = keras.optimizers.SGD(learning_rate=0.1, **{argument: 1.0})

    with pytest.raises(ValueError, match=rf"optimizer already clips gradients \({argument}=1\.0\)"):
        ClippedOptimizer(inner, ops.ClipByGlobalNorm(max_norm=1.0))


def test_inner_optimizer_gradient_accumulation_rejected():
    inner = keras.optimizers.SGD(learning_rate=0.1, gradient_accumulation_steps=2)

    with pytest.raises(ValueError, match=r"optimizer accumulates gradients \(gradient_accumulation_steps=2\)"):
        ClippedOptimizer(inner, ops.ClipByGlobalNorm(max_norm=1.0))


def test_inner_loss_scale_optimizer_rejected():
    inner = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(learning_rate=0.1))

    with pytest.raises(ValueError, match=r"optimizer must not be a LossScaleOptimizer"):
        ClippedOptimizer(inner, ops.ClipByGlobalNorm(max_norm=1.0))


def test_loss_scale_factor_set_twice_rejected():
    inner = keras.optimizers.SGD(learning_rate=0.1, loss_scale_factor=8.0)

    with pytest.raises(ValueError, match=r"loss_scale_factor is set both on the inner optimizer \(8\.0\)"):
        ClippedOptimizer(inner, ops.ClipByGlobalNorm(max_norm=1.0), loss_scale_factor=4.0)


def test_constructor_type_errors():
    with pytest.raises(TypeError, match=r"optimizer must be a keras.optimizers.Optimizer, got 'sgd' \(str\)"):
        ClippedOptimizer("sgd", ops.ClipByGlobalNorm(max_norm=1.0))
    with pytest.raises(TypeError, match=r"clipper must be an optstrat clipper or its config dict, got 1\.0 \(float\)"):
        ClippedOptimizer(keras.optimizers.SGD(learning_rate=0.1), 1.0)


def test_apply_before_build_needs_variables():
    optimizer = ClippedOptimizer(keras.optimizers.SGD(learning_rate=0.1), ops.ClipByGlobalNorm(max_norm=1.0))

    with pytest.raises(ValueError, match=r"ClippedOptimizer is not built yet, so apply needs trainable_variables"):
        optimizer.apply([keras.ops.ones((3, 1))])


def test_apply_rejects_gradient_count_mismatch():
    model = linear_model()
    optimizer = ClippedOptimizer(keras.optimizers.SGD(learning_rate=0.1), ops.ClipByGlobalNorm(max_norm=1.0))
    optimizer.build(model.trainable_variables)

    with pytest.raises(ValueError, match=r"grads must have one entry per trainable variable, got 2 gradients for 1"):
        optimizer.apply([keras.ops.ones((3, 1)), keras.ops.ones((3, 1))])


def test_clipped_optimizer_config_round_trip():
    clipper = ops.AutoClip(percentile=50.0, history_size=4)
    inner = keras.optimizers.Adam(learning_rate=KerasSchedule(SCHEDULE_EXAMPLES["warmup"][0]), beta_1=0.8)
    optimizer = ClippedOptimizer(inner, clipper, name="clipped")

    rebuilt = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))

    assert isinstance(rebuilt, ClippedOptimizer)
    assert rebuilt.name == "clipped"
    assert rebuilt.clipper == clipper
    assert isinstance(rebuilt.inner_optimizer, keras.optimizers.Adam)
    assert rebuilt.inner_optimizer.get_config() == inner.get_config()
    assert rebuilt.get_config() == optimizer.get_config()


@keras_variable_array_warning
def test_save_and_load_keras_file(tmp_path):
    schedule = SCHEDULE_EXAMPLES["warmup_cosine"][0]
    clipper = ops.AutoClip(percentile=50.0, history_size=4)
    x, y = regression_data(batches=3)
    optimizer = ClippedOptimizer(keras.optimizers.Adam(learning_rate=KerasSchedule(schedule)), clipper)
    model, _ = fit_linear(optimizer, x, y)
    path = tmp_path / "model.keras"

    model.save(path)
    loaded = keras.saving.load_model(path)

    assert isinstance(loaded.optimizer, ClippedOptimizer)
    assert loaded.optimizer.clipper == clipper
    assert loaded.optimizer.inner_optimizer.learning_rate is not None
    assert loaded.optimizer.inner_optimizer._learning_rate.schedule == schedule
    assert len(loaded.optimizer.variables) == len(optimizer.variables)
    for saved, restored in zip(optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(to_numpy(restored), to_numpy(saved), err_msg=saved.path)

    # Training on from the file continues exactly as training on from memory.
    model.fit(x, y, batch_size=4, shuffle=False, verbose=0)
    loaded.fit(x, y, batch_size=4, shuffle=False, verbose=0)
    np.testing.assert_allclose(to_numpy(loaded.layers[0].kernel), to_numpy(model.layers[0].kernel), rtol=1e-6)


@only_tensorflow
def test_tensorflow_distribution_strategy_rejected():
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = linear_model()
        optimizer = ClippedOptimizer(keras.optimizers.SGD(learning_rate=0.1), ops.ClipByGlobalNorm(max_norm=1.0))
        model.compile(optimizer=optimizer, loss="mse")
    x, y = regression_data(batches=1)

    with pytest.raises(ValueError, match=r"supports only the default TensorFlow distribution strategy, got Mirrored"):
        model.fit(x, y, batch_size=4, verbose=0)


# --- The TensorFlow namespace ----------------------------------------------------------------


@only_tensorflow
def test_tensorflow_namespace_matches_numpy():
    import array_api_compat
    import tensorflow as tf

    from optstrat_keras import _tf_namespace as xp

    values = np.array([[-2.5, 0.0, 1.5], [np.inf, -np.inf, np.nan]], dtype=np.float32)
    finite = np.array([[-2.5, 0.25, 1.5], [4.0, 9.0, 0.5]], dtype=np.float32)
    integers = np.array([-7, -1, 0, 5, 9], dtype=np.int64)
    tensor = tf.constant(values)
    positive = tf.constant(finite * finite + 0.5)
    wrapped = xp.TensorFlowArray(tf.constant(finite))

    unary = ["abs", "sign", "floor", "ceil", "isfinite", "isnan", "isinf"]
    for name in unary:
        np.testing.assert_array_equal(getattr(xp, name)(tensor).numpy(), getattr(np, name)(values), err_msg=name)
    for name in ["cos", "sin", "sqrt", "exp", "log", "log1p"]:
        expected = getattr(np, name)(finite * finite + 0.5)
        np.testing.assert_allclose(getattr(xp, name)(positive).numpy(), expected, rtol=1e-6, err_msg=name)
    np.testing.assert_array_equal(xp.floor_divide(tf.constant(integers), 4).numpy(), np.floor_divide(integers, 4))
    np.testing.assert_array_equal(xp.remainder(tf.constant(integers), 4).numpy(), np.remainder(integers, 4))
    np.testing.assert_array_equal(xp.floor(tf.constant(integers)).numpy(), integers)
    np.testing.assert_array_equal(xp.maximum(wrapped, 1.0).numpy(), np.maximum(finite, 1.0))
    np.testing.assert_array_equal(xp.minimum(2.0, wrapped).numpy(), np.minimum(2.0, finite))
    np.testing.assert_array_equal(xp.where(wrapped > 1.0, wrapped, 0.0).numpy(), np.where(finite > 1.0, finite, 0.0))
    assert float(xp.sum(wrapped)) == pytest.approx(float(np.sum(finite)))
    np.testing.assert_allclose(xp.sum(wrapped, axis=1, keepdims=True).numpy(), np.sum(finite, axis=1, keepdims=True))
    assert float(xp.max(wrapped)) == float(np.max(finite))
    assert float(xp.min(wrapped)) == float(np.min(finite))
    np.testing.assert_array_equal(xp.sort(tf.constant([3.0, 1.0, 2.0])).numpy(), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(xp.arange(4, dtype=xp.int32).numpy(), np.arange(4))
    np.testing.assert_array_equal(xp.full_like(wrapped, np.inf).numpy(), np.full_like(finite, np.inf))
    assert xp.zeros((2,), dtype=xp.int64).dtype == tf.int64
    assert xp.ones(()).dtype == tf.float32
    assert xp.zeros_like(wrapped, dtype=xp.bool).dtype == tf.bool
    assert xp.ones_like(wrapped).dtype == tf.float32
    assert xp.astype(wrapped, xp.float64).dtype == tf.float64
    assert xp.asarray(3, dtype=xp.int64, device="cpu").dtype == tf.int64
    assert tuple(xp.reshape(wrapped, (3, 2)).shape) == (3, 2)
    np.testing.assert_array_equal(
        xp.logical_and(tf.constant([True, False]), True).numpy(), [True, False]
    )
    np.testing.assert_array_equal(xp.logical_or(tf.constant([True, False]), False).numpy(), [True, False])
    np.testing.assert_array_equal(xp.logical_not(tf.constant([True, False])).numpy(), [False, True])
    assert xp.iinfo(xp.int64).max == 2**63 - 1
    assert xp.iinfo(xp.int32).min == -(2**31)
    assert xp.finfo(xp.float32).max == np.finfo(np.float32).max
    assert float(xp.finfo(xp.bfloat16).max) == pytest.approx(3.3895e38, rel=1e-4)
    assert array_api_compat.array_namespace(wrapped) is xp
    assert wrapped.shape == (2, 3)
    assert wrapped.ndim == 2
    np.testing.assert_array_equal((tf.constant(finite) == wrapped).numpy(), np.ones((2, 3), dtype=bool))
    np.testing.assert_array_equal((1.0 - wrapped).numpy(), 1.0 - finite)
    np.testing.assert_array_equal((-wrapped).numpy(), -finite)


# --- Parity with Keras's own schedules (JAX backend) -------------------------------------------


def keras_values(keras_schedule, steps):
    """Evaluate a Keras schedule at each step; ``jax.vmap`` turns its ``ops.cond`` into a select."""
    import jax

    return np.asarray(jax.vmap(keras_schedule)(np.asarray(steps, dtype=np.int32)))


def ours_values(schedule, steps):
    return to_numpy(KerasSchedule(schedule)(keras.ops.convert_to_tensor(np.asarray(steps), dtype="int32")))


# A fixed number of steps keeps array shapes fixed, so JAX compiles each eager operation once.
step_lists = st.lists(st.integers(min_value=0, max_value=20_000), min_size=12, max_size=12)

# Each example runs a few dozen eager JAX operations, so these tests take a quarter of the
# profile's examples (10 in "ci", 250 in "thorough").
parity_settings = settings(max_examples=max(10, settings.default.max_examples // 4))


@only_jax
@parity_settings
@given(
    init_value=st.floats(min_value=1e-4, max_value=10.0),
    decay_steps=st.integers(min_value=1, max_value=5_000),
    decay_rate=st.floats(min_value=0.05, max_value=0.999),
    staircase=st.booleans(),
    step_decay=st.booleans(),
    steps=step_lists,
)
def test_exponential_decay_parity(init_value, decay_steps, decay_rate, staircase, step_decay, steps):
    if step_decay:
        # step_decay gives the values of Keras's ExponentialDecay with staircase=True.
        staircase = True
        ours = ops.StepDecay(init_value=init_value, decay_rate=decay_rate, decay_steps=decay_steps)
    else:
        ours = ops.ExponentialDecay(
            init_value=init_value, transition_steps=decay_steps, decay_rate=decay_rate, staircase=staircase
        )
    theirs = keras.optimizers.schedules.ExponentialDecay(init_value, decay_steps, decay_rate, staircase=staircase)

    expected = keras_values(theirs, steps)
    actual = ours_values(ours, steps)

    # Keras rounds decay_rate to float32 and divides step / decay_steps in float32 before
    # the power, which moves rate ** p by up to p * 2**-24 and |p * log(rate)| * 2**-24
    # relative. optstrat keeps log(rate) in float64 and splits p into an exact integer part
    # and a fraction, so it stays within 1e-6 of the float64 value.
    exponent = np.floor(np.asarray(steps) / decay_steps) if staircase else np.asarray(steps) / decay_steps
    rtol = 1e-6 + 2.0**-24 * (exponent + 4 * np.abs(exponent * math.log(decay_rate)))
    assert np.all(np.abs(actual - expected) <= rtol * np.abs(expected) + 1e-37)


@only_jax
@parity_settings
@given(
    init_value=st.floats(min_value=1e-4, max_value=10.0),
    end_fraction=st.floats(min_value=0.0, max_value=1.0),
    decay_steps=st.integers(min_value=1, max_value=10_000),
    steps=step_lists,
)
def test_cosine_decay_parity(init_value, end_fraction, decay_steps, steps):
    end_value = init_value * end_fraction
    ours = ops.CosineDecay(init_value=init_value, decay_steps=decay_steps, end_value=end_value)
    theirs = keras.optimizers.schedules.CosineDecay(float(init_value), decay_steps, alpha=end_value / init_value)

    np.testing.assert_allclose(ours_values(ours, steps), keras_values(theirs, steps), rtol=1e-5, atol=1e-6 * init_value)


@only_jax
def test_keras_cosine_int_init_truncates_pi():
    # Keras computes in the dtype of initial_learning_rate; an int makes pi the integer 3.
    theirs = keras.optimizers.schedules.CosineDecay(1, 4)
    ours = ops.CosineDecay(init_value=1, decay_steps=4)

    assert float(to_numpy(theirs(2))) == pytest.approx(0.5 * (1 + math.cos(3 * 0.5)), rel=1e-6)
    assert float(to_numpy(theirs(2))) == pytest.approx(0.5353686, rel=1e-6)
    assert float(ours_values(ours, [2])[0]) == pytest.approx(0.5, abs=1e-7)


@only_jax
@parity_settings
@given(
    init_value=st.floats(min_value=0.0, max_value=1.0),
    peak_value=st.floats(min_value=1e-3, max_value=10.0),
    end_fraction=st.floats(min_value=0.0, max_value=1.0),
    warmup_steps=st.integers(min_value=1, max_value=2_000),
    cosine_steps=st.integers(min_value=1, max_value=10_000),
    steps=step_lists,
)
def test_warmup_cosine_parity(init_value, peak_value, end_fraction, warmup_steps, cosine_steps, steps):
    end_value = peak_value * end_fraction
    ours = ops.WarmupCosine(
        peak_value=peak_value,
        warmup_steps=warmup_steps,
        decay_steps=warmup_steps + cosine_steps,
        init_value=init_value,
        end_value=end_value,
    )
    # Keras's decay_steps counts only the cosine part; optstrat's counts the warmup too.
    theirs = keras.optimizers.schedules.CosineDecay(
        float(init_value),
        cosine_steps,
        alpha=end_value / peak_value,
        warmup_target=peak_value,
        warmup_steps=warmup_steps,
    )
    steps[:4] = [0, warmup_steps - 1, warmup_steps, warmup_steps + cosine_steps]

    # Both interpolate in float32, so the rounding is relative to the larger endpoint.
    atol = 1e-6 * max(init_value, peak_value)
    np.testing.assert_allclose(ours_values(ours, steps), keras_values(theirs, steps), rtol=1e-5, atol=atol)
