"""SQLite through the standard library: the embedded default, no dependency."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from typedstore.errors import DatabaseError

__all__ = ["SQLiteDatabase"]


class _Connection:
    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        try:
            return self._conn.execute(sql, params or {}).fetchall()
        except sqlite3.Error as exc:
            raise DatabaseError(f"database error: {exc}") from exc

    def executemany(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
        try:
            self._conn.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise DatabaseError(f"database error: {exc}") from exc


class SQLiteDatabase:
    """One SQLite file (or ``:memory:``), one connection shared under a lock."""

    def __init__(self, path: str, *, read_only: bool = False) -> None:
        self.path = path
        self._lock = threading.RLock()
        # Read-only opens another program's file without changing a byte of it.
        target = f"file:{urllib.parse.quote(path)}?mode=ro" if read_only else path
        try:
            conn = sqlite3.connect(
                target, timeout=30, isolation_level=None, check_same_thread=False,
                uri=read_only,
            )  # fmt: skip
            conn.execute("PRAGMA foreign_keys = ON")
            if path != ":memory:" and not read_only:
                conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.Error as exc:
            raise DatabaseError(f"cannot open the database {path}: {exc}") from exc
        self._conn: sqlite3.Connection | None = conn

    @contextlib.contextmanager
    def begin(self, *, write: bool, schema: bool = False) -> Iterator[_Connection]:
        """A transaction; ``BEGIN IMMEDIATE`` takes SQLite's write lock at once."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise DatabaseError(f"the database {self.path} is closed")
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except sqlite3.Error as exc:
                raise DatabaseError(f"cannot start a transaction on {self.path}: {exc}") from exc
            try:
                yield _Connection(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                raise DatabaseError(f"cannot commit to {self.path}: {exc}") from exc

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            self._conn = None

    def forget(self) -> None:
        """Drop the connection unclosed: a forked parent still uses it."""
        self._conn = None
