"""Training data from the model's own renders that the checker passes (rejection sampling).

The adapter renders captions of its own training split; the images in which the checker
finds every requested object become an imagefolder to train the adapter on further
(RAFT, Dong et al. 2023: reward-ranked fine-tuning). Three steps:

    python scripts/self_train_data.py prompts --n 600 > runs/self-prompts.txt
    genimg batch --prompts runs/self-prompts.txt --lora catalog --num-images 4 --check \
        --out runs/self-gen
    python scripts/self_train_data.py folder runs/self-gen runs/self-data

`prompts` takes the split's records (`catalog:8000:4000:lora` by default, the shipped
adapter's) as `scripts/catalog_prompts.py` does, prompt i being the listing caption,
Japanese listing caption, prose or Japanese prose of its record for i mod 4. `folder`
copies each image whose every requested object passed into OUT with a `metadata.jsonl`
of `file_name` and `text` (its prompt) and prints how many passed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

COLUMNS = ("text", "text_ja", "prose", "prose_ja")


def passing_folder(batch: Path, out: Path) -> tuple[int, int]:
    """Copy the batch's images whose every requested object passed; (passed, checked)."""
    from genimg import manifest

    rows = [r for r in manifest.read(batch) if r.get("check") is not None]
    if not rows:
        raise SystemExit(f"{batch}: no checked images in manifest.jsonl (run batch with --check)")
    out.mkdir(parents=True, exist_ok=False)
    kept = [r for r in rows if r["check"]["all_present"]]
    with open(out / "metadata.jsonl", "w", encoding="utf-8") as meta:
        for i, row in enumerate(kept):
            name = f"{i:06d}.png"
            shutil.copyfile(batch / row["file"], out / name)
            meta.write(json.dumps({"file_name": name, "text": row["prompt"]}, ensure_ascii=False))
            meta.write("\n")
    return len(kept), len(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prompts", help="captions of a catalog split, one a line, to stdout")
    p.add_argument("--n", type=int, default=600, help="how many (default 600)")
    p.add_argument("--seed", type=int, default=4000, help="the split's seed (default 4000)")
    p.add_argument("--split", default="lora", help="the split's name (default lora)")
    f = sub.add_parser("folder", help="an imagefolder of a checked batch's passing images")
    f.add_argument("batch", type=Path, help="a `genimg batch --check` output folder")
    f.add_argument("out", type=Path, help="new imagefolder")
    args = ap.parse_args(argv)
    if args.cmd == "prompts":
        if args.n < 1 or args.seed < 0:
            ap.error("--n must be >= 1 and --seed >= 0")
        from catalog_prompts import catalog_prompts  # beside this file

        prompts = catalog_prompts(args.n, args.seed, args.split, columns=COLUMNS)
        sys.stdout.write("".join(t + "\n" for t in prompts))
        return 0
    if args.out.exists():
        ap.error(f"{args.out} exists; give a new folder")
    passed, checked = passing_folder(args.batch, args.out)
    print(f"{passed} of {checked} images passed ({passed / checked:.0%}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
