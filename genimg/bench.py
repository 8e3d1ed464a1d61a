"""Speed of genimg against plain diffusers, every figure measured in one run: `genimg bench`.

Each speed figure is a ratio of two timings taken in the same process, interleaved
(baseline, genimg, baseline, genimg, ...) and reduced by their medians, so a machine that
slows down under other work slows both sides alike. The baselines are the plain diffusers
calls a user would write: `StableDiffusionPipeline.from_pretrained(dir)(prompt)`, once per
image. `unet_flop_utilization` counts the UNet's FLOPs with torch's `FlopCounterMode` and
divides the rate `genimg batch` achieves by a large float32 matmul's, measured in the same run.
The fused adapter is timed against the bare base pipeline; the unfused one against itself
switched off (`disable_lora`, untimed, before each base render), on one pipeline.

`--clock cpu` times CPU seconds of this process instead of wall seconds: on a machine whose
cores are busy with other work, with `--threads 1`, it measures the work itself.
`--arch sd15` times Stable Diffusion 1.5's UNet (its config, random weights, no download)
at 512x512, so figures can be set beside published ones on a GPU (`--device cuda`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BenchConfig", "bench", "bench_sd15"]

PROMPT = (
    "This bathroom has a wooden shelf with two baskets that can store toiletries and "
    "accessories. The sink is made of white ceramic, and the faucet is an elegant "
    "chrome-plated design that harmonizes well with black."
)
_APP = Path(__file__).resolve().parent.parent / "app.py"
# Stable Diffusion 1.5's UNet config (runwayml/stable-diffusion-v1-5, unet/config.json):
# only what differs from UNet2DConditionModel's defaults.
SD15_UNET = {"cross_attention_dim": 768, "attention_head_dim": 8, "sample_size": 64}


@dataclass(frozen=True)
class BenchConfig:
    """What to measure on; the defaults are the issue's: shipped models, 128 px, 20 steps."""

    model: str | None = None  # diffusers folder (None: the shipped base model)
    lora: str = "catalog"  # adapter for the overhead figures
    checker: str | None = None  # checker folder (None: the shipped checker)
    num_prompts: int = 64  # batch figure: distinct prompts, one image each
    repeats: int = 5  # timings per side for the medians
    checker_images: int = 256
    num_inference_steps: int = 20
    guidance_scale: float = 7.5
    height: int = 128
    width: int = 128
    device: str = "cpu"
    clock: str = "wall"  # wall | cpu (CPU seconds of this process)
    cold_start: bool = True  # time `python app.py` to its first served page

    def __post_init__(self):
        if self.clock not in ("wall", "cpu"):
            raise ValueError(f"clock must be 'wall' or 'cpu', got {self.clock!r}")
        if self.num_prompts < 1 or self.repeats < 1 or self.checker_images < 1:
            raise ValueError("num_prompts, repeats and checker_images must be >= 1")


QUICK = {"num_prompts": 8, "repeats": 3, "checker_images": 64}


def _clock(kind: str):
    return time.perf_counter if kind == "wall" else time.process_time


def _medians(fns: dict, repeats: int, clock, setup: dict | None = None) -> dict[str, float]:
    """Median seconds of each function, run interleaved after one warm-up each.

    `setup[name]`, where given, runs untimed before every call of `fns[name]` (to switch a
    shared pipeline into the state that function times).
    """
    setup = setup or {}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(repeats + 1):  # round 0 is the warm-up
        for name, fn in fns.items():
            if name in setup:
                setup[name]()
            t0 = clock()
            fn()
            if i:
                times[name].append(clock() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def bench_prompts(n: int) -> list[str]:
    """n distinct product-scene prompts from the catalog's world, in a fixed order."""
    from genimg.taxonomy import OBJECTS

    pairs = [(o, m, s) for o in OBJECTS.values() for m in o.materials for s in o.scenes]
    return [f"a {s} with a {m} {o.name}" for o, m, s in (pairs * (n // len(pairs) + 1))[:n]]


def matmul_flops(device: str = "cpu", n: int = 4096, repeats: int = 3, clock=time.perf_counter):
    """Dense float32 matmul throughput (FLOP/s): this machine's practical ceiling."""
    import torch

    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = math.inf
    for _ in range(repeats + 1):  # the first is a warm-up
        _sync(device)
        t0 = clock()
        a @ b
        _sync(device)
        best = min(best, clock() - t0)
    return 2 * n**3 / best


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _flop_counter():
    """torch's FlopCounterMode, taught the CPU attention kernel it does not count (torch 2.13
    registers SDPA's CUDA kernels only, so CPU attention would count as free)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def sdpa_cpu(query, key, value, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query, key, value)

    cpu_kernel = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    return FlopCounterMode(display=False, custom_mapping={cpu_kernel: sdpa_cpu})


def unet_flops_per_image(pipe, height: int, width: int, guidance_scale: float) -> float:
    """FLOPs of the UNet calls one denoising step costs per image (CFG: two rows)."""
    import torch

    rows = 2 if guidance_scale > 1 else 1
    f = pipe.vae_scale_factor
    sample = torch.randn(rows, pipe.unet.config.in_channels, height // f, width // f)
    tokens = pipe.tokenizer.model_max_length
    text = torch.randn(rows, tokens, pipe.unet.config.cross_attention_dim)
    counter = _flop_counter()
    unet = pipe.unet
    with torch.inference_mode(), counter:
        # Eager, so each module's hooks see its call; a traced call runs the same ops.
        type(unet).forward(unet, sample.to(unet.device), 500, text.to(unet.device))
    return float(counter.get_total_flops())


def cold_start(model, checker, clock_kind: str = "wall", timeout: float = 600.0) -> float:
    """Seconds from `python app.py` to its first served page (CPU seconds for --clock cpu,
    and then `timeout` counts the app's CPU seconds: a starved machine is not a hang)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, str(_APP), "--port", str(port), "--out", out]
        cmd += ["--model", str(model)] if model else []
        cmd += ["--checker", str(checker)] if checker else []
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"app.py exited: {proc.stderr.read().decode()[-500:]}")
                spent = time.perf_counter() - t0 if clock_kind == "wall" else _cpu_of(proc.pid)
                if spent > timeout:
                    raise RuntimeError(f"app.py served nothing in {timeout:.0f} {clock_kind} s")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                        if r.status == 200:
                            break
                except OSError:
                    time.sleep(0.1)
            wall = time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall if clock_kind == "wall" else cpu


def _cpu_of(pid: int) -> float:
    """CPU seconds a running process has used (Linux /proc; 0 where there is none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _plain_pipeline(folder, device: str):
    """The baseline: diffusers as its README loads it, nothing of genimg's."""
    import torch
    from diffusers import StableDiffusionPipeline

    plain = StableDiffusionPipeline.from_pretrained(
        folder, safety_checker=None, requires_safety_checker=False, dtype=torch.float32
    ).to(device)
    plain.set_progress_bar_config(disable=True)
    return plain


def _progress(out: dict, shown: set) -> None:
    """Each figure on stderr as it is measured: an interrupted run still tells something."""
    for key in [k for k in out if k not in shown]:
        print(f"genimg bench: {key} = {out[key]:.4g}", file=sys.stderr, flush=True)
    shown.update(out)


def bench(cfg: BenchConfig) -> dict:
    """Every figure of the issue, as one dict (see the module docstring)."""
    import torch

    from genimg import adapters, pipeline
    from genimg import checker as ck
    from genimg.batch import Settings, render_batch
    from genimg.parse import parse_prompt
    from genimg.render import render

    clock = _clock(cfg.clock)
    folder = pipeline.check_model(cfg.model or pipeline.DEFAULT_MODEL)
    pipe = pipeline.load_pipeline(folder, device=cfg.device)
    pipe.set_progress_bar_config(disable=True)
    plain = _plain_pipeline(folder, cfg.device)
    size = {"height": cfg.height, "width": cfg.width}
    steps = {"num_inference_steps": cfg.num_inference_steps, "guidance_scale": cfg.guidance_scale}
    out: dict = {}
    shown: set = set()

    # 1. One image: genimg's render against the plain pipeline call
    def plain_one(prompt=PROMPT, seed=0):
        generator = torch.Generator("cpu").manual_seed(seed)
        return plain(prompt, generator=generator, **steps, **size).images

    def ours_one():
        return render(pipe, PROMPT, num_images=1, **steps, **size)

    t0 = clock()
    ours_one()  # the first render of a shape also builds the UNet's graph (genimg.traced)
    first = clock() - t0
    t = _medians({"plain": plain_one, "ours": ours_one}, cfg.repeats, clock)
    out["render_speedup_vs_diffusers"] = t["plain"] / t["ours"]
    out["s_first_render"] = first
    out["s_per_image_single"] = t["ours"]
    _progress(out, shown)

    # 2. A prompts file: render_batch (what `genimg batch` runs) against a loop of plain calls
    prompts = bench_prompts(cfg.num_prompts)
    requests = [(p, k) for k, p in enumerate(prompts)]
    settings = Settings(**steps, **size)
    calls: list[int] = []
    hook = pipe.unet.register_forward_pre_hook(lambda m, args: calls.append(len(args[0])))
    # The matmul ceiling is measured just before and just after the batch: this VM's speed
    # drifts over minutes, and the utilisation must compare rates of the same moments.
    peak_before = matmul_flops(cfg.device, clock=clock)
    t0 = clock()
    images = render_batch(pipe, requests, settings)
    batch_s = clock() - t0
    peak_after = matmul_flops(cfg.device, clock=clock)
    hook.remove()
    t0 = clock()
    naive = [plain_one(p, k)[0] for p, k in requests]
    naive_s = clock() - t0
    out["batch_speedup_vs_naive"] = naive_s / batch_s
    out["images_per_s_batch"] = len(requests) / batch_s
    # UNet FLOPs done during the batch (each row's FLOPs are the same) over the matmul rate.
    per_row = unet_flops_per_image(pipe, cfg.height, cfg.width, 1.0)
    peak = (peak_before + peak_after) / 2
    out["unet_flop_utilization"] = per_row * sum(calls) / batch_s / peak
    out["matmul_gflops"] = peak / 1e9
    out["matmul_gflops_before"] = peak_before / 1e9
    out["matmul_gflops_after"] = peak_after / 1e9
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    _progress(out, shown)

    # 3. Adapters: a fixed adapter fused, then unfused, each timed interleaved with the bare
    # base model. Switching is not timed here: toggling fused/unfused before every render
    # (as this once did) put the first render after a weight merge into the figure.
    lora_pipe = pipeline.load_pipeline(folder, device=cfg.device)
    lora_pipe.set_progress_bar_config(disable=True)
    lora = [adapters.resolve(cfg.lora)]

    def lora_one():
        return render(lora_pipe, PROMPT, num_images=1, **steps, **size)

    # Three times the repeats: the differences sought are a few percent of a render.
    adapters.apply(lora_pipe, lora, fuse=True)
    t = _medians({"base": ours_one, "fused": lora_one}, 3 * cfg.repeats, clock)
    out["fused_lora_overhead"] = t["fused"] / t["base"] - 1
    # Unfused, the adapter can be switched off on its own pipeline: that A/B shares every
    # weight tensor and differs only in the LoRA layers, where two pipelines also differ in
    # memory layout (the bare base pipeline stays in, as a check on the disabled state).
    adapters.apply(lora_pipe, lora, fuse=False)
    t = _medians(
        {"base": ours_one, "disabled": lora_one, "unfused": lora_one},
        3 * cfg.repeats,
        clock,
        setup={"disabled": lora_pipe.disable_lora, "unfused": lora_pipe.enable_lora},
    )
    out["unfused_lora_overhead"] = t["unfused"] / t["disabled"] - 1
    out["unfused_lora_overhead_vs_base_pipeline"] = t["unfused"] / t["base"] - 1
    out["lora_disabled_vs_base_pipeline"] = t["disabled"] / t["base"] - 1
    _progress(out, shown)

    # 4. The checker on rendered images (the batch's, repeated to the count asked)
    checker = ck.load_checker(cfg.checker or ck.DEFAULT_CHECKER, device=cfg.device)
    shots = (images * (cfg.checker_images // len(images) + 1))[: cfg.checker_images]
    requested = parse_prompt(PROMPT)
    ck.check(checker, shots[:8], requested)  # warm-up; caches the text embeddings
    t0 = clock()
    ck.check(checker, shots, requested)
    out["checker_images_per_s"] = len(shots) / (clock() - t0)
    _progress(out, shown)

    # 5. Quality: the same (prompt, seed) through both paths gives the same image and verdict
    pairs = zip(images, naive, strict=True)
    out["max_pixel_diff_vs_naive"] = max(_pixel_diff(a, b) for a, b in pairs)
    for name, shots in (("batch", images), ("naive", naive)):
        hits = [
            ck.check(checker, [im], parse_prompt(p))[0]
            for im, p in zip(shots, prompts, strict=True)
        ]
        out[f"all_present_rate_{name}"] = sum(h["all_present"] for h in hits) / len(hits)
    _progress(out, shown)

    # 6. Starting the app, in a fresh process
    if cfg.cold_start:
        out["cold_start_s"] = cold_start(cfg.model, cfg.checker, cfg.clock)
    _progress(out, shown)
    out["config"] = {
        **{k: v for k, v in vars(cfg).items() if k != "cold_start"},
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": _machine(cfg.device),
    }
    return out


def _pixel_diff(a, b) -> int:
    import numpy as np

    return int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())


def bench_sd15(
    device: str = "cpu", batches=(1, 8), size: int = 512, repeats: int = 3, clock_kind="wall"
) -> dict:
    """Seconds per UNet step of SD 1.5's UNet (random weights) and its FLOP utilisation."""
    import torch
    from diffusers import UNet2DConditionModel

    clock = _clock(clock_kind)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET).to(device).eval()
    peak = matmul_flops(device, clock=clock)
    rows = []
    for batch in batches:
        sample = torch.randn(batch, 4, size // 8, size // 8, device=device)
        text = torch.randn(batch, 77, 768, device=device)

        def step(sample=sample, text=text):
            unet(sample, 500, encoder_hidden_states=text)
            _sync(device)

        counter = _flop_counter()
        with torch.inference_mode():
            with counter:
                step()
            seconds = _medians({"step": step}, repeats, clock)["step"]
        flops = float(counter.get_total_flops())
        rows.append(
            {
                "batch": batch,
                "s_per_step": seconds,
                "gflop_per_step": flops / 1e9,
                "flop_utilization": flops / seconds / peak,
            }
        )
    return {
        "arch": "sd15",
        "height": size,
        "width": size,
        "unet_params_m": sum(p.numel() for p in unet.parameters()) / 1e6,
        "matmul_gflops": peak / 1e9,
        "steps": rows,
        "config": {"device": device, "clock": clock_kind, "threads": torch.get_num_threads()},
    }


def _machine(device: str) -> str:
    import platform

    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        models = [ln for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")]
        name = models[0].split(":", 1)[1].strip() if models else name
    return f"{name}, {os.cpu_count()} cores"


# -- the `genimg bench` command --------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "examples:\n  genimg bench                 # the issue's figures, shipped models\n"
        "  genimg bench --quick --clock cpu --threads 1   # a busy machine: CPU seconds\n"
        "  genimg bench --arch sd15 --device cuda          # SD 1.5 UNet steps at 512x512\n\n"
        "Prints one JSON object; every speed figure is a ratio measured in this run."
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="8 prompts, 3 repeats, 64 checker images")
    add("--json", action="store_true", help="JSON on one line (default: indented)")
    add("--arch", choices=["genimg", "sd15"], default="genimg", help="what to time")
    add("--device", default="cpu", help="torch device (default cpu)")
    add("--clock", choices=["wall", "cpu"], default="wall", help="wall or CPU seconds")
    add("--threads", type=int, default=None, help="torch threads (default: torch's)")
    add("--model", default=None, help="diffusers folder (default: the shipped model)")
    add("--lora", default="catalog", help="adapter for the overhead figures (catalog)")
    add("--checker", default=None, help="checker folder (default: the shipped checker)")
    add("--num-inference-steps", type=int, default=20, help="denoising steps (default 20)")
    add("--height", type=int, default=128, help="pixels (default 128)")
    add("--width", type=int, default=128, help="pixels (default 128)")
    add("--no-cold-start", action="store_true", help="skip timing app.py's start")


def run(args: argparse.Namespace) -> int:
    import torch

    from genimg.errors import UsageError, check_int, check_size
    from genimg.render import _quiet_libraries

    if args.threads is not None:
        torch.set_num_threads(check_int("--threads", args.threads, 1, 1024))
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device", f"{args.device}: no CUDA device here")
    _quiet_libraries()
    if args.arch == "sd15":
        result = bench_sd15(
            args.device,
            batches=(1, 2) if args.quick else (1, 8),
            size=256 if args.quick else 512,
            repeats=1 if args.quick else 3,
            clock_kind=args.clock,
        )
    else:
        steps = check_int("--num-inference-steps", args.num_inference_steps, 1, 1000)
        cfg = BenchConfig(
            model=args.model,
            lora=args.lora,
            checker=args.checker,
            num_inference_steps=steps,
            height=check_size("--height", args.height),
            width=check_size("--width", args.width),
            device=args.device,
            clock=args.clock,
            cold_start=not args.no_cold_start,
            **(QUICK if args.quick else {}),
        )
        result = bench(cfg)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0
