"""torch tensors to and from the tensors of a safetensors file, for the ``torch`` and
``tree`` codecs.

torch is imported only when a tensor is converted: a tensor exists only once torch is
imported anyway, and reading one back needs it then.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable
from typing import Any

import numpy as np
import numpy.typing as npt

from typedstore.codecs.safetensors import RawTensor
from typedstore.errors import DecodeError

__all__ = ["EXTRA", "identity", "is_parameter", "is_tensor", "raw_tensor", "storable", "to_torch"]

EXTRA = "pip install 'typedstore[torch]'"

# torch's dtype names and their safetensors names. numpy (with ml_dtypes) names these
# dtypes as torch does, so a tensor read as an array finds its torch dtype by that name.
_CODES = {
    "bool": "BOOL",
    "uint8": "U8",
    "int8": "I8",
    "uint16": "U16",
    "int16": "I16",
    "uint32": "U32",
    "int32": "I32",
    "uint64": "U64",
    "int64": "I64",
    "float16": "F16",
    "bfloat16": "BF16",
    "float32": "F32",
    "float64": "F64",
    "complex64": "C64",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "float8_e4m3fnuz": "F8_E4M3FNUZ",
    "float8_e5m2fnuz": "F8_E5M2FNUZ",
    "float8_e8m0fnu": "F8_E8M0",
}


def is_tensor(value: object) -> bool:
    """Whether ``value`` is exactly a ``torch.Tensor`` or ``torch.nn.Parameter`` (not a
    subclass, whose state would be lost)."""
    cls = type(value)
    return (cls.__module__, cls.__qualname__) in (
        ("torch", "Tensor"),
        ("torch.nn.parameter", "Parameter"),
    )


def is_parameter(value: object) -> bool:
    """Whether ``value`` is exactly a ``torch.nn.Parameter``."""
    return type(value).__qualname__ == "Parameter" and is_tensor(value)


def storable(tensor: Any) -> bool:
    """Whether a tensor's values fit a safetensors tensor exactly: a dense tensor (any
    device but ``meta``) of a dtype safetensors names."""
    return (
        str(tensor.layout) == "torch.strided"
        and not tensor.is_quantized
        and not tensor.is_nested
        and tensor.device.type != "meta"
        and str(tensor.dtype).removeprefix("torch.") in _CODES
    )


def identity(tensor: Any) -> Hashable:
    """What two names of one tensor share: the same memory, seen the same way."""
    return (
        tensor.device,
        tensor.untyped_storage().data_ptr(),
        tensor.storage_offset(),
        tuple(tensor.shape),
        tensor.stride(),
        tensor.dtype,
    )


def raw_tensor(tensor: Any) -> RawTensor:
    """The tensor's values as a safetensors tensor: its own memory where it is on the CPU
    and contiguous (else a contiguous copy on the CPU)."""
    import torch

    flat = tensor.detach()
    if flat.device.type != "cpu":
        flat = flat.cpu()
    flat = flat.resolve_conj().resolve_neg().contiguous().reshape(-1)
    code = _CODES[str(flat.dtype).removeprefix("torch.")]
    data = flat.view(torch.uint8).numpy() if flat.numel() else b""
    return RawTensor(code, tuple(tensor.shape), data)


def to_torch(array: npt.NDArray[Any]) -> Any:
    """A tensor over the array's memory (no copy): writable if the array is."""
    try:
        import torch
    except ImportError:
        raise DecodeError(f"reading torch tensors needs torch: {EXTRA}") from None
    dtype = getattr(torch, array.dtype.name, None)
    if not isinstance(dtype, torch.dtype):
        raise DecodeError(f"torch has no dtype {array.dtype.name}")
    flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    with warnings.catch_warnings():
        # Views of stored bytes (zero_copy) are read-only: documented, not warned about.
        warnings.simplefilter("ignore", UserWarning)
        tensor = torch.from_numpy(flat)
    return tensor.view(dtype).reshape(array.shape)
