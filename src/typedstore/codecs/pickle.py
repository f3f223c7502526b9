"""The ``pickle`` codec: the fallback, loading only allow-listed classes."""

from __future__ import annotations

import fnmatch
import fractions
import io
import math
import pickle
import pickletools
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

from typedstore.codec import Buffer
from typedstore.errors import DecodeError, EncodeError, UnsafeDataError
from typedstore.options import options

__all__ = ["BUILTIN_ALLOWED", "FORBIDDEN", "PickleCodec", "is_allowed"]

#: What any pickle may build: data types of the builtins, the standard library and numpy,
#: by exact ``module.qualname``. Functions appear here only where numpy and copyreg
#: rebuild their objects with them.
BUILTIN_ALLOWED: frozenset[str] = frozenset(
    {
        *(
            f"builtins.{name}"
            for name in (
                "object", "bool", "int", "float", "complex", "str", "list", "tuple",
                "dict", "set", "frozenset", "slice", "NoneType",
            )
        ),
        "copyreg._reconstructor",
        "typedstore.datastore._restore",
        "datetime.date", "datetime.time", "datetime.datetime", "datetime.timedelta",
        "datetime.timezone", "datetime.tzinfo",
        "zoneinfo.ZoneInfo", "zoneinfo.ZoneInfo._unpickle",
        "decimal.Decimal", "fractions.Fraction", "uuid.UUID", "uuid.SafeUUID",
        "collections.OrderedDict", "collections.defaultdict", "collections.deque",
        "collections.Counter", "collections.ChainMap",
        "pathlib.PurePath", "pathlib.PurePosixPath", "pathlib.PureWindowsPath",
        "pathlib.Path", "pathlib.PosixPath", "pathlib.WindowsPath",
        "pathlib._local.PurePosixPath", "pathlib._local.PureWindowsPath",
        "pathlib._local.Path", "pathlib._local.PosixPath", "pathlib._local.WindowsPath",
        "ipaddress.IPv4Address", "ipaddress.IPv6Address",
        "ipaddress.IPv4Network", "ipaddress.IPv6Network",
        "ipaddress.IPv4Interface", "ipaddress.IPv6Interface",
        "numpy.ndarray", "numpy.dtype", "numpy.ma.core.MaskedArray", "numpy.ma.MaskedArray",
        "numpy.ma.core._mareconstruct", "numpy.ma.core.MaskedConstant",
        *(
            f"{module}.{name}"
            for module in ("numpy.core.multiarray", "numpy._core.multiarray")
            for name in ("_reconstruct", "scalar")
        ),
        "numpy.core.numeric._frombuffer", "numpy._core.numeric._frombuffer",
        *(
            f"numpy.dtypes.{name}"
            for name in (
                "BoolDType", "Int8DType", "UInt8DType", "Int16DType", "UInt16DType",
                "Int32DType", "UInt32DType", "Int64DType", "UInt64DType", "LongDType",
                "ULongDType", "LongLongDType", "ULongLongDType", "ByteDType", "UByteDType",
                "ShortDType", "UShortDType", "IntDType", "UIntDType",
                "Float16DType", "Float32DType", "Float64DType", "LongDoubleDType",
                "Complex64DType", "Complex128DType", "CLongDoubleDType", "BytesDType",
                "StrDType", "VoidDType", "DateTime64DType", "TimeDelta64DType",
                "StringDType",
            )
        ),
        *(
            f"numpy.{name}"
            for name in (
                "bool_", "bool", "int8", "uint8", "int16", "uint16", "int32", "uint32",
                "int64", "uint64", "float16", "float32", "float64", "longdouble",
                "complex64", "complex128", "clongdouble", "str_", "bytes_", "void",
                "datetime64", "timedelta64",
            )
        ),
    }
)  # fmt: skip

#: Never built, whatever ``codecs.pickle.allow`` says: everything that runs code, reads
#: or writes files, or reaches attributes by name. Globs over ``module.qualname``.
FORBIDDEN: tuple[str, ...] = (
    "builtins.eval", "builtins.exec", "builtins.compile", "builtins.getattr",
    "builtins.setattr", "builtins.delattr", "builtins.__import__", "builtins.open",
    "builtins.input", "builtins.breakpoint", "builtins.globals", "builtins.locals",
    "builtins.vars", "builtins.help", "builtins.exit", "builtins.quit", "builtins.type",
    "builtins.memoryview", "builtins.super", "builtins.classmethod", "builtins.staticmethod",
    "builtins.property", "builtins.print", "builtins.dir", "builtins.id", "builtins.hash",
    "os.*", "posix.*", "nt.*", "posixpath.*", "ntpath.*", "sys.*", "subprocess.*",
    "importlib.*", "_imp.*", "pickle.*", "_pickle.*", "pickletools.*", "copyreg.__*",
    "copyreg.add_extension", "shelve.*", "marshal.*", "types.*", "code.*", "codeop.*",
    "runpy.*", "shutil.*", "tempfile.*", "ctypes.*", "_ctypes.*", "functools.*",
    "operator.*", "_operator.*", "inspect.*", "gc.*", "signal.*", "socket.*", "pty.*",
    "multiprocessing.*", "threading.*", "asyncio.*", "webbrowser.*", "platform.*",
    "io.*", "_io.*", "pathlib.*.read*", "pathlib.*.write*", "pathlib.*.open",
    "pathlib.*.unlink", "pathlib.*.rmdir", "pathlib.*.mkdir", "pathlib.*.touch",
    "pathlib.*.rename", "pathlib.*.replace", "pathlib.*.chmod", "pathlib.*.symlink_to",
    "numpy.testing*", "numpy.f2py*", "numpy.distutils*", "numpy.ctypeslib*",
    "numpy.lib.npyio*", "numpy.lib._npyio_impl*", "numpy.lib.format*",
    "numpy.lib.utils*", "numpy.load", "numpy.save*", "numpy.fromfile", "numpy.memmap*",
    "numpy.loadtxt", "numpy.genfromtxt", "numpy.fromregex", "numpy.fromstring",
    "numpy.core._internal*", "numpy._core._internal*", "numpy.__config__*",
    "numpy.show_config", "numpy._pytesttester*", "numpy.*.frompyfunc", "numpy.vectorize",
    "numpy.*DataSource*", "numpy._utils*",
)  # fmt: skip


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


# One expression for all of FORBIDDEN: it is matched for every global a pickle names.
_FORBIDDEN = re.compile("|".join(fnmatch.translate(pattern) for pattern in FORBIDDEN))


def is_allowed(name: str, extra: Iterable[str] = ()) -> bool:
    """Whether a pickle may build the global ``name`` (``module.qualname``).

    :data:`FORBIDDEN` wins over everything; then :data:`BUILTIN_ALLOWED` (exact names)
    and the ``extra`` glob patterns allow.
    """
    if _FORBIDDEN.match(name):
        return False
    return name in BUILTIN_ALLOWED or _matches(name, extra)


class _ClassOnly:
    """Stands for a class that a pickle may pass to a rebuild helper but never call.

    Calling ``numpy.ndarray(shape)`` directly would allocate whatever the data asks for.
    """

    def __init__(self, cls: type) -> None:
        self.cls = cls

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UnsafeDataError(f"pickle calls {self.cls.__qualname__} directly; refused")


def _class_of(value: Any) -> Any:
    return value.cls if isinstance(value, _ClassOnly) else value


def _require_empty(shape: Any) -> None:
    # numpy pickles always rebuild from an empty array and then set the state, whose
    # size numpy checks against the pickled data; any other shape is an allocation bomb.
    if not isinstance(shape, tuple) or math.prod(int(d) for d in shape) != 0:
        raise UnsafeDataError("pickle asks numpy to allocate an array of a given shape")


def _guard_reconstruct(real: Callable[..., Any]) -> Callable[..., Any]:
    def reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
        _require_empty(shape)
        return real(_class_of(subtype), shape, dtype)

    return reconstruct


def _guard_mareconstruct(real: Callable[..., Any]) -> Callable[..., Any]:
    def mareconstruct(subtype: Any, baseclass: Any, baseshape: Any, basetype: Any) -> Any:
        _require_empty(baseshape)
        return real(_class_of(subtype), _class_of(baseclass), baseshape, basetype)

    return mareconstruct


def _fraction(numerator: Any, denominator: Any = 1) -> fractions.Fraction:
    # Fraction("1e999999999") would compute a huge power of ten; pickles hold two ints.
    if type(numerator) is not int or type(denominator) is not int:
        raise UnsafeDataError("pickle builds a Fraction from something other than ints")
    return fractions.Fraction(numerator, denominator)


_GUARDS: dict[str, Callable[[Any], Any]] = {
    "numpy.ndarray": _ClassOnly,
    "numpy.ma.core.MaskedArray": _ClassOnly,
    "numpy.ma.MaskedArray": _ClassOnly,
    "numpy.core.multiarray._reconstruct": _guard_reconstruct,
    "numpy._core.multiarray._reconstruct": _guard_reconstruct,
    "numpy.ma.core._mareconstruct": _guard_mareconstruct,
    "fractions.Fraction": lambda _: _fraction,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, allow: tuple[str, ...]) -> None:
        super().__init__(file)
        self._allow = allow

    def find_class(self, module: str, name: str) -> Any:
        requested = f"{module}.{name}"
        if not is_allowed(requested, self._allow):
            raise UnsafeDataError(_refusal(requested))
        found = super().find_class(module, name)
        if requested in BUILTIN_ALLOWED:
            guard = _GUARDS.get(requested)
            return found if guard is None else guard(found)
        # A pattern like "mypkg.models.*" must not reach "mypkg.models.os.system" through a
        # dotted name: only classes are built, and their real name must be allowed too.
        if not isinstance(found, type):
            raise UnsafeDataError(
                f"pickle refers to {requested!r}, which is not a class; only classes are "
                "built from 'codecs.pickle.allow' patterns"
            )
        real = f"{found.__module__}.{found.__qualname__}"
        if not is_allowed(real, self._allow):
            raise UnsafeDataError(_refusal(real))
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeDataError("pickle uses persistent ids, which typedstore never writes")


class _UnrestrictedUnpickler(pickle.Unpickler):
    pass


# The C unpickler believes the sizes a pickle states: the 7 bytes b"}r\0\0\0\x0f." make
# it allocate and clear a 4 GB memo (memo index 0x0f000000), and a counted string or bytes
# opcode reserves the length it claims before reading it. So every opcode is walked first,
# one pass and no copies, checking each stated length against the bytes that remain and
# each memo index against the opcodes seen so far (a pickler numbers its memo entries
# from 0, and each entry needs an opcode to make its object). Opcode argument layouts
# come from pickletools; each is one of these kinds, or a fixed size (>= 0).
_LINE, _COUNT1, _COUNT4, _COUNT4U, _COUNT8U = (
    pickletools.UP_TO_NEWLINE,
    pickletools.TAKEN_FROM_ARGUMENT1,
    pickletools.TAKEN_FROM_ARGUMENT4,
    pickletools.TAKEN_FROM_ARGUMENT4U,
    pickletools.TAKEN_FROM_ARGUMENT8U,
)
_TWO_LINES, _PUT, _LONG_BINPUT, _FRAME, _STOP, _INVALID = range(-20, -14)
_CHECKED = {"PUT": _PUT, "LONG_BINPUT": _LONG_BINPUT, "FRAME": _FRAME, "STOP": _STOP}


def _opcode_kinds() -> list[int]:
    kinds = [_INVALID] * 256
    for op in pickletools.opcodes:
        kind = 0 if op.arg is None else op.arg.n
        if op.arg is not None and op.arg.name == "stringnl_noescape_pair":
            kind = _TWO_LINES
        kinds[ord(op.code)] = _CHECKED.get(op.name, kind)
    return kinds


_KINDS = _opcode_kinds()


def _check_sizes(data: bytes) -> None:
    """Raise DecodeError if the pickle states a length beyond its end or a memo index
    beyond what it can have built (see above)."""
    # Runs once per opcode: the common kinds first, the rest in _check_opcode.
    kinds, end, pos, ops = _KINDS, len(data), 0, 0
    try:
        while pos < end:
            kind = kinds[data[pos]]
            pos += 1
            ops += 1
            if kind >= 0:
                pos += kind
            elif kind == _COUNT1:  # short strings: 255 bytes at most
                pos += 1 + data[pos]
            elif kind == _STOP:
                return
            else:
                pos = _check_opcode(data, pos, kind, ops)
    except IndexError:  # a length byte past the end
        pass
    raise DecodeError("codec 'pickle': malformed data: pickle data was truncated")


_WIDTHS = {_COUNT4: 4, _COUNT4U: 4, _COUNT8U: 8, _FRAME: 8}


def _check_opcode(data: bytes, pos: int, kind: int, ops: int) -> int:
    """Check the argument at ``pos`` of an opcode of a rarer ``kind``; return where the
    next opcode starts."""
    width = _WIDTHS.get(kind)
    if width is not None:
        length = int.from_bytes(data[pos : pos + width], "little", signed=kind == _COUNT4)
        pos += width
        if not 0 <= length <= len(data) - pos:
            raise DecodeError(
                f"codec 'pickle': malformed data: length {length} at byte {pos - width - 1} "
                f"runs past the end ({len(data)} bytes)"
            )
        return pos if kind == _FRAME else pos + length  # a frame holds opcodes
    if kind == _LONG_BINPUT:
        _check_memo(int.from_bytes(data[pos : pos + 4], "little"), ops)
        return pos + 4
    if kind in (_LINE, _TWO_LINES, _PUT):
        newline = data.find(b"\n", pos)
        if kind == _TWO_LINES and newline >= 0:
            newline = data.find(b"\n", newline + 1)
        if newline < 0:
            return len(data)  # truncated
        if kind == _PUT:
            try:
                index = int(data[pos:newline])
            except ValueError:
                raise DecodeError("codec 'pickle': malformed data: invalid PUT index") from None
            _check_memo(index, ops)
        return newline + 1
    raise DecodeError(f"codec 'pickle': malformed data: invalid opcode {data[pos - 1]:#x}")


def _check_memo(index: int, ops: int) -> None:
    if not 0 <= index <= ops:
        raise DecodeError(f"codec 'pickle': malformed data: memo index {index} after {ops} opcodes")


def _refusal(name: str) -> str:
    if _FORBIDDEN.match(name):
        return f"pickle refers to {name!r}, which typedstore never loads (it can run code)"
    return (
        f"pickle refers to {name!r}, which is not allowed; if you trust it, add a "
        f'pattern with typedstore.options.set("codecs.pickle.allow", [{name!r}])'
    )


class PickleCodec:
    """The fallback for any other value: pickle protocol 5.

    Loading builds only allow-listed classes (:data:`BUILTIN_ALLOWED` plus option
    ``codecs.pickle.allow``) and never anything in :data:`FORBIDDEN`; a refused class
    raises :class:`~typedstore.errors.UnsafeDataError` naming it. Option
    ``codecs.pickle.unrestricted`` lifts the restriction, for stores whose every writer
    is trusted.
    """

    name: ClassVar[str] = "pickle"
    version: ClassVar[int] = 1
    types: ClassVar[tuple[type, ...]] = (object,)

    def accepts(self, value: object) -> bool:
        """Anything; whether pickle can really encode it shows at ``encode``."""
        return True

    def encode(self, value: Any) -> Sequence[Buffer]:
        """``pickle.dumps`` with protocol 5."""
        try:
            return [pickle.dumps(value, protocol=5)]
        except Exception as exc:
            raise EncodeError(
                f"codec 'pickle' cannot encode {type(value).__qualname__}: {exc}"
            ) from exc

    def decode(self, data: Buffer, expected_type: type[Any] | None = None) -> Any:
        """Unpickle, building only allowed classes unless the store is trusted."""
        raw = data if type(data) is bytes else bytes(data)  # BytesIO would copy it anyway
        file = io.BytesIO(raw)
        unpickler: pickle.Unpickler
        if options.get("codecs.pickle.unrestricted"):
            # Every writer is trusted (it could run any code): no need to check sizes.
            unpickler = _UnrestrictedUnpickler(file)
        else:
            _check_sizes(raw)
            unpickler = _RestrictedUnpickler(file, options.get("codecs.pickle.allow"))
        try:
            value = unpickler.load()
        except DecodeError:
            raise
        except Exception as exc:
            raise DecodeError(f"codec 'pickle': malformed data: {exc}") from exc
        if file.tell() != len(raw):
            raise DecodeError("codec 'pickle': trailing bytes after the pickle")
        return value
