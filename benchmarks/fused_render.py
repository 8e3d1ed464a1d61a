"""A fused adapter's cost at render level, and what diffusers' device/dtype lookups cost.

    .venv/bin/python benchmarks/fused_render.py [--lora catalog] [--rounds 20]

Times `render` of one image (128 px, 20 steps, CFG 7.5) on the bare base pipeline and on
one with the adapter fused, and the plain diffusers call, interleaved, and prints the
medians: the fused overhead (fused / base - 1) and the plain call over `render`. Then it
times diffusers' `pipe.device`, `unet.dtype` and `_execution_device` on both pipelines:
each walks every module looking for hooks, and peft's layers multiply the UNet's modules.
For a before/after figure run it in a worktree of the older commit as well
(`PYTHONPATH=WORKTREE python benchmarks/fused_render.py`), alternating.
"""

from __future__ import annotations

import argparse
import time
import timeit

import torch


def main() -> None:
    from diffusers import StableDiffusionPipeline

    from genimg import adapters, pipeline
    from genimg.bench import PROMPT, _medians, _plain_pipeline
    from genimg.render import render

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lora", default="catalog")
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    folder = pipeline.check_model(pipeline.DEFAULT_MODEL)
    pipes = {"base": pipeline.load_pipeline(folder), "fused": pipeline.load_pipeline(folder)}
    adapters.apply(pipes["fused"], [adapters.resolve(args.lora)], fuse=True)
    plain = _plain_pipeline(folder, "cpu")
    settings = {"num_inference_steps": 20, "guidance_scale": 7.5, "height": 128, "width": 128}
    fns = {
        "plain": lambda: plain(PROMPT, generator=torch.Generator().manual_seed(0), **settings),
        **{k: (lambda p=p: render(p, PROMPT, num_images=1, **settings)) for k, p in pipes.items()},
    }
    for p in (*pipes.values(), plain):
        p.set_progress_bar_config(disable=True)
    med = _medians(fns, args.rounds, time.perf_counter)  # interleaved, after a warm-up round
    print(
        f"render: base {med['base'] * 1e3:.1f} ms, fused {med['fused'] * 1e3:.1f} ms, "
        f"fused overhead {med['fused'] / med['base'] - 1:.3f}; "
        f"plain call / render {med['plain'] / med['base']:.3f}"
    )
    for k, p in pipes.items():
        cost = {
            name: timeit.timeit(fn, number=200) / 200 * 1e3
            for name, fn in (
                ("pipe.device", lambda p=p: p.device),
                ("unet.dtype", lambda p=p: p.unet.dtype),
                (
                    "diffusers' _execution_device",
                    lambda p=p: StableDiffusionPipeline._execution_device.fget(p),
                ),
            )
        }
        modules = sum(1 for _ in p.unet.modules())
        print(
            f"{k} ({modules} UNet modules): "
            + ", ".join(f"{n} {ms:.2f} ms" for n, ms in cost.items())
        )


if __name__ == "__main__":
    main()
