"""Self-managed writes with DataStoreIO: serialize one value, write bytes as they are."""

import tempfile

import numpy as np

import typedstore as ts

with tempfile.TemporaryDirectory() as tmp:
    ts.options.set("datastore.url", f"{tmp}/datastore")
    ts.options.set("database.url", f"sqlite:///{tmp}/experiments.db")

    # The prefix must differ from any experiment id: persist() and delete() manage those.
    prefix = "my-own-values"
    a = ts.DataStoreIO.serialize_write(np.arange(6).reshape(2, 3), prefix, codec="safetensors")
    b = ts.DataStoreIO.write(b"11111", prefix)  # bytes skip serialization: faster
    print("codecs:", a.reference.codec, b.reference.codec)

    # The references are what you keep; the values come back from them.
    print(ts.DataStoreIO(a.url).read_deserialize(np.ndarray))
    print(ts.DataStoreIO(b.url).read())

    # You manage these objects yourself, deletion included.
    print("deleted:", ts.DataStoreIO.delete(prefix))
    ts.options.reset()
