"""The tables, their version, and the migration from older versions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from typedstore import _strictjson
from typedstore.codecs.json import MAX_DEPTH
from typedstore.database import documents
from typedstore.database._protocol import Connection
from typedstore.errors import DatabaseError

__all__ = ["VERSION", "ensure"]

#: 1: one row per field. 2: one JSON document of fields per experiment and run.
VERSION = 2

_META = "CREATE TABLE IF NOT EXISTS meta (key VARCHAR(64) PRIMARY KEY, value TEXT NOT NULL)"

_TABLES = (
    """CREATE TABLE IF NOT EXISTS experiments (
        id VARCHAR(32) PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        persisted_at TEXT NOT NULL,
        generation TEXT NOT NULL,
        fields {json} NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS runs (
        id VARCHAR(32) PRIMARY KEY,
        experiment_id VARCHAR(32) NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        fields {json} NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS runs_by_experiment ON runs (experiment_id, position)",
)


def _json_type(dialect: str) -> str:
    # PostgreSQL's JSON (not JSONB) keeps the text as written, so field order survives.
    return "JSON" if dialect == "postgresql" else "TEXT"


def ensure(conn: Connection) -> None:
    """Create the tables, or migrate them to this version; inside a write transaction."""
    conn.execute(_META)
    rows = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'")
    if not rows:
        _create(conn)
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', :v)", {"v": str(VERSION)}
        )
        return
    version = rows[0][0]
    if version == "1":
        _migrate_from_1(conn)
    elif version != str(VERSION):
        raise DatabaseError(
            f"the database has schema version {version!r:.20}, which this typedstore "
            f"(schema {VERSION}) cannot read: upgrade typedstore"
        )


def _create(conn: Connection) -> None:
    for statement in _TABLES:
        conn.execute(statement.format(json=_json_type(conn.dialect)))


def _migrate_from_1(conn: Connection) -> None:
    """One row per field becomes one document per owner, in the same transaction."""
    for table in ("experiments", "runs"):
        conn.execute(f"ALTER TABLE {table} ADD COLUMN fields TEXT NOT NULL DEFAULT '{{}}'")
    rows = conn.execute(
        "SELECT owner, key, kind, codec, value FROM fields ORDER BY owner, position"
    )
    updates = [
        {"owner": owner, "fields": documents.dumps(document)}
        for owner, document in _documents(rows)
    ]
    for table in ("experiments", "runs"):
        conn.executemany(f"UPDATE {table} SET fields = :fields WHERE id = :owner", updates)
    conn.execute("DROP TABLE fields")
    conn.execute("UPDATE meta SET value = :v WHERE key = 'schema_version'", {"v": str(VERSION)})


def _documents(rows: list[tuple[Any, ...]]) -> Iterator[tuple[str, dict[str, Any]]]:
    owner: str | None = None
    document: dict[str, Any] = {}
    for row_owner, key, kind, codec, value in rows:
        if row_owner != owner:
            if owner is not None:
                yield owner, document
            owner, document = row_owner, {}
        document[str(key)] = _node(kind, codec, value)
    if owner is not None:
        yield owner, document


def _node(kind: object, codec: object, value: object) -> Any:
    """A version-1 field row's node; a row that does not parse is kept, marked."""
    try:
        if kind == "json" and type(value) is str:
            return documents.plain(_strictjson.loads(value, max_depth=MAX_DEPTH))
        if kind == "datastore" and type(value) is str:
            return documents.datastore(value)
        if kind == "codec" and type(codec) is str and type(value) is bytes:
            return documents.codec(codec, value)
    except ValueError:
        pass
    shown = value.decode("latin-1") if type(value) is bytes else str(value)
    return {"$malformed": json.dumps([kind, codec, shown[:1000]], default=str)}
