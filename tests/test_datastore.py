from __future__ import annotations

import copy
import datetime
import json
import os
import pickle
import struct
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest
import safetensors.numpy

import typedstore as ts
from helpers import files_under, join
from typedstore import policy
from typedstore.codecs.safetensors import read_header
from typedstore.errors import (
    DecodeError,
    EncodeError,
    IntegrityError,
    TypeMismatchError,
    UnknownCodecError,
    UnsafeDataError,
)


@attrs.define(eq=False)
class LinearModel:
    coef: np.ndarray[Any, Any]
    intercept: float
    labels: list[str]


ts.registry.register_attrs(LinearModel, name="tests.datastore.LinearModel")


def mixed() -> ts.DataStore:
    ds = ts.DataStore()
    ds.weights = np.arange(100.0).reshape(10, 10)
    ds.model = LinearModel(np.ones(3), 0.5, ["a", "b"])
    ds.note = b"raw bytes"
    ds.params = {"lr": 0.1, "layers": [64, 32]}
    ds.when = datetime.date(2024, 1, 2)
    ds.pair = (1, "two")
    ds.spectrum = np.array([1 + 2j])
    ds.empty = np.zeros((0, 3), np.float32)
    return ds


def same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ma.MaskedArray):
        return type(b) is np.ma.MaskedArray and np.array_equal(a.mask, b.mask)
    if isinstance(a, np.ndarray):
        return type(b) is np.ndarray and a.dtype == b.dtype and np.array_equal(a, b)
    if attrs.has(type(a)):
        return type(a) is type(b) and all(
            same(getattr(a, f.name), getattr(b, f.name)) for f in attrs.fields(type(a))
        )
    if isinstance(a, Mapping):
        return type(a) is type(b) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and bool(a == b)


def test_a_value_pickle_could_not_read_back_is_refused_before_storing(store: Path) -> None:
    ds = ts.DataStore(ok=1, masked=np.ma.masked_array(np.array(["a", "b"]), mask=[False, True]))
    with pytest.raises(ts.errors.EncodeError, match=r"(?s)'safetensors' or 'npy'.*key 'masked'"):
        ds.to_url("p")
    assert not any(store.rglob("*"))


def test_attribute_and_item_access() -> None:
    ds = ts.DataStore({"a": 1}, b=2)
    assert ds.a == 1
    assert ds["b"] == 2
    ds.c = 3
    assert ds["c"] == 3
    del ds.a
    assert "a" not in ds
    with pytest.raises(AttributeError, match="'missing'"):
        _ = ds.missing
    with pytest.raises(KeyError):
        ds["missing"]
    with pytest.raises(AttributeError):
        del ds.missing
    assert ds.get("missing", 5) == 5
    assert isinstance(ds, MutableMapping)
    assert dict(ds) == {"b": 2, "c": 3}
    assert "c" in dir(ds)


def test_names_of_methods_stay_methods() -> None:
    ds = ts.DataStore()
    with pytest.raises(AttributeError, match=r"use d\['items'\]"):
        ds.items = 1  # type: ignore[method-assign,assignment]
    with pytest.raises(AttributeError):
        ds.to_url = 1  # type: ignore[method-assign,assignment]
    ds["items"] = 1
    assert ds["items"] == 1
    assert callable(ds.items)


def test_repr_never_dumps_large_values() -> None:
    ds = ts.DataStore(big=np.zeros((1000, 1000)), small=np.arange(3), blob=b"x" * 10_000)
    text = repr(ds)
    assert "<ndarray float64 (1000, 1000)>" in text
    assert "array([0, 1, 2])" in text
    assert "<bytes of 10000 bytes>" in text
    assert len(text) < 200
    ds.me = ds
    assert "DataStore({...})" in repr(ds)


def test_round_trip_is_one_object(store: Path) -> None:
    ds = mixed()
    url = ds.to_url(relative_path_prefix="exp-42")
    ref = ts.Reference.parse(url)
    assert ref.codec == "datastore"
    assert files_under(store) == [ref.key]
    back = ts.DataStore.from_url(url)
    assert type(back) is ts.DataStore
    assert list(back) == list(ds)
    for key in ds:
        assert same(ds[key], back[key]), key


def test_container_is_a_safetensors_file(store: Path) -> None:
    url = mixed().to_url("exp")
    tensors = safetensors.numpy.load_file(store / ts.Reference.parse(url).key)
    assert set(tensors) == set(mixed())
    assert tensors["weights"].shape == (10, 10)
    assert tensors["weights"].dtype == np.float64
    assert tensors["note"].tobytes() == b"raw bytes"
    assert json.loads(tensors["params"].tobytes()) == {"lr": 0.1, "layers": [64, 32]}


def test_a_large_container_has_its_data_at_a_page_boundary(store: Path) -> None:
    arrays = {f"a{i}": np.full(1 << 14, i, np.float64) for i in range(10)}  # 1.25 MiB
    path = store / ts.Reference.parse(ts.DataStore(arrays, note=b"n").to_url("p")).key
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    assert (8 + size) % 4096 == 0
    tensors = safetensors.numpy.load_file(path)
    for key, array in arrays.items():
        assert np.array_equal(tensors[key], array)


def test_empty_datastore(store: Path) -> None:
    url = ts.DataStore().to_url("p")
    assert ts.DataStore.from_url(url) == {}
    assert ts.DataStore.from_url(url, lazy=True) == {}


def test_nested_datastore_stays_inside_the_outer_object(store: Path) -> None:
    outer = ts.DataStore(x=1, inner=ts.DataStore(a=np.arange(3), deeper=ts.DataStore(b=b"z")))
    url = outer.to_url("p")
    assert len(files_under(store)) == 1
    for lazy in (False, True):
        back = ts.DataStore.from_url(url, lazy=lazy)
        assert type(back.inner) is ts.DataStore
        assert np.array_equal(back.inner.a, np.arange(3))
        assert back.inner.deeper.b == b"z"


def test_values_no_codec_can_encode_name_the_key(store: Path) -> None:
    ds = ts.DataStore(fine=1, bad=lambda: 1)
    with pytest.raises(EncodeError, match="key 'bad'"):
        ds.to_url("p")

    @attrs.define
    class Dated:
        when: datetime.datetime
        extra: Any = None

    ts.registry.register_class(Dated)
    dated = ts.DataStore(m=Dated(datetime.datetime(2024, 1, 1), extra=object()))
    with pytest.raises(EncodeError, match=r"(?s)extra holds a builtins.object.*key 'm'"):
        dated.to_url("p")
    assert not store.exists() or files_under(store) == []


def test_non_string_keys_are_refused(store: Path) -> None:
    with pytest.raises(EncodeError, match="key 1"):
        ts.DataStore({1: "x"}).to_url("p")


def test_lazy_keys_are_known_and_values_read_on_touch(store: Path) -> None:
    url = mixed().to_url("p")
    lazy = ts.DataStore.from_url(url, lazy=True)
    assert list(lazy) == list(mixed())
    assert len(lazy) == len(mixed())
    assert "note" in lazy
    assert repr(lazy).count("<not loaded>") == len(mixed())
    assert lazy.note == b"raw bytes"
    assert lazy["params"] == {"lr": 0.1, "layers": [64, 32]}
    assert lazy.get("pair") == (1, "two")
    assert repr(lazy).count("<not loaded>") == len(mixed()) - 3
    values = list(lazy.values())
    assert "<not loaded>" not in repr(lazy)
    assert same(values[0], mixed().weights)
    assert dict(lazy.items()).keys() == mixed().keys()


def test_dict_conversions_of_a_lazy_datastore_read_values(store: Path) -> None:
    url = ts.DataStore(a=1, b=[2]).to_url("p")
    conversions = (
        dict,
        lambda d: {**d},
        lambda d: d.copy(),
        lambda d: json.loads(json.dumps(dict(d))),
    )
    for convert in conversions:
        assert convert(ts.DataStore.from_url(url, lazy=True)) == {"a": 1, "b": [2]}
    assert ts.DataStore.from_url(url, lazy=True) == ts.DataStore.from_url(url, lazy=True)


def test_lazy_missing_key(store: Path) -> None:
    lazy = ts.DataStore.from_url(ts.DataStore(a=1).to_url("p"), lazy=True)
    with pytest.raises(KeyError, match="'nope'"):
        lazy["nope"]


def entry_range(path: Path, key: str) -> tuple[int, int]:
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    begin, end = json.loads(data[8 : 8 + size])[key]["data_offsets"]
    return 8 + size + begin, 8 + size + end


def damage(path: Path, key: str) -> None:
    start, end = entry_range(path, key)
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(b"\xff" * (end - start))


@pytest.mark.parametrize("checksum", ["crc32c", None])
def test_lazy_read_touches_only_its_entry(store: Path, checksum: str | None) -> None:
    ts.options.set("datastore.checksum", checksum)
    url = ts.DataStore(good={"a": 1}, bad={"b": 2}, arr=np.arange(5)).to_url("p")
    path = store / ts.Reference.parse(url).key
    damage(path, "bad")
    lazy = ts.DataStore.from_url(url, lazy=True)
    assert lazy.good == {"a": 1}
    assert np.array_equal(lazy.arr, np.arange(5))
    # With checksums the entry's own crc32c finds the damage before its codec could.
    error, match = (
        (IntegrityError, r"entry 'bad': the stored bytes do not match their crc32c")
        if checksum
        else (DecodeError, r"entry 'bad' \(codec 'json'\)")
    )
    with pytest.raises(error, match=match) as info:
        _ = lazy.bad
    assert url in ts.errors.describe(info.value)
    with pytest.raises(error):
        ts.DataStore.from_url(url)


def test_lazy_read_reads_only_its_bytes(store: Path) -> None:
    # A lazy read of a small entry next to a large one must not read the large one:
    # strace-free proof through the bytes the process reads, counted by /proc/self/io.
    big = np.ones(32 * 2**20 // 8)
    url = ts.DataStore(big=big, small=b"x").to_url("p")
    lazy = ts.DataStore.from_url(url, lazy=True)

    def rchar() -> int:
        with open("/proc/self/io") as f:
            return int(next(line for line in f if line.startswith("rchar:")).split()[1])

    before = rchar()
    assert lazy.small == b"x"
    small_read = rchar() - before
    before = rchar()
    assert lazy.big.nbytes == big.nbytes
    big_read = rchar() - before
    assert small_read < 4096
    assert big_read >= big.nbytes


def test_lazy_datastore_keeps_its_store(tmp_path: Path) -> None:
    with ts.options.ctx({"datastore.url": str(tmp_path / "a")}):
        url = ts.DataStore(x=1).to_url("p")
        lazy = ts.DataStore.from_url(url, lazy=True)
    with ts.options.ctx({"datastore.url": str(tmp_path / "b")}):
        assert lazy.x == 1


def test_from_url_of_another_codec(store: Path) -> None:
    url = ts.DataStoreIO.serialize_write({"a": 1}, "p").url
    with pytest.raises(TypeMismatchError, match="does not hold a DataStore"):
        ts.DataStore.from_url(url)


def test_serialize_write_picks_the_datastore_codec(store: Path) -> None:
    io = ts.DataStoreIO.serialize_write(ts.DataStore(a=1), "p")
    assert io.reference.codec == "datastore"
    assert io.read_deserialize(ts.DataStore) == {"a": 1}


def test_to_url_is_not_repeated_while_unchanged(store: Path) -> None:
    ds = ts.DataStore(a=1, s="x", t=(1, 2))
    url = ds.to_url("p")
    assert ds.to_url() == url
    assert ds.to_url("p") == url
    references = [ds.reference]
    ds.b = 2
    references.append(ds.reference)
    assert references == [url, None]
    assert ds.to_url() != url
    assert len(files_under(store)) == 2


def test_values_that_may_have_changed_in_place_are_stored_again(store: Path) -> None:
    ds = ts.DataStore(w=np.zeros(3))
    url = ds.to_url("p")
    ds.w[0] = 5  # invisible to the DataStore itself
    second = ds.to_url("p")
    assert second != url
    assert ts.DataStore.from_url(second).w[0] == 5


def test_pickling_stores_and_keeps_only_the_reference(store: Path) -> None:
    ds = ts.DataStore(w=np.ones((100, 100)), n=b"x")
    data = pickle.dumps(ds)
    assert len(data) < 300
    assert len(files_under(store)) == 1
    back = pickle.loads(data)
    assert type(back) is ts.DataStore
    assert "<not loaded>" in repr(back)
    assert np.array_equal(back.w, ds.w)
    # An untouched lazy DataStore pickles to the same reference, without storing again.
    untouched = pickle.loads(data)
    assert pickle.dumps(untouched) == data
    assert len(files_under(store)) == 1


def test_pickled_datastore_through_the_pickle_codec(store: Path) -> None:
    # A DataStore inside a value that is pickled (here a tuple) is stored on its own and
    # comes back through the restricted unpickler.
    url = ts.DataStoreIO.serialize_write((1, ts.DataStore(a=np.arange(3))), "p").url
    number, inner = ts.DataStoreIO(url).read_deserialize(tuple)
    assert number == 1
    assert np.array_equal(inner.a, np.arange(3))
    assert len(files_under(store)) == 2


def rewrite_metadata(path: Path, change: Any) -> None:
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    change(header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + size :])


def edit_entry(key: str, **changes: Any) -> Any:
    """A header change giving one entry another codec, version or tensor flag."""

    def change(header: dict[str, Any]) -> None:
        table = json.loads(header["__metadata__"]["typedstore.entries"])
        position = table["keys"].index(key)
        codec, version, tensor = table["codecs"][table["index"][position]]
        info = {"codec": codec, "version": version, "tensor": tensor, **changes}
        table["codecs"].append([info["codec"], info["version"], info["tensor"]])
        table["index"][position] = len(table["codecs"]) - 1
        header["__metadata__"]["typedstore.entries"] = json.dumps(table)

    return change


def set_table(table: Any) -> Any:
    """A header change replacing the entry table by ``table`` (JSON-encoded)."""

    def change(header: dict[str, Any]) -> None:
        header["__metadata__"]["typedstore.entries"] = json.dumps(table)

    return change


def version_3(table: Any) -> Any:
    """A header change making the container version 3 with entry table ``table``."""

    def change(header: dict[str, Any]) -> None:
        header["__metadata__"]["typedstore.version"] = "3"
        header["__metadata__"]["typedstore.entries"] = json.dumps(table)

    return change


def to_version_1(header: dict[str, Any]) -> None:
    """Rewrite a version 2 container's metadata as version 1 wrote it."""
    metadata = header["__metadata__"]
    table = json.loads(metadata.pop("typedstore.entries"))
    assert metadata.pop("typedstore.version") == "2"
    metadata["typedstore.entries"] = json.dumps(
        {
            key: dict(zip(("codec", "version", "tensor"), table["codecs"][i], strict=True))
            for key, i in zip(table["keys"], table["index"], strict=True)
        }
    )


@pytest.mark.usefixtures("unchecked")
def test_hostile_container_unknown_codec(store: Path) -> None:
    url = ts.DataStore(a=b"x", b=1).to_url("p")
    rewrite_metadata(store / ts.Reference.parse(url).key, edit_entry("a", codec="os.system"))
    lazy = ts.DataStore.from_url(url, lazy=True)
    assert lazy.b == 1
    with pytest.raises(DecodeError, match=r"unknown codec 'os\.system'[^\n]*\nentry 'a'"):
        _ = lazy.a
    with pytest.raises(DecodeError, match="unknown codec"):
        ts.DataStore.from_url(url)


@pytest.mark.usefixtures("unchecked")
def test_hostile_container_unregistered_type_id(store: Path) -> None:
    url = ts.DataStore(m=LinearModel(np.ones(2), 0.0, [])).to_url("p")
    path = store / ts.Reference.parse(url).key
    data = path.read_bytes()
    path.write_bytes(data.replace(b"tests.datastore.LinearModel", b"tests.datastore.LinearModeX"))
    with pytest.raises(DecodeError, match="is not registered"):
        ts.DataStore.from_url(url)


@pytest.mark.usefixtures("unchecked")
@pytest.mark.parametrize(
    "change",
    [
        lambda h: h["__metadata__"].update({"typedstore.entries": "{not json"}),
        lambda h: h["__metadata__"].update({"typedstore.entries": "{}"}),
        lambda h: h["__metadata__"].pop("typedstore.kind"),
        lambda h: h["b"].update({"data_offsets": h["a"]["data_offsets"]}),
        lambda h: h["a"].update({"dtype": "F32", "shape": [0]}),
        edit_entry("a", codec="Not A Name"),
    ],
    ids=["not-json", "empty-table", "no-kind", "overlap", "not-bytes", "bad-name"],
)
def test_hostile_containers_are_decode_errors(store: Path, change: Any) -> None:
    url = ts.DataStore(a=b"xxxx", b=b"yyyy").to_url("p")
    rewrite_metadata(store / ts.Reference.parse(url).key, change)
    with pytest.raises((DecodeError, UnknownCodecError)):
        ts.DataStore.from_url(url).load()
    with pytest.raises((DecodeError, UnknownCodecError)):
        ts.DataStore.from_url(url, lazy=True).load()


_GOOD_TABLE = {"codecs": [["raw", 1, False], ["safetensors", 1, True]], "keys": ["a", "b"]}


@pytest.mark.usefixtures("unchecked")
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (set_table([]), "must have exactly"),
        (set_table({**_GOOD_TABLE, "index": [0, 1], "x": 1}), "must have exactly"),
        (set_table({**_GOOD_TABLE, "codecs": {}, "index": [0, 1]}), "must be lists"),
        (set_table({**_GOOD_TABLE, "index": "01"}), "must be lists"),
        (set_table({"codecs": [["raw", 1]], "keys": ["a", "b"], "index": [0, 0]}), "codec"),
        (set_table({"codecs": [["raw", "1", False]], "keys": ["a"], "index": [0]}), "codec"),
        (set_table({"codecs": [["raw", True, False]], "keys": ["a"], "index": [0]}), "codec"),
        (set_table({"codecs": [["raw", 1, 0]], "keys": ["a"], "index": [0]}), "codec"),
        (set_table({**_GOOD_TABLE, "keys": ["a"], "index": [0]}), "does not match"),
        (set_table({**_GOOD_TABLE, "keys": ["a", "a"], "index": [0, 0]}), "does not match"),
        (set_table({**_GOOD_TABLE, "keys": [["a"], "b"], "index": [0, 1]}), "does not match"),
        (set_table({**_GOOD_TABLE, "keys": ["a", "b", "c"], "index": [0, 1, 1]}), "match"),
        (set_table({**_GOOD_TABLE, "index": [0]}), "one int per key"),
        (set_table({**_GOOD_TABLE, "index": [False, True]}), "one int per key"),
        (set_table({**_GOOD_TABLE, "index": [0, 1.0]}), "one int per key"),
        (set_table({**_GOOD_TABLE, "index": [0, 2]}), "does not list"),
        (set_table({**_GOOD_TABLE, "index": [-1, 1]}), "does not list"),
        (set_table({**_GOOD_TABLE, "index": [1, 0]}), "'b' must be a U8 vector"),
        (lambda h: h["__metadata__"].update({"typedstore.version": "4"}), "version '4'"),
        (version_3({**_GOOD_TABLE, "index": [0, 1]}), "must have exactly"),
        (version_3({**_GOOD_TABLE, "index": [0, 1], "crc32c": [1]}), "one checksum per key"),
        (version_3({**_GOOD_TABLE, "index": [0, 1], "crc32c": "12"}), "one checksum per key"),
        (version_3({**_GOOD_TABLE, "index": [0, 1], "crc32c": [1, 2.0]}), "one checksum per"),
        (version_3({**_GOOD_TABLE, "index": [0, 1], "crc32c": [1, True]}), "one checksum per"),
        (version_3({**_GOOD_TABLE, "index": [0, 1], "crc32c": [-1, 0]}), "one checksum per"),
        (version_3({**_GOOD_TABLE, "index": [0, 1], "crc32c": [0, 1 << 32]}), "one checksum"),
        (version_3({**_GOOD_TABLE, "index": [0, 2], "crc32c": [0, 0]}), "does not list"),
        (lambda h: h["__metadata__"].update({"typedstore.version": 2}), "string"),
        (lambda h: h["__metadata__"].update({"typedstore.version": "1"}), "does not match"),
    ],
)
def test_hostile_entry_tables_are_decode_errors(store: Path, change: Any, message: str) -> None:
    url = ts.DataStore(a=b"xxxx", b=np.zeros(2)).to_url("p")
    path = store / ts.Reference.parse(url).key
    header = read_header_json(path)
    assert json.loads(header["__metadata__"]["typedstore.entries"]) == {
        **_GOOD_TABLE,
        "index": [0, 1],
    }
    rewrite_metadata(path, change)
    for lazy in (False, True):
        with pytest.raises(DecodeError, match=message):
            ts.DataStore.from_url(url, lazy=lazy)


def read_header_json(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header: dict[str, Any] = json.loads(data[8 : 8 + size])
    return header


@pytest.mark.usefixtures("unchecked")
def test_version_1_containers_still_decode_and_are_rewritten_as_version_2(store: Path) -> None:
    url = mixed().to_url("p")
    path = store / ts.Reference.parse(url).key
    rewrite_metadata(path, to_version_1)
    assert "typedstore.version" not in read_header_json(path)["__metadata__"]
    expected = mixed()
    assert same(ts.DataStore.from_url(url), expected)
    lazy = ts.DataStore.from_url(url, lazy=True)
    assert list(lazy) == list(expected)
    assert np.array_equal(lazy.weights, expected.weights)
    # Saved again with entries still unread: they are copied as stored, under version 2.
    lazy.extra = 1
    again = lazy.to_url("p")
    metadata = read_header_json(store / ts.Reference.parse(again).key)["__metadata__"]
    assert metadata["typedstore.version"] == "2"
    assert same(ts.DataStore.from_url(again), ts.DataStore(expected, extra=1))


@pytest.mark.usefixtures("unchecked")
def test_malicious_pickle_entry_runs_nothing(store: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    url = ts.DataStore(a=b"placeholder-bytes").to_url("p")
    path = store / ts.Reference.parse(url).key
    payload = pickle.dumps(Evil())
    # Put the payload in as entry "a", declared as codec pickle.
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    header["a"]["shape"] = [len(payload)]
    header["a"]["data_offsets"] = [0, len(payload)]
    edit_entry("a", codec="pickle")(header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + payload)
    for lazy in (False, True):
        with pytest.raises(UnsafeDataError, match=r"posix\.system"):
            ts.DataStore.from_url(url, lazy=lazy).load()
    assert not marker.exists()


@pytest.mark.usefixtures("unchecked")
def test_newer_codec_version_is_refused(store: Path) -> None:
    url = ts.DataStore(a=1).to_url("p")

    rewrite_metadata(store / ts.Reference.parse(url).key, edit_entry("a", version=99))
    with pytest.raises(DecodeError, match="version 99"):
        ts.DataStore.from_url(url)


def one_layout(seed: int, size: int) -> ts.DataStore:
    """DataStores of one layout (equal headers) whose values differ with ``seed``."""
    rng = np.random.default_rng(seed)
    return ts.DataStore(w=rng.random(size), b=rng.integers(0, 9, 3), note=f"run {seed}")


@pytest.mark.usefixtures("unchecked")
@pytest.mark.parametrize("size", [10, 2**18])  # decoded from memory, read from storage
def test_datastores_of_one_layout_share_the_checked_header_not_values(
    store: Path, size: int
) -> None:
    urls = [one_layout(seed, size).to_url("p") for seed in range(3)]
    paths = [store / ts.Reference.parse(url).key for url in urls]
    headers = {path.read_bytes()[: 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]]
               for path in paths}  # fmt: skip
    assert len(headers) == 1
    for _ in range(2):
        for seed, url in enumerate(urls):
            assert same(ts.DataStore.from_url(url), one_layout(seed, size))
            lazy = ts.DataStore.from_url(url, lazy=True)
            assert same(lazy.w, one_layout(seed, size).w)
            assert lazy.note == f"run {seed}"
    first, second = (ts.DataStore.from_url(url, lazy=True) for url in urls[:2])
    assert first._ts_source is not None
    assert second._ts_source is not None
    assert first._ts_source.tensors is second._ts_source.tensors


@pytest.mark.usefixtures("unchecked")
def test_a_layout_seen_before_still_finds_damage(store: Path) -> None:
    url = one_layout(0, 2**18).to_url("p")
    path = store / ts.Reference.parse(url).key
    assert same(ts.DataStore.from_url(url), one_layout(0, 2**18))
    data = path.read_bytes()
    path.write_bytes(data[:-1])  # the same header on a file one byte short
    for lazy in (False, True):
        with pytest.raises(DecodeError, match="cover"):
            ts.DataStore.from_url(url, lazy=lazy)
    path.write_bytes(data)
    rewrite_metadata(path, edit_entry("w", tensor=False))
    for lazy in (False, True):
        with pytest.raises(DecodeError, match="entry 'w' must be a U8 vector"):
            ts.DataStore.from_url(url, lazy=lazy)


def test_a_datastore_of_arrays_read_from_storage_keeps_its_keys_order(store: Path) -> None:
    # Data is laid out by item size, not in key order; more than 1 MiB is read from storage.
    rng = np.random.default_rng(3)
    ds = ts.DataStore(z=rng.integers(0, 9, 5, np.int8), a=rng.random(2**18), m=np.arange(3.0))
    back = ts.DataStore.from_url(ds.to_url("p"))
    assert list(back) == ["z", "a", "m"]
    assert all(same(ds[key], back[key]) for key in ds)


def test_no_path_hands_out_a_value_not_read_yet(store: Path) -> None:
    url = ts.DataStore(a=1, b=[2], c=np.arange(3), d=ts.DataStore(e=b"x")).to_url("p")
    expected = {"a": 1, "b": [2], "c": np.arange(3), "d": ts.DataStore(e=b"x")}
    readers: dict[str, Callable[[ts.DataStore], Any]] = {
        "items": lambda d: dict(d.items()),
        "values": lambda d: dict(zip(d, d.values(), strict=True)),
        "get": lambda d: {k: d.get(k) for k in d},
        "dict": dict,
        "unpack": lambda d: {**d},
        "copy": lambda d: dict(d.copy()),
        "copy.copy": lambda d: dict(copy.copy(d)),
        "deepcopy": lambda d: dict(copy.deepcopy(d)),
        "pickle": lambda d: dict(pickle.loads(pickle.dumps(d))),
        "or": lambda d: dict(d | {}),
        "ror": lambda d: dict({} | d),
        "pop": lambda d: {k: d.pop(k) for k in list(d)},
        "popitem": lambda d: dict(d.popitem() for _ in range(len(d))),
        "setdefault": lambda d: {k: d.setdefault(k) for k in list(d)},
        "attributes": lambda d: {k: getattr(d, k) for k in d},
    }
    for name, read in readers.items():
        got = read(ts.DataStore.from_url(url, lazy=True))
        assert got.keys() == expected.keys(), name
        assert all(same(got[k], expected[k]) for k in expected), name
    lazy = ts.DataStore.from_url(url, lazy=True)
    # Not a dict subclass: dict's own methods cannot reach around the lazy reads.
    with pytest.raises(TypeError):
        dict.get(lazy, "a")  # type: ignore[call-overload]
    assert "not loaded" in repr(lazy)
    assert lazy == expected | {"c": lazy.c}


def test_kept_layouts_are_bounded_and_immutable() -> None:
    from typedstore import datastore as module
    from typedstore.codecs import safetensors as header_module

    header_module.parse_header.cache_clear()
    for n in range(300):  # about 1 MiB of distinct headers
        data = join(module.DataStoreCodec().encode(
            ts.DataStore({f"{n}-{i}-{'x' * 20}": i for i in range(50)})
        ))  # fmt: skip
        assert module.DataStoreCodec().decode(data)[f"{n}-7-{'x' * 20}"] == 7
    assert 0 < header_module.parse_header.kept_bytes() <= policy.CACHED_HEADER_BYTES
    big = ts.DataStore({f"{i}-{'y' * 60}": i for i in range(1000)})
    data = join(module.DataStoreCodec().encode(big))
    assert struct.unpack("<Q", data[:8])[0] > policy.CACHED_HEADER_MAX
    assert module.DataStoreCodec().decode(data) == big
    header = read_header(data)
    with pytest.raises(TypeError):
        module.entry_table(header)["x"] = None  # type: ignore[index]


def test_restoring_a_lazy_datastore_copies_unread_entries_as_stored(store: Path) -> None:
    url = mixed().to_url("p")
    lazy = ts.DataStore.from_url(url, lazy=True)
    lazy.extra = 1
    second = ts.DataStore.from_url(lazy.to_url("p"))
    assert second.extra == 1
    for key in mixed():
        assert same(mixed()[key], second[key]), key


def test_mutators(store: Path) -> None:
    ds = ts.DataStore.from_url(ts.DataStore(a=1, b=2, c=3).to_url("p"), lazy=True)
    assert ds.pop("a") == 1
    assert ds.pop("zz", None) is None
    assert ds.setdefault("b", 5) == 2
    assert ds.setdefault("d", 4) == 4
    assert ds.popitem() == ("d", 4)
    ds |= {"e": 5}
    ds.update(f=6)
    assert (ds | {"g": 7})["g"] == 7
    assert dict(ds) == {"b": 2, "c": 3, "e": 5, "f": 6}
    ds.clear()
    assert ds == {}


@pytest.mark.usefixtures("unchecked")
def test_lazy_entries_make_every_check_the_full_read_makes(store: Path) -> None:
    url = ts.DataStore(x=np.zeros((0,)), y=1).to_url("p")

    def huge(header: dict[str, Any]) -> None:
        header["x"]["shape"] = [2**63, 0]  # zero bytes, but numpy can make no such array

    rewrite_metadata(store / ts.Reference.parse(url).key, huge)
    with pytest.raises(DecodeError, match="shape too large"):
        ts.DataStore.from_url(url)
    with pytest.raises(DecodeError, match="shape too large"):
        ts.DataStore.from_url(url, lazy=True)["x"]


def test_an_unchanged_datastore_is_stored_into_the_current_store(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    with ts.options.ctx({"datastore.url": str(first)}):
        url = ts.DataStore(w=np.arange(3), note=b"x").to_url("p")
        loaded = ts.DataStore.from_url(url, lazy=True)
        assert loaded.to_url() == url
    with ts.options.ctx({"datastore.url": str(second)}):
        moved = loaded.to_url()
        assert moved != url
        back = ts.DataStore.from_url(moved)
    assert np.array_equal(back.w, np.arange(3))
    assert back.note == b"x"
