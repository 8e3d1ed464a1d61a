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

__all__ = [
    "catalog_free",
    "catalog_free_ja",
    "catalog_prose",
    "catalog_prose_ja",
    "catalog_text",
    "catalog_text_ja",
    "phrase_en",
    "phrase_ja",
    "title",
    "web_text",
]

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


def _a(word: str) -> str:
    """The indefinite article before `word`."""
    return "an" if word[0] in "aeiou" else "a"


def _en(item: Item, article: str = "a") -> str:
    text = phrase_en(item.name, item.material, item.color, item.count)
    if item.count > 1:
        return text
    if article == "a":
        article = _a(text)
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


# ---- Product-page prose ----------------------------------------------------------------
# What a product page's description says, beside its listing: an opening sentence naming
# some objects (small ones sometimes without their attributes, often with what they are
# for), then one sentence per remaining object with its material and colour after the verb
# ("The sink is made of white ceramic"), design words, and a colour the piece "goes with"
# that no object has. Every object is still named; an attribute is left out, never wrong.

_MAT_NOUN_EN = {"wooden": "wood", "chrome": "chrome-plated metal"}  # else the material name
# What things are for; no word here names a catalog object, material or colour.
_USES_EN = {
    "basket": ("toiletries", "accessories", "small items", "toys", "magazines", "laundry"),
    "shelf": ("books", "toiletries", "dishes", "small items", "spices"),
    "cabinet": ("dishes", "cleaning supplies", "cookware"),
    "nightstand": ("books", "a phone", "an alarm clock"),
    "coffee table": ("books", "magazines", "cups"),
}
_USES_JA = {
    "basket": ("トイレ用品", "小物", "おもちゃ", "雑誌", "洗濯物"),
    "shelf": ("本", "トイレ用品", "食器", "小物", "調味料"),
    "cabinet": ("食器", "掃除用品", "調理器具"),
    "nightstand": ("本", "スマートフォン", "目覚まし時計"),
    "coffee table": ("本", "雑誌", "カップ"),
}
_DESIGN_EN = ("elegant", "simple", "modern", "classic", "sturdy", "minimalist")
_DESIGN_JA = ("エレガントな", "シンプルな", "モダンな", "クラシックな", "上品な")
_MAT_PRED_JA = {
    "wooden": "木製",
    "metal": "金属製",
    "white ceramic": "白い陶器製",
    "wicker": "籐製",
    "glass": "ガラス製",
    "marble": "大理石",
    "chrome": "クロムめっき",
    "brass": "真鍮製",
    "fabric": "布製",
}
_COLOR_NOUN_JA = {c: COLORS[c].ja_synonyms[-1] for c in COLORS}  # 白, 黒, グレー, 黄色, ...
_COUNT_JA = {2: ("二つ", "2つ", "2個"), 3: ("三つ", "3つ", "3個")}


def _free_color(layout: Layout, rng: np.random.Generator) -> str:
    """A colour no object of the layout has: the one the design "goes with"."""
    used = {it.color for it in layout.items}
    return _pick(rng, [c for c in COLORS if c not in used])


def _uses(name: str, table: dict, rng: np.random.Generator) -> list[str]:
    uses = table.get(name, ())
    if not uses or rng.random() < 0.4:
        return []
    return [uses[i] for i in sorted(rng.choice(len(uses), size=2, replace=False))]


def _prose_np_en(item: Item, full: bool = True) -> str:
    """The item as a noun phrase; `full=False` keeps only the count ("two baskets")."""
    if full:
        return _en(item)
    if item.count > 1:
        return f"{COUNT_WORDS[item.count][0]} {OBJECTS[item.name].plural}"
    return f"{_a(item.name)} {item.name}"


def _prose_attrs_en(
    item: Item, layout: Layout, rng: np.random.Generator, counted: bool = False
) -> str:
    """A sentence giving the item's material and colour after the verb; `counted`: the
    count was not said before ("The two vases are made of brass")."""
    obj, mat = OBJECTS[item.name], _MAT_NOUN_EN.get(item.material, item.material)
    subject = f"The {obj.plural}" if item.count > 1 else f"The {item.name}"
    if counted and item.count > 1:
        subject = f"The {COUNT_WORDS[item.count][0]} {obj.plural}"
    verb = "are" if item.count > 1 else "is"
    color = f"{item.color} " if item.color else ""
    form = int(rng.integers(3))
    if form == 0:
        return f"{subject} {verb} made of {color}{mat}"
    if form == 1 and item.count == 1:
        design = _pick(rng, _DESIGN_EN)
        text = f"{subject} is {_a(design)} {design} {color}{_mat_adj_en(item)} design"
        if rng.random() < 0.6:
            text += f" that {_pick(rng, ('harmonizes well', 'goes well', 'blends nicely'))} "
            text += f"with {_free_color(layout, rng)}"
        return text
    return f"{subject} {verb} {color}{_mat_adj_en(item)}"


def _mat_adj_en(item: Item) -> str:
    return "chrome-plated" if item.material == "chrome" else item.material


def catalog_prose(layout: Layout, rng: np.random.Generator) -> str:
    """Product-page prose in English; every object named, attributes sometimes left out."""
    roots = _groups(layout)
    groups = [roots[i] for i in rng.permutation(len(roots))]
    n_intro = int(rng.integers(1, min(2, len(groups)) + 1))
    later: list[Item] = []  # items named without attributes: described in their own sentence
    intro = []
    for item, on, above in groups[:n_intro]:
        text = _prose_np_en(item)
        if on:
            bare = rng.random() < 0.5
            children = [g[0] for g in on]
            text += f" {_pick(rng, ('with', 'holding'))} "
            text += _join_en([_prose_np_en(c, full=not bare) for c in children])
            later += children if bare else []
            uses = _uses(children[-1].name, _USES_EN, rng)
            if uses:
                verb = "store" if rng.random() < 0.5 else "hold"
                text += f" that can {verb} {uses[0]} and {uses[1]}"
            for g in on:  # deeper levels (a faucet on a sink on a cabinet) as in the listing
                later += [x[0] for x in g[1] + g[2]]
        elif uses := _uses(item.name, _USES_EN, rng):
            text += f" for {uses[0]} and {uses[1]}"
        for g in above:
            text += f", with {_en(g[0])} above it"
        intro.append(text)
    scene = layout.scene
    opening = _pick(
        rng,
        (
            f"This {scene} has {{}}.",
            f"In this {scene} you will find {{}}.",
            f"Our {scene} set brings together {{}}.",
        ),
    ).format(_join_en(intro))
    sentences = []
    for item in later:
        sentences.append(_prose_attrs_en(item, layout, rng))
    for item, on, above in groups[n_intro:]:
        sentences.append(_prose_attrs_en(item, layout, rng, counted=True))
        for g in on:
            sentences.append(f"On the {item.name} {'are' if g[0].count > 1 else 'is'} {_en(g[0])}")
            sentences += [f"On the {g[0].name} is {_en(x[0])}" for x in g[1]]
        for g in above:
            sentences.append(f"Above the {item.name} hangs {_en(g[0])}")
    text = opening
    i = 0
    while i < len(sentences):
        if i + 1 < len(sentences) and rng.random() < 0.4:
            second = sentences[i + 1]
            text += f" {sentences[i]}, and {second[0].lower()}{second[1:]}."
            i += 2
        else:
            text += f" {sentences[i]}."
            i += 1
    return text


def _prose_np_ja(item: Item, rng: np.random.Generator, full: bool = True) -> str:
    """The item as a noun phrase, the count written 二つ, 2つ or 2個; `full=False` keeps
    only the count ("2つのバスケット")."""
    count = f"{_pick(rng, _COUNT_JA[item.count])}の" if item.count > 1 else ""
    if not full:
        return count + OBJECTS[item.name].ja
    return count + phrase_ja(item.name, item.material, item.color, 1)


def _prose_attrs_ja(
    item: Item, layout: Layout, rng: np.random.Generator, counted: bool = False
) -> str:
    """A clause giving the item's material and colour as the predicate, without 。."""
    name = OBJECTS[item.name].ja
    if counted and item.count > 1:
        name = f"{_pick(rng, _COUNT_JA[item.count])}の{name}"
    color = COLORS[item.color].ja if item.color else ""
    mat = _MAT_PRED_JA[item.material]
    if rng.random() < 0.5:
        return f"{name}は{color}{mat}"
    design = _pick(rng, _DESIGN_JA)
    text = f"{name}は"
    if rng.random() < 0.6:
        text += f"{_COLOR_NOUN_JA[_free_color(layout, rng)]}とよく調和する"
    material = MATERIALS[item.material].ja
    return text + f"{design}{color}{material}デザイン"


def catalog_prose_ja(layout: Layout, rng: np.random.Generator) -> str:
    """Product-page prose in Japanese, as `catalog_prose`."""
    roots = _groups(layout)
    groups = [roots[i] for i in rng.permutation(len(roots))]
    n_intro = int(rng.integers(1, min(2, len(groups)) + 1))
    later: list[Item] = []
    intro = []
    for item, on, above in groups[:n_intro]:
        text = _prose_np_ja(item, rng)
        if on:
            bare = rng.random() < 0.5
            children = [g[0] for g in on]
            listed = "と".join(_prose_np_ja(c, rng, full=not bare) for c in children)
            later += children if bare else []
            uses = _uses(children[-1].name, _USES_JA, rng)
            use = f"{uses[0]}や{uses[1]}を収納できる" if uses else ""
            verb = _pick(rng, ("が置かれた", "を載せた", "を置いた"))
            text = f"{use}{listed}{verb}{text}"
            for g in on:
                later += [x[0] for x in g[1] + g[2]]
        elif uses := _uses(item.name, _USES_JA, rng):
            text = f"{uses[0]}や{uses[1]}を収納できる{text}"
        for g in above:
            text += f"、その上方に{_ja(g[0])}"
        intro.append(text)
    scene = SCENES[layout.scene].ja
    listed = "、".join(intro)
    text = _pick(
        rng,
        (
            f"この{scene}には、{listed}があります。",
            f"{listed}のある{scene}です。",
            f"{scene}に{listed}を備えました。",
        ),
    )
    clauses = [_prose_attrs_ja(item, layout, rng) for item in later]
    for item, on, above in groups[n_intro:]:
        clauses.append(_prose_attrs_ja(item, layout, rng, counted=True))
        name = OBJECTS[item.name].ja
        for g in on:
            clauses.append(f"{name}の上には{_ja(g[0])}があり")
            clauses += [f"{OBJECTS[g[0].name].ja}の上には{_ja(x[0])}があり" for x in g[1]]
        for g in above:
            clauses.append(f"{name}の上方には{_ja(g[0])}があり")
    i = 0
    while i < len(clauses):
        if i + 1 < len(clauses) and rng.random() < 0.5:
            text += f"{_ja_te(clauses[i])}、{_ja_end(clauses[i + 1])}。"
            i += 2
        else:
            text += f"{_ja_end(clauses[i])}。"
            i += 1
    return text


def _ja_te(clause: str) -> str:
    """The clause as a non-final predicate: "シンクは白い陶器製で"."""
    return clause + ("" if clause.endswith("があり") else "で")


def _ja_end(clause: str) -> str:
    return clause[: -len("があり")] + "があります" if clause.endswith("があり") else clause + "です"


# ---- Free-form copy (a fifth column, in other registers) ----------------------------------
# Shop copy in forms neither the listing nor the prose templates use: inventories ("Mirror:
# brass."), openers without a verb, things placed with verbs ("rests on", "hangs above"),
# imperatives ("Complete the look with ..."). Same rule: every object named, no attribute
# wrong; an attribute may be left out.

_FREE_OPEN_EN = (
    "Featuring {}.",
    "{S} essentials: {}.",
    "Shown here: {}.",
    "A {adj} {s} with {}.",
    "Everything this {s} needs: {}.",
)
_FREE_BARE_EN = ("Step into a {adj} {s}.", "Your {s}, refreshed.", "A {adj} {s}, piece by piece.")
_FREE_ADJ_EN = ("calm", "bright", "warm", "cozy", "quiet", "sunny")
_FREE_MADE_EN = ("comes in", "is crafted from", "is done in")
_FREE_PLACE_EN = ("stands in the corner", "sits by the wall", "waits nearby", "fills the space")
_FREE_ADD_EN = (
    "Complete the look with {}",
    "Add {} for a finishing touch",
    "Don't miss {}",
    "Finish with {}",
)


def _verb(verb: str, count: int) -> str:
    """The singular verb phrase `verb` made to agree with `count`: "hangs above" -> "hang
    above", "is done in" -> "are done in"."""
    if count == 1:
        return verb
    first, _, rest = verb.partition(" ")
    return " ".join(w for w in ("are" if first == "is" else first[:-1], rest) if w)


def _free_item_en(item: Item, rng: np.random.Generator) -> str:
    """One sentence about one item, in one of the free forms, without the full stop."""
    obj = OBJECTS[item.name]
    form = int(rng.integers(4))
    if item.relation and form != 2:  # a placed thing is not said to stand elsewhere
        rel, target = item.relation
        verb = "hangs above" if rel == "above" else _pick(rng, ("rests on", "sits on", "stands on"))
        text = f"{_en(item)} {_verb(verb, item.count)} the {target}"
        return text[0].upper() + text[1:]
    if form == 0:  # inventory: "Mirror: brass." / "Baskets: two, wicker."
        noun = obj.plural if item.count > 1 else obj.name
        words = [w for w in (item.color, _mat_adj_en(item)) if w]
        count = f"{COUNT_WORDS[item.count][0]}, " if item.count > 1 else ""
        return f"{noun.capitalize()}: {count}{' '.join(words)}"
    if form == 1:
        subject = f"{COUNT_WORDS[item.count][0]} {obj.plural}" if item.count > 1 else obj.name
        mat = _MAT_NOUN_EN.get(item.material, item.material)
        verb = _verb(_pick(rng, _FREE_MADE_EN), item.count)
        return f"The {subject} {verb} {item.color + ' ' if item.color else ''}{mat}"
    if form == 2:
        return _pick(rng, _FREE_ADD_EN).format(_en(item))
    text = f"{_en(item)} {_verb(_pick(rng, _FREE_PLACE_EN), item.count)}"
    return text[0].upper() + text[1:]


def catalog_free(layout: Layout, rng: np.random.Generator) -> str:
    """Free-form shop copy in English (see the section's comment)."""
    return _free_copy(layout, rng, en=True)


_FREE_OPEN_JA = (
    "{}をそろえた{s}。",
    "{s}の定番：{}。",
    "{adj}{s}。{}がそろっています。",
    "主役は{}。",
)
_FREE_BARE_JA = ("{adj}{s}。", "{s}をリフレッシュ。", "{adj}{s}をつくるアイテム。")
_FREE_ADJ_JA = ("落ち着いた", "明るい", "あたたかな", "居心地のよい", "静かな")
_FREE_PLACE_JA = ("隅には{}", "そばには{}", "壁際に{}", "{}がアクセント")
_FREE_ADD_JA = ("{}を添えて", "仕上げに{}を", "{}もおすすめです")


def _free_item_ja(item: Item, rng: np.random.Generator) -> str:
    """One sentence about one item, without the 。."""
    obj = OBJECTS[item.name]
    form = int(rng.integers(4))
    if item.relation and form != 2:  # a placed thing is not said to stand elsewhere
        rel, target = item.relation
        place = f"{OBJECTS[target].ja}の{'上方' if rel == 'above' else '上'}に"
        verb = "を掛けて" if rel == "above" else _pick(rng, ("を置いて", "を載せて"))
        return f"{place}{_ja(item)}{verb}"
    if form == 0:  # inventory: "鏡：真鍮" / "バスケット：2つ・籐"
        words = [_pick(rng, _COUNT_JA[item.count])] if item.count > 1 else []
        words += [COLORS[item.color].ja_synonyms[-1]] if item.color else []
        words.append(_MAT_PRED_JA[item.material])
        return f"{obj.ja}：{'・'.join(words)}"
    if form == 1:
        name = f"{_pick(rng, _COUNT_JA[item.count])}の{obj.ja}" if item.count > 1 else obj.ja
        color = COLORS[item.color].ja if item.color else ""
        return f"{name}は{color}{_MAT_PRED_JA[item.material]}で統一"
    table = _FREE_ADD_JA if form == 2 else _FREE_PLACE_JA
    return _pick(rng, table).format(_ja(item))


def catalog_free_ja(layout: Layout, rng: np.random.Generator) -> str:
    """Free-form shop copy in Japanese, as `catalog_free`."""
    return _free_copy(layout, rng, en=False)


def _free_copy(layout: Layout, rng: np.random.Generator, en: bool) -> str:
    """An opener listing up to three unplaced items (or none), then a sentence per item."""
    items = [layout.items[i] for i in rng.permutation(len(layout.items))]
    adj = _pick(rng, _FREE_ADJ_EN if en else _FREE_ADJ_JA)
    scene = layout.scene if en else SCENES[layout.scene].ja
    n_open = int(rng.integers(0, min(3, len(items)) + 1))
    opened = [it for it in items[:n_open] if not it.relation]  # placed things get a sentence
    if opened:
        listed = _join_en([_en(it) for it in opened]) if en else "、".join(map(_ja, opened))
        opener = _pick(rng, _FREE_OPEN_EN if en else _FREE_OPEN_JA)
        text = opener.format(listed, S=scene.capitalize(), s=scene, adj=adj)
    else:
        text = _pick(rng, _FREE_BARE_EN if en else _FREE_BARE_JA).format(s=scene, adj=adj)
    for item in items:
        if item not in opened:
            text += f" {_free_item_en(item, rng)}." if en else f"{_free_item_ja(item, rng)}。"
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
