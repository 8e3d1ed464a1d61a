"""What the web app does, as plain functions: `generate`, `check_images`, `compare`, `batch`,
`list_runs` and `open_run`.

Each tab of the app (`genimg.web`) calls one of these and only converts its result; the
tests call them directly. Heavy models are loaded once by the caller (app.py) and passed in.
Their limits are the serving limits below, tighter than the CLI's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from genimg import __version__, adapters, pipeline, runs
from genimg.check import load_image, requested_objects
from genimg.errors import UsageError, check_float, check_int, check_size
from genimg.parse import ParseResult, parse_prompt
from genimg.render import (
    _append_record,
    _png_bytes,
    _versions,
    _write_atomic,
    check_inputs,
    file_name,
)
from genimg.render import render as render_images

__all__ = [
    "batch",
    "check_images",
    "compare",
    "generate",
    "list_runs",
    "open_run",
]

NO_ADAPTER = "none (open model)"
EXAMPLES = [
    "This bathroom has a wooden shelf with two baskets that can store toiletries and "
    "accessories. The sink is made of white ceramic, and the faucet is an elegant "
    "chrome-plated design that harmonizes well with black.",
    "このバスルームには、洗面用品や小物を収納できる2つのバスケットが付いた木製の棚が"
    "あります。シンクは白い陶器製で、蛇口はクロムめっきのエレガントなデザインです。",
]
# Serving limits, tighter than the CLI's: one request must not hold the queue for minutes.
MAX_IMAGES = 16
MAX_TRIES = 10
MAX_SEEDS = 32
MAX_SIDE = 512
MAX_BATCH = 256  # images in one batch run from the app; genimg batch has no such bound


@dataclass
class Shot:
    """One rendered, saved and checked image."""

    path: Path
    seed: int
    check: dict  # one entry of checker.check(): objects, all_present, all_correct


@dataclass
class Generated:
    shots: list[Shot]  # kept images, in seed order
    requested: ParseResult
    rendered: int = 0  # images rendered in all tries
    run_dir: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return self.rendered - len(self.shots)


# -- the work behind the tabs ----------------------------------------------------------------


def generate(
    pipe,
    checker,
    prompt: str,
    negative_prompt: str = "",
    num_inference_steps: int = 20,
    guidance_scale: float = 7.5,
    seed: int = 0,
    num_images: int = 4,
    height: int = 128,
    width: int = 128,
    adapter: str | None = None,
    adapter_weight: float = 1.0,
    keep_passing: bool = False,
    max_tries: int = 3,
    out_dir: Path | str = "outputs",
    lora_dir: Path | str = adapters.LORA_DIR,
    progress=None,
) -> Generated:
    """Render, save (PNG with parameters) and check; with `keep_passing`, render again with
    the next seeds, up to `max_tries` rounds, keeping only images where every requested
    object passes. Image i of the request uses seed + i, rejected ones included."""
    # 1. Check inputs, as the CLI does, plus the serving limits
    params = dict(
        prompt=prompt,
        negative_prompt=negative_prompt or "",
        num_inference_steps=check_int("num_inference_steps", num_inference_steps, 1, 1000),
        guidance_scale=check_float("guidance_scale", guidance_scale, 0.0, 100.0),
        height=check_size("height", height, 64, MAX_SIDE),
        width=check_size("width", width, 64, MAX_SIDE),
    )
    seed = check_int("seed", seed, 0, 2**63 - 65)
    num_images = check_int("num_images", num_images, 1, MAX_IMAGES)
    max_tries = check_int("max_tries", max_tries, 1, MAX_TRIES) if keep_passing else 1
    check_inputs(**params, seed=seed, num_images=num_images)
    loras = _loras(adapter, adapter_weight, lora_dir)
    # 2. What the checker will look for
    requested = parse_prompt(prompt)
    result = Generated([], requested, run_dir=_run_dir(out_dir, "generate"))
    if not requested.objects:
        result.notes.append("No catalog object recognised in the prompt: nothing to check.")
    # 3. Render rounds until enough images pass (or the tries run out)
    adapters.apply(pipe, loras)
    next_seed = seed
    for attempt in range(max_tries):
        missing = num_images - len(result.shots)
        if progress is not None:
            progress(attempt / max_tries, desc=f"try {attempt + 1} of {max_tries}")
        shots = _render_checked(pipe, checker, requested, params, loras, next_seed, missing, result)
        next_seed += missing
        result.rendered += missing
        result.shots += [s for s in shots if s.check["all_correct"] or not keep_passing]
        if len(result.shots) == num_images:
            break
    if keep_passing:
        result.notes.append(
            f"Kept {len(result.shots)} of {result.rendered} rendered images "
            f"({result.rejected} rejected by the checker, {attempt + 1} tries)."
        )
    return result


def check_images(checker, images: list, prompt: str = "", objects: str = "") -> list[dict]:
    """The checker's verdicts for uploaded image files, in order; `objects` ("wooden shelf;
    2 baskets") wins over `prompt`. An unreadable file gets an `error` and the rest are scored."""
    if not images:
        raise UsageError("images", "upload at least one image")
    requested = requested_objects(prompt, objects or None)
    names = [Path(p).name for p in images]
    results: list[dict] = [{}] * len(images)
    loaded, where = [], []
    for i, path in enumerate(images):
        try:
            loaded.append(load_image(path))
            where.append(i)
        except ValueError as err:
            results[i] = {"image": names[i], "error": str(err)}
    if loaded:
        from genimg import checker as ck

        verdicts = ck.check(checker, loaded, requested, names=[names[i] for i in where])
        for i, verdict in zip(where, verdicts, strict=True):
            results[i] = verdict
    return results


def compare(
    pipe,
    checker,
    prompt: str,
    adapter: str,
    adapter_weight: float = 1.0,
    num_seeds: int = 8,
    seed: int = 0,
    num_inference_steps: int = 20,
    guidance_scale: float = 7.5,
    height: int = 128,
    width: int = 128,
    out_dir: Path | str = "outputs",
    lora_dir: Path | str = adapters.LORA_DIR,
    progress=None,
) -> dict:
    """`genimg compare` for one prompt with the app's models: the same seeds through the open
    model and the model with `adapter`, and its report (per requested object, presence rates
    with 95% Wilson intervals and the paired McNemar test) in a run folder recorded in the
    runs registry under `out_dir/runs`."""
    from genimg import compare as cmp

    # 1. Check inputs, as the CLI does, plus the serving limits
    num_seeds = check_int("num_seeds", num_seeds, 1, MAX_SEEDS)
    params = dict(
        prompt=prompt,
        negative_prompt="",
        num_inference_steps=check_int("num_inference_steps", num_inference_steps, 1, 1000),
        guidance_scale=check_float("guidance_scale", guidance_scale, 0.0, 100.0),
        height=check_size("height", height, 64, MAX_SIDE),
        width=check_size("width", width, 64, MAX_SIDE),
    )
    check_inputs(**params, seed=seed, num_images=num_seeds)
    loras = _loras(adapter, adapter_weight, lora_dir)
    if not loras:
        raise UsageError("adapter", f"choose an adapter from {lora_dir} to compare against")
    requested_objects(prompt, None)  # it names a catalog object, or the error says so
    # 2. genimg compare's own verb, into a recorded run folder
    seeds = list(range(seed, seed + num_seeds))
    settings = cmp.RenderSettings(
        "", *(params[k] for k in ("num_inference_steps", "guidance_scale", "height", "width"))
    )
    settings.extra["scheduler"] = _scheduler_name(pipe)[0]
    root = _runs_root(out_dir)
    run_dir = _run_dir(root, "compare")

    def step(model: str, _prompt: int) -> None:
        if progress is not None:
            progress(0.5 if model == "open" else 1.0, desc=f"{model} model done")

    config = {**params, "adapter": f"{adapter}:{float(adapter_weight)}", "seed": seed}
    models = {"open": pipeline.model_name(pipe.name_or_path), "catalog": _public(loras[0])}
    run_id = runs.start_run(root, "compare", run_dir, config, models, _versions(), seeds)
    try:
        report = cmp.compare(pipe, loras[0], checker, [prompt], seeds, run_dir, settings, step)
    except BaseException as err:
        status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        runs.finish_run(root, run_id, status)
        raise
    runs.finish_run(root, run_id, "finished", cmp.run_metrics(report), ["report.html"])
    # 3. The images with their verdicts, for the tab
    results = [json.loads(x) for x in (run_dir / "results.jsonl").read_text().splitlines()]
    shots = {
        side: [Shot(run_dir / r["file"], r["seed"], r) for r in results if r["model"] == side]
        for side in ("open", "catalog")
    }
    return {
        "prompt": prompt,
        "adapter": _public(loras[0]),
        "seeds": seeds,
        "objects": report["objects"],
        "all_present": report["all_present"],
        "all_correct": report["all_correct"],
        "attributes": report["attributes"],
        "shots": shots,
        "run_dir": str(run_dir),
        "run_id": run_id,
    }


def batch(
    pipe,
    checker,
    prompts_file: Path | str | None,
    num_images: int = 2,
    seed: int = 0,
    num_inference_steps: int = 20,
    guidance_scale: float = 7.5,
    height: int = 128,
    width: int = 128,
    adapter: str | None = None,
    adapter_weight: float = 1.0,
    check: bool = True,
    until_correct: int = 1,
    out_dir: Path | str = "outputs",
    lora_dir: Path | str = adapters.LORA_DIR,
    progress=None,
) -> dict:
    """`genimg batch` on an uploaded prompts file with the app's models, as a run recorded
    under `out_dir/runs`; `until_correct` > 1 is `--until-correct`. Returns the run's
    metrics, folder, manifest rows, report and a zip of images, manifest and report."""
    from genimg import batch as bt

    # 1. Check inputs, as the CLI does, plus the serving limits
    if not prompts_file:
        raise UsageError("prompts", "upload a prompts file (.txt, one prompt a line, or .jsonl)")
    num_images = check_int("num_images", num_images, 1, MAX_IMAGES)
    until_correct = check_int("until_correct", until_correct, 1, MAX_TRIES)
    _check_batch_file(prompts_file, num_images, num_inference_steps, height, width)
    loras = _loras(adapter, adapter_weight, lora_dir)
    # 2. genimg batch itself, into a new run folder
    run_dir = _run_dir(_runs_root(out_dir), "batch")
    args = bt.options(
        prompts_file,
        run_dir,
        num_images=num_images,
        seed=check_int("seed", seed, 0, 2**62),
        num_inference_steps=check_int("num_inference_steps", num_inference_steps, 1, 100),
        guidance_scale=check_float("guidance_scale", guidance_scale, 0.0, 100.0),
        height=check_size("height", height, 64, MAX_SIDE),
        width=check_size("width", width, 64, MAX_SIDE),
        model=str(pipe.name_or_path),
        scheduler=_scheduler_name(pipe)[0],
        lora=[f"{lo.path}:{lo.weight}" for lo in loras],
        check=bool(check) or until_correct > 1,
        until_correct=until_correct if until_correct > 1 else None,
    )

    def step(done: int, todo: int) -> None:
        if progress is not None:
            progress(done / todo, desc=f"{done} of {todo} images")

    metrics = bt.render_prompts(pipe, args, checker if args.check else None, step)
    # 3. One zip of what the run wrote
    archive = run_dir / f"{run_dir.name}.zip"
    files = sorted(p for p in run_dir.rglob("*") if p.is_file())
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in files:
            zf.write(path, path.relative_to(run_dir).as_posix())
    rows = [json.loads(x) for x in (run_dir / bt.MANIFEST).read_text().splitlines()]
    return {
        "run_dir": run_dir,
        "zip": archive,
        "metrics": metrics,
        "rows": rows,
        "report": (run_dir / "report.md").read_text(),
    }


def _check_batch_file(path, num_images: int, steps, height, width) -> None:
    """The serving limits on every line of a prompts file (read_prompts checks the rest)."""
    from genimg.prompts import read_prompts

    total = 0
    for spec in read_prompts(path):
        o = {"num_images": num_images, "num_inference_steps": steps} | spec.overrides
        o = {"height": height, "width": width} | o
        where = f"{Path(path).name}:{spec.line}: "
        try:
            if "lora" in spec.overrides:
                raise UsageError("lora", "choose the adapter in the app, not in the file")
            total += check_int("num_images", o["num_images"], 1, MAX_IMAGES)
            check_int("num_inference_steps", o["num_inference_steps"], 1, 100)
            check_size("height", o["height"], 64, MAX_SIDE)
            check_size("width", o["width"], 64, MAX_SIDE)
        except UsageError as err:
            raise UsageError("prompts", where + str(err)) from None
    if total > MAX_BATCH:
        raise UsageError(
            "prompts", f"{total} images; the app renders at most {MAX_BATCH} a run (the CLI: any)"
        )


def list_runs(out_dir: Path | str = "outputs") -> list[dict]:
    """The app's recorded runs (batch and compare), newest first."""
    return runs.list_runs(_runs_root(out_dir))[::-1]


def open_run(out_dir: Path | str, run_id: int) -> dict:
    """A recorded run with its report text, pictures and download; only files inside
    `out_dir`, which is all the app serves."""
    out = Path(out_dir).resolve()
    run = runs.get_run(_runs_root(out), check_int("run", run_id, 1, 2**62))
    folder = Path(run["out"]).resolve()
    found: dict = {"run": run, "report": "", "images": [], "download": None}
    if not folder.is_relative_to(out) or not folder.is_dir():
        found["report"] = f"The run's folder {run['out']} is not in the app's output folder."
        return found
    if (folder / "report.md").is_file():
        # Pictures go to a gallery: a report's relative image links do not resolve here.
        lines = (folder / "report.md").read_text().splitlines()
        found["report"] = "\n".join(x for x in lines if not x.startswith("!["))
    if run["kind"] == "compare":
        found["images"] = sorted(folder.glob("grid-*.png")) + sorted(folder.glob("chart.png"))
        found["download"] = folder / "report.html"
    else:
        manifest = folder / "manifest.jsonl"
        rows = (
            [json.loads(x) for x in manifest.read_text().splitlines()] if manifest.is_file() else []
        )
        found["images"] = [folder / r["file"] for r in rows[:MAX_IMAGES]]
        found["download"] = folder / f"{folder.name}.zip"
    found["images"] = [
        p for p in found["images"] if p.is_file() and p.resolve().is_relative_to(out)
    ]
    if found["download"] is not None and not found["download"].is_file():
        found["download"] = None
    return found


def _public(lora) -> dict:
    """An adapter's name, weight and hash; not the server's file path."""
    return {k: v for k, v in lora.record().items() if k != "path"}


def _runs_root(out_dir) -> Path:
    """Where the app's batch and compare runs go, with their registry (genimg runs --root)."""
    return Path(out_dir).resolve() / "runs"


def _rate(hits: list[bool]) -> dict:
    from scipy.stats import binomtest

    k, n = sum(hits), len(hits)
    ci = binomtest(k, n).proportion_ci(0.95, method="wilson")
    return {"k": k, "n": n, "rate": k / n, "ci95": [round(ci.low, 4), round(ci.high, 4)]}


def _loras(adapter: str | None, weight: float, lora_dir) -> list:
    if not adapter or adapter == NO_ADAPTER:
        return []
    # Only names in the app's lora/ folder, resolved there (never against the server's working
    # folder) and kept inside it: a web user must not load arbitrary files.
    root = Path(lora_dir).resolve()
    if not isinstance(adapter, str) or adapter not in adapters.list_adapters(root):
        raise UsageError("adapter", f"{adapter!r}: expected a name from {lora_dir}")
    lora = adapters.resolve(
        f"{root / adapter}:{check_float('adapter_weight', weight, -2, 2)}", root
    )
    if not lora.path.resolve().is_relative_to(root):
        raise UsageError("adapter", f"{adapter!r} links outside {lora_dir}; refused")
    return [lora]


def _run_dir(out_dir, kind: str) -> Path:
    """A new folder: `out_dir/KIND/STAMP`; in the runs root, `runs/KIND-STAMP`."""
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    root = Path(out_dir).resolve()
    return root / f"{kind}-{stamp}" if root.name == "runs" else root / kind / stamp


@contextlib.contextmanager
def _warnings_as_notes(notes: list[str]):
    """The library's warnings while rendering, added (once each) to what the user reads."""

    class _Notes(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() not in notes:
                notes.append(record.getMessage())

    handler, logger = _Notes(logging.WARNING), logging.getLogger("genimg")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _render_checked(pipe, checker, requested, params, loras, seed, n, run, sub="") -> list[Shot]:
    """Render n images from `seed`, write them as PNGs with their parameters, check them."""
    with _warnings_as_notes(getattr(run, "notes", [])):  # e.g. a prompt cut at the window
        images = render_images(pipe, **params, seed=seed, num_images=n)
    from genimg import checker as ck

    checks = ck.check(checker, images, requested) if requested.objects else None
    folder = run.run_dir / sub if sub else run.run_dir
    folder.mkdir(parents=True, exist_ok=True)
    scheduler, sampler = _scheduler_name(pipe)
    base = {
        **params,
        "scheduler": scheduler,
        "sampler": sampler,
        "model": pipeline.model_name(pipe.name_or_path),
        "model_hash": pipeline.model_hash(pipe),
        "loras": [lora.record() for lora in loras],
        "genimg_version": __version__,
    }
    shots = []
    for i, image in enumerate(images):
        verdict = checks[i] if checks else {"objects": [], "all_present": True, "all_correct": True}
        record = {**base, "seed": seed + i, "check": verdict["objects"]}
        path = folder / file_name(seed + i, params["prompt"])
        _write_atomic(path, _png_bytes(image, record))
        shots.append(Shot(path, seed + i, verdict))
    _append_record(
        folder, {**base, "seed": seed, "num_images": n, "files": [s.path.name for s in shots]}
    )
    return shots


def _scheduler_name(pipe) -> tuple[str, str]:
    """(our name, AUTOMATIC1111's sampler name) of the pipeline's scheduler."""
    cls, config = type(pipe.scheduler).__name__, pipe.scheduler.config
    by_detail = sorted(pipeline.SCHEDULERS.items(), key=lambda kv: -len(kv[1][1]))
    for name, (class_name, overrides, sampler) in by_detail:
        if class_name == cls and all(config.get(k) == v for k, v in overrides.items()):
            return name, sampler
    return cls, cls
