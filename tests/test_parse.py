"""The prompt parser: English and Japanese prompts to requested objects."""

from __future__ import annotations

import pytest

from genimg.parse import parse_objects, parse_prompt
from genimg.taxonomy import COLORS, MATERIALS, OBJECTS

DESIGN_EN = (
    "This bathroom has a wooden shelf with two baskets that can store toiletries and "
    "accessories. The sink is made of white ceramic, and the faucet is an elegant "
    "chrome-plated design that harmonizes well with black."
)
DESIGN_JA = (
    "このバスルームには、トイレ用品や小物を収納できる2つのバスケットが置かれた木製の棚が"
    "あります。シンクは白い陶器製で、蛇口は黒とよく調和するエレガントなクロムめっきの"
    "デザインです。"
)
EXPECTED = {
    ("shelf", "wooden", None, None),
    ("basket", None, None, 2),
    ("sink", "white ceramic", None, None),
    ("faucet", "chrome", None, None),  # "black" is what it harmonizes with; chrome is chrome
}


def _tuples(result):
    return {(o.object, o.material, o.color, o.count) for o in result.objects}


@pytest.mark.parametrize("prompt", [DESIGN_EN, DESIGN_JA], ids=["en", "ja"])
def test_design_prompt(prompt):
    result = parse_prompt(prompt)
    assert _tuples(result) == EXPECTED
    assert result.scene == "bathroom"
    assert result.suggestions == [] and result.unknown == []


def test_design_prompt_phrases():
    phrases = {o.object: o.phrase for o in parse_prompt(DESIGN_EN).objects}
    assert phrases["shelf"] == "a wooden shelf" and phrases["basket"] == "two baskets"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("two wicker baskets", ("basket", "wicker", None, 2)),
        ("2 wicker baskets", ("basket", "wicker", None, 2)),
        ("2つのバスケット", ("basket", None, None, 2)),
        ("二つのバスケット", ("basket", None, None, 2)),
        ("３つの花瓶", ("vase", None, None, 3)),  # full-width digit
        ("a white ceramic sink", ("sink", "white ceramic", None, None)),
        ("白い陶器のシンク", ("sink", "white ceramic", None, None)),
        ("the faucet is chrome-plated", ("faucet", "chrome", None, None)),
        ("シンクは白い陶器製", ("sink", "white ceramic", None, None)),
        ("a red fabric sofa", ("sofa", "fabric", "red", None)),
        ("The sofa is upholstered in blue", ("sofa", "fabric", "blue", None)),
        ("赤い布製のソファ", ("sofa", "fabric", "red", None)),
        ("a basket", ("basket", None, None, 1)),  # "a" is a count for objects that come in threes
        ("a black chrome faucet", ("faucet", "chrome", None, None)),
    ],
)
def test_single_objects(text, expected):
    assert _tuples(parse_prompt(text)) == {expected}


def test_attributes_bind_to_their_own_noun():
    result = parse_prompt("a red sofa and a blue rug. The lamp is brass.")
    assert _tuples(result) == {
        ("sofa", None, "red", None),
        ("rug", None, "blue", None),
        ("lamp", "brass", None, None),
    }


@pytest.mark.parametrize(
    "text, expected",
    [
        # The colour a thing goes with is not its own, in any clause or language.
        (
            "a sink that harmonizes well with black and two baskets",
            {("sink", None, None, None), ("basket", None, None, 2)},
        ),
        (
            "a wooden sofa that goes well with yellow",
            {("sofa", "wooden", None, None)},
        ),
        (
            "木製の棚には、黄色とよく調和するバスケットがあります",
            {("shelf", "wooden", None, None), ("basket", None, None, None)},
        ),
        (
            "赤いソファは白に合う",
            {("sofa", None, "red", None)},
        ),
        # "pair" is a count only as "a pair of"; "pairs well" is none.
        (
            "The sofa pairs well with the lamp",
            {("sofa", None, None, None), ("lamp", None, None, None)},
        ),
        (
            "the sofa and the lamp pair well",
            {("sofa", None, None, None), ("lamp", None, None, None)},
        ),
        ("a pair of red lamps", {("lamp", None, "red", 2)}),
    ],
)
def test_what_a_thing_goes_with_is_not_its_own(text, expected):
    assert _tuples(parse_prompt(text)) == expected


def test_misspelling_corrected_and_reported():
    result = parse_prompt("a woden shelf next to a cofee table")
    assert _tuples(result) == {("shelf", "wooden", None, None), ("coffee table", None, None, None)}
    assert {"text": "a woden shelf", "suggestion": "a wooden shelf"} in result.suggestions
    assert {"text": "a cofee table", "suggestion": "a coffee table"} in result.suggestions
    assert result.objects[0].phrase == "a woden shelf"  # the user's own words


def test_common_words_are_not_corrected():
    result = parse_prompt("The shelf stands to the right of the sink, on the left at night")
    assert {o.object for o in result.objects} == {"shelf", "sink"}
    assert result.suggestions == []


def test_explicit_list():
    result = parse_objects("wooden shelf; 2 baskets")
    assert [(o.object, o.material, o.count) for o in result.objects] == [
        ("shelf", "wooden", None),
        ("basket", None, 2),
    ]
    assert parse_objects(["white ceramic sink", "蛇口"]).objects[1].object == "faucet"


def test_unknown_words_reported_not_scored():
    result = parse_objects("toaster; sparkly red sofa; woden shelf")
    assert [o.object for o in result.objects] == ["sofa", "shelf"]
    assert "toaster" in result.unknown and "sparkly" in result.unknown
    assert result.suggestions == [{"text": "woden shelf", "suggestion": "wooden shelf"}]
    prompt = parse_prompt("a kitchen with a red toaster and 3 stools")
    assert prompt.unknown == ["red toaster"]
    assert _tuples(prompt) == {("stool", None, None, 3)}


def test_no_object():
    assert parse_prompt("a sunny afternoon").objects == []
    assert parse_objects(" ; ").objects == []


def test_every_taxonomy_word_parses():
    for o in OBJECTS.values():
        for word in (o.name, o.plural, o.ja, *o.synonyms, *o.ja_synonyms):
            assert [r.object for r in parse_prompt(word).objects] == [o.name], word
    for m in MATERIALS.values():
        for word in (m.name, *m.synonyms, m.ja, *m.ja_synonyms):
            obj = next(o for o in OBJECTS.values() if m.name in o.materials)
            sep = "" if word[0] > "~" else " "
            got = parse_prompt(word + sep + (obj.ja if sep == "" else obj.name)).objects
            assert got[0].material == m.name, word
    for c in COLORS.values():
        for word in (c.name, *c.synonyms, c.ja, *c.ja_synonyms):
            sep = "" if word[0] > "~" else " "
            got = parse_prompt(word + sep + ("ソファ" if sep == "" else "sofa")).objects
            assert got[0].color == c.name, word
