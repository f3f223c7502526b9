"""The ``safetensors`` codec: numpy arrays as standard safetensors files.

The byte layout is the safetensors format: an 8-byte little-endian header length ``N``,
``N`` bytes of JSON header (padded with spaces so that the data starts at a multiple of 8,
or of 4096 for a MiB of data or more), then the tensor data.
:func:`encode_tensors`, :func:`read_header` and :func:`read_tensors` are the building
blocks of every typedstore format built on safetensors.
"""

from __future__ import annotations

import functools
import math
import operator
import struct
from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring_ascii
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple, cast

import attrs
import numpy as np
import numpy.typing as npt

from typedstore import _strictjson
from typedstore.caching import cache_by_bytes
from typedstore.errors import DecodeError, EncodeError
from typedstore.policy import (
    CACHED_HEADER_BYTES,
    CACHED_HEADER_MAX,
    CACHED_HEADER_TENSORS,
    CACHED_HEADERS,
    COPY_MAX,
    HEADER_FIRST_READ,
    LARGE,
    PAGE,
    SMALL,
)
from typedstore.protocols import Buffer, Reader, byte_view

__all__ = [
    "MAX_HEADER_SIZE",
    "Arrays",
    "Header",
    "MaskedParts",
    "RawTensor",
    "SafetensorsCodec",
    "TensorEntry",
    "TensorFile",
    "TensorFileDecoding",
    "TensorSource",
    "array_bytes",
    "copy_tensors",
    "decode_tensor",
    "encode_tensors",
    "keeps_dtype",
    "load_tensors",
    "parse_header",
    "read_header",
    "read_tensors",
    "stored_array",
    "supports_dtype",
    "tensor_file",
    "view_tensor",
    "view_tensors",
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


# The ml_dtypes types (the low-precision floats of model weights) by their safetensors
# names, as the official library's torch module reads them. The format's F4 and F6 types
# pack several values in a byte, which ml_dtypes' arrays do not. ml_dtypes is imported only
# when a file names one: an array of one exists only once it is imported anyway.
_ML_DTYPES: Mapping[str, str] = {
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "F8_E8M0": "float8_e8m0fnu",
}
_ML_NAMES: Mapping[str, str] = {name: code for code, name in _ML_DTYPES.items()}
_ITEMSIZES: Mapping[str, int] = {
    **{name: dtype.itemsize for name, dtype in _DTYPES.items()},
    **{code: 2 if code == "BF16" else 1 for code in _ML_DTYPES},
}


def _code(dtype: np.dtype[Any]) -> str | None:
    """The safetensors name of a (little-endian) dtype, None if it has none."""
    code = _NAMES.get(dtype)
    if code is None and dtype.type.__module__ == "ml_dtypes":
        code = _ML_NAMES.get(dtype.name)
    return code


def _ml_dtype(code: str) -> np.dtype[Any] | None:
    """The ml_dtypes dtype of a safetensors name, None if it names none of them."""
    name = _ML_DTYPES.get(code)
    if name is None:
        return None
    try:
        import ml_dtypes
    except ImportError:
        raise DecodeError(
            f"safetensors: dtype {code} needs the ml_dtypes package: "
            "pip install 'typedstore[ml]'"
        ) from None
    dtype: np.dtype[Any] = np.dtype(getattr(ml_dtypes, name))
    return dtype


def array_bytes(array: npt.NDArray[Any]) -> memoryview:
    """The memory of a C-contiguous array as flat bytes, writable if the array is (a
    memoryview of the array itself refuses dtypes of other packages, such as bfloat16)."""
    return array.data if array.dtype.isbuiltin == 1 else array.reshape(-1).view(np.uint8).data


def stored_array(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``array`` as a safetensors file holds it: C order, little-endian (itself if it is
    already)."""
    return np.asarray(array, dtype=_little(array.dtype), order="C")


def keeps_dtype(dtype: np.dtype[Any]) -> bool:
    """Whether arrays of ``dtype`` come back with exactly that dtype: safetensors holds it
    in the byte order it is read in (little-endian)."""
    return _code(dtype) is not None


def supports_dtype(dtype: np.dtype[Any]) -> bool:
    """Whether safetensors can hold arrays of ``dtype`` (in either byte order)."""
    return dtype in _SUPPORTED or _code(dtype) is not None


class TensorEntry(NamedTuple):
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


class RawTensor(NamedTuple):
    """A tensor to write from its bytes (C order, little-endian): its safetensors dtype
    name (``"BF16"``), shape and data. For tensors of libraries other than numpy."""

    dtype: str
    shape: tuple[int, ...]
    data: Buffer


#: A tensor to write: an array, a raw tensor, or the buffers of a ``U8`` 1-D tensor
#: (written in order).
TensorSource = npt.NDArray[Any] | RawTensor | Sequence[Buffer]


def encode_tensors(
    tensors: Mapping[str, TensorSource], metadata: Mapping[str, str] | None = None
) -> list[Buffer]:
    """A safetensors file as buffers: the header, then each tensor's own memory.

    Arrays that are C-contiguous and little-endian are not copied (small ones, up to
    ``policy.COPY_MAX``, are: then the whole file is one chunk), nor are the buffers of
    byte tensors.
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
            dtype_name = _code(_little(source.dtype))
            if dtype_name is None:
                raise EncodeError(f"safetensors cannot hold dtype {source.dtype} (tensor {name!r})")
            array = stored_array(source)
            size = array.nbytes
            if size > COPY_MAX:
                data.append([array_bytes(array)])
                copied = False
            else:
                # Small data is joined with the header before it is written anyway, and
                # a copy of it costs less than a view.
                data.append([array.tobytes()] if size else [])
            signature.append((name, dtype_name, array.shape))
        elif isinstance(source, RawTensor):  # before Sequence: a NamedTuple is one
            itemsize = _ITEMSIZES.get(source.dtype)
            view = byte_view(source.data)
            if itemsize is None or view.nbytes != math.prod(source.shape) * itemsize:
                raise EncodeError(
                    f"tensor {name!r}: {view.nbytes} bytes are not a {source.dtype} tensor "
                    f"of shape {source.shape}"
                )
            data.append([view] if view.nbytes else [])
            signature.append((name, source.dtype, tuple(source.shape)))
            copied = False
        else:
            views = [byte_view(chunk) for chunk in source]
            size = 0
            for view in views:
                size += view.nbytes
            data.append(views)
            signature.append((name, "U8", (size,)))
            copied = False
    if metadata is not None and not all(type(v) is str for v in metadata.values()):
        raise EncodeError("safetensors metadata values must be str")
    build = _header if len(signature) <= CACHED_HEADER_TENSORS else _header.__wrapped__
    header, order = build(tuple(signature), tuple(metadata.items()) if metadata else ())
    body = [chunk for index in order for chunk in data[index]]
    if copied:
        return [b"".join([header, *body])]
    return [header, *body]


# Values of one layout (names, dtypes, shapes, metadata) share one header, and building
# it is most of a small value's encoding time.
@functools.lru_cache(maxsize=CACHED_HEADERS)
def _header(
    signature: tuple[tuple[str, str, tuple[int, ...]], ...],
    metadata: tuple[tuple[str, str], ...],
) -> tuple[bytes, tuple[int, ...]]:
    """The header (with its length) for tensors of these names, dtypes and shapes, and the
    order their data is laid out in."""
    itemsizes = [_ITEMSIZES[dtype_name] for _, dtype_name, _ in signature]
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
        items = ",".join(f"{_json_str(k)}:{_json_str(v)}" for k, v in metadata)
        parts.append(f'"{_METADATA}":{{{items}}}')
    for (name, dtype_name, shape), (begin, end) in zip(signature, offsets, strict=True):
        parts.append(
            f'{_json_str(name)}:{{"dtype":"{dtype_name}","shape":[{",".join(map(str, shape))}],'
            f'"data_offsets":[{begin},{end}]}}'
        )
    raw = f"{{{','.join(parts)}}}".encode("ascii")
    # The data starts at a multiple of 8, so every tensor is aligned to its item size, and
    # large data at a page, as in a raw file: reads into fresh memory are then faster.
    # The padding is spaces, which the format allows after the JSON.
    align = PAGE if offset >= LARGE else 8
    raw += b" " * (-(8 + len(raw)) % align)
    return struct.pack("<Q", len(raw)) + raw, order


def _json_str(value: str) -> str:
    if type(value) is not str:
        raise EncodeError(f"safetensors header strings must be str, got {type(value).__name__}")
    return encode_basestring_ascii(value)


@attrs.frozen(eq=False, weakref_slot=True)
class Header:
    """A validated safetensors header: the tensors in header order (absolute byte
    ranges) and the metadata. Immutable, so that parsed headers can be shared."""

    tensors: Mapping[str, TensorEntry]
    metadata: Mapping[str, str]
    #: Each tensor's name, shape, dtype and start, and whether every start is a multiple
    #: of 8: what arrays over a whole file in memory are made from, worked out once.
    layout: tuple[tuple[str, tuple[int, ...], np.dtype[Any], int], ...] = attrs.field(
        init=False,
        default=attrs.Factory(
            lambda self: tuple((e.name, e.shape, e.dtype, e.start) for e in self.tensors.values()),
            takes_self=True,
        ),
    )
    aligned: bool = attrs.field(
        init=False,
        default=attrs.Factory(
            lambda self: all(e.start & 7 == 0 for e in self.tensors.values()), takes_self=True
        ),
    )


def read_header(source: Reader | Buffer) -> Header:
    """Read and validate the header of a safetensors file: the file behind a reader (only
    the header's bytes are read), or a whole file in memory."""
    if isinstance(source, (bytes, bytearray, memoryview)) or not hasattr(source, "readinto"):
        return _header_in(byte_view(source))
    reader = cast(Reader, source)
    # One read for the length and, most often, the whole header.
    head, total = reader.read(0, HEADER_FIRST_READ), reader.size
    size = _header_size(head, total)
    if 8 + size <= len(head):
        return parse_header(head[8 : 8 + size], total)
    return parse_header(head[8:] + reader.read(len(head), 8 + size - len(head)), total)


def _header_in(view: memoryview | bytearray) -> Header:
    """The header of a whole file in memory."""
    total = len(view)  # bytes: byte_view and bytearray are flat
    return parse_header(bytes(view[8 : 8 + _header_size(view, total)]), total)


def _header_size(first: bytes | bytearray | memoryview, total: int) -> int:
    """The header length in the first bytes of a file of ``total`` bytes, checked."""
    if total < 8 or len(first) < 8:
        raise DecodeError(f"safetensors: {total} bytes is too short for a header")
    size: int = _unpack_size(first)[0]
    if size > MAX_HEADER_SIZE:
        raise DecodeError(f"safetensors: header of {size} bytes exceeds {MAX_HEADER_SIZE}")
    if 8 + size > total:
        raise DecodeError(f"safetensors: header of {size} bytes runs past the end ({total})")
    return size


_unpack_size = struct.Struct("<Q").unpack_from


@cache_by_bytes(max_item=CACHED_HEADER_MAX, max_total=CACHED_HEADER_BYTES)
def parse_header(raw: bytes, total: int) -> Header:
    """Validate a header (the ``N`` bytes after the length) of a file of ``total`` bytes.

    Checks everything the official parser checks before any tensor is touched: strict
    JSON, known dtypes, dtype x shape = byte length, offsets in bounds, contiguous,
    non-overlapping and exactly covering the data. Raises DecodeError.
    """
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
    return Header(MappingProxyType(entries), MappingProxyType(metadata))


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
    if dtype is None and type(dtype_name) is str:
        dtype = _ml_dtype(dtype_name)
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
    return TensorEntry(name, dtype, tuple(shape), base + begin, base + end)


_MAX_ARRAY_BYTES = (1 << 63) - 1


def read_tensors(reader: Reader, entries: Sequence[TensorEntry]) -> list[npt.NDArray[Any]]:
    """Fresh arrays read straight from storage into their own memory; tensors that lie
    back to back in the file are read with one call."""
    out = [np.empty(entry.shape, dtype=entry.dtype) for entry in entries]
    order = sorted(range(len(entries)), key=list(map(_by_range, entries)).__getitem__)
    run: list[int] = []
    for index in [*order, -1]:
        if run and (index < 0 or entries[index].start != entries[run[-1]].end):
            expected = entries[run[-1]].end - entries[run[0]].start
            # Fresh arrays are C-contiguous: readers fill them as they are.
            if (
                expected
                and reader.readinto(entries[run[0]].start, *[array_bytes(out[i]) for i in run])
                != expected
            ):
                raise DecodeError("safetensors: the file is truncated")
            run = []
        if index >= 0:
            run.append(index)
    return out


def view_tensor(data: Buffer, entry: TensorEntry) -> npt.NDArray[Any]:
    """A read-only array sharing memory with ``data`` (no copy)."""
    if not entry.nbytes:
        return np.empty(entry.shape, dtype=entry.dtype)
    flat = np.frombuffer(memoryview(data), dtype=entry.dtype, count=math.prod(entry.shape),
                         offset=entry.start)  # fmt: skip
    return flat.reshape(entry.shape)


def _share(buffer: bytearray, entry: TensorEntry) -> npt.NDArray[Any]:
    array: npt.NDArray[Any] = np.ndarray(entry.shape, entry.dtype, buffer, entry.start)
    # A bytearray's memory is aligned to 16 bytes and no dtype needs more than 8: only an
    # offset off a multiple of 8 (another writer's) misaligns, and numpy is slow there.
    if entry.start & 7 and not array.flags.aligned:
        array = array.copy()
    return array


def decode_tensor(data: Buffer, entry: TensorEntry) -> npt.NDArray[Any]:
    """A fresh, writable array holding one tensor of a validated file."""
    return view_tensor(data, entry).copy()


#: The tensors of a file by name, in header order.
Arrays = dict[str, npt.NDArray[Any]]


def copy_tensors(data: Buffer) -> tuple[Header, Arrays]:
    """The header of a whole file in memory, and fresh arrays of its tensors."""
    header = read_header(data)
    return header, {name: decode_tensor(data, e) for name, e in header.tensors.items()}


def view_tensors(data: Buffer) -> tuple[Header, Arrays]:
    """The header of a whole file in memory, and read-only arrays over ``data``."""
    header = read_header(data)
    return header, {name: view_tensor(data, e) for name, e in header.tensors.items()}


def load_tensors(reader: Reader) -> tuple[Header, Arrays]:
    """The header of the file behind ``reader``, and fresh arrays of its tensors, each
    read straight into its own memory.

    A small file is read whole into one fresh buffer that its arrays then share (each
    array has its own part of it, writable; nothing else refers to it).
    """
    size = reader.size
    if size <= SMALL:
        buffer = bytearray(size)
        if reader.readinto(0, buffer) != size:
            raise DecodeError("safetensors: the file was truncated while being read")
        header = _header_in(buffer)
        if header.aligned:  # as typedstore writes them: arrays made straight on the buffer
            ndarray = np.ndarray
            return header, {
                name: ndarray(shape, dtype, buffer, start)
                for name, shape, dtype, start in header.layout
            }
        return header, {name: _share(buffer, e) for name, e in header.tensors.items()}
    if size < LARGE:
        # One read and a copy per tensor cost less than a read per tensor.
        return copy_tensors(memoryview(reader.read(0, size)))
    header = read_header(reader)
    entries = header.tensors
    return header, dict(zip(entries, read_tensors(reader, list(entries.values())), strict=True))


@attrs.frozen
class MaskedParts:
    """A numpy masked array taken apart: its data, its mask (None for ``nomask``), its
    fill value (None for numpy's default for the dtype) and whether the mask is hard."""

    data: npt.NDArray[Any]
    mask: npt.NDArray[np.bool_] | None
    fill_value: npt.NDArray[Any] | None
    hard: bool

    @classmethod
    def of(cls, value: np.ma.MaskedArray[Any, Any]) -> MaskedParts:
        """The parts of ``value``."""
        # numpy's default fill value may not fit the dtype (999999 for uint8): it is
        # named, not stored, and comes back as numpy makes it.
        fill = np.asarray(value.fill_value)
        default = np.asarray(np.ma.MaskedArray(np.empty(0, value.dtype)).fill_value)
        is_default = fill.dtype == default.dtype and fill.tobytes() == default.tobytes()
        return cls(
            np.asarray(value.data),
            None if value.mask is np.ma.nomask else np.ma.getmaskarray(value),
            None if is_default else np.asarray(value.fill_value, value.dtype),
            bool(value.hardmask),
        )

    def join(self) -> np.ma.MaskedArray[Any, Any]:
        """The masked array, after checking that the parts fit; DecodeError if not."""
        data, mask, fill = self.data, self.mask, self.fill_value
        if mask is not None and (mask.dtype != np.bool_ or mask.shape != data.shape):
            raise DecodeError("safetensors: the mask must be a bool tensor of the data's shape")
        if fill is not None and (fill.shape != () or fill.dtype != data.dtype):
            raise DecodeError(
                "safetensors: the fill value must be a 0-d tensor of the data's dtype"
            )
        masked: Any = np.ma.MaskedArray  # numpy's stubs do not take nomask as a mask
        return masked(  # type: ignore[no-any-return]
            data,
            mask=np.ma.nomask if mask is None else mask,
            fill_value=None if fill is None else fill[()],
            hard_mask=self.hard,
        )


def _user_metadata(value: Mapping[str, str]) -> Mapping[str, str]:
    items = dict(value)
    for key, item in items.items():
        if type(key) is not str or type(item) is not str:
            raise TypeError("a tensor file's metadata maps str to str")
        if key.startswith("typedstore."):
            raise ValueError(f"metadata key {key!r}: keys starting 'typedstore.' are reserved")
    return MappingProxyType(items)


@attrs.frozen
class TensorFile:
    """Tensors by name with their file's own metadata (its ``__metadata__`` string map),
    which travels with them: written as given, read back as it was, no key added.

    Store one of numpy arrays (codec ``safetensors``) or of torch tensors (codec
    ``torch``); read any safetensors file as one with ``read_deserialize(TensorFile)``
    to see its metadata (``{"format": "pt"}`` of Hugging Face checkpoints, say). Keys
    starting ``typedstore.`` are reserved.
    """

    tensors: Mapping[str, Any]
    metadata: Mapping[str, str] = attrs.field(factory=dict, converter=_user_metadata)


def tensor_file(header: Header, tensors: Mapping[str, Any]) -> TensorFile:
    """The tensors of a file with the metadata its writer gave (typedstore's own keys
    left out)."""
    metadata = {k: v for k, v in header.metadata.items() if not k.startswith("typedstore.")}
    return TensorFile(tensors, metadata)


class TensorFileDecoding:
    """``decode``, ``decode_from`` and ``decode_view`` for a codec whose files are
    safetensors files: each reads the tensors its own way and gives them to
    :meth:`assemble`, which makes the value."""

    def assemble(self, header: Header, arrays: Arrays, expected_type: type[Any] | None) -> Any:
        """The value that a file's header and arrays make."""
        raise NotImplementedError

    def decode(self, data: Buffer, expected_type: type[Any] | None = None) -> Any:
        """The value, its arrays in fresh memory."""
        return self.assemble(*copy_tensors(data), expected_type)

    def decode_from(self, reader: Reader, expected_type: type[Any] | None = None) -> Any:
        """As :meth:`decode`, reading each tensor straight into its own memory."""
        return self.assemble(*load_tensors(reader), expected_type)

    def decode_view(self, data: Buffer, expected_type: type[Any] | None = None) -> Any:
        """As :meth:`decode`, but the arrays are read-only views into ``data`` (no copy)."""
        return self.assemble(*view_tensors(data), expected_type)


class SafetensorsCodec(TensorFileDecoding):
    """``np.ndarray`` and ``dict[str, np.ndarray]`` as standard safetensors files.

    Serves exactly ``np.ndarray`` (not subclasses such as masked arrays) of the dtypes
    safetensors defines: bool, (u)int8-64, float16/32/64 and complex64 (any layout and
    byte order), and with ml_dtypes (the ``ml`` extra) bfloat16 and the float8 types. A
    single array is stored as the tensor ``data`` with metadata ``typedstore.kind =
    ndarray``; a dict as one tensor per key. A numpy scalar of those dtypes
    (``np.float32(1.5)``) is a 0-d tensor with ``typedstore.kind = scalar`` and comes back
    as the same scalar type. A :class:`TensorFile` of arrays keeps its metadata. Files
    written by other tools decode to a dict, to their single array when ``np.ndarray``
    is expected, or to a :class:`TensorFile` when that is.
    """

    name: ClassVar[str] = "safetensors"
    version: ClassVar[int] = 2
    types: ClassVar[tuple[type, ...]] = (
        np.ndarray,
        dict,
        np.generic,
        np.ma.MaskedArray,
        TensorFile,
    )

    def accepts(self, value: object) -> bool:
        """An ndarray or numpy scalar of a supported dtype, or a non-empty dict of arrays
        with str keys."""
        if type(value) is np.ndarray or type(value) is np.ma.MaskedArray:
            return _code(value.dtype) is not None
        if isinstance(value, np.generic):
            dtype = value.dtype
            exact = type(value) is dtype.type  # not a subclass with state of its own
            return exact and _code(dtype) is not None
        if type(value) is TensorFile:
            value = value.tensors
            if type(value) is dict and not value:
                return True
        if type(value) is not dict or not value or _METADATA in value:
            return False
        # Runs on every dispatch of a dict: names bound once, not looked up per item.
        ndarray, code = np.ndarray, _code
        for k, v in value.items():
            if type(k) is not str or type(v) is not ndarray or code(v.dtype) is None:
                return False
        return True

    def version_for(self, value: object) -> int:
        """2 for numpy scalars, masked arrays and tensor files (which version 1 read as a
        dict), else 1."""
        return 2 if isinstance(value, (np.generic, np.ma.MaskedArray, TensorFile)) else 1

    def encode(
        self,
        value: npt.NDArray[Any] | dict[str, npt.NDArray[Any]] | np.generic[Any] | TensorFile,
    ) -> Sequence[Buffer]:
        """Header plus each array's memory (copied only to fix layout or byte order)."""
        if isinstance(value, np.ma.MaskedArray):  # before ndarray, its base class
            parts = MaskedParts.of(value)
            tensors = {_SINGLE_NAME: parts.data, "mask": np.ma.getmaskarray(value)}
            if parts.fill_value is not None:
                tensors["fill_value"] = parts.fill_value
            flags = {
                _MASK: "none" if parts.mask is None else "full",
                _HARD_MASK: "true" if parts.hard else "false",
                _FILL: "default" if parts.fill_value is None else "stored",
            }
            return encode_tensors(tensors, {_KIND: "masked", **flags})
        if isinstance(value, np.ndarray):
            return encode_tensors({_SINGLE_NAME: value}, {_KIND: "ndarray"})
        if isinstance(value, np.generic):
            return encode_tensors({_SINGLE_NAME: np.asarray(value)}, {_KIND: "scalar"})
        if isinstance(value, TensorFile):
            return encode_tensors(value.tensors, {**value.metadata, _KIND: "file"})
        return encode_tensors(value, {_KIND: "dict"})

    def assemble(self, header: Header, arrays: Arrays, expected_type: type[Any] | None) -> Any:
        """One array or scalar, a dict of arrays, or the masked array they are the parts
        of (see the class docstring)."""
        return _assemble(header, arrays, expected_type)


def _assemble(header: Header, arrays: Arrays, expected_type: type[Any] | None) -> Any:
    metadata = header.metadata
    kind = metadata.get(_KIND)
    if kind == "file" or expected_type is TensorFile:
        return tensor_file(header, arrays)
    if kind == "masked":
        return _masked(metadata, arrays)
    if kind in ("ndarray", "scalar") or (
        kind != "dict" and expected_type is not None and issubclass(expected_type, np.ndarray)
    ):
        if len(arrays) != 1:
            raise DecodeError(
                f"safetensors: expected one array, the file holds {len(arrays)} tensors"
            )
        (array,) = arrays.values()
        if kind != "scalar":
            return array
        if array.shape != ():
            raise DecodeError(f"safetensors: a scalar must be a 0-d tensor, not {array.shape}")
        return array[()]
    return arrays


def _masked(metadata: Mapping[str, str], arrays: Arrays) -> np.ma.MaskedArray[Any, Any]:
    flags = {key: metadata.get(key) for key in (_MASK, _HARD_MASK, _FILL)}
    if (
        flags[_MASK] not in ("none", "full")
        or flags[_HARD_MASK] not in ("true", "false")
        or flags[_FILL] not in ("default", "stored")
    ):
        raise DecodeError("safetensors: a masked array's flags are missing or invalid")
    parts = {_SINGLE_NAME, "mask"} | ({"fill_value"} if flags[_FILL] == "stored" else set())
    if arrays.keys() != parts:
        raise DecodeError(f"safetensors: a masked array needs exactly {sorted(parts)}")
    mask = arrays["mask"]
    if flags[_MASK] == "none" and mask.dtype == np.bool_ and mask.any():
        raise DecodeError("safetensors: a masked array without a mask has masked values")
    if mask.dtype != np.bool_ or mask.shape != arrays[_SINGLE_NAME].shape:
        raise DecodeError("safetensors: the mask must be a bool tensor of the data's shape")
    return MaskedParts(
        arrays[_SINGLE_NAME],
        None if flags[_MASK] == "none" else mask,
        arrays.get("fill_value"),
        flags[_HARD_MASK] == "true",
    ).join()


_MASK = "typedstore.mask"
_HARD_MASK = "typedstore.hard_mask"
_FILL = "typedstore.fill_value"
