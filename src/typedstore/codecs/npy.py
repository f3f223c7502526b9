"""The ``npy`` codec: arrays safetensors cannot hold, as standard ``.npy`` files."""

from __future__ import annotations

import functools
import io
import math
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from typedstore.errors import DecodeError, EncodeError
from typedstore.protocols import Buffer, byte_view

__all__ = ["NpyCodec"]

_MAGIC = b"\x93NUMPY"
# numpy's own default cap (10 kB) is too small for wide structured dtypes; this bound
# still keeps ``ast.literal_eval`` of a hostile header cheap.
_MAX_HEADER = 1 << 20


class NpyCodec:
    """Any ``np.ndarray`` without Python objects inside, in the ``.npy`` format.

    Chosen for arrays safetensors cannot hold: complex128, structured, datetime64,
    timedelta64, unicode and byte strings. Files are read with ``allow_pickle=False``
    semantics: object dtypes are refused, and the header is validated against the data
    length before anything is allocated. ``np.load`` reads what this codec writes.
    """

    name: ClassVar[str] = "npy"
    version: ClassVar[int] = 1
    types: ClassVar[tuple[type, ...]] = (np.ndarray,)

    def accepts(self, value: object) -> bool:
        """Exactly ``np.ndarray`` (not a subclass) whose dtype holds no Python objects,
        has a size and comes back from the header as itself (dtypes of other packages,
        such as ml_dtypes' int4, would come back as raw void)."""
        dtype = value.dtype if type(value) is np.ndarray else None
        return dtype is not None and not dtype.hasobject and _sized(dtype) and _kept(dtype)

    def encode(self, value: npt.NDArray[Any]) -> Sequence[Buffer]:
        """The ``.npy`` header, then the array's memory (copied only if not contiguous)."""
        if value.dtype.hasobject:
            raise EncodeError("codec 'npy' does not store object arrays")
        if not (value.flags.c_contiguous or value.flags.f_contiguous):
            value = np.asarray(value, order="C")
        header = io.BytesIO()
        fields = np.lib.format.header_data_from_array_1_0(value)
        try:
            np.lib.format.write_array_header_1_0(header, fields)
        except ValueError:
            header = io.BytesIO()
            np.lib.format.write_array_header_2_0(header, fields)
        if header.tell() > _MAX_HEADER:
            raise EncodeError(f"npy: the dtype's header exceeds {_MAX_HEADER} bytes")
        # A Fortran-ordered array is written in its own (column-major) memory order.
        body = value.T if fields["fortran_order"] else value
        if body.nbytes == 0:
            return [header.getvalue()]
        return [header.getvalue(), body.reshape(-1).view(np.uint8).data]

    def decode(self, data: Buffer, expected_type: type[Any] | None = None) -> npt.NDArray[Any]:
        """A fresh array; DecodeError on any malformed or pickled content."""
        view, shape, fortran, dtype, start = _parse(data)
        out: npt.NDArray[Any] = np.empty(shape, dtype=dtype, order="F" if fortran else "C")
        if out.nbytes:
            flat = out.T if fortran else out
            flat.reshape(-1).view(np.uint8)[:] = view[start:]
        return out

    def decode_view(
        self, data: Buffer, expected_type: type[Any] | None = None
    ) -> npt.NDArray[Any]:
        """As :meth:`decode`, but a read-only array over ``data`` (no copy)."""
        view, shape, fortran, dtype, start = _parse(data)
        count = math.prod(shape)
        if not count:
            return np.empty(shape, dtype=dtype, order="F" if fortran else "C")
        flat = np.frombuffer(view, dtype=dtype, count=count, offset=start)
        flat.flags.writeable = False
        return flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)


def _parse(data: Buffer) -> tuple[memoryview, tuple[int, ...], bool, np.dtype[Any], int]:
    """The bytes, shape, order, dtype and data offset of a validated ``.npy`` file."""
    view = byte_view(data)
    if view.nbytes < 10 or bytes(view[:6]) != _MAGIC:
        raise DecodeError("npy: not a .npy file (bad magic)")
    # Only the header is copied for numpy's parser: its length follows the version.
    wide = view[6] >= 2
    length = int.from_bytes(view[8 : 12 if wide else 10], "little")
    header = io.BytesIO(bytes(view[: (12 if wide else 10) + min(length, _MAX_HEADER + 1)]))
    try:
        major, minor = np.lib.format.read_magic(header)
        if (major, minor) == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(
                header, max_header_size=_MAX_HEADER
            )
        elif (major, minor) == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(
                header, max_header_size=_MAX_HEADER
            )
        else:
            raise DecodeError(f"npy: unsupported format version {major}.{minor}")
    except DecodeError:
        raise
    except Exception as exc:  # numpy's header parser raises many kinds on bad input
        raise DecodeError(f"npy: malformed header: {exc}") from exc
    if dtype.hasobject:
        raise DecodeError("npy: object arrays are refused (they would need pickle)")
    if not _sized(dtype):
        # np.empty widens "S0", "U0" and "V0" to one item of a byte or character:
        # the array would hold memory the file never filled.
        raise DecodeError(f"npy: dtype {dtype.str!r} has no size")
    start = header.tell()
    expected = math.prod(shape) * dtype.itemsize
    if view.nbytes - start != expected:
        raise DecodeError(
            f"npy: shape {shape} of {dtype} needs {expected} bytes, "
            f"file holds {view.nbytes - start}"
        )
    return view, shape, fortran, dtype, start


@functools.lru_cache(maxsize=256)
def _kept(dtype: np.dtype[Any]) -> bool:
    """Whether the header's description of ``dtype`` reads back as ``dtype`` itself."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy warns about the metadata it drops
        try:
            descr = np.lib.format.dtype_to_descr(dtype)
            return bool(np.lib.format.descr_to_dtype(descr) == dtype)
        except (TypeError, ValueError):
            return False


def _sized(dtype: np.dtype[Any]) -> bool:
    """False for the flexible dtypes of no size ("S0", "U0", "V0"), which np.empty widens."""
    return dtype.itemsize > 0 or dtype.names is not None
