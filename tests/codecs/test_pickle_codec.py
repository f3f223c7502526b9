from __future__ import annotations

import collections
import contextlib
import datetime
import decimal
import fractions
import ipaddress
import os
import pathlib
import pickle
import struct
import subprocess
import sys
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import typedstore as ts
from helpers import Point, round_trip
from typedstore.codecs import PickleCodec
from typedstore.codecs.pickle import BUILTIN_ALLOWED, is_allowed
from typedstore.errors import DecodeError, EncodeError, UnsafeDataError

codec = PickleCodec()

ALLOWED_VALUES: list[Any] = [
    (1, "a", None),
    {1, 2},
    frozenset({"x"}),
    {(1, 2): [3.5, 2j]},
    datetime.datetime(2024, 5, 6, 7, 8, 9, 10, tzinfo=datetime.UTC),
    datetime.date(2024, 1, 1),
    datetime.time(1, 2),
    datetime.timedelta(days=3),
    datetime.timezone(datetime.timedelta(hours=2)),
    decimal.Decimal("1.25"),
    fractions.Fraction(3, 7),
    uuid.UUID(int=7),
    collections.OrderedDict(a=1),
    collections.defaultdict(list, {"a": [1]}),
    collections.deque([1, 2], maxlen=5),
    collections.Counter("hello"),
    pathlib.PurePosixPath("a/b"),
    pathlib.Path("x/y"),
    collections.ChainMap({"a": 1}, {"b": 2}),
    pathlib.PureWindowsPath("c:/x"),
    ipaddress.IPv4Network("10.0.0.0/8"),
    ipaddress.IPv6Address("::1"),
    bytearray(b"ab"),
    2**100,
    -0.0,
    float("inf"),
    "\ud800",
    slice(1, 2),
    [1, [2, [3]]],
]

# numpy objects have their own codecs; a pickle never builds one, whatever the patterns.
NUMPY_VALUES: list[Any] = [
    np.float32(1.5),
    np.int64(-3),
    np.datetime64("2020-01-01"),
    np.void(b"ab"),
    np.dtype("f4"),
    np.dtype([("a", "i4"), ("b", "U2")]),
    np.arange(10).reshape(2, 5),
    np.array([1, "x", None], dtype=object),
    np.ma.masked_array([1.0, 2.0], mask=[False, True]),
    (1, np.zeros(2)),
]


def same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return type(a) is type(b) and a.dtype == b.dtype and np.array_equal(a, b)
    return type(a) is type(b) and bool(a == b)


@pytest.mark.parametrize("value", ALLOWED_VALUES, ids=lambda v: type(v).__name__)
def test_allowed_values_round_trip(value: Any) -> None:
    assert same(round_trip(codec, value), value)


def test_shared_and_cyclic_references_survive() -> None:
    inner = [1]
    cyclic: list[Any] = [inner, inner]
    cyclic.append(cyclic)
    got = round_trip(codec, cyclic)
    assert got[0] is got[1]
    assert got[2] is got


@pytest.mark.parametrize("value", NUMPY_VALUES, ids=lambda v: type(v).__name__)
def test_numpy_objects_are_never_built_from_pickle_opcodes(value: Any) -> None:
    data = pickle.dumps(value, protocol=5)
    for allow in ([], ["numpy.*"], ["*"]):
        with (
            ts.options.ctx({"codecs.pickle.allow": allow}),
            pytest.raises(UnsafeDataError, match="never built from a pickle"),
        ):
            codec.decode(data)


# What the npy codec holds goes beside the pickle; the rest stays refused at write time.
BESIDE = [0, 1, 2, 3, 4, 6, 9]


@pytest.mark.parametrize("index", range(len(NUMPY_VALUES)))
def test_numpy_objects_go_beside_the_pickle_or_are_refused(index: int) -> None:
    value = NUMPY_VALUES[index]
    if index not in BESIDE:
        with pytest.raises(EncodeError, match="'safetensors' or 'npy' codec"):
            codec.encode(value)
        return
    back = round_trip(codec, value)
    for got, want in zip(back, value, strict=True) if type(value) is tuple else [(back, value)]:
        assert type(got) is type(want)
        if isinstance(want, np.ndarray | np.generic):
            assert (got.dtype, got.tobytes()) == (want.dtype, want.tobytes())
        else:
            assert got == want


def test_defaultdict_factory_survives() -> None:
    got = round_trip(codec, collections.defaultdict(list))
    got["new"].append(1)
    assert got == {"new": [1]}


def test_user_class_is_refused_with_a_helpful_message() -> None:
    data = pickle.dumps(Point(1, 2), protocol=5)
    with pytest.raises(UnsafeDataError, match=r"helpers\.Point.*codecs\.pickle\.allow"):
        codec.decode(data)


def test_user_class_loads_once_allowed() -> None:
    data = pickle.dumps([Point(1, 2)], protocol=5)
    with ts.options.ctx({"codecs.pickle.allow": ["helpers.*"]}):
        assert codec.decode(data) == [Point(1, 2)]
    with ts.options.ctx({"codecs.pickle.allow": ["helpers.Point"]}):
        assert codec.decode(data) == [Point(1, 2)]
    with ts.options.ctx({"codecs.pickle.unrestricted": True}):
        assert codec.decode(data) == [Point(1, 2)]


def test_encode_failure_is_an_encode_error() -> None:
    with pytest.raises(EncodeError, match="pickle"):
        codec.encode(lambda: 1)


def test_protocol_5() -> None:
    (data,) = codec.encode({"a": 1})
    assert bytes(data)[:2] == b"\x80\x05"


# --- Malicious pickles -----------------------------------------------------------------


class Reduce:
    """Pickles as a call of ``func(*args)``, the classic way into a pickle loader."""

    def __init__(self, func: Callable[..., Any], *args: Any) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, self.args)


def unicode(text: str) -> bytes:
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def call(module: str, name: str, *args: Any) -> bytes:
    """A protocol-4 pickle calling ``module.name(*args)``; dotted names are allowed there."""
    arguments = pickle.dumps(args, protocol=2)[2:-1]
    return b"\x80\x04" + unicode(module) + unicode(name) + b"\x93" + arguments + b"R."


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "pwned"


def malicious(marker: Path) -> dict[str, bytes]:
    shell = f"touch {marker}"
    code = f"open({str(marker)!r}, 'w').close()"
    inner = pickle.dumps(Reduce(os.system, shell))
    return {
        "os.system": pickle.dumps(Reduce(os.system, shell)),
        "subprocess": pickle.dumps(Reduce(subprocess.call, ["touch", str(marker)])),
        "eval": pickle.dumps(Reduce(eval, f"__import__('os').system({shell!r})")),
        "exec": pickle.dumps(Reduce(exec, code)),
        "compile": call("builtins", "compile", code, "x", "exec"),
        "nested pickle.loads": pickle.dumps(Reduce(pickle.loads, inner)),
        "getattr": call("builtins", "getattr", "x", "upper"),
        "dotted os": call("pathlib", "os.system", shell),
        "dotted through our module": call("typedstore.codecs.pickle", "pickle.loads", inner),
        "dotted through an allowed class": call("collections", "OrderedDict.__class__"),
        "import": call("builtins", "__import__", "os"),
        "importlib": call("importlib", "import_module", "os"),
        "open": call("builtins", "open", str(marker), "w"),
        "numpy runstring": call("numpy.testing._private.utils", "runstring", code, {}),
        "numpy load": call("numpy", "load", str(marker)),
        "sys.exit": call("sys", "exit", 3),
        "type": call("builtins", "type", "X", (), {}),
        "functools.partial": call("functools", "partial", 1),
        "operator.attrgetter": call("operator", "attrgetter", "system"),
        "copyreg.__newobj__": call("copyreg", "__newobj__", 1),
        "persistent id": b"\x80\x04\x8c\x01xQ.",
    }


MALICIOUS_NAMES = sorted(malicious(Path("m")))


@pytest.mark.parametrize("name", MALICIOUS_NAMES)
def test_malicious_pickles_are_refused_and_nothing_runs(name: str, marker: Path) -> None:
    with pytest.raises(UnsafeDataError):
        codec.decode(malicious(marker)[name])
    assert not marker.exists()


@pytest.mark.parametrize("name", MALICIOUS_NAMES)
def test_broad_allow_patterns_do_not_open_dangerous_names(name: str, marker: Path) -> None:
    patterns = ["numpy.*", "collections.*", "pathlib.*", "typedstore.*"]
    # Refused as unsafe, or (Python 3.13, where pathlib is a package without an `os`
    # attribute) as naming something that does not exist: either way a DecodeError.
    with ts.options.ctx({"codecs.pickle.allow": patterns}), pytest.raises(DecodeError):
        codec.decode(malicious(marker)[name])
    assert not marker.exists()


def test_dotted_names_cannot_escape_an_allowed_module(marker: Path) -> None:
    # glob imports os, so "glob.os.system" matches the pattern "glob.*" by name alone.
    with (
        ts.options.ctx({"codecs.pickle.allow": ["glob.*"]}),
        pytest.raises(UnsafeDataError, match=r"posix\.system"),
    ):
        codec.decode(call("glob", "os.system", f"touch {marker}"))
    assert not marker.exists()


def test_forbidden_names_win_over_patterns() -> None:
    for name in (
        "numpy.testing._private.utils.runstring",
        "os.system",
        "builtins.eval",
        "numpy.load",
        "numpy.lib.npyio.load",
        "subprocess.Popen",
    ):
        assert not is_allowed(name, ["*"])
    assert not is_allowed("numpy.ndarray", ["numpy.*"])
    assert is_allowed("collections.deque")
    assert "builtins.eval" not in BUILTIN_ALLOWED


ALLOCATION_BOMBS = {
    "ndarray called directly": call("numpy", "ndarray", (10**12,), "u1"),
    "reconstruct with a shape": call(
        "numpy._core.multiarray", "_reconstruct", np.ndarray, (10**12,), b"b"
    ),
    "masked reconstruct with a shape": call(
        "numpy.ma.core", "_mareconstruct", np.ma.MaskedArray, np.ndarray, (10**12,), b"b"
    ),
    "fraction with an exponent": call("fractions", "Fraction", "1e999999999"),
    "bytes of a size": call("builtins", "bytes", 10**12),
    "range": call("builtins", "range", 10**12),
}


@pytest.mark.parametrize("name", sorted(ALLOCATION_BOMBS))
def test_allocation_bombs_are_refused(name: str) -> None:
    with pytest.raises(UnsafeDataError):
        codec.decode(ALLOCATION_BOMBS[name])


def length8(opcode: bytes, length: int) -> bytes:
    """A protocol 5 pickle whose ``opcode`` states ``length`` (8 bytes) and holds 2."""
    return b"\x80\x05" + opcode + struct.pack("<Q", length) + b"xx."


# Pickles that state sizes they do not hold: the unpickler would believe them.
SIZE_BOMBS = {
    "memo index (LONG_BINPUT) of nothing": (b"r\x00\x00\x00\x0f.", "memo entry 251658240"),
    "memo index (PUT) out of range": (b"}p30000000000\n.", "memo entry 30000000000"),
    "memo read never written": (b"}j\x00\x00\x00\x0f.", "memo entry 251658240"),
    "PUT index not a number": (b"}p3x\n.", "invalid literal"),
    "bytearray length": (length8(b"\x96", 8 << 30), "length of 8589934592"),
    "bytes length": (length8(b"\x8e", 8 << 30), "length of 8589934592"),
    "str length": (length8(b"\x8d", 8 << 30), "length of 8589934592"),
    "frame length": (length8(b"\x95", 8 << 30), "frame runs past the end"),
    "bytes length, 4 bytes": (b"B" + struct.pack("<I", 2**32 - 1) + b"x.", "of 4294967295"),
    "negative int length": (b"\x8b\xff\xff\xff\xff.", "length of -1"),
    "unknown opcode": (b"\xff.", "invalid pickle opcode 0xff"),
}


@pytest.mark.parametrize("name", sorted(SIZE_BOMBS))
def test_stated_sizes_are_checked_before_anything_is_allocated(name: str) -> None:
    data, message = SIZE_BOMBS[name]
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError, match=message):
            codec.decode(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_protocol_loads_plain_data(protocol: int) -> None:
    # Protocols 1 to 3 number memo entries with BINPUT and, past 255, LONG_BINPUT;
    # protocol 0 with PUT; 4 and 5 memoize without an index, in frames.
    # (Bytes are left out: protocols below 3 write them as calls to _codecs.encode.)
    value = [(i, f"s{i}", 2.5 * i, -(2**70) * i) for i in range(400)] + ["x" * 70_000]
    data = pickle.dumps(value, protocol=protocol)
    assert codec.decode(data) == value
    for cut in (1, 2, 9, len(data) // 2):
        with pytest.raises(DecodeError):
            codec.decode(data[:-cut])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\x05",
        pickle.dumps([1, 2, 3])[:-3],
        pickle.dumps(1) + b"extra",
        struct.pack("<Q", 2) + b"{}",
        b"garbage",
    ],
)
def test_malformed(data: bytes) -> None:
    with pytest.raises(DecodeError):
        codec.decode(data)


@given(st.binary(max_size=200))
def test_random_bytes_give_only_decode_errors(data: bytes) -> None:
    for candidate in (data, b"\x80\x05" + data):
        with contextlib.suppress(DecodeError):
            codec.decode(candidate)


def test_nothing_runs_in_a_fresh_process(tmp_path: Path) -> None:
    # The whole chain in a clean interpreter: decode through DataStoreIO, check no effect.
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Reduce(os.system, f"touch {marker}"))
    store = tmp_path / "store"
    (store / "p").mkdir(parents=True)
    (store / "p" / "evil").write_bytes(payload)
    script = f"""
import typedstore as ts
ts.options.set("datastore.url", {str(store)!r})
try:
    ts.DataStoreIO("datastore:///p/evil?codec=pickle").read_deserialize()
except ts.errors.UnsafeDataError as exc:
    print("refused:", exc)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert "refused:" in out
    assert "posix.system" in out
    assert not marker.exists()


# --- numpy values kept beside the pickle (version 2) -----------------------------------


def model_like() -> Point:
    """A user object holding numpy values, as a fitted scikit-learn model does."""
    weights = np.arange(12, dtype=np.float32).reshape(3, 4)
    model = Point(1, 2)
    model.__dict__.update(
        coef=weights,
        same_coef=weights,  # one array, twice
        transposed=np.asfortranarray(weights),
        classes=np.array(["setosa", "virginica"]),
        records=np.zeros(2, dtype=[("a", "<i4"), ("b", "<f8", (2,))]),
        n_iter=np.int64(7),
        score=np.float64(0.25),
        flag=np.bool_(True),
        dtype=np.dtype(">u2"),
        stamp=np.datetime64("2024-01-02", "D"),
        nested={"bias": np.ones(2), "tags": ["a"]},
    )
    return model


def test_numpy_values_inside_an_allowed_object_come_back_exactly() -> None:
    value = model_like()
    with ts.options.ctx({"codecs.pickle.allow": ["helpers.Point"]}):
        data = b"".join(bytes(c) for c in codec.encode(value))
        assert data.startswith(b"\x00typedstore pickle+arrays\n")
        back = codec.decode(memoryview(data))
    assert type(back) is Point
    for name in ("coef", "transposed", "classes", "records"):
        got, want = back.__dict__[name], value.__dict__[name]
        assert type(got) is np.ndarray
        assert (got.dtype, got.shape, got.tobytes()) == (want.dtype, want.shape, want.tobytes())
        assert got.flags.writeable
    state = back.__dict__
    assert state["transposed"].flags.f_contiguous
    assert state["same_coef"] is state["coef"]
    for name in ("n_iter", "score", "flag", "stamp"):
        got, want = back.__dict__[name], value.__dict__[name]
        assert (type(got), got) == (type(want), want)
    assert state["dtype"] == np.dtype(">u2")
    assert np.array_equal(state["nested"]["bias"], np.ones(2))
    assert state["nested"]["tags"] == ["a"]


def test_values_without_numpy_are_written_as_version_1_wrote_them() -> None:
    value = {"a": [1, 2.5], "b": (None, "x")}
    (data,) = codec.encode(value)
    assert bytes(data) == pickle.dumps(value, protocol=5)


def test_unrestricted_loads_numpy_values_beside_the_pickle_too() -> None:
    value = {"w": np.arange(3), "s": np.float32(2.5)}
    data = b"".join(bytes(c) for c in codec.encode(value))
    with ts.options.ctx({"codecs.pickle.unrestricted": True}):
        back = codec.decode(memoryview(data))
    assert np.array_equal(back["w"], np.arange(3))
    assert type(back["s"]) is np.float32


def crafted(pickled: bytes, arrays: list[bytes], count: int | None = None) -> bytes:
    parts = [b"\x00typedstore pickle+arrays\n", struct.pack("<Q", len(pickled)), pickled]
    parts.append(struct.pack("<I", len(arrays) if count is None else count))
    for array in arrays:
        parts += [struct.pack("<Q", len(array)), array]
    return b"".join(parts)


def with_pid(pid: object) -> bytes:
    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: object) -> object:
            return pid if obj == "marker" else None

    import io

    file = io.BytesIO()
    Pickler(file, protocol=5).dump(["marker"])
    return file.getvalue()


NPY = bytes(b"".join(bytes(c) for c in ts.registry.get("npy").encode(np.arange(3))))

CRAFTED_OBJECTS = {
    "unknown id": crafted(with_pid(("file", "/etc/passwd")), []),
    "index past the arrays": crafted(with_pid(("array", 1)), [NPY]),
    "negative index": crafted(with_pid(("array", -1)), [NPY]),
    "object dtype": crafted(with_pid(("dtype", "O")), []),
    "record dtype": crafted(with_pid(("dtype", "[('a', '<i4')]")), []),
    "id not a tuple": crafted(with_pid("array"), [NPY]),
    "array count past the end": crafted(with_pid(("array", 0)), [], count=2**32 - 1),
    "array length past the end": crafted(with_pid(("array", 0)), [NPY])[:-5],
    "trailing bytes": crafted(with_pid(("array", 0)), [NPY]) + b"x",
    "pickle length past the end": b"\x00typedstore pickle+arrays\n" + struct.pack("<Q", 2**60),
    "an array of objects": crafted(with_pid(("array", 0)), [NPY.replace(b"<i8", b"|O8")]),
    "persistent id in a bare pickle": with_pid(("array", 0)),
}


@pytest.mark.parametrize("name", sorted(CRAFTED_OBJECTS))
def test_crafted_objects_with_numpy_values_are_clear_errors(name: str) -> None:
    with pytest.raises(DecodeError):
        codec.decode(memoryview(CRAFTED_OBJECTS[name]))
