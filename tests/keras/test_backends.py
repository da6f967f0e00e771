"""Run the Keras adapter's test cases once per Keras backend, each in its own process.

Keras reads ``KERAS_BACKEND`` when it is first imported and cannot switch
afterwards, so every backend gets a fresh ``python -m pytest`` run of
``backend_cases.py``. The Hypothesis profile (``OPTSTRAT_HYPOTHESIS``) and the
pytest configuration reach the subprocess through the environment and
``tests/conftest.py``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CASES = Path(__file__).with_name("backend_cases.py").relative_to(ROOT)

# The module each backend needs besides keras itself.
BACKEND_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}

# A guard against a hung subprocess, not a performance target: each run takes well under a minute.
TIMEOUT_SECONDS = 600


@pytest.mark.parametrize(
    "backend", [pytest.param(name, marks=pytest.mark.keras_backend(name)) for name in BACKEND_MODULES]
)
def test_backend_cases(backend):
    for module in ("keras", BACKEND_MODULES[backend]):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")

    env = dict(os.environ, KERAS_BACKEND=backend, OPTSTRAT_KERAS_CASES="1", TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, "-m", "pytest", str(CASES), "-q", "-p", "no:cacheprovider"]
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False
    )

    output = f"{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, f"KERAS_BACKEND={backend} {' '.join(command)} failed:\n{output}"
