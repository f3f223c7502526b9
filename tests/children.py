"""Child processes for the crash, fault and concurrency tests.

Each child is a new process, killed and reaped like any other, but forked from a server
that has already imported numpy and typedstore: the tests start hundreds of children,
and importing those afresh in each would be most of their cost.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from typing import IO

_context = multiprocessing.get_context("forkserver")
# The server imports these once (those not installed are skipped); every child starts
# from that state.
_context.set_forkserver_preload(
    [
        "numpy",
        "typedstore",
        "sqlite3",
        "sqlalchemy.dialects.postgresql.psycopg",
        "psycopg",
        "children",
    ]
)


class Child:
    """``python -c code *args`` in a new process, with pipes for its standard streams:
    the part of :class:`subprocess.Popen` the tests use."""

    def __init__(self, code: str, *args: str) -> None:
        stdin_r, stdin_w = _context.Pipe(duplex=False)
        stdout_r, stdout_w = _context.Pipe(duplex=False)
        stderr_r, stderr_w = _context.Pipe(duplex=False)
        self._process = _context.Process(
            target=_run, args=(code, args, stdin_r, stdout_w, stderr_w), daemon=True
        )
        self._process.start()
        for end in (stdin_r, stdout_w, stderr_w):
            end.close()
        assert self._process.pid is not None  # set by start()
        self.pid = self._process.pid
        self.stdin: IO[str] = _text(stdin_w, "w")
        self.stdout: IO[str] = _text(stdout_r, "r")
        # Drained from the start: a child that fills the pipe with warnings must not stall.
        self._stderr: list[str] = []
        self._drain = threading.Thread(target=_read, args=(_text(stderr_r, "r"), self._stderr))
        self._drain.start()

    @property
    def returncode(self) -> int | None:
        """The exit status once the child has ended: negative for a signal, as Popen's."""
        return self._process.exitcode

    def communicate(self, input: str = "", timeout: float | None = None) -> tuple[str, str]:
        """Send ``input``, then wait for the end and return the rest of stdout and stderr."""
        rest: list[str] = []
        reader = threading.Thread(target=_read, args=(self.stdout, rest))
        reader.start()
        self._send(input)
        self._process.join(timeout)
        if self._process.exitcode is None:
            self._process.kill()
            self._process.join()
            raise subprocess.TimeoutExpired(["python", "-c", "..."], timeout or 0)
        reader.join()
        self._drain.join()
        return "".join(rest), "".join(self._stderr)

    def wait(self) -> int:
        """Wait for the end and return the exit status."""
        self._send("")
        self._process.join()
        self._drain.join()
        assert self._process.exitcode is not None
        return self._process.exitcode

    def _send(self, input: str) -> None:
        if self.stdin.closed:
            return
        try:
            with self.stdin:
                self.stdin.write(input)
        except BrokenPipeError:
            pass  # the child has ended without reading it


def _read(stream: IO[str], into: list[str]) -> None:
    with stream:
        into.append(stream.read())


def _text(end: Connection, mode: str) -> IO[str]:
    stream = open(os.dup(end.fileno()), mode)  # noqa: SIM115 - the caller closes it
    end.close()
    return stream


def _run(code: str, args: tuple[str, ...], *ends: Connection) -> None:
    for fd, end in enumerate(ends):
        os.dup2(end.fileno(), fd)
        end.close()
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - multiprocessing set it to devnull
    sys.argv = ["-c", *args]
    exec(compile(code, "<string>", "exec"), {"__name__": "__main__"})
