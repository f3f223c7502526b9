"""typedstore against the tools users would pick instead, measured side by side.

Scenarios (all in one run, contenders interleaved round by round so that machine noise
hits all of them alike; medians with min-max; ratios against the raw-I/O baseline of the
same run):

- ``large``: one float32 array (256 MiB; also 1 GiB without ``--quick``) written and
  read by raw file I/O, typedstore, the safetensors library, numpy, pickle and joblib,
  with twice the rounds of the other groups (except with ``--quick``).
- ``integrity``: the same array (256 MiB and 1 GiB) by typedstore with its default
  crc32c, with no checksum and with sha256, and by raw I/O; ratios against no checksum.
- ``datastore``: 100 arrays of 1 MiB in one object (three times the rounds, twice with
  ``--quick``: its steps are short), once with arrays in freshly mapped memory and once in
  recycled memory.
- ``checkpoint``: a training checkpoint, 200 tensors (1 GiB, 256 MiB with ``--quick``)
  nested with plain values, against a flat dict of the same tensors and raw I/O.
- ``torch``: a state_dict of 200 tensors, bf16 and f32 (1 GiB, 256 MiB with ``--quick``),
  against safetensors.torch, torch.save/torch.load and raw I/O of the same bytes.
- ``tables``: pandas frames (1 GiB, 128 MiB with ``--quick``; numeric, and mixed with
  strings and categoricals) as Arrow IPC, against Feather, Parquet and pickle.
- ``s3``: 64 MiB (other sizes with ``--s3-mib``) through an S3 server on loopback
  (moto, or the running server ``--s3-endpoint`` names), against a plain s3fs put and get
  and boto3's managed transfers, with the peak memory of each; and one column of a
  100-column frame against the whole frame.
- ``experiments``: persist and load of experiments of 1,000 to 100,000 runs of 10 scalar
  fields (1,000 and 10,000 with ``--quick``), and of 100 runs each holding a 1 MiB
  DataStore (flushed to disk before the commit, and not), on
  SQLite and on PostgreSQL (a server started on loopback), against mltraq on SQLite.
- ``dispatch``: registry lookups for already-seen types.
- ``small``: thousands of small values, one object each (run last: after mass deletes,
  ext4 makes new files slow for a while).

Peak memory per contender is measured in a separate process (``--memory``).

    python benchmarks/bench.py --quick               # under 2 minutes
    python benchmarks/bench.py --memory --write      # full run, updates RESULTS.md and chart
    python benchmarks/bench.py --only small          # one group (repeatable)
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import pickle
import platform
import random
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.numpy

import typedstore as ts

try:
    import joblib
except ImportError:  # optional contender
    joblib = None

HERE = Path(__file__).resolve().parent
MiB = 1 << 20
Op = Callable[[], object]
Array = np.ndarray[Any, Any]


def warm(nbytes: int) -> None:
    """Touch ~3x the payload: memory the VM gave back to its host is slow to reuse."""
    scratch = np.ones(3 * nbytes, dtype=np.uint8)
    del scratch


# glibc's malloc gives an array of 128 KiB or more either freshly mapped memory or memory a
# freed array left in its heap, depending on what the process freed before (its thresholds
# adapt): reading 100 fresh arrays of 1 MiB then takes about 55 or 17 ms, and a run would
# land in either state by chance. The suite fixes the state instead (see main).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
ALLOCATOR_STATES = {
    # The thresholds' starting values, kept from adapting: every array of 128 KiB or
    # more is a new map, as in a process that has not freed one yet.
    "fresh memory": (128 << 10, 128 << 10),
    # Arrays up to 32 MiB come from the heap, which keeps what is freed: as in a process
    # that has freed such arrays before.
    "recycled memory": (32 << 20, 1 << 30),
}


def allocator(state: str) -> bool:
    """Fix glibc's malloc in one of ALLOCATOR_STATES; False where that is not possible."""
    mmap_threshold, trim_threshold = ALLOCATOR_STATES[state]
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(
        mallopt(_M_MMAP_THRESHOLD, mmap_threshold) and mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )


def as_bytes(array: Array) -> memoryview:
    """The array's memory as bytes, without a copy."""
    return memoryview(array.reshape(-1).view(np.uint8).data)


def raw_write(path: str | Path, buffers: list[memoryview], preallocate: bool = False) -> None:
    """Plain write of buffers to a new file (the write limit of this machine)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if preallocate:
            os.posix_fallocate(fd, 0, sum(b.nbytes for b in buffers))
        for view in buffers:
            while view.nbytes:
                view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def raw_read_into(path: Path, arrays: list[Array]) -> list[Array]:
    """Read a file straight into fresh arrays (the read limit of this machine)."""
    out = [np.empty_like(a) for a in arrays]
    with open(path, "rb", buffering=0) as f:
        for a in out:
            f.readinto(as_bytes(a))
    return out


class Runner:
    """Times contenders round by round and keeps every sample."""

    def __init__(self, rounds: int, payload: int) -> None:
        self.rounds = rounds
        self.payload = payload
        self.samples: dict[str, list[float]] = {}

    def run(self, contenders: dict[str, tuple[Op | None, Op]]) -> None:
        """contenders: name -> (untimed setup run before each timing, the timed op)."""
        names = list(contenders)
        for name in names:  # results keep the contenders' order
            self.samples.setdefault(name, [])
        # A fixed seed: runs are comparable, yet no contender always follows the same
        # neighbour, whose freed memory and written-back pages it would inherit.
        order = random.Random(0)
        for round_ in range(self.rounds + 1):  # round 0 warms up and is dropped
            order.shuffle(names)
            for name in names:
                setup, op = contenders[name]
                if setup is not None:
                    setup()
                # Dirty pages of earlier writes would otherwise be written back during
                # this step, at random (a 1 GiB write leaves a lot to write back).
                os.sync()
                if self.payload:
                    warm(self.payload)
                gc.collect()
                start = time.perf_counter()
                op()
                elapsed = time.perf_counter() - start
                if round_:
                    self.samples[name].append(elapsed)

    def rows(self, op: str, baseline: str, nbytes: int, per: int = 1) -> list[dict[str, Any]]:
        """Result rows, each median as a ratio to the median of ``baseline``."""
        base = statistics.median(self.samples[baseline]) / per
        return [
            {
                "op": op,
                **row(name, [t / per for t in runs], base, nbytes, "us" if per > 1 else "ms"),
            }
            for name, runs in self.samples.items()
        ]


def row(name: str, runs: list[float], base: float, nbytes: int, unit: str) -> dict[str, Any]:
    """One result: median, min-max, throughput and ratio."""
    median = statistics.median(runs)
    scale = 1e6 if unit == "us" else 1e3
    return {
        "contender": name,
        "median": median * scale,
        "min": min(runs) * scale,
        "max": max(runs) * scale,
        "unit": unit,
        "GB/s": nbytes / median / 1e9 if nbytes else None,
        "ratio": median / base,
    }


# --- scenarios ----------------------------------------------------------------------------


def large(tmp: Path, mib: int, rounds: int) -> list[dict[str, Any]]:
    """One large float32 array, written and read by every contender."""
    array = np.random.default_rng(0).random(mib * MiB // 4, dtype=np.float32)
    n = array.nbytes
    # Each writer has a file of its own: removing a file that was just written and not yet
    # written back costs nothing, which would give a writer sharing it a quieter start.
    paths = {name: tmp / f"large-{name}" for name in ("raw", "pre", "st", "npy", "pkl", "jl")}
    paths["npy"] = tmp / "large.npy"
    ts.options.set("datastore.url", str(tmp / "store"))
    refs: dict[str, str] = {}

    def unlink(path: Path) -> Op:
        return lambda: path.unlink(missing_ok=True)

    def ts_write() -> None:
        refs["w"] = ts.DataStoreIO.serialize_write(array, "large").url

    def ts_write_sha256() -> None:
        with ts.options.ctx({"datastore.checksum": "sha256"}):
            refs["sha"] = ts.DataStoreIO.serialize_write(array, "large-sha").url

    def ts_write_unchecked() -> None:
        with ts.options.ctx({"datastore.checksum": None}):
            refs["none"] = ts.DataStoreIO.serialize_write(array, "large-none").url

    def pickle_dump() -> None:
        with open(paths["pkl"], "wb") as f:
            pickle.dump(array, f, protocol=5)

    def pickle_load() -> Any:
        with open(paths["pkl"], "rb") as f:
            return pickle.load(f)

    writers: dict[str, tuple[Op | None, Op]] = {
        "raw write": (unlink(paths["raw"]), lambda: raw_write(paths["raw"], [as_bytes(array)])),
        "raw write, preallocated": (
            unlink(paths["pre"]),
            lambda: raw_write(paths["pre"], [as_bytes(array)], preallocate=True),
        ),
        "typedstore serialize_write": (lambda: ts.DataStoreIO.delete("large"), ts_write),
        "typedstore serialize_write, no checksum": (
            lambda: ts.DataStoreIO.delete("large-none"),
            ts_write_unchecked,
        ),
        "typedstore serialize_write, sha256": (
            lambda: ts.DataStoreIO.delete("large-sha"),
            ts_write_sha256,
        ),
        "safetensors save_file": (
            unlink(paths["st"]),
            lambda: safetensors.numpy.save_file({"a": array}, paths["st"]),
        ),
        "np.save": (unlink(paths["npy"]), lambda: np.save(paths["npy"], array)),
        "pickle dump": (unlink(paths["pkl"]), pickle_dump),
    }
    if joblib is not None:
        writers["joblib dump"] = (unlink(paths["jl"]), lambda: joblib.dump(array, paths["jl"]))
    writes = Runner(rounds, n)
    writes.run(writers)
    readers: dict[str, tuple[Op | None, Op]] = {
        "raw readinto fresh array": (None, lambda: raw_read_into(paths["raw"], [array])),
        "mmap (np.load mmap_mode)": (None, lambda: np.load(paths["npy"], mmap_mode="r")),
        "typedstore read_deserialize": (
            None,
            lambda: ts.DataStoreIO(refs["w"]).read_deserialize(np.ndarray),
        ),
        "typedstore read_deserialize, no checksum": (
            None,
            lambda: ts.DataStoreIO(refs["none"]).read_deserialize(np.ndarray),
        ),
        "typedstore read_deserialize, sha256": (
            None,
            lambda: ts.DataStoreIO(refs["sha"]).read_deserialize(np.ndarray),
        ),
        "typedstore zero_copy": (
            None,
            lambda: ts.DataStoreIO(refs["w"]).read_deserialize(np.ndarray, zero_copy=True),
        ),
        "typedstore zero_copy, no checksum": (
            None,
            lambda: ts.DataStoreIO(refs["none"]).read_deserialize(np.ndarray, zero_copy=True),
        ),
        "safetensors load_file": (None, lambda: safetensors.numpy.load_file(paths["st"])),
        "np.load": (None, lambda: np.load(paths["npy"])),
        "pickle load": (None, pickle_load),
    }
    if joblib is not None:
        readers["joblib load"] = (None, lambda: joblib.load(paths["jl"]))
    reads = Runner(rounds, n)
    reads.run(readers)
    ts.DataStoreIO.delete("large")
    ts.DataStoreIO.delete("large-sha")
    ts.DataStoreIO.delete("large-none")
    for path in paths.values():
        path.unlink(missing_ok=True)
    return writes.rows("write", "raw write", n) + reads.rows("read", "raw readinto fresh array", n)


def integrity(tmp: Path, mib: int, rounds: int) -> list[dict[str, Any]]:
    """What checksums cost: one large array written and read by typedstore with its
    default crc32c, with none and with sha256, and by raw I/O; ratios against no
    checksum. (The large group measures the same among many contenders, whose files
    make its 1 GiB figures noisy.)"""
    array = np.random.default_rng(0).random(mib * MiB // 4, dtype=np.float32)
    n = array.nbytes
    raw = tmp / "integrity-raw"
    ts.options.set("datastore.url", str(tmp / "store"))
    # Each contender's label, prefix and options.
    settings: dict[str, tuple[str, dict[str, Any]]] = {
        "": ("integrity-crc32c", {}),
        ", no checksum": ("integrity-none", {"datastore.checksum": None}),
        ", sha256": ("integrity-sha256", {"datastore.checksum": "sha256"}),
    }
    refs: dict[str, str] = {}

    def writer(label: str) -> tuple[Op, Op]:
        prefix, options = settings[label]

        def write() -> None:
            with ts.options.ctx(options):
                refs[label] = ts.DataStoreIO.serialize_write(array, prefix).url

        return (lambda: ts.DataStoreIO.delete(prefix)), write

    def reader(label: str) -> tuple[None, Op]:
        return None, lambda: ts.DataStoreIO(refs[label]).read_deserialize(np.ndarray)

    writes = Runner(rounds, n)
    writes.run(
        {
            "raw write": (lambda: raw.unlink(missing_ok=True),
                          lambda: raw_write(raw, [as_bytes(array)])),
            **{f"typedstore serialize_write{label}": writer(label) for label in settings},
        }
    )  # fmt: skip
    reads = Runner(rounds, n)
    reads.run(
        {
            "raw readinto fresh array": (None, lambda: raw_read_into(raw, [array])),
            **{f"typedstore read_deserialize{label}": reader(label) for label in settings},
        }
    )
    for prefix, _ in settings.values():
        ts.DataStoreIO.delete(prefix)
    raw.unlink()
    return writes.rows("write", "typedstore serialize_write, no checksum", n) + reads.rows(
        "read", "typedstore read_deserialize, no checksum", n
    )


def datastore(tmp: Path, rounds: int) -> list[dict[str, Any]]:
    """One DataStore of 100 arrays of 1 MiB."""
    rng = np.random.default_rng(1)
    arrays = {f"a{i}": rng.random(MiB // 8) for i in range(100)}
    values = list(arrays.values())
    n = sum(a.nbytes for a in values)
    raw_path, pre_path, st_path = tmp / "ds-raw", tmp / "ds-pre", tmp / "ds-st"
    ts.options.set("datastore.url", str(tmp / "store"))
    refs: dict[str, str] = {}

    def ts_write() -> None:
        refs["ds"] = ts.DataStore(arrays).to_url("ds")

    def ts_write_unchecked() -> None:
        with ts.options.ctx({"datastore.checksum": None}):
            refs["none"] = ts.DataStore(arrays).to_url("ds-none")

    writes = Runner(rounds, n)
    writes.run(
        {
            "raw write": (
                lambda: raw_path.unlink(missing_ok=True),
                lambda: raw_write(raw_path, [as_bytes(a) for a in values]),
            ),
            "raw write, preallocated": (
                lambda: pre_path.unlink(missing_ok=True),
                lambda: raw_write(pre_path, [as_bytes(a) for a in values], preallocate=True),
            ),
            "typedstore DataStore.to_url": (lambda: ts.DataStoreIO.delete("ds"), ts_write),
            "typedstore DataStore.to_url, no checksum": (
                lambda: ts.DataStoreIO.delete("ds-none"),
                ts_write_unchecked,
            ),
            "safetensors save_file": (
                lambda: st_path.unlink(missing_ok=True),
                lambda: safetensors.numpy.save_file(arrays, st_path),
            ),
        }
    )
    # The least a lazy read of one entry can do, in plain system calls: open the object,
    # read its first 16 KiB (the length and the whole header here), close; open it again,
    # read the entry into a fresh array, close. A lazy DataStore holds no open file
    # between the two. These are the calls typedstore makes.
    ds_file = str(tmp / "store" / ts.Reference.parse(refs["ds"]).key)
    with open(ds_file, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        entry_start = 8 + length + json.loads(f.read(length))["a50"]["data_offsets"][0]

    def lazy_floor() -> Array:
        fd = os.open(ds_file, os.O_RDONLY)
        try:
            os.fstat(fd)
            os.pread(fd, 16 << 10, 0)
        finally:
            os.close(fd)
        out = np.empty_like(arrays["a50"])
        fd = os.open(ds_file, os.O_RDONLY)
        try:
            os.fstat(fd)
            os.preadv(fd, [as_bytes(out)], entry_start)
        finally:
            os.close(fd)
        return out

    opened: list[ts.DataStore] = []
    reads = Runner(rounds, n)
    reads.run(
        {
            "raw readinto 100 fresh arrays": (None, lambda: raw_read_into(raw_path, values)),
            "typedstore from_url": (None, lambda: ts.DataStore.from_url(refs["ds"])),
            "typedstore from_url, no checksum": (
                None,
                lambda: ts.DataStore.from_url(refs["none"]),
            ),
            "typedstore lazy, one entry": (
                None,
                lambda: ts.DataStore.from_url(refs["ds"], lazy=True)["a50"],
            ),
            "typedstore lazy, open only": (
                None,
                lambda: ts.DataStore.from_url(refs["ds"], lazy=True),
            ),
            "typedstore lazy, entry of an open DataStore": (
                lambda: opened.append(ts.DataStore.from_url(refs["ds"], lazy=True)),
                lambda: opened.pop()["a50"],
            ),
            "system calls of a lazy entry (floor)": (None, lazy_floor),
            "safetensors load_file": (None, lambda: safetensors.numpy.load_file(st_path)),
        }
    )
    ts.DataStoreIO.delete("ds")
    ts.DataStoreIO.delete("ds-none")
    return writes.rows("write", "raw write", n) + reads.rows(
        "read", "raw readinto 100 fresh arrays", n
    )


def checkpoint(tmp: Path, mib: int, rounds: int) -> list[dict[str, Any]]:
    """A training checkpoint of 200 tensors with nested plain values (``tree`` codec),
    against a flat dict of the same tensors (``safetensors``) and raw I/O of the bytes."""
    rng = np.random.default_rng(2)
    tensors = {
        f"layers.{i}.weight": rng.random(mib * MiB // 200 // 4, dtype=np.float32)
        for i in range(200)
    }
    values = list(tensors.values())
    n = sum(a.nbytes for a in values)
    tree = {
        "model": tensors,
        "optimizer": {"step": 1000, "lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8},
        "epoch": 3,
        "seed": (1, 2, 3),
    }
    raw_path = tmp / "ckpt-raw"
    ts.options.set("datastore.url", str(tmp / "store"))
    refs: dict[str, str] = {}

    def store(label: str, value: Any) -> tuple[Op, Op]:
        def op() -> None:
            refs[label] = ts.DataStoreIO.serialize_write(value, label).url

        return (lambda: ts.DataStoreIO.delete(label), op)

    writes = Runner(rounds, n)
    writes.run(
        {
            "raw write": (
                lambda: raw_path.unlink(missing_ok=True),
                lambda: raw_write(raw_path, [as_bytes(a) for a in values]),
            ),
            "typedstore flat dict (safetensors)": store("flat", tensors),
            "typedstore checkpoint tree (tree)": store("tree", tree),
        }
    )
    assert ts.Reference.parse(refs["tree"]).codec == "tree"
    reads = Runner(rounds, n)
    reads.run(
        {
            "raw readinto 200 fresh arrays": (None, lambda: raw_read_into(raw_path, values)),
            "typedstore flat dict (safetensors)": (
                None,
                lambda: ts.DataStoreIO(refs["flat"]).read_deserialize(dict),
            ),
            "typedstore checkpoint tree (tree)": (
                None,
                lambda: ts.DataStoreIO(refs["tree"]).read_deserialize(dict),
            ),
        }
    )
    for label in refs:
        ts.DataStoreIO.delete(label)
    return writes.rows("write", "raw write", n) + reads.rows(
        "read", "raw readinto 200 fresh arrays", n
    )


def state_dict(mib: int) -> dict[str, Any]:
    """A model's weights of about ``mib`` MiB: 200 tensors, bf16 and f32 in turn."""
    import torch

    generator = torch.Generator().manual_seed(2)
    per_tensor = mib * MiB // 200
    return {
        f"layers.{i}.weight": torch.rand(
            per_tensor // dtype.itemsize, generator=generator, dtype=dtype
        )
        for i, dtype in enumerate([torch.bfloat16, torch.float32] * 100)
    }


def tensor_bytes(tensor: Any) -> memoryview:
    """A CPU tensor's memory as bytes, without a copy (bf16 included)."""
    import torch

    return memoryview(tensor.view(torch.uint8).numpy())


def torch_weights(tmp: Path, mib: int, rounds: int) -> list[dict[str, Any]]:
    """A state_dict (``torch`` codec) against safetensors.torch, torch.save/load and raw
    I/O of the same bytes."""
    import safetensors.torch
    import torch

    weights = state_dict(mib)
    tensors = list(weights.values())
    n = sum(t.nbytes for t in tensors)
    raw_path, st_path, pt_path = tmp / "sd-raw", tmp / "sd.safetensors", tmp / "sd.pt"
    ts.options.set("datastore.url", str(tmp / "store"))
    refs: dict[str, str] = {}

    def ts_write() -> None:
        refs["sd"] = ts.DataStoreIO.serialize_write(weights, "weights").url

    def raw_read() -> list[Any]:
        out = [torch.empty_like(t) for t in tensors]
        with open(raw_path, "rb", buffering=0) as f:
            for t in out:
                f.readinto(tensor_bytes(t))
        return out

    writes = Runner(rounds, n)
    writes.run(
        {
            "raw write, preallocated": (
                lambda: raw_path.unlink(missing_ok=True),
                lambda: raw_write(raw_path, [tensor_bytes(t) for t in tensors], True),
            ),
            "typedstore serialize_write": (lambda: ts.DataStoreIO.delete("weights"), ts_write),
            "safetensors.torch save_file": (
                lambda: st_path.unlink(missing_ok=True),
                lambda: safetensors.torch.save_file(weights, st_path),
            ),
            "torch.save": (
                lambda: pt_path.unlink(missing_ok=True),
                lambda: torch.save(weights, pt_path),
            ),
        }
    )
    assert ts.Reference.parse(refs["sd"]).codec == "torch"
    reads = Runner(rounds, n)
    reads.run(
        {
            "raw readinto 200 fresh tensors": (None, raw_read),
            "typedstore read_deserialize": (
                None,
                lambda: ts.DataStoreIO(refs["sd"]).read_deserialize(),
            ),
            "typedstore zero_copy": (
                None,
                lambda: ts.DataStoreIO(refs["sd"]).read_deserialize(zero_copy=True),
            ),
            "safetensors.torch load_file": (None, lambda: safetensors.torch.load_file(st_path)),
            "torch.load(weights_only=True)": (
                None,
                lambda: torch.load(pt_path, weights_only=True),
            ),
        }
    )
    ts.DataStoreIO.delete("weights")
    return writes.rows("write", "raw write, preallocated", n) + reads.rows(
        "read", "raw readinto 200 fresh tensors", n
    )


def frames(mib: int) -> dict[str, Any]:
    """The pandas frames of about ``mib`` MiB each: 100 float columns, and a mix of floats,
    ints, strings and categoricals in about the same bytes."""
    import pandas as pd

    rng = np.random.default_rng(3)
    rows = mib * MiB // 8 // 100
    mixed_rows = mib * MiB // 8 // 40
    words = np.array([f"w{i:05d}" for i in range(5000)])
    return {
        "numeric": pd.DataFrame({f"c{i}": rng.random(rows) for i in range(100)}),
        "mixed": pd.DataFrame(
            {
                **{f"f{i}": rng.random(mixed_rows) for i in range(20)},
                **{f"i{i}": rng.integers(0, 1 << 40, mixed_rows) for i in range(10)},
                **{
                    f"s{i}": pd.array(rng.choice(words, mixed_rows), dtype="str")
                    for i in range(5)
                },
                **{f"k{i}": pd.Categorical(rng.choice(words[:50], mixed_rows)) for i in range(5)},
            }
        ),
    }


def tables(tmp: Path, mib: int, rounds: int) -> list[dict[str, Any]]:
    """pandas frames as Arrow IPC (codec ``arrow``) against Feather, Parquet and pickle."""
    ts.options.set("datastore.url", str(tmp / "store"))
    out: list[dict[str, Any]] = []
    for label, frame in frames(mib).items():
        out += _table_rows(tmp, label, frame, rounds)
    return out


def _table_rows(tmp: Path, label: str, frame: Any, rounds: int) -> list[dict[str, Any]]:
    """Write and read one frame with each contender."""
    import pandas as pd
    import pyarrow.feather

    n = int(frame.memory_usage(deep=True).sum())
    feather, parquet, pickled = tmp / "t.feather", tmp / "t.parquet", tmp / "t.pkl"
    refs: dict[str, str] = {}

    def ts_write() -> None:
        refs["t"] = ts.DataStoreIO.serialize_write(frame, "tables").url

    def pickle_write() -> None:
        with open(pickled, "wb") as f:
            pickle.dump(frame, f, protocol=5)

    def pickle_read() -> Any:
        with open(pickled, "rb") as f:
            return pickle.load(f)

    writes = Runner(rounds, n)
    writes.run(
        {
            "feather, uncompressed": (
                lambda: feather.unlink(missing_ok=True),
                lambda: pyarrow.feather.write_feather(frame, feather, compression="uncompressed"),
            ),
            "typedstore serialize_write": (lambda: ts.DataStoreIO.delete("tables"), ts_write),
            "to_parquet": (
                lambda: parquet.unlink(missing_ok=True),
                lambda: frame.to_parquet(parquet),
            ),
            "pickle dump": (lambda: pickled.unlink(missing_ok=True), pickle_write),
        }
    )
    column = frame.columns[7]
    table = pyarrow.Table.from_pandas(frame)
    refs["table"] = ts.DataStoreIO.serialize_write(table, "tables-pa").url
    del table
    full: Op = lambda: ts.DataStoreIO(refs["t"]).read_deserialize(pd.DataFrame)  # noqa: E731
    reads = Runner(rounds, n)
    reads.run(
        {
            "read_feather": (None, lambda: pd.read_feather(feather)),
            "typedstore read_deserialize": (None, full),
            f"typedstore, one column of {len(frame.columns)}": (
                None,
                lambda: ts.DataStoreIO(refs["t"]).read_deserialize(columns=[column]),
            ),
            "typedstore zero_copy, as a pyarrow Table": (
                None,
                lambda: ts.DataStoreIO(refs["table"]).read_deserialize(zero_copy=True),
            ),
            "read_parquet": (None, lambda: pd.read_parquet(parquet)),
            "pickle load": (None, pickle_read),
        }
    )
    ts.DataStoreIO.delete("tables")
    ts.DataStoreIO.delete("tables-pa")
    return writes.rows(f"{label} write", "feather, uncompressed", n) + reads.rows(
        f"{label} read", "read_feather", n
    )


def small(tmp: Path, count: int, rounds: int) -> list[dict[str, Any]]:
    """Thousands of small values, one object each; times are per object."""
    ts.options.set("datastore.url", str(tmp / "store"))
    blob = os.urandom(1024)
    arrays: dict[str, Array] = {
        "w": np.ones((4, 4), np.float32),
        "b": np.zeros(4),
        "i": np.arange(8),
    }
    buffers = [as_bytes(a) for a in arrays.values()]
    # Plain str paths throughout: pathlib would add microseconds to every baseline call.
    raw_dir = str(tmp / "small-raw")
    os.makedirs(raw_dir, exist_ok=True)
    counter = iter(range(10**9))
    made: dict[str, list[str]] = {}

    def raw_atomic(chunks: list[memoryview]) -> str:
        name = str(next(counter))
        raw_write(f"{raw_dir}/~{name}", chunks)
        os.replace(f"{raw_dir}/~{name}", f"{raw_dir}/{name}")
        return name

    def pickle_file(value: Any) -> str:
        name = f"{next(counter)}.pkl"
        with open(f"{raw_dir}/{name}", "wb") as f:
            pickle.dump(value, f, protocol=5)
        return name

    def st_file(value: dict[str, Array]) -> str:
        name = f"{next(counter)}.st"
        safetensors.numpy.save_file(value, f"{raw_dir}/{name}")
        return name

    def read_file(name: str) -> bytearray:
        with open(f"{raw_dir}/{name}", "rb", buffering=0) as f:
            out = bytearray(os.fstat(f.fileno()).st_size)
            f.readinto(out)
        return out

    # The raw file of the dict holds the three arrays back to back; reading it back into
    # arrays, as every other contender must, means knowing their layout in advance.
    layout, offset = [], 0
    for key, array in arrays.items():
        layout.append((key, array.shape, array.dtype, offset))
        offset += array.nbytes

    def read_arrays(name: str) -> dict[str, Array]:
        buffer = read_file(name)
        return {key: np.ndarray(shape, dtype, buffer, start) for key, shape, dtype, start in layout}

    def read_pickle(name: str) -> Any:
        with open(f"{raw_dir}/{name}", "rb") as f:
            return pickle.load(f)

    def batch(label: str, op: Callable[[], str]) -> tuple[None, Op]:
        def run() -> None:
            made[label] = [op() for _ in range(count)]

        return (None, run)

    def read_batch(label: str, op: Callable[[str], object]) -> tuple[None, Op]:
        return (None, lambda: [op(name) for name in made[label]])

    groups: dict[str, dict[str, tuple[Op | None, Op]]] = {
        "1 KiB bytes write": {
            "raw atomic write": batch("raw1k", lambda: raw_atomic([memoryview(blob)])),
            "typedstore write": batch("ts1k", lambda: ts.DataStoreIO.write(blob, "small").url),
            "safetensors save_file": batch(
                "st1k", lambda: st_file({"b": np.frombuffer(blob, np.uint8)})
            ),
            "pickle dump": batch("pk1k", lambda: pickle_file(blob)),
        },
        "3 small arrays write": {
            "raw atomic write": batch("rawd", lambda: raw_atomic(buffers)),
            "typedstore serialize_write": batch(
                "tsd", lambda: ts.DataStoreIO.serialize_write(arrays, "small").url
            ),
            "safetensors save_file": batch("std", lambda: st_file(arrays)),
            "pickle dump": batch("pkd", lambda: pickle_file(arrays)),
        },
        "1 KiB bytes read": {
            "raw read": read_batch("raw1k", read_file),
            "typedstore read": read_batch("ts1k", lambda url: ts.DataStoreIO(url).read()),
            "safetensors load_file": read_batch(
                "st1k", lambda name: safetensors.numpy.load_file(f"{raw_dir}/{name}")
            ),
            "pickle load": read_batch("pk1k", read_pickle),
        },
        "3 small arrays read": {
            "raw read into 3 arrays": read_batch("rawd", read_arrays),
            "raw read (bytes only)": read_batch("rawd", read_file),
            "typedstore read_deserialize": read_batch(
                "tsd", lambda url: ts.DataStoreIO(url).read_deserialize(dict)
            ),
            "safetensors load_file": read_batch(
                "std", lambda name: safetensors.numpy.load_file(f"{raw_dir}/{name}")
            ),
            "pickle load": read_batch("pkd", read_pickle),
        },
    }
    rows = []
    for group, contenders in groups.items():
        runner = Runner(rounds, 0)
        runner.run(contenders)
        baseline = next(iter(contenders))
        rows += runner.rows(group, baseline, 0, per=count)
    return rows


def s3(rounds: int, sizes: list[int], endpoint: str | None) -> list[dict[str, Any]]:
    """An array in S3 (moto's server, in its own process, on loopback, unless ``endpoint``
    names a running server): typedstore against a plain s3fs put and get of the same
    bytes, and boto3's managed transfers with their default settings; and the peak memory
    of each, in a process of its own."""
    server = None
    if endpoint is None:
        server, endpoint = _moto_server()
    rows: list[dict[str, Any]] = []
    try:
        fs, _ = _s3_clients(endpoint)
        for _ in range(100):
            try:
                if not fs.exists("bench"):
                    fs.call_s3("create_bucket", Bucket="bench")
                break
            except Exception:
                time.sleep(0.1)
        for mib in sizes:
            rows += _s3_transfers(endpoint, rounds, mib)
        rows += _s3_table_reads(rounds, 64)
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        ts.options.reset("datastore.storage_options")
    return rows


def _moto_server() -> tuple[subprocess.Popen[bytes], str]:
    """moto's S3 server on a free loopback port, and its endpoint."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The server keeps objects in memory (by default it spills any over 5 MiB to disk), so
    # that the clients, not the server's disk, are measured.
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": str(4 << 30)},
    )
    return server, f"http://127.0.0.1:{port}"


def _s3_clients(endpoint: str) -> tuple[Any, Any]:
    """An s3fs filesystem and a boto3 client for the server, and typedstore set to use it."""
    import boto3
    import s3fs

    # A server started elsewhere may check signatures against keys of its own.
    key = os.environ.get("AWS_ACCESS_KEY_ID", "bench")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "bench")
    options = {
        "key": key,
        "secret": secret,
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )
    ts.options.set("datastore.url", "s3://bench/ts")
    ts.options.set("datastore.storage_options", options)
    return s3fs.S3FileSystem(**options), client


S3_PUT, S3_GET = "s3fs pipe_file (plain put)", "s3fs cat_file (plain get)"


def _s3_ops(fs: Any, client: Any, array: Array, name: str) -> dict[str, Op]:
    """Each contender's write of ``array`` (each to a new object) and read of the objects
    it was stored as under ``name``."""
    import io

    payload = array.tobytes()
    fs.pipe_file(f"bench/r/{name}", payload)
    url = ts.DataStoreIO.serialize_write(array, "r").url
    written = iter(range(1 << 30))

    def download() -> bytes:
        out = io.BytesIO()
        client.download_fileobj("bench", f"r/{name}", out)
        return out.getvalue()

    return {
        S3_PUT: lambda: fs.pipe_file(f"bench/w/{next(written)}", payload),
        "boto3 upload_fileobj": lambda: client.upload_fileobj(
            io.BytesIO(payload), "bench", f"w/{next(written)}"
        ),
        "typedstore serialize_write": lambda: ts.DataStoreIO.serialize_write(array, "w").url,
        S3_GET: lambda: fs.cat_file(f"bench/r/{name}"),
        "boto3 download_fileobj": download,
        "typedstore read_deserialize": lambda: ts.DataStoreIO(url).read_deserialize(np.ndarray),
    }


S3_WRITES = (S3_PUT, "boto3 upload_fileobj", "typedstore serialize_write")


def _s3_transfers(endpoint: str, rounds: int, mib: int) -> list[dict[str, Any]]:
    """Writes and reads of ``mib`` through each contender. Every write makes a new object
    (as typedstore's do), and the objects of earlier writes are deleted untimed first, so
    the server holds as much for every contender."""
    fs, client = _s3_clients(endpoint)
    array = np.random.default_rng(2).random(mib * MiB // 8)
    ops = _s3_ops(fs, client, array, f"raw{mib}")

    def empty() -> None:
        for prefix in ("w/", "ts/w/"):
            listed = client.list_objects_v2(Bucket="bench", Prefix=prefix).get("Contents", [])
            for item in listed:
                client.delete_object(Bucket="bench", Key=item["Key"])
        fs.invalidate_cache()

    rows = []
    for op, baseline in ((f"write {mib} MiB", S3_PUT), (f"read {mib} MiB", S3_GET)):
        names = [n for n in ops if (n in S3_WRITES) == op.startswith("write")]
        runner = Runner(rounds, array.nbytes)
        runner.run({n: (empty, ops[n]) for n in names})
        peaks = {}
        for n in names:
            empty()
            args = ["--s3-probe", n, "--endpoint", endpoint, "--mib", str(mib)]
            out = subprocess.run(
                [sys.executable, __file__, *args], capture_output=True, text=True, check=True
            ).stdout
            peaks[n] = json.loads(out)["extra"]
        for r in runner.rows(op, baseline, array.nbytes):
            rows.append({**r, "peak MiB": peaks[r["contender"]] / MiB})
    empty()
    return rows


def s3_memory_probe(contender: str, endpoint: str, mib: int) -> None:
    """Child process: one transfer of ``mib`` after a warm-up of 1 MiB, print the peak
    beyond the payload (and, for reads, beyond the result)."""
    # Freed buffers go back at once, so memory kept from the set-up cannot hide the peak.
    allocator("fresh memory")
    fs, client = _s3_clients(endpoint)
    small = _s3_ops(fs, client, np.random.default_rng(3).random(MiB // 8), "probe-warm")
    array = np.random.default_rng(2).random(mib * MiB // 8)
    ops = _s3_ops(fs, client, array, f"probe{mib}")
    small[contender]()
    extra = _peak_extra(ops[contender]) - (0 if contender in S3_WRITES else array.nbytes)
    print(json.dumps({"extra": extra}))


def _s3_table_reads(rounds: int, mib: int) -> list[dict[str, Any]]:
    """A numeric pandas frame of 100 columns in the current (S3) store: one column read
    against the whole frame."""
    import pandas as pd

    frame = frames(mib)["numeric"]
    url = ts.DataStoreIO.serialize_write(frame, "s3-table").url
    whole = "typedstore read_deserialize, whole frame"
    reads = Runner(rounds, int(frame.memory_usage(deep=True).sum()))
    reads.run(
        {
            whole: (None, lambda: ts.DataStoreIO(url).read_deserialize(pd.DataFrame)),
            "typedstore, one column of 100": (
                None,
                lambda: ts.DataStoreIO(url).read_deserialize(columns=["c42"]),
            ),
        }
    )
    return reads.rows("table read", whole, reads.payload)


def experiments(tmp: Path, rounds: int, sizes: list[int]) -> list[dict[str, Any]]:
    """Persist and load of whole experiments on SQLite and PostgreSQL, against mltraq (the
    tracker typedstore's DataStore comes from) on SQLite when it is installed."""
    from typedstore.testing.postgres import new_database, postgres_server

    try:
        import mltraq
    except ImportError:  # optional contender
        mltraq = None
    rows = []
    with postgres_server() as server:
        databases = {
            "SQLite": f"sqlite:///{tmp / 'experiments.db'}",
            "PostgreSQL": new_database(server),
        }
        for n in sizes:
            # The 100,000-run rounds take tens of seconds with mltraq's load.
            n_rounds = rounds if n <= 10_000 else 3
            rows += _experiment_rows(tmp, f"{n:,} runs x 10 fields", n, False, databases,
                                     mltraq, n_rounds)  # fmt: skip
        rows += _experiment_rows(tmp, "100 runs x 1 MiB DataStore", 100, True, databases,
                                 mltraq, rounds)  # fmt: skip
    ts.database.close_all()
    return rows


def _experiment_rows(
    tmp: Path, label: str, n: int, datastores: bool, databases: dict[str, str], mltraq: Any,
    rounds: int,
) -> list[dict[str, Any]]:  # fmt: skip
    """One persist and one load per contender and round: each persist stores a new
    experiment, each load loads one persisted before the timings."""
    ts.options.set("datastore.url", str(tmp / "ts.datastore"))
    ts.options.set("progress", False)
    names = (f"e{i}" for i in range(10**9))

    def fields(i: int) -> dict[str, Any]:
        if datastores:
            return {"i": i, "outputs": np.full(MiB // 8, i, dtype=np.float64)}
        return {f"f{k}": i * 0.5 + k for k in range(10)}

    def ts_experiment() -> ts.Experiment:
        experiment = ts.create_experiment(f"{label} {next(names)}")
        for i in range(n):
            with experiment.run() as run:
                values = fields(i)
                if datastores:
                    values["outputs"] = ts.DataStore(w=values["outputs"])
                run.fields.update(values)
        return experiment

    def ts_contender(url: str, durable: bool = True) -> tuple[tuple[Op, Op], tuple[None, Op]]:
        built: list[ts.Experiment] = []

        def persist() -> None:
            with ts.options.ctx({"database.url": url, "persist.durable": durable}):
                built.pop().persist()

        with ts.options.ctx({"database.url": url}):
            stored = ts_experiment()
            stored.persist()

        def load() -> Any:
            with ts.options.ctx({"database.url": url}):
                return ts.load_experiment(stored.id)

        return (lambda: built.append(ts_experiment()), persist), (None, load)

    persists: dict[str, tuple[Op | None, Op]] = {}
    loads: dict[str, tuple[Op | None, Op]] = {}
    if mltraq is not None:
        # mltraq drops the slash after file:// (its paths are relative): four slashes
        # give it the absolute path of the benchmark's own folder.
        mltraq.options().set("datastore.url", f"file:///{tmp.resolve() / 'mltraq.datastore'}")
        mltraq.options().set("tqdm.disable", True)
        session = mltraq.create_session(f"sqlite:///{tmp / 'mltraq.db'}")
        pending: list[Any] = []

        def ml_experiment() -> Any:
            experiment = session.create_experiment(f"{label} {next(names)}")
            experiment.add_runs(i=range(n))
            for run in experiment.runs.values():
                values = fields(run.params.i)
                if datastores:
                    values["outputs"] = mltraq.DataStore(w=values["outputs"])
                for key, value in values.items():
                    run.fields[key] = value
            return experiment

        stored_ml = ml_experiment()
        stored_ml.persist()
        persists["mltraq, SQLite"] = (
            lambda: pending.append(ml_experiment()),
            lambda: pending.pop().persist(),
        )
        loads["mltraq, SQLite"] = (None, lambda: session.load_experiment(stored_ml.name))
    for db, url in databases.items():
        persist, load = ts_contender(url)
        persists[f"typedstore, {db}"] = persist
        loads[f"typedstore, {db}"] = load
    if datastores:
        # mltraq never flushes its objects to disk; this is typedstore doing the same.
        persists["typedstore, SQLite, persist.durable=False"] = ts_contender(
            databases["SQLite"], durable=False
        )[0]
    baseline = next(iter(persists))
    rows = []
    for op, contenders in (("persist", persists), ("load", loads)):
        runner = Runner(rounds, 0)
        runner.run(contenders)
        rows += runner.rows(f"{op}, {label}", baseline, 0)
    ts.options.reset("progress")
    return rows


def dispatch() -> list[dict[str, Any]]:
    """Registry lookups for already-seen types (ratio against 1 us)."""
    values = {
        "ndarray": np.zeros(3),
        "dict of 3 arrays": {"a": np.zeros(3), "b": np.ones(2), "c": np.arange(4)},
        "bytes": b"x",
        "tuple (pickle fallback)": (1, 2),
    }
    rows = []
    for name, value in values.items():
        ts.registry.for_value(value)
        runs = []
        for _ in range(7):
            start = time.perf_counter()
            for _ in range(100_000):
                ts.registry.for_value(value)
            runs.append((time.perf_counter() - start) / 100_000)
        rows.append({"op": "dispatch", **row(name, runs, 1e-6, 0, "us")})
    return rows


# --- memory, in a separate process per contender ----------------------------------------------

MEMORY_CONTENDERS = (
    "raw write",
    "typedstore serialize_write",
    "safetensors save_file",
    "np.save",
    "raw readinto fresh array",
    "typedstore read_deserialize",
    "safetensors load_file",
    "np.load",
    "pickle load",
    "numeric frame: feather write, uncompressed",
    "numeric frame: typedstore serialize_write",
    "mixed frame: feather write, uncompressed",
    "mixed frame: typedstore serialize_write",
    "4 GiB state_dict: safetensors.torch save_file",
    "4 GiB state_dict: typedstore serialize_write",
    "4 GiB state_dict: safetensors.torch load_file",
    "4 GiB state_dict: typedstore read_deserialize",
)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def _peak_extra(op: Op) -> int:
    """The peak memory ``op`` takes beyond what the process held before it."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS
    before = _status_kib("VmRSS")
    result = op()
    peak = _status_kib("VmHWM")
    del result
    return (peak - before) * 1024


def frame_memory_probe(contender: str, mib: int, tmp: Path) -> None:
    """Child process: write a pandas frame of ``mib`` once, print the peak."""
    import pyarrow.feather

    kind, _, how = contender.partition(" frame: ")
    frame = frames(mib)[kind]
    ts.options.set("datastore.url", str(tmp / "store"))
    ops: dict[str, Op] = {
        "feather write, uncompressed": lambda: pyarrow.feather.write_feather(
            frame, tmp / "x.feather", compression="uncompressed"
        ),
        "typedstore serialize_write": lambda: ts.DataStoreIO.serialize_write(frame, "probe"),
    }
    payload = int(frame.memory_usage(deep=True).sum())
    print(json.dumps({"extra": _peak_extra(ops[how]), "payload": payload}))


def weights_memory_probe(contender: str, tmp: Path) -> None:
    """Child process: write or read a state_dict of 4 GiB once, print the peak beyond it."""
    import safetensors.torch

    weights = state_dict(4096)
    payload = sum(t.nbytes for t in weights.values())
    ts.options.set("datastore.url", str(tmp / "store"))
    how = contender.partition(": ")[2]
    if how.endswith(("load_file", "read_deserialize")):
        url = ts.DataStoreIO.serialize_write(weights, "probe").url
        safetensors.torch.save_file(weights, tmp / "probe.st")
        del weights  # the result takes its place: what is measured is beyond it
        reads: dict[str, Op] = {
            "safetensors.torch load_file": lambda: safetensors.torch.load_file(tmp / "probe.st"),
            "typedstore read_deserialize": lambda: ts.DataStoreIO(url).read_deserialize(),
        }
        extra = _peak_extra(reads[how]) - payload
    else:
        writes: dict[str, Op] = {
            "safetensors.torch save_file": lambda: safetensors.torch.save_file(
                weights, tmp / "x.st"
            ),
            "typedstore serialize_write": lambda: ts.DataStoreIO.serialize_write(weights, "x"),
        }
        extra = _peak_extra(writes[how])
    print(json.dumps({"extra": extra, "payload": payload}))


def memory_probe(contender: str, mib: int, tmp: Path) -> None:
    """Child process: run one contender once, print its peak memory beyond the baseline."""
    if " frame: " in contender:
        frame_memory_probe(contender, mib, tmp)
        return
    if contender.startswith("4 GiB state_dict"):
        weights_memory_probe(contender, tmp)
        return
    array = np.random.default_rng(0).random(mib * MiB // 4, dtype=np.float32)
    ts.options.set("datastore.url", str(tmp / "store"))
    url = ts.DataStoreIO.serialize_write(array, "probe").url
    safetensors.numpy.save_file({"a": array}, tmp / "probe.st")
    np.save(tmp / "probe.npy", array)
    with open(tmp / "probe.pkl", "wb") as f:
        pickle.dump(array, f, protocol=5)

    def pickle_load() -> Any:
        with open(tmp / "probe.pkl", "rb") as f:
            return pickle.load(f)

    ops: dict[str, tuple[bool, Op]] = {
        "raw write": (False, lambda: raw_write(tmp / "x.raw", [as_bytes(array)])),
        "typedstore serialize_write": (
            False,
            lambda: ts.DataStoreIO.serialize_write(array, "probe"),
        ),
        "safetensors save_file": (
            False,
            lambda: safetensors.numpy.save_file({"a": array}, tmp / "x.st"),
        ),
        "np.save": (False, lambda: np.save(tmp / "x.npy", array)),
        "raw readinto fresh array": (True, lambda: raw_read_into(tmp / "probe.st", [array])),
        "typedstore read_deserialize": (
            True,
            lambda: ts.DataStoreIO(url).read_deserialize(np.ndarray),
        ),
        "safetensors load_file": (True, lambda: safetensors.numpy.load_file(tmp / "probe.st")),
        "np.load": (True, lambda: np.load(tmp / "probe.npy")),
        "pickle load": (True, pickle_load),
    }
    is_read, op = ops[contender]
    extra = _peak_extra(op) - (array.nbytes if is_read else 0)
    print(json.dumps({"extra": extra, "payload": array.nbytes}))


def memory(tmp: Path, mib: int) -> list[dict[str, Any]]:
    """Peak extra memory of each contender, each in a fresh process."""
    rows = []
    for contender in MEMORY_CONTENDERS:
        args = ["--memory-probe", contender, "--mib", str(mib), "--tmp", str(tmp)]
        out = subprocess.run(
            [sys.executable, __file__, *args], capture_output=True, text=True, check=True
        ).stdout
        result = json.loads(out)
        rows.append(
            {
                "contender": contender,
                "extra MiB": result["extra"] / MiB,
                "% of payload": 100 * result["extra"] / result["payload"],
            }
        )
    return rows


# --- report -----------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of result rows."""
    peaks = any("peak MiB" in r for r in rows)
    lines = [
        "| op | contender | median | min-max | GB/s | ratio |" + (" peak MiB |" if peaks else ""),
        "|---|---|---:|---:|---:|---:|" + ("---:|" if peaks else ""),
    ]
    for r in rows:
        rate = f"{r['GB/s']:.2f}" if r["GB/s"] else ""
        peak = f" {r['peak MiB']:.1f} |" if "peak MiB" in r else (" |" if peaks else "")
        lines.append(
            f"| {r['op']} | {r['contender']} | {r['median']:.1f} {r['unit']} | "
            f"{r['min']:.1f}-{r['max']:.1f} | {rate} | "
            # Small fractions (a lazy read against a full one) need the third digit.
            f"{r['ratio']:.{3 if r['ratio'] < 0.1 else 2}f} |{peak}"
        )
    return "\n".join(lines)


MEMORY_HEADING = (
    "Peak memory beyond the payload (and the result, for reads): arrays and frames of "
    "256 MiB, state_dicts of 4 GiB"
)
MEMORY_NOTE = (
    "safetensors' load_file maps the file: its tensors are not in memory until read, "
    "so its figure is below zero (and 100% for numpy, whose load_file copies)."
)


def memory_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of peak memory rows."""
    lines = ["| contender | extra MiB | % of payload |", "|---|---:|---:|"]
    lines += [
        f"| {r['contender']} | {r['extra MiB']:.1f} | {r['% of payload']:.1f} |" for r in rows
    ]
    return "\n".join(lines)


def chart(results: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Write and read throughput of the large-array contenders, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = next(k for k in results if k.startswith("large"))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, op in zip(axes, ("write", "read"), strict=True):
        # Memory maps read nothing up front: their "throughput" would dwarf every bar.
        chosen = [
            r
            for r in results[key]
            if r["op"] == op and "mmap" not in r["contender"] and "zero_copy" not in r["contender"]
        ]
        names = [r["contender"] for r in chosen]
        colors = ["tab:orange" if n.startswith("typedstore") else "tab:gray" for n in names]
        ax.barh(names, [r["GB/s"] for r in chosen], color=colors)
        ax.invert_yaxis()
        what = "write" if op == "write" else "read into fresh memory"
        ax.set_title(f"{key}: {what}\n(GB/s, higher is better)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def report(results: dict[str, list[dict[str, Any]]], mem: list[dict[str, Any]], cmd: str) -> str:
    """RESULTS.md."""
    total_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    lines = [
        "# Benchmark results",
        "",
        f"- command: `{cmd}`",
        f"- date: {time.strftime('%Y-%m-%d')}",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, {total_gib:.0f} GiB, "
        f"{platform.system()} {platform.release()}",
        f"- versions: Python {platform.python_version()}, typedstore {ts.__version__}, "
        f"numpy {np.__version__}, safetensors {safetensors.__version__}"
        + (f", joblib {joblib.__version__}" if joblib is not None else ""),
        "- ratio: median against the first (raw I/O) contender of the same group in the same "
        "run; for dispatch, against 1 us",
        "- baselines: plain `os`/`open` calls on `str` paths, reading into fresh arrays (the "
        "small dict: its file read whole, the 3 arrays made on it from a layout known in "
        "advance; the bytes-only read is shown too); writes are atomic (temporary file, then "
        "`os.replace`) where typedstore's are",
        "- caches: typedstore keeps the checked headers of recent layouts (headers up to "
        "64 KiB, 256 KiB of them in all; see typedstore.policy), so after the first, dropped "
        "round its reads find the header checked, as in a process that reads many objects "
        "of one layout",
        "",
        "![throughput](results.png)",
        "",
    ]
    for key, rows in results.items():
        lines += [f"## {key}", "", table(rows), ""]
    if mem:
        lines += [f"## {MEMORY_HEADING}", "", memory_table(mem), "", MEMORY_NOTE, ""]
    return "\n".join(lines)


_INTRO = """
How typedstore compares with raw file I/O and the tools users would pick instead, measured
side by side on the machine below. Targets: large arrays within 5% of raw I/O both ways
with no extra copy in memory; a lazy DataStore entry at a small fraction of a full read;
small values, one object each, close to plain file I/O of the same bytes.
This page is written by `python benchmarks/bench.py --write`; the method is described in
`benchmarks/README.md` of the repository.
"""


def parse_results(text: str) -> dict[str, list[dict[str, Any]]]:
    """The result rows of a RESULTS.md (to redraw the chart without measuring again)."""
    results: dict[str, list[dict[str, Any]]] = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("## "):
            section = line[3:]
        cells = [c.strip() for c in line.strip("|").split("|")]
        if section and len(cells) == 6 and cells[0] not in ("op", "---"):
            rate = float(cells[4]) if cells[4] else None
            results.setdefault(section, []).append(
                {"op": cells[0], "contender": cells[1], "GB/s": rate}
            )
    return results


def write_docs() -> None:
    """docs/performance.md and its chart, from benchmarks/RESULTS.md and results.png."""
    text = (HERE / "RESULTS.md").read_text()
    text = text.replace("# Benchmark results\n", "# Performance\n" + _INTRO, 1)
    text = text.replace("](results.png)", "](assets/results.png)")
    docs = HERE.parent / "docs"
    (docs / "assets").mkdir(exist_ok=True)
    (docs / "performance.md").write_text(text)
    shutil.copyfile(HERE / "results.png", docs / "assets" / "results.png")


#: The groups of measurements, in the order they run (small last: see the module notes).
GROUPS = (
    "large", "integrity", "datastore", "checkpoint", "torch", "tables", "s3", "experiments",
    "dispatch", "small",
)  # fmt: skip


def main() -> None:
    """Run the suite and print (optionally write) the results."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer rounds and objects, 256 MiB only"
    )
    parser.add_argument("--memory", action="store_true", help="also measure peak memory")
    parser.add_argument("--write", action="store_true", help="update RESULTS.md and results.png")
    parser.add_argument(
        "--docs", action="store_true", help="only redraw the chart and docs page from RESULTS.md"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=GROUPS,
        help="run only this group (repeatable); cannot be combined with --write",
    )
    parser.add_argument(
        "--s3-mib",
        type=int,
        action="append",
        help="object size for the s3 group (repeatable; default 64). moto copies the whole "
        "object for every ranged read: at 1024, reads take minutes and may time out",
    )
    parser.add_argument(
        "--s3-endpoint",
        help="run the s3 group against this running S3 server (bucket 'bench', keys from "
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) instead of a moto server of its own",
    )
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)
    parser.add_argument("--mib", type=int, default=256, help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    parser.add_argument("--s3-probe", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only and args.write:
        parser.error("--write needs every group; drop --only")
    run = set(args.only or GROUPS)
    if args.memory_probe:
        memory_probe(args.memory_probe, args.mib, Path(args.tmp))
        return
    if args.s3_probe:
        s3_memory_probe(args.s3_probe, args.endpoint, args.mib)
        return
    if args.docs:
        chart(parse_results((HERE / "RESULTS.md").read_text()), HERE / "results.png")
        write_docs()
        return
    rounds = 3 if args.quick else 7
    # Every group in recycled memory (the last state of the DataStore group, which runs in
    # both); only arrays under 32 MiB feel the difference.
    fixed = allocator("recycled memory")
    if not fixed:
        print("note: not glibc, so the allocator's state is left as it is\n")
    started = time.time()
    results: dict[str, list[dict[str, Any]]] = {}

    def show(key: str, rows: list[dict[str, Any]]) -> None:
        results[key] = rows
        print(f"## {key}\n\n{table(rows)}\n", flush=True)

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR", ".")) as name:
        tmp = Path(name)
        if "large" in run:
            for mib in [256] if args.quick else [256, 1024]:
                # A quarter to a third of the rounds of every contender are slow (write
                # back, host memory: 73-80 ms instead of 64-65 for a 256 MiB read), so a
                # median of few rounds lands either way: twice the rounds (about 2 and
                # 4 minutes), except in a quick run.
                large_rounds = rounds if args.quick else 2 * rounds
                show(f"large {mib} MiB", large(tmp, mib, large_rounds))
        if "integrity" in run:
            # Only typedstore and raw I/O, so that the 1 GiB files of other contenders
            # being written back do not set the pace: twice the rounds, about a minute.
            for mib in [256] if args.quick else [256, 1024]:
                show(f"integrity {mib} MiB", integrity(tmp, mib, 2 * rounds))
        if "datastore" in run:
            # Its steps take 17 to 55 ms, where noise of a millisecond is 2 to 5%: three
            # times the rounds, for about 20 s more in each allocator state (twice in a
            # quick run, which would otherwise take close to 2 minutes).
            ds_rounds = (2 if args.quick else 3) * rounds
            if not fixed:
                show("datastore, 100 x 1 MiB", datastore(tmp, ds_rounds))
            for state in ALLOCATOR_STATES if fixed else ():
                allocator(state)
                show(f"datastore, 100 x 1 MiB, {state}", datastore(tmp, ds_rounds))
        if "checkpoint" in run:
            # As noisy as the large group (200 fresh arrays of 5 MiB per read): as many
            # rounds, for about 3 minutes.
            mib = 256 if args.quick else 1024
            ckpt_rounds = rounds if args.quick else 2 * rounds
            show(f"checkpoint, 200 tensors, {mib} MiB", checkpoint(tmp, mib, ckpt_rounds))
        if "torch" in run:
            # As many rounds as the checkpoint group, for the same reasons.
            mib = 256 if args.quick else 1024
            weight_rounds = rounds if args.quick else 2 * rounds
            show(f"torch, state_dict of 200 tensors, {mib} MiB",
                 torch_weights(tmp, mib, weight_rounds))  # fmt: skip
        if "tables" in run:
            mib = 128 if args.quick else 1024
            show(f"tables, pandas frames of {mib} MiB", tables(tmp, mib, rounds))
        if "s3" in run:
            title = "S3 on loopback (moto server)"
            if args.s3_endpoint:
                title = f"S3 at {args.s3_endpoint}"
            show(title, s3(rounds, args.s3_mib or [64], args.s3_endpoint))
        if "experiments" in run:
            sizes = [1000, 10_000] if args.quick else [1000, 10_000, 100_000]
            show("experiments", experiments(tmp, rounds, sizes))
        if "dispatch" in run:
            show("dispatch", dispatch())
        if "small" in run:
            count = 2000 if args.quick else 10_000
            show(f"small, {count} objects (times per object)", small(tmp, count, rounds))
        mem = memory(tmp, 256) if args.memory else []
    if mem:
        print(f"## {MEMORY_HEADING}\n\n{memory_table(mem)}\n")
    print(f"took {time.time() - started:.0f} s")
    if args.write:
        cmd = "python benchmarks/bench.py" + "".join(
            f" --{flag}" for flag in ("quick", "memory", "write") if getattr(args, flag)
        )
        (HERE / "RESULTS.md").write_text(report(results, mem, cmd))
        chart(results, HERE / "results.png")
        write_docs()


if __name__ == "__main__":
    main()
