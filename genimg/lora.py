"""`genimg train-lora` and the lora/ library: catalog LoRA adapters for the base model.

Training follows diffusers' `train_text_to_image_lora.py`: peft `LoraConfig` on the UNet's
attention projections (and the text encoder's, so catalog words bind), added with
`add_adapter`; the base stays frozen. Latents are encoded once; each image appears once per
caption column (English and Japanese). Every random draw of step s comes from a CPU
generator seeded with (seed, s), so a run killed at any moment and resumed ends with the
same bytes.

An adapter folder holds `pytorch_lora_weights.safetensors` (diffusers format, alpha in its
metadata), optionally `<name>.safetensors` (kohya format, for the common SD web UIs),
`genimg_adapter.json` (the base it fits), `recipe.toml` and a card `README.md`.
"""

from __future__ import annotations

import hashlib
import json
import math
import shlex
import shutil
import time
import tomllib
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from genimg.adapters import LORA_DIR, WEIGHT_NAME
from genimg.errors import UsageError, check_float, check_int

__all__ = [
    "AdapterInfo",
    "LoraRecipe",
    "base_identity",
    "cross_attention_inputs",
    "draw_timesteps",
    "attention_probs",
    "grounding_loss",
    "grounding_tokens",
    "list_adapters",
    "multires_noise",
    "object_covers",
    "object_weight_maps",
    "resolve_adapter",
    "timestep_weights",
    "train_lora",
    "validate_adapter",
]

IDENTITY_NAME = "genimg_adapter.json"
LAST_STEP = "last-step"  # with ema_decay: the last step's own weights, an adapter folder
UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


@dataclass
class LoraRecipe:
    description: str = ""  # one line for the card and the app's adapter list
    base: str = ""  # base model folder or hub id; "" = the shipped default
    data: str = "catalog:8000:4000:lora"  # DIR or catalog:N:SEED[:SPLIT]
    caption_columns: list[str] = field(default_factory=lambda: ["text", "text_ja"])
    scenes: list[str] = field(default_factory=list)  # keep rows of these scenes; [] = all
    rank: int = 32
    # UNet layers that get LoRA, as peft's target_modules (module name suffixes). The
    # default is diffusers' example: the attention projections. Adding the transformer
    # blocks' proj_in/proj_out and feed-forward and the ResNet convs ("conv1", "conv2":
    # kohya's LoCon) lets the adapter change how things are drawn, not only where the
    # caption is attended.
    unet_targets: list[str] = field(default_factory=lambda: list(UNET_TARGETS))
    alpha: int = 0  # lora_alpha; 0 = the rank (scale 1), as diffusers' example sets it
    train_text_encoder: bool = True  # LoRA on the text encoder too: catalog words must bind
    steps: int = 1500
    batch_size: int = 64
    lr: float = 5e-4  # UNet LoRA; small models tolerate more than SD's 1e-4
    # Lower: the encoder is shared by every word. 0 keeps the text encoder's adapter as it
    # starts (with `init`, the warm start's; fresh, a no-op): only the UNet learns.
    text_encoder_lr: float = 2e-4
    warmup: int = 100  # linear warm-up steps, then cosine decay to 10%
    caption_dropout: float = 0.05  # empty captions keep the CFG unconditional branch in tune
    snr_gamma: float = 5.0  # min-SNR-gamma weighting (Hang et al., 2023); 0 disables
    # Extra loss on the boxes of the objects a row lists (metadata `objects[].boxes`), each
    # object an equal share: 1 puts as much loss on the objects as on the whole image, so a
    # pair of baskets weighs as much as the wall behind them. 0 = every pixel alike.
    object_weight: float = 0.0
    # Timestep sampling (diffusers' SDXL example, strategy "later"): the noisiest
    # `timestep_bias_portion` of the schedule is drawn `timestep_bias_multiplier` times as
    # often, where a picture's layout, and so whether an object is in it, is decided.
    # 1 = every timestep alike.
    timestep_bias_multiplier: float = 1.0
    timestep_bias_portion: float = 0.25
    # Multi-resolution ("pyramid") noise, as kohya's sd-scripts train with it: white noise
    # plus white noise drawn at 1/2, 1/4, ... of the latent side (down to one cell) and
    # upsampled, level i weighted discount**i, rescaled to unit std. The low-frequency part
    # of the noise, where a region's colour lies, then no longer tells the model the colour
    # (at t = 999 the scaled_linear schedule keeps 6.8% of the image in it), so the caption
    # has to (tried: no measurable effect here; the catalog card). Diffusers' `noise_offset`
    # is a one-cell level alone. 0 = plain white noise.
    multires_noise_iterations: int = 0
    multires_noise_discount: float = 0.3
    # Weigh each image's loss by 1 / sqrt(SNR) as well (`diffusion_loss`): the noisiest
    # steps, where the caption alone can tell a region's colour, count for more.
    debiased_estimation: bool = False
    # Cross-attention grounding (TokenCompose, Wang et al., CVPR 2024: its token loss): the
    # tokens of each listed object's phrase in the caption ("two", "red", "metal",
    # "faucets") are pulled to attend inside that object's boxes, weight times the mean of
    # (1 - the token's attention share inside)^2 over those tokens and the UNet's
    # cross-attention layers. A colour word then has a place to bind to instead of the
    # whole picture. 0 = off.
    grounding_weight: float = 0.0
    # Hide the padding states after each window's EOS from the UNet's cross-attention in
    # training (`models.padding_mask`). The text encoder is causal, so the ~60 padding
    # states all carry the whole caption: a channel for a colour word to every pixel. Tried
    # (catalog card): it binds no colour. genimg renders every adapter with the padding
    # visible (one trained with the mask scores alike either way);
    # `scripts/padding_mask_probe.py` renders with the mask too.
    padding_mask: bool = False
    # Hide from the UNet's cross-attention the empty windows (BOS, EOS, padding) a caption
    # carries in training only because a longer caption shares its batch (the windows are
    # stacked to the batch's longest; about half of a batch's windows here): each caption
    # is then seen as genimg renders it, alone. Those windows are not encoded either (steps
    # about 10% faster on the 2 cores). Tried with the shipped recipe: no gain (catalog
    # card, "Empty windows hidden"). Off: the shipped adapters were trained without it.
    mask_empty_windows: bool = False
    # Train in bfloat16 autocast on CPU too, as on GPU (`train_base._cpu_bf16`: attention and
    # group norm stay float32). About 1.7x faster steps on a CPU with native bfloat16
    # (avx512_bf16 or AMX; `lscpu`), several times slower on one without. Off: the shipped
    # adapters were trained in float32.
    cpu_bf16: bool = False
    # Warm start: an adapter (a name in lora/, a folder or a file) whose weights the new
    # adapter starts from instead of peft's random init; same targets, rank and alpha. ""
    # = fresh. Training longer on top of a finished run this way keeps its schedule intact.
    init: str = ""
    # Keep an exponential moving average of the LoRA weights (decay warmed up as diffusers'
    # EMAModel does) and save it as the adapter; the last step's own weights go to
    # `last-step/` beside it. 0 = off: the adapter is the last step's weights.
    ema_decay: float = 0.0
    seed: int = 0
    checkpoint_every: int = 250
    sample_prompts: list[str] = field(default_factory=list)  # card grid: base row, adapter row

    def __post_init__(self) -> None:
        for f in fields(self):  # TOML gives any type: check each against its annotation
            v = getattr(self, f.name)
            ok = {"int": isinstance(v, int) and not isinstance(v, bool),
                  "float": isinstance(v, (int, float)) and not isinstance(v, bool)
                  and math.isfinite(v),
                  "str": isinstance(v, str), "bool": isinstance(v, bool),
                  "list[str]": isinstance(v, list) and all(isinstance(x, str) for x in v),
                  }[str(f.type)]  # fmt: skip
            if not ok:
                raise ValueError(f"{f.name} must be {'a finite ' * (f.type == 'float')}"
                                 f"{f.type}, got {v!r}")  # fmt: skip
            if f.type == "float":
                setattr(self, f.name, float(v))
        if self.rank <= 0:
            raise ValueError(f"rank must be > 0, got {self.rank}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0 (0 = rank), got {self.alpha}")
        if self.steps < 1 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError("steps, batch_size and checkpoint_every must be >= 1")
        if not (self.lr > 0 and self.text_encoder_lr >= 0):
            raise ValueError("lr must be > 0 and text_encoder_lr >= 0 (0 = kept as it starts)")
        if self.warmup < 0 or self.snr_gamma < 0 or not 0 <= self.caption_dropout < 1:
            raise ValueError("warmup >= 0, snr_gamma >= 0, caption_dropout in [0, 1)")
        if self.mask_empty_windows and self.grounding_weight:
            raise ValueError(
                "mask_empty_windows and grounding_weight > 0 do not combine "
                "(the grounding loss recomputes the attention without the mask)"
            )
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1) (0 = off), got {self.ema_decay}")
        for key in ("object_weight", "grounding_weight"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        if not (self.timestep_bias_multiplier > 0 and 0 < self.timestep_bias_portion <= 1):
            raise ValueError(
                "timestep_bias_multiplier must be > 0, timestep_bias_portion in (0, 1]"
            )
        if self.multires_noise_iterations < 0 or not 0 < self.multires_noise_discount <= 1:
            raise ValueError(
                "multires_noise_iterations must be >= 0, multires_noise_discount in (0, 1]"
            )
        if not self.unet_targets or not all(self.unet_targets):
            raise ValueError("unet_targets must be a non-empty list of UNet module names")
        if not self.caption_columns or not all(self.caption_columns):
            raise ValueError("caption_columns must be a non-empty list of column names")

    @property
    def lora_alpha(self) -> int:
        return self.alpha or self.rank

    @classmethod
    def from_toml(cls, path: Path | str) -> LoraRecipe:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            raise UsageError("--recipe", f"cannot read {path}: {err}") from None
        unknown = sorted(set(raw) - {f.name for f in fields(cls)})
        if unknown:
            raise UsageError("--recipe", f"{path}: unknown key(s) {unknown}")
        try:
            return cls(**raw)
        except (TypeError, ValueError) as err:
            raise UsageError("--recipe", f"{path}: {err}") from None

    def to_toml(self) -> str:
        def value(v) -> str:
            if isinstance(v, bool):
                return "true" if v else "false"
            if isinstance(v, list):
                return "[" + ", ".join(value(x) for x in v) + "]"
            return json.dumps(v, ensure_ascii=False)  # JSON strings and numbers are TOML

        return "".join(f"{k} = {value(v)}\n" for k, v in asdict(self).items())


# ---------------------------------------------------------------------------- the library


@dataclass
class AdapterInfo:
    name: str
    path: Path  # the weights file
    format: str  # "diffusers" or "kohya"
    rank: int
    alpha: float | None  # None: not recorded (diffusers then takes alpha = rank)
    base: dict | None  # genimg_adapter.json's "base" (identity of the model it fits)
    description: str = ""
    card: str = ""  # README.md text, if any


def base_identity(pipe) -> dict:
    """What an adapter must match: the UNet and text encoder architectures (hashed)."""
    unet = {k: v for k, v in dict(pipe.unet.config).items() if not k.startswith("_")}
    te_keys = (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "max_position_embeddings",
        "hidden_act",
    )
    te = {k: getattr(pipe.text_encoder.config, k, None) for k in te_keys}
    blob = json.dumps({"unet": unet, "text_encoder": te}, sort_keys=True, default=str)
    summary = (
        f"UNet {list(unet.get('block_out_channels', []))} cross-attn "
        f"{unet.get('cross_attention_dim')}, text encoder {te['hidden_size']}x"
        f"{te['num_hidden_layers']} layers"
    )
    return {
        "arch_hash": hashlib.sha256(blob.encode()).hexdigest()[:12],
        "summary": summary,
        "name": Path(str(getattr(pipe, "name_or_path", "") or "")).name,
    }


def _header(path: Path) -> tuple[dict[str, list[int]], dict[str, str]]:
    """Tensor shapes and metadata of a safetensors file, reading no tensor data."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}, f.metadata() or {}  # noqa: SIM118


def resolve_adapter(name_or_path: str | Path, lora_dir: Path | str = LORA_DIR) -> AdapterInfo:
    """An adapter from a name in `lora_dir`, a folder or a .safetensors file; never pickle.

    Finding the file (and refusing pickle and corrupt files) is `genimg.adapters.resolve`'s;
    this adds what the file and its folder say: rank, alpha, the base it fits, its card.
    """
    from genimg.adapters import resolve

    weights = resolve(str(name_or_path), lora_dir).path
    folder = weights.parent
    shapes, meta = _header(weights)
    downs = [s for k, s in shapes.items() if (_lora_key(k) or ("", ""))[1] == "down"]
    if not downs:
        raise UsageError("--lora", f"{weights} holds no LoRA weights (no lora_A/lora_down keys)")
    ident: dict = {}
    own = weights.name == WEIGHT_NAME or weights.stem == folder.name  # the folder's own files
    if own and (folder / IDENTITY_NAME).is_file():
        try:
            ident = json.loads((folder / IDENTITY_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise UsageError("--lora", f"{folder / IDENTITY_NAME} is not valid JSON") from None
    readme = folder / "README.md"
    return AdapterInfo(
        name=folder.name if weights.name == WEIGHT_NAME else weights.stem,
        path=weights,
        format="kohya"
        if any(k.startswith(("lora_unet_", "lora_te")) for k in shapes)
        else "diffusers",
        rank=int(downs[0][0]),
        alpha=ident.get("alpha") or _alpha_from(shapes, meta, weights),
        base=ident.get("base"),
        description=str(ident.get("description", "")),
        card=readme.read_text(encoding="utf-8", errors="replace")
        if own and readme.is_file()
        else "",
    )


def _alpha_from(shapes: dict, meta: dict, weights: Path) -> float | None:
    try:
        lora_meta = json.loads(meta.get("lora_adapter_metadata", "{}"))
        alpha = lora_meta.get("unet.lora_alpha") or lora_meta.get("text_encoder.lora_alpha")
    except ValueError:
        alpha = None
    if alpha is None and any(k.endswith(".alpha") for k in shapes):
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            alpha = float(f.get_tensor(next(k for k in shapes if k.endswith(".alpha"))))
    return float(alpha) if alpha is not None else None


def list_adapters(lora_dir: Path | str = LORA_DIR) -> list[AdapterInfo]:
    """Every usable adapter in `lora_dir`, by name; unreadable ones are left out."""
    from genimg.adapters import list_adapters as names

    found = []
    for name in names(lora_dir):
        try:
            found.append(resolve_adapter(name, lora_dir))
        except UsageError:
            continue  # a corrupt or foreign file: `genimg render --lora` names the problem
    return found


def _lora_key(key: str) -> tuple[str, str] | None:
    """(module key, "down" | "up") of a LoRA tensor name in diffusers/peft/kohya format."""
    for suffix, kind in (
        (".lora.down.weight", "down"),
        (".lora.up.weight", "up"),
        (".lora_A.weight", "down"),
        (".lora_B.weight", "up"),
        (".lora_down.weight", "down"),
        (".lora_up.weight", "up"),
        (".lora_linear_layer.down.weight", "down"),
        (".lora_linear_layer.up.weight", "up"),
    ):
        if key.endswith(suffix):
            return key[: -len(suffix)], kind
    return None


_KOHYA_PREFIXES = {"unet": ("lora_unet",), "text_encoder": ("lora_te", "lora_te1")}


def _file_names(comp: str, path: str) -> set[str]:
    """Every name a LoRA file (diffusers or kohya) may give module `path` of `comp`."""
    paths = {path}
    # transformers 5 dropped CLIPTextModel's `text_model.` level; files name it.
    if comp == "text_encoder":
        bare = path.removeprefix("text_model.")
        paths = {bare, f"text_model.{bare}"}
    return {f"{comp}.{p}" for p in paths} | {
        f"{k}_{p.replace('.', '_')}" for p in paths for k in _KOHYA_PREFIXES[comp]
    }


def _module_table(pipe) -> dict[str, tuple[int, int]]:
    """(in, out) features of every linear/conv layer, under diffusers and kohya names."""
    table = {}
    for comp in _KOHYA_PREFIXES:
        for name, mod in getattr(pipe, comp).named_modules():
            if "base_layer" in name or "lora_" in name:
                continue  # inside peft's wrapper of a layer that already has adapters
            layer = getattr(mod, "base_layer", mod)
            if isinstance(layer, torch.nn.Linear):
                dims = (layer.in_features, layer.out_features)
            elif isinstance(layer, torch.nn.Conv2d):
                dims = (layer.in_channels, layer.out_channels)
            else:
                continue
            table.update(dict.fromkeys(_file_names(comp, name), dims))
    return table


def validate_adapter(adapter: AdapterInfo, pipe) -> list[str]:
    """Raise a UsageError naming both if `adapter` does not fit `pipe`; return warnings."""
    mine = base_identity(pipe)
    if adapter.base and adapter.base.get("arch_hash") != mine["arch_hash"]:
        raise UsageError(
            "--lora",
            (
                f"adapter {adapter.name!r} was trained for base {adapter.base.get('name')!r} "
                f"[{adapter.base.get('arch_hash')}: {adapter.base.get('summary')}], but the model "
                f"{mine['name']!r} is [{mine['arch_hash']}: {mine['summary']}]"
            ),
        )
    table = _module_table(pipe)
    shapes, _ = _header(adapter.path)
    for key, shape in shapes.items():
        parsed = _lora_key(key)
        if parsed is None:
            continue
        module, kind = parsed
        if module not in table:
            raise UsageError(
                "--lora",
                f"adapter {adapter.name!r} targets {module}, which the "
                f"base model {mine['name']!r} does not have",
            )
        d_in, d_out = table[module]
        ok = shape[1] == d_in if kind == "down" else shape[0] == d_out
        if not ok:
            want = f"(r, {d_in}, ...)" if kind == "down" else f"({d_out}, r, ...)"
            raise UsageError(
                "--lora",
                f"adapter {adapter.name!r} tensor {key} has shape "
                f"{tuple(shape)}; base model {mine['name']!r} needs {want}",
            )
    # Same architecture, other weights (e.g. a base trained further): usable, but say so.
    from genimg.pipeline import model_hash

    trained_on, here = (adapter.base or {}).get("model_hash"), model_hash(pipe)
    if trained_on and trained_on != here:
        return [f"adapter {adapter.name!r} was trained on base weights {trained_on}; "
                f"this model's are {here}"]  # fmt: skip
    return []


# ---------------------------------------------------------------------------- training


def _gen(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def _batch_index(step: int, n: int, batch: int, seed: int) -> torch.Tensor:
    """Pair indices of one step: epoch e walks a permutation drawn from (seed, -1 - e)."""
    per_epoch = max(1, n // batch)
    epoch, j = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=_gen(seed, -1 - epoch))
    return perm[torch.arange(j * batch, (j + 1) * batch) % n]


def _add_adapters(pipe, recipe: LoraRecipe) -> dict:
    """Freeze the base and add peft LoRA layers; returns {component name: LoraConfig}."""
    from peft import LoraConfig

    for model in (pipe.vae, pipe.unet, pipe.text_encoder):
        model.requires_grad_(False)
    targets = {"unet": recipe.unet_targets}
    if recipe.train_text_encoder:
        targets["text_encoder"] = TEXT_TARGETS
    torch.manual_seed(recipe.seed)  # peft's gaussian init of lora_A draws from the global RNG
    configs = {}
    for name, modules in targets.items():
        configs[name] = LoraConfig(
            r=recipe.rank,
            lora_alpha=recipe.lora_alpha,
            init_lora_weights="gaussian",
            target_modules=modules,
        )
        getattr(pipe, name).add_adapter(configs[name])
    return configs


def _warm_start(pipe, recipe: LoraRecipe) -> None:
    """Copy the weights of the adapter `recipe.init` (either file format) into the adapters
    just added; every LoRA tensor of the recipe must come from it, with its shape."""
    from safetensors.torch import load_file

    def refuse(why: str) -> UsageError:
        return UsageError("--recipe", f"init adapter {recipe.init!r} {why}")

    try:
        info = resolve_adapter(recipe.init)
        validate_adapter(info, pipe)
    except UsageError as err:
        raise UsageError("--recipe", f"init: {str(err).removeprefix('--lora: ')}") from None
    if info.rank != recipe.rank or (info.alpha or info.rank) != recipe.lora_alpha:
        raise refuse(f"has rank {info.rank}, alpha {info.alpha or info.rank:g}; the recipe "
                     f"{recipe.rank}, {recipe.lora_alpha}")  # fmt: skip
    params = {}  # (module key as a file may name it, "down" | "up") -> parameter
    for comp in _KOHYA_PREFIXES:
        for name, p in getattr(pipe, comp).named_parameters():
            for kind, tag in (("down", ".lora_A.default.weight"), ("up", ".lora_B.default.weight")):
                if name.endswith(tag):
                    params.update(
                        {(alias, kind): p for alias in _file_names(comp, name[: -len(tag)])}
                    )
    copied = set()
    with torch.no_grad():
        for key, tensor in load_file(str(info.path)).items():
            parsed = _lora_key(key)
            if parsed is None:
                continue  # kohya's per-layer alpha: checked above
            p = params.get(parsed)
            if p is None or p.shape != tensor.shape:
                raise refuse(f"has {key} {tuple(tensor.shape)}, which this recipe does not train")
            p.copy_(tensor.to(p.dtype))
            copied.add(id(p))
    wanted = {id(p) for p in params.values()}
    if copied != wanted:
        raise refuse(f"sets {len(copied)} of the recipe's {len(wanted)} LoRA tensors; give the "
                     "recipe its unet_targets and train_text_encoder")  # fmt: skip


def _prepare_data(pipe, recipe: LoraRecipe, device: str) -> dict:
    """Latents (encoded once), token ids and, per caption, the index of its image."""
    from genimg.data import load_dataset
    from genimg.models import tokenize
    from genimg.train_base import empty_ids, encode_latents

    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    data = load_dataset(recipe.data, recipe.caption_columns, size)
    for column in recipe.caption_columns:
        if not any(column in row for row in data.rows):
            raise UsageError(
                "--caption-column",
                f"{column!r} is not a column of {data.source}; it has {sorted(data.rows[0])}",
            )
    keep = [
        i
        for i, row in enumerate(data.rows)
        if not recipe.scenes or row.get("scene") in recipe.scenes
    ]
    if not keep:
        raise UsageError("--data", f"{data.source} has no rows of scenes {recipe.scenes}")
    rows = [data.rows[i] for i in keep]
    # Each image once per caption column: the English and the Japanese caption of a record.
    pairs = [
        (i, str(row.get(c) or "").strip())
        for c in recipe.caption_columns
        for i, row in enumerate(rows)
        if str(row.get(c) or "").strip()
    ]
    t0 = time.perf_counter()
    latents = encode_latents(pipe.vae, data.images[keep], device)  # (N, 4, h, w)
    print(
        f"data: {len(rows)} images, {len(pairs)} captions from {data.source} "
        f"(skipped {data.skipped or 'none'}); latents in {time.perf_counter() - t0:.0f} s"
    )
    ids = tokenize(pipe.tokenizer, [c for _, c in pairs])
    weights = None
    if recipe.object_weight > 0:
        weights = object_weight_maps(rows, size, latents.shape[-1], recipe.object_weight)
        boxed = int((weights.flatten(1).std(dim=1) > 0).sum())
        print(f"object_weight {recipe.object_weight:g}: {boxed} of {len(rows)} images have boxes")
        weights = weights.to(device)
    tokens = covers = None
    if recipe.grounding_weight > 0:
        tokens = grounding_tokens(pipe.tokenizer, ids, [rows[i].get("objects") for i, _ in pairs])
        covers = object_covers(rows, size, latents.shape[-1]).to(device)
        found = sum(len(set(r.tolist()) - {-1}) for r in tokens)
        listed = sum(len(_objects(rows[i].get("objects"))) for i, _ in pairs)
        print(f"grounding {recipe.grounding_weight:g}: {found} of {listed} listed objects' "
              "phrases found in their captions")  # fmt: skip
        grounded = [found, listed]
    return {
        "weights": weights,
        "tokens": tokens,
        "covers": covers,
        "grounded": grounded if tokens is not None else None,
        "latents": latents.to(device),
        "image": torch.tensor([i for i, _ in pairs]),
        "ids": ids,
        "empty": empty_ids(pipe.tokenizer, ids),
        "source": data.source,
        "n_images": len(rows),
        "skipped": data.skipped,
    }


def timestep_weights(n: int, multiplier: float, portion: float) -> torch.Tensor:
    """Sampling weights of the n training timesteps: the noisiest round(portion * n) (the
    highest indices, at least one) weigh `multiplier`, the others 1."""
    w = torch.ones(n)
    w[n - max(1, round(portion * n)) :] = multiplier
    return w


def draw_timesteps(g: torch.Generator, b: int, weights: torch.Tensor) -> torch.Tensor:
    """b timesteps drawn with these weights; uniform weights draw exactly as randint did
    before the weights existed, so old runs resume and retrain to the same bytes."""
    if bool((weights == weights[0]).all()):
        return torch.randint(0, len(weights), (b,), generator=g)
    return torch.multinomial(weights, b, replacement=True, generator=g)


def multires_noise(
    g: torch.Generator, noise: torch.Tensor, iterations: int, discount: float
) -> torch.Tensor:
    """`noise` (B, C, H, W) plus up to `iterations` coarser levels: level i white noise at
    H / 2**i (at least one cell; the levels stop there), bilinearly upsampled and weighted
    discount**i; the sum rescaled to the batch's unit std. 0 iterations return `noise`
    itself and draw nothing, so old recipes train to the same bytes."""
    if iterations == 0:
        return noise
    b, c, h, w = noise.shape
    out = noise.clone()
    for i in range(1, iterations + 1):
        hi, wi = max(1, h >> i), max(1, w >> i)
        level = torch.randn((b, c, hi, wi), generator=g)
        out += discount**i * torch.nn.functional.interpolate(level, (h, w), mode="bilinear")
        if hi == 1 and wi == 1:
            break
    return out / out.std()


def object_weight_maps(rows: list[dict], size: int, latent: int, strength: float) -> torch.Tensor:
    """Per-image loss weights (N, 1, latent, latent), each of mean 1, from the rows' boxes.

    Object o covers a fraction m_o of each latent cell (its instance boxes, in pixels of the
    size x size image) and a_o of the image; the map is 1 + strength * sum_o m_o / (K a_o)
    over the K objects, divided by 1 + strength. So each object carries the same share of
    the extra weight however small it is; a_o is floored at four cells so a sliver clipped
    by the image edge cannot take it all. Rows without (well-formed) boxes get a uniform map.
    """
    floor = 4 / latent**2
    maps = np.ones((len(rows), latent, latent), np.float32)
    for i, row in enumerate(rows):
        covers = [c / max(float(c.mean()), floor) for c in _covers(row, size, latent) if c.any()]
        if covers:
            maps[i] = (1 + strength * sum(covers) / len(covers)) / (1 + strength)
            maps[i] /= maps[i].mean()  # exact mean 1 where the floor held an object back
    return torch.from_numpy(maps)[:, None]


def _objects(objects) -> list[dict]:
    """A metadata row's `objects`, each a dict; anything else (a user's own export) is []."""
    if not isinstance(objects, list):
        return []
    return [o if isinstance(o, dict) else {} for o in objects]


def _covers(row: dict, size: int, latent: int) -> list[np.ndarray]:
    """Per listed object, the fraction of each latent cell its instance boxes cover (all
    zero for an object without well-formed boxes), in the row's object order."""
    cell = size // latent
    out = []
    for obj in _objects(row.get("objects")):
        mask = np.zeros((size, size), np.float32)
        for box in obj.get("boxes") or []:
            try:
                x0, y0, x1, y1 = (int(v) for v in box)
            except (TypeError, ValueError):
                continue  # a malformed box adds nothing; the logs count boxed images
            mask[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = 1.0
        out.append(mask.reshape(latent, cell, latent, cell).mean(axis=(1, 3)))
    return out


def object_covers(rows: list[dict], size: int, latent: int) -> torch.Tensor:
    """(N, K, latent, latent): object k of row n's box coverage per latent cell, K the most
    objects any row lists; missing objects all zero."""
    covers = [_covers(row, size, latent) for row in rows]
    out = np.zeros((len(rows), max([len(c) for c in covers] + [1]), latent, latent), np.float32)
    for n, row_covers in enumerate(covers):
        for k, cover in enumerate(row_covers):
            out[n, k] = cover
    return torch.from_numpy(out)


def _phrases(obj: dict) -> list[str]:
    """The English and Japanese phrase catalog captions name `obj` with; [] for an object
    outside the taxonomy or without its fields."""
    from genimg.captions import phrase_en, phrase_ja
    from genimg.taxonomy import COLORS, COUNT_WORDS, MATERIALS, OBJECTS

    try:
        name, material, color, count = (obj[k] for k in ("name", "material", "color", "count"))
        if name not in OBJECTS or material not in MATERIALS or count not in COUNT_WORDS:
            return []
        if color is not None and color not in COLORS:
            return []
    except (KeyError, TypeError):
        return []
    return [phrase_en(name, material, color, count), phrase_ja(name, material, color, count)]


def grounding_tokens(tokenizer, ids: torch.Tensor, objects: list) -> torch.Tensor:
    """(N, T) int8: for each token of caption row n (`ids` as `models.tokenize` gives), the
    index in `objects[n]` of the object whose phrase it is part of, else -1. A phrase counts
    where its tokens appear in the row as one run: always for the English catalog captions,
    for about half the Japanese ones (byte-level BPE merges a Japanese phrase's first or
    last bytes with its neighbours'; those objects are left ungrounded in that caption)."""
    out = torch.full(ids.shape, -1, dtype=torch.int8)
    runs: dict[str, list[int]] = {}
    for n, objs in enumerate(objects):
        row = ids[n].tolist()
        for k, obj in enumerate(_objects(objs)):
            for phrase in _phrases(obj):
                if phrase not in runs:
                    runs[phrase] = tokenizer(phrase, add_special_tokens=False).input_ids
                if (at := _find_run(row, runs[phrase])) >= 0:
                    out[n, at : at + len(runs[phrase])] = k
                    break
    return out


def _find_run(row: list[int], run: list[int]) -> int:
    """The first index where `run` occurs in `row` as a contiguous run, else -1."""
    if not run:
        return -1
    for at in (i for i, v in enumerate(row[: len(row) - len(run) + 1]) if v == run[0]):
        if row[at : at + len(run)] == run:
            return at
    return -1


@contextmanager
def cross_attention_inputs(unet, on: bool = True):
    """While open, collects (attention module, hidden states, text states) of each
    cross-attention call `unet` makes; with `on` False, registers nothing and yields None."""
    if not on:
        yield None
        return
    seen: list[tuple] = []

    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        seen.append((module, hidden, kwargs["encoder_hidden_states"]))

    handles = [
        m.register_forward_pre_hook(hook, with_kwargs=True)
        for m in unet.modules()
        if getattr(m, "is_cross_attention", False)
    ]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def attention_probs(attn, hidden: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """(B, N, T): a cross-attention layer's attention of each of the N pixels over the T
    text states, recomputed from its own (LoRA-adapted) to_q and to_k, averaged over heads."""
    b, n, _ = hidden.shape
    t = context.shape[1]
    q = attn.to_q(hidden).view(b, n, attn.heads, -1).transpose(1, 2)
    k = attn.to_k(context).view(b, t, attn.heads, -1).transpose(1, 2)
    return (q @ k.transpose(-1, -2) * attn.scale).softmax(-1).mean(1)


def grounding_loss(seen: list[tuple], tokens: torch.Tensor, covers: torch.Tensor) -> torch.Tensor:
    """TokenCompose's token loss over the cross-attention calls `seen`
    (`cross_attention_inputs`): the mean over layers of the mean over grounded tokens of
    (1 - the share of the token's attention, summed over pixels, that falls in its
    object's cover)^2. `tokens` (B, T) as `grounding_tokens` gives (-1: not grounded),
    `covers` (B, K, h, w) as `object_covers`. The attention is recomputed from the layer's
    own (LoRA-adapted) to_q and to_k, averaged over heads; 0 when nothing is grounded."""
    losses = []
    for attn, hidden, context in seen:
        b, n, _ = hidden.shape
        t = context.shape[1]
        index = tokens[:, :t].long()
        grounded = index >= 0
        if not bool(grounded.any()):
            continue
        probs = attention_probs(attn, hidden, context)
        side = math.isqrt(n)
        cover = torch.nn.functional.adaptive_avg_pool2d(covers, side).flatten(2)  # (b, K, n)
        cover = cover.gather(1, index.clamp_min(0)[..., None].expand(-1, -1, n))  # (b, t, n)
        a = probs.float().transpose(1, 2)  # (b, t, n)
        inside = (a * cover).sum(-1) / a.sum(-1).clamp_min(1e-12)
        losses.append(((1 - inside) ** 2)[grounded].mean())
    return torch.stack(losses).mean() if losses else covers.new_zeros(())


def _trainable(pipe, configs: dict) -> dict[str, torch.nn.Parameter]:
    return {
        f"{name}.{key}": p
        for name in configs
        for key, p in getattr(pipe, name).named_parameters()
        if p.requires_grad
    }


def _train(
    pipe,
    configs: dict,
    data: dict,
    recipe: LoraRecipe,
    out: Path,
    device: str,
    resume: bool,
    max_minutes: float,
) -> dict:
    """The loop: min-SNR epsilon loss on cached latents; checkpoints every N steps."""
    from diffusers import DDPMScheduler

    from genimg.checkpoint import Checkpointer, latest_checkpoint
    from genimg.train_base import _autocast, diffusion_loss, ema_update, lr_at, warn_if_slow_bf16

    params = _trainable(pipe, configs)
    ema = {k: p.detach().clone() for k, p in params.items()} if recipe.ema_decay else None
    lrs = {"unet": recipe.lr, "text_encoder": recipe.text_encoder_lr}
    groups = [
        {"params": [p for k, p in params.items() if k.startswith(f"{name}.")], "lr": lrs[name]}
        for name in configs
    ]
    opt = torch.optim.AdamW(groups, weight_decay=1e-2)
    for name, group in zip(configs, groups, strict=True):
        if lrs[name] == 0:  # kept as it starts: no gradient, so no update and no backward
            for p in group["params"]:
                p.requires_grad_(False)
    ckpt = Checkpointer(out / "checkpoints")
    start, wall = 0, 0.0
    if resume and (found := latest_checkpoint(out / "checkpoints")):
        folder, state = found
        # What shapes the weights must match; the description and sample prompts may change.
        diff = sorted(
            k
            for k, v in asdict(recipe).items()
            if state["recipe"].get(k, getattr(LoraRecipe, k, None)) != v
            and k not in ("description", "sample_prompts")
        )
        if diff:
            raise UsageError(
                "--resume",
                f"{folder} was made with a different recipe "
                f"(differs in {diff}); resume with the same settings",
            )
        with torch.no_grad():
            for key, p in params.items():
                p.copy_(state["lora"][key])
        opt.load_state_dict(state["optimizer"])
        if ema is not None:
            ema = {k: state["ema"][k].to(device) for k in params}
        start, wall = state["step"], state["wall_s"]
        print(f"resumed from {folder.name} at step {start}")
    ac = DDPMScheduler.from_config(pipe.scheduler.config).alphas_cumprod.to(device)
    ids, image, b = data["ids"], data["image"], recipe.batch_size
    t_weights = timestep_weights(
        len(ac), recipe.timestep_bias_multiplier, recipe.timestep_bias_portion
    )
    pipe.unet.train()
    pipe.text_encoder.train(recipe.train_text_encoder)
    warn_if_slow_bf16(recipe.cpu_bf16, device)
    from tqdm import tqdm

    t_run, t0, loss_v, done = time.perf_counter(), time.perf_counter() - wall, float("nan"), start
    term_v = None
    bar = tqdm(range(start, recipe.steps), initial=start, total=recipe.steps, desc="lora")
    for step in bar:
        # 1. Every random draw of this step from (seed, step): resume is exact.
        g = _gen(recipe.seed, step)
        pick = _batch_index(step, len(ids), b, recipe.seed)
        drop = torch.rand(b, generator=g) < recipe.caption_dropout
        noise = torch.randn((b, *data["latents"].shape[1:]), generator=g)
        t = draw_timesteps(g, b, t_weights)
        noise = multires_noise(
            g, noise, recipe.multires_noise_iterations, recipe.multires_noise_discount
        )
        batch_ids = torch.where(drop[:, None], data["empty"][None], ids[pick])
        for group, name in zip(opt.param_groups, configs, strict=True):
            group["lr"] = lr_at(step, recipe.steps, lrs[name], recipe.warmup)
        # 2. Loss and update of the LoRA weights only.
        ground = data["tokens"] is not None
        with (
            _autocast(device, recipe.cpu_bf16),
            cross_attention_inputs(pipe.unet, ground) as seen,
        ):
            loss = diffusion_loss(
                pipe.unet,
                pipe.text_encoder,
                data["latents"][image[pick].to(device)],
                batch_ids.to(device),
                noise.to(device),
                t.to(device),
                ac,
                recipe.snr_gamma,
                None if data["weights"] is None else data["weights"][image[pick].to(device)],
                recipe.debiased_estimation,
                recipe.padding_mask,
                recipe.mask_empty_windows,
            )
            if ground:  # a dropped caption grounds nothing
                tokens = torch.where(drop[:, None], -1, data["tokens"][pick])
                covers = data["covers"][image[pick].to(device)]
                term = grounding_loss(seen, tokens.to(device), covers)
                loss = loss + recipe.grounding_weight * term
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt.step()
        done = step + 1
        if ema is not None:
            ema_update(ema, params, done, recipe.ema_decay)
        if done % 10 == 0 or done == recipe.steps or done == start + 1:  # a sync on GPU
            loss_v = float(loss.detach())
            term_v = float(term.detach()) if ground else None
        bar.set_postfix(loss=f"{loss_v:.4f}", **({"grounding": f"{term_v:.3f}"} if ground else {}))
        # 3. Checkpoint (copied now, written in the background).
        stop = max_minutes > 0 and time.perf_counter() - t_run > 60 * max_minutes
        if done % recipe.checkpoint_every == 0 or done == recipe.steps or stop:
            wall = time.perf_counter() - t0
            ckpt.save(
                done,
                {
                    "lora": params,
                    "optimizer": opt.state_dict(),
                    "step": done,
                    "wall_s": wall,
                    "recipe": asdict(recipe),
                }
                | ({"ema": ema} if ema is not None else {}),
            )
            with open(out / "train_log.jsonl", "a") as f:
                entry = {"step": done, "loss": loss_v, "wall_s": round(wall, 1)}
                f.write(json.dumps(entry | ({"grounding": term_v} if ground else {})) + "\n")
        if stop:
            print(
                f"stopped after --max-minutes {max_minutes} at step {done}/{recipe.steps}; "
                "--resume continues"
            )
            break
    ckpt.wait()
    pipe.unet.eval()
    pipe.text_encoder.eval()
    return {
        "steps_done": done,
        "wall_s": round(time.perf_counter() - t0, 1),
        "loss": loss_v,
        "checkpoint_stall_s": round(sum(ckpt.stall_s), 3),
        "ema": ema,
    }


# ---------------------------------------------------------------------------- output


def _lora_layers(pipe, name: str) -> dict[str, torch.Tensor]:
    """peft state dict of one component (keys `...to_q.lora_A.weight`), fp32 on CPU."""
    from peft.utils import get_peft_model_state_dict

    sd = get_peft_model_state_dict(getattr(pipe, name))
    return {k: v.detach().float().cpu().contiguous() for k, v in sd.items()}


def _save_diffusers(pipe, configs: dict, out: Path) -> None:
    """pytorch_lora_weights.safetensors, written beside and renamed: complete or absent."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers

    tmp = out / ".export.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    layers = {}
    for name in configs:
        peft_keys = _lora_layers(pipe, name)
        legacy = convert_state_dict_to_diffusers(peft_keys)
        # The legacy rename (to_q.lora.down) knows only attention projections, and diffusers
        # reads a file's key style from its first key: one with convs or feed-forwards
        # (`unet_targets`) keeps peft's lora_A / lora_B keys throughout, which it also loads.
        mixed = any(".lora_A." in k or ".lora_B." in k for k in legacy)
        layers[name] = peft_keys if mixed else legacy
    # The adapter metadata carries lora_alpha; without it diffusers loads alpha = rank.
    meta = {n: {**cfg.to_dict(), "base_model_name_or_path": None} for n, cfg in configs.items()}
    StableDiffusionPipeline.save_lora_weights(
        tmp,
        unet_lora_layers=layers["unet"],
        text_encoder_lora_layers=layers.get("text_encoder"),
        unet_lora_adapter_metadata=meta["unet"],
        text_encoder_lora_adapter_metadata=meta.get("text_encoder"),
        safe_serialization=True,
    )
    (tmp / WEIGHT_NAME).replace(out / WEIGHT_NAME)
    shutil.rmtree(tmp, ignore_errors=True)


def _save_kohya(pipe, configs: dict, path: Path, rank: int, alpha: float) -> None:
    """The kohya-ss layout the SD web UIs load: lora_unet_* / lora_te_* with .alpha."""
    from safetensors.torch import save_file

    sd = {}
    for name, prefix in (("unet", "lora_unet"), ("text_encoder", "lora_te")):
        if name not in configs:
            continue
        for key, w in _lora_layers(pipe, name).items():
            module, kind = _lora_key(key)  # type: ignore[misc]
            if name == "text_encoder" and not module.startswith("text_model."):
                module = f"text_model.{module}"  # the web UIs' key, as transformers 4 named it
            stem = f"{prefix}_{module.replace('.', '_')}"
            sd[f"{stem}.lora_{kind}.weight"] = w
            sd[f"{stem}.alpha"] = torch.tensor(float(configs[name].lora_alpha))
    meta = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(alpha),
        "ss_output_name": path.stem,
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(sd, str(tmp), metadata=meta)
    tmp.replace(path)


def _samples(pipe, prompts: list[str], device: str):
    """Per prompt a base row, then an adapter row, on the same seeds 0-3."""
    from PIL import Image, ImageDraw

    from genimg.train_base import sample_grid

    comp = {k: getattr(pipe, k) for k in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")}
    rows = []
    for prompt in prompts:
        for enabled in (False, True):
            for model in (pipe.unet, pipe.text_encoder):
                if getattr(model, "peft_config", None):
                    model.enable_adapters() if enabled else model.disable_adapters()
            rows.append(("LoRA" if enabled else "base", sample_grid(comp, [prompt], device)))
    label_w, (w, h) = 40, rows[0][1].size
    sheet = Image.new("RGB", (label_w + w, h * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (label, row) in enumerate(rows):
        sheet.paste(row, (label_w, i * h))
        draw.text((4, i * h + h // 2 - 6), label, fill="black")
    return sheet


def _card(
    name: str,
    recipe: LoraRecipe,
    ident: dict,
    data: dict,
    summary: dict,
    command: str,
    device: str,
    files: list[str],
    samples: bool,
) -> str:
    scenes = f" (scenes: {', '.join(recipe.scenes)})" if recipe.scenes else ""
    lines = [
        f"# {name}",
        "",
        recipe.description or "A LoRA adapter for the genimg base model.",
        "",
        f"LoRA rank {recipe.rank}, alpha {recipe.lora_alpha:g}, on the UNet's "
        + (
            "attention projections"
            if recipe.unet_targets == UNET_TARGETS
            else ", ".join(f"`{t}`" for t in recipe.unet_targets)
        )
        + (" and the text encoder's" if recipe.train_text_encoder else "")
        + f", for the base model `{ident['base']['model']}` ({ident['base']['summary']}; "
        f"architecture {ident['base']['arch_hash']}, weights {ident['base']['model_hash']}).",
        "",
        "| | |",
        "|---|---|",
        f"| data | `{data['source']}`{scenes}: {data['n_images']} images, {len(data['ids'])} "
        f"captions from {', '.join(recipe.caption_columns)}; skipped {data['skipped'] or 'none'} |",
        f"| steps | {summary['steps_done']} of {recipe.steps}, batch {recipe.batch_size}, "
        f"lr {recipe.lr:g} (text encoder "
        f"{recipe.text_encoder_lr:g}{': kept as it starts' * (recipe.text_encoder_lr == 0)}) |",
        *([f"| warm start | from the adapter `{recipe.init}` |"] if recipe.init else []),
        *(
            [
                f"| weights | EMA of the LoRA weights, decay {recipe.ema_decay:g}; the last "
                f"step's own in `{LAST_STEP}/` |"
            ]
            if recipe.ema_decay
            else []
        ),  # fmt: skip
        *(
            [
                f"| loss weighting | object_weight {recipe.object_weight:g}: the listed objects' "
                "boxes carry that many times the image's loss, each object an equal share |"
            ]
            if recipe.object_weight
            else []
        ),  # fmt: skip
        *(
            [
                f"| timesteps | the noisiest {recipe.timestep_bias_portion:.0%} drawn "
                f"{recipe.timestep_bias_multiplier:g} times as often as the rest |"
            ]
            if recipe.timestep_bias_multiplier != 1
            else []
        ),  # fmt: skip
        *(
            [
                f"| noise | multi-resolution: up to {recipe.multires_noise_iterations} coarser "
                f"levels, discount {recipe.multires_noise_discount:g} |"
            ]
            if recipe.multires_noise_iterations
            else []
        ),  # fmt: skip
        *(
            ["| SNR weighting | also 1 / sqrt(SNR) per image (debiased estimation) |"]
            if recipe.debiased_estimation
            else []
        ),  # fmt: skip
        *(
            ["| text padding | hidden from the cross-attention in training (`padding_mask`) |"]
            if recipe.padding_mask
            else []
        ),  # fmt: skip
        *(
            [
                "| empty windows | hidden from the cross-attention in training "
                "(`mask_empty_windows`): each caption seen as rendered alone |"
            ]
            if recipe.mask_empty_windows
            else []
        ),  # fmt: skip
        *(
            [
                "| precision | bfloat16 autocast on the CPU (`cpu_bf16`; attention and group "
                "norm in float32) |"
            ]
            if recipe.cpu_bf16 and not device.startswith("cuda")
            else []
        ),  # fmt: skip
        *(
            [
                f"| grounding | weight {recipe.grounding_weight:g}: each listed object's caption "
                "tokens pulled to attend inside its boxes (TokenCompose's token loss); phrases of "
                f"{data['grounded'][0]} of {data['grounded'][1]} objects found |"
            ]
            if data.get("grounded")
            else []
        ),  # fmt: skip
        f"| wall time | {summary['wall_s']:.0f} s on {device} |",
        f"| final loss | {summary['loss']:.4f} |",
        f"| files | {', '.join(f'`{f}`' for f in files)} |",
        "",
        "## Reproduce",
        "",
        "```",
        command,
        "```",
        "",
        "## Use",
        "",
        "```",
        f'genimg render --prompt "..." --lora {name}:1.0',
        "```",
        "",
        "```python",
        f'pipe.load_lora_weights("lora/{name}")  # diffusers, any SD pipeline',
        "```",
        "",
    ]
    if samples:
        lines += [
            "## Samples",
            "",
            "Per prompt: base model row, then adapter row; seeds 0-3.",
            "",
            *[f"- {p}" for p in recipe.sample_prompts],
            "",
            "![samples](samples.png)",
            "",
        ]
    return "\n".join(lines)


def _check_data(spec: str, columns: list[str]) -> None:
    """Fail fast, before the model loads, on a folder without metadata or caption columns."""
    if spec.startswith("catalog:"):
        return
    meta = Path(spec) / "metadata.jsonl"
    if not Path(spec).is_dir():
        raise UsageError("--data", f"{spec} is not a folder (nor catalog:N:SEED[:SPLIT])")
    if not meta.is_file():
        raise UsageError("--data", f"{spec} has no metadata.jsonl (an imagefolder needs one)")
    seen: set[str] = set()
    with open(meta, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue  # genimg.data reports bad lines with their numbers
            seen |= set(row) if isinstance(row, dict) else set()
    missing = [c for c in columns if c not in seen]
    if missing:
        raise UsageError(
            "--caption-column", f"{missing} not in {meta}; its columns are {sorted(seen)}"
        )


def train_lora(
    recipe: LoraRecipe,
    out: Path,
    device: str = "cpu",
    resume: bool = False,
    max_minutes: float = 0.0,
    export_kohya: bool = False,
    command: str = "",
) -> Path:
    """Train one adapter into `out`; returns the diffusers weights file."""
    from genimg.pipeline import DEFAULT_MODEL, load_pipeline, model_hash

    _check_data(recipe.data, recipe.caption_columns)
    out.mkdir(parents=True, exist_ok=True)
    # 1. The base model, frozen, with LoRA layers added.
    base = recipe.base or str(DEFAULT_MODEL)
    try:
        pipe = load_pipeline(base, device=device)
    except UsageError as err:
        raise UsageError("--base", str(err).removeprefix(f"{err.arg}: ")) from None
    pipe.set_progress_bar_config(disable=True)
    ident = {
        "format": 1,
        "name": out.name,
        "description": recipe.description,
        "rank": recipe.rank,
        "alpha": recipe.lora_alpha,
        "base": {**base_identity(pipe), "model": base, "model_hash": model_hash(pipe)},
    }
    configs = _add_adapters(pipe, recipe)
    if recipe.init:
        _warm_start(pipe, recipe)
    # 2. Data: cached latents, tokenized captions.
    data = _prepare_data(pipe, recipe, device)
    # 3. Train.
    summary = _train(pipe, configs, data, recipe, out, device, resume, max_minutes)
    ident.update(
        steps=summary["steps_done"],
        data=data["source"],
        caption_columns=recipe.caption_columns,
        scenes=recipe.scenes,
    )
    if (ema := summary.pop("ema")) is not None:  # the last step's weights beside, then the EMA's
        (out / LAST_STEP).mkdir(exist_ok=True)
        _save_diffusers(pipe, configs, out / LAST_STEP)
        last = {**ident, "name": f"{out.name}-{LAST_STEP}",
                "description": f"{recipe.description} (last step's weights, no EMA)"}  # fmt: skip
        (out / LAST_STEP / IDENTITY_NAME).write_text(
            json.dumps(last, indent=2, ensure_ascii=False) + "\n"
        )
        with torch.no_grad():
            for key, p in _trainable(pipe, configs).items():
                p.copy_(ema[key])
    # 4. Weights (diffusers, optionally kohya), identity, recipe, samples, card.
    _save_diffusers(pipe, configs, out)
    files = [WEIGHT_NAME]
    if export_kohya:
        _save_kohya(pipe, configs, out / f"{out.name}.safetensors", recipe.rank, recipe.lora_alpha)
        files.append(f"{out.name}.safetensors")
    (out / IDENTITY_NAME).write_text(json.dumps(ident, indent=2, ensure_ascii=False) + "\n")
    existing = out / "recipe.toml"  # keep a hand-written recipe (with comments) if it matches
    try:
        keep = existing.is_file() and LoraRecipe.from_toml(existing) == recipe
    except UsageError:
        keep = False
    if not keep:
        existing.write_text(recipe.to_toml(), encoding="utf-8")
    if recipe.sample_prompts:
        _samples(pipe, recipe.sample_prompts, device).save(out / "samples.png")
    (out / "README.md").write_text(
        _card(
            out.name,
            recipe,
            ident,
            data,
            summary,
            command,
            device,
            files,
            bool(recipe.sample_prompts),
        ),
        encoding="utf-8",
    )
    if summary["steps_done"] == recipe.steps:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)  # complete: the weights say all
    print(
        f"saved {out / WEIGHT_NAME} (step {summary['steps_done']}/{recipe.steps}, "
        f"{summary['wall_s']:.0f} s)"
    )
    return out / WEIGHT_NAME


# ---------------------------------------------------------------------------- CLI


def configure(parser) -> None:
    parser.epilog = (
        "examples:\n"
        "  genimg train-lora --recipe lora/catalog/recipe.toml --out lora/catalog\n"
        "  genimg train-lora --data my_export/ --caption-column text --caption-column text_ja \\\n"
        "      --rank 16 --steps 1500 --out lora/mine --export kohya"
    )
    parser.add_argument(
        "--base", help="base model folder or hub id (default: the recipe's, else the shipped model)"
    )
    parser.add_argument(
        "--data", help="imagefolder DIR or catalog:N:SEED[:SPLIT] (default: the recipe's)"
    )
    parser.add_argument("--out", required=True, help="adapter folder, e.g. lora/NAME")
    parser.add_argument(
        "--caption-column",
        action="append",
        metavar="COLUMN",
        help="metadata column of captions; repeat for several (each image "
        "then appears once per caption); default: the recipe's (text, text_ja)",
    )
    parser.add_argument("--recipe", help="TOML recipe, e.g. lora/catalog/recipe.toml")
    parser.add_argument("--rank", help="LoRA rank (default: the recipe's)")
    parser.add_argument("--steps", help="optimizer steps (default: the recipe's)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--max-minutes", default="0", help="stop (resumably) after M minutes")
    parser.add_argument("--export", choices=["kohya"], help="also write a kohya-style file")


def _command(args) -> str:
    parts = ["genimg", "train-lora"]
    for flag in ("recipe", "base", "data", "rank", "steps", "device", "out"):
        if getattr(args, flag) is not None and (flag != "device" or args.device != "cpu"):
            parts += [f"--{flag}", str(getattr(args, flag))]
    for column in args.caption_column or []:
        parts += ["--caption-column", column]
    if args.export:
        parts += ["--export", args.export]
    return shlex.join(parts)


def run(args) -> int:
    recipe = LoraRecipe.from_toml(args.recipe) if args.recipe else LoraRecipe()
    changes: dict = {}
    if args.rank is not None:
        changes["rank"] = check_int("--rank", args.rank, 1, 1024)
    if args.steps is not None:
        changes["steps"] = check_int("--steps", args.steps, 1, 10_000_000)
    for flag in ("base", "data"):
        if getattr(args, flag):
            changes[flag] = getattr(args, flag)
    if args.caption_column:
        changes["caption_columns"] = args.caption_column
    try:
        recipe = replace(recipe, **changes)
    except ValueError as err:
        raise UsageError(
            "--caption-column" if "caption" in str(err) else "--recipe", str(err)
        ) from None
    max_minutes = check_float("--max-minutes", args.max_minutes, 0, 1e6)
    if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        raise UsageError("--device", f"expected cpu or cuda[:N], got {args.device!r}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device", f"{args.device} requested but no CUDA device is available")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError("--out", f"{out} is a file; expected a folder")
    started = (out / WEIGHT_NAME).exists() or (out / "checkpoints").exists()
    if started and not args.resume:
        raise UsageError(
            "--out",
            f"{out} already holds an adapter or a run; pass --resume "
            "to continue it, or choose another folder",
        )
    if args.resume and (out / WEIGHT_NAME).exists() and not (out / "checkpoints").exists():
        raise UsageError("--resume", f"{out} holds a finished adapter; nothing to resume")
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
    train_lora(
        recipe, out, args.device, args.resume, max_minutes, args.export == "kohya", _command(args)
    )
    return 0
