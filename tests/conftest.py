"""Shared fixtures: every test gets its own store in a temporary directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

import typedstore as ts
from typedstore import database
from typedstore.testing import postgres

# Shared CI machines are noisy: no per-example deadline, fewer examples unless asked.
settings.register_profile(
    "default",
    deadline=None,
    max_examples=int(os.environ.get("TYPEDSTORE_EXAMPLES", "100")),
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.load_profile("default")


@pytest.fixture(autouse=True)
def _fresh_options() -> Iterator[None]:
    ts.options.reset()
    yield
    ts.options.reset()
    database.close_all()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Path]:
    """A datastore root and a database in a temporary directory, set as the options."""
    root = tmp_path / "store"
    with ts.options.ctx(
        {"datastore.url": str(root), "database.url": f"sqlite:///{tmp_path / 'test.db'}"}
    ):
        yield root


@pytest.fixture
def unchecked(store: Path) -> Path:
    """The store, writing objects with no checksum: for tests that craft hostile bytes in
    place, to reach the decoders (a checksum would refuse the bytes first)."""
    ts.options.set("datastore.checksum", None)
    return store


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server on loopback for the whole session (its URL, without a database)."""
    pytest.importorskip("pgserver", reason="the PostgreSQL tests need the test extra")
    with postgres.postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty experiments database: an SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return postgres.new_database(request.getfixturevalue("postgres_server"))
