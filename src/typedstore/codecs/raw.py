"""The ``raw`` codec: bytes stored exactly as they are."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from typedstore.protocols import Buffer, byte_view

__all__ = ["RawCodec"]


class RawCodec:
    """``bytes`` and ``memoryview`` values; the stored object is the bytes.

    Decoding returns ``bytes``. A ``bytearray`` goes to the ``tree`` codec, which gives
    it back as a bytearray.
    """

    name: ClassVar[str] = "raw"
    version: ClassVar[int] = 1
    types: ClassVar[tuple[type, ...]] = (bytes, memoryview)

    def accepts(self, value: object) -> bool:
        """Exactly bytes or memoryview (subclasses may carry more state)."""
        return type(value) in self.types

    def encode(self, value: Buffer) -> Sequence[Buffer]:
        """The value's own memory, without a copy when it is contiguous."""
        view = memoryview(value)
        return [byte_view(view) if view.c_contiguous else view.tobytes()]

    def decode(self, data: Buffer, expected_type: type[Any] | None = None) -> bytes:
        """A bytes copy of the stored object."""
        return bytes(data)
