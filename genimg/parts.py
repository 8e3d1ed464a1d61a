"""Shared pieces of the object drawers: the instance frame, shadows, neutral looks.

Neutral looks are for parts that are not the object's named material (legs, bedding, lamp
shades, rails), so the named material and colour stay the ones a viewer reads.
"""

from __future__ import annotations

from genimg.draw import Canvas, Look, fill, shadow

__all__ = [
    "BEDDING",
    "CHROME",
    "CHROME_H",
    "CREAM",
    "DARK",
    "SHADE_CLOTH",
    "SHADOW",
    "Frame",
    "floor_shadow",
    "wall_shadow",
]

Px = tuple[float, float, float, float]

DARK = Look("matte", (0.16, 0.14, 0.13))
SHADE_CLOTH = Look("glow", (0.98, 0.93, 0.78))
BEDDING = Look("fabric", (0.94, 0.94, 0.91), "h")
CREAM = Look("fabric", (0.90, 0.85, 0.74))
SHADOW = Look("matte", (0.0, 0.0, 0.0))
CHROME = Look("chrome", (0.66, 0.69, 0.74))
CHROME_H = Look("chrome", (0.66, 0.69, 0.74), "h")


class Frame:
    """Maps fractions of an instance box to canvas pixels, mirrored when the room is."""

    def __init__(self, px: Px, flip: bool):
        self.x0, self.y0, self.x1, self.y1 = px
        self.w, self.h = self.x1 - self.x0, self.y1 - self.y0
        self.flip = flip

    def x(self, f: float) -> float:
        return self.x0 + self.w * (1 - f if self.flip else f)

    def y(self, f: float) -> float:
        return self.y0 + self.h * f

    def p(self, fx: float, fy: float) -> tuple[float, float]:
        return (self.x(fx), self.y(fy))

    def r(self, fx0: float, fy0: float, fx1: float, fy1: float) -> list[tuple[float, float]]:
        xa, xb = sorted((self.x(fx0), self.x(fx1)))
        return [(xa, self.y(fy0)), (xb, self.y(fy1))]


def floor_shadow(cv: Canvas, b: Frame, spread: float = 0.55) -> None:
    shadow(cv, (b.x0 + b.x1) / 2, b.y1 - 0.01 * b.h, b.w * spread, max(b.h * 0.05, 3 * cv.k))


def wall_shadow(cv: Canvas, shape: str, pts: list, k: float) -> None:
    off = [(x + 3 * k, y + 3 * k) for x, y in pts]
    fill(cv, shape, off, SHADOW, alpha=0.18, edge=0)
