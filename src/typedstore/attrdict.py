"""Attribute access to the string keys of a mapping: ``d.x`` is ``d["x"]``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

__all__ = ["AttrAccess", "AttrDict"]


class AttrAccess:
    """Mixin for mappings whose values are also readable, writable and deletable as
    attributes.

    A missing attribute raises AttributeError, a missing key KeyError. Names the class
    already has (``items``, ``keys``...) stay methods: use ``d["items"]`` for such keys.
    Names that start with ``_ts_`` are the class's own state, never keys.
    """

    __slots__ = ()

    if TYPE_CHECKING:  # what the mapping it is mixed into provides

        def __getitem__(self, key: str) -> Any: ...
        def __setitem__(self, key: str, value: Any) -> None: ...
        def __delitem__(self, key: str) -> None: ...
        def __iter__(self) -> Iterator[str]: ...

    def __getattr__(self, name: str) -> Any:
        # Dunders and unset slots of the class: looking them up as keys would recurse.
        if name.startswith(("__", "_ts_")):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"{type(self).__name__} has no key or attribute {name!r}"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        if hasattr(type(self), name):
            raise AttributeError(
                f"{name!r} is a {type(self).__name__} attribute; use d[{name!r}] = ... for "
                "this key"
            )
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no key {name!r}") from None

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *(k for k in self if k.isidentifier())})


class AttrDict(AttrAccess, dict[str, Any]):
    """A dict whose values are also attributes (see :class:`AttrAccess`)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict.__repr__(self)})"
