"""Helpers shared by the tests."""

from __future__ import annotations

import ast
import datetime
import decimal
import enum
import fractions
import json
import struct
import subprocess
import sys
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
    if type(a).__module__.startswith("scipy.sparse"):
        return _same_sparse(a, b)
    if type(a).__module__ in ("torch", "torch.nn.parameter"):  # a tensor or Parameter
        return bool(
            a.dtype == b.dtype
            and a.shape == b.shape
            and a.requires_grad == b.requires_grad
            and _tensor_bytes(a) == _tensor_bytes(b)
        )
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b) or (a != a and b != b)
    if isinstance(a, complex):
        return same(a.real, b.real) and same(a.imag, b.imag)
    if isinstance(a, decimal.Decimal):
        return str(a) == str(b)  # NaN, the sign of zero and the exponent
    if isinstance(a, dict):
        return (
            list(map(_key, a)) == list(map(_key, b))
            and all(same(x, y) for x, y in zip(a.values(), b.values(), strict=True))
            # a state_dict's module versions
            and same(getattr(a, "_metadata", None), getattr(b, "_metadata", None))
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


# The attributes that hold a sparse value, by format.
_SPARSE_PARTS = {
    "csr": ("data", "indices", "indptr"),
    "csc": ("data", "indices", "indptr"),
    "bsr": ("data", "indices", "indptr"),
    "coo": ("data", "row", "col"),
    "dia": ("data", "offsets"),
    "lil": ("rows", "data"),
}


def _same_sparse(a: Any, b: Any) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.format == "dok":
        return bool(list(a.keys()) == list(b.keys())) and same(a.toarray(), b.toarray())
    if a.format == "lil":  # object arrays of lists
        return bool(a.rows.tolist() == b.rows.tolist() and a.data.tolist() == b.data.tolist())
    return all(same(getattr(a, p), getattr(b, p)) for p in _SPARSE_PARTS[a.format])


def _tensor_bytes(tensor: Any) -> bytes:
    import torch  # only ever called with a tensor, so torch is imported already

    return bytes(tensor.detach().reshape(-1).contiguous().view(torch.uint8).numpy())


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


def mutate(data: st.DataObject, encoded: bytes) -> bytearray:
    """``encoded`` with a few bytes changed."""
    mutated = bytearray(encoded)
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(mutated) - 1))
        mutated[position] = data.draw(st.integers(0, 255))
    return mutated


def in_new_python(code: str) -> str:
    """What ``code`` prints, run in a fresh interpreter (which must succeed)."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def imported_by_typedstore(*packages: str) -> list[str]:
    """The modules of ``packages`` that ``import typedstore`` imports, in a fresh process."""
    wanted = f"m.split('.')[0] in {packages}"
    code = f"import sys, typedstore; print([m for m in sys.modules if {wanted}])"
    return list(ast.literal_eval(in_new_python(code)))


def decode_error_without(package: str, codec: str, path: Path) -> str:
    """The DecodeError message of the codec named ``codec`` decoding the file at ``path``
    in a fresh process where ``package`` cannot be imported."""
    code = (
        "import sys\n"
        f"sys.modules[{package!r}] = None  # as if it were not installed\n"
        "from typedstore.errors import DecodeError\n"
        "from typedstore.registry import registry\n"
        "try:\n"
        f"    registry.get({codec!r}).decode(memoryview(open({str(path)!r}, 'rb').read()))\n"
        "except DecodeError as exc:\n"
        "    print(exc)\n"
    )
    return in_new_python(code)


def store_in_worker(store: Any, value: int) -> Any:
    """In a worker process: a DataStoreIO of an array written to ``store``."""
    from typedstore.io import DataStoreIO

    return DataStoreIO.serialize_write(np.full(3, value), "workers", store=store)


def datastore_in_worker(options: dict[str, Any], index: int) -> Any:
    """In a worker process started with default options: a DataStore, which pickles by
    storing itself under the options the parent passed."""
    import typedstore as ts

    for key, value in options.items():
        ts.options.set(key, value)
    return ts.DataStore(weights=np.full(3, index), score=index / 10)
