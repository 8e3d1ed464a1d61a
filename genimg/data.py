"""Training data: an imagefolder on disk, or a catalog split rendered in memory.

`--data DIR` reads any Hugging Face imagefolder (`metadata.jsonl` with `file_name` and a
caption column), so a real catalog export trains with the same command as ours. Rows with
no caption or an unreadable image are skipped and counted, not fatal; RGBA, grayscale and
odd sizes are converted and resized, and the rows' object boxes move with the crop.
`--data catalog:N:SEED[:SPLIT]` renders N records of the procedural catalog in memory
instead (no PNG round trip: the fast path on a GPU box).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from genimg.errors import UsageError

__all__ = ["Dataset", "load_dataset"]


@dataclass
class Dataset:
    images: np.ndarray  # (N, H, W, 3) uint8
    rows: list[dict]  # the metadata rows, in image order
    source: str  # what was loaded, for logs and model cards
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows skipped

    def captions(self, column: str) -> list[str]:
        return [str(r.get(column) or "") for r in self.rows]


def _square_crop(w: int, h: int) -> tuple[int, int, int]:
    """Left, top and side of the centred square crop of a w x h image."""
    side = min(w, h)
    return (w - side) // 2, (h - side) // 2, side


def _fit_boxes(row: dict, w: int, h: int, size: int) -> dict:
    """The row with its objects' pixel boxes moved as the image was cropped and resized."""
    if (w, h) == (size, size) or not isinstance(row.get("objects"), list):
        return row
    left, top, side = _square_crop(w, h)
    k = size / side

    def fit(box):
        x0, y0, x1, y1 = ((v - o) * k for v, o in zip(box, (left, top, left, top), strict=True))
        return [round(min(max(v, 0.0), size)) for v in (x0, y0, x1, y1)]

    objects = []
    for obj in row["objects"]:
        try:
            boxes = [fit(b) for b in obj.get("boxes") or []]
        except (TypeError, ValueError, AttributeError):
            boxes = []  # malformed boxes: the object keeps its name, loses its weight map
        objects.append({**obj, "boxes": boxes} if isinstance(obj, dict) else obj)
    return {**row, "objects": objects}


def _to_rgb(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The image as (size, size, 3) uint8, and its size on disk."""
    with Image.open(path) as im:
        im.load()
        if im.mode != "RGB":
            im = (
                im.convert("RGBA").convert("RGB")
                if "A" in im.mode or im.mode == "P"
                else im.convert("RGB")
            )
        w, h = im.size
        if (w, h) != (size, size):
            # Centre-crop to a square, then resize: a product photo keeps its subject.
            left, top, side = _square_crop(w, h)
            im = im.crop((left, top, left + side, top + side))
            im = im.resize((size, size), Image.Resampling.BICUBIC)
        return np.asarray(im, dtype=np.uint8), (w, h)


def _read_metadata(folder: Path) -> list[dict]:
    meta = folder / "metadata.jsonl"
    if not meta.is_file():
        raise UsageError("--data", f"{folder} has no metadata.jsonl (an imagefolder needs one)")
    rows = []
    with open(meta, encoding="utf-8", errors="replace") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise UsageError("--data", f"{meta}: line {line_no} is not JSON") from None
            if not isinstance(row, dict):
                raise UsageError("--data", f"{meta}: line {line_no} is not a JSON object")
            rows.append(row)
    return rows


def _load_folder(folder: Path, caption_columns: list[str], size: int) -> Dataset:
    images, kept, skipped = [], [], {"no caption": 0, "unreadable image": 0}
    for row in _read_metadata(folder):
        if not any(str(row.get(c) or "").strip() for c in caption_columns):
            skipped["no caption"] += 1
            continue
        path = folder / str(row.get("file_name", ""))
        try:
            if not path.resolve().is_relative_to(folder.resolve()):
                raise ValueError("outside the data folder")
            image, (w, h) = _to_rgb(path, size)
        except Exception:
            skipped["unreadable image"] += 1
            continue
        images.append(image)
        kept.append(_fit_boxes(row, w, h, size))
    if not kept:
        raise UsageError("--data", f"{folder}: no usable rows (skipped: {skipped})")
    return Dataset(np.stack(images), kept, str(folder), skipped)


def load_dataset(spec: str, caption_columns: list[str], size: int = 128) -> Dataset:
    """Load `DIR` or `catalog:N:SEED[:SPLIT]` as uint8 images plus rows."""
    if spec.startswith("catalog:"):
        parts = spec.split(":")
        if len(parts) not in (3, 4) or not parts[1].isdigit() or not parts[2].isdigit():
            raise UsageError("--data", f"expected catalog:N:SEED[:SPLIT], got {spec!r}")
        from genimg.catalog import render_arrays

        split = parts[3] if len(parts) == 4 else "train"
        images, rows = render_arrays(int(parts[1]), int(parts[2]), size=size, split=split)
        return Dataset(images, rows, spec)
    folder = Path(spec)
    if not folder.is_dir():
        raise UsageError("--data", f"{spec} is not a folder (or catalog:N:SEED[:SPLIT])")
    return _load_folder(folder, caption_columns, size)
