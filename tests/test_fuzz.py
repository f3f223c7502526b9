"""Random and mutated input for every decoder: only typedstore errors, in bounded time."""

from __future__ import annotations

import contextlib
import datetime
import decimal
import json
import struct
import tracemalloc
from typing import Any

import attrs
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vectors import vector_path

import typedstore as ts
from helpers import join, mutate
from typedstore.errors import DecodeError, TypedStoreError


@attrs.define
class Fuzzed:
    weights: np.ndarray[Any, Any]
    name: str
    sizes: list[int]


ts.registry.register_class(Fuzzed, name="tests.fuzz.Fuzzed")

SAMPLES: dict[str, Any] = {
    "raw": b"some bytes",
    "json": {"a": [1, 2.5, "x", None, True]},
    "safetensors": {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2)},
    "npy": np.array([1 + 2j, 3j]),
    "pickle": (1, "two", {3: [4.5, None]}, frozenset({b"x"})),
    "tree": {
        "model": Fuzzed(np.ones((2, 2)), "f", [1, 2]),
        "keys": {1: (2, "x"), (3, None): frozenset({4})},
        "when": datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
        "masked": np.ma.masked_array([1.0, 2.0], mask=[True, False]),
        "misc": [decimal.Decimal("1.5"), b"\x00", float("nan"), 2**70],
    },
    "datastore": ts.DataStore(a=np.arange(4), b={"k": 1}, c=b"x", d=(1, 2)),
    "arrow": pd.DataFrame(
        {"i": [1, 2, 3], "s": ["a", None, "c"], "c": pd.Categorical(["x", "y", "x"])},
        index=pd.Index([10, 20, 30], name="k"),
    ),
}

# A frozen file of the retired attrs codec (its class is registered by the vectors module).
LEGACY_ATTRS = vector_path("attrs", 1, "model").read_bytes()

# Each example must finish quickly: a decoder that loops or allocates wildly fails here.
bounded = settings(deadline=2000, max_examples=150)


@pytest.mark.parametrize("name", sorted(SAMPLES))
@bounded
@given(data=st.binary(max_size=512))
def test_random_bytes(name: str, data: bytes) -> None:
    # Malformed input is a DecodeError: no other error, typedstore's or not.
    with contextlib.suppress(DecodeError):
        ts.registry.get(name).decode(memoryview(data), None)


@pytest.mark.parametrize("name", sorted(SAMPLES))
@bounded
@given(st.data())
def test_mutated_encodings(name: str, data: st.DataObject) -> None:
    codec = ts.registry.get(name)
    encoded = mutate(data, join(codec.encode(SAMPLES[name])))
    if data.draw(st.booleans()):
        cut = data.draw(st.integers(0, len(encoded)))
        encoded = encoded[:cut] if data.draw(st.booleans()) else encoded + encoded[cut:]
    with contextlib.suppress(DecodeError):
        codec.decode(memoryview(bytes(encoded)), None)


@bounded
@given(st.data())
def test_mutated_compressed_tables(data: st.DataObject) -> None:
    with ts.options.ctx({"codecs.arrow.compression": data.draw(st.sampled_from(["lz4", "zstd"]))}):
        encoded = mutate(data, join(ts.registry.get("arrow").encode(SAMPLES["arrow"])))
    with contextlib.suppress(DecodeError):
        ts.registry.get("arrow").decode(memoryview(bytes(encoded)), None)


@bounded
@given(st.data())
def test_mutated_files_of_the_retired_attrs_codec(data: st.DataObject) -> None:
    encoded = mutate(data, LEGACY_ATTRS)
    with contextlib.suppress(DecodeError):
        ts.registry.get("attrs").decode(memoryview(bytes(encoded)), None)


@bounded
@given(st.text(max_size=300))
def test_references(text: str) -> None:
    for url in (text, f"datastore:///{text}", f"datastore:///a/b?codec={text}"):
        with contextlib.suppress(TypedStoreError):
            ts.Reference.parse(url)


def huge_safetensors() -> bytes:
    header = json.dumps({"a": {"dtype": "F64", "shape": [2**20, 2**20], "data_offsets": [0, 8]}})
    return struct.pack("<Q", len(header)) + header.encode() + b"\0" * 8


def huge_npy() -> bytes:
    text = "{'descr': '<f8', 'fortran_order': False, 'shape': (1048576, 1048576), }"
    text += " " * (-(10 + len(text) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode() + b"\0" * 8


@pytest.mark.parametrize(("codec", "data"), [("safetensors", huge_safetensors()),
                                             ("npy", huge_npy())])  # fmt: skip
def test_huge_shapes_are_refused_before_allocating(codec: str, data: bytes) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(ts.errors.DecodeError):
            ts.registry.get(codec).decode(memoryview(data), None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # the claimed array would be 8 TiB
