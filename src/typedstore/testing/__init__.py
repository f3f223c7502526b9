"""A conformance kit for codec authors: run it in your own test suite.

    from hypothesis import strategies as st
    from typedstore.testing import check_codec

    def test_my_codec() -> None:
        check_codec(MyCodec(), st.builds(MyValue, st.integers()))

It needs hypothesis (a test dependency, not a runtime one). Every check raises
AssertionError with a message that says what the codec got wrong. Storage authors have
their own suite in :mod:`typedstore.testing.storage`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from typedstore.errors import DecodeError, RegistrationError, TypedStoreError
from typedstore.protocols import Codec, byte_view
from typedstore.registry import CodecRegistry

__all__ = ["check_codec", "equal"]


def equal(a: Any, b: Any) -> bool:
    """Equality that compares arrays by dtype, shape and content, recursively."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if type(a) is not type(b) or a.dtype != b.dtype or a.shape != b.shape:
            return False
        if a.dtype.hasobject:
            return bool(np.array_equal(a, b))
        # Bit for bit: NaN, NaT and signed zeros count as equal only to themselves.
        return bool(a.tobytes() == b.tobytes())
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return type(a) is type(b) and a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return (
            type(a) is type(b)
            and len(a) == len(b)
            and all(equal(x, y) for x, y in zip(a, b, strict=True))
        )
    return type(a) is type(b) and bool(a == b)


def check_codec(
    codec: Codec[Any],
    values: Any,
    *,
    deterministic: bool = False,
    eq: Callable[[Any, Any], bool] = equal,
    max_examples: int = 50,
) -> None:
    """Check that ``codec`` keeps the codec contract for the values of a strategy.

    ``values`` is a hypothesis strategy of values the codec must accept. Checks: the name,
    version and types rules; that the codec registers in a fresh registry, is found by
    name and by value, and is refused a second time; round trips through a read-only
    buffer (``eq``, by default :func:`equal`); identical bytes for equal values when
    ``deterministic``; and that random, truncated and mutated bytes make ``decode``
    return or raise :class:`~typedstore.errors.DecodeError`, never another exception.
    """
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    _check_registration(codec)
    checked = settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )

    @checked
    @given(values)
    def round_trip(value: Any) -> None:
        assert codec.accepts(value), f"codec {codec.name!r} refuses a value it should serve"
        data = _encode(codec, value)
        back = codec.decode(memoryview(data), type(value))
        assert eq(back, value), f"codec {codec.name!r}: {value!r} came back as {back!r}"
        if deterministic:
            assert _encode(codec, value) == data, f"codec {codec.name!r} is not deterministic"

    @checked
    @given(values, st.data())
    def hostile(value: Any, data: st.DataObject) -> None:
        encoded = bytearray(_encode(codec, value))
        candidates = [bytes(data.draw(st.binary(max_size=256)))]
        if encoded:
            cut = data.draw(st.integers(0, len(encoded) - 1))
            candidates.append(bytes(encoded[:cut]))
            mutated = bytearray(encoded)
            for _ in range(data.draw(st.integers(1, 4))):
                position = data.draw(st.integers(0, len(mutated) - 1))
                mutated[position] = data.draw(st.integers(0, 255))
            candidates.append(bytes(mutated))
        for candidate in candidates:
            try:
                codec.decode(memoryview(candidate), None)
            except DecodeError:
                pass
            except TypedStoreError as exc:
                raise AssertionError(
                    f"codec {codec.name!r}: malformed input raised {type(exc).__name__}, "
                    "not DecodeError"
                ) from exc
            except Exception as exc:
                raise AssertionError(
                    f"codec {codec.name!r}: malformed input raised {type(exc).__name__}: "
                    f"{exc}; decoders must raise typedstore.errors.DecodeError"
                ) from exc

    round_trip()
    hostile()


def _encode(codec: Codec[Any], value: Any) -> bytes:
    return b"".join(byte_view(chunk) for chunk in codec.encode(value))


def _check_registration(codec: Codec[Any]) -> None:
    # Registration checks the name, version and types rules: the registry's own checks.
    registry = CodecRegistry(load_plugins=False)
    try:
        registry.register(codec)
    except RegistrationError as exc:
        raise AssertionError(f"the codec cannot be registered: {exc}") from None
    assert registry.get(codec.name) is codec, "the registry does not find the codec by name"
    try:
        registry.register(codec)
    except RegistrationError:
        pass
    else:
        raise AssertionError("registering the same name twice was not refused")
