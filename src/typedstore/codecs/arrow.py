"""The ``arrow`` codec: tables as Arrow IPC files (the format of Feather v2).

Serves ``pyarrow.Table`` and ``RecordBatch``, ``pandas.DataFrame``, ``Series`` and
``Index``, and ``polars.DataFrame`` and ``Series``. None of these libraries is imported
until a value of theirs is encoded or a stored table is decoded: the registry knows the
classes by their qualified names. The layout is in ``codecs/arrow/FORMAT.md``.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Hashable, Sequence
from typing import Any, ClassVar

from typedstore.codecs import tree
from typedstore.codecs._ipc import declared_size
from typedstore.errors import DecodeError, EncodeError
from typedstore.options import options
from typedstore.policy import COPY_MAX, FOOTER_FIRST_READ, HEADER_FIRST_READ, INFLATE_MAX, LARGE
from typedstore.protocols import Buffer, Reader

__all__ = ["ArrowCodec"]

# The kind of value a file holds, in its footer's custom metadata.
_KIND = b"typedstore.kind"
_NAME = b"typedstore.name"
# A pandas frame's column labels when they are not all str: their typed JSON.
_COLUMNS = b"typedstore.columns"
_SERIES = "__typedstore_series__"
_KINDS = {
    "pyarrow.lib.Table": "pyarrow.Table",
    "pyarrow.lib.RecordBatch": "pyarrow.RecordBatch",
    "pandas.DataFrame": "pandas.DataFrame",
    "pandas.Series": "pandas.Series",
    "polars.dataframe.frame.DataFrame": "polars.DataFrame",
    "polars.series.series.Series": "polars.Series",
}
# Object columns that Arrow gives back as they were, by pandas' inferred kind.
_EXACT_OBJECTS = frozenset({"bytes", "empty", "date", "string"})
_EXTRA = "pip install 'typedstore[arrow]'"


def _kind(value: object) -> str | None:
    cls = type(value)
    if cls.__module__.partition(".")[0] not in ("pyarrow", "pandas", "polars"):
        return None
    kind = _KINDS.get(f"{cls.__module__}.{cls.__qualname__}")
    if kind is None and cls.__module__.startswith("pandas"):
        pandas = sys.modules["pandas"]
        if isinstance(value, pandas.Index):  # RangeIndex, MultiIndex, DatetimeIndex...
            return "pandas.Index"
    return kind


def _pyarrow(action: str, error: type[Exception]) -> Any:
    try:
        import pyarrow
        import pyarrow.ipc
    except ImportError:
        raise error(f"arrow: {action} a table needs pyarrow: {_EXTRA}") from None
    return pyarrow


class ArrowCodec:
    """Tables of pyarrow, pandas and polars as Arrow IPC files, back as the same type.

    pandas frames keep their index (named, MultiIndex, RangeIndex), column labels and
    order, categoricals, time zones, nullable and other extension dtypes and ``attrs``.
    What Arrow cannot give back exactly is refused at write, naming the column: object
    columns of arbitrary Python objects or of mixed types, repeated column labels,
    sparse columns. Reading needs pyarrow (extra ``arrow``), and pandas or
    polars for their values.
    """

    name: ClassVar[str] = "arrow"
    version: ClassVar[int] = 1
    types: ClassVar[tuple[type | str, ...]] = (
        "pyarrow.lib.Table",
        "pyarrow.lib.RecordBatch",
        "pandas.DataFrame",
        "pandas.Series",
        "pandas.Index",
        "polars.dataframe.frame.DataFrame",
        "polars.series.series.Series",
    )

    def accepts(self, value: object) -> bool:
        """Exactly the served classes (any pandas Index)."""
        return _kind(value) is not None

    def encode(self, value: Any) -> Sequence[Buffer]:
        """An Arrow IPC file of the value's columns, its buffers compressed as option
        ``codecs.arrow.compression`` says (by default not: the file shares the columns'
        memory)."""
        pa = _pyarrow("storing", EncodeError)
        kind = _kind(value)
        if kind is None:
            raise EncodeError(f"arrow: {type(value).__qualname__} is not a table")
        metadata = {_KIND: kind.encode()}
        if kind == "pyarrow.RecordBatch":
            schema, batches = value.schema, [value]
        else:
            if kind == "pyarrow.Table":
                table = value
            elif kind.startswith("polars"):
                table = (value.to_frame() if kind == "polars.Series" else value).to_arrow()
            else:
                table, extra = _from_pandas(pa, kind, value)
                metadata.update(extra)
            schema, batches = table.schema, table.to_batches()
        compression = options.get("codecs.arrow.compression")
        write_options = pa.ipc.IpcWriteOptions(compression=compression)
        sink = _Chunks()
        with pa.ipc.new_file(
            pa.PythonFile(sink, mode="w"), schema, metadata=metadata, options=write_options
        ) as writer:
            for batch in batches:
                writer.write_batch(batch)
        if compression is None:
            return sink.chunks()
        data = b"".join(sink.chunks())
        declared = declared_size(_slicer(data), len(data))
        if declared > INFLATE_MAX * len(data):
            raise EncodeError(
                f"arrow: this table compresses {declared // len(data)}-fold, more than the "
                f"{INFLATE_MAX}-fold a reader accepts; set option codecs.arrow.compression "
                "to 'lz4' (which stays below that) or None"
            )
        return [data]

    def decode(self, data: Buffer, expected_type: type[Any] | None = None) -> Any:
        """The table, its columns in fresh memory."""
        pa = _pyarrow("reading", DecodeError)
        return _decode_buffer(pa, pa.py_buffer(bytes(data)))

    def decode_from(self, reader: Reader, expected_type: type[Any] | None = None) -> Any:
        """As :meth:`decode`, reading the file straight into memory Arrow allocated."""
        pa = _pyarrow("reading", DecodeError)
        buffer = pa.allocate_buffer(reader.size)
        if reader.size and reader.readinto(0, memoryview(buffer)) != reader.size:
            raise DecodeError("arrow: the file was truncated while being read")
        return _decode_buffer(pa, buffer)

    def decode_view(self, data: Buffer, expected_type: type[Any] | None = None) -> Any:
        """The table over ``data`` (no copy where the library can share it)."""
        pa = _pyarrow("reading", DecodeError)
        return _decode_buffer(pa, pa.py_buffer(data))

    def decode_columns(
        self, reader: Reader, columns: Sequence[Hashable], expected_type: type[Any] | None = None
    ) -> Any:
        """The table with only ``columns`` (and a pandas frame's index), reading only
        their byte ranges through ``reader``; DecodeError names a column it lacks."""
        pa = _pyarrow("reading", DecodeError)
        file = _ReaderFile(reader)
        _bound(file.read_range, reader.size)
        source = pa.PythonFile(file, mode="r")
        try:
            footer = pa.ipc.open_file(source)
            schema, metadata = footer.schema, footer.metadata or {}
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise DecodeError(f"arrow: not a valid Arrow IPC file: {exc}") from exc
        kind = _text(metadata.get(_KIND, b"pyarrow.Table"))
        if kind not in ("pyarrow.Table", "pyarrow.RecordBatch", "pandas.DataFrame",
                        "polars.DataFrame"):  # fmt: skip
            raise DecodeError(f"arrow: a stored {kind} has no columns to choose from")
        names = schema.names
        wanted = list(dict.fromkeys(columns))
        labels = None
        if kind == "pandas.DataFrame" and _COLUMNS in metadata:
            labels = _load_columns(_library("pandas", kind), _text(metadata[_COLUMNS]))
        fields = [_field_of(labels, label) for label in wanted]
        for label, field in zip(wanted, fields, strict=True):
            if field not in names:
                raise DecodeError(f"arrow: the table has no column {label!r}")
        if kind == "pandas.DataFrame":
            index = (schema.pandas_metadata or {}).get("index_columns", [])
            fields += [name for name in index if isinstance(name, str) and name not in fields]
        options = pa.ipc.IpcReadOptions(included_fields=[names.index(n) for n in fields])
        value = _decode(pa, source, options)
        # The reader gives the columns in the file's order: put them in the caller's.
        got = value.column_names if kind.startswith("pyarrow") else list(value.columns)
        if got == wanted:
            return value
        if kind != "pandas.DataFrame":
            return value.select(wanted)
        # By position: a list of labels True and False would be taken for a mask.
        return value.iloc[:, [got.index(label) for label in wanted]]


def _from_pandas(pa: Any, kind: str, value: Any) -> tuple[Any, dict[bytes, bytes]]:
    """The table of a pandas value, and the footer metadata it needs: the typed JSON of a
    Series' name or of a frame's column labels."""
    pandas = sys.modules["pandas"]
    metadata = {}
    if kind == "pandas.Series":
        metadata[_NAME] = tree.dumps(value.name).encode()
        frame = value.to_frame(name=_SERIES)
    elif kind == "pandas.Index":
        frame = pandas.DataFrame(index=value)
    else:
        frame = value
    labels = list(frame.columns)
    if len(set(labels)) != len(labels):
        raise EncodeError(
            "arrow: column labels must be distinct; rename the repeated ones, e.g. "
            "df.columns = [f'{c}_{i}' for i, c in enumerate(df.columns)]"
        )
    if not _plain_labels(pandas, frame.columns):
        metadata[_COLUMNS] = _dump_columns(pandas, frame.columns).encode()
        # Arrow names fields by str: positions keep them distinct ("1" and 1).
        frame = frame.set_axis([f"{i}" for i in range(len(labels))], axis=1)
    for label, column in zip(labels, frame.items(), strict=True):
        _check_objects(pandas, column[1], f"column {label!r}")
    for level in range(frame.index.nlevels):
        _check_objects(pandas, frame.index.get_level_values(level), f"index level {level}")
    try:
        return pa.Table.from_pandas(frame, preserve_index=None), metadata
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise EncodeError(f"arrow: cannot store this {kind} exactly: {exc}") from exc


def _plain_labels(pandas: Any, columns: Any) -> bool:
    """Labels pyarrow's own metadata gives back as they are: str, in a plain Index."""
    return (
        type(columns) is pandas.Index
        and columns.name is None
        and all(type(label) is str for label in columns)
    )


def _dump_columns(pandas: Any, columns: Any) -> str:
    """The typed JSON of a frame's column index, checked to rebuild exactly."""
    if isinstance(columns, pandas.RangeIndex):
        spec: dict[str, Any] = {"range": (columns.start, columns.stop, columns.step)}
    elif isinstance(columns, pandas.MultiIndex):
        spec = {"tuples": tuple(columns)}
    else:
        spec = {"labels": tuple(columns), "dtype": str(columns.dtype)}
    spec["names"] = tuple(columns.names)
    try:
        text = tree.dumps(spec)
    except EncodeError as exc:
        exc.add_note("arrow: column labels must be values the tree format holds")
        raise
    rebuilt = _load_columns(pandas, text)
    if not (type(rebuilt) is type(columns) and rebuilt.equals(columns)
            and rebuilt.dtype == columns.dtype and rebuilt.names == columns.names):  # fmt: skip
        raise EncodeError(
            f"arrow: column labels of this {type(columns).__name__} ({columns.dtype}) "
            "would not come back exactly; rename them, e.g. "
            "df.columns = [str(c) for c in df.columns]"
        )
    return text


def _load_columns(pandas: Any, text: str) -> Any:
    spec = tree.loads(text)
    try:
        names = list(spec["names"])
        if "range" in spec:
            return pandas.RangeIndex(*spec["range"], name=names[0])
        if "tuples" in spec:
            return pandas.MultiIndex.from_tuples(list(spec["tuples"]), names=names)
        return pandas.Index(list(spec["labels"]), dtype=spec["dtype"], name=names[0])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise DecodeError(f"arrow: the stored column labels are malformed: {exc}") from exc


def _field_of(labels: Any, label: Any) -> str | None:
    """The name of the field that holds a column: the label itself, or its position in
    ``labels`` where a pandas frame's labels are not all str (None if there is none)."""
    if labels is None:
        return label if isinstance(label, str) else None
    try:
        at = labels.get_loc(label)
    except (KeyError, TypeError):
        return None
    if not isinstance(at, int):  # a partial label of a MultiIndex
        raise DecodeError(f"arrow: {label!r} names several columns; name each one")
    return str(at)


def _check_objects(pandas: Any, values: Any, where: str) -> None:
    if values.dtype != object:
        return
    inferred = pandas.api.types.infer_dtype(values, skipna=True)
    if inferred not in _EXACT_OBJECTS:
        raise EncodeError(
            f"arrow: {where} holds Python objects ({inferred}) that Arrow cannot give back "
            "exactly; convert it to a typed column, or store the frame another way"
        )
    if inferred == "string" and values.isna().any():
        raise EncodeError(
            f"arrow: {where} is an object column of strings with missing values, which "
            "would come back as NaN; convert it with .astype('str')"
        )


def _bound(read: Callable[[int, int], bytes], size: int) -> None:
    """Refuse a file whose compressed buffers would decompress to more than
    ``INFLATE_MAX`` times its size, before pyarrow allocates for them."""
    declared = declared_size(read, size)
    if declared > INFLATE_MAX * size:
        raise DecodeError(
            f"arrow: the file's compressed buffers declare {declared} bytes, more than "
            f"{INFLATE_MAX} times its {size} bytes"
        )


def _slicer(data: Any) -> Callable[[int, int], bytes]:
    view = memoryview(data).cast("B")
    return lambda start, length: bytes(view[start : start + length])


def _decode_buffer(pa: Any, buffer: Any) -> Any:
    _bound(_slicer(buffer), buffer.size)
    return _decode(pa, buffer)


def _decode(pa: Any, buffer: Any, options: Any = None) -> Any:
    try:
        reader = pa.ipc.open_file(buffer, options=options)
        metadata = reader.metadata or {}
        kind = metadata.get(_KIND, b"pyarrow.Table").decode()
        batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
        _validate(batches)
        if kind == "pyarrow.RecordBatch" and len(batches) == 1:
            return batches[0]
        table = pa.Table.from_batches(batches, schema=reader.schema)  # of the columns read
    except (pa.ArrowException, OSError, ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"arrow: not a valid Arrow IPC file: {exc}") from exc
    if kind in ("pyarrow.Table", "pyarrow.RecordBatch"):
        return table
    if kind.startswith("polars"):
        polars = _library("polars", kind)
        frame = polars.from_arrow(table)
        return frame.to_series() if kind == "polars.Series" else frame
    if kind.startswith("pandas"):
        _library("pandas", kind)
        try:
            frame = table.to_pandas()
        except (pa.ArrowException, TypeError, ValueError, KeyError) as exc:
            raise DecodeError(f"arrow: cannot rebuild the {kind}: {exc}") from exc
        _restore_objects(table, frame)
        if _COLUMNS in metadata:
            labels = _load_columns(sys.modules["pandas"], _text(metadata[_COLUMNS]))
            try:
                at = [int(name) for name in frame.columns]
                frame.columns = labels if at == list(range(len(labels))) else labels.take(at)
            except (ValueError, IndexError) as exc:
                raise DecodeError(f"arrow: the columns do not match their labels: {exc}") from exc
        if kind == "pandas.Index":
            return frame.index
        if kind == "pandas.Series":
            series = frame[_SERIES]
            series.name = tree.loads(_text(metadata.get(_NAME, b"null")))
            return series
        return frame
    raise DecodeError(f"arrow: unknown table kind {kind!r:.60}")


def _validate(batches: list[Any]) -> None:
    """Check every batch in full (offsets, UTF-8, dictionary indices) before use; a large
    table's columns are checked on every core (pyarrow releases the GIL meanwhile)."""
    columns = []
    for batch in batches:
        batch.validate()  # the batch's own structure: column lengths and types
        columns += batch.columns
    if len(columns) < 2 or sum(batch.nbytes for batch in batches) < LARGE:
        for column in columns:
            column.validate(full=True)
        return
    from concurrent.futures import ThreadPoolExecutor  # slow to import; large tables only

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(lambda column: column.validate(full=True), columns))


def _restore_objects(table: Any, frame: Any) -> None:
    """Object columns of strings come back as pandas' string dtype: make them objects."""
    columns = (table.schema.pandas_metadata or {}).get("columns", [])
    for column in columns:
        name = column.get("name")
        object_column = column.get("numpy_type") == "object" and name in frame.columns
        if object_column and frame[name].dtype != object:
            frame[name] = frame[name].astype(object)


class _Chunks(io.RawIOBase):
    """The file pyarrow writes, as the buffers it writes: column data as views of the
    table's own memory (no copy), the small pieces between joined."""

    def __init__(self) -> None:
        super().__init__()
        self._chunks: list[Buffer] = []
        self._small = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        if view.nbytes <= COPY_MAX:
            self._small += view
        else:
            self._flush()
            self._chunks.append(view)
        return view.nbytes

    def _flush(self) -> None:
        if self._small:
            self._chunks.append(bytes(self._small))
            self._small = bytearray()

    def chunks(self) -> list[Buffer]:
        """Everything written, in order."""
        self._flush()
        return self._chunks


class _ReaderFile(io.RawIOBase):
    """A stored object's reader as the seekable file pyarrow reads ranges from."""

    def __init__(self, reader: Reader) -> None:
        self._reader = reader
        self._position = 0
        # The footer is read in one request (pyarrow reads its length, then the rest),
        # and small reads are kept: the file is opened twice and checked once first.
        self._tail_start = max(reader.size - FOOTER_FIRST_READ, 0)
        self._tail: bytes | None = None
        self._small: dict[tuple[int, int], bytes] = {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._reader.size}
        self._position = base[whence] + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def read_range(self, start: int, length: int) -> bytes:
        """``length`` bytes from ``start``, through the same cache as pyarrow's reads."""
        self.seek(start)
        target = bytearray(length)
        return bytes(target[: self.readinto(target)])

    def readinto(self, buffer: Any) -> int:
        length = min(len(buffer), max(self._reader.size - self._position, 0))
        target = memoryview(buffer).cast("B")[:length]
        key = (self._position, length)
        if self._position >= self._tail_start:
            if self._tail is None:
                self._tail = self._reader.read(self._tail_start, FOOTER_FIRST_READ)
            at = self._position - self._tail_start
            target[:] = self._tail[at : at + length]
            got = length
        elif key in self._small:
            target[:] = self._small[key]
            got = length
        else:
            got = self._reader.readinto(self._position, target)
            if got == length <= HEADER_FIRST_READ:
                self._small[key] = bytes(target)
        self._position += got
        return got


def _text(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise DecodeError(f"arrow: footer metadata is not UTF-8: {exc}") from None


def _library(name: str, kind: str) -> Any:
    try:
        return __import__(name)
    except ImportError:
        raise DecodeError(f"arrow: the stored {kind} needs {name}: pip install {name}") from None
