"""The Gradio web app: `create_demo(pipe, checker) -> gr.Blocks` and `launch(demo, out_dir)`.

Tabs follow the data flow: Generate (render, then check every image), Check (score uploaded
images), Compare (open model vs an adapter over the same seeds), Batch and Runs. The work
behind each tab is a plain function of `genimg.ui` (`generate`, `check_images`, `compare`,
`batch`, `list_runs`, `open_run`); the handlers here only convert their results. Heavy models
are loaded once by the caller (app.py) and shared: every model event runs in one queue slot,
because adapters are switched on the one pipeline in place.
"""

from __future__ import annotations

import html
import os
import random
import re
from concurrent.futures import Future
from pathlib import Path
from urllib.parse import unquote

import gradio as gr

from genimg import adapters, pipeline
from genimg.errors import UsageError
from genimg.parse import ParseResult
from genimg.report import attribute_rows
from genimg.ui import (
    EXAMPLES,
    MAX_IMAGES,
    MAX_SEEDS,
    MAX_SIDE,
    MAX_TRIES,
    NO_ADAPTER,
    Shot,
    batch,
    check_images,
    compare,
    generate,
    list_runs,
    open_run,
)

__all__ = ["create_demo", "launch"]


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
    return {**shot.check, "file": str(shot.path), "seed": shot.seed}


def _rate_text(r: dict) -> str:
    lo, hi = r["ci95"]
    return f"{r['k']}/{r['n']} = {r['rate']:.0%} [{lo:.0%}, {hi:.0%}]"


def _ready(model):
    """A model passed as a Future (app.py serves before loading), once it is loaded."""
    return model.result() if isinstance(model, Future) else model


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


def create_demo(
    pipe, checker, lora_dir="lora", out_dir="outputs", max_queue: int = 16, model_name=None
):
    """The Blocks app. Gradio writes what it serves (renders, uploads) under `out_dir`.

    `pipe` and `checker` may be `concurrent.futures.Future`s that app.py fulfils after the
    app is serving: a request waits for them (then `model_name` names the model)."""
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
            f"Model `{model_name or pipeline.model_name(_ready(pipe).name_or_path)}`; "
            "every image is checked for "
            "the objects the prompt asks for."
        )
        with gr.Tab("Generate"):
            _generate_tab(pipe, checker, names, lora_dir, out, model)
        with gr.Tab("Compare"):
            compared = _compare_tab(pipe, checker, names, lora_dir, out, model)
        with gr.Tab("Check"):
            _check_tab(checker, model)
        with gr.Tab("Batch"):
            batched = _batch_tab(pipe, checker, names, lora_dir, out, model)
        with gr.Tab("Runs"):
            load_runs, dashboard = _runs_tab(out)
        # The dashboard is filled when the page opens and after every recorded run.
        demo.load(load_runs, None, dashboard, api_visibility="private")
        for event in (compared, batched):
            event.then(load_runs, None, dashboard, api_visibility="private")
    demo.queue(max_size=max_queue, default_concurrency_limit=1)
    return demo


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
                height = gr.Slider(64, MAX_SIDE, value=128, step=8, label="Height")
                width = gr.Slider(64, MAX_SIDE, value=128, step=8, label="Width")
                count = gr.Slider(1, MAX_IMAGES, value=4, step=1, label="Images")
            with gr.Row():
                adapter = gr.Dropdown([NO_ADAPTER, *names], value=NO_ADAPTER, label="Adapter")
                weight = gr.Slider(-2, 2, value=1.0, step=0.05, label="Adapter weight")
            with gr.Row():
                keep = gr.Checkbox(
                    label="Keep only images in which every requested object passes", value=False
                )
                tries = gr.Slider(1, MAX_TRIES, value=3, step=1, label="Max tries")
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
                _ready(pipe), _ready(checker), prompt, negative_prompt, num_inference_steps,
                guidance_scale, seed, num_images, height, width, adapter, adapter_weight,
                keep_passing, max_tries, out, lora_dir, progress,
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


def _compare_tab(pipe, checker, names, lora_dir, out, model):
    default = "catalog" if "catalog" in names else (names[0] if names else None)
    with gr.Row():
        prompt_box = gr.Textbox(
            label="Prompt", lines=2, placeholder=EXAMPLES[0], scale=3, elem_id="compare-prompt"
        )
        with gr.Column(scale=2):
            adapter = gr.Dropdown(names, value=default, label="Adapter (catalog model)")
            weight = gr.Slider(-2, 2, value=1.0, step=0.05, label="Adapter weight")
    with gr.Row():
        seeds = gr.Slider(1, MAX_SEEDS, value=8, step=1, label="Seeds")
        seed = gr.Number(value=0, precision=0, minimum=0, label="First seed")
        steps = gr.Slider(1, 100, value=20, step=1, label="Steps")
        guidance = gr.Slider(0, 20, value=7.5, step=0.5, label="Guidance scale")
    button = gr.Button("Compare", variant="primary", elem_id="compare-btn")
    if not names:
        gr.Markdown(f"No adapter in `{lora_dir}` yet: train one with `genimg train-lora`.")
    rates = gr.Dataframe(
        headers=["requested", "open model", "catalog model", "McNemar p"],
        label="Presence and attribute rates [95% Wilson interval]",
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
                _ready(pipe), _ready(checker), prompt, adapter, adapter_weight, num_seeds, seed,
                num_inference_steps, guidance_scale, out_dir=out, lora_dir=lora_dir,
                progress=progress,
            )
        )  # fmt: skip
        rows = [(r["phrase"], r) for r in report["objects"]]
        rows.append(("all present", report["all_present"]))
        rows += attribute_rows(report["attributes"])
        table = [
            [name, _rate_text(r["open"]), _rate_text(r["catalog"]), f"{r['mcnemar_p']:.2g}"]
            for name, r in rows
        ]
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

    return button.click(
        run, [prompt_box, adapter, weight, seeds, seed, steps, guidance],
        [rates, open_gallery, catalog_gallery, open_list, catalog_list, details],
        api_name="compare", **model,
    )  # fmt: skip


def _batch_tab(pipe, checker, names, lora_dir, out, model):
    with gr.Row():
        with gr.Column(scale=2):
            prompts = gr.File(
                label="Prompts file: .txt (one prompt a line) or .jsonl (prompt + overrides)",
                file_types=[".txt", ".jsonl"],
                elem_id="batch-file",
            )
            with gr.Row():
                count = gr.Slider(1, MAX_IMAGES, value=2, step=1, label="Images per prompt")
                seed = gr.Number(value=0, precision=0, minimum=0, label="First seed")
            with gr.Row():
                steps = gr.Slider(1, 100, value=20, step=1, label="Steps")
                guidance = gr.Slider(0, 20, value=7.5, step=0.5, label="Guidance scale")
            with gr.Row():
                height = gr.Slider(64, MAX_SIDE, value=128, step=8, label="Height")
                width = gr.Slider(64, MAX_SIDE, value=128, step=8, label="Width")
            with gr.Row():
                adapter = gr.Dropdown([NO_ADAPTER, *names], value=NO_ADAPTER, label="Adapter")
                weight = gr.Slider(-2, 2, value=1.0, step=0.05, label="Adapter weight")
            with gr.Row():
                check = gr.Checkbox(value=True, label="Check every image")
                until = gr.Slider(
                    1, MAX_TRIES, value=1, step=1, label="Until correct: seeds per image (1: off)"
                )
            button = gr.Button("Run batch", variant="primary", elem_id="batch-btn")
        with gr.Column(scale=3):
            summary = gr.Markdown(elem_id="batch-summary")
            download = gr.File(label="Images, manifest and report (zip)", elem_id="batch-zip")
            gallery = gr.Gallery(
                label=f"Images (the first {MAX_IMAGES})",
                columns=8,
                height="auto",
                format="png",
                elem_id="batch-gallery",
            )
            report = gr.Markdown(elem_id="batch-report")

    def run(
        prompts,
        num_images=2,
        seed=0,
        num_inference_steps=20,
        guidance_scale=7.5,
        height=128,
        width=128,
        adapter=NO_ADAPTER,
        adapter_weight=1.0,
        check=True,
        until_correct=1,
        progress=gr.Progress(),  # noqa: B008
    ):
        result = _usage(
            lambda: batch(
                _ready(pipe), _ready(checker), prompts, num_images, seed, num_inference_steps,
                guidance_scale, height, width, adapter, adapter_weight, check, until_correct,
                out, lora_dir, progress,
            )
        )  # fmt: skip
        rows = result["rows"][:MAX_IMAGES]
        return (
            _batch_summary(result),
            str(result["zip"]),
            [(str(result["run_dir"] / r["file"]), _row_caption(r)) for r in rows],
            result["report"],
        )

    inputs = [prompts, count, seed, steps, guidance, height, width, adapter, weight, check, until]
    return button.click(
        run, inputs, [summary, download, gallery, report], api_name="batch", **model
    )


def _batch_summary(result: dict) -> str:
    from genimg.batch import acceptance_text

    m = result["metrics"]
    lines = [f"**{result['run_dir'].name}**: {m['images']} images in {m['seconds']} s."]
    if "all_correct_rate" in m:
        lines.append(
            f"All requested objects present in {m['all_present_rate']:.0%} of the images, "
            f"all correct (material, colour, count too) in {m['all_correct_rate']:.0%}."
        )
    if "acceptance_rate" in m:
        lines.append(acceptance_text(m) + ".")
    return "\n\n".join(lines)


def _row_caption(row: dict) -> str:
    text = f"seed {row['seed']}"
    if row.get("check"):
        text += " · ✓" if row["check"]["all_correct"] else " · ✗"
    if "attempts" in row:
        text += f" · {len(row['attempts'])} tries"
    return text


_RUN_COLUMNS = ["id", "kind", "status", "started", "size", "headline", "folder"]


def _run_row(run: dict) -> list:
    m = run["metrics"] or {}
    if run["kind"] == "compare":
        size = f"{len(run['seeds'])} seeds"
        head = ""
        if "all_present_open" in m:
            head = f"all present: open {m['all_present_open']:.0%}, "
            head += f"catalog {m['all_present_catalog']:.0%}"
    else:
        size = f"{m.get('images', '?')} images"
        head = f"all correct {m['all_correct_rate']:.0%}" if "all_correct_rate" in m else ""
        if "acceptance_rate" in m:
            head += f"; accepted {m['acceptance_rate']:.0%} (first try {m['first_try_rate']:.0%})"
    return [
        run["id"],
        run["kind"],
        run["status"],
        run["started"],
        size,
        head,
        Path(run["out"]).name,
    ]


def _runs_frame(found: list[dict]):
    """One point per run and headline metric, for the plot over time. The x axis is the
    run's number (runs are numbered in start order): a time axis spread minutes of testing
    and days of use alike over unreadable tick labels."""
    import pandas as pd

    names = {
        "all_correct_rate": "batch: all correct",
        "acceptance_rate": "batch: accepted (until correct)",
        "all_present_open": "compare: all present, open",
        "all_present_catalog": "compare: all present, catalog",
    }
    points = [
        {"run": int(r["id"]), "rate": float(r["metrics"][k]), "metric": name}
        for r in found
        if r["metrics"]
        for k, name in names.items()
        if isinstance(r["metrics"].get(k), (int, float))
    ]
    return pd.DataFrame(points or None, columns=["run", "rate", "metric"])


def _runs_figure(frame):
    """The rates of `_runs_frame` against the run number: whole-number ticks, the legend
    beside the axes (Gradio's own plots cut it off and tick runs at 1.1, 1.2, ...)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 2.8), layout="constrained")
    markers = iter("os^Dv")
    for metric, points in frame.groupby("metric", sort=True):
        ax.plot(points["run"], points["rate"], marker=next(markers, "o"), label=metric)
    runs = sorted(set(frame["run"]))
    ax.set_xticks(runs or [1])
    ax.set_xlim(min(runs or [1]) - 0.5, max(runs or [1]) + 0.5)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("run # (in start order; the table gives the times)")
    ax.set_ylabel("rate")
    ax.grid(alpha=0.3)
    if runs:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    plt.close(fig)
    return fig


def _runs_tab(out: Path):
    gr.Markdown(
        "The batch and compare runs of this app, from its runs registry "
        f"(`genimg runs --root {out / 'runs'}` lists the same)."
    )
    with gr.Row():
        pick = gr.Dropdown([], label="Open a run", scale=3, elem_id="runs-pick")
        refresh = gr.Button("Refresh", scale=1, size="sm", elem_id="runs-refresh")
    table = gr.Dataframe(headers=_RUN_COLUMNS, label="Runs", interactive=False, elem_id="runs")
    plot = gr.Plot(
        label="Headline rates over time",
        elem_id="runs-plot",
    )
    with gr.Row():
        with gr.Column(scale=3):
            report = gr.Markdown(elem_id="runs-report")
        with gr.Column(scale=2):
            gallery = gr.Gallery(label="Pictures", columns=4, height="auto", elem_id="runs-gallery")
            download = gr.File(label="Download", elem_id="runs-download")
    with gr.Accordion("The run's record (JSON)", open=False):
        record = gr.JSON(label="run")

    def load():
        found = list_runs(out)
        choices = [
            (f"#{r['id']} {r['kind']} · {r['started']} · {r['status']}", r["id"]) for r in found
        ]
        return (
            [_run_row(r) for r in found],
            _runs_figure(_runs_frame(found)),
            gr.Dropdown(choices=choices, value=choices[0][1] if choices else None),
        )

    def show(run_id):
        if run_id is None:
            return "", [], None, None
        found = _usage(lambda: open_run(out, run_id))
        download = str(found["download"]) if found["download"] else None
        return found["report"], [str(p) for p in found["images"]], download, found["run"]

    dashboard = [table, plot, pick]
    refresh.click(load, None, dashboard, api_name="runs")
    pick.change(show, pick, [report, gallery, download, record], api_visibility="private")
    return load, dashboard


def _check_tab(checker, model) -> None:
    with gr.Row():
        files = gr.File(
            label="Images", file_count="multiple", file_types=["image"], elem_id="check-files"
        )
        with gr.Column():
            objects_box = gr.Textbox(
                label="Objects (';'-separated), or leave empty and give a prompt",
                placeholder="wooden shelf; 2 wicker baskets; white ceramic sink",
                value="",
                elem_id="check-objects",
            )
            prompt_box = gr.Textbox(label="Prompt", lines=2, value="")
            button = gr.Button("Check", variant="primary", elem_id="check-btn")
    # Full width, and the verdicts before the file name: a long name must not push them
    # out of sight.
    table = gr.Dataframe(
        headers=["object", "present", "score", "material", "colour", "count", "image"],
        label="Checker verdicts",
        elem_id="check-table",
        wrap=True,
        column_widths=["22%", "9%", "9%", "10%", "10%", "9%", "31%"],
    )
    with gr.Accordion("Details (JSON)", open=False):
        details = gr.JSON(label="Details")

    def run(prompt="", images=None, objects=""):
        results = _usage(lambda: check_images(_ready(checker), images or [], prompt, objects))
        rows = []
        for r in results:
            if "error" in r:
                rows.append([f"error: {r['error']}", "", "", "", "", "", r["image"]])
            for o in r.get("objects", []):
                att = [
                    _mark(o[k] if o["present"] else None)
                    for k in ("material_ok", "color_ok", "count_ok")
                ]
                rows.append(
                    [o["phrase"], _mark(o["present"]), f"{o['score']:.3f}", *att, r["image"]]
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
