"""Default integrity: a flipped bit anywhere in an object of any codec is found by every
full read and by ``verify``, with no database."""

from __future__ import annotations

import contextlib
import itertools
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from vectors import CASES, same

import typedstore as ts
from typedstore.errors import IntegrityError
from typedstore.integrity import CheckedReader, combine, crc32c, crc32c_each, crc32c_of
from typedstore.keys import describe_key
from typedstore.maintenance import verify
from typedstore.policy import CHECK_PIECE
from typedstore.protocols import Reader
from typedstore.registry import registry
from typedstore.storage import LocalStorage

# The values of every codec's current version, as its golden vectors define them.
CURRENT = {
    codec: [case for case in versions[registry.get(codec).version].values() if not case.writer]
    for codec, versions in CASES.items()
    if registry.get(codec).name == codec and registry.get(codec).version in versions
}


def flip(path: Path, position: int, bit: int) -> bytes:
    """Flip one bit of the file; return its bytes as they were."""
    data = path.read_bytes()
    damaged = bytearray(data)
    damaged[position] ^= 1 << bit
    path.write_bytes(damaged)
    return data


def positions(size: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    return {
        "first byte": 0,
        "header": min(size - 1, 9),
        "last byte": size - 1,
        "random": rng.randrange(size),
    }


def test_every_codec_of_the_registry_has_a_case() -> None:
    built_in = {name for name in registry.names() if registry.source(name) == "built-in"}
    assert built_in <= set(CURRENT), f"no golden case for {sorted(built_in - set(CURRENT))}"


@pytest.mark.parametrize("codec", sorted(CURRENT))
def test_a_flipped_bit_anywhere_is_found_by_reads_and_verify(store: Path, codec: str) -> None:
    for case in CURRENT[codec]:  # the first that is not empty
        ref = ts.DataStoreIO.serialize_write(case.value(), "p", codec=codec).reference
        if (store / ref.key).stat().st_size:
            break
        ts.DataStoreIO.delete(ref.key)
    described = describe_key(ref.key)
    assert described is not None
    assert described.codec == codec
    path = store / ref.key
    for where, position in positions(path.stat().st_size, seed=len(codec)).items():
        for bit in (0, 7):
            original = flip(path, position, bit)
            with pytest.raises(IntegrityError, match=r"do not match their crc32c") as info:
                ts.DataStoreIO(ref).read_deserialize()
            assert str(ref) in str(info.value), "the error names the object"
            with pytest.raises(IntegrityError):
                ts.DataStoreIO(ref).read()
            damaged = [damage for _, damage in verify() if damage is not None]
            assert [(d.key, d.damaged) for d in damaged] == [(ref.key, True)], (where, bit)
            path.write_bytes(original)
    assert same(ts.DataStoreIO(ref).read_deserialize(), case.expected())
    assert [damage for _, damage in verify()] == [None]


@pytest.mark.parametrize("zero_copy", [False, True])
def test_large_objects_are_checked_however_they_are_read(store: Path, zero_copy: bool) -> None:
    # Large enough to be written while summed on another thread, and read in pieces.
    array = np.random.default_rng(0).random(5 * CHECK_PIECE // 16)  # 2.5 pieces
    ref = ts.DataStoreIO.serialize_write(array, "p").reference
    path = store / ref.key
    for position in positions(path.stat().st_size, seed=1).values():
        original = flip(path, position, 3)
        with pytest.raises(IntegrityError):
            ts.DataStoreIO(ref).read_deserialize(np.ndarray, zero_copy=zero_copy)
        path.write_bytes(original)
    back = ts.DataStoreIO(ref).read_deserialize(np.ndarray, zero_copy=zero_copy)
    assert np.array_equal(back, array)


def test_lazy_entries_check_their_own_bytes(store: Path) -> None:
    url = ts.DataStore(w=np.arange(1000.0), note="run 1", big=np.ones(1 << 18)).to_url("p")
    path = store / ts.Reference.parse(url).key
    data = path.read_bytes()
    at = data.index(np.arange(1000.0).tobytes()) + 100  # inside entry "w"
    flip(path, at, 0)
    lazy = ts.DataStore.from_url(url, lazy=True)
    assert lazy.note == "run 1"
    assert np.array_equal(lazy.big, np.ones(1 << 18))
    with pytest.raises(IntegrityError, match="entry 'w': the stored bytes do not match"):
        _ = lazy.w
    with pytest.raises(IntegrityError):
        ts.DataStore.from_url(url)


def test_a_datastore_is_named_by_the_checksum_of_its_bytes(store: Path) -> None:
    # Its checksum is combined from its entries': large and small ones, of every item
    # size (laid out out of key order), encoded and copied from a lazy container.
    rng = np.random.default_rng(2)
    ds = ts.DataStore(
        small=np.arange(7, dtype=np.int8),
        big16=rng.integers(0, 9, 1 << 20, dtype=np.int16),
        note="text",
        big64=rng.random(1 << 18),
        raw=bytes(range(256)) * 8192,
        big8=rng.integers(0, 9, 3 << 20, dtype=np.uint8),
    )
    url = ds.to_url("p")
    lazy = ts.DataStore.from_url(url, lazy=True)
    lazy.extra = np.ones(1 << 17, dtype=np.float32)
    copied = lazy.to_url("q")
    for written in (url, copied):
        key = ts.Reference.parse(written).key
        described = describe_key(key)
        assert described is not None
        assert described[1] == crc32c((store / key).read_bytes())
    assert same_datastore(ts.DataStore.from_url(copied), {**ds, "extra": lazy.extra})


def same_datastore(ds: ts.DataStore, expected: dict[str, object]) -> bool:
    return list(ds) == list(expected) and all(
        np.array_equal(ds[k], v) if isinstance(v, np.ndarray) else ds[k] == v
        for k, v in expected.items()
    )


def test_objects_written_without_checksums_or_before_them_still_read(store: Path) -> None:
    array = np.arange(10)
    with ts.options.ctx({"datastore.checksum": None}):
        ref = ts.DataStoreIO.serialize_write(array, "p").reference
    assert describe_key(ref.key) == ("safetensors", None)
    assert ref.key.endswith(".safetensors")
    checked = ts.DataStoreIO.serialize_write(array, "p").reference
    # A copy under a name as objects had before names said anything (32 hex digits).
    legacy = ts.Reference(f"p/{'ab' * 16}", "safetensors")
    shutil.copyfile(store / checked.key, store / legacy.key)
    for unchecked in (ref, legacy):
        assert np.array_equal(ts.DataStoreIO(unchecked).read_deserialize(), array)
        flip(store / unchecked.key, (store / unchecked.key).stat().st_size - 1, 0)
        assert not np.array_equal(ts.DataStoreIO(unchecked).read_deserialize(), array)


def test_sha256_references_name_the_crc32c_too(store: Path) -> None:
    with ts.options.ctx({"datastore.checksum": "sha256"}):
        ref = ts.DataStoreIO.write(b"payload", "p").reference
    assert "sha256" in ref.params
    described = describe_key(ref.key)
    assert described is not None
    assert described.crc32c is not None  # verify on a bare store is exact for these too
    flip(store / ref.key, 0, 0)
    with pytest.raises(IntegrityError, match="sha256"):
        ts.DataStoreIO(ref).read()
    assert [d.key for _, d in verify() if d is not None] == [ref.key]


def test_a_decoder_reading_out_of_order_is_checked_exactly(store: Path) -> None:
    # Tables are read footer first: the bytes before it are summed when reached, the
    # footer read again at the end; a damaged byte anywhere is found either way.
    pa = pytest.importorskip("pyarrow")
    table = pa.table({"x": np.arange(300_000), "y": np.ones(300_000)})
    ref = ts.DataStoreIO.serialize_write(table, "p").reference
    path = store / ref.key
    assert ts.DataStoreIO(ref).read_deserialize().equals(table)
    size = path.stat().st_size
    for position in (0, size // 2, size - 3):
        original = flip(path, position, 5)
        with pytest.raises(IntegrityError):
            ts.DataStoreIO(ref).read_deserialize()
        path.write_bytes(original)


@given(st.binary(max_size=64), st.binary(max_size=64))
def test_combine_gives_the_checksum_of_the_concatenation(a: bytes, b: bytes) -> None:
    assert combine(crc32c(a), crc32c(b), len(b)) == crc32c(a + b)


@pytest.mark.parametrize("length", [(1 << 29) - 1, 1 << 29, (1 << 31) + 7])
def test_combine_over_gigabytes(length: int) -> None:
    # From 2^29 bytes on (the halves of a 1 GiB object), the shift needs powers of x past
    # the 32nd squaring. Zeros never written take no memory.
    zeros = bytes(length)
    head = crc32c(b"head")
    assert combine(head, crc32c(zeros), length) == crc32c(zeros, head)
    with pytest.raises(ValueError, match="cannot combine"):
        combine(head, 0, 1 << 61)


# Past 2 * CHECK_PIECE, sums are split between two threads.
@pytest.mark.parametrize(
    "sizes",
    [[0], [5, 0, 7], [2 * CHECK_PIECE + 99], [3 * CHECK_PIECE // 4, 1, 3 * CHECK_PIECE // 2],
     [CHECK_PIECE // 4] * 12],
)  # fmt: skip
def test_sums_split_between_threads_equal_one_sum(sizes: list[int]) -> None:
    data = np.random.default_rng(len(sizes)).integers(0, 256, sum(sizes), np.uint8).tobytes()
    cuts = np.cumsum([0, *sizes])
    chunks = [memoryview(data)[a:b] for a, b in itertools.pairwise(cuts)]
    assert crc32c_of(chunks) == crc32c(data)
    assert crc32c_each([[chunk] for chunk in chunks]) == [crc32c(chunk) for chunk in chunks]
    items = [chunks[: len(chunks) // 2], chunks[len(chunks) // 2 :]]
    assert crc32c_each(items) == [crc32c(b"".join(item)) for item in items]


def test_many_arrays_read_at_once_are_checked_piece_by_piece(store: Path) -> None:
    # One read of twelve arrays, summed in pieces of several arrays each.
    arrays = {f"a{i}": np.random.default_rng(i).random(CHECK_PIECE // 32) for i in range(12)}
    url = ts.DataStore(arrays).to_url("p")
    path = store / ts.Reference.parse(url).key
    back = ts.DataStore.from_url(url)
    assert all(np.array_equal(back[k], v) for k, v in arrays.items())
    data = path.read_bytes()
    for key in ("a0", "a7", "a11"):
        at = data.index(arrays[key].tobytes()) + 12345
        flip(path, at, 6)
        with pytest.raises(IntegrityError):
            ts.DataStore.from_url(url)
        path.write_bytes(data)


def read_through(reader: Reader, how: str, start: int, length: int) -> bytes:
    if how == "read":
        return reader.read(start, length)
    out = bytearray(length)
    return bytes(out[: reader.readinto(start, out)])


# A whole object in one read of 2 * CHECK_PIECE or more is summed in pipelined pieces.
@pytest.mark.parametrize("how", ["read", "readinto", "readinto, pipelined"])
def test_a_reader_checked_at_end_fails_the_read_that_reaches_it(tmp_path: Path, how: str) -> None:
    pipelined = how.endswith("pipelined")
    size = 2 * CHECK_PIECE + 5 if pipelined else 1000
    data = np.random.default_rng(1).integers(0, 256, size, np.uint8).tobytes()
    storage = LocalStorage(tmp_path)
    storage.write("p/x", [data])
    cut = 0 if pipelined else size // 3
    for expected, damaged in ((crc32c(data), False), (crc32c(data) ^ 1, True)):
        with storage.open("p/x") as inner:
            reader = CheckedReader(inner, expected, "p/x", check_at_end=True)
            if cut:
                assert read_through(reader, how, 0, cut) == data[:cut]
            raises = pytest.raises(IntegrityError) if damaged else contextlib.nullcontext()
            with raises:
                assert read_through(reader, how, cut, size - cut) == data[cut:]
