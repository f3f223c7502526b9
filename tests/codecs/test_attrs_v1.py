"""Files of the retired attrs codec: still read, through references that name it."""

from __future__ import annotations

from pathlib import Path

import pytest
from vectors import CASES, same, vector_path

import typedstore as ts
from helpers import with_metadata
from typedstore.errors import DecodeError, RegistrationError

DATA = vector_path("attrs", 1, "model").read_bytes()


def test_the_name_attrs_reads_with_the_tree_codec(store: Path) -> None:
    assert ts.registry.get("attrs") is ts.registry.get("tree")
    assert "attrs" not in ts.registry.names()
    key = ts.DataStoreIO.write(DATA, "old").reference.key
    back = ts.DataStoreIO(f"datastore:///{key}?codec=attrs").read_deserialize()
    assert same(back, CASES["attrs"][1]["model"].expected())


def test_no_codec_takes_the_retired_name() -> None:
    class Impostor(ts.codecs.RawCodec):
        name = "attrs"

    with pytest.raises(RegistrationError, match="retired"):
        ts.CodecRegistry(load_plugins=False).register(Impostor())


@pytest.mark.parametrize(
    "change",
    [
        {"typedstore.type": "os.system"},
        {"typedstore.kind": "other"},
        {"typedstore.tree": "{not json"},
        {"typedstore.tensors": "{}"},
        {"typedstore.tensors": '{"note": {"path": ["lr"], "kind": "bytes"}}'},
        {"typedstore.tree": "[]"},
    ],
    ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()),
)
def test_tampered_metadata_is_a_decode_error(change: dict[str, str]) -> None:
    with pytest.raises(DecodeError):
        ts.registry.get("attrs").decode(with_metadata(DATA, change))
