"""Drawing primitives, material looks and the room behind the objects.

Each part of an object is a PIL ImageDraw shape drawn into a mask the size of its own
bounding box, filled with a numpy texture of its material and shaded, then blended into a
float RGB canvas. The canvas is `SS` times the output side and box-filtered down at the end
(supersampling anti-aliasing), so thin parts (a faucet's spout, a lamp's stem) stay smooth.

Materials must read as materials at 128 px, not as colours (DESIGN.md): wood has dark grain
lines, wicker a strand weave, chrome bright and dark reflection bands on gray, brass a gold
highlight, marble veins, glass shows the wall through it with light edges, ceramic is white
and smoothly shaded, fabric is matte with fine noise.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from genimg.scene import Room
from genimg.taxonomy import COLORS

__all__ = ["SS", "Canvas", "Look", "draw_room", "fill", "look_for", "shadow"]

SS = 2  # supersampling factor
_T = 256  # side of the cached noise tiles


@dataclass(frozen=True)
class Look:
    material: str  # a taxonomy material, or a neutral: matte, leaf, glow, mirror, dark
    rgb: tuple[float, float, float]  # base colour in [0, 1]
    axis: str = "v"  # "v": the part is upright (profiles run across x); "h": lying (across y)


def look_for(material: str, color: str | None, axis: str = "v") -> Look:
    """The look of a taxonomy material in a taxonomy colour (None: the material's own)."""
    own = {
        "white ceramic": (0.95, 0.95, 0.93),
        "chrome": (0.66, 0.69, 0.74),
        "brass": (0.80, 0.60, 0.24),
    }
    if color is None:
        return Look(material, own.get(material, (0.6, 0.6, 0.6)), axis)
    r, g, b = (c / 255 for c in COLORS[color].rgb)
    if material == "wooden" and color == "brown":
        r, g, b = 0.55, 0.35, 0.19
    elif material == "wooden" and color == "beige":
        r, g, b = 0.80, 0.64, 0.44  # light oak rather than paint
    elif material == "glass":
        r, g, b = (0.45 + 0.55 * c for c in (r, g, b))  # glass tints are pale
    return Look(material, (r, g, b), axis)


class Canvas:
    """Float RGB image, `SS` times the output side; coordinates in its own pixels."""

    def __init__(self, size: int):
        self.n = size * SS
        self.k = self.n / 256  # texture feature scale: same look at any output size
        self.px = np.zeros((self.n, self.n, 3), np.float32)

    def to_image(self) -> Image.Image:
        # Box-filter down (the supersampling's anti-aliasing); strided sums, since numpy's
        # mean over axes (1, 3) of a reshape is ten times slower.
        px = sum(self.px[i::SS, j::SS] for i in range(SS) for j in range(SS)) / SS**2
        return Image.fromarray((np.clip(px, 0, 1) * 255 + 0.5).astype(np.uint8))


@functools.cache
def _noise() -> tuple[np.ndarray, np.ndarray]:
    """Smooth (value noise, several octaves) and fine noise tiles, seeded, built once."""
    rng = np.random.default_rng(12345)
    smooth = np.zeros((_T, _T), np.float32)
    for cells, weight in ((8, 0.5), (16, 0.3), (32, 0.2)):
        grid = Image.fromarray(rng.random((cells, cells)).astype(np.float32), "F")
        smooth += weight * np.asarray(grid.resize((_T, _T), Image.Resampling.BICUBIC))
    fine = rng.random((_T, _T)).astype(np.float32)
    return smooth, fine


def _sample(tile: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    return tile[ys.astype(np.int64) % _T, xs.astype(np.int64) % _T]


@functools.lru_cache(maxsize=8)
def _fields(n: int) -> dict[str, np.ndarray]:
    """Noise and pattern fields over a whole n x n canvas, built once per canvas size, so a
    part's texture starts from slices (views) instead of per-pixel index arithmetic."""
    smooth, fine = _noise()
    k = n / 256
    ys = (np.arange(n, dtype=np.float32) / k)[:, None]
    xs = (np.arange(n, dtype=np.float32) / k)[None, :]
    # Wood: rings across the grain, wavy along it (noise stretched along the grain).
    grain_v = xs / 7.0 + 3.0 * _sample(smooth, ys * 0.15 + 17, xs + 31)
    grain_h = ys / 7.0 + 3.0 * _sample(smooth, ys + 31, xs * 0.15 + 17)
    lines_v = (0.5 + 0.5 * np.sin(2 * np.pi * grain_v)) ** 8
    lines_h = (0.5 + 0.5 * np.sin(2 * np.pi * grain_h)) ** 8
    # Wicker: a basket weave of 5-pixel cells, strands alternating horizontal and vertical.
    cell = 5.0
    fx, fy = (xs % cell) / cell, (ys % cell) / cell
    checker = (np.floor(xs / cell) + np.floor(ys / cell)) % 2 == 0
    weave = np.where(checker, np.sin(np.pi * fy), np.sin(np.pi * fx))
    # Marble: thin veins along the zero lines of a turbulent sine.
    m = _sample(smooth, ys * 0.7 + 5, xs * 0.7 + 9)
    t = (xs * 0.5 + ys * 0.3) / 30.0 + 3.5 * m
    vein = np.exp(-(np.sin(np.pi * t) ** 2) / 0.01)
    vein += 0.5 * np.exp(-(np.sin(np.pi * (t * 2.3 + 0.4)) ** 2) / 0.006)
    f = _sample(fine, ys + 0 * xs, xs + 0 * ys)
    sm = _sample(smooth, ys + 0 * xs, xs + 0 * ys)
    fields = {
        "fine": f,
        "smooth": sm,
        "wood_v": lines_v,
        "wood_h": lines_h,
        "wood_n_v": _sample(smooth, ys * 0.15 + 17, xs + 31),
        "wood_n_h": _sample(smooth, ys + 31, xs * 0.15 + 17),
        "weave": weave,
        "vein": np.clip(vein, 0, 0.9) * 0.8,
        "marble_n": m,
        "streak_v": _sample(fine, ys + 0 * xs, np.floor(xs / 6)),
        "streak_h": _sample(fine, np.floor(ys / 6), xs + 0 * ys),
        "fabric": 0.92 + 0.08 * f + 0.1 * (sm - 0.5) + 0.03 * ((np.floor(xs) + np.floor(ys)) % 2),
        "leaf": 0.7 + 0.6 * _sample(smooth, ys * 3, xs * 3),
        "mirror": (np.sin((xs - ys) * 0.04) > 0.85) * np.float32(0.22),
    }
    return {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in fields.items()}


@functools.lru_cache(maxsize=4096)
def _unit(n: int) -> np.ndarray:
    """Pixel centres of a span of n pixels as fractions in (0, 1)."""
    return (np.arange(n, dtype=np.float32) + 0.5) / n


def _profile(material: str, across: np.ndarray) -> np.ndarray:
    """Brightness across a shiny part: reflection bands and highlights (1-D, cheap)."""
    g = lambda c, s: np.exp(-(((across - c) / s) ** 2))  # noqa: E731
    if material == "chrome":  # mirror-like: a white streak, a dark band, sharp contrast
        return (
            0.8
            + 0.75 * g(0.24, 0.07)
            + 0.5 * g(0.72, 0.05)
            - 0.45 * g(0.47, 0.08)
            - 0.5 * np.abs(across - 0.5)
        )
    if material == "brass":
        return 0.72 + 0.5 * g(0.3, 0.1) + 0.25 * g(0.76, 0.06) - 0.4 * np.abs(across - 0.5)
    if material == "metal":  # painted or brushed: one soft sheen
        return 0.86 + 0.22 * g(0.3, 0.14) - 0.14 * across
    return 0.84 + 0.14 * np.sin(np.pi * across) + 0.1 * g(0.3, 0.1)  # glazed ceramic


def _texture(look: Look, h: int, w: int, x0: int, y0: int, n: int, bg: np.ndarray) -> np.ndarray:
    """(h, w, 3) colour of a part's bounding box in its material."""
    f = _fields(n)
    sl = (slice(y0, y0 + h), slice(x0, x0 + w))
    rgb = np.array(look.rgb, np.float32)
    m, vertical = look.material, look.axis == "v"
    across = _unit(w)[None, :] if vertical else _unit(h)[:, None]
    if m == "wooden":
        contrast = 0.16 if sum(look.rgb) > 2.4 else 0.34
        lines = f["wood_v" if vertical else "wood_h"][sl]
        noise = f["wood_n_v" if vertical else "wood_n_h"][sl]
        val = 0.94 - contrast * lines + 0.12 * noise + 0.05 * f["fine"][sl]
        return rgb * val[..., None]
    if m == "wicker":
        return rgb * (0.5 + 0.62 * f["weave"][sl] + 0.06 * f["fine"][sl])[..., None]
    if m in ("chrome", "brass", "white ceramic"):
        p = _profile(m, across)
        out = rgb * p[..., None]
        if m != "white ceramic":
            tint = (1.0, 1.0, 1.0) if m == "chrome" else (1.0, 0.93, 0.68)
            out = out + np.array(tint, np.float32) * (0.35 * np.clip(p - 0.9, 0, 1))[..., None]
        return np.broadcast_to(out, (h, w, 3)).copy()
    if m == "metal":
        p = _profile(m, across)
        val = p + 0.05 * (f["streak_v" if vertical else "streak_h"][sl] - 0.5)
        return rgb * val[..., None] + (0.06 * (p - 0.86))[..., None]
    if m == "marble":
        dark = sum(look.rgb) < 1.2
        vein_rgb = (0.85, 0.85, 0.85) if dark else (0.3, 0.3, 0.33)
        vc = np.array(vein_rgb, np.float32)
        a = f["vein"][sl][..., None]
        return rgb * (0.95 + 0.1 * f["marble_n"][sl])[..., None] * (1 - a) + vc * a
    if m == "glass":  # the wall shows through, tinted, with one light streak
        hi = 0.45 * np.exp(-(((across - 0.22) / 0.06) ** 2))
        return bg * 0.4 + rgb * 0.55 + hi[..., None]
    if m == "fabric":
        return rgb * f["fabric"][sl][..., None]
    if m == "leaf":
        return rgb * f["leaf"][sl][..., None]
    if m == "mirror":  # a reflection: pale sky gradient crossed by light streaks
        v = _unit(h)[:, None, None]
        top = np.array((0.78, 0.86, 0.92), np.float32)
        bottom = np.array((0.55, 0.62, 0.70), np.float32)
        return top * (1 - v) + bottom * v + f["mirror"][sl][..., None]
    # matte, glow, dark: plain with a little noise
    return rgb * (0.96 + 0.06 * f["fine"][sl])[..., None]


def fill(
    cv: Canvas,
    shape: str,
    pts,
    look: Look,
    *,
    shade: str = "flat",
    alpha: float = 1.0,
    edge: float = 0.35,
    width: int = 0,
) -> None:
    """Draw one part: shape rect|rrect|ellipse|polygon|polygons|line over points `pts`
    (canvas pixels; for polygons a list of point lists), textured by `look`, shaded, with a
    darker rim (lighter for glass)."""
    polys = pts if shape == "polygons" else [pts]  # several polygons share one mask
    xs = [float(x) for poly in polys for x, _ in poly]
    ys = [float(y) for poly in polys for _, y in poly]
    pad = width + 2
    x0, y0 = max(int(min(xs)) - pad, 0), max(int(min(ys)) - pad, 0)
    x1, y1 = min(int(max(xs)) + pad + 1, cv.n), min(int(max(ys)) + pad + 1, cv.n)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    w, h = x1 - x0, y1 - y0
    mask = Image.new("L", (w, h))
    d = ImageDraw.Draw(mask)
    rel = [(x - x0, y - y0) for x, y in pts] if shape != "polygons" else []
    rim = 254 if edge else None  # PIL draws the one-pixel rim; 254 marks it, ~opaque
    if shape == "rect":
        d.rectangle(rel, fill=255, outline=rim)
    elif shape == "rrect":
        r = max(1, int(min(rel[1][0] - rel[0][0], rel[1][1] - rel[0][1]) * 0.22))
        d.rounded_rectangle(rel, radius=r, fill=255, outline=rim)
    elif shape == "ellipse":
        d.ellipse(rel, fill=255, outline=rim)
    elif shape == "polygon":
        d.polygon(rel, fill=255, outline=rim)
    elif shape == "polygons":
        for poly in polys:
            d.polygon([(x - x0, y - y0) for x, y in poly], fill=255, outline=rim)
    elif shape == "line":
        d.line(rel, fill=255, width=width, joint="curve")
    mask_u8 = np.asarray(mask)
    region = cv.px[y0:y1, x0:x1]
    tex = _texture(look, h, w, x0, y0, cv.n, region)
    if shade == "cyl" and look.material in ("chrome", "brass"):
        shade = "flat"  # their reflection profile already models the roundness
    light = _shading(shade, h, w)
    if edge:  # the one-pixel rim of the shape: darker outline, or a light edge on glass
        ring = _ring(mask_u8) if shape == "line" else (mask_u8 == 254).astype(np.float32)
        if look.material == "glass":
            tex = tex + 0.45 * ring[..., None]
        else:
            light = light * (1 - edge * ring)
    tex *= light[..., None]
    region += (tex - region) * (mask_u8 * np.float32(alpha / 255))[..., None]


def _ring(mask: np.ndarray) -> np.ndarray:
    """Inner one-pixel rim of a mask (mask minus its 3x3 cross erosion), as float in [0, 1];
    numpy slices are ten times faster here than PIL's MinFilter."""
    e = mask.copy()
    np.minimum(e[1:], mask[:-1], out=e[1:])
    np.minimum(e[:-1], mask[1:], out=e[:-1])
    np.minimum(e[:, 1:], mask[:, :-1], out=e[:, 1:])
    np.minimum(e[:, :-1], mask[:, 1:], out=e[:, :-1])
    return (mask - e) * np.float32(1 / 255)


def _shading(shade: str, h: int, w: int) -> np.ndarray:
    u, v = _unit(w)[None, :], _unit(h)[:, None]
    if shade == "cyl":  # a round body lit from the upper left
        return 0.72 + 0.34 * np.sin(np.pi * np.clip(u * 1.1, 0, 1)) - 0.06 * v
    if shade == "top":  # a face turned up to the light
        return np.full((h, w), 1.1, np.float32)
    if shade == "dark":  # a face in shadow, an opening
        return np.broadcast_to(0.62 + 0.1 * v, (h, w))
    if shade == "soft":  # cushions, bedding: lighter in the middle
        return 0.84 + 0.2 * np.sin(np.pi * u) * np.sin(np.pi * v)
    return np.broadcast_to(1.04 - 0.12 * v, (h, w))


def shadow(cv: Canvas, cx: float, cy: float, rx: float, ry: float, strength: float = 0.35):
    """Soft contact shadow on the floor under a standing object (canvas pixels): darkest
    under the middle, fading smoothly to nothing at 1.6 radii."""
    x0, y0 = max(int(cx - 1.6 * rx), 0), max(int(cy - 1.6 * ry), 0)
    x1, y1 = min(int(cx + 1.6 * rx) + 1, cv.n), min(int(cy + 1.6 * ry) + 1, cv.n)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    dx = ((np.arange(x0, x1, dtype=np.float32) - cx) / (1.6 * rx))[None, :] ** 2
    dy = ((np.arange(y0, y1, dtype=np.float32) - cy) / (1.6 * ry))[:, None] ** 2
    a = np.clip(1 - dx - dy, 0, 1)
    cv.px[y0:y1, x0:x1] *= (1 - strength * a * a)[..., None]


def draw_room(cv: Canvas, room: Room, light_left: bool) -> None:
    """Back wall and floor in perspective, lit from one side like a product photo."""
    n = cv.n
    hy = int(room.horizon * n)
    lx = np.linspace(0, 1, n, dtype=np.float32)[None, :]
    side = 1.06 - 0.12 * (lx if light_left else 1 - lx)  # light falls off across the room
    wall = np.array(room.wall_rgb, np.float32) / 255
    cv.px[:hy] = wall * (_wall_tone(room.wall_style, hy, n) * side)[..., None]
    floor = np.array(room.floor_rgb, np.float32) / 255
    cv.px[hy:] = floor * (_floor_tone(room.floor_style, hy, n) * side)[..., None]
    cv.px[max(hy - int(3 * cv.k), 0) : hy] = wall * 0.8  # baseboard


@functools.lru_cache(maxsize=128)
def _wall_tone(style: str, hy: int, n: int) -> np.ndarray:
    """Brightness pattern of the wall (tiles, panelling, stripes); cached, it is reused."""
    k = n / 256
    ys = np.arange(hy, dtype=np.float32)[:, None]
    xs = np.arange(n, dtype=np.float32)[None, :]
    tone: np.ndarray = np.ones((hy, n), np.float32)
    g = 16 * k  # tile size
    if style == "tiles":  # running-bond tiles with light grout
        on_line = ((ys % g) < 1.2 * k) | (((xs + (ys // g % 2) * g / 2) % (2 * g)) < k)
        tone = np.where(on_line, 1.12, 0.97 + 0.03 * ((xs // (2 * g) + ys // g) % 2))
    elif style == "stripes":
        tone = tone * (1 - 0.05 * ((xs // (10 * k)) % 2))
    elif style == "panel":  # wainscot: panelled lower wall under a rail
        low = ys > hy * 0.62
        tone = np.where(low, 0.9 - 0.08 * ((xs % (28 * k)) < 1.5 * k), 1.0)
        tone = np.where(np.abs(ys - hy * 0.62) < 1.5 * k, 1.12, tone)
    tone = tone * (1.0 - 0.06 * ys / n)
    return tone.astype(np.float32)


@functools.lru_cache(maxsize=128)
def _floor_tone(style: str, hy: int, n: int) -> np.ndarray:
    """Brightness pattern of the floor in perspective; cached, it is reused."""
    ys = np.arange(hy, n, dtype=np.float32)[:, None]
    xs = np.arange(n, dtype=np.float32)[None, :]
    t = (ys - hy) / max(n - hy, 1)  # 0 at the wall, 1 at the camera
    z = 1.0 / (t + 0.15)  # depth of the floor point: rows bunch up toward the wall
    wx = (xs / n - 0.5) * z  # floor coordinate across: lines converge to the centre
    smooth, fine = _noise()
    k = n / 256
    if style == "planks":
        plank = np.floor(wx * 3.0)
        seam = np.abs(wx * 3.0 - plank - 0.5) > 0.46
        hue = 0.9 + 0.12 * _sample(fine, plank * 7, plank * 13)
        tone = np.where(seam, 0.72, hue + 0.06 * (_sample(smooth, z * 6, xs / (8 * k)) - 0.5))
    elif style in ("tiles", "checker"):
        a, b = np.floor(wx * 2.5), np.floor(z * 1.2)
        grout = (np.abs(wx * 2.5 - a - 0.5) > 0.47) | (np.abs(z * 1.2 - b - 0.5) > 0.45)
        base = 0.72 + 0.32 * ((a + b) % 2) if style == "checker" else 1.0
        tone = np.where(grout, 1.15, base)
    else:  # carpet
        tone = 0.94 + 0.1 * _sample(fine, ys / k, xs / k)
    return (tone * (0.82 + 0.2 * t)).astype(np.float32)
