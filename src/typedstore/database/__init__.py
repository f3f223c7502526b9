"""The experiments database: SQLite through the standard library by default, any other
database (PostgreSQL for teams) through SQLAlchemy 2 Core.

Every backend speaks the same portable SQL with ``:name`` parameters through a
:class:`Connection`, and serializes writers the same way: a write transaction holds the
database's write lock from its first statement (SQLite's ``BEGIN IMMEDIATE``, an advisory
lock on PostgreSQL), so persists of the same experiment never interleave.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

from typedstore.database import _schema
from typedstore.database._protocol import Connection, Database
from typedstore.errors import DatabaseError
from typedstore.options import options

__all__ = [
    "SCHEMA_VERSION",
    "Connection",
    "Database",
    "close_all",
    "open_database",
    "open_foreign",
    "reading",
    "transaction",
]

SCHEMA_VERSION = _schema.VERSION

_databases: dict[str, Database] = {}
_lock = threading.RLock()


def open_database(url: str | None = None, *, create: bool = True) -> Database | None:
    """The process's database for ``url`` (default: option ``database.url``), its schema
    created or migrated on first use.

    With ``create=False``, returns None when an SQLite file does not exist yet instead of
    creating it. Databases are cached per URL and are safe to share between threads.
    """
    url = options.get("database.url") if url is None else url
    with _lock:
        key = _sqlite_path(url) or url
        db = _databases.get(key)
        if db is not None:
            return db
        if url.startswith("sqlite:///"):
            if not create and key != ":memory:" and not os.path.exists(key):
                return None
            from typedstore.database._sqlite import SQLiteDatabase

            db = SQLiteDatabase(key)
        elif "://" in url:
            from typedstore.database._sqlalchemy import SQLAlchemyDatabase

            db = SQLAlchemyDatabase(url)
        else:
            raise DatabaseError(
                f"database URL {url!r}: expected sqlite:///PATH or a SQLAlchemy URL such as "
                "postgresql+psycopg://USER@HOST/NAME"
            )
        try:
            with db.begin(write=True, schema=True) as conn:
                _schema.ensure(conn)
        except BaseException:
            db.close()
            raise
        _databases[key] = db
        return db


def open_foreign(url: str) -> Database:
    """Another program's database, to read: nothing is created or changed in it (an SQLite
    file is opened read-only), nothing cached (the caller closes it). Raises
    DatabaseError when it cannot be opened."""
    path = _sqlite_path(url)
    if path is not None:
        if path != ":memory:" and not os.path.exists(path):
            raise DatabaseError(f"no database file {path}")
        from typedstore.database._sqlite import SQLiteDatabase

        return SQLiteDatabase(path, read_only=True)
    from typedstore.database._sqlalchemy import SQLAlchemyDatabase

    return SQLAlchemyDatabase(url)


def _sqlite_path(url: str) -> str | None:
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :]
    if not path:
        raise DatabaseError(f"database URL {url!r} names no file")
    return path if path == ":memory:" else os.path.abspath(path)


@contextlib.contextmanager
def transaction() -> Iterator[Connection]:
    """A write transaction on the current database, holding its write lock: committed on
    success, rolled back on error."""
    db = open_database()
    assert db is not None
    with db.begin(write=True) as conn:
        yield conn


@contextlib.contextmanager
def reading() -> Iterator[Connection | None]:
    """A read transaction (one consistent snapshot), or None when there is no database."""
    db = open_database(create=False)
    if db is None:
        yield None
        return
    with db.begin(write=False) as conn:
        yield conn


def close_all() -> None:
    """Close every cached database (tests, and processes that change databases, use this)."""
    with _lock:
        for db in _databases.values():
            db.close()
        _databases.clear()


def _forget_in_child() -> None:
    # A forked child must not share its parent's connections: it opens its own.
    global _lock
    _lock = threading.RLock()
    for db in _databases.values():
        db.forget()
    _databases.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
