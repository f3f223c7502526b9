from __future__ import annotations

from fractions import Fraction

from hypothesis import strategies as st

from typedstore.testing import check_codec
from typedstore_plugin_example import FractionCodec


def test_conformance() -> None:
    check_codec(FractionCodec(), st.fractions(), deterministic=True)
