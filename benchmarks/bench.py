"""genimg against plain diffusers, every figure a ratio measured in one run.

    .venv/bin/python benchmarks/bench.py [--quick] [--json] [--clock cpu --threads 1]
    .venv/bin/python benchmarks/bench.py --arch sd15 --device cuda

The same as `genimg bench` (genimg/bench.py says what each figure means).
"""

from __future__ import annotations

import sys

from genimg.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
