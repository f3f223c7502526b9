"""Static typing of the public API: the asserts here are checked by mypy over tests/,
and ``test_misuse_is_rejected_with_its_error`` runs mypy on code that must not
type-check, pinning the one error each misuse must get."""

from __future__ import annotations

from pathlib import Path
from typing import Any, assert_type

import numpy as np
import pytest

import typedstore as ts


def test_inferred_types(store: Path) -> None:
    io = ts.DataStoreIO.serialize_write(np.zeros(3), "p", codec="safetensors")
    assert_type(io, ts.DataStoreIO)
    assert_type(io.url, str)
    assert_type(io.reference, ts.Reference)
    array = io.read_deserialize(expected_type=np.ndarray)
    assert_type(array, np.ndarray[Any, Any])
    anything = io.read_deserialize()
    assert_type(anything, Any)
    raw = ts.DataStoreIO.write(b"x", "p")
    assert_type(raw.read(), bytes)
    assert_type(raw.read_deserialize(bytes), bytes)
    assert_type(ts.DataStoreIO.delete("p"), int)
    assert_type(ts.registry.get("raw"), ts.Codec[Any])
    assert_type(ts.Reference.parse(io.url), ts.Reference)
    assert isinstance(array, np.ndarray)
    explicit = ts.Store(str(store))
    ref = explicit.serialize_write(np.zeros(3), "p")
    assert_type(ref, ts.Reference)
    assert_type(explicit.read_deserialize(ref, np.ndarray), np.ndarray[Any, Any])
    assert_type(explicit.read_deserialize(ref.url), Any)
    assert_type(explicit.read(ref), bytes)


# Each misuse and the one error mypy must report for it: its code, and the part of its
# message that says what is wrong (the rest of the wording varies between mypy releases).
MISUSE: dict[str, tuple[str, str, str]] = {
    "expected type must be a type": (
        'ts.DataStoreIO("datastore:///a/b?codec=raw").read_deserialize(expected_type=3)',
        "call-overload",
        'No overload variant of "read_deserialize" of "DataStoreIO" matches argument type "int"',
    ),
    "result is the expected type": (
        'x: str = ts.DataStoreIO("datastore:///a/b?codec=raw").read_deserialize(bytes)',
        "assignment",
        'expression has type "bytes", variable has type "str"',
    ),
    "write takes a buffer": (
        'ts.DataStoreIO.write("text")',
        "arg-type",
        'Argument 1 to "write" of "DataStoreIO" has incompatible type "str"; expected "Buffer"',
    ),
    "prefix is a string": (
        'ts.DataStoreIO.write(b"x", relative_path_prefix=3)',
        "arg-type",
        'Argument "relative_path_prefix" to "write" of "DataStoreIO" has incompatible type "int"',
    ),
    "codec is a name or a codec": (
        "ts.DataStoreIO.serialize_write(1, codec=3)",
        "arg-type",
        'incompatible type "int"; expected "str | Codec[Any] | None"',
    ),
    "register takes a codec": (
        "ts.registry.register(object())",
        "call-overload",
        'No overload variant of "register" of "CodecRegistry" matches argument type "object"',
    ),
    "reference url is a string": (
        "ts.DataStoreIO(3)",
        "arg-type",
        'Argument 1 to "DataStoreIO" has incompatible type "int"; expected "str | Reference"',
    ),
    "a store reads references": (
        "ts.Store().read_deserialize(3)",
        "call-overload",
        'No overload variant of "read_deserialize" of "Store" matches argument type "int"',
    ),
    "a store's storage is a Storage": (
        "ts.Store(storage=3)",
        "arg-type",
        'Argument "storage" to "Store" has incompatible type "int"; expected "Storage | None"',
    ),
    "priority is keyword-only": (
        "ts.registry.register(ts.registry.get('raw'), 1)",
        "call-overload",
        'No overload variant of "register" of "CodecRegistry" matches argument types '
        '"Codec[Any]", "int"',
    ),
}


CORRECT = (
    "a: np.ndarray = ts.DataStoreIO('datastore:///a/b?codec=raw').read_deserialize(np.ndarray)"
)


@pytest.fixture(scope="module")
def mypy_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """mypy's output per snippet, from one mypy run over all of them (it is slow to start)."""
    from mypy import api

    tmp = tmp_path_factory.mktemp("typing")
    snippets = {**{name: code for name, (code, _, _) in MISUSE.items()}, "correct": CORRECT}
    files = {}
    for i, (name, code) in enumerate(snippets.items()):
        path = tmp / f"snippet_{i}.py"
        path.write_text(f"import numpy as np\nimport typedstore as ts\n\n{code}\n")
        files[name] = path
    out, err, _ = api.run(
        [
            "--strict",
            "--no-incremental",
            "--cache-dir",
            str(tmp / "cache"),
            *map(str, files.values()),
        ]
    )
    assert not err, err
    # Errors only: the notes that follow some (the overload variants) are not pinned.
    return {
        name: "\n".join(
            line.split(": error: ", 1)[1]
            for line in out.splitlines()
            if line.startswith(str(path)) and ": error: " in line
        )
        for name, path in files.items()
    }


@pytest.mark.parametrize("name", sorted(MISUSE))
def test_misuse_is_rejected_with_its_error(name: str, mypy_report: dict[str, str]) -> None:
    _, code, message = MISUSE[name]
    (error,) = mypy_report[name].splitlines()  # exactly one error
    assert error.endswith(f"[{code}]"), error
    assert message in error


def test_correct_snippet_passes(mypy_report: dict[str, str]) -> None:
    # The harness itself must not reject everything.
    assert mypy_report["correct"] == ""
