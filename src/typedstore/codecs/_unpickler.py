"""A pickle interpreter that builds only what the allow policy admits, and only inertly.

``pickle.Unpickler`` lets ``find_class`` choose which globals a pickle may name, but not
what the BUILD, SETITEMS, APPENDS and REDUCE opcodes then do with the objects built: a
pickle naming only harmless globals can still run ``numpy.dtype.__setstate__`` with
crafted state and corrupt memory. So pickles are interpreted here, opcode by opcode:

- a global is looked up only if its name is allowed, then judged by the object it
  resolves to (its own ``__module__`` and ``__qualname__``), so aliases change nothing;
- built-in types are called only through checked builders (:data:`BUILTIN_ALLOWED`);
  classes from ``codecs.pickle.allow`` patterns are called with the pickle's arguments;
- state is set only where that is inert: on the built-in containers and on plain Python
  classes (no custom ``__setstate__`` or ``__reduce__``); other classes need their exact
  name in the allow-list;
- work and memory stay in proportion to the pickle's size: arguments that callables copy
  are charged against a budget of the pickle's length, tuples and frozensets nest at most
  :data:`MAX_NESTING` deep (hashing deeper ones overflows the C stack), and a dict or set
  takes at most :data:`MAX_EQUAL_HASHES` keys of one hash (int hashes are not salted).
"""

from __future__ import annotations

import collections
import datetime
import fnmatch
import importlib
import inspect
import re
import struct
import sys
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from typedstore.codecs.classes import registrable
from typedstore.errors import DecodeError, UnsafeDataError

__all__ = [
    "BUILTIN_ALLOWED",
    "FORBIDDEN",
    "MAX_EQUAL_HASHES",
    "MAX_NESTING",
    "is_allowed",
    "load",
]

#: Tuples and frozensets nested deeper than this are refused: hashing one recurses in C.
#: The pickler itself recurses per level, so it writes nothing this deep by default.
MAX_NESTING = 1000
#: A dict or set may receive at most this many keys of one hash; more is a collision
#: attack (quadratic inserts), never data.
MAX_EQUAL_HASHES = 64
#: Memo indices above this are refused (a pickler numbers its memo from 0).
_MAX_MEMO_INDEX = (1 << 32) - 1

#: Never looked up, whatever ``codecs.pickle.allow`` says: everything that runs code,
#: reads or writes files, reaches attributes by name, numpy (arrays and dtypes have their
#: own codecs, and their ``__setstate__`` trusts its input) and typedstore's own objects.
#: Globs over ``module.qualname``, matched against the name a pickle gives and against
#: the real name of what it resolves to.
FORBIDDEN: tuple[str, ...] = (
    "builtins.eval", "builtins.exec", "builtins.compile", "builtins.getattr",
    "builtins.setattr", "builtins.delattr", "builtins.__import__", "builtins.open",
    "builtins.input", "builtins.breakpoint", "builtins.globals", "builtins.locals",
    "builtins.vars", "builtins.help", "builtins.exit", "builtins.quit", "builtins.type",
    "builtins.memoryview", "builtins.super", "builtins.classmethod", "builtins.staticmethod",
    "builtins.property", "builtins.print", "builtins.dir", "builtins.id", "builtins.hash",
    "os.*", "posix.*", "nt.*", "posixpath.*", "ntpath.*", "sys.*", "subprocess.*",
    "importlib.*", "_imp.*", "pickle.*", "_pickle.*", "pickletools.*", "copyreg.*",
    "shelve.*", "marshal.*", "types.*", "code.*", "codeop.*",
    "runpy.*", "shutil.*", "tempfile.*", "ctypes.*", "_ctypes.*", "functools.*",
    "operator.*", "_operator.*", "inspect.*", "gc.*", "signal.*", "socket.*", "pty.*",
    "multiprocessing.*", "threading.*", "asyncio.*", "webbrowser.*", "platform.*",
    "io.*", "_io.*", "pathlib.*.read*", "pathlib.*.write*", "pathlib.*.open",
    "pathlib.*.unlink", "pathlib.*.rmdir", "pathlib.*.mkdir", "pathlib.*.touch",
    "pathlib.*.rename", "pathlib.*.replace", "pathlib.*.chmod", "pathlib.*.symlink_to",
    "numpy", "numpy.*", "ml_dtypes", "ml_dtypes.*", "typedstore", "typedstore.*",
    # Classes of the standard library whose constructors open files, sockets or
    # processes: no pattern admits them (a pattern of "*" included).
    "logging.*", "zipfile.*", "tarfile.*", "gzip.*", "bz2.*", "lzma.*", "dbm.*",
    "sqlite3.*", "mmap.*", "http.*", "urllib.*", "ftplib.*", "smtplib.*", "poplib.*",
    "imaplib.*", "socketserver.*", "selectors.*", "select.*", "fileinput.*", "mailbox.*",
    "wave.*", "pdb.*", "bdb.*", "trace.*", "cProfile.*", "profile.*", "concurrent.*",
    "sched.*", "zipimport.*", "pkgutil.*", "site.*", "sysconfig.*", "venv.*", "ensurepip.*",
    "idlelib.*", "tkinter.*", "turtle.*", "xmlrpc.*", "wsgiref.*", "uuid._*",
)  # fmt: skip

_FORBIDDEN = re.compile("|".join(fnmatch.translate(pattern) for pattern in FORBIDDEN))

_NUMPY_TYPES = (np.ndarray, np.generic, np.dtype)
_NUMPY_ADVICE = (
    "numpy arrays, dtypes and scalars are never built from a pickle: store arrays with "
    "the 'safetensors' or 'npy' codec (an array that neither accepts has a dtype that "
    "neither format keeps, such as ml_dtypes' int4)"
)


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _name_of(obj: Any) -> str | None:
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if type(module) is not str or type(qualname) is not str:
        return None
    return f"{module}.{qualname}"


# --- the built-in allow-list: what each global may be called with ------------------------

_Builder = Callable[["_Loader", Any, tuple[Any, ...]], Any]


def _refuse(what: str) -> UnsafeDataError:
    return UnsafeDataError(f"pickle {what}; refused")


def _all_of(args: tuple[Any, ...], *types: type) -> bool:
    return all(type(a) in types for a in args)


def _call_scalars(*types: type, most: int) -> _Builder:
    def build(loader: _Loader, target: Any, args: tuple[Any, ...]) -> Any:
        if len(args) > most or not _all_of(args, *types):
            raise _refuse(f"calls {_name_of(target)} with arguments it never pickles")
        return target(*args)

    return build


def _call_datetime(size: int) -> _Builder:
    def build(loader: _Loader, target: Any, args: tuple[Any, ...]) -> Any:
        if (
            1 <= len(args) <= 2
            and type(args[0]) is bytes
            and len(args[0]) == size
            and (len(args) == 1 or args[1] is None or isinstance(args[1], datetime.tzinfo))
        ) or (len(args) <= 8 and _all_of(args, int)):
            return target(*args)
        raise _refuse(f"calls {_name_of(target)} with arguments it never pickles")

    return build


def _call_timezone(loader: _Loader, target: Any, args: tuple[Any, ...]) -> Any:
    if 1 <= len(args) <= 2 and type(args[0]) is datetime.timedelta and _all_of(args[1:], str):
        return target(*args)
    raise _refuse("calls datetime.timezone with arguments it never pickles")


def _call_charged(*types: type, most: int) -> _Builder:
    """Callables whose cost grows with their arguments' length: charged to the budget."""

    def build(loader: _Loader, target: Any, args: tuple[Any, ...]) -> Any:
        if len(args) > most or not _all_of(args, *types):
            raise _refuse(f"calls {_name_of(target)} with arguments it never pickles")
        loader.charge(sum(len(a) for a in args))
        return target(*args)

    return build


_FRACTION_TEXT = re.compile(r"[+-]?\d{1,4300}(/\d{1,4300})?")


def _call_fraction(loader: _Loader, target: Any, args: tuple[Any, ...]) -> Any:
    # Fraction("1e999999999") computes a huge power of ten: only ints, or "n/d" text. The
    # gcd of the two costs their size squared: charged, so that memoized ones cannot be
    # passed again and again.
    if len(args) == 2 and _all_of(args, int):
        bits = sum(a.bit_length() for a in args)
    elif len(args) == 1 and type(args[0]) is str and _FRACTION_TEXT.fullmatch(args[0]):
        bits = len(args[0]) * 10 // 3  # a decimal digit is 3.3 bits
    else:
        raise _refuse("builds a Fraction from something other than integers")
    loader.charge(bits**2 // (1 << 20))
    return target(*args)


def _call_defaultdict(loader: _Loader, target: Any, args: tuple[Any, ...]) -> Any:
    # The factory reached the stack through an allowed global; it runs only on a miss.
    if len(args) <= 1 and (not args or args[0] is None or isinstance(args[0], type)):
        return target(*args)
    raise _refuse("calls collections.defaultdict with arguments it never pickles")


def _call_deque(loader: _Loader, target: Any, args: tuple[Any, ...]) -> Any:
    if (
        len(args) <= 2
        and (not args or type(args[0]) in (list, tuple))
        and (len(args) < 2 or args[1] is None or (type(args[1]) is int and args[1] >= 0))
    ):
        loader.charge(len(args[0]) if args else 0)
        return target(*args)
    raise _refuse("calls collections.deque with arguments it never pickles")


def _call_counter(loader: _Loader, target: Any, args: tuple[Any, ...]) -> Any:
    if len(args) <= 1 and _all_of(args, dict):
        loader.charge(len(args[0]) if args else 0)
        return target(*args)
    raise _refuse("calls collections.Counter with arguments it never pickles")


def _call_address(loader: _Loader, target: Any, args: tuple[Any, ...]) -> Any:
    if len(args) == 1 and (
        type(args[0]) in (int, str, bytes)
        or (type(args[0]) is tuple and len(args[0]) == 2 and _all_of(args[0], int, str, bytes))
    ):
        loader.charge(len(str(args[0])))
        return target(*args)
    raise _refuse(f"calls {_name_of(target)} with arguments it never pickles")


def _call_safe_uuid(loader: _Loader, target: Any, args: tuple[Any, ...]) -> Any:
    if len(args) == 1 and args[0] in (0, -1, None) and type(args[0]) in (int, type(None)):
        return target(*args)
    raise _refuse("calls uuid.SafeUUID with a value it does not have")


def _call_restore(loader: _Loader, target: Any, args: tuple[Any, ...]) -> Any:
    # One stored object restored twice in one pickle is one object: a few bytes must not
    # make a decode read the same container again and again.
    if len(args) != 1 or type(args[0]) is not str:
        raise _refuse("restores a DataStore from something other than its reference")
    url = args[0]
    key = url.partition("?")[0]  # one object, whatever parameters its references carry
    if key not in loader.restored:
        loader.restored[key] = target(url)
    return loader.restored[key]


def _never_called(loader: _Loader, target: Any, args: tuple[Any, ...]) -> Any:
    raise _refuse(f"calls {_name_of(target)}, which pickles only name")


_NAMED_BUILTINS = (
    "object", "bool", "int", "float", "str", "bytes", "bytearray", "list", "tuple", "dict",
    "set", "frozenset", "NoneType",
)  # fmt: skip
_PATHS = ("PurePath", "PurePosixPath", "PureWindowsPath", "Path", "PosixPath", "WindowsPath")
_ADDRESSES = (
    "IPv4Address", "IPv6Address", "IPv4Network", "IPv6Network", "IPv4Interface",
    "IPv6Interface",
)  # fmt: skip

#: Real name -> how REDUCE may call it. Every other global of this table is only named
#: (a type as a value, a defaultdict's factory) or made by NEWOBJ (``_NEW_INERT``).
_BUILDERS: dict[str, _Builder] = {
    **{f"builtins.{name}": _never_called for name in _NAMED_BUILTINS},
    "builtins.complex": _call_scalars(int, float, most=2),
    "builtins.slice": _call_scalars(int, type(None), most=3),
    "datetime.date": _call_datetime(4),
    "datetime.time": _call_datetime(6),
    "datetime.datetime": _call_datetime(10),
    "datetime.timedelta": _call_scalars(int, most=3),
    "datetime.timezone": _call_timezone,
    "datetime.tzinfo": _never_called,
    "decimal.Decimal": _call_charged(str, most=1),
    "fractions.Fraction": _call_fraction,
    "uuid.UUID": _never_called,
    "uuid.SafeUUID": _call_safe_uuid,
    "collections.OrderedDict": _call_scalars(most=0),
    "collections.defaultdict": _call_defaultdict,
    "collections.deque": _call_deque,
    "collections.Counter": _call_counter,
    "collections.ChainMap": _never_called,
    **{
        f"{module}.{name}": _call_charged(str, most=64)
        for module in ("pathlib", "pathlib._local")
        for name in _PATHS
    },
    **{f"ipaddress.{name}": _call_address for name in _ADDRESSES},
    "typedstore.datastore._restore": _call_restore,
}

#: What any pickle may name: data types of the builtins and the standard library, and
#: the function that restores a pickled DataStore from its reference, by exact
#: ``module.qualname``.
BUILTIN_ALLOWED: frozenset[str] = frozenset(_BUILDERS)

_NEW_INERT = (uuid.UUID, collections.ChainMap)
_INSTANCE_STATE = (collections.ChainMap,)


def _builtin_name(obj: Any) -> str | None:
    """The name under which the built-in allow-list holds ``obj`` itself, if it does (a
    class may claim any ``__module__``: the name must lead back to this very object)."""
    name = _name_of(obj)
    if name not in BUILTIN_ALLOWED:
        return None
    module, _, qualname = name.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), qualname, None)
    except ImportError:
        return None
    return name if found is obj else None


def is_allowed(name: str, extra: Iterable[str] = ()) -> bool:
    """Whether a pickle may name the global ``name`` (``module.qualname``).

    :data:`BUILTIN_ALLOWED` allows by exact name; otherwise :data:`FORBIDDEN` refuses and
    the ``extra`` glob patterns allow. What a name resolves to is judged again on load.
    """
    if name in BUILTIN_ALLOWED:
        return True
    return _FORBIDDEN.match(name) is None and _matches(name, extra)


def _refusal(name: str, obj: object = None) -> str:
    """Why a pickle naming ``name`` is refused, and what would store the value instead.
    ``obj`` is what the name resolves to, if that is known already."""
    if _FORBIDDEN.match(name):
        if name.split(".", 1)[0] in ("numpy", "ml_dtypes"):
            return f"pickle refers to {name!r}: {_NUMPY_ADVICE}"
        return f"pickle refers to {name!r}, which typedstore never loads"
    if obj is None:
        obj = _loaded(name)
    if obj is not None and not isinstance(obj, type):
        return (
            f"pickle calls {name!r}, which is not a class: no 'codecs.pickle.allow' pattern "
            "admits a function, so no options could load it; store the value in another "
            "form or register a codec for its type"
        )
    pattern = (
        f'if you trust it, add a pattern with typedstore.options.set("codecs.pickle.allow", '
        f"[{name!r}])"
    )
    if isinstance(obj, type) and registrable(obj):
        return (
            f"pickle refers to {name!r}, which is not allowed; register the class with "
            f"typedstore.registry.register_class({obj.__qualname__}) to store it without "
            f"pickle, or {pattern}"
        )
    return f"pickle refers to {name!r}, which is not allowed; {pattern}"


def _loaded(name: str) -> object:
    """What ``name`` is if its module is imported already, looked up without running any
    code (no import, no module ``__getattr__``); None if that cannot tell."""
    parts = name.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:split]))
        if module is None:
            continue
        obj: object = module
        try:
            for part in parts[split:]:
                obj = inspect.getattr_static(obj, part)
        except AttributeError:
            return None
        return obj
    return None


# --- classes from the user's patterns ------------------------------------------------------

_BUILTIN_BASES = frozenset(
    {object, int, float, complex, str, bytes, bytearray, tuple, list, dict, set, frozenset}
)
_C_LEVEL = (type(object.__init__), type(list.append), type(len), type(dict.__dict__["fromkeys"]))
# A class defining any of these restores itself by its own logic, which BUILD would run.
_CUSTOM_STATE = frozenset({"__setstate__", "__reduce__", "__reduce_ex__"})
_CUSTOM_ITEMS = frozenset({"__setitem__", "append", "extend", "add", "update"})


def _python_defined(cls: type) -> bool:
    """Whether ``cls`` is a Python class over at most the built-in data types."""
    for base in cls.__mro__:
        if base in _BUILTIN_BASES:
            continue
        heap = base.__flags__ & (1 << 9)  # Py_TPFLAGS_HEAPTYPE: not a static C type
        if not heap or any(isinstance(v, _C_LEVEL) for v in vars(base).values()):
            return False
    return True


def _plain(cls: type, names: frozenset[str]) -> bool:
    """A Python-defined class none of whose own classes defines any of ``names``."""
    return _python_defined(cls) and not any(
        names.intersection(vars(base)) for base in cls.__mro__ if base not in _BUILTIN_BASES
    )


# --- the interpreter -------------------------------------------------------------------------

_SCALARS = frozenset({type(None), bool, int, float, complex, str, bytes})
_UNSALTED = (str, bytes)  # the only keys whose hashes an attacker cannot choose


class _Stop(Exception):
    pass


class _Loader:
    """One load: the stack, the memo and what the pickle has spent."""

    def __init__(
        self,
        data: bytes,
        allow: tuple[str, ...],
        persistent: Callable[[Any], Any] | None = None,
    ) -> None:
        self.data = data
        self.persistent = persistent
        self.pos = 0
        self.stack: list[Any] = []
        self.marks: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.allow = allow
        # Elements that callables may copy out of their arguments, in all: a pickle that
        # passes one big memoized list to many calls would otherwise cost its size squared.
        self.budget = len(data) + 1024
        self.nesting: dict[int, tuple[int, Any]] = {}
        self.hashes: dict[int, tuple[Any, dict[int, int]]] = {}
        self.restored: dict[str, Any] = {}
        self.kinds: dict[type, str] = {}
        self.named: set[type] = set()  # the user's classes this pickle named
        self.builders: dict[int, tuple[Any, _Builder | None]] = {}

    def charge(self, elements: int) -> None:
        self.budget -= elements
        if self.budget < 0:
            raise DecodeError("pickle asks its callables to copy more data than the pickle holds")

    # --- reading ---

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise DecodeError(f"pickle states a length of {n} bytes past its end")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def count(self, width: int) -> int:
        return int.from_bytes(self.take(width), "little")

    def line(self) -> bytes:
        end = self.data.find(b"\n", self.pos)
        if end < 0:
            raise DecodeError("pickle data was truncated")
        chunk = self.data[self.pos : end]
        self.pos = end + 1
        return chunk

    def pop_mark(self) -> list[Any]:
        if not self.marks:
            raise DecodeError("pickle pops a mark it never set")
        items = self.stack
        self.stack = self.marks.pop()
        return items

    def pop(self) -> Any:
        if not self.stack:
            raise DecodeError("pickle pops from an empty stack")
        return self.stack.pop()

    # --- guards ---

    def nested(self, obj: Any, items: Iterable[Any]) -> Any:
        """Record how deep a tuple or frozenset nests; refuse past MAX_NESTING."""
        depth = 1
        for item in items:
            if isinstance(item, tuple | frozenset):
                inner = self.nesting.get(id(item))
                depth = max(depth, 2 if inner is None else inner[0] + 1)
        if depth > 1:
            if depth > MAX_NESTING:
                raise DecodeError(f"pickle nests tuples or frozensets over {MAX_NESTING} deep")
            self.nesting[id(obj)] = (depth, obj)  # holding obj keeps its id unique
        return obj

    def keyed(self, container: Any, keys: Iterable[Any]) -> None:
        """Count keys of chosen hashes going into one dict or set; refuse a flood.

        ``container`` is None for a set or dict made whole here (FROZENSET, DICT)."""
        counts: dict[int, int] | None = None
        for key in keys:
            if type(key) in _UNSALTED:
                continue
            if counts is None:
                if container is None:
                    counts = {}
                else:  # holding the container keeps its id unique
                    counts = self.hashes.setdefault(id(container), (container, {}))[1]
            try:
                h = hash(key)
            except TypeError as exc:
                raise DecodeError(f"pickle uses an unhashable key: {exc}") from None
            seen = counts.get(h, 0) + 1
            if seen > MAX_EQUAL_HASHES:
                raise DecodeError(
                    f"pickle puts over {MAX_EQUAL_HASHES} keys of one hash in a dict or set"
                )
            counts[h] = seen

    # --- globals ---

    def find(self, module: str, name: str) -> Any:
        requested = f"{module}.{name}"
        if not is_allowed(requested, self.allow):
            raise UnsafeDataError(_refusal(requested))
        try:
            obj: Any = importlib.import_module(module)
            for part in name.split("."):
                obj = getattr(obj, part)
        except Exception:
            raise UnsafeDataError(f"pickle refers to {requested!r}, which does not exist") from None
        if _builtin_name(obj) is not None:
            return obj
        real = _name_of(obj)
        if real is None:
            raise _refuse(f"refers to {requested!r}, which is not a class")
        if isinstance(obj, type) and issubclass(obj, _NUMPY_TYPES):
            raise UnsafeDataError(f"pickle refers to {real!r}: {_NUMPY_ADVICE}")
        if _FORBIDDEN.match(real) or not _matches(real, self.allow):
            raise UnsafeDataError(_refusal(real, obj))
        # A pattern like "mypkg.*" must not reach "mypkg.os.system" through a dotted name.
        if not isinstance(obj, type):
            raise _refuse(
                f"refers to {real!r}, which is not a class; only classes are built from "
                "'codecs.pickle.allow' patterns"
            )
        if not _python_defined(obj) and real not in self.allow:
            raise _refuse(
                f"refers to {real!r}, an extension type; a glob pattern admits only Python "
                f"classes: name it exactly in 'codecs.pickle.allow' if you trust it"
            )
        self.named.add(obj)
        return obj

    def kind(self, cls: type) -> str:
        """'builtin', 'exact', 'plain' or 'other': what may be done to ``cls``'s objects."""
        found = self.kinds.get(cls)
        if found is None:
            if _builtin_name(cls) is not None:
                found = "builtin"
            elif _name_of(cls) in self.allow:
                found = "exact"
            elif _plain(cls, _CUSTOM_STATE):
                found = "plain"
            else:
                found = "other"
            self.kinds[cls] = found
        return found

    # --- objects ---

    def builder(self, func: Any) -> _Builder | None:
        """How the built-in allow-list calls ``func`` (None: it is not on the list)."""
        known = self.builders.get(id(func))
        if known is None:
            name = _builtin_name(func)
            found = None if name is None else _BUILDERS[name]
            known = self.builders[id(func)] = (func, found)  # holding func pins its id
        return known[1]

    def reduce(self, func: Any, args: Any) -> Any:
        if type(args) is not tuple:
            raise DecodeError("pickle calls a callable with arguments that are not a tuple")
        build = self.builder(func)
        if build is not None:
            result = build(self, func, args)
        elif func in self.named:
            self.charge_args(args)
            result = func(*args)
        else:
            raise _refuse(f"calls {_name_of(func) or type(func).__qualname__!r}")
        if isinstance(result, tuple | frozenset):
            self.nested(result, args)
        return result

    def charge_args(self, args: Iterable[Any]) -> None:
        self.charge(sum(len(a) for a in args if type(a) in (str, bytes, list, tuple, dict)))

    def new(self, cls: Any, args: Any, kwargs: Any) -> Any:
        if not isinstance(cls, type) or type(args) is not tuple or type(kwargs) is not dict:
            raise DecodeError("pickle makes an object of something that is not a class")
        if cls in _NEW_INERT:
            if args or kwargs:
                raise _refuse(f"makes a {cls.__qualname__} with arguments")
            return object.__new__(cls)
        if cls not in self.named:
            raise _refuse(f"makes an object of {_name_of(cls)!r} without naming it")
        owner = next(base for base in cls.__mro__ if "__new__" in vars(base))
        # int.__new__ converts, tuple.__new__ copies, bytes.__new__(n) allocates n.
        if (
            owner in _BUILTIN_BASES
            and owner is not object
            and (
                not _all_of((*args, *kwargs.values()), *_SCALARS)
                or (owner in (bytes, bytearray) and not _all_of(args, bytes))
            )
        ):
            raise _refuse(f"makes a {cls.__qualname__} from arguments it never pickles")
        self.charge_args((*args, *kwargs.values()))
        result: Any = cls.__new__(cls, *args, **kwargs)
        if isinstance(result, tuple | frozenset):
            self.nested(result, args)
        return result

    def build(self, inst: Any, state: Any) -> None:
        cls = type(inst)
        kind = self.kind(cls) if cls in self.named or cls in _NEW_INERT else "none"
        if cls is uuid.UUID and kind == "builtin":
            if (
                type(state) is not dict
                or type(state.get("int")) is not int
                or not 0 <= state["int"] < 1 << 128
                or not set(state) <= {"int", "is_safe"}
                or type(state.get("is_safe", uuid.SafeUUID.unknown)) is not uuid.SafeUUID
            ):
                raise _refuse("sets a UUID's state to something a UUID never holds")
            # What UUID.__setstate__ does, with the state checked first.
            object.__setattr__(inst, "int", state["int"])
            object.__setattr__(inst, "is_safe", state.get("is_safe", uuid.SafeUUID.unknown))
            return
        if kind == "exact":
            setstate = getattr(cls, "__setstate__", None)
            if setstate is not None:
                setstate(inst, state)
                return
        elif not (kind == "plain" or (kind == "builtin" and cls in _INSTANCE_STATE)):
            raise _refuse(
                f"sets the state of a {cls.__module__}.{cls.__qualname__}, which is only "
                "done for Python classes without their own __setstate__ or __reduce__ (or "
                "classes named exactly in 'codecs.pickle.allow')"
            )
        slots = None
        if type(state) is tuple and len(state) == 2:
            state, slots = state
        if state is not None:
            if type(state) is not dict or not _all_of(tuple(state), str):
                raise DecodeError("pickle sets an object's state to something not a dict")
            try:
                vars(inst).update(state)
            except TypeError:
                raise DecodeError(
                    f"pickle sets attributes of a {cls.__qualname__}, which has none"
                ) from None
        if slots is not None:
            if type(slots) is not dict or not _all_of(tuple(slots), str):
                raise DecodeError("pickle sets an object's slots to something not a dict")
            for name, value in slots.items():
                if not isinstance(getattr(cls, name, None), _SLOT):
                    raise _refuse(f"sets {name!r}, which is not a slot of {cls.__qualname__}")
                object.__setattr__(inst, name, value)

    def items_method(self, target: Any, base: type, method: str) -> Callable[..., Any]:
        """The method that adds items to ``target``: the built-in one unless trusted."""
        cls = type(target)
        if cls is base or (cls in _ITEM_TARGETS and _ITEM_TARGETS[cls] is base):
            return getattr(cls, method)  # type: ignore[no-any-return]
        if isinstance(target, base) and cls in self.named:
            kind = self.kind(cls)
            if kind == "exact":
                return getattr(cls, method)  # type: ignore[no-any-return]
            if _plain(cls, _CUSTOM_ITEMS | _CUSTOM_STATE):
                return getattr(base, method)  # type: ignore[no-any-return]
        raise _refuse(f"adds items to a {cls.__module__}.{cls.__qualname__}")


_SLOT = type(type("_Slotted", (), {"__slots__": ("x",)}).__dict__["x"])
# Built-in containers whose items BUILD-free opcodes may set, with the base they extend.
_ITEM_TARGETS: dict[type, type] = {
    collections.OrderedDict: dict,
    collections.defaultdict: dict,
    collections.Counter: dict,
    collections.deque: list,
}


# --- opcodes ---------------------------------------------------------------------------------
# Each handler takes the loader after the opcode byte; the most common opcodes are not
# here but inline in _run. Only opcodes a Python 3 pickler writes for the objects above
# are known: persistent ids, the extension registry, out-of-band buffers, INST and OBJ
# (Python 2 classes) and Python 2 strings are not.

_Op = Callable[[_Loader], None]
_OPS: dict[bytes, _Op] = {}


def _op(*codes: bytes) -> Callable[[_Op], _Op]:
    def register(handler: _Op) -> _Op:
        for code in codes:
            _OPS[code] = handler
        return handler

    return register


def _push(value: Any) -> _Op:
    return lambda loader: loader.stack.append(value)


_OPS.update({b"\x88": _push(True), b"\x89": _push(False), b")": _push(())})
_OPS[b"\x8f"] = lambda loader: loader.stack.append(set())


_OPS[b"1"] = lambda loader: loader.pop_mark().clear()
_OPS[b"2"] = lambda loader: loader.stack.append(loader.stack[-1])  # IndexError: empty


@_op(b"\x80")
def _proto(loader: _Loader) -> None:
    if loader.take(1)[0] > 5:
        raise DecodeError("pickle protocol above 5")


@_op(b"\x95")
def _frame(loader: _Loader) -> None:
    # Frames only group opcodes for the reader's buffering; the data is all here.
    if loader.count(8) > len(loader.data) - loader.pos:
        raise DecodeError("pickle frame runs past the end")


@_op(b".")
def _stop(loader: _Loader) -> None:
    raise _Stop


@_op(b"0")
def _pop_op(loader: _Loader) -> None:
    if loader.stack:
        loader.stack.pop()
    else:
        loader.pop_mark()


@_op(b"I")
def _int_text(loader: _Loader) -> None:
    text = loader.line()
    loader.stack.append(text == b"01" if text in (b"00", b"01") else int(text))


@_op(b"L")
def _long_text(loader: _Loader) -> None:
    loader.stack.append(int(loader.line().removesuffix(b"L")))


@_op(b"\x8a", b"\x8b")
def _long_bin(loader: _Loader) -> None:
    width = 1 if loader.data[loader.pos - 1] == 0x8A else 4
    size = int.from_bytes(loader.take(width), "little", signed=width == 4)
    loader.stack.append(int.from_bytes(loader.take(size), "little", signed=True))


_OPS[b"F"] = lambda loader: loader.stack.append(float(loader.line()))


def _counted(width: int, convert: Callable[[bytes], Any]) -> _Op:
    return lambda loader: loader.stack.append(convert(loader.take(loader.count(width))))


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogatepass")


_OPS.update(
    {
        b"C": _counted(1, bytes),
        b"B": _counted(4, bytes),
        b"\x8e": _counted(8, bytes),
        b"\x96": _counted(8, bytearray),
        b"X": _counted(4, _text),
        b"\x8d": _counted(8, _text),
    }
)
_OPS[b"V"] = lambda loader: loader.stack.append(loader.line().decode("raw-unicode-escape"))


@_op(b"t")
def _tuple(loader: _Loader) -> None:
    items = loader.pop_mark()
    loader.stack.append(loader.nested(tuple(items), items))


def _tuple_n(n: int) -> _Op:
    def handler(loader: _Loader) -> None:
        if len(loader.stack) < n:
            raise DecodeError("pickle builds a tuple from an empty stack")
        items = loader.stack[-n:]
        del loader.stack[-n:]
        loader.stack.append(loader.nested(tuple(items), items))

    return handler


_OPS.update({b"\x85": _tuple_n(1), b"\x86": _tuple_n(2), b"\x87": _tuple_n(3)})


@_op(b"\x91")
def _frozenset(loader: _Loader) -> None:
    items = loader.pop_mark()
    loader.keyed(None, items)
    loader.stack.append(loader.nested(frozenset(items), items))


@_op(b"l")
def _list(loader: _Loader) -> None:
    items = loader.pop_mark()
    loader.stack.append(items)


@_op(b"d")
def _dict(loader: _Loader) -> None:
    items = loader.pop_mark()
    result: dict[Any, Any] = {}
    _set_items(loader, result, items, fresh=True)
    loader.stack.append(result)


def _set_items(loader: _Loader, target: Any, items: list[Any], fresh: bool = False) -> None:
    if len(items) % 2:
        raise DecodeError("pickle sets a key without a value")
    keys = items[::2]
    setitem = loader.items_method(target, dict, "__setitem__")
    loader.keyed(None if fresh else target, keys)
    for key, value in zip(keys, items[1::2], strict=True):
        setitem(target, key, value)


@_op(b"s")
def _setitem(loader: _Loader) -> None:
    stack = loader.stack
    if len(stack) < 3:
        raise DecodeError("pickle sets an item of nothing")
    value, key, target = stack.pop(), stack.pop(), stack[-1]
    if type(target) is dict and type(key) is str:  # most items: nothing to check
        target[key] = value
    else:
        _set_items(loader, target, [key, value])


@_op(b"u")
def _setitems(loader: _Loader) -> None:
    items = loader.pop_mark()
    if not loader.stack:
        raise DecodeError("pickle sets items of nothing")
    _set_items(loader, loader.stack[-1], items)


def _extend(loader: _Loader, items: list[Any]) -> None:
    if not loader.stack:
        raise DecodeError("pickle appends to nothing")
    target = loader.stack[-1]
    if type(target) is list:
        target.extend(items)
    else:
        loader.items_method(target, list, "extend")(target, items)


_OPS[b"a"] = lambda loader: _extend(loader, [loader.pop()])
_OPS[b"e"] = lambda loader: _extend(loader, loader.pop_mark())


@_op(b"\x90")
def _additems(loader: _Loader) -> None:
    items = loader.pop_mark()
    if not loader.stack:
        raise DecodeError("pickle adds items to nothing")
    target = loader.stack[-1]
    update = loader.items_method(target, set, "update")
    loader.keyed(target, items)
    update(target, items)


def _get(loader: _Loader, index: int) -> None:
    try:
        loader.stack.append(loader.memo[index])
    except KeyError:
        raise DecodeError(f"pickle reads memo entry {index}, which it never wrote") from None


def _put(loader: _Loader, index: int) -> None:
    if not 0 <= index <= _MAX_MEMO_INDEX or not loader.stack:
        raise DecodeError(f"pickle writes memo entry {index} of nothing or out of range")
    loader.memo[index] = loader.stack[-1]


_OPS.update(
    {
        b"g": lambda loader: _get(loader, int(loader.line())),
        b"j": lambda loader: _get(loader, loader.count(4)),
        b"p": lambda loader: _put(loader, int(loader.line())),
        b"q": lambda loader: _put(loader, loader.count(1)),
        b"r": lambda loader: _put(loader, loader.count(4)),
    }
)


@_op(b"c")
def _global(loader: _Loader) -> None:
    module = loader.line().decode("utf-8")
    name = loader.line().decode("utf-8")
    loader.stack.append(loader.find(module, name))


@_op(b"\x93")
def _stack_global(loader: _Loader) -> None:
    name, module = loader.pop(), loader.pop()
    if type(module) is not str or type(name) is not str:
        raise DecodeError("pickle names a global with something other than strings")
    loader.stack.append(loader.find(module, name))


@_op(b"R")
def _reduce(loader: _Loader) -> None:
    args, func = loader.pop(), loader.pop()
    loader.stack.append(loader.reduce(func, args))


@_op(b"\x81")
def _newobj(loader: _Loader) -> None:
    args, cls = loader.pop(), loader.pop()
    loader.stack.append(loader.new(cls, args, {}))


@_op(b"\x92")
def _newobj_ex(loader: _Loader) -> None:
    kwargs, args, cls = loader.pop(), loader.pop(), loader.pop()
    loader.stack.append(loader.new(cls, args, kwargs))


@_op(b"b")
def _build(loader: _Loader) -> None:
    state = loader.pop()
    if not loader.stack:
        raise DecodeError("pickle sets the state of nothing")
    loader.build(loader.stack[-1], state)


@_op(b"Q")
def _binpersid(loader: _Loader) -> None:
    pid = loader.pop()
    if loader.persistent is None:
        raise UnsafeDataError("pickle uses persistent ids, which this object does not carry")
    loader.stack.append(loader.persistent(pid))


_UNSUPPORTED = {
    b"P": "persistent ids", b"\x82": "the extension registry",
    b"\x83": "the extension registry", b"\x84": "the extension registry",
    b"\x97": "out-of-band buffers", b"\x98": "out-of-band buffers",
    b"i": "Python 2 classes", b"o": "Python 2 classes", b"S": "Python 2 strings",
    b"T": "Python 2 strings", b"U": "Python 2 strings",
}  # fmt: skip
_DISPATCH: list[_Op | None] = [_OPS.get(bytes([code])) for code in range(256)]


def _run(loader: _Loader) -> None:
    # The opcodes that make up most of any pickle are interpreted inline, on local names;
    # every other one through its handler, with the loader's state synced around it.
    data, dispatch, memo = loader.data, _DISPATCH, loader.memo
    end = len(data)
    pos = loader.pos
    stack = loader.stack
    try:
        while True:
            if pos >= end:
                raise DecodeError("pickle data was truncated")
            code = data[pos]
            pos += 1
            if code == 0x94:  # MEMOIZE
                if not stack or len(memo) > _MAX_MEMO_INDEX:
                    raise DecodeError("pickle memoizes nothing, or too much")
                memo[len(memo)] = stack[-1]
            elif code == 0x8C:  # SHORT_BINUNICODE
                size = data[pos]
                pos += 1 + size
                if pos > end:
                    raise DecodeError("pickle states a length past its end")
                stack.append(data[pos - size : pos].decode("utf-8", "surrogatepass"))
            elif code == 0x4B:  # BININT1
                stack.append(data[pos])
                pos += 1
            elif code == 0x68:  # BINGET
                index = data[pos]
                pos += 1
                if index not in memo:
                    raise DecodeError(f"pickle reads memo entry {index}, which it never wrote")
                stack.append(memo[index])
            elif code == 0x47:  # BINFLOAT
                pos += 8
                if pos > end:
                    raise DecodeError("pickle data was truncated")
                stack.append(_unpack_float(data, pos - 8)[0])
            elif code == 0x4D or code == 0x4A:  # BININT2, BININT
                width = 2 if code == 0x4D else 4
                pos += width
                if pos > end:
                    raise DecodeError("pickle data was truncated")
                stack.append(int.from_bytes(data[pos - width : pos], "little", signed=width == 4))
            elif code == 0x5D:  # EMPTY_LIST
                stack.append([])
            elif code == 0x7D:  # EMPTY_DICT
                stack.append({})
            elif code == 0x28:  # MARK
                loader.marks.append(stack)
                stack = loader.stack = []
            elif code == 0x4E:  # NONE
                stack.append(None)
            else:
                handler = dispatch[code]
                if handler is None:
                    what = _UNSUPPORTED.get(bytes([code]))
                    if what is not None:
                        raise UnsafeDataError(f"pickle uses {what}, which typedstore never writes")
                    raise DecodeError(f"invalid pickle opcode {code:#x} at byte {pos - 1}")
                loader.pos = pos
                handler(loader)
                pos = loader.pos
                stack = loader.stack
    except _Stop:
        return
    except IndexError:  # a DUP or memo write on an empty stack, a count past the end
        raise DecodeError("pickle reads from an empty stack or past its end") from None
    finally:
        loader.pos = pos


_unpack_float = struct.Struct(">d").unpack_from


def load(
    data: bytes, allow: tuple[str, ...], persistent: Callable[[Any], Any] | None = None
) -> Any:
    """Interpret the pickle ``data``; DecodeError (UnsafeDataError when refused) on failure.

    ``persistent`` resolves the pickle's persistent ids (the values kept out of it),
    raising DecodeError for one it does not know; without it, they are refused.
    """
    loader = _Loader(data, allow, persistent)
    try:
        _run(loader)
    except DecodeError:
        raise
    except RecursionError as exc:
        raise DecodeError(f"pickle data nests too deeply: {exc}") from None
    except Exception as exc:  # a constructor or conversion refused its argument
        raise DecodeError(f"malformed pickle: {type(exc).__name__}: {exc}") from exc
    if loader.pos != len(data):
        raise DecodeError("trailing bytes after the pickle")
    if len(loader.stack) != 1 or loader.marks:
        raise DecodeError("pickle leaves the stack unbalanced")
    return loader.stack[0]
