"""The ``json`` codec: plain data that JSON gives back exactly."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, ClassVar

from typedstore import _strictjson
from typedstore.errors import DecodeError, EncodeError
from typedstore.protocols import Buffer

__all__ = ["MAX_DEPTH", "JsonCodec"]

_SCALARS = (type(None), bool, int, float, str)
#: How deep lists and dicts may nest: deeper trees hit the interpreter's recursion limit
#: in the json module when written, so none is ever read either.
MAX_DEPTH = 200
# Python refuses to print or parse ints of more than 4300 digits by default.
_MAX_INT_BITS = 14_000


class JsonCodec:
    """None, bool, int, float, str, list and dict with str keys, as UTF-8 JSON.

    A value is accepted only when JSON gives back an equal value of the same types:
    a tuple, a non-str dict key, a NaN or a subclass of a plain type goes to the next
    candidate codec instead.
    """

    name: ClassVar[str] = "json"
    version: ClassVar[int] = 1
    types: ClassVar[tuple[type, ...]] = (*_SCALARS, list, dict)

    def accepts(self, value: object) -> bool:
        """Whether ``value`` is plain data that round-trips exactly."""
        return _is_plain(value, 0)

    def encode(self, value: Any) -> Sequence[Buffer]:
        """Compact JSON, ASCII-only (lone surrogates survive), without NaN or Infinity."""
        try:
            text = json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError, RecursionError) as exc:
            raise EncodeError(f"codec 'json' cannot encode {type(value).__name__}: {exc}") from exc
        return [text.encode("ascii")]

    def decode(self, data: Buffer, expected_type: type[Any] | None = None) -> Any:
        """Parse strict JSON: no duplicate keys, no NaN or Infinity."""
        try:
            return _strictjson.loads(bytes(data), max_depth=MAX_DEPTH)
        except (ValueError, RecursionError) as exc:
            raise DecodeError(f"codec 'json': malformed data: {exc}") from exc


def _is_plain(value: object, depth: int) -> bool:
    if depth > MAX_DEPTH:
        return False
    if type(value) is float:
        return math.isfinite(value)
    if type(value) is int:
        return value.bit_length() <= _MAX_INT_BITS
    if type(value) in _SCALARS:
        return True
    if type(value) is list:
        return all(_is_plain(item, depth + 1) for item in value)
    if type(value) is dict:
        return all(type(k) is str and _is_plain(v, depth + 1) for k, v in value.items())
    return False
