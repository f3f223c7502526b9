"""Strict JSON parsing shared by the formats: no duplicate keys, no NaN or Infinity."""

from __future__ import annotations

import itertools
import json
import math
import re
from typing import Any

__all__ = ["loads"]


def loads(data: bytes | str, *, allow_constants: bool = False, max_depth: int | None = None) -> Any:
    """Parse JSON strictly; raise ValueError when it is not.

    ``allow_constants`` admits ``NaN``, ``Infinity`` and ``-Infinity``, the extension
    Python's json module writes for non-finite floats. A number too large for a float
    (``1e999``) is refused either way: no writer of JSON means infinity by it.
    ``max_depth`` refuses arrays and objects nested deeper, for values that callers use
    as they are: the parser takes any depth, but repr, copy and == on the result recurse.
    """
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    if (
        max_depth is not None
        and text.count("[") + text.count("{") > max_depth  # else it cannot nest deeper
        and _depth(text) > max_depth
    ):
        raise ValueError(f"JSON nested deeper than {max_depth}")
    try:
        return (_LENIENT if allow_constants else _STRICT).decode(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


_STRING_OR_OTHER = re.compile(r'"(?:[^"\\]|\\.)*"|[^"\[\]{}]+')
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def _depth(text: str) -> int:
    """How deep the arrays and objects of JSON ``text`` nest (strings do not count)."""
    brackets = _STRING_OR_OTHER.sub("", text)
    return max(itertools.accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key in object")
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is too large for a float")
    return value


# Built once: json.loads with hooks builds a decoder (and its scanner) on every call, which
# costs more than decoding a small header. Decoders keep no state between calls.
_STRICT = json.JSONDecoder(
    object_pairs_hook=_no_duplicates, parse_constant=_no_constant, parse_float=_finite
)
_LENIENT = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_float=_finite)
