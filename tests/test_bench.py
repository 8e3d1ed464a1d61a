"""genimg bench --quick on tiny random models: one JSON object, every figure measured."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tiny_assets import FAST, make_checker, make_lora, make_model

from genimg import bench
from genimg.cli import main

# Ratios and rates: each must be a finite number above zero.
POSITIVE = (
    "render_speedup_vs_diffusers",
    "batch_speedup_vs_naive",
    "checker_images_per_s",
    "unet_flop_utilization",
    "cold_start_s",
    "peak_rss_mb",
    "images_per_s_batch",
    "s_per_image_single",
    "matmul_gflops",
    "matmul_gflops_before",
    "matmul_gflops_after",
)
# Adapter time / base time - 1: near zero when fused, so noise may push it below zero.
OVERHEADS = (
    "fused_lora_overhead",
    "unfused_lora_overhead",
    "unfused_lora_overhead_vs_base_pipeline",
    "lora_disabled_vs_base_pipeline",
)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    make_lora(make_model(root / "model"), root / "lora")
    make_checker(root / "checker")
    return root


def test_quick_bench_reports_every_figure(assets, capsys):
    argv = ["bench", "--quick", "--json", "--clock", "cpu", *FAST]
    argv += ["--model", assets / "model", "--lora", assets / "lora"]
    argv += ["--checker", assets / "checker"]
    assert main([str(a) for a in argv]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in POSITIVE:
        assert math.isfinite(result[key]) and result[key] > 0, (key, result[key])
    for key in OVERHEADS:
        assert math.isfinite(result[key]) and result[key] > -1, (key, result[key])
    assert 0 < result["unet_flop_utilization"] < 1
    # The ceiling is the mean of the matmuls taken just before and just after the batch.
    pair = result["matmul_gflops_before"] + result["matmul_gflops_after"]
    assert result["matmul_gflops"] == pytest.approx(pair / 2)
    # The batch path draws what one plain diffusers call per image draws, seed for seed.
    assert result["max_pixel_diff_vs_naive"] <= 2
    assert result["all_present_rate_batch"] == result["all_present_rate_naive"]
    assert result["config"]["num_prompts"] == 8 and result["config"]["num_inference_steps"] == 2


def test_medians_interleave_and_leave_setup_untimed():
    now, log = [0.0], []

    def tick(name: str, seconds: float):
        def fn():
            log.append(name)
            now[0] += seconds

        return fn

    t = bench._medians(
        {"a": tick("a", 1.0), "b": tick("b", 2.0)},
        3,
        lambda: now[0],
        setup={"a": tick("setup a", 100.0)},  # before the clock starts: not in a's time
    )
    assert t == {"a": 1.0, "b": 2.0}
    assert log == ["setup a", "a", "b"] * 4  # one warm-up round, then 3 timed


def test_unet_flops_match_a_hand_count(assets):
    """FlopCounterMode's total equals the convolutions, linear layers and attention products
    counted by hand from the shapes each layer sees."""
    from diffusers.models.activations import GEGLU
    from diffusers.models.attention_processor import Attention

    from genimg import pipeline

    pipe = pipeline.load_pipeline(assets / "model")
    hand = []

    def conv(m, args, out):
        k = m.kernel_size[0] * m.kernel_size[1]
        hand.append(2 * out.numel() * m.in_channels // m.groups * k)

    def linear(m, args, out):
        rows = out.numel() // m.out_features
        if getattr(m, "_genimg_rowwise", False) and torch.equal(out, out[:1].expand_as(out)):
            rows = 1  # the timestep layers compute one row and repeat it (load_pipeline)
        hand.append(2 * rows * m.out_features * m.in_features)

    def geglu(m, args, out):
        # split_geglu (load_pipeline): two linears on the projection's halves, so its own
        # forward, and hook, never runs; together they are the whole projection's product.
        assert m._genimg_split
        rows = out.numel() // (m.proj.out_features // 2)
        hand.append(2 * rows * m.proj.out_features * m.proj.in_features)

    def attention(m, args, kwargs, out):
        q = args[0] if args else kwargs["hidden_states"]
        k = kwargs.get("encoder_hidden_states")
        k = q if k is None else k
        # Q K^T and softmax(.) V: two products of B x Lq x Lk x inner dim each
        hand.append(4 * q.shape[0] * q.shape[1] * k.shape[1] * m.to_q.out_features)

    for m in pipe.unet.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(conv)
        elif isinstance(m, torch.nn.Linear):
            m.register_forward_hook(linear)
        elif isinstance(m, Attention):
            m.register_forward_hook(attention, with_kwargs=True)
        elif isinstance(m, GEGLU):
            m.register_forward_hook(geglu)
    flops = bench.unet_flops_per_image(pipe, 64, 64, guidance_scale=1.0)
    assert flops == sum(hand) > 0
    hand.clear()
    cfg = bench.unet_flops_per_image(pipe, 64, 64, guidance_scale=7.5)
    # CFG: two rows, but the timestep layers compute their shared row once
    assert cfg == sum(hand) and 1.95 * flops < cfg < 2 * flops


def test_bench_prompts_are_distinct_and_fixed():
    prompts = bench.bench_prompts(64)
    assert len(set(prompts)) == 64
    assert prompts == bench.bench_prompts(64)
    assert prompts[0] == "a bathroom with a wooden shelf"


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="clock"):
        bench.BenchConfig(clock="sundial")
