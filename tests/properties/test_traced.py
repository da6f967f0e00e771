"""Every schedule kind on the compiled path: jax.jit, jax.vmap and torch.compile.

The examples come from tests/kind_examples.py, so a kind added there is covered
here without a change to this file. Each compiled value must equal the Python
float (float64) result within float32 tolerance, with the step's shape, dtype
rules, namespace and device.
"""

from __future__ import annotations

import array_api_compat
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import optstrat
from optstrat.schedules import Schedule
from tests.kind_examples import SCHEDULE_EXAMPLES

EXAMPLES = [
    pytest.param(schedule, id=f"{kind}-{index}")
    for kind, schedules in SCHEDULE_EXAMPLES.items()
    for index, schedule in enumerate(schedules)
]

# Every step from 0 to 29, where the examples have their boundaries, then steps far past the end.
STEPS = list(range(30)) + [97, 1000, 12345, 2**31 - 2, 2**31 - 1]
SCALAR_STEPS = [0, 1, 7, 29, 2**31 - 1]
RTOL = 1e-6
# Values near 0 that come from a difference (1 + cos(x) near x = pi, end - start) lose
# relative precision in float32, so an absolute term is allowed. The examples' levels are a few units.
ATOL = 1e-6



def python_values(schedule, steps):
    return np.array([schedule(int(step)) for step in np.ravel(steps)], dtype=np.float64).reshape(np.shape(steps))


def assert_matches_python(schedule, steps, values):
    np.testing.assert_allclose(np.asarray(values, dtype=np.float64), python_values(schedule, steps), rtol=RTOL, atol=ATOL)


def test_every_kind_has_examples():
    assert set(optstrat.kinds(Schedule)) <= set(SCHEDULE_EXAMPLES)


@pytest.mark.parametrize("schedule", EXAMPLES)
def test_jax_jit_no_retrace(schedule):
    traces = 0

    @jax.jit
    def evaluate(step):
        nonlocal traces
        traces += 1
        return schedule(step)

    for step in SCALAR_STEPS:
        value = evaluate(jnp.asarray(step, dtype=jnp.int32))
        assert value.shape == ()
        assert value.dtype == jnp.float32
        assert_matches_python(schedule, step, value)
    assert traces == 1

    grid = jnp.arange(30, dtype=jnp.int32).reshape(5, 6)
    values = evaluate(grid)

    assert traces == 2
    assert values.shape == (5, 6)
    assert values.dtype == jnp.float32
    assert array_api_compat.array_namespace(values) is array_api_compat.array_namespace(grid)
    assert values.devices() == grid.devices()
    assert_matches_python(schedule, np.asarray(grid), values)


@pytest.mark.parametrize("schedule", EXAMPLES)
def test_jax_vmap(schedule):
    steps = jnp.asarray(STEPS, dtype=jnp.int32)

    @jax.jit
    def evaluate(steps):
        return jax.vmap(schedule)(steps), jax.vmap(jax.vmap(schedule))(steps[:30].reshape(5, 6))

    values, nested = evaluate(steps)

    assert values.shape == steps.shape
    assert values.dtype == jnp.float32
    assert nested.shape == (5, 6)
    assert_matches_python(schedule, STEPS, values)
    np.testing.assert_array_equal(nested, values[:30].reshape(5, 6))


@pytest.mark.parametrize("schedule", EXAMPLES)
def test_built_inside_jit_works_outside(schedule):
    config = schedule.to_config()
    built = []

    @jax.jit
    def build_and_evaluate(step):
        rebuilt = optstrat.from_config(config)
        built.append(rebuilt)
        return rebuilt(step)

    steps = jnp.asarray(STEPS, dtype=jnp.int32)
    inside = build_and_evaluate(steps)
    rebuilt = built[0]
    outside = rebuilt(steps)

    assert rebuilt == schedule
    assert inside.shape == outside.shape == steps.shape
    assert inside.dtype == outside.dtype == jnp.float32
    assert outside.devices() == steps.devices()
    assert_matches_python(schedule, STEPS, inside)
    assert_matches_python(schedule, STEPS, outside)
    assert [rebuilt(step) for step in STEPS] == [schedule(step) for step in STEPS]


class CountingBackend:
    """A torch.compile backend that runs the captured graph eagerly and counts the compilations."""

    def __init__(self) -> None:
        self.compilations = 0

    def __call__(self, graph_module, example_inputs):
        self.compilations += 1
        return graph_module.forward


@pytest.fixture
def fresh_dynamo():
    # Closures share one code object, and Dynamo limits the recompilations per code object.
    torch.compiler.reset()
    yield
    torch.compiler.reset()


def test_torch_compile_every_kind(fresh_dynamo):
    # One compiled function for the first example of every kind: Dynamo's tracing
    # costs seconds per kind, and one graph keeps the whole catalog in one compilation.
    schedules = [examples[0] for examples in SCHEDULE_EXAMPLES.values()]
    backend = CountingBackend()
    evaluate = torch.compile(lambda step: [schedule(step) for schedule in schedules], backend=backend, fullgraph=True)
    steps = STEPS + [2**40]
    step_tensor = torch.tensor(steps, dtype=torch.int64)

    results = evaluate(step_tensor)

    assert backend.compilations == 1
    for kind, schedule, values in zip(SCHEDULE_EXAMPLES, schedules, results):
        assert values.dtype == torch.float32, kind
        assert values.shape == step_tensor.shape, kind
        assert values.device == step_tensor.device, kind
        np.testing.assert_allclose(
            values.numpy().astype(np.float64), python_values(schedule, steps), rtol=RTOL, atol=ATOL, err_msg=kind
        )


@pytest.mark.parametrize(
    "schedule",
    [
        pytest.param(SCHEDULE_EXAMPLES["warmup_cosine"][0], id="warmup_cosine"),
        pytest.param(SCHEDULE_EXAMPLES["exponential_decay"][1], id="exponential_decay-staircase"),
    ],
)
def test_torch_compile_no_recompile(schedule, fresh_dynamo):
    backend = CountingBackend()
    evaluate = torch.compile(schedule, backend=backend, fullgraph=True)

    for step in SCALAR_STEPS:
        value = evaluate(torch.tensor(step, dtype=torch.int64))
        assert value.shape == ()
        assert value.dtype == torch.float32
        assert_matches_python(schedule, step, value)
    assert backend.compilations == 1

    grid = torch.arange(30, dtype=torch.int32).reshape(5, 6)
    grid_values = evaluate(grid)

    assert grid_values.shape == (5, 6)
    assert grid_values.dtype == torch.float32
    assert array_api_compat.array_namespace(grid_values) is array_api_compat.array_namespace(grid)
    assert_matches_python(schedule, grid.numpy(), grid_values)
