"""What loading a pickle costs in typedstore's interpreter, next to ``pickle.loads``.

The pickle codec interprets pickles opcode by opcode (see docs/security.md) instead of
trusting ``pickle.Unpickler``; this measures the price, per payload, with medians of
interleaved rounds in one process. Run: ``python benchmarks/pickle_codec.py``.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import decimal
import pickle
import pickletools
import statistics
import time
from collections.abc import Callable
from typing import Any

from typedstore.codecs import PickleCodec

PAYLOADS: dict[str, Callable[[], Any]] = {
    "10,000 floats": lambda: [float(i) for i in range(10_000)],
    "1,000 records": lambda: [
        {
            "id": i,
            "name": f"run-{i}",
            "when": datetime.date(2024, 1, 1 + i % 28),
            "score": decimal.Decimal(i) / 8,
            "tags": ("a", "b"),
        }
        for i in range(1_000)
    ],
    "1 MiB of bytes in a tuple": lambda: (b"x" * (1 << 20), 1),
    "nested plain data (1 MiB)": lambda: {
        f"k{i}": [i, str(i), {i: (i, i + 0.5)}, collections.OrderedDict(a=i)]
        for i in range(12_000)
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    codec = PickleCodec()
    print("| payload | pickle size | opcodes | pickle.loads | typedstore | ratio | per opcode |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, make in PAYLOADS.items():
        data = pickle.dumps(make(), protocol=5)
        opcodes = sum(1 for _ in pickletools.genops(data))
        times: dict[str, list[float]] = {"pickle": [], "typedstore": []}
        for _ in range(args.rounds):
            for label, load in (("pickle", pickle.loads), ("typedstore", codec.decode)):
                start = time.perf_counter()
                load(data)
                times[label].append(time.perf_counter() - start)
        base, ours = statistics.median(times["pickle"]), statistics.median(times["typedstore"])
        print(
            f"| {name} | {len(data) / 1024:.0f} KiB | {opcodes} | {base * 1e3:.2f} ms "
            f"| {ours * 1e3:.2f} ms | {ours / base:.1f}x | {ours / opcodes * 1e9:.0f} ns |"
        )


if __name__ == "__main__":
    main()
