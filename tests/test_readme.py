"""The README's snippets run as written, each in a fresh interpreter."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDES = ["README.md", "README.zh-CN.md"]


def python_blocks(name: str) -> list[str]:
    text = (ROOT / name).read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def shell_blocks(name: str) -> list[str]:
    text = (ROOT / name).read_text(encoding="utf-8")
    return re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)


@pytest.mark.parametrize("index", range(len(python_blocks("README.md"))))
def test_readme_snippet_runs(index):
    code = python_blocks("README.md")[index]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, f"snippet {index} failed:\n{code}\n{result.stdout}\n{result.stderr}"


def test_translation_has_the_same_code():
    assert python_blocks("README.zh-CN.md") == python_blocks("README.md")
    assert shell_blocks("README.zh-CN.md") == shell_blocks("README.md")


def test_ci_runs_the_readme_test_command():
    test_command = shell_blocks("README.md")[-1].strip().split(" && ")[-1]
    ci_script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command in ci_script.splitlines()


def test_readme_links_exist():
    for name in GUIDES:
        text = (ROOT / name).read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#:]+)\)", text):
            assert (ROOT / target).exists(), f"{name} links to missing {target}"
