"""The ``pickle`` codec: the fallback, loading only allow-listed classes."""

from __future__ import annotations

import io
import pickle
import re
import struct
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from typedstore.codecs._unpickler import BUILTIN_ALLOWED, FORBIDDEN, is_allowed, load
from typedstore.codecs.npy import NpyCodec
from typedstore.errors import DecodeError, EncodeError
from typedstore.options import options
from typedstore.protocols import Buffer, byte_view

__all__ = ["BUILTIN_ALLOWED", "FORBIDDEN", "PickleCodec", "is_allowed"]

#: Starts a pickle whose numpy values are kept out of it; a bare pickle starts with 0x80.
MAGIC = b"\x00typedstore pickle+arrays\n"
_LENGTH = struct.Struct("<Q")
_COUNT = struct.Struct("<I")
# Dtypes a persistent id may name: one plain scalar type, never objects or records.
_DTYPE = re.compile(r"[<>|=]?[?biufcmMSU][0-9]{1,6}(\[[a-zA-Z0-9]{1,5}\])?")
_npy = NpyCodec()


class _Pickler(pickle.Pickler):
    """Pickle protocol 5, keeping numpy arrays, scalars and dtypes out of the pickle: a
    persistent id stands for each, and the arrays go beside it as .npy."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=5)
        self.arrays: list[np.ndarray[Any, Any]] = []
        self.ids = 0
        # One id per array object, so that an array shared in the value is shared back.
        self.seen: dict[int, tuple[str, int]] = {}

    def persistent_id(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is np.ndarray and _npy.accepts(obj):
            pid = self.seen.get(id(obj))
            if pid is None:
                pid = self.seen[id(obj)] = self._out("array", obj)
            else:
                self.ids += 1
            return pid
        if isinstance(obj, np.generic) and kind.__module__ == "numpy":
            scalar = np.asarray(obj)
            return self._out("scalar", scalar) if _npy.accepts(scalar) else None
        if isinstance(obj, np.dtype) and _DTYPE.fullmatch(obj.str) and np.dtype(obj.str) == obj:
            self.ids += 1
            return ("dtype", obj.str)
        return None

    def _out(self, kind: str, array: np.ndarray[Any, Any]) -> tuple[str, int]:
        self.arrays.append(array)
        self.ids += 1
        return (kind, len(self.arrays) - 1)


def _persistent(arrays: Sequence[np.ndarray[Any, Any]]) -> Any:
    """What each persistent id of a pickle stands for; DecodeError for any other id."""

    copies: dict[int, np.ndarray[Any, Any]] = {}

    def resolve(pid: Any) -> Any:
        if type(pid) is tuple and len(pid) == 2:
            kind, ref = pid
            if kind in ("array", "scalar") and type(ref) is int and 0 <= ref < len(arrays):
                if kind == "scalar":
                    return arrays[ref][()]
                # A copy: writable, and shared wherever the value shared the array.
                if ref not in copies:
                    copies[ref] = arrays[ref].copy(order="K")
                return copies[ref]
            if kind == "dtype" and type(ref) is str and _DTYPE.fullmatch(ref):
                return np.dtype(ref)
        raise DecodeError(f"pickle names an unknown persistent id {pid!r:.80}")

    return resolve


class PickleCodec:
    """The fallback for any other value: pickle protocol 5.

    numpy arrays, scalars and dtypes inside the value (a scikit-learn model's weights,
    say) are kept out of the pickle: each array goes beside it in ``.npy`` format, read
    back by the npy codec, so no numpy object is ever built from pickle opcodes.

    Loading interprets the pickle without ``pickle.Unpickler``: it builds only
    allow-listed classes (:data:`BUILTIN_ALLOWED` plus option ``codecs.pickle.allow``),
    never anything in :data:`FORBIDDEN` (numpy included), and sets state only where that
    is inert; a refused class raises :class:`~typedstore.errors.UnsafeDataError` naming
    it. Option ``codecs.pickle.unrestricted`` loads with ``pickle`` itself, for stores
    whose every writer is trusted.
    """

    name: ClassVar[str] = "pickle"
    version: ClassVar[int] = 2
    types: ClassVar[tuple[type, ...]] = (object,)

    def accepts(self, value: object) -> bool:
        """Anything; whether pickle can really encode it shows at ``encode``."""
        return True

    def encode(self, value: Any) -> Sequence[Buffer]:
        """Pickle protocol 5 (with its numpy values beside it), refused if the current
        options could not load it back (a class not allowed, or a pickle that calls
        functions)."""
        file = io.BytesIO()
        pickler = _Pickler(file)
        try:
            pickler.dump(value)
        except Exception as exc:
            raise EncodeError(
                f"codec 'pickle' cannot encode {type(value).__qualname__}: {exc}"
            ) from exc
        data = file.getvalue()
        if not options.get("codecs.pickle.unrestricted"):
            # Written means readable: the same load a reader would make, before storing.
            try:
                load(data, options.get("codecs.pickle.allow"), _persistent(pickler.arrays))
            except DecodeError as exc:
                raise EncodeError(
                    f"codec 'pickle' would store a {type(value).__qualname__} that cannot be "
                    f"read back under the current options: {exc}"
                ) from exc
        if not pickler.ids:
            return [data]  # as version 1 wrote it
        chunks: list[Buffer] = [MAGIC, _LENGTH.pack(len(data)), data]
        chunks.append(_COUNT.pack(len(pickler.arrays)))
        for array in pickler.arrays:
            encoded = [byte_view(chunk) for chunk in _npy.encode(array)]
            chunks.append(_LENGTH.pack(sum(chunk.nbytes for chunk in encoded)))
            chunks += encoded
        return chunks

    def decode(self, data: Buffer, expected_type: type[Any] | None = None) -> Any:
        """Unpickle, building only allowed classes unless the store is trusted."""
        view = byte_view(data)
        pickled, arrays = _split(view)
        # A bare pickle carries no values beside it: a persistent id in it is refused.
        resolve = _persistent(arrays) if view[: len(MAGIC)] == MAGIC else None
        if not options.get("codecs.pickle.unrestricted"):
            try:
                return load(pickled, options.get("codecs.pickle.allow"), resolve)
            except DecodeError as exc:
                exc.add_note("codec 'pickle'")
                raise
        file = io.BytesIO(pickled)
        unpickler = pickle.Unpickler(file)
        if resolve is not None:
            unpickler.persistent_load = resolve  # type: ignore[method-assign]
        try:
            value = unpickler.load()
        except Exception as exc:
            raise DecodeError(f"codec 'pickle': malformed data: {exc}") from exc
        if file.tell() != len(pickled):
            raise DecodeError("codec 'pickle': trailing bytes after the pickle")
        return value


def _split(view: memoryview) -> tuple[bytes, list[np.ndarray[Any, Any]]]:
    """The pickle and the arrays kept beside it (none in a bare pickle)."""
    if view[: len(MAGIC)] != MAGIC:
        return view.tobytes(), []
    pos = len(MAGIC)

    def take(n: int, what: str) -> memoryview:
        nonlocal pos
        if n > len(view) - pos:
            raise DecodeError(f"codec 'pickle': {what} runs past the end of the object")
        pos += n
        return view[pos - n : pos]

    (size,) = _LENGTH.unpack(take(_LENGTH.size, "the pickle's length"))
    pickled = take(size, "the pickle").tobytes()
    (count,) = _COUNT.unpack(take(_COUNT.size, "the array count"))
    arrays = []
    for i in range(count):
        (size,) = _LENGTH.unpack(take(_LENGTH.size, f"array {i}'s length"))
        try:
            arrays.append(_npy.decode(take(size, f"array {i}")))
        except DecodeError as exc:
            exc.add_note(f"codec 'pickle': array {i}")
            raise
    if pos != len(view):
        raise DecodeError("codec 'pickle': trailing bytes after the arrays")
    return pickled, arrays
