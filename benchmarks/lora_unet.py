"""An unfused adapter's cost on the traced UNet call alone, without the rest of a render.

    .venv/bin/python benchmarks/lora_unet.py [--lora catalog] [--rows 2] [--repeats 15] [--rounds 3]

Loads the shipped model twice with the adapter unfused in weight space: once as genimg runs
it (the merged W + s * B @ A kept per layer until a weight changes) and once merging at every
call (`weight_space(cache=False)`, the code before 2026-12-06). Per round it times 20 UNet
calls in a row (a render's steps) of each pipeline with the adapter disabled (base) and
enabled, interleaved (each state has its traced graph), and prints each pipeline's overhead
(adapter / its own base - 1) from the medians of the per-call means. --rows 2 is one image
with CFG; 32 is `render_batch`'s 16 images a call.
`genimg bench` measures the kept-merge one at render level, where this VM's noise is several
points.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def _load(lora: str, cache: bool):
    from genimg import adapters, pipeline

    pipe = pipeline.load_pipeline(pipeline.DEFAULT_MODEL)
    spec = adapters.resolve(lora)
    if not cache:  # wrap the layers first: weight_space keeps the first wrapping
        pipe.load_lora_weights(str(spec.path.parent), adapter_name=spec.name)
        adapters.weight_space(pipe.unet, cache=False)
    adapters.apply(pipe, [spec], fuse=False)
    return pipe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lora", default="catalog")
    ap.add_argument("--rows", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--steps", type=int, default=20, help="UNet calls in a row per timing")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    pipes = {"kept": _load(args.lora, True), "merged each call": _load(args.lora, False)}
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(args.rows, 4, 16, 16, generator=gen)
    dim = pipes["kept"].unet.config.cross_attention_dim
    context = torch.randn(args.rows, 77, dim, generator=gen)

    def call(pipe, enabled: bool) -> float:
        (pipe.enable_lora if enabled else pipe.disable_lora)()  # untimed: flags only
        t0 = time.perf_counter()
        with torch.inference_mode():
            for _ in range(args.steps):
                pipe.unet(sample, 500, encoder_hidden_states=context)
        return (time.perf_counter() - t0) / args.steps

    for pipe in pipes.values():
        for enabled in (False, True):
            call(pipe, enabled)  # traces each adapter state once
    for r in range(args.rounds):
        times = {(k, e): [] for k in pipes for e in (False, True)}
        for _ in range(args.repeats):
            for k, pipe in pipes.items():
                for enabled in (False, True):
                    times[k, enabled].append(call(pipe, enabled))
        med = {key: statistics.median(v) for key, v in times.items()}
        parts = [
            f"{k}: base {med[k, False] * 1e3:.1f} ms, adapter {med[k, True] * 1e3:.1f} ms, "
            f"overhead {med[k, True] / med[k, False] - 1:.3f}"
            for k in pipes
        ]
        print(f"round {r + 1}, {args.lora} unfused, {args.rows} rows: " + "; ".join(parts))


if __name__ == "__main__":
    main()
