"""The codec registry: which codec serves which value, and codecs by name."""

from __future__ import annotations

import re
import threading
import warnings
import weakref
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any, TypeVar, overload

import attrs

from typedstore.codecs import (
    ArrowCodec,
    JsonCodec,
    NpyCodec,
    PickleCodec,
    RawCodec,
    SafetensorsCodec,
    TorchCodec,
    TreeCodec,
)
from typedstore.errors import NoCodecError, PluginWarning, RegistrationError, UnknownCodecError
from typedstore.protocols import Codec, check_codec_name

__all__ = ["ENTRY_POINT_GROUP", "RETIRED", "CodecRegistry", "registry"]

#: Entry point group through which other packages contribute codecs.
ENTRY_POINT_GROUP = "typedstore.codecs"

#: Names of retired codecs whose files another codec reads: references naming them keep
#: loading. No codec may be registered under one.
RETIRED: Mapping[str, str] = MappingProxyType({"attrs": "tree"})

_C = TypeVar("_C", bound=Codec[Any])
_T = TypeVar("_T")


@attrs.frozen
class _Entry:
    codec: Codec[Any]
    priority: int
    source: str


def _type_name(cls: type | str) -> str:
    if isinstance(cls, str):
        return cls
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return _qualified(cls)


def _qualified(cls: type) -> str:
    """The name a codec may give for a class it serves without importing it."""
    return f"{cls.__module__}.{cls.__qualname__}"


_QUALIFIED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")


class CodecRegistry:
    """Codecs by name and by the types they serve.

    Choosing a codec for a value walks the value's MRO from the most specific class; at
    the first class that has codecs, the codecs are tried by decreasing priority and the
    first whose ``accepts(value)`` is true wins; if none accepts, the walk goes on to the
    next class. ``object`` is served by the pickle fallback in the default registry.
    The candidate list per type is cached (weakly keyed by type) and rebuilt after
    every registration.

    Codecs exposed in the entry point group ``typedstore.codecs`` (an instance, or a
    class called without arguments; an optional integer ``priority`` attribute) are
    loaded at the first lookup when ``load_plugins`` is true.
    """

    def __init__(self, *, load_plugins: bool = True) -> None:
        self._lock = threading.RLock()
        self._by_name: dict[str, _Entry] = {}
        # Keyed by class, or by qualified name for classes not imported yet.
        self._by_type: dict[type | str, list[_Entry]] = {}
        self._cache: weakref.WeakKeyDictionary[type, tuple[_Entry, ...]] = (
            weakref.WeakKeyDictionary()
        )
        self._plugins_pending = load_plugins

    @overload
    def register(self, codec: type[_C], *, priority: int = 0) -> type[_C]: ...
    @overload
    def register(self, codec: _C, *, priority: int = 0) -> _C: ...
    @overload
    def register(
        self, codec: None = None, *, priority: int = 0
    ) -> Callable[[type[_C]], type[_C]]: ...

    def register(self, codec: Any = None, *, priority: int = 0) -> Any:
        """Register a codec instance, or a codec class (instantiated without arguments).

        Works as a plain call, as ``@registry.register`` on a codec class, or as
        ``@registry.register(priority=5)``. Returns what it was given.

        Raises RegistrationError for an invalid or taken name, for a priority equal to
        that of a codec already registered for one of the same exact types, or for an
        object that does not implement the Codec protocol.
        """
        if codec is None:
            return lambda cls: self.register(cls, priority=priority)
        instance = codec() if isinstance(codec, type) else codec
        self._add(instance, priority, _source(instance))
        return codec

    def copy(self) -> CodecRegistry:
        """A new registry with this one's codecs, priorities and registered classes, for a
        second :class:`~typedstore.store.Store`: later registrations on either do not
        reach the other. Codecs with a ``copy()`` method (the tree codec, with its
        classes) are copied."""
        self._load_plugins()
        other = CodecRegistry(load_plugins=False)
        with self._lock:
            copies = {name: _copied(entry) for name, entry in self._by_name.items()}
            other._by_name = copies
            other._by_type = {
                cls: [copies[e.codec.name] for e in entries]
                for cls, entries in self._by_type.items()
            }
        return other

    def _add(self, codec: object, priority: object, source: str) -> None:
        if not isinstance(codec, Codec):
            raise RegistrationError(
                f"{codec!r} is not a codec: it needs name, version, types, accepts, "
                "encode and decode"
            )
        name = check_codec_name(codec.name)
        if name in RETIRED:
            raise RegistrationError(
                f"codec name {name!r} is retired: its files are read by {RETIRED[name]!r}"
            )
        version: object = codec.version
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise RegistrationError(f"codec {name!r}: version must be a positive int")
        types: object = codec.types
        if not isinstance(types, tuple) or not all(
            isinstance(t, type) or (isinstance(t, str) and _QUALIFIED.fullmatch(t)) for t in types
        ):
            raise RegistrationError(
                f"codec {name!r}: types must be a tuple of types or qualified class names"
            )
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise RegistrationError(f"codec {name!r}: priority must be an int")
        entry = _Entry(codec, priority, source)
        with self._lock:
            if name in self._by_name:
                raise RegistrationError(
                    f"a codec named {name!r} is already registered ({self._by_name[name].source})"
                )
            for cls in types:
                self._check_clash(cls, entry)
            self._by_name[name] = entry
            for cls in types:
                self._index(cls, entry)

    def _check_clash(self, cls: type | str, entry: _Entry) -> None:
        for other in self._by_type.get(cls, ()):
            if other.priority == entry.priority:
                raise RegistrationError(
                    f"codecs {other.codec.name!r} and {entry.codec.name!r} would both serve "
                    f"{_type_name(cls)} at priority {entry.priority}; give one another priority"
                )

    def _index(self, cls: type | str, entry: _Entry) -> None:
        entries = self._by_type.setdefault(cls, [])
        entries.append(entry)
        entries.sort(key=lambda e: -e.priority)
        self._cache.clear()

    @overload
    def register_class(self, cls: type[_T], *, name: str | None = None) -> type[_T]: ...
    @overload
    def register_class(
        self, cls: None = None, *, name: str | None = None
    ) -> Callable[[type[_T]], type[_T]]: ...

    def register_class(self, cls: Any = None, *, name: str | None = None) -> Any:
        """Store instances of ``cls`` (an attrs class, dataclass, pydantic v2 model or
        enum) with the ``tree`` codec: no pickle, and back exactly as they were.

        ``name`` is the type id written into files (default ``module.qualname``); give a
        stable one if the class may move. The classes that its field annotations name
        are registered with it under their default ids. Works as a decorator too, plain
        or with ``name=``. Raises RegistrationError, naming the field, for a class of
        another kind, a class or type id already registered, annotations that cannot be
        resolved, or a field type that nothing stores without pickle.
        """
        if cls is None:
            return lambda c: self.register_class(c, name=name)
        codec = self.get("tree")
        if not isinstance(codec, TreeCodec):
            raise RegistrationError("this registry's 'tree' codec does not serve classes")
        with self._lock:
            entry = self._by_name["tree"]
            specs = codec.plan(cls, name)
            for spec in specs:
                self._check_clash(spec.cls, entry)
            codec.classes.add(specs)
            for spec in specs:
                self._index(spec.cls, entry)
        return cls

    #: The former name of :meth:`register_class`, for attrs classes.
    register_attrs = register_class

    def get(self, name: str) -> Codec[Any]:
        """The codec registered under ``name``; raise UnknownCodecError if none."""
        if self._plugins_pending:  # checked here first: get() runs on every read
            self._load_plugins()
        entry = self._by_name.get(name) if type(name) is str else None
        if entry is None and type(name) is str and name in RETIRED:
            entry = self._by_name.get(RETIRED[name])
        if entry is None:
            raise UnknownCodecError(
                f"unknown codec {name!r}; registered codecs: {', '.join(self.names())}"
            )
        return entry.codec

    def names(self) -> list[str]:
        """Names of all registered codecs, sorted."""
        self._load_plugins()
        return sorted(self._by_name)

    @property
    def codecs(self) -> Mapping[str, Codec[Any]]:
        """A read-only view of the registered codecs by name."""
        self._load_plugins()
        return MappingProxyType({name: e.codec for name, e in self._by_name.items()})

    def priority(self, name: str) -> int:
        """The priority the codec ``name`` was registered with."""
        self.get(name)
        return self._by_name[name].priority

    def source(self, name: str) -> str:
        """Where the codec ``name`` came from: 'built-in', 'user' or 'plugin <entry point>'."""
        self.get(name)
        return self._by_name[name].source

    def for_value(self, value: object) -> Codec[Any]:
        """The codec that serves ``value`` (see the class docstring for the order).

        Raises NoCodecError when no registered codec accepts it.
        """
        if self._plugins_pending:
            self._load_plugins()
        cls = type(value)
        try:
            entries = self._cache[cls]
        except KeyError:
            entries = self._candidates(cls)
        for entry in entries:
            if entry.codec.accepts(value):
                return entry.codec
        raise NoCodecError(
            f"no registered codec accepts a value of type {_type_name(cls)}; "
            f"registry.explain(value) tells which were tried"
        )

    def explain(self, value: object) -> str:
        """Human-readable account of the codec choice for ``value``."""
        self._load_plugins()
        cls = type(value)
        lines = [f"codec choice for a value of type {_type_name(cls)}:"]
        chosen: Codec[Any] | None = None
        for base in cls.__mro__:
            entries = [*self._by_type.get(base, ()), *self._by_type.get(_qualified(base), ())]
            if not entries:
                lines.append(f"  {_type_name(base)}: no codecs registered")
                continue
            lines.append(f"  {_type_name(base)}:")
            for entry in entries:
                label = f"    {entry.codec.name} (priority {entry.priority}, {entry.source})"
                if chosen is not None:
                    lines.append(f"{label}: not tried, {chosen.name!r} already chosen")
                elif entry.codec.accepts(value):
                    chosen = entry.codec
                    lines.append(f"{label}: accepts the value -> chosen")
                else:
                    lines.append(f"{label}: refuses the value")
        lines.append(
            f"result: {chosen.name!r}" if chosen is not None else "result: no codec accepts it"
        )
        return "\n".join(lines)

    def _candidates(self, cls: type) -> tuple[_Entry, ...]:
        with self._lock:
            by_type = self._by_type
            entries = tuple(
                entry
                for base in cls.__mro__
                for key in (base, _qualified(base))
                for entry in by_type.get(key, ())
            )
            self._cache[cls] = entries
        return entries

    def _load_plugins(self) -> None:
        with self._lock:
            if not self._plugins_pending:
                return
            self._plugins_pending = False  # set first: a plugin may look codecs up
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                try:
                    loaded = ep.load()
                    codec = loaded() if isinstance(loaded, type) else loaded
                    priority = getattr(codec, "priority", 0)
                    self._add(codec, priority, f"plugin {ep.value}")
                except Exception as exc:
                    # One broken plugin must not make every store unreadable.
                    warnings.warn(
                        f"typedstore codec plugin {ep.name!r} ({ep.value}) was not "
                        f"registered: {exc}",
                        PluginWarning,
                        stacklevel=3,
                    )


def _copied(entry: _Entry) -> _Entry:
    copy = getattr(entry.codec, "copy", None)
    return entry if copy is None else attrs.evolve(entry, codec=copy())


def _source(codec: object) -> str:
    """Where a codec registered by a call comes from, by the module of its class."""
    module = type(codec).__module__
    return "built-in" if module.split(".", 1)[0] == "typedstore" else "user"


def _default_registry() -> CodecRegistry:
    reg = CodecRegistry()
    reg.register(RawCodec())
    reg.register(SafetensorsCodec(), priority=10)
    # Dicts of tensors: after safetensors (numpy arrays), before json and tree.
    reg.register(TorchCodec(), priority=5)
    for codec in (NpyCodec(), JsonCodec(), ArrowCodec(), PickleCodec()):
        reg.register(codec)
    # After json, which holds plain data as readable text.
    reg.register(TreeCodec(), priority=-1)
    return reg


#: The default registry, with the built-in codecs.
registry = _default_registry()
