"""A throwaway PostgreSQL server on loopback, for tests and benchmarks of a team set-up.

    from typedstore.testing.postgres import new_database, postgres_server

    with postgres_server() as server:
        ts.options.set("database.url", new_database(server))

It runs the PostgreSQL binaries of the ``pgserver`` package (in the test extra), as an
unprivileged user when the caller is root, which PostgreSQL refuses to run as.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["new_database", "postgres_server"]

#: PostgreSQL refuses to run as root: then the server runs as this unprivileged user.
UNPRIVILEGED = "nobody"


def _bindir() -> Path:
    # Found, not imported: importing pgserver sets up its own server machinery.
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("a PostgreSQL server for tests needs pgserver: pip install pgserver")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a PostgreSQL server on 127.0.0.1 in a temporary directory; yield its URL
    (``postgresql+psycopg://postgres@127.0.0.1:PORT``, no database); stop and remove it
    when the block ends."""
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
