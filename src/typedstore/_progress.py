"""Progress bars (tqdm) on stderr, only where a person is watching."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Protocol

from typedstore.options import options

__all__ = ["Progress", "progress"]


class Progress(Protocol):
    """What callers may do with a progress bar."""

    def update(self, n: int = 1) -> object:
        """Advance the bar by ``n`` units."""
        ...


class _Silent:
    def update(self, n: int = 1) -> object:
        return None


@contextlib.contextmanager
def progress(
    total: int, description: str, *, unit: str = "it", minimum: int = 0, leave: bool = False
) -> Iterator[Progress]:
    """A tqdm bar on stderr when option ``progress`` is on, stderr is a terminal and
    ``total`` reaches ``minimum``; otherwise a bar that shows nothing. ``leave`` keeps the
    finished bar, with its final rate, on screen."""
    if not options.get("progress") or total < minimum or not sys.stderr.isatty():
        yield _Silent()
        return
    from tqdm import tqdm

    scale = unit == "B"
    with tqdm(
        total=total,
        desc=description,
        unit=unit,
        unit_scale=scale,
        unit_divisor=1024 if scale else 1000,
        file=sys.stderr,
        leave=leave,
    ) as bar:
        yield bar
