"""How the checker's presence decisions agree with labels given by eye on generated images.

    python scripts/eye_agreement.py [--checker DIR] [--labels FILE] [--json]

The labels (`assets/models/genimg-checker/eye/labels.jsonl`, one line per image) say for
each requested object whether a person sees it in the image: true, false, or null where
the 128 px picture does not let them tell. Only true/false labels count.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LABELS = ROOT / "assets" / "models" / "genimg-checker" / "eye" / "labels.jsonl"


def agreement(checker, labels: Path) -> dict:
    from genimg.check import load_image
    from genimg.checker import check
    from genimg.parse import parse_prompt

    rows = [json.loads(line) for line in labels.read_text().splitlines() if line.strip()]
    pairs = []  # (file, object, eye, checker, score)
    for row in rows:
        image = load_image(labels.parent / row["file"])
        [result] = check(checker, [image], parse_prompt(row["prompt"]))
        for o in result["objects"]:
            eye = row["present"][o["object"]]
            pairs.append((row["file"], o["object"], eye, o["present"], o["score"]))
    clear = [p for p in pairs if p[2] is not None]
    return {
        "images": len(rows),
        "objects": len(pairs),
        "unclear_by_eye": len(pairs) - len(clear),
        "agree": sum(p[2] == p[3] for p in clear),
        "clear": len(clear),
        "false_present": [p[:2] + (p[4],) for p in clear if p[3] and not p[2]],
        "false_absent": [p[:2] + (p[4],) for p in clear if p[2] and not p[3]],
        "eye_present": sum(bool(p[2]) for p in clear),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checker", default=None, help="checker folder (default: shipped)")
    parser.add_argument("--labels", type=Path, default=LABELS, help="labels.jsonl")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    from genimg.checker import DEFAULT_CHECKER, load_checker

    result = agreement(load_checker(args.checker or DEFAULT_CHECKER), args.labels)
    if args.json:
        print(json.dumps(result))
        return 0
    r = result
    print(
        f"{r['images']} images, {r['objects']} requested objects, {r['unclear_by_eye']} "
        f"unclear by eye; of the {r['clear']} clear ones the checker agrees on {r['agree']} "
        f"({r['agree'] / r['clear']:.0%})"
    )
    for kind in ("false_present", "false_absent"):
        for file, obj, score in r[kind]:
            print(f"  {kind.replace('_', ' ')}: {obj} in {file} (score {score})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
