"""Storages: where stored objects live, chosen from option ``datastore.url``."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

from typedstore.errors import StorageError
from typedstore.storage._base import Storage
from typedstore.storage._local import LocalStorage
from typedstore.storage._memory import BytesReader, MemoryStorage

__all__ = ["BytesReader", "LocalStorage", "MemoryStorage", "Storage", "storage_for_url"]

_memory: dict[str, MemoryStorage] = {}
_local: dict[tuple[str, bool], LocalStorage] = {}
_lock = threading.Lock()


def storage_for_url(url: str, *, fsync: bool = False) -> Storage:
    """The storage for a datastore URL.

    A plain path (relative to the current directory) or a ``file://`` URL gives a
    :class:`LocalStorage`; ``memory://NAME`` gives the process-wide
    :class:`MemoryStorage` of that name. Instances are shared per URL.
    """
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme == "memory":
        name = url[len("memory://") :]
        with _lock:
            return _memory.setdefault(name, MemoryStorage(name))
    if scheme == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise StorageError(f"datastore URL {url!r}: file URLs must name a local path")
        path = Path(unquote(parts.path))
    elif scheme:
        raise StorageError(
            f"datastore URL {url!r}: unsupported scheme {scheme!r} "
            "(supported: a local path, file://, memory://)"
        )
    else:
        path = Path(url)
    root = str(Path(os.path.abspath(path)))
    with _lock:
        storage = _local.get((root, fsync))
        if storage is None:
            storage = _local[(root, fsync)] = LocalStorage(root, fsync=fsync)
        return storage
