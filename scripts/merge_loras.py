"""Several LoRA adapters with weights as one adapter, exactly: their ranks side by side.

For adapters with the same layers and scale (alpha / rank), w1 * B1 @ A1 + w2 * B2 @ A2 =
[w1 B1, w2 B2] @ [A1; A2]: one LoRA of rank r1 + r2 with the same scale gives the same
weights as loading both (`genimg render --lora A:w1 --lora B:w2`), so a command that takes
one adapter (`genimg compare --catalog-lora`) can run the pair. Diffusers-format files of
`genimg train-lora` or diffusers' training script (peft or legacy keys). Example:

    python scripts/merge_loras.py runs/mix runs/lora-prose:0.5 runs/lora-locon-long:0.5
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from genimg.lora import IDENTITY_NAME, WEIGHT_NAME, _lora_key, resolve_adapter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("adapters", nargs="+", help="FOLDER:WEIGHT, diffusers format")
    args = parser.parse_args()
    parts = []
    for spec in args.adapters:
        folder, _, weight = spec.rpartition(":")
        info = resolve_adapter(folder)
        with safe_open(str(info.path), framework="pt") as f:
            tensors = {k: f.get_tensor(k).float() for k in f.keys()}  # noqa: SIM118
            meta = f.metadata() or {}
        ident = {
            "format": 1,
            "base": info.base,
            "rank": info.rank,
            "alpha": info.alpha or info.rank,
        }
        parts.append((tensors, meta, ident, float(weight)))
    keys = parts[0][0].keys()
    scales = {p[2]["alpha"] / p[2]["rank"] for p in parts}
    if any(p[0].keys() != keys for p in parts) or len(scales) != 1:
        raise SystemExit("merge_loras: the adapters must have the same layers and alpha / rank")
    merged = {}
    for key in keys:
        kind = (_lora_key(key) or ("", ""))[1]
        if kind == "down":  # A: ranks stacked
            merged[key] = torch.cat([p[0][key] for p in parts], dim=0)
        elif kind == "up":  # B: ranks side by side, each weighted
            merged[key] = torch.cat([p[3] * p[0][key] for p in parts], dim=1)
        else:
            raise SystemExit(f"merge_loras: {key} is no LoRA A or B tensor")
    rank = sum(p[2]["rank"] for p in parts)
    alpha = rank * scales.pop()
    lora_meta = json.loads(parts[0][1].get("lora_adapter_metadata", "{}"))
    for k in list(lora_meta):
        if k.endswith((".r", ".lora_alpha")):
            lora_meta[k] = rank if k.endswith(".r") else alpha
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {**parts[0][1], "lora_adapter_metadata": json.dumps(lora_meta)}
    save_file({k: v.contiguous() for k, v in merged.items()}, str(args.out / WEIGHT_NAME), meta)
    ident = {**parts[0][2], "name": args.out.name, "rank": rank, "alpha": alpha,
             "description": "merged: " + ", ".join(args.adapters)}  # fmt: skip
    (args.out / IDENTITY_NAME).write_text(json.dumps(ident, indent=2, ensure_ascii=False) + "\n")
    recipe = Path(args.adapters[0].rpartition(":")[0]) / "recipe.toml"
    if recipe.is_file():
        shutil.copy(recipe, args.out)
    print(f"wrote {args.out / WEIGHT_NAME}: rank {rank}, alpha {alpha:g}")


if __name__ == "__main__":
    main()
