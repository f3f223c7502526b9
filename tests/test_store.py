"""Stores: explicit ones side by side, the default one that follows the options, storages
found by URL scheme, and the package's public surface."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest

import typedstore as ts
from helpers import files_under
from typedstore.errors import (
    DecodeError,
    InvalidKeyError,
    OptionValueError,
    RegistrationError,
    ReservedPrefixError,
    StorageError,
    UnknownCodecError,
)
from typedstore.storage import known_storages, register_storage


@attrs.define
class Point:
    x: float
    y: float


def test_two_stores_side_by_side_each_with_its_own_root_and_registry(tmp_path: Path) -> None:
    registry = ts.registry.copy()
    registry.register_attrs(Point, name="tests.store.Point")
    first = ts.Store(str(tmp_path / "one"))
    second = ts.Store(str(tmp_path / "two"), registry=registry)
    assert first.registry is ts.registry
    assert second.registry is registry

    ref = second.serialize_write(Point(1.0, 2.0), "p")
    assert ref.codec == "tree"
    assert second.read_deserialize(ref, Point) == Point(1.0, 2.0)
    assert files_under(tmp_path / "two") == [ref.key]
    assert not (tmp_path / "one").exists()
    # The default registry never saw the class: the first store cannot encode it...
    assert first.registry.for_value(Point(1.0, 2.0)).name == "pickle"
    # ...nor decode it, even from the same bytes.
    other = first.write(second.read(ref), "p")
    with pytest.raises(DecodeError, match="not registered"):
        first.read_deserialize(ts.Reference(key=other.key, codec="attrs"))


def test_a_datastore_in_an_explicit_store_uses_its_registry(tmp_path: Path) -> None:
    registry = ts.registry.copy()
    registry.register_attrs(Point, name="tests.store.Point2")
    store = ts.Store(str(tmp_path / "s"), registry=registry)
    ds = ts.DataStore(p=Point(3.0, 4.0), w=np.arange(3), inner=ts.DataStore(q=Point(5.0, 6.0)))
    url = ds.to_url("p", store=store)
    for lazy in (False, True):
        back = ts.DataStore.from_url(url, lazy=lazy, store=store)
        assert back.p == Point(3.0, 4.0)
        assert back.inner.q == Point(5.0, 6.0)
        assert np.array_equal(back.w, np.arange(3))
    # Unchanged (nothing read) and in the same store: not stored again.
    assert ts.DataStore.from_url(url, lazy=True, store=store).to_url(store=store) == url
    # The default store has neither the object nor the class.
    with (
        ts.options.ctx({"datastore.url": str(tmp_path / "default")}),
        pytest.raises(ts.errors.NotFoundError),
    ):
        ts.DataStore.from_url(url)


def test_copied_registries_are_independent() -> None:
    copy = ts.registry.copy()
    copy.register_attrs(Point, name="tests.store.Point3")
    assert Point in copy.get("attrs").types
    assert Point not in ts.registry.get("attrs").types
    assert copy.names() == ts.registry.names()
    assert copy.priority("safetensors") == ts.registry.priority("safetensors")


def test_a_store_takes_a_snapshot_of_the_options(tmp_path: Path) -> None:
    with ts.options.ctx({"datastore.checksum": "sha256", "datastore.relative_path_prefix": "x"}):
        store = ts.Store(str(tmp_path))
    ref = store.write(b"data")
    assert ref.key.startswith("x/")
    assert "sha256" in ref.params
    assert store.settings["datastore.url"] == str(tmp_path)
    with pytest.raises(TypeError):
        store.settings["datastore.fsync"] = True  # type: ignore[index]
    plain = ts.Store(str(tmp_path), settings={"datastore.checksum": None})
    assert "sha256" not in plain.write(b"data").params


def test_store_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="settings are"):
        ts.Store(str(tmp_path), settings={"database.url": "sqlite://"})
    with pytest.raises(OptionValueError, match=r"datastore\.checksum"):
        ts.Store(str(tmp_path), settings={"datastore.checksum": "md5"})
    with pytest.raises(TypeError, match="Storage protocol"):
        ts.Store(storage=object())  # type: ignore[arg-type]


def test_the_default_store_follows_the_options(tmp_path: Path) -> None:
    ts.options.set("datastore.url", str(tmp_path / "a"))
    first = ts.default_store()
    assert ts.default_store() is first  # kept while no option changes
    with ts.options.ctx({"datastore.url": str(tmp_path / "b")}):
        assert ts.default_store().url == (tmp_path / "b").as_uri()
    assert ts.default_store().storage is first.storage
    ts.options.set("datastore.url", str(tmp_path / "c"))
    assert ts.default_store().url == (tmp_path / "c").as_uri()
    # Storages are shared: a store rebuilt for the same URL uses the same one.
    assert ts.Store(str(tmp_path / "c")).storage is ts.default_store().storage


def test_prefix_guards_belong_to_their_store(tmp_path: Path) -> None:
    guarded, free = ts.Store(str(tmp_path)), ts.Store(str(tmp_path))

    def refuse(prefix: str) -> None:
        if prefix.startswith("secret"):
            raise ReservedPrefixError(f"{prefix} is reserved")

    guarded.add_prefix_guard(refuse)
    with pytest.raises(ReservedPrefixError):
        guarded.write(b"x", "secret/a")
    with pytest.raises(ReservedPrefixError):
        guarded.delete("secret")
    ref = free.write(b"x", "secret/a")
    assert guarded.read(ref) == b"x"  # reads are never refused
    assert free.delete("secret") == 1
    with pytest.raises(InvalidKeyError, match="refusing to delete"):
        free.delete("")


def test_a_codec_object_must_be_the_registered_one(tmp_path: Path) -> None:
    store = ts.Store(str(tmp_path))
    lookalike = type(ts.registry.get("raw"))()
    with pytest.raises(UnknownCodecError, match="not the one registered"):
        store.serialize_write(b"x", codec=lookalike)


class CountingStorage:
    """A storage with nothing but the core contract, over a MemoryStorage."""

    def __init__(self, url: str, *, fsync: bool, storage_options: Mapping[str, Any]) -> None:
        self._inner = ts.MemoryStorage(url)
        self.url = url
        self.options = dict(storage_options)
        self.reads: list[tuple[str, int, int | None]] = []

    def write(self, key: str, chunks: Any) -> int:
        return self._inner.write(key, chunks)

    def read(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        self.reads.append((key, start, length))
        return self._inner.read(key, start, length)

    def size(self, key: str) -> int:
        return self._inner.size(key)

    def list(self, prefix: str | None = None) -> Any:
        return self._inner.list(prefix)

    def delete(self, prefix: str) -> int:
        return self._inner.delete(prefix)


def test_a_third_party_storage_plugs_in_by_scheme() -> None:
    register_storage("counting", CountingStorage)
    try:
        assert known_storages["counting"] is CountingStorage
        with pytest.raises(RegistrationError, match="already has a storage"):
            register_storage("counting", CountingStorage)
        with ts.options.ctx(
            {"datastore.url": "counting://x", "datastore.storage_options": {"a": 1}}
        ):
            storage = ts.default_store().storage
            assert isinstance(storage, CountingStorage)
            assert storage.options == {"a": 1}
            # Only the core contract: the store reads by ranges, lazily too.
            url = ts.DataStore(big=np.zeros(1000), small=b"tiny").to_url("p")
            lazy = ts.DataStore.from_url(url, lazy=True)
            storage.reads.clear()
            assert lazy.small == b"tiny"
            assert len(storage.reads) == 1
            assert storage.reads[0][2] == 4
            back = ts.DataStore.from_url(url)
            assert np.array_equal(back.big, np.zeros(1000))
    finally:
        register_storage("counting", "no.such.module:factory", replace=True, hint="pip it")
    with pytest.raises(StorageError, match="pip it"):
        ts.storage_for_url("counting://y")


def test_storage_options_reach_the_factory_as_they_are() -> None:
    session = object()  # a credentials object, say: no JSON for it
    register_storage("optionstest", CountingStorage, replace=True)
    storage = ts.storage_for_url("optionstest://x", storage_options={"session": session})
    assert isinstance(storage, CountingStorage)
    assert storage.options["session"] is session
    again = ts.storage_for_url("optionstest://x", storage_options={"session": session})
    assert again is storage


def test_a_lazy_import_names_what_to_install() -> None:
    register_storage(
        "lazytest", "no_such_module_anywhere:factory", hint="install lazytest", replace=True
    )
    with pytest.raises(StorageError, match="install lazytest"):
        ts.Store("lazytest://bucket")
    with pytest.raises(RegistrationError, match="invalid URL scheme"):
        register_storage("bad scheme", "x:y")


def test_the_public_surface_is_deliberate() -> None:
    assert sorted(ts.__all__) == ts.__all__
    assert set(dir(ts)) == {*ts.__all__, "__version__"}
    for name in ts.__all__:
        assert getattr(ts, name) is not None, name
    assert "annotations" not in ts.__all__
    assert {"Store", "Storage", "testing", "default_store", "register_storage"} <= set(ts.__all__)
    assert isinstance(ts.MemoryStorage("surface"), ts.Storage)
    from typedstore.testing.storage import StorageTests

    assert StorageTests.__module__ == "typedstore.testing.storage"


def test_a_datastore_inside_a_pickled_value_stays_in_its_store(tmp_path: Path) -> None:
    store = ts.Store(str(tmp_path / "explicit"))
    url = ts.DataStore(pair=(ts.DataStore(a=np.arange(3)), 1)).to_url("p", store=store)
    assert len(files_under(tmp_path / "explicit")) == 2  # the inner one is stored too
    with ts.options.ctx({"datastore.url": str(tmp_path / "default")}):
        for lazy in (False, True):
            inner, one = ts.DataStore.from_url(url, lazy=lazy, store=store).pair
            assert one == 1
            assert np.array_equal(inner.a, np.arange(3))
    assert not (tmp_path / "default").exists()
