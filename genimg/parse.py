"""Prompt -> requested objects: which objects a prompt asks for, in which material, colour
and count. English and Japanese, read from the one taxonomy module.

The parser scans the text once for the longest taxonomy word at each position (objects,
materials, colours, counts, rooms), then binds attributes to objects in two ways:

1. *before the noun*: a run of attributes joined only by spaces, articles or の that ends
   at an object ("two wicker baskets", "2つのバスケット", "白い陶器のシンク");
2. *in another clause*: any other attribute goes to the nearest object before it in the
   same sentence ("the faucet is chrome-plated", "シンクは白い陶器製で"), except the colour or
   material a thing goes with, which is not its own ("a sofa that goes well with yellow",
   "黒とよく調和する蛇口").

English words close to a catalog word are corrected first and reported ("woden shelf" ->
"wooden shelf"); words that are not in the checker's vocabulary are reported as unknown and
never scored.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import asdict, dataclass, field

from genimg.taxonomy import COLORS, COUNT_WORDS, MATERIALS, OBJECTS, SCENES

__all__ = ["ParseResult", "Requested", "parse_objects", "parse_prompt"]


@dataclass
class Requested:
    """One requested object. None means "not asked for" and is not checked."""

    phrase: str  # the words of the prompt that asked for it
    object: str  # a key of taxonomy.OBJECTS
    material: str | None = None
    color: str | None = None
    count: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ParseResult:
    objects: list[Requested] = field(default_factory=list)
    suggestions: list[dict] = field(default_factory=list)  # {"text", "suggestion"}
    unknown: list[str] = field(default_factory=list)  # phrases outside the vocabulary
    scene: str | None = None


# Words that never name a catalog thing; they are neither corrected nor reported unknown.
_STOP_WORDS = """
a an the this that these those it its is are was were be been has have had with and
or of in on at to for from by as into onto over under above below near next beside
left right behind front there here which who can could will would should may might
must do does very well also some any all both each every no not nor but so than then
too just made make makes design designs look looks style finish piece pieces set sits
sit stands stand placed place room rooms space photo picture image elegant modern
simple nice beautiful cozy small large big tall little new old classic one ones
plated colored coloured tone toned color colour harmonizes harmonize harmonises goes
go pairs paired pairing store stores holds hold toiletries accessories items things wall walls floor
corner side top middle stable tablet tablets self chain chains tube tubes shell
bathing bathe tape lamb mate night nights light lighting right tight might eight
fight sight
"""
_STOP = set(_STOP_WORDS.split())
# Nouns an attribute may precede without naming an object ("an elegant chrome design").
_GENERIC = {
    "design",
    "finish",
    "look",
    "style",
    "tone",
    "one",
    "ones",
    "accents",
    "color",
    "colour",
    "plated",
    "made",
    "piece",
}
_GLUE = re.compile(r"^(?:\s|の|な|-)*$")
_PAIR_OF = re.compile(r"^\s+of\s")  # "a pair of red lamps"
# What goes before (English) or after (Japanese) a colour or material a thing goes with.
_GOES_WITH_EN = re.compile(
    r"\b(?:harmoni[sz]e|go|pair|match|complement|blend|suit)(?:s|es|ed|ing)?"
    r"(?:\s+(?:well|nicely|beautifully|perfectly))?\s+with\s+(?:(?:the|a|an)\s+)?$"
)
_GOES_WITH_JA = re.compile(
    r"^(?:色)?[とに](?:よく|とても|美しく)?(?:調和|合う|合わせ|マッチ|相性|なじむ)"
)
_SENTENCE = re.compile(r"[.!?\n。！？]")
_EN_NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "pair": 2}
_JA_DIGITS = {"一": 1, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_JA_COUNTERS = ("つ", "個", "台", "脚", "本", "枚", "点")


def _plural(word: str) -> str:
    return word + ("es" if word.endswith(("s", "sh", "ch", "x")) else "s")


def _ja_stems(word: str) -> list[str]:
    """A Japanese adjective form and the stems a prompt may use ("木製の" -> "木製")."""
    forms = [word]
    stem = word.removesuffix("の")
    if stem != word and len(stem) >= 2:
        forms += [stem, stem + "製"]
    return forms


def _lexicon() -> dict[str, tuple[str, object, bool]]:
    """Surface form -> (kind, value, plural). Kinds: object, material, color, count, scene."""
    lex: dict[str, tuple[str, object, bool]] = {}
    for o in OBJECTS.values():
        for w in (o.name, *o.synonyms):
            lex[w] = ("object", o.name, False)
            lex.setdefault(_plural(w), ("object", o.name, True))
        lex[o.plural] = ("object", o.name, True)
        for w in (o.ja, *o.ja_synonyms):
            lex[w] = ("object", o.name, False)
    for table, kind in ((MATERIALS, "material"), (COLORS, "color")):
        for t in table.values():
            for w in (t.name, *t.synonyms):
                lex[w] = (kind, t.name, False)
                lex[w.replace("-", " ")] = (kind, t.name, False)
            for w in (t.ja, *t.ja_synonyms):
                for form in _ja_stems(w):
                    lex.setdefault(form, (kind, t.name, False))
    for s in SCENES.values():
        for w in (s.name, *s.synonyms, s.ja, *s.ja_synonyms):
            lex[w] = ("scene", s.name, False)
    for word, n in _EN_NUMBERS.items():
        lex[word] = ("count", n, False)
    for n, (en, ja) in COUNT_WORDS.items():
        lex[en] = ("count", n, False)
        lex[ja] = ("count", n, False)
    for kanji, n in _JA_DIGITS.items():
        for counter in _JA_COUNTERS:
            lex[kanji + counter] = ("count", n, False)
            lex[str(n) + counter] = ("count", n, False)
    lex["a"] = lex["an"] = ("article", 1, False)
    return lex


_LEX = _lexicon()
_MAX_LEN = max(map(len, _LEX))
# Words a misspelling may be corrected to: single English words of the lexicon.
_EN_WORDS = sorted({w for s in _LEX if s.isascii() for w in s.split()} - _STOP - {"a", "an"})


@dataclass
class _Mention:
    kind: str
    value: object
    plural: bool
    start: int
    end: int


def _is_word_char(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch == "-")


def _correct(text: str) -> tuple[str, list[tuple[int, int, int, int]]]:
    """Replace English words close to a lexicon word. Returns the corrected text and the
    replaced spans as (orig_start, orig_end, new_start, new_end)."""
    out, spans, pos, shift = [], [], 0, 0
    for m in re.finditer(r"[a-z]+(?:-[a-z]+)*", text):
        word = m.group()
        if word in _LEX or word in _STOP or len(word) < 4:
            continue
        close = [
            c
            for c in difflib.get_close_matches(word, _EN_WORDS, n=3, cutoff=0.82)
            if c[0] == word[0]
        ]
        if not close:
            continue
        out.append(text[pos : m.start()] + close[0])
        new_start = m.start() + shift
        spans.append((m.start(), m.end(), new_start, new_start + len(close[0])))
        shift += len(close[0]) - len(word)
        pos = m.end()
    out.append(text[pos:])
    return "".join(out), spans


def _scan(text: str) -> tuple[list[_Mention], list[tuple[int, int]]]:
    """Longest lexicon match at each position; unmatched English words are returned apart."""
    mentions, words, i = [], [], 0
    while i < len(text):
        for n in range(min(_MAX_LEN, len(text) - i), 0, -1):
            surface = text[i : i + n]
            hit = _LEX.get(surface)
            if (
                hit
                and surface.isascii()
                and (
                    (i > 0 and _is_word_char(text[i - 1]))
                    or (i + n < len(text) and _is_word_char(text[i + n]))
                )
            ):
                hit = None  # an English word must stand alone ("mat" is not in "made")
            if hit:
                mentions.append(_Mention(hit[0], hit[1], hit[2], i, i + n))
                i += n
                break
        else:
            m = re.match(r"\d+|[a-z]+(?:-[a-z]+)*", text[i:])
            if m and m.group().isdigit():
                mentions.append(_Mention("count", int(m.group()), False, i, i + m.end()))
            elif m:
                words.append((i, i + m.end()))
            i += m.end() if m else 1
    return mentions, words


def _bind(text: str, mentions: list[_Mention]) -> list[tuple[_Mention, list[_Mention], int]]:
    """(object mention, its attributes, phrase start) in order of first mention."""
    bound: list[tuple[_Mention, list[_Mention], int]] = []
    chain: list[_Mention] = []
    loose: list[_Mention] = []
    for k, m in enumerate(mentions):
        if m.kind == "object":
            bound.append((m, chain, chain[0].start if chain else m.start))
            chain = []
            continue
        pair = text[m.start : m.end] == "pair"
        if m.kind == "scene" or (pair and not _PAIR_OF.match(text[m.end :])):
            continue  # "pair" counts only as "a pair of": "they pair well" is no count
        nxt = mentions[k + 1] if k + 1 < len(mentions) else None
        between = text[m.end : nxt.start] if nxt else ""
        if (
            nxt
            and nxt.kind in ("object", "material", "color", "count", "article")
            and (_GLUE.match(between) or (pair and _PAIR_OF.match(between)))
        ):
            chain.append(m)
        else:
            loose.extend([*chain, m])
            chain = []
    # Attributes in another clause: the nearest object before them in the same sentence.
    for a in loose:
        if a.kind == "article" or _goes_with(text, a):
            continue
        owners = [
            b
            for b in bound
            if b[0].end <= a.start and not _SENTENCE.search(text[b[0].end : a.start])
        ]
        if owners:
            owners[-1][1].append(a)
    return bound


def _goes_with(text: str, m: _Mention) -> bool:
    """Whether a colour or material is what a thing goes with ("harmonizes well with black",
    "黒とよく調和する"), not the thing's own."""
    if m.kind not in ("color", "material"):
        return False
    return bool(_GOES_WITH_EN.search(text[: m.start]) or _GOES_WITH_JA.match(text[m.end :]))


def _requested(
    text: str, obj: _Mention, attrs: list[_Mention], start: int, pre_noun: set[int]
) -> Requested:
    o = OBJECTS[str(obj.value)]
    req = Requested(phrase=text[start : obj.end], object=o.name)
    for a in attrs:
        attached_before = id(a) in pre_noun
        if a.kind == "material" and req.material is None:
            if attached_before or a.value in o.materials:
                req.material = str(a.value)
        elif a.kind == "color" and req.color is None:
            req.color = str(a.value)
        elif a.kind == "count" and req.count is None:
            req.count = int(a.value)  # type: ignore[call-overload]
        elif a.kind == "article" and attached_before and not obj.plural and o.max_count > 1:
            req.count = req.count or 1
    if req.material and not MATERIALS[req.material].colors:
        req.color = None  # chrome is chrome: the material fixes the look
    return req


def _parse(text: str, unknown_words: bool) -> ParseResult:
    text = unicodedata.normalize("NFKC", text).lower()
    fixed, corrections = _correct(text)
    mentions, words = _scan(fixed)
    result = ParseResult()
    result.scene = next((str(m.value) for m in mentions if m.kind == "scene"), None)
    merged: dict[str, Requested] = {}
    for obj, attrs, start in _bind(fixed, mentions):
        pre = {id(a) for a in attrs if a.end <= obj.start}
        req = _requested(fixed, obj, attrs, start, pre)
        phrase_orig = _original(text, fixed, corrections, start, obj.end)
        if phrase_orig != req.phrase:
            result.suggestions.append({"text": phrase_orig, "suggestion": req.phrase})
        req.phrase = phrase_orig
        if req.object in merged:  # a second mention fills what the first left open
            first = merged[req.object]
            for name in ("material", "color", "count"):
                if getattr(first, name) is None:
                    setattr(first, name, getattr(req, name))
        else:
            merged[req.object] = req
    result.objects = list(merged.values())
    # Unknown: an attribute run that ends at a word we do not know ("a red toaster"), or in
    # an explicit list, any word we do not know.
    for s, e in words:
        word = fixed[s:e]
        if word in _STOP:
            continue
        before = [m for m in mentions if m.end <= s and m.kind in ("material", "color", "count")]
        joined = bool(before) and bool(_GLUE.match(fixed[before[-1].end : s]))
        if unknown_words or (joined and word not in _GENERIC):
            lead = before[-1].start if joined else s
            result.unknown.append(_original(text, fixed, corrections, lead, e))
    return result


def _original(text: str, fixed: str, corrections: list, start: int, end: int) -> str:
    """Map a span of the corrected text back to the words the user wrote."""

    def back(pos: int, at_end: bool) -> int:
        shift = 0
        for o0, o1, n0, n1 in corrections:
            if pos < n0 or (pos == n0 and at_end):
                break
            if pos < n1 or (pos == n1 and at_end):
                return o1 if at_end else o0
            shift = o1 - n1
        return pos + shift

    return text[back(start, False) : back(end, True)]


def parse_prompt(prompt: str) -> ParseResult:
    """The objects a free-text prompt (English or Japanese) asks for."""
    return _parse(prompt, unknown_words=False)


def parse_objects(items: str | list[str]) -> ParseResult:
    """An explicit list, "wooden shelf; 2 baskets" (';' or newlines), one object per item.
    Items naming no catalog object, and unknown words, are reported as unknown."""
    if isinstance(items, str):
        items = re.split(r"[;\n；]", items)
    result = ParseResult()
    for item in (i.strip() for i in items):
        if not item:
            continue
        part = _parse(item, unknown_words=True)
        if not part.objects:
            result.unknown.append(item)
            continue
        result.objects.extend(part.objects[:1])
        result.suggestions.extend(part.suggestions)
        result.unknown.extend(u for u in part.unknown if u not in result.unknown)
        result.scene = result.scene or part.scene
    return result
