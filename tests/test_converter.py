from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import attrs
import cattrs
import numpy as np
import pytest

import typedstore as ts
from typedstore.converter import configure, converter


@attrs.define
class Run:
    name: str
    metrics: dict[str, float]
    data: ts.DataStore


def test_unstructures_to_the_reference_and_back(store: Path) -> None:
    run = Run("r1", {"acc": 0.9}, ts.DataStore(w=np.arange(4.0), note=b"x"))
    row = converter.unstructure(run)
    assert isinstance(row["data"], str)
    assert row["data"].startswith("datastore:///")
    assert row["data"].endswith("?codec=datastore")
    back = converter.structure(row, Run)
    # Untouched since loaded: unstructuring again does not store again.
    assert converter.unstructure(back)["data"] == row["data"]
    assert back.name == "r1"
    assert np.array_equal(back.data.w, np.arange(4.0))
    assert back.data.note == b"x"


def test_structure_refuses_non_references() -> None:
    with pytest.raises(cattrs.ClassValidationError):
        converter.structure({"name": "r", "metrics": {}, "data": 3}, Run)


def test_configure_other_converters(store: Path) -> None:
    mine = configure(cattrs.Converter())
    url = mine.unstructure(ts.DataStore(a=1))
    assert mine.structure(url, ts.DataStore) == {"a": 1}


def test_record_in_sqlite_loaded_by_a_new_process(tmp_path: Path, store: Path) -> None:
    run = Run("r1", {"loss": 0.25}, ts.DataStore(w=np.eye(3), params={"lr": 0.1}))
    db = tmp_path / "runs.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table runs (name text primary key, record text)")
        conn.execute(
            "insert into runs values (?, ?)", (run.name, json.dumps(converter.unstructure(run)))
        )
    conn.close()
    script = textwrap.dedent(
        f"""
        import json, sqlite3
        import attrs, numpy as np
        import typedstore as ts
        from typedstore.converter import converter

        @attrs.define
        class Run:
            name: str
            metrics: dict[str, float]
            data: ts.DataStore

        ts.options.set("datastore.url", {str(store)!r})
        conn = sqlite3.connect({str(db)!r})
        (record,) = conn.execute("select record from runs").fetchone()
        run = converter.structure(json.loads(record), Run)
        assert run.metrics == {{"loss": 0.25}}
        assert np.array_equal(run.data.w, np.eye(3))
        assert run.data.params == {{"lr": 0.1}}
        print("loaded", sorted(run.data))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "loaded ['params', 'w']"
