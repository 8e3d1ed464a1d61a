"""Copy a finished `genimg train-base` run into assets/models/ with its model card.

usage: python scripts/ship_base.py RUN_DIR [DEST]   (DEST: assets/models/genimg-base)
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch


def _machine(summary: dict) -> str:
    device = summary.get("device", "cpu")
    return "one lent CUDA GPU (bf16 autocast)" if device.startswith("cuda") else "CPU only"


def _command(summary: dict) -> str:
    if summary.get("device", "cpu").startswith("cuda"):
        recipe = "assets/recipes/base-gpu.toml"
        return f"genimg train-base --recipe {recipe} --out runs/base --device cuda"
    return "genimg train-base --recipe assets/recipes/base.toml --out runs/base"


def _reproduce(summary: dict) -> str:
    if summary.get("device", "cpu").startswith("cuda"):
        return (
            "the recipe's `max_minutes` caps fitted the step counts above to this GPU;\n"
            "  CUDA kernels are not bit-deterministic, so a rerun gives a comparable,\n"
            "  not identical, model."
        )
    return (
        "to reproduce exactly: set `steps` in the recipe to the counts above and\n"
        "  `max_minutes = 0`."
    )


def card(run: Path, summary: dict, recipe: dict) -> str:
    vae, unet = summary["vae"], summary["unet"]
    stall = unet.get("checkpoint_stall_s") or [0.0]
    return f"""# genimg-base — the "open" model

A small Stable Diffusion (diffusers `AutoencoderKL` f8 + transformers `CLIPTextModel` with
CLIP's BPE tokenizer and CLIP's 77-token window + diffusers `UNet2DConditionModel`), trained
from scratch by `genimg train-base` on the procedural catalog's **web captions** only:
loose alt-text naming the room and at most two objects. It is the open model of
`genimg compare`; the catalog adapters in `lora/` are trained on top of it.

Load it with plain diffusers (no network):

```python
from diffusers import StableDiffusionPipeline

pipe = StableDiffusionPipeline.from_pretrained("assets/models/genimg-base")
image = pipe("a bathroom with a wooden shelf", height=128, width=128).images[0]
```

## How it was trained

- command: `{_command(summary)}`
- machine: {_machine(summary)}, torch {torch.__version__}
- data: `{summary["data"]}` — {summary["n_images"]} rendered catalog images of the base split
  (never used by the adapters, the checker or the evaluation), captions `{recipe["caption_column"]}`
- VAE: {vae["steps"]} steps at batch {recipe["vae"]["batch_size"]} on {recipe["vae"]["crop"]} px
  crops, {vae["wall_s"] / 60:.1f} min, final loss {vae["loss"]:.4f}; latent scaling factor
  {vae["scaling_factor"]:.4f}
- UNet + text encoder: {unet["steps"]} steps at batch {recipe["unet"]["batch_size"]},
  {unet["wall_s"] / 60:.1f} min, final loss {unet["loss"]:.4f}; EMA {recipe["unet"]["ema_decay"]},
  min-SNR-gamma {recipe["unet"]["snr_gamma"]}, caption dropout {recipe["unet"]["caption_dropout"]}
- checkpoint stall (the training loop's cost of an asynchronous checkpoint): median
  {sorted(stall)[len(stall) // 2] * 1000:.0f} ms, max {max(stall) * 1000:.0f} ms
- {_reproduce(summary)}

## Samples (held-out prompts, seeds 0-3, 20 DPM-Solver++ steps, CFG 7.5)

![samples](samples.png)

Rows: {"; ".join(recipe["sample_prompts"])}

## Limits

Trained for minutes, it draws the room (walls, floor, lighting) and the large furniture
the prompt names; small objects and attribute binding are weak. Prompts longer than 75
tokens are read in chunks by `genimg` (plain diffusers reads the first 77 tokens only).
That weakness is also what the open-vs-catalog comparison measures: see the README's
comparison table.
"""


def main() -> None:
    run = Path(sys.argv[1])
    dest = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("assets/models/genimg-base")
    summary = json.loads((run / "summary.json").read_text())
    recipe = json.loads((run / "recipe.json").read_text())
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(run / "model", dest)
    shutil.copy2(run / "samples.png", dest / "samples.png")
    (dest / "training_summary.json").write_text(json.dumps(summary, indent=2))
    (dest / "README.md").write_text(card(run, summary, recipe))
    print(f"shipped {run} -> {dest}")


if __name__ == "__main__":
    main()
