"""The built-in codecs, one module each."""

from __future__ import annotations

from typedstore.codecs.attrs import AttrsCodec
from typedstore.codecs.json import JsonCodec
from typedstore.codecs.npy import NpyCodec
from typedstore.codecs.pickle import PickleCodec
from typedstore.codecs.raw import RawCodec
from typedstore.codecs.safetensors import SafetensorsCodec

__all__ = ["AttrsCodec", "JsonCodec", "NpyCodec", "PickleCodec", "RawCodec", "SafetensorsCodec"]
