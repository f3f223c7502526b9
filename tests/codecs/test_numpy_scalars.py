"""numpy scalars (np.float32(1.5)...) as 0-d safetensors tensors: back as the same type."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import typedstore as ts
from helpers import SAFETENSORS_DTYPES, join
from typedstore.errors import DecodeError

codec = ts.registry.get("safetensors")


def same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a.dtype == b.dtype and a.tobytes() == b.tobytes()


@given(
    st.sampled_from(SAFETENSORS_DTYPES).flatmap(
        lambda name: hnp.from_dtype(np.dtype(name)).map(lambda x: np.asarray(x, name)[()])
    )
)
def test_every_scalar_of_a_safetensors_dtype_round_trips(value: Any) -> None:
    assert isinstance(value, np.generic)
    assert ts.registry.for_value(value) is codec
    back = codec.decode(join(codec.encode(value)))
    assert same(back, value)  # bit for bit: NaN payloads and signed zeros too


@pytest.mark.parametrize(
    "value",
    [np.float32(1.5), np.float64(-0.0), np.int64(-(2**62)), np.bool_(True), np.uint8(7),
     np.complex64(1 + 2j), np.float16(np.nan), ml_dtypes.bfloat16(1.25)],
    ids=lambda v: type(v).__name__,
)  # fmt: skip
def test_a_scalar_comes_back_as_itself_everywhere(store: Path, value: Any) -> None:
    io = ts.DataStoreIO.serialize_write(value, "p")
    assert io.reference.codec == "safetensors"
    assert same(io.read_deserialize(type(value)), value)
    url = ts.DataStore(x=value, arr=np.arange(2)).to_url("p")
    for lazy in (False, True):
        assert same(ts.DataStore.from_url(url, lazy=lazy).x, value)


def test_scalars_in_experiment_fields(store: Path) -> None:
    experiment = ts.create_experiment("scalars")
    experiment.fields.lr = np.float32(1e-3)
    with experiment.run() as run:
        run.fields.step = np.int64(10)
    experiment.persist()
    back = ts.load_experiment("scalars")
    assert same(back.fields.lr, np.float32(1e-3))
    assert same(back.runs[0].fields.step, np.int64(10))


def test_a_scalar_of_another_dtype_goes_beside_a_pickle(store: Path) -> None:
    # safetensors has no such dtype: the fallback keeps it, as .npy beside its pickle.
    for value in (np.str_("text"), np.datetime64("2024-01-01")):
        assert not codec.accepts(value)
        io = ts.DataStoreIO.serialize_write(value, "p")
        assert io.reference.codec == "pickle"
        assert same(io.read_deserialize(), value)


def test_a_scalar_file_must_hold_a_0d_tensor() -> None:
    data = join(codec.encode(np.float32(1.0)))
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    header["data"] = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    raw = json.dumps(header).encode()
    with pytest.raises(DecodeError, match="0-d"):
        codec.decode(struct.pack("<Q", len(raw)) + raw + data[8 + size :])
