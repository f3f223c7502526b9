from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from typedstore.cli import main


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "typedstore", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def test_demo_in_a_fresh_directory(tmp_path: Path) -> None:
    result = run("demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    urls = re.findall(r"datastore:///demo/[0-9a-f]{32}\?codec=(\w+)", result.stdout)
    assert urls == ["safetensors", "raw", "json"]
    assert result.stdout.count(" ok ") == 3
    stored = sorted(p.name for p in (tmp_path / "typedstore.datastore" / "demo").iterdir())
    assert len(stored) == 3


def test_demo_with_a_url(tmp_path: Path) -> None:
    assert main(["demo", "--url", str(tmp_path / "s"), "--prefix", "p/q"]) == 0
    assert len(list((tmp_path / "s" / "p" / "q").iterdir())) == 3


def test_codecs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["codecs"]) == 0
    out = capsys.readouterr().out
    for name in ("raw", "safetensors", "npy", "json", "pickle"):
        assert re.search(rf"^{name}\s+1\s", out, re.MULTILINE)


def test_errors_are_reported_without_traceback(tmp_path: Path) -> None:
    result = run("demo", "--prefix", "../escape", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("typedstore: error: ")
    assert "Traceback" not in result.stderr
