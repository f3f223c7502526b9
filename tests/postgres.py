"""A real PostgreSQL server for the tests, on loopback, from the pgserver package's binaries."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

#: PostgreSQL refuses to run as root: then the server runs as this unprivileged user.
UNPRIVILEGED = "nobody"


def _bindir() -> Path:
    pgserver = pytest.importorskip("pgserver", reason="the PostgreSQL tests need the test extra")
    return Path(pgserver.__file__).parent / "pginstall" / "bin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a PostgreSQL server on 127.0.0.1 in a temporary directory; yield its URL."""
    bindir = _bindir()
    user = UNPRIVILEGED if os.geteuid() == 0 else None
    # Not under pytest's own temporary directory, which only its owner may enter.
    data = Path(tempfile.mkdtemp(prefix="typedstore-pg-"))
    if user is not None:
        shutil.chown(data, user)

    def run(*args: str) -> None:
        result = subprocess.run(
            [str(bindir / args[0]), *args[1:]],
            user=user,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=data,
        )
        if result.returncode != 0:
            log = data / "log"
            raise RuntimeError(
                f"{args[0]} failed ({result.returncode}): {result.stderr.strip()}\n"
                + (log.read_text() if log.exists() else "")
            )

    port = _free_port()
    cluster = data / "cluster"
    try:
        run("initdb", "-D", str(cluster), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--no-sync")  # fmt: skip
        # fsync off: the server's own durability is not what these tests check.
        options = f"-h 127.0.0.1 -p {port} -k {data} -F -c max_connections=200"
        run("pg_ctl", "-D", str(cluster), "-o", options, "-l", str(data / "log"), "-w", "start")
    except BaseException:
        shutil.rmtree(data, ignore_errors=True)
        raise
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        try:
            run("pg_ctl", "-D", str(cluster), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(data, ignore_errors=True)


def new_database(server: str) -> str:
    """A new, empty database on ``server``; its URL."""
    import sqlalchemy

    name = f"t{uuid.uuid4().hex}"
    engine = sqlalchemy.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return f"{server}/{name}"
