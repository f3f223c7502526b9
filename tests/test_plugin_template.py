"""The plugin template in examples/plugin, installed as a package, found with no import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_registry_finds_the_installed_plugin_without_an_import(tmp_path: Path) -> None:
    # .ci/run and the README's test command install the template (pip install
    # ./examples/plugin); without it this fails rather than skips.
    script = f"""
import sys
from fractions import Fraction
import typedstore as ts
assert "typedstore_plugin_example" not in sys.modules
ts.options.set("datastore.url", {str(tmp_path)!r})
io = ts.DataStoreIO.serialize_write(Fraction(3, 7), "p")
assert io.reference.codec == "example.fraction", io.url
assert ts.DataStoreIO(io.url).read_deserialize(Fraction) == Fraction(3, 7)
print(ts.registry.source("example.fraction"))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "plugin typedstore_plugin_example:FractionCodec"


def test_the_template_passes_its_own_conformance_test() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(ROOT / "examples" / "plugin" / "tests")],
        capture_output=True, text=True, check=False, cwd=ROOT / "examples" / "plugin",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
