"""scipy.sparse matrices and arrays taken apart into their component arrays and rebuilt,
for the ``tree`` codec.

scipy is imported only to rebuild: a sparse value exists only once it is imported.
Rebuilt values are checked in full (index bounds, ``indptr`` order) before they are
returned, as scipy's compiled routines trust them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from typedstore.errors import DecodeError

__all__ = ["CLASSES", "build", "is_sparse", "parts"]

_FORMATS = ("csr", "csc", "bsr", "coo", "dia", "dok", "lil")
#: The classes, by the qualified names the registry knows them by before scipy is imported.
CLASSES = tuple(
    f"scipy.sparse._{fmt}.{fmt}_{kind}" for fmt in _FORMATS for kind in ("matrix", "array")
)
_NAMES = frozenset(name.rpartition(".")[2] for name in CLASSES)


def is_sparse(value: object) -> bool:
    """Whether ``value`` is exactly one of scipy's sparse matrix or array classes."""
    cls = type(value)
    return cls.__qualname__ in _NAMES and cls.__module__.startswith("scipy.sparse")


def parts(value: Any) -> tuple[str, list[int], dict[str, npt.NDArray[Any]]]:
    """The class name, shape and component arrays of a sparse value."""
    name = type(value).__qualname__
    fmt = name.partition("_")[0]
    if fmt in ("csr", "csc", "bsr", "lil"):
        # A lil keeps each row's columns sorted: its csr parts hold it exactly, and have
        # as many entries as it has rows (so rebuilding it takes memory in proportion).
        held = value.tocsr() if fmt == "lil" else value
        arrays = {"data": held.data, "indices": held.indices, "indptr": held.indptr}
    elif fmt == "dia":
        arrays = {"data": value.data, "offsets": value.offsets}
    else:
        # A dok keeps its entries in insertion order: its coordinates, in that order.
        coo = value if fmt == "coo" else value.tocoo(copy=False)
        coords = getattr(coo, "coords", None) or (coo.row, coo.col)  # before scipy 1.13
        arrays = {f"coords.{i}": np.asarray(c) for i, c in enumerate(coords)}
        arrays["data"] = coo.data
    return name, [int(n) for n in value.shape], {k: np.asarray(a) for k, a in arrays.items()}


def build(name: str, shape: list[int], arrays: dict[str, Any]) -> Any:
    """The sparse value of class ``name`` from its parts; DecodeError if they do not fit."""
    if name not in _NAMES or not all(type(a) is np.ndarray for a in arrays.values()):
        raise DecodeError(f"sparse: {name!r:.60} is not a sparse class, or a part is no array")
    try:
        import scipy.sparse
    except ImportError:
        raise DecodeError("reading a scipy.sparse value needs scipy: pip install scipy") from None
    cls = getattr(scipy.sparse, name)
    fmt = name.partition("_")[0]
    size = tuple(shape)
    if fmt in ("csr", "csc", "bsr", "lil"):
        _expect(arrays, {"data", "indices", "indptr"})
        compressed = cls if fmt != "lil" else getattr(scipy.sparse, name.replace("lil", "csr"))
        value = compressed((arrays["data"], arrays["indices"], arrays["indptr"]), shape=size)
        value.check_format(full_check=True)  # indices in bounds, indptr non-decreasing
        return value.tolil() if fmt == "lil" else value
    if fmt == "dia":
        _expect(arrays, {"data", "offsets"})
        return cls((arrays["data"], arrays["offsets"]), shape=size)
    _expect(arrays, {"data", *(f"coords.{i}" for i in range(len(shape)))})
    coords = tuple(arrays[f"coords.{i}"] for i in range(len(shape)))
    coo_name = name.replace(fmt, "coo", 1)
    coo = getattr(scipy.sparse, coo_name)((arrays["data"], coords), shape=size)  # bounds
    if fmt == "coo":
        return coo
    keys = list(zip(*(c.tolist() for c in coords), strict=True))
    if len(set(keys)) != len(keys):
        raise DecodeError("sparse: a dok value repeats a coordinate")
    # One entry at a time, as a dok is built: the keys keep their order and their type.
    value = cls(size, dtype=coo.dtype)
    for key, item in zip(keys, arrays["data"], strict=True):
        value[key if len(key) > 1 else key[0]] = item
    return value


def _expect(arrays: dict[str, Any], names: set[str]) -> None:
    if arrays.keys() != names:
        raise DecodeError(f"sparse: expected the parts {sorted(names)}, got {sorted(arrays)}")
