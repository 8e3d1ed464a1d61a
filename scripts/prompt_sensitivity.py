"""How much one swapped word moves the UNet's noise prediction: a colour against an object.

    python scripts/prompt_sensitivity.py [--lora FOLDER] [--seeds N]

For the prompt "A living room with a red fabric sofa." the UNet (plain diffusers, the
shipped base model, optionally with a LoRA folder fused) predicts the noise of the same
noisy latent under the prompt, under the prompt with "red" -> "blue" and with "sofa" ->
"rug", and under the empty prompt, each encoded as genimg renders it (`encode_prompt`).
Printed per timestep: the norm of each difference, averaged over N random latents. A model
that reads colour words moves its prediction for a colour about as much as for an object;
the ratio is the figure to watch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from genimg.render import encode_prompt

BASE = Path(__file__).resolve().parent.parent / "assets" / "models" / "genimg-base"
PROMPT = "A living room with a red fabric sofa."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lora", help="a LoRA folder to fuse into the base model")
    parser.add_argument("--seeds", type=int, default=8, help="random latents to average over")
    args = parser.parse_args()
    pipe = StableDiffusionPipeline.from_pretrained(BASE)
    if args.lora:
        pipe.load_lora_weights(args.lora)
        pipe.fuse_lora()
    prompts = {
        "prompt": PROMPT,
        "colour": PROMPT.replace("red", "blue"),
        "object": PROMPT.replace("sofa", "rug"),
        "empty": "",
    }
    size = pipe.unet.config.sample_size
    with torch.no_grad():
        states = {k: encode_prompt(pipe, p)[0] for k, p in prompts.items()}  # as genimg renders
        print(f"{args.lora or 'base model'}: |change of the predicted noise|, {args.seeds} latents")
        print("timestep  red->blue  sofa->rug  ratio  prompt->empty")
        for t in (999, 700, 400, 100):
            diff = dict.fromkeys(("colour", "object", "empty"), 0.0)
            for seed in range(args.seeds):
                gen = torch.Generator().manual_seed(seed)
                x = torch.randn((1, 4, size, size), generator=gen)
                pred = {
                    k: pipe.unet(x, t, encoder_hidden_states=s).sample for k, s in states.items()
                }
                for k in diff:
                    diff[k] += float((pred[k] - pred["prompt"]).norm()) / args.seeds
            ratio = diff["colour"] / diff["object"]
            print(
                f"{t:8d}  {diff['colour']:9.4f}  {diff['object']:9.4f}  {ratio:5.2f}"
                f"  {diff['empty']:13.4f}"
            )


if __name__ == "__main__":
    main()
