"""The layout of an Arrow IPC file, read only as far as bounding what decoding it costs.

pyarrow allocates, for each compressed buffer, as many bytes as the buffer's first eight
declare, before it decompresses anything. This module reads the footer and each record
batch's message (small flatbuffers) and those declarations, so that a file declaring
more than it could hold is refused before pyarrow sees it. Everything else (schemas,
buffer contents) is left to pyarrow's own validation.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from typedstore.errors import DecodeError

__all__ = ["declared_size"]

_MAGIC = b"ARROW1"
_CONTINUATION = b"\xff\xff\xff\xff"
# Message header kinds (Message.fbs): the two that carry buffers.
_DICTIONARY_BATCH, _RECORD_BATCH = 2, 3
_BLOCK = struct.Struct("<qi4xq")  # offset, metaDataLength, (padding), bodyLength
_BUFFER = struct.Struct("<qq")  # offset, length
_INT64 = struct.Struct("<q")


def declared_size(read: Callable[[int, int], bytes], size: int) -> int:
    """The bytes a file of ``size`` bytes declares its compressed buffers hold once
    decompressed (0 if none is compressed); ``read(start, length)`` reads the file.

    Raises DecodeError if the file's structure points outside the file.
    """
    tail = len(_MAGIC) + 4
    # As pyarrow does, only the magic at the end is looked at (and read once).
    end = read(size - tail, tail) if size >= 2 * tail else b""
    if end[4:] != _MAGIC:
        raise DecodeError("arrow: not an Arrow IPC file (no ARROW1 magic at the end)")
    footer_length = _unpack(end, 0, "<i")
    if not 0 < footer_length <= size - 2 * tail:
        raise DecodeError(f"arrow: the footer's length {footer_length} is past the file")
    footer = _Table.root(read(size - tail - footer_length, footer_length))
    blocks = footer.structs(2, _BLOCK) + footer.structs(3, _BLOCK)  # dictionaries, batches
    declared = 0
    for offset, metadata_length, body_length in blocks:
        if min(offset, metadata_length, body_length) < 0 or (
            offset + metadata_length + body_length > size
        ):
            raise DecodeError(f"arrow: a record batch at byte {offset} ends past the file")
        declared += _batch_declared(read, offset, metadata_length, body_length)
    return declared


def _batch_declared(
    read: Callable[[int, int], bytes], offset: int, metadata_length: int, body_length: int
) -> int:
    metadata = read(offset, metadata_length)
    start = 8 if metadata[:4] == _CONTINUATION else 4
    message = _Table.root(metadata[start:])
    kind = message.scalar(1, "<B", 0)
    header = message.table(2)
    if header is not None and kind == _DICTIONARY_BATCH:
        header = header.table(1)
    if header is None or kind not in (_DICTIONARY_BATCH, _RECORD_BATCH):
        raise DecodeError(f"arrow: the block at byte {offset} is not a record batch")
    compressed = header.table(3) is not None
    body = offset + metadata_length
    declared = 0
    for buffer_offset, length in header.structs(2, _BUFFER):
        if min(buffer_offset, length) < 0 or buffer_offset + length > body_length:
            raise DecodeError(f"arrow: a buffer of the batch at byte {offset} is past its body")
        if compressed and length >= _INT64.size:
            # Each compressed buffer starts with its decompressed length (-1: stored as is).
            declared += max(_INT64.unpack(read(body + buffer_offset, _INT64.size))[0], 0)
    return declared


class _Table:
    """A flatbuffer table: its fields by index, every offset checked against the data."""

    __slots__ = ("_data", "_start", "_vtable", "_vtable_size")

    def __init__(self, data: bytes, start: int) -> None:
        self._data = data
        self._start = start
        self._vtable = start - _unpack(data, start, "<i")
        self._vtable_size = _unpack(data, self._vtable, "<H")

    @classmethod
    def root(cls, data: bytes) -> _Table:
        return cls(data, _unpack(data, 0, "<I"))

    def _field(self, index: int) -> int:
        entry = 4 + 2 * index
        if entry + 2 > self._vtable_size:
            return 0
        offset = _unpack(self._data, self._vtable + entry, "<H")
        return self._start + offset if offset else 0

    def scalar(self, index: int, fmt: str, default: int) -> int:
        at = self._field(index)
        return _unpack(self._data, at, fmt) if at else default

    def table(self, index: int) -> _Table | None:
        at = self._field(index)
        return _Table(self._data, at + _unpack(self._data, at, "<I")) if at else None

    def structs(self, index: int, layout: struct.Struct) -> list[tuple[int, ...]]:
        at = self._field(index)
        if not at:
            return []
        vector = at + _unpack(self._data, at, "<I")
        count = _unpack(self._data, vector, "<I")
        if vector + 4 + count * layout.size > len(self._data):
            raise DecodeError("arrow: a flatbuffer vector runs past its message")
        return list(layout.iter_unpack(self._data[vector + 4 : vector + 4 + count * layout.size]))


def _unpack(data: bytes, at: int, fmt: str) -> int:
    if not 0 <= at <= len(data) - struct.calcsize(fmt):
        raise DecodeError("arrow: a flatbuffer offset points outside its message")
    value: int = struct.unpack_from(fmt, data, at)[0]
    return value
