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
from helpers import store_in_worker


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
