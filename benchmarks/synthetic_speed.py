"""Synthetic tiles per second on one CPU core (the target: at least 10 tiles/s at 256x256).

    python benchmarks/synthetic_speed.py [--size 256] [--tiles 8]

Measures ``synthesize`` alone (in memory) per task, then ``generate`` end to end (PNG files
included) with ``--tiles`` tiles per domain, i.e. 11 domains x tiles tiles.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"  # before numpy is imported: one core

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402

from cosas_tutorial.data.synthetic import DOMAINS, generate, synthesize  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--tiles", type=int, default=8, help="tiles per domain")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    synthesize("task1", "colorectum", 0, size=args.size)  # warm-up (imports, caches)

    print(f"one core, {args.size}x{args.size} tiles")
    for task, domains in DOMAINS.items():
        names = domains["train"] + domains["test"]
        start = time.perf_counter()
        for domain in names:
            for index in range(args.tiles):
                synthesize(task, domain, index, size=args.size)
        seconds = time.perf_counter() - start
        rate = len(names) * args.tiles / seconds
        print(f"  synthesize, {task}: {rate:6.1f} tiles/s")

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generate(Path(tmp) / "synthetic", tiles=args.tiles, size=args.size)
        seconds = time.perf_counter() - start
    count = args.tiles * sum(len(d["train"] + d["test"]) for d in DOMAINS.values())
    print(f"  generate (PNG files included): {count / seconds:6.1f} tiles/s ({count} tiles)")


if __name__ == "__main__":
    main()
