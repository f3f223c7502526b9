"""DataStoreIO: write, serialize, read and delete single stored objects."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, TypeVar, overload

from typedstore.protocols import Buffer, Codec
from typedstore.reference import Reference
from typedstore.store import Store, default_store

__all__ = ["DataStoreIO"]

T = TypeVar("T")


class DataStoreIO:
    """One stored object, addressed by its reference.

    Create one from a reference URL to read it, or with :meth:`write` /
    :meth:`serialize_write` to store a value. Objects live in ``store``, by default the
    store that the options name (:func:`typedstore.store.default_store`); references are
    relative to its root, so a store can be moved.
    """

    __slots__ = ("_reference", "_store")

    def __init__(self, url: str | Reference, *, store: Store | None = None) -> None:
        self._reference = url if isinstance(url, Reference) else Reference.parse(url)
        self._store = store

    def __repr__(self) -> str:
        return f"DataStoreIO({self.url!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled (to or from a worker process) and copied as its reference: one in the
        # default store stays in the default store of the process that loads it, which
        # the options there name; one in a store of its own takes that store along.
        store = self._store
        if store is None or store.is_default:
            return (DataStoreIO, (self._reference,))
        return (_in_store, (self._reference, store))

    @property
    def reference(self) -> Reference:
        """The parsed reference."""
        return self._reference

    @property
    def url(self) -> str:
        """The reference URL, ``datastore:///<prefix>/<id>?codec=<name>``."""
        return self._reference.url

    @property
    def store(self) -> Store:
        """The store the object is in."""
        return self._store or default_store()

    @classmethod
    def write(
        cls,
        data: Buffer,
        relative_path_prefix: str | None = None,
        codec: str = "raw",
        *,
        store: Store | None = None,
    ) -> DataStoreIO:
        """Store bytes as they are under a new key in the prefix: the object itself (codec
        ``raw``), or a file of ``codec`` that it reads (``"safetensors"``, ``"npy"``),
        checked by decoding it first (see :meth:`Store.write`)."""
        store = store or default_store()
        return cls(store.write(data, relative_path_prefix, codec), store=store)

    @classmethod
    def serialize_write(
        cls,
        obj: Any,
        relative_path_prefix: str | None = None,
        codec: str | Codec[Any] | None = None,
        *,
        store: Store | None = None,
    ) -> DataStoreIO:
        """Encode ``obj`` with a codec and store it under a new key in the prefix.

        ``codec`` is a registered codec's name or object; by default the registry picks
        one by the value's type. Raises NoCodecError when the codec refuses the value (or
        none accepts it), EncodeError when encoding fails.
        """
        store = store or default_store()
        return cls(store.serialize_write(obj, relative_path_prefix, codec), store=store)

    def read(self) -> bytes:
        """The stored bytes, whatever the codec (checked against ``sha256=`` if present)."""
        return (self._store or default_store()).read(self._reference)

    @overload
    def read_deserialize(
        self,
        expected_type: type[T],
        *,
        zero_copy: bool = False,
        columns: Sequence[Hashable] | None = None,
    ) -> T: ...
    @overload
    def read_deserialize(
        self,
        expected_type: None = None,
        *,
        zero_copy: bool = False,
        columns: Sequence[Hashable] | None = None,
    ) -> Any: ...

    def read_deserialize(
        self,
        expected_type: type[Any] | None = None,
        *,
        zero_copy: bool = False,
        columns: Sequence[Hashable] | None = None,
    ) -> Any:
        """Read and decode the object with the codec its reference names.

        With ``zero_copy=True``, codecs that can (``safetensors``) return read-only arrays
        that share memory with a memory map of the stored object, in a time that does not
        depend on its size; the map lives as long as any such array. Stored objects are
        never modified in place, so the arrays stay valid even if the object is deleted.
        Other codecs decode as usual.

        ``columns`` reads only those columns of a stored table (codec ``arrow``): only
        their parts of the object are fetched, which on S3 means only their byte ranges.
        A pandas frame keeps its index. A checksum in the reference is not checked on
        such a partial read.

        Raises UnknownCodecError for a codec that is not registered, DecodeError for
        malformed data (UnsafeDataError for a refused pickle), NotFoundError for a missing
        object, TypeMismatchError when the value is not an ``expected_type`` (or
        ``columns`` is given for a codec without columns).
        """
        store = self._store or default_store()
        return store.read_deserialize(
            self._reference, expected_type, zero_copy=zero_copy, columns=columns
        )

    @staticmethod
    def delete(relative_path_prefix: str, *, store: Store | None = None) -> int:
        """Remove every object under the prefix (or the single object with that key).

        Returns how many objects were removed. An empty prefix is refused.
        """
        return (store or default_store()).delete(relative_path_prefix)


def _in_store(reference: Reference, store: Store) -> DataStoreIO:
    return DataStoreIO(reference, store=store)
