"""typedstore: typed serialization of large values, out of the database and back."""

from __future__ import annotations

from typedstore import errors, maintenance
from typedstore.codec import Buffer, Codec
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
from typedstore.reference import Reference
from typedstore.registry import CodecRegistry, registry
from typedstore.storage import LocalStorage, MemoryStorage, Storage

__all__ = [
    "Buffer",
    "Codec",
    "CodecRegistry",
    "DataStore",
    "DataStoreIO",
    "Experiment",
    "ExperimentInfo",
    "LocalStorage",
    "MemoryStorage",
    "Options",
    "Reference",
    "Run",
    "Storage",
    "create_experiment",
    "errors",
    "list_experiments",
    "load_experiment",
    "maintenance",
    "options",
    "registry",
]

__version__ = "0.1.0"
