from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest
import safetensors.numpy
from hypothesis import given
from hypothesis import strategies as st

import typedstore as ts
from helpers import SAFETENSORS_DTYPES, any_arrays, join, round_trip, same
from typedstore import policy
from typedstore.codecs import SafetensorsCodec
from typedstore.codecs import safetensors as module
from typedstore.codecs.safetensors import MAX_HEADER_SIZE, read_header
from typedstore.errors import DecodeError
from typedstore.protocols import BytesReader

codec = SafetensorsCodec()
TENSOR_NAMES = st.text(min_size=1).filter(lambda name: name != "__metadata__")


def assert_same_array(got: Any, want: np.ndarray[Any, Any]) -> None:
    assert type(got) is np.ndarray
    assert got.shape == want.shape
    assert got.dtype == want.dtype.newbyteorder("=") or got.dtype == want.dtype
    assert np.array_equal(got, want, equal_nan=want.dtype.kind in "fc")
    assert got.flags.writeable
    assert got.flags.c_contiguous


@given(any_arrays(SAFETENSORS_DTYPES))
def test_round_trip_every_dtype_shape_and_layout(array: np.ndarray[Any, Any]) -> None:
    # A big-endian array goes to npy, which keeps its byte order; called directly, this
    # codec stores it little-endian.
    assert codec.accepts(array) == (array.dtype.byteorder != ">")
    assert_same_array(round_trip(codec, array), array)
    assert_same_array(round_trip(codec, array, np.ndarray), array)


@given(st.dictionaries(TENSOR_NAMES, any_arrays(SAFETENSORS_DTYPES), min_size=1, max_size=5))
def test_round_trip_dicts(arrays: dict[str, np.ndarray[Any, Any]]) -> None:
    got = round_trip(codec, arrays)
    assert type(got) is dict
    assert list(got) == list(arrays)
    for name, array in arrays.items():
        assert_same_array(got[name], array)


@given(any_arrays(SAFETENSORS_DTYPES))
def test_official_library_reads_what_we_write(array: np.ndarray[Any, Any]) -> None:
    loaded = safetensors.numpy.load(join(codec.encode(array)))
    assert list(loaded) == ["data"]
    assert np.array_equal(loaded["data"], array, equal_nan=True)
    assert loaded["data"].shape == array.shape


@given(st.dictionaries(TENSOR_NAMES, any_arrays(SAFETENSORS_DTYPES), min_size=1, max_size=4))
def test_we_read_what_the_official_library_writes(arrays: dict[str, np.ndarray[Any, Any]]) -> None:
    contiguous = {k: np.asarray(v, order="C") for k, v in arrays.items()}
    data = safetensors.numpy.save(contiguous, metadata={"producer": "other tool"})
    got = codec.decode(memoryview(data))
    assert set(got) == set(arrays)
    for name, array in arrays.items():
        assert_same_array(got[name], array)


def test_official_file_with_one_tensor_decodes_to_the_array_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    safetensors.numpy.save_file({"weight": np.eye(3, dtype=np.float32)}, path)
    data = path.read_bytes()
    assert_same_array(codec.decode(data, np.ndarray), np.eye(3, dtype=np.float32))
    assert list(codec.decode(data)) == ["weight"]


def test_header_is_aligned_and_data_ordered_by_alignment() -> None:
    chunks = codec.encode({"a": np.zeros(3, np.uint8), "b": np.zeros(2, np.float64)})
    data = join(chunks)
    (size,) = struct.unpack("<Q", data[:8])
    assert size % 8 == 0
    header = read_header(data)
    entries, metadata = header.tensors, header.metadata
    assert entries["b"].start == 8 + size  # the float64 tensor comes first: aligned
    assert metadata == {"typedstore.kind": "dict"}


@pytest.mark.parametrize(
    ("nbytes", "align"), [((1 << 20) - 16, 8), ((1 << 20) - 8, 4096), (3 << 20, 4096)]
)
def test_a_mib_of_data_or_more_starts_at_a_page_boundary(nbytes: int, align: int) -> None:
    # With the 8 bytes of "b", the first case holds just under 1 MiB of data, the others
    # 1 MiB or more.
    arrays: dict[str, np.ndarray[Any, Any]] = {
        "a": np.arange(nbytes // 8, dtype=np.float64),
        "b": np.arange(8, dtype=np.uint8),
    }
    data = join(codec.encode(arrays))
    (size,) = struct.unpack("<Q", data[:8])
    text = json.dumps(json.loads(data[8 : 8 + size]), separators=(",", ":"))
    assert (8 + size) % align == 0
    assert 0 <= size - len(text) < align  # padded no further than needed
    official = safetensors.numpy.load(data)
    for name, array in arrays.items():
        assert np.array_equal(official[name], array)
        assert_same_array(codec.decode(data)[name], array)


def test_large_contiguous_arrays_are_not_copied() -> None:
    array = np.ones((256, 256), np.float32)
    _, body = codec.encode(array)
    assert np.shares_memory(np.frombuffer(memoryview(body), np.uint8), array)


@pytest.mark.parametrize(
    "value",
    [
        np.ma.masked_array(np.array(["a", "b"]), mask=[False, True]),
        np.zeros(2, np.complex128),
        np.array(["a"]),
        np.array([1], dtype=object),
        np.zeros(2, dtype=[("a", "i4")]),
        np.zeros(2, dtype="datetime64[s]"),
        {},
        {"a": np.zeros(2), 1: np.zeros(2)},
        {"a": np.zeros(2), "b": [1]},
        {"__metadata__": np.zeros(2)},
        [np.zeros(2)],
    ],
    ids=repr,
)
def test_refuses(value: Any) -> None:
    assert not codec.accepts(value)


def make(header: dict[str, Any], body: bytes = b"", *, size: int | None = None) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if size is None else size) + raw + body


GOOD_ENTRY = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}

MALFORMED = {
    "empty": b"",
    "short": b"\x01\x00",
    "pickle": pickle.dumps({"a": 1}),
    "npy": b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }",
    "random": bytes(range(256)) * 4,
    "size past end": make({"a": GOOD_ENTRY}, b"\0" * 8, size=10_000),
    "size over cap": struct.pack("<Q", MAX_HEADER_SIZE + 1) + b"{}",
    "huge size": struct.pack("<Q", 2**63) + b"{}",
    "not json": struct.pack("<Q", 4) + b"{{{{",
    "not utf-8": struct.pack("<Q", 4) + b'{"\xff"',
    "json list": make([], b""),  # type: ignore[arg-type]
    "duplicate key": struct.pack("<Q", 2 * len(json.dumps({"a": GOOD_ENTRY})))
    + (json.dumps({"a": GOOD_ENTRY})[:-1] + ", " + json.dumps({"a": GOOD_ENTRY})[1:]).encode()
    + b"\0" * 8,
    "unknown dtype": make({"a": {**GOOD_ENTRY, "dtype": "F128"}}, b"\0" * 8),
    "bf16 of the wrong size": make(
        {"a": {**GOOD_ENTRY, "dtype": "BF16", "data_offsets": [0, 8]}}, b"\0" * 8
    ),
    "missing field": make({"a": {"dtype": "F32", "shape": [2]}}, b"\0" * 8),
    "extra field": make({"a": {**GOOD_ENTRY, "x": 1}}, b"\0" * 8),
    "negative dim": make({"a": {**GOOD_ENTRY, "shape": [-2]}}, b"\0" * 8),
    "float dim": make({"a": {**GOOD_ENTRY, "shape": [2.0]}}, b"\0" * 8),
    "bool dim": make({"a": {**GOOD_ENTRY, "shape": [True, 2]}}, b"\0" * 8),
    "shape lies (too big)": make({"a": {**GOOD_ENTRY, "shape": [10**12]}}, b"\0" * 8),
    "shape lies (too small)": make({"a": {**GOOD_ENTRY, "shape": [1]}}, b"\0" * 8),
    "offsets reversed": make({"a": {**GOOD_ENTRY, "data_offsets": [8, 0]}}, b"\0" * 8),
    "offsets past end": make({"a": {**GOOD_ENTRY, "data_offsets": [8, 16]}}, b"\0" * 16),
    "gap": make({"a": {**GOOD_ENTRY, "data_offsets": [4, 12]}}, b"\0" * 12),
    "trailing bytes": make({"a": GOOD_ENTRY}, b"\0" * 12),
    "truncated data": make({"a": GOOD_ENTRY}, b"\0" * 4),
    "overlap": make({"a": GOOD_ENTRY, "b": GOOD_ENTRY}, b"\0" * 16),
    "bad metadata": make({"__metadata__": {"k": 1}, "a": GOOD_ENTRY}, b"\0" * 8),
    "metadata not dict": make({"__metadata__": [], "a": GOOD_ENTRY}, b"\0" * 8),
    "entry not dict": make({"a": [1, 2]}, b""),
    "nan in header": struct.pack("<Q", 3) + b"NaN",
    "too many dims": make({"a": {"dtype": "U8", "shape": [1] * 65, "data_offsets": [0, 1]}}, b"\0"),
    "single but two": make(
        {"__metadata__": {"typedstore.kind": "ndarray"}, "a": GOOD_ENTRY,
         "b": {**GOOD_ENTRY, "data_offsets": [8, 16]}},
        b"\0" * 16,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed(name: str) -> None:
    with pytest.raises(DecodeError):
        codec.decode(memoryview(MALFORMED[name]))


def official_accepts(data: bytes) -> bool:
    try:
        safetensors.numpy.load(data)
    except Exception:
        return False
    return True


# Cases where we are deliberately stricter than the official parser.
STRICTER = {"duplicate key", "extra field", "single but two"}


@pytest.mark.parametrize("name", sorted(set(MALFORMED) - STRICTER))
def test_official_parser_also_refuses(name: str) -> None:
    # Checks the cases above against the reference implementation.
    assert not official_accepts(MALFORMED[name])


@given(st.data())
def test_at_least_as_strict_as_the_official_parser(data: st.DataObject) -> None:
    arrays: dict[str, np.ndarray[Any, Any]] = {
        "w": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": np.array([1, 2], dtype=np.int64),
        "m": np.array([True]),
    }
    original = bytearray(join(codec.encode(arrays)))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(original) - 1))
        original[position] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        del original[data.draw(st.integers(0, len(original))) :]
    mutated = bytes(original)
    try:
        streamed = codec.decode_from(BytesReader(mutated))  # the path of small files
    except DecodeError:
        streamed = None
    try:
        ours = codec.decode(memoryview(mutated))
    except DecodeError:
        assert streamed is None, "decode_from accepted what decode refuses"
        return
    assert streamed is not None, "decode_from refused what decode accepts"
    assert official_accepts(mutated), "we accepted a file the official parser refuses"
    theirs = safetensors.numpy.load(mutated)
    assert set(ours) == set(theirs)
    for name in ours:
        assert np.array_equal(ours[name], theirs[name], equal_nan=True)


@given(st.dictionaries(TENSOR_NAMES, any_arrays(SAFETENSORS_DTYPES), min_size=1, max_size=4))
def test_decode_from_a_reader_and_as_views_agree(arrays: dict[str, np.ndarray[Any, Any]]) -> None:
    data = join(codec.encode(arrays))
    plain = codec.decode(data)
    streamed = codec.decode_from(BytesReader(data))
    viewed = codec.decode_view(data)
    for name in arrays:
        assert_same_array(streamed[name], plain[name])
        assert np.array_equal(viewed[name], plain[name], equal_nan=True)
        assert viewed[name].nbytes == 0 or np.shares_memory(
            viewed[name], np.frombuffer(data, np.uint8)
        )


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_through_a_reader(name: str) -> None:
    with pytest.raises(DecodeError):
        codec.decode_from(BytesReader(MALFORMED[name]))


def file_with(header: dict[str, Any], data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def test_misaligned_tensors_of_other_writers_decode_to_aligned_arrays() -> None:
    values = np.array([1.5, -2.0], dtype="<f8")
    data = file_with(
        {
            "a": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]},
            "b": {"dtype": "F64", "shape": [2], "data_offsets": [3, 19]},
        },
        b"xyz" + values.tobytes(),
    )
    for decoded in (codec.decode(data), codec.decode_from(BytesReader(data))):
        assert decoded["b"].flags.aligned
        assert decoded["b"].flags.writeable
        assert np.array_equal(decoded["b"], values)
        assert bytes(decoded["a"]) == b"xyz"


def test_a_header_seen_before_is_checked_against_the_new_file_size() -> None:
    data = join(codec.encode({"a": np.arange(4)}))
    codec.decode(data)
    codec.decode_from(BytesReader(data))
    for damaged in (data + b"\0", data[:-1]):
        with pytest.raises(DecodeError):
            codec.decode(damaged)
        with pytest.raises(DecodeError):
            codec.decode_from(BytesReader(damaged))


HEADER_DTYPES = st.sampled_from(["bool", "u1", "i2", "<u4", ">i8", "<f2", ">f4", "<f8", "c8"])


@given(
    st.dictionaries(
        TENSOR_NAMES,
        st.tuples(HEADER_DTYPES, st.lists(st.integers(0, 3), max_size=3)),
        min_size=1,
        max_size=4,
    ),
    st.dictionaries(st.text(), st.text(), max_size=2),
)
def test_written_headers_are_exactly_what_json_gives(
    layout: dict[str, tuple[str, list[int]]], metadata: dict[str, str]
) -> None:
    arrays = {name: np.zeros(shape, dtype) for name, (dtype, shape) in layout.items()}
    for _ in range(2):  # the second time, the header comes from the cache
        chunks = module.encode_tensors(arrays, metadata)
        data = join(chunks)
        (size,) = struct.unpack("<Q", data[:8])
        entries = read_header(data).tensors
        expected: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
        for name, entry in entries.items():
            expected[name] = {
                "dtype": module._NAMES[entry.dtype],
                "shape": list(arrays[name].shape),
                "data_offsets": [entry.start - 8 - size, entry.end - 8 - size],
            }
        text = json.dumps(expected, separators=(",", ":"), ensure_ascii=True)
        assert bytes(data[8 : 8 + size]).rstrip(b" ") == text.encode()
        assert official_accepts(bytes(data))


def test_header_caches_are_bounded() -> None:
    module._header.cache_clear()
    module.parse_header.cache_clear()
    for n in range(2 * policy.CACHED_HEADERS + 10):
        data = join(codec.encode({"a": np.zeros(n, np.uint8)}))
        codec.decode_from(BytesReader(data))
    assert module._header.cache_info().currsize == policy.CACHED_HEADERS
    assert 0 < module.parse_header.kept_bytes() <= policy.CACHED_HEADER_BYTES
    # A layout of many tensors is encoded and parsed, and kept by neither cache.
    module._header.cache_clear()
    module.parse_header.cache_clear()
    big = {f"t{i:05d}-{'x' * 40}": np.zeros(1) for i in range(policy.CACHED_HEADER_MAX // 60)}
    data = join(codec.encode(big))
    assert len(data) - 8 * len(big) > policy.CACHED_HEADER_MAX
    assert read_header(data).tensors.keys() == big.keys()
    assert module._header.cache_info().currsize == 0
    assert module.parse_header.kept_bytes() == 0


def test_a_kept_header_is_shared_and_immutable() -> None:
    data = join(codec.encode({"a": np.arange(3)}))
    first, second = read_header(data), read_header(data)
    assert first is second
    with pytest.raises(TypeError):
        first.tensors["b"] = first.tensors["a"]  # type: ignore[index]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        first.metadata = {}  # type: ignore[misc]


@pytest.mark.parametrize("elements", [100, 20_000, 200_000])  # 2 KiB, 400 KiB, 4 MiB in all
def test_decode_from_at_every_size(elements: int) -> None:
    arrays: dict[str, np.ndarray[Any, Any]] = {
        "a": np.arange(elements, dtype=np.float64),
        "b": np.arange(elements, dtype=np.int32)[::-1].copy(),
        "c": np.ones((elements // 10, 10), dtype=np.float16),
    }
    data = join(codec.encode(arrays))
    for name in arrays:
        decoded = codec.decode_from(BytesReader(data))
        for other, want in arrays.items():
            assert_same_array(decoded[other], want)
        decoded[name][...] = 0  # writable, and nothing else changes
        for other, want in arrays.items():
            if other != name:
                assert_same_array(decoded[other], want)


class CountingReader(BytesReader):
    """A reader over bytes that keeps the byte ranges asked of it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.asked: list[tuple[int, int]] = []

    def read(self, start: int, length: int) -> bytes:
        self.asked.append((start, length))
        return super().read(start, length)


def test_the_header_is_read_in_one_request_when_short_and_in_two_when_long() -> None:
    first = policy.HEADER_FIRST_READ
    lengths = set()
    # Metadata of growing length puts the header's end on both sides of the first read,
    # and on it; files written by the official library.
    for pad in [*range(first - 120, first + 8), 3 * first, 0]:
        data = safetensors.numpy.save({"a": np.arange(3)}, metadata={"m": "x" * pad})
        (length,) = struct.unpack("<Q", data[:8])
        lengths.add(length)
        reader = CountingReader(data)
        header, expected = read_header(reader), read_header(data)
        assert (header.tensors, header.metadata) == (expected.tensors, expected.metadata)
        if 8 + length <= first:
            assert reader.asked == [(0, first)]
        else:
            assert reader.asked == [(0, first), (first, 8 + length - first)]
    assert min(lengths) < first - 8 < max(lengths)
    assert first - 8 in lengths  # a header ending exactly where the first read does


def test_a_length_past_the_end_is_refused_before_any_further_read() -> None:
    data = struct.pack("<Q", 10**6) + b"{}"
    reader = CountingReader(data)
    with pytest.raises(DecodeError, match="runs past the end"):
        read_header(reader)
    assert reader.asked == [(0, policy.HEADER_FIRST_READ)]


def test_metadata_travels_with_a_tensor_file(store: Path) -> None:
    arrays: dict[str, Any] = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "i": np.arange(3)}
    value = ts.TensorFile(arrays, {"source": "survey", "units": "m"})
    io = ts.DataStoreIO.serialize_write(value, "p")
    assert io.reference.codec == "safetensors"
    back = io.read_deserialize()
    assert type(back) is ts.TensorFile
    assert dict(back.metadata) == {"source": "survey", "units": "m"}
    assert same(dict(back.tensors), arrays)
    empty = ts.DataStoreIO.serialize_write(ts.TensorFile({}), "p").read_deserialize()
    assert same(empty, ts.TensorFile({}))
    data = safetensors.numpy.save(arrays, metadata={"format": "np"})
    foreign = SafetensorsCodec().decode(memoryview(data), ts.TensorFile)
    assert dict(foreign.metadata) == {"format": "np"}
    with pytest.raises(ValueError, match="reserved"):
        ts.TensorFile(arrays, {"typedstore.kind": "dict"})
    with pytest.raises(TypeError, match="str to str"):
        ts.TensorFile(arrays, {"n": 1})  # type: ignore[dict-item]
