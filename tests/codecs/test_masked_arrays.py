"""numpy masked arrays: data, full mask and fill value as safetensors tensors, back exactly."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.numpy

import typedstore as ts
from helpers import join
from typedstore.codecs import SafetensorsCodec
from typedstore.errors import DecodeError, EncodeError

codec = ts.registry.get("safetensors")

VALUES = {
    "masked": np.ma.masked_array([1.0, 2.0, 3.0], mask=[False, True, False], fill_value=-1.0),
    "no mask": np.ma.masked_array(np.arange(6, dtype=np.int32).reshape(2, 3)),
    "all masked": np.ma.masked_array(np.zeros(3, np.float32), mask=True),
    "hard mask": np.ma.masked_array([1, 2], mask=[True, False], hard_mask=True),
    "strided": np.ma.masked_array(np.arange(10.0), mask=np.arange(10) % 3 == 0)[::2],
    "empty": np.ma.masked_array(np.zeros((0, 4), np.uint8)),
    "0-d": np.ma.masked_array(np.float64(2.5), mask=True),
}


def same(a: np.ma.MaskedArray[Any, Any], b: np.ma.MaskedArray[Any, Any]) -> bool:
    return (
        type(a) is type(b)
        and a.dtype == b.dtype
        and a.shape == b.shape
        and (a.mask is np.ma.nomask) == (b.mask is np.ma.nomask)
        and np.ma.getmaskarray(a).tobytes() == np.ma.getmaskarray(b).tobytes()
        and np.asarray(a.data).tobytes() == np.asarray(b.data).tobytes()
        and a.fill_value.tobytes() == b.fill_value.tobytes()
        and a.hardmask == b.hardmask
    )


@pytest.mark.parametrize("name", sorted(VALUES))
def test_round_trips_exactly(store: Path, name: str) -> None:
    value = VALUES[name]
    assert ts.registry.for_value(value) is codec
    io = ts.DataStoreIO.serialize_write(value, "p")
    assert same(io.read_deserialize(np.ma.MaskedArray), value)
    assert same(SafetensorsCodec().decode_view(join(codec.encode(value))), value)
    url = ts.DataStore(m=value, other=np.arange(2)).to_url("p")
    for lazy in (False, True):
        assert same(ts.DataStore.from_url(url, lazy=lazy).m, value)


def test_a_large_masked_array_is_streamed(store: Path) -> None:
    value = np.ma.masked_array(np.arange(300_000.0), mask=np.arange(300_000) % 7 == 0)
    io = ts.DataStoreIO.serialize_write(value, "p")
    assert same(io.read_deserialize(np.ma.MaskedArray), value)


def test_any_safetensors_tool_reads_the_parts(store: Path) -> None:
    value = VALUES["masked"]
    io = ts.DataStoreIO.serialize_write(value, "p")
    parts = safetensors.numpy.load_file(store / io.reference.key)
    assert parts.keys() == {"data", "mask", "fill_value"}  # a fill value of its own
    assert parts["mask"].tolist() == [False, True, False]


def test_masked_arrays_of_other_dtypes_are_refused(store: Path) -> None:
    value = np.ma.masked_array(np.array(["a", "b"]), mask=[False, True])
    assert not codec.accepts(value)
    with pytest.raises(EncodeError):
        ts.DataStoreIO.serialize_write(value, "p")


def rewrite(data: bytes, change: Any) -> bytes:
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    change(header)
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data[8 + size :]


def set_meta(key: str, value: str) -> Any:
    return lambda header: header["__metadata__"].__setitem__(key, value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (set_meta("typedstore.mask", "maybe"), "flags"),
        (set_meta("typedstore.hard_mask", "yes"), "flags"),
        (set_meta("typedstore.mask", "none"), "without a mask has masked values"),
        (set_meta("typedstore.fill_value", "default"), "exactly"),
        (lambda h: h.__setitem__("extra", h.pop("fill_value")), "exactly"),
    ],
)
def test_damaged_parts_are_decode_errors(change: Any, message: str) -> None:
    data = rewrite(join(codec.encode(VALUES["masked"])), change)
    with pytest.raises(DecodeError, match=message):
        codec.decode(data)
