"""Two DataStores in the fields of a run: persist, look at the datastore, reload."""

import re
import tempfile
from pathlib import Path

import numpy as np

import typedstore as ts

with tempfile.TemporaryDirectory() as tmp:
    ts.options.set("datastore.url", f"{tmp}/datastore")
    ts.options.set("database.url", f"sqlite:///{tmp}/experiments.db")

    experiment = ts.create_experiment("datastore-example")
    with experiment.run() as run:
        # Each DataStore is stored as one object; put values that are read together in one.
        run.fields.ds1 = ts.DataStore(a=np.array([1, 2, 3]), b=123)
        run.fields.ds2 = ts.DataStore(c="hello")
    experiment.persist()

    print("datastore folder (ids replaced by placeholders):")
    root = Path(tmp, "datastore")
    for path in sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()):
        path = path.replace(experiment.id, "<experiment id>")
        print("  " + re.sub(r"[0-9a-f]{32}(-[0-9a-f]{8})?", "<id>", path))

    experiment = ts.load_experiment("datastore-example")
    for name in ("ds1", "ds2"):
        ds = experiment.runs[0].fields[name]
        for key, value in ds.items():
            print(f"{name}.{key} = {value!r} ({type(value).__name__})")

    experiment.delete()  # rows and datastore folder
    print("folder left after delete:", list(root.iterdir()))
    ts.options.reset()
