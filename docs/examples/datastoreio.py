"""Store values one by one with DataStoreIO and read them back."""

import tempfile

import numpy as np

import typedstore as ts

with tempfile.TemporaryDirectory() as root:
    ts.options.set("datastore.url", root)

    # An array needs serialization: the registry picks safetensors for it.
    a = ts.DataStoreIO.serialize_write(np.arange(10.0), relative_path_prefix="exp-data")
    # Bytes are written as they are (faster): codec "raw".
    b = ts.DataStoreIO.write(b"11111", relative_path_prefix="exp-data")
    print(a.url)
    print(b.url)

    # References are strings: keep them in your database, load the values later.
    array = ts.DataStoreIO(a.url).read_deserialize(expected_type=np.ndarray)
    assert np.array_equal(array, np.arange(10.0))
    assert ts.DataStoreIO(b.url).read() == b"11111"

    # You manage DataStoreIO objects yourself, deletion included.
    assert ts.DataStoreIO.delete("exp-data") == 2
    ts.options.reset("datastore.url")
