"""typedstore: typed serialization of large values, out of the database and back."""

from typedstore import errors, maintenance, mltraq, testing
from typedstore.codecs.safetensors import TensorFile
from typedstore.datastore import DataStore
from typedstore.experiment import (
    Experiment,
    ExperimentInfo,
    Run,
    create_experiment,
    list_experiments,
    load_experiment,
)
from typedstore.io import DataStoreIO
from typedstore.options import Options, options
from typedstore.protocols import Buffer, Codec, Reader, Storage
from typedstore.query import Condition, FoundRun, find_runs
from typedstore.reference import Reference
from typedstore.registry import CodecRegistry, registry
from typedstore.storage import (
    FsspecStorage,
    LocalStorage,
    MemoryStorage,
    register_storage,
    storage_for_url,
)
from typedstore.store import Store, default_store

__all__ = [
    "Buffer",
    "Codec",
    "CodecRegistry",
    "Condition",
    "DataStore",
    "DataStoreIO",
    "Experiment",
    "ExperimentInfo",
    "FoundRun",
    "FsspecStorage",
    "LocalStorage",
    "MemoryStorage",
    "Options",
    "Reader",
    "Reference",
    "Run",
    "Storage",
    "Store",
    "TensorFile",
    "create_experiment",
    "default_store",
    "errors",
    "find_runs",
    "list_experiments",
    "load_experiment",
    "maintenance",
    "mltraq",
    "options",
    "register_storage",
    "registry",
    "storage_for_url",
    "testing",
]

__version__ = "0.1.0"


def __dir__() -> list[str]:
    # Only the public names: submodules imported along the way are not part of the API.
    return sorted([*__all__, "__version__"])
