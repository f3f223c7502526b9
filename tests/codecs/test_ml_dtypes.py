"""bfloat16 and float8 arrays (ml_dtypes) as safetensors tensors of their own dtypes, and
no array that comes back with another dtype than it was written with."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import safetensors

import typedstore as ts
from typedstore.errors import DecodeError, EncodeError

# The safetensors name of each dtype, as the official library's torch module reads it.
CODES = {
    "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn,
    "F8_E5M2": ml_dtypes.float8_e5m2,
    "F8_E4M3FNUZ": ml_dtypes.float8_e4m3fnuz,
    "F8_E5M2FNUZ": ml_dtypes.float8_e5m2fnuz,
    "F8_E8M0": ml_dtypes.float8_e8m0fnu,
}


def sample(dtype: Any, shape: tuple[int, ...] = (3, 5)) -> np.ndarray[Any, Any]:
    values = np.linspace(-4, 4, int(np.prod(shape)), dtype=np.float32).reshape(shape)
    return values.astype(dtype)


def same(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("code", sorted(CODES))
def test_round_trips_with_its_dtype_through_every_path(store: Path, code: str) -> None:
    array = sample(CODES[code])
    io = ts.DataStoreIO.serialize_write(array, "p")
    assert io.reference.codec == "safetensors"
    assert same(io.read_deserialize(np.ndarray), array)
    assert same(io.read_deserialize(np.ndarray, zero_copy=True), array)
    url = ts.DataStore(w=array, other=np.arange(3), mixed={"a": array}).to_url("p")
    for lazy in (False, True):
        back = ts.DataStore.from_url(url, lazy=lazy)
        assert same(back.w, array)
        assert same(back.mixed["a"], array)


@pytest.mark.parametrize("code", sorted(CODES))
def test_the_official_parser_reads_the_dtype_name(store: Path, code: str) -> None:
    ref = ts.DataStoreIO.serialize_write({"w": sample(CODES[code]), "b": np.ones(2)}, "p")
    with safetensors.safe_open(str(store / ref.reference.key), framework="numpy") as f:
        assert f.get_slice("w").get_dtype() == code
        assert f.get_slice("w").get_shape() == [3, 5]


def test_a_large_bfloat16_array_is_read_straight_into_memory(store: Path) -> None:
    array = sample(ml_dtypes.bfloat16, (1024, 1024))  # 2 MiB: streamed, page aligned
    io = ts.DataStoreIO.serialize_write(array, "p")
    assert same(io.read_deserialize(np.ndarray), array)


def test_a_dtype_no_format_keeps_is_refused_at_write(store: Path) -> None:
    array = np.arange(4).astype(ml_dtypes.int4)
    assert not ts.registry.get("npy").accepts(array)  # npy would read it back as void
    with pytest.raises(EncodeError):
        ts.DataStoreIO.serialize_write(array, "p")
    with pytest.raises(EncodeError):
        ts.DataStore(x=array).to_url("p")
    assert not list(store.rglob("*")) or all(p.is_dir() for p in store.rglob("*"))


WITHOUT_ML_DTYPES = """
import sys
sys.modules["ml_dtypes"] = None  # as if it were not installed
import typedstore as ts
from typedstore.errors import DecodeError
ts.options.set("datastore.url", sys.argv[1])
try:
    ts.DataStoreIO(sys.argv[2]).read_deserialize()
except DecodeError as exc:
    print("refused:", exc)
"""


def test_reading_without_ml_dtypes_names_the_extra(store: Path) -> None:
    url = ts.DataStoreIO.serialize_write(sample(ml_dtypes.bfloat16), "p").url
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_ML_DTYPES, str(store), url],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    assert "refused:" in result.stdout
    assert "BF16" in result.stdout
    assert "typedstore[ml]" in result.stdout


def test_a_crafted_dtype_name_is_still_a_decode_error() -> None:
    data = ts.registry.get("safetensors").encode(sample(ml_dtypes.bfloat16))
    raw = b"".join(bytes(memoryview(chunk)) for chunk in data).replace(b'"BF16"', b'"BF17"')
    with pytest.raises(DecodeError, match="unsupported dtype"):
        ts.registry.get("safetensors").decode(raw)
