"""The conformance kit, run on every built-in codec, and shown to catch broken codecs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar

import attrs
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import strategies as st

import typedstore as ts
from helpers import SAFETENSORS_DTYPES, any_arrays, plain
from typedstore.protocols import Buffer
from typedstore.testing import check_codec, equal


@attrs.define(eq=False)
class Kit:
    w: np.ndarray[Any, Any]
    n: str


ts.registry.register_class(Kit, name="tests.testing.Kit")


def kit_equal(a: Any, b: Any) -> bool:
    return type(a) is type(b) and equal(a.w, b.w) and a.n == b.n


BUILTINS: dict[str, tuple[Any, dict[str, Any]]] = {
    "raw": (st.binary(), {"deterministic": True, "eq": lambda a, b: bytes(a) == b}),
    "json": (plain, {"deterministic": True}),
    "safetensors": (any_arrays([d for d in SAFETENSORS_DTYPES if not d.startswith(">")]), {}),
    "npy": (any_arrays(["<c16", "<U3", "S2", "<M8[s]"]), {"deterministic": True}),
    "pickle": (st.tuples(st.integers(), st.text()), {}),
    "tree": (
        st.builds(Kit, any_arrays(["<f4", "<i8"]), st.text())
        | st.tuples(st.integers(), st.text(), st.frozensets(st.integers())),
        {"eq": lambda a, b: kit_equal(a, b) if type(a) is Kit else a == b},
    ),
    "arrow": (
        st.lists(st.integers(-(2**63), 2**63 - 1) | st.none(), max_size=20).map(
            lambda xs: pa.table({"a": pa.array(xs, pa.int64()), "b": [str(x) for x in xs]})
        ),
        {"deterministic": True, "eq": lambda a, b: a.equals(b, check_metadata=True)},
    ),
    "datastore": (
        st.dictionaries(
            st.text(min_size=1).filter(lambda k: k != "__metadata__"), plain, max_size=4
        ).map(ts.DataStore),
        {},
    ),
}


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_builtin_codecs_conform(name: str) -> None:
    strategy, options = BUILTINS[name]
    check_codec(ts.registry.get(name), strategy, **options)


class Broken:
    """A codec that breaks the contract: its decode lets json errors escape."""

    name: ClassVar[str] = "broken"
    version: ClassVar[int] = 1
    types: ClassVar[tuple[type, ...]] = (list,)

    def accepts(self, value: object) -> bool:
        return type(value) is list

    def encode(self, value: list[int]) -> Sequence[Buffer]:
        return [json.dumps(value).encode()]

    def decode(self, data: Buffer, expected_type: type[Any] | None = None) -> list[int]:
        result: list[int] = json.loads(bytes(data))
        return result


class Lossy(Broken):
    """Round trips lose the last element."""

    name: ClassVar[str] = "lossy"

    def encode(self, value: list[int]) -> Sequence[Buffer]:
        return [json.dumps(value[:-1]).encode()]

    def decode(self, data: Buffer, expected_type: type[Any] | None = None) -> list[int]:
        try:
            result: list[int] = json.loads(bytes(data))
        except ValueError as exc:
            raise ts.errors.DecodeError(str(exc)) from exc
        return result


def test_kit_catches_leaking_exceptions() -> None:
    with pytest.raises(AssertionError, match=r"must raise typedstore\.errors\.DecodeError"):
        check_codec(Broken(), st.lists(st.integers()))


def test_kit_catches_lossy_round_trips() -> None:
    with pytest.raises(AssertionError, match="came back as"):
        check_codec(Lossy(), st.lists(st.integers(), min_size=1))


def test_kit_catches_bad_names_and_versions() -> None:
    bad = Lossy()
    bad.name = "Bad Name"  # type: ignore[misc]
    with pytest.raises(AssertionError, match="invalid codec name"):
        check_codec(bad, st.lists(st.integers()))
    old = Lossy()
    old.version = 0  # type: ignore[misc]
    with pytest.raises(AssertionError, match="version"):
        check_codec(old, st.lists(st.integers()))
