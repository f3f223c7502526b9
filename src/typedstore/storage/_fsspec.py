"""Storage on any fsspec filesystem (S3, GCS, Azure...), behind one small typed module.

fsspec ships no type information: everything it returns is checked or converted here, so
the rest of typedstore stays strictly typed.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from typedstore.codec import Buffer, Reader, byte_view
from typedstore.errors import NotFoundError, StorageError
from typedstore.keys import check_key, is_valid_segment

__all__ = ["RemoteStorage"]

# Uploads go in parts of this size (S3 needs at least 5 MiB per part): the memory a write
# needs beyond its buffers, whatever the object's size.
_PART = 8 << 20
# Downloads into a caller's buffer go in ranges of this size, for the same reason.
_RANGE = 8 << 20


def _fsspec() -> Any:
    try:
        import fsspec
    except ImportError:
        raise StorageError(
            "remote datastores need the 'remote' extra: pip install 'typedstore[remote]'"
        ) from None
    return fsspec


class RemoteStorage:
    """Objects in an fsspec filesystem under ``url`` (``s3://bucket/prefix``...).

    Large objects are uploaded in parts straight from their buffers and become visible
    only when complete (a failed upload is aborted); reads of a range fetch only that
    range. ``storage_options`` go to fsspec (credentials, ``client_kwargs`` with an
    ``endpoint_url``...). :attr:`bytes_read` counts the bytes fetched, for monitoring.
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        try:
            fs, root = _fsspec().core.url_to_fs(url, **dict(storage_options or {}))
        except (ImportError, ValueError) as exc:
            raise StorageError(f"datastore URL {url!r}: {exc}") from exc
        self._fs = fs
        self._url = url
        self._root = str(root).rstrip("/")
        self._lock = threading.Lock()
        self.bytes_read = 0

    @property
    def url(self) -> str:
        """The datastore URL."""
        return self._url

    def _path(self, key: str, *, what: str = "key") -> str:
        return f"{self._root}/{check_key(key, what=what)}"

    def _error(self, key: str, action: str, exc: Exception) -> Exception:
        if isinstance(exc, FileNotFoundError) and action != "write":
            return NotFoundError(f"no object under key {key!r} in {self._url} ({exc})")
        if isinstance(exc, PermissionError):
            return StorageError(f"cannot {action} {key!r} in {self._url}: access denied: {exc}")
        return StorageError(f"cannot {action} {key!r} in {self._url}: {exc}")

    def _count(self, n: int) -> None:
        with self._lock:
            self.bytes_read += n

    def write(self, key: str, chunks: Sequence[Buffer]) -> int:
        """Upload the chunks in order, in parts; the object appears only when complete."""
        path = self._path(key)
        total = 0
        try:
            f = self._fs.open(path, "wb", block_size=_PART)
        except Exception as exc:
            raise self._error(key, "write", exc) from exc
        try:
            for chunk in chunks:
                view = byte_view(chunk)
                for start in range(0, view.nbytes, _PART):
                    f.write(view[start : start + _PART])
                total += view.nbytes
            f.close()
        except BaseException as exc:
            _abort(f)
            if isinstance(exc, Exception):
                raise self._error(key, "write", exc) from exc
            raise
        return total

    def read(self, key: str) -> bytes:
        """The whole object."""
        try:
            data = bytes(self._fs.cat_file(self._path(key)))
        except Exception as exc:
            raise self._error(key, "read", exc) from exc
        self._count(len(data))
        return data

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """One ranged request."""
        if start < 0 or length < 0:
            raise ValueError(f"invalid byte range: start {start}, length {length}")
        if length == 0:
            return b""
        try:
            data = bytes(self._fs.cat_file(self._path(key), start=start, end=start + length))
        except Exception as exc:
            raise self._error(key, "read", exc) from exc
        self._count(len(data))
        return data

    def readinto(self, key: str, start: int, buffer: Buffer) -> int:
        """Ranged requests of at most 8 MiB, each copied into ``buffer`` as it arrives:
        memory stays bounded whatever the object's size."""
        target = byte_view(buffer)
        done = 0
        while done < target.nbytes:
            part = self.read_range(key, start + done, min(_RANGE, target.nbytes - done))
            if not part:
                break
            target[done : done + len(part)] = part
            done += len(part)
        return done

    def open_reader(self, key: str) -> AbstractContextManager[Reader]:
        """A reader fetching ranges on demand."""
        return nullcontext(_RemoteReader(self, key, self.size(key)))

    def open_view(self, key: str) -> AbstractContextManager[memoryview]:
        """The whole object in memory (object stores cannot be memory-mapped)."""
        return nullcontext(memoryview(self.read(key)))

    def size(self, key: str) -> int:
        """Size of the object."""
        try:
            info = self._fs.info(self._path(key))
        except Exception as exc:
            raise self._error(key, "read", exc) from exc
        if info.get("type") != "file":
            raise NotFoundError(f"no object under key {key!r} in {self._url}")
        return int(info["size"])

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        try:
            self.size(key)
        except NotFoundError:
            return False
        return True

    def list(self, prefix: str | None = None) -> Iterator[str]:
        """Keys under ``prefix``, sorted."""
        base = self._root if prefix is None else self._path(prefix, what="prefix")
        found = []
        try:
            if prefix is not None and self._is_file(base):
                return iter([prefix])
            for path in self._fs.find(base + "/"):
                rel = str(path)[len(self._root) + 1 :]
                if all(is_valid_segment(s) for s in rel.split("/")):
                    found.append(rel)
        except FileNotFoundError:
            return iter(())
        except Exception as exc:
            raise self._error(prefix or "", "list", exc) from exc
        return iter(sorted(found))

    def children(self, prefix: str) -> Sequence[str]:
        """Names directly under ``prefix``."""
        try:
            entries = self._fs.ls(self._path(prefix, what="prefix") + "/", detail=False)
        except FileNotFoundError:
            return []
        except Exception as exc:
            raise self._error(prefix, "list", exc) from exc
        names = {str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries}
        return sorted(n for n in names if is_valid_segment(n))

    def last_modified(self, prefix: str) -> float | None:
        """The newest modification time under ``prefix``."""
        base = self._path(prefix, what="prefix")
        try:
            infos = dict(self._fs.find(base + "/", detail=True))
            if self._is_file(base):
                infos[base] = self._fs.info(base)
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise self._error(prefix, "list", exc) from exc
        times = [_timestamp(info) for info in infos.values()]
        return max((t for t in times if t is not None), default=None)

    def remove_temporary(self, older_than: float) -> int:
        """Nothing to remove: unfinished uploads are aborted, never left as objects."""
        return 0

    def delete(self, prefix: str) -> int:
        """Remove the object ``prefix`` or every object under ``prefix/`` (never ``prefix10``)."""
        base = self._path(prefix, what="prefix")
        try:
            if self._is_file(base):
                self._fs.rm_file(base)
                return 1
            paths = list(self._fs.find(base + "/"))
            if paths:
                self._fs.rm(paths)
            return len(paths)
        except FileNotFoundError:
            return 0
        except Exception as exc:
            raise self._error(prefix, "delete", exc) from exc

    def _is_file(self, path: str) -> bool:
        try:
            return bool(self._fs.info(path).get("type") == "file")
        except FileNotFoundError:
            return False


class _RemoteReader:
    def __init__(self, storage: RemoteStorage, key: str, size: int) -> None:
        self._storage = storage
        self._key = key
        self.size = size

    def read(self, start: int, length: int) -> bytes:
        return self._storage.read_range(self._key, start, max(0, min(length, self.size - start)))

    def readinto(self, start: int, buffer: Buffer) -> int:
        return self._storage.readinto(self._key, start, buffer)


def _abort(f: Any) -> None:
    # Abort a multipart upload, so that no partial object appears, then make sure the
    # file object does not try to finish it when it is garbage collected.
    with contextlib.suppress(Exception):
        f.discard()
    with contextlib.suppress(Exception):
        f.closed = True


def _timestamp(info: Mapping[str, Any]) -> float | None:
    value = info.get("LastModified", info.get("mtime", info.get("created")))
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    return float(value)
