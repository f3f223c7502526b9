"""What only the local directory storage does: atomicity, containment, memory maps."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from typedstore import policy
from typedstore.errors import InvalidKeyError, NotFoundError, StorageError
from typedstore.storage import LocalStorage, storage_for_url


def test_files_land_under_the_root(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root")
    storage.write("exp/obj", [b"abc"])
    assert (tmp_path / "root" / "exp" / "obj").read_bytes() == b"abc"
    assert sorted(os.listdir(tmp_path / "root" / "exp")) == ["obj"]


def test_a_failed_write_keeps_the_previous_object(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.write("p/x", [b"old"])

    def chunks() -> list[memoryview]:
        # The second chunk is not C-contiguous: the write fails before anything is replaced.
        return [memoryview(b"new"), np.arange(10, dtype=np.uint8)[::2].data]

    with pytest.raises(ValueError, match="contiguous"):
        storage.write("p/x", chunks())
    assert storage.read("p/x") == b"old"
    assert sorted(os.listdir(tmp_path / "p")) == ["x"]


def test_temp_files_are_not_listed_or_readable(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.write("p/x", [b"x"])
    (tmp_path / "p" / "~tmp-123").write_bytes(b"partial")
    assert list(storage.list()) == ["p/x"]
    with pytest.raises(InvalidKeyError):
        storage.read("p/~tmp-123")


def test_symlink_escape_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside)
    (root / "filelink").symlink_to(outside / "secret")
    storage = LocalStorage(root)
    with pytest.raises(InvalidKeyError, match="outside"):
        storage.read("link/secret")
    with pytest.raises(InvalidKeyError):
        storage.read("filelink")
    with pytest.raises(InvalidKeyError):
        storage.write("link/new", [b"x"])
    with pytest.raises(InvalidKeyError):
        storage.write("link/deeper/new", [b"x"])
    with pytest.raises(InvalidKeyError):
        storage.delete("link/secret")
    assert sorted(os.listdir(outside)) == ["secret"]
    assert (outside / "secret").read_bytes() == b"secret"


def test_a_folder_swapped_for_a_symlink_after_use_leads_nowhere(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    root = tmp_path / "root"
    storage = LocalStorage(root)
    storage.write("p/a", [b"a"])
    assert storage.read("p/a") == b"a"  # the folder is known good now
    (root / "p").rename(tmp_path / "moved")
    (root / "p").symlink_to(outside)
    # A storage that opened the folder before goes on using that folder, wherever it is
    # now; one that had not refuses the symlink. Neither reaches what it points to.
    storage.write("p/b", [b"b"])
    assert (tmp_path / "moved" / "b").read_bytes() == b"b"
    with pytest.raises((NotFoundError, InvalidKeyError)):
        storage.read("p/secret")
    fresh = LocalStorage(root)
    with pytest.raises(InvalidKeyError):
        fresh.write("p/c", [b"c"])
    with pytest.raises(InvalidKeyError):
        fresh.read("p/secret")
    with pytest.raises(InvalidKeyError):
        fresh.delete("p/secret")
    assert sorted(os.listdir(outside)) == ["secret"]


SWAPPER = """
import contextlib, os, sys, time
root, outside = sys.argv[1], sys.argv[2]
folder, aside, link = (os.path.join(root, name) for name in ("p", "aside", "link"))
os.symlink(outside, link)
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[3])
rounds = 0
while time.monotonic() < end:
    # The writer may make a new "p" while the old one is aside: a step then fails; go on.
    for source, target in ((folder, aside), (link, folder), (folder, link), (aside, folder)):
        with contextlib.suppress(OSError):
            os.rename(source, target)
    rounds += 1
print(rounds, flush=True)
"""


def test_writes_racing_a_symlink_swap_never_leave_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    storage = LocalStorage(root)
    storage.write("p/first", [b"x"])
    written = 0
    with subprocess.Popen(
        [sys.executable, "-c", SWAPPER, str(root), str(outside), "2"],
        stdout=subprocess.PIPE,
        text=True,
    ) as swapper:
        assert swapper.stdout is not None
        assert swapper.stdout.readline().strip() == "ready"
        while swapper.poll() is None:
            # Every other round a new storage, which opens the folder afresh mid-swap.
            user = storage if written % 2 else LocalStorage(root)
            try:
                user.write(f"p/{written:08d}", [b"y"])
                user.read(f"p/{written:08d}")
                written += 1
            except (InvalidKeyError, StorageError, NotFoundError):
                continue  # the swap was seen: refused, not followed (or the folder was aside)
        rounds = int(swapper.stdout.read())
    assert swapper.returncode == 0
    assert os.listdir(outside) == []
    assert rounds > 0  # the folder was swapped while the writes went on
    assert written > 0  # and they went on


def test_delete_of_a_symlinked_prefix_removes_only_the_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"x")
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside)
    LocalStorage(root).delete("link")
    assert not (root / "link").exists()
    assert (outside / "keep").read_bytes() == b"x"


@pytest.mark.parametrize("added", [3, 50])
def test_delete_goes_on_while_a_writer_adds_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, added: int
) -> None:
    storage, writer = LocalStorage(tmp_path), LocalStorage(tmp_path)
    storage.write("e/gen/a", [b"a"])
    real_rmdir = os.rmdir
    writes: list[int] = []

    def racing(path: str, *args: Any, **kwargs: Any) -> None:
        # Just before the prefix's own directory goes, another writer adds an object to
        # it, as a concurrent persist does: `added` times in a row.
        if os.path.basename(path) == "gen" and len(writes) < added:
            writes.append(writer.write(f"e/gen/new{len(writes)}", [b"n"]))
        real_rmdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "rmdir", racing)
    if added < 10:
        assert storage.delete("e/gen") == 1
        assert not (tmp_path / "e" / "gen").exists()
    else:  # a writer that never stops: refused after a few rounds, not an endless loop
        with pytest.raises(StorageError, match="cannot delete 'e/gen'"):
            storage.delete("e/gen")
        assert len(writes) == 10
    assert os.listdir(tmp_path / "e") == ([] if added < 10 else ["gen"])


def test_symlinks_inside_the_root_are_followed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    storage = LocalStorage(root)
    storage.write("real/a", [b"x"])
    (root / "alias").symlink_to(root / "real")
    assert storage.read("alias/a") == b"x"


def test_large_objects_are_memory_mapped(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    array = np.arange(1 << 19, dtype=np.float32)  # 2 MiB
    storage.write("p/big", [array.data])
    with storage.open_view("p/big") as view:
        assert view.readonly
        mapped = np.frombuffer(view, dtype=np.float32)
        assert np.array_equal(mapped, array)
        assert not mapped.flags.writeable
        del mapped


def test_a_view_kept_past_the_block_stays_valid(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.write("p/big", [np.ones(1 << 19, dtype=np.float32).data])
    with storage.open_view("p/big") as view:
        kept = np.frombuffer(view, dtype=np.float32)
    assert kept.sum() == 1 << 19


def test_directory_key_is_not_found(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.write("p/a/b", [b"x"])
    with pytest.raises(NotFoundError):
        storage.read("p/a")
    with pytest.raises(NotFoundError):
        storage.size("p/a")
    with pytest.raises(StorageError):
        storage.write("p/a", [b"y"])


def test_storage_for_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    local = storage_for_url("rel/store")
    assert isinstance(local, LocalStorage)
    assert local.root == tmp_path / "rel" / "store"
    from_file_url = storage_for_url((tmp_path / "x").as_uri())
    assert isinstance(from_file_url, LocalStorage)
    assert from_file_url.root == tmp_path / "x"
    assert storage_for_url("rel/store") is local
    assert storage_for_url("rel/store", fsync=True) is not local
    assert storage_for_url("memory://a") is storage_for_url("memory://a")
    assert storage_for_url("memory://a") is not storage_for_url("memory://b")
    with pytest.raises(StorageError, match="nosuchscheme"):
        storage_for_url("nosuchscheme://host/x")
    with pytest.raises(StorageError):
        storage_for_url("file://otherhost/x")


def test_a_folder_of_interrupted_writes_is_deleted_whole(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.write("e/g1/a", [b"x"])
    (tmp_path / "e" / "g2").mkdir()
    (tmp_path / "e" / "g2" / "~tmp-abc").write_bytes(b"partial")
    assert list(storage.list("e")) == ["e/g1/a"]
    assert storage.delete("e/g2") == 0
    assert not (tmp_path / "e" / "g2").exists()


@pytest.mark.parametrize("tmpfile", [True, False])
def test_overwrites_leave_only_the_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tmpfile: bool
) -> None:
    if not tmpfile:
        monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    storage = LocalStorage(tmp_path)
    for content in (b"first", b"second", b"third"):
        storage.write("p/x", [content])
        assert storage.read("p/x") == content
        assert os.listdir(tmp_path / "p") == ["x"]
    with pytest.raises(StorageError, match="a prefix of that name exists"):
        storage.write("p", [b"y"])
    assert sorted(os.listdir(tmp_path)) == ["p"]


Vectored = Callable[[int, Sequence[Any], int], int]


def cut_short(real: Vectored, most: int) -> Vectored:
    """``real`` (``os.preadv`` or ``os.pwritev``) moving at most ``most`` bytes of the first
    non-empty buffer a call, as a signal or the 2 GiB cap of one call would cut it."""

    def short(fd: int, buffers: Sequence[Any], offset: int) -> int:
        first = next((b for b in buffers if memoryview(b).nbytes), None)
        if first is None:
            return 0
        return real(fd, [memoryview(first).cast("B")[:most]], offset)

    return short


def test_short_writes_are_continued(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import typedstore.storage._local as local_module

    short = cut_short(os.pwritev, 7)
    real_one = os.pwrite

    def short_one(fd: int, data: memoryview, offset: int) -> int:
        return real_one(fd, memoryview(data)[:7], offset)

    storage = LocalStorage(tmp_path)
    # Several chunks (too large to be joined), then a single one.
    for chunks in ([b"a" * 10, bytes(range(256)) * 300, b"", b"z"], [bytes(range(256)) * 300]):
        monkeypatch.setattr(os, "pwritev", short)
        monkeypatch.setattr(os, "pwrite", short_one)
        monkeypatch.setattr(local_module, "_IOV_MAX", 3)  # several calls even when not cut
        storage.write("p/x", chunks)
        monkeypatch.undo()
        assert storage.read("p/x") == b"".join(chunks)


def test_writes_of_more_chunks_than_one_call_takes(tmp_path: Path) -> None:
    import typedstore.storage._local as local_module

    # Chunks of different sizes, more than the system's IOV_MAX, too large to be joined.
    chunks = [bytes([i % 251]) * (i % 97 + 40) for i in range(local_module._IOV_MAX * 2 + 5)]
    chunks[7] = os.urandom(policy.SMALL)
    storage = LocalStorage(tmp_path)
    assert storage.write("p/x", chunks) == sum(map(len, chunks))
    assert storage.read("p/x") == b"".join(chunks)
    buffers = [bytearray(len(chunk)) for chunk in chunks]
    with storage.open("p/x") as reader:
        assert reader.readinto(0, *buffers) == sum(map(len, chunks))
    assert buffers == chunks


FILE_SIZE_LIMIT = """
import resource, signal, sys
from typedstore.errors import StorageError
from typedstore.storage import LocalStorage
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
storage = LocalStorage(sys.argv[1])
try:
    storage.write("p/x", [b"n" * 60_000, b"e" * 60_000, b"w" * 60_000])
except StorageError as exc:
    print(exc)
"""


def test_a_write_the_system_cuts_short_fails_and_keeps_the_object(tmp_path: Path) -> None:
    import subprocess
    import sys

    storage = LocalStorage(tmp_path)
    storage.write("p/x", [b"old"])
    # A real short write: the first call stops at the file size limit, the next one fails.
    proc = subprocess.run(
        [sys.executable, "-c", FILE_SIZE_LIMIT, str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert "cannot write 'p/x'" in proc.stdout
    assert os.strerror(errno.EFBIG) in proc.stdout
    assert storage.read("p/x") == b"old"
    assert sorted(os.listdir(tmp_path / "p")) == ["x"]


def test_systems_that_refuse_proc_links_get_named_temporaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    if not hasattr(os, "O_TMPFILE"):
        pytest.skip("only systems with O_TMPFILE link files through /proc/self/fd")
    calls = []

    def refused(*args: object, **kwargs: object) -> None:
        calls.append(args)
        raise PermissionError(errno.EPERM, "Operation not permitted")

    storage = LocalStorage(tmp_path)
    monkeypatch.setattr(os, "link", refused)  # as a security module may do
    storage.write("p/x", [b"first"])
    storage.write("p/y", [b"second"])
    assert len(calls) == 1  # tried once, then never again
    assert storage.read("p/x") == b"first"
    assert storage.read("p/y") == b"second"
    assert sorted(os.listdir(tmp_path / "p")) == ["x", "y"]


def stored_10k(root: Path) -> tuple[LocalStorage, bytes]:
    """A storage holding 10 KiB of varied bytes under ``p/x``."""
    data = bytes(range(256)) * 40
    storage = LocalStorage(root)
    storage.write("p/x", [data])
    return storage, data


def test_readinto_many_fills_buffers_in_order_through_short_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import typedstore.storage._local as local_module

    storage, data = stored_10k(tmp_path)
    sizes = [0, 1, 7, 0, 300, 2, 5000, 0, 13]
    short = cut_short(os.preadv, 5)
    for patched in (False, True):
        if patched:
            monkeypatch.setattr(os, "preadv", short)
        monkeypatch.setattr(local_module, "_IOV_MAX", 3)  # several calls even without short reads
        buffers = [bytearray(n) for n in sizes]
        with storage.open("p/x") as reader:
            got = reader.readinto(10, *buffers)
        assert got == sum(sizes)
        assert b"".join(buffers) == data[10 : 10 + sum(sizes)]
    monkeypatch.undo()
    with storage.open("p/x") as reader:
        past_the_end = [bytearray(8), bytearray(100)]
        assert reader.readinto(len(data) - 20, *past_the_end) == 20
        assert bytes(past_the_end[0]) + bytes(past_the_end[1][:12]) == data[-20:]


def test_readinto_and_read_go_on_through_short_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage, data = stored_10k(tmp_path)
    real_pread = os.pread

    def short_pread(fd: int, length: int, offset: int) -> bytes:
        return real_pread(fd, min(length, 5), offset)

    monkeypatch.setattr(os, "preadv", cut_short(os.preadv, 5))
    monkeypatch.setattr(os, "pread", short_pread)
    out = np.empty((3, 4), np.float64)  # filled whole, though every call moves 5 bytes
    with storage.open("p/x") as reader:
        assert reader.readinto(10, out.data) == out.nbytes
        assert out.tobytes() == data[10 : 10 + out.nbytes]
        past_the_end = bytearray(100)
        assert reader.readinto(len(data) - 20, past_the_end) == 20
        assert bytes(past_the_end[:20]) == data[-20:]
        assert reader.read(3, 1000) == data[3:1003]
        assert reader.read(len(data) - 7, 1000) == data[-7:]
        assert reader.read(len(data), 10) == b""


def test_readinto_many_fills_arrays_of_any_shape_through_short_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import typedstore.storage._local as local_module

    arrays: list[np.ndarray[Any, Any]] = [
        np.arange(12, dtype=np.float16).reshape(3, 4),
        np.zeros((2, 0, 3)),
        np.array([[1 + 2j, 3 - 4j]], dtype=np.complex64),
        np.array([[True, False, True]]),
        np.arange(30, dtype=np.int64).reshape(2, 3, 5),
    ]
    storage = LocalStorage(tmp_path)
    storage.write("p/x", [b"head", *(a.tobytes() for a in arrays)])
    short = cut_short(os.preadv, 3)
    monkeypatch.setattr(os, "preadv", short)
    monkeypatch.setattr(local_module, "_IOV_MAX", 2)
    out = [np.empty_like(a) for a in arrays]
    with storage.open("p/x") as reader:
        got = reader.readinto(4, *[array.data for array in out])
        with pytest.raises(ValueError, match="contiguous"):
            reader.readinto(4, np.empty((4, 4))[:, ::2].data)
    assert got == sum(a.nbytes for a in arrays)
    for back, array in zip(out, arrays, strict=True):
        assert back.shape == array.shape
        assert np.array_equal(back, array)


FIFO_READER = """
import sys
from typedstore.errors import NotFoundError
from typedstore.storage import LocalStorage
storage = LocalStorage(sys.argv[1])
for read in (lambda: storage.read("p/x"), lambda: storage.size("p/x"),
             lambda: storage.read("p/x", 0, 4), lambda: storage.open("p/x").__enter__(),
             lambda: storage.open_view("p/x").__enter__()):
    try:
        read()
    except NotFoundError:
        print("refused")
"""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")
def test_a_named_pipe_under_a_key_is_refused_without_waiting(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "p").mkdir()
    os.mkfifo(tmp_path / "p" / "x")
    # Opening a pipe for reading waits for a writer unless told not to: in a process of
    # its own, so that a regression fails this test instead of hanging the suite.
    proc = subprocess.run(
        [sys.executable, "-c", FIFO_READER, str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert proc.stdout.split() == ["refused"] * 5


def test_only_files_are_listed(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.write("p/a", [b"a"])
    storage.write("p/q/b", [b"b"])
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "p" / "pipe")
    (tmp_path / "p" / "alias").symlink_to(tmp_path / "p" / "a")
    (tmp_path / "p" / "broken").symlink_to(tmp_path / "p" / "nothing")
    (tmp_path / "p" / "qlink").symlink_to(tmp_path / "p" / "q")  # not entered
    (tmp_path / "p" / "empty").mkdir()
    expected = ["p/a", "p/alias", "p/q/b"]
    assert list(storage.list()) == expected
    assert list(storage.list("p")) == expected
    assert list(storage.list("p/q")) == ["p/q/b"]
    for key in expected:
        assert storage.size(key) >= 0
    # qlink too: a folder symlink is not walked (its objects are listed where they are).
    others = ["p/broken", "p/pipe", "p/qlink"] if hasattr(os, "mkfifo") else ["p/broken", "p/qlink"]
    assert list(storage.others()) == others
    assert list(storage.others("p/broken")) == ["p/broken"]
    assert list(storage.others("p/a")) == []


def test_a_symlink_out_of_the_root_is_no_object(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    storage = LocalStorage(root)
    storage.write("p/a", [b"a"])
    (root / "p" / "out").symlink_to(outside / "secret")
    assert list(storage.list()) == ["p/a"]
    assert list(storage.others()) == ["p/out"]
