"""Your own classes (attrs, dataclasses, pydantic models, enums), stored without pickle."""
# needs: pydantic

import dataclasses
import enum
import tempfile

import attrs
import numpy as np
import pydantic
import safetensors.numpy

import typedstore as ts


class Activation(enum.Enum):
    RELU = "relu"
    TANH = "tanh"


@attrs.define
class Layer:
    weight: np.ndarray
    activation: Activation  # registered with Layer: its annotation names it


@dataclasses.dataclass
class Model:
    name: str
    layers: list[Layer]


class Config(pydantic.BaseModel):
    lr: float
    epochs: int


# A stable name (the type id stored with each instance) lets the class move or be renamed.
ts.registry.register_class(Layer, name="example.Layer")
ts.registry.register_class(Model, name="example.Model")
ts.registry.register_class(Config, name="example.Config")

with tempfile.TemporaryDirectory() as root:
    ts.options.set("datastore.url", root)
    model = Model(
        "mlp",
        [
            Layer(np.ones((4, 3), np.float32), Activation.RELU),
            Layer(np.zeros((3, 2), np.float32), Activation.TANH),
        ],
    )
    io = ts.DataStoreIO.serialize_write(model, "models")
    print(io.reference.codec)  # arrays as safetensors tensors, the rest as typed JSON
    back = io.read_deserialize(Model)
    print(back.name, back.layers[1].activation, back.layers[0].weight.shape)

    # Inside a DataStore (and so in an experiment's fields) they go the same way.
    results = ts.DataStore(model=model, config=Config(lr=0.01, epochs=3))
    again = ts.DataStore.from_url(results.to_url("runs"))
    print(again.config, type(again.model).__name__)

    # Each array is a tensor named by its path: any safetensors reader opens the file.
    print(sorted(safetensors.numpy.load(ts.DataStoreIO(io.url).read())))
