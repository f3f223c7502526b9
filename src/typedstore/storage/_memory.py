"""In-memory storage, for tests and short-lived data."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext

from typedstore.codec import Buffer, Reader, byte_view
from typedstore.errors import NotFoundError, StorageError
from typedstore.keys import check_key

__all__ = ["BytesReader", "MemoryStorage"]


class MemoryStorage:
    """A storage that keeps objects in a dict; keys behave as paths, as on disk."""

    def __init__(self, name: str = "") -> None:
        self._name = name
        self._objects: dict[str, bytes] = {}
        self._times: dict[str, float] = {}
        # How many objects lie under each prefix, to refuse an object at a prefix quickly.
        self._prefixes: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """``memory://<name>``."""
        return f"memory://{self._name}"

    def write(self, key: str, chunks: Sequence[Buffer]) -> int:
        """Store the concatenation of ``chunks`` under ``key``."""
        check_key(key)
        data = b"".join(byte_view(chunk) for chunk in chunks)
        with self._lock:
            parents = _parents(key)
            if any(parent in self._objects for parent in parents):
                raise StorageError(f"cannot write {key!r}: a parent is an object")
            if key in self._prefixes:
                raise StorageError(f"cannot write {key!r}: it is a prefix of other objects")
            if key not in self._objects:
                for parent in parents:
                    self._prefixes[parent] = self._prefixes.get(parent, 0) + 1
            self._objects[key] = data
            self._times[key] = time.time()
        return len(data)

    def read(self, key: str) -> bytes:
        """The object under ``key``."""
        check_key(key)
        try:
            return self._objects[key]
        except KeyError:
            raise NotFoundError(f"no object under key {key!r} in {self.url}") from None

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """A slice of the object under ``key``."""
        _check_range(start, length)
        return self.read(key)[start : start + length]

    def readinto(self, key: str, start: int, buffer: Buffer) -> int:
        """Copy a slice of the object into ``buffer``."""
        target = byte_view(buffer)
        data = self.read_range(key, start, target.nbytes)
        target[: len(data)] = data
        return len(data)

    def open_reader(self, key: str) -> AbstractContextManager[Reader]:
        """A reader over the object's bytes."""
        return nullcontext(BytesReader(self.read(key)))

    def open_view(self, key: str) -> AbstractContextManager[memoryview]:
        """A read-only view of the object."""
        return nullcontext(memoryview(self.read(key)))

    def size(self, key: str) -> int:
        """Size of the object under ``key``."""
        return len(self.read(key))

    def exists(self, key: str) -> bool:
        """Whether ``key`` holds an object."""
        return check_key(key) in self._objects

    def list(self, prefix: str | None = None) -> Iterator[str]:
        """Keys under ``prefix``, sorted."""
        if prefix is not None:
            check_key(prefix, what="prefix")
        with self._lock:
            keys = sorted(self._objects)
        return iter([k for k in keys if prefix is None or _under(k, prefix)])

    def children(self, prefix: str) -> Sequence[str]:
        """Names directly under ``prefix``."""
        depth = len(check_key(prefix, what="prefix").split("/"))
        with self._lock:
            keys = [k for k in self._objects if k.startswith(prefix + "/")]
        return sorted({k.split("/")[depth] for k in keys})

    def last_modified(self, prefix: str) -> float | None:
        """The newest write time under ``prefix``."""
        check_key(prefix, what="prefix")
        with self._lock:
            times = [t for k, t in self._times.items() if _under(k, prefix)]
        return max(times, default=None)

    def remove_temporary(self, older_than: float) -> int:
        """Nothing to do: writes to memory are never interrupted half-way."""
        return 0

    def delete(self, prefix: str) -> int:
        """Remove ``prefix`` and everything under it."""
        check_key(prefix, what="prefix")
        with self._lock:
            doomed = [k for k in self._objects if _under(k, prefix)]
            for k in doomed:
                del self._objects[k]
                del self._times[k]
                for parent in _parents(k):
                    if self._prefixes[parent] == 1:
                        del self._prefixes[parent]
                    else:
                        self._prefixes[parent] -= 1
        return len(doomed)


class BytesReader:
    """A :class:`~typedstore.codec.Reader` over bytes in memory."""

    def __init__(self, data: Buffer) -> None:
        self._view = byte_view(data)

    @property
    def size(self) -> int:
        """Length of the data."""
        return self._view.nbytes

    def read(self, start: int, length: int) -> bytes:
        """A slice of the data."""
        _check_range(start, length)
        return bytes(self._view[start : start + length])

    def readinto(self, start: int, buffer: Buffer) -> int:
        """Copy a slice of the data into ``buffer``."""
        target = byte_view(buffer)
        data = self._view[start : start + target.nbytes]
        target[: data.nbytes] = data
        return data.nbytes


def _check_range(start: int, length: int) -> None:
    if start < 0 or length < 0:
        raise ValueError(f"invalid byte range: start {start}, length {length}")


def _parents(key: str) -> list[str]:
    segments = key.split("/")
    return ["/".join(segments[:i]) for i in range(1, len(segments))]


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + "/")
