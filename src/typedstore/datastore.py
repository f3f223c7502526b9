"""DataStore: a dict whose values are also attributes, stored as one object per DataStore."""

from __future__ import annotations

import copy
import json
import reprlib
import threading
from collections import OrderedDict
from collections.abc import Callable, ItemsView, Iterator, Mapping, Sequence, ValuesView
from contextvars import ContextVar
from typing import Any, ClassVar, NamedTuple

import attrs
import numpy as np

from typedstore import _strictjson
from typedstore.attrdict import AttrDict
from typedstore.codec import Buffer, Codec, Reader
from typedstore.codecs.safetensors import (
    TensorEntry,
    TensorSource,
    _parse_header,
    decode_tensor,
    encode_tensors,
    header_bytes,
    header_bytes_from,
    read_tensors,
)
from typedstore.errors import (
    DecodeError,
    EncodeError,
    NoCodecError,
    TypedStoreError,
    TypeMismatchError,
    UnknownCodecError,
    decoding,
)
from typedstore.io import DataStoreIO, current_storage
from typedstore.reference import Reference
from typedstore.registry import CodecRegistry, registry
from typedstore.storage import Storage

__all__ = ["DataStore", "DataStoreCodec"]

_KIND = "typedstore.kind"
_ENTRIES = "typedstore.entries"
_VERSION = "typedstore.version"
_METADATA = "__metadata__"


class _EntryInfo(NamedTuple):
    codec: str
    version: int
    tensor: bool


class _Unloaded:
    """Stands in a lazy DataStore for a value not read yet."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<not loaded>"


_UNLOADED = _Unloaded()


@attrs.frozen
class _Source:
    """Where a lazy DataStore's values are: the object, its storage and its table."""

    reference: Reference
    storage: Storage
    tensors: Mapping[str, TensorEntry]
    entries: Mapping[str, _EntryInfo]
    #: The keys of the containers whose entries restored this one (not its own).
    within: frozenset[str] = frozenset()


# The containers whose entries are being decoded: a pickled DataStore in an entry that
# names one of them again is a cycle, which only crafted data holds (a container's key is
# new when it is written, so none of its entries can name it).
_decoding: ContextVar[frozenset[str]] = ContextVar("typedstore_decoding", default=frozenset())


def entry_table(
    metadata: Mapping[str, str], tensors: Mapping[str, TensorEntry]
) -> dict[str, _EntryInfo]:
    """Each key's codec, in the DataStore's key order, from a container's metadata."""
    if metadata.get(_KIND) != "datastore" or _ENTRIES not in metadata:
        raise DecodeError("datastore: not a DataStore container (metadata missing)")
    parse = _TABLE_PARSERS.get(metadata.get(_VERSION))
    if parse is None:
        raise DecodeError(
            f"datastore: container format version {metadata[_VERSION]!r} is not one this "
            f"installation reads (1 to {DataStoreCodec.version})"
        )
    try:
        raw = _strictjson.loads(metadata[_ENTRIES])
    except (ValueError, RecursionError) as exc:
        raise DecodeError(f"datastore: entry table is not valid JSON: {exc}") from exc
    return parse(raw, tensors)


_Layout = tuple[Mapping[str, TensorEntry], Mapping[str, _EntryInfo]]


def _layout(header: bytes, total: int) -> _Layout:
    """The checked tensors and entry table of a container, from its header's bytes (the
    ``N`` bytes after the length) and its size. The result is shared: never change it."""
    cacheable = len(header) <= _CACHED_LAYOUT_MAX
    if cacheable:
        with _layouts_lock:
            cached = _layouts.get((header, total))
            if cached is not None:
                _layouts.move_to_end((header, total))
                return cached
    # Not through parse_header: its own cache of small headers would hold them twice.
    tensors, metadata = _parse_header(header, total)
    layout = (tensors, entry_table(metadata, tensors))
    if cacheable:
        global _layouts_size
        with _layouts_lock:
            if (header, total) not in _layouts:
                _layouts[header, total] = layout
                _layouts_size += len(header)
                while _layouts_size > _CACHED_LAYOUTS_BYTES:
                    (old, _), _ = _layouts.popitem(last=False)
                    _layouts_size -= len(old)
    return layout


# Containers of one layout (keys, codecs, dtypes, shapes) have equal headers, byte for
# byte: the checkpoints of one model, a run's results read again. Parsing and checking
# the header is most of the cost of a lazy open (about 0.5 ms for 100 entries), and the
# result depends on nothing but the header's bytes and the file's size, so recent layouts
# are kept: headers up to 64 KiB, up to 256 KiB of headers in all (the least recently
# used go first; about 1.5 MB with what was parsed from them, measured with tracemalloc).
_CACHED_LAYOUT_MAX = 64 << 10
_CACHED_LAYOUTS_BYTES = 256 << 10
_layouts: OrderedDict[tuple[bytes, int], _Layout] = OrderedDict()
_layouts_size = 0
_layouts_lock = threading.Lock()


def _check_bytes_entry(key: str, tensor: TensorEntry) -> None:
    if tensor.dtype != np.uint8 or len(tensor.shape) != 1:
        raise DecodeError(f"datastore: entry {key!r} must be a U8 vector")


def _table_v1(raw: Any, tensors: Mapping[str, TensorEntry]) -> dict[str, _EntryInfo]:
    # Version 1: key -> {"codec": name, "version": int, "tensor": bool}.
    if not isinstance(raw, dict) or set(raw) != set(tensors):
        raise DecodeError("datastore: the entry table does not match the tensors")
    table: dict[str, _EntryInfo] = {}
    for key, info in raw.items():
        if (
            type(info) is not dict
            or len(info) != 3
            or type(info.get("codec")) is not str
            or type(info.get("version")) is not int
            or type(info.get("tensor")) is not bool
        ):
            raise DecodeError(f"datastore: entry {key!r} has invalid metadata")
        if not info["tensor"]:
            _check_bytes_entry(key, tensors[key])
        table[key] = _EntryInfo(info["codec"], info["version"], info["tensor"])
    return table


def _table_v2(raw: Any, tensors: Mapping[str, TensorEntry]) -> dict[str, _EntryInfo]:
    # Version 2: {"codecs": [[name, version, tensor], ...], "keys": [key, ...],
    # "index": [codec of each key, ...]}. Runs on every open, lazy ones too, so it
    # checks whole lists at once where it can instead of a loop per entry.
    if type(raw) is not dict or raw.keys() != _V2_FIELDS:
        raise DecodeError(f"datastore: the entry table must have exactly {sorted(_V2_FIELDS)}")
    codecs, keys, index = raw["codecs"], raw["keys"], raw["index"]
    if type(codecs) is not list or type(keys) is not list or type(index) is not list:
        raise DecodeError("datastore: the entry table's codecs, keys and index must be lists")
    infos: list[_EntryInfo] = []
    for item in codecs:
        if (
            type(item) is not list
            or len(item) != 3
            or type(item[0]) is not str
            or type(item[1]) is not int
            or type(item[2]) is not bool
        ):
            raise DecodeError(f"datastore: invalid codec in the entry table: {item!r:.80}")
        infos.append(_EntryInfo(*item))
    try:
        # Equal sets of equal length: the keys are the tensors' names, each once.
        matches = len(keys) == len(tensors) and set(keys) == tensors.keys()
    except TypeError:  # an unhashable key
        matches = False
    if not matches:
        raise DecodeError("datastore: the entry table does not match the tensors")
    if len(index) != len(keys) or not set(map(type, index)) <= {int}:
        raise DecodeError("datastore: the entry table's index must hold one int per key")
    if index and not 0 <= min(index) <= max(index) < len(infos):
        raise DecodeError("datastore: the entry table's index names a codec it does not list")
    table = dict(zip(keys, map(infos.__getitem__, index), strict=True))
    if not all(info.tensor for info in infos):
        for key, info in table.items():
            if not info.tensor:
                _check_bytes_entry(key, tensors[key])
    return table


_V2_FIELDS = frozenset({"codecs", "keys", "index"})
# The format version in the metadata -> how its entry table is read (version 1 wrote no
# version).
_TABLE_PARSERS: Mapping[
    str | None, Callable[[Any, Mapping[str, TensorEntry]], dict[str, _EntryInfo]]
] = {None: _table_v1, "1": _table_v1, "2": _table_v2}


class DataStoreCodec:
    """The container format of a DataStore: one safetensors file for all its values.

    Each value is encoded with the codec its registry picks for it. Arrays chosen for
    ``safetensors`` are stored as real tensors; every other value as a ``U8`` tensor holding
    its codec's output. ``__metadata__`` holds ``typedstore.kind = datastore``, the format
    version and ``typedstore.entries``, a JSON table of each key's codec, codec version and
    whether it is a real tensor. One entry can be read without the others, and any
    safetensors tool can list the contents. Containers of every earlier version decode.
    """

    name: ClassVar[str] = "datastore"
    version: ClassVar[int] = 2

    def __init__(self, registry: CodecRegistry) -> None:
        self._registry = registry

    @property
    def types(self) -> tuple[type, ...]:
        """Exactly :class:`DataStore`."""
        return (DataStore,)

    def accepts(self, value: object) -> bool:
        """DataStore instances (not subclasses)."""
        return type(value) is DataStore

    def encode(self, value: DataStore) -> Sequence[Buffer]:
        """The container: each value's codec output, in the DataStore's key order."""
        tensors: dict[str, TensorSource] = {}
        codecs: dict[_EntryInfo, int] = {}
        index: list[int] = []
        source = value._ts_source
        for key in dict.keys(value):
            if type(key) is not str or key == _METADATA:
                raise EncodeError(f"datastore: key {key!r} is not allowed (keys are str)")
            item = dict.__getitem__(value, key)
            if item is _UNLOADED and source is not None:
                tensors[key], info = _raw_entry(source, key)
            else:
                tensors[key], info = self._encode_entry(key, item)
            index.append(codecs.setdefault(info, len(codecs)))
        table = {"codecs": [list(info) for info in codecs], "keys": list(tensors), "index": index}
        metadata = {
            _KIND: "datastore",
            _VERSION: str(self.version),
            _ENTRIES: json.dumps(table, separators=(",", ":")),
        }
        return encode_tensors(tensors, metadata)

    def _encode_entry(self, key: str, item: Any) -> tuple[TensorSource, _EntryInfo]:
        try:
            codec = self._registry.for_value(item)
        except NoCodecError as exc:
            exc.add_note(f"datastore: key {key!r}")
            raise
        if codec.name == "safetensors" and type(item) is np.ndarray:
            return item, _EntryInfo(codec.name, codec.version, True)
        try:
            chunks = codec.encode(item)
        except TypedStoreError as exc:
            exc.add_note(f"datastore: key {key!r}")
            raise
        except Exception as exc:
            raise EncodeError(
                f"datastore: key {key!r}: codec {codec.name!r} failed to encode a "
                f"{type(item).__qualname__}: {exc}"
            ) from exc
        return chunks, _EntryInfo(codec.name, codec.version, False)

    def decode_from(self, reader: Reader, expected_type: type[Any] | None = None) -> DataStore:
        """As :meth:`decode`, reading arrays straight into their own memory."""
        if reader.size <= _READ_WHOLE_MAX:
            return self.decode(reader.read(0, reader.size), expected_type)
        tensors, table = _layout(header_bytes_from(reader), reader.size)
        arrays = [key for key, info in table.items() if info.tensor]
        checked: set[_EntryInfo] = set()
        for key in arrays:
            info = table[key]
            if info not in checked:  # the entries of a table share a few codecs
                _entry_codec(self._registry, key, info)
                checked.add(info)
        # The arrays first, all together (few system calls); then the other values one by
        # one, so that only one of their encodings is in memory at a time.
        values = dict(zip(arrays, read_tensors(reader, [tensors[k] for k in arrays]), strict=True))
        result = DataStore()
        if len(values) == len(table):  # only arrays: already in the table's order
            dict.update(result, values)
            return result
        for key, info in table.items():
            if key not in values:
                entry = tensors[key]
                raw = reader.read(entry.start, entry.nbytes)
                if len(raw) != entry.nbytes:
                    raise DecodeError(f"entry {key!r} is truncated")
                values[key] = _decode_entry(self._registry, key, info, entry, raw)
            dict.__setitem__(result, key, values[key])
        return result

    def decode(self, data: Buffer, expected_type: type[Any] | None = None) -> DataStore:
        """Every value of the container, each decoded by its own codec."""
        view = memoryview(data)
        tensors, table = _layout(header_bytes(view), view.nbytes)
        result = DataStore()
        for key, info in table.items():
            entry = tensors[key]
            dict.__setitem__(
                result,
                key,
                _decode_entry(self._registry, key, info, entry, view[entry.start : entry.end]),
            )
        return result


# Containers up to this size are read with one call and decoded from memory; larger ones
# a tensor at a time, straight into each array.
_READ_WHOLE_MAX = 1 << 20


def _entry_codec(reg: CodecRegistry, key: str, info: _EntryInfo) -> Codec[Any]:
    """The codec of an entry, checked to read the version that wrote it."""
    try:
        codec = reg.get(info.codec)
    except UnknownCodecError as exc:
        # Inside a container an unknown name is undecodable data, whether it was damaged
        # or written by a codec this installation lacks.
        raise DecodeError(f"entry {key!r}: {exc}") from None
    if info.version > codec.version:
        raise DecodeError(
            f"entry {key!r} was written by version {info.version} of codec {info.codec!r}; "
            f"this installation has version {codec.version}"
        )
    return codec


def _decode_entry(
    reg: CodecRegistry, key: str, info: _EntryInfo, entry: TensorEntry, data: Buffer
) -> Any:
    """One entry's value from its bytes (``data`` holds exactly the entry)."""
    codec = _entry_codec(reg, key, info)
    with decoding(f"entry {key!r} (codec {info.codec!r})"):
        if info.tensor:
            return decode_tensor(data, entry._replace(start=0, end=entry.nbytes))
        return codec.decode(data, None)


def _raw_entry(source: _Source, key: str) -> tuple[TensorSource, _EntryInfo]:
    """An unread entry of a lazy DataStore, copied as stored (never decoded)."""
    entry = source.tensors[key]
    out = np.empty(entry.shape if source.entries[key].tensor else (entry.nbytes,), entry.dtype)
    _read_exactly(source, key, out)
    return (out if source.entries[key].tensor else [out.data]), source.entries[key]


def _read_exactly(source: _Source, key: str, out: np.ndarray[Any, Any]) -> None:
    entry = source.tensors[key]
    if out.nbytes:
        # A fresh array is C-contiguous: storages take its memory as it is, with no flat
        # view to make first.
        got = source.storage.readinto(source.reference.key, entry.start, out.data)
        if got != entry.nbytes:
            raise DecodeError(f"{source.reference}: entry {key!r} is truncated")


class DataStore(AttrDict):
    """A dict whose values are also attributes, stored as one object behind one reference.

    ``ds.x = 1`` is ``ds["x"] = 1``; a missing attribute raises AttributeError, a missing
    key KeyError. :meth:`to_url` stores every value in one container object (each value
    with the codec the registry picks for it) and returns its reference;
    :meth:`from_url` loads it back, all at once or lazily. Pickling a DataStore stores it
    (unless it is unchanged since it was last stored or loaded) and pickles only the
    reference; unpickling loads it lazily.

    A DataStore nested in a DataStore is stored inside the outer container, as an entry
    of codec ``datastore``: the outer one remains one object, and the nested one comes
    back as a DataStore (read whole when its key is first touched).
    """

    __slots__ = ("_ts_lock", "_ts_source", "_ts_store", "_ts_stored")

    _ts_source: _Source | None
    _ts_stored: str | None
    _ts_store: str | None  # the storage URL of the store that holds _ts_stored
    _ts_lock: threading.Lock

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        object.__setattr__(self, "_ts_source", None)
        object.__setattr__(self, "_ts_stored", None)
        object.__setattr__(self, "_ts_store", None)
        object.__setattr__(self, "_ts_lock", threading.Lock())
        super().__init__(*args, **kwargs)

    # --- reads materialize lazy values ----------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        value = dict.__getitem__(self, key)
        return self._materialize(key) if value is _UNLOADED else value

    def get(self, key: str, default: Any = None) -> Any:
        """``ds[key]`` if present, else ``default``."""
        try:
            return self[key]
        except KeyError:
            return default

    def values(self) -> ValuesView[Any]:  # type: ignore[override]
        """A view of the values; a lazy DataStore reads each as it is reached."""
        return ValuesView(self)

    def items(self) -> ItemsView[str, Any]:  # type: ignore[override]
        """A view of the (key, value) pairs; lazy values are read as they are reached."""
        return ItemsView(self)

    def __iter__(self) -> Iterator[str]:
        # Overriding __iter__ makes dict(ds) and {**ds} go through __getitem__.
        return dict.__iter__(self)

    def __eq__(self, other: object) -> bool:
        self.load()
        if isinstance(other, DataStore):
            other.load()
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]

    def __or__(self, other: Any) -> DataStore:  # type: ignore[override]
        merged = self.copy()
        merged.update(other)
        return merged

    def copy(self) -> DataStore:
        """A shallow copy holding every value (read now), not linked to any reference."""
        return DataStore(self.items())

    def __copy__(self) -> DataStore:
        return self.copy()

    def __deepcopy__(self, memo: dict[int, Any]) -> DataStore:
        return DataStore(copy.deepcopy(list(self.items()), memo))

    # --- writes mark the DataStore as changed ------------------------------------------------

    def __setitem__(self, key: str, value: Any) -> None:
        object.__setattr__(self, "_ts_stored", None)
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: str) -> None:
        object.__setattr__(self, "_ts_stored", None)
        dict.__delitem__(self, key)

    def update(self, *args: Any, **kwargs: Any) -> None:
        """As dict.update; values of a lazy DataStore given as argument are read."""
        object.__setattr__(self, "_ts_stored", None)
        for key, value in dict(*args, **kwargs).items():
            dict.__setitem__(self, key, value)

    def __ior__(self, other: Any) -> DataStore:  # type: ignore[override]
        self.update(other)
        return self

    def setdefault(self, key: str, default: Any = None) -> Any:
        """As dict.setdefault."""
        if key in self:
            return self[key]
        self[key] = default
        return default

    def pop(self, key: str, *default: Any) -> Any:
        """As dict.pop."""
        if key not in self:
            if default:
                return default[0]
            raise KeyError(key)
        value = self[key]
        del self[key]
        return value

    def popitem(self) -> tuple[str, Any]:
        """As dict.popitem."""
        key = next(reversed(dict.keys(self)))
        return key, self.pop(key)

    def clear(self) -> None:
        """As dict.clear."""
        object.__setattr__(self, "_ts_stored", None)
        dict.clear(self)

    # --- storing and loading -----------------------------------------------------------------

    def to_url(self, relative_path_prefix: str | None = None) -> str:
        """Store the whole DataStore as one object and return its reference URL.

        A DataStore unchanged since it was stored (or loaded) under the same prefix, in the
        store that option ``datastore.url`` names now, is not stored again. Raises
        NoCodecError naming the key of a value no codec accepts.
        """
        with self._ts_lock:
            stored = self._ts_stored
            here = current_storage().url
            if stored is not None and self._ts_store == here and self._unchanged():
                prefix = Reference.parse(stored).key.rsplit("/", 1)[0]
                if relative_path_prefix in (None, prefix):
                    return stored
            url = DataStoreIO.serialize_write(self, relative_path_prefix, codec="datastore").url
            object.__setattr__(self, "_ts_stored", url)
            object.__setattr__(self, "_ts_store", here)
        return url

    @classmethod
    def from_url(cls, url: str, *, lazy: bool = False) -> DataStore:
        """Load a DataStore from its reference.

        With ``lazy=True`` only the container's header is read now; each value is read
        (just its own bytes) and decoded when first touched. Raises TypeMismatchError for
        a reference that is not a DataStore's, DecodeError for a damaged container.
        """
        ref = Reference.parse(url)
        if ref.codec != DataStoreCodec.name:
            raise TypeMismatchError(f"{ref}: codec {ref.codec!r} does not hold a DataStore")
        if lazy:
            result = _load_lazy(ref, _decoding.get())
        else:
            token = _decoding.set(_decoding.get() | {ref.key})
            try:
                result = DataStoreIO(ref).read_deserialize(DataStore)
            finally:
                _decoding.reset(token)
            object.__setattr__(result, "_ts_store", current_storage().url)
        object.__setattr__(result, "_ts_stored", ref.url)
        return result

    def load(self) -> DataStore:
        """Read every value not read yet; return self."""
        for key in dict.keys(self):
            self[key]
        return self

    @property
    def reference(self) -> str | None:
        """The reference of the stored object while the DataStore is unchanged, else None."""
        return self._ts_stored if self._unchanged() else None

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (self.to_url(),))

    def _unchanged(self) -> bool:
        # Values read back may have been changed in place; only values that cannot change
        # (not read yet, or immutable) let the stored object stand for the DataStore.
        return self._ts_stored is not None and all(
            _immutable(dict.__getitem__(self, key)) for key in dict.keys(self)
        )

    def _materialize(self, key: str) -> Any:
        source = self._ts_source
        if source is None:
            raise KeyError(key)
        info = source.entries[key]
        entry = source.tensors[key]
        with decoding(source.reference):
            if info.tensor:
                value: Any = np.empty(entry.shape, entry.dtype)
                _read_exactly(source, key, value)
            else:
                raw = np.empty(entry.nbytes, np.uint8)
                _read_exactly(source, key, raw)
                token = _decoding.set(source.within | {source.reference.key})
                try:
                    value = _decode_entry(registry, key, info, entry, raw.data)
                finally:
                    _decoding.reset(token)
        dict.__setitem__(self, key, value)
        return value

    @reprlib.recursive_repr("DataStore({...})")
    def __repr__(self) -> str:
        shown = ", ".join(
            f"{key!r}: {_short(dict.__getitem__(self, key))}" for key in dict.keys(self)
        )
        return f"DataStore({{{shown}}})"


def _immutable(value: Any) -> bool:
    if value is _UNLOADED or value is None:
        return True
    if type(value) in (bytes, str, int, float, bool, complex):
        return True
    if type(value) in (tuple, frozenset):
        return all(_immutable(item) for item in value)
    return False


def _short(value: Any) -> str:
    if isinstance(value, np.ndarray) and value.size > 6:
        return f"<{type(value).__name__} {value.dtype} {value.shape}>"
    if isinstance(value, bytes | bytearray) and len(value) > 32:
        return f"<{type(value).__name__} of {len(value)} bytes>"
    text = repr(value)
    return text if len(text) <= 80 else f"<{type(value).__qualname__}: {text[:60]}...>"


def _load_lazy(ref: Reference, within: frozenset[str]) -> DataStore:
    storage = current_storage()
    # One open for the whole header (its length and its bytes: most often one read).
    with decoding(ref), storage.open_reader(ref.key) as reader:
        tensors, table = _layout(header_bytes_from(reader), reader.size)
    result = DataStore(dict.fromkeys(table, _UNLOADED))
    object.__setattr__(result, "_ts_source", _Source(ref, storage, tensors, table, within))
    object.__setattr__(result, "_ts_store", storage.url)
    return result


def _restore(url: str) -> DataStore:
    """Unpickling: the DataStore behind ``url``, loaded lazily."""
    ref = Reference.parse(url)
    if ref.key in _decoding.get():
        raise DecodeError(f"{ref}: a DataStore entry restores a DataStore that contains it")
    return DataStore.from_url(url, lazy=True)


# The container codec is built in, but it lives here: it needs DataStore, which is above
# the registry in the dependency order.
registry._add(DataStoreCodec(registry), 0, "built-in")
