"""The procedural product catalog: deterministic room scenes with a product record each.

`genimg catalog --out DIR --n N --seed S` writes a Hugging Face "imagefolder": PNG images
`000000.png`, ... and `metadata.jsonl`, one JSON row per image, in index order:

    file_name  "000123.png", relative to DIR
    text       catalog caption, English: every object with colour, material, count
    text_ja    the catalog caption in Japanese
    prose      product-page prose, English: every object named, attributes after the verb
               ("The sink is made of white ceramic"), what things are for, the colour a
               piece goes with; an attribute is sometimes left out, never wrong
    prose_ja   the same in Japanese ("シンクは白い陶器製で、")
    free       free-form shop copy, English: inventories ("Mirror: brass."), verbless
               openers, things placed with verbs ("rests on the shelf"), imperatives
               ("Complete the look with ..."); every object named, no attribute wrong
    free_ja    the same in Japanese ("鏡：真鍮", "シンクの上に ... を載せて")
    web_text   loose web alt text: the room and at most two objects, sometimes vague
    web_lang   "en" or "ja" (about 30% of web captions are Japanese)
    title      product title ("Bathroom set: brown wooden shelf with two wicker baskets, ...")
    scene      "bathroom" | "kitchen" | "living room" | "bedroom"
    objects    [{"name", "material", "color", "count", "bbox", "boxes", "relation"}, ...]
               name/material/color are taxonomy names; color is null where the material
               fixes the look (chrome, brass, white ceramic); count is 1-3; boxes holds one
               [x0, y0, x1, y1] per instance and bbox is their union, in image pixels, x1/y1
               exclusive, clipped to the image; relation is null or [relation, object]
               (["on", "shelf"], ["above", "sink"]). Listed back to front.
    seed, split, index   what made the row: the record is a pure function of these and size

Record `index` of a split draws from numpy SeedSequence((crc32(split), seed, index)), so
the same arguments give byte-identical files, and splits with different seeds or names
never share a layout. `render_record` and `render_arrays` give the same images in memory.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from genimg import captions
from genimg.draw import Canvas, draw_room
from genimg.errors import UsageError, check_int, check_size
from genimg.furniture import draw_item
from genimg.scene import Layout, make_layout

__all__ = ["configure", "render_arrays", "render_record", "run"]

# Bathrooms a little more often: DESIGN.md's headline prompt is a bathroom.
_SCENE_P = {"bathroom": 0.34, "kitchen": 0.22, "living room": 0.22, "bedroom": 0.22}
_CHUNK = 64  # records per worker task: large enough to hide IPC, small enough to balance


def _rngs(index: int, seed: int, split: str) -> list[np.random.Generator]:
    """Independent streams for layout, drawing, captions, prose and free-form captions of
    one record (each caption stream added last: the earlier ones stayed as they were)."""
    ss = np.random.SeedSequence((zlib.crc32(split.encode()), seed, index))
    return [np.random.default_rng(s) for s in ss.spawn(5)]


def _row(
    layout: Layout,
    size: int,
    rng: np.random.Generator,
    prose_rng: np.random.Generator,
    free_rng: np.random.Generator,
) -> dict:
    objects = []
    for it in layout.items:
        boxes = [_px_box(b, size) for b in it.boxes]
        union = [
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        ]
        objects.append(
            {
                "name": it.name,
                "material": it.material,
                "color": it.color,
                "count": it.count,
                "bbox": union,
                "boxes": boxes,
                "relation": list(it.relation) if it.relation else None,
            }
        )
    web, lang = captions.web_text(layout, rng)
    return {
        "text": captions.catalog_text(layout, rng),
        "text_ja": captions.catalog_text_ja(layout, rng),
        "prose": captions.catalog_prose(layout, prose_rng),
        "prose_ja": captions.catalog_prose_ja(layout, prose_rng),
        "free": captions.catalog_free(layout, free_rng),
        "free_ja": captions.catalog_free_ja(layout, free_rng),
        "web_text": web,
        "web_lang": lang,
        "title": captions.title(layout),
        "scene": layout.scene,
        "objects": objects,
    }


def _px_box(box: tuple[float, float, float, float], size: int) -> list[int]:
    x0, y0, x1, y1 = (min(max(v, 0.0), 1.0) * size for v in box)
    x0, y0 = min(int(x0), size - 1), min(int(y0), size - 1)
    return [x0, y0, max(int(np.ceil(x1)), x0 + 1), max(int(np.ceil(y1)), y0 + 1)]


def render_record(
    index: int, seed: int, size: int = 128, split: str = "train"
) -> tuple[Image.Image, dict]:
    """Render record `index` (>= 0) of split `split` made with `seed` (>= 0): the RGB image
    and its metadata row (the metadata.jsonl row without file_name)."""
    layout_rng, draw_rng, text_rng, prose_rng, free_rng = _rngs(index, seed, split)
    scenes = list(_SCENE_P)
    scene = scenes[int(layout_rng.choice(len(scenes), p=list(_SCENE_P.values())))]
    layout = make_layout(scene, layout_rng)
    cv = Canvas(size)
    draw_room(cv, layout.room, light_left=bool(draw_rng.random() < 0.5))
    for item in layout.items:
        draw_item(cv, item, layout.flipped, draw_rng)
    row = _row(layout, size, text_rng, prose_rng, free_rng)
    row.update(seed=seed, split=split, index=index)
    return cv.to_image(), row


def _render_chunk(args: tuple[int, int, int, int, str]) -> tuple[np.ndarray, list[dict]]:
    start, stop, seed, size, split = args
    arrays, rows = [], []
    for i in range(start, stop):
        image, row = render_record(i, seed, size, split)
        arrays.append(np.asarray(image))
        rows.append(row)
    return np.stack(arrays), rows


def _write_chunk(args: tuple[int, int, int, int, str, str]) -> list[dict]:
    start, stop, seed, size, split, out = args
    rows = []
    for i in range(start, stop):
        image, row = render_record(i, seed, size, split)
        name = f"{i:06d}.png"
        image.save(Path(out) / name, compress_level=1)  # fixed settings: byte-identical; fast
        rows.append({"file_name": name, **row})
    return rows


def _pool_map(func, tasks: list, workers: int):
    """Map in order, in `workers` processes (spawned: safe under torch/CUDA parents)."""
    if workers <= 1 or len(tasks) <= 1:
        yield from map(func, tasks)
        return
    with mp.get_context("spawn").Pool(min(workers, len(tasks))) as pool:
        yield from pool.imap(func, tasks)


def render_arrays(
    n: int,
    seed: int,
    size: int = 128,
    split: str = "train",
    workers: int | None = None,
    start: int = 0,
) -> tuple[np.ndarray, list[dict]]:
    """Records start..start+n-1 in memory: uint8 images (n, size, size, 3) and their rows.

    Uses `workers` processes (default: all CPUs); callers that spawn processes need an
    `if __name__ == "__main__":` guard in their script, as with any multiprocessing.
    """
    workers = workers or os.cpu_count() or 1
    tasks = [
        (i, min(i + _CHUNK, start + n), seed, size, split) for i in range(start, start + n, _CHUNK)
    ]
    images, rows = [], []
    for arr, chunk_rows in _pool_map(_render_chunk, tasks, workers):
        images.append(arr)
        rows.extend(chunk_rows)
    return np.concatenate(images) if images else np.zeros((0, size, size, 3), np.uint8), rows


# ---- command line -----------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "example:\n  genimg catalog --out data/train --n 10000 --seed 0\n"
        "  genimg catalog --out data/eval --n 500 --seed 1 --split eval"
    )
    parser.add_argument("--out", required=True, help="output folder (imagefolder)")
    parser.add_argument("--n", required=True, help="number of images")
    parser.add_argument("--seed", required=True, help="seed of the split")
    parser.add_argument("--size", default="128", help="image side: multiple of 8, 64-1024")
    parser.add_argument("--split", default="train", help="split name, part of every seed")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    parser.add_argument(
        "--workers", default=str(os.cpu_count() or 1), help="processes (default: all CPUs)"
    )


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse before writing anything: a file, a non-empty folder, an unwritable place."""
    if out.exists() and not out.is_dir():
        raise UsageError("--out", f"{str(out)!r} is a file, expected a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UsageError("--out", f"{str(out)!r} is not empty; pass --overwrite to replace it")
    # Only trying tells (root passes os.access everywhere): make the folder and a probe
    # file, and take back whatever this made if it fails.
    made = [p for p in (out, *out.parents) if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".genimg-write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        for p in made:  # deepest first
            if p.is_dir():
                p.rmdir()
        raise UsageError("--out", f"{str(out)!r} is not writable ({err.strerror})") from None


def run(args: argparse.Namespace) -> int:
    # 1. Check inputs: all of them, before anything is written.
    n = check_int("--n", args.n, 1, 10_000_000)
    seed = check_int("--seed", args.seed, 0, 2**32 - 1)
    size = check_size("--size", args.size)
    workers = check_int("--workers", args.workers, 1, 256)
    if not args.split or not str(args.split).isprintable():
        raise UsageError("--split", f"expected a non-empty name, got {args.split!r}")
    out = Path(args.out)
    _check_out(out, args.overwrite)
    # 2. Clear what --overwrite replaces, then render in parallel, writing rows in order.
    if args.overwrite:
        for old in out.glob("*.png"):
            old.unlink()
    tasks = [(i, min(i + _CHUNK, n), seed, size, args.split, str(out)) for i in range(0, n, _CHUNK)]
    t0, done = time.perf_counter(), 0
    with open(out / "metadata.jsonl", "w", encoding="utf-8") as f:
        for rows in _pool_map(_write_chunk, tasks, workers):
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            done += len(rows)
            _progress(done, n, t0)
    print(
        f"wrote {n} images and metadata.jsonl to {out} "
        f"({n / (time.perf_counter() - t0):.0f} images/s)",
        file=sys.stderr,
    )
    return 0


def _progress(done: int, total: int, t0: float) -> None:
    if sys.stderr.isatty():
        rate = done / max(time.perf_counter() - t0, 1e-9)
        print(f"\rcatalog {done}/{total} ({rate:.0f}/s)", end="", file=sys.stderr)
        if done == total:
            print(file=sys.stderr)
