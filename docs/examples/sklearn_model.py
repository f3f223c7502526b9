"""A fitted scikit-learn pipeline, stored with the pickle codec and loaded back safely."""
# needs: sklearn

import tempfile

import numpy as np
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import typedstore as ts

X, y = load_iris(return_X_y=True)
labels = np.array(["setosa", "versicolor", "virginica"])[y]
model = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=10, random_state=0))
model.fit(X, labels)

# The classes the pickle may build. Classes with a __setstate__ of their own (every
# estimator) and extension types (a tree's Tree) are named exactly: a glob is not enough.
ts.options.set(
    "codecs.pickle.allow",
    [
        "sklearn.pipeline.Pipeline",
        "sklearn.preprocessing._data.StandardScaler",
        "sklearn.ensemble._forest.RandomForestClassifier",
        "sklearn.tree._classes.DecisionTreeClassifier",
        "sklearn.tree._tree.Tree",
    ],
)

with tempfile.TemporaryDirectory() as root:
    ts.options.set("datastore.url", root)
    io = ts.DataStoreIO.serialize_write(model, "models")
    print(io.reference.codec)  # the weights went beside the pickle, as .npy
    loaded = io.read_deserialize()
    print(type(loaded).__name__, bool((loaded.predict(X) == model.predict(X)).all()))

    # Without the allowance, loading refuses, naming the class: nothing runs.
    ts.options.reset("codecs.pickle.allow")
    try:
        io.read_deserialize()
    except ts.errors.UnsafeDataError as exc:
        print("refused:", str(exc).split(",")[0])
