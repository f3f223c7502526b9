"""What is written can be read back: on every write path, a value is either refused
before anything is stored, with an error that says what to do, or it comes back exactly."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import enum
import functools
import pathlib
import pickle
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import ml_dtypes
import numpy as np
import pydantic
import pytest

import typedstore as ts
from helpers import files_under, join, same
from typedstore.errors import EncodeError, NoCodecError, TypedStoreError


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@attrs.define(eq=False)
class Model:
    w: np.ndarray[Any, Any]
    level: Level
    when: datetime.datetime
    meta: dict[int, tuple[float, ...]] = attrs.field(factory=dict)


@dataclasses.dataclass
class Record:
    name: str
    tags: frozenset[str]
    path: pathlib.PurePosixPath


class Settings(pydantic.BaseModel):
    lr: float
    uid: uuid.UUID


ts.registry.register_class(Model, name="tests.wmr.Model")
ts.registry.register_class(Record, name="tests.wmr.Record")
ts.registry.register_class(Settings, name="tests.wmr.Settings")


@attrs.define
class Unregistered:
    x: int


class Unlisted(enum.Enum):
    A = "a"


#: Values every write path must give back exactly.
READABLE: dict[str, Any] = {
    "checkpoint": {
        "model": {"w": np.ones((2, 2), np.float32), "b": np.zeros(2, np.float32)},
        "optimizer": {"step": 10, "betas": (0.9, 0.999)},
        "epoch": 3,
    },
    "tuple": (1, "two", None),
    "set": {1, 2},
    "frozenset": frozenset({"a"}),
    "int keys": {1: "a", -2: "b"},
    "big int": 2**80,
    "nan": float("nan"),
    "negative zero": -0.0,
    "complex": 1 - 2j,
    "datetime": datetime.datetime(2024, 1, 2, 3, 4, tzinfo=datetime.UTC),
    "date": datetime.date(2024, 1, 2),
    "time": datetime.time(3, 4),
    "timedelta": datetime.timedelta(hours=5),
    "decimal": decimal.Decimal("1.10"),
    "uuid": uuid.UUID(int=7),
    "path": pathlib.PurePosixPath("/a/b"),
    "bytes": b"\x00\x01",
    "bytearray": bytearray(b"\x02"),
    "bf16": np.arange(4, dtype=np.float32).astype(ml_dtypes.bfloat16),
    "fp8 in a dict": {"w": np.ones(2, np.float32).astype(ml_dtypes.float8_e4m3fn)},
    "numpy scalar": np.float32(2.5),
    "masked array": np.ma.masked_array([1.0, 2.0], mask=[True, False]),
    "complex128 array": np.array([1 + 1j]),
    "big-endian array": np.arange(3, dtype=">i4"),
    "attrs model": Model(np.arange(3.0), Level.HIGH, datetime.datetime(2024, 1, 1), {1: (0.5,)}),
    "dataclass": Record("r", frozenset({"x"}), pathlib.PurePosixPath("/r")),
    "pydantic": Settings(lr=0.1, uid=uuid.UUID(int=3)),
    "enum": Level.LOW,
    "enum keys": {Level.LOW: [Level.HIGH]},
    "deque": collections.deque([1, 2]),  # a pickle of allowed classes
}

#: Values nothing can store readably under the default options, and what the error says.
UNREADABLE: dict[str, tuple[Any, str]] = {
    "unregistered attrs class": (Unregistered(1), r"register_class\(Unregistered\)"),
    "unregistered enum": ({"e": Unlisted.A}, r"register_class\(Unlisted\)"),
    "pickle that calls a function": (re.compile("x"), "no 'codecs.pickle.allow' pattern"),
    "object array": (np.array([None, 1]), "never built from a pickle"),
    "int4 array": (np.arange(3).astype(ml_dtypes.int4), "neither format keeps"),
    "partial": (functools.partial(print), "never loads"),
    "lambda": (lambda: 1, "cannot encode"),
}


def _codecs() -> list[str]:
    return [name for name in ts.registry.names() if name != "datastore"]


@pytest.mark.parametrize("codec", _codecs())
@pytest.mark.parametrize("name", sorted(READABLE) + sorted(UNREADABLE))
def test_every_codec_refuses_or_gives_back_exactly(codec: str, name: str) -> None:
    value = READABLE[name] if name in READABLE else UNREADABLE[name][0]
    chosen = ts.registry.get(codec)
    if not chosen.accepts(value):
        return
    try:
        data = join(chosen.encode(value))
    except EncodeError:
        return  # refused at write: nothing would be stored
    assert same(chosen.decode(memoryview(data), None), value), f"{codec} changed {name}"


@pytest.mark.parametrize("name", sorted(READABLE))
def test_readable_values_come_back_on_every_write_path(store: Path, name: str) -> None:
    value = READABLE[name]
    io = ts.DataStoreIO.serialize_write(value, "p")
    assert io.reference.codec != "pickle" or name == "deque", "no pickle for these values"
    assert same(io.read_deserialize(), value)
    url = ts.DataStore(v=value).to_url("p")
    for lazy in (False, True):
        assert same(ts.DataStore.from_url(url, lazy=lazy).v, value)
    assert same(pickle.loads(pickle.dumps(ts.DataStore(v=value))).v, value)
    experiment = ts.create_experiment(f"readable-{name}")
    experiment.fields.v = value
    with experiment.run() as run:
        run.fields.v = value
    experiment.persist()
    loaded = ts.load_experiment(experiment.id)
    assert same(loaded.fields.v, value)
    assert same(loaded.runs[0].fields.v, value)


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_unreadable_values_are_refused_before_anything_is_stored(store: Path, name: str) -> None:
    value, advice = UNREADABLE[name]
    writes: list[Callable[[], object]] = [
        lambda: ts.DataStoreIO.serialize_write(value, "p"),
        lambda: ts.DataStore(v=value, fine=1).to_url("p"),
        lambda: pickle.dumps(ts.DataStore(v=value)),
    ]
    for write in writes:
        before = files_under(store) if store.exists() else []
        with pytest.raises((EncodeError, NoCodecError), match=advice):
            write()
        assert (files_under(store) if store.exists() else []) == before
    experiment = ts.create_experiment(f"unreadable-{name}")
    experiment.fields.v = value
    with pytest.raises(TypedStoreError, match=advice):
        experiment.persist()
    with pytest.raises(ts.errors.ExperimentNotFoundError):
        ts.load_experiment(experiment.id)
