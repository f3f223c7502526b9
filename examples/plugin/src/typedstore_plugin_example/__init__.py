"""An example codec plugin: ``fractions.Fraction`` as ``numerator/denominator`` text."""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, ClassVar

from typedstore import Buffer
from typedstore.errors import DecodeError

__all__ = ["FractionCodec"]

_FRACTION = re.compile(rb"(-?[0-9]{1,4000})/([1-9][0-9]{0,3999})")


class FractionCodec:
    """Exact fractions, stored as ASCII ``numerator/denominator``."""

    name: ClassVar[str] = "example.fraction"
    version: ClassVar[int] = 1
    types: ClassVar[tuple[type, ...]] = (Fraction,)
    priority: ClassVar[int] = 0

    def accepts(self, value: object) -> bool:
        """Exactly Fraction (a subclass might carry more state)."""
        return type(value) is Fraction

    def encode(self, value: Fraction) -> Sequence[Buffer]:
        """``b"3/7"``."""
        return [f"{value.numerator}/{value.denominator}".encode("ascii")]

    def decode(self, data: Buffer, expected_type: type[Any] | None = None) -> Fraction:
        """The fraction; DecodeError for anything but ``numerator/denominator``."""
        match = _FRACTION.fullmatch(bytes(data))
        if match is None:
            raise DecodeError("example.fraction: expected ASCII numerator/denominator")
        return Fraction(int(match[1]), int(match[2]))
