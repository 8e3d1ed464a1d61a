"""Probe: does composable guidance (Liu et al., ECCV 2022) put the neglected objects in?

The sampler adds, to classifier-free guidance on the whole prompt, a guidance term per
requested object: eps = eps_u + s (eps_prompt - eps_u) + w * sum_i (eps_object_i - eps_u),
each object's condition its phrase alone ("two baskets"). Renders prompts x seeds with the
open model and an adapter, plain (w = 0, checked against genimg's render) and with each
given w; checks every image; prints all-present counts and writes a grid per prompt.

    python scripts/compose_probe.py --prompts assets/compare/prompts.txt --seeds 32 \
        --weights 1 2 --out runs/compose
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def encode_rows(pipe, texts: list[str]):
    """Hidden states (len(texts), k * window, D), every text in as many windows as the
    longest needs (the render path's scheme)."""
    from genimg.models import chunk_rows, encode_chunked, token_chunks

    chunks = [token_chunks(pipe.tokenizer, t)[0] for t in texts]
    n = max(len(c) for c in chunks)
    ids = torch.tensor([chunk_rows(pipe.tokenizer, c, n) for c in chunks])
    return encode_chunked(pipe.text_encoder, ids, trim=False)


@torch.no_grad()
def render_composed(pipe, prompt, phrases, seeds, weight, steps=20, gs=7.5):
    """Images for `seeds`, image i from seed i's noise, as genimg.render draws it."""
    embeds = encode_rows(pipe, ["", prompt, *phrases])  # (K + 2, T, D)
    m = embeds.shape[0]
    sched = pipe.scheduler
    images = []
    for start in range(0, len(seeds), 8):
        batch = seeds[start : start + 8]
        n = len(batch)
        lat = (
            torch.cat(
                [
                    torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(s))
                    for s in batch
                ]
            )
            * sched.init_noise_sigma
        )
        sched.set_timesteps(steps)
        context = embeds.repeat_interleave(n, 0)  # rows: condition-major
        for t in sched.timesteps:
            inp = sched.scale_model_input(lat.repeat(m, 1, 1, 1), t)
            eps = pipe.unet(inp, t, encoder_hidden_states=context).sample.view(m, n, 4, 16, 16)
            e = eps[0] + gs * (eps[1] - eps[0])
            if weight:
                e = e + weight * (eps[2:] - eps[0]).sum(0)
            lat = sched.step(e, t, lat).prev_sample
        x = pipe.vae.decode(lat / pipe.vae.config.scaling_factor).sample
        images += pipe.image_processor.postprocess(x, output_type="pil")
    return images


def main() -> None:
    import numpy as np
    from excite_probe import load, score  # beside this file

    from genimg import adapters
    from genimg.parse import parse_prompt
    from genimg.render import render
    from genimg.train_base import _grid

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=Path, required=True)
    ap.add_argument("--seeds", type=int, default=32)
    ap.add_argument("--lora", default="catalog")
    ap.add_argument("--weights", type=float, nargs="+", default=[1.0])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    prompts = [p for p in args.prompts.read_text().splitlines() if p.strip()]
    seeds = list(range(args.seeds))
    pipe, checker, lora = load(args.lora, args.out)
    results = {}
    for p, prompt in enumerate(prompts):
        parsed = parse_prompt(prompt)
        phrases = [r.phrase for r in parsed.objects]
        rows = []
        for model in ("open", "catalog"):
            adapters.apply(pipe, [lora] if model == "catalog" else [])
            for w in [0.0, *args.weights]:
                images = render_composed(pipe, prompt, phrases, seeds, w)
                if w == 0:  # the loop is genimg's sampler: same pictures as render()
                    ref = render(pipe, prompt, "", 20, 7.5, 0, min(4, len(seeds)))
                    diff = max(
                        np.abs(np.asarray(a, float) - np.asarray(b, float)).max()
                        for a, b in zip(ref, images, strict=False)
                    )
                    print(f"plain loop vs render: max pixel difference {diff}")
                key = f"{p}-{model}-w{w:g}"
                results[key] = score(checker, images, parsed, key)
                rows.append(images[:8])
                for s, im in zip(seeds, images, strict=True):
                    im.save(args.out / f"{key}-{s:03d}.png")
        _grid([im for row in rows for im in row], 8).save(args.out / f"grid-{p}.png")
    (args.out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
