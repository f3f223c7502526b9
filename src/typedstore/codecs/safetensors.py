"""The ``safetensors`` codec: numpy arrays as standard safetensors files.

The byte layout is the safetensors format: an 8-byte little-endian header length ``N``,
``N`` bytes of JSON header (padded with spaces to a multiple of 8), then the tensor data.
:func:`encode_tensors` and :func:`read_header` are the shared building blocks for every
typedstore format built on safetensors.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import attrs
import numpy as np
import numpy.typing as npt

from typedstore import _strictjson
from typedstore.codec import Buffer, Reader, byte_view
from typedstore.errors import DecodeError, EncodeError

__all__ = [
    "MAX_HEADER_SIZE",
    "SafetensorsCodec",
    "TensorEntry",
    "TensorSource",
    "decode_tensor",
    "encode_tensors",
    "header_size",
    "parse_header",
    "read_header",
    "read_header_from",
    "read_tensor",
    "supports_dtype",
    "view_tensor",
]

#: The official parser's cap on the JSON header (100 MB).
MAX_HEADER_SIZE = 100_000_000
_MAX_NDIM = 64
_METADATA = "__metadata__"
_KIND = "typedstore.kind"
_SINGLE_NAME = "data"

_DTYPES: Mapping[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype("<u1"),
    "I8": np.dtype("<i1"),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F16": np.dtype("<f2"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "C64": np.dtype("<c8"),
}
_NAMES: Mapping[np.dtype[Any], str] = {dtype: name for name, dtype in _DTYPES.items()}
# Both byte orders: accepts() runs on every dispatch, so one set lookup, no conversion.
_SUPPORTED = frozenset(_NAMES) | frozenset(dtype.newbyteorder(">") for dtype in _NAMES)


def _little(dtype: np.dtype[Any]) -> np.dtype[Any]:
    return dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype


def supports_dtype(dtype: np.dtype[Any]) -> bool:
    """Whether safetensors can hold arrays of ``dtype`` (in either byte order)."""
    return dtype in _SUPPORTED


@attrs.frozen
class TensorEntry:
    """One tensor in a safetensors file: dtype, shape and absolute byte range."""

    name: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        """Length of the tensor's data."""
        return self.end - self.start


#: A tensor to write: an array, or the buffers of a ``U8`` 1-D tensor (written in order).
TensorSource = npt.NDArray[Any] | Sequence[Buffer]


def encode_tensors(
    tensors: Mapping[str, TensorSource], metadata: Mapping[str, str] | None = None
) -> list[Buffer]:
    """A safetensors file as buffers: the header, then each tensor's own memory.

    Arrays that are C-contiguous and little-endian are not copied, nor are the buffers of
    byte tensors. Data is laid out by decreasing item size, as the official library does,
    so every tensor is aligned.
    """
    layout: list[tuple[str, str, list[int], int, list[Buffer]]] = []
    for name, source in tensors.items():
        chunks: list[Buffer]
        if name == _METADATA:
            raise EncodeError(f"tensor name {_METADATA!r} is reserved")
        if isinstance(source, np.ndarray):
            dtype = _little(source.dtype)
            if dtype not in _NAMES:
                raise EncodeError(f"safetensors cannot hold dtype {source.dtype} (tensor {name!r})")
            array = np.asarray(source, dtype=dtype, order="C")
            chunks = [array.reshape(-1).view(np.uint8).data] if array.nbytes else []
            layout.append((name, _NAMES[dtype], list(array.shape), dtype.itemsize, chunks))
        else:
            chunks = [byte_view(chunk) for chunk in source]
            size = sum(memoryview(chunk).nbytes for chunk in chunks)
            layout.append((name, "U8", [size], 1, chunks))
    header: dict[str, Any] = {}
    if metadata:
        header[_METADATA] = dict(metadata)
    offsets: dict[str, list[int]] = {}
    body: list[Buffer] = []
    offset = 0
    for name, _, _, _, chunks in sorted(layout, key=lambda item: -item[3]):
        size = sum(memoryview(chunk).nbytes for chunk in chunks)
        offsets[name] = [offset, offset + size]
        offset += size
        body.extend(chunks)
    for name, dtype_name, shape, _, _ in layout:
        header[name] = {"dtype": dtype_name, "shape": shape, "data_offsets": offsets[name]}
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    raw += b" " * (-len(raw) % 8)
    return [struct.pack("<Q", len(raw)) + raw, *body]


def header_size(first8: Buffer, total: int) -> int:
    """The header length ``N`` from a file's first 8 bytes, checked against the file size."""
    view = memoryview(first8)
    if total < 8 or view.nbytes < 8:
        raise DecodeError(f"safetensors: {total} bytes is too short for a header")
    (size,) = struct.unpack("<Q", view[:8])
    if size > MAX_HEADER_SIZE:
        raise DecodeError(f"safetensors: header of {size} bytes exceeds {MAX_HEADER_SIZE}")
    if 8 + size > total:
        raise DecodeError(f"safetensors: header of {size} bytes runs past the end ({total})")
    return int(size)


def read_header(data: Buffer) -> tuple[dict[str, TensorEntry], dict[str, str]]:
    """Parse and validate the header of a whole safetensors file in memory."""
    view = memoryview(data)
    size = header_size(view[:8], view.nbytes)
    return parse_header(view[8 : 8 + size], view.nbytes)


def parse_header(header: Buffer, total: int) -> tuple[dict[str, TensorEntry], dict[str, str]]:
    """Validate a header (the ``N`` bytes after the length) of a file of ``total`` bytes.

    Checks everything the official parser checks before any tensor is touched: strict
    JSON, known dtypes, dtype x shape = byte length, offsets in bounds, contiguous,
    non-overlapping and exactly covering the data. Returns the tensors (in header order,
    with absolute byte ranges) and the metadata. Raises DecodeError.
    """
    raw = bytes(header)
    try:
        parsed = _strictjson.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise DecodeError(f"safetensors: header is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise DecodeError("safetensors: header is not a JSON object")
    metadata = parsed.pop(_METADATA, {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise DecodeError("safetensors: __metadata__ must map strings to strings")
    base = 8 + len(raw)
    entries = {name: _entry(name, info, base) for name, info in parsed.items()}
    position = base
    for entry in sorted(entries.values(), key=lambda e: (e.start, e.end)):
        if entry.start != position:
            raise DecodeError(
                f"safetensors: tensor {entry.name!r} does not start where the previous "
                "one ends (gap or overlap)"
            )
        position = entry.end
    if position != total:
        raise DecodeError(
            f"safetensors: tensors cover {position - base} bytes, file holds {total - base}"
        )
    return entries, metadata


def _entry(name: str, info: Any, base: int) -> TensorEntry:
    # Runs once per tensor on every read: plain loops, no generator expressions.
    if type(info) is not dict or len(info) != 3:
        raise DecodeError(
            f"safetensors: tensor {name!r} must have exactly dtype, shape and data_offsets"
        )
    try:
        dtype_name, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    except KeyError:
        raise DecodeError(
            f"safetensors: tensor {name!r} must have exactly dtype, shape and data_offsets"
        ) from None
    dtype = _DTYPES.get(dtype_name) if type(dtype_name) is str else None
    if dtype is None:
        raise DecodeError(f"safetensors: tensor {name!r} has unsupported dtype {dtype_name!r}")
    if type(shape) is not list or len(shape) > _MAX_NDIM:
        raise DecodeError(f"safetensors: tensor {name!r} has an invalid shape")
    count = 1
    for dim in shape:
        if type(dim) is not int or dim < 0:
            raise DecodeError(f"safetensors: tensor {name!r} has an invalid shape")
        count *= dim
    if type(offsets) is not list or len(offsets) != 2:
        raise DecodeError(f"safetensors: tensor {name!r} has invalid data_offsets")
    begin, end = offsets
    if type(begin) is not int or type(end) is not int or not 0 <= begin <= end:
        raise DecodeError(f"safetensors: tensor {name!r} has invalid data_offsets")
    if end - begin != count * dtype.itemsize:
        raise DecodeError(
            f"safetensors: tensor {name!r}: shape {shape} of {dtype_name} needs "
            f"{count * dtype.itemsize} bytes, offsets give {end - begin}"
        )
    return TensorEntry(name, dtype, tuple(shape), base + begin, base + end)


def read_header_from(reader: Reader) -> tuple[dict[str, TensorEntry], dict[str, str]]:
    """:func:`read_header` for a file behind a reader: reads only the header's bytes."""
    size = header_size(reader.read(0, 8), reader.size)
    return parse_header(reader.read(8, size), reader.size)


def read_tensor(reader: Reader, entry: TensorEntry) -> npt.NDArray[Any]:
    """A fresh array read straight from storage into its own memory."""
    out = np.empty(entry.shape, dtype=entry.dtype)
    if entry.nbytes and reader.readinto(entry.start, out.reshape(-1).view(np.uint8).data) != (
        entry.nbytes
    ):
        raise DecodeError(f"safetensors: tensor {entry.name!r} is truncated")
    return out


def view_tensor(data: Buffer, entry: TensorEntry) -> npt.NDArray[Any]:
    """A read-only array sharing memory with ``data`` (no copy)."""
    if not entry.nbytes:
        return np.empty(entry.shape, dtype=entry.dtype)
    flat = np.frombuffer(memoryview(data), dtype=entry.dtype, count=math.prod(entry.shape),
                         offset=entry.start)  # fmt: skip
    return flat.reshape(entry.shape)


def decode_tensor(data: Buffer, entry: TensorEntry) -> npt.NDArray[Any]:
    """A fresh, writable array holding one tensor of a validated file."""
    return view_tensor(data, entry).copy()


class SafetensorsCodec:
    """``np.ndarray`` and ``dict[str, np.ndarray]`` as standard safetensors files.

    Serves exactly ``np.ndarray`` (not subclasses such as masked arrays) of the dtypes
    safetensors defines: bool, (u)int8-64, float16/32/64 and complex64; any layout and
    byte order. A single array is stored as the tensor ``data`` with metadata
    ``typedstore.kind = ndarray``; a dict as one tensor per key. Files written by other
    tools decode to a dict, or to their single array when ``np.ndarray`` is expected.
    """

    name: ClassVar[str] = "safetensors"
    version: ClassVar[int] = 1
    types: ClassVar[tuple[type, ...]] = (np.ndarray, dict)

    def accepts(self, value: object) -> bool:
        """An ndarray of a supported dtype, or a non-empty dict of them with str keys."""
        if type(value) is np.ndarray:
            return value.dtype in _SUPPORTED
        if type(value) is not dict or not value or _METADATA in value:
            return False
        for k, v in value.items():
            if type(k) is not str or type(v) is not np.ndarray or v.dtype not in _SUPPORTED:
                return False
        return True

    def encode(self, value: npt.NDArray[Any] | dict[str, npt.NDArray[Any]]) -> Sequence[Buffer]:
        """Header plus each array's memory (copied only to fix layout or byte order)."""
        if isinstance(value, np.ndarray):
            return encode_tensors({_SINGLE_NAME: value}, {_KIND: "ndarray"})
        return encode_tensors(value, {_KIND: "dict"})

    def decode(self, data: Buffer, expected_type: type[Any] | None = None) -> Any:
        """Fresh arrays: one array or a dict of them (see the class docstring)."""
        entries, metadata = read_header(data)
        return _assemble(entries, metadata, expected_type, lambda e: decode_tensor(data, e))

    def decode_from(self, reader: Reader, expected_type: type[Any] | None = None) -> Any:
        """As :meth:`decode`, reading each tensor straight into its result's memory."""
        entries, metadata = read_header_from(reader)
        return _assemble(entries, metadata, expected_type, lambda e: read_tensor(reader, e))

    def decode_view(self, data: Buffer, expected_type: type[Any] | None = None) -> Any:
        """As :meth:`decode`, but the arrays are read-only views into ``data`` (no copy)."""
        entries, metadata = read_header(data)
        return _assemble(entries, metadata, expected_type, lambda e: view_tensor(data, e))


def _assemble(
    entries: Mapping[str, TensorEntry],
    metadata: Mapping[str, str],
    expected_type: type[Any] | None,
    load: Callable[[TensorEntry], npt.NDArray[Any]],
) -> Any:
    single = metadata.get(_KIND) == "ndarray" or (
        expected_type is not None
        and issubclass(expected_type, np.ndarray)
        and metadata.get(_KIND) != "dict"
    )
    if single:
        if len(entries) != 1:
            raise DecodeError(
                f"safetensors: expected one array, the file holds {len(entries)} tensors"
            )
        (entry,) = entries.values()
        return load(entry)
    return {name: load(entry) for name, entry in entries.items()}
