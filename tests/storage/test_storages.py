"""Behaviour every storage shares, run against each implementation."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from typedstore.errors import InvalidKeyError, NotFoundError, StorageError
from typedstore.storage import LocalStorage, MemoryStorage, Storage

Factory = Callable[[Path], Storage]


def named_temporaries(tmp: Path) -> Storage:
    """A LocalStorage where the platform has no O_TMPFILE (as on macOS): writes go
    through named temporary files."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delattr(os, "O_TMPFILE", raising=False)
        return LocalStorage(tmp / "root")


FACTORIES: dict[str, Factory] = {
    "local": lambda tmp: LocalStorage(tmp / "root"),
    "local-named-temporaries": named_temporaries,
    "local-fsync": lambda tmp: LocalStorage(tmp / "root", fsync=True),
    "memory": lambda tmp: MemoryStorage("test"),
}


@pytest.fixture(params=sorted(FACTORIES))
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    return FACTORIES[request.param](tmp_path)


def test_write_read(storage: Storage) -> None:
    assert storage.write("p/a", [b"hello ", bytearray(b"world")]) == 11
    assert storage.read("p/a") == b"hello world"
    assert storage.size("p/a") == 11
    assert storage.exists("p/a")
    with storage.open_view("p/a") as view:
        assert view.readonly
        assert bytes(view) == b"hello world"


def test_write_takes_buffers_in_order(storage: Storage) -> None:
    array = np.arange(300_000, dtype=np.float64)  # larger than one memory map threshold
    storage.write("p/big", [b"head", array.data, memoryview(b"tail")])
    data = storage.read("p/big")
    assert data[:4] == b"head"
    assert data[-4:] == b"tail"
    assert np.array_equal(np.frombuffer(data[4:-4], dtype=np.float64), array)
    with storage.open_view("p/big") as view:
        assert bytes(view) == data


def test_empty_object(storage: Storage) -> None:
    storage.write("p/empty", [])
    assert storage.read("p/empty") == b""
    with storage.open_view("p/empty") as view:
        assert view.nbytes == 0


def test_overwrite_replaces(storage: Storage) -> None:
    storage.write("p/a", [b"one"])
    storage.write("p/a", [b"two!"])
    assert storage.read("p/a") == b"two!"


def test_missing_objects(storage: Storage) -> None:
    with pytest.raises(NotFoundError, match="p/missing"):
        storage.read("p/missing")
    with pytest.raises(NotFoundError, match="p/missing"):
        storage.size("p/missing")
    with pytest.raises(NotFoundError, match="p/missing"), storage.open_view("p/missing"):
        pass
    assert not storage.exists("p/missing")
    with pytest.raises(FileNotFoundError):
        storage.read("p/missing")


def test_prefix_is_not_an_object(storage: Storage) -> None:
    storage.write("p/a/b", [b"x"])
    with pytest.raises(NotFoundError):
        storage.read("p/a")
    assert not storage.exists("p/a")


def test_list(storage: Storage) -> None:
    for key in ("exp1/a", "exp1/sub/b", "exp10/c", "other"):
        storage.write(key, [b"x"])
    assert list(storage.list("exp1")) == ["exp1/a", "exp1/sub/b"]
    assert list(storage.list()) == ["exp1/a", "exp1/sub/b", "exp10/c", "other"]
    assert list(storage.list("nothing")) == []
    assert list(storage.list("other")) == ["other"]


def test_delete_removes_exactly_the_subtree(storage: Storage) -> None:
    for key in ("exp1/a", "exp1/sub/b", "exp10/c", "exp1x", "exp"):
        storage.write(key, [b"x"])
    assert storage.delete("exp1") == 2
    assert list(storage.list()) == ["exp", "exp10/c", "exp1x"]
    assert storage.delete("exp1") == 0
    assert storage.delete("exp") == 1
    assert list(storage.list()) == ["exp10/c", "exp1x"]


@pytest.mark.parametrize("prefix", ["", ".", "..", "/", "/exp1", "exp1/", "a/../b", "*"])
def test_delete_refuses_bad_prefixes(storage: Storage, prefix: str) -> None:
    storage.write("exp1/a", [b"x"])
    with pytest.raises(InvalidKeyError):
        storage.delete(prefix)
    assert storage.exists("exp1/a")


@pytest.mark.parametrize("key", ["../x", "/abs", "a/../../x", "a\\b", "a\x00b", "", "a//b"])
def test_bad_keys_are_refused(storage: Storage, key: str) -> None:
    with pytest.raises(InvalidKeyError):
        storage.write(key, [b"x"])
    with pytest.raises(InvalidKeyError):
        storage.read(key)


def test_an_object_cannot_become_a_prefix(storage: Storage) -> None:
    storage.write("p/a", [b"x"])
    with pytest.raises(StorageError):
        storage.write("p/a/b", [b"y"])
    assert storage.read("p/a") == b"x"


def test_concurrent_writers_in_threads(storage: Storage) -> None:
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


def test_read_range(storage: Storage) -> None:
    storage.write("p/a", [b"0123456789"])
    assert storage.read_range("p/a", 0, 4) == b"0123"
    assert storage.read_range("p/a", 8, 10) == b"89"
    assert storage.read_range("p/a", 10, 5) == b""
    assert storage.read_range("p/a", 3, 0) == b""
    with pytest.raises(ValueError, match="range"):
        storage.read_range("p/a", -1, 2)
    with pytest.raises(NotFoundError):
        storage.read_range("p/missing", 0, 1)


def test_readinto(storage: Storage) -> None:
    storage.write("p/a", [b"0123456789"])
    out = bytearray(4)
    assert storage.readinto("p/a", 2, out) == 4
    assert out == b"2345"
    tail = np.zeros(5, np.uint8)
    assert storage.readinto("p/a", 8, tail.data) == 2
    assert tail.tobytes() == b"89\0\0\0"


def test_children(storage: Storage) -> None:
    for key in ("e/g1/a", "e/g1/b", "e/g2/c", "e/obj", "e10/x"):
        storage.write(key, [b"x"])
    assert storage.children("e") == ["g1", "g2", "obj"]
    assert storage.children("e/g1") == ["a", "b"]
    assert storage.children("missing") == []
