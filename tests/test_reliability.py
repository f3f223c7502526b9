"""Crashes, concurrency, faults and integrity, with real processes and real files."""

from __future__ import annotations

import json
import os
import random
import signal
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import typedstore as ts
from children import Child
from helpers import files_under, using
from typedstore.errors import IntegrityError, TypedStoreError

PRELUDE = textwrap.dedent(
    """
    import json, os, sys, time
    import numpy as np
    import typedstore as ts
    ts.options.set("datastore.url", sys.argv[1])
    db = sys.argv[2]
    ts.options.set("database.url", db if "://" in db else "sqlite:///" + db)
    """
)


def python(code: str, *args: str) -> Child:
    return Child(PRELUDE + textwrap.dedent(code), *args)


def value_for(i: int) -> np.ndarray[Any, Any]:
    return np.full(50_000 + i % 7, i, dtype=np.int64)


WRITER = """
i = int(sys.argv[3])
print("writing", flush=True)
while True:
    if i % 2:
        url = ts.DataStoreIO.serialize_write(np.full(50_000 + i % 7, i, dtype=np.int64), "w").url
    else:
        url = ts.DataStore(v=np.full(50_000 + i % 7, i, dtype=np.int64), i=i).to_url("w")
    print(url, i, flush=True)
    i += 1
"""


def read_value(url: str) -> np.ndarray[Any, Any]:
    if url.endswith("codec=datastore"):
        ds = ts.DataStore.from_url(url)
        assert ds.i == int(ds.v[0])
        return np.asarray(ds.v)
    return ts.DataStoreIO(url).read_deserialize(np.ndarray)


def test_writes_survive_sigkill_at_random_moments(tmp_path: Path) -> None:
    store, db = tmp_path / "store", tmp_path / "db"
    rng = random.Random(7)
    returned: dict[str, int] = {}
    start = 0
    for _ in range(20):
        child = python(WRITER, str(store), str(db), str(start))
        # The kill is armed only once the child writes: killed while still importing
        # numpy, it would have written nothing at all.
        assert child.stdout is not None
        assert child.stdout.readline() == "writing\n"
        time.sleep(rng.uniform(0.05, 0.3))
        os.kill(child.pid, signal.SIGKILL)
        out, _ = child.communicate()
        for line in out.split("\n")[:-1]:  # the last piece may be cut by the kill
            url, index = line.rsplit(" ", 1)
            returned[url] = int(index)
        start = max(returned.values(), default=0) + 1
    assert len(returned) > 20
    with ts.options.ctx({"datastore.url": str(store)}):
        # Every reference that was returned loads to its value.
        for url, number in returned.items():
            assert np.array_equal(read_value(url), value_for(number))
        # No partial object under any key: every listed object decodes whole.
        storage = ts.LocalStorage(store)
        checked = [damage for _, damage in ts.maintenance.verify()]
        assert len(checked) >= len(returned)
        assert all(damage is None for damage in checked), checked
        # Interrupted writes leave temporary files only; reads never list them, gc removes them.
        leftovers = list(store.rglob("~tmp-*"))
        assert storage.remove_temporary(older_than=0) == len(leftovers)
        assert not list(store.rglob("~tmp-*"))


CONCURRENT_WRITER = """
me = int(sys.argv[3])
for i in range(40):
    value = np.full(1000, me * 1000 + i, dtype=np.int32)
    print(ts.DataStoreIO.serialize_write(value, "shared").url, flush=True)
"""

CONCURRENT_READER = """
deadline = time.time() + 20
seen = set()
storage = ts.LocalStorage(sys.argv[1])
while time.time() < deadline:
    keys = list(storage.list("shared"))
    for key in keys:
        value = ts.DataStoreIO(f"datastore:///{key}?codec=safetensors").read_deserialize(np.ndarray)
        assert value.shape == (1000,) and (value == value[0]).all()
        seen.add(key)
    if len(keys) >= 320:
        break
print(len(seen))
"""


def test_eight_writers_and_two_readers(tmp_path: Path) -> None:
    store, db = tmp_path / "store", tmp_path / "db"
    writers = [python(CONCURRENT_WRITER, str(store), str(db), str(n)) for n in range(8)]
    readers = [python(CONCURRENT_READER, str(store), str(db)) for _ in range(2)]
    urls = []
    for proc in writers:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        urls += out.split()
    for proc in readers:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert int(out) > 0
    assert len(urls) == len(set(urls)) == 320
    with ts.options.ctx({"datastore.url": str(store)}):
        values = {int(ts.DataStoreIO(u).read_deserialize(np.ndarray)[0]) for u in urls}
    assert values == {n * 1000 + i for n in range(8) for i in range(40)}
    assert len(files_under(store)) == 320


PERSISTER = """
exp = ts.load_experiment("shared")
# Both load before either persists: a load racing a persist of the same experiment may
# find the generation it read gone, which is not what this test is about.
print("loaded", flush=True)
sys.stdin.readline()
conflicts = wins = 0
for i in range(15):
    version = int(sys.argv[3]) * 100 + i
    exp.fields.version = version
    exp.fields.data = ts.DataStore(v=np.full(20_000, version))
    try:
        exp.persist(if_exists="replace")
        wins += 1
    except ts.errors.PersistConflictError:
        conflicts += 1
print(json.dumps({"wins": wins, "conflicts": conflicts}))
"""


def test_two_processes_persisting_one_experiment(tmp_path: Path, database_url: str) -> None:
    store, db = tmp_path / "store", database_url
    with ts.options.ctx({"datastore.url": str(store), "database.url": db}):
        exp = ts.create_experiment("shared")
        exp.fields.version = 0
        exp.fields.data = ts.DataStore(v=np.full(20_000, 0))
        exp.persist()
    ts.database.close_all()
    procs = [python(PERSISTER, str(store), db, str(n)) for n in (1, 2)]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "loaded"
    results = []
    for proc in procs:
        out, err = proc.communicate("go\n", timeout=300)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    assert sum(r["wins"] for r in results) >= 15
    with ts.options.ctx({"datastore.url": str(store), "database.url": db}):
        final = ts.load_experiment("shared")
        version = final.fields.version
        assert np.array_equal(final.fields.data.v, np.full(20_000, version))
        exp_id = final.id
    generations = {f.split("/")[1] for f in files_under(store) if f.startswith(exp_id)}
    assert len(generations) == 1


FAULT = """
import errno
scenario, function, k, code = sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6]
if scenario.endswith("-named"):
    del os.O_TMPFILE  # as on a platform without it: named temporary files, then rename
    scenario = scenario[: -len("-named")]
ts.options.set("datastore.fsync", True)
exp = ts.load_experiment("faulty")
real = getattr(os, function)
calls = 0
def failing(*args, **kwargs):
    global calls
    calls += 1
    if calls == k:
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))
    return real(*args, **kwargs)
setattr(os, function, failing)
try:
    # A large and a small object each: they are written in different ways.
    if scenario == "io":
        ts.DataStoreIO.serialize_write(np.full(300_000, 7), "loose")
        ts.DataStoreIO.serialize_write(np.arange(7), "loose")
    elif scenario == "datastore":
        ts.DataStore(a=np.full(300_000, 7), b=b"x" * 100_000, c=[1, 2]).to_url("loose")
        ts.DataStore(c=[1, 2]).to_url("loose")
    else:
        exp.fields.version = 2
        exp.fields.data = ts.DataStore(v=np.full(300_000, 2))
        exp.fields.small = ts.DataStore(s=np.arange(3))
        exp.persist(if_exists="replace")
    outcome = {"error": None, "hit": calls >= k}
except ts.errors.TypedStoreError as exc:
    outcome = {"error": type(exc).__name__, "message": str(exc), "hit": True}
setattr(os, function, real)
print(json.dumps(outcome))
"""


FAULTS = [
    ("pwrite", "ENOSPC"),
    ("pwritev", "ENOSPC"),
    ("fsync", "EIO"),
    ("open", "EMFILE"),
    ("posix_fallocate", "ENOSPC"),
]


@pytest.mark.parametrize(
    ("scenario", "function", "code"),
    [
        *[(scenario, *fault) for scenario in ("io", "datastore", "persist")
          for fault in [*FAULTS, ("link", "EIO"), ("replace", "EIO")]],
        *[("io-named", *fault) for fault in [*FAULTS, ("replace", "EIO")]],
    ],
)  # fmt: skip
def test_faults_at_every_step(tmp_path: Path, scenario: str, function: str, code: str) -> None:
    store, db = tmp_path / "store", tmp_path / "db"
    with using(store, db):
        exp = ts.create_experiment("faulty")
        exp.fields.version = 1
        exp.fields.data = ts.DataStore(v=np.full(300_000, 1))
        exp.persist()
        before = ts.DataStoreIO.serialize_write(np.arange(10), "loose").url
    ts.database.close_all()
    failures = 0
    for k in range(1, 60):
        proc = python(FAULT, str(store), str(db), scenario, function, str(k), code)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        outcome = json.loads(out)
        if outcome["error"] is not None:
            failures += 1
            assert outcome["error"] in ("StorageError", "DatabaseError"), outcome
            assert os.strerror(getattr(__import__("errno"), code)) in outcome["message"]
        with using(store, db):
            # Nothing stored before is damaged, and no partial object is visible.
            kept = ts.DataStoreIO(before).read_deserialize(np.ndarray)
            assert np.array_equal(kept, np.arange(10))
            loaded = ts.load_experiment("faulty")
            version = loaded.fields.version
            assert version in (1, 2)
            assert np.array_equal(loaded.fields.data.v, np.full(300_000, version))
            assert not list(store.rglob("~tmp-*"))
            for _, damage in ts.maintenance.verify():
                assert damage is None, damage
        ts.database.close_all()
        if not outcome["hit"]:
            break  # k is past the last call: every step has been failed once
    else:
        pytest.fail("the scenario never completed")
    assert failures > 0, f"no {function} call of the {scenario} path was ever failed"


def test_checksums(store: Path) -> None:
    with ts.options.ctx({"datastore.checksum": "sha256"}):
        io = ts.DataStoreIO.serialize_write(np.arange(1000), "p")
        raw = ts.DataStoreIO.write(b"hello", "p")
        ds_url = ts.DataStore(a=np.arange(5), b="x").to_url("p")
    assert "sha256=" in io.url
    assert "sha256=" in ds_url
    # Verification depends on the reference, not on the option.
    assert np.array_equal(io.read_deserialize(np.ndarray), np.arange(1000))
    assert raw.read() == b"hello"
    for url in (io.url, raw.url, ds_url):
        path = store / ts.Reference.parse(url).key
        data = bytearray(path.read_bytes())
        data[-1] ^= 0x01
        path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"sha256") as info:
        io.read_deserialize(np.ndarray)
    assert io.url in str(info.value)
    with pytest.raises(IntegrityError):
        raw.read()
    with pytest.raises(IntegrityError):
        ts.DataStore.from_url(ds_url)


def test_gc(store: Path) -> None:
    exp = ts.create_experiment()
    exp.fields.d = ts.DataStore(a=1)
    exp.persist()
    orphan = store / exp.id / ("f" * 32)  # a generation no row names
    orphan.mkdir()
    (orphan / "obj").write_bytes(b"x")
    (store / "p").mkdir()
    (store / "p" / "~tmp-old").write_bytes(b"partial")
    old = time.time() - 7200
    os.utime(store / "p" / "~tmp-old", (old, old))
    (store / "p" / "~tmp-new").write_bytes(b"in progress")
    report = ts.maintenance.collect_garbage(older_than=3600)
    assert report.temporary_files == 1
    assert report.generations == 0  # the orphan generation is too young
    assert (store / "p" / "~tmp-new").exists()
    report = ts.maintenance.collect_garbage(older_than=0)
    assert (report.temporary_files, report.generations) == (1, 1)
    assert ts.load_experiment(exp.id).fields.d.a == 1


def test_verify_reports_damaged_objects(store: Path) -> None:
    exp = ts.create_experiment()
    exp.fields.d = ts.DataStore(a=np.arange(10), b={"k": 1})
    exp.persist()
    loose = ts.DataStoreIO.serialize_write({"x": np.ones(3)}, "loose")
    ts.DataStoreIO.write(b"anything", "loose")
    assert [d for _, d in ts.maintenance.verify() if d is not None] == []
    url = ts.load_experiment(exp.id).fields.d.reference
    assert url is not None
    path = store / ts.Reference.parse(url).key
    data = path.read_bytes()
    path.write_bytes(data[:-3])
    loose_path = store / loose.reference.key
    loose_path.write_bytes(loose_path.read_bytes()[:-1])
    damaged = {d.key: d for _, d in ts.maintenance.verify() if d is not None}
    assert set(damaged) == {ts.Reference.parse(url).key, loose.reference.key}
    assert damaged[ts.Reference.parse(url).key].reference == url
    from typedstore.cli import main

    assert main(["verify"]) == 1
    assert main(["verify", "other"]) == 0


@pytest.mark.parametrize("tmpfile", [True, False])
def test_garbage_only_in_temporary_files(tmp_path: Path, tmpfile: bool) -> None:
    # A write killed just before its object gets its name leaves nothing (Linux's unnamed
    # O_TMPFILE files) or a ~tmp- file (elsewhere), never a key.
    store = tmp_path / "s"
    code = f"""
    import os, signal
    if not {tmpfile}:
        del os.O_TMPFILE
    def die(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)
    os.{"link" if tmpfile else "replace"} = die
    ts.DataStoreIO.write(b"x" * 1000, "p")
    """
    proc = python(code, str(store), str(tmp_path / "db"))
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    left = [p.name for p in (store / "p").iterdir()]
    assert list(ts.LocalStorage(store).list()) == []
    if tmpfile:
        assert left == []
        return
    assert [name.startswith("~tmp-") for name in left] == [True]
    with pytest.raises(TypedStoreError):
        ts.LocalStorage(store).read("p/" + next((store / "p").iterdir()).name)


FLUSH_ORDER = """
import sqlite3
durable = sys.argv[3] == "durable"
ts.options.set("persist.durable", durable)
events = []
real_fsync = os.fsync


def recording_fsync(fd):
    real_fsync(fd)
    events.append(["flushed", os.readlink(f"/proc/self/fd/{fd}")])


os.fsync = recording_fsync


real_connect = sqlite3.connect


def tracing_connect(*args, **kwargs):
    # The database's own statements, in order with the flushes: COMMIT among them.
    conn = real_connect(*args, **kwargs)
    conn.set_trace_callback(lambda sql: events.append(["sql", sql]))
    return conn


sqlite3.connect = tracing_connect
experiment = ts.create_experiment("flushed")
experiment.fields.data = ts.DataStore(a=np.arange(10))
for i in range(5):
    with experiment.run() as run:
        run.fields.data = ts.DataStore(v=np.full(1000, i))
experiment.persist()
print(json.dumps({"id": experiment.id, "events": events}))
"""


def unflushed_at_commit(store: Path, db: Path, mode: str) -> list[str]:
    """What a power cut right after the persist's commit could lose that its rows name:
    objects, and folders on their paths, not flushed to disk before the COMMIT."""
    proc = python(FLUSH_ORDER, str(store), str(db), mode)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    result = json.loads(out)
    events = result["events"]
    commits = [i for i, (kind, what) in enumerate(events) if kind == "sql" and what == "COMMIT"]
    inserted = next(i for i, (kind, what) in enumerate(events)
                    if kind == "sql" and what.startswith("INSERT INTO experiments"))  # fmt: skip
    commit = next(i for i in commits if i > inserted)
    flushed = {what for kind, what in events[:commit] if kind == "flushed"}
    root = os.path.realpath(store)
    needed = [os.path.join(root, key) for key in files_under(store)]
    needed += [root, os.path.join(root, result["id"])]
    needed += {os.path.dirname(path) for path in needed[:-2]}
    assert len(files_under(store)) == 6
    return sorted(path for path in needed if path not in flushed)


def test_persist_flushes_its_objects_before_it_commits(tmp_path: Path) -> None:
    assert unflushed_at_commit(tmp_path / "store", tmp_path / "db", "durable") == []


def test_the_flush_order_check_sees_a_persist_that_does_not_flush(tmp_path: Path) -> None:
    # persist.durable=False: the same check finds every object and folder unflushed.
    missing = unflushed_at_commit(tmp_path / "store", tmp_path / "db", "not-durable")
    assert len(missing) == 6 + 3
