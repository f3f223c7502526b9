"""Runs computed in worker processes return the DataStoreIOs the workers wrote."""

import tempfile
from concurrent.futures import ProcessPoolExecutor

import numpy as np

import typedstore as ts


def train(store: ts.Store, seed: int) -> ts.DataStoreIO:
    weights = np.random.default_rng(seed).normal(size=(4, 3))
    return ts.DataStoreIO.serialize_write(weights, "weights", store=store)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as root:
        store = ts.Store(root)  # pickles as its URL and settings
        with ProcessPoolExecutor(2) as pool:
            results = list(pool.map(train, [store] * 4, range(4)))
        print([io.read_deserialize().shape for io in results])
