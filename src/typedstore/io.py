"""DataStoreIO: write, serialize, read and delete single stored objects."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, overload

from typedstore.codec import Buffer, Codec
from typedstore.errors import (
    EncodeError,
    IntegrityError,
    InvalidKeyError,
    NoCodecError,
    TypedStoreError,
    TypeMismatchError,
    UnknownCodecError,
    decode_error,
)
from typedstore.keys import check_key, new_object_key
from typedstore.options import options
from typedstore.reference import Reference
from typedstore.registry import CodecRegistry, registry
from typedstore.storage import Storage, storage_for_url

__all__ = ["DEFAULT_PREFIX", "DataStoreIO", "add_prefix_guard", "current_storage"]

T = TypeVar("T")

# Codecs that cannot decode from storage get objects below this size read whole; larger
# ones memory-mapped.
_STREAM_MIN = 1 << 20
_UNREAD = object()

#: The prefix used when neither the call nor option ``datastore.relative_path_prefix``
#: names one.
DEFAULT_PREFIX = "default"


def current_storage() -> Storage:
    """The storage named by option ``datastore.url`` (with ``datastore.fsync`` and
    ``datastore.storage_options``)."""
    global _current
    # Every read and write asks: the answer is kept until an option changes (or, for a
    # relative path, the current directory).
    generation, overrides = options._revision()
    last = _current
    if (
        last is not None
        and last[0] == generation
        and last[1] is overrides
        and (last[2] is None or last[2] == os.getcwd())
    ):
        return last[3]
    url = options.get("datastore.url")
    storage = storage_for_url(
        url,
        fsync=options.get("datastore.fsync"),
        storage_options=options.get("datastore.storage_options"),
    )
    relative = not os.path.isabs(url) and "://" not in url
    _current = (generation, overrides, os.getcwd() if relative else None, storage)
    return storage


_current: tuple[int, Mapping[str, Any], str | None, Storage] | None = None


#: Checks run on every prefix a caller gives DataStoreIO; each raises to refuse it.
#: Experiments add one so that nobody writes into an experiment's folder by hand.
_prefix_guards: list[Callable[[str], None]] = []


def add_prefix_guard(guard: Callable[[str], None]) -> None:
    """Run ``guard(prefix)`` before every DataStoreIO write or delete; it raises to refuse."""
    _prefix_guards.append(guard)


def _prefix(relative_path_prefix: str | None) -> str:
    if relative_path_prefix is None:
        relative_path_prefix = options.get("datastore.relative_path_prefix") or DEFAULT_PREFIX
    prefix = check_key(relative_path_prefix, what="relative_path_prefix")
    for guard in _prefix_guards:
        guard(prefix)
    return prefix


class DataStoreIO:
    """One stored object, addressed by its reference.

    Create one from a reference URL to read it, or with :meth:`write` /
    :meth:`serialize_write` to store a value. Objects live in the storage named by option
    ``datastore.url``; references are relative to it, so a store can be moved.
    """

    __slots__ = ("_reference",)

    def __init__(self, url: str | Reference) -> None:
        self._reference = url if isinstance(url, Reference) else Reference.parse(url)

    def __repr__(self) -> str:
        return f"DataStoreIO({self.url!r})"

    @property
    def reference(self) -> Reference:
        """The parsed reference."""
        return self._reference

    @property
    def url(self) -> str:
        """The reference URL, ``datastore:///<prefix>/<id>?codec=<name>``."""
        return self._reference.url

    @classmethod
    def write(cls, data: Buffer, relative_path_prefix: str | None = None) -> DataStoreIO:
        """Store bytes as they are (codec ``raw``) under a new key in the prefix."""
        try:
            view = memoryview(data)
        except TypeError:
            raise TypeError(
                f"write() takes a bytes-like object, got {type(data).__name__}; "
                "use serialize_write() for other values"
            ) from None
        codec = registry.get("raw")
        return cls._store(codec, codec.encode(view), _prefix(relative_path_prefix))

    @classmethod
    def serialize_write(
        cls,
        obj: Any,
        relative_path_prefix: str | None = None,
        codec: str | Codec[Any] | None = None,
    ) -> DataStoreIO:
        """Encode ``obj`` with a codec and store it under a new key in the prefix.

        ``codec`` is a registered codec's name or object; by default the registry picks
        one by the value's type. Raises NoCodecError when the codec refuses the value (or
        none accepts it), EncodeError when encoding fails.
        """
        chosen = _resolve_codec(obj, codec, registry)
        prefix = _prefix(relative_path_prefix)
        try:
            chunks = chosen.encode(obj)
        except TypedStoreError:
            raise
        except Exception as exc:
            raise EncodeError(
                f"codec {chosen.name!r} failed to encode a {type(obj).__qualname__}: {exc}"
            ) from exc
        return cls._store(chosen, chunks, prefix)

    @classmethod
    def _store(cls, codec: Codec[Any], chunks: Sequence[Buffer], prefix: str) -> DataStoreIO:
        key = new_object_key(prefix)
        if options.get("datastore.checksum") == "sha256":
            digest = hashlib.sha256()
            for chunk in chunks:
                digest.update(chunk)
            current_storage().write(key, chunks)
            return cls(Reference(key=key, codec=codec.name, params={"sha256": digest.hexdigest()}))
        current_storage().write(key, chunks)
        # The key is fresh and valid, the name was checked when the codec was registered.
        return cls(Reference._from_checked(key, codec.name))

    def read(self) -> bytes:
        """The stored bytes, whatever the codec (checked against ``sha256=`` if present)."""
        data = current_storage().read(self._reference.key)
        self._verify(data)
        return data

    def _verify(self, data: Buffer) -> None:
        expected = self._reference.params.get("sha256")
        if expected is not None and hashlib.sha256(data).hexdigest() != expected:
            raise IntegrityError(
                f"{self._reference}: the stored bytes do not match the reference's sha256 "
                "(the object was damaged or replaced)"
            )

    @overload
    def read_deserialize(self, expected_type: type[T], *, zero_copy: bool = False) -> T: ...
    @overload
    def read_deserialize(self, expected_type: None = None, *, zero_copy: bool = False) -> Any: ...

    def read_deserialize(
        self, expected_type: type[Any] | None = None, *, zero_copy: bool = False
    ) -> Any:
        """Read and decode the object with the codec its reference names.

        With ``zero_copy=True``, codecs that can (``safetensors``) return read-only arrays
        that share memory with a memory map of the stored object, in a time that does not
        depend on its size; the map lives as long as any such array. Stored objects are
        never modified in place, so the arrays stay valid even if the object is deleted.
        Other codecs decode as usual.

        Raises UnknownCodecError for a codec that is not registered, DecodeError for
        malformed data (UnsafeDataError for a refused pickle), NotFoundError for a missing
        object, and TypeMismatchError when the value is not an ``expected_type``.
        """
        ref = self._reference
        codec = registry.get(ref.codec)
        storage = current_storage()
        # Optional codec capabilities are looked up by name: isinstance checks against
        # runtime protocols cost microseconds on every small read.
        decode_view = getattr(codec, "decode_view", None) if zero_copy else None
        try:
            if decode_view is not None or "sha256" in ref.params:
                # The whole object is hashed or shared: decode from a view of all of it.
                with storage.open_view(ref.key) as view:
                    if "sha256" in ref.params:
                        self._verify(view)
                    value = (decode_view or codec.decode)(view, expected_type)
            else:
                decode_from = getattr(codec, "decode_from", None)
                with storage.open_reader(ref.key) as reader:
                    if decode_from is not None:
                        value = decode_from(reader, expected_type)
                    elif reader.size < _STREAM_MIN:
                        value = codec.decode(memoryview(reader.read(0, reader.size)), expected_type)
                    else:
                        value = _UNREAD
                if value is _UNREAD:
                    with storage.open_view(ref.key) as view:
                        value = codec.decode(view, expected_type)
        except Exception as exc:
            # Not a `with decoding(...)` block: the context would be formatted on every read.
            error = decode_error(exc, f"{ref} (codec {ref.codec!r})")
            if error is None:
                raise
            raise error from exc
        if expected_type is not None and not isinstance(value, expected_type):
            raise TypeMismatchError(
                f"{ref}: expected {expected_type.__qualname__}, "
                f"codec {ref.codec!r} decoded a {type(value).__qualname__}"
            )
        return value

    @staticmethod
    def delete(relative_path_prefix: str) -> int:
        """Remove every object under the prefix (or the single object with that key).

        Returns how many objects were removed. An empty prefix is refused.
        """
        try:
            prefix = check_key(relative_path_prefix, what="relative_path_prefix")
        except InvalidKeyError as exc:
            raise InvalidKeyError(f"refusing to delete: {exc}") from None
        for guard in _prefix_guards:
            guard(prefix)
        return current_storage().delete(prefix)


def _resolve_codec(obj: Any, codec: str | Codec[Any] | None, reg: CodecRegistry) -> Codec[Any]:
    if codec is None:
        return reg.for_value(obj)
    if isinstance(codec, str):
        chosen = reg.get(codec)
    else:
        chosen = reg.get(codec.name)
        if chosen is not codec:
            raise UnknownCodecError(
                f"codec {codec.name!r} is not the one registered under that name; "
                "register it first so that its objects can be read back"
            )
    if not chosen.accepts(obj):
        raise NoCodecError(
            f"codec {chosen.name!r} does not accept a value of type {type(obj).__qualname__}"
        )
    return chosen
