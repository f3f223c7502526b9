"""Hostile pickles: what the interpreter refuses, and that refusing costs little."""

from __future__ import annotations

import copy
import dataclasses
import fractions
import json
import pickle
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import typedstore as ts
from typedstore.codecs import PickleCodec
from typedstore.codecs._unpickler import MAX_EQUAL_HASHES, MAX_NESTING
from typedstore.errors import DecodeError, EncodeError, UnsafeDataError

codec = PickleCodec()


def text(value: str) -> bytes:
    raw = value.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def text_op(value: str) -> bytes:
    raw = value.encode()
    return b"X" + len(raw).to_bytes(4, "little") + raw


def glob(module: str, name: str) -> bytes:
    return text(module) + text(name) + b"\x93"


def p5(body: bytes) -> bytes:
    return b"\x80\x05" + body + b"."


def decode(data: bytes, allow: list[str] | None = None) -> Any:
    with ts.options.ctx({"codecs.pickle.allow": allow or []}):
        return codec.decode(data)


# --- numpy's state setters: memory corruption from default-allowed names ------------------

# numpy.dtype's __setstate__ with an object field while the "has objects" flag is clear:
# under pickle.Unpickler the load reads 8 data bytes as a PyObject pointer.
DTYPE_STATE = p5(
    glob("numpy", "dtype")
    + text("V16")
    + b"\x89\x88\x87R"  # dtype("V16", False, True)
    + b"(K\x03"
    + text("|")
    + b"N"
    + b"(" + text("f") + b"\x85"  # names
    + b"}" + text("f") + b"(" + glob("numpy", "dtype") + text("O8") + b"\x89\x88\x87R"
    + b"K\x08t" + b"s"  # fields: {"f": (dtype("O8"), 8)}
    + b"K\x10K\x01K\x00tb"  # BUILD: itemsize 16, alignment 1, flags 0 (no objects)
)  # fmt: skip


@pytest.mark.parametrize("allow", [[], ["numpy.*"], ["*"], ["numpy.dtype"]])
def test_numpy_state_setters_never_run(allow: list[str]) -> None:
    with pytest.raises(UnsafeDataError, match="'safetensors' or 'npy'"):
        decode(DTYPE_STATE, allow)


def test_numpy_reached_through_an_alias_is_refused() -> None:
    data = p5(glob("helpers", "np_alias.dtype") + text("f8") + b"\x85R")
    with pytest.raises(UnsafeDataError, match=r"'numpy\.dtype'.*never built"):
        decode(data, ["helpers.*"])


def test_an_alias_gets_the_guard_of_what_it_names() -> None:
    # helpers.Fraction is fractions.Fraction: the same guard (no huge power of ten).
    data = p5(glob("helpers", "Fraction") + text("1e999999999") + b"\x85R")
    with pytest.raises(UnsafeDataError, match="Fraction from something other than"):
        decode(data, ["helpers.*"])
    assert decode(p5(glob("helpers", "Fraction") + b"K\x03K\x04\x86R"), ["helpers.*"]) == 0.75


# --- state setting only where inert -----------------------------------------------------------


@dataclasses.dataclass
class Plain:
    """A plain Python class: its state is set as pickle would, inertly."""

    value: Any = None


class OwnState:
    """A class with its own __setstate__: code that runs with state from the file."""

    ran: list[Any] = []  # noqa: RUF012

    def __init__(self) -> None:
        self.value = 0

    def __setstate__(self, state: Any) -> None:
        OwnState.ran.append(state)
        self.__dict__.update(state)


class Listish(list[Any]):
    """A list subclass with its own append: APPENDS would run it."""

    def extend(self, items: Any) -> None:
        raise AssertionError("ran")


def test_plain_classes_get_their_state_set() -> None:
    module = __name__
    got = decode(pickle.dumps(Plain([1, 2]), protocol=5), [f"{module}.*"])
    assert got == Plain([1, 2])


def test_own_setstate_needs_an_exact_name() -> None:
    module = __name__
    data = pickle.dumps(OwnState(), protocol=5)
    OwnState.ran.clear()
    with pytest.raises(UnsafeDataError, match=r"sets the state of .*OwnState.*named exactly"):
        decode(data, [f"{module}.*"])
    assert OwnState.ran == []
    assert decode(data, [f"{module}.OwnState"]).value == 0
    assert OwnState.ran == [{"value": 0}]


def test_items_go_only_into_inert_containers() -> None:
    module = __name__
    data = pickle.dumps(Listish([1, 2]), protocol=5)
    with pytest.raises(UnsafeDataError, match=r"adds items to .*Listish"):
        decode(data, [f"{module}.*"])


def test_extension_types_need_an_exact_name() -> None:
    # decimal.Context is a C type: its constructor and state belong to C code.
    data = pickle.dumps([1], protocol=5)[:-1] + b"0" + glob("_decimal", "Context") + b"."
    with pytest.raises(UnsafeDataError, match="extension type"):
        decode(data, ["_decimal.*", "decimal.*"])


def test_state_of_a_builtin_type_is_never_set() -> None:
    # BUILD on a datetime (a C type) with a dict: not something any pickler writes.
    data = p5(pickle.dumps(Plain(), protocol=5)[2:-1] + b"0" + glob("datetime", "timedelta")
              + b"K\x01\x85R}b")  # fmt: skip
    with pytest.raises(UnsafeDataError, match=r"sets the state of a datetime\.timedelta"):
        decode(data, [f"{__name__}.*"])


def test_classes_that_open_files_are_refused_under_any_pattern(tmp_path: Path) -> None:
    target = tmp_path / "truncated"
    target.write_bytes(b"keep")
    for module, name, args in (
        ("logging", "FileHandler", (str(target), "w")),
        ("zipfile", "ZipFile", (str(target), "w")),
        ("sqlite3", "connect", (str(target),)),
    ):
        data = p5(glob(module, name) + pickle.dumps(args, protocol=5)[2:-1] + b"R")
        with pytest.raises(UnsafeDataError, match="never loads"):
            decode(data, ["*"])
    assert target.read_bytes() == b"keep"


def test_typedstore_objects_are_never_built() -> None:
    for name in ("typedstore.storage.LocalStorage", "typedstore.registry.CodecRegistry"):
        module, _, qualname = name.rpartition(".")
        with pytest.raises(UnsafeDataError, match="never loads"):
            decode(p5(glob(module, qualname) + b")R"), ["typedstore.*", "*"])


# --- small inputs, unbounded work -----------------------------------------------------------

EXPANDERS = {
    "list of a network": p5(
        glob("builtins", "list") + glob("ipaddress", "IPv4Network") + text("0.0.0.0/0")
        + b"\x85R\x85R"
    ),
    "int of a decimal": p5(
        glob("builtins", "int") + glob("decimal", "Decimal") + text("1e10000000") + b"\x85R\x85R"
    ),
    "bytes of a size": p5(glob("builtins", "bytes") + b"J\xff\xff\xff\x7f\x85R"),
    "set of a range": p5(glob("builtins", "set") + glob("builtins", "range") + b"J\xff\xff\xff"
                         b"\x7f\x85R\x85R"),
    "counter of a string": p5(glob("collections", "Counter") + text("x" * 200) + b"\x85R"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(EXPANDERS))
def test_callables_never_expand_an_argument(name: str) -> None:
    with pytest.raises(UnsafeDataError):
        decode(EXPANDERS[name], ["helpers.*"])


def test_a_fraction_of_huge_integers_is_refused_before_its_gcd() -> None:
    # The gcd of two 6-million-bit ints takes half a minute; the pickle is 1.5 MB.
    big = (3 ** (2**22), 7 ** (2**21))
    data = p5(glob("fractions", "Fraction") + pickle.dumps(big, protocol=5)[2:-1] + b"R")
    with pytest.raises(DecodeError, match="copy more data than the pickle holds"):
        decode(data)
    assert decode(pickle.dumps(fractions.Fraction(3**400, 7**300), protocol=5)) == (
        fractions.Fraction(3**400, 7**300)
    )
    # As text too: one long "n/d" string, memoized and passed to Fraction again and again.
    text = "7" * 4300 + "/" + "3" * 4300
    once = glob("fractions", "Fraction") + b"\x94" + text_op(text) + b"\x94\x85R0"
    again = b"h\x00h\x01\x85R0" * 2000
    assert decode(p5(once[:-1])) == fractions.Fraction(text)
    with pytest.raises(DecodeError, match="copy more data than the pickle holds"):
        decode(p5(once + again + b"N"))


def test_repeated_copies_of_one_memoized_value_are_bounded() -> None:
    # One list of 10,000 items, then 10,000 deques of it: 100 MB of pointers from 170 kB.
    big = b"]\x94(" + b"K\x01" * 10_000 + b"e0"
    calls = (glob("collections", "deque") + b"h\x00\x85R0") * 10_000
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError, match="copy more data than the pickle holds"):
            decode(p5(big + calls + b"N"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 << 20


def test_deep_tuples_are_refused_before_they_are_hashed() -> None:
    # Used as a dict key, a tuple nested a million deep overflows the C stack.
    data = p5(b"}N" + b"\x85" * 1_000_000 + b"Ns")
    with pytest.raises(DecodeError, match=f"over {MAX_NESTING} deep"):
        decode(data)
    # Through the memo too: each TUPLE1 of a memoized tuple is one level more.
    memo = p5(b"}N\x85q\x00" + b"0h\x00\x85q\x00" * (MAX_NESTING + 5) + b"Ns")
    with pytest.raises(DecodeError, match="deep"):
        decode(memo)
    assert decode(p5(b"N" + b"\x85" * (MAX_NESTING - 1))) is not None


def test_deep_tuples_crash_nothing_in_a_fresh_process() -> None:
    script = (
        "import typedstore as ts\n"
        "codec = ts.registry.get('pickle')\n"
        "data = b'\\x80\\x05}N' + b'\\x85' * 1_000_000 + b'Ns.'\n"
        "try:\n    codec.decode(data)\nexcept ts.errors.DecodeError as exc:\n"
        "    print('refused:', exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "refused:" in result.stdout


def test_keys_of_one_hash_are_bounded() -> None:
    # ints are hashed modulo 2**61 - 1, unsalted: 20,000 equal hashes take seconds to insert.
    modulus = (1 << 61) - 1
    keys = b"".join(
        b"\x8a\x10" + (i * modulus).to_bytes(16, "little", signed=True) for i in range(1, 20_000)
    )
    for container in (b"\x8f(" + keys + b"\x90", b"(" + keys + b"\x91"):
        with pytest.raises(DecodeError, match=f"over {MAX_EQUAL_HASHES} keys of one hash"):
            decode(p5(container))
    fine = {i * modulus: i for i in range(MAX_EQUAL_HASHES)}
    assert decode(pickle.dumps(fine, protocol=5)) == fine


def test_python2_and_out_of_band_opcodes_are_refused() -> None:
    for body, what in ((b"S'x'\n", "Python 2"), (b"\x97", "out-of-band"), (b"P1\n", "persistent")):
        with pytest.raises(UnsafeDataError, match=what):
            decode(p5(body))


def test_refused_values_are_not_written() -> None:
    with pytest.raises(EncodeError, match="cannot be read back under the current options"):
        codec.encode([Plain()])
    with ts.options.ctx({"codecs.pickle.allow": [f"{__name__}.*"]}):
        codec.encode([Plain()])


# --- DataStores restored from pickles --------------------------------------------------------


class Restore:
    """Pickles as the restore of a DataStore reference (what a pickled DataStore holds)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __reduce__(self) -> tuple[Any, ...]:
        from typedstore.datastore import _restore

        return (_restore, (self.url,))


def test_one_reference_restores_once_per_load(store: Path) -> None:
    url = ts.DataStore(a=np.arange(3)).to_url("p")
    got = decode(pickle.dumps([Restore(url) for _ in range(100)], protocol=5))
    assert all(item is got[0] for item in got)
    # The same object under references that differ in their parameters: once too.
    variants = decode(pickle.dumps([Restore(f"{url}&n={i}") for i in range(100)], protocol=5))
    assert all(item is variants[0] for item in variants)
    assert np.array_equal(got[0].a, np.arange(3))


def put_entry(path: Path, key: str, codec_name: str, payload: bytes) -> None:
    """Make entry ``key`` of the container at ``path`` hold ``payload`` under a codec."""
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    assert list(header) == ["__metadata__", key], "one entry only"
    header[key]["shape"] = [len(payload)]
    header[key]["data_offsets"] = [0, len(payload)]
    table = json.loads(header["__metadata__"]["typedstore.entries"])
    table["codecs"] = [[codec_name, 1, False]]
    header["__metadata__"]["typedstore.entries"] = json.dumps(table)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + payload)


@pytest.mark.usefixtures("unchecked")
def test_a_container_restoring_itself_is_refused(store: Path) -> None:
    url = ts.DataStore(a=b"placeholder").to_url("p")
    put_entry(store / ts.Reference.parse(url).key, "a", "pickle", pickle.dumps(Restore(url)))
    with pytest.raises(DecodeError, match="restores a DataStore that contains it"):
        ts.DataStore.from_url(url)
    lazy = ts.DataStore.from_url(url, lazy=True)
    with pytest.raises(DecodeError, match="contains it"):
        copy.deepcopy(lazy)


@pytest.mark.usefixtures("unchecked")
def test_two_containers_restoring_each_other_are_refused(store: Path) -> None:
    first = ts.DataStore(a=b"placeholder").to_url("p")
    second = ts.DataStore(a=b"placeholder").to_url("p")
    put_entry(store / ts.Reference.parse(first).key, "a", "pickle", pickle.dumps(Restore(second)))
    put_entry(store / ts.Reference.parse(second).key, "a", "pickle", pickle.dumps(Restore(first)))
    for lazy in (False, True):
        with pytest.raises(DecodeError, match="contains it"):
            copy.deepcopy(ts.DataStore.from_url(first, lazy=lazy))
