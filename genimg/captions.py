"""Captions of a catalog record: catalog text (English, Japanese), web alt text, title.

Catalog captions are what a product page says: every object with its colour, material and
count, and where small things are (baskets on the shelf, the faucet on the sink, the mirror
above it), in several templates and word orders. Web captions are what the open web says:
the room and at most two objects, often vague, in English or (30%) Japanese. The gap between
the two is the open-vs-catalog story of DESIGN.md. All words come from genimg.taxonomy.
"""

from __future__ import annotations

import numpy as np

from genimg.scene import Item, Layout
from genimg.taxonomy import COLORS, COUNT_WORDS, MATERIALS, OBJECTS, RELATIONS, SCENES

__all__ = ["catalog_text", "catalog_text_ja", "phrase_en", "phrase_ja", "title", "web_text"]

WEB_JA_SHARE = 0.3  # the open web is not only English


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


_Node = tuple[Item, list, list]  # (item, nodes on it, nodes above it)


def _groups(layout: Layout) -> list[_Node]:
    """Standalone items as trees: (item, groups on it, groups above it), in layout order.
    Nested: the faucet is on the sink that is on the kitchen cabinet."""
    names = {it.name for it in layout.items}
    nodes: dict[str, _Node] = {it.name: (it, [], []) for it in layout.items}
    roots = []
    for it in layout.items:
        if it.relation and it.relation[1] in names:
            rel, target = it.relation
            node = nodes[target]
            (node[1] if rel == "on" else node[2]).append(nodes[it.name])
        else:
            roots.append(nodes[it.name])
    return roots


# ---- English ----------------------------------------------------------------------------


def phrase_en(name: str, material: str, color: str | None, count: int) -> str:
    """How a catalog caption names an object, without an article: "two red metal faucets"."""
    obj = OBJECTS[name]
    words = [w for w in (color, material) if w]
    if count > 1:
        return " ".join([COUNT_WORDS[count][0], *words, obj.plural])
    return " ".join([*words, obj.name])


def _en(item: Item, article: str = "a") -> str:
    text = phrase_en(item.name, item.material, item.color, item.count)
    if item.count > 1:
        return text
    if article == "a":
        article = "an" if text[0] in "aeiou" else "a"
    return " ".join([article, text])


def _en_group(group, rng: np.random.Generator) -> str:
    item, on, above = group
    on_text = _join_en([_en_group(g, rng) for g in on])
    above_text = _join_en([_en_group(g, rng) for g in above])
    if on and not above and rng.random() < 0.5:
        return f"{on_text} {RELATIONS['on'].en} {_en(item, 'the')}"
    if above and not on and rng.random() < 0.5:
        return f"{above_text} {RELATIONS['above'].en} {_en(item, 'the')}"
    text = _en(item)
    if on:
        text += f" with {on_text}"
    if above:
        text += f"{', and' if on else ' with'} {above_text} {RELATIONS['above'].en} it"
    return text


def _join_en(parts: list[str]) -> str:
    if not parts:
        return ""
    return parts[0] if len(parts) < 2 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _side_by_side(layout: Layout) -> tuple[Item, Item] | None:
    """Two neighbouring standalone floor pieces, left one first."""
    free = [it for it in layout.items if it.relation is None and it.depth > 0 and it.name != "rug"]
    if len(free) < 2:
        return None
    free.sort(key=lambda it: it.boxes[0][0])
    return free[0], free[1]


def catalog_text(layout: Layout, rng: np.random.Generator) -> str:
    groups = _groups(layout)
    order = rng.permutation(len(groups)) if rng.random() < 0.5 else range(len(groups))
    parts = [_en_group(groups[i], rng) for i in order]
    scene = layout.scene
    form = int(rng.integers(5))
    if form == 0:
        text = f"A {scene} with {_join_en(parts)}."
    elif form == 1:
        text = f"This {scene} has {_join_en(parts)}."
    elif form == 2:
        listed = _join_en(parts)
        text = f"{listed[0].upper()}{listed[1:]} in a {scene}."
    elif form == 3:
        text = f"{scene.capitalize()} featuring {_join_en(parts)}."
    else:
        text = f"This {scene} has {parts[0]}."
        for part in parts[1:]:
            verb = "are" if part.split()[0] in ("two", "three") else "is"
            text += f" There {verb} {part}."
    pair = _side_by_side(layout)
    if pair and rng.random() < 0.35:
        a, b = pair if rng.random() < 0.5 else pair[::-1]
        rel = RELATIONS["left of" if a is pair[0] else "right of"].en
        text += f" The {a.name} stands {rel} the {b.name}."
    return text


def title(layout: Layout) -> str:
    """Product-page title: "Bathroom set: wooden shelf with two wicker baskets, ..."."""

    def bare(group) -> str:
        item, on, above = group
        text = _en(item, "").strip()
        if on:
            text += " with " + _join_en([bare(g) for g in on])
        for g in above:
            text += f", {bare(g)} above the {item.name}"
        return text

    return f"{layout.scene.capitalize()} set: {', '.join(bare(g) for g in _groups(layout))}"


# ---- Japanese ---------------------------------------------------------------------------


def phrase_ja(name: str, material: str, color: str | None, count: int) -> str:
    """How a Japanese catalog caption names an object: "二つの赤い金属製の蛇口"."""
    words = [COLORS[color].ja if color else "", MATERIALS[material].ja, OBJECTS[name].ja]
    return (f"{COUNT_WORDS[count][1]}の" if count > 1 else "") + "".join(words)


def _ja(item: Item) -> str:
    return phrase_ja(item.name, item.material, item.color, item.count)


def _ja_group(group, rng: np.random.Generator) -> str:
    item, on, above = group
    on_text = "と".join(_ja_group(g, rng) for g in on)
    form = int(rng.integers(3))
    if on and form == 0:
        text = f"{on_text}を置いた{_ja(item)}"
    elif on:
        text = f"{_ja(item)}{'に' if form == 1 else RELATIONS['on'].ja}{on_text}"
    else:
        text = _ja(item)
    if above:
        text += f"、その{RELATIONS['above'].ja[1:]}" + "と".join(_ja_group(g, rng) for g in above)
    return text


def catalog_text_ja(layout: Layout, rng: np.random.Generator) -> str:
    groups = _groups(layout)
    order = rng.permutation(len(groups)) if rng.random() < 0.5 else range(len(groups))
    listed = "、".join(_ja_group(groups[i], rng) for i in order)
    scene = SCENES[layout.scene].ja
    form = int(rng.integers(5))
    text = (
        f"{listed}がある{scene}",
        f"{scene}には{listed}があります。",
        f"{listed}を備えた{scene}",
        f"{scene}：{listed}",
        f"{listed}のある{scene}です。",
    )[form]
    pair = _side_by_side(layout)
    if pair and rng.random() < 0.35:
        a, b = pair
        sep = "" if text.endswith("。") else "。"
        text += (
            f"{sep}{OBJECTS[b.name].ja}{RELATIONS['left of'].ja}{OBJECTS[a.name].ja}があります。"
        )
    return text


# ---- Web alt text -----------------------------------------------------------------------

_VAGUE_EN = (
    "nice {s}",
    "{s}",
    "interior",
    "{s} ideas",
    "my new {s}",
    "cozy {s}",
    "modern {s} design",
    "home interior",
    "{s} inspiration",
    "interior design",
)
_WITH_EN = ("{s} with {o}", "{o} in the {s}", "nice {s}, {o}", "{o}", "new {o} for my {s}")
_TWO_EN = ("{s} with {o} and {p}", "{o} and {p}", "{s}: {o}, {p}")
_VAGUE_JA = ("おしゃれな{s}", "インテリア", "{s}のインテリア", "素敵な{s}", "{s}", "新しい{s}")
_WITH_JA = ("{o}のある{s}", "{s}の{o}", "{o}", "おしゃれな{o}")
_TWO_JA = ("{o}と{p}のある{s}", "{o}と{p}", "{s}、{o}と{p}")


def web_text(layout: Layout, rng: np.random.Generator) -> tuple[str, str]:
    """Loose alt text naming the room and at most two objects; returns (text, lang)."""
    lang = "ja" if rng.random() < WEB_JA_SHARE else "en"
    k = int(rng.choice(3, p=(0.3, 0.45, 0.25)))
    items = [layout.items[i] for i in rng.permutation(len(layout.items))[:k]]
    words = [_web_object(it, lang, rng) for it in items]
    forms: tuple[str, ...]
    if lang == "en":
        scene = layout.scene
        forms = (_VAGUE_EN, _WITH_EN, _TWO_EN)[len(words)]
    else:
        scene = SCENES[layout.scene].ja
        forms = (_VAGUE_JA, _WITH_JA, _TWO_JA)[len(words)]
    words += ["", ""]
    return _pick(rng, forms).format(s=scene, o=words[0], p=words[1]), lang


def _web_object(item: Item, lang: str, rng: np.random.Generator) -> str:
    """The object loosely: bare noun mostly, sometimes one attribute."""
    obj, r = OBJECTS[item.name], rng.random()
    if lang == "en":
        noun = obj.plural if item.count > 1 and rng.random() < 0.5 else obj.name
        if r < 0.25:
            return f"{item.material} {noun}"
        if r < 0.4 and item.color:
            return f"{item.color} {noun}"
        return noun
    if r < 0.25:
        return MATERIALS[item.material].ja + obj.ja
    if r < 0.4 and item.color:
        return COLORS[item.color].ja + obj.ja
    return obj.ja
