from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from typedstore import Reference
from typedstore.errors import InvalidKeyError, InvalidReferenceError, TypedStoreError
from typedstore.keys import MAX_KEY_LENGTH, Described, check_key, describe_key, new_object_key

segments = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-",
    min_size=1,
    max_size=20,
).filter(lambda s: s not in (".", ".."))
keys = st.lists(segments, min_size=1, max_size=5).map("/".join)
codec_names = st.from_regex(r"[a-z0-9_.-]{1,64}", fullmatch=True)
params = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True).filter(lambda n: n != "codec"),
    st.text(st.characters(codec="ascii", categories=["L", "N", "P", "S"]), max_size=30),
    max_size=3,
)


def test_parse_simple() -> None:
    ref = Reference.parse("datastore:///exp-42/6f1c?codec=safetensors")
    assert ref.key == "exp-42/6f1c"
    assert ref.codec == "safetensors"
    assert dict(ref.params) == {}
    assert str(ref) == "datastore:///exp-42/6f1c?codec=safetensors"


def test_extra_params_are_kept() -> None:
    url = "datastore:///p/x?codec=raw&sha256=abc"
    ref = Reference.parse(url)
    assert dict(ref.params) == {"sha256": "abc"}
    assert str(ref) == url
    assert Reference.parse(str(ref)) == ref


@given(keys, codec_names, params)
def test_round_trip(key: str, codec: str, extra: dict[str, str]) -> None:
    ref = Reference(key=key, codec=codec, params=extra)
    assert Reference.parse(str(ref)) == ref
    assert str(Reference.parse(str(ref))) == str(ref)


def test_references_are_hashable_and_immutable() -> None:
    ref = Reference("a/b", "raw")
    assert {ref: 1}[Reference("a/b", "raw")] == 1
    with pytest.raises(AttributeError):
        ref.key = "c"  # type: ignore[misc]


HOSTILE = [
    "datastore:///../etc/passwd?codec=raw",
    "datastore:///a/../../etc/passwd?codec=raw",
    "datastore:///%2e%2e/etc/passwd?codec=raw",
    "datastore:///%2E%2E/%2E%2E/etc?codec=raw",
    "datastore:///a/%2e%2e%2f%2e%2e/x?codec=raw",
    "datastore:///%252e%252e/x?codec=raw",
    "datastore:///..%2fx?codec=raw",
    "datastore:////etc/passwd?codec=raw",
    "datastore:///%2Fetc/passwd?codec=raw",
    "datastore:///a\\..\\b?codec=raw",
    "datastore:///a%5c..%5cb?codec=raw",
    "datastore:///a%00b?codec=raw",
    "datastore:///a\x00b?codec=raw",
    "datastore:///a//b?codec=raw",
    "datastore:///a/?codec=raw",
    "datastore:///./a?codec=raw",
    "datastore:///?codec=raw",
    "datastore:///C:/x?codec=raw",
    "datastore:///a%ff?codec=raw",
    "datastore:///a b?codec=raw",
    "datastore:///\u00e9?codec=raw",
    "datastore:///a/b",
    "datastore:///a/b?",
    "datastore:///a/b?codec=",
    "datastore:///a/b?codec=RAW",
    "datastore:///a/b?codec=os.system%28%29",
    "datastore:///a/b?codec=builtins:eval",
    "datastore:///a/b?codec=raw&codec=pickle",
    "datastore:///a/b?codec=raw&x=1&x=2",
    "datastore:///a/b?codec=raw&X=1",
    "datastore:///a/b?codec=raw&=1",
    "datastore:///a/b?codec=raw#frag",
    "datastore:///a/b?codec=raw&&",
    "datastore://host/a/b?codec=raw",
    "datastore:/a/b?codec=raw",
    "datastore:a/b?codec=raw",
    "file:///etc/passwd?codec=raw",
    "s3://bucket/a?codec=raw",
    "http://example.com/a?codec=raw",
    "DATASTORE:///a/b?codec=raw",
    "",
    "datastore:///" + "a" * (MAX_KEY_LENGTH + 1) + "?codec=raw",
    "datastore:///a?codec=raw" + "&p=1" * 40,
]


@pytest.mark.parametrize("url", HOSTILE)
def test_hostile_references_are_refused(url: str) -> None:
    with pytest.raises(InvalidReferenceError):
        Reference.parse(url)


def test_non_string_is_refused() -> None:
    with pytest.raises(InvalidReferenceError):
        Reference.parse(b"datastore:///a?codec=raw")  # type: ignore[arg-type]


def test_key_errors_are_reference_errors() -> None:
    with pytest.raises(InvalidKeyError, match=r"'\.\.'"):
        Reference.parse("datastore:///a/../b?codec=raw")
    assert issubclass(InvalidKeyError, InvalidReferenceError)
    assert issubclass(InvalidReferenceError, ValueError)


@given(st.text(max_size=200))
def test_parse_raises_only_reference_errors(text: str) -> None:
    for url in (text, "datastore:///" + text, "datastore:///a?" + text):
        try:
            ref = Reference.parse(url)
        except InvalidReferenceError:
            continue
        check_key(ref.key)
        assert Reference.parse(str(ref)) == ref


@given(st.binary(max_size=100))
def test_parse_percent_encoded_bytes(raw: bytes) -> None:
    encoded = "".join(f"%{b:02x}" for b in raw)
    try:
        ref = Reference.parse(f"datastore:///{encoded}?codec=raw")
    except TypedStoreError:
        return
    assert ".." not in ref.key.split("/")
    assert not ref.key.startswith("/")


@pytest.mark.parametrize(
    "key", ["", "/a", "a/", "a//b", ".", "..", "a/./b", "a/../b", "a\\b", "a\x00", "é", "a b"]
)
def test_bad_keys(key: str) -> None:
    with pytest.raises(InvalidKeyError):
        check_key(key)


def test_long_key_is_refused() -> None:
    check_key("a" * MAX_KEY_LENGTH)
    with pytest.raises(InvalidKeyError):
        check_key("a" * (MAX_KEY_LENGTH + 1))


def test_new_object_keys_are_unique() -> None:
    made = {new_object_key("exp/1", "npy", 0xC0FFEE) for _ in range(1000)}
    assert len(made) == 1000
    assert all(k.startswith("exp/1/") and k.endswith("-00c0ffee.npy") for k in made)
    assert all(len(k.rsplit("/", 1)[1]) == 32 + len("-00c0ffee.npy") for k in made)


@pytest.mark.parametrize(
    ("name", "described"),
    [
        ("5f2c" * 8 + "-0a0b0c0d.safetensors", Described("safetensors", 0x0A0B0C0D)),
        ("5f2c" * 8 + ".my.codec-2", Described("my.codec-2", None)),
        ("5f2c" * 8, None),  # named before names said anything
        ("5f2c" * 8 + "-0a0b0c0d", None),
        ("5F2C" * 8 + "-0a0b0c0d.raw", None),
        ("5f2c" * 8 + "-0a0b0c0.raw", None),
        ("5f2c" * 8 + "-0a0b0c0d.Raw", None),
        ("notes.txt", None),
    ],
)
def test_object_names_say_codec_and_checksum(name: str, described: Described | None) -> None:
    assert describe_key(f"exp/1/{name}") == described
    assert describe_key(name) == described


def test_a_prefix_leaves_room_for_the_object_name() -> None:
    longest = "p" * (MAX_KEY_LENGTH - 1 - (32 + 1 + 8 + 1 + 64))
    key = new_object_key(longest, "c" * 64, 0)
    assert len(key) == MAX_KEY_LENGTH
    assert check_key(key) == key
    with pytest.raises(InvalidKeyError, match="prefix is longer"):
        new_object_key(longest + "p", "raw")


@given(st.text(alphabet="ab./_-\\ \x00é", max_size=12))
def test_fast_key_pattern_agrees_with_the_segment_rules(key: str) -> None:
    from typedstore.keys import _KEY

    class Key(str):
        pass

    try:
        check_key(Key(key))  # a str subclass takes the segment-by-segment path
        slow = True
    except InvalidKeyError:
        slow = False
    assert bool(_KEY.fullmatch(key)) == slow


@given(
    st.text(alphabet="ab./_-?=%\\ \x00é", max_size=14),
    st.sampled_from(["raw", "x.y", "A", "", "raw&sha256=ab"]),
)
def test_fast_url_path_agrees_with_the_general_parser(path: str, codec: str) -> None:
    class Url(str):
        pass

    url = f"datastore:///{path}?codec={codec}"

    def outcome(text: str) -> Reference | type[Exception]:
        try:
            return Reference.parse(text)
        except TypedStoreError as exc:
            return type(exc)

    # A str subclass is never taken by the fast path, so it shows the general parser.
    assert outcome(url) == outcome(Url(url))
