"""Smoke test of the benchmark scripts: they run and print their tables (no timing is checked)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = [name for name in ("torch", "jax") if importlib.util.find_spec(name) is not None]


@pytest.mark.skipif(not FRAMEWORKS, reason="neither torch nor jax is installed")
def test_clip_benchmark_quick_prints_table(tmp_path):
    output_path = tmp_path / "clip.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "clip.py"), "--quick", "--json", str(output_path), "--frameworks", *FRAMEWORKS]

    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "| model | framework | case | optstrat ms | framework ms | ratio | norm only ms | read floor ms | 3-pass floor ms |" in lines
    rows = [line for line in lines if line.startswith("| gpt2-small |") or line.startswith("| resnet50 |")]
    assert len(rows) == 2 * 2 * len(FRAMEWORKS)
    for framework in FRAMEWORKS:
        for case in ("clipping", "no clipping"):
            assert any(f"| {framework} | {case} |" in row for row in rows)
    report = json.loads(output_path.read_text(encoding="utf-8"))
    assert report["facts"]["quick"] is True
    assert len(report["results"]) == len(rows)
    assert all(result["ratio"] > 0 and result["norm_only_ms"] > 0 for result in report["results"])


@pytest.mark.skipif(not FRAMEWORKS, reason="neither torch nor jax is installed")
def test_clip_kinds_benchmark_quick_prints_table():
    command = [sys.executable, str(ROOT / "benchmarks" / "clip_kinds.py"), "--quick", "--frameworks", *FRAMEWORKS]

    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "| framework | clipper | optstrat ms | framework ms | ratio |" in lines
    kinds = ["clip_by_global_norm", "zclip", "autoclip", "clip_by_norm", "clip_by_value", "adaptive_clip"]
    for framework in FRAMEWORKS:
        for kind in kinds:
            assert any(line.startswith(f"| {framework} | {kind} |") for line in lines), (framework, kind)


def test_model_shapes_add_up():
    spec = importlib.util.spec_from_file_location("optstrat_benchmark_clip", ROOT / "benchmarks" / "clip.py")
    clip = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(clip)

    gpt2 = clip.gpt2_small_shapes()
    resnet = clip.resnet50_shapes()

    assert len(gpt2) == 148
    assert sum(math.prod(shape) for shape in gpt2) == 124_439_808
    assert len(resnet) == 161
    assert sum(math.prod(shape) for shape in resnet) == 25_557_032
    assert resnet[0] == (64, 3, 7, 7)
    assert resnet[-2:] == [(1000, 2048), (1000,)]
    mlp = clip.mlp_shapes()
    assert len(mlp) == 12
    assert sum(math.prod(shape) for shape in mlp) == 24_960
    assert clip.EXPECTED["mlp-64x6"] == (12, 24_960)
