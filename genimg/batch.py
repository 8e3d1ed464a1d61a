"""Render a prompts file: `render_batch` and the `genimg batch` command.

Prompts come from a `.txt` file (one a line), a `.jsonl` file (`prompt` and optional
overrides) or GenEval's prompt metadata (`tag`, `include`, `prompt`; Ghosh et al., 2023).
Work is split into fixed chunks of images that share their settings; each chunk is one
denoising call over several prompts, each prompt encoded once. Image i of a prompt starts
from the noise of seed + i (as `render` does), so it does not depend on the chunk it lands in.

The output folder is resumable: an image is written to a temporary file and renamed, and
only then is its line appended to `manifest.jsonl`; `--resume` redoes the chunks that lack a
manifest line, with the same chunking as an uninterrupted run, so the result is
byte-identical.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from genimg.errors import UsageError, check_float, check_int
from genimg.prompts import OVERRIDES, PromptSpec, read_prompts
from genimg.render import _BATCH, check_inputs, file_name

__all__ = ["Settings", "render_batch"]

MANIFEST = "manifest.jsonl"
CONFIG = "batch.json"
# -- rendering -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What images must share to be denoised in one call."""

    negative_prompt: str = ""
    num_inference_steps: int = 20
    guidance_scale: float = 7.5
    height: int = 128
    width: int = 128
    lora: tuple[str, ...] = ()  # adapter specs NAME[:W]


def render_batch(pipe, requests: list[tuple[str, int]], settings: Settings, cache=None) -> list:
    """Images (PIL) for (prompt, seed) pairs that share `settings`; each prompt is encoded
    once (`cache`: a dict reused across calls) and image k starts from seed k's noise."""
    import torch

    from genimg.render import encode_prompt

    cache = {} if cache is None else cache
    s = settings
    # 1. Encode each distinct prompt once
    for prompt, _ in requests:
        if (prompt, s.negative_prompt) not in cache:
            cache[prompt, s.negative_prompt] = encode_prompt(pipe, prompt, s.negative_prompt)
    # 2. Noise per image from its own CPU generator, exactly as render() draws it
    shape = (
        1,
        pipe.unet.config.in_channels,
        s.height // pipe.vae_scale_factor,
        s.width // pipe.vae_scale_factor,
    )
    generators = [torch.Generator("cpu").manual_seed(seed) for _, seed in requests]
    noise = [torch.randn(shape, generator=g, dtype=torch.float32) for g in generators]
    # 3. Denoise: prompts of one text length together, in calls of at most _BATCH images
    images: list = [None] * len(requests)
    by_length: dict[int, list[int]] = {}
    for k, (prompt, _) in enumerate(requests):
        by_length.setdefault(cache[prompt, s.negative_prompt][0].shape[1], []).append(k)
    for ks in by_length.values():
        for start in range(0, len(ks), _BATCH):
            part = ks[start : start + _BATCH]
            embeds = [cache[requests[k][0], s.negative_prompt] for k in part]
            out = pipe(
                prompt_embeds=torch.cat([c for c, _ in embeds]),
                negative_prompt_embeds=(
                    torch.cat([u for _, u in embeds]) if s.guidance_scale > 1 else None
                ),
                latents=torch.cat([noise[k] for k in part]).to(pipe.device, pipe.unet.dtype),
                generator=[generators[k] for k in part],
                num_inference_steps=s.num_inference_steps,
                guidance_scale=s.guidance_scale,
                height=s.height,
                width=s.width,
                output_type="pil",
            )
            for k, image in zip(part, out.images, strict=True):
                images[k] = image
    return images


@dataclass
class _Item:
    spec: PromptSpec
    image: int  # i: this is the prompt's image i
    seed: int
    settings: Settings
    file: str  # relative to the output folder


def _plan(specs: list[PromptSpec], args) -> list[_Item]:
    """Every image the run must make, with each prompt's options checked."""
    items = []
    for spec in specs:
        o = {**{k: getattr(args, k) for k in OVERRIDES if k != "lora"}, **spec.overrides}
        where = f"{args.prompts}:{spec.line}: "
        try:
            o["seed"] = check_int("seed", o["seed"], 0, 2**62)
            o["num_images"] = check_int("num_images", o["num_images"], 1, 10_000)
            o["num_inference_steps"] = check_int(
                "num_inference_steps", o["num_inference_steps"], 1, 1000
            )
            o["guidance_scale"] = check_float("guidance_scale", o["guidance_scale"], 0, 100)
            check_inputs(
                spec.prompt,
                o["negative_prompt"],
                o["num_inference_steps"],
                o["guidance_scale"],
                o["seed"],
                1,
                o["height"],
                o["width"],
            )
        except UsageError as err:
            raise UsageError("--prompts", where + str(err)) from None
        lora = spec.overrides.get("lora", args.lora)
        if not isinstance(lora, list) or not all(isinstance(x, str) for x in lora):
            raise UsageError("--prompts", where + f"lora must be a name or a list, got {lora!r}")
        settings = Settings(
            o["negative_prompt"],
            o["num_inference_steps"],
            o["guidance_scale"],
            o["height"],
            o["width"],
            tuple(lora),
        )
        for i in range(o["num_images"]):
            seed = o["seed"] + i
            if args.geneval:
                name = f"{spec.index:05d}/samples/{i:05d}.png"
            else:
                name = f"images/{spec.index:05d}-{file_name(seed, spec.prompt)}"
            items.append(_Item(spec, i, seed, settings, name))
    return items


def _chunks(items: list[_Item]) -> list[list[_Item]]:
    """Fixed chunks of images with equal settings: the same whatever is already done."""
    groups: dict[Settings, list[_Item]] = {}
    for item in items:
        groups.setdefault(item.settings, []).append(item)
    ordered = sorted(groups.items(), key=lambda kv: kv[0].lora)  # fewest adapter switches
    return [g[i : i + _BATCH] for _, g in ordered for i in range(0, len(g), _BATCH)]


# -- the output folder -----------------------------------------------------------------------


def _read_manifest(out: Path) -> list[dict]:
    """Manifest lines; a last line cut by a crash or a full disk is dropped from the file."""
    path = out / MANIFEST
    if not path.exists():
        return []
    data = path.read_bytes()
    lines: list[dict] = []
    good = 0
    for raw in data.splitlines(keepends=True):
        try:
            row = json.loads(raw)
            if not raw.endswith(b"\n"):
                raise ValueError("no newline")
        except ValueError:
            if good + len(raw) < len(data):
                raise UsageError("--resume", f"{path}: line {len(lines) + 1} is corrupt") from None
            break
        lines.append(row)
        good += len(raw)
    if good < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(good)
    return lines


def _prepare_out(out: Path, args, config: dict) -> dict[str, dict]:
    """Check the folder against --resume/--overwrite; the manifest rows already done."""
    if args.resume and args.overwrite:
        raise UsageError("--resume", "give --resume or --overwrite, not both")
    if out.exists() and not out.is_dir():
        raise UsageError("--out", f"{out} is a file, not a folder")
    ours = [n for n in (MANIFEST, CONFIG) if (out / n).exists()]
    if ours and not (args.resume or args.overwrite):
        raise UsageError(
            "--out",
            f"{out} holds another run's files ({', '.join(ours)}); pass --resume to finish "
            "it, --overwrite to replace it, or choose another folder",
        )
    if args.overwrite and ours:
        for row in _read_manifest(out):
            (out / row["file"]).unlink(missing_ok=True)
        for name in ours:
            (out / name).unlink()
    done: dict[str, dict] = {}
    if args.resume and (out / CONFIG).exists():
        old = json.loads((out / CONFIG).read_text())
        for key in sorted(set(old) | set(config)):
            if old.get(key) != config.get(key):
                raise UsageError(
                    "--resume",
                    f"{out} was made with other settings ({key}: {old.get(key)!r}, now "
                    f"{config.get(key)!r}); use another --out or --overwrite",
                )
        done = {row["file"]: row for row in _read_manifest(out) if (out / row["file"]).is_file()}
    for tmp in out.rglob(".*.tmp-*") if out.exists() else []:
        tmp.unlink()  # a crashed run's unfinished files
    return done


def _write(path: Path, data: bytes) -> None:
    from genimg.render import _write_atomic

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, data)
    except OSError as err:
        raise UsageError("--out", f"cannot write {path}: {err.strerror or err}") from None


def _append(path: Path, row: dict) -> None:
    line = json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n"
    try:
        # One write of one line: a crash leaves the line whole or absent, and the reader
        # drops a cut last line (full disk).
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line)
    except OSError as err:
        raise UsageError("--out", f"cannot append to {path}: {err.strerror or err}") from None


# -- the `genimg batch` command --------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "examples:\n  genimg batch --prompts assets/prompts/bathroom.txt --out runs/b1 "
        "--num-images 4 --check\n  genimg batch --prompts prompts.jsonl --out runs/b1 --resume\n\n"
        '.jsonl lines: {"prompt": ..., "negative_prompt", "seed", "num_images", "objects", '
        '"lora", "id", ...};\nGenEval metadata lines ({"tag", "include", "prompt"}) too.'
    )
    add = parser.add_argument
    add("--prompts", required=True, type=Path, help="prompts file: .txt, .jsonl or GenEval")
    add("--out", required=True, type=Path, help="output folder")
    add("--num-images", type=int, default=4, help="images per prompt (default 4)")
    add("--seed", type=int, default=0, help="seed of each prompt's first image (default 0)")
    add("--negative-prompt", default="", help="default negative prompt (none)")
    add("--num-inference-steps", type=int, default=20, help="denoising steps (default 20)")
    add("--guidance-scale", type=float, default=7.5, help="classifier-free guidance (7.5)")
    add("--height", type=int, default=128, help="pixels, a multiple of 8 (default 128)")
    add("--width", type=int, default=128, help="pixels, a multiple of 8 (default 128)")
    add("--scheduler", default="dpm++", help="sampler (default dpm++)")
    add("--model", default=None, help="diffusers folder or hub id (default: the shipped model)")
    add("--lora", action="append", default=[], metavar="NAME[:W]", help="default adapter(s)")
    add("--device", default="cpu", help="torch device (default cpu)")
    add("--check", action="store_true", help="score every image with the checker")
    add("--checker", default=None, help="checker folder (default: the shipped checker)")
    add("--geneval", action="store_true", help="GenEval layout: OUT/NNNNN/samples/NNNNN.png")
    add("--resume", action="store_true", help="finish the run already in --out")
    add("--overwrite", action="store_true", help="replace the run already in --out")


def _config(args, specs: list[PromptSpec]) -> dict:
    """What must match for --resume: everything that changes an image or its record."""
    keys = (
        "num_images",
        "seed",
        "negative_prompt",
        "num_inference_steps",
        "guidance_scale",
        "height",
        "width",
        "scheduler",
        "model",
        "lora",
        "check",
        "checker",
        "geneval",
    )
    config = {k: getattr(args, k) for k in keys}
    config["prompts"] = [asdict(s) for s in specs]
    return config


def run(args: argparse.Namespace) -> int:
    from genimg import __version__, adapters, pipeline, runs
    from genimg.render import _png_bytes, _quiet_libraries, _versions

    # 1. Check every argument and the folder before loading anything
    specs = read_prompts(args.prompts)
    items = _plan(specs, args)
    if args.scheduler not in pipeline.SCHEDULERS:
        choices = ", ".join(pipeline.SCHEDULERS)
        raise UsageError("--scheduler", f"unknown {args.scheduler!r}; choose from {choices}")
    loras = {spec: adapters.resolve(spec) for spec in {x for i in items for x in i.settings.lora}}
    requested = _requested(specs) if args.check else {}
    folder = pipeline.check_model(args.model or pipeline.DEFAULT_MODEL)
    out: Path = args.out
    config = _config(args, specs)
    done = _prepare_out(out, args, config)
    out.mkdir(parents=True, exist_ok=True)
    _write(out / CONFIG, (json.dumps(config, indent=2, ensure_ascii=False) + "\n").encode())
    if args.geneval:
        for spec in specs:
            meta = spec.geneval or {"prompt": spec.prompt}
            _write(
                out / f"{spec.index:05d}" / "metadata.jsonl",
                (json.dumps(meta, ensure_ascii=False) + "\n").encode(),
            )
    # 2. Load the model, adapters and checker once
    _quiet_libraries()
    pipe = pipeline.load_pipeline(folder, device=args.device, scheduler=args.scheduler)
    pipe.set_progress_bar_config(disable=True)
    checker = None
    if args.check:
        from genimg import checker as ck

        checker = ck.load_checker(args.checker or ck.DEFAULT_CHECKER, device=args.device)
    base = {
        "model": pipeline.model_name(folder),
        "model_hash": pipeline.model_hash(pipe),
        "sampler": pipeline.SCHEDULERS[args.scheduler][2],
        "scheduler": args.scheduler,
        "genimg_version": __version__,
    }
    root = out.resolve().parent
    run_id = runs.start_run(
        root,
        "batch",
        out,
        config,
        {
            "model": str(folder),
            "model_hash": base["model_hash"],
            "loras": [lo.record() for lo in loras.values()],
        },
        _versions(),
        sorted({i.seed for i in items}),
        resume=args.resume,
    )
    # 3. Render the chunks that are not done, appending the manifest after each file
    from tqdm import tqdm

    bar = tqdm(
        total=len(items), initial=len(done), desc="batch", unit="img", file=sys.stderr, disable=None
    )
    cache: dict = {}
    active: tuple | None = None
    start = time.perf_counter()
    try:
        for chunk in _chunks(items):
            todo = [item for item in chunk if item.file not in done]
            if not todo:
                continue
            settings = chunk[0].settings
            if settings.lora != active:
                adapters.apply(pipe, [loras[x] for x in settings.lora])
                active, cache = settings.lora, {}
            images = render_batch(pipe, [(i.spec.prompt, i.seed) for i in chunk], settings, cache)
            wanted = [(i, im) for i, im in zip(chunk, images, strict=True) if i.file not in done]
            verdicts = _check(checker, requested, wanted)
            for (item, image), verdict in zip(wanted, verdicts, strict=True):
                record = _record(item, base, [loras[x].record() for x in settings.lora])
                _write(out / item.file, _png_bytes(image, record))
                row = {
                    **record,
                    "index": item.spec.index,
                    "id": item.spec.id,
                    "image": item.image,
                    "file": item.file,
                }
                if verdict is not None:
                    row["check"] = verdict
                _append(out / MANIFEST, row)
                done[item.file] = row
                bar.update(1)
    except BaseException as err:
        bar.close()
        status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        runs.finish_run(root, run_id, status, {"images": len(done)})
        raise
    bar.close()
    # 4. Record the outcome
    metrics = _metrics(list(done.values()), time.perf_counter() - start)
    runs.finish_run(root, run_id, "finished", metrics, [MANIFEST])
    print(json.dumps(metrics))
    return 0


def _record(item: _Item, base: dict, loras: list[dict]) -> dict:
    """The image's own record (PNG text and manifest): no times, so reruns are identical."""
    s = item.settings
    return {
        **base,
        "prompt": item.spec.prompt,
        "negative_prompt": s.negative_prompt,
        "num_inference_steps": s.num_inference_steps,
        "guidance_scale": s.guidance_scale,
        "height": s.height,
        "width": s.width,
        "seed": item.seed,
        "loras": loras,
    }


def _requested(specs: list[PromptSpec]) -> dict:
    from genimg.parse import parse_objects, parse_prompt

    requested = {}
    for spec in specs:
        parsed = parse_objects(spec.objects) if spec.objects else parse_prompt(spec.prompt)
        if parsed.unknown:
            print(
                f"genimg batch: note: line {spec.line}: not scored: {', '.join(parsed.unknown)}",
                file=sys.stderr,
            )
        requested[spec.index] = parsed
    return requested


def _check(checker, requested: dict, wanted: list) -> list:
    """Checker verdicts for (item, image) pairs, one checker call per prompt; None where
    the prompt names nothing the checker knows."""
    if checker is None:
        return [None] * len(wanted)
    from genimg.checker import check

    verdicts: list = [None] * len(wanted)
    by_prompt: dict[int, list[int]] = {}
    for k, (item, _) in enumerate(wanted):
        by_prompt.setdefault(item.spec.index, []).append(k)
    for index, ks in by_prompt.items():
        if requested[index].objects:
            results = check(checker, [wanted[k][1] for k in ks], requested[index])
            for k, result in zip(ks, results, strict=True):
                result.pop("image", None)
                verdicts[k] = result
    return verdicts


def _metrics(rows: list[dict], seconds: float) -> dict:
    checked = [r["check"] for r in rows if r.get("check")]
    metrics: dict = {"images": len(rows), "seconds": round(seconds, 1)}
    if checked:
        metrics["all_present_rate"] = sum(c["all_present"] for c in checked) / len(checked)
        metrics["all_correct_rate"] = sum(c["all_correct"] for c in checked) / len(checked)
    return metrics
