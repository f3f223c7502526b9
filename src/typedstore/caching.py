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
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["ByBytes", "cache_by_bytes", "cache_by_identity"]

R = TypeVar("R")
K = TypeVar("K")
R_co = TypeVar("R_co", covariant=True)


class ByBytes(Protocol[R_co]):
    """A function of ``(raw, size)`` with its results for recent small ``raw``."""

    def __call__(self, raw: bytes, size: int) -> R_co: ...

    def kept_bytes(self) -> int:
        """How many bytes of input the cache holds."""
        ...

    def cache_clear(self) -> None:
        """Forget every result."""
        ...


class _Kept(Generic[R]):
    """The results and their size, shared by a cached function and its methods."""

    def __init__(self) -> None:
        self.results: dict[tuple[bytes, int], R] = {}
        self.total = 0
        self.lock = threading.Lock()


def cache_by_bytes(
    *, max_item: int, max_total: int
) -> Callable[[Callable[[bytes, int], R]], ByBytes[R]]:
    """Keep the results of a pure function of ``(raw, size)`` for ``raw`` of up to
    ``max_item`` bytes, the oldest dropped past ``max_total`` bytes in all (first in,
    first out: a hit costs one dict lookup).

    Results are shared between callers, so they must be immutable.
    """

    def decorate(function: Callable[[bytes, int], R]) -> ByBytes[R]:
        kept: _Kept[R] = _Kept()
        results = kept.results

        # A plain function, not an object with __call__: cheaper on every call.
        @functools.wraps(function)
        def cached(raw: bytes, size: int) -> R:
            if len(raw) > max_item:
                return function(raw, size)
            found = results.get((raw, size))  # no lock: a dict lookup is atomic
            if found is not None:
                return found
            result = function(raw, size)
            with kept.lock:
                if (raw, size) not in results:
                    results[raw, size] = result
                    kept.total += len(raw)
                    while kept.total > max_total:
                        old, _ = oldest = next(iter(results))
                        del results[oldest]
                        kept.total -= len(old)
            return result

        def cache_clear() -> None:
            with kept.lock:
                results.clear()
                kept.total = 0

        cached.cache_clear = cache_clear  # type: ignore[attr-defined]
        cached.kept_bytes = lambda: kept.total  # type: ignore[attr-defined]
        return cached  # type: ignore[return-value]

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
