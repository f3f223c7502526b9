"""Reading the files of the retired ``attrs`` codec (format version 1).

Registered attrs classes are now written by the ``tree`` codec, which reads these files
too: references that name the codec ``attrs`` still load. The layout is in
``codecs/attrs/FORMAT.md``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, get_args, get_origin

import cattrs
import numpy as np
import numpy.typing as npt

from typedstore import _strictjson
from typedstore.codecs.classes import ClassCatalog
from typedstore.codecs.npy import NpyCodec
from typedstore.errors import DecodeError, UnregisteredClassError

__all__ = ["make_converter", "rebuild"]

_TYPE = "typedstore.type"
_TREE = "typedstore.tree"
_TENSORS = "typedstore.tensors"
_MAX_DEPTH = 100
_npy = NpyCodec()
_converter: cattrs.Converter | None = None


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
    """The cattrs converter that rebuilds version 1 files from their class's annotations.

    Structuring is strict: no extra keys, and ``str``, ``int``, ``float`` and ``bool``
    fields take only values of their own type (an int for a float).
    """
    converter = cattrs.Converter(forbid_extra_keys=True)
    for kind in (str, int, float, bool):
        converter.register_structure_hook(kind, _strict(kind))
    converter.register_structure_hook_func(_is_ndarray_type, _structure_ndarray)
    converter.register_structure_hook(bytes, _structure_bytes)
    converter.register_structure_hook_factory(_is_int_keyed, _int_keyed(converter))

    return converter


def rebuild(
    metadata: Mapping[str, str], arrays: Mapping[str, npt.NDArray[Any]], classes: ClassCatalog
) -> Any:
    """The instance a version 1 file holds, its class looked up in ``classes`` by type
    id; DecodeError for malformed files or unknown type ids."""
    global _converter
    if not {_TYPE, _TREE, _TENSORS} <= metadata.keys():
        raise DecodeError("attrs: the file lacks typedstore attrs metadata")
    type_id = metadata[_TYPE]
    spec = classes.by_id(type_id)
    if spec is None or spec.kind != "attrs":
        raise UnregisteredClassError(
            f"attrs: type id {type_id!r} is not registered; register its class with "
            "typedstore.registry.register_class"
        )
    try:
        tree = _strictjson.loads(metadata[_TREE], allow_constants=True)
        slots = _strictjson.loads(metadata[_TENSORS])
    except (ValueError, RecursionError) as exc:
        raise DecodeError(f"attrs: metadata is not valid JSON: {exc}") from exc
    if not isinstance(slots, dict) or set(slots) != set(arrays):
        raise DecodeError("attrs: tensors and their metadata do not match")
    for name, slot in slots.items():
        tree = _insert(tree, slot, _tensor_value(arrays[name], slot, name))
    if _converter is None:
        _converter = make_converter()
    try:
        return _converter.structure(tree, spec.cls)
    except Exception as exc:
        message = (
            "; ".join(cattrs.transform_error(exc))
            if isinstance(exc, cattrs.BaseValidationError)
            else str(exc)
        )
        raise DecodeError(f"attrs: cannot rebuild {type_id}: {message}") from exc


def _tensor_value(array: npt.NDArray[Any], slot: Any, name: str) -> Any:
    if not isinstance(slot, dict) or slot.get("kind") not in ("ndarray", "npy", "bytes"):
        raise DecodeError(f"attrs: tensor {name!r} has invalid metadata")
    if slot["kind"] == "ndarray":
        return array
    if array.dtype != np.uint8 or array.ndim != 1:
        raise DecodeError(f"attrs: tensor {name!r} must be a U8 vector")
    return _npy.decode(array.data) if slot["kind"] == "npy" else array.tobytes()


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
