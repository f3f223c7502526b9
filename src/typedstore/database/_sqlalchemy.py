"""Any database SQLAlchemy 2 reaches (PostgreSQL for teams), through its Core layer."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from typedstore.errors import DatabaseError

if TYPE_CHECKING:
    import sqlalchemy

__all__ = ["SQLAlchemyDatabase"]

# pg_advisory_xact_lock's key: one lock for all typedstore writers of a database.
_ADVISORY_KEY = 0x7479_7065_6473_7472  # "typedstr"


def _import() -> Any:
    try:
        import sqlalchemy
    except ImportError as exc:
        raise DatabaseError(
            "a database other than SQLite needs SQLAlchemy and a driver: "
            "pip install 'typedstore[postgres]' for PostgreSQL"
        ) from exc
    return sqlalchemy


class _Connection:
    def __init__(self, conn: sqlalchemy.Connection, name: str) -> None:
        self._conn = conn
        self.dialect = conn.dialect.name
        self._name = name

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        sa = _import()
        try:
            result = self._conn.execute(sa.text(sql), dict(params or {}))
            return [tuple(row) for row in result] if result.returns_rows else []
        except sa.exc.SQLAlchemyError as exc:
            raise DatabaseError(f"database error on {self._name}: {exc}") from exc

    def executemany(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        sa = _import()
        try:
            self._conn.execute(sa.text(sql), [dict(row) for row in rows])
        except sa.exc.SQLAlchemyError as exc:
            raise DatabaseError(f"database error on {self._name}: {exc}") from exc


class SQLAlchemyDatabase:
    """A SQLAlchemy engine (a pool of connections) for one URL."""

    def __init__(self, url: str) -> None:
        sa = _import()
        try:
            self._engine = sa.create_engine(url, pool_pre_ping=True)
        except (sa.exc.SQLAlchemyError, ImportError, ValueError) as exc:
            # The URL may hold a password: the message names the database without it.
            raise DatabaseError(f"cannot use the database URL {_safe(url)}: {exc}") from None
        self.name = self._engine.url.render_as_string(hide_password=True)
        self.dialect = self._engine.dialect.name

    @contextlib.contextmanager
    def begin(self, *, write: bool, schema: bool = False) -> Iterator[_Connection]:
        """A transaction; writers serialize on an advisory lock (PostgreSQL) or on the row
        lock of the schema version (elsewhere)."""
        sa = _import()
        try:
            with self._engine.connect() as raw:
                if not write and self.dialect == "postgresql":
                    # One snapshot for the whole read, as SQLite's read transactions give.
                    raw = raw.execution_options(isolation_level="REPEATABLE READ")
                with raw.begin():
                    conn = _Connection(raw, self.name)
                    if write and self.dialect == "postgresql":
                        conn.execute("SELECT pg_advisory_xact_lock(:key)", {"key": _ADVISORY_KEY})
                    elif write and not schema:
                        conn.execute("UPDATE meta SET value = value WHERE key = 'schema_version'")
                    yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise DatabaseError(f"database error on {self.name}: {exc}") from exc

    def close(self) -> None:
        """Close the pool's connections."""
        self._engine.dispose()

    def forget(self) -> None:
        """Drop the pool unclosed: a forked parent still uses its connections."""
        self._engine.dispose(close=False)


def _safe(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest
