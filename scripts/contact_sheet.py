"""Contact sheet of catalog records: each image 2x (nearest, true pixels) with its captions.

usage: python scripts/contact_sheet.py [--out assets/catalog_contact_sheet.png] [--seed 0]
Japanese captions need a CJK font (Debian: apt-get install fonts-noto-cjk); without one the
sheet shows English only and says so.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from genimg.catalog import render_record

CELL, PAD, LINE, COLS = 256, 12, 15, 4


def _font(family: str, size: int) -> ImageFont.FreeTypeFont | None:
    """A font file via fontconfig, or None when fontconfig or the family is missing."""
    if not shutil.which("fc-match"):
        return None
    found = subprocess.run(
        ["fc-match", "-f", "%{file}|%{index}|%{family}", family], capture_output=True, text=True
    ).stdout
    path, index, families = (found.split("|") + ["", "", ""])[:3]
    if not path or family.split()[0] not in families:
        return None
    return ImageFont.truetype(path, size, index=int(index or 0))


def _lines(row: dict, ja: bool) -> list[tuple[str, str]]:
    """(text, colour) lines under one image: catalog EN, catalog JA, web caption, title."""
    out = [(t, "#111") for t in textwrap.wrap(row["text"], 40)]
    if ja:
        out += [(row["text_ja"][i : i + 20], "#1a3c8c") for i in range(0, len(row["text_ja"]), 20)]
    if ja or row["web_lang"] == "en":
        web = f"web ({row['web_lang']}): {row['web_text']}"
        out += [(t, "#777") for t in textwrap.wrap(web, 40 if row["web_lang"] == "en" else 22)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="assets/catalog_contact_sheet.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=16)
    args = parser.parse_args()
    cjk = _font("Noto Sans CJK JP", 12)
    latin = cjk or _font("DejaVu Sans", 12) or ImageFont.load_default()
    if cjk is None:
        print("no CJK font (apt-get install fonts-noto-cjk): English captions only")
    records = [render_record(i, args.seed) for i in range(args.n)]
    blocks = [_lines(row, cjk is not None) for _, row in records]
    text_h = max(len(b) for b in blocks) * LINE + PAD
    rows = (args.n + COLS - 1) // COLS
    sheet = Image.new(
        "RGB", (COLS * (CELL + PAD) + PAD, rows * (CELL + text_h + PAD) + PAD), "white"
    )
    draw = ImageDraw.Draw(sheet)
    for i, ((image, _), block) in enumerate(zip(records, blocks, strict=True)):
        x = PAD + (i % COLS) * (CELL + PAD)
        y = PAD + (i // COLS) * (CELL + text_h + PAD)
        sheet.paste(image.resize((CELL, CELL), Image.NEAREST), (x, y))
        for j, (text, colour) in enumerate(block):
            draw.text((x, y + CELL + 4 + j * LINE), text, fill=colour, font=latin)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({sheet.width}x{sheet.height})")


if __name__ == "__main__":
    main()
