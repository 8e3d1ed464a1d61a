"""genimg compare: the statistics against published values, and the report on tiny models."""

from __future__ import annotations

import importlib.metadata
import json
import warnings
from pathlib import Path

import pytest
from tiny_assets import FAST, make_checker, make_lora, make_model

from genimg import adapters, pipeline, runs
from genimg.checker import load_checker
from genimg.cli import main
from genimg.compare import RenderSettings, compare, mcnemar_exact, paired_stats, wilson_interval

PROMPT = "a bathroom with a wooden shelf, two wicker baskets and a white ceramic sink"
PROMPT_JA = "木製の棚と白い陶器のシンクがある浴室"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("assets")
    make_lora(make_model(root / "model"), root / "lora" / "catalog")
    make_checker(root / "checker")
    return root


# -- statistics ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "k, n, lo, hi",
    [  # Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3 (Wilson score)
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0000, 0.1611),
        (1, 29, 0.0061, 0.1718),
        (8, 10, 0.4902, 0.9433),
    ],
)
def test_wilson_interval_matches_published_values(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=5e-5)


def test_wilson_interval_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and lo == pytest.approx(1 - wilson_interval(0, 10)[1])


def test_mcnemar_exact_is_the_binomial_on_discordant_pairs():
    assert mcnemar_exact(1, 9) == pytest.approx(2 * (1 + 10) / 2**10)  # 0.0215
    assert mcnemar_exact(0, 10) == pytest.approx(2 / 2**10)
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0
    # 0 vs 32 discordant: what the README's target (p < 0.01) needs in the best case
    assert mcnemar_exact(0, 32) < 1e-9


def test_paired_stats_counts_discordant_pairs():
    a = [True, True, False, False, True, False]
    b = [True, False, True, True, True, True]
    s = paired_stats(a, b)
    assert s["discordant"] == [1, 3]
    assert (s["open"]["k"], s["catalog"]["k"], s["open"]["n"]) == (3, 5, 6)
    assert s["mcnemar_p"] == pytest.approx(mcnemar_exact(1, 3))
    assert s["catalog"]["ci95"] == list(wilson_interval(5, 6))


# -- the verb and its report -----------------------------------------------------------------


def test_compare_report(assets, tmp_path):
    pipe = pipeline.load_pipeline(assets / "model")
    pipe.set_progress_bar_config(disable=True)
    unet = pipe.unet
    lora = adapters.resolve("catalog", assets / "lora")
    checker = load_checker(assets / "checker")
    settings = RenderSettings(num_inference_steps=2, height=64, width=64)
    seeds = [5, 6, 9]
    report = compare(pipe, lora, checker, [PROMPT, PROMPT_JA], seeds, tmp_path, settings)

    # the shape
    assert report["open"]["adapter"] is None and report["catalog"]["adapter"]["name"] == "catalog"
    assert report["open"]["model"] == report["catalog"]["model"] == "model"
    assert report["n_images"] == 6 and report["seeds"] == seeds
    for key in ("all_present", "all_correct"):
        s = report[key]
        assert set(s) >= {"open", "catalog", "mcnemar_p", "discordant"}
        for side in ("open", "catalog"):
            assert s[side]["ci95"][0] <= s[side]["rate"] <= s[side]["ci95"][1]
    phrases = [o["phrase"] for o in report["objects"]]
    assert phrases[:3] == ["a wooden shelf", "two wicker baskets", "a white ceramic sink"]
    assert len(phrases) == 5  # and the Japanese prompt's two phrases
    assert json.loads((tmp_path / "report.json").read_text()) == report

    # results.jsonl: one line per image, paired by (prompt, seed); the report recounts them
    rows = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 * 3
    keys = {
        m: [(r["prompt_index"], r["seed"]) for r in rows if r["model"] == m]
        for m in ("open", "catalog")
    }
    assert keys["open"] == keys["catalog"] == [(p, s) for p in (0, 1) for s in seeds]
    for m in ("open", "catalog"):
        hits = [r["all_present"] for r in rows if r["model"] == m]
        assert report["all_present"][m]["k"] == sum(hits)
        shelf = [
            r["objects"][0]["present"] for r in rows if r["model"] == m and not r["prompt_index"]
        ]
        assert report["objects"][0][m]["k"] == sum(shelf)
    assert all((tmp_path / r["file"]).is_file() for r in rows)

    # attributes: every requested material / colour / count, paired, recounted from the rows
    materials = {
        m: [o["material_ok"] for r in rows if r["model"] == m for o in r["objects"]]
        for m in ("open", "catalog")
    }
    s = report["attributes"]["material"]
    assert s["open"]["n"] == 3 * 5  # wooden, wicker, ceramic; 木製, 陶器: per seed
    for m in ("open", "catalog"):
        assert s[m]["k"] == sum(v is True for v in materials[m])
    b = sum(a and not c for a, c in zip(materials["open"], materials["catalog"], strict=True))
    assert s["discordant"][0] == b
    assert report["attributes"]["count"]["open"]["n"] == 3  # two baskets
    assert report["attributes"]["color"]["open"]["n"] == 0  # "white ceramic" is a material
    assert set(report["attributes"]) == {"material", "color", "count"}

    # the adapter changed the images, and the caller's pipeline is the base again
    assert (_pixels(tmp_path / rows[0]["file"]) != _pixels(tmp_path / rows[6]["file"])).any()
    assert pipe.unet is unet and pipe.num_fused_loras == 0

    # pictures and documents
    from PIL import Image

    grid = Image.open(tmp_path / "grid-000.png")
    assert grid.width >= 3 * 64 and grid.height >= 2 * 64
    assert Image.open(tmp_path / "chart.png").size[0] > 300
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and 'src="grid' not in html
    md = (tmp_path / "report.md").read_text()
    assert "| a wooden shelf |" in md and "grid-001.png" in md
    assert "| material right (15 asked) |" in md and "| count right (3 asked) |" in md
    assert "colour right" not in md  # none asked for


def test_grid_marks_are_a_green_check_and_a_red_cross(tmp_path):
    """The marks are strokes, not glyphs: the CJK font has no ✗ and drew a box in its place."""
    import numpy as np
    from PIL import Image, ImageDraw

    from genimg import report

    Image.new("RGB", (64, 64), "gray").save(tmp_path / "a.png")
    results = [
        {"model": m, "prompt_index": 0, "prompt": "a bathroom with a sink", "file": "a.png",
         "objects": [{"phrase": "a sink", "present": m == "open"}]}
        for m in report.MODELS
    ]  # fmt: skip
    grid = np.asarray(report._grid(tmp_path, results, 0))
    green = np.nonzero((grid == report._GREEN).all(-1))[0]  # rows of the open model's check
    red = np.nonzero((grid == report._RED).all(-1))[0]  # the catalog row's cross, below it
    assert len(green) > 10 and len(red) > 10 and green.max() < red.min()

    square = Image.new("RGB", (report._MARK + 4, report._MARK + 4), "white")
    report._mark(ImageDraw.Draw(square), 2, 2, report._MARK, present=False)
    red = (np.asarray(square) == report._RED).all(-1)
    c = 2 + report._MARK // 2
    assert red[c, c] and all(q.any() for q in (red[:c, :c], red[:c, c + 1 :], red[c + 1 :, :c]))
    assert not red[2, c] and not red[c, 2]  # no box: the edges' midpoints stay white


def test_grid_warns_when_japanese_text_has_no_font(tmp_path, monkeypatch):
    from PIL import Image

    from genimg import report

    Image.new("RGB", (64, 64), "gray").save(tmp_path / "a.png")
    results = [
        {"model": m, "prompt_index": 0, "prompt": "木製の棚がある浴室", "file": "a.png",
         "objects": [{"phrase": "木製の棚", "present": True}]}
        for m in report.MODELS
    ]  # fmt: skip
    monkeypatch.setattr(report, "_FONT_FILES", (str(tmp_path / "none.ttc"),))
    with pytest.warns(UserWarning, match="fonts-noto-cjk"):
        grid = report._grid(tmp_path, results, 0)
    assert grid.width == 64 + 68  # the grid is still drawn
    for prompt in ("a bathroom with a wooden shelf", "une étagère en bois"):  # no CJK: quiet
        results[0]["prompt"] = prompt
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            report._grid(tmp_path, results, 0)


def _pixels(path: Path):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(path))


# -- the command -----------------------------------------------------------------------------


def _cli(assets: Path, *argv) -> int:
    args = ["compare", "--open", assets / "model", "--checker", assets / "checker", *FAST, *argv]
    return main([str(a) for a in args])


def test_cli_writes_report_and_registers_the_run(assets, tmp_path, capsys):
    out = tmp_path / "cmp"
    lora = assets / "lora" / "catalog"
    assert _cli(assets, "--prompt", PROMPT, "--seeds", 2, "--catalog-lora", lora, "--out", out) == 0
    assert "all_present: open" in capsys.readouterr().out
    assert json.loads((out / "report.json").read_text())["n_images"] == 2
    [run] = runs.list_runs(tmp_path)
    assert (run["kind"], run["status"], run["seeds"]) == ("compare", "finished", [0, 1])
    assert run["models"]["catalog"]["name"] == "catalog" and "torch" in run["versions"]
    assert run["versions"]["onnxruntime"] == importlib.metadata.version("onnxruntime")
    # a second run into the same folder needs --overwrite
    argv = ("--prompt", PROMPT, "--seeds", 2, "--catalog-lora", lora, "--out", out)
    assert _cli(assets, *argv) == 2
    assert "--out: " in capsys.readouterr().err
    assert main(["runs", "--root", str(tmp_path)]) == 0
    assert "compare  finished" in capsys.readouterr().out
    assert main(["runs", "--root", str(tmp_path), "show", str(run["id"])]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["all_present_open"] is not None
    assert main(["runs", "--root", str(tmp_path), "show", "99"]) == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--prompt", PROMPT, "--catalog-lora", "no-such-adapter"], "--lora: unknown adapter"),
        (["--prompt", "a sunny beach", "--catalog-lora", "LORA"], "names no catalog object"),
        (["--prompt", PROMPT, "--seeds", 0, "--catalog-lora", "LORA"], "--seeds"),
        (["--prompts", "EMPTY", "--catalog-lora", "LORA"], "holds no prompts"),
        (["--prompts", "BAD", "--catalog-lora", "LORA"], "bad.jsonl:2: not valid JSON"),
    ],
)
def test_cli_bad_input(assets, tmp_path, capsys, argv, message):
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a sink"}\n{"prompt": "a\n')
    subst = {
        "EMPTY": tmp_path / "empty.txt",
        "BAD": tmp_path / "bad.jsonl",
        "LORA": assets / "lora" / "catalog",
    }
    argv = [subst.get(a, a) if isinstance(a, str) else a for a in argv]
    assert _cli(assets, *argv, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.startswith("genimg compare: error: ") and message in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "report.json").exists()


def test_grid_titles_break_between_words_and_japanese_per_character():
    from genimg.report import _font, _wrap

    font = _font(13)
    en = (
        "This bathroom has a wooden shelf with two baskets that can store toiletries and "
        "accessories. The sink is made of white ceramic, and the faucet is chrome-plated."
    )
    lines = _wrap(en, font, 300)
    assert len(lines) >= 3 and all(font.getlength(line) <= 300 for line in lines)
    assert " ".join(lines) == en  # every break is at a space, no word cut
    ja = (
        "このバスルームには、トイレ用品や小物を収納できる"
        "2つのバスケットが置かれた木製の棚があります。"
    )
    lines = _wrap(ja, font, 200)
    assert len(lines) >= 2 and "".join(lines) == ja
    assert all(font.getlength(line) <= 200 for line in lines)
