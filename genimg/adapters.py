"""LoRA adapters at render time: find them, check them, put them on a loaded pipeline.

An adapter is named as a web UI's LoRA folder does it: a name in `lora/` (a folder holding
`pytorch_lora_weights.safetensors`, or `lora/NAME.safetensors`), or any folder or
`.safetensors` file, with an optional weight: `NAME[:W]`. Loading is diffusers' own
`load_lora_weights` (diffusers and kohya formats); pickle files are refused, never opened.
Switching adapters or weights reuses the loaded base model; one adapter alone is fused into
the weights for speed (peft merge) and unfused before the next switch. Unfused adapters on
the UNet run in weight space (`weight_space`), at about half peft's cost.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from genimg.errors import UsageError, check_float, first_line

__all__ = ["LORA_DIR", "WEIGHT_NAME", "Lora", "apply", "list_adapters", "resolve", "weight_space"]

LORA_DIR = Path(__file__).resolve().parent.parent / "lora"
WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # diffusers' own file name
_PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")
_MAX_WEIGHT = 2.0


@dataclass(frozen=True)
class Lora:
    name: str  # adapter name inside the pipeline
    path: Path  # the .safetensors file
    weight: float = 1.0  # multiplies the adapter's update; 0 turns it off

    def record(self) -> dict:
        """What a render records about the adapter (AUTOMATIC1111 writes `Lora hashes`)."""
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:12]
        return {"name": self.name, "weight": self.weight, "path": str(self.path), "hash": digest}


def list_adapters(lora_dir: Path | str = LORA_DIR) -> list[str]:
    """Names of the adapters in `lora_dir`: folders with weights, and .safetensors files."""
    root = Path(lora_dir)
    if not root.is_dir():
        return []
    names = [p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.safetensors"))]
    names += [p.stem for p in root.glob("*.safetensors")]
    return sorted(set(names))


def resolve(spec: str, lora_dir: Path | str = LORA_DIR) -> Lora:
    """`NAME[:W]` -> a checked Lora. Raises UsageError naming the adapter."""
    name, weight = spec, 1.0
    head, sep, tail = spec.rpartition(":")
    if sep:
        try:
            weight = float(tail)
        except ValueError:
            pass  # a colon inside a path, not a weight
        else:
            name = head
            weight = check_float("--lora", weight, -_MAX_WEIGHT, _MAX_WEIGHT)
    if not name:
        raise UsageError("--lora", f"{spec!r}: expected NAME[:WEIGHT]")
    path = _find(name, Path(lora_dir))
    check_file(path)
    # peft adapter names become module attribute keys: keep them to word characters.
    return Lora(
        re.sub(r"\W", "_", path.parent.name if path.name == WEIGHT_NAME else path.stem),
        path,
        weight,
    )


def _find(name: str, lora_dir: Path) -> Path:
    for candidate in (Path(name), lora_dir / name, lora_dir / f"{name}.safetensors"):
        if candidate.is_file():
            if candidate.suffix in _PICKLE_SUFFIXES:
                raise UsageError(
                    "--lora",
                    f"{candidate} is a pickle file; refusing to unpickle "
                    "it: convert it to safetensors",
                )
            if candidate.suffix != ".safetensors":
                raise UsageError("--lora", f"{candidate} is not a .safetensors file")
            return candidate
        if candidate.is_dir():
            if (candidate / WEIGHT_NAME).is_file():
                return candidate / WEIGHT_NAME
            files = sorted(candidate.glob("*.safetensors"))
            if len(files) == 1:
                return files[0]
            if files:
                raise UsageError(
                    "--lora",
                    f"{candidate} holds several weight files "
                    f"({', '.join(f.name for f in files)}); name one",
                )
            pickles = [p.name for p in candidate.iterdir() if p.suffix in _PICKLE_SUFFIXES]
            what = f"only pickle files ({', '.join(pickles)}), refused" if pickles else "no weights"
            raise UsageError("--lora", f"{candidate} holds {what}")
    known = ", ".join(list_adapters(lora_dir)) or "none"
    raise UsageError("--lora", f"unknown adapter {name!r}; in {lora_dir}: {known}")


def check_file(path: Path) -> None:
    """A safetensors file whose header parses; reads no tensor data."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
    except Exception as err:  # SafetensorError, OSError, ...
        message = f"corrupt safetensors file {path}: {first_line(err)[:300]}"
        raise UsageError("--lora", message) from None
    if not any("lora" in key for key in keys):
        raise UsageError("--lora", f"{path} holds no LoRA weights ({len(keys)} tensors)")


def apply(pipe, loras: list[Lora], fuse: bool = True) -> None:
    """Make exactly `loras` active on `pipe`, with their weights; [] returns to the base.

    Adapters already loaded are reused, so switching never reloads the base or an adapter.
    A single adapter is fused (`fuse_lora`) when `fuse`; it is unfused before any change.
    """
    names = [lora.name for lora in loras]
    if len(set(names)) != len(names):
        raise UsageError("--lora", f"the same adapter name given twice: {', '.join(names)}")
    if pipe.num_fused_loras:
        pipe.unfuse_lora()
    loaded = {name for names_ in pipe.get_list_adapters().values() for name in names_}
    for lora in loras:
        if lora.name not in loaded:
            _load(pipe, lora)
    if not loras:
        if loaded:
            pipe.disable_lora()
        return
    pipe.enable_lora()
    pipe.set_adapters(names, adapter_weights=[lora.weight for lora in loras])
    if fuse and len(loras) == 1:
        pipe.fuse_lora(components=["unet", "text_encoder"], adapter_names=names)


def _load(pipe, lora: Lora) -> None:
    try:
        with warnings.catch_warnings():
            # peft warns on every adapter after the first; several adapters are the point here.
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            pipe.load_lora_weights(
                str(lora.path.parent), weight_name=lora.path.name, adapter_name=lora.name
            )
    except Exception as err:  # shape mismatches surface as RuntimeError/ValueError/KeyError
        _forget(pipe, lora.name)
        raise UsageError(
            "--lora",
            f"adapter {lora.name} ({lora.path}) does not fit the base model "
            f"{pipe.name_or_path}: {first_line(err)[:300]}",
        ) from None
    weight_space(pipe.unet)


def weight_space(module, cache: bool = True) -> None:
    """Run the unfused LoRA layers of `module` as one linear or conv on W + s * B @ A
    (idempotent).

    peft's unfused layer adds two activation matmuls, a scale and a sum to each adapted
    projection (56 in genimg's UNet); the ops are small, so their number is their cost. One
    rank-r matmul on the weights, then the base layer's linear, halves it: the shipped
    catalog adapter costs 0.076 of a traced UNet call at 2 CFG rows against peft's 0.155,
    0.048 against 0.071 at 32 rows (each against its pipeline with the adapter off, 20
    interleaved rounds in one process). A conv adapter (`unet_targets` with "conv1") is the
    same product: A is a k x k conv to r channels, B a 1 x 1 conv back, so B @ A flattened
    is a k x k kernel. While no gradient is taken the merged weight is kept on the layer
    (`_merged_weight`; `cache=False` merges at every call instead), so a render's 20 steps
    merge once. The weights are never changed. The result is peft's up to float
    rounding (2e-6 on the UNet's output). A layer that is disabled, merged, with an active
    dropout, of a LoRA variant (DoRA), with a LoRA bias, a grouped or dilated conv, or
    called with extra arguments takes peft's own path.
    """
    import torch.nn.functional as F
    from peft.tuners.lora.layer import Conv2d, Linear

    def fast(layer, peft_forward):
        conv = isinstance(layer, Conv2d)

        def forward(x, *args, **kwargs):
            names = _fast_names(layer, conv)
            if names is None or args or kwargs or layer.base_layer.weight.dtype != x.dtype:
                return peft_forward(x, *args, **kwargs)
            weight = _merged_weight(layer, names) if cache else _merged(layer, names)
            if conv:
                return layer.base_layer._conv_forward(x, weight, layer.base_layer.bias)
            return F.linear(x, weight, layer.base_layer.bias)

        def refresh():
            names = _fast_names(layer, conv)
            if names is not None:
                _merged_weight(layer, names)

        return forward, refresh

    for layer in module.modules():
        if isinstance(layer, Linear | Conv2d) and not getattr(layer, "_genimg_weight_space", False):
            layer.forward, refresh = fast(layer, layer.forward)
            if cache:
                layer._genimg_refresh = refresh
            layer._genimg_weight_space = True


def _fast_names(layer, conv: bool) -> list[str] | None:
    """The active adapters of a peft LoRA layer, or None where peft's own path must run."""
    names = [n for n in layer.active_adapters if n in layer.lora_A]
    dtype = layer.base_layer.weight.dtype
    if (
        layer.disable_adapters
        or layer.merged
        or any(_drops(layer.lora_dropout[n]) for n in names)
        or any(n in layer.lora_variant or layer.lora_B[n].bias is not None for n in names)
        or any(w.dtype != dtype for w in _weights(layer, names))
        or (conv and not _plain_conv(layer, names))
    ):
        return None
    return names


def _merged_weight(layer, names: list[str]):
    """`_merged`, kept on the layer while no gradient is taken, until the adapters, their
    scalings or any weight change (replaced, or in place: tensors count their in-place
    updates).

    The merged weight is a buffer of the layer, updated in place, so a UNet graph reads it
    like a parameter (a trace live, an onnxruntime session rebuilt when the buffer's
    version moves); before each replay `genimg.traced` calls the layers'
    `_genimg_refresh` whenever the adapter state or an adapted weight has changed, so a
    graph never reads a stale one."""
    import torch

    if not names:
        return layer.base_layer.weight
    if torch.is_grad_enabled():  # training: the merge must stay in the autograd graph
        return _merged(layer, names)
    key = (
        tuple(names),
        tuple(layer.scaling[n] for n in names),
        tuple((w.data_ptr(), w._version) for w in _weights(layer, names)),
    )
    if layer.__dict__.get("_genimg_merge_key") != key:
        if torch.jit.is_tracing():  # the graph then merges at every call, as before
            return _merged(layer, names)
        # A normal tensor (updated in place in any mode) with no autograd history: leaving
        # inference mode turns gradients back on.
        with torch.inference_mode(False), torch.no_grad():
            weight = _merged(layer, names)
            old = layer._buffers.get("_genimg_merged")
            if old is not None and _same_layout(old, weight):
                old.copy_(weight)
            else:
                layer.register_buffer("_genimg_merged", weight, persistent=False)
        layer._genimg_merge_key = key
    return layer._genimg_merged


def _same_layout(a, b) -> bool:
    return (a.shape, a.dtype, a.device, a.stride()) == (b.shape, b.dtype, b.device, b.stride())


def _merged(layer, names: list[str]):
    """W + sum of s * B @ A over the active adapters, in W's shape and memory format."""
    import torch

    base = layer.base_layer.weight
    weight = base.reshape(base.shape[0], -1)  # a view of a linear's (out, in)
    for n in names:
        weight = torch.addmm(
            weight,
            layer.lora_B[n].weight.flatten(1),  # (out, r)
            layer.lora_A[n].weight.flatten(1),  # (r, in * k * k)
            alpha=layer.scaling[n],
        )
    if base.dim() == 4:
        weight = weight.view(base.shape)  # (out, in, k, k)
        if not base.is_contiguous() and base.is_contiguous(memory_format=torch.channels_last):
            weight = weight.contiguous(memory_format=torch.channels_last)  # as the UNet's NHWC
    return weight


def _plain_conv(layer, names: list[str]) -> bool:
    """Whether a conv adapter is a k x k conv A and a 1 x 1 conv B on an ungrouped base."""
    base = layer.base_layer
    return (
        base.groups == 1
        and base.dilation == (1, 1)
        and all(
            layer.lora_A[n].kernel_size == base.kernel_size
            and layer.lora_A[n].stride == base.stride
            and layer.lora_A[n].padding == base.padding
            and layer.lora_A[n].dilation == (1, 1)
            and layer.lora_B[n].kernel_size == (1, 1)
            for n in names
        )
    )


def _weights(layer, names: list[str]) -> list:
    """The base weight and the active adapters' A and B weights of a peft LoRA layer."""
    return [
        layer.base_layer.weight,
        *(layer.lora_A[n].weight for n in names),
        *(layer.lora_B[n].weight for n in names),
    ]


def _drops(dropout) -> bool:
    """Whether a LoRA dropout module changes its input (peft's is Identity where p = 0)."""
    return getattr(dropout, "p", 0) > 0 and dropout.training


def _forget(pipe, name: str) -> None:
    """Remove a half-loaded adapter so the base is left as it was."""
    with contextlib.suppress(Exception):  # nothing was registered under that name
        pipe.delete_adapters(name)
