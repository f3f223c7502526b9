"""A conformance suite for storages: subclass :class:`StorageTests` in your test suite.

    from typedstore.testing.storage import StorageTests

    class TestMyStorage(StorageTests):
        def make_storage(self, tmp_path):
            return MyStorage(...)

pytest then runs every test of the suite on your storage: the :class:`Storage` contract
(atomic writes from buffers, ranged reads, sizes, listing, prefix deletes, key checks)
and each optional capability the storage declares. It needs pytest and numpy.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from typedstore.errors import InvalidKeyError, NotFoundError, StorageError
from typedstore.policy import PART
from typedstore.protocols import (
    Buffer,
    MapsMemory,
    OpensReaders,
    Storage,
    Syncs,
    WritesStreams,
)
from typedstore.store import Store

__all__ = ["BAD_KEYS", "BAD_PREFIXES", "StorageTests"]

#: Keys every storage must refuse.
BAD_KEYS = ("../x", "/abs", "a/../../x", "a\\b", "a\x00b", "", "a//b", "a/./b")
#: Prefixes every storage must refuse to delete.
BAD_PREFIXES = ("", ".", "..", "/", "/exp1", "exp1/", "a/../b", "*")


class StorageTests:
    """The storage contract as pytest tests; implement :meth:`make_storage`.

    Each test gets a fresh, empty storage. Objects are written and read back through the
    storage under test only: the suite checks behaviour, not where the bytes are.
    """

    def make_storage(self, tmp_path: Path) -> Storage:
        """A new, empty storage (``tmp_path`` is a fresh directory for it to use)."""
        raise NotImplementedError

    @pytest.fixture
    def storage(self, tmp_path: Path) -> Storage:
        """The storage under test."""
        made = self.make_storage(tmp_path)
        assert isinstance(made, Storage), f"{made!r} does not implement the Storage protocol"
        return made

    # --- the contract ------------------------------------------------------------------------

    def test_write_read(self, storage: Storage) -> None:
        assert storage.write("p/a", [b"hello ", bytearray(b"world")]) == 11
        assert storage.read("p/a") == b"hello world"
        assert storage.size("p/a") == 11

    def test_write_takes_buffers_in_order(self, storage: Storage) -> None:
        array = np.arange(300_000, dtype=np.float64)
        storage.write("p/big", [b"head", array.data, memoryview(b"tail")])
        data = storage.read("p/big")
        assert data[:4] == b"head"
        assert data[-4:] == b"tail"
        assert np.array_equal(np.frombuffer(data[4:-4], dtype=np.float64), array)

    def test_empty_object(self, storage: Storage) -> None:
        assert storage.write("p/empty", []) == 0
        assert storage.read("p/empty") == b""
        assert storage.size("p/empty") == 0

    def test_overwrite_replaces(self, storage: Storage) -> None:
        storage.write("p/a", [b"one"])
        storage.write("p/a", [b"two!"])
        assert storage.read("p/a") == b"two!"

    def test_read_range(self, storage: Storage) -> None:
        storage.write("p/a", [b"0123456789"])
        assert storage.read("p/a", 0, 4) == b"0123"
        assert storage.read("p/a", 3) == b"3456789"
        assert storage.read("p/a", 8, 10) == b"89"
        assert storage.read("p/a", 10, 5) == b""
        assert storage.read("p/a", 3, 0) == b""
        with pytest.raises(ValueError, match="range"):
            storage.read("p/a", -1, 2)
        with pytest.raises(ValueError, match="range"):
            storage.read("p/a", 0, -2)

    def test_missing_objects(self, storage: Storage) -> None:
        with pytest.raises(NotFoundError, match="p/missing"):
            storage.read("p/missing")
        with pytest.raises(NotFoundError, match="p/missing"):
            storage.read("p/missing", 0, 1)
        with pytest.raises(NotFoundError, match="p/missing"):
            storage.size("p/missing")
        with pytest.raises(FileNotFoundError):
            storage.read("p/missing")

    def test_a_prefix_is_not_an_object(self, storage: Storage) -> None:
        storage.write("p/a/b", [b"x"])
        with pytest.raises(NotFoundError):
            storage.read("p/a")
        with pytest.raises(NotFoundError):
            storage.size("p/a")

    def test_an_object_cannot_become_a_prefix(self, storage: Storage) -> None:
        storage.write("p/a", [b"x"])
        with pytest.raises(StorageError):
            storage.write("p/a/b", [b"y"])
        assert storage.read("p/a") == b"x"

    def test_list(self, storage: Storage) -> None:
        for key in ("exp1/a", "exp1/sub/b", "exp10/c", "other"):
            storage.write(key, [b"x"])
        assert list(storage.list("exp1")) == ["exp1/a", "exp1/sub/b"]
        assert list(storage.list()) == ["exp1/a", "exp1/sub/b", "exp10/c", "other"]
        assert list(storage.list("nothing")) == []
        assert list(storage.list("other")) == ["other"]

    def test_delete_removes_exactly_the_subtree(self, storage: Storage) -> None:
        for key in ("exp1/a", "exp1/sub/b", "exp10/c", "exp1x", "exp"):
            storage.write(key, [b"x"])
        assert storage.delete("exp1") == 2
        assert list(storage.list()) == ["exp", "exp10/c", "exp1x"]
        assert storage.delete("exp1") == 0
        assert storage.delete("exp") == 1
        assert list(storage.list()) == ["exp10/c", "exp1x"]

    @pytest.mark.parametrize("prefix", BAD_PREFIXES)
    def test_delete_refuses_bad_prefixes(self, storage: Storage, prefix: str) -> None:
        storage.write("exp1/a", [b"x"])
        with pytest.raises(InvalidKeyError):
            storage.delete(prefix)
        assert storage.read("exp1/a") == b"x"

    @pytest.mark.parametrize("key", BAD_KEYS)
    def test_bad_keys_are_refused(self, storage: Storage, key: str) -> None:
        with pytest.raises(InvalidKeyError):
            storage.write(key, [b"x"])
        with pytest.raises(InvalidKeyError):
            storage.read(key)
        with pytest.raises(InvalidKeyError):
            storage.size(key)
        assert list(storage.list()) == []

    def test_concurrent_writers_in_threads(self, storage: Storage) -> None:
        def work(i: int) -> None:
            for j in range(20):
                storage.write(f"p/{i}-{j}", [str((i, j)).encode()])

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(list(storage.list("p"))) == 160
        assert storage.read("p/3-7") == b"(3, 7)"

    def test_a_store_reads_through_any_storage(self, storage: Storage) -> None:
        store = Store(storage=storage)
        ref = store.serialize_write({"a": np.arange(5), "b": np.ones((2, 3))}, "p")
        back = store.read_deserialize(ref, dict)
        assert np.array_equal(back["a"], np.arange(5))
        assert store.read(ref) == storage.read(ref.key)
        assert store.exists(ref.key)
        assert not store.exists("p/missing")
        assert store.children("p") == [ref.key.split("/")[1]]

    # --- capabilities ------------------------------------------------------------------------

    def test_readers(self, storage: Storage) -> None:
        if not isinstance(storage, OpensReaders):
            pytest.skip("the storage opens no readers")
        storage.write("p/a", [b"0123456789"])
        with storage.open("p/a") as reader:
            assert reader.size == 10
            assert reader.read(2, 3) == b"234"
            assert reader.read(8, 10) == b"89"
            first, second = bytearray(3), np.zeros(4, np.uint8)
            assert reader.readinto(1, first, second.data) == 7
            assert first == b"123"
            assert second.tobytes() == b"4567"
            tail = bytearray(5)
            assert reader.readinto(8, tail) == 2
            assert tail == b"89\0\0\0"
            matrix, empty = np.zeros((2, 2), np.uint8), np.zeros((0, 3))
            assert reader.readinto(0, matrix.data, empty.data) == 4
            assert matrix.tobytes() == b"0123"
        with pytest.raises(NotFoundError), storage.open("p/missing"):
            pass

    def test_views(self, storage: Storage) -> None:
        if not isinstance(storage, MapsMemory):
            pytest.skip("the storage maps no memory")
        array = np.arange(300_000, dtype=np.float64)
        storage.write("p/big", [array.data])
        storage.write("p/small", [b"abc"])
        storage.write("p/empty", [])
        for key in ("p/big", "p/small", "p/empty"):
            with storage.open_view(key) as view:
                assert view.readonly
                assert bytes(view) == storage.read(key)
        with pytest.raises(NotFoundError), storage.open_view("p/missing"):
            pass

    def test_sync(self, storage: Storage) -> None:
        if not isinstance(storage, Syncs):
            pytest.skip("the storage has nothing to flush")
        storage.write("p/q/a", [b"abc"])
        storage.write("p/b", [b"def"])
        storage.sync("p")  # a folder of folders
        storage.sync("p/b")  # one object
        storage.sync("nothing/here")  # nothing: nothing to do
        assert storage.read("p/q/a") == b"abc"
        assert storage.read("p/b") == b"def"
        with pytest.raises(InvalidKeyError):
            storage.sync("../p")

    def test_write_from(self, storage: Storage) -> None:
        if not isinstance(storage, WritesStreams):
            pytest.skip("the storage writes from buffers only")
        data = np.random.default_rng(0).integers(0, 255, 3 * PART + 5, np.uint8).tobytes()
        source = Store(storage=storage)
        storage.write("src/big", [data])
        with source.open("src/big") as reader:
            assert storage.write_from("dst/big", reader, len(data)) == len(data)
        assert storage.read("dst/big") == data
        with source.open("src/big") as reader:
            assert storage.write_from("dst/empty", reader, 0) == 0
        assert storage.read("dst/empty") == b""
        # A source shorter than announced stores nothing.
        with (
            source.open("src/big") as reader,
            pytest.raises(StorageError, match="dst/short"),  # naming the object
        ):
            storage.write_from("dst/short", reader, len(data) + 1)
        # The source's own errors reach the caller as they are, not as the target's.
        broken = _BrokenSource(len(data), StorageError("the source broke"))
        with pytest.raises(StorageError) as caught:
            storage.write_from("dst/broken", broken, len(data))
        assert caught.value is broken.error
        assert list(storage.list("dst")) == ["dst/big", "dst/empty"]


class _BrokenSource:
    """A reader whose every read fails with ``error``."""

    def __init__(self, size: int, error: Exception) -> None:
        self.size = size
        self.error = error

    def read(self, start: int, length: int) -> bytes:
        raise self.error

    def readinto(self, start: int, *buffers: Buffer) -> int:
        raise self.error
