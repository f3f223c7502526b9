"""Storages: where stored objects live, chosen from option ``datastore.url``."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from typedstore.errors import StorageError
from typedstore.storage._base import Storage
from typedstore.storage._fsspec import RemoteStorage
from typedstore.storage._local import LocalStorage
from typedstore.storage._memory import BytesReader, MemoryStorage

__all__ = [
    "BytesReader",
    "LocalStorage",
    "MemoryStorage",
    "RemoteStorage",
    "Storage",
    "storage_for_url",
]

_memory: dict[str, MemoryStorage] = {}
_local_storages: dict[tuple[str, bool], LocalStorage] = {}
_resolved: dict[tuple[str, bool, str, str], Storage] = {}
_lock = threading.Lock()


def storage_for_url(
    url: str, *, fsync: bool = False, storage_options: Mapping[str, Any] | None = None
) -> Storage:
    """The storage for a datastore URL.

    A plain path (relative to the current directory) or a ``file://`` URL gives a
    :class:`LocalStorage`; ``memory://NAME`` gives the process-wide
    :class:`MemoryStorage` of that name; any other scheme (``s3://``, ``gs://``,
    ``az://``...) a :class:`RemoteStorage` on fsspec, with ``storage_options`` (needs the
    ``remote`` extra). Instances are shared per URL and options.
    """
    # Every read and write asks for its storage: answer from a cache. A relative path
    # means something else after a chdir, so the current directory is part of the key.
    options_key = (
        ""
        if storage_options is None
        else json.dumps(dict(storage_options), sort_keys=True, default=repr)
    )
    cache_key = (
        url,
        fsync,
        options_key,
        "" if os.path.isabs(url) or "://" in url else os.getcwd(),
    )
    found = _resolved.get(cache_key)
    if found is not None:
        return found
    storage = _make(url, fsync, storage_options)
    with _lock:
        if len(_resolved) > 256:
            _resolved.clear()
        _resolved[cache_key] = storage
    return storage


def _make(url: str, fsync: bool, storage_options: Mapping[str, Any] | None) -> Storage:
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme == "memory":
        name = url[len("memory://") :]
        with _lock:
            return _memory.setdefault(name, MemoryStorage(name))
    if scheme == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise StorageError(f"datastore URL {url!r}: file URLs must name a local path")
        path = unquote(parts.path)
    elif scheme:
        return RemoteStorage(url, storage_options)
    else:
        path = url
    root = os.path.abspath(path)
    with _lock:
        storage = _local_storages.get((root, fsync))
        if storage is None:
            storage = _local_storages[(root, fsync)] = LocalStorage(root, fsync=fsync)
        return storage
