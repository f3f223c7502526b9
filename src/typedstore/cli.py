"""The ``typedstore`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from typedstore.io import DataStoreIO, current_storage
from typedstore.options import options
from typedstore.registry import registry

__all__ = ["main"]


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"ndarray shape={value.shape} dtype={value.dtype} sum={value.sum()}"
    return repr(value)


def _demo(args: argparse.Namespace) -> int:
    if args.url:
        options.set("datastore.url", args.url)
    storage = current_storage()
    print(f"datastore: {storage.url}\n")
    values: list[tuple[str, Any, str | None]] = [
        ("array", np.arange(12, dtype=np.float32).reshape(3, 4), "safetensors"),
        ("bytes", b"raw bytes, stored as they are", None),
        ("plain", {"lr": 0.001, "layers": [64, 32], "activation": "relu"}, None),
    ]
    written = []
    for label, value, codec in values:
        if isinstance(value, bytes):
            io = DataStoreIO.write(value, relative_path_prefix=args.prefix)
        else:
            io = DataStoreIO.serialize_write(value, relative_path_prefix=args.prefix, codec=codec)
        written.append((label, value, io))
        print(f"wrote {label:<6} -> {io.url}")
    print("\nobjects under the prefix:")
    for key in storage.list(args.prefix):
        print(f"  {key}  ({storage.size(key)} bytes)")
    print("\nread back:")
    ok = True
    for label, value, io in written:
        back = DataStoreIO(io.url).read_deserialize(type(value))
        same = bool(np.array_equal(back, value)) if isinstance(value, np.ndarray) else back == value
        ok = ok and same
        print(f"  {label:<6} {'ok ' if same else 'DIFFERENT'} {_describe(back)}")
    return 0 if ok else 1


def _codecs(args: argparse.Namespace) -> int:
    rows = [("name", "version", "priority", "source", "types")]
    for name in registry.names():
        codec = registry.get(name)
        types = ", ".join(f"{t.__module__}.{t.__qualname__}" for t in codec.types)
        rows.append(
            (name, str(codec.version), str(registry.priority(name)), registry.source(name), types)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for *cells, types in rows:
        padded = (cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
        print("  ".join(padded), types, sep="  ")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``typedstore`` command; return its exit code."""
    parser = argparse.ArgumentParser(
        prog="typedstore", description="Typed storage of large values, out of the database."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="store an array, raw bytes and a plain value, then read them back"
    )
    demo.add_argument("--url", help="datastore root (default: option datastore.url)")
    demo.add_argument("--prefix", default="demo", help="relative path prefix (default: demo)")
    demo.set_defaults(run=_demo)
    codecs = commands.add_parser("codecs", help="list the registered codecs")
    codecs.set_defaults(run=_codecs)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except Exception as exc:  # the command line shows errors, not tracebacks
        from typedstore.errors import TypedStoreError

        if not isinstance(exc, TypedStoreError):
            raise
        print(f"typedstore: error: {exc}", file=sys.stderr)
        return 2
