"""The UNet run from TorchScript traces: the same kernels, without Python's cost per module.

genimg's UNet is small (~6M parameters on 16x16 latents), so a sampling step is mostly
Python: diffusers' module calls, hooks and shape logic around ~1,400 small ops. A trace
records the ops once per input shape and replays them from C++, bit-identical to eager.

Why a trace and not the newer tools (measured here, one UNet call, 2 CFG rows, 1 thread):
`torch.jit.trace` 1.33x eager in ~1 s; a `torch.export` program run as a GraphModule 1.08x
in ~4 s; `torch.compile` (inductor) 1.07x after a 204 s compile. TorchScript is deprecated
in favour of the latter two; torch is pinned (pyproject), and this module is the only user.

A trace replays one path: it is used only where that path is the one eager would take (no
gradients, eval mode, one timestep for all rows, no extra UNet arguments) and is keyed by
everything that picks a path: shapes, dtypes, device and the peft adapter state (which
adapters, their weights, fused or not), so loading, switching or fusing an adapter traces
anew and a stale graph is never run. A graph shares the UNet's parameters, so in-place
changes to weights are seen; replacing a module of a traced UNet is not (load anew).
"""

from __future__ import annotations

import contextlib
import warnings

__all__ = ["fixed_adapters", "trace_unet"]

_MAX_GRAPHS = 16  # traced graphs kept per UNet, the oldest dropped first (no weight copies)


def trace_unet(unet) -> None:
    """Make `unet(...)` run from traced graphs where they give eager's result (idempotent)."""
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
            graph = graphs.get(key)
            if graph is None:
                if len(graphs) >= _MAX_GRAPHS:
                    del graphs[next(iter(graphs))]
                graph = graphs[key] = _trace(unet, sample, t, encoder_hidden_states)
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


def _trace(unet, sample, t, encoder_hidden_states):
    import torch

    class Call(torch.nn.Module):
        # A module, not a function, so the UNet's parameters stay parameters of the graph
        # (seen by in-place updates such as fusing), not constants copied into it.
        def __init__(self):
            super().__init__()
            self.unet = unet

        def forward(self, sample, t, encoder_hidden_states):
            out = type(unet).forward(unet, sample, t, encoder_hidden_states, return_dict=False)
            return out[0]

    with warnings.catch_warnings():
        # The tracer's notes on Python bools and its deprecation notice: see the docstring.
        warnings.simplefilter("ignore")
        return torch.jit.trace(Call(), (sample, t, encoder_hidden_states), check_trace=False)


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
