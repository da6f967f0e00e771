"""optstrat schedules used directly as Optax learning rates, under jit and vmap."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optstrat as ops
from tests.kind_examples import SCHEDULE_EXAMPLES

# float32 evaluation against the float64 Python result: a few float32 ulps of
# the value, plus an absolute term for values near 0 that come from a
# difference (1 + cos(x) near x = pi).
RTOL = 2e-6
ATOL = 1e-6

EXAMPLES = [
    pytest.param(schedule, id=f"{kind}-{index}")
    for kind, schedules in SCHEDULE_EXAMPLES.items()
    for index, schedule in enumerate(schedules)
]


def expected_rates(schedule, steps):
    return np.array([schedule(step) for step in steps], dtype=np.float64)


def test_sgd_applies_schedule_without_retrace():
    schedule = ops.WarmupCosine(peak_value=0.5, warmup_steps=3, decay_steps=12, end_value=0.05)
    optimizer = optax.sgd(learning_rate=schedule)
    traces = 0

    @jax.jit
    def train_step(params, state):
        nonlocal traces
        traces += 1
        updates, state = optimizer.update(jnp.ones_like(params), state, params)
        return updates, optax.apply_updates(params, updates), state

    params = jnp.zeros(3)
    state = optimizer.init(params)
    applied = []
    for _ in range(16):
        updates, params, state = train_step(params, state)
        applied.append(-float(updates[0]))

    assert traces == 1
    np.testing.assert_allclose(applied, expected_rates(schedule, range(16)), rtol=RTOL, atol=ATOL)


def test_jitted_schedule_no_retrace_across_steps():
    schedule = ops.ExponentialDecay(init_value=1.0, transition_steps=5, decay_rate=0.5, staircase=True)
    traces = 0

    @jax.jit
    def learning_rate(step):
        nonlocal traces
        traces += 1
        return schedule(step)

    values = [float(learning_rate(jnp.asarray(step, dtype=jnp.int32))) for step in (0, 4, 5, 6, 99, 2**31 - 1)]

    assert traces == 1
    np.testing.assert_allclose(values, expected_rates(schedule, (0, 4, 5, 6, 99, 2**31 - 1)), rtol=RTOL, atol=ATOL)


def test_vmap_over_optimizer_states():
    schedule = ops.CosineDecay(init_value=1.0, decay_steps=10, end_value=0.1)
    optimizer = optax.sgd(learning_rate=schedule)
    counts = jnp.array([0, 3, 7, 10, 50], dtype=jnp.int32)
    params = jnp.zeros((5, 2))
    states = jax.vmap(optimizer.init)(params)
    schedule_state = states[1]._replace(count=counts)
    states = (states[0], schedule_state)

    updates, new_states = jax.jit(jax.vmap(optimizer.update))(jnp.ones_like(params), states, params)

    assert updates.shape == (5, 2)
    np.testing.assert_allclose(-updates[:, 0], expected_rates(schedule, counts.tolist()), rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(new_states[1].count, counts + 1)


def test_inject_hyperparams_reads_schedule():
    schedule = ops.Join(
        schedules=[ops.Constant(value=0.3), ops.CosineDecay(init_value=0.3, decay_steps=6, end_value=0.01)],
        boundaries=[4],
    )
    optimizer = optax.inject_hyperparams(optax.sgd)(learning_rate=schedule)
    params = jnp.zeros(2)
    state = optimizer.init(params)
    update = jax.jit(optimizer.update)

    assert float(state.hyperparams["learning_rate"]) == pytest.approx(schedule(0), rel=RTOL)
    for step in range(14):
        updates, state = update(jnp.ones(2), state, params)
        # After update k the state contains the rate that update k used.
        injected = float(state.hyperparams["learning_rate"])
        assert injected == pytest.approx(schedule(step), rel=RTOL, abs=ATOL)
        assert -float(updates[0]) == pytest.approx(schedule(step), rel=RTOL, abs=ATOL)


@pytest.mark.parametrize("schedule", EXAMPLES)
def test_every_kind_as_learning_rate(schedule):
    # With a gradient of ones, each SGD update is -learning_rate.
    optimizer = optax.sgd(learning_rate=schedule)
    inject = optax.inject_hyperparams(optax.adam)(learning_rate=schedule)
    steps = 24

    @jax.jit
    def run(params):
        def body(carry, _):
            params, state, inject_state = carry
            grads = jnp.ones_like(params)
            updates, state = optimizer.update(grads, state, params)
            _, inject_state = inject.update(grads, inject_state, params)
            rates = (-updates[0], inject_state.hyperparams["learning_rate"])
            return (optax.apply_updates(params, updates), state, inject_state), rates

        carry = (params, optimizer.init(params), inject.init(params))
        _, rates = jax.lax.scan(body, carry, None, length=steps)
        return rates

    applied, injected = run(jnp.zeros(2))
    expected = expected_rates(schedule, range(steps))

    assert injected.dtype == jnp.float32
    np.testing.assert_allclose(injected, expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(applied, expected, rtol=RTOL, atol=ATOL)
