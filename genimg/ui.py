"""The Gradio web app: `create_demo(pipe, checker) -> gr.Blocks` and `launch(demo, out_dir)`.

Tabs follow the data flow: Generate (render, then check every image), Check (score uploaded
images), Compare (open model vs an adapter over the same seeds), Batch and Runs. The work
behind each tab is a plain function (`generate`, `check_images`, `compare`) that the tests
call directly; the Gradio handlers only convert their results. Heavy models are loaded once
by the caller (app.py) and shared: every model event runs in one queue slot, because
adapters are switched on the one pipeline in place.
"""

from __future__ import annotations

import contextlib
import html
import logging
import os
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import gradio as gr

from genimg import __version__, adapters, pipeline
from genimg import checker as ck
from genimg.check import load_image, requested_objects
from genimg.errors import UsageError, check_float, check_int, check_size
from genimg.parse import ParseResult, parse_prompt
from genimg.render import _append_record, _png_bytes, _write_atomic, check_inputs, file_name
from genimg.render import render as render_images

__all__ = ["check_images", "compare", "create_demo", "generate", "launch"]

NO_ADAPTER = "none (open model)"
EXAMPLES = [
    "This bathroom has a wooden shelf with two baskets that can store toiletries and "
    "accessories. The sink is made of white ceramic, and the faucet is an elegant "
    "chrome-plated design that harmonizes well with black.",
    "このバスルームには、洗面用品や小物を収納できる2つのバスケットが付いた木製の棚が"
    "あります。シンクは白い陶器製で、蛇口はクロムめっきのエレガントなデザインです。",
]
# Serving limits, tighter than the CLI's: one request must not hold the queue for minutes.
_MAX_IMAGES = 16
_MAX_TRIES = 10
_MAX_SEEDS = 32
_MAX_SIDE = 512


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
        height=check_size("height", height, 64, _MAX_SIDE),
        width=check_size("width", width, 64, _MAX_SIDE),
    )
    seed = check_int("seed", seed, 0, 2**63 - 65)
    num_images = check_int("num_images", num_images, 1, _MAX_IMAGES)
    max_tries = check_int("max_tries", max_tries, 1, _MAX_TRIES) if keep_passing else 1
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
    """The same prompt and seeds through the open model and the model with `adapter`; per
    requested object, presence rates with 95% Wilson intervals."""
    num_seeds = check_int("num_seeds", num_seeds, 1, _MAX_SEEDS)
    params = dict(
        prompt=prompt,
        negative_prompt="",
        num_inference_steps=check_int("num_inference_steps", num_inference_steps, 1, 1000),
        guidance_scale=check_float("guidance_scale", guidance_scale, 0.0, 100.0),
        height=check_size("height", height, 64, _MAX_SIDE),
        width=check_size("width", width, 64, _MAX_SIDE),
    )
    check_inputs(**params, seed=seed, num_images=num_seeds)
    loras = _loras(adapter, adapter_weight, lora_dir)
    if not loras:
        raise UsageError("adapter", f"choose an adapter from {lora_dir} to compare against")
    requested = requested_objects(prompt, None)
    run = Generated([], requested, run_dir=_run_dir(out_dir, "compare"))
    sides = {}
    for i, (side, side_loras) in enumerate((("open", []), ("catalog", loras))):
        if progress is not None:
            progress(i / 2, desc=f"{side} model")
        adapters.apply(pipe, side_loras)
        sides[side] = _render_checked(
            pipe, checker, requested, params, side_loras, seed, num_seeds, run, side
        )
    rows = []
    for j, req in enumerate(requested.objects):
        hits = {s: [shot.check["objects"][j]["present"] for shot in sides[s]] for s in sides}
        rows.append({"phrase": req.phrase, **{s: _rate(hits[s]) for s in sides}})
    all_present = {s: _rate([shot.check["all_present"] for shot in sides[s]]) for s in sides}
    return {
        "prompt": prompt,
        # Name, weight and hash; not the server's file path.
        "adapter": {k: v for k, v in loras[0].record().items() if k != "path"},
        "seeds": list(range(seed, seed + num_seeds)),
        "objects": rows,
        "all_present": all_present,
        "shots": sides,
        "run_dir": str(run.run_dir),
    }


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
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(out_dir).resolve() / kind / f"{stamp}-{uuid.uuid4().hex[:6]}"


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


# -- presentation ------------------------------------------------------------------------------


def _mark(ok) -> str:
    return "–" if ok is None else ("✓" if ok else "✗")


def _object_row(o: dict) -> str:
    # An absent object's attributes are not judged: "✗" there would mislead (as in check.py).
    attrs = [o[k] if o["present"] else None for k in ("material_ok", "color_ok", "count_ok")]
    cells = "".join(f"<td>{_mark(a)}</td>" for a in attrs)
    cls = "gi-ok" if o["present"] else "gi-no"
    return (
        f'<tr class="{cls}"><td>{_mark(o["present"])}</td><td>{html.escape(o["phrase"])}</td>'
        f"<td>{o['score']:.2f}</td>{cells}</tr>"
    )


def _checklist_html(shots: list[Shot], title: str = "") -> str:
    """A card per image: its requested objects with ✓/✗, score, material, colour, count."""
    if not shots or not shots[0].check["objects"]:
        return ""
    head = "<tr><th></th><th>object</th><th>score</th><th>material</th><th>colour</th>"
    head += "<th>count</th></tr>"
    cards = []
    for n, shot in enumerate(shots, 1):
        verdict = "all correct" if shot.check["all_correct"] else "missing or wrong"
        rows = "".join(_object_row(o) for o in shot.check["objects"])
        cards.append(
            f'<div class="gi-card"><div class="gi-head">#{n} · seed {shot.seed} · '
            f"{verdict}</div><table>{head}{rows}</table></div>"
        )
    caption = f"<h4>{html.escape(title)}</h4>" if title else ""
    return f'{caption}<div class="gi-cards">{"".join(cards)}</div>'


def _caption(shot: Shot) -> str:
    objs = shot.check["objects"]
    if not objs:
        return f"seed {shot.seed}"
    return f"seed {shot.seed} · {sum(o['present'] for o in objs)}/{len(objs)} present"


def _notes_md(requested: ParseResult, notes: list[str] = ()) -> str:
    lines = [f"Did you mean: **{html.escape(s['suggestion'])}**?" for s in requested.suggestions]
    if requested.unknown:
        words = ", ".join(html.escape(u) for u in requested.unknown)
        lines.append(f"Not in the checker's vocabulary, not scored: {words}")
    return "\n\n".join([*lines, *notes])


def _shot_json(shot: Shot) -> dict:
    return {"file": str(shot.path), "seed": shot.seed, **shot.check}


def _rate_text(r: dict) -> str:
    lo, hi = r["ci95"]
    return f"{r['k']}/{r['n']} = {r['rate']:.0%} [{lo:.0%}, {hi:.0%}]"


def _usage(fn):
    """Run fn; a UsageError becomes the one-line message Gradio shows (and the API raises)."""
    try:
        return fn()
    except UsageError as err:
        raise gr.Error(str(err)) from None


# -- the app ----------------------------------------------------------------------------------

CSS = """
.gi-cards {display: flex; flex-wrap: wrap; gap: 8px}
.gi-card {border: 1px solid var(--border-color-primary); border-radius: 6px; padding: 6px;
  font-size: 13px}
.gi-head {font-weight: 600; margin-bottom: 4px}
.gi-card table {border-collapse: collapse} .gi-card td, .gi-card th {padding: 1px 6px}
.gi-ok td:first-child {color: #15803d; font-weight: 700}
.gi-no td:first-child {color: #b91c1c; font-weight: 700}
"""


def create_demo(pipe, checker, lora_dir="lora", out_dir="outputs", max_queue: int = 16):
    """The Blocks app. Gradio writes what it serves (renders, uploads) under `out_dir`."""
    out = Path(out_dir).resolve()
    # Gradio keeps served files in GRADIO_TEMP_DIR, read when components and the server are
    # built: point it into out_dir so that launch()'s allowed_paths=[out_dir] is all it serves.
    os.environ["GRADIO_TEMP_DIR"] = str(out / "gradio")
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(out / "gradio" / "examples")
    names = adapters.list_adapters(lora_dir)
    model = dict(concurrency_id="model", concurrency_limit=1)

    with gr.Blocks(title="genimg", analytics_enabled=False) as demo:
        gr.Markdown(
            "## genimg · catalog-conditioned text-to-image\n"
            f"Model `{pipeline.model_name(pipe.name_or_path)}`; every image is checked for "
            "the objects the prompt asks for."
        )
        with gr.Tab("Generate"):
            _generate_tab(pipe, checker, names, lora_dir, out, model)
        with gr.Tab("Compare"):
            _compare_tab(pipe, checker, names, lora_dir, out, model)
        with gr.Tab("Check"):
            _check_tab(checker, model)
        with gr.Tab("Batch"):
            gr.Markdown(_pending("genimg.batch", "Batch rendering", "genimg batch"))
        with gr.Tab("Runs"):
            gr.Markdown(_pending("genimg.runs", "The runs registry", "genimg runs"))
    demo.queue(max_size=max_queue, default_concurrency_limit=1)
    return demo


def _pending(module: str, what: str, command: str) -> str:
    return f"{what} is not in this build's web app yet; use `{command}` ({module})."


def _generate_tab(pipe, checker, names, lora_dir, out, model) -> None:
    with gr.Row():
        with gr.Column(scale=2):
            prompt_box = gr.Textbox(
                label="Prompt (English or 日本語)",
                lines=3,
                placeholder=EXAMPLES[0],
                elem_id="prompt",
            )
            negative = gr.Textbox(label="Negative prompt", value="")
            with gr.Row():
                steps = gr.Slider(1, 100, value=20, step=1, label="Steps")
                guidance = gr.Slider(0, 20, value=7.5, step=0.5, label="Guidance scale")
            with gr.Row():
                seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", scale=3)
                dice = gr.Button("Random seed", scale=1, size="sm")
            with gr.Row():
                height = gr.Slider(64, _MAX_SIDE, value=128, step=8, label="Height")
                width = gr.Slider(64, _MAX_SIDE, value=128, step=8, label="Width")
                count = gr.Slider(1, _MAX_IMAGES, value=4, step=1, label="Images")
            with gr.Row():
                adapter = gr.Dropdown([NO_ADAPTER, *names], value=NO_ADAPTER, label="Adapter")
                weight = gr.Slider(-2, 2, value=1.0, step=0.05, label="Adapter weight")
            with gr.Row():
                keep = gr.Checkbox(label="Keep only images that pass the checker", value=False)
                tries = gr.Slider(1, _MAX_TRIES, value=3, step=1, label="Max tries")
            button = gr.Button("Generate", variant="primary", elem_id="generate-btn")
            gr.Examples([[e] for e in EXAMPLES], inputs=[prompt_box], cache_examples=False)
        with gr.Column(scale=3):
            gallery = gr.Gallery(
                label="Images (download keeps the PNG parameters)",
                columns=4,
                height="auto",
                format="png",
                buttons=["download", "fullscreen"],
                elem_id="gallery",
            )
            notes = gr.Markdown(label="notes", elem_id="notes")
            checklist = gr.HTML(label="checklist", elem_id="checklist")
            with gr.Accordion("Details (JSON)", open=False):
                details = gr.JSON(label="details")

    def run(
        prompt,
        negative_prompt="",
        num_inference_steps=20,
        guidance_scale=7.5,
        seed=0,
        height=128,
        width=128,
        num_images=4,
        adapter=NO_ADAPTER,
        adapter_weight=1.0,
        keep_passing=False,
        max_tries=3,
        progress=gr.Progress(track_tqdm=True),  # noqa: B008 (Gradio's own idiom)
    ):
        result = _usage(
            lambda: generate(
                pipe, checker, prompt, negative_prompt, num_inference_steps, guidance_scale,
                seed, num_images, height, width, adapter, adapter_weight, keep_passing,
                max_tries, out, lora_dir, progress,
            )
        )  # fmt: skip
        info = {
            "run_dir": str(result.run_dir),
            "rendered": result.rendered,
            "rejected": result.rejected,
            "requested": [r.to_dict() for r in result.requested.objects],
            "suggestions": result.requested.suggestions,
            "unknown": result.requested.unknown,
            "images": [_shot_json(s) for s in result.shots],
        }
        return (
            [(str(s.path), _caption(s)) for s in result.shots],
            _notes_md(result.requested, result.notes),
            _checklist_html(result.shots),
            info,
        )

    inputs = [prompt_box, negative, steps, guidance, seed, height, width, count, adapter, weight]
    button.click(
        run, inputs + [keep, tries], [gallery, notes, checklist, details], api_name="generate",
        **model,
    )  # fmt: skip
    dice.click(lambda: random.randrange(2**31), None, seed, api_visibility="private", queue=False)


def _compare_tab(pipe, checker, names, lora_dir, out, model) -> None:
    default = "catalog" if "catalog" in names else (names[0] if names else None)
    with gr.Row():
        prompt_box = gr.Textbox(
            label="Prompt", lines=2, placeholder=EXAMPLES[0], scale=3, elem_id="compare-prompt"
        )
        with gr.Column(scale=2):
            adapter = gr.Dropdown(names, value=default, label="Adapter (catalog model)")
            weight = gr.Slider(-2, 2, value=1.0, step=0.05, label="Adapter weight")
    with gr.Row():
        seeds = gr.Slider(1, _MAX_SEEDS, value=8, step=1, label="Seeds")
        seed = gr.Number(value=0, precision=0, minimum=0, label="First seed")
        steps = gr.Slider(1, 100, value=20, step=1, label="Steps")
        guidance = gr.Slider(0, 20, value=7.5, step=0.5, label="Guidance scale")
    button = gr.Button("Compare", variant="primary", elem_id="compare-btn")
    if not names:
        gr.Markdown(f"No adapter in `{lora_dir}` yet: train one with `genimg train-lora`.")
    rates = gr.Dataframe(
        headers=["object", "open model", "catalog model"],
        label="Presence rate [95% Wilson interval]",
        elem_id="rates",
    )
    with gr.Row():
        open_gallery = gr.Gallery(
            label="Open model", columns=4, height="auto", format="png", elem_id="open-gallery"
        )
        catalog_gallery = gr.Gallery(
            label="Catalog model",
            columns=4,
            height="auto",
            format="png",
            elem_id="catalog-gallery",
        )
    with gr.Row():
        open_list = gr.HTML(label="open checklist", elem_id="open-checklist")
        catalog_list = gr.HTML(label="catalog checklist", elem_id="catalog-checklist")
    with gr.Accordion("Details (JSON)", open=False):
        details = gr.JSON(label="details")

    def run(
        prompt,
        adapter=default,
        adapter_weight=1.0,
        num_seeds=8,
        seed=0,
        num_inference_steps=20,
        guidance_scale=7.5,
        progress=gr.Progress(track_tqdm=True),  # noqa: B008
    ):
        report = _usage(
            lambda: compare(
                pipe, checker, prompt, adapter, adapter_weight, num_seeds, seed,
                num_inference_steps, guidance_scale, out_dir=out, lora_dir=lora_dir,
                progress=progress,
            )
        )  # fmt: skip
        table = [
            [r["phrase"], _rate_text(r["open"]), _rate_text(r["catalog"])]
            for r in report["objects"]
        ]
        all_present = report["all_present"]
        table.append(
            ["all present", _rate_text(all_present["open"]), _rate_text(all_present["catalog"])]
        )
        shots = report.pop("shots")
        report["images"] = {side: [_shot_json(s) for s in shots[side]] for side in shots}
        return (
            table,
            [(str(s.path), _caption(s)) for s in shots["open"]],
            [(str(s.path), _caption(s)) for s in shots["catalog"]],
            _checklist_html(shots["open"], "Open model"),
            _checklist_html(shots["catalog"], f"Catalog model ({adapter})"),
            report,
        )

    button.click(
        run, [prompt_box, adapter, weight, seeds, seed, steps, guidance],
        [rates, open_gallery, catalog_gallery, open_list, catalog_list, details],
        api_name="compare", **model,
    )  # fmt: skip


def _check_tab(checker, model) -> None:
    with gr.Row():
        with gr.Column():
            files = gr.File(label="Images", file_count="multiple", file_types=["image"])
            objects_box = gr.Textbox(
                label="Objects (';'-separated), or leave empty and give a prompt",
                placeholder="wooden shelf; 2 wicker baskets; white ceramic sink",
                value="",
            )
            prompt_box = gr.Textbox(label="Prompt", lines=2, value="")
            button = gr.Button("Check", variant="primary", elem_id="check-btn")
        with gr.Column():
            table = gr.Dataframe(
                headers=["image", "object", "present", "score", "material", "colour", "count"],
                label="Checker verdicts",
            )
            details = gr.JSON(label="Details")

    def run(prompt="", images=None, objects=""):
        results = _usage(lambda: check_images(checker, images or [], prompt, objects))
        rows = []
        for r in results:
            if "error" in r:
                rows.append([r["image"], f"error: {r['error']}", "", "", "", "", ""])
            for o in r.get("objects", []):
                att = [
                    _mark(o[k] if o["present"] else None)
                    for k in ("material_ok", "color_ok", "count_ok")
                ]
                rows.append(
                    [r["image"], o["phrase"], _mark(o["present"]), f"{o['score']:.3f}", *att]
                )
        return rows, results

    button.click(run, [prompt_box, files, objects_box], [table, details], api_name="check", **model)


# -- serving ----------------------------------------------------------------------------------


class _NoRemoteFiles:
    """ASGI middleware: refuse `file=<URL>` and `proxy=<URL>`, which Gradio would fetch from
    the web on the caller's behalf. The app serves its own output folder and nothing else."""

    _REMOTE = re.compile(r"/(?:file|proxy)=\s*[a-z][a-z0-9+.-]*:", re.IGNORECASE)

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self._REMOTE.search(unquote(scope.get("path", ""))):
            from starlette.responses import PlainTextResponse

            await PlainTextResponse("Not found", status_code=404)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def launch(demo, out_dir="outputs", host: str = "127.0.0.1", port: int = 7860, **kwargs):
    """Serve on host:port: no share link, no run history, only `out_dir` as files."""
    from starlette.middleware import Middleware

    out = Path(out_dir).resolve()
    (out / "gradio").mkdir(parents=True, exist_ok=True)
    return demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        allowed_paths=[str(out)],
        run_history=False,  # it offers to sync runs to a Hugging Face bucket
        mcp_server=False,
        ssr_mode=False,
        footer_links=["api"],
        app_kwargs={"middleware": [Middleware(_NoRemoteFiles)]},
        css=CSS,
        **kwargs,
    )
