"""Integrity: the crc32c of every object, kept in its name and checked on every full read.

The name of each object says its codec and crc32c (see :mod:`typedstore.keys`), so a
store alone says how to decode each object and whether its bytes are the ones written.

CRC-32C because processors compute it in hardware, several times faster than a disk or
the page cache moves bytes; S3 checks it natively on upload; and it detects every error
of up to 3 bits and every burst up to 32 bits. (xxh3 is faster still, but no storage
checks it.) Large objects are checksummed on a thread of their own while their bytes are
written or read, so integrity costs little beside the I/O.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import crc32c as _crc32c

from typedstore.errors import IntegrityError
from typedstore.policy import CHECK_PIECE
from typedstore.protocols import Buffer, Reader, byte_view

__all__ = [
    "CheckedReader",
    "Crc32cHash",
    "check_view",
    "crc32c",
    "crc32c_of",
    "mismatch",
    "summing",
]


def crc32c(data: Buffer, value: int = 0) -> int:
    """The CRC-32C of ``data``, continuing from ``value`` (the CRC of what came before)."""
    return int(_crc32c.crc32c(data, value))


def crc32c_of(chunks: Sequence[Buffer]) -> int:
    """The CRC-32C of the concatenation of ``chunks``."""
    value = 0
    for chunk in chunks:
        value = crc32c(chunk, value)
    return value


class Crc32cHash:
    """A running crc32c with hashlib's ``update`` and ``hexdigest``."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def update(self, data: Buffer, /) -> None:
        """Continue the checksum over ``data``."""
        self.value = crc32c(data, self.value)

    def hexdigest(self) -> str:
        """The checksum as 8 hex digits, as object names hold it."""
        return f"{self.value:08x}"


def mismatch(
    what: object, expected: int | str, actual: int | str, algorithm: str = "crc32c"
) -> IntegrityError:
    """The error for the bytes of ``what`` whose checksum is ``actual`` where ``expected``
    was written (crc32c as ints, digests as hex text)."""
    if isinstance(expected, int) and isinstance(actual, int):
        expected, actual = f"{expected:08x}", f"{actual:08x}"
    return IntegrityError(
        f"{what}: the stored bytes do not match their {algorithm} (written {expected}, "
        f"read {actual}): the object was damaged or replaced"
    )


# --- checksums beside the I/O ---------------------------------------------------------

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _thread() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            # One thread: pieces of an object are summed in order, each continuing the last.
            _pool = ThreadPoolExecutor(1, thread_name_prefix="typedstore-crc32c")
        return _pool


def _forget_in_child() -> None:
    # A forked child has the pool object but not its thread.
    global _pool, _lock
    _pool = None
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def summing(chunks: Sequence[Buffer]) -> Future[int]:
    """The crc32c of ``chunks``, computed on a thread of its own while the caller writes
    them; the chunks must not change until it is done."""
    return _thread().submit(crc32c_of, chunks)


class CheckedReader:
    """A reader that sums the bytes it hands out and, in :meth:`check`, compares the
    object's crc32c with the one it was written with.

    Bytes are summed in order as reads reach them; bytes a decoder skips or reads out of
    order are read again by :meth:`check`, so any read pattern is checked exactly. Large
    reads are summed a piece at a time on another thread while the next piece is read.
    """

    __slots__ = ("_done", "_expected", "_inner", "_value", "_what", "size")

    def __init__(self, inner: Reader, expected: int, what: object) -> None:
        self._inner = inner
        self._expected = expected
        self._what = what
        self.size = inner.size
        # The crc32c of the object's first _done bytes.
        self._done = 0
        self._value = 0

    def read(self, start: int, length: int) -> bytes:
        """``length`` bytes from ``start`` (fewer at the end), summed."""
        data = self._inner.read(start, length)
        self._sum(start, memoryview(data))
        return data

    def readinto(self, start: int, *buffers: Buffer) -> int:
        """Fill ``buffers`` from ``start`` and sum what they received."""
        views = [byte_view(buffer) for buffer in buffers]
        total = sum(view.nbytes for view in views)
        if not start <= self._done < start + total or total < 2 * CHECK_PIECE:
            got = self._inner.readinto(start, *buffers)
            at = start
            for view in views:
                if at >= start + got:
                    break
                self._sum(at, view[: start + got - at])
                at += view.nbytes
            return got
        return self._pipelined(start, views)

    def _pipelined(self, start: int, views: list[memoryview]) -> int:
        # Read piece n+1 while piece n is summed: the read waits on the disk or the
        # network, the sum on memory, and they overlap. The read starts at or before the
        # bytes summed so far; what it reads again is not summed again.
        pending: Future[int] | None = None
        got = 0
        try:
            for view in views:
                for offset in range(0, view.nbytes, CHECK_PIECE):
                    piece = view[offset : offset + CHECK_PIECE]
                    n = self._inner.readinto(start + got, piece)
                    new = piece[max(0, self._done - start - got) : n]
                    if new.nbytes:
                        if pending is not None:
                            self._value = pending.result()
                        pending = _thread().submit(crc32c, new, self._value)
                        self._done = start + got + n
                    got += n
                    if n < piece.nbytes:
                        return got
            return got
        finally:
            if pending is not None:
                self._value = pending.result()

    def _sum(self, start: int, view: memoryview) -> None:
        end = start + view.nbytes
        if start > self._done and start - self._done <= CHECK_PIECE:
            self._fill(start)  # a small gap (padding, a skipped magic): sum it now
        if start <= self._done < end:
            self._value = crc32c(view[self._done - start :], self._value)
            self._done = end

    def _fill(self, end: int) -> None:
        buffer = memoryview(bytearray(min(CHECK_PIECE, end - self._done)))
        while self._done < end:
            piece = buffer[: min(buffer.nbytes, end - self._done)]
            got = self._inner.readinto(self._done, piece)
            if not got:
                break
            self._value = crc32c(piece[:got], self._value)
            self._done += got

    def check(self) -> None:
        """Sum what was not read yet; raise IntegrityError if the object's crc32c is not
        the one it was written with."""
        if self._done < self.size:
            self._fill(self.size)
        if self._done != self.size or self._value != self._expected:
            raise mismatch(self._what, self._expected, self._value)


def check_view(what: object, expected: int, data: Buffer) -> None:
    """Raise IntegrityError if ``data``'s crc32c is not ``expected``."""
    actual = crc32c(byte_view(data))
    if actual != expected:
        raise mismatch(what, expected, actual)
