from __future__ import annotations

import contextlib
import io
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import any_arrays, join, round_trip
from typedstore.codecs import NpyCodec
from typedstore.errors import DecodeError

codec = NpyCodec()

NPY_ONLY_DTYPES = [
    "<c16", ">c16", "<M8[s]", ">m8[ms]", "<U3", ">U1", "S4",
    "i4,f8", "<i2,(2,)f4", "?",
]  # fmt: skip


def assert_same(got: Any, want: np.ndarray[Any, Any]) -> None:
    assert type(got) is np.ndarray
    assert got.shape == want.shape
    assert got.dtype == want.dtype
    assert got.tobytes() == np.asarray(want, order="C").tobytes()
    assert got.flags.writeable


@given(any_arrays([*NPY_ONLY_DTYPES, "<f4", ">i8", "u1"]))
def test_round_trip(array: np.ndarray[Any, Any]) -> None:
    assert codec.accepts(array)
    assert_same(round_trip(codec, array), array)


@given(any_arrays(NPY_ONLY_DTYPES))
def test_np_load_reads_what_we_write(array: np.ndarray[Any, Any]) -> None:
    loaded = np.load(io.BytesIO(join(codec.encode(array))), max_header_size=1 << 20)
    assert_same(loaded, array)


@given(any_arrays(NPY_ONLY_DTYPES))
def test_we_read_what_np_save_writes(array: np.ndarray[Any, Any]) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    assert_same(codec.decode(buffer.getvalue()), array)


def test_fortran_arrays_are_written_without_a_copy() -> None:
    array = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    _, body = codec.encode(array)
    assert np.shares_memory(np.frombuffer(memoryview(body), np.uint8), array)
    got = round_trip(codec, array)
    assert got.flags.f_contiguous
    assert np.array_equal(got, array)


def test_large_headers_use_version_2() -> None:
    array = np.zeros(2, dtype=[(f"field{i}", "i4") for i in range(5000)])
    data = join(codec.encode(array))
    assert data[6:8] == b"\x02\x00"
    assert_same(codec.decode(data), array)


@pytest.mark.parametrize(
    "value",
    [np.array([1, None], dtype=object), np.ma.masked_array([1]), [1], b"x"],
    ids=repr,
)
def test_refuses(value: Any) -> None:
    assert not codec.accepts(value)


def npy(header: str, body: bytes = b"", version: bytes = b"\x01\x00") -> bytes:
    text = header.encode("latin1")
    pad = -(10 + len(text) + 1) % 64
    text += b" " * pad + b"\n"
    return b"\x93NUMPY" + version + struct.pack("<H", len(text)) + text + body


def object_array_file() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array([1, "x"], dtype=object), allow_pickle=True)
    return buffer.getvalue()


F8_ONE = "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }"

MALFORMED = {
    "empty": b"",
    "bad magic": b"\x93NUMPZ\x01\x00" + b"\0" * 100,
    "version 9": npy(F8_ONE, b"\0" * 8, b"\x09\x00"),
    "object dtype (pickle inside)": object_array_file(),
    "object descr": npy("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", b"\0" * 8),
    "huge shape": npy("{'descr': '<f8', 'fortran_order': False, 'shape': (10**15,), }", b"\0" * 8),
    "huge shape 2d": npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2**40, 2**40), }"),
    "truncated": npy("{'descr': '<f8', 'fortran_order': False, 'shape': (4,), }", b"\0" * 8),
    "trailing": npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", b"\0" * 9),
    "code in header": npy("{'descr': __import__('os').system('echo hi')}", b"\0" * 8),
    "not a dict": npy("[1, 2, 3]", b""),
    "missing keys": npy("{'descr': '<f8'}", b"\0" * 8),
    "bad descr": npy("{'descr': 'zz', 'fortran_order': False, 'shape': (1,), }", b"\0" * 8),
    "header length lies": b"\x93NUMPY\x01\x00\xff\xff{'descr'",
    "safetensors file": struct.pack("<Q", 2) + b"{}",
    # np.empty widens a dtype of no size: 2**30 items of uninitialized memory from 128 bytes.
    "S0 dtype": npy("{'descr': '|S0', 'fortran_order': False, 'shape': (2**30,), }"),
    "U0 dtype": npy("{'descr': '<U0', 'fortran_order': False, 'shape': (2**30,), }"),
    "V0 dtype": npy("{'descr': '|V0', 'fortran_order': False, 'shape': (2**40,), }"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed(name: str) -> None:
    with pytest.raises(DecodeError):
        codec.decode(memoryview(MALFORMED[name]))


def test_dtypes_of_no_size_are_not_written() -> None:
    assert not codec.accepts(np.empty(3, "V0"))
    assert codec.accepts(np.empty(3, np.dtype([])))  # a struct of no fields has a size: 0


@given(st.binary(max_size=300))
def test_random_bytes_give_decode_errors(data: bytes) -> None:
    for candidate in (data, b"\x93NUMPY\x01\x00" + data):
        with contextlib.suppress(DecodeError):
            codec.decode(candidate)


@pytest.mark.parametrize("order", ["C", "F"])
def test_views_share_the_stored_bytes(order: str) -> None:
    array = np.arange(12, dtype=np.complex128).reshape(3, 4)
    array = np.asfortranarray(array) if order == "F" else array
    data = join(codec.encode(array))
    view = codec.decode_view(memoryview(data))
    assert view.dtype == array.dtype
    assert np.array_equal(view, array)
    assert view.flags.f_contiguous == (order == "F")
    assert not view.flags.writeable
    assert np.shares_memory(view, np.frombuffer(data, np.uint8))
    empty = join(codec.encode(np.empty((0, 2), "U3")))
    assert codec.decode_view(memoryview(empty)).shape == (0, 2)


def test_storing_a_npy_file_as_it_is_checks_it_without_a_copy(store: Any) -> None:
    import tracemalloc

    import typedstore as ts

    buffer = io.BytesIO()
    np.save(buffer, np.zeros(8 << 20, np.complex128))  # 128 MiB
    data = buffer.getvalue()
    tracemalloc.start()
    try:
        io_ = ts.DataStoreIO.write(data, "p", "npy")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert io_.read() == data
