"""Shared fixtures: Hypothesis profiles and the array-namespace fixture ``xp``."""

from __future__ import annotations

import importlib
import os

import pytest
from hypothesis import HealthCheck, settings

# "ci" keeps the suite fast; OPTSTRAT_HYPOTHESIS=thorough runs at least 1000 examples per test.
settings.register_profile(
    "ci",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,
)
settings.register_profile(
    "thorough",
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("OPTSTRAT_HYPOTHESIS", "ci"))

_NAMESPACES = {
    "numpy": "array_api_compat.numpy",
    "array_api_strict": "array_api_strict",
    "torch": "array_api_compat.torch",
    "jax": "jax.numpy",
}


def _load_namespace(name: str):
    if name == "torch":
        pytest.importorskip("torch", reason="torch is not installed")
    if name == "jax":
        pytest.importorskip("jax", reason="jax is not installed")
    if name == "array_api_strict":
        pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")
    return importlib.import_module(_NAMESPACES[name])


@pytest.fixture(params=sorted(_NAMESPACES))
def xp(request):
    """Each array namespace the core supports, as array-api-compat names it."""
    return _load_namespace(request.param)
