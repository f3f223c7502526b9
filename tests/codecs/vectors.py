"""Golden vectors: the frozen files every format version wrote, and their values.

Run ``python tests/codecs/vectors.py write CODEC`` to write the vectors of a codec's
current version (existing files are never overwritten); see ``codecs/README.md``.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import decimal
import enum
import hashlib
import pathlib
import sys
import uuid
import zoneinfo
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import ml_dtypes
import numpy as np
import safetensors.numpy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # helpers, when run as a script
from helpers import same as exactly
from typedstore.codecs.safetensors import TensorFile
from typedstore.datastore import DataStore
from typedstore.protocols import byte_view
from typedstore.registry import registry

ROOT = Path(__file__).resolve().parents[2] / "codecs"


@attrs.frozen
class Case:
    """A value to encode; what decoding gives when that differs (e.g. byte order); and,
    where another tool writes the file, that tool's writer."""

    value: Callable[[], Any]
    writer: Callable[[Any], bytes] | None = None
    decoded: Callable[[], Any] | None = None
    #: False when the bytes hold a pickle, whose bytes may differ between Python versions.
    stable: bool = True
    #: Set when today's decoder refuses what an older one read (a safety fix): the
    #: UnsafeDataError message it must raise, checked on every run like a value.
    refused: str | None = None

    def expected(self) -> Any:
        """The value the vector must decode to."""
        return (self.decoded or self.value)()


@attrs.define(eq=False)
class Layer:
    """A layer of the vector model (nested: not registered itself)."""

    weight: np.ndarray[Any, Any]
    bias: np.ndarray[Any, Any] | None = None


@attrs.define(eq=False)
class VectorModel:
    """The attrs class of the ``attrs`` vectors, registered under a fixed type id."""

    layers: list[Layer]
    lr: float
    labels: list[str]
    extra: dict[str, np.ndarray[Any, Any]] = attrs.field(factory=dict)
    note: bytes = b""
    best: float = float("inf")
    spectrum: np.ndarray[Any, Any] | None = None


# Layer first, under a fixed id: registered with VectorModel it would get its default id,
# which names this module (__main__ when the vectors are written).
registry.register_class(Layer, name="typedstore.vectors.Layer")
registry.register_class(VectorModel, name="typedstore.vectors.VectorModel")


class Phase(enum.IntEnum):
    """An enum of the ``tree`` vectors."""

    WARMUP = 1
    TRAIN = 2


@dataclasses.dataclass
class Schedule:
    """A dataclass of the ``tree`` vectors."""

    phases: dict[Phase, tuple[int, int]]
    started: datetime.datetime
    total: int = dataclasses.field(init=False, default=0)


registry.register_class(Phase, name="typedstore.vectors.Phase")
registry.register_class(Schedule, name="typedstore.vectors.Schedule")


def _schedule() -> Schedule:
    schedule = Schedule(
        {Phase.WARMUP: (0, 100), Phase.TRAIN: (100, 1000)},
        datetime.datetime(2024, 3, 31, 2, 30, tzinfo=zoneinfo.ZoneInfo("Europe/Berlin")),
    )
    schedule.total = 1000
    return schedule


def _checkpoint() -> dict[str, Any]:
    return {
        "model": {
            "layers.0.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
            "layers.0.bias": np.zeros(3, np.float32).astype(ml_dtypes.bfloat16),
        },
        "optimizer": {
            "state": {0: {"step": np.array(10.0, np.float32), "exp_avg": np.ones(3)}},
            "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0]}],
        },
        "epoch": 3,
        "best": float("-inf"),
    }


def _python_values() -> list[Any]:
    return [
        (1, "two", None),
        {1, 2, 3},
        frozenset({-1}),
        {1: "int key", (2, 3): "tuple key", "$ref": "escaped"},
        b"\x00raw",
        bytearray(b"\x01"),
        2**100,
        float("nan"),
        -0.0,
        complex(1.5, -2.0),
        datetime.datetime(2024, 5, 6, 7, 8, 9, 10, tzinfo=datetime.UTC),
        datetime.date(2024, 2, 29),
        datetime.time(12, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=5, minutes=30))),
        datetime.timedelta(days=2, seconds=3, microseconds=4),
        decimal.Decimal("-1.50"),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        pathlib.PurePosixPath("/data/run-1"),
        pathlib.PureWindowsPath("C:/data/run-1"),
        np.float16(0.5),
        np.ma.masked_array([1, 2, 3], mask=[False, True, False], fill_value=7, dtype=np.int32),
        np.array([1 + 2j]),
        np.arange(2, dtype=">i4"),
    ]


def _model() -> VectorModel:
    return VectorModel(
        layers=[
            Layer(np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(3, np.float32)),
            Layer(np.eye(3, dtype=np.float64)),
        ],
        lr=0.001,
        labels=["cat", "dog"],
        extra={"running_mean": np.array([0.5, -0.5], np.float16)},
        note=b"\x00raw",
        spectrum=np.array([1 + 2j, -1j]),
    )


def _datastore() -> DataStore:
    return DataStore(
        weights=np.arange(12, dtype=np.float32).reshape(3, 4),
        note=b"raw bytes",
        params={"lr": 0.1, "layers": [64, 32]},
        pair=(1, "two"),
        spectrum=np.array([1 + 1j]),
        inner=DataStore(a=np.array([1, 2, 3], np.int8)),
    )


def _datastore_cases() -> dict[str, Case]:
    return {
        "mixed": Case(_datastore, stable=False),
        "plain": Case(lambda: DataStore(x=np.zeros((2, 2), np.float32), name="run-1")),
        "empty": Case(DataStore),
        "shared-codecs": Case(
            lambda: DataStore(
                a=np.ones(3, np.float32), b="x", c=np.zeros(2, np.int8), d="y", e=b"z"
            )
        ),
    }


def _frame() -> Any:
    import pandas as pd

    frame = pd.DataFrame(
        {
            "i": pd.array([1, None, 3], dtype="Int64"),
            "s": ["a", "b", None],
            "c": pd.Categorical(["x", "y", "x"], ordered=True),
            "t": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"]).tz_localize("UTC"),
        },
        index=pd.Index([10, 20, 30], name="step"),
    )
    frame.attrs["run"] = "vectors"
    return frame


def _table() -> Any:
    import pyarrow as pa

    schema = pa.schema([pa.field("a", pa.int16()), pa.field("b", pa.string())], {b"k": b"v"})
    return pa.table({"a": [1, 2], "b": ["x", None]}, schema=schema)


def _labelled() -> Any:
    import pandas as pd

    columns = pd.MultiIndex.from_tuples([(1, "x"), (1, "y"), (2, "x")], names=["n", None])
    return pd.DataFrame([[1.5, 2.5, 3.5]], columns=columns)


def _zstd(value: Any) -> bytes:
    from typedstore.options import options

    with options.ctx({"codecs.arrow.compression": "zstd"}):
        return b"".join(bytes(byte_view(c)) for c in registry.get("arrow").encode(value))


def _torch() -> Any:
    # Vectors of torch values are checked where torch is installed (the torch extra).
    import pytest

    return pytest.importorskip("torch")


def _weights() -> Any:
    torch = _torch()
    embed = torch.arange(12, dtype=torch.float32).reshape(3, 4).to(torch.bfloat16)
    state = collections.OrderedDict(
        [("embed.weight", embed), ("head.weight", embed), ("steps", torch.tensor(7))]
    )
    state._metadata = collections.OrderedDict([("", {"version": 1})])  # type: ignore[attr-defined]
    return state


def _torch_checkpoint() -> Any:
    torch = _torch()
    return {
        "model": _weights(),
        "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 0.1}]},
        "scale": torch.nn.Parameter(torch.tensor([0.5, 2.0])),
        "epoch": 3,
    }


def _sparse_matrices() -> Any:
    import pytest

    sparse = pytest.importorskip("scipy.sparse")
    dense = np.array([[0, 1.5, 0], [2, 0, -3]], dtype=np.float32)
    return {fmt: getattr(sparse, f"{fmt}_matrix")(dense) for fmt in ("csr", "coo", "dok")} | {
        "lil": sparse.lil_array(dense),
        "dia": sparse.dia_array(dense),
    }


def _polars() -> Any:
    import polars as pl

    return pl.DataFrame(
        {"a": [1.5, None], "e": pl.Series(["lo", "hi"], dtype=pl.Enum(["lo", "hi"]))}
    )


def _official(value: Any) -> bytes:
    return safetensors.numpy.save(value, metadata={"written_by": "safetensors"})


#: codec -> format version -> case name -> case. A version's cases never change once
#: its vectors are written; a new version adds a new entry.
def _pickled_arrays() -> dict[str, Any]:
    weights = np.arange(6, dtype=np.float32).reshape(2, 3)
    return {
        "weights": weights,
        "again": weights,
        "labels": np.array(["a", "bc"]),
        "step": np.int64(7),
        "dtype": np.dtype(">u2"),
        "plain": [1, 2.5],
    }


CASES: Mapping[str, Mapping[int, Mapping[str, Case]]] = {
    "raw": {
        1: {
            "empty": Case(lambda: b""),
            "ascii": Case(lambda: b"11111"),
            "all-bytes": Case(lambda: bytes(range(256))),
        }
    },
    "json": {
        1: {
            "null": Case(lambda: None),
            "nested": Case(
                lambda: {"lr": 0.001, "layers": [64, 32], "name": "mlp", "ok": True, "x": None}
            ),
            "unicode": Case(lambda: ["\u00e9t\u00e9", "\U0001f600", "\ud800"]),
            "numbers": Case(lambda: [0, -1, 2**100, 1.5, -0.0, 1e-300]),
        }
    },
    "safetensors": {
        1: {
            "f32-matrix": Case(lambda: np.arange(6, dtype=np.float32).reshape(2, 3)),
            "bool": Case(lambda: np.array([True, False, True])),
            "i64-scalar": Case(lambda: np.array(-7, dtype=np.int64)),
            "f16-empty": Case(lambda: np.zeros((0, 3), dtype=np.float16)),
            "c64": Case(lambda: np.array([1 + 2j, -3j], dtype=np.complex64)),
            "big-endian-source": Case(
                lambda: np.arange(4, dtype=">u4"), decoded=lambda: np.arange(4, dtype="<u4")
            ),
            "dict": Case(
                lambda: {
                    "weight": np.eye(3, dtype=np.float64),
                    "bias": np.array([1, 2, 3], dtype=np.int8),
                    "flag": np.array(True),
                }
            ),
            "official-library": Case(
                lambda: {"a": np.arange(3, dtype=np.uint16), "b": np.ones((2, 2), np.float32)},
                writer=_official,
                # Keys come back in the file's header order, which that library sorts.
                decoded=lambda: {
                    "b": np.ones((2, 2), np.float32),
                    "a": np.arange(3, dtype=np.uint16),
                },
            ),
        },
        # Version 2: numpy scalars, masked arrays, ml_dtypes tensors.
        2: {
            "f32-matrix": Case(lambda: np.arange(6, dtype=np.float32).reshape(2, 3)),
            "dict": Case(lambda: {"w": np.eye(2), "b": np.array([1, 2], np.int8)}),
            "bf16": Case(
                lambda: np.linspace(-2, 2, 5, dtype=np.float32).astype(ml_dtypes.bfloat16)
            ),
            "f8": Case(
                lambda: {
                    "e4m3": np.array([0.5, -1.0], np.float32).astype(ml_dtypes.float8_e4m3fn),
                    "e5m2": np.array([2.0], np.float32).astype(ml_dtypes.float8_e5m2),
                }
            ),
            "scalar": Case(lambda: np.int64(-7)),
            "tensor-file": Case(
                lambda: TensorFile({"w": np.ones(2, np.float16)}, {"format": "np", "n": "2"})
            ),
            "masked": Case(lambda: np.ma.masked_array([1.5, 2.5], mask=[True, False])),
            "masked-hard-fill": Case(
                lambda: np.ma.masked_array(
                    np.arange(3, dtype=np.uint8),
                    mask=[False, False, True],
                    fill_value=9,
                    hard_mask=True,
                )
            ),
            "masked-nomask": Case(lambda: np.ma.masked_array(np.ones(2, np.float16))),
        },
    },
    "npy": {
        1: {
            "c128": Case(lambda: np.array([1 + 2j, 3.5 - 1j])),
            "structured": Case(
                lambda: np.array([(1, 2.5, b"ab")], dtype=[("a", "<i4"), ("b", "<f8"), ("c", "S2")])
            ),
            "datetime": Case(lambda: np.array(["2024-01-02", "NaT"], dtype="datetime64[D]")),
            "unicode": Case(lambda: np.array(["\u00e9", "xyz"])),
            "fortran": Case(
                lambda: np.asfortranarray(np.arange(6, dtype=np.complex128).reshape(2, 3))
            ),
        }
    },
    "attrs": {1: {"model": Case(_model)}},
    "tree": {
        1: {
            "checkpoint": Case(_checkpoint),
            "python-values": Case(_python_values),
            "classes": Case(lambda: {"model": _model(), "schedule": _schedule()}),
            "torch-checkpoint": Case(_torch_checkpoint),
            "sparse-matrices": Case(_sparse_matrices),
        }
    },
    "torch": {
        1: {
            "bf16-tensor": Case(lambda: _torch().arange(6, dtype=_torch().bfloat16)),
            "state-dict-tied": Case(_weights),
            "parameter": Case(lambda: _torch().nn.Parameter(_torch().ones(2, 2))),
            "tensor-file": Case(
                lambda: TensorFile({"w": _torch().ones(3, dtype=_torch().bfloat16)}, {"k": "v"})
            ),
        }
    },
    # Table libraries write their versions and layouts into the files: not stable bytes.
    "arrow": {
        1: {
            "table": Case(_table, stable=False),
            "pandas-frame": Case(_frame, stable=False),
            "polars-frame": Case(_polars, stable=False),
            "pandas-column-labels": Case(_labelled, stable=False),
            "zstd-table": Case(_table, writer=_zstd, stable=False),
        }
    },
    "datastore": {
        1: {
            "mixed": Case(_datastore, stable=False),
            "plain": Case(lambda: DataStore(x=np.zeros((2, 2), np.float32), name="run-1")),
            "empty": Case(DataStore),
        },
        # Version 2: the compact entry table.
        2: _datastore_cases(),
        # Version 3: each entry's crc32c in the entry table.
        3: _datastore_cases(),
    },
    "pickle": {
        1: {
            "tuple": Case(lambda: (1, "two", 3.0, None)),
            "datetime": Case(lambda: datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)),
            "decimal": Case(lambda: decimal.Decimal("3.14159")),
            "ordered-dict": Case(lambda: collections.OrderedDict([("b", 1), ("a", (2,))])),
            # numpy objects are no longer built from pickles (their state setters trust it).
            "masked-array": Case(
                lambda: np.ma.masked_array([1.0, 2.0], mask=[False, True]),
                refused="never built from a pickle",
            ),
            "array": Case(
                lambda: np.arange(5, dtype=np.int16), refused="never built from a pickle"
            ),
        },
        2: {
            "tuple": Case(lambda: (1, "two", 3.0, None), stable=False),
            # numpy values beside the pickle, as .npy.
            "arrays": Case(_pickled_arrays, stable=False),
        },
    },
}


def vector_path(codec: str, version: int, case: str) -> Path:
    """Where the vector of one case lives."""
    return ROOT / codec / "vectors" / f"v{version}" / f"{case}.bin"


def sums_path(codec: str) -> Path:
    """The checksum list of a codec's vectors."""
    return ROOT / codec / "vectors" / "SHA256SUMS"


def read_sums(codec: str) -> dict[str, str]:
    """Relative vector path -> sha256, from a codec's SHA256SUMS."""
    sums: dict[str, str] = {}
    for line in sums_path(codec).read_text().splitlines():
        digest, _, name = line.partition("  ")
        sums[name] = digest
    return sums


def encode(codec: str, case: Case) -> bytes:
    """The bytes of a case as its writer (by default, the codec) produces them."""
    value = case.value()
    if case.writer is not None:
        return case.writer(value)
    return b"".join(byte_view(chunk) for chunk in registry.get(codec).encode(value))


def same(a: Any, b: Any) -> bool:
    """``b`` is ``a`` back exactly (see ``helpers.same``), arrays in the same memory order."""
    if type(a).__module__.partition(".")[0] in ("pandas", "pyarrow", "polars"):
        dtypes = getattr(a, "dtypes", None)
        return bool(
            type(a) is type(b)
            and a.equals(b)
            and (dtypes is None or list(dtypes) == list(b.dtypes))
            and getattr(a, "attrs", None) == getattr(b, "attrs", None)
        )
    if type(a).__module__.startswith("scipy.sparse"):  # a dok is a Mapping too
        return exactly(a, b)
    arrays = isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
    if arrays and a.ndim > 1 and a.flags.f_contiguous != b.flags.f_contiguous:
        return False
    if attrs.has(type(a)) and type(a) is type(b):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in attrs.fields(type(a)))
    if isinstance(a, Mapping) and type(a) is type(b):
        return (
            list(map(type, a)) == list(map(type, b))
            and list(a) == list(b)
            and all(same(a[k], b[k]) for k in a)
        )
    if isinstance(a, list | tuple) and type(a) is type(b):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return exactly(a, b)


def write(codec: str) -> list[Path]:
    """Write the missing vectors of ``codec``'s current version; return the new files."""
    version = registry.get(codec).version
    cases = CASES[codec].get(version)
    if cases is None:
        raise SystemExit(f"no cases for {codec} version {version}: add them to CASES first")
    written = []
    for name, case in cases.items():
        path = vector_path(codec, version, name)
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(codec, case))
        written.append(path)
    base = ROOT / codec / "vectors"
    lines = [
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(base).as_posix()}"
        for p in sorted(base.rglob("*.bin"))
    ]
    sums_path(codec).write_text("\n".join(lines) + "\n")
    return written


def main(argv: list[str] | None = None) -> int:
    """Command line: ``write CODEC [CODEC ...]``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["write"])
    parser.add_argument("codecs", nargs="+", choices=sorted(CASES))
    args = parser.parse_args(argv)
    for codec in args.codecs:
        for path in write(codec):
            print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
