"""The checker: scoring API on a tiny random CLIP, the training loss and loop, the CLI's
handling of bad input, and (slow) the shipped checker's accuracy on a fresh split."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genimg import checker as ck
from genimg import checker_train as ct
from genimg.cli import main
from genimg.errors import UsageError
from genimg.parse import parse_prompt
from genimg.taxonomy import OBJECTS

TINY = dict(
    image_size=32,
    patch_size=8,
    vision_hidden=32,
    vision_layers=1,
    text_hidden=32,
    text_layers=1,
    heads=2,
    projection_dim=16,
    batch_size=4,
    warmup=1,
    steps=4,
    checkpoint_every=2,
    log_every=1,
)
PROMPT = "a bathroom with a wooden shelf, two wicker baskets and a white ceramic sink"


def _rows(n: int, seed: int = 0) -> list[dict]:
    """Synthetic catalog rows: 1-3 objects each, attributes drawn from the taxonomy."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        names = rng.choice(list(OBJECTS), size=int(rng.integers(1, 4)), replace=False)
        objects = []
        for name in names:
            o = OBJECTS[str(name)]
            material = str(rng.choice(o.materials))
            colors = ck.color_candidates(o.name, material)
            objects.append(
                {
                    "name": o.name,
                    "material": material,
                    "color": str(rng.choice(colors)) if colors else None,
                    "count": int(rng.integers(1, o.max_count + 1)),
                }
            )
        rows.append({"scene": OBJECTS[objects[0]["name"]].scenes[0], "objects": objects})
    return rows


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    from genimg.models import load_tokenizer

    torch.manual_seed(0)
    r = ct.CheckerRecipe(**TINY)
    tok = load_tokenizer(max_length=r.text_max_length)
    folder = tmp_path_factory.mktemp("checker") / "tiny"
    ct.build_model(r, tok).save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / ck.SETTINGS_FILE).write_text(json.dumps(ct.settings_for(r)))
    return folder


@pytest.fixture(scope="module")
def tiny(tiny_dir) -> ck.Checker:
    return ck.load_checker(tiny_dir)


def _images(n: int, size: int = 128) -> list[Image.Image]:
    rng = np.random.default_rng(1)
    return [
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)
    ]


# -- scoring API ---------------------------------------------------------------------------


def test_check_result_format(tiny):
    requested = parse_prompt(PROMPT)
    results = ck.check(tiny, _images(3), requested, names=["a", "b", "c"])
    assert [r["image"] for r in results] == ["a", "b", "c"]
    for r in results:
        assert set(r) == {"image", "objects", "all_present", "all_correct", "suggestions"}
        assert [o["object"] for o in r["objects"]] == ["shelf", "basket", "sink"]
        for o in r["objects"]:
            assert set(o) == {
                "phrase",
                "object",
                "present",
                "score",
                "material_ok",
                "color_ok",
                "count_ok",
            }
            assert 0.0 <= o["score"] <= 1.0
            assert o["present"] == (o["score"] >= 0.5)  # uncalibrated: default threshold
            assert o["color_ok"] is None  # no colour was asked for
        assert r["all_present"] == all(o["present"] for o in r["objects"])
        assert not r["all_correct"] or r["all_present"]
    assert results[0]["objects"][1]["count_ok"] in (True, False)


def test_check_accepts_dicts_and_arrays(tiny):
    arrays = np.stack([np.asarray(im) for im in _images(2)])
    a = ck.check(tiny, arrays, [{"object": "sofa", "color": "red"}])
    b = ck.check(tiny, _images(2), [{"object": "sofa", "color": "red"}])
    assert [r["objects"][0]["score"] for r in a] == [r["objects"][0]["score"] for r in b]
    assert a[0]["objects"][0]["phrase"] == "sofa"
    with pytest.raises(ValueError, match="toaster"):
        ck.check(tiny, arrays, [{"object": "toaster"}])


def test_embeddings_are_unit_norm_and_batch_independent(tiny):
    ims = _images(5)
    full = ck.embed_images(tiny, ims, batch_size=256)
    chunked = ck.embed_images(tiny, ims, batch_size=2)
    assert full.shape == (5, 16)
    torch.testing.assert_close(full.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(full, chunked, atol=1e-5, rtol=1e-5)


def test_suggestions_travel_with_results(tiny):
    results = ck.check(tiny, _images(1), parse_prompt("a woden shelf"))
    assert results[0]["suggestions"] == [{"text": "a woden shelf", "suggestion": "a wooden shelf"}]


def test_zero_shot_for_a_foreign_clip(tiny_dir, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    for f in tiny_dir.iterdir():
        if f.name != ck.SETTINGS_FILE:
            (foreign / f.name).write_bytes(f.read_bytes())
    c = ck.load_checker(foreign)
    assert c.settings["zero_shot"] and c.settings["templates"] == ck.ZERO_SHOT_TEMPLATES
    assert len(ck.check(c, _images(2), parse_prompt(PROMPT))) == 2


def test_not_a_clip_folder(tmp_path):
    with pytest.raises(UsageError, match="not a CLIP model"):
        ck.load_checker(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UsageError, match="model_type is 'bert'"):
        ck.load_checker(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(UsageError, match="safetensors"):
        ck.load_checker(tmp_path)


def test_evaluate_and_calibrate_on_synthetic_truth(tiny):
    rows = _rows(24)
    images = np.random.default_rng(2).integers(0, 256, (24, 64, 64, 3), dtype=np.uint8)
    thresholds = ck.calibrate(tiny, images, rows)
    assert thresholds and all(0 <= t <= 1 for t in thresholds.values())
    report = ck.evaluate(tiny, (images, rows))
    assert report["n_images"] == 24
    assert set(report["presence_auc"]) == set(OBJECTS)
    assert 0 <= report["summary"]["material_acc"] <= 1
    n_material = sum(
        sum(row.values())
        for conf in report["confusions"]["material"].values()
        for row in conf.values()
    )
    assert n_material == sum(len(r["objects"]) for r in rows)


def test_roc_auc():
    labels = np.array([True, True, False, False])
    assert ck._roc_auc(np.array([0.9, 0.8, 0.1, 0.2]), labels) == 1.0
    assert ck._roc_auc(np.array([0.1, 0.2, 0.9, 0.8]), labels) == 0.0
    assert ck._roc_auc(np.array([0.5, 0.5, 0.5, 0.5]), labels) == 0.5


# -- training pieces -----------------------------------------------------------------------


def test_text_table_and_labels():
    table = ct.text_table(ck.TRAINED_TEMPLATES)
    assert len(set(table.texts)) == len(table.texts)
    o = list(OBJECTS).index("basket")
    assert table.texts[table.present[o]] == "a basket"
    assert table.texts[table.absent[o]] == "no basket"
    assert [table.texts[i] for i in table.count[o]] == [
        "one basket",
        "two baskets",
        "three baskets",
    ]
    assert (table.count[list(OBJECTS).index("sofa")] == -1).all()  # sofas come alone
    rows = [{"objects": [{"name": "basket", "material": "wicker", "color": "beige", "count": 3}]}]
    lab = ct.labels_for(rows)
    assert lab["present"][0, o] == 1 and lab["present"].sum() == 1
    assert table.texts[table.material[o, lab["material"][0, o]]] == "a wicker basket"
    assert table.texts[table.color[o, lab["color"][0, o]]] == "a beige basket"
    assert lab["count"][0, o] == 2 and (lab["count"][0, :o] == -100).all()


def test_hard_negatives_weigh_the_absent_object_beside_a_look_alike(tmp_path):
    def room(*names):
        return {
            "objects": [
                {"name": n, "material": OBJECTS[n].materials[0], "color": None, "count": 1}
                for n in names
            ]
        }

    rows = [room("sofa"), room("chair", "rug"), room("armchair", "sofa"), room("rug")]
    lab = ct.labels_for(rows, {"armchair": ["sofa", "chair"]}, 3.0)
    a = list(OBJECTS).index("armchair")
    # "no armchair" beside a sofa or a chair counts 3x; beside a rug, or when there, 1x.
    assert lab["present_weight"][:, a].tolist() == [3.0, 3.0, 1.0, 1.0]
    assert (lab["present_weight"].sum() - 4.0) == lab["present_weight"].numel()
    # The weight reaches the presence loss: a wrong "armchair" score beside the sofa costs more.
    table = ct.text_table(ck.TRAINED_TEMPLATES)
    txt = torch.nn.functional.normalize(torch.randn(len(table.texts), 16), dim=1)
    img = torch.nn.functional.normalize(
        (txt[table.present[a]] - txt[table.absent[a]]).expand(4, -1), dim=1
    )
    plain = ct.checker_loss(img, txt, torch.tensor(30.0), table, ct.labels_for(rows))[1]
    hard = ct.checker_loss(img, txt, torch.tensor(30.0), table, lab)[1]
    assert hard["presence"] > 1.2 * plain["presence"]
    bad = tmp_path / "r.toml"
    bad.write_text('[hard_negatives]\narmchair = ["couch"]\n')
    with pytest.raises(UsageError, match="couch"):
        ct.CheckerRecipe.from_toml(bad)


def test_fragments_shuffle_tiles_and_keep_only_uncut_objects(tmp_path):
    def obj(name, *boxes, count=1):
        m = OBJECTS[name].materials[0]
        return {"name": name, "material": m, "color": None, "count": count, "boxes": list(boxes)}

    # 128 px boxes; at k = 2 the tiles are 64 px: the rug crosses x = 64, the sink does not,
    # one of the two baskets crosses y = 64, and the mirror has no boxes.
    row = {
        "objects": [
            obj("sink", [10, 10, 50, 50]),
            obj("rug", [40, 90, 100, 120]),
            obj("basket", [70, 10, 90, 30], [70, 50, 90, 80], count=2),
            obj("mirror"),
        ]
    }
    names = list(OBJECTS)
    sink, rug, basket, mirror = (names.index(n) for n in ("sink", "rug", "basket", "mirror"))
    frag = ct.fragment_labels([row], [2, 8], 128)
    f2, f8 = frag[2], frag[8]
    assert f2["present"][0].nonzero().flatten().tolist() == sorted([sink, basket])
    assert f2["whole"][0].nonzero().flatten().tolist() == [sink]  # one basket is cut
    assert f2["known"][0, mirror].item() is False and f2["known"].sum() == len(OBJECTS) - 1
    assert not f8["present"].any()  # 16 px tiles cut every box here

    lab = ct.labels_for([row, row])
    x = torch.rand(2, 3, 8, 8)
    before = x.clone()
    g = torch.Generator().manual_seed(0)
    fx, flab = ct.fragment(x, lab, torch.tensor([0, 0]), {2: f2}, 1.0, g)

    def tiles(t):  # the 4 x 4 tiles of one image, as sorted pixel lists
        return sorted(t[:, a : a + 4, b : b + 4].flatten().tolist() for a in (0, 4) for b in (0, 4))

    # Each tile of the output is one of the input's tiles, each used once.
    assert all(tiles(fx[i]) == tiles(x[i]) for i in range(2))
    assert not torch.equal(fx, x) and torch.equal(x, before)  # the input is untouched
    assert flab["present"][0].nonzero().flatten().tolist() == sorted([sink, basket])
    assert flab["present_weight"][0, mirror] == 0 and flab["present_weight"][0, rug] == 1
    assert (
        flab["material"][0, rug] == -100 and flab["material"][0, sink] == lab["material"][0, sink]
    )
    assert flab["count"][0, basket] == -100 and lab["count"][0, basket] == 1
    assert lab["present"][0, rug] == 1  # the labels given were not changed in place
    # p = 0 shuffles nothing.
    same, same_lab = ct.fragment(x, lab, torch.tensor([0, 0]), {2: f2}, 0.0, g)
    assert torch.equal(same, x) and torch.equal(same_lab["present"], lab["present"])
    bad = tmp_path / "r.toml"
    bad.write_text("fragment_grids = [3]\n")  # 64 px is not cut into thirds
    with pytest.raises(UsageError, match="fragment_grids"):
        ct.CheckerRecipe.from_toml(bad)


def test_loss_prefers_the_truth():
    table = ct.text_table(ck.TRAINED_TEMPLATES)
    lab = ct.labels_for(_rows(8))
    torch.manual_seed(0)
    txt = torch.nn.functional.normalize(torch.randn(len(table.texts), 1024), dim=1)
    # An image embedding that points at its true texts and away from absent ones.
    img = torch.zeros(8, 1024)
    for kind in ("material", "color", "count"):
        idx, target = getattr(table, kind), lab[kind]
        for b, j in (target >= 0).nonzero().tolist():
            img[b] += txt[idx[j, target[b, j]]]
    img += (lab["present"] * 2 - 1) @ (txt[table.present] - txt[table.absent])
    img = torch.nn.functional.normalize(img, dim=1)
    noise = torch.nn.functional.normalize(torch.randn(8, 1024), dim=1)
    scale = torch.tensor(30.0)
    good, parts = ct.checker_loss(img, txt, scale, table, lab)
    bad, _ = ct.checker_loss(noise, txt, scale, table, lab)
    assert set(parts) == {"presence", "material", "color", "count"}
    assert good < 0.5 * bad


def test_augment_is_seeded_and_bounded():
    r = ct.CheckerRecipe(**TINY)
    x = torch.rand(4, 3, 32, 32)
    a = ct.augment(x, r, torch.Generator().manual_seed(1))
    b = ct.augment(x, r, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1 and not torch.equal(a, x)


def test_recipe_rejects_unknown_keys(tmp_path):
    bad = tmp_path / "r.toml"
    bad.write_text("steps = 5\nlearning_rate = 1.0\n")
    with pytest.raises(UsageError, match="learning_rate"):
        ct.CheckerRecipe.from_toml(bad)
    bad.write_text("image_size = 30\n")
    with pytest.raises(UsageError, match="patch_size"):
        ct.CheckerRecipe.from_toml(bad)
    assert ct.CheckerRecipe.from_toml(ct.RECIPE).image_size == 64


def test_resume_is_exact(tmp_path):
    from genimg.models import load_tokenizer

    r = ct.CheckerRecipe(**TINY, fragment_p=0.5, fragment_grids=[2, 4])
    tok = load_tokenizer(max_length=r.text_max_length)
    table = ct.text_table(ck.TRAINED_TEMPLATES)
    ids = dict(tok(table.texts, padding=True, return_tensors="pt"))
    rows = _rows(16)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    for i, row in enumerate(rows):  # boxes so that some objects survive the 2 x 2 cut
        for j, o in enumerate(row["objects"]):
            o["boxes"] = [[4 * j, 4 * (i % 4), 4 * j + 10, 4 * (i % 4) + 10]]
    frag = ct.fragment_labels(rows, r.fragment_grids, 32)
    assert 0 < int(frag[2]["present"].sum()) < sum(len(row["objects"]) for row in rows)

    def train(out: Path, steps: int, resume: bool):
        torch.manual_seed(0)
        model = ct.build_model(r, tok)
        r.steps = steps
        out.mkdir(exist_ok=True)
        ct._fit(model, ids, table, images, ct.labels_for(rows), frag, r, out, "cpu", resume)
        return model.state_dict()

    straight = train(tmp_path / "a", 4, False)
    train(tmp_path / "b", 2, False)
    resumed = train(tmp_path / "b", 4, True)
    for k, v in straight.items():
        torch.testing.assert_close(resumed[k], v, rtol=0, atol=0, msg=k)


def test_init_loads_a_checker_folder_and_names_a_mismatch(tiny_dir, tmp_path):
    from transformers import CLIPModel

    from genimg.models import load_tokenizer

    tok = load_tokenizer(max_length=16)
    torch.manual_seed(1)  # not the seed tiny_dir was made with
    model = ct.build_model(ct.CheckerRecipe(**TINY), tok)
    ct.init_weights(model, tiny_dir)
    saved = CLIPModel.from_pretrained(tiny_dir, use_safetensors=True).state_dict()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, saved[k], rtol=0, atol=0, msg=k)
    wider = ct.build_model(ct.CheckerRecipe(**{**TINY, "vision_hidden": 64}), tok)
    with pytest.raises(UsageError, match=r"vision_model\..* is \(.*32.*\) there, .*64"):
        ct.init_weights(wider, tiny_dir)
    with pytest.raises(UsageError, match="not a checker folder"):
        ct.init_weights(model, tmp_path)


def test_cli_init_warm_starts_and_the_card_lists_every_leg(tiny_dir, tmp_path, monkeypatch):
    recipe = Path(ct.RECIPE).parent / "checker-tiny.toml"

    def train(*args: str) -> int:
        argv = ["train-checker", "--recipe", str(recipe), "--steps", "2", *args]
        monkeypatch.setattr("sys.argv", ["genimg", *argv])  # the card quotes the command
        return main(argv)

    # tiny_dir has no legs.json: it counts as one leg of unknown recipe.
    assert train("--init", str(tiny_dir), "--out", str(tmp_path / "a")) == 0
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["init"] == str(tiny_dir) and summary["steps"] == 2
    first = tmp_path / "a" / "model"
    (first / ct.NOTES_FILE).write_text("## Findings\n\nthe first model's notes\n")
    ct.rewrite_card(first)
    assert "the first model's notes" in (first / "README.md").read_text()
    # A third leg from the second: all three in legs.json, the card and the recipe files.
    assert train("--init", str(first), "--steps", "3", "--out", str(tmp_path / "b")) == 0
    model = tmp_path / "b" / "model"
    legs = json.loads((model / ct.LEGS_FILE).read_text())
    assert [leg["recipe"] for leg in legs] == [None, "recipe-leg2.json", "recipe.json"]
    assert [leg.get("steps") for leg in legs] == [None, 2, 3]
    assert legs[1]["init"] == str(tiny_dir) and legs[2]["init"] == str(first)
    assert json.loads((model / "recipe-leg2.json").read_text())["steps"] == 2
    assert json.loads((model / "recipe.json").read_text())["steps"] == 3
    card = (model / "README.md").read_text()
    assert "3 legs; each starts from the weights of the one before." in card
    assert f"1. `{tiny_dir}` (no record of how it was trained)" in card
    run = f"genimg train-checker --recipe {recipe} --steps 2 --init"
    assert f"2. `{run} {tiny_dir} --out {tmp_path / 'a'}`: from `{tiny_dir}`" in card
    assert f"3. `{run} {first} --steps 3 --out {tmp_path / 'b'}`: from `{first}`, on " in card
    assert "on `catalog:24:21:checker` (24 rendered" in card
    # A leg run without a command line (the API, not the CLI) is listed all the same.
    legs[2]["command"] = ""
    (model / ct.LEGS_FILE).write_text(json.dumps(legs))
    ct.rewrite_card(model)
    assert f"3. from `{first}`, on `catalog:24:21:checker`" in (model / "README.md").read_text()
    assert legs[2]["fragment_p"] == 0 and "fragments" not in card
    legs[2].update(fragment_p=0.25, fragment_grids=[2, 4])  # a leg that shuffled tiles
    (model / ct.LEGS_FILE).write_text(json.dumps(legs))
    ct.rewrite_card(model)
    shuffled = "; 25% of each batch cut into 2x2, 4x4 tiles (fragments), on cpu"
    assert shuffled in (model / "README.md").read_text()
    assert "| 3 (shipped) | " in card and card.count("(shipped)") == 1
    assert "the first model's notes" not in card  # notes describe one model, not its heirs
    assert not (model / ct.NOTES_FILE).exists()


# -- the command line ----------------------------------------------------------------------


def _png_header_only(path: Path, w: int, h: int) -> None:
    """A PNG that declares w x h pixels: PIL reads the size without decoding anything."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


@pytest.fixture()
def files(tmp_path) -> dict[str, Path]:
    good = tmp_path / "good.png"
    _images(1)[0].save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:200])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    huge = tmp_path / "huge.png"
    _png_header_only(huge, 10_000, 10_000)
    return {"good": good, "truncated": truncated, "text": text, "huge": huge}


@pytest.mark.parametrize("bad", ["truncated", "text", "huge"])
def test_cli_bad_image_alone(files, tiny_dir, capsys, bad):
    code = main(["check", str(files[bad]), "--objects", "sofa", "--checker", str(tiny_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("genimg check: error: IMAGE: no readable image")
    assert "Traceback" not in "\n".join(err)


def test_cli_bad_file_in_batch(files, tiny_dir, capsys):
    paths = [str(files[k]) for k in ("good", "truncated", "huge", "text")]
    code = main(["check", *paths, "--prompt", PROMPT, "--checker", str(tiny_dir), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert [r["image"] for r in out] == paths
    assert len(out[0]["objects"]) == 3 and "error" not in out[0]
    assert "truncated" in out[1]["error"] and "too large" in out[2]["error"]
    assert "not an image" in out[3]["error"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--objects", ""], "--objects: empty list"),
        (["--objects", " ; "], "--objects: empty list"),
        (["--objects", "toaster"], "--objects: no catalog object"),
        (["--prompt", "a sunny afternoon"], "--prompt: no catalog object"),
    ],
)
def test_cli_nothing_to_check(files, tiny_dir, capsys, args, message):
    code = main(["check", str(files["good"]), *args, "--checker", str(tiny_dir)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err


def test_cli_checker_not_clip(files, tmp_path, capsys):
    code = main(["check", str(files["good"]), "--objects", "sofa", "--checker", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("genimg check: error: --checker:")


def test_cli_table(files, tiny_dir, capsys):
    code = main(
        ["check", str(files["good"]), "--prompt", "a woden shelf", "--checker", str(tiny_dir)]
    )
    captured = capsys.readouterr()
    assert code == 0
    assert "read 'a woden shelf' as 'a wooden shelf'" in captured.err
    assert "all present:" in captured.out and "a woden shelf" in captured.out


# -- the shipped checker -------------------------------------------------------------------


SHIPPED = pytest.mark.skipif(not ck.DEFAULT_CHECKER.is_dir(), reason="no shipped checker")


@pytest.fixture(scope="module")
def fresh_report() -> dict:
    """The shipped checker re-measured on a split no leg, calibration or card used. 4,000
    images (~400 armchairs), about 45 s: the 600-image split this used before held ~60
    armchairs, and its weakest AUC moved by a point between legs whose larger splits only
    rose. This split was first evaluated after it was chosen, with the fourth-leg checker."""
    return ck.evaluate(ck.load_checker(ck.DEFAULT_CHECKER), "catalog:4000:424244:checker-eval")


@pytest.mark.slow
@SHIPPED
def test_shipped_checker_matches_its_card(fresh_report):
    card = json.loads((ck.DEFAULT_CHECKER / "eval.json").read_text())["summary"]
    s = fresh_report["summary"]
    for key in ("presence_auc_mean", "material_acc", "color_acc", "count_acc"):
        assert abs(s[key] - card[key]) < 0.05, (key, s[key], card[key])
    # The targets it meets today.
    assert s["presence_auc_mean"] >= 0.97 and s["material_acc"] >= 0.90
    assert s["color_acc"] >= 0.90 and s["count_acc"] >= 0.85


@pytest.mark.slow
@SHIPPED
def test_shipped_checker_meets_all_targets(fresh_report):
    assert fresh_report["summary"]["presence_auc_min"] >= 0.97


@pytest.mark.slow
@SHIPPED
def test_shipped_checker_agrees_with_eye_labels_on_generated_images():
    """16 generated images whose objects a person labelled (`scripts/eye_agreement.py`)."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "scripts" / "eye_agreement.py"
    done = subprocess.run([sys.executable, script, "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-500:]
    r = json.loads(done.stdout)
    assert (r["images"], r["objects"]) == (16, 58)
    assert 10 <= r["eye_present"] <= r["clear"] - 10  # both answers are well represented
    assert r["agree"] / r["clear"] >= 0.9, r
