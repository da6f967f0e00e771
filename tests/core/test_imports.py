"""The core must load without any deep-learning framework."""

import json
import subprocess
import sys

FRAMEWORKS = ("torch", "jax", "jaxlib", "tensorflow", "keras", "optax", "matplotlib")


def test_import_loads_no_framework():
    code = (
        "import json, sys\n"
        "import optstrat, optstrat.schedules, optstrat.clipping, optstrat.config\n"
        "optstrat.from_spec('cosine_decay(init_value=0.1, decay_steps=10)')(3)\n"
        f"print(json.dumps([name for name in {FRAMEWORKS!r} if name in sys.modules]))\n"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(output.stdout.strip().splitlines()[-1])
    assert loaded == []


def test_public_names_resolve():
    import optstrat

    for name in optstrat.__all__:
        assert hasattr(optstrat, name), name
