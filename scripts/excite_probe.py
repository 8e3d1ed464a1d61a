"""Probe: does Attend-and-Excite (Chefer et al., SIGGRAPH 2023) put the neglected objects in?

Renders prompts x seeds with the open model and with an adapter, plain and with the
latents nudged, in the first half of the steps, so that every requested object's phrase
gets a strong cross-attention peak somewhere in the 16x16 maps; checks every image.
Prints the all-present rate of each of the four cells and writes a grid per prompt.

    python scripts/excite_probe.py --prompts assets/compare/prompts.txt --seeds 32 \
        --out runs/excite
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def token_positions(tokenizer, prompt: str, phrases: list[str]) -> list[list[int]]:
    """For each phrase, the positions in the chunked token row (`models.chunk_rows`) of the
    tokens whose characters overlap the phrase's first occurrence in `prompt`."""
    spans = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    chunk = tokenizer.model_max_length - 2
    out = []
    for phrase in phrases:
        lo = prompt.find(phrase)
        if lo < 0:
            raise ValueError(f"{phrase!r} not in the prompt")
        hi = lo + len(phrase)
        ids = [j for j, (a, b) in enumerate(spans.offset_mapping) if a < hi and b > lo]
        out.append([_row_position(j, chunk) for j in ids])
    return out


def text_positions(tokenizer, prompt: str) -> list[int]:
    """The positions in the chunked token row of all the prompt's own tokens."""
    chunk = tokenizer.model_max_length - 2
    return [_row_position(j, chunk) for j in range(len(tokenizer.tokenize(prompt)))]


def _row_position(j: int, chunk: int) -> int:
    """Where token j of the text sits in a row of windows: BOS, `chunk` tokens, EOS each."""
    return (j // chunk) * (chunk + 2) + 1 + j % chunk


def _smooth(maps: torch.Tensor) -> torch.Tensor:
    """A&E's Gaussian smoothing: 3x3, sigma 0.5, reflect padding. maps (B, G, h, w)."""
    x = torch.arange(3, dtype=maps.dtype) - 1
    g = torch.exp(-(x**2) / (2 * 0.5**2))
    k = (g[:, None] * g[None, :]) / g.sum() ** 2
    b, n, h, w = maps.shape
    padded = torch.nn.functional.pad(maps.reshape(b * n, 1, h, w), (1, 1, 1, 1), mode="reflect")
    return torch.nn.functional.conv2d(padded, k[None, None]).reshape(b, n, h, w)


def excite_loss(seen, groups: list[list[int]], text: list[int], side: int = 16):
    """Per image: max over the groups of (1 - the group's smoothed attention peak), the
    attention averaged over heads and over the cross-attention layers at `side` x `side`
    and renormalised over the prompt's own tokens (A&E: x100, softmax)."""
    from genimg.lora import attention_probs

    maps = [
        attention_probs(attn, hidden, context)[:, :, text]
        for attn, hidden, context in seen
        if hidden.shape[1] == side * side
    ]
    a = (torch.stack(maps).mean(0) * 100).softmax(-1)  # (b, side * side, len(text))
    b = a.shape[0]
    index = {p: i for i, p in enumerate(text)}
    group = torch.stack([a[:, :, [index[p] for p in g]].sum(-1) for g in groups], 1)
    peak = _smooth(group.reshape(b, len(groups), side, side)).flatten(2).amax(-1)  # (b, G)
    return (1 - peak).amax(-1), peak


def render_excited(pipe, prompt, seeds, groups, text, scale, refine, steps=20, gs=7.5):
    from genimg.lora import cross_attention_inputs
    from genimg.render import encode_prompt

    cond, uncond = encode_prompt(pipe, prompt)
    n = len(seeds)
    shape = (1, 4, 16, 16)
    noise = [torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]
    latents = torch.cat(noise)
    alter = steps // 2
    pipe.scheduler.set_timesteps(steps)
    timesteps = pipe.scheduler.timesteps
    sizes = torch.linspace(1.0, 0.5, steps).sqrt() * scale
    log = []

    def nudge(latents, i):
        t = timesteps[i]
        thresholds = refine.get(i)
        iters = 0
        for _ in range(20 if thresholds is not None else 1):
            iters += 1
            with torch.enable_grad():
                x = latents.detach().requires_grad_(True)
                with cross_attention_inputs(pipe.unet) as seen:
                    pipe.unet(x, t, encoder_hidden_states=cond.expand(n, -1, -1))
                loss, peak = excite_loss(seen, groups, text)
                if thresholds is not None and bool((loss < 1 - thresholds).all()):
                    break
                (grad,) = torch.autograd.grad(loss.sum(), x)
            latents = (x - sizes[i] * grad).detach()
        log.append(
            (
                i,
                iters,
                round(loss.detach().mean().item(), 4),
                [round(v, 4) for v in peak.detach().mean(0).tolist()],
            )
        )
        return latents

    def callback(pipe_, i, t, kwargs):
        if i + 1 < alter:
            kwargs["latents"] = nudge(kwargs["latents"], i + 1)
        return {"latents": kwargs["latents"]}

    latents = nudge(latents, 0)
    out = pipe(
        prompt_embeds=cond,
        negative_prompt_embeds=uncond,
        num_images_per_prompt=n,
        latents=latents,
        num_inference_steps=steps,
        guidance_scale=gs,
        height=128,
        width=128,
        callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=["latents"],
    )
    return out.images, log


def score(checker, images, parsed, key: str) -> dict:
    """Check `images` for the parsed prompt's objects; print and return the all-present
    count and each phrase's presence count."""
    from genimg.checker import check

    verdicts = check(checker, images, parsed)
    hits = [v["all_present"] for v in verdicts]
    per = {
        r.phrase: sum(v["objects"][k]["present"] for v in verdicts)
        for k, r in enumerate(parsed.objects)
    }
    print(key, sum(hits), "/", len(hits), per, flush=True)
    return {"all_present": sum(hits), "n": len(hits), "objects": per, "hits": hits}


def load(lora: str, out: Path):
    """The shipped pipeline (progress bars off), the shipped checker, the adapter `lora`
    resolved, and the output folder made."""
    from genimg import adapters, pipeline
    from genimg import checker as ck

    pipe = pipeline.load_pipeline()
    pipe.set_progress_bar_config(disable=True)
    out.mkdir(parents=True, exist_ok=True)
    return pipe, ck.load_checker(), adapters.resolve(lora)


def main() -> None:
    from genimg import adapters
    from genimg.parse import parse_prompt
    from genimg.render import render
    from genimg.train_base import _grid

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=Path, required=True)
    ap.add_argument("--seeds", type=int, default=32)
    ap.add_argument("--lora", default="catalog")
    ap.add_argument("--scale", type=float, default=20.0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    prompts = [p for p in args.prompts.read_text().splitlines() if p.strip()]
    seeds = list(range(args.seeds))
    refine = {0: 0.05, 4: 0.5, 8: 0.8}  # A&E's {0, 10, 20} of 50 steps, here of 20
    pipe, checker, lora = load(args.lora, args.out)
    results = {}
    for p, prompt in enumerate(prompts):
        parsed = parse_prompt(prompt)
        phrases = [r.phrase for r in parsed.objects]
        groups = token_positions(pipe.tokenizer, prompt, phrases)
        text = text_positions(pipe.tokenizer, prompt)
        print(p, dict(zip(phrases, groups, strict=True)))
        print(
            "uniform share of the text attention:",
            {ph: round(len(g) / len(text), 4) for ph, g in zip(phrases, groups, strict=True)},
        )
        rows = []
        for model in ("open", "catalog"):
            adapters.apply(pipe, [lora] if model == "catalog" else [])
            for mode in ("plain", "excite"):
                if mode == "plain":
                    images = render(pipe, prompt, "", 20, 7.5, 0, len(seeds))
                    log = []
                else:
                    images, log = render_excited(
                        pipe, prompt, seeds, groups, text, args.scale, refine
                    )
                key = f"{p}-{model}-{mode}"
                results[key] = score(checker, images, parsed, key) | {"log": log[:12]}
                if log:  # (step, refinement iterations, loss, each phrase's mean peak)
                    print("  first and last nudge:", log[0], log[-1])
                rows.append(images[:8])
        _grid([im for row in rows for im in row], 8).save(args.out / f"grid-{p}.png")
    (args.out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
