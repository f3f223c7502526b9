"""A store against a plain dict model: random sequences of writes, reads, lazy reads,
prefix deletes and DataStores, on each kind of storage."""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import typedstore as ts
from helpers import plain
from typedstore.testing import equal

PREFIXES = st.sampled_from(["a", "b", "a/c", "a/c/d"])
ARRAYS = hnp.arrays(
    st.sampled_from(["<f8", "<i4", "|u1", "|b1", "<f2"]),
    hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
)
VALUES = st.one_of(ARRAYS, plain, st.binary(max_size=64))
ENTRIES = st.dictionaries(
    st.text("abcdefgh", min_size=1, max_size=4), VALUES | ARRAYS, min_size=1, max_size=5
)


class StoreModel(RuleBasedStateMachine):
    """The store must always hold exactly what the model says it wrote."""

    def __init__(self) -> None:
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="typedstore-stateful-")
        self.store = ts.Store(storage=self.make_storage(self.root))
        #: key -> (reference, value, what): raw bytes, a value, or a DataStore's entries.
        self.model: dict[str, tuple[ts.Reference, Any, str]] = {}

    def make_storage(self, root: str) -> ts.Storage:
        raise NotImplementedError

    @staticmethod
    def pick(data: st.DataObject, keys: list[str]) -> str:
        # By position in the order of writing: keys are random, so the draw must not
        # depend on their values for hypothesis to replay and shrink a failure.
        return keys[data.draw(st.integers(0, len(keys) - 1))]

    def teardown(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    @rule(data=st.binary(max_size=256), prefix=PREFIXES)
    def write(self, data: bytes, prefix: str) -> None:
        ref = self.store.write(data, prefix)
        self.model[ref.key] = (ref, data, "raw")

    @rule(value=VALUES, prefix=PREFIXES)
    def serialize(self, value: Any, prefix: str) -> None:
        ref = self.store.serialize_write(value, prefix)
        self.model[ref.key] = (ref, value, "value")

    @rule(entries=ENTRIES, prefix=PREFIXES)
    def store_datastore(self, entries: dict[str, Any], prefix: str) -> None:
        url = ts.DataStore(entries).to_url(prefix, store=self.store)
        ref = ts.Reference.parse(url)
        self.model[ref.key] = (ref, entries, "datastore")

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        ref, value, what = self.model[self.pick(data, list(self.model))]
        if what == "raw":
            assert self.store.read(ref) == value
            assert self.store.read_deserialize(ref) == value
        elif what == "value":
            assert equal(self.store.read_deserialize(ref), value)
        else:
            back = ts.DataStore.from_url(ref.url, store=self.store)
            assert equal(dict(back), value)

    @precondition(lambda self: any(what == "datastore" for _, _, what in self.model.values()))
    @rule(data=st.data())
    def read_lazily(self, data: st.DataObject) -> None:
        keys = [k for k, (_, _, what) in self.model.items() if what == "datastore"]
        ref, entries, _ = self.model[self.pick(data, keys)]
        lazy = ts.DataStore.from_url(ref.url, lazy=True, store=self.store)
        assert list(lazy) == list(entries)
        name = data.draw(st.sampled_from(sorted(entries)))
        assert equal(lazy[name], entries[name])
        assert equal(dict(lazy.items()), entries)

    @rule(prefix=PREFIXES)
    def delete_prefix(self, prefix: str) -> None:
        doomed = [key for key in self.model if key.startswith(prefix + "/")]
        assert self.store.delete(prefix) == len(doomed)
        for key in doomed:
            del self.model[key]

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete_object(self, data: st.DataObject) -> None:
        key = self.pick(data, list(self.model))
        assert self.store.delete(key) == 1
        del self.model[key]
        assert not self.store.exists(key)

    @invariant()
    def holds_exactly_the_model(self) -> None:
        assert list(self.store.storage.list()) == sorted(self.model)


class LocalModel(StoreModel):
    def make_storage(self, root: str) -> ts.Storage:
        return ts.LocalStorage(root)


class MemoryModel(StoreModel):
    def make_storage(self, root: str) -> ts.Storage:
        return ts.MemoryStorage(root)


SETTINGS = settings(max_examples=25, stateful_step_count=30, deadline=None)
TestLocalStorageAgainstAModel = SETTINGS(LocalModel).TestCase
TestMemoryStorageAgainstAModel = SETTINGS(MemoryModel).TestCase
