"""Exceptions raised by typedstore.

Every exception derives from :class:`TypedStoreError`; most also derive from the builtin
exception a caller would catch without knowing typedstore::

    TypedStoreError
    ├── UnknownOptionError (KeyError)        an option name that does not exist
    ├── OptionValueError (ValueError)        a value of the wrong type for an option
    ├── RegistrationError (ValueError)       a codec name taken, a priority clash, a bad name
    ├── UnknownCodecError (LookupError)      a codec name the registry does not know
    ├── NoCodecError (TypeError)             no registered codec accepts a value
    ├── EncodeError (ValueError)             a codec failed to encode a value
    ├── DecodeError (ValueError)             stored bytes are malformed for their codec
    │   ├── UnsafeDataError                  a pickle names a class that is not allowed
    │   └── IntegrityError                   stored bytes do not match the reference's checksum
    ├── TypeMismatchError (TypeError)        a decoded value is not of the expected type
    ├── InvalidReferenceError (ValueError)   a malformed ``datastore://`` reference
    │   └── InvalidKeyError                  a storage key that breaks the key rules
    ├── NotFoundError (FileNotFoundError)    no object is stored under a key
    │   └── ExperimentNotFoundError          no experiment has that id or name
    ├── ExperimentExistsError (FileExistsError)  persist(if_exists="fail") of a stored one
    ├── PersistConflictError                 another process persisted the same experiment
    ├── ReservedPrefixError (ValueError)     a DataStoreIO prefix that is an experiment's
    ├── DatabaseError                        the experiments database failed
    └── StorageError (OSError)               the storage failed to write, read or delete
"""

from __future__ import annotations

__all__ = [
    "DatabaseError",
    "DecodeError",
    "EncodeError",
    "ExperimentExistsError",
    "ExperimentNotFoundError",
    "IntegrityError",
    "InvalidKeyError",
    "InvalidReferenceError",
    "NoCodecError",
    "NotFoundError",
    "OptionValueError",
    "PersistConflictError",
    "PluginWarning",
    "RegistrationError",
    "ReservedPrefixError",
    "StorageError",
    "TypeMismatchError",
    "TypedStoreError",
    "UnknownCodecError",
    "UnknownOptionError",
    "UnregisteredClassError",
    "UnsafeDataError",
    "decode_error",
    "decoding",
    "describe",
]


class TypedStoreError(Exception):
    """Root of all typedstore exceptions."""


class UnknownOptionError(TypedStoreError, KeyError):
    """An option name that is not in the option tree."""

    def __str__(self) -> str:
        # KeyError quotes its argument; the message reads better plain.
        return str(self.args[0]) if self.args else ""


class OptionValueError(TypedStoreError, ValueError):
    """An option value of the wrong type or out of range."""


class RegistrationError(TypedStoreError, ValueError):
    """A codec cannot be registered: bad name, taken name or priority clash."""


class UnknownCodecError(TypedStoreError, LookupError):
    """A codec name that the registry does not know."""


class NoCodecError(TypedStoreError, TypeError):
    """No registered codec accepts a value."""


class EncodeError(TypedStoreError, ValueError):
    """A codec failed to encode a value."""


class DecodeError(TypedStoreError, ValueError):
    """Stored bytes are malformed for the codec that should read them."""


class UnsafeDataError(DecodeError):
    """Stored data asks to build something that is not allowed (pickle allow-list)."""


class UnregisteredClassError(DecodeError):
    """Stored data names a class that this process has not registered."""


class IntegrityError(DecodeError):
    """The stored bytes do not match the checksum in their reference."""


class TypeMismatchError(TypedStoreError, TypeError):
    """A decoded value is not an instance of the expected type."""


class InvalidReferenceError(TypedStoreError, ValueError):
    """A ``datastore://`` reference that does not follow the reference rules."""


class InvalidKeyError(InvalidReferenceError):
    """A storage key that breaks the key rules (traversal, bad characters, length)."""


class NotFoundError(TypedStoreError, FileNotFoundError):
    """No object is stored under a key."""


class StorageError(TypedStoreError, OSError):
    """The storage failed to write, read or delete."""


class ExperimentNotFoundError(NotFoundError):
    """No experiment has that id or name."""


class ExperimentExistsError(TypedStoreError, FileExistsError):
    """An experiment is already stored (``persist(if_exists="fail")``), or its name is taken."""


class PersistConflictError(TypedStoreError):
    """Another process persisted the same experiment at the same time and won."""


class ReservedPrefixError(TypedStoreError, ValueError):
    """A DataStoreIO prefix inside an experiment's folder, which persist and delete manage."""


class DatabaseError(TypedStoreError):
    """The experiments database failed or holds malformed rows."""


class PluginWarning(UserWarning):
    """A codec plugin from the ``typedstore.codecs`` entry point group failed to load."""


def decode_error(exc: Exception, context: str) -> Exception | None:
    """What to raise, chained to ``exc``, for an exception out of decoding: a new
    DecodeError for a foreign exception (numpy's, json's), or None to let ``exc``
    propagate as it is; a DecodeError gets ``context`` as a note (PEP 678) first."""
    if isinstance(exc, DecodeError):
        exc.add_note(context)
        return None
    if isinstance(exc, TypedStoreError):
        return None
    return DecodeError(f"{context}: {exc}")


def describe(exc: BaseException) -> str:
    """The message of ``exc`` with its notes, on one line (for reports and the CLI)."""
    return " ".join(" ".join([str(exc), *getattr(exc, "__notes__", ())]).split())


class decoding:
    """Inside the block, a DecodeError gets ``context`` as a note and any exception that
    is not a typedstore error becomes a DecodeError (chained), so that the errors of
    numpy, json or pickle never escape raw. ``context`` is any object: it is made a str
    only for an error."""

    __slots__ = ("_context",)

    def __init__(self, context: object) -> None:
        self._context = context

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if isinstance(exc, Exception):
            error = decode_error(exc, str(self._context))
            if error is not None:
                raise error from exc
