"""Storage on any fsspec filesystem (S3, GCS, Azure...), behind one small typed module.

fsspec ships no type information: everything it returns is checked or converted here, so
the rest of typedstore stays strictly typed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import io
import itertools
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from typedstore.errors import NotFoundError, StorageError, TypedStoreError
from typedstore.integrity import crc32c_of
from typedstore.keys import check_key, describe_key, is_valid_segment
from typedstore.policy import (
    KNOWN_FOLDERS,
    ONE_REQUEST_MAX,
    PART,
    PARTS_IN_FLIGHT,
    REMOTE_CHECK_PIECE,
    REMOTE_RESUMES,
)
from typedstore.protocols import Buffer, Reader, byte_view, check_range

__all__ = ["FsspecStorage"]

#: The most parts S3 takes in one multipart upload (PART's 8 MiB reach 78 GiB; larger
#: objects go up in larger parts).
S3_MAX_PARTS = 10_000

# A part of a read: the buffer it fills, and its offset in the object.
_Piece = tuple[memoryview, int]


def _base64(crc: int) -> str:
    """A crc32c as S3 headers give it: its 4 bytes, big-endian, in base64."""
    return base64.b64encode(crc.to_bytes(4, "big")).decode()


@functools.cache
def _cut_off() -> tuple[type[BaseException], ...]:
    """The errors of an S3 response body that stopped early (s3fs retries requests that
    fail, not a body that breaks off once it has begun)."""
    import aiohttp
    import botocore.exceptions

    return (
        aiohttp.ClientPayloadError,
        aiohttp.ClientConnectionError,
        botocore.exceptions.ReadTimeoutError,
        botocore.exceptions.ResponseStreamingError,
        asyncio.TimeoutError,
        ConnectionError,
    )


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
        # Paths this storage wrote under: no object lies there, so writes under them skip
        # the requests that would check it.
        self._folders: set[str] = set()
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
        """Whether reads fetch several ranges at once."""
        return self._s3

    def fetch(self, key: str, pieces: list[_Piece]) -> list[int]:
        """Fill each piece's buffer from its offset in the object (S3 only): one ranged
        request per piece, PARTS_IN_FLIGHT at once, each streamed into its buffer as the
        bytes arrive, so memory stays small whatever the pieces' sizes. Returns the bytes
        each piece received."""
        bucket, name, _ = self._fs.split_path(self._path(key))
        try:
            filled: list[int] = _fsspec().asyn.sync(
                self._fs.loop, self._fetch_all, bucket, name, pieces
            )
        except Exception as exc:
            raise self._error(key, "read", exc) from exc
        self._count(sum(filled))
        return filled

    async def _fetch_all(self, bucket: str, name: str, pieces: list[_Piece]) -> list[int]:
        gate = asyncio.Semaphore(PARTS_IN_FLIGHT)

        async def one(piece: _Piece) -> int:
            async with gate:
                return await self._fetch(bucket, name, *piece)

        tasks = [asyncio.ensure_future(one(piece)) for piece in pieces]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            # No request may go on writing into the buffers once this returns.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _fetch(self, bucket: str, name: str, target: memoryview, offset: int) -> int:
        end = offset + target.nbytes - 1
        done, resumed, version = 0, 0, dict[str, str]()
        while True:
            # s3fs's async API (fsspec names it with a leading underscore): the body can
            # then be read a chunk at a time straight into the target.
            response = await self._fs._call_s3(
                "get_object", Bucket=bucket, Key=name, Range=f"bytes={offset + done}-{end}",
                **version,
            )  # fmt: skip
            body = response["Body"]
            try:
                while done < target.nbytes:
                    got = int(await body.readinto(target[done:]))
                    if not got:  # the object ended here
                        break
                    done += got
                return done
            except _cut_off():
                if resumed == REMOTE_RESUMES:
                    raise
                resumed += 1
                # The rest is asked for, of the same object: should it have been replaced
                # meanwhile, S3 refuses (If-Match) rather than mix two objects' bytes.
                if "ETag" in response:
                    version = {"IfMatch": response["ETag"]}
            finally:
                body.close()

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
        try:
            size = sum(byte_view(chunk).nbytes for chunk in chunks)
        except Exception as exc:  # not a buffer
            raise self._error(key, "write", exc) from exc
        written = self._write_chunks(key, path, chunks, size, ONE_REQUEST_MAX)
        self._know_folders(key)
        return written

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
                    raise StorageError(
                        f"cannot write {key!r} in {self._url}: "
                        f"the source ended after {got} of its {size} bytes"
                    )
                yield data

        # Up to a part in one request: the parts read for one request would all be held.
        written = self._write_chunks(key, path, parts(), size, PART)
        self._know_folders(key)
        return written

    def _write_chunks(
        self, key: str, path: str, chunks: Iterable[Buffer], size: int, one_request_max: int
    ) -> int:
        if self._s3:
            return self._write_s3(key, path, chunks, size, one_request_max)
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
            # Our own errors (a damaged source, say) are not this storage's failures.
            if isinstance(exc, Exception) and not isinstance(exc, TypedStoreError):
                raise self._error(key, "write", exc) from exc
            raise
        return total

    def _write_s3(
        self, key: str, path: str, chunks: Iterable[Buffer], size: int, one_request_max: int
    ) -> int:
        """One request for an object of up to ``one_request_max`` bytes, else a multipart
        upload with PARTS_IN_FLIGHT parts in flight. Bodies are read from the buffers as
        they are sent, never joined: memory stays within what the client holds of each
        request in flight."""
        bucket, name, _ = self._fs.split_path(path)
        try:
            rest = iter(chunks)
            head: list[memoryview] = []
            sent = 0
            for chunk in rest:
                head.append(byte_view(chunk))
                sent += head[-1].nbytes
                if sent > one_request_max:
                    break
            else:
                # S3 checks the body against the crc32c the object's name gives, if any.
                described = describe_key(key)
                crc = (
                    crc32c_of(head)
                    if described is None or described.crc32c is None
                    else described.crc32c
                )
                checked = {"ChecksumAlgorithm": "CRC32C", "ChecksumCRC32C": _base64(crc)}
                self._fs.call_s3("put_object", Bucket=bucket, Key=name, Body=_Body(head),
                                 ContentLength=sent, **checked)  # fmt: skip
                return sent
            views = itertools.chain(head, (byte_view(chunk) for chunk in rest))
            return self._multipart(bucket, name, views, _part_size(size))
        except TypedStoreError:
            raise
        except Exception as exc:
            raise self._error(key, "write", exc) from exc
        finally:
            self._fs.invalidate_cache(path)

    def _multipart(self, bucket: str, name: str, views: Iterator[memoryview], part: int) -> int:
        upload = self._fs.call_s3("create_multipart_upload", Bucket=bucket, Key=name,
                                  ChecksumAlgorithm="CRC32C")["UploadId"]  # fmt: skip
        pool = self._threads()

        def send(number: int, part: list[memoryview]) -> dict[str, Any]:
            # Each part with its crc32c, which S3 checks before it accepts the part.
            checksum = _base64(crc32c_of(part))
            body = _Body(part)
            out = self._fs.call_s3("upload_part", Bucket=bucket, Key=name, UploadId=upload,
                                   PartNumber=number, Body=body, ContentLength=len(body),
                                   ChecksumCRC32C=checksum)  # fmt: skip
            return {"PartNumber": number, "ETag": out["ETag"], "ChecksumCRC32C": checksum}

        parts: list[dict[str, Any]] = []
        pending: list[Future[dict[str, Any]]] = []
        total = 0
        try:
            for number, views_of_part in enumerate(_parts(views, part), start=1):
                if len(pending) >= PARTS_IN_FLIGHT:
                    parts.append(pending.pop(0).result())
                pending.append(pool.submit(send, number, views_of_part))
                total += sum(view.nbytes for view in views_of_part)
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
        with self._lock:
            self._folders = {f for f in self._folders if f != base and not f.startswith(base + "/")}
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

    def _parents(self, key: str) -> tuple[str, ...]:
        parts = key.split("/")
        return tuple(f"{self._root}/{'/'.join(parts[:depth])}" for depth in range(1, len(parts)))

    def _check_free(self, key: str, path: str) -> None:
        try:
            for parent in self._parents(key):
                if parent not in self._folders and self._is_file(parent):
                    raise StorageError(f"cannot write {key!r}: a parent is an object")
            # A new object's name is random: nothing can lie under it yet.
            if describe_key(key) is None:
                inner = path + "/"
                if any(str(p).startswith(inner) for p in self._fs.find(inner, maxdepth=1)):
                    raise StorageError(f"cannot write {key!r}: it is a prefix of other objects")
        except FileNotFoundError:
            pass
        except StorageError:
            raise
        except Exception as exc:
            raise self._error(key, "write", exc) from exc

    def _know_folders(self, key: str) -> None:
        with self._lock:
            if len(self._folders) >= KNOWN_FOLDERS:
                self._folders.clear()
            self._folders.update(self._parents(key))

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
        # Checked reads go in calls of this size (see typedstore.integrity).
        self.piece = REMOTE_CHECK_PIECE if storage.parallel else PART

    def read(self, start: int, length: int) -> bytes:
        return self._storage.read(self._key, start, max(0, min(length, self.size - start)))

    def readinto(self, start: int, *buffers: Buffer) -> int:
        # Ranged requests, several at once on S3 (streamed into the buffers), else of a
        # part at most one after the other: memory stays bounded whatever the size.
        pieces: list[_Piece] = []
        offset = start
        total = sum(byte_view(buffer).nbytes for buffer in buffers)
        step = max(PART, -(-total // PARTS_IN_FLIGHT)) if self._storage.parallel else PART
        for buffer in buffers:
            target = byte_view(buffer)
            for at in range(0, target.nbytes, step):
                if offset + at < self.size:
                    pieces.append((target[at : at + step], offset + at))
            offset += target.nbytes
        if self._storage.parallel:
            filled = self._storage.fetch(self._key, pieces)
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
        data = self.read(offset, target.nbytes)
        target[: len(data)] = data
        return len(data)


def _part_size(size: int) -> int:
    """The part size for a multipart upload of ``size`` bytes: PART, or larger (whole
    MiB) for objects that would otherwise take more parts than S3 allows."""
    needed = -(-size // S3_MAX_PARTS)
    return max(PART, -(-needed // (1 << 20)) << 20)


def _parts(views: Iterator[memoryview], part: int) -> Iterator[list[memoryview]]:
    """The views regrouped in parts of ``part`` bytes (the last may be smaller), uncopied."""
    pending: list[memoryview] = []
    size = 0
    for view in views:
        while view.nbytes:
            take = view[: part - size]
            pending.append(take)
            size += take.nbytes
            view = view[take.nbytes :]
            if size == part:
                yield pending
                pending, size = [], 0
    if size:
        yield pending


class _Body(io.RawIOBase):
    """The bytes of ``views`` as a read-only file: a request body that the client reads
    as it sends it (and again from the start if it retries), with no joined copy."""

    def __init__(self, views: list[memoryview]) -> None:
        super().__init__()
        self._views = views
        self._size = sum(view.nbytes for view in views)
        self._position = 0

    def __len__(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        want = self._size - self._position if size is None or size < 0 else size
        return b"".join(self._take(want))

    def readinto(self, buffer: Buffer) -> int:
        target = byte_view(buffer)
        done = 0
        for piece in self._take(target.nbytes):
            target[done : done + piece.nbytes] = piece
            done += piece.nbytes
        return done

    def _take(self, want: int) -> list[memoryview]:
        """The next ``want`` bytes at most, as slices of the views."""
        pieces, at = [], 0
        for view in self._views:
            start = self._position - at
            if want and 0 <= start < view.nbytes:
                pieces.append(view[start : start + want])
                want -= pieces[-1].nbytes
                self._position += pieces[-1].nbytes
            at += view.nbytes
        return pieces


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
