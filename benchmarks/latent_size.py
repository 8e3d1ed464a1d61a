"""What a 4x VAE (32x32 latents, assets/recipes/base-gpu-f4.toml) costs against the shipped 8x.

    .venv/bin/python benchmarks/latent_size.py [--repeats 7]

Builds both architectures with random weights (ModelConfig: the shipped base's, and the same
with `vae_channels = (32, 64, 64)`) and times, interleaved (8x, 4x, 8x, ...) so a machine that
slows down slows both alike, in float32 on this CPU:
- a sampling UNet call (2 rows: the prompt and CFG's unconditional one, 77 tokens);
- the VAE decode of one 128 px image;
- a training step of the UNet (forward + backward, batch 32), what an adapter's step costs
  most of.
Prints each median and the 4x / 8x ratio, and the estimate for a 20-step render.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    from genimg.models import ModelConfig, build_components

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7, help="timed runs of each, per model")
    args = ap.parse_args()
    torch.manual_seed(0)
    models = {}
    for name, vae in (("8x", (32, 64, 64, 64)), ("4x", (32, 64, 64))):
        cfg = ModelConfig(vae_channels=vae)
        comp = build_components(cfg)
        models[name] = (cfg, comp["unet"], comp["vae"])
    text = torch.randn(2, 77, ModelConfig().text_hidden)

    def sample_call(cfg, unet, vae) -> None:
        x = torch.randn(2, 4, cfg.latent_size, cfg.latent_size)
        with torch.no_grad():
            unet(x, 500, encoder_hidden_states=text)

    def decode(cfg, unet, vae) -> None:
        with torch.no_grad():
            vae.decode(torch.randn(1, 4, cfg.latent_size, cfg.latent_size))

    def train_step(cfg, unet, vae) -> None:
        x = torch.randn(32, 4, cfg.latent_size, cfg.latent_size)
        t = torch.randint(0, 1000, (32,))
        out = unet(x, t, encoder_hidden_states=text[:1].expand(32, -1, -1)).sample
        out.square().mean().backward()
        unet.zero_grad(set_to_none=True)

    times: dict = {}
    for what, fn in (("UNet call, 2 rows", sample_call), ("VAE decode", decode),
                     ("UNet train step, batch 32", train_step)):  # fmt: skip
        for name in models:  # warm up
            fn(*models[name])
        for _ in range(args.repeats):
            for name in models:
                t0 = time.perf_counter()
                fn(*models[name])
                times.setdefault((what, name), []).append(time.perf_counter() - t0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32")
    med = {k: statistics.median(v) for k, v in times.items()}
    for what in dict.fromkeys(w for w, _ in med):
        a, b = med[(what, "8x")], med[(what, "4x")]
        print(f"{what}: 8x {a * 1e3:.1f} ms, 4x {b * 1e3:.1f} ms, 4x / 8x {b / a:.2f}")
    render = {n: 20 * med[("UNet call, 2 rows", n)] + med[("VAE decode", n)] for n in models}
    print(
        f"20-step render (UNet calls + decode): 8x {render['8x']:.2f} s, "
        f"4x {render['4x']:.2f} s, 4x / 8x {render['4x'] / render['8x']:.2f}"
    )


if __name__ == "__main__":
    main()
