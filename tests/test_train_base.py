"""Base-model training: recipes, robust data loading, exact resume after SIGKILL."""

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

from genimg.checkpoint import Checkpointer, latest_checkpoint
from genimg.cli import main
from genimg.data import load_dataset
from genimg.errors import UsageError
from genimg.train_base import BaseRecipe, lr_at

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "assets" / "recipes" / "tiny.toml"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A small imagefolder with odd inputs: RGBA, grayscale, odd size, bad rows."""
    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        arr = rng.integers(0, 255, (100 + i, 90, 3), dtype=np.uint8)
        im = Image.fromarray(arr)
        im = im.convert("RGBA") if i == 1 else im.convert("L") if i == 2 else im
        im.save(root / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "web_text": f"a bathroom {i}", "text": "x"})
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    rows.append({"file_name": "broken.png", "web_text": "a kitchen"})
    rows.append({"file_name": "0.png", "web_text": ""})  # no caption
    rows.append({"file_name": "../../etc/passwd", "web_text": "escape"})
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root


def test_dataset_converts_and_skips(folder):
    data = load_dataset(str(folder), ["web_text"], size=64)
    assert data.images.shape == (8, 64, 64, 3) and data.images.dtype == np.uint8
    assert data.skipped == {"no caption": 1, "unreadable image": 2}
    assert data.captions("web_text")[3] == "a bathroom 3"


def test_dataset_without_metadata(tmp_path):
    with pytest.raises(UsageError, match="metadata.jsonl"):
        load_dataset(str(tmp_path), ["text"])


def test_recipe_rejects_unknown_key(tmp_path):
    bad = tmp_path / "r.toml"
    bad.write_text(TINY.read_text() + "\nlearning_rate = 3\n")
    with pytest.raises(UsageError, match="unknown key"):
        BaseRecipe.from_toml(bad)
    bad.write_text(TINY.read_text().replace("steps = 6", "steps = -1"))
    with pytest.raises(UsageError, match="steps >= 0"):
        BaseRecipe.from_toml(bad)


def test_lr_schedule_warms_up_then_decays():
    lrs = [lr_at(s, 100, 1.0, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] == pytest.approx(0.1, abs=0.01)


def test_checkpoint_roundtrip_and_corrupt_fallback(tmp_path, capsys):
    import torch

    ck = Checkpointer(tmp_path, keep=3)
    for step in (1, 2):
        ck.save(
            step,
            {
                "w": torch.full((3,), float(step)),
                "opt": {0: {"m": torch.ones(2)}},
                "step": step,
                "pair": (1, "a"),
            },
        )
    ck.wait()
    folder, state = latest_checkpoint(tmp_path)
    assert folder.name == "ckpt-00000002" and state["step"] == 2
    assert state["opt"][0]["m"].tolist() == [1.0, 1.0] and state["pair"] == (1, "a")
    (folder / "state.safetensors").write_bytes(b"garbage")
    folder, state = latest_checkpoint(tmp_path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.full((3,), 1.0))
    assert "falling back" in capsys.readouterr().err


def test_cli_bad_input(tmp_path, capsys):
    assert (
        main(["train-base", "--recipe", str(tmp_path / "none.toml"), "--out", str(tmp_path / "o")])
        == 2
    )
    assert "--recipe" in capsys.readouterr().err
    assert (
        main(
            [
                "train-base",
                "--recipe",
                str(TINY),
                "--data",
                str(tmp_path / "nope"),
                "--out",
                str(tmp_path / "o2"),
            ]
        )
        == 2
    )
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    assert main(["train-base", "--recipe", str(TINY), "--out", str(tmp_path / "full")]) == 2
    assert (tmp_path / "full" / "x").read_text() == "keep me"


def _weights(model_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(model_dir)): p.read_bytes()
        for p in sorted(model_dir.rglob("*.safetensors"))
    }


@pytest.mark.slow
def test_resume_after_sigkill_is_exact(folder, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "genimg",
        "train-base",
        "--recipe",
        str(TINY),
        "--data",
        str(folder),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*cmd, "--out", str(tmp_path / "a")], check=True, env=env, capture_output=True)
    victim = subprocess.Popen(
        [*cmd, "--out", str(tmp_path / "b")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not (tmp_path / "b" / "unet" / "ckpt-00000002").exists():
        assert victim.poll() is None and time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "b" / "model").exists()
    subprocess.run(
        [*cmd, "--out", str(tmp_path / "b"), "--resume"], check=True, env=env, capture_output=True
    )
    a, b = _weights(tmp_path / "a" / "model"), _weights(tmp_path / "b" / "model")
    assert a.keys() == b.keys() and len(a) == 3
    assert all(a[k] == b[k] for k in a), "resumed weights differ from the uninterrupted run"


def _tiny_recipe(tmp_path: Path, vae_steps: int, unet_steps: int, name: str) -> Path:
    text = TINY.read_text()
    text = text.replace("[vae]\nsteps = 4", f"[vae]\nsteps = {vae_steps}")
    text = text.replace("[unet]\nsteps = 6", f"[unet]\nsteps = {unet_steps}")
    assert f"steps = {vae_steps}" in text and f"steps = {unet_steps}" in text
    path = tmp_path / name
    path.write_text(text)
    return path


def test_init_from_warm_starts(folder, tmp_path):
    import genimg.train_base as tb

    recipe = BaseRecipe.from_toml(TINY)
    recipe.data = str(folder)
    first = tb.train_base(recipe, tmp_path / "a")
    # Both stages skipped: the warm-started networks come out exactly as they went in.
    # Other images: a kept VAE keeps its latent scaling factor too (adapters assume it).
    still = BaseRecipe.from_toml(_tiny_recipe(tmp_path, 0, 0, "still.toml"))
    still.data = "catalog:24:5:other"
    second = tb.train_base(still, tmp_path / "b", init=first)
    scale = [json.loads((m / "vae" / "config.json").read_text())["scaling_factor"]
             for m in (first, second)]  # fmt: skip
    assert scale[0] == scale[1]
    a, b = _weights(first), _weights(second)
    assert a.keys() == b.keys() and len(a) == 3
    assert (
        a["unet/diffusion_pytorch_model.safetensors"]
        == b["unet/diffusion_pytorch_model.safetensors"]
    )
    assert (
        a["vae/diffusion_pytorch_model.safetensors"] == b["vae/diffusion_pytorch_model.safetensors"]
    )
    # A folder for another architecture is refused with both sides named.
    other = BaseRecipe.from_toml(TINY)
    other.model.unet_channels = (32, 32, 64)
    with pytest.raises(UsageError, match="does not fit the recipe's unet"):
        tb.train_base(other, tmp_path / "c", init=first)


def test_a_4x_vae_trains_and_renders_on_32x32_latents(folder, tmp_path):
    """`vae_channels` of three levels (base-gpu-f4.toml, the plan for a lent GPU) halve the
    VAE's factor: a 128 px image is a 32x32 latent, in training and in rendering alike."""
    import genimg.train_base as tb
    from genimg.pipeline import load_pipeline
    from genimg.render import render

    recipe = BaseRecipe.from_toml(TINY)
    recipe.model.vae_channels = (8, 8, 8)
    recipe.data = str(folder)
    model = tb.train_base(recipe, tmp_path / "f4")
    pipe = load_pipeline(model)
    assert pipe.vae_scale_factor == 4 and pipe.unet.config.sample_size == 32
    latent = pipe.vae.encode(torch.zeros(1, 3, 128, 128)).latent_dist.mean
    assert latent.shape == (1, 4, 32, 32)
    (image,) = render(pipe, "a bathroom", num_inference_steps=2, num_images=1)
    assert image.size == (128, 128)
    assert np.asarray(image).std() > 0  # a picture, not a constant fill


def test_unet_cpu_bf16_trains_the_same_update_in_bfloat16(folder, tmp_path):
    """`[unet] cpu_bf16` (base-cpu-more.toml) runs the UNet stage under bf16 autocast on a
    CPU: a different update bit for bit, the same one within bf16's error."""
    from safetensors.torch import load_file

    import genimg.train_base as tb

    recipe = BaseRecipe.from_toml(TINY)
    recipe.data = str(folder)
    first = tb.train_base(recipe, tmp_path / "a")
    leg = _tiny_recipe(tmp_path, 0, 3, "leg.toml")
    bf16 = tmp_path / "bf16.toml"
    bf16.write_text(leg.read_text() + "cpu_bf16 = true\n")  # [unet] is the last table
    assert BaseRecipe.from_toml(bf16).unet.cpu_bf16 and not BaseRecipe.from_toml(leg).unet.cpu_bf16
    unet = "unet/diffusion_pytorch_model.safetensors"
    w0 = load_file(first / unet)
    updates = []
    for path, name in ((leg, "f32"), (bf16, "b16")):
        r = BaseRecipe.from_toml(path)
        r.data = str(folder)
        w = load_file(tb.train_base(r, tmp_path / name, init=first) / unet)
        updates.append(torch.cat([(w[k].float() - w0[k].float()).flatten() for k in w0]))
    f32, b16 = updates
    assert f32.abs().max() > 0 and not torch.equal(f32, b16)
    assert torch.nn.functional.cosine_similarity(f32, b16, dim=0) > 0.9
    assert float(b16.norm() / f32.norm()) == pytest.approx(1.0, abs=0.1)


def test_decoder_only_keeps_the_encoder_and_every_latent(folder, tmp_path):
    """A decoder-only VAE leg changes the decoder alone: latents, their scale, the UNet and
    the text encoder stay bit-identical, so the adapters trained on them still fit."""
    import dataclasses

    from safetensors.torch import load_file

    import genimg.train_base as tb

    recipe = BaseRecipe.from_toml(TINY)
    recipe.data = str(folder)
    first = tb.train_base(recipe, tmp_path / "a")
    leg = BaseRecipe.from_toml(_tiny_recipe(tmp_path, 4, 0, "decoder.toml"))
    leg.vae = dataclasses.replace(leg.vae, decoder_only=True, lr=1e-2)
    with pytest.raises(UsageError, match="--init-from"):
        tb.train_base(leg, tmp_path / "no-init")
    assert not (tmp_path / "no-init").exists()  # refused before anything is written
    second = tb.train_base(leg, tmp_path / "b", init=first)
    a, b = _weights(first), _weights(second)
    for name in ("unet", "text_encoder"):
        assert [v for k, v in a.items() if k.startswith(name)] == [
            v for k, v in b.items() if k.startswith(name)
        ]
    vae = [
        load_file(str(m / "vae" / "diffusion_pytorch_model.safetensors")) for m in (first, second)
    ]
    encoder = [k for k in vae[0] if k.startswith(("encoder.", "quant_conv."))]
    decoder = [k for k in vae[0] if k.startswith(("decoder.", "post_quant_conv."))]
    assert len(encoder) + len(decoder) == len(vae[0]) and encoder and decoder
    assert all(torch.equal(vae[0][k], vae[1][k]) for k in encoder)
    assert sum(not torch.equal(vae[0][k], vae[1][k]) for k in decoder) > len(decoder) // 2
    scale = [json.loads((m / "vae" / "config.json").read_text())["scaling_factor"]
             for m in (first, second)]  # fmt: skip
    assert scale[0] == scale[1]
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["vae"]["decoder_only"] and summary["vae"]["steps"] == 4
    assert "unet" not in summary  # 0 UNet steps: kept, not trained


def test_cli_init_from_needs_a_model_folder(tmp_path, capsys):
    argv = ["train-base", "--recipe", str(TINY), "--out", str(tmp_path / "o")]
    assert main([*argv, "--init-from", str(tmp_path)]) == 2
    assert "--init-from" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_every_committed_recipe_loads():
    """A recipe that fails to parse would cost a lent GPU lease: each one in assets/recipes
    and lora/ loads with its trainer's loader, and the GPU plan's is the 4x VAE it says."""
    from genimg.checker_train import CheckerRecipe
    from genimg.lora import LoraRecipe

    loaders = {"base": BaseRecipe, "tiny": BaseRecipe, "vae": BaseRecipe, "checker": CheckerRecipe}
    paths = sorted((ROOT / "assets" / "recipes").glob("*.toml"))
    paths += sorted((ROOT / "lora").glob("*/recipe.toml"))
    assert len(paths) >= 30
    for path in paths:
        kind = path.stem.split("-")[0] if path.parent.name == "recipes" else "lora"
        loaders.get(kind, LoraRecipe).from_toml(path)
    f4 = BaseRecipe.from_toml(ROOT / "assets" / "recipes" / "base-gpu-f4.toml")
    assert f4.model.latent_size == 32 and f4.model.unet_channels == BaseRecipe().model.unet_channels
