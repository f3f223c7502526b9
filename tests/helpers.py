"""Helpers shared by the tests."""

from __future__ import annotations

import datetime
import decimal
import enum
import fractions
import json
import struct
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from typedstore.protocols import Buffer, Codec, byte_view

#: dtypes safetensors defines and numpy has, in both byte orders where that matters.
SAFETENSORS_DTYPES = [
    "?", "u1", "i1", "<u2", ">u2", "<i2", ">i2", "<u4", ">u4", "<i4", ">i4", "<u8", ">u8",
    "<i8", ">i8", "<f2", ">f2", "<f4", ">f4", "<f8", ">f8", "<c8", ">c8",
]  # fmt: skip


#: Plain data that JSON gives back exactly.
plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


def join(chunks: Sequence[Buffer]) -> bytes:
    """The stored object a codec's buffers make."""
    return b"".join(byte_view(c) for c in chunks)


def round_trip(codec: Codec[Any], value: Any, expected_type: type[Any] | None = None) -> Any:
    """Encode then decode through a read-only view, as storages hand data to codecs."""
    data = join(codec.encode(value))
    return codec.decode(memoryview(data), expected_type)


def using(store: Path, db: Path) -> AbstractContextManager[None]:
    """Options pointing the datastore at ``store`` and the database at the file ``db``."""
    import typedstore as ts

    return ts.options.ctx({"datastore.url": str(store), "database.url": f"sqlite:///{db}"})


def files_under(path: Path) -> list[str]:
    """All regular files under ``path``, relative, sorted."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def layouts(array: np.ndarray[Any, Any]) -> list[np.ndarray[Any, Any]]:
    """The same values in other memory layouts: Fortran order, strided, reversed."""
    out = [array, np.asfortranarray(array)]
    if array.ndim >= 1 and array.shape[0] > 1:
        out.append(array[::-1])
    if array.ndim >= 2:
        out.append(array.T)
    return out


@st.composite
def any_arrays(draw: st.DrawFn, dtypes: Sequence[str]) -> np.ndarray[Any, Any]:
    """Arrays of the given dtypes, of many shapes (0-d and empty included) and layouts."""
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
    array: np.ndarray[Any, Any] = draw(hnp.arrays(dtype, shape))
    return draw(st.sampled_from(layouts(array)))


class Point:
    """A user class: not on the pickle allow-list until the user allows it."""

    def __init__(self, x: int, y: int) -> None:
        self.x = x
        self.y = y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    def __hash__(self) -> int:
        return hash((self.x, self.y))


# Aliases, as a user's module may hold them: a pickle can name these through "helpers.*".
np_alias = np
Fraction = fractions.Fraction


def same(a: Any, b: Any) -> bool:
    """Whether ``b`` is ``a`` back exactly: the same types all the way down, arrays of the
    same dtype, shape, mask and bytes, dicts with keys in the same order, floats equal
    bit for bit (NaN and -0.0 included), instances with the same attribute values."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ma.MaskedArray):
        return bool(
            same(a.data, b.data)
            and np.array_equal(np.ma.getmaskarray(a), np.ma.getmaskarray(b))
            and (a.mask is np.ma.nomask) == (b.mask is np.ma.nomask)
            and a.hardmask == b.hardmask
            and same(np.asarray(a.fill_value), np.asarray(b.fill_value))
        )
    if isinstance(a, np.ndarray):
        return bool(a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes())
    if isinstance(a, np.generic):
        return bool(a.dtype == b.dtype and a.tobytes() == b.tobytes())
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b) or (a != a and b != b)
    if isinstance(a, complex):
        return same(a.real, b.real) and same(a.imag, b.imag)
    if isinstance(a, decimal.Decimal):
        return str(a) == str(b)  # NaN, the sign of zero and the exponent
    if isinstance(a, dict):
        return list(map(_key, a)) == list(map(_key, b)) and all(
            same(x, y) for x, y in zip(a.values(), b.values(), strict=True)
        )
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, set | frozenset):
        return sorted(map(_key, a)) == sorted(map(_key, b))
    if isinstance(a, datetime.datetime | datetime.time):
        return a == b and a.fold == b.fold and repr(a.tzinfo) == repr(b.tzinfo)
    state_a, state_b = _state(a), _state(b)
    if state_a is not None and state_b is not None:
        return same(state_a, state_b)
    return bool(a == b)


def _key(value: Any) -> tuple[str, str]:
    return (type(value).__qualname__, repr(value))


def _state(value: Any) -> dict[str, Any] | None:
    if isinstance(value, enum.Enum) or type(value).__module__ in ("builtins", "decimal", "uuid"):
        return None
    names = [*getattr(value, "__dict__", {}), *getattr(type(value), "__slots__", ())]
    if not names:
        return None
    return {name: getattr(value, name) for name in names if hasattr(value, name)}


def with_metadata(data: bytes, change: dict[str, str]) -> bytes:
    """A safetensors file with entries of its ``__metadata__`` replaced (for tampering)."""
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    header["__metadata__"].update(change)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data[8 + size :]
