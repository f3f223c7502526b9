"""Moving an mltraq store into typedstore: its experiments and DataStores, read safely.

mltraq (the experiment tracker typedstore's DataStore comes from) keeps experiments in a
SQL database and DataStores as files. Both hold its DataPak format: a pickle of plain
containers, where arrays, tables, UUIDs and DataStores are dicts tagged ``DATAPAK-0``
holding ``.npy`` bytes, Feather bytes or a URL. typedstore reads that pickle with its own
interpreter (plain data only, as for any pickle), arrays with its npy codec and tables
with its arrow codec: nothing from the old store runs.
"""

from __future__ import annotations

import os
import re
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np

from typedstore import database
from typedstore.datastore import DataStore
from typedstore.errors import DecodeError, TypedStoreError
from typedstore.experiment import Experiment, Run, is_id
from typedstore.fields import Fields
from typedstore.keys import check_key
from typedstore.policy import INFLATE_MAX
from typedstore.reference import Reference
from typedstore.store import Store, current_store, default_store

__all__ = ["ImportReport", "import_mltraq", "read_datapak"]

_TAG = "DATAPAK-0"
# mltraq names a run table after its experiment; anything else is not a table of it.
_TABLE = re.compile(r"experiment_[A-Za-z0-9_]{1,200}")
_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,200}")


@attrs.frozen
class ImportReport:
    """What :func:`import_mltraq` moved, and what it left behind."""

    #: The names of the experiments persisted.
    experiments: tuple[str, ...]
    #: mltraq URL (``file:///...``) -> typedstore reference, for every DataStore file.
    objects: dict[str, str]
    #: What was not moved, and why.
    skipped: tuple[str, ...] = ()


def read_datapak(data: bytes, datastore: str | os.PathLike[str] | None = None) -> Any:
    """The value of mltraq DataPak bytes; DataStores it names are read from the folder
    ``datastore`` (refused when None). Raises DecodeError for anything else."""
    return _Reader(None if datastore is None else Path(datastore)).read(data)


class _Reader:
    """Reads DataPak values, and remembers the DataStore files it read."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.used: set[str] = set()

    def read(self, data: bytes) -> Any:
        if data[:3] == b"C01":  # zlib, as mltraq's compression writes it
            inflater = zlib.decompressobj()
            try:
                raw = inflater.decompress(data[3:], INFLATE_MAX * len(data))
            except zlib.error as exc:
                raise DecodeError(f"mltraq: data does not inflate: {exc}") from None
            if inflater.unconsumed_tail:
                raise DecodeError(f"mltraq: data inflates to over {INFLATE_MAX} times its size")
            data = raw
        elif data[:3] == b"C00":
            data = data[3:]
        # A pickle of plain data: the pickle codec's interpreter builds nothing else.
        value = current_store().registry.get("pickle").decode(memoryview(data), None)
        return self.untag(value, 0)

    def untag(self, value: Any, depth: int) -> Any:
        if depth > 100:
            raise DecodeError("mltraq: values nest too deeply")
        if type(value) is list:
            return [self.untag(v, depth + 1) for v in value]
        if type(value) is tuple:
            return tuple(self.untag(v, depth + 1) for v in value)
        if type(value) is dict and _TAG not in value:
            return {k: self.untag(v, depth + 1) for k, v in value.items()}
        if type(value) is not dict:
            return value
        kind, payload = value.get(_TAG), value.get("value")
        registry = current_store().registry
        if kind in ("mltraq.Bunch-0", "mltraq.Sequence-0"):
            return self.untag(payload, depth + 1)
        if kind == "mltraq.DataStore-0" and type(payload) is str:
            return self.datastore(payload)
        if kind == "numpy.ndarray-0" and type(payload) is bytes:
            return registry.get("npy").decode(memoryview(payload), np.ndarray)
        if kind in ("pandas.DataFrame-0", "pandas.Series-0", "pyarrow.Table-0"):
            if type(payload) is not bytes:
                raise DecodeError(f"mltraq: a {kind} without its bytes")
            # Feather files: the arrow codec reads (and checks) them as Arrow tables.
            table = registry.get("arrow").decode(memoryview(payload), None)
            if kind == "pyarrow.Table-0":
                return table
            frame = table.to_pandas()  # by the pandas metadata mltraq's writer left
            return frame.iloc[:, 0] if kind == "pandas.Series-0" else frame
        if kind == "numpy.datetime64-0" and type(payload) is int:
            return np.datetime64(payload, "us")
        if kind == "uuid.UUID-0" and type(payload) is str:
            try:
                return uuid.UUID(hex=payload)
            except ValueError as exc:
                raise DecodeError(f"mltraq: malformed UUID {payload!r:.60}") from exc
        raise DecodeError(f"mltraq: values of kind {kind!r:.60} are not read")

    def datastore(self, url: str) -> DataStore:
        if self.folder is None:
            raise DecodeError(f"mltraq: {url} names a DataStore, and no datastore folder was given")
        if not url.startswith("file:///"):
            raise DecodeError(f"mltraq: DataStore URL {url!r:.80} is not file:///PREFIX/ID")
        key = check_key(url[len("file:///") :])
        try:
            data = self.folder.joinpath(*key.split("/")).read_bytes()
        except OSError as exc:
            raise DecodeError(f"mltraq: cannot read the DataStore {url}: {exc}") from exc
        self.used.add(url)
        value = self.read(data)
        if type(value) is not dict or not all(type(k) is str for k in value):
            raise DecodeError(f"mltraq: the DataStore {url} does not hold a dict of str keys")
        return DataStore(value)


def import_mltraq(
    database_url: str,
    datastore: str | os.PathLike[str],
    *,
    if_exists: Literal["fail", "replace"] = "fail",
    store: Store | None = None,
) -> ImportReport:
    """Move an mltraq store into the current database and datastore.

    ``database_url`` is mltraq's SQLAlchemy URL (``sqlite:///mltraq.db``), ``datastore``
    its datastore folder (``mltraq.datastore``). Each experiment is persisted with its id,
    name, fields and runs (their DataStores go to its datastore folder, as any persist's);
    each DataStore file that no experiment holds is stored under its own key. Nothing of
    the old store is changed. ``if_exists`` is given to every persist.
    """
    folder = Path(datastore)
    store = store or default_store()
    skipped: list[str] = []
    names: list[str] = []
    reader = _Reader(folder)
    source = database.open_foreign(database_url)
    try:
        with source.begin(write=False) as conn:
            rows = conn.execute("SELECT id_experiment, name, meta, fields FROM experiments")
            loaded = []
            for exp_id, name, meta, fields in rows:
                try:
                    loaded.append(_experiment(conn, reader, exp_id, name, meta, fields))
                except (TypedStoreError, ValueError) as exc:
                    skipped.append(f"experiment {name!r:.80}: {exc}")
    finally:
        source.close()
    for experiment in loaded:
        experiment.persist(if_exists=if_exists)
        names.append(experiment.name)
    objects = {}
    for key in _files(folder):
        url = f"file:///{key}"
        if url in reader.used:
            continue
        try:
            value = reader.read((folder / key).read_bytes())
            if type(value) is dict and all(type(k) is str for k in value):
                value = DataStore(value)
            codec = store.registry.for_value(value)
            store.storage.write(key, codec.encode(value))
        except (TypedStoreError, OSError) as exc:
            skipped.append(f"{url}: {exc}")
            continue
        objects[url] = str(Reference(key, codec.name))
    return ImportReport(tuple(names), objects, tuple(skipped))


def _experiment(
    conn: database.Connection, reader: _Reader, exp_id: Any, name: Any, meta: Any, fields: Any
) -> Experiment:
    exp_id = str(exp_id).replace("-", "")
    if not is_id(exp_id) or type(name) is not str:
        raise DecodeError(f"not an experiment id and name: {exp_id!r:.40}, {name!r:.40}")
    info = reader.read(bytes(meta)) if meta is not None else {}
    runs_info = info.get("runs", {}) if type(info) is dict else {}
    columns_info = runs_info.get("columns", {})
    table = runs_info.get("table_name")
    values = reader.read(bytes(fields)) if fields is not None else {}
    experiment = Experiment(id=exp_id, name=name, fields=Fields(values))
    if not table:
        return experiment
    if type(table) is not str or not _TABLE.fullmatch(table):
        raise DecodeError(f"a run table named {table!r:.80}")
    columns = [c for c in columns_info.get("types", {}) if type(c) is str]
    if not all(_COLUMN.fullmatch(c) for c in columns):
        raise DecodeError(f"run columns {columns!r:.120}")
    serialized = set(columns_info.get("serialized", ()))
    quoted = ", ".join(f'"{c}"' for c in ["id_run", *columns])
    rows = conn.execute(
        f'SELECT {quoted} FROM "{table}" WHERE id_experiment = :id', {"id": exp_id}
    )
    for row in rows:
        run_fields = Fields()
        for column, value in zip(columns, row[1:], strict=True):
            if column in serialized and value is not None:
                value = reader.read(bytes(value))
            run_fields[column] = value
        experiment.runs.append(Run(id=str(row[0]).replace("-", ""), fields=run_fields))
    return experiment


def _files(folder: Path) -> Iterator[str]:
    """Keys (relative paths) of the files in mltraq's datastore folder."""
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            key = path.relative_to(folder).as_posix()
            try:
                yield check_key(key)
            except TypedStoreError:
                continue

