"""Experiments: fields and runs in the embedded database, DataStores in the datastore."""

from __future__ import annotations

import contextlib
import datetime
import json
import re
import sqlite3
import uuid
from collections.abc import Iterator, Mapping, MutableMapping
from contextvars import ContextVar
from typing import Any, Literal

import attrs

from typedstore import _strictjson, database
from typedstore._progress import progress
from typedstore.attrdict import AttrAccess
from typedstore.codecs import json as json_codec
from typedstore.datastore import DataStore
from typedstore.errors import (
    DatabaseError,
    EncodeError,
    ExperimentExistsError,
    ExperimentNotFoundError,
    PersistConflictError,
    ReservedPrefixError,
    StorageError,
    TypedStoreError,
)
from typedstore.options import options
from typedstore.protocols import byte_view
from typedstore.reference import Reference
from typedstore.store import Store, current_store, default_store, reserve_prefixes

__all__ = [
    "ID_PATTERN",
    "Experiment",
    "ExperimentInfo",
    "Fields",
    "Run",
    "create_experiment",
    "is_id",
    "list_experiments",
    "load_experiment",
]

#: Experiment, run and generation ids: 32 lowercase hex digits (a uuid4's hex). An
#: experiment's id names its datastore folder, which persist and delete empty, so nothing
#: else may pass for one.
ID_PATTERN = re.compile(r"[0-9a-f]{32}")


def is_id(value: object) -> bool:
    """Whether ``value`` is an experiment, run or generation id."""
    return type(value) is str and ID_PATTERN.fullmatch(value) is not None


def _check_id(instance: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if not is_id(value):
        raise ValueError(
            f"{type(instance).__name__} {attribute.name} must be 32 lowercase hex digits "
            f"(a new one is made when none is given), not {value!r}"
        )


# While an experiment persists, writes under its own folder are its own, not a caller's.
_persisting: ContextVar[str | None] = ContextVar("typedstore_persisting", default=None)


@attrs.frozen
class _Unreadable:
    """A stored field that could not be decoded: its row, kept to be written back as it
    was, and why it could not be read."""

    row: tuple[str, str | None, bytes | str]
    error: TypedStoreError


class Fields(AttrAccess, MutableMapping[str, Any]):
    """The fields of an experiment or run: a mapping whose values are also attributes.

    Plain data is kept inline as JSON, DataStores as their references (their contents go
    to the datastore), anything else through the codec registry as an inline blob. A
    loaded field that cannot be decoded (its class is not registered here, say) raises
    its error when it is read, and the other fields load; persisting keeps it as stored.
    """

    __slots__ = ("_ts_values",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        object.__setattr__(self, "_ts_values", {})
        self.update(*args, **kwargs)

    def __getitem__(self, key: str) -> Any:
        value = self._ts_values[key]
        if type(value) is _Unreadable:
            raise value.error.with_traceback(None)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self._ts_values[key] = value

    def __delitem__(self, key: str) -> None:
        del self._ts_values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._ts_values)

    def __len__(self) -> int:
        return len(self._ts_values)

    def __repr__(self) -> str:
        shown = {
            k: "<unreadable>" if type(v) is _Unreadable else v for k, v in self._ts_values.items()
        }
        return f"Fields({shown!r})"

    @property
    def unreadable(self) -> Mapping[str, TypedStoreError]:
        """The fields that could not be decoded when loaded, with the error each raises."""
        return {k: v.error for k, v in self._ts_values.items() if type(v) is _Unreadable}


@attrs.define(eq=False)
class Run:
    """One run of an experiment, with its own fields."""

    id: str = attrs.field(factory=lambda: uuid.uuid4().hex, validator=_check_id)
    fields: Fields = attrs.field(factory=Fields)


@attrs.frozen
class ExperimentInfo:
    """A stored experiment, as :func:`list_experiments` reports it."""

    id: str
    name: str
    created_at: str
    persisted_at: str
    runs: int


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


@attrs.define(eq=False)
class Experiment:
    """An experiment: fields, runs, and a datastore folder named by its id.

    Nothing is stored until :meth:`persist`. Its DataStores are stored under the prefix
    ``<experiment id>``, which therefore belongs to the experiment: DataStoreIO refuses it.
    """

    id: str = attrs.field(factory=lambda: uuid.uuid4().hex, validator=_check_id)
    name: str = attrs.field(
        default=attrs.Factory(lambda self: f"experiment-{self.id[:8]}", takes_self=True)
    )
    fields: Fields = attrs.field(factory=Fields)
    runs: list[Run] = attrs.field(factory=list)
    created_at: str = attrs.field(factory=_now)

    @name.validator
    def _check_name(self, _: Any, value: object) -> None:
        if not isinstance(value, str) or not value:
            raise ValueError("an experiment name is a non-empty string")

    @contextlib.contextmanager
    def run(self) -> Iterator[Run]:
        """A new run, added to :attr:`runs` when the ``with`` block ends without error."""
        run = Run()
        yield run
        self.runs.append(run)

    def persist(self, if_exists: Literal["fail", "replace"] = "fail") -> None:
        """Store the experiment: rows in the database, DataStores in its datastore folder.

        Afterwards the folder holds exactly what this persist wrote. It is crash-safe: the
        new objects are written under a fresh generation folder first, one transaction
        then switches the rows, and only then are the previous objects deleted, so if the
        process dies at any point the previous version (rows and files) still loads.
        With ``if_exists="replace"``, a stored experiment of the same name (another id, as a
        re-run script makes) is replaced too: its rows go in the same transaction, its
        folder after it. Raises ExperimentExistsError when the experiment, or another of
        its name, is stored and ``if_exists`` is ``"fail"``, and PersistConflictError when
        another process persisted the same experiment meanwhile and removed this persist's
        objects (nothing is changed then; retrying is safe).
        """
        if if_exists not in ("fail", "replace"):
            raise ValueError(f"if_exists must be 'fail' or 'replace', got {if_exists!r}")
        self._check_can_persist(if_exists)
        store = default_store()
        generation = uuid.uuid4().hex
        prefix = f"{self.id}/{generation}"
        token = _persisting.set(self.id)
        try:
            owners = [(self.id, self.fields)] + [(run.id, run.fields) for run in self.runs]
            with (
                options.ctx({"datastore.relative_path_prefix": prefix}),
                progress(len(owners), f"persist {self.name}", unit="run", minimum=20) as bar,
            ):
                rows = []
                for owner, fields in owners:
                    try:
                        rows.append((owner, _encode_fields(fields, prefix)))
                    except StorageError as exc:
                        # A folder that vanished under a write: another persist collected it.
                        vanished = isinstance(exc.__cause__, FileNotFoundError)
                        if not vanished or generation in store.children(self.id):
                            raise
                        raise _conflict(self) from exc
                    bar.update()
            with database.transaction() as conn:
                replaced = self._check_can_persist(if_exists, conn)
                _check_written(store, self, rows)
                for exp_id in (self.id, *replaced):
                    _delete_rows(conn, exp_id)
                conn.execute(
                    "INSERT INTO experiments VALUES (?, ?, ?, ?, ?)",
                    (self.id, self.name, self.created_at, _now(), generation),
                )
                conn.executemany(
                    "INSERT INTO runs VALUES (?, ?, ?)",
                    [(run.id, self.id, i) for i, run in enumerate(self.runs)],
                )
                conn.executemany(
                    "INSERT INTO fields VALUES (?, ?, ?, ?, ?, ?)",
                    [(owner, *row) for owner, encoded in rows for row in encoded],
                )
        except BaseException:
            # The rows still name the previous generation: this one is garbage.
            with contextlib.suppress(TypedStoreError):
                store.storage.delete(prefix)
            raise
        finally:
            _persisting.reset(token)
        for exp_id in (self.id, *replaced):
            _collect(store, exp_id)

    def _check_can_persist(
        self, if_exists: str, conn: sqlite3.Connection | None = None
    ) -> list[str]:
        """The ids of other stored experiments of this name (to replace); raises if the
        experiment may not be persisted."""
        with contextlib.ExitStack() as stack:
            if conn is None:
                conn = stack.enter_context(database.reading())
            if conn is None:
                return []
            try:
                rows = conn.execute(
                    "SELECT id, name FROM experiments WHERE id = ? OR name = ?",
                    (self.id, self.name),
                ).fetchall()
            except sqlite3.Error as exc:
                raise DatabaseError(f"cannot read experiments: {exc}") from exc
        others = [other_id for other_id, name in rows if other_id != self.id and name == self.name]
        if rows and if_exists == "fail":
            which = f"as experiment {others[0]}" if others else f"({self.id})"
            raise ExperimentExistsError(
                f"experiment {self.name!r} is already stored {which}; "
                'use persist(if_exists="replace") to replace it'
            )
        return others

    def reload(self) -> Experiment:
        """Replace this object's fields and runs with the stored ones; return self."""
        stored = load_experiment(self.id)
        self.name, self.fields, self.runs = stored.name, stored.fields, stored.runs
        self.created_at = stored.created_at
        return self

    def delete(self) -> None:
        """Remove the experiment's rows and its datastore folder."""
        with database.transaction() as conn:
            _delete_rows(conn, self.id)
        # Rows first: a crash now leaves only unreferenced files behind, never rows
        # without their files.
        _collect(default_store(), self.id)


def _check_written(
    store: Store, experiment: Experiment, rows: list[tuple[str, list[_FieldRow]]]
) -> None:
    """Inside the commit transaction: this persist's objects are all still there."""
    for _, encoded in rows:
        for _, _, kind, _, value in encoded:
            written = kind == "datastore" and isinstance(value, str)
            if written and not store.exists(Reference.parse(str(value)).key):
                raise _conflict(experiment)


def _conflict(experiment: Experiment) -> PersistConflictError:
    return PersistConflictError(
        f"experiment {experiment.name!r} ({experiment.id}) was persisted by another process "
        "meanwhile, which removed this persist's objects; nothing was changed by this one: "
        "retry"
    )


def _collect(store: Store, exp_id: str) -> None:
    """Delete every generation of ``exp_id`` but the one its rows name (all of the
    folder when there are no rows).

    Runs under the database's write lock, so a persist committing concurrently either
    committed before (and its generation is kept) or finds its objects gone and fails.
    """
    with database.transaction() as conn:
        try:
            row = conn.execute(
                "SELECT generation FROM experiments WHERE id = ?", (exp_id,)
            ).fetchone()
        except sqlite3.Error as exc:
            raise DatabaseError(f"cannot read experiment {exp_id}: {exc}") from exc
        if row is None:
            store.storage.delete(exp_id)
            return
        for folder in store.children(exp_id):
            # Only generations are the experiment's to remove: anything else stays.
            if folder != row[0] and is_id(folder):
                store.storage.delete(f"{exp_id}/{folder}")


def create_experiment(name: str | None = None) -> Experiment:
    """A new experiment with a unique id (not stored until ``persist``)."""
    return Experiment() if name is None else Experiment(name=name)


def load_experiment(id_or_name: str) -> Experiment:
    """The stored experiment with this id or name; DataStores in it load lazily.

    Raises ExperimentNotFoundError when there is none.
    """
    with database.reading() as conn:
        if conn is None:
            raise ExperimentNotFoundError(f"no experiment {id_or_name!r} (no database yet)")
        try:
            row = conn.execute(
                "SELECT id, name, created_at FROM experiments WHERE id = ? OR name = ? "
                "ORDER BY id = ? DESC LIMIT 1",
                (id_or_name, id_or_name, id_or_name),
            ).fetchone()
            if row is None:
                raise ExperimentNotFoundError(f"no experiment with id or name {id_or_name!r}")
            exp_id, name, created_at = row
            _check_row_id(exp_id)
            run_ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM runs WHERE experiment_id = ? ORDER BY position", (exp_id,)
                )
            ]
            for run_id in run_ids:
                _check_row_id(run_id)
            label = f"experiment {name!r}"
            fields = {exp_id: _read_fields(conn, exp_id, label)}
            for run_id in run_ids:
                fields[run_id] = _read_fields(conn, run_id, f"run {run_id} of {label}")
        except sqlite3.Error as exc:
            raise DatabaseError(f"cannot read experiment {id_or_name!r}: {exc}") from exc
    try:
        return Experiment(
            id=exp_id,
            name=name,
            fields=fields[exp_id],
            runs=[Run(id=run_id, fields=fields[run_id]) for run_id in run_ids],
            created_at=created_at,
        )
    except ValueError as exc:
        raise DatabaseError(f"experiment {id_or_name!r} has a malformed row: {exc}") from exc


def _check_row_id(value: object) -> None:
    if not is_id(value):
        raise DatabaseError(f"the database holds a malformed id {value!r:.80}")


def list_experiments() -> list[ExperimentInfo]:
    """The stored experiments, oldest first."""
    with database.reading() as conn:
        if conn is None:
            return []
        try:
            rows = conn.execute(
                "SELECT e.id, e.name, e.created_at, e.persisted_at, "
                "(SELECT count(*) FROM runs r WHERE r.experiment_id = e.id) "
                "FROM experiments e ORDER BY e.created_at, e.name"
            ).fetchall()
        except sqlite3.Error as exc:
            raise DatabaseError(f"cannot list experiments: {exc}") from exc
    return [ExperimentInfo(*row) for row in rows]


def _delete_rows(conn: sqlite3.Connection, exp_id: str) -> None:
    conn.execute(
        "DELETE FROM fields WHERE owner = ? OR owner IN "
        "(SELECT id FROM runs WHERE experiment_id = ?)",
        (exp_id, exp_id),
    )
    conn.execute("DELETE FROM runs WHERE experiment_id = ?", (exp_id,))
    conn.execute("DELETE FROM experiments WHERE id = ?", (exp_id,))


_FieldRow = tuple[int, str, str, str | None, bytes | str]


def _encode_fields(fields: Fields, prefix: str) -> list[_FieldRow]:
    rows: list[_FieldRow] = []
    for position, (key, value) in enumerate(fields._ts_values.items()):
        if type(key) is not str:
            raise EncodeError(f"field names are strings, got {key!r}")
        if type(value) is _Unreadable:  # kept as it was stored
            rows.append((position, key, *value.row))
            continue
        try:
            rows.append((position, key, *_encode_value(value, prefix)))
        except TypedStoreError as exc:
            exc.add_note(f"field {key!r}")
            raise
    return rows


def _encode_value(value: Any, prefix: str) -> tuple[str, str | None, bytes | str]:
    if type(value) is DataStore:
        return "datastore", None, value.to_url(prefix)
    registry = current_store().registry
    if registry.get("json").accepts(value):
        return "json", None, json.dumps(value, separators=(",", ":"))
    codec = registry.for_value(value)
    return "codec", codec.name, b"".join(byte_view(c) for c in codec.encode(value))


def _read_fields(conn: sqlite3.Connection, owner: str, label: str) -> Fields:
    fields = Fields()
    values = fields._ts_values
    for key, kind, codec, value in conn.execute(
        "SELECT key, kind, codec, value FROM fields WHERE owner = ? ORDER BY position", (owner,)
    ):
        if type(key) is not str:
            raise DatabaseError(f"{label} has a field named {key!r:.80}, not a string")
        try:
            values[key] = _decode_value(kind, codec, value)
        except TypedStoreError as exc:
            exc.add_note(f"field {key!r} of {label}")
            values[key] = _Unreadable((kind, codec, value), exc)
        except Exception as exc:  # a row is untrusted input, like a stored object
            error = DatabaseError(f"field {key!r} of {label} is malformed: {exc!r:.200}")
            error.__cause__ = exc
            values[key] = _Unreadable((kind, codec, value), error)
    return fields


def _decode_value(kind: str, codec: str | None, value: Any) -> Any:
    if kind == "json" and type(value) is str:
        return _strictjson.loads(value, max_depth=json_codec.MAX_DEPTH)
    if kind == "datastore":
        return DataStore.from_url(value, lazy=True)
    if kind == "codec" and codec is not None and isinstance(value, bytes):
        return current_store().registry.get(codec).decode(memoryview(value), None)
    raise DatabaseError(f"malformed field row (kind {kind!r})")


def _refuse_experiment_prefix(prefix: str) -> None:
    head = prefix.split("/", 1)[0]
    if not is_id(head) or _persisting.get() == head:
        return
    with database.reading() as conn:
        if conn is None:
            return
        try:
            found = conn.execute("SELECT 1 FROM experiments WHERE id = ?", (head,)).fetchone()
        except sqlite3.Error as exc:
            raise DatabaseError(f"cannot check experiments: {exc}") from exc
    if found:
        raise ReservedPrefixError(
            f"prefix {prefix!r} is inside the datastore folder of experiment {head}, which "
            "its persist() and delete() manage; choose a prefix other than the experiment id"
        )


reserve_prefixes(_refuse_experiment_prefix)
