"""``optstrat demo``: training in every installed framework, the JSON report and the learning-rate agreement.

Each run is a subprocess of ``python -m optstrat.cli demo``, so every framework
is imported fresh and Keras reads KERAS_BACKEND at its import.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import os
import select
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import optstrat

TRAIN_COUNT = 1438  # 1797 digits less 359 (20%, rounded) for the test set
LR_TOLERANCE = 1e-6

REQUIRED_MODULES = {
    "torch": ("torch", "optstrat_torch"),
    "optax": ("jax", "optax", "optstrat_optax"),
    "keras": ("keras", os.environ.get("KERAS_BACKEND", "tensorflow"), "optstrat_keras"),
}
INSTALLED = [
    name for name, modules in REQUIRED_MODULES.items() if all(importlib.util.find_spec(module) for module in modules)
]

pytestmark = pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="scikit-learn is not installed")


def run_demo(*args: str, env: dict[str, str] | None = None, prelude: str = "") -> subprocess.CompletedProcess:
    """Run ``optstrat demo`` in a fresh interpreter; ``prelude`` is Python run before the command."""
    environment = {**os.environ, **(env or {})}
    return subprocess.run(demo_command(args, prelude), capture_output=True, text=True, timeout=600, env=environment)


def demo_command(args: tuple[str, ...], prelude: str = "") -> list[str]:
    code = f"import sys\n{prelude}\nfrom optstrat.cli import main\nsys.exit(main(['demo', *sys.argv[1:]]))\n"
    return [sys.executable, "-c", code, *args]


def run_demo_on_terminal(*args: str) -> tuple[int, str, str]:
    """Run ``optstrat demo`` with stderr on a pseudo-terminal; return the exit status, stdout and stderr."""
    pty = pytest.importorskip("pty", reason="pseudo-terminals need a POSIX system")
    primary, secondary = pty.openpty()
    # stdout goes to a file, so a full pipe cannot block the child while this reads the terminal.
    with tempfile.TemporaryFile() as stdout:
        try:
            with subprocess.Popen(demo_command(args), stdout=stdout, stderr=secondary) as process:
                os.close(secondary)
                chunks = []
                while True:
                    if not select.select([primary], [], [], 600)[0]:
                        process.kill()
                        break
                    try:
                        chunk = os.read(primary, 65536)
                    except OSError:  # Linux raises EIO once the child has closed the terminal.
                        break
                    if not chunk:
                        break
                    chunks.append(chunk)
                status = process.wait(timeout=600)
        finally:
            os.close(primary)
        stdout.seek(0)
        output = stdout.read().decode()
    return status, output, b"".join(chunks).decode(errors="replace")


def epoch_rows(stdout: str) -> list[list[str]]:
    header = ["epoch", "loss", "test", "acc", "lr", "grad", "norm", "clipped"]
    rows, in_table = [], False
    for line in stdout.splitlines():
        if line.split() == header:
            in_table = True
        elif in_table and line.strip() and line.split()[0].isdigit():
            rows.append(line.split())
        else:
            in_table = False
    return rows


# The default run: every installed framework, default options ----------------------------------------


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    if len(INSTALLED) < 2:
        pytest.skip(f"the comparison needs two installed frameworks, found {INSTALLED}")
    directory = tmp_path_factory.mktemp("demo")
    json_path, plot_path = directory / "demo.json", directory / "demo.png"
    arguments = ["--json", str(json_path)]
    if importlib.util.find_spec("matplotlib") is not None:
        arguments += ["--plot", str(plot_path)]
    result = run_demo(*arguments)
    assert result.returncode == 0, result.stdout + result.stderr
    return result, json.loads(json_path.read_text()), plot_path


@pytest.mark.slow
def test_default_json_keys(default_run):
    _, report, _ = default_run
    assert set(report) == {"frameworks", "max_lr_difference", "settings"}
    assert list(report["frameworks"]) == INSTALLED
    for name, record in report["frameworks"].items():
        for key in ("test_accuracy", "lr", "grad_norm", "seconds", "loss_per_epoch", "test_accuracy_per_epoch"):
            assert key in record, (name, key)
        assert record["seconds"] > 0
    assert report["settings"]["epochs"] == 10
    assert report["settings"]["batch_size"] == 32


@pytest.mark.slow
def test_default_one_lr_and_norm_per_update(default_run):
    _, report, _ = default_run
    updates = 10 * math.ceil(TRAIN_COUNT / 32)
    for name, record in report["frameworks"].items():
        assert len(record["lr"]) == updates, name
        assert len(record["grad_norm"]) == updates, name
        assert len(record["loss_per_epoch"]) == 10, name
        assert len(record["test_accuracy_per_epoch"]) == 10, name


@pytest.mark.slow
def test_default_applied_lrs_agree(default_run):
    _, report, _ = default_run
    sequences = {name: np.asarray(record["lr"]) for name, record in report["frameworks"].items()}
    differences = [np.max(np.abs(sequences[a] - sequences[b])) for a, b in itertools.combinations(sequences, 2)]
    assert max(differences) <= LR_TOLERANCE
    assert report["max_lr_difference"] == pytest.approx(max(differences), abs=1e-12)


@pytest.mark.slow
def test_default_lrs_follow_warmup_cosine(default_run):
    _, report, _ = default_run
    updates = 10 * math.ceil(TRAIN_COUNT / 32)
    schedule = optstrat.WarmupCosine(peak_value=0.05, warmup_steps=updates // 10, decay_steps=updates)
    assert optstrat.from_config(report["settings"]["schedule"]) == schedule
    expected = schedule(np.arange(updates))
    for name, record in report["frameworks"].items():
        np.testing.assert_allclose(record["lr"], expected, rtol=0, atol=LR_TOLERANCE, err_msg=name)


@pytest.mark.slow
def test_default_accuracy_reaches_threshold(default_run):
    _, report, _ = default_run
    for name, record in report["frameworks"].items():
        assert record["test_accuracy"] >= 0.9, name
        assert record["test_accuracy"] == record["test_accuracy_per_epoch"][-1], name


@pytest.mark.slow
def test_default_same_start_in_every_framework(default_run):
    # The same initial weights and the same first batch give the same first gradient norm.
    _, report, _ = default_run
    first_norms = [record["grad_norm"][0] for record in report["frameworks"].values()]
    assert first_norms == pytest.approx([first_norms[0]] * len(first_norms), rel=1e-4)


@pytest.mark.slow
def test_default_clipped_fraction_matches_norms(default_run):
    _, report, _ = default_run
    for name, record in report["frameworks"].items():
        norms = np.asarray(record["grad_norm"])
        assert np.all(np.isfinite(norms)), name
        assert np.all(norms > 0), name
        assert record["clipped_fraction"] == pytest.approx(np.mean(norms > 1.0)), name
        assert 0 < record["clipped_fraction"] < 1, name


@pytest.mark.slow
def test_default_output_rows_and_summary(default_run):
    result, report, _ = default_run
    rows = epoch_rows(result.stdout)
    assert len(rows) == 10 * len(INSTALLED)
    assert [int(row[0]) for row in rows] == list(range(1, 11)) * len(INSTALLED)
    assert "summary" in result.stdout
    assert "max learning-rate difference between frameworks" in result.stdout
    assert "agree within 1e-06" in result.stdout
    assert "suggest_max_norm" in result.stdout
    for name in INSTALLED:
        assert f"\n{name} " in result.stdout


@pytest.mark.slow
def test_default_no_progress_bar_without_terminal(default_run):
    result, _, _ = default_run
    assert "\r" not in result.stderr


@pytest.mark.slow
def test_default_plot_is_png(default_run):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed")
    _, _, plot_path = default_run
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# A short run with every option changed -------------------------------------------------------------

POLICY = "cosine_decay(init_value=0.1, decay_steps=23, end_value=0.01)"


@pytest.fixture(scope="module")
def options_run(tmp_path_factory):
    # One framework keeps this run short; the default run compares the frameworks.
    frameworks = [name for name in ("torch", "optax") if name in INSTALLED][:1]
    if not frameworks:
        pytest.skip("neither torch nor optax is installed")
    json_path = tmp_path_factory.mktemp("demo_options") / "demo.json"
    status, stdout, stderr = run_demo_on_terminal(
        "--frameworks", ",".join(frameworks),
        "--epochs", "1",
        "--batch-size", "64",
        "--seed", "3",
        "--max-norm", "0.5",
        "--policy", POLICY,
        "--json", str(json_path),
    )  # fmt: skip
    assert status == 0, stdout + stderr
    return frameworks, json.loads(json_path.read_text()), stderr


def test_options_select_one_framework(options_run):
    frameworks, report, _ = options_run
    assert list(report["frameworks"]) == frameworks
    assert report["max_lr_difference"] is None


def test_options_policy_is_applied(options_run):
    _, report, _ = options_run
    schedule = optstrat.from_spec(POLICY)
    updates = math.ceil(TRAIN_COUNT / 64)
    assert report["settings"]["policy"] == optstrat.to_spec(schedule)
    for name, record in report["frameworks"].items():
        assert len(record["lr"]) == updates, name
        np.testing.assert_allclose(record["lr"], schedule(np.arange(updates)), rtol=0, atol=LR_TOLERANCE, err_msg=name)


def test_options_recorded_in_settings(options_run):
    _, report, _ = options_run
    settings = report["settings"]
    assert (settings["epochs"], settings["batch_size"], settings["seed"], settings["max_norm"]) == (1, 64, 3, 0.5)


def test_options_max_norm_sets_clipping(options_run):
    _, report, _ = options_run
    for name, record in report["frameworks"].items():
        norms = np.asarray(record["grad_norm"])
        assert record["clipped_fraction"] == pytest.approx(np.mean(norms > 0.5)), name
        assert record["clipped_fraction"] > 0, name


def test_options_progress_bar_on_terminal(options_run):
    frameworks, _, stderr = options_run
    updates = math.ceil(TRAIN_COUNT / 64)
    assert f"\r{frameworks[0]} epoch 1/1 [" in stderr
    assert f"] {updates}/{updates}" in stderr
    # The bar is erased before the epoch row is printed.
    assert stderr.endswith("\r")


def test_options_short_run_still_learns(options_run):
    # One epoch of 23 updates reaches about 0.8 test accuracy; ten classes give 0.1 by chance.
    _, report, _ = options_run
    for name, record in report["frameworks"].items():
        assert record["test_accuracy"] >= 0.7, name


# Missing dependencies --------------------------------------------------------------------------------

# A None entry in sys.modules makes importlib.util.find_spec return None, as for a module that is not installed.
HIDE_TORCH = "sys.modules['torch'] = None"


def test_missing_framework_is_skipped():
    result = run_demo("--frameworks", "torch", prelude=HIDE_TORCH)
    assert result.returncode == 1
    assert "torch: skipped, module 'torch' is not installed (install with pip install -e '.[torch]' in the optstrat checkout)" in result.stdout
    assert "none of the requested frameworks is installed" in result.stderr


def test_keras_backend_from_environment():
    result = run_demo("--frameworks", "keras", env={"KERAS_BACKEND": "jax"}, prelude="sys.modules['jax'] = None")
    assert result.returncode == 1
    assert "keras: skipped, module 'jax' is not installed" in result.stdout


def test_keras_backend_option_overrides_environment():
    result = run_demo(
        "--frameworks", "keras", "--keras-backend", "jax",
        env={"KERAS_BACKEND": "tensorflow"},
        prelude="sys.modules['jax'] = None",
    )  # fmt: skip
    assert result.returncode == 1
    assert "keras: skipped, module 'jax' is not installed" in result.stdout


def test_plot_without_matplotlib_fails_before_training(tmp_path):
    result = run_demo("--plot", str(tmp_path / "demo.png"), prelude="sys.modules['matplotlib'] = None")
    assert result.returncode == 1
    assert "--plot needs matplotlib" in result.stderr
    assert "pip install matplotlib" in result.stderr
    assert result.stdout == ""
