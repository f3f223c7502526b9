"""The codec contract: a named, versioned format for values of some types."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from typedstore.errors import RegistrationError

if sys.version_info >= (3, 12):
    from collections.abc import Buffer
else:
    from typing_extensions import Buffer

__all__ = [
    "NAME_PATTERN",
    "Buffer",
    "Codec",
    "Reader",
    "StreamingCodec",
    "ZeroCopyCodec",
    "byte_view",
    "check_codec_name",
]

T = TypeVar("T")

#: Codec names appear in references (``?codec=<name>``) and must stay stable forever.
NAME_PATTERN = re.compile(r"[a-z0-9_.-]{1,64}")


@runtime_checkable
class Codec(Protocol[T]):
    """A named, versioned serialization format for values of some types.

    ``encode`` returns buffers that are written in order, so a large array is written
    from its own memory instead of being copied into one bytes object first. ``decode``
    receives a read-only buffer, possibly a memoryview over a memory map that is closed
    after ``decode`` returns: the result must not keep references into it.
    """

    @property
    def name(self) -> str:
        """Stable identifier of the format, as it appears in references."""
        ...

    @property
    def version(self) -> int:
        """Format version; bumped whenever the bytes the codec writes change."""
        ...

    @property
    def types(self) -> tuple[type, ...]:
        """The Python types this codec serves (its registry keys)."""
        ...

    def accepts(self, value: object) -> bool:
        """Whether this codec can encode ``value`` exactly (without losing state)."""
        ...

    def encode(self, value: T) -> Sequence[Buffer]:
        """Encode ``value`` into buffers that, concatenated, form the stored object."""
        ...

    def decode(self, data: Buffer, expected_type: type[Any] | None = None) -> T:
        """Decode a stored object; raise :class:`~typedstore.errors.DecodeError` if malformed."""
        ...


class Reader(Protocol):
    """Random access to one stored object, for codecs that decode straight from storage."""

    @property
    def size(self) -> int:
        """The object's size in bytes."""
        ...

    def read(self, start: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``start`` (fewer only at the end of the object)."""
        ...

    def readinto(self, start: int, buffer: Buffer) -> int:
        """Fill ``buffer`` from ``start``; return how many bytes were read."""
        ...


@runtime_checkable
class StreamingCodec(Codec[T], Protocol[T]):
    """A codec that can also decode from a :class:`Reader`, reading large parts directly
    into the memory of the result (no intermediate copy)."""

    def decode_from(self, reader: Reader, expected_type: type[Any] | None = None) -> T:
        """Decode the object behind ``reader``; same result and errors as ``decode``."""
        ...


@runtime_checkable
class ZeroCopyCodec(Codec[T], Protocol[T]):
    """A codec that can return values sharing memory with the stored data."""

    def decode_view(self, data: Buffer, expected_type: type[Any] | None = None) -> T:
        """Like ``decode``, but the result may be read-only views into ``data``."""
        ...


def check_codec_name(name: object) -> str:
    """Return ``name`` if it is a valid codec name, else raise RegistrationError."""
    if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
        raise RegistrationError(f"invalid codec name {name!r}: use 1-64 characters of [a-z0-9_.-]")
    return name


def byte_view(data: Buffer) -> memoryview:
    """A flat, C-contiguous ``uint8`` memoryview of ``data`` without copying.

    Raises ValueError if ``data`` is not C-contiguous.
    """
    view = memoryview(data)
    if not view.c_contiguous:
        raise ValueError("buffer is not C-contiguous")
    if view.format == "B" and view.ndim == 1:
        return view
    return view.cast("B")
