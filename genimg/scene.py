"""Scene layout: which objects a catalog record shows, in which look, where, and on what.

A layout is pure data in fractions of the image side (x right, y down), so it does not
depend on the resolution it is drawn at. Every object type has its place in its room:
tall and wide pieces stand in a left-to-right row of "columns" against the back wall,
small pieces sit on a support (baskets on the shelf, the faucet on the sink, vases on a
table), and low pieces stand in a front row. Positions jitter; the whole room may be
mirrored. Sizes keep every object at least ~0.19 of the side (24 px at 128 px), because a
small diffusion model never learns what its VAE cannot see (shared/notes/feasibility.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from genimg.taxonomy import COLORS, MATERIALS, OBJECTS

__all__ = ["Box", "Item", "Layout", "Room", "make_layout"]

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of the side


@dataclass
class Item:
    name: str
    material: str
    color: str | None  # None: the material fixes the look (taxonomy Material.colors empty)
    count: int
    boxes: list[Box] = field(default_factory=list)  # one per instance
    depth: float = 0.0  # draw order: nearer the camera (larger) is drawn later
    relation: tuple[str, str] | None = None  # ("on", "shelf"): what it stands on or hangs over
    variant: int = 0  # shape variant (oval or square mirror, vase profile, ...)


@dataclass
class Room:
    horizon: float  # y of the wall/floor line
    wall_rgb: tuple[int, int, int]
    wall_style: str  # plain | tiles | panel | stripes
    floor_rgb: tuple[int, int, int]
    floor_style: str  # planks | tiles | checker | carpet


@dataclass
class Layout:
    scene: str
    room: Room
    items: list[Item]
    flipped: bool  # the room was mirrored left-right (faucet spouts, kettle spouts follow)


# Inclusion probability per object type, in priority order: the first two are the room's
# core and survive trimming to at most five types. Bathrooms hold the shelf, sink, faucet
# and baskets of DESIGN.md's prompt often, but not always.
_PROB: dict[str, dict[str, float]] = {
    "bathroom": {
        "sink": 0.8,
        "shelf": 0.75,
        "faucet": 0.85,
        "basket": 0.65,
        "mirror": 0.45,
        "towel": 0.3,
        "bathtub": 0.3,
        "potted plant": 0.3,
    },
    "kitchen": {
        "cabinet": 0.75,
        "sink": 0.6,
        "faucet": 0.85,
        "kettle": 0.6,
        "shelf": 0.45,
        "stool": 0.45,
        "vase": 0.35,
        "potted plant": 0.35,
    },
    "living room": {
        "sofa": 0.7,
        "coffee table": 0.55,
        "rug": 0.45,
        "lamp": 0.45,
        "armchair": 0.4,
        "shelf": 0.4,
        "basket": 0.35,
        "potted plant": 0.35,
        "vase": 0.4,
    },
    "bedroom": {
        "bed": 0.8,
        "nightstand": 0.6,
        "lamp": 0.5,
        "rug": 0.4,
        "mirror": 0.35,
        "armchair": 0.3,
        "chair": 0.3,
        "vase": 0.35,
        "potted plant": 0.35,
    },
}
# Instances a support holds: a shelf one per level and one on top; a nightstand stays a
# nightstand, not a sideboard.
_CAPACITY = {"shelf": 3, "nightstand": 2, "coffee table": 3, "cabinet": 4}
_NEEDS = {"faucet": "sink", "kettle": "cabinet"}  # attached objects never float in the air

# Back-row order, left to right before mirroring; then the front row.
_COLUMNS = {
    "bathroom": ("bathtub", "towel", "mirror", "sink", "shelf", "potted plant"),
    "kitchen": ("shelf", "cabinet", "sink", "potted plant"),
    "living room": ("shelf", "lamp", "sofa", "armchair", "potted plant"),
    "bedroom": ("mirror", "nightstand", "lamp", "bed", "armchair", "chair", "potted plant"),
}
_FRONT = ("coffee table", "stool", "basket", "vase")

# Where small things go, first support present wins.
_SUPPORTS = {
    "kettle": ("cabinet",),
    "lamp": ("nightstand",),
    "basket": ("shelf",),
    "vase": ("coffee table", "nightstand", "cabinet", "shelf"),
}

# Nominal (w, h) of one instance, fractions of the side; each jitters by +-8%.
_SIZE = {
    "shelf": (0.28, 0.62),
    "basket": (0.21, 0.2),
    "sink": (0.29, 0.3),
    "faucet": (0.2, 0.2),
    "mirror": (0.25, 0.3),
    "towel": (0.21, 0.34),
    "bathtub": (0.46, 0.27),
    "potted plant": (0.21, 0.34),
    "lamp": (0.21, 0.6),
    "sofa": (0.54, 0.32),
    "armchair": (0.3, 0.33),
    "rug": (0.72, 0.22),
    "coffee table": (0.4, 0.2),
    "bed": (0.56, 0.42),
    "nightstand": (0.23, 0.24),
    "cabinet": (0.46, 0.31),
    "stool": (0.2, 0.28),
    "vase": (0.19, 0.26),
    "chair": (0.25, 0.4),
    "kettle": (0.22, 0.2),
}
_TABLE_LAMP_H = 0.29
_VESSEL_SINK_H = 0.17  # a basin standing on a kitchen counter

_WALLS = (
    (238, 234, 226),
    (226, 230, 232),
    (214, 224, 236),
    (218, 230, 214),
    (240, 226, 206),
    (236, 220, 222),
    (200, 200, 204),
    (244, 240, 222),
    (186, 204, 214),
    (226, 214, 196),
)
_FLOORS = (
    (176, 132, 90),
    (206, 172, 128),
    (120, 86, 60),
    (150, 150, 150),
    (210, 206, 198),
    (90, 90, 96),
    (190, 184, 170),
    (160, 120, 84),
)
_WALL_STYLES = {
    "bathroom": ("tiles", "tiles", "plain", "panel"),
    "kitchen": ("tiles", "plain", "panel", "stripes"),
    "living room": ("plain", "plain", "panel", "stripes"),
    "bedroom": ("plain", "stripes", "panel", "plain"),
}
_FLOOR_STYLES = {
    "bathroom": ("tiles", "checker", "planks"),
    "kitchen": ("tiles", "checker", "planks"),
    "living room": ("planks", "planks", "carpet", "tiles"),
    "bedroom": ("planks", "carpet", "carpet"),
}


def make_layout(scene: str, rng: np.random.Generator) -> Layout:
    """Choose the objects of a room, their looks and their places."""
    room = _make_room(scene, rng)
    items = {name: _make_item(name, rng) for name in _choose_types(scene, rng)}
    _place(scene, items, room, rng)
    flipped = bool(rng.random() < 0.5)
    if flipped:
        for item in items.values():
            item.boxes = [(1 - x1, y0, 1 - x0, y1) for x0, y0, x1, y1 in item.boxes]
    ordered = sorted(items.values(), key=lambda it: it.depth)
    return Layout(scene, room, ordered, flipped)


def _make_room(scene: str, rng: np.random.Generator) -> Room:
    pick = lambda seq: seq[int(rng.integers(len(seq)))]  # noqa: E731
    return Room(
        horizon=float(rng.uniform(0.56, 0.64)),
        wall_rgb=pick(_WALLS),
        wall_style=pick(_WALL_STYLES[scene]),
        floor_rgb=pick(_FLOORS),
        floor_style=pick(_FLOOR_STYLES[scene]),
    )


def _choose_types(scene: str, rng: np.random.Generator) -> list[str]:
    """2 to 5 object types of the room, each optional, dependents only with their support."""
    probs = _PROB[scene]
    chosen = [name for name, p in probs.items() if rng.random() < p]
    chosen = [n for n in chosen if _NEEDS.get(n, n) in chosen]
    rest = [n for n in probs if n not in chosen and n not in _NEEDS]
    while len(chosen) < 2:
        chosen.append(rest.pop(int(rng.integers(len(rest)))))
    core = list(probs)[:2]
    while len(chosen) > 5:
        needed = {_NEEDS[n] for n in chosen if n in _NEEDS}
        spare = [n for n in chosen if n not in core and n not in needed]
        chosen.remove(spare[int(rng.integers(len(spare)))])
    return [n for n in probs if n in chosen]


def _make_item(name: str, rng: np.random.Generator) -> Item:
    obj = OBJECTS[name]
    material = obj.materials[int(rng.integers(len(obj.materials)))]
    colors = MATERIALS[material].colors
    color = colors[int(rng.integers(len(colors)))] if colors else None
    assert color is None or color in COLORS
    count = int(rng.integers(1, obj.max_count + 1))
    return Item(name, material, color, count, variant=int(rng.integers(4)))


def _size(name: str, rng: np.random.Generator) -> tuple[float, float]:
    w, h = _SIZE[name]
    return w * float(rng.uniform(0.92, 1.08)), h * float(rng.uniform(0.92, 1.08))


def _place(scene: str, items: dict[str, Item], room: Room, rng: np.random.Generator) -> None:
    # 1. Small things go onto the first support present; the rest stand on the floor.
    loads: dict[str, list[Item]] = {}
    if scene == "kitchen" and "sink" in items and "cabinet" in items:
        loads["cabinet"] = [items["sink"]]  # a basin on the counter
    for name, support_names in _SUPPORTS.items():
        if name in items:
            support = next((s for s in support_names if s in items), None)
            held = sum(it.count for it in loads.get(support or "", []))
            if support and held + items[name].count > _CAPACITY[support]:
                support = None  # full: it stands on the floor instead
            if support:
                loads.setdefault(support, []).append(items[name])
    placed = {it.name for load in loads.values() for it in load}
    # 2. Back row: columns with random gaps, overlapping a little when crowded.
    columns = [n for n in _COLUMNS[scene] if n in items and n not in placed]
    if "sink" in items and "sink" not in placed and "mirror" in columns and scene == "bathroom":
        columns.remove("mirror")  # it hangs above the sink instead
    widths = [_column_width(n, items[n], loads.get(n, []), rng) for n in columns]
    _drop_overflow(scene, items, loads, columns, widths, rng)
    for name, x0, w in zip(columns, *_pack(widths, rng), strict=True):
        _place_column(items[name], x0, w, room, rng)
    # 3. Front row.
    front = [n for n in _FRONT if n in items and n not in placed and n not in columns]
    widths = [max(_row_width(n, items[n].count, rng), _load_width(loads.get(n, []))) for n in front]
    if front:
        for name, x0, w in zip(front, *_pack(widths, rng, margin=0.06), strict=True):
            _place_row(items[name], x0, w, rng)
    # 4. Loads onto their supports, the faucet onto the sink, the mirror above it.
    for support, load in loads.items():
        _place_on_support(items[support], load, rng)
    if "faucet" in items:
        _place_faucet(items["faucet"], items["sink"], rng)
    if "mirror" in items and "mirror" not in columns and "sink" in items:
        _place_mirror_above(items["mirror"], items["sink"], items.get("faucet"), rng)
    # 5. The rug, under everything.
    if "rug" in items:
        rug = items["rug"]
        x0 = float(rng.uniform(0.08, 0.18))
        y0 = max(room.horizon + float(rng.uniform(0.07, 0.12)), 0.7)
        rug.boxes = [(x0, y0, 1 - float(rng.uniform(0.08, 0.18)), float(rng.uniform(0.95, 0.98)))]
        rug.depth = room.horizon  # lies on the floor under everything


def _drop_overflow(
    scene: str,
    items: dict[str, Item],
    loads: dict[str, list[Item]],
    columns: list[str],
    widths: list[float],
    rng: np.random.Generator,
) -> None:
    """A back row wider than the image hides what the caption names: leave pieces out (with
    what stands on them) until it fits, never the room's core, never below two types."""
    core = list(_PROB[scene])[:2]
    while sum(widths) > 1.08:
        spare = [
            i
            for i, n in enumerate(columns)
            if n not in core and len(items) - 1 - len(loads.get(n, [])) >= 2
        ]
        if not spare:
            return
        i = spare[int(rng.integers(len(spare)))]
        name = columns.pop(i)
        widths.pop(i)
        for it in [items[name], *loads.pop(name, [])]:
            del items[it.name]


def _pack(widths: list[float], rng: np.random.Generator, margin: float = 0.02):
    """Left edges for a row of widths across the image: random gaps, or even overlaps."""
    free = 1 - 2 * margin - sum(widths)
    n = len(widths)
    if free >= 0:
        gaps = rng.random(n + 1) + 0.35
        gaps *= free / gaps.sum()
    else:  # crowded: neighbours overlap; depth order keeps it plausible
        gaps = np.array([0.0] + [free / max(n - 1, 1)] * (n - 1) + [0.0])
        if n == 1:
            gaps[0] = free / 2
    lefts, x = [], margin
    for i, w in enumerate(widths):
        x += float(gaps[i])
        lefts.append(x)
        x += w
    return lefts, widths


def _load_width(load: list[Item]) -> float:
    if not load:
        return 0.0
    total = 0.0
    for it in load:
        w = _SIZE[it.name][0] * (0.95 if it.name != "sink" else 1.05)
        total += w * it.count + 0.03 * it.count
    return total + 0.04


def _column_width(name: str, item: Item, load: list[Item], rng: np.random.Generator) -> float:
    w = _size(name, rng)[0]
    if name == "potted plant":
        w *= 1 + 0.62 * (item.count - 1)
    if name in ("cabinet", "nightstand"):
        w = max(w, _load_width(load))
    return w


def _row_width(name: str, count: int, rng: np.random.Generator) -> float:
    w = _size(name, rng)[0]
    return w * count + 0.02 * (count - 1)


def _place_column(item: Item, x0: float, w: float, room: Room, rng: np.random.Generator):
    name = item.name
    h = _size(name, rng)[1]
    if name in ("towel", "mirror"):  # hangs on the wall
        top = float(rng.uniform(0.08, 0.2))
        item.boxes, item.depth = [(x0, top, x0 + w, top + h)], 0.0
        return
    bottom = min(room.horizon + float(rng.uniform(0.17, 0.25)), 0.93)
    if name in ("potted plant", "chair", "armchair"):
        bottom = min(bottom + 0.04, 0.96)  # small pieces stand a little forward
    if name == "sink":  # the basin rim sits at counter height; the pedestal reaches the floor
        h = bottom - float(rng.uniform(0.49, 0.54))
    if name == "potted plant" and item.count > 1:
        step = (w - w / (1 + 0.62 * (item.count - 1))) / (item.count - 1)
        iw = w - step * (item.count - 1)
        item.boxes = []
        for i in range(item.count):
            b = bottom - 0.025 * (i % 2)
            item.boxes.append((x0 + i * step, b - h, x0 + i * step + iw, b))
    else:
        item.boxes = [(x0, bottom - h, x0 + w, bottom)]
    item.depth = bottom


def _place_on_support(support: Item, load: list[Item], rng: np.random.Generator) -> None:
    sx0, sy0, sx1, sy1 = support.boxes[0]
    if support.name == "shelf":
        _place_on_shelf(support, load, rng)
        return
    # Spread the load along the top surface, left to right, with even gaps.
    sizes = []
    for it in load:
        w, h = _size(it.name, rng)
        if it.name == "lamp":
            h = _TABLE_LAMP_H
        if it.name == "sink":
            w, h = w * 1.05, _VESSEL_SINK_H
        sizes.extend([(it, w, h)] * it.count)
    gap = max((sx1 - sx0) - sum(w for _, w, _ in sizes), 0.0) / (len(sizes) + 1)
    x = sx0 + gap
    for it, w, h in sizes:
        it.boxes.append((x, sy0 - h + 0.01, x + w, sy0 + 0.01))
        it.relation, it.depth = ("on", support.name), support.depth + 0.001
        x += w + gap


def _place_on_shelf(shelf: Item, load: list[Item], rng: np.random.Generator) -> None:
    """One thing per level: the lower level, the upper level, then the top board."""
    x0, y0, x1, y1 = shelf.boxes[0]
    if sum(it.count for it in load) >= 3:  # room above the top board for the third thing
        y0 = max(y0, 0.23)
        shelf.boxes = [(x0, y0, x1, y1)]
    h = y1 - y0
    levels = [y1 - 0.06 * h, y0 + 0.5 * h, y0]  # board surfaces, bottom up
    k = 0
    for it in load:
        for _ in range(it.count):
            w, hh = _size(it.name, rng)
            w = min(w, (x1 - x0) * 0.84)
            if k < 2:
                hh = min(hh, 0.44 * h - 0.01)
            cx = (x0 + x1) / 2 + float(rng.uniform(-0.01, 0.01))
            it.boxes.append((cx - w / 2, levels[k] - hh, cx + w / 2, levels[k]))
            k += 1
        it.relation, it.depth = ("on", "shelf"), shelf.depth + 0.001


def _place_faucet(faucet: Item, sink: Item, rng: np.random.Generator) -> None:
    x0, y0, x1, _ = sink.boxes[0]
    w, h = _size("faucet", rng)
    cx = (x0 + x1) / 2
    base = y0 + 0.025  # behind the front rim of the basin
    faucet.boxes = [(cx - w / 2, base - h, cx + w / 2, base)]
    faucet.relation, faucet.depth = ("on", "sink"), sink.depth - 0.0005  # behind the bowl


def _place_mirror_above(mirror: Item, sink: Item, faucet: Item | None, rng) -> None:
    x0, y0, x1, _ = sink.boxes[0]
    top_of_below = faucet.boxes[0][1] if faucet else y0
    w, h = _size("mirror", rng)
    bottom = top_of_below - float(rng.uniform(0.015, 0.04))
    top = max(bottom - h, 0.02)
    cx = (x0 + x1) / 2
    mirror.boxes = [(cx - w / 2, top, cx + w / 2, bottom)]
    mirror.relation, mirror.depth = ("above", "sink"), 0.0


def _place_row(item: Item, x0: float, w: float, rng: np.random.Generator) -> None:
    h = _size(item.name, rng)[1]
    iw = (w - 0.02 * (item.count - 1)) / item.count
    bottom = float(rng.uniform(0.94, 0.975))
    item.boxes = [
        (x0 + i * (iw + 0.02), bottom - h, x0 + i * (iw + 0.02) + iw, bottom)
        for i in range(item.count)
    ]
    item.depth = bottom
