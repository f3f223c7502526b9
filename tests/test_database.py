"""The experiments database: URLs, schema versions, the migration from version 1."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

import typedstore as ts
from typedstore.errors import DatabaseError

# Version 1's tables exactly as it created them, with rows it wrote.
V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE experiments (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL,
    persisted_at TEXT NOT NULL, generation TEXT NOT NULL
);
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    experiment_id TEXT NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    position INTEGER NOT NULL
);
CREATE INDEX runs_by_experiment ON runs (experiment_id, position);
CREATE TABLE fields (
    owner TEXT NOT NULL, position INTEGER NOT NULL, key TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('json', 'datastore', 'codec')), codec TEXT,
    value BLOB NOT NULL, PRIMARY KEY (owner, key)
);
INSERT INTO meta VALUES ('schema_version', '1');
"""

EXP, RUN0, RUN1, GEN = "a" * 32, "b" * 32, "c" * 32, "d" * 32


def version_1_database(path: Path, url: str) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    conn.execute("INSERT INTO experiments VALUES (?, 'old', 't0', 't1', ?)", (EXP, GEN))
    conn.executemany("INSERT INTO runs VALUES (?, ?, ?)", [(RUN0, EXP, 0), (RUN1, EXP, 1)])
    rows = [
        (EXP, 0, "lr", "json", None, "0.5"),
        (EXP, 1, "data", "datastore", None, url),
        (EXP, 2, "pair", "codec", "tree", ts.registry.get("tree").encode((1, 2))[0]),
        (EXP, 3, "meta", "json", None, '{"$ref": 1}'),
        (EXP, 4, "bad", "json", None, "[1e999]"),
        (RUN0, 0, "z", "json", None, "1"),
        (RUN0, 1, "a", "json", None, '"first"'),
    ]
    conn.executemany("INSERT INTO fields VALUES (?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()


def test_a_version_1_database_is_migrated_in_place(store: Path, tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with ts.options.ctx({"datastore.url": str(store)}):
        url = ts.DataStore(x=np.arange(3)).to_url(f"{EXP}/{GEN}")
    version_1_database(db, url)
    with ts.options.ctx({"database.url": f"sqlite:///{db}"}):
        old = ts.load_experiment("old")
        assert list(old.fields) == ["lr", "data", "pair", "meta", "bad"]
        assert old.fields.lr == 0.5
        assert np.array_equal(old.fields.data.x, np.arange(3))
        assert old.fields.pair == (1, 2)
        assert old.fields.meta == {"$ref": 1}
        assert set(old.fields.unreadable) == {"bad"}
        assert [run.id for run in old.runs] == [RUN0, RUN1]
        assert list(old.runs[0].fields.items()) == [("z", 1), ("a", "first")]
        assert dict(old.runs[1].fields) == {}
        old.persist(if_exists="replace")
        assert ts.load_experiment("old").fields.meta == {"$ref": 1}
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT value FROM meta").fetchall() == [("2",)]
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"meta", "experiments", "runs"}
    conn.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute("INSERT INTO meta VALUES ('schema_version', '3')")
    conn.commit()
    conn.close()
    with (
        ts.options.ctx({"database.url": f"sqlite:///{db}"}),
        pytest.raises(DatabaseError, match=r"schema version '3'.*upgrade typedstore"),
    ):
        ts.list_experiments()


def test_any_sqlalchemy_url(tmp_path: Path) -> None:
    pytest.importorskip("sqlalchemy")
    url = f"sqlite+pysqlite:///{tmp_path / 'through-sqlalchemy.db'}"
    with ts.options.ctx({"database.url": url, "datastore.url": str(tmp_path / "s")}):
        experiment = ts.create_experiment("e")
        experiment.fields.data = ts.DataStore(w=np.ones(2))
        with experiment.run() as run:
            run.fields.score = 0.5
        experiment.persist()
        experiment.persist(if_exists="replace")
        loaded = ts.load_experiment("e")
        assert np.array_equal(loaded.fields.data.w, np.ones(2))
        assert loaded.runs[0].fields.score == 0.5
    ts.database.close_all()
    # The same file through the standard library: one schema for both.
    with ts.options.ctx({"database.url": f"sqlite:///{tmp_path / 'through-sqlalchemy.db'}"}):
        assert ts.load_experiment("e").runs[0].fields.score == 0.5


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:///", "names no file"),
        ("typedstore.db", "expected sqlite:///PATH or a SQLAlchemy URL"),
        ("nosuchdialect://host/db", "cannot use the database URL"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    pytest.importorskip("sqlalchemy")
    with ts.options.ctx({"database.url": url}), pytest.raises(DatabaseError, match=message):
        ts.list_experiments()


def test_errors_do_not_show_the_password(postgres_server: str) -> None:
    port = postgres_server.rsplit(":", 1)[1]
    url = f"postgresql+psycopg://someone:s3cret@127.0.0.1:{port}/nowhere"
    with ts.options.ctx({"database.url": url}), pytest.raises(DatabaseError) as info:
        ts.list_experiments()
    assert "s3cret" not in str(info.value)
    assert "someone:***@127.0.0.1" in str(info.value)


def test_postgresql_keeps_fields_in_a_json_column(postgres_server: str, tmp_path: Path) -> None:
    from typedstore.testing.postgres import new_database

    url = new_database(postgres_server)
    with ts.options.ctx({"database.url": url, "datastore.url": str(tmp_path / "s")}):
        experiment = ts.create_experiment("order")
        for key in ("z", "a", "m"):
            experiment.fields[key] = {"nested": key}
        experiment.persist()
        assert list(ts.load_experiment("order").fields) == ["z", "a", "m"]
        with ts.database.reading() as conn:
            assert conn is not None
            ((kind,),) = conn.execute(
                "SELECT data_type FROM information_schema.columns "
                "WHERE table_name = 'experiments' AND column_name = 'fields'"
            )
            ((value,),) = conn.execute("SELECT fields -> 'a' ->> 'nested' FROM experiments")
        assert (kind, value) == ("json", "a")


def test_without_sqlalchemy_the_error_says_what_to_install(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = """
import sys
sys.modules["sqlalchemy"] = None  # as if not installed
import typedstore as ts
ts.options.set("database.url", "postgresql+psycopg://someone@127.0.0.1:1/db")
try:
    ts.list_experiments()
except ts.errors.DatabaseError as exc:
    print(exc)
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "pip install 'typedstore[postgres]'" in result.stdout
