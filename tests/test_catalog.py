"""The procedural catalog: determinism, ground truth, captions, imagefolder, bad input."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genimg import taxonomy
from genimg.catalog import render_arrays, render_record
from genimg.cli import main
from genimg.parse import parse_prompt
from genimg.scene import make_layout
from genimg.taxonomy import OBJECTS

SIZE = 128
N_RECORDS = 60  # in-memory records checked for ground truth (~1 s)
JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


def _named_en(name: str, text: str) -> bool:
    obj = OBJECTS[name]
    words = "|".join(re.escape(w) for w in (obj.name, obj.plural))
    # Any case: a sentence may start with the noun ("Sink: marble."); "chair" is not "armchair".
    return re.search(rf"\b({words})\b", text, re.IGNORECASE) is not None


def _objects_named(text: str) -> set[str]:
    return {n for n, o in OBJECTS.items() if _named_en(n, text) or o.ja in text}


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def records() -> list[tuple[Image.Image, dict]]:
    return [render_record(i, seed=5) for i in range(N_RECORDS)]


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cat") / "train"
    assert main(["catalog", "--out", str(out), "--n", "10", "--seed", "3", "--workers", "2"]) == 0
    return out


def test_taxonomy_cross_references():
    taxonomy._check()


def test_renderer_covers_the_taxonomy():
    # The layout tables and drawers are keyed by taxonomy names: every object of a room has
    # a place and a drawer there, and no table names anything the taxonomy lacks.
    from genimg import catalog, furniture, scene

    assert set(catalog._SCENE_P) == set(taxonomy.SCENES)
    for name in taxonomy.SCENES:
        assert set(scene._PROB[name]) == set(taxonomy.object_names(name)), name
    assert set(furniture._DRAWERS) == set(OBJECTS) == set(scene._SIZE)


def test_same_arguments_give_byte_identical_files(catalog_dir, tmp_path):
    again = tmp_path / "again"  # and one process instead of two: same bytes
    assert main(["catalog", "--out", str(again), "--n", "10", "--seed", "3", "--workers", "1"]) == 0
    assert _digest(again) == _digest(catalog_dir)


def test_imagefolder_is_readable_and_matches_metadata(catalog_dir):
    rows = [json.loads(line) for line in (catalog_dir / "metadata.jsonl").read_text().splitlines()]
    pngs = sorted(p.name for p in catalog_dir.glob("*.png"))
    assert [r["file_name"] for r in rows] == pngs and len(rows) == 10
    for i, row in enumerate(rows):
        with Image.open(catalog_dir / row["file_name"]) as im:
            assert im.mode == "RGB" and im.size == (SIZE, SIZE)
        assert (row["index"], row["seed"], row["split"]) == (i, 3, "train")
        columns = {"text", "text_ja", "prose", "prose_ja", "web_text", "web_lang", "title"}
        assert columns | {"scene", "objects"} <= set(row)


def test_in_memory_api_matches_files(catalog_dir):
    arrays, rows = render_arrays(3, seed=3, size=SIZE, workers=1, start=2)
    assert arrays.shape == (3, SIZE, SIZE, 3) and arrays.dtype == np.uint8
    for k, row in enumerate(rows):
        on_disk = np.asarray(Image.open(catalog_dir / f"{k + 2:06d}.png"))
        assert np.array_equal(arrays[k], on_disk)
        assert row["index"] == k + 2


def test_ground_truth_is_consistent(records):
    for _, row in records:
        assert row["objects"] and row["scene"] in taxonomy.SCENES
        for obj in row["objects"]:
            spec = OBJECTS[obj["name"]]
            assert obj["material"] in spec.materials and row["scene"] in spec.scenes
            colors = taxonomy.MATERIALS[obj["material"]].colors
            assert obj["color"] in colors if colors else obj["color"] is None
            assert 1 <= obj["count"] <= spec.max_count == max(spec.max_count, obj["count"])
            assert obj["count"] == len(obj["boxes"])
            for x0, y0, x1, y1 in obj["boxes"]:
                assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
                assert min(x1 - x0, y1 - y0) >= 20, (obj, row["text"])  # legible at 128 px
            xs0, ys0, xs1, ys1 = zip(*obj["boxes"], strict=True)
            assert obj["bbox"] == [min(xs0), min(ys0), max(xs1), max(ys1)]


def test_catalog_captions_name_every_object(records):
    for _, row in records:
        for obj in row["objects"]:
            assert _named_en(obj["name"], row["text"]), (obj["name"], row["text"])
            assert OBJECTS[obj["name"]].ja in row["text_ja"], (obj["name"], row["text_ja"])
            assert obj["material"] in row["text"]
        assert JAPANESE.search(row["text_ja"]) and not re.search(r"[a-z]", row["text_ja"])
        assert row["title"].lower().startswith(row["scene"])


def test_prose_captions_name_every_object_and_state_no_wrong_attribute(records):
    # Product-page prose: every object named; a material, colour or count the parser binds
    # to an object is the record's (the colour a piece "goes with" binds to nothing).
    for _, row in records:
        truth = {o["name"]: o for o in row["objects"]}
        for column in ("prose", "prose_ja", "free", "free_ja"):
            text = row[column]
            assert _objects_named(text) == set(truth), (column, text)
            for req in parse_prompt(text).objects:
                obj = truth[req.object]
                assert req.material in (None, obj["material"]), (req, text)
                assert req.count in (None, obj["count"]), (req, text)
                assert req.color in (None, obj["color"]), (req, text)
        for en, ja in (("prose", "prose_ja"), ("free", "free_ja")):
            assert not JAPANESE.search(row[en]) and JAPANESE.search(row[ja])
            assert not re.search(r"[a-z]", row[ja])
            assert row[en] != row["text"] and row[ja] != row["text_ja"]
        assert row["free"] != row["prose"] and row["free_ja"] != row["prose_ja"]


def test_free_captions_use_forms_the_other_captions_do_not(records):
    en = " ".join(row["free"] for _, row in records)
    ja = "".join(row["free_ja"] for _, row in records)
    inventory_en = re.compile(r"\b[A-Z][a-z]+(?: [a-z]+)?: [a-z]")  # "Mirror: brass"
    assert inventory_en.search(en) and re.search("[ァ-ヶー一-龯]+：", ja)  # "鏡：真鍮"
    for form in (" rests on the ", " sits on the ", "Complete the look with ", "Featuring "):
        assert form in en, form
    for form in ("を載せて", "を添えて", "で統一", "がアクセント"):
        assert form in ja, form
    for _, row in records:
        for column in ("text", "prose"):
            assert not inventory_en.search(row[column]) and " rests on " not in row[column]


def test_prose_forms_vary(records):
    # The forms the prose is there for: attributes after the verb, usage clauses, the
    # colour a piece goes with; Japanese counts written 二つ, 2つ and 2個.
    en = " ".join(row["prose"] for _, row in records)
    ja = "".join(row["prose_ja"] for _, row in records)
    for form in (" is made of ", " design", " that can ", " with "):
        assert form in en, form
    for form in ("は", "で、", "を収納できる", "とよく調和する", "デザインです"):
        assert form in ja, form
    assert re.search("[23]つの", ja) and re.search("[二三]つの", ja)


def test_usage_words_name_no_catalog_word():
    from genimg.captions import _USES_EN, _USES_JA

    for uses in (*_USES_EN.values(), *_USES_JA.values()):
        for use in uses:
            assert not parse_prompt(use).objects and not _objects_named(use), use
            assert not any(w in use for c in taxonomy.COLORS.values() for w in (c.ja, c.name))


def test_prose_stream_leaves_the_other_columns_as_they_were():
    # The prose captions draw from a fourth random stream: the images and the other
    # captions of a record are what they were before it existed (pinned here).
    image, row = render_record(0, 4000, 64, "lora")
    pixels = hashlib.sha256(np.asarray(image).tobytes()).hexdigest()
    assert pixels == "64835f183328ffdfb8d366da83ad074280ce1c5c88644962d0fd3fdc43b72e80"
    assert row["text"] == (
        "This kitchen has two brass vases. There is a green marble sink with a red metal faucet."
    )
    assert (
        row["text_ja"]
        == "赤い金属製の蛇口を置いた緑の大理石のシンク、二つの真鍮の花瓶があるキッチン"
    )
    # The free-form stream came after the prose one and left it as it was.
    assert row["prose"] == (
        "This kitchen has two brass vases. The sink is made of green marble. "
        "On the sink is a red metal faucet."
    )
    assert row["prose_ja"] == (
        "蛇口を載せた緑の大理石のシンクのあるキッチンです。蛇口は赤い金属製です。"
        "二つの花瓶はシンプルな真鍮のデザインです。"
    )
    assert row["free"] == (
        "A quiet kitchen with two brass vases and a green marble sink. "
        "Finish with a red metal faucet."
    )


def test_web_captions_are_loose(records):
    langs = []
    for _, row in records:
        assert len(_objects_named(row["web_text"])) <= 2, row["web_text"]
        assert row["web_lang"] in ("en", "ja")
        assert bool(JAPANESE.search(row["web_text"])) == (row["web_lang"] == "ja")
        langs.append(row["web_lang"])
    assert 0.1 <= langs.count("ja") / len(langs) <= 0.55


def test_splits_never_share_a_layout(records):
    def signature(row: dict) -> str:
        return json.dumps([row["scene"], row["objects"]])

    train = {signature(row) for _, row in records}
    for seed, split in ((6, "train"), (5, "eval")):
        other = {signature(render_record(i, seed, split=split)[1]) for i in range(20)}
        assert not train & other


def test_design_prompt_combination_is_common():
    # bathroom: wooden shelf + baskets on it + sink + faucet, as in DESIGN.md's prompt
    hits = parts = 0
    for i in range(400):
        items = {it.name: it for it in make_layout("bathroom", np.random.default_rng(i)).items}
        parts += "shelf" in items and "sink" in items
        hits += all(n in items for n in ("shelf", "basket", "sink", "faucet")) and items[
            "basket"
        ].relation == ("on", "shelf")
    assert parts / 400 > 0.45 and hits / 400 > 0.15


@pytest.mark.parametrize(
    "args, arg",
    [
        (["--n", "0"], "--n"),
        (["--n", "-4"], "--n"),
        (["--size", "100"], "--size"),
        (["--size", "2048"], "--size"),
        (["--size", "56"], "--size"),
    ],
)
def test_bad_numbers_are_refused(tmp_path, capsys, args, arg):
    out = tmp_path / "out"
    base = {"--n": "2", "--size": "128"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    argv = ["catalog", "--out", str(out), "--seed", "0"] + [x for kv in base.items() for x in kv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and arg in err
    assert not out.exists()


def test_unwritable_out_is_refused(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["catalog", "--out", str(blocker / "sub"), "--n", "2", "--seed", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--out" in err
    assert sorted(tmp_path.iterdir()) == [blocker]


def test_non_empty_out_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    argv = ["catalog", "--out", str(out), "--n", "2", "--seed", "0", "--workers", "1"]
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert main([*argv, "--overwrite"]) == 0
    assert len(list(out.glob("*.png"))) == 2
