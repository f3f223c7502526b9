"""Fields of experiments and runs, and how they become a document in the database."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

import attrs

from typedstore.attrdict import AttrAccess
from typedstore.database import documents
from typedstore.datastore import DataStore
from typedstore.errors import DatabaseError, EncodeError, TypedStoreError
from typedstore.protocols import byte_view
from typedstore.store import current_store

__all__ = ["Fields", "datastore_urls", "decode", "encode"]


@attrs.frozen
class _Unreadable:
    """A stored field that could not be decoded: its node, kept to be written back as it
    was, and why it could not be read."""

    node: Any
    error: TypedStoreError


class Fields(AttrAccess, MutableMapping[str, Any]):
    """The fields of an experiment or run: a mapping whose values are also attributes.

    Plain data is kept inline as JSON, DataStores as their references (their contents go
    to the datastore), anything else through the codec registry as an inline blob. A
    loaded field that cannot be decoded (its class is not registered here, say) raises
    its error when it is read, and the other fields load; persisting keeps it as stored.
    """

    __slots__ = ("_ts_values",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        object.__setattr__(self, "_ts_values", {})
        self.update(*args, **kwargs)

    def __getitem__(self, key: str) -> Any:
        value = self._ts_values[key]
        if type(value) is _Unreadable:
            raise value.error.with_traceback(None)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self._ts_values[key] = value

    def __delitem__(self, key: str) -> None:
        del self._ts_values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._ts_values)

    def __len__(self) -> int:
        return len(self._ts_values)

    def __repr__(self) -> str:
        shown = {
            k: "<unreadable>" if type(v) is _Unreadable else v for k, v in self._ts_values.items()
        }
        return f"Fields({shown!r})"

    @property
    def unreadable(self) -> Mapping[str, TypedStoreError]:
        """The fields that could not be decoded when loaded, with the error each raises."""
        return {k: v.error for k, v in self._ts_values.items() if type(v) is _Unreadable}


def encode(fields: Fields, prefix: str) -> tuple[str, list[str]]:
    """The document of ``fields`` and the references of the DataStores in it, which are
    written under ``prefix`` now."""
    registry = current_store().registry
    plain = registry.get("json")
    document: dict[str, Any] = {}
    urls = []
    for key, value in fields._ts_values.items():
        if type(key) is not str:
            raise EncodeError(f"field names are strings, got {key!r}")
        if type(value) is _Unreadable:  # kept as it was stored
            document[key] = value.node
            continue
        try:
            if type(value) is DataStore:
                urls.append(value.to_url(prefix))
                document[key] = documents.datastore(urls[-1])
            elif plain.accepts(value):
                document[key] = documents.plain(value)
            else:
                codec = registry.for_value(value)
                data = b"".join(byte_view(chunk) for chunk in codec.encode(value))
                document[key] = documents.codec(codec.name, data)
        except TypedStoreError as exc:
            exc.add_note(f"field {key!r}")
            raise
    return documents.dumps(document), urls


def decode(text: object, label: str) -> Fields:
    """The fields of a stored document; ``label`` names their owner in errors.

    A document is untrusted input: one that does not parse raises DatabaseError, and a
    field that does not decode is kept unreadable while the others load.
    """
    try:
        document = documents.loads(text)
    except ValueError as exc:
        raise DatabaseError(f"{label} has malformed fields: {exc}") from None
    fields = Fields()
    values = fields._ts_values
    registry = current_store().registry
    for key, node in document.items():
        try:
            kind, a, b = documents.node_kind(node)
            if kind == "json":
                values[key] = a
            elif kind == "datastore":
                values[key] = DataStore.from_url(a, lazy=True)
            else:
                values[key] = registry.get(a).decode(memoryview(b), None)
        except TypedStoreError as exc:
            exc.add_note(f"field {key!r} of {label}")
            values[key] = _Unreadable(node, exc)
        except Exception as exc:  # a document is untrusted input, like a stored object
            error = DatabaseError(f"field {key!r} of {label} is malformed: {exc!r:.200}")
            error.__cause__ = exc
            values[key] = _Unreadable(node, error)
    return fields


def datastore_urls(text: object) -> list[str]:
    """The references of the DataStores a stored document names (none if it is
    malformed: loading it reports that)."""
    try:
        document = documents.loads(text)
    except ValueError:
        return []
    urls = []
    for node in document.values():
        try:
            kind, url, _ = documents.node_kind(node)
        except ValueError:
            continue
        if kind == "datastore":
            urls.append(url)
    return urls
