"""Storages: where stored objects live, chosen from option ``datastore.url``."""

from __future__ import annotations

import os
import threading
from urllib.parse import unquote, urlsplit

from typedstore.errors import StorageError
from typedstore.storage._base import Storage
from typedstore.storage._local import LocalStorage
from typedstore.storage._memory import BytesReader, MemoryStorage

__all__ = ["BytesReader", "LocalStorage", "MemoryStorage", "Storage", "storage_for_url"]

_memory: dict[str, MemoryStorage] = {}
_local: dict[tuple[str, bool], LocalStorage] = {}
_resolved: dict[tuple[str, bool, str], Storage] = {}
_lock = threading.Lock()


def storage_for_url(url: str, *, fsync: bool = False) -> Storage:
    """The storage for a datastore URL.

    A plain path (relative to the current directory) or a ``file://`` URL gives a
    :class:`LocalStorage`; ``memory://NAME`` gives the process-wide
    :class:`MemoryStorage` of that name. Instances are shared per URL.
    """
    # Every read and write asks for its storage: answer from a cache. A relative path
    # means something else after a chdir, so the current directory is part of the key.
    cache_key = (url, fsync, "" if os.path.isabs(url) or "://" in url else os.getcwd())
    found = _resolved.get(cache_key)
    if found is not None:
        return found
    storage = _make(url, fsync)
    with _lock:
        if len(_resolved) > 256:
            _resolved.clear()
        _resolved[cache_key] = storage
    return storage


def _make(url: str, fsync: bool) -> Storage:
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
        raise StorageError(
            f"datastore URL {url!r}: unsupported scheme {scheme!r} "
            "(supported: a local path, file://, memory://)"
        )
    else:
        path = url
    root = os.path.abspath(path)
    with _lock:
        storage = _local.get((root, fsync))
        if storage is None:
            storage = _local[(root, fsync)] = LocalStorage(root, fsync=fsync)
        return storage
