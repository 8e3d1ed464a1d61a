"""Open model vs catalog model: the same prompts and seeds through both, every image checked,
and a report that says, per requested object and with statistics, what the adapter buys.

One pipeline serves both sides: the open model is the base with no adapter, the catalog
model the same base with the catalog LoRA fused (adapters.apply), so the base is loaded
once. Each (prompt, seed) pair gives one open and one catalog image: the paired design.

Statistics:
- presence rates with the Wilson score interval (Wilson, 1927; the interval recommended by
  Brown, Cai & DasGupta, 2001, "Interval Estimation for a Binomial Proportion");
- the exact McNemar test on the paired outcomes (McNemar, 1947): under the null, the
  discordant pairs split Binomial(b + c, 1/2); its two-sided exact p-value.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from genimg.errors import UsageError, check_int
from genimg.report import ATTRIBUTES, MODELS, fmt_rate, write_report

__all__ = ["compare", "mcnemar_exact", "run_metrics", "wilson_interval"]

_Z95 = 1.959963984540054  # the 97.5% normal quantile


# -- statistics ------------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, z: float = _Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At k = 0 or k = n the bound is exactly 0 or 1; rounding would leave 1e-17 off.
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def mcnemar_exact(open_only: int, catalog_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts; 1.0 when there are none."""
    from scipy.stats import binomtest

    n = open_only + catalog_only
    return 1.0 if n == 0 else float(binomtest(open_only, n, 0.5).pvalue)


def _rate(hits: list[bool]) -> dict:
    lo, hi = wilson_interval(sum(hits), len(hits))
    rate = sum(hits) / len(hits) if hits else None
    return {"rate": rate, "ci95": [lo, hi], "k": sum(hits), "n": len(hits)}


def paired_stats(open_hits: list[bool], catalog_hits: list[bool]) -> dict:
    """Both rates, the discordant counts [open only, catalog only] and McNemar's p."""
    if len(open_hits) != len(catalog_hits):
        raise ValueError("paired outcomes must have the same length")
    open_only = sum(a and not b for a, b in zip(open_hits, catalog_hits, strict=True))
    catalog_only = sum(b and not a for a, b in zip(open_hits, catalog_hits, strict=True))
    return {
        "open": _rate(open_hits),
        "catalog": _rate(catalog_hits),
        "mcnemar_p": mcnemar_exact(open_only, catalog_only),
        "discordant": [open_only, catalog_only],
    }


# -- the verb --------------------------------------------------------------------------------


@dataclass
class RenderSettings:
    """What every image of the comparison shares (diffusers' argument names)."""

    negative_prompt: str = ""  # the same for both models
    num_inference_steps: int = 20  # the shipped models are tuned for 20 DPM++ steps
    guidance_scale: float = 7.5  # classifier-free guidance, as in SD's defaults
    height: int = 128  # the shipped models' training size
    width: int = 128
    extra: dict = field(default_factory=dict)  # recorded, not used (scheduler name, ...)


def compare(
    pipe,
    catalog,
    checker,
    prompts: list[str],
    seeds: list[int],
    out: Path | str,
    settings: RenderSettings | None = None,
    progress=None,
) -> dict:
    """Render `prompts` x `seeds` through the open and the catalog model, check every image,
    write the report into `out` and return report.json's content.

    `pipe` is the open model. `catalog` is an `adapters.Lora` (fused onto `pipe` for the
    catalog side, removed again at the end) or a second pipeline.
    """
    from genimg import adapters
    from genimg.checker import check
    from genimg.parse import parse_prompt
    from genimg.render import render

    settings = settings or RenderSettings()
    out = Path(out)
    # 1. Check inputs: every prompt must ask for something the checker knows
    if not prompts:
        raise UsageError("--prompts", "no prompts to compare")
    if not seeds or len(set(seeds)) != len(seeds):
        raise UsageError("--seeds", f"need distinct seeds, got {seeds!r}")
    requested = []
    for i, prompt in enumerate(prompts):
        parsed = parse_prompt(prompt)
        if not parsed.objects:
            raise UsageError(
                "--prompts", f"prompt {i + 1} ({prompt[:60]!r}) names no catalog object"
            )
        requested.append(parsed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(exist_ok=True)
    # 2. Render and check: the open side first, then the adapter once, the catalog side
    sides = {"open": pipe, "catalog": catalog if not isinstance(catalog, adapters.Lora) else pipe}
    results = []
    for model in MODELS:
        side = sides[model]
        if isinstance(catalog, adapters.Lora):
            adapters.apply(pipe, [catalog] if model == "catalog" else [])
        for p, (prompt, parsed) in enumerate(zip(prompts, requested, strict=True)):
            images = []
            for start, count in _runs(seeds):
                images += render(
                    side,
                    prompt,
                    settings.negative_prompt,
                    settings.num_inference_steps,
                    settings.guidance_scale,
                    start,
                    count,
                    settings.height,
                    settings.width,
                )
            verdicts = check(checker, images, parsed)
            for seed, image, verdict in zip(seeds, images, verdicts, strict=True):
                name = f"images/{model}-{p:03d}-{seed:06d}.png"
                image.save(out / name)
                results.append(
                    {
                        "model": model,
                        "prompt_index": p,
                        "prompt": prompt,
                        "seed": seed,
                        "file": name,
                        "all_present": verdict["all_present"],
                        "all_correct": verdict["all_correct"],
                        "objects": verdict["objects"],
                    }
                )
            if progress:
                progress(model, p)
    if isinstance(catalog, adapters.Lora):
        adapters.apply(pipe, [])  # leave the caller's pipeline as it came
    # 3. Statistics and the report files
    report = _report(results, prompts, seeds, _identity(pipe, catalog), settings)
    write_report(out, report, results)
    return report


def _runs(seeds: list[int]) -> list[tuple[int, int]]:
    """Consecutive seeds as (first, count) runs, so render's seed + i covers them."""
    runs: list[tuple[int, int]] = []
    for s in seeds:
        if runs and runs[-1][0] + runs[-1][1] == s and runs[-1][1] < 64:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((s, 1))
    return runs


def _identity(pipe, catalog) -> dict:
    from genimg import adapters, pipeline

    model = pipeline.model_name(pipe.name_or_path)
    open_side = {"model": model, "model_hash": pipeline.model_hash(pipe), "adapter": None}
    if isinstance(catalog, adapters.Lora):
        side = {"model": model, "model_hash": open_side["model_hash"], "adapter": catalog.record()}
    else:
        side = {
            "model": pipeline.model_name(catalog.name_or_path),
            "model_hash": pipeline.model_hash(catalog),
            "adapter": None,
        }
    return {"open": open_side, "catalog": side}


def _report(results: list[dict], prompts, seeds, identity: dict, settings) -> dict:
    """report.json: per model, per requested object and for all-present / all-correct."""
    by = {m: [r for r in results if r["model"] == m] for m in MODELS}
    report: dict = {
        **identity,
        "prompts": list(prompts),
        "seeds": list(seeds),
        "n_images": len(by["open"]),
        "settings": {
            "negative_prompt": settings.negative_prompt,
            "num_inference_steps": settings.num_inference_steps,
            "guidance_scale": settings.guidance_scale,
            "height": settings.height,
            "width": settings.width,
            **settings.extra,
        },
    }
    for key in ("all_present", "all_correct"):
        report[key] = paired_stats([r[key] for r in by["open"]], [r[key] for r in by["catalog"]])
    # The same phrase in several prompts is one row: e.g. "wooden shelf" over a prompt set.
    # Every requested object of every image pair: (prompt index, open verdict, catalog verdict)
    pairs = [
        (a["prompt_index"], oa, ob)
        for a, b in zip(by["open"], by["catalog"], strict=True)
        for oa, ob in zip(a["objects"], b["objects"], strict=True)
    ]
    phrases: dict[str, dict] = {}
    for prompt_index, oa, ob in pairs:
        row = phrases.setdefault(
            oa["phrase"], {"object": oa["object"], "open": [], "catalog": [], "prompts": set()}
        )
        row["open"].append(oa["present"])
        row["catalog"].append(ob["present"])
        row["prompts"].add(prompt_index)
    report["objects"] = [
        {
            "phrase": phrase,
            "object": row["object"],
            "prompts": sorted(row["prompts"]),
            **paired_stats(row["open"], row["catalog"]),
        }
        for phrase, row in phrases.items()
    ]
    # Per attribute kind, every requested one paired: right (object there, attribute read as
    # asked) with each model. An object the prompt gives no such attribute is not counted.
    report["attributes"] = {}
    for kind in ATTRIBUTES:
        asked = [(oa[f"{kind}_ok"], ob[f"{kind}_ok"]) for _, oa, ob in pairs]
        asked = [(a, b) for a, b in asked if a is not None]
        report["attributes"][kind] = paired_stats([a for a, _ in asked], [b for _, b in asked])
    return report


def run_metrics(report: dict) -> dict:
    """What the runs registry keeps of a report: the headline rates, McNemar's p and the
    attribute rates (None for a kind no prompt asked for)."""
    metrics = {
        f"{key}_{model}": report[key][model]["rate"]
        for key in ("all_present", "all_correct")
        for model in MODELS
    }
    metrics["all_present_mcnemar_p"] = report["all_present"]["mcnemar_p"]
    for kind, s in report["attributes"].items():
        metrics.update({f"{kind}_right_{model}": s[model]["rate"] for model in MODELS})
    return metrics


# -- the `genimg compare` command ------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "example:\n  genimg compare --prompt 'This bathroom has a wooden shelf with two "
        "baskets ...' \\\n      --seeds 32 --out runs/compare-bathroom\n\n"
        "Writes report.json, results.jsonl, report.md, report.html, chart.png, grid-NNN.png."
    )
    add = parser.add_argument
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompts", type=Path, help="prompts file (.txt, .jsonl, GenEval)")
    what.add_argument("--prompt", help="one prompt")
    add("--seeds", type=int, default=32, help="seeds per prompt, seed .. seed+N-1 (default 32)")
    add("--seed", type=int, default=0, help="first seed (default 0)")
    add("--open", default=None, help="the open (base) model: folder or hub id (default shipped)")
    add("--catalog-lora", default="catalog", help="the catalog adapter, NAME[:W] (catalog)")
    add("--checker", default=None, help="checker folder (default: assets/models/genimg-checker)")
    add("--negative-prompt", default="", help="for both models (default: none)")
    add("--num-inference-steps", type=int, default=20, help="denoising steps (default 20)")
    add("--guidance-scale", type=float, default=7.5, help="classifier-free guidance (7.5)")
    add("--height", type=int, default=128, help="pixels, a multiple of 8 (default 128)")
    add("--width", type=int, default=128, help="pixels, a multiple of 8 (default 128)")
    add("--scheduler", default="dpm++", help="sampler (default dpm++)")
    add("--device", default="cpu", help="torch device (default cpu)")
    add("--out", required=True, type=Path, help="report folder")
    add("--overwrite", action="store_true", help="replace a report already in --out")


def run(args: argparse.Namespace) -> int:
    from genimg import adapters, pipeline, runs
    from genimg import checker as ck
    from genimg.render import _quiet_libraries, _versions, check_inputs

    # 1. Check every argument before loading anything
    if args.prompt is not None:
        prompts = [args.prompt]
    else:
        from genimg.prompts import read_prompts

        prompts = [spec.prompt for spec in read_prompts(args.prompts)]
    check_int("--seeds", args.seeds, 1, 10_000)
    for prompt in prompts:
        check_inputs(
            prompt,
            args.negative_prompt,
            args.num_inference_steps,
            args.guidance_scale,
            args.seed,
            1,
            args.height,
            args.width,
        )
    seeds = list(range(args.seed, args.seed + args.seeds))
    if args.scheduler not in pipeline.SCHEDULERS:
        choices = ", ".join(pipeline.SCHEDULERS)
        raise UsageError("--scheduler", f"unknown {args.scheduler!r}; choose from {choices}")
    lora = adapters.resolve(args.catalog_lora)
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise UsageError("--out", f"{out} is a file, not a folder")
    if (out / "report.json").exists() and not args.overwrite:
        raise UsageError(
            "--out", f"{out} holds a report already; pass --overwrite or another folder"
        )
    folder = pipeline.check_model(args.open or pipeline.DEFAULT_MODEL)
    # 2. Load the models once
    _quiet_libraries()
    pipe = pipeline.load_pipeline(folder, device=args.device, scheduler=args.scheduler)
    pipe.set_progress_bar_config(disable=True)
    checker = ck.load_checker(args.checker or ck.DEFAULT_CHECKER, device=args.device)
    # 3. Compare, recorded in the runs registry
    settings = RenderSettings(
        args.negative_prompt,
        args.num_inference_steps,
        args.guidance_scale,
        args.height,
        args.width,
        {"scheduler": args.scheduler},
    )
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    models = {
        "open": {"model": str(folder), "model_hash": pipeline.model_hash(pipe)},
        "catalog": lora.record(),
        "checker": str(args.checker or ck.DEFAULT_CHECKER),
    }
    root = out.resolve().parent
    run_id = runs.start_run(root, "compare", out, config, models, _versions(), seeds)
    start = time.perf_counter()
    try:
        report = compare(
            pipe, lora, checker, prompts, seeds, out, settings, progress=_progress(len(prompts))
        )
    except BaseException as err:
        runs.finish_run(
            root, run_id, "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        )
        raise
    metrics = run_metrics(report)
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    runs.finish_run(root, run_id, "finished", metrics, ["report.json", "report.html"])
    # 4. The headline, on stdout
    for key in ("all_present", "all_correct"):
        s = report[key]
        print(
            f"{key}: open {fmt_rate(s['open'])}, catalog {fmt_rate(s['catalog'])}, "
            f"McNemar p = {s['mcnemar_p']:.2g}"
        )
    print(out / "report.html")
    return 0


def _progress(n_prompts: int):
    import sys

    from tqdm import tqdm

    bar = tqdm(total=2 * n_prompts, desc="compare", unit="prompt", file=sys.stderr, disable=None)

    def update(model, p):
        bar.set_postfix_str(model)
        bar.update(1)
        if bar.n == bar.total:
            bar.close()

    return update
