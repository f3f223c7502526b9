"""Write and read one large float32 array: typedstore against raw file I/O of the same bytes.

Each round runs every contender once, in turn (interleaved, so machine noise hits all of
them alike); the table shows medians with min-max and the ratio of each median to the raw
baseline of the same direction, measured in the same run.

    python benchmarks/bench_core.py [--mib 256] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import typedstore as ts


def warm_memory(nbytes: int) -> None:
    # Memory the VM handed back to its host is slow to reuse; touch some before timing.
    scratch = np.ones(3 * nbytes, dtype=np.uint8)
    del scratch


def raw_write(path: Path, array: np.ndarray[Any, Any], preallocate: bool) -> None:
    view = memoryview(array.reshape(-1).view(np.uint8).data)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if preallocate:
            os.posix_fallocate(fd, 0, view.nbytes)
        while view.nbytes:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def raw_read(path: Path, nbytes: int) -> np.ndarray[Any, Any]:
    out = np.empty(nbytes, dtype=np.uint8)
    with open(path, "rb", buffering=0) as f:
        f.readinto(memoryview(out.data))
    return out


def main() -> None:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    array = np.random.default_rng(0).random(args.mib * 2**20 // 4, dtype=np.float32)
    nbytes = array.nbytes

    with tempfile.TemporaryDirectory(dir=".") as tmp:
        root = Path(tmp)
        ts.options.set("datastore.url", str(root / "store"))
        raw_path = root / "raw.bin"
        url = ts.DataStoreIO.serialize_write(array, "bench").url

        def ts_write() -> None:
            ts.DataStoreIO.serialize_write(array, "bench")

        def ts_read() -> None:
            back = ts.DataStoreIO(url).read_deserialize(np.ndarray)
            assert back.nbytes == nbytes

        contenders: dict[str, tuple[str, Callable[[], object]]] = {
            "raw write": ("write", lambda: raw_write(raw_path, array, preallocate=False)),
            "raw write, preallocated": (
                "write",
                lambda: raw_write(raw_path, array, preallocate=True),
            ),
            "typedstore serialize_write": ("write", ts_write),
            "raw readinto fresh buffer": ("read", lambda: raw_read(raw_path, nbytes)),
            "typedstore read_deserialize": ("read", ts_read),
        }
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(args.rounds + 1):  # the first round warms up and is dropped
            for name, (_, run) in contenders.items():
                if name.startswith("raw write"):
                    # Every writer creates a new file: truncating an old one costs extra.
                    raw_path.unlink(missing_ok=True)
                warm_memory(nbytes)
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
            ts.DataStoreIO.delete("bench")
            url = ts.DataStoreIO.serialize_write(array, "bench").url
        ts.options.reset("datastore.url")

    baseline = {"write": statistics.median(times["raw write"][1:]),
                "read": statistics.median(times["raw readinto fresh buffer"][1:])}  # fmt: skip
    print(f"{args.mib} MiB float32 array, {args.rounds} rounds, medians (min-max)")
    print(f"{'contender':<30} {'median ms':>10} {'min-max ms':>16} {'GB/s':>6} {'ratio':>6}")
    for name, (direction, _) in contenders.items():
        runs = times[name][1:]
        median = statistics.median(runs)
        print(
            f"{name:<30} {median * 1e3:>10.1f} "
            f"{f'{min(runs) * 1e3:.1f}-{max(runs) * 1e3:.1f}':>16} "
            f"{nbytes / median / 1e9:>6.2f} {median / baseline[direction]:>6.2f}"
        )


if __name__ == "__main__":
    main()
