"""In-memory storage, for tests and short-lived data."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext

from typedstore.errors import NotFoundError, StorageError
from typedstore.keys import check_key
from typedstore.protocols import Buffer, BytesReader, Reader, byte_view, check_range

__all__ = ["MemoryStorage"]


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

    def read(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        """A slice of the object under ``key`` (all of it by default)."""
        check_key(key)
        check_range(start, length or 0)
        try:
            data = self._objects[key]
        except KeyError:
            raise NotFoundError(f"no object under key {key!r} in {self.url}") from None
        if start == 0 and length is None:
            return data
        return data[start : None if length is None else start + length]

    def open(self, key: str) -> AbstractContextManager[Reader]:
        """A reader over the object's bytes."""
        return nullcontext(BytesReader(self.read(key)))

    def size(self, key: str) -> int:
        """Size of the object under ``key``."""
        return len(self.read(key))

    def list(self, prefix: str | None = None) -> Iterator[str]:
        """Keys under ``prefix``, sorted."""
        if prefix is not None:
            check_key(prefix, what="prefix")
        with self._lock:
            keys = sorted(self._objects)
        return iter([k for k in keys if prefix is None or _under(k, prefix)])

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


def _parents(key: str) -> list[str]:
    segments = key.split("/")
    return ["/".join(segments[:i]) for i in range(1, len(segments))]


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + "/")
