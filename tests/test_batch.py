"""genimg batch: prompt files, batching that never changes an image, kill -9 and --resume."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_assets import FAST, make_checker, make_lora, make_model

from genimg import pipeline, runs
from genimg.batch import Settings, render_batch
from genimg.cli import main
from genimg.errors import UsageError
from genimg.prompts import read_prompts
from genimg.render import render

SHELF = "a bathroom with a wooden shelf and two wicker baskets"
KETTLE = "a kitchen with a red kettle"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("assets")
    make_lora(make_model(root / "model"), root / "lora" / "catalog")
    make_checker(root / "checker")
    return root


@pytest.fixture(scope="module")
def pipe(assets):
    pipe = pipeline.load_pipeline(assets / "model")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _cli(assets: Path, *argv) -> int:
    return main(["batch", "--model", str(assets / "model"), *FAST, *[str(a) for a in argv]])


def _hashes(out: Path) -> dict[str, str]:
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*.png"))
    }


def _manifest(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]


# -- prompt files ----------------------------------------------------------------------------


def test_read_prompts_formats(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text(f"# bathroom first\n{SHELF}\n\n{KETTLE}\n")
    specs = read_prompts(txt)
    assert [(s.index, s.line, s.prompt) for s in specs] == [(0, 2, SHELF), (1, 4, KETTLE)]
    jsonl = tmp_path / "p.jsonl"
    rows = [
        {"prompt": SHELF, "seed": 7, "num_images": 2, "lora": "catalog:0.5", "id": "a"},
        {"prompt": KETTLE, "objects": ["red kettle"], "negative_prompt": "blurry"},
        {"tag": "counting", "include": [{"class": "vase", "count": 2}], "prompt": "two vases"},
    ]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    a, b, c = read_prompts(jsonl)
    assert a.overrides == {"seed": 7, "num_images": 2, "lora": ["catalog:0.5"]} and a.id == "a"
    assert b.objects == ["red kettle"] and b.overrides == {"negative_prompt": "blurry"}
    assert c.geneval == rows[2] and c.objects == ["2 vase"]


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("empty.txt", "\n# only a comment\n", "holds no prompts"),
        ("bad.jsonl", '{"prompt": "a sink"}\n\n{"prompt": "a sink",\n', "bad.jsonl:3: not valid"),
        ("key.jsonl", '{"prompt": "a sink", "sed": 3}\n', "key.jsonl:1: unknown key 'sed'"),
        ("no.jsonl", '{"text": "a sink"}\n', 'no.jsonl:1: expected an object with a "prompt"'),
        ("blank.jsonl", '{"prompt": "  "}\n', "blank.jsonl:1: empty prompt"),
        ("dup.jsonl", '{"prompt": "a", "id": 1}\n{"prompt": "b", "id": 1}\n', "dup.jsonl:2: dup"),
    ],
)
def test_read_prompts_names_the_bad_line(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(UsageError, match=message):
        read_prompts(tmp_path / name)


# -- batching --------------------------------------------------------------------------------


def test_image_does_not_depend_on_batching(pipe):
    """Image i of a prompt is render()'s image i, whatever runs beside it."""
    s = Settings(num_inference_steps=2, height=64, width=64)
    alone = render(pipe, SHELF, "", 2, 7.5, 3, 2, 64, 64)
    mixed = render_batch(pipe, [(KETTLE, 0), (SHELF, 3), (KETTLE, 9), (SHELF, 4)], s)
    single = render_batch(pipe, [(SHELF, 4)], s)
    a = np.stack([np.asarray(im, dtype=int) for im in alone])
    b = np.stack([np.asarray(im, dtype=int) for im in (mixed[1], mixed[3])])
    # Batched float kernels may round the last bit differently; a pixel level is 1/255.
    assert np.abs(a - b).max() <= 1
    assert np.abs(a[1] - np.asarray(single[0], dtype=int)).max() <= 1
    assert np.abs(np.asarray(mixed[0], dtype=int) - a[0]).mean() > 5  # other prompt differs


def test_batch_writes_images_manifest_check_and_registry(assets, tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    rows = [{"prompt": SHELF, "seed": 10, "num_images": 3}, {"prompt": KETTLE, "lora": "LORA"}]
    prompts.write_text(
        "".join(
            json.dumps(r).replace("LORA", str(assets / "lora" / "catalog")) + "\n" for r in rows
        )
    )
    out = tmp_path / "out"
    argv = ["--prompts", prompts, "--out", out, "--num-images", 2, "--check"]
    assert _cli(assets, *argv, "--checker", assets / "checker") == 0
    manifest = _manifest(out)
    assert [(r["index"], r["seed"]) for r in manifest] == [
        (0, 10),
        (0, 11),
        (0, 12),
        (1, 0),
        (1, 1),
    ]
    assert all((out / r["file"]).is_file() for r in manifest)
    assert manifest[0]["loras"] == [] and manifest[3]["loras"][0]["name"] == "catalog"
    assert [o["object"] for o in manifest[0]["check"]["objects"]] == ["shelf", "basket"]
    assert json.loads(capsys.readouterr().out)["images"] == 5
    [run] = runs.list_runs(tmp_path)
    assert (run["kind"], run["status"], run["metrics"]["images"]) == ("batch", "finished", 5)
    assert run["seeds"] == [0, 1, 10, 11, 12]
    # another run into the same folder must say how it wants to treat the old one
    assert _cli(assets, *argv) == 2
    assert "holds another run's files (manifest.jsonl, batch.json)" in capsys.readouterr().err
    assert _cli(assets, "--prompts", prompts, "--out", out, "--overwrite") == 0
    assert len(_manifest(out)) == 3 + 4  # --num-images 4 now for the second prompt
    assert len(list((out / "images").glob("*.png"))) == 7


def test_geneval_layout(assets, tmp_path):
    meta = {"tag": "counting", "include": [{"class": "vase", "count": 2}], "prompt": "two vases"}
    prompts = tmp_path / "evaluation_metadata.jsonl"
    prompts.write_text(json.dumps(meta) + "\n" + json.dumps({**meta, "prompt": "a lamp"}) + "\n")
    out = tmp_path / "geneval"
    assert _cli(assets, "--prompts", prompts, "--out", out, "--num-images", 2, "--geneval") == 0
    assert json.loads((out / "00000" / "metadata.jsonl").read_text()) == meta
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == [
        "00000/samples/00000.png",
        "00000/samples/00001.png",
        "00001/samples/00000.png",
        "00001/samples/00001.png",
    ]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--lora", "no-such-adapter"], "--lora: unknown adapter 'no-such-adapter'"),
        (["--num-images", 0], "p.txt:1: num_images: expected an integer in [1, 10000]"),
        (["--resume", "--overwrite"], "--resume: give --resume or --overwrite, not both"),
        (["--scheduler", "dpm3"], "--scheduler: unknown 'dpm3'"),
    ],
)
def test_bad_arguments(assets, tmp_path, capsys, extra, message):
    (tmp_path / "p.txt").write_text(SHELF + "\n")
    assert _cli(assets, "--prompts", tmp_path / "p.txt", "--out", tmp_path / "o", *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("genimg batch: error: ") and message in err
    assert not (tmp_path / "o").exists()


def test_resume_with_other_settings_is_refused(assets, tmp_path, capsys):
    (tmp_path / "p.txt").write_text(SHELF + "\n")
    argv = ["--prompts", tmp_path / "p.txt", "--out", tmp_path / "o", "--num-images", 1]
    assert _cli(assets, *argv) == 0
    assert _cli(assets, *argv, "--resume", "--seed", 5) == 2
    err = capsys.readouterr().err
    assert "--resume: " in err and "(seed: 0, now 5)" in err
    assert _cli(assets, *argv, "--resume") == 0  # nothing left to do, nothing changed
    assert len(_manifest(tmp_path / "o")) == 1


# -- kill -9 and --resume --------------------------------------------------------------------


def _command(assets: Path, prompts: Path, out: Path, *extra) -> list[str]:
    argv = ["batch", "--model", assets / "model", "--prompts", prompts, "--out", out]
    argv += ["--num-images", 8, "--num-inference-steps", 6, "--height", 64, "--width", 64]
    return [sys.executable, "-m", "genimg", *map(str, argv + list(extra))]


def test_resume_after_kill_is_byte_identical(assets, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join([SHELF, KETTLE, "a bedroom with a blue bed", "a brass lamp"]))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_command(assets, prompts, full), env=env, check=True, capture_output=True)
    expected = _hashes(full)
    assert len(expected) == 32

    proc = subprocess.Popen(_command(assets, prompts, killed), env=env, stderr=subprocess.DEVNULL)
    manifest = killed / "manifest.jsonl"
    deadline = time.monotonic() + 600  # the lead's training may share the cores
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.exists() and manifest.read_text().count("\n") >= 3:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = manifest.read_text().count("\n") if manifest.exists() else 0
    assert 3 <= done < 32, f"killed after {done} of 32 images; expected mid-run"
    assert runs.list_runs(tmp_path)[1]["status"] == "interrupted"  # its process is gone
    # what a crash can leave besides: a cut last manifest line and a temporary file
    with open(manifest, "a") as handle:
        handle.write('{"file": "images/000')
    (killed / "images" / ".00003-x.png.tmp-999").write_bytes(b"\x89PNG")

    assert main([str(a) for a in _command(assets, prompts, killed, "--resume")[3:]]) == 0
    assert _hashes(killed) == expected
    rows = _manifest(killed)
    assert sorted(r["file"] for r in rows) == sorted(expected)  # once each, no duplicates
    assert not list(killed.rglob("*.tmp-*"))
    [run] = runs.list_runs(tmp_path)[1:]
    assert run["status"] == "finished" and run["out"] == str(killed.resolve())


# -- --until-correct -------------------------------------------------------------------------


def test_until_correct_retries_rejected_images_and_reports_honestly(
    assets, pipe, tmp_path, capsys, monkeypatch
):
    from genimg import checker as ck

    calls: list[int] = []
    verdicts = iter([False, True, False, False, True, False])

    def fake_check(checker, images, requested, names=None, batch_size=256):
        calls.append(len(images))
        return [
            {"objects": [], "all_present": ok, "all_correct": ok, "suggestions": []}
            for _, ok in zip(images, verdicts, strict=False)
        ]

    monkeypatch.setattr(ck, "check", fake_check)
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": SHELF, "seed": 10}) + "\n")
    out = tmp_path / "uc"
    argv = ["--prompts", tmp_path / "p.jsonl", "--out", out, "--num-images", 3]
    assert _cli(assets, *argv, "--until-correct", 3, "--checker", assets / "checker") == 0
    # Try 1: seeds 10-12 (11 passes); try 2: 13 and 15 (15 passes); try 3: 16 fails too.
    assert calls == [3, 2, 1]
    rows = _manifest(out)
    assert [[a["seed"] for a in r["attempts"]] for r in rows] == [[10, 13, 16], [11], [12, 15]]
    assert [r["seed"] for r in rows] == [16, 11, 15]  # the kept image is the last try
    assert [r["accepted"] for r in rows] == [False, True, True]
    kept = np.asarray(Image.open(out / rows[2]["file"]).convert("RGB"), dtype=int)
    fresh = render(pipe, SHELF, "", 2, 7.5, 15, 1, 64, 64)[0]
    assert np.abs(kept - np.asarray(fresh, dtype=int)).max() <= 1  # really seed 15's image
    assert json.loads(Image.open(out / rows[2]["file"]).info["genimg"])["seed"] == 15
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["renders"] == 6 and metrics["accepted"] == 2
    assert metrics["acceptance_rate"] == pytest.approx(2 / 3)
    assert metrics["first_try_rate"] == pytest.approx(1 / 3)  # selection does not hide it
    report = (out / "report.md").read_text()
    assert "2 of 3 images accepted (67%) after 6 renders; 33% passed on their first seed" in report
    assert json.loads((out / "report.json").read_text())["prompts"][0]["first_try"] == 1
    [run] = runs.list_runs(tmp_path)
    assert run["metrics"]["acceptance_rate"] == metrics["acceptance_rate"]
    assert run["config"]["until_correct"] == 3


def test_until_correct_is_checked_and_compare_has_none(assets, tmp_path, capsys):
    (tmp_path / "p.txt").write_text(SHELF + "\n")
    argv = ["--prompts", tmp_path / "p.txt", "--out", tmp_path / "o", "--until-correct", 0]
    assert _cli(assets, *argv) == 2
    assert "--until-correct: expected an integer in [1, 100], got 0" in capsys.readouterr().err
    argv = ["compare", "--prompt", SHELF, "--out", str(tmp_path / "c"), "--until-correct", "3"]
    try:  # compare's numbers are about the models: it has no such option
        code = main(argv)
    except SystemExit as stop:  # argparse's own exit
        code = stop.code
    assert code == 2 and "unrecognized arguments: --until-correct" in capsys.readouterr().err


# -- accelerate launch -----------------------------------------------------------------------


def test_merge_keeps_each_image_once_in_run_order(tmp_path):
    from genimg.manifest import merge

    files = [f"images/{i}.png" for i in range(4)]
    (tmp_path / "images").mkdir()
    for file in files:
        (tmp_path / file).write_bytes(b"png")
    row = {f: json.dumps({"file": f, "seed": i}) + "\n" for i, f in enumerate(files)}
    (tmp_path / "manifest.jsonl").write_text(row[files[0]])  # merged by an earlier run
    (tmp_path / "manifest.part-000.jsonl").write_text(row[files[0]] + row[files[1]])
    (tmp_path / "manifest.part-001.jsonl").write_text(row[files[3]] + row[files[2]])
    rows = merge(tmp_path, files)
    assert [r["seed"] for r in rows] == [0, 1, 2, 3]
    assert _manifest(tmp_path) == rows and not list(tmp_path.glob("manifest.part-*"))


def _write_txt(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow  # three Python processes start: tens of CPU seconds
def test_accelerate_launch_two_processes_match_one(assets, tmp_path):
    """accelerate launch --num_processes 2 splits the chunks; the merged result is the
    single-process run's, image for image."""
    prompts = tmp_path / "p.jsonl"
    rows = [{"prompt": SHELF, "num_images": 3}, {"prompt": KETTLE, "negative_prompt": "dark"}]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))  # two chunks
    one, two = tmp_path / "one", tmp_path / "two"
    argv = ["--prompts", prompts, "--num-images", 2, "--check", "--checker", assets / "checker"]
    assert _cli(assets, *argv, "--out", one) == 0
    # --multi_gpu is what makes accelerate start K processes (through torchrun); on a machine
    # without GPUs, genimg's PartialState(cpu=True) joins them over gloo.
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    command = launcher + ["--num_processes", "2", "--main_process_port", str(_free_port())]
    command += ["-m", "genimg", "batch", "--model", str(assets / "model"), *FAST]
    command += [str(a) for a in [*argv, "--out", two]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _hashes(two) == _hashes(one) and len(_hashes(one)) == 5
    assert _manifest(two) == _manifest(one)  # the same rows, once each, in the same order
    assert not list(two.glob("manifest.part-*"))
    ran = [r for r in runs.list_runs(tmp_path) if r["out"] == str(two.resolve())]
    assert [(r["status"], r["metrics"]["images"]) for r in ran] == [("finished", 5)]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_self_train_data_keeps_exactly_the_passing_images(assets, tmp_path, monkeypatch):
    """scripts/self_train_data.py folder: the checked batch's images in which every object
    passed, byte for byte, each captioned with its own prompt; an unchecked batch refused."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    from self_train_data import passing_folder

    from genimg import checker as ck

    verdicts = iter([True, False, False, True, True])

    def fake_check(checker, images, requested, names=None, batch_size=256):
        return [
            {"objects": [], "all_present": ok, "all_correct": False, "suggestions": []}
            for _, ok in zip(images, verdicts, strict=False)
        ]

    monkeypatch.setattr(ck, "check", fake_check)
    prompts = tmp_path / "p.txt"
    prompts.write_text(f"{SHELF}\n{KETTLE}\n")
    out = tmp_path / "gen"
    argv = ["--prompts", prompts, "--out", out, "--num-images", 2, "--check"]
    assert _cli(assets, *argv, "--checker", assets / "checker") == 0
    rows = _manifest(out)
    passed = [r for r in rows if r["check"]["all_present"]]
    assert len(rows) == 4 and len(passed) == 2  # the fifth verdict is never asked for
    data = tmp_path / "data"
    assert passing_folder(out, data) == (2, 4)
    meta = [json.loads(x) for x in (data / "metadata.jsonl").read_text().splitlines()]
    assert [m["text"] for m in meta] == [r["prompt"] for r in passed]
    for m, r in zip(meta, passed, strict=True):
        assert (data / m["file_name"]).read_bytes() == (out / r["file"]).read_bytes()
    assert sorted(p.name for p in data.iterdir()) == ["000000.png", "000001.png", "metadata.jsonl"]
    plain = tmp_path / "plain"
    assert _cli(assets, "--prompts", prompts, "--out", plain, "--num-images", 1) == 0
    with pytest.raises(SystemExit, match="no checked images"):
        passing_folder(plain, tmp_path / "data2")
