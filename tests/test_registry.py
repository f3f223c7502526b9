from __future__ import annotations

import importlib.metadata
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

import typedstore as ts
from typedstore.codecs import RawCodec
from typedstore.errors import NoCodecError, PluginWarning, RegistrationError, UnknownCodecError
from typedstore.protocols import Buffer


class Base:
    pass


class Child(Base):
    pass


class GrandChild(Child):
    pass


class FakeCodec:
    """A codec for tests: serves given types, accepts per a predicate."""

    version: ClassVar[int] = 1

    def __init__(self, name: str, types: tuple[type, ...], accept: bool | None = None) -> None:
        self.name = name
        self.types = types
        self._accept = accept

    def accepts(self, value: object) -> bool:
        return True if self._accept is None else self._accept

    def encode(self, value: Any) -> Sequence[Buffer]:
        return [repr(value).encode()]

    def decode(self, data: Buffer, expected_type: type[Any] | None = None) -> Any:
        return bytes(data).decode()


def fresh() -> ts.CodecRegistry:
    return ts.CodecRegistry(load_plugins=False)


def test_default_registry_has_the_builtins() -> None:
    assert {"raw", "safetensors", "npy", "json", "pickle"} <= set(ts.registry.names())
    assert ts.registry.source("raw") == "built-in"


@pytest.mark.parametrize(
    ("value", "codec"),
    [
        (b"x", "raw"),
        (bytearray(b"x"), "tree"),  # raw would give bytes back
        (memoryview(b"x"), "raw"),
        (np.zeros(3, np.float32), "safetensors"),
        ({"w": np.zeros(3)}, "safetensors"),
        (np.zeros(3, np.complex128), "npy"),
        (np.array(["a"]), "npy"),
        (np.ma.masked_array([1.0]), "safetensors"),  # data and mask as tensors
        (np.array([None]), "pickle"),
        ({"a": 1}, "json"),
        ({}, "json"),
        ([1, "a"], "json"),
        (None, "json"),
        (True, "json"),
        (1.5, "json"),
        ((1, 2), "tree"),
        ({1: "a"}, "tree"),
        (float("nan"), "tree"),
        ({"m": {"w": np.zeros(2)}, "step": 3}, "tree"),
        ({"w": np.zeros(2), "step": 3}, "tree"),
        (np.float64(1.0), "safetensors"),  # a numpy scalar, not a float
        (Child(), "pickle"),
    ],
    # No memory addresses in ids: parallel workers must collect the same tests.
    ids=lambda v: type(v).__name__ if isinstance(v, (memoryview, Child)) else repr(v),
)
def test_builtin_choice(value: Any, codec: str) -> None:
    assert ts.registry.for_value(value).name == codec


def test_most_specific_class_in_the_mro_wins() -> None:
    reg = fresh()
    reg.register(FakeCodec("base", (Base,)))
    reg.register(FakeCodec("child", (Child,)))
    assert reg.for_value(Base()).name == "base"
    assert reg.for_value(Child()).name == "child"
    assert reg.for_value(GrandChild()).name == "child"


def test_priority_then_accepts() -> None:
    reg = fresh()
    reg.register(FakeCodec("low", (Base,)), priority=-1)
    reg.register(FakeCodec("high", (Base,), accept=False), priority=5)
    assert reg.for_value(Base()).name == "low"
    reg.register(FakeCodec("mid", (Base,)), priority=1)
    assert reg.for_value(Base()).name == "mid"


def test_refusal_walks_on_to_the_next_class() -> None:
    reg = fresh()
    reg.register(FakeCodec("base", (Base,)))
    reg.register(FakeCodec("picky", (Child,), accept=False))
    assert reg.for_value(Child()).name == "base"


def test_no_codec() -> None:
    reg = fresh()
    reg.register(FakeCodec("base", (Base,), accept=False))
    with pytest.raises(NoCodecError, match="Child"):
        reg.for_value(Child())
    with pytest.raises(TypeError):
        reg.for_value(1)


def test_conflicts_are_refused_at_registration() -> None:
    reg = fresh()
    reg.register(FakeCodec("one", (Base, int)))
    with pytest.raises(RegistrationError, match="already registered"):
        reg.register(FakeCodec("one", (str,)))
    with pytest.raises(RegistrationError, match="priority 0"):
        reg.register(FakeCodec("two", (int,)))
    reg.register(FakeCodec("two", (int,)), priority=1)
    # The refused registrations left nothing behind.
    assert reg.names() == ["one", "two"]
    assert reg.for_value(Base()).name == "one"


@pytest.mark.parametrize(
    "name", ["", "Raw", "my codec", "os.system()", "a/b", "ü", "x" * 65, "a:b", "a?b"]
)
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(RegistrationError, match="invalid codec name"):
        fresh().register(FakeCodec(name, (Base,)))


def test_not_a_codec_is_refused() -> None:
    reg = fresh()
    with pytest.raises(RegistrationError, match="not a codec"):
        reg.register(object())  # type: ignore[call-overload]
    bad_version = FakeCodec("v", (Base,))
    bad_version.version = 0  # type: ignore[misc]
    with pytest.raises(RegistrationError, match="version"):
        reg.register(bad_version)
    with pytest.raises(RegistrationError, match="types"):
        reg.register(FakeCodec("t", [Base]))  # type: ignore[arg-type]
    with pytest.raises(RegistrationError, match="priority"):
        reg.register(FakeCodec("p", (Base,)), priority="1")  # type: ignore[call-overload]


def test_register_as_a_class_decorator() -> None:
    reg = fresh()

    @reg.register
    class PointCodec:
        name: ClassVar[str] = "point"
        version: ClassVar[int] = 1
        types: ClassVar[tuple[type, ...]] = (Base,)

        def accepts(self, value: object) -> bool:
            return True

        def encode(self, value: Base) -> Sequence[Buffer]:
            return [b""]

        def decode(self, data: Buffer, expected_type: type[Any] | None = None) -> Base:
            return Base()

    @reg.register(priority=3)
    class Other(PointCodec):
        name: ClassVar[str] = "other"

    assert isinstance(reg.get("point"), PointCodec)
    assert reg.for_value(Base()).name == "other"
    assert reg.priority("other") == 3


def test_cache_is_invalidated_on_register() -> None:
    reg = fresh()
    reg.register(FakeCodec("base", (Base,)))
    assert reg.for_value(GrandChild()).name == "base"
    reg.register(FakeCodec("grand", (GrandChild,)))
    assert reg.for_value(GrandChild()).name == "grand"


def test_cache_does_not_keep_types_alive() -> None:
    import gc
    import weakref

    reg = fresh()
    reg.register(FakeCodec("any", (object,)))

    def make() -> weakref.ref[type]:
        cls = type("Temp", (), {})
        reg.for_value(cls())
        return weakref.ref(cls)

    ref = make()
    gc.collect()
    assert ref() is None


def test_get_and_unknown_names() -> None:
    assert ts.registry.get("raw").name == "raw"
    with pytest.raises(UnknownCodecError, match=r"'os\.system'.*registered codecs: "):
        ts.registry.get("os.system")
    with pytest.raises(LookupError):
        ts.registry.get("nope")


def test_codecs_view_is_read_only() -> None:
    view = ts.registry.codecs
    assert view["raw"] is ts.registry.get("raw")
    with pytest.raises(TypeError):
        view["x"] = view["raw"]  # type: ignore[index]


def test_explain() -> None:
    text = ts.registry.explain(np.ma.masked_array(["a"]))
    assert "numpy.ndarray" in text
    assert "safetensors (priority 10, built-in): refuses the value" in text
    assert "npy (priority 0, built-in): refuses the value" in text
    assert "pickle (priority 0, built-in): accepts the value -> chosen" in text
    assert text.endswith("result: 'pickle'")
    text = ts.registry.explain({"a": 1})
    assert "safetensors (priority 10, built-in): refuses" in text
    assert "json (priority 0, built-in): accepts the value -> chosen" in text
    assert "pickle (priority 0, built-in): not tried" in text


# --- Plugins through entry points ------------------------------------------------------


@pytest.fixture
def plugin_dist(tmp_path: Path) -> Iterator[Path]:
    """A fake installed distribution exposing codecs in the typedstore.codecs group."""
    (tmp_path / "fake_plugin.py").write_text(
        textwrap.dedent(
            """
            from typing import Any

            class Celsius(float):
                pass

            class CelsiusCodec:
                name = "celsius"
                version = 1
                types = (Celsius,)
                priority = 2

                def accepts(self, value: object) -> bool:
                    return type(value) is Celsius

                def encode(self, value: Any) -> list[bytes]:
                    return [repr(float(value)).encode()]

                def decode(self, data: Any, expected_type: Any = None) -> Celsius:
                    return Celsius(float(bytes(data)))

            LOADED = []

            def broken() -> None:
                raise RuntimeError("plugin is broken")
            """
        )
    )
    info = tmp_path / "fake_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[typedstore.codecs]\n"
        "celsius = fake_plugin:CelsiusCodec\n"
        "broken = fake_plugin:missing_name\n"
        "taken = typedstore.codecs.raw:RawCodec\n"
    )
    sys.path.insert(0, str(tmp_path))
    importlib.invalidate_caches()
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("fake_plugin", None)


def test_plugins_are_loaded_lazily_at_first_lookup(plugin_dist: Path) -> None:
    reg = ts.CodecRegistry()
    reg.register(RawCodec())
    assert "fake_plugin" not in sys.modules
    with pytest.warns(PluginWarning) as caught:
        names = reg.names()
    assert "celsius" in names
    assert reg.source("celsius") == "plugin fake_plugin:CelsiusCodec"
    assert reg.priority("celsius") == 2
    messages = " ".join(str(w.message) for w in caught)
    assert "'broken'" in messages
    assert "'taken'" in messages
    assert "a codec named 'raw' is already registered" in messages
    assert reg.source("raw") == "built-in"  # registered by a call, but typedstore's own
    celsius_type = sys.modules["fake_plugin"].Celsius
    assert reg.for_value(celsius_type(21.5)).name == "celsius"


def test_plugin_codec_round_trips(plugin_dist: Path) -> None:
    import warnings

    reg = ts.CodecRegistry()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)
        codec = reg.get("celsius")
    value = sys.modules["fake_plugin"].Celsius(3.5)
    data = b"".join(bytes(b) for b in codec.encode(value))
    assert codec.decode(data) == 3.5


def test_entry_point_distribution_is_visible(plugin_dist: Path) -> None:
    eps = importlib.metadata.entry_points(group="typedstore.codecs")
    assert {"celsius", "broken", "taken"} <= {ep.name for ep in eps}


class _Later:
    """A class a codec names before it exists (as codecs name pandas' classes)."""


class _LaterChild(_Later):
    pass


class ByName:
    name = "by-name"
    version = 1
    types: ClassVar[tuple[type | str, ...]] = (f"{__name__}._Later",)

    def accepts(self, value: object) -> bool:
        return isinstance(value, _Later)

    def encode(self, value: Any) -> Sequence[Buffer]:
        return [b""]

    def decode(self, data: Buffer, expected_type: type[Any] | None = None) -> Any:
        return _Later()


def test_codecs_may_name_classes_that_are_not_imported() -> None:
    registry = ts.CodecRegistry(load_plugins=False)
    registry.register(ByName())
    registry.register(ts.codecs.PickleCodec())
    assert registry.for_value(_Later()).name == "by-name"
    assert registry.for_value(_LaterChild()).name == "by-name"  # through the MRO
    assert registry.for_value(object()).name == "pickle"
    assert "by-name" in registry.explain(_LaterChild())

    class Clash(ByName):
        name = "by-name-2"

    with pytest.raises(RegistrationError, match="would both serve"):
        registry.register(Clash())

    class Bad(ByName):
        name = "bad-name"
        types = ("not qualified",)

    with pytest.raises(RegistrationError, match="qualified class names"):
        registry.register(Bad())


def test_the_table_classes_are_named_as_the_libraries_define_them() -> None:
    # A library that moves a class would silently send its tables to pickle.
    import pandas as pd
    import polars as pl
    import pyarrow as pa

    for value in (pd.DataFrame(), pd.Series(dtype=float), pd.RangeIndex(2), pa.table({}),
                  pa.record_batch({"a": [1]}), pl.DataFrame(), pl.Series("s", [1])):  # fmt: skip
        assert ts.registry.for_value(value).name == "arrow", type(value)
