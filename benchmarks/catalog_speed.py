"""Catalog rendering speed: images/s writing an imagefolder, and in memory.

usage: python benchmarks/catalog_speed.py [--n 2000] [--workers 2] [--size 128]
The issue's bar: 10,000 images at 128 px in under two minutes on 2 cores (>= 84 images/s).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from genimg.catalog import render_arrays
from genimg.cli import main


def _bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        argv = [
            "catalog",
            "--out",
            f"{tmp}/cat",
            "--n",
            str(args.n),
            "--seed",
            "0",
            "--size",
            str(args.size),
            "--workers",
            str(args.workers),
        ]
        assert main(argv) == 0
        files = args.n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    render_arrays(args.n, seed=0, size=args.size, workers=args.workers)
    memory = args.n / (time.perf_counter() - t0)
    print(
        f"catalog {args.size}px, {args.workers} workers: {files:.0f} images/s to PNG files "
        f"(10,000 in {10_000 / files:.0f} s), {memory:.0f} images/s in memory"
    )


if __name__ == "__main__":
    _bench()
