"""DataStore: a dict whose values are also attributes, stored as one object per DataStore."""

from __future__ import annotations

import copy
import json
import reprlib
import threading
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple

import numpy as np

from typedstore import _strictjson
from typedstore.attrdict import AttrAccess
from typedstore.caching import cache_by_identity
from typedstore.codecs.safetensors import (
    Header,
    TensorEntry,
    TensorSource,
    array_bytes,
    decode_tensor,
    encode_tensors,
    read_header,
    read_tensors,
    stored_array,
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
from typedstore.integrity import crc32c, crc32c_each, mismatch
from typedstore.policy import LARGE
from typedstore.protocols import Buffer, Codec, Reader
from typedstore.reference import Reference
from typedstore.registry import CodecRegistry, registry
from typedstore.store import Store, current_store

__all__ = ["DataStore", "DataStoreCodec"]

_KIND = "typedstore.kind"
_ENTRIES = "typedstore.entries"
_VERSION = "typedstore.version"
_METADATA = "__metadata__"


class _EntryInfo(NamedTuple):
    codec: str
    version: int
    tensor: bool


# Marks a value of a lazy DataStore not read yet; never leaves this module.
_PENDING: Any = object()


class _Source(NamedTuple):
    """Where a lazy DataStore's values are: the object, its store and its table."""

    reference: Reference
    store: Store
    tensors: Mapping[str, TensorEntry]
    entries: Mapping[str, _EntryInfo]
    #: Each entry's crc32c (none in containers written with checksums off or before).
    checksums: Mapping[str, int]
    #: The keys of the containers whose entries restored this one (not its own).
    within: frozenset[str] = frozenset()


# The containers whose entries are being decoded: a pickled DataStore in an entry that
# names one of them again is a cycle, which only crafted data holds (a container's key is
# new when it is written, so none of its entries can name it).
_decoding: ContextVar[frozenset[str]] = ContextVar("typedstore_decoding", default=frozenset())


def entry_table(header: Header) -> Mapping[str, _EntryInfo]:
    """Each key's codec, in the DataStore's key order, from a container's header."""
    return _table(header)[0]


def entry_checksums(header: Header) -> Mapping[str, int]:
    """Each key's crc32c, from a container's header (empty if it has none)."""
    return _table(header)[1]


_Table = tuple[Mapping[str, _EntryInfo], Mapping[str, int]]
# An entry table as parsed: each key's codec and (version 3) crc32c.
_Parsed = tuple[dict[str, _EntryInfo], dict[str, int]]


@cache_by_identity
def _table(header: Header) -> _Table:
    metadata, tensors = header.metadata, header.tensors
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
    table, checksums = parse(raw, tensors)
    return MappingProxyType(table), MappingProxyType(checksums)


def _check_bytes_entry(key: str, tensor: TensorEntry) -> None:
    if tensor.dtype != np.uint8 or len(tensor.shape) != 1:
        raise DecodeError(f"datastore: entry {key!r} must be a U8 vector")


def _table_v1(raw: Any, tensors: Mapping[str, TensorEntry]) -> _Parsed:
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
    return table, {}


def _table_v3(raw: Any, tensors: Mapping[str, TensorEntry]) -> _Parsed:
    # Version 3: version 2's table and "crc32c": [checksum of each key's bytes, ...].
    if type(raw) is not dict or raw.keys() != _V3_FIELDS:
        raise DecodeError(f"datastore: the entry table must have exactly {sorted(_V3_FIELDS)}")
    checksums = raw.pop("crc32c")
    table, _ = _table_v2(raw, tensors)
    if (
        type(checksums) is not list
        or len(checksums) != len(table)
        or not set(map(type, checksums)) <= {int}
        or (checksums and not 0 <= min(checksums) <= max(checksums) < 1 << 32)
    ):
        raise DecodeError("datastore: the entry table's crc32c must hold one checksum per key")
    return table, dict(zip(table, checksums, strict=True))


def _table_v2(raw: Any, tensors: Mapping[str, TensorEntry]) -> _Parsed:
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
    return table, {}


_V2_FIELDS = frozenset({"codecs", "keys", "index"})
_V3_FIELDS = _V2_FIELDS | {"crc32c"}
# The format version in the metadata -> how its entry table is read (version 1 wrote no
# version).
_TABLE_PARSERS: Mapping[str | None, Callable[[Any, Mapping[str, TensorEntry]], _Parsed]] = {
    None: _table_v1,
    "1": _table_v1,
    "2": _table_v2,
    "3": _table_v3,
}


class DataStoreCodec:
    """The container format of a DataStore: one safetensors file for all its values.

    Each value is encoded with the codec that the registry of the store in use picks for
    it. Arrays chosen for ``safetensors`` are stored as real tensors; every other value as
    a ``U8`` tensor holding its codec's output. ``__metadata__`` holds ``typedstore.kind =
    datastore``, the format version and ``typedstore.entries``, a JSON table of each key's
    codec, codec version and whether it is a real tensor. One entry can be read without
    the others, and any safetensors tool can list the contents. Containers of every
    earlier version decode.
    """

    name: ClassVar[str] = "datastore"
    version: ClassVar[int] = 3

    @property
    def types(self) -> tuple[type, ...]:
        """Exactly :class:`DataStore`."""
        return (DataStore,)

    def accepts(self, value: object) -> bool:
        """DataStore instances (not subclasses)."""
        return type(value) is DataStore

    def encode(self, value: DataStore) -> Sequence[Buffer]:
        """The container: each value's codec output, in the DataStore's key order, and
        (unless the store's checksums are off) each one's crc32c."""
        store = current_store()
        reg, summed = store.registry, store.settings["datastore.checksum"] is not None
        tensors: dict[str, TensorSource] = {}
        codecs: dict[_EntryInfo, int] = {}
        index: list[int] = []
        checksums: list[int] = []
        source = value._ts_source
        for key, item in value._ts_values.items():
            if type(key) is not str or key == _METADATA:
                raise EncodeError(f"datastore: key {key!r} is not allowed (keys are str)")
            if item is _PENDING and source is not None:
                tensors[key], info, crc = _raw_entry(source, key)
            else:
                tensors[key], info = _encode_entry(reg, key, item)
                crc = -1  # summed below, with the others
            index.append(codecs.setdefault(info, len(codecs)))
            checksums.append(crc)
        table: dict[str, Any] = {
            "codecs": [list(info) for info in codecs],
            "keys": list(tensors),
            "index": index,
        }
        if summed:
            new = [i for i, crc in enumerate(checksums) if crc < 0]
            sums = crc32c_each([_buffers(tensors[key]) for key in (table["keys"][i] for i in new)])
            for i, crc in zip(new, sums, strict=True):
                checksums[i] = crc
            table["crc32c"] = checksums
        metadata = {
            _KIND: "datastore",
            _VERSION: str(self.version) if summed else "2",
            _ENTRIES: json.dumps(table, separators=(",", ":")),
        }
        return encode_tensors(tensors, metadata)

    def decode_from(self, reader: Reader, expected_type: type[Any] | None = None) -> DataStore:
        """As :meth:`decode`, reading arrays straight into their own memory."""
        if reader.size < LARGE:
            return self.decode(reader.read(0, reader.size), expected_type)
        reg = current_store().registry
        header = read_header(reader)
        tensors, table = header.tensors, entry_table(header)
        arrays = [key for key, info in table.items() if info.tensor]
        checked: set[_EntryInfo] = set()
        for key in arrays:
            if table[key] not in checked:  # the entries of a table share a few codecs
                with decoding(f"entry {key!r} (codec {table[key].codec!r})"):
                    _entry_codec(reg, table[key])
                checked.add(table[key])
        # The arrays first, all together (few system calls); then the other values one by
        # one, so that only one of their encodings is in memory at a time.
        values = dict(zip(arrays, read_tensors(reader, [tensors[k] for k in arrays]), strict=True))
        for key, info in table.items():
            if key not in values:
                entry = tensors[key]
                raw = reader.read(entry.start, entry.nbytes)
                if len(raw) != entry.nbytes:
                    raise DecodeError(f"entry {key!r} is truncated")
                values[key] = _decode_entry(reg, key, info, entry, raw)
        return DataStore._of({key: values[key] for key in table})

    def decode(self, data: Buffer, expected_type: type[Any] | None = None) -> DataStore:
        """Every value of the container, each decoded by its own codec."""
        reg = current_store().registry
        view = memoryview(data)
        header = read_header(view)
        tensors = header.tensors
        return DataStore._of(
            {
                key: _decode_entry(reg, key, info, tensors[key], view[tensors[key].start :
                                                                      tensors[key].end])
                for key, info in entry_table(header).items()
            }
        )  # fmt: skip


def _encode_entry(reg: CodecRegistry, key: str, item: Any) -> tuple[TensorSource, _EntryInfo]:
    try:
        codec = reg.for_value(item)
    except NoCodecError as exc:
        exc.add_note(f"datastore: key {key!r}")
        raise
    if codec.name == "safetensors" and type(item) is np.ndarray:
        # A tensor (what version 1 wrote), as it is stored: its checksum is of those bytes.
        return stored_array(item), _EntryInfo(codec.name, 1, True)
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
    version_for = getattr(codec, "version_for", None)
    version = codec.version if version_for is None else version_for(item)
    return chunks, _EntryInfo(codec.name, version, False)


def _entry_codec(reg: CodecRegistry, info: _EntryInfo) -> Codec[Any]:
    """The codec of an entry, checked to read the version that wrote it."""
    try:
        codec = reg.get(info.codec)
    except UnknownCodecError as exc:
        # Inside a container an unknown name is undecodable data, whether it was damaged
        # or written by a codec this installation lacks.
        raise DecodeError(str(exc)) from None
    if info.version > codec.version:
        raise DecodeError(
            f"written by version {info.version} of codec {info.codec!r}; "
            f"this installation has version {codec.version}"
        )
    return codec


def _decode_entry(
    reg: CodecRegistry, key: str, info: _EntryInfo, entry: TensorEntry, data: Buffer
) -> Any:
    """One entry's value from its bytes (``data`` holds exactly the entry)."""
    with decoding(f"entry {key!r} (codec {info.codec!r})"):
        codec = _entry_codec(reg, info)
        if info.tensor:
            return decode_tensor(data, entry._replace(start=0, end=entry.nbytes))
        return codec.decode(data, None)


def _buffers(source: TensorSource) -> Sequence[Buffer]:
    """The bytes an entry is stored as (tensors: as :func:`stored_array` lays them out)."""
    if isinstance(source, np.ndarray):
        return [array_bytes(source)]
    return source  # type: ignore[return-value]  # encoded entries: their chunks


def _raw_entry(source: _Source, key: str) -> tuple[TensorSource, _EntryInfo, int]:
    """An unread entry of a lazy DataStore, copied as stored (never decoded), checked,
    and its crc32c."""
    entry, info = source.tensors[key], source.entries[key]
    out = np.empty(entry.shape if info.tensor else (entry.nbytes,), entry.dtype)
    crc = _read_exactly(source, key, out)
    return (out if info.tensor else [out.data]), info, crc


def _read_exactly(source: _Source, key: str, out: np.ndarray[Any, Any]) -> int:
    """Fill ``out`` with entry ``key``, check it against the entry's crc32c when the
    container has one, and return its crc32c."""
    entry = source.tensors[key]
    if out.nbytes:
        got = source.store.readinto(source.reference.key, entry.start, array_bytes(out))
        if got != entry.nbytes:
            raise DecodeError(f"{source.reference}: entry {key!r} is truncated")
    actual = crc32c(array_bytes(out))
    expected = source.checksums.get(key)
    if expected is not None and actual != expected:
        raise mismatch(f"{source.reference}, entry {key!r}", expected, actual)
    return actual


class DataStore(AttrAccess, MutableMapping[str, Any]):
    """A dict whose values are also attributes, stored as one object behind one reference.

    ``ds.x = 1`` is ``ds["x"] = 1``; a missing attribute raises AttributeError, a missing
    key KeyError. Names of methods (``items``, ``keys``...) stay methods: use
    ``ds["items"]`` for such keys. :meth:`to_url` stores every value in one container
    object (each value with the codec the registry picks for it) and returns its
    reference; :meth:`from_url` loads it back, all at once or lazily: then each value is
    read when first touched, through any method. Pickling a DataStore stores it (unless
    it is unchanged since it was last stored or loaded) and pickles only the reference;
    unpickling loads it lazily.

    A DataStore nested in a DataStore is stored inside the outer container, as an entry
    of codec ``datastore``: the outer one remains one object, and the nested one comes
    back as a DataStore (read whole when its key is first touched).
    """

    __slots__ = ("_ts_lock", "_ts_source", "_ts_store", "_ts_stored", "_ts_values")

    _ts_values: dict[str, Any]
    _ts_source: _Source | None
    _ts_stored: str | None
    _ts_store: Store | None  # the store that holds _ts_stored
    _ts_lock: threading.Lock

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        object.__setattr__(self, "_ts_values", {})
        object.__setattr__(self, "_ts_source", None)
        object.__setattr__(self, "_ts_stored", None)
        object.__setattr__(self, "_ts_store", None)
        object.__setattr__(self, "_ts_lock", threading.Lock())
        self._ts_values.update(*args, **kwargs)

    @classmethod
    def _of(cls, values: dict[str, Any], source: _Source | None = None) -> DataStore:
        """A DataStore of ``values`` (taken, not copied), read from ``source``."""
        result = object.__new__(cls)
        setattr_ = object.__setattr__
        setattr_(result, "_ts_values", values)
        setattr_(result, "_ts_source", source)
        setattr_(result, "_ts_stored", None)
        setattr_(result, "_ts_store", None)
        setattr_(result, "_ts_lock", threading.Lock())
        return result

    # --- the mapping -------------------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        value = self._ts_values[key]
        return self._materialize(key) if value is _PENDING else value

    def __setitem__(self, key: str, value: Any) -> None:
        object.__setattr__(self, "_ts_stored", None)
        self._ts_values[key] = value

    def __delitem__(self, key: str) -> None:
        object.__setattr__(self, "_ts_stored", None)
        del self._ts_values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._ts_values)

    def __reversed__(self) -> Iterator[str]:
        return reversed(self._ts_values)

    def __len__(self) -> int:
        return len(self._ts_values)

    def __contains__(self, key: object) -> bool:
        return key in self._ts_values

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return dict(self.items()) == dict(other.items())

    __hash__ = None  # type: ignore[assignment]

    def popitem(self) -> tuple[str, Any]:
        """Remove and return the last (key, value) pair, as dict.popitem."""
        if not self._ts_values:
            raise KeyError("popitem(): DataStore is empty")
        key = next(reversed(self._ts_values))
        return key, self.pop(key)

    def clear(self) -> None:
        """Remove every value."""
        object.__setattr__(self, "_ts_stored", None)
        self._ts_values.clear()

    def copy(self) -> DataStore:
        """A shallow copy holding every value (read now), not linked to any reference."""
        return DataStore(self.items())

    __copy__ = copy

    def __deepcopy__(self, memo: dict[int, Any]) -> DataStore:
        return DataStore(copy.deepcopy(list(self.items()), memo))

    def __or__(self, other: Mapping[str, Any]) -> DataStore:
        if not isinstance(other, Mapping):
            return NotImplemented
        merged = self.copy()
        merged.update(other)
        return merged

    def __ror__(self, other: Mapping[str, Any]) -> DataStore:
        if not isinstance(other, Mapping):
            return NotImplemented
        merged = DataStore(other)
        merged.update(self)
        return merged

    def __ior__(self, other: Mapping[str, Any]) -> DataStore:
        self.update(other)
        return self

    # --- storing and loading -----------------------------------------------------------------

    def to_url(self, relative_path_prefix: str | None = None, *, store: Store | None = None) -> str:
        """Store the whole DataStore as one object and return its reference URL.

        ``store`` defaults to the store in use (the default store outside a read or write).
        A DataStore unchanged since it was stored (or loaded) under the same prefix in the
        same store is not stored again. Raises NoCodecError naming the key of a value no
        codec accepts.
        """
        store = store or current_store()
        with self._ts_lock:
            stored = self._ts_stored
            holder = self._ts_store
            if (
                stored is not None
                and holder is not None
                and (holder is store or holder.url == store.url)
                and self._unchanged()
            ):
                prefix = Reference.parse(stored).key.rsplit("/", 1)[0]
                if relative_path_prefix in (None, prefix):
                    return stored
            url = store.serialize_write(self, relative_path_prefix, codec="datastore").url
            object.__setattr__(self, "_ts_stored", url)
            object.__setattr__(self, "_ts_store", store)
            source = self._ts_source
            if source is not None and any(v is _PENDING for v in self._ts_values.values()):
                # Values not read yet are read from the new object from now on: the one
                # they came from may go (a persist deletes the generation it replaces).
                fresh = _load_lazy(store, Reference.parse(url), source.within)
                object.__setattr__(self, "_ts_source", fresh._ts_source)
        return url

    @classmethod
    def from_url(cls, url: str, *, lazy: bool = False, store: Store | None = None) -> DataStore:
        """Load a DataStore from its reference (in ``store``, by default the store in use).

        With ``lazy=True`` only the container's header is read now; each value is read
        (just its own bytes) and decoded when first touched. Raises TypeMismatchError for
        a reference that is not a DataStore's, DecodeError for a damaged container.
        """
        ref = Reference.parse(url)
        if ref.codec != DataStoreCodec.name:
            raise TypeMismatchError(f"{ref}: codec {ref.codec!r} does not hold a DataStore")
        store = store or current_store()
        if lazy:
            result = _load_lazy(store, ref, _decoding.get())
        else:
            token = _decoding.set(_decoding.get() | {ref.key})
            try:
                result = store.read_deserialize(ref, DataStore)
            finally:
                _decoding.reset(token)
        object.__setattr__(result, "_ts_store", store)
        object.__setattr__(result, "_ts_stored", ref.url)
        return result

    def load(self) -> DataStore:
        """Read every value not read yet; return self."""
        for key, value in list(self._ts_values.items()):
            if value is _PENDING:
                self._materialize(key)
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
        return self._ts_stored is not None and all(map(_immutable, self._ts_values.values()))

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
                    with source.store.using():
                        value = _decode_entry(source.store.registry, key, info, entry, raw.data)
                finally:
                    _decoding.reset(token)
        self._ts_values[key] = value
        return value

    @reprlib.recursive_repr("DataStore({...})")
    def __repr__(self) -> str:
        shown = ", ".join(f"{key!r}: {_short(value)}" for key, value in self._ts_values.items())
        return f"DataStore({{{shown}}})"


def _immutable(value: Any) -> bool:
    if value is _PENDING or value is None:
        return True
    if type(value) in (bytes, str, int, float, bool, complex):
        return True
    if type(value) in (tuple, frozenset):
        return all(_immutable(item) for item in value)
    return False


def _short(value: Any) -> str:
    if value is _PENDING:
        return "<not loaded>"
    if isinstance(value, np.ndarray) and value.size > 6:
        return f"<{type(value).__name__} {value.dtype} {value.shape}>"
    if isinstance(value, bytes | bytearray) and len(value) > 32:
        return f"<{type(value).__name__} of {len(value)} bytes>"
    text = repr(value)
    return text if len(text) <= 80 else f"<{type(value).__qualname__}: {text[:60]}...>"


def _load_lazy(store: Store, ref: Reference, within: frozenset[str]) -> DataStore:
    with decoding(ref), store.open(ref.key) as reader:
        header = read_header(reader)
        table, checksums = _table(header)
    source = _Source(ref, store, header.tensors, table, checksums, within)
    return DataStore._of(dict.fromkeys(table, _PENDING), source)


def _restore(url: str) -> DataStore:
    """Unpickling: the DataStore behind ``url``, loaded lazily."""
    ref = Reference.parse(url)
    if ref.key in _decoding.get():
        raise DecodeError(f"{ref}: a DataStore entry restores a DataStore that contains it")
    return DataStore.from_url(url, lazy=True)


# The container codec is built in, but it lives here: it needs DataStore, which is above
# the registry in the dependency order.
registry.register(DataStoreCodec())
