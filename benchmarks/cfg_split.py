"""A CFG step's two rows as one two-row call on two threads, or as two one-row calls, one per core.

    .venv/bin/python benchmarks/cfg_split.py [--rounds 8] [--steps 20]

Times the shipped UNet (traced, as genimg runs it) on 16x16 latents: one 2-row call with 2
torch threads; one 1-row call on 1 thread; and the two rows as 1-row calls in two Python
threads at once, each on 1 torch thread. Prints the median milliseconds a step and the
largest difference between the split result and the 2-row one. Not adopted (README,
Performance): the split is no faster.
"""

from __future__ import annotations

import argparse
import threading
import time

import torch

from genimg import pipeline
from genimg.bench import _medians


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    unet = pipeline.load_pipeline(pipeline.DEFAULT_MODEL).unet
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, 16, 16, generator=gen)
    context = torch.randn(2, 77, unet.config.cross_attention_dim, generator=gen)
    outs: dict = {}

    def run(key, rows, threads):
        torch.set_num_threads(threads)
        with torch.inference_mode():
            for _ in range(args.steps):
                outs[key] = unet(sample[rows], 500, encoder_hidden_states=context[rows]).sample

    def two_rows():
        run("both", slice(0, 2), 2)

    def one_row():
        run("one", slice(0, 1), 1)

    def split():
        workers = [threading.Thread(target=run, args=(k, slice(k, k + 1), 1)) for k in (0, 1)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    fns = {"2 rows, 2 threads": two_rows, "1 row, 1 thread": one_row, "2 x 1 row split": split}
    for k, s in _medians(fns, args.rounds, time.perf_counter).items():  # round 0 traces
        print(f"{k}: {s / args.steps * 1e3:.2f} ms a step")
    diff = (torch.cat([outs[0], outs[1]]) - outs["both"]).abs().max().item()
    print(f"largest difference, split vs 2 rows: {diff:.2e}")


if __name__ == "__main__":
    main()
