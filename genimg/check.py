"""`genimg check`: which requested objects are really in each image.

Reads the requested objects from a prompt (English or Japanese) or an explicit list, loads
the checker once, scores every readable image in batches and prints one result per image
(a table, or a JSON list with --json). A bad file is reported and the rest still scored.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from genimg.errors import UsageError
from genimg.parse import ParseResult, parse_objects, parse_prompt
from genimg.taxonomy import OBJECTS

__all__ = ["MAX_PIXELS", "configure", "load_image", "requested_objects", "run"]

# Refused before decoding: 4096x4096 is far beyond any catalog picture, and a 10,000 x
# 10,000 PNG would take 300 MB once decoded.
MAX_PIXELS = 4096 * 4096


def load_image(path: str | Path):
    """Decoded RGB PIL image, or ValueError with a one-line reason."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise ValueError("is a folder, not an image")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except FileNotFoundError:
            raise ValueError("no such file") from None
        except Image.DecompressionBombError:
            raise ValueError(f"is too large (at most {MAX_PIXELS:,} pixels)") from None
        except UnidentifiedImageError:
            raise ValueError("not an image PIL can read (PNG, JPEG, WebP, ...)") from None
        except OSError as err:
            raise ValueError(f"cannot open: {err}") from None
        w, h = im.size
        if w * h > MAX_PIXELS:
            im.close()
            raise ValueError(f"{w}x{h} is too large (at most {MAX_PIXELS:,} pixels)")
        try:
            im.load()
        except (OSError, SyntaxError, ValueError) as err:
            raise ValueError(f"truncated or corrupt image ({err})") from None
    return im.convert("RGB")


def requested_objects(prompt: str | None, objects: str | None) -> ParseResult:
    """Parse --prompt or --objects; raise UsageError when nothing can be scored."""
    if objects is not None:
        if not objects.replace(";", "").strip():
            raise UsageError("--objects", "empty list; give e.g. 'wooden shelf; 2 baskets'")
        result, arg, given = parse_objects(objects), "--objects", objects
    else:
        result, arg, given = parse_prompt(prompt or ""), "--prompt", prompt or ""
    if not result.objects:
        raise UsageError(
            arg, f"no catalog object recognised in {given!r}; known objects: {', '.join(OBJECTS)}"
        )
    return result


def configure(parser) -> None:
    parser.epilog = (
        "examples:\n"
        "  genimg check out/*.png --prompt 'a bathroom with a wooden shelf and two baskets'\n"
        "  genimg check a.png b.png --objects 'wooden shelf; 2 wicker baskets' --json"
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files to score")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompt", help="a prompt (English or Japanese) to read objects from")
    what.add_argument("--objects", help="explicit list, ';'-separated: 'wooden shelf; 2 baskets'")
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    parser.add_argument(
        "--checker",
        default=None,
        help="checker folder or hub id (default: assets/models/genimg-checker)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")


def _fmt(ok) -> str:
    return "-" if ok is None else ("ok" if ok else "WRONG")


def _table(results: list[dict]) -> str:
    lines = []
    for r in results:
        if "error" in r:
            lines.append(f"{r['image']}: error: {r['error']}")
            continue
        lines.append(
            f"{r['image']}: all present: {'yes' if r['all_present'] else 'no'}, "
            f"all correct: {'yes' if r['all_correct'] else 'no'}"
        )
        width = max(len(o["phrase"]) for o in r["objects"]) + 2
        lines.append(
            f"  {'phrase':<{width}}{'object':<14}{'present':<9}{'score':<7}"
            f"{'material':<10}{'colour':<8}count"
        )
        for o in r["objects"]:
            # An absent object's attributes are not ok, but "WRONG" would mislead a reader.
            ok = {
                k: o[k] if o["present"] else None for k in ("material_ok", "color_ok", "count_ok")
            }
            lines.append(
                f"  {o['phrase']:<{width}}{o['object']:<14}"
                f"{'yes' if o['present'] else 'no':<9}{o['score']:<7.3f}"
                f"{_fmt(ok['material_ok']):<10}{_fmt(ok['color_ok']):<8}{_fmt(ok['count_ok'])}"
            )
    return "\n".join(lines)


def run(args) -> int:
    from genimg import checker as ck

    # 1. What to look for
    requested = requested_objects(args.prompt, args.objects)
    for s in requested.suggestions:
        print(f"genimg check: note: read {s['text']!r} as {s['suggestion']!r}", file=sys.stderr)
    if requested.unknown:
        print(
            "genimg check: note: not in the checker's vocabulary, not scored: "
            f"{', '.join(requested.unknown)}",
            file=sys.stderr,
        )
    # 2. Images, before the checker loads: a bad file is reported, the rest are scored
    images, names, failed = [], [], {}
    for path in args.images:
        try:
            images.append(load_image(path))
            names.append(path)
        except ValueError as err:
            failed[path] = str(err)
    if not images:
        first = next(iter(failed.items()))
        raise UsageError("IMAGE", f"no readable image ({first[0]}: {first[1]})")
    for path, reason in failed.items():
        print(f"genimg check: error: {path}: {reason}", file=sys.stderr)
    # 3. The checker, loaded once
    checker = ck.load_checker(args.checker or ck.DEFAULT_CHECKER, device=args.device)
    # 4. Score and print, in the order given
    scored = dict(zip(names, ck.check(checker, images, requested, names=names), strict=True))
    results = [scored.get(p) or {"image": p, "error": failed[p]} for p in args.images]
    print(json.dumps(results, ensure_ascii=False, indent=2) if args.json else _table(results))
    return 1 if failed else 0
