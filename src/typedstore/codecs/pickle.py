"""The ``pickle`` codec: the fallback, loading only allow-listed classes."""

from __future__ import annotations

import io
import pickle
from collections.abc import Sequence
from typing import Any, ClassVar

from typedstore.codecs._unpickler import BUILTIN_ALLOWED, FORBIDDEN, is_allowed, load
from typedstore.errors import DecodeError, EncodeError
from typedstore.options import options
from typedstore.protocols import Buffer

__all__ = ["BUILTIN_ALLOWED", "FORBIDDEN", "PickleCodec", "is_allowed"]


class PickleCodec:
    """The fallback for any other value: pickle protocol 5.

    Loading interprets the pickle without ``pickle.Unpickler``: it builds only
    allow-listed classes (:data:`BUILTIN_ALLOWED` plus option ``codecs.pickle.allow``),
    never anything in :data:`FORBIDDEN` (numpy included), and sets state only where that
    is inert; a refused class raises :class:`~typedstore.errors.UnsafeDataError` naming
    it. Option ``codecs.pickle.unrestricted`` loads with ``pickle`` itself, for stores
    whose every writer is trusted.
    """

    name: ClassVar[str] = "pickle"
    version: ClassVar[int] = 1
    types: ClassVar[tuple[type, ...]] = (object,)

    def accepts(self, value: object) -> bool:
        """Anything; whether pickle can really encode it shows at ``encode``."""
        return True

    def encode(self, value: Any) -> Sequence[Buffer]:
        """``pickle.dumps`` with protocol 5, refused if the current options could not
        load it back (a class not allowed, or a pickle that calls functions)."""
        try:
            data = pickle.dumps(value, protocol=5)
        except Exception as exc:
            raise EncodeError(
                f"codec 'pickle' cannot encode {type(value).__qualname__}: {exc}"
            ) from exc
        if not options.get("codecs.pickle.unrestricted"):
            # Written means readable: the same load a reader would make, before storing.
            try:
                load(data, options.get("codecs.pickle.allow"))
            except DecodeError as exc:
                raise EncodeError(
                    f"codec 'pickle' would store a {type(value).__qualname__} that cannot be "
                    f"read back under the current options: {exc}"
                ) from exc
        return [data]

    def decode(self, data: Buffer, expected_type: type[Any] | None = None) -> Any:
        """Unpickle, building only allowed classes unless the store is trusted."""
        raw = data if type(data) is bytes else bytes(data)
        if not options.get("codecs.pickle.unrestricted"):
            try:
                return load(raw, options.get("codecs.pickle.allow"))
            except DecodeError as exc:
                exc.add_note("codec 'pickle'")
                raise
        file = io.BytesIO(raw)
        try:
            value = pickle.Unpickler(file).load()
        except Exception as exc:
            raise DecodeError(f"codec 'pickle': malformed data: {exc}") from exc
        if file.tell() != len(raw):
            raise DecodeError("codec 'pickle': trailing bytes after the pickle")
        return value
