"""Registered classes: attrs classes, dataclasses, pydantic models and enums, known by a
type id, taken apart into their field values and rebuilt from them without running their
code (no ``__init__``, converter, validator or post-init hook), as pickle rebuilds them.

Nothing here imports pydantic: a class is a pydantic model only if pydantic is imported
already (a model cannot exist otherwise).
"""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import enum
import re
import sys
import threading
import types
import typing
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal, TypeVar, get_args, get_origin

import attrs
import numpy as np

from typedstore.errors import DecodeError, RegistrationError

__all__ = ["TYPE_ID_PATTERN", "ClassCatalog", "ClassSpec", "conforms", "registrable"]

#: Type ids are written into files and looked up in a catalog, never imported.
TYPE_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:<>-]{1,256}")

_Kind = Literal["attrs", "dataclass", "pydantic", "enum"]

# The abstract and concrete containers an annotation may name; their items are checked.
_SEQUENCES = (
    list,
    set,
    frozenset,
    cabc.Sequence,
    cabc.MutableSequence,
    cabc.Set,
    cabc.MutableSet,
    cabc.Collection,
    cabc.Iterable,
)
_MAPPINGS = (dict, cabc.Mapping, cabc.MutableMapping)
_UNIONS = (typing.Union, types.UnionType)


def _pydantic_model(cls: type) -> bool:
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and issubclass(cls, pydantic.BaseModel)


def registrable(cls: type) -> bool:
    """Whether ``cls`` is a kind of class that ``register_class`` takes."""
    return _kind(cls) is not None


def _kind(cls: type) -> _Kind | None:
    if attrs.has(cls):
        return "attrs"
    if dataclasses.is_dataclass(cls):
        return "dataclass"
    if issubclass(cls, enum.Enum):
        return "enum"
    if _pydantic_model(cls):
        return "pydantic"
    return None


@attrs.frozen
class ClassSpec:
    """How one registered class is stored: its type id, its kind and its fields with
    their annotations (none for an enum, whose members are stored by value)."""

    cls: type
    type_id: str
    kind: _Kind
    fields: Mapping[str, Any]

    def state(self, obj: Any) -> dict[str, Any]:
        """The field values of ``obj``; a field never set (``init=False``) is absent."""
        if self.kind == "pydantic":
            stored = obj.__dict__
            return {name: stored[name] for name in self.fields if name in stored}
        state = {}
        for name in self.fields:
            try:
                state[name] = getattr(obj, name)
            except AttributeError:
                continue
        return state

    def extras(self, obj: Any) -> dict[str, Any] | None:
        """What a pydantic model holds besides its fields (which were set, extra and
        private values); None for the other kinds."""
        if self.kind != "pydantic":
            return None
        return {
            "fields_set": sorted(obj.__pydantic_fields_set__),
            "extra": obj.__pydantic_extra__,
            "private": obj.__pydantic_private__,
        }

    def build(self, state: dict[str, Any], extras: Any) -> Any:
        """An instance holding ``state``, made without calling the class's code; each
        value is checked against its annotation first. Raises DecodeError."""
        unknown = state.keys() - self.fields.keys()
        if unknown:
            raise DecodeError(f"{self.type_id} has no field {sorted(unknown)[0]!r}")
        for name, value in state.items():
            if not conforms(value, self.fields[name]):
                raise DecodeError(
                    f"{self.type_id}.{name} is declared {_describe(self.fields[name])}, "
                    f"the data holds a {type(value).__qualname__}"
                )
        obj: Any = object.__new__(self.cls)
        if self.kind == "pydantic":
            self._restore_pydantic(obj, state, extras)
            return obj
        if extras is not None:
            raise DecodeError(f"{self.type_id} is not a pydantic model, the data says it is")
        for name, value in state.items():
            object.__setattr__(obj, name, value)  # frozen classes too, as pickle does
        return obj

    def _restore_pydantic(self, obj: Any, state: dict[str, Any], extras: Any) -> None:
        if type(extras) is not dict or extras.keys() != {"fields_set", "extra", "private"}:
            raise DecodeError(f"{self.type_id}: a pydantic model needs its fields_set")
        fields_set, extra, private = extras["fields_set"], extras["extra"], extras["private"]
        for part in (extra, private):
            if part is not None and (type(part) is not dict or not all(map(_is_str, part))):
                raise DecodeError(f"{self.type_id}: extra and private values need str names")
        if type(fields_set) is not list or not set(fields_set) <= self.fields.keys() | (
            extra or {}
        ).keys():
            raise DecodeError(f"{self.type_id}: invalid fields_set")
        # What pydantic's own __setstate__ sets, without validation.
        object.__setattr__(obj, "__dict__", state)
        object.__setattr__(obj, "__pydantic_fields_set__", set(fields_set))
        object.__setattr__(obj, "__pydantic_extra__", extra)
        object.__setattr__(obj, "__pydantic_private__", private)

    def member(self, value: Any) -> enum.Enum:
        """The member of an enum with ``value`` (flag combinations included)."""
        try:
            member: Any = self.cls(value)
        except (ValueError, TypeError) as exc:
            raise DecodeError(f"{self.type_id} has no member {value!r:.60}") from exc
        if not isinstance(member, enum.Enum) or type(member) is not self.cls:
            raise DecodeError(f"{self.type_id} gave a {type(member).__qualname__}")
        return member


def _is_str(value: object) -> bool:
    return type(value) is str


def _spec(cls: type, type_id: str | None) -> ClassSpec:
    kind = _kind(cls)
    if kind is None:
        raise RegistrationError(
            f"{cls!r} is not an attrs class, a dataclass, a pydantic model or an enum; "
            "register a codec of its own for it"
        )
    type_id = f"{cls.__module__}.{cls.__qualname__}" if type_id is None else type_id
    if TYPE_ID_PATTERN.fullmatch(type_id) is None:
        raise RegistrationError(
            f"invalid type id {type_id!r}: use 1-256 characters of [A-Za-z0-9_.:<>-]"
        )
    return ClassSpec(cls, type_id, kind, MappingProxyType(_fields(cls, kind)))


def _fields(cls: type, kind: _Kind) -> dict[str, Any]:
    if kind == "enum":
        return {}
    if kind == "pydantic":
        model_fields: dict[str, Any] = cls.model_fields  # type: ignore[attr-defined]
        return {name: info.annotation for name, info in model_fields.items()}
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except Exception as exc:
        raise RegistrationError(
            f"cannot resolve the annotations of {cls.__qualname__}: {exc}"
        ) from exc
    if kind == "attrs":
        return {f.name: hints.get(f.name, f.type or Any) for f in attrs.fields(cls)}
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


class ClassCatalog:
    """Registered classes by class and by type id (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._by_cls: dict[type, ClassSpec] = {}
        self._by_id: dict[str, ClassSpec] = {}

    def __contains__(self, cls: object) -> bool:
        return cls in self._by_cls

    def spec(self, cls: type) -> ClassSpec | None:
        """The spec of exactly ``cls`` (not of its base classes), None if unregistered."""
        return self._by_cls.get(cls)

    def by_id(self, type_id: str) -> ClassSpec | None:
        """The spec registered under ``type_id``, None if none is."""
        return self._by_id.get(type_id)

    @property
    def classes(self) -> Mapping[str, type]:
        """Registered classes by type id (a snapshot)."""
        with self._lock:
            return MappingProxyType({tid: spec.cls for tid, spec in self._by_id.items()})

    def plan(self, cls: object, type_id: object, holds: Callable[[type], bool]) -> list[ClassSpec]:
        """The specs that registering ``cls`` adds: its own, then those of the classes
        its fields name that are not registered yet (under their default ids).

        ``holds`` tells which other classes the format holds as they are. Raises
        RegistrationError, naming the field path, for a class already registered, a
        taken or invalid type id, an annotation that cannot be resolved, or a field type
        that nothing holds.
        """
        if not isinstance(cls, type):
            raise RegistrationError(f"{cls!r} is not a class")
        if type_id is not None and not isinstance(type_id, str):
            raise RegistrationError(f"invalid type id {type_id!r}: a type id is a str")
        with self._lock:
            if cls in self._by_cls:
                raise RegistrationError(
                    f"{cls.__qualname__} is already registered as {self._by_cls[cls].type_id!r}"
                )
            return _Planner(self, holds).run(cls, type_id)

    def add(self, specs: list[ClassSpec]) -> None:
        """Register what :meth:`plan` returned (checked again: another thread may have
        registered in between)."""
        with self._lock:
            for spec in specs:
                if spec.cls in self._by_cls or spec.type_id in self._by_id:
                    raise RegistrationError(f"{spec.type_id!r} was registered meanwhile")
            for spec in specs:
                self._by_cls[spec.cls] = spec
                self._by_id[spec.type_id] = spec

    def copy(self) -> ClassCatalog:
        """A catalog with the same classes, registered independently from now on."""
        other = ClassCatalog()
        with self._lock:
            other._by_cls = dict(self._by_cls)
            other._by_id = dict(self._by_id)
        return other


class _Planner:
    def __init__(self, catalog: ClassCatalog, holds: Callable[[type], bool]) -> None:
        self.catalog, self.holds = catalog, holds
        self.new: dict[type, ClassSpec] = {}

    def run(self, cls: type, type_id: str | None) -> list[ClassSpec]:
        self.visit(cls, type_id, cls.__qualname__)
        return list(self.new.values())

    def visit(self, cls: type, type_id: str | None, path: str) -> None:
        if cls in self.catalog or cls in self.new:
            return
        spec = _spec(cls, type_id)
        taken = self.catalog.by_id(spec.type_id)
        if taken is not None or any(s.type_id == spec.type_id for s in self.new.values()):
            raise RegistrationError(f"type id {spec.type_id!r} is already taken ({path})")
        self.new[cls] = spec
        for name, annotation in spec.fields.items():
            self.walk(annotation, f"{path}.{name}")

    def walk(self, tp: Any, path: str) -> None:
        if tp is Any or tp is object or tp is None or tp is type(None) or tp is Ellipsis:
            return
        if type(tp) is tuple and not tp:  # tuple[()]
            return
        if isinstance(tp, TypeVar):
            # A type variable holds whatever its bound allows: checked on each write.
            for bound in (tp.__bound__, *tp.__constraints__):
                if bound is not None:
                    self.walk(bound, path)
            return
        supertype = getattr(tp, "__supertype__", None)  # typing.NewType
        if supertype is not None:
            self.walk(supertype, path)
            return
        origin, args = get_origin(tp), get_args(tp)
        if origin is typing.Annotated:
            self.walk(args[0], path)
        elif origin is Literal:
            for arg in args:
                if not isinstance(arg, (str, int, bytes, enum.Enum)) and arg is not None:
                    raise RegistrationError(f"{path}: Literal[{arg!r}] is not a holdable value")
        elif origin in _UNIONS or origin is tuple or origin in _SEQUENCES or origin in _MAPPINGS:
            for arg in args:
                self.walk(arg, path)
        elif origin is not None:
            if isinstance(origin, type) and issubclass(origin, np.ndarray):
                return
            self.leaf(origin, path, tp)
        elif isinstance(tp, type):
            self.leaf(tp, path, tp)
        else:
            raise RegistrationError(f"{path}: the annotation {tp!r} is not a type it can check")

    def leaf(self, cls: type, path: str, annotation: Any) -> None:
        if self.holds(cls):
            return
        if _kind(cls) is not None:
            self.visit(cls, None, path)
            return
        raise RegistrationError(
            f"{path}: nothing stores a {_describe(annotation)} without pickle; register "
            "it too (attrs, dataclass, pydantic or enum) or change the annotation"
        )


def _describe(tp: Any) -> str:
    return tp.__qualname__ if isinstance(tp, type) else repr(tp)


def conforms(value: Any, tp: Any) -> bool:
    """Whether ``value`` fits the annotation ``tp``, items of containers included.

    As type checkers read annotations: an int is a float, an int or float a complex.
    Type variables are checked against their bound or constraints; dtypes and shapes of
    arrays are not checked.
    """
    if tp is Any or tp is object:
        return True
    if tp is None or tp is type(None):
        return value is None
    if isinstance(tp, TypeVar):
        if tp.__bound__ is not None:
            return conforms(value, tp.__bound__)
        return not tp.__constraints__ or any(conforms(value, c) for c in tp.__constraints__)
    origin = get_origin(tp)
    if origin is None:
        if tp is float:
            return isinstance(value, (int, float))
        if tp is complex:
            return isinstance(value, (int, float, complex))
        if isinstance(tp, type):
            return isinstance(value, tp)
        supertype = getattr(tp, "__supertype__", None)
        return supertype is None or conforms(value, supertype)
    args = get_args(tp)
    if origin is typing.Annotated:
        return conforms(value, args[0])
    if origin in _UNIONS:
        return any(conforms(value, arg) for arg in args)
    if origin is Literal:
        return any(type(value) is type(arg) and value == arg for arg in args)
    if not isinstance(origin, type) or not isinstance(value, origin):
        return False
    held: Any = value
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return all(conforms(item, args[0]) for item in held)
        if args == ((),):
            return not held
        return not args or (len(held) == len(args) and all(map(conforms, held, args)))
    if origin in _MAPPINGS and len(args) == 2:
        return all(conforms(k, args[0]) and conforms(v, args[1]) for k, v in held.items())
    if origin in _SEQUENCES and len(args) == 1:
        return all(conforms(item, args[0]) for item in held)
    return True
