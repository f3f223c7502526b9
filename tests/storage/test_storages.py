"""The storage conformance suite (typedstore.testing.storage), run on each storage here;
the S3 run is in test_s3.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from typedstore.protocols import Storage
from typedstore.storage import LocalStorage, MemoryStorage
from typedstore.testing.storage import StorageTests


class TestLocalStorage(StorageTests):
    def make_storage(self, tmp_path: Path) -> Storage:
        return LocalStorage(tmp_path / "root")


class TestLocalStorageFsync(StorageTests):
    def make_storage(self, tmp_path: Path) -> Storage:
        return LocalStorage(tmp_path / "root", fsync=True)


class TestLocalStorageNamedTemporaries(StorageTests):
    """Where the platform has no O_TMPFILE (as on macOS): named temporary files."""

    def make_storage(self, tmp_path: Path) -> Storage:
        with pytest.MonkeyPatch.context() as patch:
            patch.delattr(os, "O_TMPFILE", raising=False)
            return LocalStorage(tmp_path / "root")


class TestMemoryStorage(StorageTests):
    def make_storage(self, tmp_path: Path) -> Storage:
        return MemoryStorage(f"test-{tmp_path.name}")
