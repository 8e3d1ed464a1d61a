"""The files of a `genimg compare` report: report.json, results.jsonl, side-by-side grids,
a bar chart of presence rates with their intervals, report.md and a self-contained
report.html (pictures inlined as base64, so the one file can be mailed or attached)."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

__all__ = ["ATTRIBUTES", "MODELS", "attribute_rows", "fmt_rate", "write_report"]

MODELS = ("open", "catalog")
# The checker's attribute verdicts (<kind>_ok) and their rows in the report's table
ATTRIBUTES = {"material": "material right", "color": "colour right", "count": "count right"}
_GRID_COLUMNS = 8  # seeds per grid row pair: 8 x 128 px stays readable on a laptop screen
_GREEN, _RED = (26, 127, 55), (207, 34, 46)  # present / absent marks and their phrases
_MARK = 9  # side of a mark's square, pixels: fits the 14-pixel line of an 11-pixel font
_FONT_FILES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",  # Japanese prompts too
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
)


def _warn_if_no_cjk_font(text: str) -> None:
    """Japanese (or Chinese) text with no CJK font installed draws as boxes: say so."""
    if Path(_FONT_FILES[0]).is_file() or not any(
        "\u3000" <= ch <= "\u9fff" or "\uff00" <= ch <= "\uffef" for ch in text
    ):
        return
    import warnings

    warnings.warn(
        f"no CJK font at {_FONT_FILES[0]} (Debian: apt-get install fonts-noto-cjk): "
        "Japanese text in the grids draws as boxes",
        stacklevel=3,
    )


def _font(size: int):
    from PIL import ImageFont

    for path in _FONT_FILES:
        try:
            return ImageFont.truetype(path, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


def _grid(out: Path, results: list[dict], prompt_index: int):
    """Open row above catalog row, 8 seeds a row pair; a green check / red cross per object."""
    from PIL import Image, ImageDraw

    rows = {
        m: [r for r in results if r["model"] == m and r["prompt_index"] == prompt_index]
        for m in MODELS
    }
    first = Image.open(out / rows["open"][0]["file"])
    w, h = first.size
    n_obj = len(rows["open"][0]["objects"])
    font, line = _font(11), 14
    cols = min(_GRID_COLUMNS, len(rows["open"]))
    label_w, cell_h, width = 64, h + 4 + line * n_obj, 64 + cols * (w + 4)
    _warn_if_no_cjk_font(rows["open"][0]["prompt"])
    title = _wrap(rows["open"][0]["prompt"], _font(13), width - 8)
    title_h = 8 + 17 * len(title)
    pairs = math.ceil(len(rows["open"]) / cols)
    grid = Image.new("RGB", (width, title_h + pairs * 2 * cell_h), "white")
    draw = ImageDraw.Draw(grid)
    for k, text in enumerate(title):
        draw.text((4, 4 + 17 * k), text, fill="black", font=_font(13))
    for i in range(len(rows["open"])):
        pair, col = divmod(i, cols)
        for k, model in enumerate(MODELS):
            r = rows[model][i]
            x, y = label_w + col * (w + 4), title_h + (2 * pair + k) * cell_h
            if col == 0:
                draw.text((4, y + h // 2 - 8), model, fill="black", font=_font(13))
            grid.paste(Image.open(out / r["file"]).convert("RGB"), (x, y))
            for j, o in enumerate(r["objects"]):
                colour = _GREEN if o["present"] else _RED
                top = y + h + 2 + j * line
                _mark(draw, x + 1, top + 2, _MARK, o["present"])
                text = o["phrase"].removeprefix("a ").removeprefix("an ")
                while draw.textlength(text, font=font) > w - _MARK - 4 and len(text) > 3:
                    text = text[:-1]
                draw.text((x + _MARK + 4, top), text, fill=colour, font=font)
    return grid


def _mark(draw, x: int, y: int, size: int, present: bool) -> None:
    """A green check or a red cross in the size x size square at (x, y), drawn as strokes:
    the CJK font the grids need has no ✗ glyph and drew a missing-glyph box instead."""
    s = size - 1
    if present:
        draw.line([(x, y + s * 0.55), (x + s * 0.4, y + s), (x + s, y)], fill=_GREEN, width=2)
    else:
        draw.line([(x, y), (x + s, y + s)], fill=_RED, width=2)
        draw.line([(x, y + s), (x + s, y)], fill=_RED, width=2)


def _wrap(text: str, font, width: int, max_lines: int = 4) -> list[str]:
    """Greedy line breaks by measured width: after the last word that fits where the line
    has a space, else per character (Japanese has no spaces to break at)."""
    lines, current = [], ""
    for ch in text:
        if font.getlength(current + ch) > width and current:
            head, space, tail = current.rpartition(" ")
            if space and head:
                lines.append(head)
                current = tail + ch
            else:
                lines.append(current)
                current = ch.lstrip()
        else:
            current += ch
    lines.append(current)
    return lines[:max_lines]


def _chart(report: dict, path: Path) -> None:
    """Grouped bars of presence rates with their Wilson intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(o["phrase"], o) for o in report["objects"]]
    rows += [("all present", report["all_present"]), ("all correct", report["all_correct"])]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(rows) + 1), 3.6), dpi=100)
    for k, (model, colour) in enumerate((("open", "#8c959f"), ("catalog", "#0969da"))):
        xs = [i + (k - 0.5) * 0.38 for i in range(len(rows))]
        rates = [r[model]["rate"] or 0.0 for _, r in rows]
        err = [
            [rate - r[model]["ci95"][0] for rate, (_, r) in zip(rates, rows, strict=True)],
            [r[model]["ci95"][1] - rate for rate, (_, r) in zip(rates, rows, strict=True)],
        ]
        ax.bar(xs, rates, 0.38, yerr=err, capsize=3, color=colour, label=model)
    ax.set_xticks(range(len(rows)), [_ascii(p) for p, _ in rows], rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("rate (95% Wilson CI)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _ascii(text: str) -> str:
    # matplotlib's default font has no CJK glyphs; a Japanese phrase gets its object's name.
    return text if text.isascii() else text.encode("ascii", "replace").decode()


def fmt_rate(stats: dict) -> str:
    lo, hi = stats["ci95"]
    rate = "n/a" if stats["rate"] is None else f"{stats['rate']:.0%}"
    return f"{rate} [{lo:.0%}, {hi:.0%}]"


def attribute_rows(attributes: dict) -> list[tuple[str, dict]]:
    """report.json's `attributes` as table rows, the kinds asked for only:
    ("material right (456 asked)", paired stats)."""
    return [
        (f"{ATTRIBUTES[kind]} ({s['open']['n']} asked)", s)
        for kind, s in attributes.items()
        if s["open"]["n"]
    ]


def _table(report: dict) -> list[list[str]]:
    rows = [["requested", "open", "catalog", "open only / catalog only", "McNemar p"]]
    entries = [(o["phrase"], o) for o in report["objects"]]
    entries += [("**all present**", report["all_present"])]
    entries += [("**all correct**", report["all_correct"])]
    entries += attribute_rows(report["attributes"])
    for name, s in entries:
        b, c = s["discordant"]
        rows.append(
            [
                name,
                fmt_rate(s["open"]),
                fmt_rate(s["catalog"]),
                f"{b} / {c}",
                f"{s['mcnemar_p']:.2g}",
            ]
        )
    return rows


def write_report(out: Path, report: dict, results: list[dict]) -> None:
    from genimg.render import _write_atomic

    # 1. Data
    text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    _write_atomic(out / "report.json", text.encode())
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results)
    _write_atomic(out / "results.jsonl", lines.encode())
    # 2. Pictures
    grids = []
    for p in range(len(report["prompts"])):
        name = f"grid-{p:03d}.png"
        _grid(out, results, p).save(out / name)
        grids.append(name)
    _chart(report, out / "chart.png")
    # 3. Markdown and self-contained HTML
    table = _table(report)
    o, c = report["open"], report["catalog"]
    adapter = c["adapter"]["name"] if c["adapter"] else c["model"]
    head = (
        f"Open model `{o['model']}` ({o['model_hash']}) vs catalog model `{adapter}`; "
        f"{len(report['prompts'])} prompt(s) x {len(report['seeds'])} seeds = "
        f"{report['n_images']} paired images. Rates with 95% Wilson intervals; exact McNemar "
        "test on the paired images. A requested material, colour or count is right only where "
        "its object is found; those rows pair each one asked for."
    )
    md = ["# Open vs catalog", "", head, ""]
    md += ["| " + " | ".join(r) + " |" for r in table[:1]]
    md += ["|" + "---|" * len(table[0])]
    md += ["| " + " | ".join(r) + " |" for r in table[1:]]
    md += ["", "![presence rates](chart.png)", ""]
    for p, (prompt, grid) in enumerate(zip(report["prompts"], grids, strict=True)):
        md += [
            f"## Prompt {p + 1}",
            "",
            f"> {prompt}",
            "",
            f"![open above, catalog below]({grid})",
            "",
        ]
    _write_atomic(out / "report.md", "\n".join(md).encode())
    _write_atomic(out / "report.html", _html(out, report, table, head, grids).encode())


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _html(out: Path, report: dict, table, head: str, grids: list[str]) -> str:
    esc = html.escape
    cells = ["<tr>" + "".join(f"<th>{esc(h)}</th>" for h in table[0]) + "</tr>"]
    cells += [
        "<tr>" + "".join(f"<td>{esc(v.strip('*'))}</td>" for v in row) + "</tr>"
        for row in table[1:]
    ]
    body = [
        "<h1>Open vs catalog</h1>",
        f"<p>{esc(head)}</p>",
        f"<table>{''.join(cells)}</table>",
        f'<img alt="presence rates" src="{_data_uri(out / "chart.png")}">',
    ]
    for p, (prompt, grid) in enumerate(zip(report["prompts"], grids, strict=True)):
        body += [
            f"<h2>Prompt {p + 1}</h2>",
            f"<blockquote>{esc(prompt)}</blockquote>",
            f'<img alt="open above, catalog below" src="{_data_uri(out / grid)}">',
        ]
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
        "img{max-width:100%}"
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>genimg compare</title><style>{style}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )
