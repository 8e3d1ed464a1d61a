"""Bad input everywhere, and what a user must not be able to do: a table-driven suite.

Every row of the tables below is one bad input, given to the CLI (in this process, through
`genimg.cli.main`), to the Python API, or to the served app's API (`python app.py` with tiny
models, driven by gradio_client). Each must give a clear error (one `genimg CMD: error:` line
in the CLI, a UsageError naming the argument in Python, a message in the app), leave the
process or server running and write no file. Odd but valid text (emoji, right-to-left, mixed
Japanese, control characters, 100,000 characters) must render, a long prompt cut with a
warning. The security half: pickles that would run code are refused unopened, the server
binds loopback and serves no file outside its output folder, and adapter names from the web
must be names in the library. Last, 50 concurrent clients for 30 s (marked slow).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from test_checker import _png_header_only  # noqa: E402
from test_render import _bad_model, _make_lora, _Marker  # noqa: E402
from test_ui import _free_port, _get  # noqa: E402
from tiny_assets import make_checker, make_lora, make_model  # noqa: E402

from genimg import adapters, check, pipeline, ui  # noqa: E402
from genimg import checker as ck  # noqa: E402
from genimg.cli import main  # noqa: E402
from genimg.errors import UsageError  # noqa: E402
from genimg.render import file_name, render  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "assets" / "recipes"
PROMPT = "a bathroom with a wooden shelf and a white ceramic sink"
FAST = ["--num-inference-steps", "2", "--height", "64", "--width", "64"]
TINY_RUN = dict(num_inference_steps=2, height=64, width=64)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Tiny models, an adapter library, and every odd file and folder the tables use."""
    tmp = tmp_path_factory.mktemp("reliability")
    f: dict[str, Path] = {"tmp": tmp}
    f["model"] = make_model(tmp / "model")
    f["lora_dir"] = tmp / "lora"
    f["lora"] = make_lora(f["model"], f["lora_dir"] / "catalog")
    f["checker"] = make_checker(tmp / "checker")
    f["marker"] = tmp / "UNPICKLED"  # every crafted pickle below would create it
    f["empty_dir"] = tmp / "empty"
    f["empty_dir"].mkdir()
    f["pickle_model"] = Path(_bad_model("pickled", f["model"], tmp / "pm")[1])
    (tmp / "tm").mkdir()
    f["truncated_model"] = Path(_bad_model("corrupt", f["model"], tmp / "tm")[1])
    f["link_out"] = tmp / "link-out"
    f["link_out"].symlink_to("/etc")  # a model "folder" that is a symlink out of the tree
    f["dangling"] = tmp / "dangling"
    f["dangling"].symlink_to(tmp / "nowhere")
    evil = pickle.dumps(_Marker(f["marker"]))
    for suffix in (".ckpt", ".bin", ".pt"):
        f[f"evil_{suffix[1:]}"] = tmp / f"evil{suffix}"
        f[f"evil_{suffix[1:]}"].write_bytes(evil)
    f["lora_pickle"] = tmp / "lora-pickle"
    f["lora_pickle"].mkdir()
    (f["lora_pickle"] / "pytorch_lora_weights.bin").write_bytes(evil)
    weights = f["lora"] / adapters.WEIGHT_NAME
    f["lora_truncated"] = tmp / "truncated.safetensors"
    f["lora_truncated"].write_bytes(weights.read_bytes()[:-200])
    f["lora_other"] = _make_lora(f["model"], tmp / "other-base", seed=3, cross_dim=64)
    # prompts files
    f["latin1"] = tmp / "latin1.txt"
    f["latin1"].write_bytes("a caf\xe9 kitchen with a kettle\n".encode("latin-1"))
    f["garbage"] = tmp / "garbage.txt"
    f["garbage"].write_bytes(np.random.default_rng(0).bytes(4096))
    f["blank"] = tmp / "blank.txt"
    f["blank"].write_text("\n   \n\t\n\n")
    f["huge_line"] = tmp / "huge.txt"
    f["huge_line"].write_text("a sink " * (10 * 2**20 // 7) + "\n")  # one 10 MB line
    f["nan_jsonl"] = tmp / "nan.jsonl"
    f["nan_jsonl"].write_text('{"prompt": "a sink", "num_images": NaN}\n')
    f["ok_prompts"] = tmp / "ok.txt"
    f["ok_prompts"].write_text(PROMPT + "\n")
    # images
    f["good_png"] = tmp / "good.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(f["good_png"])
    f["text_png"] = tmp / "notes.png"
    f["text_png"].write_text("this is not an image")
    f["truncated_png"] = tmp / "truncated.png"
    f["truncated_png"].write_bytes(f["good_png"].read_bytes()[:60])
    f["bomb_png"] = tmp / "bomb.png"
    _png_header_only(f["bomb_png"], 100_000, 100_000)
    return f


# -- the CLI ---------------------------------------------------------------------------------

RENDER = ["render", "--model", "{model}", "--prompt", PROMPT, *FAST, "--out", "{out}"]
BATCH = ["batch", "--model", "{model}", *FAST, "--out", "{out}", "--prompts"]
CHECK = ["check", "--checker", "{checker}"]
LORA = ["train-lora", "--base", "{model}", "--recipe", str(RECIPES / "lora-tiny.toml")]
CHECKER = ["train-checker", "--recipe", str(RECIPES / "checker-tiny.toml")]
CATALOG = ["catalog", "--out", "{out}", "--n", "2", "--seed", "0"]

# (id, argv, what the one error line must say). A repeated option: the last one counts.
CLI_CASES = [
    ("empty prompt", [*RENDER, "--prompt", ""], "--prompt: must be non-empty text"),
    ("whitespace prompt", [*RENDER, "--prompt", " \t\n "], "--prompt: must be non-empty"),
    ("200,001-char prompt", [*RENDER, "--prompt", "a" * 200_001], "--prompt: 200,001 characters"),
    ("undecodable argv bytes", [*RENDER, "--prompt", "a sink \udcff"], "--prompt: not valid UTF-8"),
    ("steps nan", [*RENDER, "--num-inference-steps", "nan"], "--num-inference-steps: invalid int"),
    ("steps negative", [*RENDER, "--num-inference-steps", "-5"], "--num-inference-steps: expected"),
    ("steps huge", [*RENDER, "--num-inference-steps", "10000000000"], "--num-inference-steps:"),
    ("guidance nan", [*RENDER, "--guidance-scale", "nan"], "--guidance-scale: expected a number"),
    ("guidance inf", [*RENDER, "--guidance-scale", "inf"], "--guidance-scale: expected a number"),
    ("guidance text", [*RENDER, "--guidance-scale", "lots"], "--guidance-scale: invalid float"),
    ("seed negative", [*RENDER, "--seed", "-1"], "--seed: expected an integer"),
    ("seed huge", [*RENDER, "--seed", str(2**70)], "--seed: expected an integer"),
    ("seed text", [*RENDER, "--seed", "0x1f"], "--seed: invalid int value"),
    ("num-images zero", [*RENDER, "--num-images", "0"], "--num-images: expected an integer"),
    ("height not /8", [*RENDER, "--height", "100"], "--height: must be a multiple of 8"),
    ("width huge", [*RENDER, "--width", "100000"], "--width: expected an integer"),
    ("unknown scheduler", [*RENDER, "--scheduler", "dpm3"], "--scheduler: unknown 'dpm3'"),
    ("unknown option", [*RENDER, "--sampler", "x"], "unrecognized arguments: --sampler x"),
    ("model missing", [*RENDER, "--model", "{tmp}/nowhere"], "--model: no such folder"),
    ("model empty folder", [*RENDER, "--model", "{empty_dir}"], "no model_index.json"),
    ("model pickle-only", [*RENDER, "--model", "{pickle_model}"], "only pickle weights"),
    ("model truncated", [*RENDER, "--model", "{truncated_model}"], "corrupt safetensors file"),
    ("model is a CLIP folder", [*RENDER, "--model", "{checker}"], "no model_index.json"),
    ("model symlink out", [*RENDER, "--model", "{link_out}"], "no model_index.json"),
    ("model dangling link", [*RENDER, "--model", "{dangling}"], "--model: no such folder"),
    ("adapter unknown", [*RENDER, "--lora", "no-such"], "--lora: unknown adapter 'no-such'"),
    ("adapter empty folder", [*RENDER, "--lora", "{empty_dir}"], "holds no weights"),
    ("adapter pickle-only", [*RENDER, "--lora", "{lora_pickle}"], "only pickle files"),
    ("adapter .ckpt", [*RENDER, "--lora", "{evil_ckpt}"], "pickle file; refusing"),
    ("adapter truncated", [*RENDER, "--lora", "{lora_truncated}"], "corrupt safetensors"),
    ("adapter weight nan", [*RENDER, "--lora", "{lora}:nan"], "--lora: expected a number"),
    ("adapter weight huge", [*RENDER, "--lora", "{lora}:1e9"], "--lora: expected a number"),
    ("prompts latin-1", [*BATCH, "{latin1}"], "--prompts: cannot read"),
    ("prompts binary", [*BATCH, "{garbage}"], "--prompts: cannot read"),
    ("prompts blank lines", [*BATCH, "{blank}"], "holds no prompts"),
    ("prompts 10 MB line", [*BATCH, "{huge_line}"], "huge.txt:1: 10,485,"),
    ("prompts missing", [*BATCH, "{tmp}/none.txt"], "--prompts: no such file"),
    ("prompts is a folder", [*BATCH, "{empty_dir}"], "--prompts: cannot read"),
    ("prompts NaN count", [*BATCH, "{nan_jsonl}"], "nan.jsonl:1: num_images: expected"),
    ("batch count negative", [*BATCH, "{ok_prompts}", "--num-images", "-3"], "num_images"),
    ("image is text", [*CHECK, "{text_png}", "--objects", "sink"], "IMAGE: no readable image"),
    ("image truncated", [*CHECK, "{truncated_png}", "--objects", "sink"], "IMAGE: no readable"),
    ("image 10^10 pixels", [*CHECK, "{bomb_png}", "--objects", "sink"], "is too large"),
    ("image is a folder", [*CHECK, "{empty_dir}", "--objects", "sink"], "is a folder"),
    ("objects empty", [*CHECK, "{good_png}", "--objects", " ; "], "--objects: empty list"),
    ("emoji-only prompt", [*CHECK, "{good_png}", "--prompt", "🛁🚿"], "no catalog object"),
    (
        "base recipe missing",
        ["train-base", "--recipe", "{tmp}/none.toml", "--out", "{out}"],
        "--recipe",
    ),  # fmt: skip
    ("lora rank 0", [*LORA, "--rank", "0", "--out", "{out}"], "--rank: expected an integer"),
    ("lora steps nan", [*LORA, "--steps", "nan", "--out", "{out}"], "--steps: expected"),
    ("lora base pickle", [*LORA, "--base", "{pickle_model}", "--out", "{out}"], "--base:"),
    (
        "checker minutes nan",
        [*CHECKER, "--max-minutes", "nan", "--out", "{out}"],
        "--max-minutes: expected a number",
    ),  # fmt: skip
    ("checker steps < 0", [*CHECKER, "--steps", "-4", "--out", "{out}"], "--steps: must be"),
    ("checker init no weights", [*CHECKER, "--init", "{model}", "--out", "{out}"], "--init: "),
    ("catalog size not /8", [*CATALOG, "--size", "100"], "--size"),
    ("catalog n negative", [*CATALOG, "--n", "-2"], "--n: expected an integer"),
]


def _fill(argv: list[str], files: dict, out: Path) -> list[str]:
    return [a.format(**{k: str(v) for k, v in files.items()}, out=out) for a in argv]


@pytest.mark.parametrize("argv, message", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input_is_one_line_and_writes_nothing(files, tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    code = main(_fill(argv, files, out))
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert code == 2, err
    assert lines and all(line.startswith(f"genimg {argv[0]}: ") for line in lines), err
    assert lines[-1].startswith(f"genimg {argv[0]}: error: ") and message in lines[-1], err
    assert not [p for p in out.rglob("*") if p.is_file()] if out.exists() else True
    assert not files["marker"].exists()


# -- the Python API --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipe(files):
    pipe = pipeline.load_pipeline(files["model"])
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def checker(files):
    return ck.load_checker(files["checker"])


def _generate(ctx, **kw):
    args = dict(prompt=PROMPT, num_images=1, **TINY_RUN, out_dir=ctx["out"])
    return ui.generate(ctx["pipe"], ctx["checker"], **{**args, **kw}, lora_dir=ctx["lora_dir"])


# (id, call, exception, message)
API_CASES = [
    ("render None prompt", lambda c: render(c["pipe"], None), UsageError, "--prompt"),
    ("render bytes prompt", lambda c: render(c["pipe"], b"a sink"), UsageError, "--prompt"),
    (
        "render steps nan",
        lambda c: render(c["pipe"], PROMPT, num_inference_steps=float("nan")),
        UsageError,
        "--num-inference-steps",
    ),  # fmt: skip
    (
        "render steps 2.5",
        lambda c: render(c["pipe"], PROMPT, num_inference_steps=2.5),
        UsageError,
        "--num-inference-steps",
    ),  # fmt: skip
    ("render seed text", lambda c: render(c["pipe"], PROMPT, seed="12abc"), UsageError, "--seed"),
    (
        "render count bool",
        lambda c: render(c["pipe"], PROMPT, num_images=True),
        UsageError,
        "--num-images",
    ),  # fmt: skip
    (
        "render negative prompt int",
        lambda c: render(c["pipe"], PROMPT, negative_prompt=5),
        UsageError,
        "--negative-prompt",
    ),  # fmt: skip
    ("render height 65", lambda c: render(c["pipe"], PROMPT, height=65), UsageError, "--height"),
    (
        "scheduler unknown",
        lambda c: pipeline.set_scheduler(c["pipe"], "karras"),
        UsageError,
        "--scheduler: unknown 'karras'",
    ),  # fmt: skip
    (
        "load pickle model",
        lambda c: pipeline.load_pipeline(c["pickle_model"]),
        UsageError,
        "only pickle weights",
    ),  # fmt: skip
    ("adapter .bin", lambda c: adapters.resolve(str(c["evil_bin"])), UsageError, "pickle file"),
    ("adapter .pt", lambda c: adapters.resolve(str(c["evil_pt"])), UsageError, "pickle file"),
    (
        "adapter other base",
        lambda c: adapters.apply(c["pipe"], [adapters.resolve(str(c["lora_other"]))]),
        UsageError,
        "does not fit the base model",
    ),  # fmt: skip
    ("image is text", lambda c: check.load_image(c["text_png"]), ValueError, "not an image"),
    ("image bomb", lambda c: check.load_image(c["bomb_png"]), ValueError, "too large"),
    (
        "ui adapter path",
        lambda c: _generate(c, adapter="../../etc/passwd"),
        UsageError,
        "adapter: '../../etc/passwd': expected a name from",
    ),  # fmt: skip
    (
        "ui adapter absolute",
        lambda c: _generate(c, adapter=str(c["lora"])),
        UsageError,
        "expected a name from",
    ),  # fmt: skip
    (
        "ui adapter file in cwd",
        lambda c: _generate(c, adapter="pyproject.toml"),
        UsageError,
        "expected a name from",
    ),  # fmt: skip
    (
        "ui adapter weight nan",
        lambda c: _generate(c, adapter="catalog", adapter_weight="nan"),
        UsageError,
        "adapter_weight",
    ),  # fmt: skip
    (
        "ui guidance text",
        lambda c: _generate(c, guidance_scale="lots"),
        UsageError,
        "guidance_scale",
    ),  # fmt: skip
    ("ui 17 images", lambda c: _generate(c, num_images=17), UsageError, "num_images"),
    (
        "ui no images to check",
        lambda c: ui.check_images(c["checker"], [], PROMPT),
        UsageError,
        "images: upload at least one",
    ),  # fmt: skip
    (
        "ui compare 0 seeds",
        lambda c: ui.compare(
            c["pipe"],
            c["checker"],
            PROMPT,
            "catalog",
            num_seeds=0,
            out_dir=c["out"],
            lora_dir=c["lora_dir"],
        ),
        UsageError,
        "num_seeds",
    ),  # fmt: skip
]


@pytest.mark.parametrize("call, exc, message", [c[1:] for c in API_CASES],
                         ids=[c[0] for c in API_CASES])  # fmt: skip
def test_api_bad_input_raises_a_clear_error(files, pipe, checker, tmp_path, call, exc, message):
    ctx = {**files, "pipe": pipe, "checker": checker, "out": tmp_path / "out"}
    with pytest.raises(exc, match=re.escape(message)):
        call(ctx)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.png"))
    assert not files["marker"].exists()
    # and the pipeline still renders: a refused adapter left the base as it was
    assert len(render(pipe, "a sink", num_images=1, **TINY_RUN)) == 1


ODD_PROMPTS = {
    "emoji": "🛁 a bathroom 🚿 with a white ceramic sink 🧼✨",
    "right-to-left": "حمام مع a wooden shelf ومغسلة بيضاء",
    "mixed Japanese": "木製の棚と白い陶器のシンク, and a chrome faucet",
    "control characters": "a sink\x00\x01\x07\x1b[31m\ufffd\u202e\u200b with a mirror",
    "100,000 characters": ("a bathroom with a wooden shelf and two baskets " * 2200)[:100_000],
}


@pytest.mark.parametrize("prompt", ODD_PROMPTS.values(), ids=ODD_PROMPTS.keys())
def test_odd_but_valid_prompts_render(pipe, checker, files, tmp_path, prompt):
    result = ui.generate(pipe, checker, prompt, num_images=1, **TINY_RUN, out_dir=tmp_path)
    [shot] = result.shots
    assert shot.path.parent == result.run_dir and shot.path.is_file()
    assert re.fullmatch(r"\d{6}-[a-z0-9-]+\.png|\d{6}-p[0-9a-f]{10}\.png", shot.path.name)
    record = json.loads(Image.open(shot.path).info["genimg"])
    assert record["prompt"] == prompt  # kept exactly, even where the model reads less
    cut = [n for n in result.notes if "tokens; the model reads" in n]
    assert len(cut) == (len(prompt) > 10_000)  # the user is told the tail was cut


def test_long_prompt_is_cut_with_a_warning(pipe, caplog, capsys, files, tmp_path):
    prompt = ODD_PROMPTS["100,000 characters"]
    with caplog.at_level(logging.WARNING, logger="genimg"):
        [image] = render(pipe, prompt, num_images=1, **TINY_RUN)
    assert image.size == (64, 64)
    [warning] = [r.getMessage() for r in caplog.records if r.name == "genimg"]
    assert warning.startswith("--prompt: ") and "tokens; the model reads" in warning
    assert "is cut" in warning
    # the CLI says so too, and renders
    out = tmp_path / "cli"
    code = main(_fill([*RENDER, "--prompt", prompt, "--num-images", "1"], files, out))
    assert code == 0 and len(list(out.glob("*.png"))) == 1


# -- the app's API ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(files, tmp_path_factory):
    """`python app.py` on the tiny models; yields (url, out_dir, pid)."""
    out = tmp_path_factory.mktemp("served") / "outputs"
    port = _free_port()
    log = out.parent / "app.log"
    argv = [sys.executable, str(REPO / "app.py"), "--port", str(port)]
    argv += ["--model", str(files["model"]), "--checker", str(files["checker"])]
    argv += ["--lora-dir", str(files["lora_dir"]), "--out", str(out), "--max-queue", "8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("GRADIO_TEMP_DIR", None)
    with open(log, "w") as handle:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
    url, start = f"http://127.0.0.1:{port}", time.monotonic()
    while True:
        try:
            urllib.request.urlopen(url + "/gradio_api/info", timeout=5)
            break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if proc.poll() is not None or time.monotonic() - start > 900:
                proc.kill()
                pytest.fail(f"app.py did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
    yield url, out, proc
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def client(served):
    from gradio_client import Client

    return Client(served[0], verbose=False)


def _alive(url: str) -> bool:
    return urllib.request.urlopen(url + "/gradio_api/info", timeout=30).status == 200


# (id, endpoint, arguments, what the error must say: ours, or Gradio's own component check)
APP_CASES = [
    ("empty prompt", "/generate", dict(prompt=""), "--prompt"),
    ("whitespace prompt", "/generate", dict(prompt="\n\t  "), "--prompt"),
    ("200,001-char prompt", "/generate", dict(prompt="a" * 200_001), "200,001 characters"),
    ("0 images", "/generate", dict(prompt=PROMPT, num_images=0), "num_images|less than minimum"),
    ("height 100", "/generate", dict(prompt=PROMPT, height=100), "height"),
    ("width 4096", "/generate", dict(prompt=PROMPT, width=4096), "width|greater than maximum"),
    ("seed -5", "/generate", dict(prompt=PROMPT, seed=-5), "seed|less than minimum"),
    (
        "steps 10^6",
        "/generate",
        dict(prompt=PROMPT, num_inference_steps=10**6),
        "num_inference_steps|greater than maximum",
    ),  # fmt: skip
    # Gradio's own type conversion fails before our check: its generic message, server fine.
    (
        "guidance text",
        "/generate",
        dict(prompt=PROMPT, guidance_scale="lots"),
        "guidance|raised an exception",
    ),  # fmt: skip
    (
        "adapter path",
        "/generate",
        dict(prompt=PROMPT, adapter="../../../etc/passwd"),
        "adapter|not in the list of choices",
    ),  # fmt: skip
    (
        "adapter pickle",
        "/generate",
        dict(prompt=PROMPT, adapter="EVIL"),
        "adapter|not in the list of choices",
    ),  # fmt: skip
    ("check no images", "/check", dict(images=[], objects="sink"), "images|upload"),
    ("check empty objects", "/check", dict(images=["GOOD"], objects=" ; "), "--objects"),
    ("compare 0 seeds", "/compare", dict(prompt=PROMPT, num_seeds=0), "num_seeds|less than"),
    ("compare empty prompt", "/compare", dict(prompt="", num_seeds=1), "--prompt"),
]


@pytest.mark.parametrize("endpoint, kwargs, message", [c[1:] for c in APP_CASES],
                         ids=[c[0] for c in APP_CASES])  # fmt: skip
def test_app_bad_input_is_a_message_and_the_server_lives(
    served, client, files, endpoint, kwargs, message
):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    url, out, proc = served
    kwargs = {k: v for k, v in kwargs.items()}
    if kwargs.get("adapter") == "EVIL":
        kwargs["adapter"] = str(files["evil_ckpt"])
    if kwargs.get("images"):
        kwargs["images"] = [handle_file(str(files["good_png"]))]
    with pytest.raises(AppError, match=message):
        client.predict(**kwargs, api_name=endpoint)
    assert proc.poll() is None and _alive(url)
    assert not list(out.rglob("*.tmp*"))  # no half-written file


def test_app_reports_unreadable_uploads_and_never_unpickles(served, client, files):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    # A pickle is refused at upload (not an image type); nothing opens it.
    with pytest.raises(AppError, match="Invalid file type"):
        client.predict(images=[handle_file(str(files["evil_pt"]))], objects="sink",
                       api_name="/check")  # fmt: skip
    # Files that claim to be images but are not: an error row each, the good one scored.
    uploads = [files[k] for k in ("text_png", "truncated_png", "good_png")]
    table, details = client.predict(
        images=[handle_file(str(p)) for p in uploads], objects="sink", api_name="/check"
    )
    errors = [row[0] for row in table["data"] if row[0].startswith("error: ")]
    assert len(errors) == 2 and "not an image" in errors[0] and "truncated" in errors[1]
    assert "sink" in [row[0] for row in table["data"]]  # verdicts first, the file name last
    assert [d.get("error") is None for d in details] == [False, False, True]
    assert not files["marker"].exists()
    assert _alive(served[0])


def _raw_call(url: str, api_name: str, data: list) -> str:
    """Gradio's HTTP API without a client; json.dumps sends a lone surrogate as \\udcff."""
    request = urllib.request.Request(
        f"{url}/gradio_api/call/{api_name}",
        json.dumps({"data": data}).encode(),
        {"Content-Type": "application/json"},
    )
    event = json.loads(urllib.request.urlopen(request, timeout=60).read())["event_id"]
    stream = urllib.request.urlopen(f"{url}/gradio_api/call/{api_name}/{event}", timeout=900)
    return stream.read().decode()


def test_app_refuses_undecodable_text(served):
    """Text no file can hold (a lone surrogate, as undecodable bytes become): refused."""
    url, out, proc = served
    data = ["a sink \udcff", "", 2, 7.5, 0, 64, 64, 1, ui.NO_ADAPTER, 1.0, False, 3]
    reply = _raw_call(url, "generate", data)
    assert "event: error" in reply and "not valid UTF-8 text" in reply, reply[-500:]
    assert proc.poll() is None and _alive(url) and not list(out.rglob("*.tmp*"))


# -- security --------------------------------------------------------------------------------


def test_pickles_that_run_code_are_refused_unopened(files, tmp_path):
    """A .ckpt/.bin/.pt whose unpickling creates a file: every loader refuses it unopened."""
    marker = files["marker"]
    with pytest.raises(UsageError, match="only pickle weights"):
        pipeline.load_pipeline(files["pickle_model"])
    for suffix in (".ckpt", ".bin", ".pt"):
        with pytest.raises(UsageError, match="pickle"):
            adapters.resolve(str(files[f"evil_{suffix[1:]}"]))
    with pytest.raises(UsageError, match="only pickle files"):
        adapters.resolve(str(files["lora_pickle"]))
    # a pickle dropped into the library is not even listed
    library = tmp_path / "lora"
    shutil.copytree(files["lora_dir"], library)
    shutil.copy(files["evil_ckpt"], library / "evil.ckpt")
    shutil.copytree(files["lora_pickle"], library / "sneaky")
    assert adapters.list_adapters(library) == ["catalog"]
    assert not marker.exists()
    # the marker is real: unpickling does create it
    pickle.loads(files["evil_pt"].read_bytes())
    assert marker.exists()
    marker.unlink()


def test_no_eval_shell_or_pickle_in_the_code():
    """No code path can hand user text to a shell or to eval, or unpickle a file. (The one
    subprocess, bench.py's cold start of app.py, passes an argv list: no shell.)"""
    banned = re.compile(
        r"(?<![\w.])(eval|exec|compile|__import__)\(|os\.system|os\.popen|shell\s*=\s*True"
        r"|pickle\.loads?\(|torch\.load\(|weights_only\s*=\s*False|yaml\.load\("
    )
    hits = []
    for path in [*sorted((REPO / "genimg").glob("*.py")), REPO / "app.py"]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if banned.search(line.split("#")[0]):
                hits.append(f"{path.name}:{number}: {line.strip()}")
    assert not hits, hits


def test_user_text_never_reaches_a_path(pipe, checker, tmp_path):
    nasty = "../../../tmp/x; $(touch PWNED) `touch PWNED` | rm -rf / && a sink\\..\\"
    result = ui.generate(pipe, checker, nasty, num_images=1, **TINY_RUN, out_dir=tmp_path / "o")
    [shot] = result.shots
    assert shot.path.resolve().parent == result.run_dir
    assert shot.path.resolve().is_relative_to((tmp_path / "o").resolve())
    assert "/" not in file_name(0, nasty) and ".." not in file_name(0, nasty)
    assert not list(REPO.glob("PWNED")) and not list(tmp_path.rglob("PWNED"))


def test_adapter_names_from_the_web_must_be_library_names(files, tmp_path):
    library = tmp_path / "lora"
    shutil.copytree(files["lora_dir"], library)
    outside = tmp_path / "outside"
    shutil.copytree(files["lora"], outside)
    (library / "escape").symlink_to(outside)  # listed, but it lives outside the library
    assert adapters.list_adapters(library) == ["catalog", "escape"]
    [lora] = ui._loras("catalog", 0.5, library)
    assert lora.path == library.resolve() / "catalog" / adapters.WEIGHT_NAME
    assert lora.weight == 0.5
    for bad in ("escape", "../outside", str(outside), str(files["lora"]), "catalog/../catalog",
                "pyproject.toml", "lora", ".", "", " catalog"):  # fmt: skip
        if bad:
            with pytest.raises(UsageError, match="adapter"):
                ui._loras(bad, 1.0, library)
    assert ui._loras("", 1.0, library) == [] and ui._loras(ui.NO_ADAPTER, 1.0, library) == []


def _listening_addresses(pid: int, port: int) -> set[str]:
    """Local addresses a process listens on at `port`, from /proc/net/tcp{,6}."""
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            local, _, state = line.split()[1:4]
            address, hex_port = local.split(":")
            if int(hex_port, 16) == port and state == "0A":  # LISTEN
                found.add(address)
    return found


def test_server_binds_loopback_only(served):
    url, _, proc = served
    port = int(url.rsplit(":", 1)[1])
    assert _listening_addresses(proc.pid, port) == {"0100007F"}  # 127.0.0.1, nothing else
    others = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    for address in others[:3]:  # the machine's other addresses do not answer
        if address.startswith("127.") or ":" in address:
            continue
        with pytest.raises((urllib.error.URLError, ConnectionError, TimeoutError)):
            urllib.request.urlopen(f"http://{address}:{port}/", timeout=5)


def test_no_file_outside_the_output_folder_is_served(served, client, files):
    """Beyond test_ui's path forms: links planted inside the output folder."""
    url, out, _ = served
    client.predict(prompt=PROMPT, num_images=1, **TINY_RUN, api_name="/generate")
    served_png = next((out / "generate").rglob("*.png"))  # not an earlier test's upload
    status, body = _get(url, f"/gradio_api/file={served_png}")
    assert status == 200 and body.startswith(b"\x89PNG")  # the positive control
    links = {
        out / "passwd-link": Path("/etc/passwd"),
        out / "gradio" / "pyproject-link.toml": REPO / "pyproject.toml",
        out / "model-link": files["model"],
    }
    for link, target in links.items():
        link.symlink_to(target)
    secrets = (b"root:", b'name = "genimg"', b"StableDiffusionPipeline")
    paths = [
        *[str(link) for link in links],
        f"{out}/model-link/model_index.json",
        f"{out}/../app.log",
        f"{out}/gradio/../../app.log",
        str(files["model"] / "model_index.json"),
        str(REPO / "lora"),
    ]
    leaks = []
    for path in paths:
        for form in (f"/gradio_api/file={path}", f"/file={path}", f"/gradio_api/file/{path}"):
            status, body = _get(url, form)
            if any(s in body for s in secrets) or (status == 200 and b"Traceback" in body):
                leaks.append((form, status, body[:80]))
            if status == 200 and not body.lstrip().startswith((b"<", b"{")):
                leaks.append((form, status, body[:80]))
    assert not leaks, leaks


# -- load ------------------------------------------------------------------------------------

LOAD_CLIENTS, LOAD_SECONDS = 50, 30


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.slow
def test_fifty_concurrent_clients_are_served_or_refused(served, client):
    """50 clients send requests back to back for 30 s: each request is answered or cleanly
    refused by the bounded queue, memory stays bounded, the queue drains, and a normal
    request succeeds afterwards. Prints the figures the README quotes.

    Each client is its own `gradio_client.Client` (its own session and event stream), as 50
    users are. With one Client shared by 50 threads, 4 requests of one CI run ended in the
    client's CancelledError (the server stayed up); that shared stream is not what this
    test measures, and whether it was the cause is not proven."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client

    url, _, proc = served
    fast = dict(prompt=PROMPT, num_images=1, **TINY_RUN)
    client.predict(**fast, api_name="/generate")  # warm: first-call costs are not load
    rss_before = _rss_mb(proc.pid)
    stop, done = time.monotonic() + LOAD_SECONDS, threading.Event()
    latencies: list[float] = []
    refused, failed, peak = [0], [], [rss_before]

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], _rss_mb(proc.pid))

    def one_client(i: int) -> None:
        k, own = 0, Client(url, verbose=False)
        while time.monotonic() < stop:
            t0 = time.monotonic()
            try:
                result = own.predict(**fast, seed=1000 * i + k, api_name="/generate")
                assert len(result[0]) == 1
                latencies.append(time.monotonic() - t0)
            except Exception as err:  # the queue's refusal reaches the client as an error
                text = str(err).lower()
                if "queue" in text and "full" in text:
                    refused[0] += 1
                    time.sleep(0.25)  # a client backs off, as a browser's user would
                else:
                    failed.append(repr(err)[:200])
            k += 1

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t_start = time.monotonic()
    with ThreadPoolExecutor(LOAD_CLIENTS) as pool:
        list(pool.map(one_client, range(LOAD_CLIENTS)))
    drained_s = time.monotonic() - t_start - LOAD_SECONDS
    done.set()
    sampler.join()
    status = json.loads(urllib.request.urlopen(url + "/gradio_api/queue/status").read())
    after = client.predict(**fast, seed=7, api_name="/generate")
    p95 = float(np.percentile(latencies, 95)) if latencies else float("nan")
    figures = {
        "clients": LOAD_CLIENTS,
        "seconds": LOAD_SECONDS,
        "served": len(latencies),
        "refused": refused[0],
        "failed": len(failed),
        "p95_latency_s": round(p95, 2),
        "drained_after_s": round(drained_s, 1),
        "rss_before_mb": round(rss_before),
        "peak_rss_mb": round(max(peak[0], _rss_mb(proc.pid, "VmHWM"))),
    }
    print("load:", json.dumps(figures))
    assert not failed, failed[:5]
    assert figures["served"] >= 1 and proc.poll() is None
    assert status.get("queue_size", 0) == 0  # drained
    assert len(after[0]) == 1  # and a normal request still succeeds
    assert figures["peak_rss_mb"] - rss_before < 1024  # bounded: no per-request growth
