"""Save and load Stable Diffusion pipelines: ours, any diffusers SD 1.x/2.x folder or hub id.

Loading is the plain diffusers path (`StableDiffusionPipeline.from_pretrained`), preceded by
checks that turn the usual failures into one-line `UsageError`s: a missing folder or
component, pickle-only weights (refused, never unpickled), a corrupt safetensors file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from genimg.errors import UsageError, first_line
from genimg.traced import trace_unet

__all__ = [
    "DEFAULT_MODEL",
    "SCHEDULERS",
    "check_model",
    "load_pipeline",
    "model_hash",
    "model_name",
    "save_pipeline",
    "set_scheduler",
    "split_geglu",
]

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "assets" / "models" / "genimg-base"

# name -> (diffusers class, config overrides, the sampler name AUTOMATIC1111 writes).
SCHEDULERS: dict[str, tuple[str, dict, str]] = {
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}, "DPM++ 2M"),
    "dpm++_karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True},
        "DPM++ 2M Karras",
    ),
    # DDIM's own default clips x0 to [-1, 1]; SD latents are not in that range.
    "ddim": ("DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": False}, "DDIM"),
    "euler": ("EulerDiscreteScheduler", {}, "Euler"),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}, "Euler a"),
    "heun": ("HeunDiscreteScheduler", {}, "Heun"),
    "lms": ("LMSDiscreteScheduler", {}, "LMS"),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}, "PLMS"),
    "unipc": ("UniPCMultistepScheduler", {}, "UniPC"),
}

_REQUIRED = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_WEIGHTED = ("unet", "vae", "text_encoder")
_PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def set_scheduler(pipe, name: str) -> None:
    """Swap the pipeline's sampler, keeping the model's training noise schedule."""
    import diffusers

    if name not in SCHEDULERS:
        raise UsageError("--scheduler", f"unknown {name!r}; choose from {', '.join(SCHEDULERS)}")
    class_name, overrides, _ = SCHEDULERS[name]
    cls = getattr(diffusers, class_name)
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **overrides)


def save_pipeline(components: dict, out_dir: Path | str) -> Path:
    """Write components as a diffusers folder that vanilla `from_pretrained` loads.

    fp32 safetensors: diffusers' `from_pretrained` of fp16 weights without `torch_dtype` keeps
    fp16, which fails on CPU. The folder appears complete or not at all (temp + rename).
    """
    import torch
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    out = Path(out_dir)
    # steps_offset=1 is what StableDiffusionPipeline insists on (it rewrites it with a warning).
    scheduler = DPMSolverMultistepScheduler.from_config(
        components["scheduler"].config, **SCHEDULERS["dpm++"][1], steps_offset=1
    )
    pipe: Any = StableDiffusionPipeline(
        vae=components["vae"],
        text_encoder=components["text_encoder"],
        tokenizer=components["tokenizer"],
        unet=components["unet"],
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        if module.dtype != torch.float32:
            module.to(torch.float32)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)
        if out.exists():
            out.rename(old)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out


def load_pipeline(model: str | Path = DEFAULT_MODEL, device: str = "cpu", scheduler: str = "dpm++"):
    """A `StableDiffusionPipeline` from a diffusers folder or hub id, checked first.

    Hub ids go through diffusers' own download (safetensors only), which honours
    HF_HUB_OFFLINE and the local cache; the resulting folder gets the same checks.
    """
    if scheduler not in SCHEDULERS:
        choices = ", ".join(SCHEDULERS)
        raise UsageError("--scheduler", f"unknown {scheduler!r}; choose from {choices}")
    folder = check_model(model)

    import torch

    try:
        pipe = _pipeline_class().from_pretrained(
            folder,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
            use_safetensors=True,
            local_files_only=True,
            dtype=torch.float32,
        )
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as err:
        raise UsageError("--model", f"{model}: cannot load: {first_line(err)}") from None
    set_scheduler(pipe, scheduler)
    # An image's bits must not depend on its batch: the timestep layers and the VAE decoder
    # (whose convolutions pick kernels by batch size) see one image's rows at a time.
    batch_invariant_time_embedding(pipe.unet)
    pipe.vae.enable_slicing()
    split_geglu(pipe.unet)
    # Sampling steps replay compiled graphs (onnxruntime on the CPU): the small UNet's steps
    # are mostly the cost of its many small ops.
    trace_unet(pipe.unet)
    # oneDNN's convolutions run natively on NHWC weights: 1.09x a traced sampling step and
    # 1.19x a training step at batch 64 (2 cores); the VAE decodes 1.55x faster (80 -> 51 ms
    # an image at 128 px). Batch invariance holds as with NCHW.
    pipe.unet.to(memory_format=torch.channels_last)
    pipe.vae.to(memory_format=torch.channels_last)
    return pipe.to(device)


@functools.cache
def _pipeline_class():
    from diffusers import StableDiffusionPipeline

    class Pipeline(StableDiffusionPipeline):
        """diffusers' pipeline with its execution device read from the UNet's first parameter.

        diffusers looks for offload hooks in every module of every component at each call:
        9.4 ms with the LoCon adapter's peft layers in the UNet (3.6 ms without), 3% of a
        render. genimg offloads nothing, so the UNet's device is where the pipeline runs.
        """

        @property
        def _execution_device(self):
            return unet_param(self).device

    return Pipeline


def unet_param(pipe):
    """The UNet's first parameter, for its device and dtype. diffusers' `pipe.device` and
    `unet.dtype` walk every submodule for offload and casting hooks (the UNet's 341 modules,
    1,401 with the LoCon adapter's peft layers): milliseconds a call, three calls a render."""
    return next(pipe.unet.parameters())


def batch_invariant_time_embedding(unet) -> None:
    """Make the UNet's timestep-embedding layers give each image the same bits in any batch.

    Those layers are matmuls of B rows (one per image), and a BLAS picks its kernel, and so
    its summation order, by the row count: image 0 of a batch of 2 came out a few 1e-8 off
    image 0 alone, enough to flip a pixel level now and then. Every row of a sampling step
    has the same timestep, so the layers run on one row and the result is repeated; rows
    that differ (training) run one at a time. For inference pipelines only.
    """
    modules = [unet.time_embedding]
    modules += [m for name, m in unet.named_modules() if name.endswith("time_emb_proj")]
    for module in modules:
        if not getattr(module, "_genimg_rowwise", False):
            module.forward = _rowwise(module.forward)
            module._genimg_rowwise = True


def split_geglu(unet) -> None:
    """Make the UNet's GEGLU feed-forwards run two linears, value and gate, not one split.

    diffusers' GEGLU projects to both halves at once and splits the result, so the GELU and
    the product read strided halves; two linears on the two halves of the weight (views: an
    in-place change of the weight is seen) write contiguous ones. Same result up to float
    rounding (2e-6 on the UNet's output). A traced UNet call is 1.03x faster at 16 rows
    (8 images with CFG; faster in 21 of 30 interleaved pairs; 1.06x at 32 rows in 6) and
    1.01x at 2 (15 of 30: no gain). A projection wrapped by an adapter (a peft layer) keeps
    diffusers' path.
    """
    from diffusers.models.activations import GEGLU

    for module in unet.modules():
        if isinstance(module, GEGLU) and not getattr(module, "_genimg_split", False):
            module.forward = _split_forward(module, module.forward)
            module._genimg_split = True


def _split_forward(geglu, diffusers_forward):
    import torch
    import torch.nn.functional as F

    def forward(hidden_states, *args, **kwargs):
        if args or kwargs or type(geglu.proj) is not torch.nn.Linear:
            return diffusers_forward(hidden_states, *args, **kwargs)
        weight, bias = geglu.proj.weight, geglu.proj.bias
        half = weight.shape[0] // 2
        value = F.linear(hidden_states, weight[:half], None if bias is None else bias[:half])
        gate = F.linear(hidden_states, weight[half:], None if bias is None else bias[half:])
        return value * F.gelu(gate)

    return forward


def _rowwise(forward):
    import torch

    def rowwise(x, *args, **kwargs):
        if x.shape[0] == 1:
            return forward(x, *args, **kwargs)
        if bool((x == x[:1]).all()):
            return forward(x[:1], *args, **kwargs).expand(x.shape[0], -1)
        return torch.cat([forward(x[i : i + 1], *args, **kwargs) for i in range(x.shape[0])])

    return rowwise


def check_model(model: str | Path = DEFAULT_MODEL) -> Path:
    """The local folder of `model` (a hub id is fetched or found in the cache), checked:
    model_index.json, each component, parseable safetensors weights, no pickle."""
    folder = _resolve(model)
    _check_folder(folder)
    return folder


def model_name(model: str | Path) -> str:
    """What the PNG's `Model:` field says: a folder's name, or the hub id as given."""
    text = str(model)
    if Path(text).exists() or not _HUB_ID.match(text):
        return Path(text).name
    return text


def model_hash(pipe) -> str:
    """First 10 hex digits of the sha256 of the UNet's weight files, as the SD web UIs show.

    AUTOMATIC1111 hashes its single checkpoint file; a diffusers folder has no such file, so
    the UNet's (the part that makes the image) stands in for it.
    """
    files = sorted((Path(pipe.name_or_path) / "unet").glob("*.safetensors"))
    if not files:
        return "0" * 10
    return _sha256_files(tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))


@functools.lru_cache(maxsize=8)
def _sha256_files(files: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for path, _, _ in files:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:10]


def _resolve(model: str | Path) -> Path:
    """A local folder for `model`, downloading (or finding in the cache) a hub id."""
    path = Path(model)
    if path.exists():
        return path
    if path.resolve() == DEFAULT_MODEL:
        raise UsageError(
            "--model",
            f"the default model {DEFAULT_MODEL} is not there yet; train it with "
            "`genimg train-base` or pass --model DIR_OR_HUB_ID",
        )
    if not _HUB_ID.match(str(model)):
        raise UsageError("--model", f"no such folder {str(model)!r} (nor a hub id like org/name)")
    from diffusers import StableDiffusionPipeline

    try:
        return Path(
            StableDiffusionPipeline.download(
                str(model), use_safetensors=True, local_files_only=_offline()
            )
        )
    except Exception as err:  # hub errors have many types; all mean "not available here"
        where = "in the local hub cache (HF_HUB_OFFLINE is set)" if _offline() else "on the hub"
        raise UsageError(
            "--model", f"{model!r} is not a folder, nor found {where}: {first_line(err)}"
        ) from None


def _offline() -> bool:
    # huggingface_hub reads HF_HUB_OFFLINE once, at import; read it again for a late setting.
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    return flag or bool(constants.HF_HUB_OFFLINE)


def _check_folder(folder: Path) -> None:
    """Refuse what would fail deep inside diffusers, or would run pickle."""
    where = str(folder)
    if not folder.is_dir():
        raise UsageError("--model", f"{where} is a file; expected a diffusers folder")
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise UsageError("--model", f"{where} has no model_index.json (not a diffusers folder)")
    try:
        index = json.loads(index_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UsageError("--model", f"{index_file} is not valid JSON: {err}") from None
    for name in _REQUIRED:
        entry = index.get(name)
        if not isinstance(entry, list) or None in entry:
            raise UsageError("--model", f"{index_file} lists no {name}")
        if not (folder / name).is_dir():
            raise UsageError("--model", f"{where} lacks the {name}/ folder")
    for name in _WEIGHTED:
        if not (folder / name / "config.json").is_file():
            raise UsageError("--model", f"{folder / name} has no config.json")
        _check_weights(folder / name)
    tokenizer = folder / "tokenizer"
    if not (tokenizer / "tokenizer.json").is_file() and not (tokenizer / "vocab.json").is_file():
        raise UsageError("--model", f"{tokenizer} has neither tokenizer.json nor vocab.json")


def _check_weights(component: Path) -> None:
    """Every safetensors file must parse; pickle files are refused, never opened."""
    from safetensors import safe_open

    tensors = sorted(component.glob("*.safetensors"))
    if not tensors:
        pickles = sorted(p.name for p in component.iterdir() if p.suffix in _PICKLE_SUFFIXES)
        if pickles:
            raise UsageError(
                "--model",
                f"{component} holds only pickle weights ({', '.join(pickles)}); refusing to "
                "unpickle them: convert to safetensors",
            )
        raise UsageError("--model", f"{component} has no .safetensors weights")
    for file in tensors:
        try:
            # Parses the header and checks it against the file size; reads no tensor data.
            with safe_open(str(file), framework="pt") as handle:
                handle.keys()
        except Exception as err:  # safetensors raises its own SafetensorError, OSError, ...
            message = f"corrupt safetensors file {file}: {first_line(err)}"
            raise UsageError("--model", message) from None
