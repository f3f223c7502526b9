"""Every golden vector decodes to its value, on every run, forever."""

from __future__ import annotations

import hashlib

import pytest
from vectors import CASES, ROOT, encode, read_sums, same, sums_path, vector_path

from typedstore.errors import UnsafeDataError
from typedstore.registry import registry

ALL = [
    (codec, version, case)
    for codec, versions in CASES.items()
    for version, cases in versions.items()
    for case in cases
]


@pytest.mark.parametrize("codec", sorted(CASES))
def test_codec_folder_is_complete(codec: str) -> None:
    assert (ROOT / codec / "FORMAT.md").is_file()
    assert sums_path(codec).is_file(), f"{codec}: no SHA256SUMS; see codecs/README.md"
    if registry.get(codec).name == codec:  # a retired codec has no current version
        assert registry.get(codec).version in CASES[codec], "current version has no vectors"
    listed = set(read_sums(codec))
    present = {
        p.relative_to(ROOT / codec / "vectors").as_posix()
        for p in (ROOT / codec / "vectors").rglob("*.bin")
    }
    expected = {f"v{v}/{c}.bin" for v, cases in CASES[codec].items() for c in cases}
    assert present == expected, "vector files and cases differ"
    assert listed == expected, "SHA256SUMS and cases differ"


def test_no_python_package_in_the_codecs_folder() -> None:
    assert not list(ROOT.rglob("__init__.py"))
    assert not list(ROOT.rglob("*.py"))


@pytest.mark.parametrize(("codec", "version", "case"), ALL)
def test_vector_is_unchanged(codec: str, version: int, case: str) -> None:
    path = vector_path(codec, version, case)
    assert path.is_file(), f"missing vector {path.relative_to(ROOT)}"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert read_sums(codec)[f"v{version}/{case}.bin"] == digest, "vector was changed"


@pytest.mark.parametrize(("codec", "version", "case"), ALL)
def test_vector_decodes_to_its_value(codec: str, version: int, case: str) -> None:
    value = CASES[codec][version][case].expected()
    data = memoryview(vector_path(codec, version, case).read_bytes())
    refused = CASES[codec][version][case].refused
    if refused is not None:
        with pytest.raises(UnsafeDataError, match=refused):
            registry.get(codec).decode(data, type(value))
        return
    assert same(registry.get(codec).decode(data, type(value)), value)


@pytest.mark.parametrize(
    ("codec", "version", "case"),
    [
        (c, v, k)
        for c, v, k in ALL
        if v == registry.get(c).version
        and registry.get(c).name == c  # not a retired codec, whose files another reads
        and c != "pickle"
        and CASES[c][v][k].writer is None
        and CASES[c][v][k].stable
    ],
)
def test_current_version_still_writes_the_same_bytes(codec: str, version: int, case: str) -> None:
    # pickle is left out: its bytes may differ between Python versions, not its meaning.
    assert (
        encode(codec, CASES[codec][version][case]) == vector_path(codec, version, case).read_bytes()
    )
