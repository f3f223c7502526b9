"""Storages: where stored objects live, chosen by the scheme of option ``datastore.url``."""

from typedstore.storage._fsspec import FsspecStorage
from typedstore.storage._local import LocalStorage
from typedstore.storage._memory import MemoryStorage
from typedstore.storage._registry import (
    StorageFactory,
    known_storages,
    register_storage,
    storage_for_url,
)

__all__ = [
    "FsspecStorage",
    "LocalStorage",
    "MemoryStorage",
    "StorageFactory",
    "known_storages",
    "register_storage",
    "storage_for_url",
]
