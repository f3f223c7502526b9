"""What the experiments layer needs of a database backend."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

__all__ = ["Connection", "Database"]


class Connection(Protocol):
    """A connection inside one transaction: portable SQL with ``:name`` parameters.

    Backends raise DatabaseError for every failure of the database or its driver.
    """

    #: The SQL dialect: "sqlite", "postgresql", or another SQLAlchemy dialect's name.
    dialect: str

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement; its rows (none for statements that return none)."""
        ...

    def executemany(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run one statement once per parameter set, in a batch."""
        ...


class Database(Protocol):
    """A database, shared by the threads of one process."""

    def begin(self, *, write: bool, schema: bool = False) -> AbstractContextManager[Connection]:
        """A transaction: committed when the block ends, rolled back when it raises.

        A write transaction holds the database-wide write lock from its start;
        ``schema=True`` takes a lock that works before any table exists.
        """
        ...

    def close(self) -> None:
        """Close its connections."""
        ...

    def forget(self) -> None:
        """Drop its connections without closing them (in a forked child, whose parent
        still uses them)."""
        ...
