"""Strict JSON parsing shared by the formats: no duplicate keys, no NaN or Infinity."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["loads"]


def loads(data: bytes | str, *, allow_constants: bool = False) -> Any:
    """Parse JSON strictly; raise ValueError (or RecursionError) when it is not.

    ``allow_constants`` admits ``NaN``, ``Infinity`` and ``-Infinity``, the extension
    Python's json module writes for non-finite floats.
    """
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    return (_LENIENT if allow_constants else _STRICT).decode(text)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key in object")
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# Built once: json.loads with hooks builds a decoder (and its scanner) on every call, which
# costs more than decoding a small header. Decoders keep no state between calls.
_STRICT = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
_LENIENT = json.JSONDecoder(object_pairs_hook=_no_duplicates)
