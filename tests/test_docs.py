"""docs/schedules.md covers every schedule kind, its spec strings parse, and docs/make_plots.py draws them.

In docs/schedules.md each kind has a section headed "### `kind`". The
```text blocks hold spec strings and nothing else. The one in a kind's section
is the example that docs/make_plots.py plots into docs/img/<kind>.png.
"""

from __future__ import annotations

import importlib.util
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import optstrat

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SCHEDULES_PAGE = DOCS / "schedules.md"
DOC_PAGES = [SCHEDULES_PAGE, DOCS / "differences.md"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PNG_BYTES = 40_000
PLOT_SIZE_PIXELS = (480, 240)
# A guard against a hung subprocess. Drawing every plot takes a few seconds.
SUBPROCESS_TIMEOUT_SECONDS = 300

SCHEDULE_KINDS = sorted(optstrat.kinds(optstrat.Schedule))


def page_text(path: Path = SCHEDULES_PAGE) -> str:
    return path.read_text(encoding="utf-8")


def fenced_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def kind_sections() -> dict[str, str]:
    """Return each "### `kind`" section of docs/schedules.md, up to the next heading."""
    parts = re.split(r"^### `([a-z0-9_]+)`\n", page_text(), flags=re.MULTILINE)
    sections = {}
    for kind, body in zip(parts[1::2], parts[2::2]):
        assert kind not in sections, f"two sections for {kind!r}"
        sections[kind] = re.split(r"^#{1,3} ", body, flags=re.MULTILINE)[0]
    return sections


def load_make_plots():
    spec = importlib.util.spec_from_file_location("make_plots", DOCS / "make_plots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def png_size(data: bytes) -> tuple[int, int]:
    """Return (width, height) from a PNG's IHDR chunk."""
    assert data[:8] == PNG_SIGNATURE, "not a PNG file"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# Sections and plots -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SCHEDULE_KINDS)
def test_kind_has_section(kind):
    assert kind in kind_sections(), f"docs/schedules.md has no '### `{kind}`' section"


def test_sections_name_registered_kinds():
    unknown = sorted(set(kind_sections()) - set(SCHEDULE_KINDS))
    assert unknown == [], f"docs/schedules.md has sections for unregistered kinds {unknown}"


@pytest.mark.parametrize("kind", SCHEDULE_KINDS)
def test_kind_has_plot(kind):
    path = DOCS / "img" / f"{kind}.png"
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing; run python docs/make_plots.py"
    data = path.read_bytes()

    assert png_size(data) == PLOT_SIZE_PIXELS
    assert len(data) < MAX_PNG_BYTES, f"{path.name} has {len(data)} bytes"
    assert f"![{kind}](img/{kind}.png)" in kind_sections().get(kind, "")


# Spec strings -------------------------------------------------------------------------------------


SPEC_BLOCKS = fenced_blocks(page_text(), "text")


def test_page_has_spec_blocks():
    assert len(SPEC_BLOCKS) >= len(SCHEDULE_KINDS)


@pytest.mark.parametrize("block", SPEC_BLOCKS)
def test_spec_block_parses(block):
    for line in block.strip().splitlines():
        schedule = optstrat.from_spec(line)

        assert isinstance(schedule, optstrat.Schedule)
        assert optstrat.from_spec(optstrat.to_spec(schedule)) == schedule


@pytest.mark.parametrize("kind", SCHEDULE_KINDS)
def test_section_spec_is_plotted_example(kind):
    examples = load_make_plots().EXAMPLES
    specs = fenced_blocks(kind_sections().get(kind, ""), "text")

    assert len(specs) == 1, f"section {kind!r} must quote one spec string, found {len(specs)}"
    assert optstrat.from_spec(specs[0]).kind == kind
    assert specs[0].strip() == examples[kind][0]


@pytest.mark.parametrize("index", range(len(fenced_blocks(page_text(), "python"))))
def test_python_snippet_runs(index):
    code = fenced_blocks(page_text(), "python")[index]

    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=SUBPROCESS_TIMEOUT_SECONDS,
        check=False,
    )

    assert result.returncode == 0, f"snippet {index} failed:\n{code}\n{result.stdout}\n{result.stderr}"


# Links ----------------------------------------------------------------------------------------------


def link_targets(text: str) -> list[str]:
    """Return the relative targets of Markdown links outside code blocks and code spans."""
    prose = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    prose = re.sub(r"`[^`]*`", "", prose)
    return re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", prose)


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda path: path.name)
def test_relative_links_exist(page):
    for target in link_targets(page_text(page)):
        assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda path: path.name)
def test_named_test_files_exist(page):
    for name in set(re.findall(r"tests/[\w/]+\.py", page_text(page))):
        assert (ROOT / name).is_file(), f"{page.name} names missing {name}"


# docs/make_plots.py ------------------------------------------------------------------------------


def test_make_plots_writes_one_png_per_kind(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed")

    result = subprocess.run(
        [sys.executable, "-W", "error", str(DOCS / "make_plots.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=SUBPROCESS_TIMEOUT_SECONDS,
        check=False,
    )

    assert result.returncode == 0, f"make_plots.py failed:\n{result.stdout}\n{result.stderr}"
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(f"{kind}.png" for kind in SCHEDULE_KINDS)
    for path in tmp_path.iterdir():
        data = path.read_bytes()
        assert png_size(data) == PLOT_SIZE_PIXELS, path.name
        assert len(data) < MAX_PNG_BYTES, f"{path.name} has {len(data)} bytes"


def test_make_plots_rejects_kind_without_example(monkeypatch, capsys):
    module = load_make_plots()
    monkeypatch.delitem(module.EXAMPLES, "constant")

    assert module.main(["--out", "unused"]) == 1
    assert "no example for kinds constant" in capsys.readouterr().err
