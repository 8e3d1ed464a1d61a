"""`genimg train-base`: train the base ("open") model from scratch, in two stages.

1. VAE: reconstruct catalog images (L1 + MSE + image-gradient L1 + a tiny KL).
2. UNet + text encoder on cached latents and the catalog's *web* captions, with caption
   dropout for classifier-free guidance (Ho & Salimans, 2022), min-SNR-gamma loss weighting
   (Hang et al., 2023), warm-up then cosine-decayed learning rate, and an EMA of the weights
   that is what gets shipped.

Every random draw of step s comes from a CPU generator seeded with (seed, stage, s), so a
run killed at any moment and resumed from its newest checkpoint ends with the same bytes.
"""

from __future__ import annotations

import json
import math
import time
import tomllib
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from genimg.checkpoint import Checkpointer, latest_checkpoint
from genimg.errors import UsageError
from genimg.models import ModelConfig, encode_chunked, padding_mask, tokenize, window_mask

__all__ = ["BaseRecipe", "diffusion_loss", "empty_ids", "encode_latents", "lr_at", "train_base"]

RECIPE = Path(__file__).resolve().parent.parent / "assets" / "recipes" / "base.toml"


@dataclass
class VaeStage:
    steps: int = 3000  # optimizer steps
    batch_size: int = 64
    lr: float = 4e-4
    kl_weight: float = 1e-6  # SD's VAE uses a tiny KL: latents stay informative
    grad_weight: float = 0.5  # image-gradient L1 keeps thin objects (faucets) sharp
    crop: int = 0  # train on random square crops of this side (0 = whole images); the VAE
    # is convolutional, and 64 px crops cost a quarter of 128 px images on a CPU
    max_minutes: float = 0.0  # wall-clock cap, 0 = none; the card records steps done
    # Train the decoder alone on the frozen encoder's latent means (as Stable Diffusion's
    # ft-MSE VAE): the latents stay bit-identical, so a UNet and its adapters trained on
    # them keep working with a sharper decoder. Needs --init-from.
    decoder_only: bool = False

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("vae: steps >= 0 (0 skips the stage), batch_size and lr positive")


@dataclass
class UnetStage:
    steps: int = 20000
    batch_size: int = 128
    lr: float = 5e-4
    warmup: int = 500  # linear warm-up steps, then cosine decay to 10%
    caption_dropout: float = 0.1  # fraction of empty captions, for CFG
    snr_gamma: float = 5.0  # min-SNR-gamma weighting; 0 disables
    ema_decay: float = 0.999
    checkpoint_every: int = 1000
    sample_every: int = 0  # sample grid every N steps, 0 = only at the end
    max_minutes: float = 0.0
    cpu_bf16: bool = False  # bf16 autocast on a CPU too (as the LoRA recipe key; `_cpu_bf16`)

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("unet: steps >= 0 (0 skips the stage), batch_size and lr positive")
        if not 0 <= self.caption_dropout < 1 or not 0 < self.ema_decay < 1:
            raise ValueError("unet: caption_dropout in [0, 1) and ema_decay in (0, 1)")


@dataclass
class BaseRecipe:
    seed: int = 0
    data: str = "catalog:60000:1000:base"  # DIR or catalog:N:SEED[:SPLIT]
    caption_column: str = "web_text"  # the open model learns from loose alt-text only
    sample_prompts: list[str] = field(default_factory=list)
    model: ModelConfig = field(default_factory=ModelConfig)
    vae: VaeStage = field(default_factory=VaeStage)
    unet: UnetStage = field(default_factory=UnetStage)

    @classmethod
    def from_toml(cls, path: Path | str) -> BaseRecipe:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise UsageError("--recipe", f"cannot read {path}: {err}") from None
        return _build(cls, raw, str(path))


def _build(cls, raw: dict, where: str):
    """Dataclass from a TOML table; an unknown key is an error, nested tables recurse."""
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise UsageError("--recipe", f"{where}: unknown key(s) {unknown}")
    kwargs = {}
    for key, value in raw.items():
        sub = {"model": ModelConfig, "vae": VaeStage, "unet": UnetStage}.get(key)
        kwargs[key] = _build(sub, value, f"{where}[{key}]") if sub and cls is BaseRecipe else value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise UsageError("--recipe", f"{where}: {err}") from None


def lr_at(step: int, total: int, base_lr: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of base_lr."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _gen(seed: int, stage: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + stage * 100_000_007 + step)


def _to_pixels(images_u8: np.ndarray, device: str) -> torch.Tensor:
    x = torch.from_numpy(images_u8).to(device).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0  # (B, 3, H, W) in [-1, 1]


def vae_loss(vae, x: torch.Tensor, eps: torch.Tensor, st: VaeStage) -> torch.Tensor:
    if st.decoder_only:  # the frozen encoder's mean, the latent the UNet learned to make
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mean
    else:
        dist = vae.encode(x).latent_dist
        z = dist.mean + dist.std * eps
    rec = vae.decode(z).sample
    loss = F.l1_loss(rec, x) + F.mse_loss(rec, x)
    for dim in (2, 3):  # match horizontal and vertical image gradients
        loss = loss + st.grad_weight * F.l1_loss(torch.diff(rec, dim=dim), torch.diff(x, dim=dim))
    return loss if st.decoder_only else loss + st.kl_weight * dist.kl().mean()


def _vae_trainable(vae, st: VaeStage) -> list[torch.nn.Parameter]:
    if not st.decoder_only:
        return list(vae.parameters())
    vae.requires_grad_(False)
    params = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    for p in params:
        p.requires_grad_(True)
    return params


def diffusion_loss(
    unet,
    text_encoder,
    latents,
    input_ids,
    noise,
    timesteps,
    alphas_cumprod,
    snr_gamma: float,
    pixel_weight: torch.Tensor | None = None,
    debiased: bool = False,
    mask_padding: bool = False,
    mask_empty_windows: bool = False,
) -> torch.Tensor:
    """Epsilon-prediction loss, min-SNR-gamma weighted (Hang et al., 2023, eq. 13).

    `pixel_weight` (B, 1, h, w), each map of mean 1, weighs the squared error per latent
    pixel (the LoRA recipe's `object_weight`); None weighs every pixel alike. `debiased`
    also weighs each image by 1 / sqrt(SNR) (Yu et al., 2023; kohya's
    `debiased_estimation_loss`), SNR capped at 1000: an epsilon loss weighs the error of
    the predicted image by SNR, about 0.005 at the noisiest step, where a region's colour
    is decided; this lifts that step 15-fold against t = 500. `mask_padding` hides each
    window's padding states (after its EOS) from the UNet's cross-attention;
    `mask_empty_windows` hides the empty windows a short caption carries beside longer ones
    (`models.window_mask`), so each caption is seen as it is rendered alone, and skips
    encoding them.
    """
    ac = alphas_cumprod[timesteps].float().view(-1, 1, 1, 1)  # (B, 1, 1, 1)
    noisy = ac.sqrt() * latents + (1 - ac).sqrt() * noise
    window, eos = text_encoder.config.max_position_embeddings, text_encoder.config.eos_token_id
    mask = None
    for on, hide in ((mask_padding, padding_mask), (mask_empty_windows, window_mask)):
        if on:
            part = hide(input_ids, window, eos)
            mask = part if mask is None else mask & part
    # (B, T, C), as genimg renders; the hidden empty windows are not encoded
    hidden = encode_chunked(text_encoder, input_ids, visible=mask if mask_empty_windows else None)
    if mask is not None:
        mask = mask[:, : hidden.shape[1]]  # encode_chunked drops trailing empty windows
    pred = unet(noisy, timesteps, encoder_hidden_states=hidden, encoder_attention_mask=mask).sample
    sq = (pred.float() - noise) ** 2
    mse = (sq if pixel_weight is None else sq * pixel_weight).mean(dim=(1, 2, 3))
    snr = ac.view(-1) / (1 - ac.view(-1))
    if snr_gamma > 0:
        mse = mse * torch.clamp(snr, max=snr_gamma) / snr
    if debiased:
        mse = mse / torch.clamp(snr, max=1000).sqrt()
    return mse.mean()


@torch.no_grad()
def encode_latents(vae, images_u8: np.ndarray, device: str, batch_size: int = 64) -> torch.Tensor:
    """Latent means of uint8 images, times the VAE's scaling factor: (N, 4, h, w) on CPU."""
    out = []
    for i in range(0, len(images_u8), batch_size):
        x = _to_pixels(images_u8[i : i + batch_size], device)
        out.append(vae.encode(x).latent_dist.mean.float().cpu())
    return torch.cat(out) * vae.config.scaling_factor


def _autocast(device: str, cpu_bf16: bool = False):
    """bf16 on GPU; on CPU float32 (bf16 matmul is 5x slower on a CPU without native bf16,
    the feasibility notes) unless `cpu_bf16` (the LoRA recipe key) asks for `_cpu_bf16`."""
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return _cpu_bf16() if cpu_bf16 else torch.autocast("cpu", enabled=False)


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (Linux: its /proc/cpuinfo flags)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def warn_if_slow_bf16(cpu_bf16: bool, device: str) -> None:
    """Say so when a recipe's `cpu_bf16` runs on a CPU without native bfloat16."""
    if cpu_bf16 and not device.startswith("cuda") and not native_bf16():
        print("cpu_bf16: this CPU has no native bfloat16 (avx512_bf16 or amx_bf16 in lscpu's "
              "flags); its steps will be slower than float32's")  # fmt: skip


@contextmanager
def _cpu_bf16():
    """bf16 autocast on CPU with the attention and group norm kept in float32.

    On a CPU with native bfloat16 (avx512_bf16, AMX) the matmuls run 4-5x and the convs 2x
    faster in bf16, but the CPU flash attention's backward and group norm 3-6x slower
    (measured on the project's AMD EPYC): those two take float32 inputs here, everything
    else is autocast's. Swaps the two torch.nn.functional entries diffusers and
    transformers call for the block's duration.
    """
    sdpa, group_norm = F.scaled_dot_product_attention, F.group_norm

    def sdpa32(q, k, v, attn_mask=None, *args, **kwargs):
        if attn_mask is not None and attn_mask.is_floating_point():
            attn_mask = attn_mask.float()
        with torch.autocast("cpu", enabled=False):
            return sdpa(q.float(), k.float(), v.float(), attn_mask, *args, **kwargs)

    def group_norm32(x, *args, **kwargs):
        with torch.autocast("cpu", enabled=False):
            return group_norm(x.float(), *args, **kwargs)

    F.scaled_dot_product_attention, F.group_norm = sdpa32, group_norm32
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield
    finally:
        F.scaled_dot_product_attention, F.group_norm = sdpa, group_norm


def _timed_out(t0: float, max_minutes: float) -> bool:
    return max_minutes > 0 and time.perf_counter() - t0 > 60 * max_minutes


def _fit_steps(
    total: int, done: int, t_mark: float, steps_since_mark: int, t0: float, max_minutes: float
) -> int:
    """Shrink `total` so the run ends within max_minutes, from the measured step time.

    Called once, early and inside the warm-up, so the learning-rate schedule after it is
    that of a plain run with the returned total: setting `steps` to it reproduces the run.
    """
    if max_minutes <= 0 or steps_since_mark <= 0:
        return total
    per_step = (time.perf_counter() - t_mark) / steps_since_mark
    left = 60 * max_minutes - (time.perf_counter() - t0)
    return max(done + 1, min(total, done + int(0.97 * left / per_step)))


def _with_steps(st, total: int):
    """The stage settings with the step count a resumed run had settled on."""
    import dataclasses

    return dataclasses.replace(st, steps=total)


def _log(out: Path, record: dict) -> None:
    with open(out / "train_log.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def train_vae(
    vae, images: np.ndarray, st: VaeStage, seed: int, out: Path, device: str, resume: bool
) -> dict:
    """Stage 1. Returns a summary (steps done, wall time, final loss)."""
    run = out / "vae"
    ckpt = Checkpointer(run)
    opt = torch.optim.AdamW(_vae_trainable(vae, st), lr=st.lr, weight_decay=0.0)
    start, wall = 0, 0.0
    if resume and (found := latest_checkpoint(run)):
        state = found[1]
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, wall, st = state["step"], state["wall_s"], _with_steps(st, state["total"])
    vae.to(device).train()
    t0, loss_v, done, total = time.perf_counter() - wall, float("nan"), start, st.steps
    bar = tqdm(total=total, initial=start, desc="vae")
    t_mark = time.perf_counter()
    for step in range(start, 10**9):
        if step >= total:
            break
        if step == start + 10:
            t_mark = time.perf_counter()
        elif step == start + 40 and step < 100:
            total = _fit_steps(total, step, t_mark, 30, t0, st.max_minutes)
            bar.total = total
        g = _gen(seed, 1, step)
        idx = torch.randint(len(images), (st.batch_size,), generator=g).numpy()
        batch = images[idx]
        if st.crop:
            y0, x0 = torch.randint(0, images.shape[1] - st.crop + 1, (2,), generator=g).tolist()
            batch = batch[:, y0 : y0 + st.crop, x0 : x0 + st.crop]
        x = _to_pixels(batch, device)
        side = x.shape[-1] // 2 ** (len(vae.config.block_out_channels) - 1)
        eps = torch.randn((st.batch_size, vae.config.latent_channels, side, side), generator=g).to(
            device
        )
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total, st.lr, 100)
        with _autocast(device):
            loss = vae_loss(vae, x, eps, st)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_v = loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{loss_v:.4f}")
        done = step + 1
        if done % 500 == 0 or done == total or _timed_out(t0, st.max_minutes):
            wall = time.perf_counter() - t0
            ckpt.save(
                done,
                {
                    "model": vae.state_dict(),
                    "optimizer": opt.state_dict(),
                    "step": done,
                    "total": total,
                    "wall_s": wall,
                },
            )
            _log(out, {"stage": "vae", "step": done, "loss": loss_v, "wall_s": round(wall, 1)})
            if _timed_out(t0, st.max_minutes):
                break
    ckpt.wait()
    vae.eval()
    vae.requires_grad_(True)
    return {
        "decoder_only": st.decoder_only,
        "steps": done,
        "wall_s": time.perf_counter() - t0,
        "loss": loss_v,
        "checkpoint_stall_s": ckpt.stall_s,
    }


def ema_update(ema: dict[str, torch.Tensor], params: dict[str, torch.Tensor], done: int,
               decay: float) -> None:  # fmt: skip
    """EMA of `params` after `done` steps, decay warmed up as diffusers' EMAModel does it."""
    rate = 1 - min(decay, (1 + done) / (10 + done))
    with torch.no_grad():  # one fused kernel per dtype/device, not one per tensor
        torch._foreach_lerp_([ema[k] for k in params], [p.detach() for p in params.values()], rate)


def _ema_update(ema: dict[str, torch.Tensor], modules: dict, done: int, decay: float) -> None:
    named = {f"{prefix}.{n}": p for prefix, m in modules.items() for n, p in m.named_parameters()}
    ema_update(ema, named, done, decay)


def _ema_copy(modules: dict) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.{name}": p.detach().clone()
        for prefix, module in modules.items()
        for name, p in module.named_parameters()
    }


def _load_ema_into(modules: dict, ema: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for prefix, module in modules.items():
            for name, p in module.named_parameters():
                p.copy_(ema[f"{prefix}.{name}"])


def empty_ids(tokenizer, ids: torch.Tensor) -> torch.Tensor:
    """The empty caption's row (for caption dropout), as many windows wide as `ids`."""
    empty = tokenize(tokenizer, [""])[0]
    return empty.repeat(ids.shape[1] // len(empty))


def train_unet(
    comp: dict,
    latents: torch.Tensor,
    ids: torch.Tensor,
    st: UnetStage,
    seed: int,
    out: Path,
    device: str,
    resume: bool,
    on_sample=None,
) -> dict:
    """Stage 2: UNet + text encoder on (latent, caption ids) pairs; EMA weights at the end."""
    unet, te = comp["unet"], comp["text_encoder"]
    modules = {"unet": unet, "text_encoder": te}
    run = out / "unet"
    ckpt = Checkpointer(run)
    params = [p for m in modules.values() for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=st.lr, weight_decay=1e-2)
    empty = empty_ids(comp["tokenizer"], ids)  # the dropped caption, as wide as the others
    ac = comp["scheduler"].alphas_cumprod.to(device)
    start, wall, ema = 0, 0.0, _ema_copy(modules)
    if resume and (found := latest_checkpoint(run)):
        state = found[1]
        unet.load_state_dict(state["unet"])
        te.load_state_dict(state["text_encoder"])
        opt.load_state_dict(state["optimizer"])
        ema = state["ema"]
        start, wall, st = state["step"], state["wall_s"], _with_steps(st, state["total"])
    for m in modules.values():
        m.to(device).train()
    warn_if_slow_bf16(st.cpu_bf16, device)
    ema = {k: v.to(device) for k, v in ema.items()}
    t0, loss_v, done, total = time.perf_counter() - wall, float("nan"), start, st.steps
    bar = tqdm(total=total, initial=start, desc="unet")
    t_mark = time.perf_counter()
    for step in range(start, 10**9):
        if step >= total:
            break
        if step == start + 10:
            t_mark = time.perf_counter()
        elif step == start + 60 and step < st.warmup:
            total = _fit_steps(total, step, t_mark, 50, t0, st.max_minutes)
            bar.total = total
        g = _gen(seed, 2, step)
        idx = torch.randint(len(latents), (st.batch_size,), generator=g)
        drop = torch.rand(st.batch_size, generator=g) < st.caption_dropout
        noise = torch.randn((st.batch_size, *latents.shape[1:]), generator=g)
        t = torch.randint(0, len(ac), (st.batch_size,), generator=g)
        batch_ids = torch.where(drop[:, None], empty[None], ids[idx])
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total, st.lr, st.warmup)
        with _autocast(device, st.cpu_bf16):
            loss = diffusion_loss(
                unet,
                te,
                latents[idx].to(device),
                batch_ids.to(device),
                noise.to(device),
                t.to(device),
                ac,
                st.snr_gamma,
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        done = step + 1
        _ema_update(ema, modules, done, st.ema_decay)
        loss_v = loss.item() if done % 10 == 0 or done == total else loss_v
        bar.update(1)
        bar.set_postfix(loss=f"{loss_v:.4f}")
        stop = _timed_out(t0, st.max_minutes)
        if done % st.checkpoint_every == 0 or done == total or stop:
            wall = time.perf_counter() - t0
            ckpt.save(
                done,
                {
                    "unet": unet.state_dict(),
                    "text_encoder": te.state_dict(),
                    "optimizer": opt.state_dict(),
                    "ema": ema,
                    "step": done,
                    "total": total,
                    "wall_s": wall,
                },
            )
            _log(
                out,
                {
                    "stage": "unet",
                    "step": done,
                    "loss": loss_v,
                    "lr": lr_at(step, total, st.lr, st.warmup),
                    "wall_s": round(wall, 1),
                },
            )
        if on_sample and st.sample_every and done % st.sample_every == 0:
            on_sample(done, ema)
        if stop:
            break
    ckpt.wait()
    _load_ema_into(modules, ema)
    for m in modules.values():
        m.eval()
    return {
        "steps": done,
        "wall_s": time.perf_counter() - t0,
        "loss": loss_v,
        "checkpoint_stall_s": ckpt.stall_s,
    }


def _grid(images: list, cols: int):
    from PIL import Image

    w, h = images[0].size
    rows = math.ceil(len(images) / cols)
    sheet = Image.new("RGB", (cols * w, rows * h), "white")
    for i, im in enumerate(images):
        sheet.paste(im, ((i % cols) * w, (i // cols) * h))
    return sheet


@torch.no_grad()
def sample_grid(comp: dict, prompts: list[str], device: str, seeds: int = 4):
    """One row per prompt, `seeds` images each, 20 DPM-Solver++ steps (EMA weights); long
    prompts are read in chunks, as `genimg render` reads them."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    from genimg.render import encode_prompt

    pipe = StableDiffusionPipeline(
        vae=comp["vae"],
        text_encoder=comp["text_encoder"],
        tokenizer=comp["tokenizer"],
        unet=comp["unet"],
        scheduler=DPMSolverMultistepScheduler.from_config(comp["scheduler"].config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).to(device)
    pipe.set_progress_bar_config(disable=True)
    images = []
    for prompt in prompts:
        gens = [torch.Generator().manual_seed(s) for s in range(seeds)]
        latents = torch.stack(
            [
                torch.randn(
                    comp["unet"].config.in_channels,
                    *[comp["unet"].config.sample_size] * 2,
                    generator=g,
                )
                for g in gens
            ]
        ).to(device)
        cond, uncond = encode_prompt(pipe, prompt)
        images += pipe(
            prompt_embeds=cond.expand(seeds, -1, -1),
            negative_prompt_embeds=uncond.expand(seeds, -1, -1),
            latents=latents,
            num_inference_steps=20,
            guidance_scale=7.5,
        ).images
    return _grid(images, seeds)


def init_from(comp: dict, folder: Path) -> None:
    """Warm start: copy a saved model folder's weights into freshly built components.

    The folder must hold the recipe's architecture; a mismatch names the folder, the
    component and the first differing tensors. Only safetensors files are read.
    """
    from safetensors.torch import load_file

    for name in ("vae", "text_encoder", "unet"):
        files = sorted((folder / name).glob("*.safetensors"))
        if not files:
            raise UsageError("--init-from", f"{folder / name} has no .safetensors weights")
        state: dict = {}
        for f in files:
            try:
                state.update(load_file(str(f)))
            except Exception as err:  # safetensors raises its own error types
                raise UsageError("--init-from", f"cannot read {f}: {err}") from None
        own = comp[name].state_dict()
        missing = sorted(set(own) - set(state))[:3]
        extra = sorted(set(state) - set(own))[:3]
        shapes = [k for k in own if k in state and own[k].shape != state[k].shape][:3]
        if missing or extra or shapes:
            raise UsageError(
                "--init-from",
                f"{folder / name} does not fit the recipe's {name}: missing {missing}, "
                f"unexpected {extra}, other shapes {shapes}",
            )
        comp[name].load_state_dict({k: v.float() for k, v in state.items()})


def _latents(comp: dict, images: np.ndarray, device: str) -> tuple[torch.Tensor, float]:
    """The VAE's latents of every image, scaled to unit variance (as SD's 0.18215)."""
    comp["vae"].config.scaling_factor = 1.0
    latents = encode_latents(comp["vae"], images, device)
    scale = float(1.0 / latents.std())
    return latents * scale, scale


def train_base(
    recipe: BaseRecipe,
    out: Path,
    device: str = "cpu",
    resume: bool = False,
    init: Path | None = None,
) -> Path:
    """Run both stages into `out`; returns the saved diffusers folder (`out/model`).

    `init`: a saved model folder to warm-start all three networks from (e.g. the shipped
    model); a stage with `steps = 0` then keeps its warm-started weights.
    """
    from genimg.data import load_dataset
    from genimg.models import build_components
    from genimg.pipeline import save_pipeline

    if recipe.vae.decoder_only and init is None:
        raise UsageError("--init-from", "vae.decoder_only fine-tunes a trained VAE: give its model")
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.json").write_text(json.dumps(asdict(recipe), indent=2))
    torch.manual_seed(recipe.seed)
    comp = build_components(recipe.model)
    if init is not None:
        init_from(comp, init)
    t_data = time.perf_counter()
    data = load_dataset(recipe.data, [recipe.caption_column], recipe.model.sample_size)
    print(
        f"data: {len(data.images)} images from {data.source} in "
        f"{time.perf_counter() - t_data:.0f} s; skipped {data.skipped}"
    )
    summary: dict = {
        "device": device,
        "data": data.source,
        "n_images": len(data.images),
        "skipped": data.skipped,
    }

    # 1. VAE
    summary["vae"] = train_vae(
        comp["vae"], data.images, recipe.vae, recipe.seed, out, device, resume
    )
    # 2. Latents, and the scaling factor that gives them unit variance (as SD's 0.18215);
    #    a warm-started encoder kept as it was keeps its own, which the adapters trained on
    #    it assume.
    kept = init is not None and (recipe.vae.steps == 0 or recipe.vae.decoder_only)
    if kept:
        scale = json.loads((Path(init) / "vae" / "config.json").read_text())["scaling_factor"]
    if recipe.unet.steps > 0 or not kept:
        latents, found = _latents(comp, data.images, device)
        if kept:
            latents = latents * (scale / found)
        else:
            scale = found
    comp["vae"].register_to_config(scaling_factor=scale)
    summary["vae"]["scaling_factor"] = scale
    # 3. UNet + text encoder (0 steps: a warm-started UNet and text encoder are kept)
    if recipe.unet.steps > 0:
        ids = tokenize(comp["tokenizer"], data.captions(recipe.caption_column))
        summary["unet"] = train_unet(
            comp, latents, ids, recipe.unet, recipe.seed, out, device, resume
        )
    # 4. Save the EMA weights as a diffusers folder, a sample grid and the run summary.
    for name in ("vae", "text_encoder", "unet"):
        comp[name].to("cpu").float()
    model_dir = out / "model"
    save_pipeline(comp, model_dir)
    if recipe.sample_prompts:
        sample_grid(comp, recipe.sample_prompts, "cpu").save(out / "samples.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return model_dir


def configure(parser) -> None:
    parser.epilog = (
        "example:\n  genimg train-base --recipe assets/recipes/base.toml --out runs/base\n"
        "  genimg train-base --recipe assets/recipes/base.toml --out runs/base --resume"
    )
    parser.add_argument("--recipe", default=str(RECIPE), help="TOML recipe (default: %(default)s)")
    parser.add_argument("--data", help="override the recipe's data: DIR or catalog:N:SEED[:SPLIT]")
    parser.add_argument("--out", required=True, help="run folder (checkpoints, model/, logs)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    parser.add_argument(
        "--init-from",
        metavar="MODEL_DIR",
        help="warm-start the networks from a saved model folder, e.g. assets/models/genimg-base",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")


def run(args) -> int:
    recipe = BaseRecipe.from_toml(args.recipe)
    if args.data:
        recipe.data = args.data
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.resume:
        raise UsageError("--out", f"{out} is not empty; pass --resume to continue that run")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device", f"{args.device} requested but no CUDA device is available")
    torch.backends.cuda.matmul.allow_tf32 = True
    init = Path(args.init_from) if args.init_from else None
    if init is not None and not (init / "model_index.json").is_file():
        raise UsageError("--init-from", f"{init} is not a model folder (no model_index.json)")
    model_dir = train_base(recipe, out, args.device, args.resume, init)
    print(f"saved {model_dir}")
    return 0
