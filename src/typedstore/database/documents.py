"""The fields document: one experiment's or run's fields as one JSON object in one column.

One row per run keeps persist and load to one statement per batch of runs, and leaves the
plain fields queryable by the database itself (``json_each`` in SQLite, ``->`` in
PostgreSQL). A field's node is its value when that is plain JSON; anything else is an
object tagged by a ``$`` key:

- ``{"$datastore": URL}``: a DataStore, by the reference of its container;
- ``{"$codec": NAME, "$base64": DATA}``: a value encoded inline by a codec;
- ``{"$json": VALUE}``: a plain dict that has ``$`` keys of its own, escaped;
- ``{"$malformed": TEXT}``: a field of an older database that did not parse, kept.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from typedstore import _strictjson
from typedstore.codecs.json import MAX_DEPTH

__all__ = ["codec", "datastore", "dumps", "loads", "node_kind", "plain"]

#: A document nests two levels above its deepest field value: itself and an escape.
_DEPTH = MAX_DEPTH + 2


def plain(value: Any) -> Any:
    """The node of a plain JSON value."""
    if type(value) is dict and any(k.startswith("$") for k in value):
        return {"$json": value}
    return value


def datastore(url: str) -> dict[str, Any]:
    """The node of a DataStore stored at reference ``url``."""
    return {"$datastore": url}


def codec(name: str, data: bytes) -> dict[str, Any]:
    """The node of a value that codec ``name`` encoded to ``data``."""
    return {"$codec": name, "$base64": base64.b64encode(data).decode("ascii")}


def node_kind(node: Any) -> tuple[str, Any, Any]:
    """``(kind, a, b)``: ``("json", value, None)``, ``("datastore", url, None)`` or
    ``("codec", name, data)``; raises ValueError for a malformed node."""
    if type(node) is not dict or not any(k.startswith("$") for k in node):
        return "json", node, None
    keys = set(node)
    if keys == {"$json"} and type(node["$json"]) is dict:
        return "json", node["$json"], None
    if keys == {"$datastore"} and type(node["$datastore"]) is str:
        return "datastore", node["$datastore"], None
    if keys == {"$codec", "$base64"} and type(node["$codec"]) is str:
        try:
            data = base64.b64decode(node["$base64"], validate=True)
        except (binascii.Error, TypeError, ValueError) as exc:
            raise ValueError(f"inline value of codec {node['$codec']!r:.40}: {exc}") from None
        return "codec", node["$codec"], data
    if keys == {"$malformed"}:
        raise ValueError(f"a field that did not parse when migrated: {node['$malformed']!r:.80}")
    raise ValueError(f"unknown field node with keys {sorted(keys)!r:.80}")


def dumps(document: dict[str, Any]) -> str:
    """Compact ASCII JSON (lone surrogates survive), refusing NaN and Infinity."""
    return json.dumps(document, ensure_ascii=True, allow_nan=False, separators=(",", ":"))


def loads(text: object) -> dict[str, Any]:
    """A stored document, parsed strictly; raises ValueError when it is not one."""
    if type(text) is not str:
        # PostgreSQL's drivers may return a JSON column already parsed: never trust that,
        # the text is asked for (::text) so the same strict parser sees every document.
        raise ValueError(f"a fields document is JSON text, not {type(text).__name__}")
    document = _strictjson.loads(text, max_depth=_DEPTH)
    if type(document) is not dict:
        raise ValueError(f"a fields document is a JSON object, not {type(document).__name__}")
    return document
