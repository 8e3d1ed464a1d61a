"""Write a prompts file of catalog captions from a split no model trains on.

    python scripts/catalog_prompts.py --split lora-val --seed 7000 --n 32 > prompts.txt
    python scripts/catalog_prompts.py --n 32 --scene bathroom > bathroom.txt

Prompt i is the English caption of its record for even i and the Japanese one for odd i,
so the file alternates the two languages (`catalog_prompts(columns=...)` cycles through any
caption columns instead); records whose caption names no object the parser finds are
passed over (none are in practice), and the next record is taken; with `--scene`, so are
the records of other scenes.
"""

from __future__ import annotations

import argparse
import sys


def catalog_prompts(
    n: int, seed: int, split: str, scene: str = "", columns: tuple[str, ...] = ("text", "text_ja")
) -> list[str]:
    from genimg.catalog import render_record
    from genimg.parse import parse_prompt

    prompts, index = [], 0
    while len(prompts) < n:
        _, row = render_record(index, seed, split=split)
        text = row[columns[len(prompts) % len(columns)]]
        if (not scene or row["scene"] == scene) and parse_prompt(text).objects:
            prompts.append(text)
        index += 1
    return prompts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="lora-val", help="catalog split name (default lora-val)")
    ap.add_argument("--seed", type=int, default=7000, help="the split's seed (default 7000)")
    ap.add_argument("--n", type=int, default=32, help="how many prompts (default 32)")
    ap.add_argument("--scene", default="", help="only records of this scene (default: all)")
    args = ap.parse_args(argv)
    from genimg.taxonomy import SCENES

    if args.n < 1 or args.seed < 0:
        ap.error("--n must be >= 1 and --seed >= 0")
    if args.scene and args.scene not in SCENES:
        ap.error(f"--scene: unknown {args.scene!r}; choose from {', '.join(SCENES)}")
    prompts = catalog_prompts(args.n, args.seed, args.split, args.scene)
    sys.stdout.write("".join(p + "\n" for p in prompts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
