"""AttrDict: a dict whose string keys are also attributes."""

from __future__ import annotations

from typing import Any

__all__ = ["AttrDict"]


class AttrDict(dict[str, Any]):
    """A dict whose values are also readable, writable and deletable as attributes.

    A missing attribute raises AttributeError, a missing key KeyError. Names the class
    already has (``items``, ``keys``...) stay methods: use ``d["items"]`` for such keys.
    """

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
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
                f"{name!r} is a {type(self).__name__} attribute; use d[{name!r}] = ... for this key"
            )
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no key {name!r}") from None

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *(k for k in dict.keys(self) if k.isidentifier())})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict.__repr__(self)})"
