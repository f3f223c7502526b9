"""Storages by URL scheme: a table of built-in and registered implementations."""

from __future__ import annotations

import importlib
import json
import os
import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import attrs

from typedstore.errors import RegistrationError, StorageError
from typedstore.policy import CACHED_STORAGES
from typedstore.protocols import Storage

__all__ = ["StorageFactory", "known_storages", "register_storage", "storage_for_url"]


class StorageFactory(Protocol):
    """Makes the storage for a datastore URL of one scheme."""

    def __call__(self, url: str, *, fsync: bool, storage_options: Mapping[str, Any]) -> Storage:
        """The storage for ``url`` (its scheme is the one registered)."""
        ...


@attrs.frozen
class _Implementation:
    #: A factory, or ``"module:name"`` of one, imported on first use.
    target: StorageFactory | str
    #: What to install when the import fails.
    hint: str = ""


_REMOTE_HINT = "remote datastores need the 'remote' extra: pip install 'typedstore[remote]'"
_FSSPEC = _Implementation("typedstore.storage._registry:fsspec_storage", _REMOTE_HINT)
_implementations: dict[str, _Implementation] = {
    "": _Implementation("typedstore.storage._registry:local_storage"),
    "file": _Implementation("typedstore.storage._registry:local_storage"),
    "memory": _Implementation("typedstore.storage._registry:memory_storage"),
    **dict.fromkeys(("s3", "gs", "gcs", "az", "abfs", "abfss"), _FSSPEC),
}
_targets = {scheme: implementation.target for scheme, implementation in _implementations.items()}
_lock = threading.Lock()

#: The schemes with a storage, read-only: each maps to its factory or ``"module:name"``
#: (the empty scheme is a plain path). Other schemes go to fsspec, which may know them.
known_storages: Mapping[str, StorageFactory | str] = MappingProxyType(_targets)


def register_storage(
    scheme: str, factory: StorageFactory | str, *, replace: bool = False, hint: str = ""
) -> None:
    """Use ``factory`` for datastore URLs ``scheme://...``.

    ``factory`` is a :class:`StorageFactory` or the ``"module:name"`` of one, imported
    the first time such a URL is used (``hint`` says what to install if that fails).
    Raises RegistrationError for a scheme already taken, unless ``replace``.
    """
    if not scheme.isascii() or not scheme.replace("+", "").replace("-", "").isalnum():
        raise RegistrationError(f"invalid URL scheme {scheme!r}")
    with _lock:
        if scheme in _implementations and not replace:
            raise RegistrationError(
                f"scheme {scheme!r} already has a storage ({_implementations[scheme].target!r}); "
                "pass replace=True to replace it"
            )
        _implementations[scheme] = _Implementation(factory, hint)
        _targets[scheme] = factory
        _storages.clear()


def storage_for_url(
    url: str, *, fsync: bool = False, storage_options: Mapping[str, Any] | None = None
) -> Storage:
    """The storage for a datastore URL: a path (relative to the current directory) or
    ``file://`` URL, ``memory://NAME``, or a remote URL (``s3://``...) on fsspec.

    Storages are shared: equal URLs and options give the same instance.
    """
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme == "":
        url = os.path.abspath(url)  # a relative path means another place after a chdir
    options = dict(storage_options or {})
    # The options are keyed by their JSON (repr for other values), but the factory gets
    # them as they are: a session or config object must reach fsspec intact.
    key = (scheme, url, fsync, json.dumps(options, sort_keys=True, default=repr))
    found = _storages.get(key)
    if found is None:
        found = _make(scheme, url, fsync, options)
        with _lock:
            if len(_storages) >= CACHED_STORAGES:
                _storages.clear()
            found = _storages.setdefault(key, found)
    return found


# Storages hold open folders and connections: one per URL and options, reused.
_storages: dict[tuple[str, str, bool, str], Storage] = {}


def _make(scheme: str, url: str, fsync: bool, storage_options: dict[str, Any]) -> Storage:
    implementation = _implementations.get(scheme, _FSSPEC)
    factory = implementation.target
    if isinstance(factory, str):
        module, _, name = factory.partition(":")
        try:
            factory = getattr(importlib.import_module(module), name)
        except ImportError as exc:
            raise StorageError(f"datastore URL {url!r}: {implementation.hint or exc}") from exc
    made = factory(url, fsync=fsync, storage_options=storage_options)
    if not isinstance(made, Storage):
        raise StorageError(f"the storage factory for {scheme!r} URLs made {made!r}, not a Storage")
    return made


def local_storage(url: str, *, fsync: bool, storage_options: Mapping[str, Any]) -> Storage:
    """A :class:`LocalStorage` for a path or ``file://`` URL."""
    from typedstore.storage._local import LocalStorage

    if url.startswith("file:"):
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise StorageError(f"datastore URL {url!r}: file URLs must name a local path")
        url = os.path.abspath(unquote(parts.path))
    return LocalStorage(url, fsync=fsync)


_memory: dict[str, Storage] = {}


def memory_storage(url: str, *, fsync: bool, storage_options: Mapping[str, Any]) -> Storage:
    """The process-wide :class:`MemoryStorage` named by ``memory://NAME``."""
    from typedstore.storage._memory import MemoryStorage

    name = url[len("memory://") :]
    with _lock:
        return _memory.setdefault(name, MemoryStorage(name))


def fsspec_storage(url: str, *, fsync: bool, storage_options: Mapping[str, Any]) -> Storage:
    """An :class:`FsspecStorage` (needs the ``remote`` extra)."""
    from typedstore.storage._fsspec import FsspecStorage

    return FsspecStorage(url, storage_options)
