from __future__ import annotations

import datetime
import json
import struct
from typing import Any

import attrs
import numpy as np
import pytest
import safetensors.numpy
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import typedstore as ts
from helpers import join
from typedstore.codecs import AttrsCodec
from typedstore.codecs.safetensors import read_header
from typedstore.errors import DecodeError, EncodeError, RegistrationError, TypeMismatchError


@attrs.define(eq=False)
class Block:
    weight: np.ndarray[Any, Any]
    bias: np.ndarray[Any, Any] | None = None
    name: str = "block"


@attrs.define(eq=False)
class Net:
    blocks: list[Block]
    heads: dict[str, np.ndarray[Any, Any]] = attrs.field(factory=dict)
    dropout: float = 0.1
    shape: tuple[int, int] = (2, 3)
    counts: dict[int, str] = attrs.field(factory=dict)
    tags: frozenset[str] = frozenset()
    seed: int | None = None
    blob: bytes = b""
    loss: float = float("nan")
    strings: np.ndarray[Any, Any] | None = None


@attrs.define(eq=False)
class Counted(Block):
    count: int = 0


def test_int_keys_come_back_but_int_fields_take_no_strings() -> None:
    _, codec = fresh()
    codec.add(Net)
    net = Net([], counts={-3: "a", 10**30: "b"})
    assert codec.decode(join(codec.encode(net))).counts == {-3: "a", 10**30: "b"}


@attrs.define(eq=False)
class Special(Block):
    extra: int = 0


@attrs.define
class WithDate:
    when: datetime.datetime


@attrs.define
class Holder:
    inner: Block
    items: list[WithDate] = attrs.field(factory=list)


def fresh() -> tuple[ts.CodecRegistry, AttrsCodec]:
    reg = ts.CodecRegistry(load_plugins=False)
    codec = AttrsCodec()
    reg.register(codec)
    return reg, codec


def round_trip(codec: AttrsCodec, value: Any) -> Any:
    return codec.decode(memoryview(join(codec.encode(value))))


def assert_same(a: Any, b: Any) -> None:
    assert type(a) is type(b)
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype
        assert a.shape == b.shape
        assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    elif attrs.has(type(a)):
        for field in attrs.fields(type(a)):
            assert_same(getattr(a, field.name), getattr(b, field.name))
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, float) and a != a:
        assert b != b
    else:
        assert a == b


def test_registration_and_choice() -> None:
    reg, codec = fresh()
    assert reg.register_attrs(Net) is Net
    assert codec.classes[f"{__name__}.Net"] is Net
    assert reg.for_value(Net([])).name == "attrs"
    with pytest.raises(RegistrationError, match="already registered"):
        reg.register_attrs(Net)
    with pytest.raises(RegistrationError, match="already taken"):
        reg.register_attrs(Block, name=f"{__name__}.Net")
    with pytest.raises(RegistrationError, match="not an attrs class"):
        reg.register_attrs(dict)
    with pytest.raises(RegistrationError, match="invalid type id"):
        reg.register_attrs(Block, name="has space")


def test_decorator_forms() -> None:
    reg, codec = fresh()

    @reg.register_attrs
    @attrs.define
    class A:
        x: int

    @reg.register_attrs(name="stable.B")
    @attrs.define
    class B:
        x: int

    assert codec.classes["stable.B"] is B
    assert round_trip(codec, A(1)) == A(1)
    assert round_trip(codec, B(2)) == B(2)


def test_deep_model_with_hundreds_of_tensors() -> None:
    _, codec = fresh()
    codec.add(Net)
    rng = np.random.default_rng(0)
    net = Net(
        blocks=[
            Block(
                rng.random((4, 3), dtype=np.float32),
                rng.random(3) if i % 2 else None,
                name=f"b{i}",
            )
            for i in range(300)
        ],
        heads={"cls": np.arange(5, dtype=np.int64), "reg": np.zeros((0, 2), np.float16)},
        counts={1: "one", 2: "two"},
        tags=frozenset({"x"}),
        seed=7,
        blob=b"\x00\x01",
        strings=np.array(["a", "bc"]),
    )
    data = join(codec.encode(net))
    tensors = safetensors.numpy.load(data)  # a standard safetensors file
    assert len(tensors) == 300 + 150 + 2 + 2
    assert np.array_equal(tensors["blocks.7.weight"], net.blocks[7].weight)
    bias = net.blocks[7].bias
    assert bias is not None
    assert np.array_equal(tensors["blocks.7.bias"], bias)
    assert "blocks.8.bias" not in tensors
    back = codec.decode(data)
    assert_same(back, net)
    assert back.shape == (2, 3)
    assert isinstance(back.counts, dict)
    assert list(back.counts) == [1, 2]


def test_defaults_and_optionals() -> None:
    _, codec = fresh()
    codec.add(Net)
    net = Net([Block(np.ones(2))])
    back = round_trip(codec, net)
    assert_same(back, net)
    assert back.blocks[0].bias is None
    assert back.seed is None
    assert back.strings is None


def test_metadata_is_json_and_there_is_no_pickle() -> None:
    _, codec = fresh()
    codec.add(Net)
    data = join(codec.encode(Net([Block(np.ones(2))], loss=1.5)))
    header = read_header(data)
    entries, metadata = header.tensors, header.metadata
    assert metadata["typedstore.kind"] == "attrs"
    assert metadata["typedstore.type"] == f"{__name__}.Net"
    tree = json.loads(metadata["typedstore.tree"])
    assert tree["blocks"] == [{"weight": None, "bias": None, "name": "block"}]
    assert tree["dropout"] == 0.1
    assert b"\x80\x05" not in data  # no pickle protocol header anywhere
    assert set(entries) == {"blocks.0.weight", "blob"}


def test_unsupported_field_names_its_path() -> None:
    _, codec = fresh()
    codec.add(Holder)
    value = Holder(Block(np.ones(1)), [WithDate(datetime.datetime(2024, 1, 1))])
    with pytest.raises(EncodeError, match=r"items\.0\.when holds a datetime"):
        codec.encode(value)


def test_subclass_in_a_base_field_is_refused() -> None:
    _, codec = fresh()
    codec.add(Holder)
    with pytest.raises(EncodeError, match="Special stands where Block is declared"):
        codec.encode(Holder(Special(np.ones(1))))


def test_object_arrays_are_refused() -> None:
    _, codec = fresh()
    codec.add(Block)
    with pytest.raises(EncodeError, match="weight holds a ndarray"):
        codec.encode(Block(np.array([None])))


def test_unregistered_type_id_is_a_decode_error() -> None:
    _, codec = fresh()
    codec.add(Block)
    data = join(codec.encode(Block(np.ones(2))))
    _, other = fresh()
    with pytest.raises(DecodeError, match="is not registered"):
        other.decode(data)


def tamper(data: bytes, change: dict[str, str]) -> bytes:
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    header["__metadata__"].update(change)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data[8 + size :]


@pytest.mark.parametrize(
    "change",
    [
        {"typedstore.type": "os.system"},
        {"typedstore.kind": "other"},
        {"typedstore.tree": "{not json"},
        {"typedstore.tensors": "{}"},
        {"typedstore.tensors": '{"weight": {"path": ["name"], "kind": "ndarray"}}'},
        {"typedstore.tensors": '{"weight": {"path": ["nope", 3], "kind": "ndarray"}}'},
        {"typedstore.tensors": '{"weight": {"path": ["weight"], "kind": "pickle"}}'},
        {"typedstore.tensors": '{"weight": {"path": "weight", "kind": "ndarray"}}'},
        {"typedstore.tree": '{"weight": null, "bias": null, "name": 5}'},
        {"typedstore.tree": "[]"},
        {"typedstore.tree": '{"weight": null, "bias": null, "name": "b", "count": "1000000"}'},
    ],
    ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()),
)
def test_tampered_metadata_is_a_decode_error(change: dict[str, str]) -> None:
    _, codec = fresh()
    codec.add(Counted)
    data = tamper(join(codec.encode(Counted(np.ones(2)))), change)
    with pytest.raises(DecodeError):
        codec.decode(data)


def test_through_dataStoreio(store: Any) -> None:
    @attrs.define
    class Linear:
        coef: np.ndarray[Any, Any]
        intercept: float
        labels: list[str]

        def __eq__(self, other: object) -> bool:
            return (
                isinstance(other, Linear)
                and np.array_equal(self.coef, other.coef)
                and (self.intercept, self.labels) == (other.intercept, other.labels)
            )

    ts.registry.register_attrs(Linear)
    model = Linear(np.zeros(3), 0.5, ["a"])
    url = ts.DataStoreIO.serialize_write(model).url
    assert url.endswith("?codec=attrs")
    assert ts.DataStoreIO(url).read_deserialize(Linear) == model
    with pytest.raises(TypeMismatchError):
        ts.DataStoreIO(url).read_deserialize(Block)


@given(
    st.lists(
        hnp.arrays(
            st.sampled_from(["<f4", "<f8", "<i8", "?", "<c16"]),
            hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
        ),
        max_size=5,
    ),
    st.floats(allow_nan=False),
    st.text(),
)
def test_round_trip_property(arrays: list[np.ndarray[Any, Any]], lr: float, name: str) -> None:
    _, codec = fresh()
    codec.add(Net)
    net = Net([Block(a, name=name) for a in arrays], dropout=lr)
    assert_same(round_trip(codec, net), net)
