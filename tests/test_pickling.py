"""References, DataStoreIOs and stores travel to and from other processes."""

from __future__ import annotations

import copy
import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import typedstore as ts
from helpers import datastore_in_worker, store_in_worker


def test_references_pickle_and_copy() -> None:
    ref = ts.Reference.parse(f"datastore:///p/abc?codec=raw&sha256={'0' * 64}")
    for back in (pickle.loads(pickle.dumps(ref)), copy.deepcopy(ref), copy.copy(ref)):
        assert back == ref
        assert back.params == {"sha256": "0" * 64}


def test_datastoreio_in_the_default_store_pickles_as_its_reference(store: Path) -> None:
    io = ts.DataStoreIO.serialize_write(np.arange(4), "p")
    for back in (pickle.loads(pickle.dumps(io)), copy.deepcopy(io)):
        assert back.reference == io.reference
        assert np.array_equal(back.read_deserialize(), np.arange(4))


def test_a_store_of_its_own_travels_with_its_objects(tmp_path: Path) -> None:
    store = ts.Store(str(tmp_path / "own"), settings={"datastore.checksum": "sha256"})
    io = ts.DataStoreIO.serialize_write(np.arange(3), "p", store=store)
    back = pickle.loads(pickle.dumps(io))
    assert back.store.url == store.url
    assert back.store.settings["datastore.checksum"] == "sha256"
    assert np.array_equal(back.read_deserialize(), np.arange(3))
    memory = ts.Store(storage=ts.MemoryStorage())
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(ts.DataStoreIO.serialize_write(b"x", "p", store=memory))


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_workers_return_objects_they_wrote(tmp_path: Path, method: str) -> None:
    store = ts.Store(str(tmp_path / "shared"))
    context = multiprocessing.get_context(method)
    with ProcessPoolExecutor(2, mp_context=context) as pool:
        ios = list(pool.map(store_in_worker, [store] * 4, range(4)))
    for i, io in enumerate(ios):
        assert np.array_equal(io.read_deserialize(), np.full(3, i))
    assert len({io.reference.key for io in ios}) == 4


def test_joblib_loky_workers_return_objects_they_wrote(tmp_path: Path) -> None:
    joblib = pytest.importorskip("joblib")
    store = ts.Store(str(tmp_path / "shared"))
    with joblib.parallel_config(backend="loky", n_jobs=2):
        ios = joblib.Parallel()(joblib.delayed(store_in_worker)(store, i) for i in range(4))
    assert [int(io.read_deserialize()[0]) for io in ios] == [0, 1, 2, 3]


@pytest.mark.parametrize("method", ["spawn", "fork", "loky"])
def test_runs_computed_in_workers_persist_with_their_datastores(
    store: Path, method: str
) -> None:
    settings = {"datastore.url": str(store)}  # spawned workers start with default options
    # Set for the process: a pool unpickles results in a thread of its own, which does not
    # see the fixture's options.ctx (contextvars are per thread).
    ts.options.set("datastore.url", str(store))
    if method == "loky":
        joblib = pytest.importorskip("joblib")
        with joblib.parallel_config(backend="loky", n_jobs=2):
            jobs = (joblib.delayed(datastore_in_worker)(settings, i) for i in range(4))
            results = joblib.Parallel()(jobs)
    else:
        context = multiprocessing.get_context(method)
        with ProcessPoolExecutor(2, mp_context=context) as pool:
            results = list(pool.map(datastore_in_worker, [settings] * 4, range(4)))
    experiment = ts.create_experiment("parallel")
    for result in results:
        with experiment.run() as run:
            run.fields.outputs = result
    experiment.persist()
    loaded = ts.load_experiment("parallel")
    for i, run in enumerate(loaded.runs):
        assert np.array_equal(run.fields.outputs.weights, np.full(3, i))
        assert run.fields.outputs.score == i / 10
