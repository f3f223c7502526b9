"""Registered classes (attrs, dataclasses, pydantic models, enums) in the tree codec:
rebuilt as pickle rebuilds them, refused at registration when nothing could store them."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import socket
from pathlib import Path
from typing import Any, Generic, Literal, NewType, Optional, TypeVar, Union

import attrs
import numpy as np
import pydantic
import pytest
import safetensors.numpy

import typedstore as ts
from helpers import join, same, with_metadata
from typedstore.codecs import TreeCodec
from typedstore.codecs.safetensors import read_header
from typedstore.errors import DecodeError, EncodeError, RegistrationError, TypeMismatchError

T = TypeVar("T")


class Color(enum.IntEnum):
    RED = 1
    GREEN = 2


class Perm(enum.IntFlag):
    R = 4
    W = 2
    X = 1


class Mode(enum.StrEnum):
    TRAIN = "train"
    EVAL = "eval"


class Shape(enum.Enum):
    SQUARE = (1, 1)
    LINE = (1, 0)


@attrs.define(eq=False)
class Block:
    weight: np.ndarray[Any, Any]
    bias: np.ndarray[Any, Any] | None = None
    name: str = "block"


calls: list[str] = []


def _doubled(value: float) -> float:
    return value * 2


@attrs.define(eq=False)
class Net:
    blocks: list[Block]
    scale: float = attrs.field(default=1.0, converter=_doubled)
    steps: int = attrs.field(init=False, default=0)
    when: datetime.datetime | None = None
    colors: dict[Color, list[Mode]] = attrs.field(factory=dict)
    perm: Perm = Perm.R
    shape: Shape = Shape.LINE
    either: Union[int, str] = 0  # noqa: UP007 - the old spelling works too
    number: int | float = 0
    anything: Any = None
    box: tuple[int, ...] = ()

    def __attrs_post_init__(self) -> None:
        calls.append("post-init")


@attrs.frozen
class Frozen:
    x: int
    y: Optional[str] = None  # noqa: UP045


@attrs.define(slots=False)
class Later:
    a: int
    b: list[int] = attrs.field(init=False)


@dataclasses.dataclass
class Point:
    x: float
    y: float
    label: str = dataclasses.field(default="p")
    seen: int = dataclasses.field(init=False, default=0)

    def __post_init__(self) -> None:
        calls.append("dataclass post-init")


@dataclasses.dataclass(frozen=True, slots=True)
class Pair:
    left: Point
    right: tuple[Point, ...]
    kind: Literal["a", "b"] = "a"


class Config(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")

    lr: float
    layers: list[int] = [1]
    when: datetime.date | None = None
    color: Color = Color.RED

    @pydantic.field_validator("lr")
    @classmethod
    def doubled(cls, value: float) -> float:
        calls.append("validator")
        return value * 2


UserId = NewType("UserId", int)


@attrs.define
class Box(Generic[T]):
    item: T
    owner: UserId = UserId(0)


def tree_codec(registry: ts.CodecRegistry) -> TreeCodec:
    codec = registry.get("tree")
    assert isinstance(codec, TreeCodec)
    return codec


def fresh() -> ts.CodecRegistry:
    return ts.registry.copy()


def round_trip(registry: ts.CodecRegistry, value: Any) -> Any:
    codec = registry.for_value(value)
    assert codec.name == "tree"
    return codec.decode(memoryview(join(codec.encode(value))))


def test_attrs_instances_come_back_as_stored_without_running_their_code() -> None:
    registry = fresh()
    registry.register_class(Net)
    net = Net(
        [Block(np.ones((2, 3), np.float32), np.zeros(3), "first"), Block(np.eye(2))],
        scale=3,
        when=datetime.datetime(2024, 1, 2, tzinfo=datetime.UTC),
        colors={Color.GREEN: [Mode.EVAL, Mode.TRAIN]},
        perm=Perm.R | Perm.W,
        shape=Shape.SQUARE,
        either="text",
        number=2.5,
        anything=(1, {2: "two"}, [3.0]),
        box=(1, 2),
    )
    net.steps = 41
    calls.clear()
    back = round_trip(registry, net)
    assert calls == []  # no converter, post-init or __init__ ran
    assert back.scale == 6  # the converter's result, not run again (12)
    assert back.steps == 41  # init=False, set later
    assert same(back, net)
    assert type(next(iter(back.colors))) is Color
    assert type(back.colors[Color.GREEN][0]) is Mode
    assert type(back.perm) is Perm
    assert back.perm == 6
    assert back.anything == (1, {2: "two"}, [3.0])


def test_frozen_slotted_and_unset_fields() -> None:
    registry = fresh()
    for cls in (Frozen, Later, Pair):
        registry.register_class(cls)
    assert same(round_trip(registry, Frozen(1, "y")), Frozen(1, "y"))
    unset = round_trip(registry, Later(5))
    assert unset.a == 5
    assert not hasattr(unset, "b")
    later = Later(1)
    later.b = [2]
    assert round_trip(registry, later).b == [2]
    pair = Pair(Point(1, 2.5), (Point(3, 4, "q"),), "b")
    object.__setattr__(pair.left, "seen", 9)
    calls.clear()
    back = round_trip(registry, pair)
    assert calls == []
    assert back == pair
    assert back.left.seen == 9
    assert type(back.left.x) is int  # an int where a float is declared stays an int


def test_pydantic_models_keep_fields_set_extras_and_skip_validation() -> None:
    registry = fresh()
    registry.register_class(Config)
    calls.clear()
    config = Config(lr=0.5, when=datetime.date(2024, 1, 1), note=(1, 2))  # type: ignore[call-arg]
    assert calls == ["validator"]
    back = round_trip(registry, config)
    assert calls == ["validator"]  # not run again
    assert back == config
    assert back.lr == 1.0
    assert back.model_fields_set == config.model_fields_set
    assert back.model_extra == {"note": (1, 2)}
    assert type(back.color) is Color
    assert back.model_dump() == config.model_dump()


def test_enum_members_alone_in_lists_and_as_keys() -> None:
    registry = fresh()
    for cls in (Color, Mode, Perm, Shape):
        registry.register_class(cls)
    value = {Color.RED: [Mode.TRAIN, Perm.R | Perm.X], "s": Shape.SQUARE, "p": Perm(0)}
    assert same(round_trip(registry, value), value)
    assert same(round_trip(registry, Color.GREEN), Color.GREEN)


class Unlisted(enum.Enum):
    A = 1


def test_unregistered_classes_and_enums_inside_are_named() -> None:
    registry = fresh()
    assert registry.for_value({"c": Unlisted.A}).name == "pickle"  # tree does not hold it
    registry.register_class(Net)
    with pytest.raises(EncodeError, match=r"anything holds a .*Unlisted.*register_class"):
        registry.get("tree").encode(Net([], anything=Unlisted.A))


def test_values_that_do_not_fit_their_annotation_are_refused_at_write() -> None:
    registry = fresh()
    registry.register_class(Net)
    codec = registry.get("tree")
    for net, path in [
        (Net([], either=1.5), "either"),  # type: ignore[arg-type]
        (Net([Block(np.ones(1), name=5)]), r"blocks\.0\.name"),  # type: ignore[arg-type]
        (Net([], colors={1: []}), "colors"),  # type: ignore[dict-item]
        (Net([], box=("x",)), "box"),  # type: ignore[arg-type]
    ]:
        with pytest.raises(EncodeError, match=rf"{path} is declared .* but holds"):
            codec.encode(net)


@attrs.define
class WithSocket:
    sock: socket.socket


@attrs.define
class Nested:
    inner: list[dict[str, WithSocket]]


def test_registration_refuses_what_nothing_could_store_naming_the_field() -> None:
    @dataclasses.dataclass
    class Unresolved:
        x: NotDefined  # type: ignore[name-defined]  # noqa: F821

    class Plain:
        pass

    registry = fresh()
    with pytest.raises(RegistrationError, match=r"Nested\.inner\.sock: nothing stores a socket"):
        registry.register_class(Nested)
    assert tree_codec(registry).classes.classes == tree_codec(ts.registry).classes.classes
    with pytest.raises(RegistrationError, match="cannot resolve the annotations"):
        registry.register_class(Unresolved)
    with pytest.raises(RegistrationError, match="not an attrs class, a dataclass"):
        registry.register_class(Plain)
    with pytest.raises(RegistrationError, match="not a class"):
        registry.register_class(Frozen(1))  # type: ignore[call-overload]
    registry.register_class(Frozen)
    with pytest.raises(RegistrationError, match="already registered"):
        registry.register_class(Frozen)
    with pytest.raises(RegistrationError, match="already taken"):
        registry.register_class(Later, name=f"{__name__}.Frozen")
    with pytest.raises(RegistrationError, match="invalid type id"):
        registry.register_class(Later, name="has space")


def test_generics_newtypes_and_unions_round_trip() -> None:
    registry = fresh()
    registry.register_class(Box)
    for item in (1, "x", (1.5, None), np.arange(3)):
        box = Box(item, UserId(7))
        assert same(round_trip(registry, box), box)


def test_nested_classes_are_registered_with_their_container() -> None:
    registry = fresh()
    registry.register_class(Pair, name="stable.Pair")
    classes = tree_codec(registry).classes.classes
    assert classes["stable.Pair"] is Pair
    assert classes[f"{__name__}.Point"] is Point
    assert Point not in ts.registry.get("tree").types  # a copy registers on its own


def test_decorator_forms_and_the_old_name() -> None:
    registry = fresh()

    @registry.register_class
    @attrs.define
    class A:
        x: int

    @registry.register_attrs(name="stable.B")
    @attrs.define
    class B:
        x: int

    assert round_trip(registry, A(1)) == A(1)
    assert round_trip(registry, B(2)) == B(2)


def test_a_class_instance_file_is_standard_safetensors_without_pickle() -> None:
    registry = fresh()
    registry.register_class(Net)
    data = join(registry.get("tree").encode(Net([Block(np.ones(2)), Block(np.zeros(1))])))
    assert set(safetensors.numpy.load(data)) == {"blocks.0.weight", "blocks.1.weight"}
    assert b"\x80\x05" not in data
    tree = json.loads(read_header(data).metadata["typedstore.tree"])
    assert tree["$class"][0] == f"{__name__}.Net"


def test_unregistered_type_ids_and_wrong_fields_are_decode_errors() -> None:
    registry = fresh()
    registry.register_class(Frozen)
    data = join(registry.get("tree").encode(Frozen(1, "y")))
    with pytest.raises(DecodeError, match="is not registered"):
        ts.registry.copy().get("tree").decode(data)
    for fields in ('{"x": "one"}', '{"x": 1, "z": 2}', '{"x": 1, "y": 5}'):
        tampered = with_metadata(
            data, {"typedstore.tree": f'{{"$class": ["{__name__}.Frozen", {fields}]}}'}
        )
        with pytest.raises(DecodeError):
            registry.get("tree").decode(tampered)


def test_through_datastoreio_and_a_datastore(store: Path) -> None:
    ts.registry.register_class(Config, name="tests.classes.Config")
    config = Config(lr=1.0, layers=[2, 3])
    io = ts.DataStoreIO.serialize_write(config, "p")
    assert io.reference.codec == "tree"
    assert io.read_deserialize(Config) == config
    with pytest.raises(TypeMismatchError):
        io.read_deserialize(Block)
    url = ts.DataStore(c=config, ds=[config]).to_url("p")
    assert ts.DataStore.from_url(url, lazy=True).ds == [config]
