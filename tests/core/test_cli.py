"""The ``optstrat`` command: list, show, plot, errors and help."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import optstrat
from optstrat.cli import main, text_plot
from optstrat.clipping import Clipper
from optstrat.schedules import Schedule

WARMUP_COSINE = "warmup_cosine(peak_value=0.1, warmup_steps=100, decay_steps=1000)"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "optstrat.cli", *args], capture_output=True, text=True, timeout=120)


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    """Run the command in this process; return the exit status, stdout and stderr."""
    try:
        status = main(list(args))
    except SystemExit as exit_:
        status = exit_.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def parse_table(text: str) -> list[tuple[int, float]]:
    lines = text.strip().splitlines()
    assert lines[0].split() == ["step", "value"]
    return [(int(step), float(value)) for step, value in (line.split() for line in lines[1:])]


# list -----------------------------------------------------------------------------------------------


def test_list_prints_every_kind(capsys):
    status, out, err = run_main(capsys, "list")
    assert status == 0
    assert err == ""
    lines = out.splitlines()
    for base in (Schedule, Clipper):
        for kind, cls in optstrat.kinds(base).items():
            summary = cls.__doc__.strip().splitlines()[0].replace("``", "")
            matching = [line for line in lines if line.split()[:1] == [kind]]
            assert len(matching) == 1, kind
            assert matching[0].endswith(summary), kind


def test_list_groups_schedules_then_clippers(capsys):
    status, out, _ = run_main(capsys, "list")
    assert status == 0
    assert out.index("Schedules:") < out.index("Clippers:")
    assert out.index("Clippers:") < out.index("clip_by_global_norm")


# show -----------------------------------------------------------------------------------------------


def test_show_prints_values_at_steps(capsys):
    status, out, err = run_main(capsys, "show", WARMUP_COSINE, "--at", "0,100,1000")
    assert status == 0
    assert err == ""
    schedule = optstrat.from_spec(WARMUP_COSINE)
    rows = parse_table(out)
    assert [step for step, _ in rows] == [0, 100, 1000]
    for step, value in rows:
        assert value == pytest.approx(schedule(step), rel=1e-9, abs=1e-15)


def test_show_expands_ranges(capsys):
    status, out, _ = run_main(capsys, "show", WARMUP_COSINE, "--at", "0:300:100,999,5")
    assert status == 0
    assert [step for step, _ in parse_table(out)] == [0, 100, 200, 999, 5]


def test_show_default_steps_cover_the_schedule(capsys):
    status, out, _ = run_main(capsys, "show", WARMUP_COSINE)
    assert status == 0
    rows = parse_table(out)
    steps = [step for step, _ in rows]
    assert len(steps) == 11
    assert steps[0] == 0
    assert steps[-1] == 1100
    assert rows[-1][1] == 0.0


def test_show_huge_step(capsys):
    status, out, _ = run_main(capsys, "show", WARMUP_COSINE, "--at", str(2**70))
    assert status == 0
    assert parse_table(out) == [(2**70, 0.0)]


def test_show_reads_config_file(capsys, tmp_path):
    schedule = optstrat.from_spec(WARMUP_COSINE)
    path = tmp_path / "schedule.json"
    optstrat.dump(schedule, path)
    status, out, _ = run_main(capsys, "show", str(path), "--at", "50")
    assert status == 0
    assert parse_table(out) == [(50, pytest.approx(schedule(50), rel=1e-9))]


# plot -----------------------------------------------------------------------------------------------


def test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed")
    path = tmp_path / "schedule.png"
    result = run_cli("plot", WARMUP_COSINE, "--steps", "1200", "--out", str(path))
    assert result.returncode == 0, result.stderr
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {path}" in result.stdout
    assert "*" in result.stdout


def test_plot_without_matplotlib_explains_install(tmp_path):
    # A None entry in sys.modules makes `import matplotlib` raise ImportError, as if it were absent.
    code = (
        "import sys\n"
        "sys.modules['matplotlib'] = None\n"
        "from optstrat.cli import main\n"
        f"sys.exit(main(['plot', {WARMUP_COSINE!r}, '--out', {str(tmp_path / 'x.png')!r}]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "needs matplotlib" in result.stderr
    assert "pip install matplotlib" in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_plot_preview_size_and_labels(capsys):
    status, out, err = run_main(capsys, "plot", WARMUP_COSINE, "--steps", "1000")
    assert status == 0
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == optstrat.to_spec(optstrat.from_spec(WARMUP_COSINE))
    grid = [line for line in lines[1:] if " |" in line]
    assert len(grid) == 15
    assert {len(line.split(" |", 1)[1]) for line in grid} == {60}
    assert grid[0].split(" |")[0].strip() == "0.1"
    assert grid[-1].split(" |")[0].strip() == "0"
    assert lines[-2].strip() == "+" + "-" * 60
    assert lines[-1].split() == ["0", "step", "1000"]


def test_plot_preview_custom_size(capsys):
    status, out, _ = run_main(capsys, "plot", WARMUP_COSINE, "--width", "30", "--height", "8")
    assert status == 0
    grid = [line for line in out.splitlines()[1:] if " |" in line]
    assert len(grid) == 8
    assert {len(line.split(" |", 1)[1]) for line in grid} == {30}


def test_plot_preview_of_huge_step_range(capsys):
    spec = f"exponential_decay(init_value=1.0, transition_steps={2**40}, decay_rate=0.5)"
    status, out, _ = run_main(capsys, "plot", spec, "--steps", str(2**62))
    assert status == 0
    lines = out.splitlines()
    assert lines[-1].split() == ["0", "step", str(2**62)]
    assert lines[1].endswith("|*" + " " * 59)


def test_text_plot_draws_step_function():
    steps = np.arange(10)
    values = np.where(steps < 5, 1.0, 0.0)
    rows = text_plot(steps, values, width=10, height=3).splitlines()
    assert rows[0] == "1 |******    "
    assert rows[1] == "  |     *    "
    assert rows[2] == "0 |     *****"
    assert rows[3] == "  +----------"
    assert rows[4].split() == ["0", "step", "9"]


def test_text_plot_constant_has_one_label():
    steps = np.arange(100)
    rows = text_plot(steps, np.full(100, 0.3), width=20, height=5).splitlines()
    assert rows[2] == "0.3 |" + "*" * 20
    assert all(row.startswith("    |") for row in rows[:2] + rows[3:5])


def test_text_plot_marks_jumps_inside_a_column():
    # 100 steps in 10 columns: the jump at step 55 lies inside column 5, which spans both levels.
    steps = np.arange(100)
    values = np.where(steps < 55, 2.0, 0.0)
    rows = text_plot(steps, values, width=10, height=3).splitlines()
    assert [row[3 + 5] for row in rows[:3]] == ["*", "*", "*"]


# errors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["show", "cosine_decay(init_value=1.0, decay_steps=0)"], "decay_steps must be a positive integer, got 0"),
        (["show", "cosine_decy(init_value=1.0, decay_steps=10)"], "unknown kind 'cosine_decy'. Did you mean 'cosine_decay'?"),
        (["show", "cosine_decay(init_value=1.0"], "invalid spec"),
        (["plot", "cosine_decay(init_value=1.0, decay_step=10)"], "unknown field 'decay_step'"),
        (["show", "clip_by_global_norm(max_norm=1.0)"], "SPEC must describe a schedule, got kind 'clip_by_global_norm'"),
        (["show", "missing.json"], "cannot read config file 'missing.json'"),
        (["show", WARMUP_COSINE, "--at", "1,-2"], "a step must be an integer >= 0, got '-2'"),
        (["show", WARMUP_COSINE, "--at", "ten"], "a step must be an integer >= 0, got 'ten'"),
        (["show", WARMUP_COSINE, "--at", "5:5"], "a range must have STOP greater than START, got '5:5'"),
        (["show", WARMUP_COSINE, "--at", "0:9:0"], "the stride of a range must be a positive integer"),
        (["plot", WARMUP_COSINE, "--steps", "0"], "--steps must be a positive integer up to 4611686018427387904, got '0'"),
        (["plot", WARMUP_COSINE, "--width", "x"], "--width must be a positive integer, got 'x'"),
        (["plot", WARMUP_COSINE, "--steps", str(2**63)], "--steps must be a positive integer up to 4611686018427387904"),
        (["demo", "--frameworks", "torch,mxnet"], "--frameworks must list names from torch, optax, keras"),
        (["demo", "--policy", "clip_by_global_norm(max_norm=1.0)"], "--policy must be a schedule"),
        (["demo", "--policy", "constant(value=-)"], "invalid --policy"),
        (["demo", "--max-norm", "-1"], "invalid --max-norm: max_norm must be"),
        (["demo", "--epochs", "0"], "--epochs must be a positive integer, got '0'"),
        (["demo", "--json", "missing-directory/demo.json"], "--json: directory 'missing-directory' of"),
    ],
)
def test_bad_input_exits_2_with_message(capsys, arguments, message):
    status, out, err = run_main(capsys, *arguments)
    assert status == 2
    assert out == ""
    assert message in err
    assert err.startswith("usage: optstrat")


def test_bad_spec_in_subprocess():
    result = run_cli("show", "cosine_decay(init_value=1.0, decay_steps=0)")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "optstrat show: error: invalid schedule" in result.stderr
    assert "decay_steps must be a positive integer, got 0" in result.stderr


def test_missing_command_exits_2(capsys):
    status, _, err = run_main(capsys)
    assert status == 2
    assert "COMMAND" in err


# help -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "phrases"),
    [
        ([], ["list", "show", "plot", "demo", "optimizer updates"]),
        (["list"], ["schedule and clipper kind", "docstring"]),
        (["show"], ["--at", "optimizer steps", "START:STOP"]),
        (["plot"], ["--steps", "--out", "--width", "characters", "--height", "lines", "matplotlib"]),
        (
            ["demo"],
            [
                "--frameworks",
                "--epochs",
                "--batch-size",
                "images per optimizer update",
                "--seed",
                "--policy",
                "--max-norm",
                "global L2 norm",
                "--json",
                "--plot",
                "--quiet",
                "--keras-backend",
                "KERAS_BACKEND",
            ],
        ),
    ],
)
def test_help_describes_options(capsys, command, phrases):
    status, out, _ = run_main(capsys, *command, "--help")
    assert status == 0
    flat = " ".join(out.split())
    for phrase in phrases:
        assert phrase in flat, phrase


def test_console_help_in_subprocess():
    result = run_cli("--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: optstrat")


# imports --------------------------------------------------------------------------------------------


def test_cli_loads_no_framework():
    frameworks = ("torch", "jax", "tensorflow", "keras", "optax", "matplotlib", "sklearn")
    code = (
        "import io, json, sys, contextlib\n"
        "import optstrat\n"
        "imported_with_core = 'optstrat.cli' in sys.modules\n"
        "from optstrat.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['list'])\n"
        f"    main(['show', {WARMUP_COSINE!r}])\n"
        f"    main(['plot', {WARMUP_COSINE!r}])\n"
        f"loaded = [name for name in {frameworks!r} if name in sys.modules]\n"
        "print(json.dumps({'cli': imported_with_core, 'loaded': loaded}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["cli"] is False
    assert report["loaded"] == []


def test_plot_rejects_non_png_path(tmp_path):
    path = tmp_path / "schedule.xyz"
    result = run_cli("plot", WARMUP_COSINE, "--out", str(path))
    assert result.returncode == 2
    assert "--out must be a path ending in .png" in result.stderr
    assert not path.exists()
