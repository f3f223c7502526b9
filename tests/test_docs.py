"""The documentation's code runs: docs/examples/*.py, every Python block of the docs
pages and of the README."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.py"))


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=False
    )


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(path: Path, tmp_path: Path) -> None:
    code = path.read_text()
    # An example about a library this project does not depend on says so: `# needs: sklearn`.
    for module in re.findall(r"^# needs: (\S+)$", code, re.MULTILINE):
        pytest.importorskip(module, reason=f"{path.name} needs {module}")
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    recorded = path.with_suffix(".out")
    if recorded.exists():  # examples whose output is deterministic have it recorded
        assert result.stdout == recorded.read_text()
    else:
        assert "datastore:///" in result.stdout
    assert list(tmp_path.iterdir()) == [], "examples clean up after themselves"


def test_seed_examples_have_recorded_output() -> None:
    for name in ("datastore_01", "datastore_02"):
        assert (ROOT / "docs" / "examples" / f"{name}.out").is_file()


def _docs_blocks() -> list[tuple[str, int, str]]:
    found = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.DOTALL)
        for i, block in enumerate(blocks):
            if not block.lstrip().startswith("--8<--"):  # an example: run as one above
                found.append((page.name, i, block))
    return found


DOCS_BLOCKS = _docs_blocks()


def test_the_docs_have_python_blocks() -> None:
    assert len(DOCS_BLOCKS) >= 10


@pytest.mark.parametrize(("page", "index", "block"), DOCS_BLOCKS,
                         ids=[f"{page}#{i}" for page, i, _ in DOCS_BLOCKS])  # fmt: skip
def test_docs_python_blocks_run(page: str, index: int, block: str, tmp_path: Path) -> None:
    # A block about an optional library (torch, duckdb) runs where it is installed.
    for module in re.findall(r"^(?:import|from) (\w+)", block, re.MULTILINE):
        pytest.importorskip(module, reason=f"{page} block {index} needs {module}")
    result = run_python(block, tmp_path)
    assert result.returncode == 0, result.stderr


def test_readme_python_blocks_run(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    assert blocks
    for block in blocks:
        result = run_python(block, tmp_path)
        assert result.returncode == 0, result.stderr


def test_readme_quick_start_is_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("##", 1)[0]
    (console,) = re.findall(r"```console\n(.*?)```", section, re.DOTALL)
    commands = console.strip().splitlines()
    assert len(commands) == 2
    assert commands[0].endswith("typedstore demo")
    assert commands[1].endswith("python -m pytest")
