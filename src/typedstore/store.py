"""Store: a storage, a codec registry and settings; every read and write goes through one.

:func:`default_store` is the store that :data:`typedstore.options` name, built when first
needed and again when they change; it backs ``DataStoreIO``, ``DataStore`` and the
experiments, as a module-level converter backs cattrs' free functions. Build a
:class:`Store` to use another root or registry next to it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, TypeVar, overload

from typedstore import integrity
from typedstore.errors import (
    EncodeError,
    IntegrityError,
    InvalidKeyError,
    NoCodecError,
    NotFoundError,
    TypedStoreError,
    TypeMismatchError,
    UnknownCodecError,
    decode_error,
)
from typedstore.keys import check_key, describe_key, object_name
from typedstore.options import options
from typedstore.policy import LARGE
from typedstore.protocols import (
    Buffer,
    BytesReader,
    Codec,
    MapsMemory,
    NamesLast,
    OpensReaders,
    Reader,
    ReadsInto,
    Storage,
    ZeroCopyCodec,
    byte_view,
)
from typedstore.reference import Reference
from typedstore.registry import CodecRegistry
from typedstore.registry import registry as default_registry
from typedstore.storage import storage_for_url

__all__ = [
    "DEFAULT_PREFIX",
    "SETTINGS",
    "PrefixGuard",
    "Store",
    "current_store",
    "default_store",
    "reserve_prefixes",
]

T = TypeVar("T")

#: The prefix of writes that name none, when option ``datastore.relative_path_prefix``
#: names none either.
DEFAULT_PREFIX = "default"

#: The options a store takes its settings from.
SETTINGS = (
    "datastore.url",
    "datastore.fsync",
    "datastore.storage_options",
    "datastore.checksum",
    "datastore.relative_path_prefix",
)

#: A check of every prefix a caller writes or deletes under; it raises to refuse one.
PrefixGuard = Callable[[str], None]


class Store:
    """A storage, a codec registry and settings: the object every read and write uses.

    ``Store()`` takes its settings from the options as they are now (a snapshot);
    ``url`` and ``settings`` override some of them (keys of :data:`SETTINGS`), and
    ``registry`` replaces the default registry. ``storage`` gives a storage object
    directly instead of ``datastore.url``. ``guards`` is the list of prefix guards to
    use (see :meth:`add_prefix_guard`); guards added to it later apply too. Writes
    return references relative to the store's root. Raises TypeError for unknown
    settings, OptionValueError for bad values.
    """

    __slots__ = ("_checksum", "_default", "_given_storage", "_guards", "_names_last", "_opener",
                 "_prefix", "_reader", "_viewer", "registry", "settings", "storage")  # fmt: skip

    def __init__(
        self,
        url: str | None = None,
        *,
        registry: CodecRegistry | None = None,
        storage: Storage | None = None,
        settings: Mapping[str, Any] | None = None,
        guards: list[PrefixGuard] | None = None,
    ) -> None:
        given = dict(settings or {})
        unknown = set(given) - set(SETTINGS)
        if unknown:
            raise TypeError(f"Store settings are {', '.join(SETTINGS)}; got {sorted(unknown)}")
        if url is not None:
            given["datastore.url"] = url
        with options.ctx(given):  # checks the values as options do
            values = {key: options.get(key) for key in SETTINGS}
        self._given_storage = storage is not None
        if storage is None:
            storage = storage_for_url(
                values["datastore.url"],
                fsync=values["datastore.fsync"],
                storage_options=values["datastore.storage_options"],
            )
        elif isinstance(storage, Storage):
            values["datastore.url"] = storage.url
        else:
            raise TypeError(f"{storage!r} does not implement the Storage protocol")
        #: The settings in force, by option name (read-only).
        self.settings: Mapping[str, Any] = MappingProxyType(values)
        #: Where the objects are.
        self.storage: Storage = storage
        #: The codecs that encode and decode values.
        self.registry: CodecRegistry = registry if registry is not None else default_registry
        self._checksum: str | None = values["datastore.checksum"]
        self._prefix: str = values["datastore.relative_path_prefix"] or DEFAULT_PREFIX
        self._guards = [] if guards is None else guards
        # Capabilities are looked up once: an isinstance check on a runtime protocol costs
        # more than many small reads.
        self._opener: Callable[[str], AbstractContextManager[Reader]] = (
            storage.open if isinstance(storage, OpensReaders) else _RangeReader.over(storage)
        )
        self._viewer: Callable[[str], AbstractContextManager[memoryview]] = (
            storage.open_view
            if isinstance(storage, MapsMemory)
            else lambda key: nullcontext(memoryview(storage.read(key)))
        )
        self._names_last: Callable[[str, Sequence[Buffer], Callable[[], str]], str] | None = (
            storage.write_named if isinstance(storage, NamesLast) else None
        )
        self._reader: Callable[..., int] = (
            storage.readinto if isinstance(storage, ReadsInto) else self._readinto_opened
        )
        # Whether default_store() made it: then it needs not be marked as the store in
        # use, since it is the one current_store() falls back to.
        self._default = guards is _default_guards

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    @property
    def is_default(self) -> bool:
        """Whether :func:`default_store` made this store from the options."""
        return self._default

    def __reduce__(self) -> tuple[Any, ...]:
        # Made again where it is loaded: the default store there, or this one's settings
        # (its storage's absolute URL); a storage object, a registry or guards of its own
        # have state that cannot travel.
        if self._default:
            return (default_store, ())
        if self._given_storage or self.registry is not default_registry or self._guards:
            raise TypeError(
                f"{self!r} has a storage object, a registry or prefix guards of its own, "
                "which cannot be pickled; make stores from settings (Store(url, "
                "settings=...)) to pass them to other processes"
            )
        return (_store_from, ({**self.settings, "datastore.url": self.storage.url},))

    @property
    def url(self) -> str:
        """The storage's URL: where the objects are."""
        return self.storage.url

    @contextmanager
    def using(self) -> Iterator[None]:
        """Inside the block, :func:`current_store` is this store (for values that decode
        or encode DataStores of their own)."""
        token = _current.set(self)
        try:
            yield
        finally:
            _current.reset(token)

    # --- writing ---------------------------------------------------------------------------

    def add_prefix_guard(self, guard: PrefixGuard) -> None:
        """Run ``guard(prefix)`` before every write or delete a caller asks for under a
        prefix; it raises to refuse the prefix."""
        self._guards.append(guard)

    def prefix(self, relative_path_prefix: str | None = None) -> str:
        """The checked prefix of a write (the store's default when None)."""
        prefix = check_key(
            self._prefix if relative_path_prefix is None else relative_path_prefix,
            what="relative_path_prefix",
        )
        for guard in self._guards:
            guard(prefix)
        return prefix

    def write(
        self, data: Buffer, relative_path_prefix: str | None = None, codec: str = "raw"
    ) -> Reference:
        """Store bytes as they are under a new key in the prefix.

        By default they are the object (codec ``raw``). Bytes that already are a file of
        another codec (a ``.safetensors`` or ``.npy`` file) are stored under that codec
        as they are, after decoding them to check that it reads them (DecodeError if
        not), so that reading them gives their values and ``read`` the same bytes.
        """
        try:
            view = memoryview(data)
        except TypeError:
            raise TypeError(
                f"write() takes a bytes-like object, got {type(data).__name__}; "
                "use serialize_write() for other values"
            ) from None
        chosen = self.registry.get(codec)
        if codec == "raw":
            return self._write(chosen, chosen.encode(view), self.prefix(relative_path_prefix))
        flat = byte_view(view)
        decode = chosen.decode_view if isinstance(chosen, ZeroCopyCodec) else chosen.decode
        decode(flat.toreadonly(), None)  # a check only: zero-copy where the codec can
        return self._write(chosen, [flat], self.prefix(relative_path_prefix))

    def serialize_write(
        self,
        obj: Any,
        relative_path_prefix: str | None = None,
        codec: str | Codec[Any] | None = None,
    ) -> Reference:
        """Encode ``obj`` with a codec and store it under a new key in the prefix.

        ``codec`` is a registered codec's name or object; by default the registry picks
        one by the value's type. Raises NoCodecError when the codec refuses the value (or
        none accepts it), EncodeError when encoding fails.
        """
        chosen = self._codec_for(obj, codec)
        prefix = self.prefix(relative_path_prefix)
        token = None if self._default else _current.set(self)
        try:
            chunks = chosen.encode(obj)
        except TypedStoreError:
            raise
        except Exception as exc:
            raise EncodeError(
                f"codec {chosen.name!r} failed to encode a {type(obj).__qualname__}: {exc}"
            ) from exc
        finally:
            if token is not None:
                _current.reset(token)
        return self._write(chosen, chunks, prefix)

    def _write(self, codec: Codec[Any], chunks: Sequence[Buffer], prefix: str) -> Reference:
        params: dict[str, str] = {}
        if self._checksum is None:
            ref = Reference.new(prefix, codec.name)
            self.storage.write(ref.key, chunks)
            return ref
        if self._checksum == "sha256":
            digest = hashlib.sha256()
            for chunk in chunks:
                digest.update(chunk)
            params["sha256"] = digest.hexdigest()
        if self._names_last is not None and _size(chunks) >= LARGE:
            # The checksum is summed on another thread while the bytes are written, and
            # the object is named once both are done.
            running = integrity.summing(chunks)
            name = codec.name
            key = self._names_last(prefix, chunks, lambda: object_name(name, running.result()))
            return Reference(key, name, params)
        ref = Reference.new(prefix, codec.name, params, crc32c=integrity.crc32c_of(chunks))
        self.storage.write(ref.key, chunks)
        return ref

    def _codec_for(self, obj: Any, codec: str | Codec[Any] | None) -> Codec[Any]:
        if codec is None:
            return self.registry.for_value(obj)
        chosen = self.registry.get(codec if isinstance(codec, str) else codec.name)
        if not isinstance(codec, str) and chosen is not codec:
            raise UnknownCodecError(
                f"codec {codec.name!r} is not the one registered under that name; "
                "register it first so that its objects can be read back"
            )
        if not chosen.accepts(obj):
            raise NoCodecError(
                f"codec {chosen.name!r} does not accept a value of type {type(obj).__qualname__}"
            )
        return chosen

    def delete(self, relative_path_prefix: str) -> int:
        """Remove every object under the prefix (or the single object with that key).

        Returns how many objects were removed. An empty prefix is refused.
        """
        try:
            prefix = self.prefix(relative_path_prefix)
        except InvalidKeyError as exc:
            exc.add_note("refusing to delete")
            raise
        return self.storage.delete(prefix)

    # --- reading ---------------------------------------------------------------------------

    def open(self, key: str) -> AbstractContextManager[Reader]:
        """A reader of the object under ``key``, for several reads inside the block."""
        return self._opener(key)

    def readinto(self, key: str, start: int, *buffers: Buffer) -> int:
        """Fill ``buffers`` one after the other from offset ``start`` of the object under
        ``key``; return the bytes read (fewer only at its end)."""
        return self._reader(key, start, *buffers)

    def _readinto_opened(self, key: str, start: int, *buffers: Buffer) -> int:
        with self._opener(key) as reader:
            return reader.readinto(start, *buffers)

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        try:
            self.storage.size(key)
        except NotFoundError:
            return False
        return True

    def children(self, prefix: str) -> list[str]:
        """Names of the objects and folders directly under ``prefix``, sorted."""
        depth = len(check_key(prefix, what="prefix").split("/"))
        return sorted({key.split("/")[depth] for key in self.storage.list(prefix) if
                       key.count("/") >= depth})  # fmt: skip

    def read(self, reference: Reference | str) -> bytes:
        """The stored bytes, whatever the codec, checked against the checksum that the key
        names (or ``sha256=`` in the reference); IntegrityError if they do not match."""
        ref = reference if isinstance(reference, Reference) else Reference.parse(reference)
        data = self.storage.read(ref.key)
        _verify(ref, data)
        return data

    @overload
    def read_deserialize(
        self,
        reference: Reference | str,
        expected_type: type[T],
        *,
        zero_copy: bool = False,
        columns: Sequence[Hashable] | None = None,
    ) -> T: ...
    @overload
    def read_deserialize(
        self,
        reference: Reference | str,
        expected_type: None = None,
        *,
        zero_copy: bool = False,
        columns: Sequence[Hashable] | None = None,
    ) -> Any: ...

    def read_deserialize(
        self,
        reference: Reference | str,
        expected_type: type[Any] | None = None,
        *,
        zero_copy: bool = False,
        columns: Sequence[Hashable] | None = None,
    ) -> Any:
        """Read and decode an object with the codec its reference names.

        See :meth:`typedstore.DataStoreIO.read_deserialize` for ``zero_copy``,
        ``columns`` and the errors raised.
        """
        ref = reference if isinstance(reference, Reference) else Reference.parse(reference)
        codec = self.registry.get(ref.codec)
        token = None if self._default else _current.set(self)
        try:
            # Optional codec capabilities are looked up by name: cheaper than isinstance
            # checks against runtime protocols, on every read.
            decode_view = getattr(codec, "decode_view", None) if zero_copy else None
            if columns is not None:
                value = self._read_columns(ref, codec, columns, expected_type)
            elif decode_view is not None or "sha256" in ref.params:
                # The whole object is hashed or shared: decode from a view of all of it.
                with self._viewer(ref.key) as view:
                    _verify(ref, view)
                    value = (decode_view or codec.decode)(view, expected_type)
            else:
                value = self._read_checked(ref, codec, expected_type)
        except Exception as exc:
            error = decode_error(exc, f"{ref} (codec {ref.codec!r})")
            if error is None:
                raise
            raise error from exc
        finally:
            if token is not None:
                _current.reset(token)
        if expected_type is not None and not isinstance(value, expected_type):
            raise TypeMismatchError(
                f"{ref}: expected {expected_type.__qualname__}, "
                f"codec {ref.codec!r} decoded a {type(value).__qualname__}"
            )
        return value

    def _read_checked(
        self, ref: Reference, codec: Codec[Any], expected_type: type[Any] | None
    ) -> Any:
        """The value, decoded from a reader that checks the object's crc32c as it reads."""
        crc = _expected_crc(ref)
        decode_from = getattr(codec, "decode_from", None)
        with self._opener(ref.key) as opened:
            checked = None if crc is None else integrity.CheckedReader(opened, crc, ref)
            reader = checked or opened
            try:
                if decode_from is not None:
                    value = decode_from(reader, expected_type)
                elif reader.size < LARGE:
                    value = codec.decode(memoryview(reader.read(0, reader.size)), expected_type)
                else:
                    value = _UNREAD
            except Exception as exc:
                if checked is not None:
                    # Damaged bytes often fail to decode first: say what is wrong with them.
                    try:
                        checked.check()
                    except IntegrityError as damage:
                        raise damage from exc
                raise
            if checked is not None and value is not _UNREAD:
                checked.check()
        if value is _UNREAD:
            with self._viewer(ref.key) as view:
                _verify(ref, view)
                value = codec.decode(view, expected_type)
        return value

    def _read_columns(
        self,
        ref: Reference,
        codec: Codec[Any],
        columns: Sequence[Hashable],
        expected_type: type[Any] | None,
    ) -> Any:
        # Only the parts of the object that hold these columns are read, so a checksum of
        # the whole object cannot be checked here.
        decode_columns = _columns_of(codec)
        if isinstance(columns, str):
            raise TypeMismatchError("columns is a sequence of column names, not one name")
        with self._opener(ref.key) as reader:
            return decode_columns(reader, list(columns), expected_type)

_UNREAD: Any = object()


def _columns_of(codec: Codec[Any]) -> Callable[..., Any]:
    decode_columns: Callable[..., Any] | None = getattr(codec, "decode_columns", None)
    if decode_columns is None:
        raise TypeMismatchError(
            f"codec {codec.name!r} stores no columns to choose from; columns= is for tables "
            "(codec 'arrow')"
        )
    return decode_columns


def _size(chunks: Sequence[Buffer]) -> int:
    total = 0
    for chunk in chunks:
        total += byte_view(chunk).nbytes
    return total


def _expected_crc(ref: Reference) -> int | None:
    described = describe_key(ref.key)
    return None if described is None else described.crc32c


def _verify(ref: Reference, data: Buffer) -> None:
    expected = ref.params.get("sha256")
    if expected is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise integrity.mismatch(ref, expected, actual, "sha256")
        return  # content identity checked: the crc32c could say no more
    crc = _expected_crc(ref)
    if crc is not None:
        integrity.check_view(ref, crc, data)


class _RangeReader:
    """A reader for storages that cannot keep an object open: ranged reads by key."""

    __slots__ = ("_key", "_size", "_storage")

    def __init__(self, storage: Storage, key: str) -> None:
        self._storage = storage
        self._key = key
        self._size = -1

    @classmethod
    def over(cls, storage: Storage) -> Callable[[str], AbstractContextManager[Reader]]:
        return lambda key: nullcontext(cls(storage, key))

    @property
    def size(self) -> int:
        if self._size < 0:
            self._size = self._storage.size(self._key)
        return self._size

    def read(self, start: int, length: int) -> bytes:
        return self._storage.read(self._key, start, length)

    def readinto(self, start: int, *buffers: Buffer) -> int:
        total = sum(memoryview(buffer).nbytes for buffer in buffers)
        return BytesReader(self.read(start, total)).readinto(0, *buffers)


# --- the default store -------------------------------------------------------------------

# The store whose read or write is under way: a DataStore inside a value decodes with its
# registry and from its storage.
_current: ContextVar[Store | None] = ContextVar("typedstore_current_store", default=None)
# Guards of every default store (experiments reserve their folders here).
_default_guards: list[PrefixGuard] = []
_default: tuple[int, Mapping[str, Any], str | None, Store] | None = None


def _store_from(settings: dict[str, Any]) -> Store:
    return Store(settings=settings)


def default_store() -> Store:
    """The store that the options name now (built again after they change)."""
    global _default
    generation, overrides = options.revision()
    last = _default
    if (
        last is not None
        and last[0] == generation
        and last[1] is overrides
        and (last[2] is None or last[2] == os.getcwd())
    ):
        return last[3]
    store = Store(guards=_default_guards)
    url = store.settings["datastore.url"]
    # A relative path names another place after a chdir.
    relative = not os.path.isabs(url) and "://" not in url
    _default = (generation, overrides, os.getcwd() if relative else None, store)
    return store


def current_store() -> Store:
    """The store of the read or write under way, else :func:`default_store`."""
    return _current.get() or default_store()


def reserve_prefixes(guard: PrefixGuard) -> None:
    """Add ``guard`` to the prefix guards of every default store (see
    :meth:`Store.add_prefix_guard`)."""
    _default_guards.append(guard)
