"""The embedded experiments database: SQLite through the standard library."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from typedstore.errors import DatabaseError
from typedstore.options import options

__all__ = ["SCHEMA_VERSION", "connect", "database_path", "transaction"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS experiments (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    persisted_at TEXT NOT NULL,
    generation TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    experiment_id TEXT NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    position INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_experiment ON runs (experiment_id, position);
CREATE TABLE IF NOT EXISTS fields (
    owner TEXT NOT NULL,
    position INTEGER NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('json', 'datastore', 'codec')),
    codec TEXT,
    value BLOB NOT NULL,
    PRIMARY KEY (owner, key)
);
"""

_connections: dict[str, sqlite3.Connection] = {}
_lock = threading.RLock()


def database_path(url: str | None = None) -> str:
    """The SQLite file (or ``:memory:``) that ``url`` (default: option) names."""
    url = options.get("database.url") if url is None else url
    if not url.startswith("sqlite:///"):
        raise DatabaseError(f"database URL {url!r}: only sqlite:///PATH is supported")
    path = url[len("sqlite:///") :]
    if not path:
        raise DatabaseError(f"database URL {url!r} names no file")
    return path if path == ":memory:" else os.path.abspath(path)


def connect(*, create: bool = True) -> sqlite3.Connection | None:
    """The process's connection to the database of option ``database.url``.

    With ``create=False``, returns None when the database file does not exist yet
    instead of creating it. Connections are shared per database and used under
    :func:`transaction`'s lock, so threads can share them.
    """
    path = database_path()
    with _lock:
        conn = _connections.get(path)
        if conn is not None:
            return conn
        if not create and path != ":memory:" and not Path(path).exists():
            return None
        try:
            conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA foreign_keys = ON")
            if path != ":memory:":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(_SCHEMA)
            conn.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        except sqlite3.Error as exc:
            raise DatabaseError(f"cannot open the database {path}: {exc}") from exc
        _connections[path] = conn
        return conn


@contextlib.contextmanager
def transaction() -> Iterator[sqlite3.Connection]:
    """An immediate (write) transaction, committed on success, rolled back on error."""
    conn = connect()
    assert conn is not None
    with _lock:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise DatabaseError(f"cannot start a transaction: {exc}") from exc
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            raise DatabaseError(f"cannot commit: {exc}") from exc


@contextlib.contextmanager
def reading() -> Iterator[sqlite3.Connection | None]:
    """The connection for reads (None if the database does not exist), under the lock."""
    conn = connect(create=False)
    with _lock:
        yield conn


def close_all() -> None:
    """Close every cached connection (tests and forked processes use this)."""
    with _lock:
        for conn in _connections.values():
            conn.close()
        _connections.clear()
