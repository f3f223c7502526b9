"""The ``torch`` codec: torch tensors and state_dicts as standard safetensors files.

A tensor is the file's tensor ``data``; a state_dict (a dict of str to tensors, as
``module.state_dict()`` returns) is one tensor per key. Both carry the metadata
``format = pt``, so ``safetensors.torch.load_file`` loads the files as they are. torch is
not imported until a tensor is stored or read: the registry knows its classes by name.
The layout is in ``codecs/torch/FORMAT.md``.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, ClassVar

from typedstore import _strictjson
from typedstore.codecs import tree
from typedstore.codecs._torch import identity, is_parameter, is_tensor, raw_tensor, storable
from typedstore.codecs._torch import to_torch as _as_torch
from typedstore.codecs.safetensors import (
    Arrays,
    Header,
    TensorFile,
    TensorFileDecoding,
    TensorSource,
    encode_tensors,
    tensor_file,
)
from typedstore.errors import DecodeError, EncodeError
from typedstore.protocols import Buffer

__all__ = ["TorchCodec"]

_KIND = "typedstore.kind"
# Names that are another name's tensor (tied weights), and every name in order, when
# some are.
_ALIASES = "typedstore.aliases"
_ORDER = "typedstore.order"
_GRAD = "typedstore.requires_grad"
# The ``_metadata`` that ``state_dict()`` attaches (module versions), as tree JSON.
_MODULE_METADATA = "typedstore.module_metadata"
_SINGLE = "data"
_KINDS = ("tensor", "parameter", "dict", "state_dict", "file")


class TorchCodec(TensorFileDecoding):
    """``torch.Tensor``, ``torch.nn.Parameter`` and state_dicts (dicts and OrderedDicts
    of str to tensors) as safetensors files that the ML world loads.

    Every dtype safetensors has is kept (bf16 and the float8 types included), tensors
    come back contiguous on the CPU (a GPU tensor is copied to the host on write) with
    ``requires_grad`` as it was, and names that share one tensor (tied weights) are
    stored once and come back sharing it. Checkpoints that nest state_dicts with other
    values are the ``tree`` codec's. Reading needs torch (extra ``torch``).
    """

    name: ClassVar[str] = "torch"
    version: ClassVar[int] = 1
    types: ClassVar[tuple[type | str, ...]] = (
        "torch.Tensor",
        "torch.nn.parameter.Parameter",
        dict,
        collections.OrderedDict,
        TensorFile,
    )

    def accepts(self, value: object) -> bool:
        """A storable tensor, or a non-empty dict of str to storable plain tensors."""
        if is_tensor(value):
            return storable(value)
        if type(value) is TensorFile:
            value = value.tensors
        if type(value) not in (dict, collections.OrderedDict) or not value:
            return False
        return all(
            type(k) is str and is_tensor(v) and not is_parameter(v) and storable(v)
            for k, v in value.items()  # type: ignore[attr-defined]
        )

    def encode(self, value: Any) -> Sequence[Buffer]:
        """A safetensors file over the tensors' own memory (CPU and contiguous)."""
        if not self.accepts(value):
            raise EncodeError(f"torch: cannot store a {type(value).__qualname__}")
        metadata = {"format": "pt"}
        if isinstance(value, TensorFile):  # its metadata as given, nothing added
            metadata = dict(value.metadata)
            metadata[_KIND] = "file"
            value = value.tensors
        elif is_tensor(value):
            metadata[_KIND] = "parameter" if is_parameter(value) else "tensor"
            if value.requires_grad:
                metadata[_GRAD] = json.dumps([_SINGLE])
            return encode_tensors({_SINGLE: raw_tensor(value)}, metadata)
        else:
            metadata[_KIND] = "state_dict" if type(value) is collections.OrderedDict else "dict"
        tensors: dict[str, TensorSource] = {}
        aliases: dict[str, str] = {}
        seen: dict[Hashable, str] = {}
        for name, tensor in value.items():
            first = seen.setdefault(identity(tensor), name)
            if first != name:
                aliases[name] = first
            else:
                tensors[name] = raw_tensor(tensor)
        if aliases:
            metadata[_ALIASES] = json.dumps(aliases)
            metadata[_ORDER] = json.dumps(list(value))
        grads = [name for name, tensor in value.items() if tensor.requires_grad]
        if grads:
            metadata[_GRAD] = json.dumps(grads)
        module_metadata = getattr(value, "_metadata", None)
        if module_metadata is not None:
            metadata[_MODULE_METADATA] = tree.dumps(dict(module_metadata))
        return encode_tensors(tensors, metadata)

    def assemble(self, header: Header, arrays: Arrays, expected_type: type[Any] | None) -> Any:
        """The tensor or state_dict (views into the stored bytes with ``zero_copy``:
        read-only, do not write to them)."""
        return _assemble(header, arrays, expected_type)


def _assemble(header: Header, arrays: Arrays, expected_type: type[Any] | None) -> Any:
    metadata = header.metadata
    kind = metadata.get(_KIND, "dict")  # a file of another tool: its tensors by name
    if kind not in _KINDS:
        raise DecodeError(f"torch: unknown kind {kind!r:.40}")
    tensors = {name: _as_torch(array) for name, array in arrays.items()}
    for name in _names(metadata, _GRAD, list):
        if name not in tensors:
            raise DecodeError(f"torch: requires_grad names a missing tensor {name!r:.80}")
        tensors[name].requires_grad_(True)
    wants_file = kind == "file" or expected_type is TensorFile
    single = not wants_file and (
        kind in ("tensor", "parameter")
        or (
            kind == "dict"
            and _KIND not in metadata
            and expected_type is not None
            and expected_type.__qualname__ in ("Tensor", "Parameter")
        )
    )
    if single:
        if len(tensors) != 1:
            raise DecodeError(f"torch: expected one tensor, the file holds {len(tensors)}")
        (tensor,) = tensors.values()
        if kind == "parameter":
            import torch

            return torch.nn.Parameter(tensor, requires_grad=tensor.requires_grad)
        return tensor
    aliases = _names(metadata, _ALIASES, dict)
    if aliases:
        for alias, target in aliases.items():
            if alias in tensors or type(target) is not str or target not in tensors:
                raise DecodeError(f"torch: alias {alias!r:.80} is not of a stored tensor")
        order = _names(metadata, _ORDER, list)
        if sorted(order) != sorted([*tensors, *aliases]):
            raise DecodeError("torch: the order does not name every tensor once")
        tensors = {name: tensors[aliases.get(name, name)] for name in order}
    if wants_file:
        return tensor_file(header, tensors)
    if kind == "dict":
        return tensors
    state = collections.OrderedDict(tensors)
    if _MODULE_METADATA in metadata:
        versions = tree.loads(metadata[_MODULE_METADATA])
        if type(versions) is not dict:
            raise DecodeError("torch: the module metadata is not a dict")
        state._metadata = collections.OrderedDict(versions)  # type: ignore[attr-defined]
    return state


def _names(metadata: Mapping[str, str], key: str, kind: type[list[Any] | dict[Any, Any]]) -> Any:
    """A JSON list or dict of str in ``metadata`` (empty if absent)."""
    if key not in metadata:
        return kind()
    try:
        value = _strictjson.loads(metadata[key], max_depth=1)
    except ValueError as exc:
        raise DecodeError(f"torch: {key} is not JSON: {exc}") from exc
    items = value if kind is list else list(value) if type(value) is dict else None
    if type(value) is not kind or not all(type(item) is str for item in items or ()):
        raise DecodeError(f"torch: {key} must be a JSON {kind.__name__} of str")
    return value
