"""The built-in codecs, one module each."""

from __future__ import annotations

from typedstore.codecs.arrow import ArrowCodec
from typedstore.codecs.json import JsonCodec
from typedstore.codecs.npy import NpyCodec
from typedstore.codecs.pickle import PickleCodec
from typedstore.codecs.raw import RawCodec
from typedstore.codecs.safetensors import SafetensorsCodec
from typedstore.codecs.torch import TorchCodec
from typedstore.codecs.tree import TreeCodec

__all__ = [
    "ArrowCodec",
    "JsonCodec",
    "NpyCodec",
    "PickleCodec",
    "RawCodec",
    "SafetensorsCodec",
    "TorchCodec",
    "TreeCodec",
]
