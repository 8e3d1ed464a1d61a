"""Render one prompt: `render(pipe, prompt, ...)` and the `genimg render` command.

Image i of a request starts from noise drawn by a CPU `torch.Generator` seeded with
seed + i (as flux's sampling.py does), so a seed means the same image whatever the batch
size or device. Each PNG carries its parameters in the text chunk the common SD web UIs
read (AUTOMATIC1111's `parameters`) and the full record as JSON (`genimg`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path

from genimg.errors import MAX_PROMPT_CHARS, UsageError, check_float, check_int, check_size
from genimg.pipeline import unet_param
from genimg.traced import fixed_adapters

__all__ = ["check_inputs", "encode_prompt", "render"]

log = logging.getLogger("genimg")

# Images per denoising call (32 UNet rows with CFG): 1.10x the images/s of 8 in an interleaved
# A/B on 2 cores (2.18 vs 1.98 images/s at 128 px); memory stays bounded.
_BATCH = 16
_MAX_SEED = 2**63 - 1 - 64


def check_inputs(
    prompt: str,
    negative_prompt: str = "",
    num_inference_steps: int = 20,
    guidance_scale: float = 7.5,
    seed: int = 0,
    num_images: int = 4,
    height: int = 128,
    width: int = 128,
) -> None:
    """Raise UsageError naming the first bad argument; fix nothing silently."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise UsageError("--prompt", f"must be non-empty text, got {prompt!r}")
    if not isinstance(negative_prompt, str):
        raise UsageError("--negative-prompt", f"must be text, got {negative_prompt!r}")
    for arg, text in (("--prompt", prompt), ("--negative-prompt", negative_prompt)):
        if len(text) > MAX_PROMPT_CHARS:
            raise UsageError(arg, f"{len(text):,} characters; at most {MAX_PROMPT_CHARS:,}")
        try:  # argv bytes that are not UTF-8 arrive as lone surrogates; no file can hold them
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise UsageError(arg, f"not valid UTF-8 text at character {err.start}") from None
    check_int("--num-inference-steps", num_inference_steps, 1, 1000)
    check_float("--guidance-scale", guidance_scale, 0.0, 100.0)
    check_int("--seed", seed, 0, _MAX_SEED)
    check_int("--num-images", num_images, 1, 64)
    check_size("--height", height)
    check_size("--width", width)


def encode_prompt(pipe, prompt: str, negative_prompt: str = ""):
    """Text embeddings (1, T, D) for the prompt and the negative prompt, T equal for both.

    A prompt longer than the encoder's window is split into chunks of window - 2 tokens,
    each encoded with its own BOS/EOS and the results concatenated along T (the scheme of
    AUTOMATIC1111's web UI, and of genimg's training); the UNet's cross-attention takes any
    T. Tokens past `models.MAX_PROMPT_TOKENS` (or past one window, for a long-window encoder) are
    cut, with a warning.
    """
    import torch

    from genimg.models import chunk_rows, encode_chunked

    pos = _token_chunks(pipe.tokenizer, prompt, "--prompt")
    neg = _token_chunks(pipe.tokenizer, negative_prompt, "--negative-prompt")
    n = max(len(pos), len(neg))  # the shorter side gets empty windows: CFG batches both
    rows = [chunk_rows(pipe.tokenizer, c, n) for c in (pos, neg)]
    input_ids = torch.tensor(rows, device=pipe.text_encoder.device)  # (2, n * window)
    with torch.no_grad():
        embeds = encode_chunked(pipe.text_encoder, input_ids, trim=False)
    embeds = embeds.to(unet_param(pipe).dtype)
    return embeds[:1], embeds[1:]


def _token_chunks(tokenizer, text: str, arg: str) -> list[list[int]]:
    from genimg.models import token_chunks

    chunks, cut = token_chunks(tokenizer, text)
    if cut:
        kept = sum(len(c) for c in chunks)
        tail = tokenizer.decode(cut)
        log.warning(
            "%s: %d tokens; the model reads %d, so the tail %r is cut",
            arg,
            kept + len(cut),
            kept,
            tail[:60] + ("..." if len(tail) > 60 else ""),
        )
    return chunks


def render(
    pipe,
    prompt: str,
    negative_prompt: str = "",
    num_inference_steps: int = 20,
    guidance_scale: float = 7.5,
    seed: int = 0,
    num_images: int = 4,
    height: int = 128,
    width: int = 128,
) -> list:
    """Images (PIL) for one prompt; image i uses seed + i."""
    import torch

    # 1. Check inputs
    check_inputs(
        prompt,
        negative_prompt,
        num_inference_steps,
        guidance_scale,
        seed,
        num_images,
        height,
        width,
    )
    # 2. Encode the prompt once for all images
    cond, uncond = encode_prompt(pipe, prompt, negative_prompt)
    # 3. Prepare latents: one CPU generator per image, so image i never depends on the others
    shape = (
        1,
        pipe.unet.config.in_channels,
        height // pipe.vae_scale_factor,
        width // pipe.vae_scale_factor,
    )
    generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(num_images)]
    noise = [torch.randn(shape, generator=g, dtype=torch.float32) for g in generators]
    # 4. Denoise in batches; ancestral samplers draw their step noise from the same generators
    images = []
    param = unet_param(pipe)
    with fixed_adapters(pipe.unet):
        for start in range(0, num_images, _BATCH):
            stop = min(start + _BATCH, num_images)
            latents = torch.cat(noise[start:stop]).to(param.device, param.dtype)
            out = pipe(
                prompt_embeds=cond,
                negative_prompt_embeds=uncond if guidance_scale > 1 else None,
                num_images_per_prompt=stop - start,
                latents=latents,
                generator=generators[start:stop],
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                height=height,
                width=width,
                output_type="pil",
            )
            images.extend(out.images)
    return images


# -- PNG files ------------------------------------------------------------------------------


def _quote(value: str) -> str:
    # AUTOMATIC1111's own rule for values inside the "Steps: ..., ..." line.
    return json.dumps(value, ensure_ascii=False) if any(c in value for c in ",:\n") else value


def parameters_text(record: dict) -> str:
    """The `parameters` text of AUTOMATIC1111's web UI (it omits an empty negative prompt)."""
    fields = {
        "Steps": record["num_inference_steps"],
        "Sampler": record["sampler"],
        "CFG scale": f"{record['guidance_scale']:g}",
        "Seed": record["seed"],
        "Size": f"{record['width']}x{record['height']}",
        "Model hash": record["model_hash"],
        "Model": _quote(record["model"]),
    }
    if record["loras"]:
        hashes = ", ".join(f"{lora['name']}: {lora['hash']}" for lora in record["loras"])
        fields["Lora hashes"] = _quote(hashes)
    fields["Version"] = f"genimg {record['genimg_version']}"
    lines = [record["prompt"]]
    if record["negative_prompt"]:
        lines.append(f"Negative prompt: {record['negative_prompt']}")
    lines.append(", ".join(f"{k}: {v}" for k, v in fields.items()))
    return "\n".join(lines)


def _png_bytes(image, record: dict) -> bytes:
    import io

    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    # Latin-1 text goes in tEXt; Pillow switches to iTXt (UTF-8) for e.g. Japanese prompts.
    info.add_text("parameters", parameters_text(record))
    info.add_text("genimg", json.dumps(record, ensure_ascii=False, sort_keys=True))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def file_name(seed: int, prompt: str) -> str:
    """`{seed:06d}-{slug}.png`: stable, ASCII, sortable by seed."""
    words = re.findall(r"[a-z0-9]+", prompt.lower())
    slug = "-".join(words)[:48].strip("-")
    if not slug:  # e.g. a Japanese prompt: name it by its hash
        slug = "p" + hashlib.sha256(prompt.encode()).hexdigest()[:10]
    return f"{seed:06d}-{slug}.png"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _append_record(out: Path, run: dict) -> None:
    """Add this run to out/render.json, the folder's record of what made it."""
    path = out / "render.json"
    runs = []
    if path.exists():
        try:
            runs = json.loads(path.read_text())["runs"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise UsageError("--out", f"{path} is not a genimg render record: {err}") from None
    runs.append(run)
    text = json.dumps({"runs": runs}, indent=2, ensure_ascii=False) + "\n"
    _write_atomic(path, text.encode())


# -- the `genimg render` command -------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        'example:\n  genimg render --prompt "a bathroom with a wooden shelf and a white '
        'ceramic sink" \\\n      --num-images 4 --seed 0 --out renders/bathroom\n\n'
        "Image i uses seed + i. Each PNG carries its parameters (AUTOMATIC1111 format)."
    )
    add = parser.add_argument
    add("--prompt", required=True, help="what to draw")
    add("--negative-prompt", default="", help="what to steer away from (default: none)")
    add("--num-inference-steps", type=int, default=20, help="denoising steps (default 20)")
    add("--guidance-scale", type=float, default=7.5, help="classifier-free guidance (7.5)")
    add("--seed", type=int, default=0, help="seed of the first image; image i uses seed + i")
    add("--num-images", type=int, default=4, help="images to render, 1-64 (default 4)")
    add("--height", type=int, default=128, help="pixels, a multiple of 8 (default 128)")
    add("--width", type=int, default=128, help="pixels, a multiple of 8 (default 128)")
    add("--scheduler", default="dpm++", help="sampler: dpm++ (default), ddim, euler, euler_a, ...")
    add("--model", default=None, help="diffusers folder or hub id (default: the shipped model)")
    add(
        "--lora",
        action="append",
        default=[],
        metavar="NAME[:W]",
        help="adapter in lora/, a folder or a .safetensors file, weight W in [-2, 2] "
        "(default 1); repeat for several",
    )
    add("--device", default="cpu", help="torch device (default cpu)")
    add("--out", required=True, type=Path, help="output folder")
    add("--overwrite", action="store_true", help="replace existing files of the same name")


def run(args: argparse.Namespace) -> int:
    from genimg import __version__, pipeline

    # 1. Check every argument before loading anything
    check_inputs(
        args.prompt,
        args.negative_prompt,
        args.num_inference_steps,
        args.guidance_scale,
        args.seed,
        args.num_images,
        args.height,
        args.width,
    )
    if args.scheduler not in pipeline.SCHEDULERS:
        raise UsageError(
            "--scheduler",
            f"unknown {args.scheduler!r}; choose from {', '.join(pipeline.SCHEDULERS)}",
        )
    loras = []
    if args.lora:
        from genimg import adapters

        loras = [adapters.resolve(spec) for spec in args.lora]
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise UsageError("--out", f"{out} is a file, not a folder")
    names = [file_name(args.seed + i, args.prompt) for i in range(args.num_images)]
    clash = [n for n in names if (out / n).exists()]
    if clash and not args.overwrite:
        raise UsageError(
            "--out",
            f"{out / clash[0]} exists ({len(clash)} of {len(names)} "
            "files); pass --overwrite or choose another folder",
        )
    model = args.model or pipeline.DEFAULT_MODEL
    folder = pipeline.check_model(model)
    # 2. Load the model (and adapters) once
    _quiet_libraries()
    pipe = pipeline.load_pipeline(folder, device=args.device, scheduler=args.scheduler)
    if loras:
        adapters.apply(pipe, loras)
    # 3. Render
    start = time.perf_counter()
    images = render(
        pipe,
        args.prompt,
        args.negative_prompt,
        args.num_inference_steps,
        args.guidance_scale,
        args.seed,
        args.num_images,
        args.height,
        args.width,
    )
    seconds = time.perf_counter() - start
    # 4. Write the files, each complete or absent, then the folder's record
    base = {
        "prompt": args.prompt,
        "negative_prompt": args.negative_prompt,
        "num_inference_steps": args.num_inference_steps,
        "guidance_scale": args.guidance_scale,
        "height": args.height,
        "width": args.width,
        "scheduler": args.scheduler,
        "sampler": pipeline.SCHEDULERS[args.scheduler][2],
        "model": pipeline.model_name(model),
        "model_hash": pipeline.model_hash(pipe),
        "loras": [lora.record() for lora in loras],
        "genimg_version": __version__,
    }
    out.mkdir(parents=True, exist_ok=True)
    for i, (name, image) in enumerate(zip(names, images, strict=True)):
        record = {**base, "seed": args.seed + i, "base_seed": args.seed, "index": i}
        _write_atomic(out / name, _png_bytes(image, record))
        print(out / name)
    _append_record(
        out,
        {
            **base,
            "seed": args.seed,
            "num_images": args.num_images,
            "files": names,
            "seconds": round(seconds, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **_versions(),
        },
    )
    log.info("%d images in %.2f s", len(images), seconds)
    return 0


def _versions() -> dict:
    import diffusers
    import onnxruntime  # runs the UNet on the CPU (genimg.traced): its kernels make the pixels
    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def _quiet_libraries() -> None:
    """The command prints its own errors; library chatter and loading bars would bury them."""
    import transformers.utils.logging as tlog
    from diffusers.utils import logging as dlog

    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    dlog.set_verbosity_error()
    dlog.disable_progress_bar()
