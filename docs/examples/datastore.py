"""Many values of different types in one DataStore, one reference, back exactly."""

import tempfile

import attrs
import numpy as np

import typedstore as ts


@ts.registry.register_class
@attrs.define
class LinearModel:
    """A custom model class: stored without pickle by the tree codec."""

    coef: np.ndarray
    intercept: float
    labels: list[str]


with tempfile.TemporaryDirectory() as root, ts.options.ctx({"datastore.url": root}):
    ds = ts.DataStore()
    ds.weights = np.zeros((10, 10))
    ds.model = LinearModel(np.ones(3), 0.0, ["a", "b", "c"])
    ds.note = b"raw bytes"
    ds.params = {"lr": 0.001, "epochs": 3}

    url = ds.to_url(relative_path_prefix="exp-42")  # one object, one reference
    print(url)

    back = ts.DataStore.from_url(url)  # every value, each decoded by its own codec
    assert np.array_equal(back.weights, ds.weights)
    assert back.model.labels == ["a", "b", "c"]

    lazy = ts.DataStore.from_url(url, lazy=True)  # keys now, values when first touched
    assert sorted(lazy) == ["model", "note", "params", "weights"]
    assert lazy.note == b"raw bytes"  # reads just this entry's bytes
    print(lazy)
