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
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import crc32c as _crc32c

from typedstore.errors import IntegrityError
from typedstore.policy import CHECK_PIECE
from typedstore.protocols import Buffer, Reader, byte_view

__all__ = [
    "CheckedReader",
    "Crc32cHash",
    "check_view",
    "combine",
    "crc32c",
    "crc32c_each",
    "crc32c_of",
    "mismatch",
    "summing",
]


def crc32c(data: Buffer, value: int = 0) -> int:
    """The CRC-32C of ``data``, continuing from ``value`` (the CRC of what came before)."""
    return int(_crc32c.crc32c(data, value))


def _serial(chunks: Sequence[Buffer], value: int = 0) -> int:
    for chunk in chunks:
        value = crc32c(chunk, value)
    return value


def crc32c_of(chunks: Sequence[Buffer]) -> int:
    """The CRC-32C of the concatenation of ``chunks``; the second half of a large one is
    summed on the checksum thread meanwhile, and the two halves combined."""
    views = [byte_view(chunk) for chunk in chunks]
    total = sum(view.nbytes for view in views)
    if total < 2 * CHECK_PIECE:
        return _serial(views)
    first, second = _halves(views, total // 2)
    other = _thread().submit(_serial, second)
    value = _serial(first)
    return combine(value, other.result(), total - total // 2)


def crc32c_each(items: Sequence[Sequence[Buffer]]) -> list[int]:
    """The CRC-32C of each item's chunks: small items shared by size between this thread
    and the checksum thread, each large one split between both."""
    sizes = [sum(byte_view(chunk).nbytes for chunk in item) for item in items]
    small = [i for i, size in enumerate(sizes) if size < 2 * CHECK_PIECE]
    # Items to the lighter side, the checksum thread's from the end of the list.
    theirs: list[int] = []
    load, rest = 0, sum(sizes[i] for i in small)
    while small and load + sizes[small[-1]] <= rest - sizes[small[-1]]:
        size = sizes[small[-1]]
        load, rest = load + size, rest - size
        theirs.append(small.pop())
    other = _thread().submit(lambda: [_serial(items[i]) for i in theirs]) if theirs else None
    sums = [0] * len(items)
    for i in small:
        sums[i] = _serial(items[i])
    if other is not None:
        for i, value in zip(theirs, other.result(), strict=True):
            sums[i] = value
    for i, size in enumerate(sizes):
        if size >= 2 * CHECK_PIECE:
            sums[i] = crc32c_of(items[i])
    return sums


def _pieces(views: list[memoryview], most: int) -> Iterator[list[memoryview]]:
    """``views`` regrouped into pieces of up to ``most`` bytes (cut where needed)."""
    piece: list[memoryview] = []
    size = 0
    for view in views:
        for offset in range(0, view.nbytes, most):
            part = view[offset : offset + most]
            if piece and size + part.nbytes > most:
                yield piece
                piece, size = [], 0
            piece.append(part)
            size += part.nbytes
    if piece:
        yield piece


def _halves(views: list[memoryview], at: int) -> tuple[list[memoryview], list[memoryview]]:
    """``views`` cut in two at byte ``at`` of their concatenation."""
    for index, view in enumerate(views):
        if at <= view.nbytes:
            return [*views[:index], view[:at]], [view[at:], *views[index + 1 :]]
        at -= view.nbytes
    return views, []


# CRC-32C's polynomial, bit-reflected; and x^(2^n) modulo it for n < 64, enough for any
# length up to 2^61 bytes. (zlib's table of 32 wraps around: the powers of CRC-32's
# polynomial repeat every 32 squarings, CRC-32C's do not.)
_POLY = 0x82F63B78


def _multiply(a: int, b: int) -> int:
    """``a`` times ``b`` modulo the polynomial (bit-reflected; ``a`` is not 0)."""
    product, bit = 0, 1 << 31
    while True:
        if a & bit:
            product ^= b
            if not a & (bit - 1):
                return product
        bit >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


def _powers() -> list[int]:
    powers, power = [], 1 << 30  # x^1
    for _ in range(64):
        powers.append(power)
        power = _multiply(power, power)
    return powers


_X_2N = _powers()


def combine(first: int, second: int, length: int) -> int:
    """The CRC-32C of A + B from ``first`` (A's), ``second`` (B's) and B's ``length``: the
    first shifted by ``length`` zero bytes, as zlib's crc32_combine does for CRC-32."""
    if not 0 <= length < 1 << (len(_X_2N) - 3):
        raise ValueError(f"cannot combine checksums over {length} bytes")
    shift, n, k = 1 << 31, length, 3  # x^0; x^(8 * length) = x^(length * 2^3)
    while n:
        if n & 1:
            shift = _multiply(_X_2N[k], shift)
        n >>= 1
        k += 1
    return _multiply(shift, first) ^ second


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
    return _thread().submit(_serial, chunks)


class CheckedReader:
    """A reader that sums the bytes it hands out and, in :meth:`check`, compares the
    object's crc32c with the one it was written with.

    Bytes are summed in order as reads reach them; bytes a decoder skips or reads out of
    order are read again by :meth:`check`, so any read pattern is checked exactly. Large
    reads are summed a piece at a time on another thread while the next piece is read.
    With ``check_at_end``, the read that reaches the object's end also checks it, so that
    a writer streaming the object fails before it commits a damaged copy.
    """

    __slots__ = (
        "_at_end", "_done", "_expected", "_inner", "_piece", "_value", "_what", "size",
    )  # fmt: skip

    def __init__(
        self, inner: Reader, expected: int, what: object, *, check_at_end: bool = False
    ) -> None:
        self._inner = inner
        self._at_end = check_at_end
        # A reader that fetches several parts at once says how much it best reads a call.
        self._piece = max(CHECK_PIECE, int(getattr(inner, "piece", 0)))
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
        self._reached(start + len(data))
        return data

    def readinto(self, start: int, *buffers: Buffer) -> int:
        """Fill ``buffers`` from ``start`` and sum what they received."""
        views = [byte_view(buffer) for buffer in buffers]
        total = sum(view.nbytes for view in views)
        if not start <= self._done < start + total or total < 2 * self._piece:
            got = self._inner.readinto(start, *buffers)
            at = start
            for view in views:
                if at >= start + got:
                    break
                self._sum(at, view[: start + got - at])
                at += view.nbytes
        else:
            got = self._pipelined(start, views)
        self._reached(start + got)
        return got

    def _reached(self, end: int) -> None:
        if self._at_end and end >= self.size:
            self.check()

    def _pipelined(self, start: int, views: list[memoryview]) -> int:
        # Read piece n+1 while piece n is summed: the read waits on the disk or the
        # network, the sum on memory, and they overlap. The read starts at or before the
        # bytes summed so far; what it reads again is not summed again.
        pending: Future[int] | None = None
        got = 0
        try:
            for piece in _pieces(views, self._piece):
                n = self._inner.readinto(start + got, *piece)
                skip = max(0, self._done - start - got)
                new = _halves(_halves(piece, n)[0], skip)[1]
                if skip < n:
                    if pending is not None:
                        self._value = pending.result()
                    pending = _thread().submit(_serial, new, self._value)
                    self._done = start + got + n
                got += n
                if n < sum(view.nbytes for view in piece):
                    break
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
