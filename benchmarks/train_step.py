"""A LoRA training step in float32 against the recipe key `cpu_bf16`, on the CPU.

    .venv/bin/python benchmarks/train_step.py [--recipe lora/catalog/recipe.toml] [--steps 12]

Loads the shipped base model with the recipe's LoRA layers (lora_B drawn away from its zero
init, so every LoRA weight gets a gradient), takes batches of the recipe's real captions
(its caption columns on 256 catalog images: the windows a batch is stacked to are the
recipe's) with random latents, and times forward + backward + AdamW step of each precision,
interleaved (float32, bf16, float32, ...), so a machine that slows down slows both alike.
Prints the loss and gradient agreement on the first batches and the ratio of the median
step times. Whether this CPU has native bfloat16 (avx512_bf16 / amx_bf16) is printed
beside: without it bf16 is the slower one.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    from diffusers import DDPMScheduler

    from genimg.bench import _machine
    from genimg.data import load_dataset
    from genimg.lora import LoraRecipe, _add_adapters, _batch_index, _trainable
    from genimg.models import tokenize
    from genimg.pipeline import DEFAULT_MODEL, load_pipeline
    from genimg.train_base import _autocast, diffusion_loss, native_bf16

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="lora/catalog/recipe.toml")
    ap.add_argument("--steps", type=int, default=12, help="timed steps per precision")
    args = ap.parse_args()
    recipe = LoraRecipe.from_toml(args.recipe)
    pipe = load_pipeline(recipe.base or DEFAULT_MODEL)
    params = _trainable(pipe, _add_adapters(pipe, recipe))
    with torch.no_grad():
        for key, p in params.items():
            if "lora_B" in key:
                p.normal_(0, 0.01)
    opt = torch.optim.AdamW(list(params.values()), lr=1e-6)  # tiny: the weights stay put
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    rows = load_dataset("catalog:256:4000:lora", recipe.caption_columns, size).rows
    ids = tokenize(pipe.tokenizer, [r[c] for c in recipe.caption_columns for r in rows if r.get(c)])
    ac = DDPMScheduler.from_config(pipe.scheduler.config).alphas_cumprod
    b, side = recipe.batch_size, pipe.unet.config.sample_size
    pipe.unet.train()
    pipe.text_encoder.train(recipe.train_text_encoder)

    def step(s: int, bf16: bool) -> tuple[float, torch.Tensor, float]:
        g = torch.Generator().manual_seed(s)
        latents = torch.randn(b, 4, side, side, generator=g)
        noise = torch.randn(b, 4, side, side, generator=g)
        t = torch.randint(0, len(ac), (b,), generator=g)
        batch = ids[_batch_index(s, len(ids), b, recipe.seed)]
        t0 = time.perf_counter()
        with _autocast("cpu", bf16):
            loss = diffusion_loss(
                pipe.unet, pipe.text_encoder, latents, batch, noise, t, ac, recipe.snr_gamma
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad = torch.cat([p.grad.flatten() for p in params.values()])
        opt.step()
        return loss.item(), grad, time.perf_counter() - t0

    print(f"{_machine('cpu')}, {torch.get_num_threads()} threads, "
          f"native bfloat16: {native_bf16()}; batch {b}, {args.recipe}")  # fmt: skip
    for s in range(3):  # the same batch both ways (also the warm-up)
        (l32, g32, _), (l16, g16, _) = step(s, False), step(s, True)
        cos = float(torch.nn.functional.cosine_similarity(g32.double(), g16.double(), dim=0))
        ratio, rel = float(g16.norm() / g32.norm()), 100 * (l16 / l32 - 1)
        print(f"batch {s}: loss float32 {l32:.5f}, bf16 {l16:.5f} ({rel:+.2f}%); "
              f"gradient cosine {cos:.4f}, norm ratio {ratio:.4f}")  # fmt: skip
    times: dict[bool, list[float]] = {False: [], True: []}
    for s in range(3, 3 + args.steps):
        for bf16 in (False, True):
            times[bf16].append(step(s, bf16)[2])
    m32, m16 = statistics.median(times[False]), statistics.median(times[True])
    print(f"step median of {args.steps}: float32 {m32:.3f} s, cpu_bf16 {m16:.3f} s; "
          f"float32 / cpu_bf16 = {m32 / m16:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
