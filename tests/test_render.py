"""Rendering, model loading and adapters, on tiny random components (seconds, not minutes)."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genimg import adapters, pipeline
from genimg.cli import main
from genimg.errors import UsageError
from genimg.models import ModelConfig, build_components, load_tokenizer
from genimg.render import _png_bytes, check_inputs, encode_prompt, file_name, render

TINY = ModelConfig(
    vae_channels=(8, 8, 8, 8),
    unet_channels=(32, 32, 32),
    text_hidden=32,
    text_layers=1,
    text_heads=2,
)
FAST = ["--num-inference-steps", "3", "--height", "64", "--width", "64"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return pipeline.save_pipeline(build_components(TINY), tmp_path_factory.mktemp("m") / "tiny")


@pytest.fixture(scope="session")
def pipe(model_dir):
    pipe = pipeline.load_pipeline(model_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _copy(pipe, **replace):
    """A pipeline sharing the loaded modules; a sampler swap on it leaves `pipe` alone."""
    from diffusers import StableDiffusionPipeline

    copy = StableDiffusionPipeline(**{**pipe.components, **replace})
    copy.set_progress_bar_config(disable=True)
    return copy


def _pixels(images) -> np.ndarray:
    return np.stack([np.asarray(im, dtype=np.int16) for im in images])


def _cli(*argv) -> int:
    return main(["render", *[str(a) for a in argv]])


# -- loading ---------------------------------------------------------------------------------


def test_vanilla_diffusers_loads_and_generates(model_dir):
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    plain = StableDiffusionPipeline.from_pretrained(model_dir)
    plain.set_progress_bar_config(disable=True)
    assert isinstance(plain.scheduler, DPMSolverMultistepScheduler)
    assert plain.scheduler.config.algorithm_type == "dpmsolver++"
    assert plain.unet.dtype == torch.float32
    assert not list(model_dir.rglob("*.bin"))
    out = plain("a wooden shelf", num_inference_steps=2, height=64, width=64, output_type="np")
    assert out.images.shape == (1, 64, 64, 3)
    assert np.isfinite(out.images).all() and out.images.std() > 0


def test_every_scheduler_renders(pipe):
    copy = _copy(pipe)
    for name in pipeline.SCHEDULERS:
        pipeline.set_scheduler(copy, name)
        images = render(copy, "a sink", num_inference_steps=2, num_images=1, height=64, width=64)
        assert np.asarray(images[0]).shape == (64, 64, 3), name


def test_unknown_scheduler_lists_choices(pipe):
    with pytest.raises(UsageError, match="dpm\\+\\+, .*euler_a"):
        pipeline.set_scheduler(_copy(pipe), "dpm3")


# -- prompts ---------------------------------------------------------------------------------


def test_short_prompt_encodes_as_diffusers_does(pipe):
    cond, uncond = encode_prompt(pipe, "a wooden shelf with two baskets", "blurry")
    ref_cond, ref_uncond = pipe.encode_prompt(
        "a wooden shelf with two baskets", "cpu", 1, True, "blurry"
    )
    torch.testing.assert_close(cond, ref_cond, atol=0, rtol=0)
    torch.testing.assert_close(uncond, ref_uncond, atol=0, rtol=0)


def _unet_context(pipe, prompt: str) -> torch.Tensor:
    """The text context the UNet actually receives for `prompt` (first denoising step)."""
    seen = []
    hook = pipe.unet.register_forward_pre_hook(
        lambda _, args, kwargs: seen.append(kwargs["encoder_hidden_states"]), with_kwargs=True
    )
    try:
        render(pipe, prompt, num_inference_steps=1, num_images=1, height=64, width=64)
    finally:
        hook.remove()
    return seen[0][1]  # (T, D); row 0 is the negative prompt's under CFG


LONG = "a bathroom with " + ", ".join(["a wooden shelf with two wicker baskets"] * 24)


def test_last_object_of_a_long_prompt_reaches_the_unet(pipe):
    ids = pipe.tokenizer(LONG + " and a chrome faucet", add_special_tokens=False).input_ids
    assert 150 < len(ids) <= 225  # three 77-token windows' worth
    a = _unet_context(pipe, LONG + " and a chrome faucet")
    b = _unet_context(pipe, LONG + " and a chrome towel")
    assert not torch.allclose(a, b)


def test_short_window_encoder_reads_long_prompts_in_chunks(pipe):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(1)
    config = CLIPTextConfig(**{**pipe.text_encoder.config.to_dict(), "max_position_embeddings": 77})
    clip77 = _copy(
        pipe, tokenizer=load_tokenizer(max_length=77), text_encoder=CLIPTextModel(config)
    )
    a = _unet_context(clip77, LONG + " and a chrome faucet")
    b = _unet_context(clip77, LONG + " and a chrome towel")
    assert a.shape[0] == 3 * 77  # 3 chunks of 75 tokens, each with BOS/EOS
    assert torch.equal(a[:154], b[:154]) and not torch.allclose(a[154:], b[154:])
    cond, uncond = encode_prompt(clip77, "a sink", negative_prompt=LONG)
    assert cond.shape == uncond.shape == (1, 3 * 77, 32)  # the short side padded with chunks


def test_training_reads_captions_in_the_chunks_rendering_uses(pipe):
    from genimg.models import encode_chunked, tokenize

    long, short = LONG + " and a chrome faucet", "a sink"
    ids = tokenize(pipe.tokenizer, [long, short])
    assert ids.shape == (2, 3 * 77)  # the short caption padded with empty windows
    assert (ids[1, 77:].reshape(2, 77)[:, 1] == pipe.tokenizer.eos_token_id).all()
    with torch.no_grad():
        both = encode_chunked(pipe.text_encoder, ids)
        alone = encode_chunked(pipe.text_encoder, ids[1:])  # empty windows trimmed
    assert alone.shape == (1, 77, 32)
    torch.testing.assert_close(both[:1], encode_prompt(pipe, long)[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(alone, encode_prompt(pipe, short)[0], atol=1e-6, rtol=0)


def test_padding_mask_hides_exactly_the_states_after_each_windows_eos(pipe):
    from genimg.models import encode_chunked, padding_mask, tokenize

    tok = pipe.tokenizer
    short, long = (len(tok(c, add_special_tokens=False).input_ids) for c in ("a sink", LONG))
    ids = tokenize(tok, ["a sink", LONG])
    mask = padding_mask(ids, 77, tok.eos_token_id)
    assert mask.reshape(2, 3, 77).sum(-1).tolist() == [[short + 2, 2, 2], [77, 77, long - 150 + 2]]
    assert mask[0, : short + 2].all() and not mask[0, short + 2 : 77].any()
    # Masking the padding is cutting it: the UNet sees the same keys and values.
    with torch.no_grad():
        hidden = encode_chunked(pipe.text_encoder, ids[:1])  # (1, 77, D)
        x, t = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0)), 500
        masked = pipe.unet(x, t, hidden, encoder_attention_mask=mask[:1, :77]).sample
        cut = pipe.unet(x, t, hidden[:, : short + 2]).sample
        full = pipe.unet(x, t, hidden).sample
    torch.testing.assert_close(masked, cut, atol=1e-5, rtol=0)
    assert (masked - full).abs().max() > 1e-3


def test_window_mask_shows_a_short_caption_as_rendered_alone(pipe):
    from genimg.models import encode_chunked, tokenize, window_mask

    tok = pipe.tokenizer
    ids = tokenize(tok, ["a sink", LONG, ""])  # three windows a row: the batch's longest
    mask = window_mask(ids, 77, tok.eos_token_id)
    assert mask.reshape(3, 3, 77).sum(-1).tolist() == [[77, 0, 0], [77, 77, 77], [77, 0, 0]]
    with torch.no_grad():
        full = encode_chunked(pipe.text_encoder, ids)
        skipped = encode_chunked(pipe.text_encoder, ids, visible=mask)
        # The windows kept are encoded as before; the empty ones are not encoded at all.
        torch.testing.assert_close(skipped[mask], full[mask], atol=1e-6, rtol=0)
        assert not skipped[~mask].any() and full[~mask].abs().min() > 0
        x = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(0))
        t = torch.tensor([500, 500, 500])
        masked = pipe.unet(x, t, skipped, encoder_attention_mask=mask).sample
        seen = pipe.unet(x, t, full).sample
        for row, caption in ((0, "a sink"), (2, "")):  # what rendering encodes: one window
            alone_ids = tokenize(tok, [caption])
            alone = encode_chunked(pipe.text_encoder, alone_ids)
            assert alone.shape[1] == 77
            rendered = pipe.unet(x[row : row + 1], t[:1], alone).sample
            torch.testing.assert_close(masked[row : row + 1], rendered, atol=1e-5, rtol=0)
    # Unmasked, "a sink" also attends to two windows it never has when rendered. (The empty
    # caption's window is the empty window itself: three copies of its keys attend alike.)
    assert (seen[:1] - masked[:1]).abs().max() > 1e-3
    torch.testing.assert_close(seen[2:], masked[2:], atol=1e-5, rtol=0)
    torch.testing.assert_close(masked[1:2], seen[1:2], atol=1e-5, rtol=0)  # nothing hidden


def test_prompt_beyond_the_window_is_cut_with_a_warning(pipe, caplog):
    too_long = LONG + ", " + LONG
    with caplog.at_level(logging.WARNING, logger="genimg"):
        a, _ = encode_prompt(pipe, too_long + " faucet")
        b, _ = encode_prompt(pipe, too_long + " towel")
    assert "is cut" in caplog.text
    assert torch.equal(a, b)


# -- images ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dpm++", "euler_a"])  # euler_a also draws noise per step
def test_image_depends_on_its_seed_not_on_the_batch(pipe, name):
    copy = _copy(pipe)
    pipeline.set_scheduler(copy, name)
    kw = dict(num_inference_steps=3, height=64, width=64)
    batch = _pixels(render(copy, "a red sofa", seed=5, num_images=3, **kw))
    alone = _pixels(render(copy, "a red sofa", seed=7, num_images=1, **kw))
    assert np.array_equal(batch[2], alone[0])  # bit for bit (pipeline.load_pipeline)
    assert np.abs(batch[0] - batch[1]).mean() > 1  # different seeds, different images


RENDER_ARGS = [
    "--prompt",
    "ceramic sink, chrome faucet",
    "--negative-prompt",
    "blurry",
    "--seed",
    41,
    "--num-images",
    2,
    "--guidance-scale",
    6,
    *FAST,
]
RENDER_NAMES = ["000041-ceramic-sink-chrome-faucet.png", "000042-ceramic-sink-chrome-faucet.png"]


@pytest.fixture(scope="module")
def rendered(model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("render") / "out"
    assert _cli(*RENDER_ARGS, "--model", model_dir, "--out", out) == 0
    return out


def test_same_arguments_give_byte_identical_pngs_never_overwritten(model_dir, rendered, tmp_path):
    args = [*RENDER_ARGS, "--model", model_dir, "--out", tmp_path]
    assert _cli(*args) == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == RENDER_NAMES
    first = [(rendered / name).read_bytes() for name in RENDER_NAMES]
    assert first == [(tmp_path / name).read_bytes() for name in RENDER_NAMES]
    # A second run into the same folder is refused before anything is written...
    mtime = (tmp_path / RENDER_NAMES[0]).stat().st_mtime_ns
    assert _cli(*args) == 2
    assert (tmp_path / RENDER_NAMES[0]).stat().st_mtime_ns == mtime
    # ...unless asked for; and the rerun gives the same bytes again.
    assert _cli(*args, "--overwrite") == 0
    assert [(tmp_path / name).read_bytes() for name in RENDER_NAMES] == first
    runs = json.loads((tmp_path / "render.json").read_text())["runs"]
    assert len(runs) == 2 and runs[0]["files"] == RENDER_NAMES and runs[0]["seed"] == 41
    assert not list(tmp_path.glob(".*tmp*"))


def test_png_carries_its_parameters(model_dir, rendered):
    image = Image.open(rendered / RENDER_NAMES[1])
    unet_hash = hashlib.sha256(
        (model_dir / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    ).hexdigest()
    assert image.info["parameters"].splitlines() == [
        "ceramic sink, chrome faucet",
        "Negative prompt: blurry",
        f"Steps: 3, Sampler: DPM++ 2M, CFG scale: 6, Seed: 42, Size: 64x64, "
        f"Model hash: {unet_hash[:10]}, Model: tiny, Version: genimg 0.1.0",
    ]
    record = json.loads(image.info["genimg"])
    assert (record["seed"], record["base_seed"], record["index"]) == (42, 41, 1)
    assert record["negative_prompt"] == "blurry" and record["guidance_scale"] == 6
    assert record["model_hash"] == unet_hash[:10] and record["scheduler"] == "dpm++"


def test_japanese_prompt_round_trips(tmp_path):
    name = file_name(3, "白い陶器の洗面台")
    assert name.startswith("000003-p") and name.isascii()
    record = {
        "prompt": "白い陶器の洗面台",
        "negative_prompt": "",
        "num_inference_steps": 1,
        "sampler": "DPM++ 2M",
        "guidance_scale": 7.5,
        "seed": 3,
        "width": 64,
        "height": 64,
        "model_hash": "0" * 10,
        "model": "tiny",
        "loras": [],
        "genimg_version": "0",
    }
    (tmp_path / name).write_bytes(_png_bytes(Image.new("RGB", (8, 8)), record))
    assert Image.open(tmp_path / name).info["parameters"].startswith("白い陶器の洗面台\n")


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, arg",
    [
        (["--prompt", ""], "--prompt"),
        (["--prompt", "   "], "--prompt"),
        (["--num-inference-steps", "0"], "--num-inference-steps"),
        (["--num-inference-steps", "1001"], "--num-inference-steps"),
        (["--height", "100"], "--height"),
        (["--width", "56"], "--width"),
        (["--width", "1032"], "--width"),
        (["--guidance-scale", "-1"], "--guidance-scale"),
        (["--guidance-scale", "nan"], "--guidance-scale"),
        (["--num-images", "0"], "--num-images"),
        (["--num-images", "65"], "--num-images"),
        (["--scheduler", "dpm3"], "--scheduler"),
        (["--lora", "no-such-adapter"], "--lora"),
        (["--lora", "x:3"], "--lora"),
    ],
)
def test_bad_arguments_exit_2_and_write_nothing(model_dir, tmp_path, capsys, argv, arg):
    base = {"--prompt": "a sink", "--model": str(model_dir)}
    argv = [*(a for k, v in base.items() if k not in argv for a in (k, v)), *argv]
    assert _cli(*argv, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"genimg render: error: {arg}") and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_check_inputs_refuses_infinite_guidance():
    check_inputs("a sink")
    with pytest.raises(UsageError, match="--guidance-scale"):
        check_inputs("a sink", guidance_scale=math.inf)


class _Marker:
    """Unpickling this creates a file: proof, if it exists, that something unpickled it."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_pickle_marker_would_be_noticed(tmp_path):
    pickle.loads(pickle.dumps(_Marker(tmp_path / "UNPICKLED")))
    assert (tmp_path / "UNPICKLED").exists()


def _model_variant(model_dir: Path, root: Path, changed: str) -> Path:
    """The model (linked, not copied) without component `changed` (the caller may add it)."""
    root.mkdir(parents=True)
    shutil.copy(model_dir / "model_index.json", root)
    for part in model_dir.iterdir():
        if part.is_dir() and part.name != changed:
            (root / part.name).symlink_to(part)
    return root


def _bad_model(case: str, model_dir: Path, tmp: Path) -> list:
    if case in ("missing", "hub", "default"):
        return {
            "missing": ["--model", tmp / "nowhere"],
            "hub": ["--model", "genimg-test/nope"],
            "default": [],
        }[case]
    if case == "no_index":
        (tmp / "m").mkdir()
        return ["--model", tmp / "m"]
    part, weights = {
        "lacking": ("vae", None),
        "pickled": ("unet", "diffusion_pytorch_model.safetensors"),
        "corrupt": ("text_encoder", "model.safetensors"),
        "garbage": ("vae", "diffusion_pytorch_model.safetensors"),
    }[case]
    root = _model_variant(model_dir, tmp / "m", part)
    if weights:
        shutil.copytree(model_dir / part, root / part)
        file = root / part / weights
        if case == "pickled":
            file.unlink()
            (root / part / "diffusion_pytorch_model.bin").write_bytes(
                pickle.dumps(_Marker(tmp / "UNPICKLED"))
            )
        elif case == "corrupt":
            file.write_bytes(file.read_bytes()[:5000])  # truncated mid-download
        else:
            file.write_bytes(b"\xff" * 64)
    return ["--model", root]


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "no such folder"),
        ("no_index", "no model_index.json"),
        ("lacking", "lacks the vae/ folder"),
        ("pickled", "only pickle weights (diffusion_pytorch_model.bin); refusing"),
        ("corrupt", "corrupt safetensors file"),
        ("garbage", "corrupt safetensors file"),
        ("hub", "not a folder, nor found in the local hub cache"),
        ("default", "not there yet"),
    ],
)
def test_bad_models_exit_2_and_write_nothing(
    model_dir, tmp_path, capsys, monkeypatch, case, message
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(pipeline, "DEFAULT_MODEL", tmp_path / "assets" / "genimg-base")
    model = _bad_model(case, model_dir, tmp_path)
    assert _cli("--prompt", "a sink", *model, *FAST, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("genimg render: error: --model") and "\n" not in err
    assert message in err
    if case in ("corrupt", "garbage"):
        assert ".safetensors" in err
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "UNPICKLED").exists()


# -- adapters --------------------------------------------------------------------------------


ATTENTION = ["to_k", "to_q", "to_v", "to_out.0"]
LOCON = [*ATTENTION, "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1", "conv2"]


def _make_lora(
    model_dir: Path, out: Path, seed: int, cross_dim: int | None = None, targets=ATTENTION
) -> Path:
    """A random rank-4 LoRA on the UNet attention (or `targets`), saved as diffusers' training
    script does (peft's keys where the legacy rename does not know a target, as genimg does)."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    if cross_dim is None:
        unet = UNet2DConditionModel.from_pretrained(model_dir / "unet")
    else:  # a UNet for another base: its cross-attention width differs
        unet = build_components(
            ModelConfig(**{**TINY.to_dict(), "text_hidden": cross_dim, "text_heads": 2})
        )["unet"]
    config = LoraConfig(
        r=4,
        lora_alpha=4,
        init_lora_weights="gaussian",
        target_modules=targets,
    )
    unet.add_adapter(config)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)  # B starts at zero; make the adapter do something
    layers = get_peft_model_state_dict(unet)
    StableDiffusionPipeline.save_lora_weights(
        out,
        unet_lora_layers=convert_state_dict_to_diffusers(layers)
        if targets == ATTENTION
        else layers,
        unet_lora_adapter_metadata=config.to_dict(),
        safe_serialization=True,
    )
    return out


@pytest.fixture(scope="module")
def lora_dir(model_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lora")
    _make_lora(model_dir, root / "bathroom", seed=1)
    _make_lora(model_dir, root / "kitchen", seed=2)
    _make_lora(model_dir, root / "other-base", seed=3, cross_dim=64)
    _make_lora(model_dir, root / "locon", seed=4, targets=LOCON)
    (root / "pickled.ckpt").write_bytes(pickle.dumps(_Marker(root / "UNPICKLED")))
    (root / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    return root


def _unet_out(pipe) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=gen)
    context = torch.randn(1, 7, 32, generator=gen)
    with torch.no_grad():
        return pipe.unet(x, 500, encoder_hidden_states=context).sample


@pytest.mark.parametrize("name", ["bathroom", "locon"])  # locon: convs and feed-forwards too
def test_adapters_switch_fuse_and_unfuse_cleanly(model_dir, lora_dir, name):
    pipe = pipeline.load_pipeline(model_dir)  # its own: adapters change the modules
    unet = pipe.unet
    base = _unet_out(pipe)
    bath = adapters.resolve(f"{name}:0.8", lora_dir)
    assert (bath.name, bath.weight) == (name, 0.8)
    adapters.apply(pipe, [bath], fuse=False)
    unfused = _unet_out(pipe)
    assert (unfused - base).abs().max() > 1e-3
    adapters.apply(pipe, [bath])  # fused
    assert pipe.num_fused_loras == 1
    torch.testing.assert_close(_unet_out(pipe), unfused, atol=1e-5, rtol=0)
    both = [bath, adapters.resolve("kitchen:-0.5", lora_dir)]
    adapters.apply(pipe, both)  # several: set_adapters with weights, never fused
    assert pipe.num_fused_loras == 0
    assert not torch.allclose(_unet_out(pipe), unfused, atol=1e-4)
    adapters.apply(pipe, [])
    torch.testing.assert_close(_unet_out(pipe), base, atol=1e-5, rtol=0)
    assert pipe.unet is unet  # switching never reloaded the base
    images = render(pipe, "a sink", num_inference_steps=2, num_images=1, height=64, width=64)
    assert images[0].size == (64, 64)


def test_a_render_walks_no_module_tree(model_dir, lora_dir, monkeypatch):
    # diffusers' pipe.device, unet.dtype and _execution_device walk every module for hooks:
    # milliseconds a call with an adapter's peft layers. A render reads a first parameter.
    pipe = pipeline.load_pipeline(model_dir)
    pipe.set_progress_bar_config(disable=True)
    adapters.apply(pipe, [adapters.resolve("locon:0.8", lora_dir)])  # fused
    kwargs = {"num_inference_steps": 2, "num_images": 2, "height": 64, "width": 64}
    first = render(pipe, "a sink", **kwargs)
    visited = []

    def counting(walk):
        return lambda *a, **k: (visited.append(m) or m for m in walk(*a, **k))

    for model in (pipe.unet, pipe.vae):
        monkeypatch.setattr(model, "named_modules", counting(model.named_modules))
    again = render(pipe, "a sink", **kwargs)
    assert len(visited) <= 10  # the modules up to a first parameter, three reads; not hundreds
    assert _pixels(again).tobytes() == _pixels(first).tobytes()
    assert pipe.unet.dtype == torch.float32  # diffusers' property: the counting sees its walk
    assert len(visited) > sum(1 for _ in pipe.unet.modules())


@pytest.mark.parametrize("first", ["bathroom", "locon"])
def test_unfused_adapters_run_in_weight_space_with_pefts_result(model_dir, lora_dir, first):
    from peft.tuners.lora.layer import Conv2d, Linear

    specs = [adapters.resolve(f"{first}:0.8", lora_dir), adapters.resolve("kitchen:-0.5", lora_dir)]
    ours = pipeline.load_pipeline(model_dir)
    adapters.apply(ours, specs, fuse=False)
    plain = pipeline.load_pipeline(model_dir)  # peft's own layers, as diffusers loads them
    for lora in specs:
        plain.load_lora_weights(str(lora.path.parent), adapter_name=lora.name)
    plain.set_adapters([lora.name for lora in specs], adapter_weights=[0.8, -0.5])
    outs, calls = {}, {}
    for name, pipe in (("ours", ours), ("plain", plain)):
        layers = [m for m in pipe.unet.modules() if isinstance(m, Linear | Conv2d)]
        seen = []
        hooks = [
            m.lora_A[first].register_forward_hook(lambda *a, seen=seen: seen.append(1))
            for m in layers
            if first in m.lora_A
        ]
        outs[name] = _unet_out(pipe)
        for hook in hooks:
            hook.remove()
        calls[name] = (len(seen), len(hooks), sum(isinstance(m, Conv2d) for m in layers))
    # No matmul of x by A: bathroom adapts the 56 attention projections of the tiny UNet's 7
    # transformer blocks; locon also their proj_in / proj_out (convs) and two feed-forward
    # linears, and conv1 / conv2 of its 11 ResNet blocks.
    n, convs = (56, 0) if first == "bathroom" else (56 + 7 * 4 + 11 * 2, 7 * 2 + 11 * 2)
    assert calls["ours"] == (0, n, convs) and calls["plain"] == (n, n, convs)
    assert (outs["plain"] - _unet_out(pipeline.load_pipeline(model_dir))).abs().max() > 1e-3
    torch.testing.assert_close(outs["ours"], outs["plain"], atol=1e-5, rtol=0)


def test_weight_space_keeps_merged_weights_until_a_weight_changes(model_dir, lora_dir):
    # The merged W + s * B @ A is kept per layer; an in-place change to an adapter weight
    # (as training makes between sample grids) or a new weight is seen at the next call,
    # by the traced graph too; a plain peft pipeline with the same change agrees.
    from peft.tuners.lora.layer import Conv2d, Linear

    spec = adapters.resolve("locon:0.8", lora_dir)
    ours, plain = pipeline.load_pipeline(model_dir), pipeline.load_pipeline(model_dir)
    adapters.apply(ours, [spec], fuse=False)
    plain.load_lora_weights(str(spec.path.parent), adapter_name="locon")
    plain.set_adapters(["locon"], adapter_weights=[0.8])
    first = _unet_out(ours)
    layers = [m for m in ours.unet.modules() if isinstance(m, Linear | Conv2d)]
    kept = [m._genimg_merged.data_ptr() for m in layers]
    torch.testing.assert_close(_unet_out(ours), first, atol=0, rtol=0)
    assert [m._genimg_merged.data_ptr() for m in layers] == kept  # updated in place
    with torch.no_grad():
        for pipe in (ours, plain):
            for name, param in pipe.unet.named_parameters():
                if "lora_B" in name:
                    param.mul_(2)
    changed = _unet_out(ours)
    assert (changed - first).abs().max() > 1e-3
    torch.testing.assert_close(changed, _unet_out(plain), atol=1e-5, rtol=0)
    adapters.apply(ours, [adapters.resolve("locon:-0.5", lora_dir)], fuse=False)
    plain.set_adapters(["locon"], adapter_weights=[-0.5])
    torch.testing.assert_close(_unet_out(ours), _unet_out(plain), atol=1e-5, rtol=0)


def test_adapter_for_another_base_is_refused_and_base_kept(model_dir, lora_dir):
    pipe = pipeline.load_pipeline(model_dir)
    base = _unet_out(pipe)
    with pytest.raises(UsageError, match="other_base .*does not fit the base model"):
        adapters.apply(pipe, [adapters.resolve("other-base", lora_dir)])
    adapters.apply(pipe, [])
    torch.testing.assert_close(_unet_out(pipe), base, atol=0, rtol=0)


@pytest.mark.parametrize(
    "spec, message",
    [
        (
            "nothing",
            "unknown adapter 'nothing'; in .*: bathroom, broken, kitchen, locon, other-base",
        ),
        ("bathroom:2.5", "expected a number in \\[-2.0, 2.0\\]"),
        ("bathroom:nan", "expected a number"),
        ("pickled.ckpt", "pickle file; refusing"),
        ("broken", "corrupt safetensors file"),
    ],
)
def test_bad_adapters(lora_dir, monkeypatch, spec, message):
    monkeypatch.chdir(lora_dir)  # so that "pickled.ckpt" is found as a path
    with pytest.raises(UsageError, match=message):
        adapters.resolve(spec, lora_dir)
    assert not (lora_dir / "UNPICKLED").exists()


def test_render_with_lora_records_it(model_dir, lora_dir, tmp_path):
    assert (
        _cli(
            "--prompt",
            "a sink",
            "--num-images",
            1,
            "--lora",
            lora_dir / "bathroom",
            "--model",
            model_dir,
            *FAST,
            "--out",
            tmp_path,
        )
        == 0
    )
    params = Image.open(tmp_path / "000000-a-sink.png").info["parameters"]
    assert 'Lora hashes: "bathroom: ' in params
