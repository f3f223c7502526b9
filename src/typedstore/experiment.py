"""Experiments: fields and runs in the embedded database, DataStores in the datastore."""

from __future__ import annotations

import contextlib
import datetime
import re
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, Literal

import attrs

from typedstore import database
from typedstore import fields as fields_format
from typedstore._progress import progress
from typedstore.database import Connection
from typedstore.datastore import DataStore
from typedstore.errors import (
    DatabaseError,
    ExperimentExistsError,
    ExperimentNotFoundError,
    PersistConflictError,
    ReservedPrefixError,
    StorageError,
    TypedStoreError,
)
from typedstore.fields import Fields
from typedstore.options import options
from typedstore.protocols import Syncs
from typedstore.reference import Reference
from typedstore.store import Store, default_store, reserve_prefixes

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
        new objects are written under a fresh generation folder first (and flushed to disk,
        unless option ``persist.durable`` is off), one transaction then switches the rows,
        and only then are the previous objects deleted, so if the process dies, or the
        power fails, at any point the previous version (rows and files) still loads.
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
            owners = [self.fields] + [run.fields for run in self.runs]
            with (
                options.ctx({"datastore.relative_path_prefix": prefix}),
                progress(len(owners), f"persist {self.name}", unit="run", minimum=20) as bar,
            ):
                documents = []
                urls: list[str] = []
                for fields in owners:
                    try:
                        document, written = fields_format.encode(fields, prefix)
                    except StorageError as exc:
                        # A folder that vanished under a write: another persist collected it.
                        vanished = isinstance(exc.__cause__, FileNotFoundError)
                        if not vanished or generation in store.children(self.id):
                            raise
                        raise _conflict(self) from exc
                    documents.append(document)
                    urls += written
                    bar.update()
            if urls and options.get("persist.durable") and isinstance(store.storage, Syncs):
                # Flushed before the commit: a power cut then never keeps rows whose
                # objects it loses.
                store.storage.sync(prefix)
            with database.transaction() as conn:
                replaced = self._check_can_persist(if_exists, conn)
                _check_written(store, self, urls)
                for exp_id in (self.id, *replaced):
                    _delete_rows(conn, exp_id)
                conn.execute(
                    "INSERT INTO experiments (id, name, created_at, persisted_at, generation, "
                    "fields) VALUES (:id, :name, :created_at, :persisted_at, :generation, "
                    ":fields)",
                    {
                        "id": self.id,
                        "name": self.name,
                        "created_at": self.created_at,
                        "persisted_at": _now(),
                        "generation": generation,
                        "fields": documents[0],
                    },
                )
                conn.executemany(
                    "INSERT INTO runs (id, experiment_id, position, fields) "
                    "VALUES (:id, :experiment_id, :position, :fields)",
                    [
                        {"id": run.id, "experiment_id": self.id, "position": i, "fields": doc}
                        for i, (run, doc) in enumerate(zip(self.runs, documents[1:], strict=True))
                    ],
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

    def _check_can_persist(self, if_exists: str, conn: Connection | None = None) -> list[str]:
        """The ids of other stored experiments of this name (to replace); raises if the
        experiment may not be persisted."""
        with contextlib.ExitStack() as stack:
            if conn is None:
                conn = stack.enter_context(database.reading())
            if conn is None:
                return []
            rows = conn.execute(
                "SELECT id, name FROM experiments WHERE id = :id OR name = :name",
                {"id": self.id, "name": self.name},
            )
        others = [other_id for other_id, name in rows if other_id != self.id and name == self.name]
        if rows and if_exists == "fail":
            which = f"as experiment {others[0]}" if others else f"({self.id})"
            raise ExperimentExistsError(
                f"experiment {self.name!r} is already stored {which}; "
                'use persist(if_exists="replace") to replace it'
            )
        return others

    def to_pandas(self, *, datastores: Literal["lazy", "reference"] = "lazy") -> Any:
        """The runs' fields as a pandas DataFrame: one row per run, indexed by run id,
        one column per field name (NaN where a run lacks it).

        DataStores are kept as they are (loading lazily), or with
        ``datastores="reference"`` given as their reference URLs (a DataStore not stored
        yet stays itself). A field that cannot be decoded raises its error.
        """
        if datastores not in ("lazy", "reference"):
            raise ValueError(f"datastores must be 'lazy' or 'reference', got {datastores!r}")
        try:
            import pandas
        except ImportError as exc:
            exc.add_note("Experiment.to_pandas needs pandas: pip install pandas")
            raise
        rows = []
        for run in self.runs:
            row = dict(run.fields)
            if datastores == "reference":
                for key, value in row.items():
                    if type(value) is DataStore and value.reference is not None:
                        row[key] = value.reference
            rows.append(row)
        index = pandas.Index([run.id for run in self.runs], name="run", dtype=object)
        return (
            pandas.DataFrame.from_records(rows, index=index)
            if rows
            else pandas.DataFrame(index=index)
        )

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


def _check_written(store: Store, experiment: Experiment, urls: list[str]) -> None:
    """Inside the commit transaction: this persist's objects are all still there."""
    for url in urls:
        if not store.exists(Reference.parse(url).key):
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
        rows = conn.execute("SELECT generation FROM experiments WHERE id = :id", {"id": exp_id})
        if not rows:
            store.storage.delete(exp_id)
            return
        for folder in store.children(exp_id):
            # Only generations are the experiment's to remove: anything else stays.
            if folder != rows[0][0] and is_id(folder):
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
        rows = conn.execute(
            "SELECT id, name, created_at, CAST(fields AS TEXT) FROM experiments "
            "WHERE id = :key OR name = :key ORDER BY CASE WHEN id = :key THEN 0 ELSE 1 END",
            {"key": id_or_name},
        )
        if not rows:
            raise ExperimentNotFoundError(f"no experiment with id or name {id_or_name!r}")
        exp_id, name, created_at, document = rows[0]
        _check_row_id(exp_id)
        runs = conn.execute(
            "SELECT id, CAST(fields AS TEXT) FROM runs WHERE experiment_id = :id ORDER BY position",
            {"id": exp_id},
        )
    label = f"experiment {name!r}"
    fields = fields_format.decode(document, label)
    loaded = []
    for run_id, run_document in runs:
        _check_row_id(run_id)
        loaded.append(
            Run(id=run_id, fields=fields_format.decode(run_document, f"run {run_id} of {label}"))
        )
    try:
        return Experiment(id=exp_id, name=name, fields=fields, runs=loaded, created_at=created_at)
    except (ValueError, TypeError) as exc:
        raise DatabaseError(f"experiment {id_or_name!r} has a malformed row: {exc}") from exc


def _check_row_id(value: object) -> None:
    if not is_id(value):
        raise DatabaseError(f"the database holds a malformed id {value!r:.80}")


def list_experiments() -> list[ExperimentInfo]:
    """The stored experiments, oldest first."""
    with database.reading() as conn:
        if conn is None:
            return []
        rows = conn.execute(
            "SELECT e.id, e.name, e.created_at, e.persisted_at, "
            "(SELECT count(*) FROM runs r WHERE r.experiment_id = e.id) "
            "FROM experiments e ORDER BY e.created_at, e.name"
        )
    return [ExperimentInfo(*row) for row in rows]


def _delete_rows(conn: Connection, exp_id: str) -> None:
    conn.execute("DELETE FROM runs WHERE experiment_id = :id", {"id": exp_id})
    conn.execute("DELETE FROM experiments WHERE id = :id", {"id": exp_id})


def _refuse_experiment_prefix(prefix: str) -> None:
    head = prefix.split("/", 1)[0]
    if not is_id(head) or _persisting.get() == head:
        return
    with database.reading() as conn:
        if conn is None:
            return
        found = conn.execute("SELECT 1 FROM experiments WHERE id = :id", {"id": head})
    if found:
        raise ReservedPrefixError(
            f"prefix {prefix!r} is inside the datastore folder of experiment {head}, which "
            "its persist() and delete() manage; choose a prefix other than the experiment id"
        )


reserve_prefixes(_refuse_experiment_prefix)
