from __future__ import annotations

import base64
import decimal
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest

import typedstore as ts
from children import Child
from helpers import files_under
from typedstore.errors import (
    DatabaseError,
    DecodeError,
    ExperimentExistsError,
    ExperimentNotFoundError,
    InvalidReferenceError,
    ReservedPrefixError,
    UnknownCodecError,
)


@attrs.define(eq=False)
class Model:
    coef: np.ndarray[Any, Any]
    bias: float


ts.registry.register_attrs(Model, name="tests.experiment.Model")


@pytest.fixture
def store(tmp_path: Path, database_url: str) -> Iterator[Path]:
    """A datastore root, with a new database of each kind."""
    root = tmp_path / "store"
    with ts.options.ctx({"datastore.url": str(root), "database.url": database_url}):
        yield root


def sample() -> ts.Experiment:
    exp = ts.create_experiment("sample")
    exp.fields.lr = 0.01
    exp.fields.tags = ["a", "b"]
    exp.fields.pair = (1, 2)
    exp.fields.data = ts.DataStore(x=np.arange(5), note=b"hello")
    for i in range(3):
        with exp.run() as run:
            run.fields.i = i
            run.fields.result = ts.DataStore(w=np.full(4, i), model=Model(np.ones(2) * i, 0.5))
            run.fields.scalar = decimal.Decimal(i) / 4  # a pickled inline value
    return exp


def test_create_has_unique_ids() -> None:
    ids = {ts.create_experiment().id for _ in range(100)}
    assert len(ids) == 100
    exp = ts.create_experiment()
    assert exp.name == f"experiment-{exp.id[:8]}"
    with pytest.raises(ValueError, match="name"):
        ts.create_experiment("")


def test_run_is_added_only_when_its_block_succeeds() -> None:
    exp = ts.create_experiment()
    with exp.run() as run:
        run.fields.x = 1

    def failing_run() -> None:
        with exp.run() as failing:
            failing.fields.x = 2
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        failing_run()
    assert [r.fields.x for r in exp.runs] == [1]


def test_persist_and_load(store: Path) -> None:
    exp = sample()
    exp.persist()
    for key in ("sample", exp.id):
        back = ts.load_experiment(key)
        assert back.id == exp.id
        assert back.name == "sample"
        assert back.fields.lr == 0.01
        assert back.fields.tags == ["a", "b"]
        assert back.fields.pair == (1, 2)
        assert "<not loaded>" in repr(back.fields.data)
        assert np.array_equal(back.fields.data.x, np.arange(5))
        assert back.fields.data.note == b"hello"
        assert [run.id for run in back.runs] == [run.id for run in exp.runs]
        for i, run in enumerate(back.runs):
            assert run.fields.i == i
            assert np.array_equal(run.fields.result.w, np.full(4, i))
            assert run.fields.result.model.bias == 0.5
            assert run.fields.scalar == decimal.Decimal(i) / 4
            assert type(run.fields.scalar) is decimal.Decimal


def test_datastores_live_under_the_experiment_id(store: Path) -> None:
    exp = sample()
    exp.persist()
    files = files_under(store)
    assert len(files) == 4  # one object per DataStore
    assert all(f.startswith(f"{exp.id}/") for f in files)


def test_persist_fails_or_replaces(store: Path) -> None:
    exp = sample()
    exp.persist()
    with pytest.raises(ExperimentExistsError, match="if_exists"):
        exp.persist()
    with pytest.raises(ValueError, match="if_exists"):
        exp.persist(if_exists="append")  # type: ignore[arg-type]
    exp.fields.lr = 0.5
    exp.persist(if_exists="replace")
    assert ts.load_experiment(exp.id).fields.lr == 0.5


def test_name_clash_with_another_experiment(store: Path) -> None:
    first = ts.create_experiment("same")
    first.persist()
    with pytest.raises(ExperimentExistsError, match=f"already stored as experiment {first.id}"):
        ts.create_experiment("same").persist()


RERUN = """
import sys
import numpy as np
import typedstore as ts

ts.options.set("datastore.url", sys.argv[1])
ts.options.set("database.url", sys.argv[2])
experiment = ts.create_experiment("iris")
with experiment.run() as run:
    run.fields.outputs = ts.DataStore(weights=np.full(3, float(sys.argv[3])))
experiment.persist(if_exists="replace")
print(experiment.id)
"""


def test_a_script_run_again_replaces_the_experiment_of_its_name(
    tmp_path: Path, database_url: str
) -> None:
    root, db = tmp_path / "store", database_url
    ids = []
    for value in ("1", "2"):
        result = subprocess.run(
            [sys.executable, "-c", RERUN, str(root), db, value],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        ids.append(result.stdout.strip())
    assert ids[0] != ids[1]
    with ts.options.ctx({"datastore.url": str(root), "database.url": db}):
        stored = ts.load_experiment("iris")
        assert stored.id == ids[1]
        assert np.array_equal(stored.runs[0].fields.outputs.weights, np.full(3, 2.0))
        with pytest.raises(ExperimentNotFoundError):
            ts.load_experiment(ids[0])
    assert [p.name for p in root.iterdir()] == [ids[1]]  # the replaced one's objects went


def test_after_persist_the_object_reads_the_new_generation(store: Path) -> None:
    exp = ts.create_experiment("gen")
    exp.fields.data = ts.DataStore(a=np.arange(3), b=np.ones(2))
    exp.persist()
    for load in (exp.reload, lambda: ts.load_experiment("gen")):
        loaded = load()
        loaded.persist(if_exists="replace")  # deletes the generation it was loaded from
        assert np.array_equal(loaded.fields.data.a, np.arange(3))  # not read before
        loaded.persist(if_exists="replace")
        assert np.array_equal(loaded.fields.data.b, np.ones(2))
    assert np.array_equal(ts.load_experiment("gen").fields.data.b, np.ones(2))


def test_folder_holds_exactly_the_last_persist(store: Path) -> None:
    exp = sample()
    exp.persist()
    first = set(files_under(store))
    exp.fields.extra = ts.DataStore(z=1)
    exp.persist(if_exists="replace")
    second = set(files_under(store))
    assert not first & second
    assert len(second) == 5
    generations = {f.split("/")[1] for f in second}
    assert len(generations) == 1


def test_replacing_a_loaded_experiment_keeps_its_unread_data(store: Path) -> None:
    sample().persist()
    loaded = ts.load_experiment("sample")
    loaded.fields.lr = 1.0
    loaded.persist(if_exists="replace")
    again = ts.load_experiment("sample")
    assert again.fields.lr == 1.0
    assert np.array_equal(again.fields.data.x, np.arange(5))
    assert again.runs[2].fields.result.model.bias == 0.5


def test_reload(store: Path) -> None:
    exp = sample()
    exp.persist()
    exp.fields.lr = 99
    exp.runs.clear()
    assert exp.reload() is exp
    assert exp.fields.lr == 0.01
    assert len(exp.runs) == 3
    with pytest.raises(ExperimentNotFoundError):
        ts.create_experiment().reload()


def test_delete_removes_rows_and_folder(store: Path) -> None:
    exp = sample()
    exp.persist()
    other = ts.create_experiment("other")
    other.fields.d = ts.DataStore(a=1)
    other.persist()
    exp.delete()
    with pytest.raises(ExperimentNotFoundError):
        ts.load_experiment(exp.id)
    assert all(f.startswith(other.id) for f in files_under(store))
    assert [e.name for e in ts.list_experiments()] == ["other"]


def test_list_experiments(store: Path) -> None:
    assert ts.list_experiments() == []
    exp = sample()
    exp.persist()
    (info,) = ts.list_experiments()
    assert (info.id, info.name, info.runs) == (exp.id, "sample", 3)


def test_missing(store: Path) -> None:
    with pytest.raises(ExperimentNotFoundError):
        ts.load_experiment("nope")
    sample().persist()
    with pytest.raises(ExperimentNotFoundError, match="'nope'"):
        ts.load_experiment("nope")


def test_dataStoreio_refuses_experiment_prefixes(store: Path) -> None:
    exp = sample()
    exp.persist()
    for prefix in (exp.id, f"{exp.id}/mine"):
        with pytest.raises(ReservedPrefixError, match="experiment"):
            ts.DataStoreIO.write(b"x", prefix)
        with pytest.raises(ReservedPrefixError):
            ts.DataStoreIO.serialize_write(np.zeros(2), prefix)
    with pytest.raises(ReservedPrefixError):
        ts.DataStoreIO.delete(exp.id)
    assert ts.load_experiment(exp.id).fields.data.note == b"hello"
    # Other prefixes, and ids of experiments not stored, are fine.
    ts.DataStoreIO.write(b"x", "mine")
    ts.DataStoreIO.write(b"x", ts.create_experiment().id)


def test_memory_database(tmp_path: Path) -> None:
    with ts.options.ctx(
        {"database.url": "sqlite:///:memory:", "datastore.url": str(tmp_path / "s")}
    ):
        sample().persist()
        assert ts.load_experiment("sample").fields.lr == 0.01


def test_bad_database_url(store: Path) -> None:
    with ts.options.ctx({"database.url": "postgres://x"}), pytest.raises(DatabaseError):
        sample().persist()


def test_unencodable_field_names_the_field(store: Path) -> None:
    exp = ts.create_experiment()
    exp.fields.f = lambda: 1
    with pytest.raises(ts.errors.EncodeError, match="field 'f'"):
        exp.persist()
    assert ts.list_experiments() == []
    assert not store.exists() or files_under(store) == []


def test_failed_persist_leaves_the_previous_version(store: Path) -> None:
    exp = sample()
    exp.persist()
    before = set(files_under(store))
    exp.fields.data = ts.DataStore(ok=1)
    exp.runs[0].fields.bad = lambda: 1
    with pytest.raises(ts.errors.EncodeError):
        exp.persist(if_exists="replace")
    assert set(files_under(store)) == before
    assert ts.load_experiment(exp.id).fields.data.note == b"hello"


PERSIST_LOOP = textwrap.dedent(
    """
    import sys
    import numpy as np
    import typedstore as ts

    ts.options.set("datastore.url", sys.argv[1])
    ts.options.set("database.url", sys.argv[2])
    exp = ts.load_experiment("crash")
    version = exp.fields.version
    print("ready", flush=True)
    while True:
        version += 1
        exp.fields.version = version
        exp.fields.data = ts.DataStore(a=np.full(20_000, version), b=str(version))
        for run in exp.runs:
            run.fields.data = ts.DataStore(v=np.full(50_000, version))
        exp.persist(if_exists="replace")
    """
)


def check_intact(store: Path, db: str) -> int:
    with ts.options.ctx({"datastore.url": str(store), "database.url": db}):
        exp = ts.load_experiment("crash")
        version = int(exp.fields.version)
        assert np.array_equal(exp.fields.data.a, np.full(20_000, version))
        assert exp.fields.data.b == str(version)
        for run in exp.runs:
            assert np.array_equal(run.fields.data.v, np.full(50_000, version))
    ts.database.close_all()
    return version


def test_persist_survives_sigkill_at_random_moments(tmp_path: Path, database_url: str) -> None:
    store, db = tmp_path / "store", database_url
    with ts.options.ctx({"datastore.url": str(store), "database.url": db}):
        exp = ts.create_experiment("crash")
        exp.fields.version = 0
        exp.fields.data = ts.DataStore(a=np.full(20_000, 0), b="0")
        for _ in range(3):
            with exp.run() as run:
                run.fields.data = ts.DataStore(v=np.full(50_000, 0))
        exp.persist()
    ts.database.close_all()
    rng = random.Random(1234)
    versions = []
    for _ in range(25):
        child = Child(PERSIST_LOOP, str(store), db)
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0, 0.25))
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL
        child.stdout.close()
        versions.append(check_intact(store, db))
    # The kills landed at different points: progress was made and survived each time.
    assert versions == sorted(versions)
    assert versions[-1] > 0
    # Killed persists leave garbage generations; the next persist removes all of them.
    with ts.options.ctx({"datastore.url": str(store), "database.url": db}):
        ts.load_experiment("crash").persist(if_exists="replace")
    assert len({f.split("/")[1] for f in files_under(store)}) == 1
    assert check_intact(store, db) == versions[-1]


# --- untrusted ids and rows ------------------------------------------------------------


@pytest.mark.parametrize("bad", ["models", "../x", "A" * 32, "0" * 31, "", "0" * 32 + "/x"])
def test_ids_are_32_lowercase_hex_digits(store: Path, bad: str) -> None:
    ts.DataStoreIO.write(b"mine", "models")
    with pytest.raises(ValueError, match="32 lowercase hex digits"):
        ts.Experiment(id=bad)
    experiment = ts.create_experiment()
    with pytest.raises(ValueError, match="32 lowercase hex digits"):
        experiment.id = bad
    with pytest.raises(ValueError, match="32 lowercase hex digits"):
        ts.Run(id=bad)
    assert ts.DataStoreIO(next(iter_urls(store, "models"))).read() == b"mine"


def iter_urls(store: Path, prefix: str) -> Iterator[str]:
    for path in sorted((store / prefix).iterdir()):
        yield f"datastore:///{prefix}/{path.name}?codec=raw"


def execute(sql: str, **params: Any) -> None:
    """Change the current database's rows as another program could."""
    with ts.database.transaction() as conn:
        conn.execute(sql, params)


def test_gc_and_load_leave_what_a_crafted_row_names_alone(store: Path) -> None:
    mine = ts.DataStoreIO.write(b"mine", "models").url
    experiment = sample()
    experiment.persist()
    for bad in ("models", "../x"):
        execute(
            "INSERT INTO experiments VALUES (:id, :name, '', '', :generation, '{}')",
            id=bad, name=f"n{bad}", generation="0" * 32,
        )  # fmt: skip
    execute("UPDATE experiments SET generation = 'models' WHERE id = :id", id=experiment.id)
    report = ts.maintenance.collect_garbage(older_than=0)
    assert report.generations == 0
    assert sorted(report.skipped) == [
        "experiment row '../x': not a valid id and generation",
        f"experiment row {experiment.id!r}: not a valid id and generation",
        "experiment row 'models': not a valid id and generation",
    ]
    execute("UPDATE experiments SET generation = :g WHERE id = :id", g="0" * 32, id=experiment.id)
    assert ts.DataStoreIO(mine).read() == b"mine"
    with pytest.raises(DatabaseError, match="malformed id 'models'"):
        ts.load_experiment("nmodels")
    assert ts.load_experiment(experiment.id).fields.lr == 0.01


def test_gc_skips_folders_that_are_not_generations(store: Path) -> None:
    experiment = sample()
    experiment.persist()
    stray = store / experiment.id / "notes"
    stray.mkdir()
    (stray / "keep").write_bytes(b"x")
    report = ts.maintenance.collect_garbage(older_than=0)
    assert report.skipped == (f"{experiment.id}/notes: not a generation folder",)
    experiment.persist(if_exists="replace")
    assert (stray / "keep").read_bytes() == b"x"


NPY_OF_NO_SIZE = (
    b"\x93NUMPY\x01\x00v\x00{'descr': '|V0', 'fortran_order': False, 'shape': (2**40,), }"
    + b" " * 52
    + b"\n"
)

#: Nodes a crafted row could hold for one field: each is that field's error alone.
CRAFTED_NODES: dict[str, Any] = {
    "npy of no size": {"$codec": "npy", "$base64": base64.b64encode(NPY_OF_NO_SIZE).decode()},
    "unknown codec": {"$codec": "nope", "$base64": "eA=="},
    "bad base64": {"$codec": "pickle", "$base64": "!!"},
    "base64 not text": {"$codec": "pickle", "$base64": 1},
    "hostile pickle": {
        "$codec": "pickle",
        "$base64": base64.b64encode(b"cos\nsystem\n(S'true'\ntR.").decode(),
    },
    "unknown tag": {"$eval": "1"},
    "tag among keys": {"$datastore": "datastore:///p/k?codec=raw", "x": 1},
    "datastore not text": {"$datastore": 5},
    "reference outside the store": {"$datastore": "datastore:///../x?codec=raw"},
    "not a reference": {"$datastore": "file:///etc/passwd"},
    "migrated malformed": {"$malformed": "[1e999]"},
}


def stored_document(experiment_id: str) -> dict[str, Any]:
    with ts.database.reading() as conn:
        assert conn is not None
        ((text,),) = conn.execute(
            "SELECT CAST(fields AS TEXT) FROM experiments WHERE id = :id", {"id": experiment_id}
        )
    document: dict[str, Any] = json.loads(text)
    return document


@pytest.mark.parametrize("name", sorted(CRAFTED_NODES))
def test_a_crafted_field_is_a_clear_error_of_that_field(store: Path, name: str) -> None:
    experiment = sample()
    experiment.persist()
    document = stored_document(experiment.id) | {"lr": CRAFTED_NODES[name]}
    execute(
        "UPDATE experiments SET fields = :f WHERE id = :id",
        f=json.dumps(document), id=experiment.id,
    )  # fmt: skip
    loaded = ts.load_experiment(experiment.id)  # the other fields load
    assert loaded.fields.tags == ["a", "b"]
    assert loaded.fields.pair == (1, 2)
    assert set(loaded.fields.unreadable) == {"lr"}
    expected = (DecodeError, DatabaseError, UnknownCodecError, InvalidReferenceError)
    where = f"field 'lr' of experiment '{experiment.name}'"
    with pytest.raises(expected, match=where):
        _ = loaded.fields.lr
    with pytest.raises(expected, match=where):
        dict(loaded.fields)
    assert "lr" in repr(loaded.fields)
    # Persisting the loaded experiment keeps the field as it was stored.
    loaded.fields.note = "added"
    loaded.persist(if_exists="replace")
    again = ts.load_experiment(experiment.id)
    assert set(again.fields.unreadable) == {"lr"}
    assert again.fields.note == "added"
    assert stored_document(experiment.id)["lr"] == CRAFTED_NODES[name]


#: Whole documents a crafted row could hold: loading the experiment is a DatabaseError.
CRAFTED_DOCUMENTS = {
    "deep json": '{"lr":' + "[" * 100_000 + "]" * 100_000 + "}",
    "json infinity": '{"lr":1e999}',
    "not an object": "[1]",
    "duplicate keys": '{"lr":1,"lr":2}',
    "not json": "{lr: 1}",
    "nan": '{"lr":NaN}',
}


@pytest.mark.parametrize("name", sorted(CRAFTED_DOCUMENTS))
def test_a_crafted_document_is_a_clear_error(store: Path, name: str) -> None:
    experiment = sample()
    experiment.persist()
    text = CRAFTED_DOCUMENTS[name]
    try:
        execute("UPDATE experiments SET fields = :f WHERE id = :id", f=text, id=experiment.id)
    except DatabaseError:
        # PostgreSQL's JSON type refuses text that is not JSON: such rows cannot exist.
        assert ts.options.get("database.url").startswith("postgresql")
        assert name in ("not json", "nan", "deep json")
        return
    with pytest.raises(DatabaseError, match=f"experiment '{experiment.name}' has malformed"):
        ts.load_experiment(experiment.id)
    assert [e.name for e in ts.list_experiments()] == [experiment.name]
