"""The ``typedstore`` command.

Exit codes: 0 success, 1 error (one line on stderr; a traceback with ``--debug``),
2 usage error.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import stat
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TextIO

import attrs
import numpy as np

from typedstore import __version__
from typedstore._progress import progress
from typedstore.codecs.safetensors import read_header
from typedstore.datastore import DataStore, entry_table
from typedstore.errors import (
    DecodeError,
    IntegrityError,
    NotFoundError,
    StorageError,
    TypedStoreError,
    describe,
)
from typedstore.experiment import Fields, create_experiment, list_experiments, load_experiment
from typedstore.integrity import CheckedReader, Crc32cHash, check_view, mismatch
from typedstore.io import DataStoreIO
from typedstore.keys import check_key, describe_key
from typedstore.maintenance import Damage, collect_garbage, reference_for, references, verify
from typedstore.mltraq import import_mltraq
from typedstore.options import options
from typedstore.policy import PART
from typedstore.protocols import NAME_PATTERN, Storage, WritesStreams
from typedstore.query import Condition, find_runs
from typedstore.reference import Reference
from typedstore.registry import registry
from typedstore.store import Store, default_store

__all__ = ["main"]

_SAFETENSORS_BASED = ("safetensors", "tree", "attrs", "datastore")


def _short(value: Any) -> str:
    if isinstance(value, DataStore):
        ref = value.reference
        keys = ", ".join(value.keys())
        return f"DataStore[{keys}]" + (f" -> {ref}" if ref else "")
    if isinstance(value, np.ndarray):
        return f"ndarray {value.dtype} {value.shape}"
    if attrs.has(type(value)):
        return f"{type(value).__qualname__}(...)"
    try:
        text = repr(value)
    except RecursionError:  # a value from someone else's database may nest without end
        return f"<{type(value).__qualname__} nested too deeply to show>"
    return text if len(text) <= 70 else text[:67] + "..."


def _json(value: Any, out: TextIO) -> int:
    """Print one JSON document (the --json output of a command); exit code 0."""
    print(json.dumps(value, indent=2, ensure_ascii=False), file=out)
    return 0


def _field_json(fields: Fields) -> dict[str, Any]:
    """Fields for --json: plain values as they are, others described."""
    shown: dict[str, Any] = {}
    unreadable = fields.unreadable
    for key in fields:
        if key in unreadable:
            shown[key] = {"unreadable": describe(unreadable[key])}
            continue
        value = fields[key]
        if isinstance(value, DataStore):
            shown[key] = {"datastore": value.reference, "keys": list(value.keys())}
        elif registry.get("json").accepts(value):
            shown[key] = value
        else:
            shown[key] = {"type": f"{type(value).__module__}.{type(value).__qualname__}",
                          "repr": _short(value)}  # fmt: skip
    return shown


def _table(rows: Sequence[tuple[str, ...]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)


# --- demo -------------------------------------------------------------------------------


@attrs.define
class DemoModel:
    """The attrs model class of the demo."""

    coef: np.ndarray[Any, Any]
    intercept: float
    labels: list[str]


def _register_demo_model() -> None:
    # Every command knows the demo's class, so that the demo's objects verify and show.
    if DemoModel not in registry.get("tree").types:
        registry.register_class(DemoModel, name="typedstore.demo.DemoModel")


def _demo(args: argparse.Namespace, out: TextIO) -> int:
    storage = default_store().storage
    print(f"datastore: {storage.url}", file=out)
    print(f"database:  {options.get('database.url')}\n", file=out)

    # Values you manage yourself, with DataStoreIO.
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    by_codec = DataStoreIO.serialize_write(array, "demo", codec="safetensors")
    as_is = DataStoreIO.write(b"raw bytes, stored as they are", "demo")
    print("DataStoreIO (prefix 'demo'):", file=out)
    print(f"  array -> {by_codec.url}", file=out)
    print(f"  bytes -> {as_is.url}", file=out)

    # An experiment: plain fields inline in the database, DataStores in the datastore.
    experiment = create_experiment()
    experiment.fields.dataset = "iris"
    experiment.fields.array_reference = by_codec.url
    with experiment.run() as run:
        run.fields.accuracy = 0.93
        run.fields.params = {"lr": 0.001, "layers": [64, 32]}
        run.fields.outputs = DataStore(
            weights=np.linspace(0, 1, 8).reshape(2, 4),
            model=DemoModel(np.array([0.5, -1.0]), 0.25, ["setosa", "virginica"]),
            log=b"epoch 1 ok\nepoch 2 ok\n",
        )
    experiment.persist()
    print(f"\npersisted experiment {experiment.name} ({experiment.id})", file=out)
    print("files in its datastore folder:", file=out)
    for key in storage.list(experiment.id):
        print(f"  {key}  ({storage.size(key)} bytes)", file=out)

    loaded = load_experiment(experiment.id)
    print("\nreloaded:", file=out)
    for key, value in loaded.fields.items():
        print(f"  fields.{key} = {_short(value)}", file=out)
    for i, run in enumerate(loaded.runs):
        for key, value in run.fields.items():
            print(f"  runs[{i}].fields.{key} = {_short(value)}", file=out)
        outputs = run.fields.outputs
        print(f"  runs[{i}].fields.outputs.weights.sum() = {outputs.weights.sum():.1f}", file=out)
        print(f"  runs[{i}].fields.outputs.model = {outputs.model}", file=out)
        print(f"  runs[{i}].fields.outputs.log = {outputs.log!r}", file=out)
    back = DataStoreIO(loaded.fields.array_reference).read_deserialize(np.ndarray)
    same = np.array_equal(back, array) and DataStoreIO(as_is.url).read() == as_is.read()
    print(f"\nDataStoreIO values read back equal: {same}", file=out)
    return 0 if same else 1


# --- objects ------------------------------------------------------------------------------


def _others(storage: Storage, prefix: str | None) -> None:
    """Name on stderr what lies under ``prefix`` but is no object (a symlink out of the
    root, a pipe, a device)."""
    listed = getattr(storage, "others", None)
    for path in listed(prefix) if listed is not None else ():
        print(f"typedstore: skipped {path}: not a regular file, so not an object", file=sys.stderr)


def _ls(args: argparse.Namespace, out: TextIO) -> int:
    store = default_store()
    _others(store.storage, args.prefix)
    known = references()
    rows = [("REFERENCE", "SIZE", "CODEC FROM")]
    listed = []
    for key in store.storage.list(args.prefix):
        ref, source = reference_for(store, key, known)
        size = store.storage.size(key)
        rows.append((str(ref), str(size), source))
        listed.append({"reference": str(ref), "key": key, "codec": ref.codec, "size": size,
                       "codec_from": source})  # fmt: skip
    if args.json:
        return _json(listed, out)
    if args.quiet:
        for item in listed:
            print(item["reference"], file=out)
        return 0
    if len(rows) == 1:
        print("no objects", file=out)
        return 0
    _table(rows, out)
    return 0


def _reference(text: str) -> Reference:
    """A reference as given, or the reference of a bare key (see
    :func:`typedstore.maintenance.reference_for`)."""
    if text.startswith("datastore:"):
        return Reference.parse(text)
    key = check_key(text)
    return reference_for(default_store(), key, references())[0]


def _info(args: argparse.Namespace, out: TextIO) -> int:
    ref = _reference(args.url)
    store = default_store()
    size = store.storage.size(ref.key)
    described: dict[str, Any] = {"reference": str(ref), "key": ref.key, "codec": ref.codec,
                                 "size": size}  # fmt: skip
    tensors: Mapping[str, Any] = {}
    entries: Mapping[str, Any] = {}
    if ref.codec in _SAFETENSORS_BASED:
        with store.open(ref.key) as reader:
            header = read_header(reader)
        tensors = header.tensors
        described["metadata"] = dict(header.metadata)
        if header.metadata.get("typedstore.kind") == "datastore":
            try:
                entries = entry_table(header)
            except DecodeError as exc:
                # The header is still worth showing when the table is damaged.
                described["entries_error"] = describe(exc)
        described["tensors"] = [
            {"name": name, "dtype": entry.dtype.str, "shape": list(entry.shape),
             "bytes": entry.nbytes, "entry_codec": entries[name].codec if name in entries
             else None}
            for name, entry in tensors.items()
        ]  # fmt: skip
    if args.json:
        return _json(described, out)
    print(f"reference: {ref}", file=out)
    print(f"key:       {ref.key}", file=out)
    print(f"codec:     {ref.codec}", file=out)
    print(f"size:      {size} bytes", file=out)
    if "metadata" not in described:
        return 0
    metadata = described["metadata"]
    print(f"metadata:  {json.dumps(metadata, indent=2) if metadata else '{}'}", file=out)
    if "entries_error" in described:
        print(f"entries:   unreadable ({described['entries_error']})", file=out)
    rows = [("TENSOR", "DTYPE", "SHAPE", "BYTES", "ENTRY CODEC")]
    for tensor in described["tensors"]:
        rows.append((tensor["name"], tensor["dtype"], str(tensor["shape"]), str(tensor["bytes"]),
                     tensor["entry_codec"] or ""))  # fmt: skip
    _table(rows, out)
    return 0


def _get(args: argparse.Namespace, out: TextIO) -> int:
    ref = _reference(args.url)
    storage = default_store().storage
    size = storage.size(ref.key)
    expected = _expected_digest(ref)
    target = Path(args.output).resolve() if args.output else None
    root = getattr(storage, "root", None)
    if target is not None and isinstance(root, Path) and target.is_relative_to(root.resolve()):
        raise StorageError(
            f"refusing to write {args.output}: it is inside the store {storage.url}, whose "
            "objects are never changed in place"
        )
    try:
        special = target is None or not stat.S_ISREG(os.stat(args.output).st_mode)
    except FileNotFoundError:
        special = False
    if special:
        # stdout, /dev/stdout, a pipe: what goes out cannot be taken back, so the bytes
        # are checked in a pass of their own first.
        if expected is not None:
            _check(ref, _stream(storage, ref.key, size, None, expected[0]()), expected)
        if target is None:
            _stream(storage, ref.key, size, sys.stdout.buffer, None)
            return 0
        with open(args.output, "wb") as sink:
            _stream(storage, ref.key, size, sink, None)
    else:
        # A new file, checked as it is written, then renamed over the target: a target
        # that is a hard link to anything (a stored object included) keeps its contents.
        assert target is not None
        partial = target.with_name(f".{target.name}.typedstore-partial")
        digest = None if expected is None else expected[0]()
        try:
            with open(partial, "xb") as sink:
                _stream(storage, ref.key, size, sink, digest)
            if expected is not None:
                _check(ref, digest, expected)
            os.replace(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    print(f"wrote {size} bytes to {args.output}", file=sys.stderr)
    return 0


class _Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def hexdigest(self) -> str: ...


def _expected_digest(ref: Reference) -> tuple[Callable[[], _Digest], str, str] | None:
    """How to check an object's bytes: a digest, the value expected, its name."""
    sha256 = ref.params.get("sha256")
    if sha256 is not None:
        return hashlib.sha256, sha256, "sha256"
    described = describe_key(ref.key)
    if described is None or described.crc32c is None:
        return None
    return Crc32cHash, f"{described.crc32c:08x}", "crc32c"


def _stream(
    storage: Storage, key: str, size: int, sink: BinaryIO | None, digest: _Digest | None
) -> _Digest | None:
    """Copy the object ``key`` to ``sink`` (if any) in chunks, feeding ``digest`` (if any);
    return the digest."""
    with progress(size, "get", unit="B", minimum=4 << 20, leave=True) as bar:
        for start in range(0, size, PART):
            chunk = storage.read(key, start, PART)
            if digest is not None:
                digest.update(chunk)
            if sink is not None:
                sink.write(chunk)
            bar.update(len(chunk))
    if sink is not None:
        sink.flush()
    return digest


def _check(
    ref: Reference, digest: _Digest | None, expected: tuple[Callable[[], _Digest], str, str]
) -> None:
    actual = "" if digest is None else digest.hexdigest()
    if actual != expected[1]:
        raise mismatch(ref, expected[1], actual, expected[2])


def _read_regular(path: Path) -> bytearray:
    """The bytes of a regular file: a pipe would block, a device never end."""
    # Non-blocking: opening a pipe would otherwise wait for a writer.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with open(fd, "rb", buffering=0) as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StorageError(f"{path} is not a regular file; put stores files only")
        data = bytearray(info.st_size)
        view, done = memoryview(data), 0
        with progress(info.st_size, "put", unit="B", minimum=4 << 20, leave=True) as bar:
            while done < info.st_size:
                got = file.readinto(view[done : done + PART])
                if not got:
                    break
                done += got
                bar.update(got)
        view.release()
        del data[done:]  # the file shrank meanwhile, or grew: what it holds now is stored
        data += file.read()
    return data


# Files that are stored as they are, under the codec whose format they are.
_FILE_CODECS = {".npy": "npy", ".safetensors": "safetensors"}


def _put(args: argparse.Namespace, out: TextIO) -> int:
    path = Path(args.file)
    data = _read_regular(path)
    kind = _FILE_CODECS.get(path.suffix.lower(), "raw")
    codec = args.codec or kind
    if codec in ("raw", kind):
        try:
            io = DataStoreIO.write(data, args.prefix, codec)
        except DecodeError as exc:
            exc.add_note(f"{path} is named like a {codec} file but is not one it reads")
            raise
    else:
        # Another codec asked for: the file's values, stored in that codec's format.
        value: Any = data if kind == "raw" else registry.get(kind).decode(data, None)
        io = DataStoreIO.serialize_write(value, args.prefix, codec=codec)
    print(io.url, file=out)
    return 0


def _rm(args: argparse.Namespace, out: TextIO) -> int:
    prefix = args.prefix
    if prefix.startswith("datastore:"):
        prefix = Reference.parse(prefix).key
    removed = DataStoreIO.delete(prefix)
    print(f"removed {removed} object{'s' * (removed != 1)} under {prefix}", file=out)
    return 0


# --- registry and experiments ----------------------------------------------------------------


def _codecs(args: argparse.Namespace, out: TextIO) -> int:
    rows = [("NAME", "VERSION", "PRIORITY", "SOURCE", "TYPES")]
    for name in registry.names():
        codec = registry.get(name)
        types = (
            ", ".join(
                t if isinstance(t, str) else f"{t.__module__}.{t.__qualname__}" for t in codec.types
            )
            or "-"
        )
        source = registry.source(name)
        rows.append((name, str(codec.version), str(registry.priority(name)), source, types))
    _table(rows, out)
    return 0


def _experiments(args: argparse.Namespace, out: TextIO) -> int:
    if args.where:
        return _runs(args.where, args.json, out)
    infos = list_experiments()
    if args.json:
        return _json([attrs.asdict(info) for info in infos], out)
    if not infos:
        print("no experiments", file=out)
        return 0
    rows = [("ID", "NAME", "RUNS", "PERSISTED")]
    rows += [(e.id, e.name, str(e.runs), e.persisted_at) for e in infos]
    _table(rows, out)
    return 0


def _runs(conditions: list[Condition], as_json: bool, out: TextIO) -> int:
    found = find_runs(*conditions)
    if as_json:
        return _json(
            [{"experiment": run.experiment, "experiment_id": run.experiment_id,
              "position": run.position, "id": run.id, "fields": _field_json(run.fields)}
             for run in found],
            out,
        )  # fmt: skip
    if not found:
        print("no runs match", file=out)
        return 0
    rows = [("EXPERIMENT", "RUN", "ID", "FIELDS")]
    for run in found:
        unreadable = run.fields.unreadable
        shown = ", ".join(
            f"{key}=UNREADABLE" if key in unreadable else f"{key}={_short(run.fields[key])}"
            for key in run.fields
        )
        rows.append((run.experiment, str(run.position), run.id, shown))
    _table(rows, out)
    return 0


def _condition(text: str) -> Condition:
    try:
        return Condition.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _import_mltraq(args: argparse.Namespace, out: TextIO) -> int:
    report = import_mltraq(
        args.database_url, args.datastore_dir, if_exists="replace" if args.replace else "fail"
    )
    for name in report.experiments:
        print(f"imported experiment {name}", file=out)
    print(f"imported {len(report.objects)} DataStore files that no experiment holds", file=out)
    for url, reference in report.objects.items():
        print(f"  {url} -> {reference}", file=out)
    for what in report.skipped:
        print(f"skipped {what}", file=sys.stderr)
    return 1 if report.skipped else 0


def _show(args: argparse.Namespace, out: TextIO) -> int:
    experiment = load_experiment(args.experiment)
    if args.json:
        return _json(
            {"id": experiment.id, "name": experiment.name, "created_at": experiment.created_at,
             "fields": _field_json(experiment.fields),
             "runs": [{"id": run.id, "fields": _field_json(run.fields)}
                      for run in experiment.runs]},
            out,
        )  # fmt: skip
    print(
        f"experiment {experiment.name} ({experiment.id}), created {experiment.created_at}", file=out
    )
    _show_fields(experiment.fields, "  ", out)
    for i, run in enumerate(experiment.runs):
        print(f"  run {i} ({run.id})", file=out)
        _show_fields(run.fields, "    ", out)
    return 0


def _show_fields(fields: Fields, indent: str, out: TextIO) -> None:
    """Print each field, or why it cannot be read."""
    unreadable = fields.unreadable
    for key in fields:
        error = unreadable.get(key)
        shown = _short(fields[key]) if error is None else f"UNREADABLE: {describe(error)}"
        print(f"{indent}fields.{key} = {shown}", file=out)


def _copy(args: argparse.Namespace, out: TextIO) -> int:
    storage_options = (
        json.loads(args.storage_options)
        if args.storage_options
        else options.get("datastore.storage_options")
    )
    settings = {"datastore.storage_options": storage_options}
    source_store = Store(args.source, settings=settings)
    target_store = Store(args.target, settings=settings)
    source, target = source_store.storage, target_store.storage
    _others(source, None)
    keys = list(source.list())
    if not keys:
        raise NotFoundError(f"no objects to copy in {source.url}")
    sizes = {key: source.size(key) for key in keys}
    copied, copied_bytes, same, different, damaged = 0, 0, 0, [], []
    with progress(sum(sizes.values()), "copy", unit="B", minimum=4 << 20, leave=True) as bar:
        for key in keys:
            # Objects are never changed in place: one already there must be this one.
            if target_store.exists(key):
                if _equal(source, target, key, sizes[key]):
                    same += 1
                else:
                    different.append(key)
            else:
                try:
                    _copy_checked(source_store, target, key, sizes[key])
                except IntegrityError as bad:
                    damaged.append(bad)
                else:
                    copied += 1
                    copied_bytes += sizes[key]
            bar.update(sizes[key])
    print(
        f"copied {copied} objects ({copied_bytes} bytes) from {source.url} to {target.url}; "
        f"{same} were there already",
        file=out,
    )
    for key in different:
        print(f"typedstore: error: {key} differs from the object in {target.url}", file=sys.stderr)
    for error in damaged:
        print(f"typedstore: error: not copied: {error}", file=sys.stderr)
    return 1 if different or damaged else 0


def _copy_checked(source: Store, target: Storage, key: str, size: int) -> None:
    """Copy one object under the same key (references are root-relative: the same keys
    make the same references work), checked against the crc32c in its name: a damaged
    object is not copied and raises IntegrityError."""
    described = describe_key(key)
    crc = None if described is None else described.crc32c
    if not isinstance(target, WritesStreams):
        data = source.storage.read(key)
        if crc is not None:
            check_view(key, crc, data)
        target.write(key, [data])
        return
    with source.open(key) as reader:
        if crc is not None:
            # Checked by the read that reaches the end: the write fails before it commits.
            reader = CheckedReader(reader, crc, key, check_at_end=True)
        target.write_from(key, reader, size)


def _equal(source: Storage, target: Storage, key: str, size: int) -> bool:
    if target.size(key) != size:
        return False
    return all(
        source.read(key, start, PART) == target.read(key, start, PART)
        for start in range(0, size, PART)
    )


def _gc(args: argparse.Namespace, out: TextIO) -> int:
    report = collect_garbage(older_than=args.older_than)
    for reason in report.skipped:
        print(f"skipped {reason}", file=out)
    print(
        f"removed {report.temporary_files} temporary files and {report.generations} "
        "unreferenced experiment generations",
        file=out,
    )
    return 0


def _verify(args: argparse.Namespace, out: TextIO) -> int:
    _others(default_store().storage, args.prefix)
    checked = 0
    damaged: list[Damage] = []
    unreadable: list[Damage] = []
    for _, damage in verify(args.prefix):
        checked += 1
        if damage is not None:
            (damaged if damage.damaged else unreadable).append(damage)
            if not args.json:
                label = "DAMAGED" if damage.damaged else "NOT DECODABLE HERE"
                print(f"{label} {damage.reference}: {damage.error}", file=out)
    if args.json:
        _json(
            {"checked": checked,
             "damaged": [{"reference": d.reference, "error": d.error} for d in damaged],
             "not_decodable_here": [{"reference": d.reference, "error": d.error}
                                    for d in unreadable]},
            out,
        )  # fmt: skip
        return 1 if damaged else 0
    print(f"{checked} objects checked, {len(damaged)} damaged", file=out)
    if unreadable:
        print(
            f"{len(unreadable)} not decodable under this process's registry and options: "
            "--import the module that registers their classes, or --allow-pickle them",
            file=out,
        )
    return 1 if damaged else 0


def _storage_option(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def _import_modules(names: list[str]) -> None:
    if not names:
        return
    # As `python -m` would: a project's own modules import from where the command runs.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise TypedStoreError(f"--import {name}: {type(exc).__name__}: {exc}") from exc


def _codec_name(text: str) -> str:
    if NAME_PATTERN.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(f"invalid codec name {text!r}")
    return text


def _seconds(text: str) -> float:
    seconds = float(text)
    if not seconds >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"expected 0 seconds or more, got {text!r}")
    return seconds


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="typedstore",
        description="Typed storage of large values, out of the database and back.",
    )
    parser.add_argument("--datastore", metavar="URL", help="datastore root (option datastore.url)")
    parser.add_argument("--database", metavar="URL", help="database (option database.url)")
    parser.add_argument(
        "--storage-option", type=_storage_option, action="append", default=[],
        metavar="KEY=VALUE",
        help="an fsspec option of a remote datastore (option datastore.storage_options); "
        "VALUE is JSON or a string, and dots in KEY nest: "
        "client_kwargs.endpoint_url=http://127.0.0.1:9000 (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--allow-pickle", action="append", default=[], metavar="PATTERN",
        help="let pickles build these classes too (option codecs.pickle.allow), a glob over "
        "module.qualname such as 'sklearn.*' (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--import", dest="imports", action="append", default=[], metavar="MODULE",
        help="import MODULE first (from the current directory too), so that the codecs "
        "and classes it registers are known (repeatable)",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument("--version", action="version", version=f"typedstore {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: Callable[[argparse.Namespace, TextIO], int], text: str) -> Any:
        sub = commands.add_parser(name, help=text, description=text)
        sub.set_defaults(run=run)
        return sub

    command("demo", _demo, "run the main job: an experiment with a DataStore, persisted, reloaded")
    command("codecs", _codecs, "list the registered codecs")
    def as_json(sub: Any) -> None:
        sub.add_argument("--json", action="store_true", help="print one JSON document")

    ls = command("ls", _ls, "list stored objects: their references and sizes")
    ls.add_argument(
        "prefix", nargs="?", help="only the objects under this key prefix (default: all)"
    )
    ls.add_argument(
        "-q", "--quiet", action="store_true",
        help="print the references only, one a line (for get, info and rm)",
    )  # fmt: skip
    as_json(ls)
    obj = "a reference (datastore:///KEY?codec=...), or an object's bare key"
    info = command("info", _info, "describe a stored object without loading it")
    info.add_argument("url", metavar="REFERENCE", help=obj)
    as_json(info)
    get = command("get", _get, "write a stored object's bytes to a file or stdout")
    get.add_argument("url", metavar="REFERENCE", help=obj)
    get.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default: stdout)")
    put = command("put", _put, "store a file as it is (.npy and .safetensors as such, else raw)")
    put.add_argument("file", help="the regular file to store")
    put.add_argument(
        "--prefix", default=None, help="key prefix (default: option datastore.relative_path_prefix)"
    )
    put.add_argument(
        "--codec", type=_codec_name, default=None,
        help="store the file's values in this codec's format instead",
    )  # fmt: skip
    command("rm", _rm, "delete every object under a prefix").add_argument(
        "prefix", help="a key prefix, an object's key, or its reference"
    )
    experiments = command("experiments", _experiments, "list the stored experiments")
    experiments.add_argument(
        "--where", type=_condition, action="append", metavar="COND",
        help="list the runs, of any experiment, whose field meets COND instead, such as "
        "'accuracy > 0.9' or \"model == 'svm'\" (repeat to require several)",
    )  # fmt: skip
    as_json(experiments)
    copy = command("copy", _copy, "copy every object of one datastore to another (same keys)")
    copy.add_argument("source", metavar="SRC_URL", help="the datastore to copy from")
    copy.add_argument("target", metavar="DST_URL", help="the datastore to copy to")
    copy.add_argument(
        "--storage-options", metavar="JSON", help="fsspec options for remote stores (JSON)"
    )
    collect = command("gc", _gc, "remove leftovers of interrupted writes and persists")
    collect.add_argument(
        "--older-than", type=_seconds, default=3600.0, metavar="SECONDS",
        help="only what is older than this (default 3600: writes in progress are younger)",
    )  # fmt: skip
    check = command("verify", _verify, "decode every object; exit 1 if any is damaged")
    check.add_argument(
        "prefix", nargs="?", help="only the objects under this key prefix (default: all)"
    )
    as_json(check)
    moved = command(
        "import-mltraq", _import_mltraq,
        "move an mltraq store (experiments and DataStores) into this one; the old one stays",
    )  # fmt: skip
    moved.add_argument("database_url", metavar="MLTRAQ_DATABASE_URL",
                       help="mltraq's database, such as sqlite:///mltraq.db")  # fmt: skip
    moved.add_argument("datastore_dir", metavar="MLTRAQ_DATASTORE_DIR",
                       help="mltraq's datastore folder, such as mltraq.datastore")  # fmt: skip
    moved.add_argument(
        "--replace", action="store_true",
        help="replace experiments of the same names already stored here",
    )  # fmt: skip
    show = command("show", _show, "show an experiment's fields and runs")
    show.add_argument("experiment", help="the experiment's id or name")
    as_json(show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``typedstore`` command; return its exit code."""
    args = _parser().parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.datastore:
        overrides["datastore.url"] = args.datastore
    if args.database:
        overrides["database.url"] = args.database
    if args.quiet:
        overrides["progress"] = False
    if args.storage_option:
        merged = dict(options.get("datastore.storage_options") or {})
        for key, value in args.storage_option:
            *path, last = key.split(".")
            node = merged
            for part in path:
                # Copied on the way down: the option's own mappings stay as they were.
                child = node.get(part)
                node[part] = dict(child) if isinstance(child, Mapping) else {}
                node = node[part]
            node[last] = value
        overrides["datastore.storage_options"] = merged
    if args.allow_pickle:
        allowed = [*options.get("codecs.pickle.allow"), *args.allow_pickle]
        overrides["codecs.pickle.allow"] = allowed
    try:
        _register_demo_model()
        _import_modules(args.imports)
        with options.ctx(overrides):
            return int(args.run(args, sys.stdout))
    except BrokenPipeError:
        # The reader went away (`typedstore get URL | head`): nothing to report. stdout
        # goes nowhere from now on, or flushing it at exit would fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as for a process ended by SIGPIPE
    except (TypedStoreError, OSError, ValueError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"typedstore: error: {describe(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
