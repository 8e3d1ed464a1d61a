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

`--until-correct K` renders an image the checker rejects again from the prompt's next seeds
(seed + n, seed + 2n, ... for n images per prompt: seeds no other image of the prompt uses)
and keeps the last try; the manifest lists every try, and the metrics give the first-try
rate (the model's own) beside the acceptance rate (after selection). `genimg compare` never
selects: its numbers are about the models.

Under `accelerate launch` the fixed chunks are split between the processes (accelerate's
distributed-inference pattern, `PartialState.split_between_processes`); each appends its
own `manifest.part-NNN.jsonl`, and the main process merges them into `manifest.jsonl` in the
order one process would have written it, each image once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from genimg import manifest
from genimg.errors import UsageError, check_float, check_int
from genimg.manifest import CONFIG, MANIFEST, PARTS, REPORTS
from genimg.pipeline import unet_param
from genimg.prompts import OVERRIDES, PromptSpec, read_prompts
from genimg.render import _BATCH, check_inputs, file_name
from genimg.traced import fixed_adapters

__all__ = ["Settings", "acceptance_text", "options", "render_batch", "render_prompts"]

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
    param = unet_param(pipe)
    with fixed_adapters(pipe.unet):
        for ks in by_length.values():
            for start in range(0, len(ks), _BATCH):
                part = ks[start : start + _BATCH]
                embeds = [cache[requests[k][0], s.negative_prompt] for k in part]
                out = pipe(
                    prompt_embeds=torch.cat([c for c, _ in embeds]),
                    negative_prompt_embeds=(
                        torch.cat([u for _, u in embeds]) if s.guidance_scale > 1 else None
                    ),
                    latents=torch.cat([noise[k] for k in part]).to(param.device, param.dtype),
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
    stride: int = 1  # the prompt's num_images: --until-correct tries seed, seed + stride, ...


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
            items.append(_Item(spec, i, seed, settings, name, o["num_images"]))
    return items


def _chunks(items: list[_Item]) -> list[list[_Item]]:
    """Fixed chunks of images with equal settings: the same whatever is already done."""
    groups: dict[Settings, list[_Item]] = {}
    for item in items:
        groups.setdefault(item.settings, []).append(item)
    ordered = sorted(groups.items(), key=lambda kv: kv[0].lora)  # fewest adapter switches
    return [g[i : i + _BATCH] for _, g in ordered for i in range(0, len(g), _BATCH)]


# -- the `genimg batch` command --------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "examples:\n  genimg batch --prompts assets/prompts/bathroom.txt --out runs/b1 "
        "--num-images 4 --check\n  genimg batch --prompts prompts.jsonl --out runs/b1 --resume\n"
        "  genimg batch --prompts prompts.txt --out runs/b2 --until-correct 4\n"
        "  accelerate launch --multi_gpu --num_processes 2 -m genimg batch --prompts "
        "prompts.txt --out runs/b3\n\n"
        '.jsonl lines: {"prompt": ..., "negative_prompt", "seed", "num_images", "objects", '
        '"lora", "id", ...};\nGenEval metadata lines ({"tag", "include", "prompt"}) too.\n'
        "Under accelerate launch each process renders its share of the work and the main\n"
        "process merges the manifests (on CPU, --multi_gpu is what starts K processes)."
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
    add(
        "--until-correct",
        type=int,
        default=None,
        metavar="K",
        help="try up to K seeds per image (seed, seed + num_images, ...) until the checker "
        "passes every requested object; implies --check",
    )
    add("--geneval", action="store_true", help="GenEval layout: OUT/NNNNN/samples/NNNNN.png")
    add("--resume", action="store_true", help="finish the run already in --out")
    add("--overwrite", action="store_true", help="replace the run already in --out")


def options(prompts: Path | str, out: Path | str, **overrides) -> argparse.Namespace:
    """`genimg batch`'s arguments with their CLI defaults, for callers holding loaded models
    (the app): `render_prompts(pipe, options("p.txt", "out", num_images=2), checker)`."""
    parser = argparse.ArgumentParser()
    configure(parser)
    args = parser.parse_args(["--prompts", str(prompts), "--out", str(out)])
    for key, value in overrides.items():
        if not hasattr(args, key):
            raise TypeError(f"unknown batch option {key!r}")
        setattr(args, key, value)
    return args


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
        "until_correct",
        "geneval",
    )
    config = {k: getattr(args, k) for k in keys}
    config["prompts"] = [asdict(s) for s in specs]
    return config


@dataclass
class _Job:
    """A checked run: what to render, and with what."""

    args: argparse.Namespace
    specs: list[PromptSpec]
    items: list[_Item]
    loras: dict  # spec NAME[:W] -> adapters.Lora
    requested: dict  # prompt index -> ParseResult; empty without checking
    folder: Path  # the model folder
    config: dict

    @property
    def checks(self) -> bool:
        return bool(self.args.check or self.args.until_correct)


def _prepare(args) -> _Job:
    """Check every argument before anything is loaded or written."""
    from genimg import adapters, pipeline

    specs = read_prompts(args.prompts)
    items = _plan(specs, args)
    if args.scheduler not in pipeline.SCHEDULERS:
        choices = ", ".join(pipeline.SCHEDULERS)
        raise UsageError("--scheduler", f"unknown {args.scheduler!r}; choose from {choices}")
    if args.until_correct is not None:
        args.until_correct = check_int("--until-correct", args.until_correct, 1, 100)
    loras = {spec: adapters.resolve(spec) for spec in {x for i in items for x in i.settings.lora}}
    requested = _requested(specs) if (args.check or args.until_correct) else {}
    folder = pipeline.check_model(args.model or pipeline.DEFAULT_MODEL)
    return _Job(args, specs, items, loras, requested, folder, _config(args, specs))


def _distributed(args):
    """accelerate's PartialState when `accelerate launch` started several processes."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    return PartialState(cpu=args.device == "cpu")  # gloo between CPU processes


def _open_out(job: _Job, state) -> dict[str, dict]:
    """The main process checks and prepares the folder; the others wait, then read it."""
    out, args = job.args.out, job.args
    done: dict[str, dict] = {}
    if state is None or state.is_main_process:
        done = manifest.prepare(out, args.resume, args.overwrite, job.config)
        out.mkdir(parents=True, exist_ok=True)
        config = json.dumps(job.config, indent=2, ensure_ascii=False) + "\n"
        manifest.write(out / CONFIG, config.encode())
        if args.geneval:
            for spec in job.specs:
                meta = spec.geneval or {"prompt": spec.prompt}
                manifest.write(
                    out / f"{spec.index:05d}" / "metadata.jsonl",
                    (json.dumps(meta, ensure_ascii=False) + "\n").encode(),
                )
    if state is not None:
        state.wait_for_everyone()
        if not state.is_main_process:
            done = manifest.done(out)
    return done


def run(args: argparse.Namespace) -> int:
    from genimg import checker as ck
    from genimg import pipeline
    from genimg.render import _quiet_libraries

    # 1. Check every argument and the folder before loading anything
    job = _prepare(args)
    state = _distributed(args)
    done = _open_out(job, state)
    # 2. Load the model and checker once (per process)
    device = str(state.device) if state is not None and args.device != "cpu" else args.device
    _quiet_libraries()
    pipe = pipeline.load_pipeline(job.folder, device=device, scheduler=args.scheduler)
    pipe.set_progress_bar_config(disable=True)
    checker = None
    if job.checks:
        checker = ck.load_checker(args.checker or ck.DEFAULT_CHECKER, device=device)
    # 3. Render, record, report
    metrics = _execute(job, pipe, checker, done, state)
    if metrics is not None:  # the main process
        print(json.dumps(metrics))
        if "acceptance_rate" in metrics:
            print(acceptance_text(metrics), file=sys.stderr)
    return 0


def render_prompts(pipe, args: argparse.Namespace, checker=None, progress=None) -> dict:
    """Run `genimg batch` with a loaded pipeline (and checker, for --check/--until-correct):
    the app's Batch tab. `progress(done, total)` is called after each image. Returns the
    run's metrics; the folder holds what the command writes, the run is in the registry."""
    job = _prepare(args)
    if job.checks and checker is None:
        raise UsageError("--check", "checking needs a loaded checker")
    return _execute(job, pipe, checker, _open_out(job, None), None, progress)


def _execute(job: _Job, pipe, checker, done: dict, state, progress=None) -> dict | None:
    """Render this process's chunks, then (main process) merge, report and record."""
    from genimg import __version__, adapters, pipeline, runs
    from genimg.render import _png_bytes, _versions

    args, out = job.args, job.args.out
    main = state is None or state.is_main_process
    base = {
        "model": pipeline.model_name(job.folder),
        "model_hash": pipeline.model_hash(pipe),
        "sampler": pipeline.SCHEDULERS[args.scheduler][2],
        "scheduler": args.scheduler,
        "genimg_version": __version__,
    }
    root = out.resolve().parent
    run_id = 0
    if main:
        run_id = runs.start_run(
            root,
            "batch",
            out,
            job.config,
            {
                "model": str(job.folder),
                "model_hash": base["model_hash"],
                "loras": [lo.record() for lo in job.loras.values()],
            },
            _versions(),
            sorted({i.seed for i in job.items}),
            resume=args.resume,
        )
    # 1. This process's share of the fixed chunks (all of them without accelerate)
    chunks = _chunks(job.items)
    mine = chunks
    log = out / MANIFEST  # this process's manifest
    if state is not None:
        with state.split_between_processes(chunks) as share:
            mine = list(share)
        log = out / PARTS.replace("*", f"{state.process_index:03d}")
    from tqdm import tqdm

    total = sum(len(c) for c in mine)
    finished = sum(i.file in done for c in mine for i in c)
    bar = tqdm(
        total=total, initial=finished, desc="batch", unit="img", file=sys.stderr, disable=None
    )
    active: tuple | None = None
    cache: dict = {}
    start = time.perf_counter()
    # 2. Render the chunks that are not done, appending the manifest after each file
    try:
        for chunk in mine:
            if all(item.file in done for item in chunk):
                continue
            settings = chunk[0].settings
            if settings.lora != active:
                adapters.apply(pipe, [job.loras[x] for x in settings.lora])
                active, cache = settings.lora, {}
            images, verdicts, tries = _render_chunk(pipe, checker, job, chunk, cache)
            loras = [job.loras[x].record() for x in settings.lora]
            for k, item in enumerate(chunk):
                if item.file in done:
                    continue
                record = _record(item, base, loras, tries[k][-1]["seed"])
                manifest.write(out / item.file, _png_bytes(images[k], record))
                row = {**record, "index": item.spec.index, "id": item.spec.id}
                row.update(image=item.image, file=item.file)
                if verdicts[k] is not None:
                    row["check"] = verdicts[k]
                if args.until_correct:
                    row["attempts"] = tries[k]
                    row["accepted"] = verdicts[k]["all_correct"] if verdicts[k] else None
                manifest.append(log, row)
                done[item.file] = row
                bar.update(1)
                finished += 1
                if progress is not None:
                    progress(finished, total)
    except BaseException as err:
        bar.close()
        if main:
            status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
            runs.finish_run(root, run_id, status, {"images": len(done)})
        raise
    bar.close()
    if state is not None:
        state.wait_for_everyone()
    if not main:
        return None
    # 3. One manifest, the report, the registry
    rows = manifest.merge(out, [item.file for chunk in chunks for item in chunk])
    metrics = _metrics(rows, time.perf_counter() - start, args.until_correct)
    _write_report(out, job, rows, metrics)
    runs.finish_run(root, run_id, "finished", metrics, [MANIFEST, *REPORTS])
    return metrics


def _render_chunk(pipe, checker, job: _Job, chunk: list[_Item], cache: dict):
    """Images, verdicts and tries for a chunk. With --until-correct K, the images the checker
    rejects are rendered again from seed + t * num_images (t = 1 .. K-1) until they pass;
    the last try is kept either way. The whole chunk always goes through its tries, so a
    resumed chunk repeats an uninterrupted run's tries exactly."""
    settings = chunk[0].settings
    images = render_batch(pipe, [(i.spec.prompt, i.seed) for i in chunk], settings, cache)
    verdicts = _check(checker, job.requested, list(zip(chunk, images, strict=True)))
    tries = [[_try(i.seed, v)] for i, v in zip(chunk, verdicts, strict=True)]
    for t in range(1, job.args.until_correct or 1):
        redo = [k for k, v in enumerate(verdicts) if v is not None and not v["all_correct"]]
        if not redo:
            break
        seeds = [chunk[k].seed + t * chunk[k].stride for k in redo]
        requests = [(chunk[k].spec.prompt, s) for k, s in zip(redo, seeds, strict=True)]
        again = render_batch(pipe, requests, settings, cache)
        checked = _check(
            checker, job.requested, [(chunk[k], im) for k, im in zip(redo, again, strict=True)]
        )
        for k, seed, image, verdict in zip(redo, seeds, again, checked, strict=True):
            images[k], verdicts[k] = image, verdict
            tries[k].append(_try(seed, verdict))
    return images, verdicts, tries


def _try(seed: int, verdict: dict | None) -> dict:
    if verdict is None:
        return {"seed": seed}
    return {
        "seed": seed,
        "all_present": verdict["all_present"],
        "all_correct": verdict["all_correct"],
    }


def _record(item: _Item, base: dict, loras: list[dict], seed: int) -> dict:
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
        "seed": seed,
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


# -- metrics and the report ------------------------------------------------------------------


def _metrics(rows: list[dict], seconds: float, until_correct: int | None = None) -> dict:
    """Rates over the kept images; with --until-correct also what selection cost and hid:
    `first_try_rate` (the images whose first seed passed) is the model's own rate,
    `acceptance_rate` the rate after up to K tries."""
    checked = [r["check"] for r in rows if r.get("check")]
    metrics: dict = {"images": len(rows), "seconds": round(seconds, 1)}
    if checked:
        metrics["all_present_rate"] = sum(c["all_present"] for c in checked) / len(checked)
        metrics["all_correct_rate"] = sum(c["all_correct"] for c in checked) / len(checked)
    tried = [r for r in rows if r.get("accepted") is not None]
    if until_correct and tried:
        accepted = sum(r["accepted"] for r in tried)
        metrics.update(
            until_correct=until_correct,
            renders=sum(len(r["attempts"]) for r in tried),
            accepted=accepted,
            acceptance_rate=accepted / len(tried),
            first_try_rate=sum(r["attempts"][0]["all_correct"] for r in tried) / len(tried),
        )
    return metrics


def acceptance_text(m: dict) -> str:
    n = round(m["accepted"] / m["acceptance_rate"]) if m["acceptance_rate"] else m["images"]
    return (
        f"until-correct {m['until_correct']}: {m['accepted']} of {n} images accepted "
        f"({m['acceptance_rate']:.0%}) after {m['renders']} renders; "
        f"{m['first_try_rate']:.0%} passed on their first seed (the model's own rate)"
    )


def _write_report(out: Path, job: _Job, rows: list[dict], metrics: dict) -> None:
    """report.json and report.md: the run's metrics, and per prompt its pass rates."""
    per: list[dict] = []
    for spec in job.specs:
        mine = [r for r in rows if r["index"] == spec.index]
        checked = [r["check"] for r in mine if r.get("check")]
        entry: dict = {"index": spec.index, "prompt": spec.prompt, "images": len(mine)}
        if checked:
            entry["all_present"] = sum(c["all_present"] for c in checked)
            entry["all_correct"] = sum(c["all_correct"] for c in checked)
        if metrics.get("until_correct"):
            entry["first_try"] = sum(r["attempts"][0].get("all_correct", False) for r in mine)
            entry["renders"] = sum(len(r["attempts"]) for r in mine)
        per.append(entry)
    report = {"metrics": metrics, "prompts": per}
    manifest.write(
        out / "report.json", (json.dumps(report, indent=2, ensure_ascii=False) + "\n").encode()
    )
    lines = [f"# Batch report: {out.name}", "", "| metric | value |", "|---|---|"]
    for key, value in metrics.items():
        lines.append(
            f"| {key} | {value:.3f} |" if isinstance(value, float) else f"| {key} | {value} |"
        )
    if "acceptance_rate" in metrics:
        lines += ["", acceptance_text(metrics) + "."]
    keys = [k for k in ("all_present", "all_correct", "first_try", "renders") if k in per[0]]
    lines += ["", "| # | prompt | images | " + " | ".join(k.replace("_", " ") for k in keys) + " |"]
    lines.append("|---" * (3 + len(keys)) + "|")
    for e in per:
        text = e["prompt"] if len(e["prompt"]) <= 80 else e["prompt"][:77] + "..."
        text = text.replace("|", "\\|").replace("\n", " ")
        cells = [str(e[k]) for k in keys]
        lines.append(f"| {e['index']} | {text} | {e['images']} | " + " | ".join(cells) + " |")
    manifest.write(out / "report.md", ("\n".join(lines) + "\n").encode())
