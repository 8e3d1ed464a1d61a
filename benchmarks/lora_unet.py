"""An unfused adapter's cost on the traced UNet call alone, without the rest of a render.

    .venv/bin/python benchmarks/lora_unet.py [--lora catalog] [--rows 2] [--repeats 60] [--rounds 3]

Loads the shipped model with the adapter unfused and, per round, times one UNet call with
the adapter disabled (base) and enabled, interleaved on the same pipeline (each state has
its traced graph), and prints the overhead (adapter / base - 1) from the medians. --rows 2
is one image with CFG; 32 is `render_batch`'s 16 images a call. `genimg bench` measures
the same at render level, where this VM's noise is several points.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    from genimg import adapters, pipeline

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lora", default="catalog")
    ap.add_argument("--rows", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    pipe = pipeline.load_pipeline(pipeline.DEFAULT_MODEL)
    adapters.apply(pipe, [adapters.resolve(args.lora)], fuse=False)
    unet = pipe.unet
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(args.rows, 4, 16, 16, generator=gen)
    context = torch.randn(args.rows, 77, unet.config.cross_attention_dim, generator=gen)

    def call(enabled: bool) -> float:
        (pipe.enable_lora if enabled else pipe.disable_lora)()  # untimed: flags only
        t0 = time.perf_counter()
        with torch.inference_mode():
            unet(sample, 500, encoder_hidden_states=context)
        return time.perf_counter() - t0

    for enabled in (False, True):
        call(enabled)  # traces each adapter state once
    for r in range(args.rounds):
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeats):
            for enabled in (False, True):
                times[enabled].append(call(enabled))
        base, lora = (statistics.median(times[k]) for k in (False, True))
        print(
            f"round {r + 1}: {args.lora} unfused, {args.rows} rows: base {base * 1e3:.1f} ms, "
            f"adapter {lora * 1e3:.1f} ms, overhead {lora / base - 1:.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
