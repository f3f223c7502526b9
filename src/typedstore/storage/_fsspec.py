"""Storage on any fsspec filesystem (S3, GCS, Azure...), behind one small typed module.

fsspec ships no type information: everything it returns is checked or converted here, so
the rest of typedstore stays strictly typed.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from typedstore.errors import NotFoundError, StorageError
from typedstore.integrity import crc32c
from typedstore.keys import check_key, describe_key, is_valid_segment
from typedstore.policy import PART, PARTS_IN_FLIGHT
from typedstore.protocols import Buffer, Reader, byte_view, check_range

__all__ = ["FsspecStorage"]

# A part of a read: the buffer it fills, and its offset in the object.
_Piece = tuple[memoryview, int]


def _base64(crc: int) -> str:
    """A crc32c as S3 headers give it: its 4 bytes, big-endian, in base64."""
    return base64.b64encode(crc.to_bytes(4, "big")).decode()


def _fsspec() -> Any:
    try:
        import fsspec
    except ImportError:
        raise StorageError(
            "remote datastores need the 'remote' extra: pip install 'typedstore[remote]'"
        ) from None
    return fsspec


class FsspecStorage:
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
        self._pool: ThreadPoolExecutor | None = None
        # S3 (s3fs): parts go up and down several at once, as its own requests.
        self._s3 = "s3" in _protocols(fs) and hasattr(fs, "call_s3")
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

    @property
    def parallel(self) -> bool:
        """Whether reads fetch several parts at once."""
        return self._s3

    def map_parts(self, fill: Callable[[_Piece], int], pieces: list[_Piece]) -> Iterator[int]:
        """``fill`` over ``pieces`` on the transfer threads, results in order."""
        return self._threads().map(fill, pieces)

    def _threads(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(PARTS_IN_FLIGHT, thread_name_prefix="typedstore")
            return self._pool

    def write(self, key: str, chunks: Sequence[Buffer]) -> int:
        """Upload the chunks in order, in parts; the object appears only when complete.

        Keys behave as paths, as in other storages: an object cannot lie under another
        one, nor where objects lie under it (object stores would allow both, and the
        store could then not be copied to a directory)."""
        path = self._path(key)
        self._check_free(key, path)
        return self._write_chunks(key, path, chunks)

    def write_from(self, key: str, reader: Reader, size: int) -> int:
        """Store ``size`` bytes of ``reader`` under ``key``, a part at a time: memory
        stays within the parts in flight whatever the size."""
        path = self._path(key)
        self._check_free(key, path)

        def parts() -> Iterator[bytes]:
            for start in range(0, size, PART):
                want = min(PART, size - start)
                data = reader.read(start, want)
                if len(data) != want:
                    got = start + len(data)
                    raise StorageError(f"the source ended after {got} of its {size} bytes")
                yield data

        return self._write_chunks(key, path, parts())

    def _write_chunks(self, key: str, path: str, chunks: Iterable[Buffer]) -> int:
        if self._s3:
            return self._write_s3(key, path, chunks)
        total = 0
        try:
            f = self._fs.open(path, "wb", block_size=PART)
        except Exception as exc:
            raise self._error(key, "write", exc) from exc
        try:
            for chunk in chunks:
                view = byte_view(chunk)
                for start in range(0, view.nbytes, PART):
                    f.write(view[start : start + PART])
                total += view.nbytes
            f.close()
        except BaseException as exc:
            _abort(f)
            if isinstance(exc, Exception):
                raise self._error(key, "write", exc) from exc
            raise
        return total

    def _write_s3(self, key: str, path: str, chunks: Iterable[Buffer]) -> int:
        """One request for an object of up to one part, else a multipart upload with
        PARTS_IN_FLIGHT parts in flight: memory beyond the buffers stays within what
        those parts take (the client holds a few copies of each while it sends it)."""
        bucket, name, _ = self._fs.split_path(path)
        try:
            rest = iter(chunks)
            head: list[memoryview] = []
            size = 0
            for chunk in rest:
                head.append(byte_view(chunk))
                size += head[-1].nbytes
                if size > PART:
                    break
            else:
                body = b"".join(head)
                # S3 checks the body against the crc32c the object's name gives, if any.
                described = describe_key(key)
                crc = (
                    crc32c(body)
                    if described is None or described.crc32c is None
                    else described.crc32c
                )
                checked = {"ChecksumAlgorithm": "CRC32C", "ChecksumCRC32C": _base64(crc)}
                self._fs.call_s3("put_object", Bucket=bucket, Key=name, Body=body, **checked)
                return size
            views = itertools.chain(head, (byte_view(chunk) for chunk in rest))
            return self._multipart(bucket, name, views)
        except Exception as exc:
            raise self._error(key, "write", exc) from exc
        finally:
            self._fs.invalidate_cache(path)

    def _multipart(self, bucket: str, name: str, views: Iterator[memoryview]) -> int:
        upload = self._fs.call_s3("create_multipart_upload", Bucket=bucket, Key=name,
                                  ChecksumAlgorithm="CRC32C")["UploadId"]  # fmt: skip
        pool = self._threads()

        def send(number: int, body: bytes) -> dict[str, Any]:
            # Each part with its crc32c, which S3 checks before it accepts the part.
            checksum = _base64(crc32c(body))
            out = self._fs.call_s3("upload_part", Bucket=bucket, Key=name, UploadId=upload,
                                   PartNumber=number, Body=body,
                                   ChecksumCRC32C=checksum)  # fmt: skip
            return {"PartNumber": number, "ETag": out["ETag"], "ChecksumCRC32C": checksum}

        parts: list[dict[str, Any]] = []
        pending: list[Future[dict[str, Any]]] = []
        total = 0
        try:
            for number, body in enumerate(_parts(views), start=1):
                if len(pending) >= PARTS_IN_FLIGHT:
                    parts.append(pending.pop(0).result())
                pending.append(pool.submit(send, number, body))
                total += len(body)
            parts += [future.result() for future in pending]
            self._fs.call_s3("complete_multipart_upload", Bucket=bucket, Key=name,
                             UploadId=upload, MultipartUpload={"Parts": parts})  # fmt: skip
        except BaseException:
            for future in pending:
                future.cancel()
            with contextlib.suppress(Exception):
                self._fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=name,
                                 UploadId=upload)  # fmt: skip
            raise
        return total

    def read(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        """The object, or one ranged request for a part of it."""
        check_range(start, length or 0)
        path = self._path(key)
        if length == 0:
            self.size(key)  # a missing object is an error, whatever the range
            return b""
        end = None if length is None else start + length
        try:
            data = bytes(self._fs.cat_file(path, start=start or None, end=end))
        except Exception as exc:
            if start and isinstance(exc, OSError) and start >= self.size(key):
                return b""  # S3 refuses a range that starts at the end
            raise self._error(key, "read", exc) from exc
        self._count(len(data))
        return data

    def open(self, key: str) -> AbstractContextManager[Reader]:
        """A reader fetching ranges on demand."""
        return nullcontext(_RemoteReader(self, key, self.size(key)))

    def size(self, key: str) -> int:
        """Size of the object."""
        path = self._path(key)
        try:
            info = self._fs.info(path)
        except Exception as exc:
            raise self._error(key, "read", exc) from exc
        if info.get("type") != "file":
            raise NotFoundError(f"no object under key {key!r} in {self._url}")
        return int(info["size"])

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

    def _check_free(self, key: str, path: str) -> None:
        parts = key.split("/")
        try:
            for depth in range(1, len(parts)):
                if self._is_file(f"{self._root}/{'/'.join(parts[:depth])}"):
                    raise StorageError(f"cannot write {key!r}: a parent is an object")
            inner = path + "/"
            if any(str(found).startswith(inner) for found in self._fs.find(inner, maxdepth=1)):
                raise StorageError(f"cannot write {key!r}: it is a prefix of other objects")
        except FileNotFoundError:
            pass
        except StorageError:
            raise
        except Exception as exc:
            raise self._error(key, "write", exc) from exc

    def _is_file(self, path: str) -> bool:
        try:
            return bool(self._fs.info(path).get("type") == "file")
        except FileNotFoundError:
            return False


class _RemoteReader:
    def __init__(self, storage: FsspecStorage, key: str, size: int) -> None:
        self._storage = storage
        self._key = key
        self.size = size

    def read(self, start: int, length: int) -> bytes:
        return self._storage.read(self._key, start, max(0, min(length, self.size - start)))

    def readinto(self, start: int, *buffers: Buffer) -> int:
        # Ranged requests of at most a part each, several at once on S3, copied into the
        # buffers as they arrive: memory stays bounded whatever the object's size.
        pieces: list[_Piece] = []
        offset = start
        for buffer in buffers:
            target = byte_view(buffer)
            for at in range(0, target.nbytes, PART):
                pieces.append((target[at : at + PART], offset + at))
            offset += target.nbytes
        if len(pieces) > 1 and self._storage.parallel:
            filled = list(self._storage.map_parts(self._fill, pieces))
        else:
            filled = [self._fill(piece) for piece in pieces]
        done = 0
        for (target, _), got in zip(pieces, filled, strict=True):
            done += got
            if got < target.nbytes:  # the object ended here
                break
        return done

    def _fill(self, piece: _Piece) -> int:
        target, offset = piece
        data = self.read(offset, target.nbytes) if offset < self.size else b""
        target[: len(data)] = data
        return len(data)


def _parts(views: Iterator[memoryview]) -> Iterator[bytes]:
    """The bytes of the views in parts of PART (the last may be smaller)."""
    pending: list[memoryview] = []
    size = 0
    for view in views:
        while view.nbytes:
            take = view[: PART - size]
            pending.append(take)
            size += take.nbytes
            view = view[take.nbytes :]
            if size == PART:
                yield b"".join(pending)
                pending, size = [], 0
    if size:
        yield b"".join(pending)


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = getattr(fs, "protocol", ())
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


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
