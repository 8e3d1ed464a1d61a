"""Drawers for bathroom and kitchen fixtures and storage: shelf, basket, sink, faucet,
mirror, towel, bathtub, kettle, cabinet, nightstand.

Each draws one instance into its frame from fractions of the frame, like a product photo
seen from the front and a little above: tops lighter, openings darker, a floor shadow.
"""

from __future__ import annotations

import math

import numpy as np

from genimg.draw import Canvas, Look, fill, look_for
from genimg.parts import CHROME, CHROME_H, DARK, SHADOW, Frame, floor_shadow, wall_shadow
from genimg.scene import Item

__all__ = ["FIXTURES"]


def _shelf(cv: Canvas, b: Frame, item: Item, rng) -> None:
    mat = item.material
    board = look_for(mat, item.color, "h")
    side = look_for("metal", "gray") if mat == "glass" else look_for(mat, item.color, "v")
    floor_shadow(cv, b, 0.6)
    if mat == "glass":
        fill(cv, "rect", b.r(0.06, 0.02, 0.94, 0.94), SHADOW, alpha=0.25, edge=0)
    else:  # back panel in shadow: an open shelving unit, not a frame
        fill(cv, "rect", b.r(0.04, 0.02, 0.96, 0.96), side, shade="dark", edge=0)
        fill(cv, "rect", b.r(0.04, 0.02, 0.96, 0.96), SHADOW, alpha=0.3, edge=0)
    t = max(0.05, 7 * cv.k / b.h)  # board thickness: ~3.5 px at 128 px
    for top in (0.0, 0.5, 0.94):  # surfaces the scene puts things on (scene._place_on_shelf)
        fill(cv, "rect", b.r(-0.03, top, 1.03, top + t), board, shade="top", edge=0.5)
    for fx in (0.0, 0.91):
        fill(cv, "rect", b.r(fx, 0.0, fx + 0.09, 1.0), side, edge=0.5)


def _basket(cv: Canvas, b: Frame, item: Item, rng) -> None:
    look = look_for(item.material, item.color)
    floor_shadow(cv, b, 0.5)
    body = [b.p(0.0, 0.14), b.p(1.0, 0.14), b.p(0.9, 1.0), b.p(0.1, 1.0)]
    fill(cv, "polygon", body, look, shade="cyl")
    if item.material == "metal":  # wire basket: ribs
        for fx in (0.25, 0.5, 0.75):
            fill(
                cv,
                "line",
                [b.p(fx, 0.16), b.p(0.5 + (fx - 0.5) * 0.8, 0.98)],
                DARK,
                width=max(1, int(1.5 * cv.k)),
                edge=0,
                alpha=0.5,
            )
    fill(cv, "rrect", b.r(-0.02, 0.04, 1.02, 0.24), look, shade="top")
    fill(cv, "rrect", b.r(0.38, 0.3, 0.62, 0.4), DARK, alpha=0.8, edge=0)  # hand hold


def _sink(cv: Canvas, b: Frame, item: Item, rng) -> None:
    look = look_for(item.material, item.color)
    pedestal = b.h > 0.2 * cv.n
    bowl = 0.42 if pedestal else 1.0  # fraction of the box that is basin
    if pedestal:
        floor_shadow(cv, b, 0.3)
        fill(
            cv,
            "polygon",
            [
                b.p(0.38, 0.3),
                b.p(0.62, 0.3),
                b.p(0.58, 0.7),
                b.p(0.66, 1.0),
                b.p(0.34, 1.0),
                b.p(0.42, 0.7),
            ],
            look,
            shade="cyl",
        )
    rim = 0.3 * bowl
    pts = [
        b.p(0.5 + 0.5 * math.cos(a), rim / 2 + (bowl - rim / 2) * math.sin(a))
        for a in np.linspace(0, math.pi, 14)
    ]
    fill(cv, "polygon", pts, look, shade="cyl")
    fill(cv, "ellipse", b.r(-0.02, 0.0, 1.02, rim), look, shade="top")
    inner = Look(look.material, look.rgb, "v")
    fill(cv, "ellipse", b.r(0.08, rim * 0.18, 0.92, rim * 0.86), inner, shade="dark", edge=0.2)


def _faucet(cv: Canvas, b: Frame, item: Item, rng) -> None:
    look = look_for(item.material, item.color)
    lw = max(2, int(b.w * 0.14))
    fill(cv, "rrect", b.r(0.12, 0.84, 0.52, 1.0), look, shade="top")  # base plate
    fill(cv, "rect", b.r(0.22, 0.3, 0.42, 0.9), look)  # column
    arc = [
        b.p(0.32, 0.34),
        b.p(0.33, 0.16),
        b.p(0.42, 0.06),
        b.p(0.58, 0.05),
        b.p(0.72, 0.1),
        b.p(0.8, 0.22),
        b.p(0.82, 0.42),
    ]
    fill(cv, "line", arc, look, width=lw)
    fill(cv, "rect", b.r(0.75, 0.38, 0.9, 0.5), look)  # nozzle
    fill(cv, "line", [b.p(0.3, 0.4), b.p(0.02, 0.3)], look, width=max(2, int(lw * 0.7)))


def _mirror(cv: Canvas, b: Frame, item: Item, rng) -> None:
    frame = look_for(item.material, item.color)
    shape = ("rrect", "ellipse", "rrect")[item.variant % 3]
    outer = b.r(0.0, 0.0, 1.0, 1.0)
    wall_shadow(cv, shape, outer, cv.k)
    fill(cv, shape, outer, frame, edge=0.5)
    fill(cv, shape, b.r(0.1, 0.08, 0.9, 0.92), Look("mirror", (0.8, 0.85, 0.9)), edge=0.4)


def _towel(cv: Canvas, b: Frame, item: Item, rng) -> None:
    cloth = look_for("fabric", item.color)
    fill(cv, "rect", b.r(-0.12, 0.02, 1.12, 0.07), CHROME_H)  # rail
    wall_shadow(cv, "rect", b.r(0.04, 0.04, 0.96, 1.0), cv.k)
    fill(cv, "rect", b.r(0.04, 0.04, 0.96, 1.0), cloth, shade="soft")
    fill(cv, "rect", b.r(0.04, 0.04, 0.96, 0.22), cloth, shade="dark", edge=0.2)  # fold
    fill(cv, "rect", b.r(0.04, 0.84, 0.96, 0.9), cloth, shade="top", edge=0.2)  # hem


def _bathtub(cv: Canvas, b: Frame, item: Item, rng) -> None:
    look = look_for(item.material, item.color)
    floor_shadow(cv, b, 0.55)
    for fx in (0.1, 0.8):  # feet
        fill(cv, "ellipse", b.r(fx, 0.84, fx + 0.1, 1.0), DARK)
    fill(cv, "rrect", b.r(0.02, 0.08, 0.98, 0.92), look, shade="cyl")
    fill(cv, "rrect", b.r(-0.01, 0.0, 1.01, 0.17), look, shade="top")
    fill(cv, "rrect", b.r(0.05, 0.03, 0.95, 0.13), look, shade="dark", edge=0.2)


def _nightstand(cv: Canvas, b: Frame, item: Item, rng) -> None:
    _chest(cv, b, item, drawers=2)


def _cabinet(cv: Canvas, b: Frame, item: Item, rng) -> None:
    _chest(cv, b, item, drawers=0)


def _chest(cv: Canvas, b: Frame, item: Item, drawers: int) -> None:
    """Nightstand (drawers) or kitchen base cabinet (doors) under a thicker top."""
    look = look_for(item.material, item.color)
    flat = Look(look.material, look.rgb, "h")
    floor_shadow(cv, b, 0.55)
    fill(cv, "rect", b.r(0.02, 0.92, 0.98, 1.0), DARK)  # plinth
    fill(cv, "rect", b.r(0.02, 0.08, 0.98, 0.93), look)
    if drawers:
        for i in range(drawers):
            y = 0.16 + i * 0.38
            fill(cv, "rect", b.r(0.1, y, 0.9, y + 0.32), flat, edge=0.5)
            fill(cv, "ellipse", b.r(0.44, y + 0.12, 0.56, y + 0.22), look_for("brass", None))
    else:
        doors = max(2, round(b.w / (0.16 * cv.n)))
        for i in range(doors):
            fx = 0.05 + i * 0.9 / doors
            fill(cv, "rect", b.r(fx + 0.01, 0.18, fx + 0.9 / doors - 0.01, 0.88), look, edge=0.5)
            hx = fx + (0.9 / doors) * (0.8 if i % 2 == 0 else 0.12)
            fill(cv, "rect", b.r(hx, 0.3, hx + 0.025, 0.5), CHROME)
    fill(cv, "rect", b.r(-0.02, 0.0, 1.02, 0.1), flat, shade="top")


def _kettle(cv: Canvas, b: Frame, item: Item, rng) -> None:
    look = look_for(item.material, item.color)
    lw = max(2, int(b.w * 0.08))
    fill(
        cv, "polygon", [b.p(0.62, 0.62), b.p(0.95, 0.3), b.p(1.0, 0.36), b.p(0.68, 0.84)], look
    )  # spout
    fill(
        cv,
        "line",
        [b.p(0.24, 0.36), b.p(0.3, 0.1), b.p(0.5, 0.04), b.p(0.66, 0.1), b.p(0.68, 0.36)],
        DARK,
        width=lw,
    )  # handle
    body = [
        b.p(0.3, 0.3),
        b.p(0.66, 0.3),
        b.p(0.76, 0.6),
        b.p(0.78, 1.0),
        b.p(0.12, 1.0),
        b.p(0.16, 0.6),
    ]
    fill(cv, "polygon", body, look, shade="cyl")
    fill(cv, "ellipse", b.r(0.3, 0.24, 0.66, 0.36), look, shade="top")
    fill(cv, "ellipse", b.r(0.43, 0.17, 0.53, 0.27), DARK)


FIXTURES = {
    "shelf": _shelf,
    "basket": _basket,
    "sink": _sink,
    "faucet": _faucet,
    "mirror": _mirror,
    "towel": _towel,
    "bathtub": _bathtub,
    "kettle": _kettle,
    "cabinet": _cabinet,
    "nightstand": _nightstand,
}
