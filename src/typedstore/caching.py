"""Caches for pure functions, kept beside the logic they speed up.

Two shapes: :func:`cache_by_bytes` for functions of a header's bytes and the size of its
file, bounded by the bytes kept, and :func:`cache_by_identity` for values derived from
an immutable object, kept as long as that object lives. Their bounds are in
:mod:`typedstore.policy`.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["ByBytes", "cache_by_bytes", "cache_by_identity"]

R = TypeVar("R")
K = TypeVar("K")


class ByBytes(Generic[R]):
    """A function of ``(raw, size)`` with its results for recent small ``raw``."""

    def __init__(self, function: Callable[[bytes, int], R], *, max_item: int, max_total: int):
        functools.update_wrapper(self, function)
        self._function = function
        self._max_item = max_item
        self._max_total = max_total
        self._results: dict[tuple[bytes, int], R] = {}
        self._total = 0
        self._lock = threading.Lock()

    def __call__(self, raw: bytes, size: int) -> R:
        if len(raw) > self._max_item:
            return self._function(raw, size)
        key = (raw, size)
        found = self._results.get(key)  # no lock: a dict lookup is atomic
        if found is not None:
            return found
        result = self._function(raw, size)
        with self._lock:
            if key not in self._results:
                self._results[key] = result
                self._total += len(raw)
                while self._total > self._max_total:
                    old, _ = oldest = next(iter(self._results))
                    del self._results[oldest]
                    self._total -= len(old)
        return result

    @property
    def kept(self) -> int:
        """How many bytes of input the cache holds."""
        return self._total

    def cache_clear(self) -> None:
        """Forget every result."""
        with self._lock:
            self._results.clear()
            self._total = 0


def cache_by_bytes(
    *, max_item: int, max_total: int
) -> Callable[[Callable[[bytes, int], R]], ByBytes[R]]:
    """Keep the results of a pure function of ``(raw, size)`` for ``raw`` of up to
    ``max_item`` bytes, the oldest dropped past ``max_total`` bytes in all (first in,
    first out: a hit costs one dict lookup).

    Results are shared between callers, so they must be immutable.
    """

    def decorate(function: Callable[[bytes, int], R]) -> ByBytes[R]:
        return ByBytes(function, max_item=max_item, max_total=max_total)

    return decorate


def cache_by_identity(function: Callable[[K], R]) -> Callable[[K], R]:
    """Keep the result of a pure function of one immutable, weakly referenceable object
    for as long as that object lives. Results are shared, so they must be immutable."""
    # By id, not in a WeakKeyDictionary, whose every lookup makes a weak reference: an
    # entry goes when its object dies, so an id is never found for another object.
    results: dict[int, R] = {}

    @functools.wraps(function)
    def cached(value: K) -> R:
        found = results.get(id(value), _MISSING)
        if found is not _MISSING:
            return found  # type: ignore[no-any-return]
        result = function(value)
        results[id(value)] = result
        weakref.finalize(value, results.pop, id(value), None)
        return result

    return cached


_MISSING: Any = object()
