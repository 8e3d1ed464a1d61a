"""One drawing function per object type: simple shaded shapes with material textures.

`draw_item` dispatches to them; fixtures (bathroom and kitchen pieces, storage) live in
genimg.fixtures, furniture and decor here. Each function draws one instance into its frame
(canvas pixels) from fractions of that frame, so shapes scale with the layout: a product
photo seen from the front and a little above, tops lighter, openings darker, a soft floor
shadow under standing pieces. Parts that are not the object's material (bedding, leaves,
lamp shades, legs) are neutral, so the named material and colour stay the ones a viewer reads.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from genimg.draw import Canvas, Look, fill, look_for
from genimg.fixtures import FIXTURES
from genimg.parts import BEDDING, CREAM, DARK, SHADE_CLOTH, Frame, floor_shadow
from genimg.scene import Item

__all__ = ["draw_item"]


def draw_item(cv: Canvas, item: Item, flipped: bool, rng: np.random.Generator) -> None:
    """Draw every instance of `item`; its boxes are fractions of the side."""
    for box in item.boxes:
        x0, y0, x1, y1 = (v * cv.n for v in box)
        b = Frame((x0, y0, x1, y1), flipped and item.name in _ASYMMETRIC)
        _DRAWERS[item.name](cv, b, item, rng)


def _potted_plant(cv: Canvas, b: Frame, item: Item, rng) -> None:
    pot = look_for(item.material, item.color)
    dark, light = Look("leaf", (0.16, 0.42, 0.18)), Look("leaf", (0.3, 0.6, 0.26))
    floor_shadow(cv, b, 0.4)
    leaves: list[list] = [[], []]
    for i in range(9):  # leaves fan out from the pot's mouth
        a = math.pi * (0.1 + 0.8 * i / 8) + float(rng.uniform(-0.1, 0.1))
        tip = b.p(0.5 + 0.46 * math.cos(a), 0.55 - 0.55 * math.sin(a))
        mid = b.p(0.5 + 0.3 * math.cos(a + 0.25), 0.55 - 0.4 * math.sin(a + 0.25))
        mid2 = b.p(0.5 + 0.3 * math.cos(a - 0.25), 0.55 - 0.4 * math.sin(a - 0.25))
        leaves[i % 2].append([b.p(0.5, 0.6), mid, tip, mid2])
    fill(cv, "polygons", leaves[0], light, edge=0.3)
    fill(cv, "polygons", leaves[1], dark, edge=0.3)
    fill(
        cv,
        "polygon",
        [b.p(0.16, 0.58), b.p(0.84, 0.58), b.p(0.74, 1.0), b.p(0.26, 1.0)],
        pot,
        shade="cyl",
    )
    fill(cv, "rect", b.r(0.12, 0.55, 0.88, 0.64), pot, shade="top")


def _lamp(cv: Canvas, b: Frame, item: Item, rng) -> None:
    look = look_for(item.material, item.color)
    floor = b.h > 0.4 * cv.n
    shade_h = 0.32 if floor else 0.46
    fill(
        cv,
        "ellipse",
        b.r(-0.6, -0.3, 1.6, shade_h + 0.3),
        Look("matte", (1, 0.97, 0.85)),
        alpha=0.12,
        edge=0,
    )  # warm glow on the wall
    if floor:
        floor_shadow(cv, b, 0.4)
        fill(cv, "rect", b.r(0.45, shade_h, 0.55, 0.96), look)
        fill(cv, "ellipse", b.r(0.18, 0.93, 0.82, 1.0), look, shade="top")
    else:
        fill(cv, "rect", b.r(0.46, shade_h, 0.54, 0.6), look)
        fill(cv, "ellipse", b.r(0.2, 0.52, 0.8, 1.0), look, shade="cyl")
    fill(
        cv,
        "polygon",
        [b.p(0.2, 0.0), b.p(0.8, 0.0), b.p(1.0, shade_h), b.p(0.0, shade_h)],
        SHADE_CLOTH,
        shade="soft",
    )


def _sofa(cv: Canvas, b: Frame, item: Item, rng, seats: int = 0) -> None:
    look = look_for(item.material, item.color)
    seats = seats or (3 if b.w > 0.4 * cv.n else 2)
    floor_shadow(cv, b, 0.55)
    for fx in (0.08, 0.88):
        fill(cv, "rect", b.r(fx, 0.9, fx + 0.04, 1.0), DARK)
    fill(cv, "rrect", b.r(0.06, 0.0, 0.94, 0.62), look, shade="soft")
    fill(cv, "rect", b.r(0.06, 0.55, 0.94, 0.92), look, shade="dark", edge=0.2)
    for i in range(seats):
        w = 0.76 / seats
        fill(cv, "rrect", b.r(0.12 + i * w, 0.48, 0.12 + (i + 1) * w, 0.72), look, shade="soft")
    for fx in (0.0, 0.86):
        fill(cv, "rrect", b.r(fx, 0.32, fx + 0.14, 0.92), look, shade="cyl")


def _armchair(cv: Canvas, b: Frame, item: Item, rng) -> None:
    if item.material == "fabric" or item.material == "wicker":
        _sofa(cv, b, item, rng, seats=1)
        return
    wood = look_for(item.material, item.color)  # wooden frame with a cream cushion
    floor_shadow(cv, b, 0.5)
    for fx in (0.04, 0.88):
        fill(cv, "rect", b.r(fx, 0.4, fx + 0.08, 1.0), wood)
    fill(cv, "rrect", b.r(0.1, 0.0, 0.9, 0.6), wood)
    fill(cv, "rrect", b.r(0.18, 0.08, 0.82, 0.56), CREAM, shade="soft")
    fill(cv, "rrect", b.r(0.08, 0.52, 0.92, 0.74), CREAM, shade="soft")
    fill(cv, "rect", b.r(0.08, 0.72, 0.92, 0.8), Look(wood.material, wood.rgb, "h"))
    for fx in (0.0, 0.86):
        fill(cv, "rect", b.r(fx, 0.36, fx + 0.14, 0.44), Look(wood.material, wood.rgb, "h"))


def _rug(cv: Canvas, b: Frame, item: Item, rng) -> None:
    look = look_for("fabric", item.color, "h")
    fill(cv, "polygon", [b.p(0.1, 0), b.p(0.9, 0), b.p(1, 1), b.p(0, 1)], look, edge=0.25)
    r, g, bl = (min(1.0, c * 0.7 + 0.25) for c in look.rgb)
    trim = Look("fabric", (r, g, bl), "h")
    fill(
        cv,
        "polygon",
        [b.p(0.18, 0.15), b.p(0.82, 0.15), b.p(0.9, 0.85), b.p(0.1, 0.85)],
        trim,
        alpha=0.5,
        edge=0,
    )
    fill(
        cv,
        "polygon",
        [b.p(0.24, 0.27), b.p(0.76, 0.27), b.p(0.82, 0.73), b.p(0.18, 0.73)],
        look,
        edge=0,
    )


def _coffee_table(cv: Canvas, b: Frame, item: Item, rng) -> None:
    top = look_for(item.material, item.color, "h")
    legs = (
        look_for("metal", "black")
        if item.material in ("glass", "marble")
        else look_for(item.material, item.color)
    )
    floor_shadow(cv, b, 0.55)
    for fx in (0.12, 0.82):  # back legs
        fill(cv, "rect", b.r(fx, 0.25, fx + 0.05, 0.86), legs, shade="dark")
    fill(cv, "polygon", [b.p(0.05, 0), b.p(0.95, 0), b.p(1, 0.28), b.p(0, 0.28)], top, shade="top")
    fill(cv, "rect", b.r(0.0, 0.28, 1.0, 0.42), top, shade="dark", edge=0.3)
    for fx in (0.03, 0.9):  # front legs
        fill(cv, "rect", b.r(fx, 0.4, fx + 0.07, 1.0), legs)


def _bed(cv: Canvas, b: Frame, item: Item, rng) -> None:
    frame = look_for(item.material, item.color)
    floor_shadow(cv, b, 0.55)
    if item.material == "metal":  # bars
        fill(cv, "rect", b.r(0.06, 0.0, 0.94, 0.05), frame)
        for i in range(7):
            fx = 0.06 + i * 0.84 / 6
            fill(cv, "rect", b.r(fx - 0.015, 0.0, fx + 0.015, 0.5), frame)
    else:
        fill(
            cv,
            "rrect",
            b.r(0.06, 0.0, 0.94, 0.5),
            frame,
            shade="soft" if item.material == "fabric" else "flat",
        )
    for fx in (0.16, 0.54):
        fill(cv, "rrect", b.r(fx, 0.24, fx + 0.3, 0.42), BEDDING, shade="soft")
    fill(
        cv,
        "polygon",
        [b.p(0.08, 0.38), b.p(0.92, 0.38), b.p(1.0, 0.8), b.p(0.0, 0.8)],
        BEDDING,
        shade="soft",
    )
    fill(cv, "rect", b.r(0.0, 0.78, 1.0, 0.93), Look(frame.material, frame.rgb, "h"))
    for fx in (0.02, 0.93):
        fill(cv, "rect", b.r(fx, 0.92, fx + 0.05, 1.0), frame)


def _stool(cv: Canvas, b: Frame, item: Item, rng) -> None:
    seat = look_for(item.material, item.color, "h")
    legs = (
        look_for("wooden", "brown")
        if item.material == "wicker"
        else look_for(item.material, item.color)
    )
    lw = max(2, int(b.w * 0.09))
    floor_shadow(cv, b, 0.45)
    for x_top, x_bot in ((0.3, 0.12), (0.7, 0.88), (0.42, 0.36), (0.58, 0.64)):
        fill(cv, "line", [b.p(x_top, 0.15), b.p(x_bot, 0.99)], legs, width=lw, edge=0.2)
    fill(cv, "line", [b.p(0.2, 0.7), b.p(0.8, 0.7)], legs, width=max(1, lw // 2), edge=0)
    fill(cv, "rect", b.r(0.0, 0.12, 1.0, 0.24), seat, shade="dark")
    fill(cv, "ellipse", b.r(0.0, 0.0, 1.0, 0.24), seat, shade="top")


_VASES = (  # half-width profiles (y fraction, half width fraction), top to bottom; all have
    # a neck over a wider body, the silhouette that says "vase" rather than "can"
    ((0.0, 0.2), (0.12, 0.14), (0.3, 0.2), (0.5, 0.46), (0.75, 0.48), (0.92, 0.36), (1.0, 0.26)),
    ((0.0, 0.17), (0.3, 0.14), (0.45, 0.3), (0.7, 0.44), (0.9, 0.4), (1.0, 0.3)),
    ((0.0, 0.38), (0.1, 0.22), (0.25, 0.18), (0.55, 0.47), (0.85, 0.4), (1.0, 0.24)),
    ((0.0, 0.27), (0.12, 0.16), (0.4, 0.38), (0.7, 0.5), (0.9, 0.4), (1.0, 0.22)),
)


def _vase(cv: Canvas, b: Frame, item: Item, rng) -> None:
    look = look_for(item.material, item.color)
    prof = _VASES[item.variant % len(_VASES)]
    pts = [b.p(0.5 + hw, fy) for fy, hw in prof] + [b.p(0.5 - hw, fy) for fy, hw in prof[::-1]]
    floor_shadow(cv, b, 0.35)
    fill(cv, "polygon", pts, look, shade="flat" if item.material == "glass" else "cyl")
    top_hw = prof[0][1]
    fill(cv, "ellipse", b.r(0.5 - top_hw, -0.03, 0.5 + top_hw, 0.05), look, shade="dark")


def _chair(cv: Canvas, b: Frame, item: Item, rng) -> None:
    look = look_for(item.material, item.color)
    legs = look_for("wooden", "brown") if item.material in ("fabric", "wicker") else look
    floor_shadow(cv, b, 0.45)
    lw = max(2, int(b.w * 0.08))
    for fx in (0.22, 0.76):  # back legs, behind the seat
        fill(cv, "line", [b.p(fx, 0.55), b.p(fx, 0.94)], legs, width=lw, edge=0.2)
    for fx in (0.18, 0.8):  # back posts
        fill(cv, "rect", b.r(fx - 0.04, 0.0, fx + 0.04, 0.56), legs)
    if item.material in ("wooden", "metal"):
        for fy in (0.06, 0.22, 0.38):
            fill(cv, "rect", b.r(0.18, fy, 0.8, fy + 0.08), Look(look.material, look.rgb, "h"))
    else:
        fill(cv, "rrect", b.r(0.16, 0.02, 0.82, 0.5), look, shade="soft")
    fill(
        cv,
        "polygon",
        [b.p(0.14, 0.52), b.p(0.84, 0.52), b.p(0.96, 0.64), b.p(0.04, 0.64)],
        Look(look.material, look.rgb, "h"),
        shade="top",
    )
    fill(cv, "rect", b.r(0.04, 0.64, 0.96, 0.7), legs, shade="dark")
    for fx in (0.08, 0.9):
        fill(cv, "line", [b.p(fx, 0.66), b.p(fx, 1.0)], legs, width=lw, edge=0.2)


_DRAWERS: dict[str, Callable[[Canvas, Frame, Item, np.random.Generator], None]] = {
    **FIXTURES,
    "potted plant": _potted_plant,
    "lamp": _lamp,
    "sofa": _sofa,
    "armchair": _armchair,
    "rug": _rug,
    "coffee table": _coffee_table,
    "bed": _bed,
    "stool": _stool,
    "vase": _vase,
    "chair": _chair,
}
_ASYMMETRIC = {"faucet", "kettle"}  # the only shapes that turn with a mirrored room
