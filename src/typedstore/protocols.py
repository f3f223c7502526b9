"""The contracts between the layers: codecs, storages and the readers they share.

Everything here is an interface (a ``typing.Protocol``) or a tiny helper of one. Codecs
implement :class:`Codec`, storages :class:`Storage`; the optional capabilities
(:class:`StreamingCodec`, :class:`ZeroCopyCodec`, :class:`OpensReaders`,
:class:`MapsMemory`...) are separate protocols, looked up once per codec or storage.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar, runtime_checkable

from typedstore.errors import RegistrationError

if sys.version_info >= (3, 12):
    from collections.abc import Buffer
else:
    from typing_extensions import Buffer

__all__ = [
    "NAME_PATTERN",
    "Buffer",
    "BytesReader",
    "Codec",
    "MapsMemory",
    "OpensReaders",
    "Reader",
    "ReadsInto",
    "RemovesTemporary",
    "Storage",
    "StreamingCodec",
    "TracksChanges",
    "VersionedCodec",
    "ZeroCopyCodec",
    "byte_view",
    "check_codec_name",
    "check_range",
]

T = TypeVar("T")

#: Codec names appear in references (``?codec=<name>``) and must stay stable forever.
NAME_PATTERN = re.compile(r"[a-z0-9_.-]{1,64}")


@runtime_checkable
class Codec(Protocol[T]):
    """A named, versioned serialization format for values of some types.

    ``encode`` returns buffers that are written in order, so a large array is written
    from its own memory instead of being copied into one bytes object first. ``decode``
    receives a read-only buffer, possibly a memoryview over a memory map that is closed
    after ``decode`` returns: the result must not keep references into it.
    """

    @property
    def name(self) -> str:
        """Stable identifier of the format, as it appears in references."""
        ...

    @property
    def version(self) -> int:
        """Format version; bumped whenever the bytes the codec writes change."""
        ...

    @property
    def types(self) -> tuple[type | str, ...]:
        """The Python types this codec serves (its registry keys): classes, or the
        qualified names (``module.qualname``) of classes that need not be imported yet."""
        ...

    def accepts(self, value: object) -> bool:
        """Whether this codec can encode ``value`` exactly (without losing state)."""
        ...

    def encode(self, value: T) -> Sequence[Buffer]:
        """Encode ``value`` into buffers that, concatenated, form the stored object."""
        ...

    def decode(self, data: Buffer, expected_type: type[Any] | None = None) -> T:
        """Decode a stored object; raise :class:`~typedstore.errors.DecodeError` if malformed."""
        ...


class Reader(Protocol):
    """Random access to one stored object, open for several reads."""

    @property
    def size(self) -> int:
        """The object's size in bytes."""
        ...

    def read(self, start: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``start`` (fewer only at the end of the object)."""
        ...

    def readinto(self, start: int, *buffers: Buffer) -> int:
        """Fill ``buffers`` one after the other from ``start``; return the bytes read."""
        ...


@runtime_checkable
class StreamingCodec(Codec[T], Protocol[T]):
    """A codec that can also decode from a :class:`Reader`, reading large parts directly
    into the memory of the result (no intermediate copy)."""

    def decode_from(self, reader: Reader, expected_type: type[Any] | None = None) -> T:
        """Decode the object behind ``reader``; same result and errors as ``decode``."""
        ...


@runtime_checkable
class ZeroCopyCodec(Codec[T], Protocol[T]):
    """A codec that can return values sharing memory with the stored data."""

    def decode_view(self, data: Buffer, expected_type: type[Any] | None = None) -> T:
        """Like ``decode``, but the result may be read-only views into ``data``."""
        ...


@runtime_checkable
class VersionedCodec(Codec[T], Protocol[T]):
    """A codec whose later versions added kinds of values: it tells the oldest version
    that reads a given value, so containers refuse only what an older reader cannot read."""

    def version_for(self, value: T) -> int:
        """The oldest format version whose readers decode ``value`` as it is."""
        ...


@runtime_checkable
class Storage(Protocol):
    """The bytes behind keys (keys follow :mod:`typedstore.keys`).

    ``write`` is atomic: a reader sees a whole object or none, and nothing is ever read
    or written outside the storage's root. Missing objects raise
    :class:`~typedstore.errors.NotFoundError`, other failures
    :class:`~typedstore.errors.StorageError`.
    """

    @property
    def url(self) -> str:
        """Where this storage keeps its objects."""
        ...

    def write(self, key: str, chunks: Sequence[Buffer]) -> int:
        """Store the concatenation of ``chunks`` under ``key`` atomically; return its size."""
        ...

    def read(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        """``length`` bytes of the object from ``start`` (all that follows when None;
        fewer at its end)."""
        ...

    def size(self, key: str) -> int:
        """Size in bytes of the object under ``key``."""
        ...

    def list(self, prefix: str | None = None) -> Iterator[str]:
        """Keys of the objects under ``prefix`` (every object when None), sorted."""
        ...

    def delete(self, prefix: str) -> int:
        """Remove the object ``prefix`` or every object under ``prefix/``; return how many."""
        ...


@runtime_checkable
class OpensReaders(Protocol):
    """A storage that can keep an object open for several reads (one open, not one per
    read)."""

    def open(self, key: str) -> AbstractContextManager[Reader]:
        """A reader of the object under ``key``, valid inside the ``with`` block."""
        ...


@runtime_checkable
class ReadsInto(Protocol):
    """A storage that can read part of an object straight into the caller's memory."""

    def readinto(self, key: str, start: int, *buffers: Buffer) -> int:
        """Fill ``buffers`` one after the other from ``start``; return the bytes read."""
        ...


@runtime_checkable
class MapsMemory(Protocol):
    """A storage that can give a view of a whole object without reading it first."""

    def open_view(self, key: str) -> AbstractContextManager[memoryview]:
        """A read-only view of the object (perhaps a memory map), valid inside the block;
        a view still exported when it ends keeps the map alive."""
        ...


@runtime_checkable
class TracksChanges(Protocol):
    """A storage that knows when objects changed (garbage collection needs it)."""

    def last_modified(self, prefix: str) -> float | None:
        """When anything under ``prefix`` (or the object) last changed, as a Unix time;
        None if nothing is there."""
        ...


@runtime_checkable
class WritesStreams(Protocol):
    """A storage that stores an object from a reader, a part at a time."""

    def write_from(self, key: str, reader: Reader, size: int) -> int:
        """Store ``size`` bytes read from ``reader`` under ``key`` atomically, holding
        only a few parts in memory at a time; return the size. typedstore's own errors
        from the reader (a damaged source, say) reach the caller as they are."""
        ...


@runtime_checkable
class NamesLast(Protocol):
    """A storage that can name an object after its bytes are written (so that the name
    can say something about them that is known only then, such as a checksum)."""

    def write_named(self, prefix: str, chunks: Sequence[Buffer], name: Callable[[], str]) -> str:
        """Store the concatenation of ``chunks`` atomically under ``prefix``, as the name
        ``name()`` returns once the bytes are written; return the object's key."""
        ...


@runtime_checkable
class Syncs(Protocol):
    """A storage whose writes may sit in memory (a page cache) before they reach the disk."""

    def sync(self, prefix: str) -> None:
        """Flush every object under ``prefix``, and the folders that name them, to disk:
        afterwards they survive power loss."""
        ...


@runtime_checkable
class RemovesTemporary(Protocol):
    """A storage whose interrupted writes can leave temporary files behind."""

    def remove_temporary(self, older_than: float) -> int:
        """Remove leftovers of interrupted writes older than ``older_than`` seconds;
        return how many."""
        ...


def check_codec_name(name: object) -> str:
    """Return ``name`` if it is a valid codec name, else raise RegistrationError."""
    if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
        raise RegistrationError(f"invalid codec name {name!r}: use 1-64 characters of [a-z0-9_.-]")
    return name


def byte_view(data: Buffer) -> memoryview:
    """A flat, C-contiguous ``uint8`` memoryview of ``data`` without copying.

    Raises ValueError if ``data`` is not C-contiguous.
    """
    view = memoryview(data)
    if not view.c_contiguous:
        raise ValueError("buffer is not C-contiguous")
    if view.format == "B" and view.ndim == 1:
        return view
    # memoryview refuses to cast a shape with a zero in it: nothing to view anyway.
    return view.cast("B") if view.nbytes else memoryview(b"")


class BytesReader:
    """A :class:`Reader` over bytes already in memory."""

    __slots__ = ("_view",)

    def __init__(self, data: Buffer) -> None:
        self._view = byte_view(data)

    @property
    def size(self) -> int:
        """Length of the data."""
        return self._view.nbytes

    def read(self, start: int, length: int) -> bytes:
        """A copy of a slice of the data."""
        check_range(start, length)
        return bytes(self._view[start : start + length])

    def readinto(self, start: int, *buffers: Buffer) -> int:
        """Copy the data from ``start`` into ``buffers``, one after the other."""
        check_range(start, 0)
        done = 0
        for buffer in buffers:
            target = byte_view(buffer)
            if not target.nbytes:
                continue
            part = self._view[start + done : start + done + target.nbytes]
            target[: part.nbytes] = part
            done += part.nbytes
            if part.nbytes < target.nbytes:
                break
        return done


def check_range(start: int, length: int) -> None:
    """Raise ValueError for a negative start or length."""
    if start < 0 or length < 0:
        raise ValueError(f"invalid byte range: start {start}, length {length}")
