"""Checker throughput: images/s of `check` on 128x128 images, preprocessing included.

    .venv/bin/python benchmarks/checker_speed.py [--checker DIR] [--threads 2] [--n 1024]

Without a trained checker it times a randomly initialised one built from the recipe (the
same architecture, so the same speed). Target: >= 300 images/s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genimg import checker as ck
from genimg.parse import parse_prompt

PROMPT = (
    "This bathroom has a wooden shelf with two baskets that can store toiletries and "
    "accessories. The sink is made of white ceramic, and the faucet is an elegant "
    "chrome-plated design that harmonizes well with black."
)


def _random_checker(recipe_path: str) -> ck.Checker:
    import json

    from genimg.checker_train import CheckerRecipe, build_model, settings_for
    from genimg.models import load_tokenizer

    r = CheckerRecipe.from_toml(recipe_path)
    tok = load_tokenizer(max_length=r.text_max_length)
    folder = Path(tempfile.mkdtemp()) / "checker"
    build_model(r, tok).save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / ck.SETTINGS_FILE).write_text(json.dumps(settings_for(r)))
    return ck.load_checker(folder)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checker", default=str(ck.DEFAULT_CHECKER))
    p.add_argument("--recipe", default="assets/recipes/checker.toml")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--size", type=int, default=128)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if Path(args.checker).is_dir():
        checker, what = ck.load_checker(args.checker), args.checker
    else:
        checker, what = _random_checker(args.recipe), "random init from " + args.recipe
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8))
        for _ in range(args.n)
    ]
    requested = parse_prompt(PROMPT)
    ck.check(checker, images[:64], requested)  # warm-up, text embeddings cached
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        ck.check(checker, images, requested)
        best = max(best, args.n / (time.perf_counter() - t0))
    a = torch.randn(2048, 2048)
    t0 = time.perf_counter()
    a @ a
    gflops = 2 * 2048**3 / (time.perf_counter() - t0) / 1e9
    print(f"checker: {what}")
    print(f"fp32 matmul now: {gflops:.0f} GFLOP/s (a quiet 2-core machine: ~300; under load less)")
    print(
        f"{best:.0f} images/s ({args.size}x{args.size}, {len(requested.objects)} objects, "
        f"{args.threads} threads, batch 256)"
    )


if __name__ == "__main__":
    main()
