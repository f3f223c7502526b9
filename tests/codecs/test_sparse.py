"""scipy.sparse matrices and arrays in the tree format: their component arrays, exact,
without pickle."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sparse = pytest.importorskip("scipy.sparse")

import typedstore as ts  # noqa: E402
from helpers import (  # noqa: E402
    decode_error_without,
    imported_by_typedstore,
    join,
    mutate,
    same,
)
from typedstore.errors import DecodeError  # noqa: E402

tree = ts.registry.get("tree")
DENSE = np.array([[0, 1.5, 0, 0], [2, 0, 0, -3], [0, 0, 0, 0]], dtype=np.float32)
FORMATS = ["csr", "csc", "bsr", "coo", "dia", "dok", "lil"]


def make(fmt: str, kind: str) -> Any:
    value = getattr(sparse, f"{fmt}_{kind}")(DENSE)
    assert type(value).__name__ == f"{fmt}_{kind}"
    return value


def assert_same(back: Any, value: Any) -> None:
    assert same(back, value), (back, value)


@pytest.mark.parametrize("kind", ["matrix", "array"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_comes_back_exactly(store: Any, fmt: str, kind: str) -> None:
    value = make(fmt, kind)
    assert ts.registry.for_value(value).name == "tree"
    io = ts.DataStoreIO.serialize_write(value, "sparse")
    assert_same(io.read_deserialize(), value)
    nested = {"features": value, "labels": np.arange(3)}
    assert_same(tree.decode(memoryview(join(tree.encode(nested))))["features"], value)


def test_uncanonical_and_odd_values() -> None:
    # Duplicates and unsorted coordinates stay as they were; so do int64 indices,
    # complex data and a dok's insertion order.
    coo = sparse.coo_matrix(([1.0, 2.0, 3.0], ([2, 0, 2], [1, 1, 1])), shape=(3, 2))
    back = tree.decode(memoryview(join(tree.encode(coo))))
    assert_same(back, coo)
    assert np.array_equal(back.row, coo.row)
    csr = sparse.csr_array(DENSE.astype(np.complex128))
    csr.indices = csr.indices.astype(np.int64)
    csr.indptr = csr.indptr.astype(np.int64)
    assert_same(tree.decode(memoryview(join(tree.encode(csr)))), csr)
    dok = sparse.dok_array((3, 3), dtype=np.int8)
    dok[2, 2], dok[0, 1], dok[1, 0] = 5, 6, 7
    assert_same(tree.decode(memoryview(join(tree.encode(dok)))), dok)


def test_parts_that_do_not_fit_are_decode_errors() -> None:
    csr = sparse.csr_matrix(DENSE)
    text = join(tree.encode(csr))
    header_length = int.from_bytes(text[:8], "little")
    header = text[8 : 8 + header_length].decode()
    for old, new in (('csr_matrix', 'xyz_matrix'), ('[3,4]', '[1,1]')):
        assert old in header, old
        bad = header.replace(old, new)
        with pytest.raises(DecodeError):
            tree.decode(memoryview(text[:8] + bad.encode() + text[8 + header_length :]))


FUZZED = {fmt: join(tree.encode(make(fmt, "matrix"))) for fmt in FORMATS}


@pytest.mark.parametrize("fmt", FORMATS)
@settings(deadline=2000, max_examples=60)
@given(data=st.data())
def test_mutated_files_are_decode_errors(fmt: str, data: st.DataObject) -> None:
    with contextlib.suppress(DecodeError):
        tree.decode(memoryview(bytes(mutate(data, FUZZED[fmt]))), None)


def test_scipy_is_not_imported_by_typedstore(tmp_path: Any) -> None:
    assert imported_by_typedstore("scipy") == []
    path = tmp_path / "m.safetensors"
    path.write_bytes(join(tree.encode(sparse.csr_matrix(DENSE))))
    assert "needs scipy: pip install scipy" in decode_error_without("scipy", "tree", path)
