from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import join, plain, round_trip
from typedstore.codecs import JsonCodec, RawCodec
from typedstore.errors import DecodeError

raw = RawCodec()
js = JsonCodec()


@given(st.binary())
def test_raw_round_trip(data: bytes) -> None:
    # A bytearray is the tree codec's: raw gives bytes back.
    assert not raw.accepts(bytearray(data))
    for value in (data, memoryview(data)):
        assert raw.accepts(value)
        assert join(raw.encode(value)) == data
        assert round_trip(raw, value) == data
        assert type(round_trip(raw, value)) is bytes


def test_raw_takes_multidimensional_and_strided_views() -> None:
    array = np.arange(12, dtype=np.int16).reshape(3, 4)
    assert join(raw.encode(array.data)) == array.tobytes()
    strided = array.data[::2]
    assert join(raw.encode(strided)) == array[::2].tobytes()


def test_raw_does_not_copy_contiguous_input() -> None:
    data = bytearray(b"x" * 1000)
    (chunk,) = raw.encode(data)
    assert memoryview(chunk).obj is data


def test_raw_refuses_subclasses_and_others() -> None:
    class MyBytes(bytes):
        pass

    assert not raw.accepts(MyBytes(b"x"))
    assert not raw.accepts("text")
    assert not raw.accepts(np.zeros(3))


def same(a: Any, b: Any) -> bool:
    """Equal values of the same types, all the way down (so 1 != 1.0 != True)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


@given(plain)
def test_json_round_trip_is_exact(value: Any) -> None:
    assert js.accepts(value)
    assert same(round_trip(js, value), value)


@pytest.mark.parametrize(
    "value",
    [
        (1, 2),
        {1: "a"},
        {"a": (1,)},
        [1, {2}],
        float("nan"),
        [float("inf")],
        b"bytes",
        np.float64(1.0),
        np.int64(3),
        pytest.param(10**5000, id="huge-int"),
        {"k": object()},
    ],
)
def test_json_refuses_what_would_not_come_back(value: Any) -> None:
    assert not js.accepts(value)


def test_json_refuses_subclasses() -> None:
    class MyDict(dict[str, int]):
        pass

    class MyInt(int):
        pass

    assert not js.accepts(MyDict(a=1))
    assert not js.accepts([MyInt(1)])


def test_json_refuses_very_deep_trees() -> None:
    deep: list[Any] = []
    for _ in range(1000):
        deep = [deep]
    assert not js.accepts(deep)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b'{"a": 1, "a": 2}',
        b"NaN",
        b"[Infinity]",
        b"\xff\xfe",
        b"[" * 100_000 + b"]" * 100_000,
        b"[" * 201 + b"]" * 201,
        b"1 2",
        b"[1e999]",
        b"{\"a\": -1e400}",
    ],
)
def test_json_malformed(data: bytes) -> None:
    with pytest.raises(DecodeError):
        js.decode(data)


def test_json_reads_what_it_writes_at_its_deepest() -> None:
    deepest: Any = 0
    for _ in range(200):
        deepest = [deepest]
    assert js.accepts(deepest)
    assert js.decode(b"".join(js.encode(deepest))) == deepest
    assert js.decode(b'["[[[[", "{{{{"]') == ["[[[[", "{{{{"]
