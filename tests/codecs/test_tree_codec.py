"""The tree codec: nested containers and plain Python values with arrays, exactly back."""

from __future__ import annotations

import datetime
import decimal
import json
import math
import pathlib
import struct
import uuid
import zoneinfo
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import typedstore as ts
from helpers import join, same, with_metadata
from typedstore.codecs import TreeCodec
from typedstore.codecs._unpickler import MAX_EQUAL_HASHES
from typedstore.codecs.safetensors import read_header
from typedstore.codecs.tree import MAX_DEPTH
from typedstore.errors import DecodeError, EncodeError

tree = TreeCodec()
PARIS = zoneinfo.ZoneInfo("Europe/Paris")


def round_trip(value: Any) -> Any:
    assert tree.accepts(value)
    return tree.decode(memoryview(join(tree.encode(value))))


def metadata_tree(value: Any) -> Any:
    return json.loads(read_header(join(tree.encode(value))).metadata["typedstore.tree"])


KINDS: list[Any] = [
    (1, "two", 3.0, None),
    (),
    {1, 2, 3},
    frozenset({"a", (1, 2)}),
    {1: "int key", 2.5: "float key", (1, "t"): "tuple key", None: "none", False: "bool"},
    {"$tuple": "a key that looks like a tag", "plain": 1},
    b"\x00bytes",
    bytearray(b"\x01\x02"),
    2**64,
    -(2**63) - 1,
    10**1000,
    float("nan"),
    float("inf"),
    float("-inf"),
    -0.0,
    complex(1.5, -2),
    complex(float("nan"), -0.0),
    datetime.datetime(2024, 5, 6, 7, 8, 9, 123456),
    datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC),
    datetime.datetime(2024, 5, 6, tzinfo=datetime.timezone(datetime.timedelta(hours=-3), "BRT")),
    datetime.datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=PARIS),
    datetime.date(1999, 12, 31),
    datetime.time(23, 59, 59, 999999, tzinfo=datetime.timezone(datetime.timedelta(minutes=330))),
    datetime.timedelta(days=-1, seconds=5, microseconds=7),
    decimal.Decimal("3.14159"),
    decimal.Decimal("-0.000"),
    decimal.Decimal("NaN"),
    decimal.Decimal("-Infinity"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    uuid.UUID(int=5, is_safe=uuid.SafeUUID.safe),
    pathlib.PurePosixPath("/a/b.txt"),
    pathlib.PureWindowsPath(r"C:\x\y"),
    pathlib.Path("relative/dir"),
    [np.float32(1.5), np.int8(-3), np.bool_(True), np.complex64(1j)],
    {"w": np.zeros((2, 0), np.float16), "s": np.array(["a", "bc"]), "c": np.array([1 + 2j])},
    {"big-endian": np.arange(3, dtype=">f4"), "scalar": np.array(2, ">i8")},
    {"bf16": np.arange(4, dtype=np.float32).astype(ml_dtypes.bfloat16)},
    {"m": np.ma.masked_array([1.0, 2.0, 3.0], mask=[False, True, False], fill_value=-1.0)},
    {"m": np.ma.masked_array(np.arange(3, dtype=np.uint8), hard_mask=True)},
    [[[[]]], {}, {"": {"": None}}],
]


@pytest.mark.parametrize("value", KINDS, ids=lambda v: type(v).__name__)
def test_every_kind_comes_back_exactly(value: Any) -> None:
    back = round_trip(value)
    assert same(back, value), (back, value)


def test_a_checkpoint_is_a_safetensors_file_with_tensors_named_by_path() -> None:
    w, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(3, np.float32)
    checkpoint = {
        "model": {"w": w, "b": b},
        "optimizer": {"step": 10, "betas": (0.9, 0.999), "state": {0: {"m": np.zeros(3)}}},
        "epoch": 3,
    }
    assert ts.registry.for_value(checkpoint).name == "tree"
    data = join(tree.encode(checkpoint))
    tensors = safetensors.numpy.load(data)  # any safetensors tool reads it
    assert sorted(tensors) == ["model.b", "model.w", "optimizer.state.0.m"]
    assert same(tensors["model.w"], w)
    assert b"\x80\x05" not in data  # no pickle anywhere
    assert same(tree.decode(data), checkpoint)
    assert metadata_tree(checkpoint)["optimizer"]["betas"] == {"$tuple": [0.9, 0.999]}


def test_colliding_tensor_names_are_made_distinct() -> None:
    value = {"a.b": np.zeros(1), "a": {"b": np.ones(1)}, "__metadata__": np.ones(2)}
    names = set(safetensors.numpy.load(join(tree.encode(value))))
    assert names == {"a.b", "a.b~2", "__metadata__~2"}
    assert same(round_trip(value), value)


def test_arrays_nothing_holds_exactly_are_not_accepted() -> None:
    for value in ({"o": np.array([None, 1])}, [np.arange(3).astype(ml_dtypes.int4)]):
        assert not tree.accepts(value)
        with pytest.raises(EncodeError, match="no format holds exactly"):
            tree.encode(value)


def test_values_of_other_kinds_are_not_accepted() -> None:
    class Plain:
        pass

    class Zone(datetime.tzinfo):
        def utcoffset(self, dt: datetime.datetime | None) -> datetime.timedelta:
            return datetime.timedelta(0)

        def dst(self, dt: datetime.datetime | None) -> datetime.timedelta:
            return datetime.timedelta(0)

        def tzname(self, dt: datetime.datetime | None) -> str:
            return "Z"

    odd = [[Plain()], {"f": len}, (1, [object()]), datetime.datetime(2024, 1, 1, tzinfo=Zone())]
    for value in odd:
        assert not tree.accepts(value)
    with pytest.raises(EncodeError, match=r"1\.0 holds a builtins\.object"):
        tree.encode((1, [object()]))


def test_nesting_deeper_than_the_limit_is_not_accepted() -> None:
    value: Any = 1
    for _ in range(150):
        value = [value]
    assert not tree.accepts(value)
    shallow: Any = np.ones(1)
    for _ in range(90):
        shallow = (shallow,)
    assert same(round_trip(shallow), shallow)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda v: [v],
        lambda v: (v,),
        lambda v: {"k": v},
        lambda v: {1: v},
        lambda v: {"$k": v},
        lambda v: frozenset({v}),
    ],
    ids=["list", "tuple", "str-keyed", "int-keyed", "escaped", "frozenset"],
)
def test_what_is_accepted_at_the_depth_limit_reads_back(wrap: Callable[[Any], Any]) -> None:
    read_back = 0
    for depth in range(MAX_DEPTH - 3, MAX_DEPTH + 3):
        value: Any = b"leaf"  # hashable, and a tensor
        for _ in range(depth):
            value = wrap(value)
        if not tree.accepts(value):
            continue
        try:
            data = join(tree.encode(value))
        except EncodeError:
            continue  # refused at write: nothing stored
        assert same(tree.decode(data), value), depth
        read_back += 1
    assert read_back, "nothing near the limit was written: the test checked nothing"


def test_colliding_keys_are_refused_both_ways() -> None:
    # Ints equal modulo 2**61 - 1 share a hash: a set of many is quadratic to build.
    modulus = 2**61 - 1
    colliding = [i * modulus for i in range(MAX_EQUAL_HASHES + 1)]
    fine = set(colliding[:-1]) | set(range(1000))
    assert same(round_trip(fine), fine)
    for value in (set(colliding), frozenset(colliding), dict.fromkeys(colliding, 0)):
        with pytest.raises(EncodeError, match="of one hash"):
            tree.encode(value)
    items = ",".join(str(k) for k in colliding)
    pairs = ",".join(f"[{k},0]" for k in colliding)
    for text in (f'{{"$set": [{items}]}}', f'{{"$dict": [{pairs}]}}'):
        data = with_metadata(join(tree.encode([])), {"typedstore.tree": text})
        with pytest.raises(DecodeError, match="of one hash"):
            tree.decode(data)


def test_zero_copy_gives_read_only_views() -> None:
    value = {"w": np.arange(1000.0), "n": (1, 2)}
    data = join(tree.encode(value))
    back = tree.decode_view(memoryview(data))
    assert not back["w"].flags.writeable
    assert np.shares_memory(back["w"], np.frombuffer(data, np.uint8))
    assert same(back["n"], (1, 2))


def test_through_datastoreio_a_datastore_and_the_store_readers(store: Path) -> None:
    value = {"big": np.arange(300_000, dtype=np.float64), "t": (1, {2}), "d": decimal.Decimal(1)}
    io = ts.DataStoreIO.serialize_write(value, "p")
    assert io.reference.codec == "tree"
    assert same(io.read_deserialize(dict), value)
    assert same(io.read_deserialize(dict, zero_copy=True)["t"], (1, {2}))
    small = {"a": (1, 2), "b": np.ones(3)}
    assert same(ts.DataStoreIO.serialize_write(small, "p").read_deserialize(), small)
    url = ts.DataStore(v=value, when=datetime.datetime(2024, 1, 1, tzinfo=PARIS)).to_url("p")
    for lazy in (False, True):
        back = ts.DataStore.from_url(url, lazy=lazy)
        assert same(back.v, value)
        assert same(back.when, datetime.datetime(2024, 1, 1, tzinfo=PARIS))


@pytest.mark.parametrize(
    "tree_json",
    [
        "{not json",
        '{"w": {"$array": "nope"}}',
        '{"w": {"$array": "w"}, "v": {"$array": "w"}}',
        "{}",  # the tensor is not in the tree
        '{"w": {"$bytes": "w"}}',  # not a U8 vector
        '{"w": {"$array": "w"}, "x": {"$unknown": 1}}',
        '{"w": {"$array": "w"}, "x": {"$tuple": 5}}',
        '{"w": {"$array": "w"}, "x": {"$set": [[1]]}}',
        '{"w": {"$array": "w"}, "x": {"$set": [1, 1]}}',
        '{"w": {"$array": "w"}, "x": {"$dict": [[1, 2], [1, 3]]}}',
        '{"w": {"$array": "w"}, "x": {"$dict": [[1]]}}',
        '{"w": {"$array": "w"}, "x": {"$int": "1e5"}}',
        '{"w": {"$array": "w"}, "x": {"$int": "' + "9" * 5000 + '"}}',
        '{"w": {"$array": "w"}, "x": {"$float": "NaNa"}}',
        '{"w": {"$array": "w"}, "x": {"$decimal": "pi"}}',
        '{"w": {"$array": "w"}, "x": {"$uuid": ["xyz", null]}}',
        '{"w": {"$array": "w"}, "x": {"$path": ["os.system", "x"]}}',
        '{"w": {"$array": "w"}, "x": {"$datetime": ["2024-01-01T00:00+01:00", 0, null]}}',
        '{"w": {"$array": "w"}, "x": {"$datetime": ["2024-01-01", 0, {"zone": "../../etc"}]}}',
        '{"w": {"$array": "w"}, "x": {"$datetime": ["2024-01-01", 2, null]}}',
        '{"w": {"$array": "w"}, "x": {"$timedelta": [1, 2]}}',
        '{"w": {"$array": "w"}, "x": {"$class": ["os.system", {}]}}',
        '{"w": {"$array": "w"}, "x": {"$enum": ["os.system", 1]}}',
        '{"w": {"$array": "w"}, "$x": 1}',
        '{"w": {"$scalar": "w"}}',  # not 0-d
        "[" * 400 + "]" * 400,
    ],
)
def test_tampered_trees_are_decode_errors(tree_json: str) -> None:
    data = with_metadata(join(tree.encode({"w": np.ones(2)})), {"typedstore.tree": tree_json})
    with pytest.raises(DecodeError):
        tree.decode(data)


def test_numbers_round_trip_through_text_exactly() -> None:
    # Floats are written as Python's shortest repr, which parses back to the same bits.
    for x in (0.1, 1e-310, 5e-324, 1.7976931348623157e308, 2.0**53 + 2):
        assert struct.pack("<d", round_trip([x])[0]) == struct.pack("<d", x)
    assert metadata_tree([math.inf, -0.0, 2**64]) == [
        {"$float": "inf"}, {"$float": "-0.0"}, {"$int": str(2**64)}
    ]  # fmt: skip


leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.binary(max_size=8)
    | st.complex_numbers()
    | st.datetimes(timezones=st.none() | st.timezones())
    | st.dates()
    | st.timedeltas()
    | st.decimals()
    | st.uuids()
    | hnp.arrays(
        st.sampled_from(["<f4", "<i8", "?", "<c16", "<U3", ">f8", ">i2"]),
        hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3),
    )
)
hashable = st.none() | st.integers() | st.text() | st.tuples(st.integers(), st.text())
values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=5) | st.integers(), children, max_size=4)
        | st.frozensets(hashable, max_size=4)
        | st.sets(hashable, max_size=4)
    ),
    max_leaves=15,
)


@given(values)
def test_round_trip_property(value: Any) -> None:
    if not tree.accepts(value):  # a bare leaf JSON holds is still accepted; some are not
        return
    assert same(round_trip(value), value)
