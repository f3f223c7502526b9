"""The ``safetensors`` codec: numpy arrays as standard safetensors files.

The byte layout is the safetensors format: an 8-byte little-endian header length ``N``,
``N`` bytes of JSON header (padded with spaces so that the data starts at a multiple of 8,
or of 4096 for a MiB of data or more), then the tensor data.
:func:`encode_tensors` and :func:`read_header` are the shared building blocks for every
typedstore format built on safetensors.
"""

from __future__ import annotations

import functools
import math
import operator
import struct
from collections.abc import Callable, Mapping, Sequence
from json.encoder import encode_basestring_ascii
from typing import Any, ClassVar, NamedTuple

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
    "header_bytes",
    "header_bytes_from",
    "header_size",
    "parse_header",
    "read_header",
    "read_header_from",
    "read_tensor",
    "read_tensors",
    "supports_dtype",
    "view_tensor",
]

#: The official parser's cap on the JSON header (100 MB).
MAX_HEADER_SIZE = 100_000_000
_MAX_NDIM = 64
_METADATA = "__metadata__"
# Stores hold many objects of one layout (same names, dtypes and shapes), whose headers
# are equal byte for byte. Both directions keep a bounded number of small headers: the
# encoder the header built for a layout, the parser the validated result for a header's
# bytes and the file's size (all that result depends on). Both full: about 3 MB
# (tracemalloc, headers of 2 KiB padded to a page).
_CACHED_HEADER_MAX = 2048
_CACHED_HEADERS = 128
_COPY_MAX = 4096
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


class TensorEntry(NamedTuple):
    """One tensor in a safetensors file: dtype, shape and absolute byte range."""

    # A named tuple: a header of thousands of tensors makes thousands of these.

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

    Arrays that are C-contiguous and little-endian are not copied (small ones, up to
    4 KiB, are: then the whole file is one chunk), nor are the buffers of byte tensors.
    Data is laid out by decreasing item size, as the official library does, so every
    tensor is aligned.
    """
    signature: list[tuple[str, str, tuple[int, ...]]] = []
    data: list[Sequence[Buffer]] = []
    copied = True  # whether every tensor's data is a bytes copy (then one chunk is returned)
    for name, source in tensors.items():
        if type(name) is not str:
            raise EncodeError(f"tensor names must be str, got {type(name).__name__}")
        if name == _METADATA:
            raise EncodeError(f"tensor name {_METADATA!r} is reserved")
        if isinstance(source, np.ndarray):
            dtype = _little(source.dtype)
            dtype_name = _NAMES.get(dtype)
            if dtype_name is None:
                raise EncodeError(f"safetensors cannot hold dtype {source.dtype} (tensor {name!r})")
            array = np.asarray(source, dtype=dtype, order="C")
            size = array.nbytes
            if size > _COPY_MAX:
                data.append([array.data.cast("B")])
                copied = False
            else:
                # Small data is joined with the header before it is written anyway, and
                # a copy of it costs less than a view.
                data.append([array.tobytes()] if size else [])
            signature.append((name, dtype_name, array.shape))
        else:
            views = [byte_view(chunk) for chunk in source]
            size = 0
            for view in views:
                size += view.nbytes
            data.append(views)
            signature.append((name, "U8", (size,)))
            copied = False
    # Values of one layout (names, dtypes, shapes, metadata) share one header: it is built
    # once and kept, as most of a small value's encoding time is spent building it.
    key = (tuple(signature), tuple(metadata.items()) if metadata else ())
    try:
        cached = _headers.get(key)
    except TypeError:  # unhashable metadata: refused by _header below
        cached = None
    if cached is None:
        cached = _header(signature, metadata)
        if _cacheable(cached[0]):
            if len(_headers) >= _CACHED_HEADERS:
                _headers.clear()
            _headers[key] = cached
    header, order = cached
    body = [chunk for index in order for chunk in data[index]]
    if copied:
        return [b"".join([header, *body])]
    return [header, *body]


_headers: dict[object, tuple[bytes, tuple[int, ...]]] = {}


def _cacheable(header: bytes) -> bool:
    """Whether a header is small enough to keep: up to _CACHED_HEADER_MAX bytes, not
    counting the whitespace that pads the data of large objects to a page boundary."""
    return len(header) <= _CACHED_HEADER_MAX or (
        len(header) <= _CACHED_HEADER_MAX + _PAGE and header[_CACHED_HEADER_MAX:].isspace()
    )


def _header(
    signature: Sequence[tuple[str, str, tuple[int, ...]]], metadata: Mapping[str, str] | None
) -> tuple[bytes, tuple[int, ...]]:
    """The header (with its length) for tensors of these names, dtypes and shapes, and the
    order their data is laid out in."""
    itemsizes = [_DTYPES[dtype_name].itemsize for _, dtype_name, _ in signature]
    order = tuple(sorted(range(len(signature)), key=lambda index: -itemsizes[index]))
    offsets: list[tuple[int, int]] = [(0, 0)] * len(signature)
    offset = 0
    for index in order:
        size = math.prod(signature[index][2]) * itemsizes[index]
        offsets[index] = (offset, offset + size)
        offset += size
    # Written by hand in exactly the form json.dumps gives (compact, ASCII), in order:
    # metadata, then the tensors as given.
    parts = []
    if metadata:
        items = ",".join(f"{_json_str(k)}:{_json_str(v)}" for k, v in metadata.items())
        parts.append(f'"{_METADATA}":{{{items}}}')
    for (name, dtype_name, shape), (begin, end) in zip(signature, offsets, strict=True):
        parts.append(
            f'{_json_str(name)}:{{"dtype":"{dtype_name}","shape":[{",".join(map(str, shape))}],'
            f'"data_offsets":[{begin},{end}]}}'
        )
    raw = f"{{{','.join(parts)}}}".encode("ascii")
    # The data starts at a multiple of 8 (so every tensor is aligned to its item size) and,
    # with a MiB of it or more, at a page boundary, as in a raw file of the same arrays:
    # read into freshly mapped memory, 100 arrays of 1 MiB took 57-58 ms from byte 8536
    # of a file and 52-53 ms from byte 8192. The padding (spaces, which the format allows
    # after the JSON) is then at most 0.4% of the file.
    align = _PAGE if offset >= _PAGE_ALIGN_MIN else 8
    raw += b" " * (-(8 + len(raw)) % align)
    return struct.pack("<Q", len(raw)) + raw, order


_PAGE = 4096
_PAGE_ALIGN_MIN = 1 << 20


def _json_str(value: str) -> str:
    if type(value) is not str:
        raise EncodeError(f"safetensors header strings must be str, got {type(value).__name__}")
    return encode_basestring_ascii(value)


def header_size(first8: Buffer, total: int) -> int:
    """The header length ``N`` from the first 8 bytes of ``first8``, checked against
    the file size."""
    if total < 8 or memoryview(first8).nbytes < 8:
        raise DecodeError(f"safetensors: {total} bytes is too short for a header")
    size: int = _unpack_size(first8)[0]
    if size > MAX_HEADER_SIZE:
        raise DecodeError(f"safetensors: header of {size} bytes exceeds {MAX_HEADER_SIZE}")
    if 8 + size > total:
        raise DecodeError(f"safetensors: header of {size} bytes runs past the end ({total})")
    return size


_unpack_size = struct.Struct("<Q").unpack_from


def read_header(data: Buffer) -> tuple[dict[str, TensorEntry], dict[str, str]]:
    """Parse and validate the header of a whole safetensors file in memory."""
    entries, metadata = _validated(data)
    return dict(entries), dict(metadata)


def _validated(data: Buffer) -> tuple[Mapping[str, TensorEntry], Mapping[str, str]]:
    """:func:`read_header` for the decoders' own use: the result may be shared with
    other callers and must not be changed."""
    return _shared(header_bytes(data), memoryview(data).nbytes)


def header_bytes(data: Buffer) -> bytes:
    """The ``N`` header bytes of a whole file in memory, its length checked (not parsed)."""
    view = memoryview(data)
    return bytes(view[8 : 8 + header_size(view, view.nbytes)])


def header_bytes_from(reader: Reader) -> bytes:
    """:func:`header_bytes` of the file behind ``reader``: one read of its first 16 KiB,
    and a second one for the rest of a longer header."""
    # One read for the length and, most often, the whole header: a lazy DataStore's open
    # is mostly system calls, and headers are rarely longer (about 85 bytes an entry).
    first = reader.read(0, _FIRST_READ)
    size = header_size(first, reader.size)
    if 8 + size <= len(first):
        return first[8 : 8 + size]
    return first[8:] + reader.read(len(first), 8 + size - len(first))


_FIRST_READ = 16 << 10


def parse_header(header: Buffer, total: int) -> tuple[dict[str, TensorEntry], dict[str, str]]:
    """Validate a header (the ``N`` bytes after the length) of a file of ``total`` bytes.

    Checks everything the official parser checks before any tensor is touched: strict
    JSON, known dtypes, dtype x shape = byte length, offsets in bounds, contiguous,
    non-overlapping and exactly covering the data. Returns the tensors (in header order,
    with absolute byte ranges) and the metadata. Raises DecodeError.
    """
    entries, metadata = _shared(bytes(header), total)
    # The result may be cached and shared: every caller gets its own (entries are frozen).
    return dict(entries), dict(metadata)


def _shared(raw: bytes, total: int) -> tuple[dict[str, TensorEntry], dict[str, str]]:
    """:func:`parse_header`, from the cache for small headers (not to be changed)."""
    if not _cacheable(raw):
        return _parse_header(raw, total)
    return _parse_header_cached(raw, total)


@functools.lru_cache(maxsize=_CACHED_HEADERS)
def _parse_header_cached(raw: bytes, total: int) -> tuple[dict[str, TensorEntry], dict[str, str]]:
    return _parse_header(raw, total)


def _parse_header(raw: bytes, total: int) -> tuple[dict[str, TensorEntry], dict[str, str]]:
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
    for entry in sorted(entries.values(), key=_by_range):
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


_by_range = operator.attrgetter("start", "end")


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
    count = bound = 1
    for dim in shape:
        if type(dim) is not int or dim < 0:
            raise DecodeError(f"safetensors: tensor {name!r} has an invalid shape")
        count *= dim
        bound *= dim or 1
    if bound * dtype.itemsize > _MAX_ARRAY_BYTES:
        # numpy refuses such a shape even with a zero in it: an array it cannot make.
        raise DecodeError(f"safetensors: tensor {name!r} has a shape too large: {shape}")
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
    # tuple.__new__ skips the named tuple's Python-level __new__: a third of this call.
    return _new_tuple(TensorEntry, (name, dtype, tuple(shape), base + begin, base + end))


_new_tuple = tuple.__new__
_MAX_ARRAY_BYTES = (1 << 63) - 1


def read_header_from(reader: Reader) -> tuple[dict[str, TensorEntry], dict[str, str]]:
    """:func:`read_header` for a file behind a reader: reads only the header's bytes."""
    return parse_header(header_bytes_from(reader), reader.size)


def read_tensor(reader: Reader, entry: TensorEntry) -> npt.NDArray[Any]:
    """A fresh array read straight from storage into its own memory."""
    out = np.empty(entry.shape, dtype=entry.dtype)
    _fill(reader, entry, out)
    return out


def read_tensors(reader: Reader, entries: Sequence[TensorEntry]) -> list[npt.NDArray[Any]]:
    """:func:`read_tensor` for each of ``entries``: tensors that lie back to back in the
    file are read with one vectored call where the reader offers ``readinto_many``."""
    out = [np.empty(entry.shape, dtype=entry.dtype) for entry in entries]
    readinto_many = getattr(reader, "readinto_many", None)
    if readinto_many is None:
        for entry, array in zip(entries, out, strict=True):
            _fill(reader, entry, array)
        return out
    order = sorted(range(len(entries)), key=list(map(_by_range, entries)).__getitem__)
    run: list[int] = []
    for index in [*order, -1]:
        if run and (index < 0 or entries[index].start != entries[run[-1]].end):
            targets = [out[i] for i in run]  # fresh arrays: C-contiguous buffers
            expected = entries[run[-1]].end - entries[run[0]].start
            if readinto_many(entries[run[0]].start, targets) != expected:
                raise DecodeError("safetensors: the file is truncated")
            run = []
        if index >= 0:
            run.append(index)
    return out


def _fill(reader: Reader, entry: TensorEntry, out: npt.NDArray[Any]) -> None:
    if entry.nbytes and reader.readinto(entry.start, out.reshape(-1).view(np.uint8).data) != (
        entry.nbytes
    ):
        raise DecodeError(f"safetensors: tensor {entry.name!r} is truncated")


def view_tensor(data: Buffer, entry: TensorEntry) -> npt.NDArray[Any]:
    """A read-only array sharing memory with ``data`` (no copy)."""
    if not entry.nbytes:
        return np.empty(entry.shape, dtype=entry.dtype)
    flat = np.frombuffer(memoryview(data), dtype=entry.dtype, count=math.prod(entry.shape),
                         offset=entry.start)  # fmt: skip
    return flat.reshape(entry.shape)


# Up to _SHARED_MAX, decode_from reads a file whole and its arrays share that buffer: one
# system call and no copies for small values, and a kept array pins at most this much.
# Up to _READ_WHOLE_MAX, it reads the file whole and copies each array out; beyond, it
# reads each array straight into its own memory.
_SHARED_MAX = 64 << 10
_READ_WHOLE_MAX = 1 << 20


def _share(buffer: bytearray, entry: TensorEntry) -> npt.NDArray[Any]:
    array: npt.NDArray[Any] = np.ndarray(entry.shape, entry.dtype, buffer, entry.start)
    # Python aligns a bytearray's memory to 16 bytes, and no supported dtype needs more
    # than 8, so only an offset that is not a multiple of 8 (from another writer) can
    # misalign a tensor: such a tensor is copied, as numpy is slow on unaligned data.
    if entry.start & 7 and not array.flags.aligned:
        array = array.copy()
    return array


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
        # Runs on every dispatch of a dict: names bound once, not looked up per item.
        ndarray, supported = np.ndarray, _SUPPORTED
        for k, v in value.items():
            if type(k) is not str or type(v) is not ndarray or v.dtype not in supported:
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
        """As :meth:`decode`, reading each tensor straight into its result's memory.

        A small file is read whole into one fresh buffer that its arrays then share
        (each array has its own part of it, writable; nothing else refers to it).
        """
        size = reader.size
        if size <= _SHARED_MAX:
            buffer = bytearray(size)
            if reader.readinto(0, buffer) != size:
                raise DecodeError("safetensors: the file was truncated while being read")
            entries, metadata = _validated(buffer)
            single = _single(entries, metadata, expected_type)
            if single is not None:
                return _share(buffer, single)
            return {name: _share(buffer, entry) for name, entry in entries.items()}
        if size <= _READ_WHOLE_MAX:
            # One read and a copy per tensor cost less than a read per tensor.
            return self.decode(memoryview(reader.read(0, size)), expected_type)
        entries, metadata = read_header_from(reader)
        single = _single(entries, metadata, expected_type)
        if single is not None:
            return read_tensor(reader, single)
        return dict(zip(entries, read_tensors(reader, list(entries.values())), strict=True))

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
    single = _single(entries, metadata, expected_type)
    if single is not None:
        return load(single)
    return {name: load(entry) for name, entry in entries.items()}


def _single(
    entries: Mapping[str, TensorEntry], metadata: Mapping[str, str], expected_type: type[Any] | None
) -> TensorEntry | None:
    """The tensor to decode as a lone array, or None to decode a dict of them."""
    kind = metadata.get(_KIND)
    if kind == "ndarray" or (
        kind != "dict" and expected_type is not None and issubclass(expected_type, np.ndarray)
    ):
        if len(entries) != 1:
            raise DecodeError(
                f"safetensors: expected one array, the file holds {len(entries)} tensors"
            )
        (entry,) = entries.values()
        return entry
    return None
