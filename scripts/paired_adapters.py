"""Two adapters on the same prompts and seeds, paired: which draws the requested objects more?

Reads the catalog rows (with `--rows open` the open model's) of two `genimg compare` folders
made with the same prompts file and seeds (each `results.jsonl`), pairs the images by
(prompt, seed) and prints, per adapter, the all-present rate and the share of requested
materials, colours and counts right, with an exact McNemar test on all-present. Example:

    genimg compare --prompts assets/compare/val/prompts.txt --seeds 4 --out runs/a
    genimg compare --prompts assets/compare/val/prompts.txt --seeds 4 \
        --catalog-lora runs/lora-x --out runs/b
    python scripts/paired_adapters.py runs/a runs/b
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from genimg.compare import paired_stats


def _model_rows(folder: Path, model: str) -> dict[tuple[int, int], dict]:
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    return {(r["prompt_index"], r["seed"]): r for r in rows if r["model"] == model}


def _share(rows: list[dict], key: str) -> str:
    verdicts = [o[key] for r in rows for o in r["objects"] if o[key] is not None]
    return f"{sum(verdicts) / max(len(verdicts), 1):.0%} of {len(verdicts)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="compare folder of adapter A")
    parser.add_argument("b", type=Path, help="compare folder of adapter B (same prompts, seeds)")
    parser.add_argument(
        "--rows",
        choices=("catalog", "open"),
        default="catalog",
        help="which model's rows to pair (open: two base models, e.g. compare --open X)",
    )
    args = parser.parse_args()
    a, b = _model_rows(args.a, args.rows), _model_rows(args.b, args.rows)
    if a.keys() != b.keys():
        raise SystemExit("error: the two folders hold different prompts or seeds")
    keys = sorted(a)
    for name, folder, rows in (("A", args.a, a), ("B", args.b, b)):
        got = [rows[k] for k in keys]
        present = sum(r["all_present"] for r in got)
        print(f"{name} ({folder}): all present {present}/{len(got)} "
              f"({present / len(got):.0%}); materials {_share(got, 'material_ok')}, colours "
              f"{_share(got, 'color_ok')}, counts {_share(got, 'count_ok')}")  # fmt: skip
    stats = paired_stats([a[k]["all_present"] for k in keys], [b[k]["all_present"] for k in keys])
    a_only, b_only = stats["discordant"]
    print(f"all present only A / only B: {a_only} / {b_only}, "
          f"exact McNemar p = {stats['mcnemar_p']:.2g}")  # fmt: skip


if __name__ == "__main__":
    main()
