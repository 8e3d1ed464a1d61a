"""The UNet run from compiled graphs: onnxruntime on the CPU, TorchScript traces elsewhere.

genimg's UNet is small (~6M parameters on 16x16 latents), so a sampling step is mostly the
cost of its ~1,400 small ops, not of their arithmetic, and eager PyTorch adds Python's cost
per module on top. A graph is made once per input shape and replayed.

On the CPU in float32, for a small UNet (`_SESSION_MAX_PARAMS`), the graph is the UNet
exported to ONNX and run by onnxruntime, which packs the weights for its kernels once and
fuses ops: one UNet call at 2 CFG rows 8.3 ms against a trace's 15.2 and eager's ~20, 104
against 150 ms at 32 rows (2 threads, the shipped UNet); a render 1.07-1.33x the traced
one, `render_batch` 1.18-1.23x. Its result is eager's to float rounding (~5e-6 on the
UNet's output), not bit for bit, and an image's bits still do not depend on its batch (a
session per shape; tests). Elsewhere a `torch.jit.trace` replays eager's own kernels from
C++ (1.33x eager at 2 rows, 1 thread; a `torch.export` program run as a GraphModule 1.08x;
`torch.compile` 1.07x after a 204 s compile); a UNet the exporter or onnxruntime cannot
take is traced too, with a warning. TorchScript and the ONNX exporter used here are
deprecated; torch is pinned.

A graph replays one path: it is used only where that path is the one eager would take (no
gradients, eval mode, one timestep for all rows, no extra UNet arguments) and is keyed by
everything that picks a path: shapes, dtypes, device, thread count and the peft adapter
state (which adapters, their weights, fused or not), so loading, switching or fusing an
adapter makes a new graph and a stale one is never run. A trace shares the UNet's tensors;
an onnxruntime session holds copies, so it is rebuilt when any weight it copied has changed
(in place or replaced). Replacing a module of a UNet is not seen (load anew).
"""

from __future__ import annotations

import contextlib
import logging
import warnings

from genimg.errors import first_line

__all__ = ["fixed_adapters", "trace_unet"]

# Graphs kept per UNet, the least recently used dropped first. An onnxruntime session holds
# its weights and an arena for its activations: ~60-130 MB at 2-8 rows, ~260 MB at 32.
_MAX_GRAPHS = 8
# onnxruntime pays where a UNet's ops are small (genimg's: 6M parameters). A large one, such
# as SD 1.5's 860M, is traced: its time is arithmetic, and a session per shape would copy its
# 3.4 GB of weights (past the 2 GB an ONNX file holds without external data).
_SESSION_MAX_PARAMS = 100_000_000


def trace_unet(unet) -> None:
    """Make `unet(...)` run from graphs where they give eager's result (idempotent)."""
    if getattr(unet, "_genimg_graphs", None) is not None:
        return
    graphs: dict = {}
    eager = unet.forward

    def forward(sample, timestep, encoder_hidden_states, *args, return_dict=True, **kwargs):
        import torch

        if (
            args
            or any(v is not None for v in kwargs.values())
            or unet.training
            or torch.is_grad_enabled()
            or torch.as_tensor(timestep).numel() != 1
        ):
            return eager(
                sample, timestep, encoder_hidden_states, *args, return_dict=return_dict, **kwargs
            )
        t = torch.as_tensor(timestep, device=sample.device).reshape(())
        shapes = (
            tuple(sample.shape),
            sample.dtype,
            str(sample.device),
            tuple(encoder_hidden_states.shape),
            encoder_hidden_states.dtype,
            t.dtype,
            torch.get_num_threads(),  # an onnxruntime session keeps the count it was made with
        )
        fixed = unet._genimg_fixed  # (state, {shapes: graph}) inside `fixed_adapters`
        graph = fixed[1].get(shapes) if fixed else None
        if graph is None:
            if fixed:
                state = fixed[0]
            else:
                state = _adapter_state(unet)
                _refresh_merged(unet, state)
            key = (*shapes, state)
            graph = graphs.pop(key, None)
            if graph is None or not graph.fresh():
                if len(graphs) >= _MAX_GRAPHS:
                    del graphs[next(iter(graphs))]
                graph = _graph(unet, sample, t, encoder_hidden_states)
            graphs[key] = graph
            if fixed:
                fixed[1][shapes] = graph
        out = graph(sample, t, encoder_hidden_states)
        if not return_dict:
            return (out,)
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        return UNet2DConditionOutput(sample=out)

    unet.forward = forward
    unet._genimg_graphs = graphs
    unet._genimg_fixed = None


@contextlib.contextmanager
def fixed_adapters(unet):
    """Within: the adapter state is read once, not before every UNet call.

    Reading peft's state of every adapter layer and keying the graphs by it costs ~0.9 ms a
    call with the shipped LoCon adapter's 106 layers (6% of a traced call at 2 rows, the
    most of what the adapter costs fused). A render's or a batch's steps cannot change the
    adapters, so they run in here. The caller must not load, switch, fuse or change an
    adapter's weights inside (nesting is fine; a UNet that is not traced is left alone).
    """
    if getattr(unet, "_genimg_graphs", None) is None or unet._genimg_fixed is not None:
        yield
        return
    import torch

    state = _adapter_state(unet)
    with torch.no_grad():  # as the graphs run: merges made with a gradient are not kept
        _refresh_merged(unet, state)
    unet._genimg_fixed = (state, {})
    try:
        yield
    finally:
        unet._genimg_fixed = None


def _graph(unet, sample, t, encoder_hidden_states):
    """A graph of the UNet's call on these inputs: an onnxruntime session for a small UNet in
    float32 on the CPU, a TorchScript trace elsewhere."""
    import torch

    if (
        sample.device.type == "cpu"
        and sample.dtype == torch.float32
        and sum(p.numel() for p in unet.parameters()) <= _SESSION_MAX_PARAMS
    ):
        try:
            return _Session(unet, sample, t, encoder_hidden_states)
        except Exception as err:  # any failure of the exporter or of onnxruntime
            # A UNet or adapter the exporter or onnxruntime cannot take still renders, as
            # before this backend: the trace gives eager's bits, only slower.
            logging.getLogger("genimg").warning(
                "onnxruntime graph failed (%s: %s); using a TorchScript trace",
                type(err).__name__,
                first_line(err)[:200],
            )
    return _Trace(unet, sample, t, encoder_hidden_states)


def _call_module(unet):
    """The UNet's eager call as a module, so that its parameters stay parameters of the
    exported or traced graph (a trace then sees in-place updates such as fusing)."""
    import torch

    class Call(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unet = unet

        def forward(self, sample, t, encoder_hidden_states):
            return type(unet).forward(unet, sample, t, encoder_hidden_states, return_dict=False)[0]

    return Call().eval()  # graphs are made in eval mode only; the exporter restores this mode


class _Trace:
    """A TorchScript trace: eager's kernels replayed from C++, reading the live weights."""

    def __init__(self, unet, sample, t, encoder_hidden_states):
        import torch

        with warnings.catch_warnings():
            # The tracer's notes on Python bools and its deprecation notice: see the docstring.
            warnings.simplefilter("ignore")
            self.graph = torch.jit.trace(
                _call_module(unet), (sample, t, encoder_hidden_states), check_trace=False
            )

    def fresh(self) -> bool:
        return True  # the trace shares the UNet's tensors

    def __call__(self, sample, t, encoder_hidden_states):
        return self.graph(sample, t, encoder_hidden_states)


class _Session:
    """The UNet exported to ONNX and run by onnxruntime, its weights copied in as constants.

    onnxruntime packs constant weights for its kernels once and fuses ops, and its cost per
    op is lower than the trace's: one UNet call at 2 CFG rows 8.3 ms against the trace's
    15.2, 104 against 150 ms at 32 rows (2 threads, this repo's UNet). The copy is why it is
    checked before use: it records every weight's data pointer and in-place version counter
    and is rebuilt when any has changed (weights fed as inputs each call, to be read live,
    lose most of the gain: 15.8 ms).
    """

    def __init__(self, unet, sample, t, encoder_hidden_states):
        import io

        import onnxruntime
        import torch

        module = _call_module(unet)
        self.weights = [*module.parameters(), *module.buffers()]
        self.stamp = _stamp(self.weights)
        onnx = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on Python bools, as a trace's
            torch.onnx.export(
                module,
                (sample, t, encoder_hidden_states),
                onnx,
                dynamo=False,
                opset_version=17,
                input_names=["sample", "t", "context"],
                output_names=["out"],
            )
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        self.session = onnxruntime.InferenceSession(
            onnx.getvalue(), options, providers=["CPUExecutionProvider"]
        )

    def fresh(self) -> bool:
        return _stamp(self.weights) == self.stamp

    def __call__(self, sample, t, encoder_hidden_states):
        import torch

        feeds = {
            "sample": sample.detach().contiguous().numpy(),
            "t": t.detach().numpy(),
            "context": encoder_hidden_states.detach().contiguous().numpy(),
        }
        return torch.from_numpy(self.session.run(None, feeds)[0])


def _stamp(tensors: list) -> list:
    return [(w.data_ptr(), w._version) for w in tensors]


def _tuner_layers(unet) -> list:
    """peft's adapter layers of the UNet ([] without adapters)."""
    if not getattr(unet, "_hf_peft_config_loaded", False):
        return []
    # The set of adapter layers changes only with the set of adapters: find them once per set
    # (walking the ~600 modules costs ~2 ms, most of a traced step's overhead).
    names = tuple(sorted(unet.peft_config))
    found = getattr(unet, "_genimg_tuner_layers", None)
    if found is None or found[0] != names:
        from peft.tuners.tuners_utils import BaseTunerLayer

        layers = [m for m in unet.modules() if isinstance(m, BaseTunerLayer)]
        found = unet._genimg_tuner_layers = (names, layers)
    return found[1]


def _refresh_merged(unet, state: tuple) -> None:
    """Bring the merged weights that `genimg.adapters.weight_space` keeps per layer up to
    date before a graph reads them. Each layer's own check costs ~18 us (2 ms a call for a
    LoCon adapter's 106 layers), so they run only when the adapter state or any adapted
    weight has changed: in place (version counters) or replaced (data pointers)."""
    layers = _tuner_layers(unet)
    watch = getattr(unet, "_genimg_merge_watch", None)
    if watch is None or watch[0] is not layers:
        kept = [m for m in layers if hasattr(m, "_genimg_refresh")]
        weights = [
            w
            for m in kept
            for w in (
                m.base_layer.weight,
                *(a.weight for a in m.lora_A.values()),
                *(b.weight for b in m.lora_B.values()),
            )
        ]
        watch = unet._genimg_merge_watch = (layers, [m._genimg_refresh for m in kept], weights)
    if not watch[1]:
        return
    stamp = (state, [w._version for w in watch[2]], [w.data_ptr() for w in watch[2]])
    if stamp != getattr(unet, "_genimg_merge_stamp", None):
        for refresh in watch[1]:
            refresh()
        unet._genimg_merge_stamp = stamp


def _adapter_state(unet) -> tuple:
    """What of peft's adapter layers changes the traced path: names, weights, fused or not."""
    layers = _tuner_layers(unet)
    if not layers:
        return ()
    return (tuple(sorted(unet.peft_config)),) + tuple(
        (
            tuple(m.active_adapters),
            tuple(m.merged_adapters),
            m.disable_adapters,
            tuple(getattr(m, "scaling", {}).items()),
            tuple(map(id, getattr(m, "lora_A", {}).values())),  # an adapter deleted and reloaded
        )
        for m in layers
    )
