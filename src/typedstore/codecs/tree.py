"""The ``tree`` codec: nested containers, plain Python values, arrays and registered
classes as one standard safetensors file, without pickle.

Every array is a tensor named by its path (``model.layers.0.weight``, as checkpoints name
their weights); everything else is typed JSON in the ``__metadata__`` entry
``typedstore.tree``, where a one-key object ``{"$tag": payload}`` marks each value that
JSON alone would not give back as it was. The layout is in ``codecs/tree/FORMAT.md``.
"""

from __future__ import annotations

import collections
import datetime
import decimal
import json
import math
import pathlib
import re
import sys
import uuid
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from typedstore import _strictjson
from typedstore.codecs import _sparse, attrs_v1
from typedstore.codecs._torch import identity, is_parameter, is_tensor, raw_tensor, storable
from typedstore.codecs._torch import to_torch as _as_torch
from typedstore.codecs._unpickler import MAX_EQUAL_HASHES
from typedstore.codecs.classes import ClassCatalog, ClassSpec, conforms
from typedstore.codecs.npy import NpyCodec
from typedstore.codecs.safetensors import (
    Arrays,
    Header,
    MaskedParts,
    TensorFileDecoding,
    TensorSource,
    encode_tensors,
    keeps_dtype,
)
from typedstore.errors import DecodeError, EncodeError, UnregisteredClassError
from typedstore.protocols import Buffer

__all__ = ["MAX_DEPTH", "TreeCodec", "dumps", "loads"]

#: How deep containers and class instances may nest in a tree.
MAX_DEPTH = 100
_KIND = "typedstore.kind"
_TREE = "typedstore.tree"
# JSON itself: a node nests at most three JSON levels deep ({"$dict": [[k, v]]}).
_MAX_JSON_DEPTH = 3 * MAX_DEPTH + 3
_MAX_INT_BITS = 14_000  # Python prints and parses ints of at most 4300 digits by default
_INT64 = range(-(1 << 63), 1 << 64)
_DECIMAL_INT = re.compile(r"-?(0|[1-9][0-9]*)")
_SPECIAL_FLOATS = frozenset({"nan", "inf", "-inf", "-0.0"})
_PATHS: Mapping[str, type[pathlib.PurePath]] = {
    cls.__name__: cls
    for cls in (
        pathlib.PurePosixPath,
        pathlib.PureWindowsPath,
        pathlib.PosixPath,
        pathlib.WindowsPath,
    )
}
_npy = NpyCodec()

# The values held as one node with nothing inside to walk.
_LEAVES = frozenset(
    {
        type(None),
        bool,
        int,
        float,
        str,
        complex,
        bytes,
        bytearray,
        datetime.date,
        datetime.timedelta,
        decimal.Decimal,
        uuid.UUID,
        *_PATHS.values(),
    }
)
_CONTAINERS = (list, tuple, set, frozenset, dict, collections.OrderedDict)
# What the registry offers it (ints and floats that JSON cannot hold, bytearrays that the
# raw codec would give back as bytes), besides the registered classes.
_SERVED = (
    *_CONTAINERS,
    int,
    float,
    complex,
    bytearray,
    datetime.datetime,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    decimal.Decimal,
    uuid.UUID,
    pathlib.PurePath,
)


class _NotHeld(Exception):
    """A value of a kind the tree format does not hold (another codec may)."""


class TreeCodec(TensorFileDecoding):
    """Trees of dicts, lists, tuples, sets and registered classes, holding arrays and
    plain values (see the module docstring and ``codecs/tree/FORMAT.md``).

    Register classes with :meth:`typedstore.CodecRegistry.register_class`. Decoding
    rebuilds exactly what was written: the same types (tuples, sets, int dict keys,
    datetimes with their zones, enum members, class instances), arrays with their
    dtypes. Nothing named by the data is imported: type ids are looked up among the
    registered classes. Also reads the files of the retired ``attrs`` codec.
    """

    name: ClassVar[str] = "tree"
    version: ClassVar[int] = 1

    def __init__(self, classes: ClassCatalog | None = None) -> None:
        self.classes = ClassCatalog() if classes is None else classes

    @property
    def types(self) -> tuple[type | str, ...]:
        """The containers and plain types it serves, scipy's sparse classes by name, then
        the registered classes."""
        return (*_SERVED, *_sparse.CLASSES, *self.classes.classes.values())

    def copy(self) -> TreeCodec:
        """A codec serving the same classes, registered independently (for a copied
        registry)."""
        return TreeCodec(self.classes.copy())

    def plan(self, cls: object, type_id: object = None) -> list[ClassSpec]:
        """What registering ``cls`` adds (see :meth:`ClassCatalog.plan`)."""
        return self.classes.plan(cls, type_id, _holds_type)

    def accepts(self, value: object) -> bool:
        """Whether every part of ``value`` is of a kind the format holds."""
        return _holds(self.classes, value, 0)

    def encode(self, value: Any) -> Sequence[Buffer]:
        """A safetensors file: the arrays as tensors, the rest as typed JSON."""
        encoder = _Encoder(self.classes)
        text = encoder.text(value)
        return encode_tensors(encoder.tensors, {_KIND: "tree", _TREE: text})

    def assemble(self, header: Header, arrays: Arrays, expected_type: type[Any] | None) -> Any:
        """The value the tree in the metadata describes, over the file's arrays."""
        kind = header.metadata.get(_KIND)
        if kind == "attrs":
            return attrs_v1.rebuild(header.metadata, arrays, self.classes)
        if kind != "tree" or _TREE not in header.metadata:
            raise DecodeError("tree: the file lacks typedstore tree metadata")
        return _Decoder(self.classes, arrays).value(header.metadata[_TREE])


def dumps(value: Any) -> str:
    """A value without arrays or bytes (a label, a name) as the typed JSON of the tree
    format; EncodeError if the format does not hold it or it needs a tensor."""
    encoder = _Encoder(ClassCatalog())
    text = encoder.text(value)
    if encoder.tensors:
        raise EncodeError(f"tree: {type(value).__qualname__} holds bytes or arrays")
    return text


def loads(text: str) -> Any:
    """The value :func:`dumps` wrote; DecodeError for anything else."""
    return _Decoder(ClassCatalog(), {}).value(text)


def _holds_type(cls: type) -> bool:
    """Whether a field annotated ``cls`` holds values the format holds by themselves."""
    return (
        cls in _LEAVES
        or cls in _CONTAINERS
        or cls in (datetime.datetime, datetime.time)
        or issubclass(cls, (np.ndarray, np.generic))
    )


def _holds(classes: ClassCatalog, value: object, depth: int) -> bool:
    # Kept cheap (types only, registered classes not entered): it runs before encode.
    if depth > MAX_DEPTH:  # as deep as encode refuses, leaves included
        return False
    kind = type(value)
    if kind in _LEAVES:
        return True
    if kind is list or kind is tuple or kind is set or kind is frozenset:
        return all(_holds(classes, item, depth + 1) for item in value)  # type: ignore[attr-defined]
    if kind is dict or kind is collections.OrderedDict:
        extra = getattr(value, "_metadata", None)  # of a state_dict: its modules' versions
        return all(
            _holds(classes, k, depth + 1) and _holds(classes, v, depth + 1)
            for k, v in value.items()  # type: ignore[attr-defined]
        ) and (extra is None or _holds(classes, dict(extra), depth + 1))
    if kind is np.ndarray:
        return keeps_dtype(value.dtype) or _npy.accepts(value)  # type: ignore[attr-defined]
    if kind is np.ma.MaskedArray:
        return keeps_dtype(value.dtype)  # type: ignore[attr-defined]
    if isinstance(value, np.generic):
        return kind is value.dtype.type and keeps_dtype(value.dtype)
    if kind is datetime.datetime or kind is datetime.time:
        return _zone_held(value.tzinfo)  # type: ignore[attr-defined]
    if is_tensor(value):
        return storable(value)
    if _sparse.is_sparse(value):  # its parts are its values' dtype and int indices
        values = np.empty(0, value.dtype)  # type: ignore[attr-defined]
        return keeps_dtype(values.dtype) or _npy.accepts(values)
    return kind in classes


def _zone_held(tz: datetime.tzinfo | None) -> bool:
    return (
        tz is None
        or type(tz) is datetime.timezone
        or (_is_zoneinfo(tz) and getattr(tz, "key", None) is not None)
    )


def _hashes_spread(keys: Any) -> bool:
    """Whether no more than MAX_EQUAL_HASHES of ``keys`` share a hash: more would make
    building the set or dict quadratic (int hashes are not salted), on the way back in."""
    if len(keys) <= MAX_EQUAL_HASHES:
        return True
    counts: dict[int, int] = {}
    for key in keys:
        h = hash(key)
        seen = counts[h] = counts.get(h, 0) + 1
        if seen > MAX_EQUAL_HASHES:
            return False
    return True


def _where(path: tuple[str, ...]) -> str:
    return ".".join(path) or "the value"


class _Encoder:
    """Turns a value into a JSON tree, collecting its tensors by path name."""

    def __init__(self, classes: ClassCatalog) -> None:
        self.classes = classes
        self.tensors: dict[str, TensorSource] = {}
        self.torch_names: dict[Hashable, str] = {}  # a torch tensor's memory: its name

    def text(self, value: Any) -> str:
        """The typed JSON of ``value``; its tensors are collected in ``self.tensors``."""
        try:
            tree = self.node(value, (), 0)
        except _NotHeld as exc:
            raise EncodeError(f"tree: {exc}") from None
        return json.dumps(tree, ensure_ascii=True, allow_nan=False, separators=(",", ":"))

    def tensor(self, path: tuple[str, ...], source: TensorSource) -> str:
        name = base = ".".join(path) or "value"
        n = 1
        while name in self.tensors or name == "__metadata__":
            n += 1
            name = f"{base}~{n}"
        self.tensors[name] = source
        return name

    def node(self, value: Any, path: tuple[str, ...], depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise EncodeError(f"tree: {_where(path)} is nested deeper than {MAX_DEPTH}")
        kind = type(value)
        if value is None or kind is bool or kind is str:
            return value
        write = _WRITERS.get(kind)
        if write is not None:
            return write(self, value, path, depth + 1)
        spec = self.classes.spec(kind)
        if spec is not None:
            return self.instance(spec, value, path, depth + 1)
        if isinstance(value, np.generic):
            return self.scalar(value, path)
        if is_tensor(value):
            return self.torch_tensor(value, path)
        if _sparse.is_sparse(value):
            name, shape, arrays = _sparse.parts(value)
            nodes = {k: self.node(a, (*path, k), depth + 1) for k, a in arrays.items()}
            return {"$sparse": [name, shape, nodes]}
        raise _NotHeld(
            f"{_where(path)} holds a {kind.__module__}.{kind.__qualname__}, which the "
            "tree format cannot hold; register its class with "
            "typedstore.registry.register_class (attrs, dataclass, pydantic, enum) or "
            "a codec of your own"
        )

    def items(self, values: Any, path: tuple[str, ...], depth: int) -> list[Any]:
        return [self.node(item, (*path, str(i)), depth) for i, item in enumerate(values)]

    def members(self, tag: str, values: Any, path: tuple[str, ...], depth: int) -> Any:
        if not _hashes_spread(values):
            raise _NotHeld(f"{_where(path)} holds over {MAX_EQUAL_HASHES} items of one hash")
        return {tag: self.items(values, path, depth)}

    def mapping(self, value: dict[Any, Any], path: tuple[str, ...], depth: int) -> Any:
        if all(type(k) is str and not k.startswith("$") for k in value):
            return {k: self.node(v, (*path, k), depth) for k, v in value.items()}
        return {"$dict": self.pairs(value, path, depth)}

    def ordered(self, value: Any, path: tuple[str, ...], depth: int) -> Any:
        # state_dict() attaches its modules' versions as _metadata; load_state_dict reads it.
        extra = getattr(value, "_metadata", None)
        metadata = None if extra is None else self.node(dict(extra), (*path, "~metadata"), depth)
        return {"$odict": [self.pairs(value, path, depth), metadata]}

    def pairs(self, value: Any, path: tuple[str, ...], depth: int) -> list[Any]:
        if not _hashes_spread(value):
            raise _NotHeld(f"{_where(path)} holds over {MAX_EQUAL_HASHES} keys of one hash")
        pairs = []
        for i, (k, v) in enumerate(value.items()):
            step = k if type(k) is str else str(k) if type(k) is int else str(i)
            pairs.append(
                [self.node(k, (*path, step, "key"), depth), self.node(v, (*path, step), depth)]
            )
        return pairs

    def torch_tensor(self, value: Any, path: tuple[str, ...]) -> Any:
        if not storable(value):
            raise _NotHeld(
                f"{_where(path)} is a torch tensor ({value.dtype}, {value.layout}) that "
                "safetensors cannot hold"
            )
        flags = [is_parameter(value), bool(value.requires_grad)]
        key = identity(value)
        first = self.torch_names.get(key)
        if first is not None:  # tied: stored once, and read back sharing its memory
            return {"$torch": [{"same": first}, *flags]}
        name = self.torch_names[key] = self.tensor(path, raw_tensor(value))
        return {"$torch": [name, *flags]}

    def instance(self, spec: ClassSpec, value: Any, path: tuple[str, ...], depth: int) -> Any:
        if spec.kind == "enum":
            return {"$enum": [spec.type_id, self.node(value.value, path, depth)]}
        fields = {}
        for name, item in spec.state(value).items():
            if not conforms(item, spec.fields[name]):
                raise EncodeError(
                    f"tree: {_where((*path, name))} is declared {_declared(spec, name)} but "
                    f"holds a {type(item).__qualname__}; it would not be read back"
                )
            fields[name] = self.node(item, (*path, name), depth)
        extras = spec.extras(value)
        if extras is None:
            return {"$class": [spec.type_id, fields]}
        return {"$class": [spec.type_id, fields, self.node(extras, (*path, "~model"), depth)]}

    def array(self, value: npt.NDArray[Any], path: tuple[str, ...], depth: int) -> Any:
        if keeps_dtype(value.dtype):
            return {"$array": self.tensor(path, value)}
        if not _npy.accepts(value):
            raise _NotHeld(
                f"{_where(path)} is an array of dtype {value.dtype}, which no format holds exactly"
            )
        return {"$npy": self.tensor(path, _npy.encode(value))}

    def masked(self, value: np.ma.MaskedArray[Any, Any], path: tuple[str, ...], depth: int) -> Any:
        if not keeps_dtype(value.dtype):
            raise _NotHeld(f"{_where(path)} is a masked array of dtype {value.dtype}")
        parts = MaskedParts.of(value)
        return {
            "$masked": {
                "data": self.tensor(path, parts.data),
                "mask": None if parts.mask is None else self.tensor((*path, "mask"), parts.mask),
                "fill_value": None
                if parts.fill_value is None
                else self.tensor((*path, "fill_value"), parts.fill_value),
                "hard": parts.hard,
            }
        }

    def scalar(self, value: np.generic[Any], path: tuple[str, ...]) -> Any:
        if type(value) is not value.dtype.type or not keeps_dtype(value.dtype):
            raise _NotHeld(
                f"{_where(path)} is a numpy {type(value).__qualname__}, which "
                "safetensors cannot hold"
            )
        return {"$scalar": self.tensor(path, np.asarray(value))}


def _declared(spec: ClassSpec, name: str) -> str:
    declared = spec.fields[name]
    return declared.__qualname__ if isinstance(declared, type) else repr(declared)


def _int(enc: _Encoder, value: int, path: tuple[str, ...], depth: int) -> Any:
    if value in _INT64:
        return value
    if value.bit_length() > _MAX_INT_BITS:
        raise EncodeError(f"tree: {_where(path)} is an int of more than {_MAX_INT_BITS} bits")
    return {"$int": str(value)}


def _float(value: float) -> Any:
    if math.isfinite(value) and (value or math.copysign(1.0, value) > 0):
        return value
    return {"$float": "nan" if value != value else repr(value)}


def _tz(enc: _Encoder, tz: datetime.tzinfo | None, path: tuple[str, ...]) -> Any:
    if tz is None:
        return None
    if type(tz) is datetime.timezone:
        offset, *name = tz.__getinitargs__()  # type: ignore[attr-defined]
        return {"offset": _delta(offset), "name": name[0] if name else None}
    key = getattr(tz, "key", None) if _is_zoneinfo(tz) else None
    if key is not None:
        return {"zone": key}
    raise EncodeError(
        f"tree: {_where(path)} has a time zone of type "
        f"{type(tz).__qualname__}; only datetime.timezone and zoneinfo "
        "zones are held"
    )


def _is_zoneinfo(tz: datetime.tzinfo) -> bool:
    # zoneinfo is imported only where a zone is read: a ZoneInfo exists only once it is.
    module = sys.modules.get("zoneinfo")
    return module is not None and type(tz) is module.ZoneInfo


def _delta(value: datetime.timedelta) -> list[int]:
    return [value.days, value.seconds, value.microseconds]


def _clock(enc: _Encoder, value: Any, path: tuple[str, ...], depth: int) -> Any:
    tag = "$datetime" if type(value) is datetime.datetime else "$time"
    naive = value.replace(tzinfo=None, fold=0).isoformat()
    return {tag: [naive, value.fold, _tz(enc, value.tzinfo, path)]}


_Writer = Callable[[_Encoder, Any, tuple[str, ...], int], Any]
_WRITERS: Mapping[type, _Writer] = {
    int: _int,
    float: lambda enc, v, path, depth: _float(v),
    list: _Encoder.items,
    tuple: lambda enc, v, path, depth: {"$tuple": enc.items(v, path, depth)},
    set: lambda enc, v, path, depth: enc.members("$set", v, path, depth),
    frozenset: lambda enc, v, path, depth: enc.members("$frozenset", v, path, depth),
    dict: _Encoder.mapping,
    bytes: lambda enc, v, path, depth: {"$bytes": enc.tensor(path, [v])},
    bytearray: lambda enc, v, path, depth: {"$bytearray": enc.tensor(path, [v])},
    complex: lambda enc, v, path, depth: {"$complex": [_float(v.real), _float(v.imag)]},
    datetime.datetime: _clock,
    datetime.time: _clock,
    datetime.date: lambda enc, v, path, depth: {"$date": v.isoformat()},
    datetime.timedelta: lambda enc, v, path, depth: {"$timedelta": _delta(v)},
    decimal.Decimal: lambda enc, v, path, depth: {"$decimal": str(v)},
    uuid.UUID: lambda enc, v, path, depth: {"$uuid": [str(v), v.is_safe.value]},
    **{
        cls: lambda enc, v, path, depth: {"$path": [type(v).__name__, str(v)]}
        for cls in _PATHS.values()
    },
    np.ndarray: _Encoder.array,
    np.ma.MaskedArray: _Encoder.masked,
    collections.OrderedDict: _Encoder.ordered,
}


class _Decoder:
    """Turns a JSON tree back into the value, taking each tensor once."""

    def __init__(self, classes: ClassCatalog, arrays: Arrays) -> None:
        self.classes = classes
        self.arrays = arrays
        self.used: set[str] = set()
        self.torch_tensors: dict[str, Any] = {}

    def value(self, text: str) -> Any:
        """The value whose typed JSON is ``text``; every tensor must be named once."""
        try:
            tree = _strictjson.loads(text, max_depth=_MAX_JSON_DEPTH)
        except (ValueError, RecursionError) as exc:
            raise DecodeError(f"tree: the tree is not valid JSON: {exc}") from exc
        value = self.node(tree, 0)
        unused = self.arrays.keys() - self.used
        if unused:
            raise DecodeError(f"tree: tensor {sorted(unused)[0]!r} is not in the tree")
        return value

    def tensor(self, name: object) -> npt.NDArray[Any]:
        if type(name) is not str or name not in self.arrays or name in self.used:
            raise DecodeError(f"tree: tensor reference {name!r:.80} is missing or repeated")
        self.used.add(name)
        return self.arrays[name]

    def node(self, data: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise DecodeError(f"tree: nested deeper than {MAX_DEPTH}")
        kind = type(data)
        if kind is list:
            return [self.node(item, depth + 1) for item in data]
        if kind is not dict:
            return data  # null, bool, int, float, str
        if len(data) == 1:
            ((tag, payload),) = data.items()
            if tag.startswith("$"):
                read = _READERS.get(tag)
                if read is None:
                    raise DecodeError(f"tree: unknown tag {tag!r:.40}")
                try:
                    return read(self, payload, depth + 1)
                except (
                    TypeError,
                    ValueError,
                    KeyError,
                    OverflowError,
                    decimal.InvalidOperation,
                ) as exc:
                    if isinstance(exc, DecodeError):
                        raise
                    raise DecodeError(f"tree: invalid {tag} node: {exc}") from exc
        if any(key.startswith("$") for key in data):
            raise DecodeError("tree: a plain object has a key starting with '$'")
        return {key: self.node(item, depth + 1) for key, item in data.items()}

    def items(self, payload: Any, depth: int) -> list[Any]:
        if type(payload) is not list:
            raise DecodeError("tree: a container node needs a list")
        return [self.node(item, depth) for item in payload]

    def pairs(self, payload: Any, depth: int, kind: type[dict[Any, Any]] = dict) -> Any:
        if type(payload) is not list:
            raise DecodeError("tree: a $dict node needs a list of pairs")
        pairs = []
        for pair in payload:  # a pair is no level of its own, as on the way in
            if type(pair) is not list or len(pair) != 2:
                raise DecodeError("tree: a $dict entry needs a key and a value")
            pairs.append((self.node(pair[0], depth), self.node(pair[1], depth)))
        if not _hashes_spread([key for key, _ in pairs]):
            raise DecodeError(f"tree: a $dict holds over {MAX_EQUAL_HASHES} keys of one hash")
        out = kind(pairs)
        if len(out) != len(payload):
            raise DecodeError("tree: a $dict repeats a key")
        return out

    def ordered(self, payload: Any, depth: int) -> Any:
        if type(payload) is not list or len(payload) != 2:
            raise DecodeError("tree: an $odict node needs its pairs and metadata")
        value = self.pairs(payload[0], depth, collections.OrderedDict)
        if payload[1] is not None:
            metadata = self.node(payload[1], depth)
            if type(metadata) is not dict:
                raise DecodeError("tree: an OrderedDict's _metadata must be a dict")
            value._metadata = collections.OrderedDict(metadata)
        return value

    def sparse(self, payload: Any, depth: int) -> Any:
        if (
            type(payload) is not list
            or len(payload) != 3
            or type(payload[0]) is not str
            or type(payload[1]) is not list
            or not all(type(n) is int and n >= 0 for n in payload[1])
            or type(payload[2]) is not dict
        ):
            raise DecodeError("tree: a $sparse node needs a class, a shape and its parts")
        parts = {name: self.node(node, depth) for name, node in payload[2].items()}
        return _sparse.build(payload[0], payload[1], parts)

    def torch_tensor(self, payload: Any, depth: int) -> Any:
        if (
            type(payload) is not list
            or len(payload) != 3
            or type(payload[1]) is not bool
            or type(payload[2]) is not bool
        ):
            raise DecodeError("tree: a $torch node needs a tensor and two flags")
        ref, parameter, grad = payload
        if type(ref) is dict and ref.keys() == {"same"}:
            first = self.torch_tensors.get(ref["same"]) if type(ref["same"]) is str else None
            if first is None:
                raise DecodeError(f"tree: {ref['same']!r:.80} names no torch tensor before it")
            tensor = first.detach()  # a new tensor over the same memory
        else:
            tensor = self.torch_tensors[ref] = _as_torch(self.tensor(ref))
        if parameter:
            import torch

            return torch.nn.Parameter(tensor, requires_grad=grad)
        return tensor.requires_grad_(True) if grad else tensor

    def spec(self, type_id: Any, enum: bool) -> ClassSpec:
        spec = self.classes.by_id(type_id) if type(type_id) is str else None
        if spec is None:
            raise UnregisteredClassError(
                f"tree: type id {type_id!r:.80} is not registered; register its class with "
                "typedstore.registry.register_class"
            )
        if (spec.kind == "enum") != enum:
            raise DecodeError(f"tree: {type_id} is registered as another kind of class")
        return spec

    def instance(self, payload: Any, depth: int) -> Any:
        if type(payload) is not list or len(payload) not in (2, 3) or type(payload[1]) is not dict:
            raise DecodeError("tree: a $class node needs a type id and fields")
        spec = self.spec(payload[0], enum=False)
        state = {name: self.node(item, depth) for name, item in payload[1].items()}
        extras = self.node(payload[2], depth) if len(payload) == 3 else None
        return spec.build(state, extras)

    def member(self, payload: Any, depth: int) -> Any:
        if type(payload) is not list or len(payload) != 2:
            raise DecodeError("tree: an $enum node needs a type id and a value")
        return self.spec(payload[0], enum=True).member(self.node(payload[1], depth))

    def bytes_tensor(self, payload: Any) -> npt.NDArray[Any]:
        array = self.tensor(payload)
        if array.dtype != np.uint8 or array.ndim != 1:
            raise DecodeError(f"tree: tensor {payload!r} must be a U8 vector")
        return array

    def masked(self, payload: Any, depth: int) -> Any:
        if type(payload) is not dict or payload.keys() != {"data", "mask", "fill_value", "hard"}:
            raise DecodeError("tree: a $masked node needs data, mask, fill_value and hard")
        mask, fill = payload["mask"], payload["fill_value"]
        if type(payload["hard"]) is not bool:
            raise DecodeError("tree: a masked array's hard flag must be a bool")
        return MaskedParts(
            self.tensor(payload["data"]),
            None if mask is None else self.tensor(mask),
            None if fill is None else self.tensor(fill),
            payload["hard"],
        ).join()

    def scalar(self, payload: Any) -> Any:
        array = self.tensor(payload)
        if array.shape != ():
            raise DecodeError(f"tree: a numpy scalar must be a 0-d tensor, not {array.shape}")
        return array[()]


def _read_int(payload: Any) -> int:
    if type(payload) is not str or len(payload) > 4300 or not _DECIMAL_INT.fullmatch(payload):
        raise DecodeError("tree: an $int node needs a decimal string")
    return int(payload)


def _read_float(payload: Any) -> float:
    if type(payload) is float or type(payload) is int:
        return float(payload)
    if type(payload) is dict and len(payload) == 1:
        payload = payload.get("$float")
    if type(payload) is str and payload in _SPECIAL_FLOATS:
        return float(payload)  # a new NaN each time: NaNs in a set stay distinct
    raise DecodeError(f"tree: {payload!r:.40} is not a float")


def _read_tz(payload: Any) -> datetime.tzinfo | None:
    if payload is None:
        return None
    if type(payload) is dict and payload.keys() == {"offset", "name"}:
        offset = _read_delta(payload["offset"])
        name = payload["name"]
        return datetime.timezone(offset) if name is None else datetime.timezone(offset, name)
    if type(payload) is dict and payload.keys() == {"zone"} and type(payload["zone"]) is str:
        import zoneinfo

        try:
            return zoneinfo.ZoneInfo(payload["zone"])
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise DecodeError(f"tree: time zone {payload['zone']!r:.60} is unknown here") from exc
    raise DecodeError("tree: invalid time zone")


def _read_delta(payload: Any) -> datetime.timedelta:
    if type(payload) is not list or len(payload) != 3 or not all(type(x) is int for x in payload):
        raise DecodeError("tree: a timedelta needs three ints")
    days, seconds, microseconds = payload
    return datetime.timedelta(days=days, seconds=seconds, microseconds=microseconds)


def _read_clock(kind: type[datetime.datetime] | type[datetime.time]) -> Callable[..., Any]:
    def read(dec: _Decoder, payload: Any, depth: int) -> Any:
        if type(payload) is not list or len(payload) != 3 or payload[1] not in (0, 1):
            raise DecodeError(f"tree: a {kind.__name__} needs its time, fold and zone")
        naive = kind.fromisoformat(payload[0])
        if naive.tzinfo is not None:
            raise DecodeError(f"tree: a {kind.__name__}'s time carries its zone separately")
        return naive.replace(fold=payload[1], tzinfo=_read_tz(payload[2]))

    return read


def _read_str(payload: Any) -> str:
    if type(payload) is not str:
        raise DecodeError("tree: expected a string")
    return payload


def _read_uuid(payload: Any) -> uuid.UUID:
    if type(payload) is not list or len(payload) != 2:
        raise DecodeError("tree: a $uuid node needs its text and safety")
    return uuid.UUID(_read_str(payload[0]), is_safe=uuid.SafeUUID(payload[1]))


def _read_path(payload: Any) -> pathlib.PurePath:
    if type(payload) is not list or len(payload) != 2 or payload[0] not in _PATHS:
        raise DecodeError("tree: a $path node needs a path class and its text")
    try:
        return _PATHS[payload[0]](_read_str(payload[1]))
    except NotImplementedError as exc:  # a WindowsPath elsewhere, or a PosixPath on Windows
        raise DecodeError(f"tree: a {payload[0]} cannot be made on this system") from exc


def _read_complex(payload: Any) -> complex:
    if type(payload) is not list or len(payload) != 2:
        raise DecodeError("tree: a $complex node needs two floats")
    return complex(_read_float(payload[0]), _read_float(payload[1]))


def _read_frozen(kind: type[set[Any]] | type[frozenset[Any]]) -> Callable[..., Any]:
    def read(dec: _Decoder, payload: Any, depth: int) -> Any:
        items = dec.items(payload, depth)
        if not _hashes_spread(items):
            raise DecodeError(
                f"tree: a {kind.__name__} holds over {MAX_EQUAL_HASHES} items of one hash"
            )
        value = kind(items)
        if len(value) != len(items):
            raise DecodeError(f"tree: a {kind.__name__} repeats an item")
        return value

    return read


_Reader = Callable[[_Decoder, Any, int], Any]
_READERS: Mapping[str, _Reader] = {
    "$int": lambda dec, p, depth: _read_int(p),
    "$float": lambda dec, p, depth: _read_float(p if type(p) is str else None),
    "$tuple": lambda dec, p, depth: tuple(dec.items(p, depth)),
    "$set": _read_frozen(set),
    "$frozenset": _read_frozen(frozenset),
    "$dict": _Decoder.pairs,
    "$bytes": lambda dec, p, depth: dec.bytes_tensor(p).tobytes(),
    "$bytearray": lambda dec, p, depth: bytearray(dec.bytes_tensor(p)),
    "$complex": lambda dec, p, depth: _read_complex(p),
    "$datetime": _read_clock(datetime.datetime),
    "$time": _read_clock(datetime.time),
    "$date": lambda dec, p, depth: datetime.date.fromisoformat(_read_str(p)),
    "$timedelta": lambda dec, p, depth: _read_delta(p),
    "$decimal": lambda dec, p, depth: decimal.Decimal(_read_str(p)),
    "$uuid": lambda dec, p, depth: _read_uuid(p),
    "$path": lambda dec, p, depth: _read_path(p),
    "$array": lambda dec, p, depth: dec.tensor(p),
    "$npy": lambda dec, p, depth: _npy.decode(dec.bytes_tensor(p).data),
    "$scalar": lambda dec, p, depth: dec.scalar(p),
    "$masked": _Decoder.masked,
    "$enum": _Decoder.member,
    "$class": _Decoder.instance,
    "$odict": _Decoder.ordered,
    "$torch": _Decoder.torch_tensor,
    "$sparse": _Decoder.sparse,
}
