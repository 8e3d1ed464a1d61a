"""The world of the procedural catalog, as data.

Every stage reads the world from here: the renderer (what may stand in which room, in which
materials and colours), the caption writer (English and Japanese words), the prompt parser
(words and synonyms back to names) and the checker (the vocabulary it can score). Nothing
else in the package may hard-code an object, material or colour name.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "COLORS",
    "COUNT_WORDS",
    "MATERIALS",
    "OBJECTS",
    "RELATIONS",
    "SCENES",
    "Color",
    "Material",
    "ObjectType",
    "Relation",
    "Scene",
    "object_names",
]


@dataclass(frozen=True)
class Color:
    name: str  # canonical English name, used in records
    ja: str  # Japanese adjective form, as it stands before a noun ("赤い")
    rgb: tuple[int, int, int]  # base colour the renderer shades from
    synonyms: tuple[str, ...] = ()  # other English words that mean it (parser)
    ja_synonyms: tuple[str, ...] = ()


@dataclass(frozen=True)
class Material:
    name: str
    ja: str  # Japanese adjective form ("木製の")
    # Colours the material may take. Empty: the material fixes its look (chrome is chrome),
    # and records carry color=None for it.
    colors: tuple[str, ...]
    synonyms: tuple[str, ...] = ()
    ja_synonyms: tuple[str, ...] = ()


@dataclass(frozen=True)
class ObjectType:
    name: str  # canonical English singular, used in records ("potted plant")
    plural: str
    ja: str
    materials: tuple[str, ...]  # materials it comes in, each a key of MATERIALS
    scenes: tuple[str, ...]  # rooms it may appear in, each a key of SCENES
    max_count: int = 1  # small objects come in ones to threes
    synonyms: tuple[str, ...] = ()
    ja_synonyms: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scene:
    name: str
    ja: str
    synonyms: tuple[str, ...] = ()
    ja_synonyms: tuple[str, ...] = ()


@dataclass(frozen=True)
class Relation:
    name: str  # "on", "above", "left of", "right of"
    en: str  # English phrase between subject and object ("sitting on")
    ja: str  # Japanese postposition phrase after the object noun ("の上に")


_ALL = ("white", "black", "gray", "red", "blue", "green", "yellow", "brown", "beige", "pink")

COLORS: dict[str, Color] = {
    c.name: c
    for c in (
        Color("white", "白い", (236, 236, 230), (), ("白",)),
        Color("black", "黒い", (34, 34, 38), (), ("黒",)),
        Color("gray", "グレーの", (128, 130, 134), ("grey",), ("灰色の", "グレー")),
        Color("red", "赤い", (196, 40, 36), (), ("赤",)),
        Color("blue", "青い", (40, 84, 190), (), ("青",)),
        Color("green", "緑の", (48, 146, 64), (), ("緑",)),
        Color("yellow", "黄色い", (232, 200, 40), (), ("黄色の", "黄色")),
        Color("brown", "茶色の", (120, 74, 40), (), ("茶色",)),
        Color("beige", "ベージュの", (214, 196, 160), (), ("ベージュ",)),
        Color("pink", "ピンクの", (232, 140, 170), (), ("ピンク",)),
    )
}

MATERIALS: dict[str, Material] = {
    m.name: m
    for m in (
        Material("wooden", "木製の", ("brown", "beige", "white", "black"), ("wood",), ("木の",)),
        Material(
            "metal",
            "金属製の",
            ("black", "white", "gray", "red", "blue", "green", "yellow"),
            ("metallic", "steel"),
            ("金属の", "スチールの"),
        ),
        Material(
            "white ceramic",
            "白い陶器の",
            (),
            ("ceramic", "porcelain"),
            ("陶器の", "陶製の", "セラミックの"),
        ),
        Material(
            "wicker",
            "籐の",
            ("brown", "beige", "white", "black"),
            ("rattan", "woven"),
            ("ラタンの", "籐製の"),
        ),
        Material("glass", "ガラスの", ("blue", "green", "gray"), (), ("ガラス製の",)),
        Material(
            "marble", "大理石の", ("white", "gray", "black", "green", "pink"), (), ("大理石製の",)
        ),
        Material(
            "chrome", "クロムめっきの", (), ("chrome-plated", "chromed"), ("クロムの", "クロム製の")
        ),
        Material("brass", "真鍮の", (), ("golden",), ("真鍮製の",)),
        Material("fabric", "布製の", _ALL, ("cloth", "upholstered", "cotton"), ("布の",)),
    )
}

SCENES: dict[str, Scene] = {
    s.name: s
    for s in (
        Scene("bathroom", "バスルーム", ("washroom",), ("浴室",)),
        Scene("kitchen", "キッチン", (), ("台所",)),
        Scene("living room", "リビングルーム", ("lounge",), ("リビング", "居間")),
        Scene("bedroom", "寝室", (), ("ベッドルーム",)),
    )
}

OBJECTS: dict[str, ObjectType] = {
    o.name: o
    for o in (
        ObjectType(
            "shelf",
            "shelves",
            "棚",
            ("wooden", "metal", "glass"),
            ("bathroom", "kitchen", "living room"),
            1,
            ("shelving",),
            ("シェルフ",),
        ),
        ObjectType(
            "basket",
            "baskets",
            "バスケット",
            ("wicker", "metal", "fabric"),
            ("bathroom", "living room"),
            3,
            (),
            ("かご", "カゴ"),
        ),
        ObjectType(
            "sink",
            "sinks",
            "シンク",
            ("white ceramic", "marble", "metal", "glass"),
            ("bathroom", "kitchen"),
            1,
            ("basin", "washbasin"),
            ("洗面台", "流し"),
        ),
        ObjectType(
            "faucet",
            "faucets",
            "蛇口",
            ("chrome", "brass", "metal"),
            ("bathroom", "kitchen"),
            1,
            ("tap", "mixer"),
            ("水栓",),
        ),
        ObjectType(
            "mirror",
            "mirrors",
            "鏡",
            ("wooden", "metal", "brass", "chrome"),
            ("bathroom", "bedroom"),
            1,
            (),
            ("ミラー",),
        ),
        ObjectType("towel", "towels", "タオル", ("fabric",), ("bathroom",), 1),
        ObjectType(
            "bathtub",
            "bathtubs",
            "浴槽",
            ("white ceramic", "marble", "metal"),
            ("bathroom",),
            1,
            ("tub", "bath"),
            ("バスタブ",),
        ),
        ObjectType(
            "potted plant",
            "potted plants",
            "鉢植え",
            ("white ceramic", "wicker", "metal"),
            ("bathroom", "kitchen", "living room", "bedroom"),
            3,
            ("plant", "houseplant"),
            ("観葉植物", "植物"),
        ),
        ObjectType(
            "lamp",
            "lamps",
            "ランプ",
            ("metal", "brass", "glass", "wooden"),
            ("living room", "bedroom"),
            1,
            ("light", "floor lamp"),
            ("照明",),
        ),
        ObjectType(
            "sofa",
            "sofas",
            "ソファ",
            ("fabric",),
            ("living room",),
            1,
            ("couch", "settee"),
            ("ソファー",),
        ),
        ObjectType(
            "armchair",
            "armchairs",
            "アームチェア",
            ("fabric", "wicker", "wooden"),
            ("living room", "bedroom"),
            1,
            ("easy chair",),
            ("肘掛け椅子",),
        ),
        ObjectType(
            "rug",
            "rugs",
            "ラグ",
            ("fabric",),
            ("living room", "bedroom"),
            1,
            ("carpet", "mat"),
            ("カーペット", "じゅうたん"),
        ),
        ObjectType(
            "coffee table",
            "coffee tables",
            "コーヒーテーブル",
            ("wooden", "glass", "marble", "metal"),
            ("living room",),
            1,
            ("table",),
            ("ローテーブル", "テーブル"),
        ),
        ObjectType("bed", "beds", "ベッド", ("wooden", "metal", "fabric"), ("bedroom",), 1),
        ObjectType(
            "nightstand",
            "nightstands",
            "ナイトテーブル",
            ("wooden", "metal", "marble"),
            ("bedroom",),
            1,
            ("bedside table", "night table"),
            ("サイドテーブル",),
        ),
        ObjectType(
            "cabinet",
            "cabinets",
            "キャビネット",
            ("wooden", "metal", "marble"),
            ("kitchen",),
            1,
            ("cupboard", "counter"),
            ("戸棚", "食器棚"),
        ),
        ObjectType(
            "stool",
            "stools",
            "スツール",
            ("wooden", "metal", "wicker"),
            ("kitchen",),
            3,
            ("bar stool",),
            ("腰掛け",),
        ),
        ObjectType(
            "vase",
            "vases",
            "花瓶",
            ("glass", "white ceramic", "brass", "marble"),
            ("living room", "bedroom", "kitchen"),
            3,
            (),
            ("フラワーベース",),
        ),
        ObjectType(
            "chair",
            "chairs",
            "椅子",
            ("wooden", "metal", "wicker", "fabric"),
            ("bedroom",),
            1,
            ("desk chair",),
            ("チェア", "イス"),
        ),
        ObjectType(
            "kettle",
            "kettles",
            "やかん",
            ("metal", "chrome", "white ceramic", "brass"),
            ("kitchen",),
            1,
            ("teakettle",),
            ("ケトル",),
        ),
    )
}

RELATIONS: dict[str, Relation] = {
    r.name: r
    for r in (
        Relation("on", "on", "の上に"),
        Relation("above", "above", "の上方に"),
        Relation("left of", "to the left of", "の左に"),
        Relation("right of", "to the right of", "の右に"),
    )
}

# Count words: English and Japanese (the Japanese one takes the generic counter つ).
COUNT_WORDS: dict[int, tuple[str, str]] = {
    1: ("one", "一つ"),
    2: ("two", "二つ"),
    3: ("three", "三つ"),
}


def object_names(scene: str | None = None) -> list[str]:
    """Object names in taxonomy order, optionally only those a room may hold."""
    return [o.name for o in OBJECTS.values() if scene is None or scene in o.scenes]


def _check() -> None:
    """Cross-references must resolve; run by the tests, not at import."""
    for o in OBJECTS.values():
        assert all(m in MATERIALS for m in o.materials), o.name
        assert all(s in SCENES for s in o.scenes), o.name
        assert 1 <= o.max_count <= max(COUNT_WORDS), o.name
    for m in MATERIALS.values():
        assert all(c in COLORS for c in m.colors), m.name
