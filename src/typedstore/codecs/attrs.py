"""The ``attrs`` codec: registered attrs classes as safetensors files, without pickle."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar, get_args, get_origin

import attrs
import cattrs
import numpy as np
import numpy.typing as npt
from cattrs.gen import make_dict_unstructure_fn

from typedstore import _strictjson
from typedstore.codecs.npy import NpyCodec
from typedstore.codecs.safetensors import (
    TensorSource,
    decode_tensor,
    encode_tensors,
    read_header,
    supports_dtype,
)
from typedstore.errors import DecodeError, EncodeError, RegistrationError
from typedstore.protocols import Buffer

__all__ = ["TYPE_ID_PATTERN", "AttrsCodec", "make_converter"]

#: Type ids are written into files and looked up in the registry, never imported.
TYPE_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:<>-]{1,256}")

_KIND = "typedstore.kind"
_TYPE = "typedstore.type"
_TREE = "typedstore.tree"
_TENSORS = "typedstore.tensors"
_MAX_DEPTH = 100
_MAX_INT_BITS = 14_000
_npy = NpyCodec()


def _is_ndarray_type(cls: Any) -> bool:
    return cls is np.ndarray or get_origin(cls) is np.ndarray


def _structure_ndarray(value: Any, cls: Any) -> npt.NDArray[Any]:
    if type(value) is not np.ndarray:
        raise TypeError(f"expected an array, found {type(value).__name__}")
    return value


def _structure_bytes(value: Any, cls: Any) -> bytes:
    if type(value) is not bytes:
        raise TypeError(f"expected bytes, found {type(value).__name__}")
    return value


_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)")


def _strict(kind: type) -> Callable[[Any, Any], Any]:
    # cattrs would turn 5 into "5" or 1.7 into 1; a tampered file must not pass that way.
    convert: Callable[[Any], Any] = kind

    def structure(value: Any, _: Any) -> Any:
        if type(value) is kind or (kind is float and type(value) is int):
            return convert(value)
        raise TypeError(f"expected {kind.__name__}, found {type(value).__name__}")

    return structure


def _is_int_keyed(cls: Any) -> bool:
    args = get_args(cls)
    return get_origin(cls) in (dict, Mapping, MutableMapping) and len(args) == 2 and args[0] is int


def _int_keyed(converter: cattrs.Converter) -> Callable[[Any], Callable[[Any, Any], Any]]:
    def factory(cls: Any) -> Callable[[Any, Any], Any]:
        value_type = get_args(cls)[1]

        def structure(value: Any, _: Any) -> dict[int, Any]:
            if type(value) is not dict:
                raise TypeError(f"expected a dict, found {type(value).__name__}")
            result: dict[int, Any] = {}
            for key, item in value.items():
                # JSON object keys are strings: int keys were written as decimal strings.
                if type(key) is not str or not _DECIMAL.fullmatch(key):
                    raise TypeError(f"expected an int key, found {key!r:.40}")
                result[int(key)] = converter.structure(item, value_type)
            return result

        return structure

    return factory


def make_converter() -> cattrs.Converter:
    """The cattrs converter the ``attrs`` codec uses.

    Arrays and bytes pass through unstructuring untouched (the codec turns them into
    tensors); attrs classes are unstructured exactly: an instance of a subclass where a
    class is declared is refused, since structuring from the annotation would drop what
    the subclass adds. Structuring is strict: no extra keys, and ``str``, ``int``,
    ``float`` and ``bool`` fields take only values of their own type (an int for a float).
    """
    converter = cattrs.Converter(forbid_extra_keys=True)
    for kind in (str, int, float, bool):
        converter.register_structure_hook(kind, _strict(kind))
    converter.register_structure_hook_func(_is_ndarray_type, _structure_ndarray)
    converter.register_unstructure_hook_func(_is_ndarray_type, lambda value: value)
    converter.register_structure_hook(bytes, _structure_bytes)
    converter.register_structure_hook_factory(_is_int_keyed, _int_keyed(converter))

    def exact(cls: type) -> Callable[[Any], Any]:
        generated: Callable[[Any], Any] = make_dict_unstructure_fn(cls, converter)

        def unstructure(value: Any) -> Any:
            if type(value) is not cls:
                raise EncodeError(
                    f"a {type(value).__qualname__} stands where {cls.__qualname__} is "
                    "declared; it would come back as the declared class"
                )
            return generated(value)

        return unstructure

    converter.register_unstructure_hook_factory(attrs.has, exact)
    return converter


class AttrsCodec:
    """Instances of registered attrs classes, as standard safetensors files.

    Register classes with :meth:`typedstore.CodecRegistry.register_attrs`. Encoding
    unstructures the instance with cattrs; every array anywhere in the tree becomes a
    tensor named by its path (``layers.0.weight``), arrays safetensors cannot hold become
    byte tensors in ``.npy`` format, ``bytes`` become byte tensors, and everything else is
    written as JSON in the metadata with the class's type id. Values that are none of
    these (datetimes, arbitrary objects) raise EncodeError naming their path. Decoding
    finds the class by type id in the registry (nothing named by the data is imported)
    and structures the tree with cattrs from the class's annotations, so nested attrs
    classes need no registration of their own.
    """

    name: ClassVar[str] = "attrs"
    version: ClassVar[int] = 1

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, type] = {}
        self._ids: dict[type, str] = {}
        self._converter = make_converter()

    @property
    def types(self) -> tuple[type, ...]:
        """The registered attrs classes."""
        return tuple(self._ids)

    @property
    def classes(self) -> Mapping[str, type]:
        """Registered classes by type id (read-only)."""
        return MappingProxyType(self._by_id)

    def copy(self) -> AttrsCodec:
        """A new codec serving the same classes (for a copied registry)."""
        other = AttrsCodec()
        with self._lock:
            for type_id, cls in self._by_id.items():
                other.add(cls, type_id)
        return other

    def add(self, cls: object, type_id: object = None) -> str:
        """Serve ``cls`` under ``type_id`` (default ``module.qualname``); return the id.

        Raises RegistrationError (see :meth:`check`).
        """
        with self._lock:
            cls, type_id = self._checked(cls, type_id)
            self._by_id[type_id] = cls
            self._ids[cls] = type_id
        return type_id

    def check(self, cls: object, type_id: object = None) -> None:
        """Raise RegistrationError unless :meth:`add` would accept ``cls`` and ``type_id``:
        an attrs class not registered yet, and a free type id of valid syntax."""
        with self._lock:
            self._checked(cls, type_id)

    def _checked(self, cls: object, type_id: object) -> tuple[type, str]:
        if not isinstance(cls, type) or not attrs.has(cls):
            raise RegistrationError(f"{cls!r} is not an attrs class")
        type_id = f"{cls.__module__}.{cls.__qualname__}" if type_id is None else type_id
        if not isinstance(type_id, str) or TYPE_ID_PATTERN.fullmatch(type_id) is None:
            raise RegistrationError(
                f"invalid type id {type_id!r}: use 1-256 characters of [A-Za-z0-9_.:<>-]"
            )
        if cls in self._ids:
            raise RegistrationError(
                f"{cls.__qualname__} is already registered as {self._ids[cls]!r}"
            )
        if type_id in self._by_id:
            raise RegistrationError(f"type id {type_id!r} is already taken")
        return cls, type_id

    def accepts(self, value: object) -> bool:
        """Instances of exactly a registered class."""
        return type(value) in self._ids

    def encode(self, value: Any) -> Sequence[Buffer]:
        """A safetensors file: the instance's arrays as tensors, the rest as metadata."""
        type_id = self._ids.get(type(value))
        if type_id is None:
            raise EncodeError(f"{type(value).__qualname__} is not a registered attrs class")
        try:
            tree = self._converter.unstructure(value)
        except EncodeError:
            raise
        except Exception as exc:
            raise EncodeError(f"attrs: cannot unstructure {type_id}: {exc}") from exc
        tensors: dict[str, TensorSource] = {}
        slots: dict[str, dict[str, Any]] = {}
        plain = _extract(tree, [], tensors, slots)
        metadata = {
            _KIND: "attrs",
            _TYPE: type_id,
            _TREE: json.dumps(plain, separators=(",", ":")),
            _TENSORS: json.dumps(slots, separators=(",", ":")),
        }
        return encode_tensors(tensors, metadata)

    def decode(self, data: Buffer, expected_type: type[Any] | None = None) -> Any:
        """Rebuild the instance; DecodeError for malformed files or unknown type ids."""
        view = memoryview(data)
        header = read_header(view)
        entries, metadata = header.tensors, header.metadata
        if metadata.get(_KIND) != "attrs" or not {_TYPE, _TREE, _TENSORS} <= metadata.keys():
            raise DecodeError("attrs: the file lacks typedstore attrs metadata")
        type_id = metadata[_TYPE]
        cls = self._by_id.get(type_id)
        if cls is None:
            raise DecodeError(
                f"attrs: type id {type_id!r} is not registered; register its class with "
                "typedstore.registry.register_attrs"
            )
        try:
            tree = _strictjson.loads(metadata[_TREE], allow_constants=True)
            slots = _strictjson.loads(metadata[_TENSORS])
        except (ValueError, RecursionError) as exc:
            raise DecodeError(f"attrs: metadata is not valid JSON: {exc}") from exc
        if not isinstance(slots, dict) or set(slots) != set(entries):
            raise DecodeError("attrs: tensors and their metadata do not match")
        for name, slot in slots.items():
            tree = _insert(tree, slot, _tensor_value(view, entries[name], slot, name))
        try:
            return self._converter.structure(tree, cls)
        except Exception as exc:
            message = (
                "; ".join(cattrs.transform_error(exc))
                if isinstance(exc, cattrs.BaseValidationError)
                else str(exc)
            )
            raise DecodeError(f"attrs: cannot rebuild {type_id}: {message}") from exc


def _path_name(path: list[str | int]) -> str:
    return ".".join(str(p) for p in path) or "value"


def _extract(
    node: Any,
    path: list[str | int],
    tensors: dict[str, TensorSource],
    slots: dict[str, dict[str, Any]],
) -> Any:
    """JSON data for ``node``, with arrays and bytes moved into ``tensors``."""
    if len(path) > _MAX_DEPTH:
        raise EncodeError(f"attrs: {_path_name(path)} is nested deeper than {_MAX_DEPTH}")
    kind = type(node)
    if kind is np.ndarray:
        if supports_dtype(node.dtype):
            return _slot(path, node, "ndarray", tensors, slots)
        if not node.dtype.hasobject:
            return _slot(path, _npy.encode(node), "npy", tensors, slots)
    elif kind is bytes or kind is bytearray:
        return _slot(path, [node], "bytes", tensors, slots)
    elif node is None or kind is bool or kind is str or kind is float:
        return node
    elif kind is int:
        if node.bit_length() <= _MAX_INT_BITS:
            return node
    elif kind in (list, tuple, set, frozenset):
        return [_extract(item, [*path, i], tensors, slots) for i, item in enumerate(node)]
    elif kind is dict:
        out: dict[str, Any] = {}
        for key, item in node.items():
            if type(key) not in (str, int) or str(key) in out:
                raise EncodeError(
                    f"attrs: {_path_name(path)} has key {key!r}; keys must be distinct str or int"
                )
            out[str(key)] = _extract(item, [*path, str(key)], tensors, slots)
        return out
    raise EncodeError(
        f"attrs: field {_path_name(path)} holds a {kind.__qualname__}, which the attrs "
        "format cannot hold (arrays, bytes and JSON data only); register a codec of "
        "your own for this class"
    )


def _slot(
    path: list[str | int],
    source: TensorSource,
    kind: str,
    tensors: dict[str, TensorSource],
    slots: dict[str, dict[str, Any]],
) -> None:
    name = base = _path_name(path)
    n = 1
    while name in tensors or name == "__metadata__":
        n += 1
        name = f"{base}~{n}"
    tensors[name] = source
    slots[name] = {"path": path, "kind": kind}
    return


def _tensor_value(view: memoryview, entry: Any, slot: Any, name: str) -> Any:
    if not isinstance(slot, dict) or slot.get("kind") not in ("ndarray", "npy", "bytes"):
        raise DecodeError(f"attrs: tensor {name!r} has invalid metadata")
    if slot["kind"] == "ndarray":
        return decode_tensor(view, entry)
    if entry.dtype != np.uint8 or len(entry.shape) != 1:
        raise DecodeError(f"attrs: tensor {name!r} must be a U8 vector")
    raw = view[entry.start : entry.end]
    return _npy.decode(raw) if slot["kind"] == "npy" else bytes(raw)


def _insert(tree: Any, slot: dict[str, Any], value: Any) -> Any:
    path = slot.get("path")
    if not isinstance(path, list) or len(path) > _MAX_DEPTH + 1:
        raise DecodeError("attrs: invalid tensor path")
    if not path:
        return value
    parent = tree
    for step in path[:-1]:
        parent = _child(parent, step)
    last = path[-1]
    if _child(parent, last) is not None:
        raise DecodeError(f"attrs: tensor path {path} does not point at a placeholder")
    parent[last] = value
    return tree


def _child(node: Any, step: Any) -> Any:
    if isinstance(node, list) and type(step) is int and 0 <= step < len(node):
        return node[step]
    if isinstance(node, dict) and type(step) is str and step in node:
        return node[step]
    raise DecodeError(f"attrs: tensor path step {step!r} does not exist in the tree")
