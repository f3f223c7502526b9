"""Storage keys: the path of an object relative to the store root.

A key is one or more segments of ``[A-Za-z0-9._-]`` joined by ``/``. No segment is ``.``
or ``..``, none is empty, there is no leading or trailing slash, and the whole key is at
most :data:`MAX_KEY_LENGTH` bytes. Every storage checks keys with :func:`check_key`, so a
key can never name anything outside the root, whatever reference it came from.

The objects typedstore writes are named ``<32 hex digits>-<crc32c, 8 hex digits>.<codec>``
(``<32 hex digits>.<codec>`` when written with checksums off; a bare ``<32 hex digits>``
was written before names said anything): so the store alone says how to
decode each object and whether its bytes are the ones written (see
:mod:`typedstore.integrity`).
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

from typedstore.errors import InvalidKeyError

__all__ = [
    "MAX_KEY_LENGTH",
    "Described",
    "check_key",
    "describe_key",
    "is_valid_segment",
    "new_object_key",
    "object_name",
]

MAX_KEY_LENGTH = 1024
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
# The whole rule in one pattern, for the common case of a valid key (keys are checked on
# every read and write); the segment loop below only explains a refusal.
# A segment is not "." or "..": it starts with a character other than a dot, or with one
# dot and another character, or with two dots and a third character.
_SEGMENT_RULE = r"(?:[A-Za-z0-9_-]|\.[A-Za-z0-9_-]|\.\.[A-Za-z0-9._-])[A-Za-z0-9._-]*"
_KEY = re.compile(rf"{_SEGMENT_RULE}(?:/{_SEGMENT_RULE})*")


def check_key(key: object, *, what: str = "key") -> str:
    """Return ``key`` if it follows the key rules, else raise InvalidKeyError."""
    if type(key) is str and len(key) <= MAX_KEY_LENGTH and _KEY.fullmatch(key):
        return key
    if not isinstance(key, str):
        raise InvalidKeyError(f"{what} must be a str, got {type(key).__name__}")
    if not key:
        raise InvalidKeyError(f"{what} is empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKeyError(f"{what} is longer than {MAX_KEY_LENGTH} characters")
    for segment in key.split("/"):
        if not segment:
            raise InvalidKeyError(f"{what} {key!r} has an empty segment or a leading slash")
        if segment in (".", ".."):
            raise InvalidKeyError(f"{what} {key!r} has a {segment!r} segment")
        if _SEGMENT.fullmatch(segment) is None:
            raise InvalidKeyError(
                f"{what} {key!r}: segments may hold only letters, digits, '.', '_' and '-'"
            )
    return key


def is_valid_segment(name: str) -> bool:
    """Whether ``name`` can be one segment of a key (temporary files never can)."""
    return name not in (".", "..") and _SEGMENT.fullmatch(name) is not None


class Described(NamedTuple):
    """What an object's name says: the codec that wrote it, and its crc32c (None when
    written with checksums off)."""

    codec: str
    crc32c: int | None


# A random part, a checksum, a codec name (protocols.NAME_PATTERN).
_NAME = re.compile(r"([0-9a-f]{32})(?:-([0-9a-f]{8}))?\.([a-z0-9_.-]{1,64})")
_MAX_NAME = 32 + 1 + 8 + 1 + 64


def object_name(codec: str, crc32c: int | None = None) -> str:
    """A fresh, unique object name (128 random bits) that names ``codec`` and, unless
    None, the object's ``crc32c``."""
    stem = os.urandom(16).hex()
    return f"{stem}.{codec}" if crc32c is None else f"{stem}-{crc32c:08x}.{codec}"


def new_object_key(prefix: str, codec: str, crc32c: int | None = None) -> str:
    """A fresh, unique key under ``prefix``: an :func:`object_name` in that folder."""
    if len(prefix) > MAX_KEY_LENGTH - 1 - _MAX_NAME:
        raise InvalidKeyError(f"prefix is longer than {MAX_KEY_LENGTH - 1 - _MAX_NAME} characters")
    return f"{check_key(prefix, what='prefix')}/{object_name(codec, crc32c)}"


def describe_key(key: str) -> Described | None:
    """The codec and checksum that the last segment of ``key`` names, or None for a name
    that says neither (written before names said anything, or not by typedstore)."""
    match = _NAME.fullmatch(key, key.rfind("/") + 1)
    if match is None:
        return None
    crc = match[2]
    return Described(match[3], None if crc is None else int(crc, 16))
