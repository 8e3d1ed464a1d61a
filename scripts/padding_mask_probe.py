"""Does hiding the padding states from cross-attention bind a colour word to its object?

    python scripts/padding_mask_probe.py --lora FOLDER [--prompts FILE --seeds N] [--out DIR]

The scored prompts (by default the colour probe `assets/compare/probe/prompts.txt`: 10
colours of a sofa and of a rug, seeds 0-3) and three two-colour scenes (seeds 0-3) are
rendered by the open model and by the adapter (fused), each as genimg renders them and
with an `encoder_attention_mask` that keeps only BOS..EOS of each window
(`genimg.models.padding_mask`: the ~66 padding states after EOS hidden from every
cross-attention layer). Printed per condition, by the checker on the scored prompts: the
share of images with every object present, of objects present, and of requested
materials and colours right; written: one grid per scene (rows open, open masked,
adapter, adapter masked; columns seeds 0-3) and `summary.json`. To a model trained with
the padding visible the mask is new; an adapter trained with the recipe key
`padding_mask` learned with it (its open rows are still the base, trained with the
padding visible).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from PIL import Image

from genimg import adapters, pipeline
from genimg import checker as ck
from genimg.models import chunk_rows, padding_mask, token_chunks
from genimg.parse import parse_prompt
from genimg.prompts import read_prompts
from genimg.render import render

PROBE = Path(__file__).resolve().parent.parent / "assets" / "compare" / "probe" / "prompts.txt"
SCENES = [
    "This living room has a black metal shelf with a black metal basket, a brown wooden "
    "coffee table and a gray fabric sofa.",
    "A bedroom with a white fabric bed and a red fabric rug.",
    "A living room with a blue fabric sofa and a yellow fabric rug.",
]
SEEDS = 4  # of the scene grids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lora", required=True, help="adapter name or folder")
    parser.add_argument("--prompts", type=Path, default=PROBE, help="scored prompts (the probe)")
    parser.add_argument("--seeds", type=int, default=4, help="images per scored prompt (4)")
    parser.add_argument("--out", type=Path, default=Path("runs/padding-mask"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    scored = [spec.prompt for spec in read_prompts(args.prompts)]
    checker = ck.load_checker(ck.DEFAULT_CHECKER)
    pipes = {"open": pipeline.load_pipeline(), "adapter": pipeline.load_pipeline()}
    adapters.apply(pipes["adapter"], [adapters.resolve(args.lora)], fuse=True)
    summary, grids = {}, {}
    for name, pipe in pipes.items():
        pipe.set_progress_bar_config(disable=True)
        mask = _maskable(pipe.unet)
        for masked in (False, True):
            tag = f"{name}, padding {'masked' if masked else 'visible'}"
            rates = {k: [0, 0] for k in ("all present", "present", "material", "colour")}
            grids[tag] = []
            for prompt in scored + SCENES:
                n = len(token_chunks(pipe.tokenizer, prompt)[0])  # windows; CFG pads "" to n
                mask["rows"] = (_keep(pipe, "", n), _keep(pipe, prompt, n)) if masked else None
                if prompt in SCENES:
                    grids[tag].append(render(pipe, prompt, num_images=SEEDS, seed=0))
                    continue
                images = render(pipe, prompt, num_images=args.seeds, seed=0)
                for result in ck.check(checker, images, parse_prompt(prompt)):
                    _count(rates["all present"], result["all_present"])
                    for obj in result["objects"]:
                        _count(rates["present"], obj["present"])
                        _count(rates["material"], obj["material_ok"])
                        _count(rates["colour"], obj["color_ok"])
            summary[tag] = {k: hits / max(asked, 1) for k, (hits, asked) in rates.items()}
            print(f"{tag}: " + ", ".join(f"{k} {v:.1%}" for k, v in summary[tag].items()))
    for i in range(len(SCENES)):
        side = next(iter(grids.values()))[i][0].width
        grid = Image.new("RGB", (SEEDS * side, len(grids) * side), "white")
        for row, images in enumerate(grids.values()):
            for col, image in enumerate(images[i]):
                grid.paste(image, (col * side, row * side))
        grid.save(args.out / f"scene-{i}.png")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")


def _count(tally: list[int], verdict: bool | None) -> None:
    """Add one verdict to [hits, asked]; None (the prompt did not ask) is not counted."""
    if verdict is not None:
        tally[0] += verdict
        tally[1] += 1


def _maskable(unet) -> dict:
    """Wrap `unet.forward` to pass a cross-attention mask while `state["rows"]` is set."""
    forward, state = unet.forward, {"rows": None}

    def masked(sample, timestep, encoder_hidden_states=None, *args, **kwargs):
        if state["rows"] is not None:
            negative, positive = state["rows"]
            n = encoder_hidden_states.shape[0] // 2  # CFG rows: negatives, then prompts
            rows = torch.cat([negative.expand(n, -1), positive.expand(n, -1)])
            kwargs["encoder_attention_mask"] = rows
        return forward(sample, timestep, encoder_hidden_states, *args, **kwargs)

    unet.forward = masked
    return state


def _keep(pipe, text: str, n: int):
    """(1, n * window) bool: True for BOS..EOS of each of `text`'s n windows, as genimg
    tokenizes it to render, False for the padding."""
    tok = pipe.tokenizer
    ids = torch.tensor([chunk_rows(tok, token_chunks(tok, text)[0], n)])
    return padding_mask(ids, tok.model_max_length, tok.eos_token_id)


if __name__ == "__main__":
    main()
