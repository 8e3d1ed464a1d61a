"""Reconstruction quality of model folders' VAEs on catalog images none of them trained on.

    python scripts/vae_psnr.py MODEL_DIR [MODEL_DIR ...] [--data catalog:512:5002:checker-eval]
        [--strip FILE.png]

Per model: PSNR (dB) of decode(encode(x).mean) against x over the images, overall and
inside the boxes of small objects (faucet, basket, lamp, vase, potted plant, kettle, mirror),
where a soft decoder loses most. --strip writes the first 8 images above each model's
reconstructions.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

SMALL = {"faucet", "basket", "lamp", "vase", "potted plant", "kettle", "mirror"}


def reconstruct(folder: str, images: np.ndarray) -> np.ndarray:
    from genimg.pipeline import load_pipeline
    from genimg.train_base import encode_latents

    vae = load_pipeline(folder).vae
    latents = encode_latents(vae, images, "cpu") / vae.config.scaling_factor  # the means
    out = []
    with torch.inference_mode():
        for z in latents.split(64):
            y = vae.decode(z).sample.clamp(-1, 1)
            out.append(((y + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    err = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    mse = err.mean() if mask is None else err[mask].mean()
    return 10 * math.log10(255**2 / mse)


def main() -> None:
    from genimg.data import load_dataset

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--data", default="catalog:512:5002:checker-eval")
    ap.add_argument("--strip", type=Path)
    args = ap.parse_args()
    data = load_dataset(args.data, ["text"], 128)
    mask = np.zeros(data.images.shape, bool)
    for i, row in enumerate(data.rows):
        for obj in row["objects"]:
            if obj["name"] in SMALL:
                for x0, y0, x1, y1 in obj["boxes"]:
                    mask[i, y0:y1, x0:x1] = True
    strips = [np.concatenate(list(data.images[:8]), 1)]
    for folder in args.models:
        rec = reconstruct(folder, data.images)
        whole, small = psnr(rec, data.images), psnr(rec, data.images, mask)
        print(f"{folder}: PSNR {whole:.2f} dB on {len(rec)} images of {args.data}; "
              f"{small:.2f} dB inside small objects' boxes")  # fmt: skip
        strips.append(np.concatenate(list(rec[:8]), 1))
    if args.strip:
        from PIL import Image

        Image.fromarray(np.concatenate(strips, 0)).save(args.strip)


if __name__ == "__main__":
    main()
