"""The datastore in S3: a real S3-protocol server (moto's server mode) on loopback."""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest

import typedstore as ts
from helpers import files_under
from typedstore.cli import main
from typedstore.errors import NotFoundError, StorageError
from typedstore.keys import describe_key
from typedstore.policy import PART, REMOTE_RESUMES
from typedstore.protocols import Storage
from typedstore.storage import FsspecStorage, storage_for_url
from typedstore.testing.storage import StorageTests


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def s3_options(endpoint: str) -> dict[str, Any]:
    return {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    import s3fs

    name = f"test-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(**s3_options(s3_endpoint)).call_s3("create_bucket", Bucket=name)
    return name


@pytest.fixture
def s3_store(s3_endpoint: str, bucket: str, tmp_path: Path) -> Iterator[FsspecStorage]:
    url = f"s3://{bucket}/root"
    options = s3_options(s3_endpoint)
    with ts.options.ctx(
        {
            "datastore.url": url,
            "datastore.storage_options": options,
            "database.url": f"sqlite:///{tmp_path / 'db'}",
        }
    ):
        storage = storage_for_url(url, storage_options=options)
        assert isinstance(storage, FsspecStorage)
        yield storage


@attrs.define(eq=False)
class S3Model:
    w: np.ndarray[Any, Any]
    name: str


ts.registry.register_attrs(S3Model, name="tests.s3.S3Model")

VALUES: dict[str, Any] = {
    "raw": b"raw bytes",
    "safetensors": np.arange(12, dtype=np.float32).reshape(3, 4),
    "npy": np.array([1 + 2j]),
    "json": {"lr": 0.1, "layers": [1, 2]},
    "pickle": (1, datetime.date(2024, 1, 1)),
    "attrs": S3Model(np.ones(3), "m"),
    "datastore": ts.DataStore(a=np.arange(3), b=b"x", c={"k": 1}),
}


def same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return bool(np.array_equal(a, b))
    if isinstance(a, S3Model):
        return bool(np.array_equal(a.w, b.w)) and a.name == b.name
    if isinstance(a, ts.DataStore):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


@pytest.mark.parametrize("codec", sorted(VALUES))
def test_every_codec_round_trips(s3_store: FsspecStorage, codec: str) -> None:
    io = ts.DataStoreIO.serialize_write(VALUES[codec], "exp", codec=codec)
    assert io.url.startswith("datastore:///exp/")
    assert same(VALUES[codec], io.read_deserialize())


class TestFsspecStorageOnS3(StorageTests):
    """The storage conformance suite on the moto S3 server."""

    @pytest.fixture(autouse=True)
    def _server(self, s3_endpoint: str, bucket: str) -> None:
        self.url = f"s3://{bucket}/root"
        self.options = s3_options(s3_endpoint)

    def make_storage(self, tmp_path: Path) -> Storage:
        return FsspecStorage(self.url, self.options)


def test_remote_storage_knows_when_objects_changed(s3_store: FsspecStorage) -> None:
    s3_store.write("e/g1/a", [b"x"])
    modified = s3_store.last_modified("e")
    assert modified is not None
    assert abs(modified - time.time()) < 300
    assert s3_store.last_modified("missing") is None


def test_lazy_datastore_fetches_only_its_entry(s3_store: FsspecStorage) -> None:
    url = ts.DataStore(big=np.zeros(2_000_000), small=b"tiny").to_url("lazy")
    before = s3_store.bytes_read
    lazy = ts.DataStore.from_url(url, lazy=True)
    assert lazy.small == b"tiny"
    fetched = s3_store.bytes_read - before
    # The first request (the header, and up to 16 KiB in all) and the 4 bytes of the
    # entry: not the 16 MB array.
    assert fetched < 16384 + 4096
    assert lazy.big.shape == (2_000_000,)
    assert s3_store.bytes_read - before >= 16_000_000


def test_one_column_of_a_table_fetches_only_its_byte_ranges(s3_store: FsspecStorage) -> None:
    import pandas as pd

    frame = pd.DataFrame({f"c{i}": np.arange(20_000, dtype=np.float64) * i for i in range(100)})
    io = ts.DataStoreIO.serialize_write(frame, "tables")
    before = s3_store.bytes_read
    part = io.read_deserialize(pd.DataFrame, columns=["c42"])
    fetched = s3_store.bytes_read - before
    pd.testing.assert_frame_equal(part, frame[["c42"]])
    full = s3_store.size(io.reference.key)
    # The column (1% of the object), the footer and schema: well under 3% of it.
    assert fetched < 0.03 * full, (fetched, full)


STREAM_CLIENT = """
import sys, tracemalloc, json
import numpy as np
import typedstore as ts
ts.options.set("datastore.url", sys.argv[1])
ts.options.set("datastore.storage_options", json.loads(sys.argv[2]))
array = np.random.default_rng(0).random(128 * 2**20 // 8)  # 128 MiB
# The first request loads the client and its service model: not the transfer's memory.
ts.DataStoreIO.serialize_write(array[:10], "small").read_deserialize()
tracemalloc.start()
io = ts.DataStoreIO.serialize_write(array, "big")
_, write_peak = tracemalloc.get_traced_memory()
tracemalloc.reset_peak()
back = io.read_deserialize(np.ndarray)
_, read_peak = tracemalloc.get_traced_memory()
assert np.array_equal(back, array)
print(write_peak, read_peak - array.nbytes)
"""


def test_large_object_is_streamed_with_bounded_memory(
    s3_endpoint: str, s3_store: FsspecStorage, bucket: str
) -> None:
    # The client runs in its own process: the server thread's copy of the object must
    # not count as the client's memory.
    import json
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", STREAM_CLIENT, f"s3://{bucket}/root",
         json.dumps(s3_options(s3_endpoint))],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    write_peak, read_extra = map(int, result.stdout.split())
    # Parts go up read from the array as they are sent, and ranges come down streamed
    # into the result: neither copies even one part whole (2 and 1 MiB here).
    assert write_peak < PART
    assert read_extra < PART


def test_failed_upload_leaves_no_object(s3_store: FsspecStorage) -> None:
    class Exploding:
        def __buffer__(self, flags: int) -> memoryview:
            raise RuntimeError("source broke")

    # (Python 3.12+ calls __buffer__ and reports "source broke"; 3.11 says "bytes-like".)
    with pytest.raises(StorageError, match=r"cannot write 'p/x'"):
        s3_store.write("p/x", [b"one request", Exploding()])

    class Failing:
        size = 3 * PART

        def read(self, start: int, length: int) -> bytes:
            if start >= 2 * PART:
                raise OSError("source broke")
            return bytes(length)

        def readinto(self, start: int, *buffers: Any) -> int:
            raise AssertionError("write_from reads parts")

    # A copy goes in parts: two are sent when the third cannot be read.
    with pytest.raises(StorageError, match=r"cannot write 'p/y'.*source broke"):
        s3_store.write_from("p/y", Failing(), Failing.size)
    for key in ("p/x", "p/y"):
        with pytest.raises(NotFoundError):
            s3_store.size(key)
    assert list(s3_store.list("p")) == []


class CuttingProxy:
    """A TCP proxy on loopback that cuts its first ``cuts`` connections in the middle of
    a response body: after ``after`` bytes have gone back to the client on one, it sends
    half of the next piece and shuts both ends."""

    def __init__(self, port: int, cuts: int, after: int) -> None:
        self._upstream, self._cuts, self._after = port, cuts, after
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self.cut = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(("127.0.0.1", self._upstream))
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, back: bool) -> None:
        sent = 0
        try:
            while data := source.recv(1 << 16):
                sent += len(data)
                if back and sent > self._after and self._take_cut():
                    sink.sendall(data[: len(data) // 2])
                    break  # the body ends early: as a dropped connection leaves it
                sink.sendall(data)
        except OSError:
            pass
        # Shut down, not only closed: that also wakes the other direction's thread.
        for end in (sink, source):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def _take_cut(self) -> bool:
        with self._lock:
            if self.cut >= self._cuts:
                return False
            self.cut += 1
            return True


def test_reads_cut_off_mid_body_resume_where_they_stopped(
    s3_endpoint: str, s3_store: FsspecStorage, bucket: str
) -> None:
    array = np.random.default_rng(3).random(3 * PART // 8)  # ranges of a part
    url = ts.DataStoreIO.serialize_write(array, "p").url
    port = int(s3_endpoint.rsplit(":", 1)[1])

    def read_through(proxy: CuttingProxy) -> np.ndarray[Any, Any]:
        options = {**s3_options(s3_endpoint), "client_kwargs": {
            "endpoint_url": proxy.endpoint, "region_name": "us-east-1"}}  # fmt: skip
        try:
            with ts.options.ctx({"datastore.storage_options": options}):
                return ts.DataStoreIO(url).read_deserialize(np.ndarray)
        finally:
            proxy.close()

    proxy = CuttingProxy(port, cuts=2, after=PART // 2)
    assert np.array_equal(read_through(proxy), array)
    assert proxy.cut == 2
    # A connection that keeps breaking: each range is asked again three times, then the
    # read fails (each try gets a megabyte further: the cuts are not what stops it).
    proxy = CuttingProxy(port, cuts=1000, after=PART // 8)
    with pytest.raises(StorageError, match=r"cannot read .*payload is not completed"):
        read_through(proxy)
    assert proxy.cut >= REMOTE_RESUMES + 1


def test_objects_too_large_for_s3s_part_limit_go_up_in_larger_parts(
    s3_endpoint: str, bucket: str, s3_store: FsspecStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    import s3fs

    # S3 takes at most 10,000 parts, which 8 MiB parts would exceed past 78 GiB: here the
    # limit is 3, and an object of five parts and a byte goes up in three.
    monkeypatch.setattr("typedstore.storage._fsspec.S3_MAX_PARTS", 3)
    data = np.random.default_rng(4).integers(0, 256, 5 * PART + 1, dtype=np.uint8).tobytes()

    class Source:
        size = len(data)

        def read(self, start: int, length: int) -> bytes:
            return data[start : start + length]

        def readinto(self, start: int, *buffers: Any) -> int:
            raise AssertionError("write_from reads parts")

    s3_store.write_from("p/stream", Source(), len(data))
    # Chunks up to 100 MiB go in one request: here, only those over a part.
    monkeypatch.setattr("typedstore.storage._fsspec.ONE_REQUEST_MAX", PART)
    s3_store.write("p/chunks", [data[:7], data[7:]])
    for key in ("p/stream", "p/chunks"):
        assert s3_store.read(key) == data
        etag = s3fs.S3FileSystem(**s3_options(s3_endpoint)).info(f"{bucket}/root/{key}")["ETag"]
        assert etag.strip('"').endswith("-3"), etag  # a multipart ETag counts its parts


def test_paths_written_under_are_remembered_until_deleted(s3_store: FsspecStorage) -> None:
    s3_store.write("a/b/x", [b"1"])
    s3_store.write("a/b/y", [b"2"])  # "a" and "a/b" are known to be folders: not asked
    assert s3_store.delete("a") == 2
    s3_store.write("a/b", [b"now an object"])
    with pytest.raises(StorageError, match="a parent is an object"):
        s3_store.write("a/b/z", [b"3"])


def test_uploads_carry_their_crc32c_to_s3(
    s3_endpoint: str, s3_store: FsspecStorage, bucket: str
) -> None:
    # S3 checks a body against the checksum sent with it and refuses a mismatch (moto
    # records the checksum without checking it, so only its arrival is tested here).
    import s3fs

    fs = s3fs.S3FileSystem(**s3_options(s3_endpoint))
    small = ts.DataStoreIO.write(b"checked by S3", "p").reference
    big = ts.DataStoreIO.serialize_write(np.ones(3 * 2**20), "p").reference  # multipart
    heads = [
        fs.call_s3("head_object", Bucket=bucket, Key=f"root/{ref.key}", ChecksumMode="ENABLED")
        for ref in (small, big)
    ]
    described = describe_key(small.key)
    assert described is not None
    assert described.crc32c is not None
    assert (
        heads[0]["ChecksumCRC32C"] == base64.b64encode(described.crc32c.to_bytes(4, "big")).decode()
    )
    assert "ChecksumCRC32C" in heads[1], "each part went up with its crc32c"
    assert ts.DataStoreIO(small).read() == b"checked by S3"
    assert np.array_equal(ts.DataStoreIO(big).read_deserialize(), np.ones(3 * 2**20))


def test_experiment_with_an_s3_datastore(s3_store: FsspecStorage) -> None:
    exp = ts.create_experiment("on-s3")
    exp.fields.data = ts.DataStore(w=np.arange(5))
    exp.persist()
    exp.fields.data = ts.DataStore(w=np.arange(6))
    exp.persist(if_exists="replace")
    keys = list(s3_store.list(exp.id))
    assert len(keys) == 1
    assert np.array_equal(ts.load_experiment("on-s3").fields.data.w, np.arange(6))
    exp.delete()
    assert list(s3_store.list(exp.id)) == []


def test_errors(s3_endpoint: str, s3_store: FsspecStorage) -> None:
    with pytest.raises(NotFoundError, match="p/missing"):
        ts.DataStoreIO("datastore:///p/missing?codec=raw").read()
    options = s3_options(s3_endpoint)
    with ts.options.ctx(
        {"datastore.url": "s3://no-such-bucket-here/x", "datastore.storage_options": options}
    ):
        with pytest.raises(StorageError, match=r"bucket does not exist"):
            ts.DataStoreIO.write(b"x", "p")
        with pytest.raises(NotFoundError):
            ts.DataStoreIO("datastore:///p/x?codec=raw").read()


def test_copy_local_store_to_s3(
    s3_endpoint: str, s3_store: FsspecStorage, bucket: str, tmp_path: Path
) -> None:
    local = tmp_path / "local"
    with ts.options.ctx({"datastore.url": str(local)}):
        urls = [
            ts.DataStoreIO.serialize_write(np.arange(10), "exp").url,
            ts.DataStore(a=1, b=np.ones(2)).to_url("exp"),
            ts.DataStoreIO.write(b"raw", "other/p").url,
        ]
    options = s3_options(s3_endpoint)
    target = f"s3://{bucket}/copied"
    assert main(["copy", str(local), target, "--storage-options", json.dumps(options)]) == 0
    with ts.options.ctx({"datastore.url": target, "datastore.storage_options": options}):
        assert np.array_equal(ts.DataStoreIO(urls[0]).read_deserialize(np.ndarray), np.arange(10))
        assert ts.DataStore.from_url(urls[1]).a == 1
        assert ts.DataStoreIO(urls[2]).read() == b"raw"
    assert len(files_under(local)) == 3


def test_copy_to_s3_leaves_damaged_objects_behind(
    s3_endpoint: str, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local = tmp_path / "local"
    with ts.options.ctx({"datastore.url": str(local)}):
        good = ts.DataStoreIO.write(b"good", "p").url
        # Three parts: two are sent before the last one shows the damage.
        bad = ts.DataStoreIO.write(bytes(2 * PART + 5), "p").url
    path = local / ts.Reference.parse(bad).key
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(data)
    options = s3_options(s3_endpoint)
    target = f"s3://{bucket}/copied"
    assert main(["copy", str(local), target, "--storage-options", json.dumps(options)]) == 1
    err = capsys.readouterr().err
    assert f"not copied: {ts.Reference.parse(bad).key}: the stored bytes do not match" in err
    copied = storage_for_url(target, storage_options=options)
    assert list(copied.list()) == [ts.Reference.parse(good).key]
    # The upload of the damaged object was aborted, not left to linger.
    import s3fs

    client = s3fs.S3FileSystem(**options)
    uploads = client.call_s3("list_multipart_uploads", Bucket=bucket)
    assert uploads.get("Uploads", []) == []


def test_cli_commands_take_storage_options(
    s3_endpoint: str, s3_store: FsspecStorage, bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ts.DataStoreIO.serialize_write(np.arange(4), "cli").url
    flags = [
        "--datastore", f"s3://{bucket}/root",
        "--storage-option", "key=testing", "--storage-option", "secret=testing",
        "--storage-option", f"client_kwargs.endpoint_url={s3_endpoint}",
        "--storage-option", "client_kwargs.region_name=us-east-1",
    ]  # fmt: skip
    with ts.options.ctx({"datastore.storage_options": None}):  # only the flags
        assert main([*flags, "ls"]) == 0
        assert ts.Reference.parse(url).key in capsys.readouterr().out
        assert main([*flags, "verify"]) == 0
        assert capsys.readouterr().out == "1 objects checked, 0 damaged\n"
        assert main([*flags, "info", url]) == 0
        assert "safetensors" in capsys.readouterr().out


def test_wrong_credentials(s3_endpoint: str, bucket: str) -> None:
    import urllib.request

    def require_auth(count: str) -> None:
        # moto's server checks credentials after `count` more requests (inf: never).
        request = urllib.request.Request(
            f"{s3_endpoint}/moto-api/reset-auth",
            data=count.encode(),
            headers={"Content-Type": "text/plain"},
            method="POST",
        )
        with urllib.request.urlopen(request) as response:
            assert response.status == 200

    wrong = {**s3_options(s3_endpoint), "key": "AKIAWRONG", "secret": "wrong"}
    require_auth("0")
    try:
        with ts.options.ctx(
            {"datastore.url": f"s3://{bucket}/creds", "datastore.storage_options": wrong}
        ):
            with pytest.raises(StorageError, match="access denied"):
                ts.DataStoreIO.write(b"x", "p")
            with pytest.raises(StorageError, match="access denied"):
                ts.DataStoreIO("datastore:///p/0123?codec=raw").read()
    finally:
        require_auth("inf")


TEAM_MEMBER = """
import json, sys
import numpy as np
import typedstore as ts

ts.options.set("datastore.url", sys.argv[1])
ts.options.set("datastore.storage_options", json.loads(sys.argv[2]))
ts.options.set("database.url", sys.argv[3])
n = int(sys.argv[4])
print("ready", flush=True)
sys.stdin.readline()
own = ts.create_experiment(f"own-{n}")
for i in range(3):
    with own.run() as run:
        run.fields.member = n
        run.fields.data = ts.DataStore(w=np.full(1000, n * 10 + i))
own.persist()
wins = conflicts = 0
for i in range(6):
    shared = ts.create_experiment("shared")
    shared.fields.version = n * 100 + i
    shared.fields.data = ts.DataStore(w=np.full(1000, n * 100 + i))
    try:
        shared.persist(if_exists="replace")
        wins += 1
    except ts.errors.PersistConflictError:
        conflicts += 1
print(json.dumps({"wins": wins, "conflicts": conflicts}))
"""


def test_a_team_of_processes_shares_postgresql_and_s3(
    s3_endpoint: str, bucket: str, postgres_server: str, tmp_path: Path
) -> None:
    import json
    import subprocess
    import sys

    from typedstore.testing.postgres import new_database

    store, options = f"s3://{bucket}/team", s3_options(s3_endpoint)
    database = new_database(postgres_server)
    machines = [tmp_path / f"machine-{n}" for n in range(4)]
    members = []
    for n, cwd in enumerate(machines):
        cwd.mkdir()
        args = [sys.executable, "-c", TEAM_MEMBER, store, json.dumps(options), database, str(n)]
        pipe = subprocess.PIPE
        members.append(
            subprocess.Popen(args, cwd=cwd, stdin=pipe, stdout=pipe, stderr=pipe, text=True)
        )
    for member in members:
        assert member.stdout is not None
        assert member.stdout.readline().strip() == "ready"
    results = []
    for member in members:  # all started: go at once
        out, err = member.communicate("go\n", timeout=300)
        assert member.returncode == 0, err
        results.append(json.loads(out))
    assert sum(r["wins"] + r["conflicts"] for r in results) == 24
    assert sum(r["wins"] for r in results) >= 6
    assert all(list(cwd.iterdir()) == [] for cwd in machines), "nothing is written locally"
    with ts.options.ctx(
        {"datastore.url": store, "datastore.storage_options": options, "database.url": database}
    ):
        infos = {info.name: info for info in ts.list_experiments()}
        assert sorted(infos) == ["own-0", "own-1", "own-2", "own-3", "shared"]
        for n in range(4):
            own = ts.load_experiment(f"own-{n}")
            for i, run in enumerate(own.runs):
                assert run.fields.member == n
                assert np.array_equal(run.fields.data.w, np.full(1000, n * 10 + i))
        shared = ts.load_experiment("shared")  # one clean winner
        assert np.array_equal(shared.fields.data.w, np.full(1000, shared.fields.version))
        storage = storage_for_url(store, storage_options=options)
        folders = {key.split("/", 1)[0] for key in storage.list()}
        assert folders == {info.id for info in infos.values()}, "no objects left behind"
