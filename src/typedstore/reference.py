"""References: the ``datastore:///<key>?codec=<name>`` URLs that stand for stored objects."""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

import attrs

from typedstore.errors import InvalidKeyError, InvalidReferenceError
from typedstore.keys import check_key, new_object_key
from typedstore.protocols import NAME_PATTERN

__all__ = ["SCHEME", "Reference"]

SCHEME = "datastore"
_PREFIX = f"{SCHEME}:///"
_MAX_URL_LENGTH = 4096
_MAX_PARAMS = 16
# The form typedstore itself writes, with nothing to decode: parsed without urllib. The
# codec group is exactly NAME_PATTERN; the key group still needs the key rules.
_SIMPLE = re.compile(r"datastore:///([A-Za-z0-9._/-]{1,1024})\?codec=([a-z0-9_.-]{1,64})")


_NO_PARAMS: Mapping[str, str] = MappingProxyType({})


def _frozen_params(params: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(params)) if params else _NO_PARAMS


def _check_param(name: str, value: str) -> None:
    if not name.isidentifier() or not name.isascii() or name != name.lower():
        raise InvalidReferenceError(f"invalid reference parameter name {name!r}")
    if name == "codec":
        raise InvalidReferenceError("'codec' is not an extra parameter")
    if not value.isprintable() or len(value) > 256:
        raise InvalidReferenceError(f"invalid value for reference parameter {name!r}")


@attrs.frozen
class Reference:
    """A reference to one stored object: its key (relative to the store root) and codec.

    ``params`` holds any further query parameters (for example ``sha256``).
    ``Reference.parse(str(ref)) == ref`` always holds.
    """

    key: str = attrs.field()
    codec: str = attrs.field()
    params: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_params, hash=False)

    @key.validator
    def _check_key(self, _: Any, value: str) -> None:
        check_key(value)

    @codec.validator
    def _check_codec(self, _: Any, value: object) -> None:
        if not isinstance(value, str) or NAME_PATTERN.fullmatch(value) is None:
            raise InvalidReferenceError(f"invalid codec name {value!r} in reference")

    @params.validator
    def _check_params(self, _: Any, value: Mapping[object, object]) -> None:
        if len(value) > _MAX_PARAMS:
            raise InvalidReferenceError(f"more than {_MAX_PARAMS} reference parameters")
        for name, item in value.items():
            if not isinstance(name, str) or not isinstance(item, str):
                raise InvalidReferenceError("reference parameters must be strings")
            _check_param(name, item)

    @classmethod
    def parse(cls, url: str) -> Reference:
        """Parse a reference URL strictly; raise InvalidReferenceError if it is malformed."""
        simple = _SIMPLE.fullmatch(url) if type(url) is str else None
        if simple is not None:
            key = simple[1]
            # Without a segment that starts with "." or is empty, the characters matched
            # are all the key rules ask; anything else gets the full check.
            if key[0] in "./" or "/." in key or "//" in key or key[-1] == "/":
                try:
                    check_key(key)
                except InvalidKeyError as exc:
                    raise InvalidKeyError(f"reference {url!r}: {exc}") from None
            return cls._from_checked(key, simple[2])
        if not isinstance(url, str):
            raise InvalidReferenceError(f"a reference is a str, got {type(url).__name__}")
        if len(url) > _MAX_URL_LENGTH:
            raise InvalidReferenceError(f"reference longer than {_MAX_URL_LENGTH} characters")
        if not url.startswith(_PREFIX):
            raise InvalidReferenceError(f"reference {url[:100]!r} does not start with {_PREFIX!r}")
        if not url.isascii() or not url.isprintable() or "#" in url:
            raise InvalidReferenceError(f"reference {url[:100]!r} has forbidden characters")
        path, sep, query = url[len(_PREFIX) :].partition("?")
        if not sep:
            raise InvalidReferenceError(f"reference {url!r} has no ?codec= parameter")
        try:
            # Percent-decoding happens exactly once, before the key rules are applied.
            key = unquote(path, errors="strict")
            pairs = parse_qsl(
                query,
                keep_blank_values=True,
                strict_parsing=True,
                errors="strict",
                max_num_fields=_MAX_PARAMS + 1,
            )
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidReferenceError(f"reference {url!r}: {exc}") from None
        codecs = [value for name, value in pairs if name == "codec"]
        if len(codecs) != 1:
            raise InvalidReferenceError(
                f"reference {url!r} must have exactly one codec parameter, has {len(codecs)}"
            )
        params: dict[str, str] = {}
        for name, value in pairs:
            if name == "codec":
                continue
            if name in params:
                raise InvalidReferenceError(f"reference {url!r} repeats parameter {name!r}")
            params[name] = value
        try:
            return cls(key=key, codec=codecs[0], params=params)
        except InvalidKeyError as exc:
            raise InvalidKeyError(f"reference {url!r}: {exc}") from None

    @classmethod
    def _from_checked(cls, key: str, codec: str) -> Reference:
        # For a key and codec name the caller has already checked: references are made on
        # every read and write, and the validators would check both again.
        ref = object.__new__(cls)
        _set_key(ref, key)
        _set_codec(ref, codec)
        _set_params(ref, _NO_PARAMS)
        return ref

    @classmethod
    def new(
        cls,
        prefix: str,
        codec: str,
        params: Mapping[str, str] | None = None,
        *,
        crc32c: int | None = None,
    ) -> Reference:
        """A reference to a new object under ``prefix``: a fresh, unique key that names the
        codec and ``crc32c`` (see :func:`typedstore.keys.new_object_key`). Raises
        InvalidKeyError for a bad prefix, InvalidReferenceError for a bad codec name or
        parameters."""
        if type(codec) is not str or NAME_PATTERN.fullmatch(codec) is None:
            raise InvalidReferenceError(f"invalid codec name {codec!r} in reference")
        key = new_object_key(prefix, codec, crc32c)
        if params:
            return cls(key=key, codec=codec, params=params)
        # The key is valid by construction: only the codec needed a check.
        return cls._from_checked(key, codec)

    @property
    def url(self) -> str:
        """The reference as a URL; same as ``str(self)``."""
        if not self.params:
            # Keys and codec names hold only characters that URLs leave as they are.
            return f"{_PREFIX}{self.key}?codec={self.codec}"
        query = urlencode([("codec", self.codec), *self.params.items()])
        return f"{_PREFIX}{quote(self.key, safe='/')}?{query}"

    def __str__(self) -> str:
        return self.url

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled and copied as its URL (its params mapping is read-only), parsed again.
        return (Reference.parse, (self.url,))


# The slots' own setters: what a frozen class's __init__ uses, without the validators.
_set_key = Reference.__dict__["key"].__set__
_set_codec = Reference.__dict__["codec"].__set__
_set_params = Reference.__dict__["params"].__set__
