"""The storage protocol: bytes behind keys."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

from typedstore.codec import Buffer, Reader

__all__ = ["Storage"]


@runtime_checkable
class Storage(Protocol):
    """Where stored objects live. Keys follow :mod:`typedstore.keys`.

    Implementations must make ``write`` atomic (a reader sees the whole object or
    nothing) and must never touch anything outside their root.
    """

    @property
    def url(self) -> str:
        """Where this storage keeps its objects (for messages)."""
        ...

    def write(self, key: str, chunks: Sequence[Buffer]) -> int:
        """Store the concatenation of ``chunks`` under ``key`` atomically; return its size."""
        ...

    def read(self, key: str) -> bytes:
        """The whole object under ``key``; raise NotFoundError if there is none."""
        ...

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """Up to ``length`` bytes of the object from offset ``start`` (fewer at its end)."""
        ...

    def readinto(self, key: str, start: int, buffer: Buffer) -> int:
        """Fill writable ``buffer`` from offset ``start``; return how many bytes were read."""
        ...

    def open_reader(self, key: str) -> AbstractContextManager[Reader]:
        """Random access to the object under ``key`` inside the ``with`` block."""
        ...

    def open_view(self, key: str) -> AbstractContextManager[memoryview]:
        """A read-only view of the object, valid inside the ``with`` block.

        The view may be backed by a memory map; anything that must outlive the block
        must be copied out of it.
        """
        ...

    def size(self, key: str) -> int:
        """Size in bytes of the object under ``key``."""
        ...

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        ...

    def list(self, prefix: str | None = None) -> Iterator[str]:
        """Keys of the objects under ``prefix`` (every object when None), sorted."""
        ...

    def children(self, prefix: str) -> Sequence[str]:
        """Names of the objects and sub-prefixes directly under ``prefix``, sorted."""
        ...

    def last_modified(self, prefix: str) -> float | None:
        """When anything under ``prefix`` (or the object) last changed, as a Unix time;
        None if nothing is there."""
        ...

    def remove_temporary(self, older_than: float) -> int:
        """Remove leftovers of interrupted writes older than ``older_than`` seconds;
        return how many."""
        ...

    def delete(self, prefix: str) -> int:
        """Remove the object ``prefix`` or every object under it; return how many."""
        ...
