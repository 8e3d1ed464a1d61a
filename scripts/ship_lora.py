"""Copy a finished `genimg train-lora` run into lora/NAME, halved to float16, with a kohya file.

usage: python scripts/ship_lora.py RUN_DIR NAME

Writes lora/NAME/pytorch_lora_weights.safetensors (float16, the adapter metadata kept),
lora/NAME/NAME.safetensors (kohya format, float16, for the SD web UIs), and copies the run's
genimg_adapter.json (its name set to NAME), recipe.toml, train_log.jsonl and samples.png.
The card (README.md) and any other file already in lora/NAME are left as they are: the card
is edited by hand with the adapter's scores.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from genimg import lora as lora_mod
from genimg.adapters import WEIGHT_NAME
from genimg.pipeline import load_pipeline


def main(run: Path, name: str) -> None:
    dest = Path("lora") / name
    dest.mkdir(parents=True, exist_ok=True)
    with safe_open(str(run / WEIGHT_NAME), "pt") as f:
        meta = f.metadata()
        half = {k: f.get_tensor(k).half() for k in f.keys()}  # noqa: SIM118 (not a dict)
    save_file(half, str(dest / WEIGHT_NAME), metadata=meta)
    ident = json.loads((run / "genimg_adapter.json").read_text())
    (dest / "genimg_adapter.json").write_text(json.dumps({**ident, "name": name}, indent=2) + "\n")
    for file in ("recipe.toml", "train_log.jsonl", "samples.png"):
        shutil.copyfile(run / file, dest / file)
    # The kohya file from the loaded adapter, as `train-lora --export kohya` writes it.
    pipe = load_pipeline(ident["base"]["model"])
    pipe.load_lora_weights(str(dest), adapter_name="default")
    configs = {
        part: SimpleNamespace(lora_alpha=ident["alpha"])
        for part in ("unet", "text_encoder")
        if getattr(getattr(pipe, part), "peft_config", None)
    }
    kohya = dest / f"{name}.safetensors"
    lora_mod._save_kohya(pipe, configs, kohya, ident["rank"], ident["alpha"])
    with safe_open(str(kohya), "pt") as f:
        tensors, meta = {k: f.get_tensor(k).half() for k in f.keys()}, f.metadata()  # noqa: SIM118
    save_file(tensors, str(kohya), metadata=meta)
    print(f"{dest}: {len(half)} tensors, kohya file {len(tensors)} tensors")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[2])
    torch.set_grad_enabled(False)
    main(Path(sys.argv[1]), sys.argv[2])
