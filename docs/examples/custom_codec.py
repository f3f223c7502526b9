"""A hand-written codec for a class of your own, registered with a decorator."""

import json
import tempfile
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

import typedstore as ts
from typedstore.codecs.safetensors import decode_tensor, encode_tensors, read_header


class LinearModel:
    """A model with weights (arrays) and hyperparameters (plain data)."""

    def __init__(self, coef: np.ndarray, intercept: float, labels: list[str]) -> None:
        self.coef = coef
        self.intercept = intercept
        self.labels = labels


@ts.registry.register
class LinearModelCodec:
    """LinearModel as a safetensors file: weights as tensors, the rest as metadata."""

    name: ClassVar[str] = "example.linear-model"
    version: ClassVar[int] = 1
    types: ClassVar[tuple[type, ...]] = (LinearModel,)

    def accepts(self, value: object) -> bool:
        return type(value) is LinearModel

    def encode(self, value: LinearModel) -> Sequence[ts.Buffer]:
        meta = {"intercept": value.intercept, "labels": value.labels}
        return encode_tensors({"coef": value.coef}, {"model": json.dumps(meta)})

    def decode(self, data: ts.Buffer, expected_type: type[Any] | None = None) -> LinearModel:
        header = read_header(data)
        entries, metadata = header.tensors, header.metadata
        meta = json.loads(metadata["model"])
        return LinearModel(decode_tensor(data, entries["coef"]), meta["intercept"], meta["labels"])


with tempfile.TemporaryDirectory() as root, ts.options.ctx({"datastore.url": root}):
    model = LinearModel(np.array([0.5, -1.0, 2.0]), 0.25, ["a", "b", "c"])
    url = ts.DataStoreIO.serialize_write(model, relative_path_prefix="models").url
    assert url.endswith("?codec=example.linear-model")
    back = ts.DataStoreIO(url).read_deserialize(expected_type=LinearModel)
    assert np.array_equal(back.coef, model.coef)
    assert (back.intercept, back.labels) == (0.25, ["a", "b", "c"])
    print(url)
