"""Storage keys: the path of an object relative to the store root.

A key is one or more segments of ``[A-Za-z0-9._-]`` joined by ``/``. No segment is ``.``
or ``..``, none is empty, there is no leading or trailing slash, and the whole key is at
most :data:`MAX_KEY_LENGTH` bytes. Every storage checks keys with :func:`check_key`, so a
key can never name anything outside the root, whatever reference it came from.
"""

from __future__ import annotations

import os
import re

from typedstore.errors import InvalidKeyError

__all__ = ["MAX_KEY_LENGTH", "check_key", "new_object_key"]

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


def new_object_key(prefix: str) -> str:
    """A fresh, unique key under ``prefix``: 128 random bits as 32 hex digits."""
    if len(prefix) > MAX_KEY_LENGTH - 33:
        raise InvalidKeyError(f"prefix is longer than {MAX_KEY_LENGTH - 33} characters")
    return f"{check_key(prefix, what='prefix')}/{os.urandom(16).hex()}"
