"""LoRA training and the adapter library, on a tiny random base model (fast, CPU).

What is checked: vanilla diffusers loads what `genimg train-lora` writes (with its alpha), the
kohya export loads back to the same weights, a run killed with SIGKILL and resumed ends with
the same bytes as an uninterrupted one, and bad input is a one-line error with exit 2.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from genimg.cli import main
from genimg.errors import UsageError
from genimg.lora import (
    IDENTITY_NAME,
    LAST_STEP,
    WEIGHT_NAME,
    LoraRecipe,
    cross_attention_inputs,
    draw_timesteps,
    grounding_loss,
    grounding_tokens,
    list_adapters,
    multires_noise,
    object_weight_maps,
    resolve_adapter,
    timestep_weights,
    validate_adapter,
)
from genimg.models import ModelConfig
from genimg.pipeline import save_pipeline

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(
    sample_size=32,
    vae_channels=(8, 8, 8, 8),
    text_hidden=32,
    text_layers=1,
    text_heads=2,
    text_max_length=64,
    unet_channels=(32, 32, 32),
    unet_heads=2,
)
RECIPE = """
description = "tiny test adapter"
caption_columns = ["text", "text_ja"]
rank = 4
alpha = 8
steps = 12
batch_size = 4
warmup = 2
checkpoint_every = 3
lr = 1e-3
sample_prompts = ["a bathroom with two wicker baskets"]
"""


def _base(folder: Path, **overrides) -> Path:
    from genimg.models import build_components

    torch.manual_seed(0)
    save_pipeline(build_components(ModelConfig(**{**TINY, **overrides})), folder)
    return folder


# One thread: the killed child below must use the same count for its checkpoint to match
# bit for bit.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lora")
    _base(root / "base")
    data = root / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):  # odd sizes and RGBA: the loader converts and resizes
        pixels = rng.integers(0, 256, (40, 48, 4 if i % 2 else 3), dtype=np.uint8)
        Image.fromarray(pixels).save(data / f"{i}.png")
        rows.append(
            {
                "file_name": f"{i}.png",
                "scene": "bathroom",
                "text": f"a bathroom with {i + 1} wicker baskets",
                "text_ja": f"籐のバスケットが{i + 1}つある浴室",
            }
        )
    rows.append({"file_name": "missing.png", "text": "skipped: no image"})
    rows.append({"file_name": "0.png", "text": "", "text_ja": ""})  # skipped: no caption
    (data / "metadata.jsonl").write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8"
    )
    (root / "recipe.toml").write_text(RECIPE + f'data = "{data}"\n', encoding="utf-8")
    return root


def _train(work: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "train-lora",
            "--base",
            str(work / "base"),
            "--recipe",
            str(work / "recipe.toml"),
            "--out",
            str(out),
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def trained(work) -> Path:
    out = work / "lora" / "tiny"
    assert _train(work, out, "--export", "kohya") == 0
    return out


def _short_recipe(work: Path, path: Path, extra: str) -> Path:
    """The fixture's recipe cut to 3 steps, with `extra` TOML lines, written to `path`."""
    text = (work / "recipe.toml").read_text(encoding="utf-8").replace("steps = 12", "steps = 3")
    path.write_text(text + extra, encoding="utf-8")
    return path


def _pipe(base: Path):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(
        base, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )


def _lora_tensors(pipe) -> dict[str, torch.Tensor]:
    from peft.utils import get_peft_model_state_dict

    out = {}
    for name in ("unet", "text_encoder"):
        model = getattr(pipe, name)
        sd = get_peft_model_state_dict(model, adapter_name=next(iter(model.peft_config)))
        out.update({f"{name}.{k}": v for k, v in sd.items()})
    return out


def test_outputs_and_card(trained):
    names = {p.name for p in trained.iterdir()}
    assert {WEIGHT_NAME, "tiny.safetensors", IDENTITY_NAME, "recipe.toml", "README.md"} <= names
    assert "checkpoints" not in names  # a complete run keeps only its weights
    card = (trained / "README.md").read_text(encoding="utf-8")
    assert "12 of 12" in card and "genimg train-lora" in card and "text, text_ja" in card
    assert "12 captions" in card  # 6 images x (English + Japanese)
    assert "'unreadable image': 1" in card and "'no caption': 1" in card
    assert LoraRecipe.from_toml(trained / "recipe.toml").rank == 4
    grid = np.asarray(Image.open(trained / "samples.png"))  # base row, then LoRA row
    assert grid.shape == (64, 40 + 4 * 32, 3) and "samples.png" in card
    assert not np.array_equal(grid[:32, 40:], grid[32:, 40:])  # the adapter changes the image
    ident = json.loads((trained / IDENTITY_NAME).read_text())
    assert ident["rank"] == 4 and ident["alpha"] == 8.0 and len(ident["base"]["arch_hash"]) == 12


def test_object_weight_gives_each_object_an_equal_share():
    big = {"name": "sofa", "boxes": [[0, 0, 64, 32]]}  # half of a 64 px image
    pair = {"name": "basket", "boxes": [[0, 48, 16, 56], [32, 48, 48, 56]]}  # 4 of 64 cells
    bad = {"objects": [{"boxes": [["x", 0, 1, 1], [0, 0]]}, "rug"]}  # malformed: no weight
    rows = [{"objects": [big, pair]}, {"objects": []}, {}, bad]
    maps = object_weight_maps(rows, size=64, latent=8, strength=1.0)[:, 0]
    assert maps.shape == (4, 8, 8)
    assert torch.allclose(maps.mean(dim=(1, 2)), torch.ones(4))
    assert all(torch.equal(maps[i], torch.ones(8, 8)) for i in (1, 2, 3))
    # Background cells keep 1 / (1 + strength); each object's extra mass is the same, so a
    # basket cell weighs 9 times a background cell and the sofa's twice.
    m = maps[0].numpy()
    assert m[7, 7] == pytest.approx(0.5) and m[0, 0] == pytest.approx(1.0)
    assert m[6, 0] == pytest.approx(4.5) and m[6, 2] == pytest.approx(0.5)
    assert (m[:4] - 0.5).sum() == pytest.approx((m[6] - 0.5).sum()) == pytest.approx(16.0)
    # Off by default: a recipe without the key trains every pixel alike.
    assert LoraRecipe().object_weight == 0.0


def test_timestep_bias_draws_the_noisiest_timesteps_more_often():
    w = timestep_weights(1000, 3.0, 0.25)
    assert w[:750].eq(1).all() and w[750:].eq(3).all()
    assert (
        timestep_weights(10, 2.0, 0.01)[-1] == 2 and timestep_weights(10, 2.0, 0.01)[:9].eq(1).all()
    )
    g = torch.Generator().manual_seed(0)
    t = draw_timesteps(g, 20000, w)
    # The noisiest quarter weighs 3 * 250 of 750 + 750: half of the draws, the rest uniform.
    assert (t >= 750).float().mean() == pytest.approx(0.5, abs=0.02)
    assert t.min() >= 0 and t.max() <= 999 and len(t.unique()) > 950
    # Uniform weights draw exactly what randint drew before the key existed.
    a = draw_timesteps(torch.Generator().manual_seed(5), 64, timestep_weights(1000, 1.0, 0.25))
    b = torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert LoraRecipe().timestep_bias_multiplier == 1.0


def test_multires_noise_adds_coarse_levels_at_unit_std():
    white = torch.randn((256, 4, 16, 16), generator=torch.Generator().manual_seed(0))
    # Off: the same tensor back and nothing drawn, so old recipes train to the same bytes.
    g = torch.Generator().manual_seed(1)
    assert multires_noise(g, white, 0, 0.5) is white
    assert torch.equal(
        torch.randn(3, generator=g), torch.randn(3, generator=torch.Generator().manual_seed(1))
    )
    noise = multires_noise(torch.Generator().manual_seed(1), white, 10, 0.5)
    assert noise.shape == white.shape and noise.std().item() == pytest.approx(1.0, abs=1e-5)
    # The levels stop at one cell: on 16 x 16 four of them (8, 4, 2, 1), however many asked.
    again = multires_noise(torch.Generator().manual_seed(1), white, 4, 0.5)
    assert torch.equal(noise, again)
    assert not torch.equal(noise, multires_noise(torch.Generator().manual_seed(1), white, 3, 0.5))
    # More of the noise in the image-wide and 4 x 4 means than white noise has (1/16, 1/4).
    assert white.mean(dim=(2, 3)).std().item() == pytest.approx(1 / 16, rel=0.1)
    assert noise.mean(dim=(2, 3)).std().item() > 1.6 / 16
    coarse = torch.nn.functional.avg_pool2d
    assert coarse(noise, 4).std().item() > 1.3 * coarse(white, 4).std().item()
    assert LoraRecipe().multires_noise_iterations == 0


def test_folder_boxes_follow_the_crop_and_resize(tmp_path):
    from genimg.data import load_dataset

    Image.new("RGB", (48, 32), "white").save(tmp_path / "a.png")  # crop x 8..40, then x2
    Image.new("RGB", (64, 64), "white").save(tmp_path / "b.png")
    rows = [
        {
            "file_name": "a.png",
            "text": "a",
            "objects": [{"name": "lamp", "boxes": [[4, 8, 24, 16]]}],
        },
        {"file_name": "b.png", "text": "b", "objects": [{"name": "rug", "boxes": [[0, 0, 64, 8]]}]},
    ]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = load_dataset(str(tmp_path), ["text"], size=64)
    assert data.rows[0]["objects"][0]["boxes"] == [[0, 16, 32, 32]]  # clipped at the left edge
    assert data.rows[1]["objects"][0]["boxes"] == [[0, 0, 64, 8]]  # already 64 px: unchanged
    assert json.loads((tmp_path / "metadata.jsonl").read_text().split("\n")[0]) == rows[0]


def test_object_weight_reaches_the_loss(work, tmp_path, capsys):
    data = tmp_path / "boxed"
    data.mkdir()
    rng = np.random.default_rng(1)
    rows = []
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(data / f"{i}.png")
        box = [[4 * i, 4, 4 * i + 8, 12]]
        rows.append({"file_name": f"{i}.png", "text": f"{i} baskets",
                     "objects": [{"name": "basket", "boxes": box}]})  # fmt: skip
    (data / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    weights = {}
    for w in (0.0, 2.0):
        recipe = tmp_path / f"r{w:g}.toml"
        recipe.write_text(
            f'data = "{data}"\ncaption_columns = ["text"]\nrank = 4\nsteps = 3\nbatch_size = 4\n'
            f"warmup = 1\ncheckpoint_every = 3\nlr = 1e-2\nobject_weight = {w}\n"
        )
        out = tmp_path / f"o{w:g}"
        argv = ["train-lora", "--base", str(work / "base"), "--recipe", str(recipe)]
        assert main([*argv, "--out", str(out)]) == 0
        weights[w] = load_file(out / WEIGHT_NAME)
        assert ("object_weight 2:" in (out / "README.md").read_text()) == (w == 2.0)
    assert "object_weight 2: 4 of 4 images have boxes" in capsys.readouterr().out
    # Same seed, data and draws: only the loss weighting differs, and it moves the weights.
    diffs = [float((weights[0.0][k] - weights[2.0][k]).abs().max()) for k in weights[0.0]]
    assert max(diffs) > 1e-4


def test_vanilla_diffusers_loads_adapter_with_its_alpha(work, trained):
    pipe = _pipe(work / "base")
    pipe.load_lora_weights(str(trained))
    saved = load_file(str(trained / WEIGHT_NAME))
    loaded = _lora_tensors(pipe)
    assert len(loaded) == len(saved) > 0
    assert any(v.abs().sum() > 0 for k, v in loaded.items() if "lora_B" in k)  # it trained
    q = pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    te_q = next(
        m for n, m in pipe.text_encoder.named_modules() if n.endswith("layers.0.self_attn.q_proj")
    )
    # alpha 8 / rank 4: without the adapter metadata diffusers would load scale 1.0.
    assert list(q.scaling.values()) == [2.0] and list(te_q.scaling.values()) == [2.0]


def test_kohya_export_loads_to_same_weights(work, trained):
    a, b = _pipe(work / "base"), _pipe(work / "base")
    a.load_lora_weights(str(trained), adapter_name="x")
    b.load_lora_weights(str(trained / "tiny.safetensors"), adapter_name="x")
    ta, tb = _lora_tensors(a), _lora_tensors(b)
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key
    kohya = load_file(str(trained / "tiny.safetensors"))
    assert any(k.startswith("lora_te_text_model_encoder_layers_0_self_attn_q_proj") for k in kohya)
    assert float(kohya[next(k for k in kohya if k.endswith(".alpha"))]) == 8.0
    for pipe in (a, b):
        pipe.fuse_lora()
    for name in ("unet", "text_encoder"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        for key in sa:
            torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=1e-6)


def test_kill_9_and_resume_is_exact(work, trained):
    out = work / "lora" / "killed"
    # Slow each step down in the child only, so the kill lands mid-run.
    argv = ["train-lora", "--base", str(work / "base"), "--recipe", str(work / "recipe.toml"),
            "--out", str(out)]  # fmt: skip
    code = (
        "import sys, time, genimg.train_base as tb\n"
        "f = tb.diffusion_loss\n"
        "tb.diffusion_loss = lambda *a, **k: (time.sleep(0.15), f(*a, **k))[1]\n"
        "from genimg.cli import main\n"
        f"sys.exit(main({argv!r}))\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None:
        if any(
            p.is_dir() and not p.name.endswith(".tmp") for p in (out / "checkpoints").glob("ckpt-*")
        ):
            break
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert not (out / WEIGHT_NAME).exists(), "the run finished before it could be killed"
    assert _train(work, out, "--resume") == 0
    want, got = load_file(str(trained / WEIGHT_NAME)), load_file(str(out / WEIGHT_NAME))
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key


@pytest.mark.parametrize(
    "extra, arg",
    [
        (["--rank", "0"], "--rank"),
        (["--rank", "-3"], "--rank"),
        (["--steps", "abc"], "--steps"),
        (["--data", "NODATA"], "--data"),
        (["--caption-column", "nope"], "--caption-column"),
        (["--base", "/nonexistent/model"], "--base"),
        (["--max-minutes", "nan"], "--max-minutes"),
        (["--device", "tpu"], "--device"),
    ],
)
def test_bad_train_input_is_one_line_exit_2(work, tmp_path, capsys, extra, arg):
    extra = [str(tmp_path) if x == "NODATA" else x for x in extra]  # a folder, no metadata.jsonl
    assert _train(work, tmp_path / "out", *extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1].startswith(f"genimg train-lora: error: {arg}:"), err
    assert "Traceback" not in err and err.count("error") == 1, err
    assert not (tmp_path / "out" / WEIGHT_NAME).exists()


def test_bad_recipe_and_occupied_out(work, trained, tmp_path, capsys):
    for text, words in (
        ("rank = 0\n", "rank must be > 0"),
        ("lernrate = 1\n", "unknown key"),
        ("object_weight = -1\n", "object_weight must be >= 0"),
        ("grounding_weight = -0.5\n", "grounding_weight must be >= 0, got -0.5"),
        ("timestep_bias_multiplier = 0\n", "timestep_bias_multiplier must be > 0"),
        ("timestep_bias_portion = 1.5\n", "timestep_bias_portion in (0, 1]"),
        ("multires_noise_iterations = -1\n", "multires_noise_iterations must be >= 0"),
        ("multires_noise_discount = 0\n", "multires_noise_discount in (0, 1]"),
    ):
        (tmp_path / "r.toml").write_text(text)
        assert (
            main(["train-lora", "--recipe", str(tmp_path / "r.toml"), "--out", str(tmp_path / "o")])
            == 2
        )
        assert words in capsys.readouterr().err
    before = (trained / WEIGHT_NAME).read_bytes()
    assert _train(work, trained) == 2  # refuses to overwrite a finished adapter
    assert "already holds an adapter" in capsys.readouterr().err
    assert (trained / WEIGHT_NAME).read_bytes() == before


def test_library_lists_resolves_and_validates(work, trained, tmp_path):
    lora_dir = trained.parent
    (lora_dir / "recipe-only").mkdir(exist_ok=True)  # not trained yet: not listed
    (lora_dir / "recipe-only" / "recipe.toml").write_text("rank = 8\n")
    names = [a.name for a in list_adapters(lora_dir)]
    assert "tiny" in names and "recipe-only" not in names
    info = resolve_adapter("tiny", lora_dir)
    assert (info.rank, info.alpha, info.format) == (4, 8.0, "diffusers")
    assert info.description == "tiny test adapter" and "12 of 12" in info.card
    kohya = resolve_adapter(trained / "tiny.safetensors")
    assert (kohya.format, kohya.rank, kohya.alpha) == ("kohya", 4, 8.0)
    pipe = _pipe(work / "base")
    assert validate_adapter(info, pipe) == [] and validate_adapter(kohya, pipe) == []

    other = _pipe(_base(tmp_path / "other-base", text_hidden=64, unet_channels=(64, 64, 64)))
    with pytest.raises(UsageError, match="trained for base 'base'.*the model 'other-base'"):
        validate_adapter(info, other)
    loose = tmp_path / "loose.safetensors"  # a foreign file: no genimg_adapter.json beside it
    loose.write_bytes((trained / WEIGHT_NAME).read_bytes())
    with pytest.raises(UsageError, match=r"has shape \(4, 32\); base model 'other-base' needs"):
        validate_adapter(resolve_adapter(loose), other)


def test_library_refuses_pickle_corrupt_and_unknown(trained, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for suffix in (".bin", ".ckpt", ".pt"):
        torch.save({"x": Evil()}, tmp_path / f"evil{suffix}")
        with pytest.raises(UsageError, match="pickle"):
            resolve_adapter(tmp_path / f"evil{suffix}")
    only_pickle = tmp_path / "only-pickle"
    only_pickle.mkdir()
    (tmp_path / "evil.bin").rename(only_pickle / "pytorch_lora_weights.bin")
    with pytest.raises(UsageError, match="only pickle files"):
        resolve_adapter(only_pickle)
    assert not marker.exists()  # nothing was ever unpickled

    (tmp_path / "garbage.safetensors").write_bytes(b"\x00\x01not a safetensors file" * 10)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes((trained / WEIGHT_NAME).read_bytes()[:-100])
    for bad in ("garbage", "truncated"):
        with pytest.raises(UsageError, match="corrupt safetensors file"):
            resolve_adapter(tmp_path / f"{bad}.safetensors")
    with pytest.raises(UsageError, match="unknown adapter 'nope'; in .*: killed, tiny"):
        resolve_adapter("nope", trained.parent)


@pytest.mark.parametrize("spec", ["tiny:2.5", "tiny:-3", "tiny:nan", "nope", "x.ckpt"])
def test_render_refuses_bad_adapter_spec(tmp_path, capsys, spec):
    code = main(["render", "--prompt", "a bathroom", "--lora", spec, "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.splitlines()[-1].startswith("genimg render: error: --lora:"), err


def test_debiased_estimation_weighs_each_image_by_one_over_sqrt_snr():
    from types import SimpleNamespace

    from genimg.train_base import diffusion_loss

    class Encoder:  # the fewest parts `encode_chunked` reads
        config = SimpleNamespace(max_position_embeddings=4, eos_token_id=1)

        def __call__(self, ids):
            return (torch.zeros(ids.shape[0], ids.shape[1], 8),)

    def unet(noisy, timesteps, encoder_hidden_states, encoder_attention_mask):  # no noise at all
        return SimpleNamespace(sample=torch.zeros_like(noisy))

    ac = torch.tensor([0.999, 0.5, 0.01])  # SNR 999, 1, 1/99
    noise = torch.ones(3, 4, 2, 2)  # so every image's plain loss is 1
    args = (unet, Encoder(), torch.zeros(3, 4, 2, 2), torch.zeros(3, 4, dtype=torch.long), noise)
    t = torch.arange(3)
    snr = ac / (1 - ac)
    assert diffusion_loss(*args, t, ac, 0.0).item() == pytest.approx(1.0)
    plain = diffusion_loss(*args, t, ac, 0.0, debiased=True).item()
    assert plain == pytest.approx((1 / snr.sqrt()).mean().item(), rel=1e-5)
    # On top of min-SNR-5: only the least noisy image is capped, to 5 / 999.
    both = diffusion_loss(*args, t, ac, 5.0, debiased=True).item()
    assert both == pytest.approx(
        ((torch.tensor([5 / 999.0, 1, 1])) / snr.sqrt()).mean().item(), rel=1e-5
    )
    assert LoraRecipe().debiased_estimation is False


def test_padding_mask_hides_each_windows_padding_from_the_unet():
    from types import SimpleNamespace

    from genimg.train_base import diffusion_loss

    class Encoder:  # windows of 4 tokens, EOS (= padding) 1
        config = SimpleNamespace(max_position_embeddings=4, eos_token_id=1)

        def __call__(self, ids):
            return (torch.randn(ids.shape[0], ids.shape[1], 8),)

    seen = []

    def unet(noisy, timesteps, encoder_hidden_states, encoder_attention_mask):
        seen.append(encoder_attention_mask)
        return SimpleNamespace(sample=torch.zeros_like(noisy))

    # BOS 0; row 0: "5" and an empty window; row 1: "5 6" filling its window, then "9"
    ids = torch.tensor([[0, 5, 1, 1, 0, 1, 1, 1], [0, 5, 6, 1, 0, 9, 1, 1]])
    z = torch.zeros(2, 4, 2, 2)
    for masked in (True, False):
        diffusion_loss(
            unet, Encoder(), z, ids, z, torch.tensor([1, 2]), torch.full((3,), 0.5), 0.0,
            mask_padding=masked,
        )  # fmt: skip
    assert seen[0].tolist() == [[1, 1, 1, 0, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1, 0]]
    assert seen[1] is None and LoraRecipe().padding_mask is False
    # The empty second window of row 0 hidden too (mask_empty_windows), alone and with both.
    for padding in (False, True):
        diffusion_loss(
            unet, Encoder(), z, ids, z, torch.tensor([1, 2]), torch.full((3,), 0.5), 0.0,
            mask_padding=padding, mask_empty_windows=True,
        )  # fmt: skip
    assert seen[2].tolist() == [[1, 1, 1, 1, 0, 0, 0, 0], [1] * 8]
    assert seen[3].tolist() == [[1, 1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 0]]
    assert LoraRecipe().mask_empty_windows is False
    with pytest.raises(ValueError, match="do not combine"):
        LoraRecipe(mask_empty_windows=True, grounding_weight=1.0)


def test_grounding_tokens_map_each_phrase_to_its_object():
    from genimg.models import load_tokenizer, tokenize

    tok = load_tokenizer(max_length=77)
    caption = "A red metal faucet on the gray glass sink. There are two brass vases."
    objects = [
        {"name": "faucet", "material": "metal", "color": "red", "count": 1},
        {"name": "sink", "material": "glass", "color": "gray", "count": 1},
        {"name": "vase", "material": "brass", "color": None, "count": 2},
        {"name": "unicorn", "material": "metal", "color": "red", "count": 1},  # not in taxonomy
        "rug",  # not a dict
        {"name": "rug", "material": "fabric", "color": "blue", "count": 1},  # not in the caption
    ]
    ja = "赤い金属製の蛇口、白い陶器製のシンク"  # the 、 keeps the faucet's phrase a run of its own
    ids = tokenize(tok, [caption, caption, "籐のバスケット", ja])
    tokens = grounding_tokens(tok, ids, [objects, None, objects, objects])
    words = tok.convert_ids_to_tokens(ids[0].tolist())
    got = [
        (w.removesuffix("</w>"), int(k)) for w, k in zip(words, tokens[0], strict=True) if k >= 0
    ]
    assert got == [("red", 0), ("metal", 0), ("faucet", 0), ("gray", 1), ("glass", 1),
                   ("sink", 1), ("two", 2), ("brass", 2), ("v", 2), ("ases", 2)]  # fmt: skip
    assert bool((tokens[1:3] == -1).all())  # no objects listed; none of them named
    faucet_ja = tok("赤い金属製の蛇口", add_special_tokens=False).input_ids
    assert tokens[3].tolist()[: len(faucet_ja) + 2] == [-1, *[0] * len(faucet_ja), -1]
    assert set(tokens[3].tolist()) == {-1, 0}  # a white ceramic sink is not the gray glass one


def test_grounding_loss_measures_attention_inside_the_boxes():
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    attn = Attention(query_dim=8, cross_attention_dim=8, heads=2, dim_head=4)
    hidden, context = torch.randn(2, 16, 8), torch.randn(2, 5, 8)  # 4 x 4 pixels, 5 tokens
    covers = torch.zeros(2, 2, 4, 4)
    covers[:, 0, :2, :2] = 1.0  # object 0: a quarter of the image
    covers[:, 1, :, :2] = 1.0  # object 1: half
    tokens = torch.tensor([[-1, 0, 0, 1, -1], [-1, -1, -1, -1, -1]], dtype=torch.int8)
    # A zero query attends every token alike, so each token's share inside is its box's area.
    with torch.no_grad():
        attn.to_q.weight.zero_()
    uniform = grounding_loss([(attn, hidden, context)], tokens, covers)
    assert uniform.item() == pytest.approx((2 * 0.75**2 + 0.5**2) / 3, rel=1e-6)
    assert grounding_loss([(attn, hidden, context)], torch.full_like(tokens, -1), covers) == 0
    # Its gradient moves the attention into the boxes: a few steps on q and k alone.
    torch.nn.init.normal_(attn.to_q.weight)
    opt = torch.optim.Adam([attn.to_q.weight, attn.to_k.weight], lr=0.1)
    for _ in range(60):
        loss = grounding_loss([(attn, hidden, context)], tokens, covers)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * uniform.item()


def test_cross_attention_inputs_sees_each_cross_attention_call(work):
    pipe = _pipe(work / "base")
    unet = pipe.unet
    ids = torch.full((2, 64), pipe.tokenizer.pad_token_id)
    context = pipe.text_encoder(ids)[0]
    latents = torch.zeros(2, 4, 4, 4)
    with torch.no_grad(), cross_attention_inputs(unet) as seen:
        unet(latents, torch.tensor([10, 10]), encoder_hidden_states=context)
    n_cross = sum(getattr(m, "is_cross_attention", False) for m in unet.modules())
    assert n_cross > 0 and len(seen) == n_cross
    assert all(c is context and h.shape[0] == 2 and h.shape[1] in (16, 4, 1) for _, h, c in seen)
    assert not any(m._forward_pre_hooks for m in unet.modules())  # removed on exit
    with cross_attention_inputs(unet, on=False) as none:
        assert none is None and not any(m._forward_pre_hooks for m in unet.modules())


def test_grounding_reaches_the_loss_and_the_card(work, tmp_path, capsys):
    data = tmp_path / "grounded"
    data.mkdir()
    rng = np.random.default_rng(2)
    rows = []
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(data / f"{i}.png")
        basket = {"name": "basket", "material": "wicker", "color": None, "count": 2,
                  "boxes": [[4 * i, 4, 4 * i + 8, 12], [16, 20, 24, 28]]}  # fmt: skip
        rows.append({"file_name": f"{i}.png", "text": f"a shelf with two wicker baskets {i}",
                     "objects": [basket]})  # fmt: skip
    (data / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    weights = {}
    for w in (0.0, 1.0):
        recipe = tmp_path / f"r{w:g}.toml"
        recipe.write_text(
            f'data = "{data}"\ncaption_columns = ["text"]\nrank = 4\nsteps = 3\nbatch_size = 4\n'
            f"warmup = 1\ncheckpoint_every = 3\nlr = 1e-2\ngrounding_weight = {w}\n"
        )
        out = tmp_path / f"o{w:g}"
        argv = ["train-lora", "--base", str(work / "base"), "--recipe", str(recipe)]
        assert main([*argv, "--out", str(out)]) == 0
        weights[w] = load_file(out / WEIGHT_NAME)
        card = (out / "README.md").read_text()
        assert ("phrases of 4 of 4 objects found" in card) == (w == 1.0)
        log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
        assert ("grounding" in log[-1]) == (w == 1.0)
    assert "grounding 1: 4 of 4 listed objects' phrases found" in capsys.readouterr().out
    assert 0 < log[-1]["grounding"] < 1
    diffs = [float((weights[0.0][k] - weights[1.0][k]).abs().max()) for k in weights[0.0]]
    assert max(diffs) > 1e-4
    assert LoraRecipe().grounding_weight == 0.0


def test_unet_targets_adapt_convs_and_feed_forwards_in_both_formats(work, tmp_path):
    """LoCon-style targets: the ResNet convs and the feed-forwards get LoRA too, and the
    diffusers and kohya files load back into vanilla diffusers as the same weights."""
    targets = '["to_k", "to_q", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", '
    targets += '"ff.net.2", "conv1", "conv2"]'
    recipe = _short_recipe(work, tmp_path / "locon.toml", f"unet_targets = {targets}\n")
    out = tmp_path / "locon"
    argv = ["train-lora", "--base", str(work / "base"), "--recipe", str(recipe), "--out", str(out)]
    assert main([*argv, "--export", "kohya"]) == 0
    saved = load_file(str(out / WEIGHT_NAME))
    conv = [k for k in saved if ".resnets.0.conv1.lora_A" in k]
    assert conv and saved[conv[0]].dim() == 4 and saved[conv[0]].shape[0] == 4  # (r, in, 3, 3)
    assert any(".ff.net.2.lora_B" in k for k in saved) and any("proj_in.lora" in k for k in saved)
    assert "`conv1`" in (out / "README.md").read_text(encoding="utf-8")
    a, b = _pipe(work / "base"), _pipe(work / "base")
    a.load_lora_weights(str(out), adapter_name="x")
    b.load_lora_weights(str(out / "locon.safetensors"), adapter_name="x")
    ta, tb = _lora_tensors(a), _lora_tensors(b)
    assert ta.keys() == tb.keys() and len(ta) == len(saved)
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key
    assert validate_adapter(resolve_adapter(out), a) == []


def test_unet_targets_must_name_modules():
    with pytest.raises(ValueError, match="unet_targets"):
        LoraRecipe(unet_targets=[])
    assert LoraRecipe().unet_targets == ["to_k", "to_q", "to_v", "to_out.0"]


@pytest.mark.parametrize("file", [WEIGHT_NAME, "tiny.safetensors"])
def test_init_warm_starts_from_an_adapter_in_either_format(work, trained, file):
    """`init` puts a finished adapter's weights (diffusers or kohya file) into the adapters
    a run starts from: the same tensors vanilla diffusers loads from that file."""
    from genimg.lora import _add_adapters, _warm_start
    from genimg.pipeline import load_pipeline

    recipe = LoraRecipe.from_toml(work / "recipe.toml")
    recipe.init = str(trained / file)
    pipe = load_pipeline(work / "base")
    _add_adapters(pipe, recipe)
    fresh = {k: v.clone() for k, v in _lora_tensors(pipe).items()}
    _warm_start(pipe, recipe)
    mine = _lora_tensors(pipe)
    ref = _pipe(work / "base")
    ref.load_lora_weights(str(trained / file), adapter_name="x")
    theirs = _lora_tensors(ref)
    assert mine.keys() == theirs.keys() and len(mine) > 8
    for key in mine:
        assert torch.equal(mine[key], theirs[key]), key
    assert any(not torch.equal(fresh[k], mine[k]) for k in mine)  # it did replace the init


def test_text_encoder_lr_0_keeps_the_warm_starts_text_encoder_adapter(work, trained, tmp_path):
    """`text_encoder_lr = 0` with `init`: the text encoder's LoRA comes out exactly as the
    warm start's, the UNet's learns; the card says so; a negative rate is a recipe error."""
    recipe = _short_recipe(work, tmp_path / "r.toml", f'init = "{trained}"\ntext_encoder_lr = 0\n')
    out = tmp_path / "o"
    assert main(["train-lora", "--base", str(work / "base"), "--recipe", str(recipe),
                 "--out", str(out)]) == 0  # fmt: skip
    start, end = load_file(trained / WEIGHT_NAME), load_file(out / WEIGHT_NAME)
    assert start.keys() == end.keys()
    text = [k for k in end if k.startswith("text_encoder.")]
    unet = [k for k in end if k.startswith("unet.")]
    assert text and unet
    assert all(torch.equal(start[k], end[k]) for k in text)
    assert max(float((start[k] - end[k]).abs().max()) for k in unet) > 1e-4
    assert "(text encoder 0: kept as it starts)" in (out / "README.md").read_text()
    with pytest.raises(ValueError, match="text_encoder_lr >= 0"):
        LoraRecipe(text_encoder_lr=-1e-4)


def test_init_refuses_an_adapter_of_another_shape(work, trained, tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    base = (work / "recipe.toml").read_text(encoding="utf-8")
    for extra, words in (
        (f'rank = 8\ninit = "{trained}"\n', "has rank 4, alpha 8; the recipe 8, 8"),
        (f'init = "{trained}"\ntrain_text_encoder = false\n', "which this recipe does not train"),
        (f'init = "{tmp_path / "nothing"}"\n', "init: "),
    ):
        recipe.write_text(
            base.replace("rank = 4\n", "") + ("" if "rank" in extra else "rank = 4\n") + extra
        )
        argv = ["train-lora", "--base", str(work / "base"), "--recipe", str(recipe)]
        assert main([*argv, "--out", str(tmp_path / "o")]) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("genimg train-lora: error: --recipe: init") and words in last, last
        assert not (tmp_path / "o" / WEIGHT_NAME).exists()


def test_merge_loras_script_equals_loading_both(work, tmp_path):
    """scripts/merge_loras.py: two adapters with weights as one of their summed rank give
    the UNet the same output as the two loaded side by side."""
    from tiny_assets import make_lora

    from genimg import adapters
    from genimg.pipeline import load_pipeline

    a, b = (
        make_lora(work / "base", tmp_path / "a", seed=1),
        make_lora(work / "base", tmp_path / "b", seed=2),
    )
    script = ROOT / "scripts" / "merge_loras.py"
    cmd = [sys.executable, str(script), str(tmp_path / "ab"), f"{a}:0.5", f"{b}:-1"]
    assert subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.startswith(
        "wrote"
    )
    merged = resolve_adapter(tmp_path / "ab")
    assert (merged.rank, merged.alpha) == (8, 8)
    one, two = load_pipeline(work / "base"), load_pipeline(work / "base")
    adapters.apply(one, [adapters.resolve(f"{tmp_path / 'ab'}:1")], fuse=False)
    adapters.apply(two, [adapters.resolve(f"{a}:0.5"), adapters.resolve(f"{b}:-1")], fuse=False)
    base = load_pipeline(work / "base")
    x, context = torch.randn(2, 4, 4, 4), torch.randn(2, 7, 32)
    with torch.no_grad():
        outs = [p.unet(x, 500, encoder_hidden_states=context).sample for p in (one, two, base)]
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=0)
    assert (outs[0] - outs[2]).abs().max() > 1e-3  # the adapters do something


def test_ema_update_follows_the_warmed_up_decay():
    from genimg.train_base import ema_update

    ema, p = {"w": torch.zeros(3)}, {"w": torch.ones(3)}
    ema_update(ema, p, 1, 0.9)  # step 1: decay min(0.9, 2 / 11)
    assert torch.allclose(ema["w"], torch.full((3,), 9 / 11))
    ema_update(ema, p | {"w": torch.full((3,), 2.0)}, 1000, 0.9)  # later: the decay itself
    assert torch.allclose(ema["w"], torch.full((3,), 0.9 * 9 / 11 + 0.1 * 2))
    with pytest.raises(ValueError, match="ema_decay must be in"):
        LoraRecipe(ema_decay=1.0)


def test_ema_adapter_beside_the_last_steps_and_resume_is_exact(work, trained, tmp_path, capsys):
    recipe = tmp_path / "ema.toml"
    recipe.write_text((work / "recipe.toml").read_text() + "ema_decay = 0.8\n")
    argv = ["train-lora", "--base", str(work / "base"), "--recipe", str(recipe)]
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    # Stopped after its first step (a checkpoint holding the EMA), then resumed.
    assert main([*argv, "--out", str(tmp_path / "cut"), "--max-minutes", "1e-9"]) == 0
    assert "at step 1/12" in capsys.readouterr().out
    assert main([*argv, "--out", str(tmp_path / "cut"), "--resume"]) == 0
    plain = load_file(trained / WEIGHT_NAME)
    whole, cut = (load_file(tmp_path / d / WEIGHT_NAME) for d in ("whole", "cut"))
    last = load_file(tmp_path / "whole" / LAST_STEP / WEIGHT_NAME)
    assert plain.keys() == whole.keys() == cut.keys() == last.keys()
    for key in plain:
        assert torch.equal(last[key], plain[key]), key  # the EMA does not touch training
        assert torch.equal(cut[key], whole[key]), key  # the EMA is in the checkpoint
    ups = [k for k in plain if "lora_B" in k or ".up." in k]
    assert max(float((whole[k] - plain[k]).abs().max()) for k in ups) > 1e-5
    # The EMA trails the weights: nearer zero (B's init) than the last step's, not beyond.
    assert sum(float(whole[k].norm()) for k in ups) < sum(float(plain[k].norm()) for k in ups)
    card = (tmp_path / "whole" / "README.md").read_text(encoding="utf-8")
    assert "EMA of the LoRA weights, decay 0.8" in card
    ident = json.loads((tmp_path / "whole" / LAST_STEP / IDENTITY_NAME).read_text())
    assert ident["steps"] == 12 and "no EMA" in ident["description"]
    assert resolve_adapter(str(tmp_path / "whole" / LAST_STEP)).rank == 4


def test_cpu_bf16_keeps_attention_and_group_norm_float32_and_restores_torch():
    import torch.nn.functional as F  # noqa: N812

    from genimg.train_base import _cpu_bf16

    sdpa, group_norm = F.scaled_dot_product_attention, F.group_norm
    q = torch.randn(1, 2, 5, 4, dtype=torch.bfloat16)
    x = torch.randn(2, 4, 3, 3, dtype=torch.bfloat16)
    with _cpu_bf16():
        assert torch.nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.bfloat16  # autocast on
        out = F.scaled_dot_product_attention(q, q, q, attn_mask=torch.zeros(5, 5))
        assert out.dtype == torch.float32
        assert F.group_norm(x, 2).dtype == torch.float32
    assert (F.scaled_dot_product_attention, F.group_norm) == (sdpa, group_norm)
    assert torch.allclose(out, sdpa(q.float(), q.float(), q.float()), atol=1e-6)
    with pytest.raises(RuntimeError), _cpu_bf16():
        raise RuntimeError("a failed step")
    assert (F.scaled_dot_product_attention, F.group_norm) == (sdpa, group_norm)
    assert torch.nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.float32
    assert LoraRecipe().cpu_bf16 is False


def test_cpu_bf16_gives_the_float32_loss_and_gradient_within_bf16_error(work):
    from diffusers import DDPMScheduler

    from genimg.lora import _add_adapters, _trainable
    from genimg.models import tokenize
    from genimg.train_base import _autocast, diffusion_loss

    pipe = _pipe(work / "base")
    params = _trainable(pipe, _add_adapters(pipe, LoraRecipe(rank=4)))
    with torch.no_grad():  # lora_B away from its zero init, so lora_A gets a gradient too
        for key, p in params.items():
            if "lora_B" in key:
                p.normal_(0, 0.05)
    g = torch.Generator().manual_seed(0)
    latents, noise = torch.randn(4, 4, 4, 4, generator=g), torch.randn(4, 4, 4, 4, generator=g)
    ids = tokenize(pipe.tokenizer, ["a bathroom with two wicker baskets", "a sink"] * 2)
    t = torch.tensor([10, 300, 600, 900])
    ac = DDPMScheduler.from_config(pipe.scheduler.config).alphas_cumprod
    pipe.unet.train()
    pipe.text_encoder.train()
    runs = {}
    for bf16 in (False, True):
        with _autocast("cpu", bf16):
            loss = diffusion_loss(pipe.unet, pipe.text_encoder, latents, ids, noise, t, ac, 5.0)
        for p in params.values():
            p.grad = None
        loss.backward()
        runs[bf16] = (loss.item(), torch.cat([p.grad.flatten() for p in params.values()]))
    (l32, g32), (l16, g16) = runs[False], runs[True]
    assert l16 != l32  # bf16 did run
    assert l16 == pytest.approx(l32, rel=0.02)
    assert torch.nn.functional.cosine_similarity(g32, g16, dim=0) > 0.99
    assert float(g16.norm() / g32.norm()) == pytest.approx(1.0, abs=0.05)


def test_cpu_bf16_trains_and_says_so_on_the_card(work, trained, tmp_path):
    recipe = tmp_path / "bf16.toml"
    recipe.write_text((work / "recipe.toml").read_text() + "cpu_bf16 = true\n")
    argv = ["train-lora", "--base", str(work / "base"), "--recipe", str(recipe)]
    assert main([*argv, "--out", str(tmp_path / "bf16")]) == 0
    plain, bf16 = load_file(trained / WEIGHT_NAME), load_file(tmp_path / "bf16" / WEIGHT_NAME)
    assert plain.keys() == bf16.keys()
    assert all(bf16[k].dtype == plain[k].dtype and torch.isfinite(bf16[k]).all() for k in plain)
    ups = [k for k in plain if "lora_B" in k or ".up." in k]
    a, b = (torch.cat([w[k].float().flatten() for k in ups]) for w in (plain, bf16))
    assert not torch.equal(a, b)  # not bit for bit, but the same training (cosine 0.97 here)
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.9
    assert float(b.norm() / a.norm()) == pytest.approx(1.0, abs=0.1)
    card = (tmp_path / "bf16" / "README.md").read_text(encoding="utf-8")
    assert "bfloat16 autocast on the CPU" in card
    assert "bfloat16" not in (trained / "README.md").read_text(encoding="utf-8")
    bad = tmp_path / "bad.toml"
    bad.write_text((work / "recipe.toml").read_text() + 'cpu_bf16 = "yes"\n')
    with pytest.raises(UsageError, match="cpu_bf16 must be bool, got .yes."):
        LoraRecipe.from_toml(bad)


def test_excite_probe_finds_each_phrases_tokens_in_the_chunked_row():
    """scripts/excite_probe.py's token positions (the basis of the flat-attention figures in
    the README) point at the phrase's own tokens, in windows of BOS + 75 tokens + EOS, in
    English and in Japanese (byte-level tokens, several per character)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from excite_probe import text_positions, token_positions
    finally:
        sys.path.pop(0)
    from genimg.models import chunk_rows, load_tokenizer, token_chunks

    tok = load_tokenizer(ROOT / "assets" / "models" / "genimg-base" / "tokenizer", 77)
    en, ja = (ROOT / "assets" / "compare" / "prompts.txt").read_text().splitlines()
    for prompt, phrases in ((en, ["two baskets", "faucet"]), (ja, ["2つのバスケット", "蛇口"])):
        row = chunk_rows(tok, token_chunks(tok, prompt)[0], 3)
        groups = token_positions(tok, prompt, phrases)
        for phrase, group in zip(phrases, groups, strict=True):
            assert tok.decode([row[i] for i in group]).replace(" ", "") == phrase.replace(" ", "")
        text = text_positions(tok, prompt)
        assert all(row[i] not in (tok.bos_token_id, tok.eos_token_id) for i in text)
        assert len(text) == len(tok(prompt, add_special_tokens=False).input_ids)
    assert max(text) > 77  # the Japanese prompt runs into its second window
