"""The UNet's graphs: eager's result, a graph per shape and adapter state, never stale, eager
where it must."""

from __future__ import annotations

import pytest
import torch
from tiny_assets import TINY, make_lora

from genimg import adapters, pipeline, traced
from genimg.models import build_components
from genimg.traced import _MAX_GRAPHS, _Session, _Trace

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    return pipeline.save_pipeline(build_components(TINY), tmp_path_factory.mktemp("m") / "tiny")


def _inputs(rows: int, tokens: int = 7, side: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    sample = torch.randn(rows, 4, side, side, generator=gen)
    return sample, torch.randn(rows, tokens, 32, generator=gen)


def _both(unet, x, context, t=500):
    """(graph call, eager call) of the same inputs."""
    with torch.no_grad():
        traced = unet(x, t, encoder_hidden_states=context, return_dict=False)[0]
        eager = type(unet).forward(unet, x, t, encoder_hidden_states=context).sample
    return traced, eager


def _close(graph_out, eager_out):
    """onnxruntime's result is eager's to float rounding (~1e-6 here), not bit for bit."""
    torch.testing.assert_close(graph_out, eager_out, atol=1e-5, rtol=0)


def test_graphs_give_eagers_result_one_onnxruntime_session_per_shape(model_dir):
    unet = pipeline.load_pipeline(model_dir).unet
    for rows, tokens, side in [(2, 7, 8), (2, 7, 8), (4, 7, 8), (2, 14, 8), (2, 7, 16)]:
        x, context = _inputs(rows, tokens, side)
        _close(*_both(unet, x, context, t=torch.tensor(321)))
    assert len(unet._genimg_graphs) == 4  # the repeated shape reused its graph
    assert all(isinstance(g, _Session) for g in unet._genimg_graphs.values())  # CPU, float32
    x, context = _inputs(2, seed=1)  # new values, same shape: the graph is not a cache of outputs
    traced, eager = _both(unet, x, context, t=17)
    _close(traced, eager)
    assert (traced - _both(unet, *_inputs(2), t=17)[0]).abs().max() > 1e-3
    assert len(unet._genimg_graphs) == 4
    # An image's rows do not depend on the batch: the first two of four equal two alone.
    x4, context4 = _inputs(4, seed=2)
    with torch.no_grad():
        four = unet(x4, 500, encoder_hidden_states=context4).sample
        two = unet(x4[:2], 500, encoder_hidden_states=context4[:2]).sample
    assert torch.equal(four[:2], two)


def test_a_trace_gives_eagers_bits(model_dir, monkeypatch):
    # The graph for other devices and dtypes and for large UNets, built here on the CPU.
    unet = pipeline.load_pipeline(model_dir).unet
    monkeypatch.setattr(traced, "_SESSION_MAX_PARAMS", 1000)  # the tiny UNet is "large"
    _both(unet, *_inputs(2))
    assert [type(g) for g in unet._genimg_graphs.values()] == [_Trace]
    x, context = _inputs(2)
    t = torch.tensor(321)
    with torch.no_grad():
        graph = _Trace(unet, x, t, context)
        assert torch.equal(graph(x, t, context), _both(unet, x, context, t=t)[1])
        unet.conv_in.weight.mul_(1.1)  # the trace reads the live weights
        assert torch.equal(graph(x, t, context), _both(unet, x, context, t=t)[1])


def test_a_failed_export_falls_back_to_a_trace_and_says_so(model_dir, monkeypatch, caplog):
    def fail(*args):
        raise RuntimeError("Exporting the operator 'aten::fancy' is not supported\nmore")

    unet = pipeline.load_pipeline(model_dir).unet
    monkeypatch.setattr(traced, "_Session", fail)
    with caplog.at_level("WARNING", logger="genimg"):
        graph_out, eager = _both(unet, *_inputs(2))
    assert torch.equal(graph_out, eager)
    assert [type(g) for g in unet._genimg_graphs.values()] == [_Trace]
    assert caplog.messages == [
        "onnxruntime graph failed (RuntimeError: Exporting the operator 'aten::fancy' is not "
        "supported); using a TorchScript trace"
    ]


def test_a_session_is_rebuilt_when_a_weight_changes(model_dir):
    unet = pipeline.load_pipeline(model_dir).unet
    x, context = _inputs(2)
    before, _ = _both(unet, x, context)
    with torch.no_grad():
        unet.conv_in.weight.mul_(1.1)  # in place: its version counter moves
    changed, eager = _both(unet, x, context)
    _close(changed, eager)
    assert (changed - before).abs().max() > 1e-3
    unet.conv_out.bias.data = unet.conv_out.bias.data + 0.5  # replaced: its data pointer moves
    replaced, eager = _both(unet, x, context)
    _close(replaced, eager)
    assert (replaced - changed).abs().max() > 0.4
    assert len(unet._genimg_graphs) == 1  # rebuilt under the same key, not added


def test_gradients_training_mode_and_per_row_timesteps_run_eager(model_dir):
    unet = pipeline.load_pipeline(model_dir).unet
    x, context = _inputs(2)
    unet(x, 500, encoder_hidden_states=context).sample.sum().backward()  # grad enabled
    assert unet.conv_in.weight.grad is not None and unet.conv_in.weight.grad.abs().sum() > 0
    with torch.no_grad():
        unet(x, torch.tensor([10, 900]), encoder_hidden_states=context)  # rows differ
        unet.train()
        unet(x, 500, encoder_hidden_states=context)
        unet.eval()
    assert unet._genimg_graphs == {}


def test_adapter_load_weight_fuse_and_unload_trace_anew(model_dir, tmp_path):
    pipe = pipeline.load_pipeline(model_dir)
    make_lora(model_dir, tmp_path / "a", seed=1)
    make_lora(model_dir, tmp_path / "b", seed=2)
    x, context = _inputs(2)
    seen = []
    steps = [
        [],
        [adapters.resolve(f"{tmp_path / 'a'}:1.0")],  # fused
        [adapters.resolve(f"{tmp_path / 'a'}:0.5"), adapters.resolve(f"{tmp_path / 'b'}:-1")],
        [adapters.resolve(f"{tmp_path / 'a'}:0.7"), adapters.resolve(f"{tmp_path / 'b'}:-1")],
        [],
    ]
    for specs in steps:
        adapters.apply(pipe, specs)
        traced, eager = _both(pipe.unet, x, context)
        _close(traced, eager)
        seen.append(traced)
    for a, b in zip(seen, seen[1:], strict=False):
        assert (a - b).abs().max() > 1e-4  # every step changed the output, and so the graph
    torch.testing.assert_close(seen[-1], seen[0], atol=1e-5, rtol=0)  # unloaded: the base again


def test_graph_cache_is_bounded(model_dir):
    unet = pipeline.load_pipeline(model_dir).unet
    for tokens in range(1, _MAX_GRAPHS + 3):
        _both(unet, *_inputs(1, tokens))
    assert len(unet._genimg_graphs) == _MAX_GRAPHS
    newest = [key[3][1] for key in unet._genimg_graphs]  # the text length of each graph's input
    assert newest == list(range(3, _MAX_GRAPHS + 3))  # the two oldest were dropped


def test_split_geglu_gives_diffusers_result_and_leaves_adapted_projections(model_dir):
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    ours = pipeline.load_pipeline(model_dir).unet
    plain = UNet2DConditionModel.from_pretrained(model_dir / "unet").eval()  # diffusers' GEGLU
    x, context = _inputs(2)
    projections = [m.ff.net[0].proj for m in ours.modules() if hasattr(m, "ff")]
    seen = []
    hooks = [p.register_forward_hook(lambda *a: seen.append(1)) for p in projections]
    with torch.no_grad():
        split = ours(x, 500, encoder_hidden_states=context).sample
        whole = plain(x, 500, encoder_hidden_states=context).sample
    for hook in hooks:
        hook.remove()
    assert projections and seen == []  # the fused projection never ran: two linears did
    torch.testing.assert_close(split, whole, atol=1e-5, rtol=0)
    # An adapter on the projection itself: diffusers' path, so the adapter is applied.
    config = LoraConfig(r=4, target_modules=["net.0.proj"], init_lora_weights=False)
    for unet in (ours, plain):
        torch.manual_seed(3)
        unet.add_adapter(config)
        unet.eval()
    with torch.no_grad():
        adapted = ours(x, 500, encoder_hidden_states=context).sample
        expected = plain(x, 500, encoder_hidden_states=context).sample
    assert (adapted - split).abs().max() > 1e-3
    torch.testing.assert_close(adapted, expected, atol=1e-5, rtol=0)


def test_fixed_adapters_reads_the_state_once_and_gives_the_same_bits(
    model_dir, tmp_path, monkeypatch
):
    pipe = pipeline.load_pipeline(model_dir)
    make_lora(model_dir, tmp_path / "a", seed=1)
    adapters.apply(pipe, [adapters.resolve(f"{tmp_path / 'a'}:0.5")], fuse=False)
    reads = []
    state = traced._adapter_state
    monkeypatch.setattr(traced, "_adapter_state", lambda unet: reads.append(1) or state(unet))
    x, context = _inputs(2)
    free, _ = _both(pipe.unet, x, context)
    assert len(reads) == 1  # outside: before every call
    with torch.no_grad(), traced.fixed_adapters(pipe.unet), traced.fixed_adapters(pipe.unet):
        calls = [pipe.unet(x, 500, encoder_hidden_states=context).sample for _ in range(4)]
        x4, context4 = _inputs(4)
        four = pipe.unet(x4, 500, encoder_hidden_states=context4).sample  # its own graph
    assert len(reads) == 2 and pipe.unet._genimg_fixed is None
    for out in calls:
        assert torch.equal(out, free)
    _close(four, _both(pipe.unet, x4, context4)[1])
    # An adapter weight changed in place, the context entered with gradients on (as render()
    # enters it, outside the pipeline's no_grad): the graph reads the new merge.
    with torch.no_grad():
        next(m for m in pipe.unet.modules() if hasattr(m, "lora_B")).lora_B["a"].weight.add_(0.5)
    with traced.fixed_adapters(pipe.unet), torch.no_grad():
        changed = pipe.unet(x, 500, encoder_hidden_states=context).sample
    eager = _both(pipe.unet, x, context)[1]
    _close(changed, eager)
    assert (changed - free).abs().max() > 1e-4
    adapters.apply(pipe, [adapters.resolve(f"{tmp_path / 'a'}:-1")], fuse=False)
    switched, eager = _both(pipe.unet, x, context)  # outside again: the switch is seen
    _close(switched, eager)
    assert (switched - free).abs().max() > 1e-4
