from __future__ import annotations

import collections
import re
import shutil
import tracemalloc
from pathlib import Path
from typing import Any

import crc32c
import numpy as np
import pytest

import typedstore as ts
from helpers import files_under
from typedstore.codecs import JsonCodec
from typedstore.errors import (
    DecodeError,
    InvalidKeyError,
    InvalidReferenceError,
    NoCodecError,
    NotFoundError,
    TypeMismatchError,
    UnknownCodecError,
    UnsafeDataError,
)

# New objects are named by a random part, their crc32c and their codec.
URL = re.compile(r"datastore:///exp-42/[0-9a-f]{32}-([0-9a-f]{8})\.([a-z0-9_.-]+)\?codec=\2")


def test_write_and_read_bytes(store: Path) -> None:
    io = ts.DataStoreIO.write(b"11111", relative_path_prefix="exp-42")
    match = URL.fullmatch(io.url)
    assert match is not None
    assert match.group(2) == "raw"
    assert int(match.group(1), 16) == crc32c.crc32c(b"11111")
    assert ts.DataStoreIO(io.url).read() == b"11111"
    assert ts.DataStoreIO(io.url).read_deserialize(bytes) == b"11111"
    assert (store / io.reference.key).read_bytes() == b"11111"
    assert files_under(store) == [io.reference.key]


def test_write_takes_any_buffer(store: Path) -> None:
    array = np.arange(10, dtype=np.int32)
    io = ts.DataStoreIO.write(array.data, "exp-42")
    assert io.read() == array.tobytes()
    with pytest.raises(TypeError, match="serialize_write"):
        ts.DataStoreIO.write("text", "exp-42")  # type: ignore[arg-type]


def test_design_example(store: Path) -> None:
    url = ts.DataStoreIO.serialize_write(
        np.ones((1024, 1024), np.float32), relative_path_prefix="exp-42", codec="safetensors"
    ).url
    assert URL.fullmatch(url) is not None
    assert url.endswith("?codec=safetensors")
    arr = ts.DataStoreIO(url).read_deserialize(expected_type=np.ndarray)
    assert arr.shape == (1024, 1024)
    assert arr.dtype == np.float32
    assert float(arr.sum()) == 1024 * 1024
    assert ts.DataStoreIO.delete("exp-42") == 1
    assert files_under(store) == []


VALUES: list[tuple[Any, str]] = [
    (np.arange(12.0).reshape(3, 4), "safetensors"),
    ({"w": np.zeros((2, 2), np.float16), "b": np.ones(2, np.int8)}, "safetensors"),
    (np.array([1 + 2j, 3j]), "npy"),
    (np.array(["x", "yz"]), "npy"),
    ({"lr": 0.1, "layers": [1, 2], "name": "m"}, "json"),
    ("text", "json"),
    ((1, 2.5, "x"), "tree"),
    (collections.deque([1, 2], maxlen=3), "pickle"),
    (bytearray(b"abc"), "tree"),
]


@pytest.mark.parametrize(("value", "codec"), VALUES, ids=[c for _, c in VALUES])
def test_serialize_round_trip(store: Path, value: Any, codec: str) -> None:
    io = ts.DataStoreIO.serialize_write(value, "exp-42")
    assert io.reference.codec == codec
    back = ts.DataStoreIO(io.url).read_deserialize()
    if isinstance(value, dict) and codec == "safetensors":
        assert back.keys() == value.keys()
        assert all(np.array_equal(back[k], value[k]) for k in value)
    elif isinstance(value, np.ndarray):
        assert type(back) is type(value)
        assert np.array_equal(back, value)
    elif isinstance(value, bytearray):
        assert back == bytes(value)
    else:
        assert back == value
        assert type(back) is type(value)


def test_explicit_codec_by_name_and_object(store: Path) -> None:
    array = np.arange(4.0)
    assert ts.DataStoreIO.serialize_write(array, "p", codec="npy").reference.codec == "npy"
    npy = ts.registry.get("npy")
    assert ts.DataStoreIO.serialize_write(array, "p", codec=npy).reference.codec == "npy"
    with pytest.raises(UnknownCodecError, match="register it first"):
        ts.DataStoreIO.serialize_write({"a": 1}, "p", codec=JsonCodec())
    with pytest.raises(UnknownCodecError):
        ts.DataStoreIO.serialize_write(array, "p", codec="nope")
    with pytest.raises(NoCodecError, match="'safetensors' does not accept"):
        ts.DataStoreIO.serialize_write("text", "p", codec="safetensors")
    assert len(files_under(store)) == 2


def test_prefix_defaults(store: Path) -> None:
    assert ts.DataStoreIO.write(b"x").reference.key.startswith("default/")
    with ts.options.ctx({"datastore.relative_path_prefix": "team/a"}):
        assert ts.DataStoreIO.write(b"x").reference.key.startswith("team/a/")
        assert ts.DataStoreIO.write(b"x", "mine").reference.key.startswith("mine/")


@pytest.mark.parametrize("prefix", ["", "/abs", "../up", "a/../../b", "a\\b", ".", "a//b"])
def test_bad_prefixes_are_refused(store: Path, prefix: str) -> None:
    with pytest.raises(InvalidKeyError):
        ts.DataStoreIO.write(b"x", prefix)
    with pytest.raises(InvalidKeyError):
        ts.DataStoreIO.serialize_write([1], prefix)
    assert not store.exists() or files_under(store) == []


def test_delete(store: Path) -> None:
    a = ts.DataStoreIO.write(b"a", "exp1")
    ts.DataStoreIO.write(b"b", "exp1/sub")
    c = ts.DataStoreIO.write(b"c", "exp10")
    assert ts.DataStoreIO.delete("exp1") == 2
    assert c.read() == b"c"
    with pytest.raises(NotFoundError):
        a.read()
    for bad in ("", ".", "/", ".."):
        with pytest.raises(InvalidKeyError, match="refusing to delete"):
            ts.DataStoreIO.delete(bad)
    assert c.read() == b"c"


def test_delete_one_object_by_key(store: Path) -> None:
    a = ts.DataStoreIO.write(b"a", "p")
    b = ts.DataStoreIO.write(b"b", "p")
    assert ts.DataStoreIO.delete(a.reference.key) == 1
    assert b.read() == b"b"


def test_type_mismatch(store: Path) -> None:
    io = ts.DataStoreIO.serialize_write({"a": 1}, "p")
    with pytest.raises(TypeMismatchError, match=r"expected ndarray.*'json' decoded a dict"):
        io.read_deserialize(np.ndarray)
    assert io.read_deserialize(dict) == {"a": 1}


def test_missing_object(store: Path) -> None:
    io = ts.DataStoreIO("datastore:///p/0123?codec=raw")
    with pytest.raises(NotFoundError, match="p/0123"):
        io.read()
    with pytest.raises(FileNotFoundError):
        io.read_deserialize()


def test_unknown_codec_in_reference(store: Path) -> None:
    key = ts.DataStoreIO.write(b"x", "p").reference.key
    for codec in ("os.system", "builtins.eval", "nope"):
        with pytest.raises(UnknownCodecError, match=repr(codec)):
            ts.DataStoreIO(f"datastore:///{key}?codec={codec}").read_deserialize()


def test_malformed_data_names_reference_and_codec(store: Path) -> None:
    key = ts.DataStoreIO.serialize_write({"a": 1}, "p", codec="pickle").reference.key
    url = f"datastore:///{key}?codec=safetensors"
    with pytest.raises(DecodeError, match=re.escape(url)) as info:
        ts.DataStoreIO(url).read_deserialize()
    # The decoder's own error, with the reference and codec added as a note (PEP 678).
    assert "safetensors" in str(info.value)
    assert info.value.__notes__ == [f"{url} (codec 'safetensors')"]


def test_unsafe_pickle_error_names_the_reference(store: Path) -> None:
    import os
    import pickle

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, ("true",))

    io = ts.DataStoreIO.write(pickle.dumps(Evil()), "p")
    url = f"datastore:///{io.reference.key}?codec=pickle"
    with pytest.raises(UnsafeDataError, match=re.escape(url)):
        ts.DataStoreIO(url).read_deserialize()


def test_hostile_references_read_nothing_outside_the_root(tmp_path: Path, store: Path) -> None:
    (tmp_path / "secret").write_bytes(b"secret")
    ts.DataStoreIO.write(b"x", "p")
    for url in (
        "datastore:///../secret?codec=raw",
        "datastore:///p/../../secret?codec=raw",
        "datastore:///%2e%2e/secret?codec=raw",
        f"datastore:///{tmp_path}/secret?codec=raw",
        f"datastore:///{str(tmp_path).lstrip('/')}/secret?codec=raw",
    ):
        with pytest.raises((InvalidReferenceError, NotFoundError)):
            ts.DataStoreIO(url).read()


def test_store_can_be_moved(tmp_path: Path, store: Path) -> None:
    url = ts.DataStoreIO.serialize_write(np.arange(5), "exp").url
    moved = tmp_path / "elsewhere"
    shutil.move(store, moved)
    with ts.options.ctx({"datastore.url": moved.as_uri()}):
        assert np.array_equal(ts.DataStoreIO(url).read_deserialize(np.ndarray), np.arange(5))


def test_memory_storage() -> None:
    with ts.options.ctx({"datastore.url": "memory://io-test"}):
        io = ts.DataStoreIO.serialize_write([1, 2], "p")
        assert ts.DataStoreIO(io.url).read_deserialize(list) == [1, 2]
        assert ts.DataStoreIO.delete("p") == 1


def test_fsync_option(store: Path) -> None:
    with ts.options.ctx({"datastore.fsync": True}):
        io = ts.DataStoreIO.serialize_write(np.zeros(10), "p")
    assert ts.DataStoreIO(io.url).read_deserialize(np.ndarray).shape == (10,)


def test_reference_object_and_repr(store: Path) -> None:
    io = ts.DataStoreIO.write(b"x", "p")
    same = ts.DataStoreIO(io.reference)
    assert same.url == io.url
    assert repr(io) == f"DataStoreIO({io.url!r})"
    with pytest.raises(InvalidReferenceError):
        ts.DataStoreIO("not a reference")


def test_writing_a_large_array_makes_no_copy(store: Path) -> None:
    array = np.ones((2048, 2048), np.float32)  # 16 MiB
    tracemalloc.start()
    try:
        ts.DataStoreIO.serialize_write(array, "p")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < array.nbytes // 20


def test_reading_a_large_array_allocates_only_the_result(store: Path) -> None:
    array = np.ones((2048, 2048), np.float32)
    io = ts.DataStoreIO.serialize_write(array, "p")
    tracemalloc.start()
    try:
        back = io.read_deserialize(np.ndarray)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.array_equal(back, array)
    assert peak < array.nbytes * 1.05


def test_zero_copy_arrays_share_memory_with_the_map(store: Path) -> None:
    import mmap

    array = np.arange(1 << 20, dtype=np.float32)  # 4 MiB: memory-mapped
    io = ts.DataStoreIO.serialize_write(array, "p")
    view = io.read_deserialize(np.ndarray, zero_copy=True)
    assert np.array_equal(view, array)
    assert not view.flags.writeable
    base: Any = view
    while not isinstance(base, mmap.mmap) and base is not None:
        base = getattr(base, "base", None) if not isinstance(base, memoryview) else base.obj
    assert isinstance(base, mmap.mmap)
    with pytest.raises(ValueError, match="read-only"):
        view[0] = 1
    # Objects are never changed in place: the view outlives even a delete.
    ts.DataStoreIO.delete("p")
    assert float(view[-1]) == float(array[-1])


def test_zero_copy_of_small_objects_and_other_codecs(store: Path) -> None:
    small = ts.DataStoreIO.serialize_write(np.arange(3), "p")
    assert np.array_equal(small.read_deserialize(np.ndarray, zero_copy=True), np.arange(3))
    npy = ts.DataStoreIO.serialize_write(np.array(["a"]), "p")  # npy shares the bytes too
    back = npy.read_deserialize(np.ndarray, zero_copy=True)
    assert not back.flags.writeable
    assert back.tolist() == ["a"]
    other = ts.DataStoreIO.serialize_write({"a": [1]}, "p")  # json: decodes as usual
    assert other.read_deserialize(dict, zero_copy=True) == {"a": [1]}


def test_the_storage_follows_every_change_of_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def current_storage() -> ts.Storage:
        return ts.default_store().storage

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()

    def root() -> Path:
        storage = current_storage()
        assert isinstance(storage, ts.LocalStorage)
        return storage.root

    try:
        ts.options.set("datastore.url", str(tmp_path / "one"))
        assert root() == tmp_path / "one"
        with ts.options.ctx({"datastore.url": str(tmp_path / "two")}):
            assert root() == tmp_path / "two"
            with ts.options.ctx({"datastore.fsync": True}):
                assert root() == tmp_path / "two"
                assert current_storage().fsync  # type: ignore[attr-defined]
            assert not current_storage().fsync  # type: ignore[attr-defined]
        assert root() == tmp_path / "one"
        ts.options.set("datastore.url", "rel")
        monkeypatch.chdir(tmp_path / "a")
        assert root() == tmp_path / "a" / "rel"
        monkeypatch.chdir(tmp_path / "b")
        assert root() == tmp_path / "b" / "rel"
        ts.options.reset("datastore.url")
        assert root() == tmp_path / "b" / ts.options.get("datastore.url")
    finally:
        ts.options.reset("datastore.url")


def test_small_arrays_are_fresh_writable_and_independent(store: Path) -> None:
    arrays: dict[str, np.ndarray[Any, Any]] = {
        "w": np.ones((4, 4), np.float32),
        "b": np.zeros(4),
        "i": np.arange(8),
    }
    io = ts.DataStoreIO.serialize_write(arrays, "p")
    first = io.read_deserialize(dict)
    second = io.read_deserialize(dict)
    for name, want in arrays.items():
        assert first[name].flags.writeable
        assert first[name].flags.aligned
        assert not np.shares_memory(first[name], second[name])
        for other in set(arrays) - {name}:
            assert not np.shares_memory(first[name], first[other])
        first[name][...] = 7
        assert np.array_equal(second[name], want)
    assert np.array_equal(io.read_deserialize(dict)["w"], arrays["w"])


def test_large_objects_of_many_arrays_read_back_whole(store: Path) -> None:
    rng = np.random.default_rng(3)
    arrays: dict[str, np.ndarray[Any, Any]] = {
        "f64": rng.random(100_000),
        "empty": np.zeros((0, 4), np.float32),
        "u8": rng.integers(0, 255, 300_001, dtype=np.uint8),
        "flags": rng.random(1001) > 0.5,
        "f16": rng.random((300, 7)).astype(np.float16),
        "i32": np.arange(250_000, dtype=np.int32),
    }
    back = ts.DataStoreIO.serialize_write(arrays, "p").read_deserialize(dict)
    assert back.keys() == arrays.keys()
    for name, want in arrays.items():
        assert back[name].dtype == want.dtype
        assert np.array_equal(back[name], want)
    ds = ts.DataStore(arrays, note="between the arrays", raw=b"\x01" * 200_000, n=[1, 2])
    loaded = ts.DataStore.from_url(ds.to_url("p"))
    assert loaded.note == "between the arrays"
    assert loaded.raw == b"\x01" * 200_000
    assert loaded.n == [1, 2]
    for name, want in arrays.items():
        assert np.array_equal(loaded[name], want)


class OffsetError(DecodeError):
    """A plugin's error with a constructor of its own and an attribute."""

    def __init__(self, offset: int) -> None:
        super().__init__(f"bad byte at {offset}")
        self.offset = offset


class Picky:
    """A codec whose decoder raises its own DecodeError subclass."""

    name = "test.picky"
    version = 1
    types: tuple[type, ...] = ()

    def accepts(self, value: object) -> bool:
        return False  # chosen only by name

    def encode(self, value: Any) -> list[bytes]:
        return [bytes(value)]

    def decode(self, data: Any, expected_type: Any = None) -> Any:
        raise OffsetError(7)


ts.registry.register(Picky())


def test_a_codec_error_keeps_its_type_and_attributes(store: Path) -> None:
    # Context goes into notes (PEP 678): never re-created, so a plugin's error class with
    # its own constructor keeps its message and attributes, directly and inside a DataStore.
    url = ts.DataStoreIO.write(b"x", "p").url.replace("codec=raw", "codec=test.picky")
    with pytest.raises(OffsetError, match="bad byte at 7") as info:
        ts.DataStoreIO(url).read_deserialize()
    assert info.value.offset == 7
    assert info.value.__notes__ == [f"{url} (codec 'test.picky')"]
    assert "bad byte at 7" in ts.errors.describe(info.value)
    assert url in ts.errors.describe(info.value)
