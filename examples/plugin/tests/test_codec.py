from __future__ import annotations

from hypothesis import strategies as st
from typedstore_plugin_example import FractionCodec

from typedstore.testing import check_codec


def test_conformance() -> None:
    check_codec(FractionCodec(), st.fractions(), deterministic=True)
