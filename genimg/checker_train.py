"""`genimg train-checker`: train the CLIP attribute checker on its own catalog split.

The model is a small transformers `CLIPModel` (not the generator's text encoder). Each
step embeds a batch of augmented catalog images and *every* text the checker will ever
compare (a few hundred short phrases: "a shelf", "no shelf", "a wicker basket", "a red
sofa", "two baskets"), and takes CLIP's softmax cross-entropy over each object's contrast
set -- present vs absent, its materials, its colours, its counts (Radford et al., 2021,
with the contrast sets of checker.py as the negatives). Training optimises exactly what
`check` computes. Afterwards the saved folder is reloaded, its presence thresholds are
calibrated on a held-out split, it is evaluated on a fresh one, and the card is written.

Data: `--data catalog:N:SEED[:SPLIT]` renders in memory (fast; the split name must start
with "checker" so it never shares images with the generator's splits), or an imagefolder.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from genimg import checker as ck
from genimg.errors import UsageError, check_float
from genimg.taxonomy import COLORS, MATERIALS, OBJECTS
from genimg.train_base import _autocast

__all__ = ["CheckerRecipe", "train_checker"]

RECIPE = Path(__file__).resolve().parent.parent / "assets" / "recipes" / "checker.toml"
LEGS_FILE = "legs.json"  # one record per training leg, the first leg first
NOTES_FILE = "notes.md"  # hand-written findings the card appends (never carried to a new leg)


@dataclass
class CheckerRecipe:
    seed: int = 0
    data: str = "catalog:30000:5000:checker"  # training images: DIR or catalog:N:SEED:SPLIT
    calib_data: str = "catalog:2000:5001:checker-calib"  # thresholds are fitted here
    eval_data: str = "catalog:2000:5002:checker-eval"  # the card's accuracy table
    # Model: 64 px, patch 8 -> 64 image tokens; fast enough for 300+ images/s on 2 cores.
    image_size: int = 64
    patch_size: int = 8
    vision_hidden: int = 128
    vision_layers: int = 6
    text_hidden: int = 128
    text_layers: int = 2  # texts are 2-6 words from a closed vocabulary
    heads: int = 4
    projection_dim: int = 128
    text_max_length: int = 16
    # Optimisation
    steps: int = 4000
    batch_size: int = 256
    lr: float = 1e-3
    warmup: int = 150
    weight_decay: float = 0.05
    # Augmentation, so it holds on generated images (softer than rendered ones)
    blur_p: float = 0.5  # Gaussian blur, sigma up to blur_sigma pixels (at image_size)
    blur_sigma: float = 1.2
    downscale_p: float = 0.3  # resize down to 50-100% and back up
    noise_std: float = 0.04  # Gaussian pixel noise, std up to this (pixels in [0, 1])
    jitter: float = 0.1  # brightness / contrast / saturation +-; never hue: colour is a label
    # Hard negatives: {object: [look-alikes]}. Where the object is absent but a look-alike is
    # in the room ("no armchair" beside a sofa), its presence loss counts this many times.
    hard_negatives: dict[str, list[str]] = field(default_factory=dict)
    hard_negative_weight: float = 1.0
    # Fragments: this share of each batch is cut into k x k tiles (k drawn from
    # fragment_grids) put back in a random order. An object stays present only where one of
    # its boxes lies inside one tile; a cut one is labelled absent, so the checker learns
    # that pieces of a sink are not a sink (generated fragment pictures fooled it).
    fragment_p: float = 0.0
    fragment_grids: list[int] = field(default_factory=lambda: [2, 4, 8])
    checkpoint_every: int = 500
    log_every: int = 50
    max_minutes: float = 0.0  # stop early (and still save) after this long; 0 = no limit

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} not a multiple of patch_size")
        if min(self.steps, self.batch_size, self.warmup + 1, self.checkpoint_every) < 1:
            raise ValueError("steps, batch_size, checkpoint_every must be positive")
        if self.vision_hidden % self.heads or self.text_hidden % self.heads:
            raise ValueError("hidden sizes must be multiples of heads")
        if not 0 <= self.blur_p <= 1 or not 0 <= self.downscale_p <= 1 or self.lr <= 0:
            raise ValueError("blur_p, downscale_p in [0, 1]; lr > 0")
        if not 0 <= self.fragment_p <= 1:
            raise ValueError("fragment_p must be in [0, 1]")
        if not self.fragment_grids or any(
            k < 2 or self.image_size % k for k in self.fragment_grids
        ):
            raise ValueError(f"fragment_grids: each >= 2 and a divisor of {self.image_size}")
        if self.hard_negative_weight <= 0:
            raise ValueError("hard_negative_weight must be positive")
        unknown = sorted(
            {o for k, v in self.hard_negatives.items() for o in [k, *v]} - set(OBJECTS)
        )
        if unknown:
            raise ValueError(f"hard_negatives: unknown object(s) {unknown}")

    @classmethod
    def from_toml(cls, path: Path | str) -> CheckerRecipe:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise UsageError("--recipe", f"cannot read {path}: {err}") from None
        unknown = sorted(set(raw) - {f.name for f in fields(cls)})
        if unknown:
            raise UsageError("--recipe", f"{path}: unknown key(s) {unknown}")
        try:
            return cls(**raw)
        except (TypeError, ValueError) as err:
            raise UsageError("--recipe", f"{path}: {err}") from None


# -- model and texts -----------------------------------------------------------------------


def build_model(r: CheckerRecipe, tokenizer):
    from transformers import CLIPConfig, CLIPModel

    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=r.text_hidden,
        intermediate_size=4 * r.text_hidden,
        num_hidden_layers=r.text_layers,
        num_attention_heads=r.heads,
        max_position_embeddings=r.text_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(
        hidden_size=r.vision_hidden,
        intermediate_size=4 * r.vision_hidden,
        num_hidden_layers=r.vision_layers,
        num_attention_heads=r.heads,
        image_size=r.image_size,
        patch_size=r.patch_size,
    )
    return CLIPModel(
        CLIPConfig(text_config=text, vision_config=vision, projection_dim=r.projection_dim)
    )


@dataclass
class TextTable:
    """Every checker text, and per object the indices of its contrast sets (padded, -1)."""

    texts: list[str]
    present: torch.Tensor  # (O,)
    absent: torch.Tensor  # (O,)
    material: torch.Tensor  # (O, M) candidate text indices
    color: torch.Tensor  # (O, C)
    count: torch.Tensor  # (O, K)


def text_table(templates: dict) -> TextTable:
    texts: list[str] = []
    per: dict[str, list[list[int]]] = {
        k: [] for k in ("present", "absent", "material", "color", "count")
    }
    for o in OBJECTS:
        t = ck.object_texts(templates, o)
        t["count"] = t["count"][: OBJECTS[o].max_count] if OBJECTS[o].max_count > 1 else []
        for kind, items in t.items():
            per[kind].append(list(range(len(texts), len(texts) + len(items))))
            texts += items

    def pad(rows: list[list[int]]) -> torch.Tensor:
        width = max(1, max(map(len, rows)))
        return torch.tensor([row + [-1] * (width - len(row)) for row in rows])

    return TextTable(
        texts,
        pad(per["present"])[:, 0],
        pad(per["absent"])[:, 0],
        pad(per["material"]),
        pad(per["color"]),
        pad(per["count"]),
    )


def labels_for(
    rows: list[dict], hard_negatives: dict[str, list[str]] | None = None, weight: float = 1.0
) -> dict[str, torch.Tensor]:
    """Per image and object: present (0/1), the presence loss's weight (`weight` where the
    object is absent and one of its `hard_negatives` look-alikes is there, else 1), and the
    target's position in each contrast set (-100 where it does not apply: absent, no colour,
    a single-count object)."""
    names = list(OBJECTS)
    n, o = len(rows), len(names)
    lab = {
        "present": torch.zeros(n, o),
        "present_weight": torch.ones(n, o),
        **{k: torch.full((n, o), -100, dtype=torch.long) for k in ("material", "color", "count")},
    }
    for i, row in enumerate(rows):
        for e in row["objects"]:
            j = names.index(e["name"])
            lab["present"][i, j] = 1
            lab["material"][i, j] = ck.material_candidates(e["name"]).index(e["material"])
            if e["color"] is not None:
                lab["color"][i, j] = ck.color_candidates(e["name"]).index(e["color"])
            if OBJECTS[e["name"]].max_count > 1:
                lab["count"][i, j] = e["count"] - 1
    for obj, alikes in (hard_negatives or {}).items():
        j, there = names.index(obj), [names.index(a) for a in alikes]
        hard = (lab["present"][:, j] == 0) & (lab["present"][:, there].sum(1) > 0)
        lab["present_weight"][hard, j] = weight
    return lab


def fragment_labels(rows: list[dict], grids: list[int], size: int) -> dict[int, dict]:
    """Per grid k: the labels of each image cut into k x k tiles (boxes in `size` pixels).
    `present` keeps an object only where one of its boxes lies inside one tile; `whole`
    where all of them do (its count still holds); `known` is False for an object without
    boxes (its presence there is not trained)."""
    names = list(OBJECTS)
    out = {}
    for k in grids:
        tile = size / k
        lab = {
            key: torch.zeros(len(rows), len(names), dtype=torch.bool)
            for key in ("present", "whole")
        }
        lab["known"] = torch.ones(len(rows), len(names), dtype=torch.bool)
        for i, row in enumerate(rows):
            for e in row["objects"]:
                j, boxes = names.index(e["name"]), e.get("boxes") or []
                inside = [
                    x0 // tile == (x1 - 1) // tile and y0 // tile == (y1 - 1) // tile
                    for x0, y0, x1, y1 in boxes
                ]
                lab["present"][i, j] = any(inside)
                lab["whole"][i, j] = bool(inside) and all(inside)
                lab["known"][i, j] = bool(boxes)
        out[k] = lab
    return out


def shuffle_tiles(x: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
    """x (B, C, S, S): each image cut into k x k tiles put back in a random order (from g)."""
    b, c, s, _ = x.shape
    t = s // k
    tiles = x.unfold(2, t, t).unfold(3, t, t).reshape(b, c, k * k, t, t)
    order = torch.rand(b, k * k, generator=g).argsort(dim=1).to(x.device)
    tiles = tiles[torch.arange(b, device=x.device)[:, None], :, order]  # (B, k*k, C, t, t)
    return tiles.reshape(b, k, k, c, t, t).permute(0, 3, 1, 4, 2, 5).reshape(b, c, s, s)


def fragment(
    x: torch.Tensor,
    lab: dict[str, torch.Tensor],
    idx: torch.Tensor,
    frag: dict[int, dict],
    p: float,
    g: torch.Generator,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Shuffle the tiles of a share p of the batch x (B, 3, S, S), images idx of the data,
    and give those images their fragment labels (`fragment_labels`; a hard negative's
    extra weight does not carry over to a shuffled image). Draws come from g."""
    b, grids, dev = x.shape[0], list(frag), x.device
    chosen = torch.rand(b, generator=g) < p
    grid = torch.randint(len(grids), (b,), generator=g)
    x, lab = x.clone(), {key: v.clone() for key, v in lab.items()}
    for n, k in enumerate(grids):
        picked = torch.nonzero(chosen & (grid == n)).flatten()
        if not len(picked):
            continue
        f = {key: v[idx[picked]].to(dev) for key, v in frag[k].items()}
        rows = picked.to(dev)
        x[rows] = shuffle_tiles(x[rows], k, g)
        lab["present"][rows] = f["present"].float()
        lab["present_weight"][rows] = f["known"].float()
        for key in ("material", "color"):
            lab[key][rows] = lab[key][rows].masked_fill(~f["present"], -100)
        lab["count"][rows] = lab["count"][rows].masked_fill(~f["whole"], -100)
    return x, lab


def checker_loss(
    img: torch.Tensor,
    txt: torch.Tensor,
    scale: torch.Tensor,
    table: TextTable,
    lab: dict[str, torch.Tensor],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """img (B, D), txt (T, D) unit-norm; lab tensors (B, O). Sum of the four losses."""
    sims = scale * img @ txt.T  # (B, T)
    dev = sims.device
    pres = sims[:, table.present.to(dev)] - sims[:, table.absent.to(dev)]  # (B, O)
    parts = {
        "presence": F.binary_cross_entropy_with_logits(
            pres, lab["present"], weight=lab.get("present_weight")
        )
    }
    for kind in ("material", "color", "count"):
        idx = getattr(table, kind).to(dev)  # (O, K)
        logits = sims[:, idx.clamp(min=0)].masked_fill(idx < 0, -1e4)  # (B, O, K)
        target = lab[kind]
        if (target >= 0).any():
            parts[kind] = F.cross_entropy(
                logits.flatten(0, 1).float(), target.flatten(), ignore_index=-100
            )
    loss = torch.stack(list(parts.values())).sum()
    return loss, {k: v.detach() for k, v in parts.items()}  # tensors: no sync per step


# -- augmentation --------------------------------------------------------------------------


def augment(x: torch.Tensor, r: CheckerRecipe, g: torch.Generator) -> torch.Tensor:
    """x (B, 3, S, S) in [0, 1]; draws come from the CPU generator g (exact resume)."""
    b, dev = x.shape[0], x.device

    def rand(*shape):
        return torch.rand(*shape, generator=g).to(dev)

    flip = rand(b) < 0.5
    x = torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
    if r.downscale_p > 0:  # one random size per batch, applied to a random subset
        side = int(x.shape[-1] * (0.5 + 0.5 * float(torch.rand(1, generator=g))))
        soft = F.interpolate(
            F.interpolate(x, size=side, mode="bilinear", antialias=True),
            size=x.shape[-1],
            mode="bilinear",
        )
        x = torch.where((rand(b) < r.downscale_p).view(b, 1, 1, 1), soft, x)
    if r.blur_p > 0:  # per-image sigma, separable 5-tap Gaussian as a grouped conv
        sigma = (rand(b) * r.blur_sigma).clamp(min=1e-3) * (rand(b) < r.blur_p)
        taps = torch.arange(-2, 3, device=dev).float()
        k = torch.exp(-(taps[None] ** 2) / (2 * sigma[:, None].clamp(min=0.05) ** 2))
        k = (k / k.sum(1, keepdim=True)).repeat_interleave(3, 0)  # (B*3, 5)
        y = x.reshape(1, b * 3, *x.shape[-2:])
        y = F.conv2d(F.pad(y, (2, 2, 0, 0), mode="reflect"), k.view(b * 3, 1, 1, 5), groups=b * 3)
        y = F.conv2d(F.pad(y, (0, 0, 2, 2), mode="reflect"), k.view(b * 3, 1, 5, 1), groups=b * 3)
        x = y.view_as(x)
    if r.jitter > 0:
        j = (rand(3, b, 1, 1, 1) * 2 - 1) * r.jitter
        gray = x.mean(1, keepdim=True)
        x = gray + (x - gray) * (1 + j[2])  # saturation
        x = (x - x.mean((1, 2, 3), keepdim=True)) * (1 + j[1]) + x.mean((1, 2, 3), keepdim=True)
        x = x * (1 + j[0])  # brightness, contrast above
    if r.noise_std > 0:
        # Drawn on the device from a seed taken from g: a CPU draw of B*3*S*S normals and
        # its copy took most of a GPU step (160 ms at batch 1024).
        seed = int(torch.randint(2**62, (1,), generator=g))
        noise = torch.randn(x.shape, generator=torch.Generator(dev).manual_seed(seed), device=dev)
        x = x + noise * rand(b, 1, 1, 1) * r.noise_std
    return x.clamp(0, 1)


# -- training ------------------------------------------------------------------------------


def lr_at(step: int, total: int, base_lr: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 5% of base_lr."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def _load(spec: str, size: int):
    """uint8 images (N, 3, size, size) and rows. A catalog split must be a checker split."""
    from genimg.data import load_dataset

    if spec.startswith("catalog:"):
        parts = spec.split(":")
        split = parts[3] if len(parts) == 4 else ""
        if not split.startswith("checker"):
            raise UsageError(
                "--data",
                f"{spec}: the checker trains on its own split; use "
                "catalog:N:SEED:checker (never the generator's images)",
            )
    ds = load_dataset(spec, ["text"], 128)
    chunks = []
    for i in range(0, len(ds.images), 1024):
        x = torch.from_numpy(ds.images[i : i + 1024]).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        chunks.append(x.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(chunks), ds.rows, ds


def settings_for(r: CheckerRecipe) -> dict:
    return {
        "zero_shot": False,
        "image_size": r.image_size,
        "crop": r.image_size,
        "mean": list(ck.CLIP_MEAN),
        "std": list(ck.CLIP_STD),
        "templates": ck.TRAINED_TEMPLATES,
        "thresholds": {},
        "default_threshold": 0.5,
        "vocabulary": {
            "objects": list(OBJECTS),
            "materials": list(MATERIALS),
            "colors": list(COLORS),
        },
    }


def _fit(
    model, tok, table, images, lab, frag, r: CheckerRecipe, out: Path, device: str, resume: bool
) -> dict:
    """The training loop; returns steps done and wall time."""
    from genimg.checkpoint import Checkpointer, latest_checkpoint

    opt = torch.optim.AdamW(
        model.parameters(), lr=r.lr, betas=(0.9, 0.98), weight_decay=r.weight_decay
    )
    ckpt, start, wall0 = Checkpointer(out / "checkpoints"), 0, 0.0
    if resume and (found := latest_checkpoint(out / "checkpoints")):
        state = found[1]
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        start, wall0 = int(state["step"]), float(state["wall_s"])
        print(f"resumed from {found[0].name} (step {start})")
    mean = torch.tensor(ck.CLIP_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(ck.CLIP_STD, device=device).view(1, 3, 1, 1)
    t0, step = time.perf_counter() - wall0, start
    parts: dict[str, torch.Tensor] = {}
    model.train()
    while step < r.steps:
        g = torch.Generator().manual_seed(r.seed * 1_000_003 + step)  # step s draws the same
        idx = torch.randint(len(images), (r.batch_size,), generator=g)
        x = images[idx.to(images.device)].to(device).float() / 255
        batch_lab = {k: v[idx].to(device) for k, v in lab.items()}
        if r.fragment_p > 0:
            x, batch_lab = fragment(x, batch_lab, idx, frag, r.fragment_p, g)
        x = augment(x, r, g)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, r.steps, r.lr, r.warmup)
        with _autocast(device):
            img = model.get_image_features(pixel_values=(x - mean) / std)
            txt = model.get_text_features(**tok)
        img = F.normalize(getattr(img, "pooler_output", img).float(), dim=-1)  # (B, D)
        txt = F.normalize(getattr(txt, "pooler_output", txt).float(), dim=-1)  # (T, D)
        loss, parts = checker_loss(
            img, txt, model.logit_scale.exp().clamp(max=100), table, batch_lab
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        wall = time.perf_counter() - t0
        done = step == r.steps or (r.max_minutes > 0 and wall > 60 * r.max_minutes)
        if step % r.log_every == 0 or done:
            rec = {
                "step": step,
                "loss": round(loss.item(), 4),
                "wall_s": round(wall, 1),
                **{k: round(float(v), 4) for k, v in parts.items()},
            }
            print(json.dumps(rec), flush=True)
            with open(out / "train_log.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
        if step % r.checkpoint_every == 0 or done:
            ckpt.save(
                step,
                {
                    "model": model.state_dict(),
                    "optim": opt.state_dict(),
                    "step": step,
                    "wall_s": wall,
                },
            )
        if done:
            break
    ckpt.wait()
    model.eval()
    return {
        "steps": step,
        "train_wall_s": round(time.perf_counter() - t0, 1),
        "final_loss": {k: round(float(v), 4) for k, v in parts.items()},
    }


def init_weights(model, init: Path) -> None:
    """Warm-start `model` from a checker folder of the same architecture (safetensors only)."""
    from safetensors.torch import load_file

    files = sorted(Path(init).glob("*.safetensors")) if Path(init).is_dir() else []
    if not files:
        raise UsageError("--init", f"{init} is not a checker folder with .safetensors weights")
    theirs = {k: v for f in files for k, v in load_file(f).items()}
    ours = model.state_dict()
    wrong = sorted(k for k in ours if k in theirs and theirs[k].shape != ours[k].shape) + sorted(
        set(ours) - set(theirs)
    )
    if wrong:
        k = wrong[0]
        got = tuple(theirs[k].shape) if k in theirs else "missing"
        raise UsageError(
            "--init",
            f"{init} does not fit the recipe's model: {k} is {got} there, "
            f"{tuple(ours[k].shape)} in the recipe ({len(wrong)} tensor(s) differ)",
        )
    model.load_state_dict({k: theirs[k].float() for k in ours if k in theirs}, strict=False)


def train_checker(
    r: CheckerRecipe,
    out: Path,
    device: str = "cpu",
    resume: bool = False,
    command: str = "",
    init: Path | None = None,
) -> Path:
    """Train, save `out/model`, calibrate, evaluate and write its card. Returns the folder.
    `init`: a checker folder to start from instead of random weights (a fresh schedule)."""
    from genimg.models import TOKENIZER_DIR, load_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    tokenizer = load_tokenizer(max_length=r.text_max_length)
    torch.manual_seed(r.seed)
    model = build_model(r, tokenizer)
    if init is not None:
        init_weights(model, init)
    model = model.to(device)
    table = text_table(ck.TRAINED_TEMPLATES)
    tok = {
        k: v.to(device)
        for k, v in tokenizer(table.texts, padding=True, return_tensors="pt").items()
    }
    # 1. Data, rendered once and kept (uint8) on the training device.
    t = time.perf_counter()
    images, rows, ds = _load(r.data, r.image_size)
    images = images.to(device)
    lab = labels_for(rows, r.hard_negatives, r.hard_negative_weight)
    frag = fragment_labels(rows, r.fragment_grids, ds.images.shape[1]) if r.fragment_p else {}
    print(
        f"data: {len(rows)} images from {ds.source} in {time.perf_counter() - t:.0f} s; "
        f"{len(table.texts)} checker texts; "
        f"{int((lab['present_weight'] != 1).sum())} hard negatives",
        flush=True,
    )
    # 2. Train
    summary = {
        "data": ds.source,
        "n_images": len(rows),
        "device": device,
        "command": command,
        "init": str(init) if init is not None else None,
        **_fit(model, tok, table, images, lab, frag, r, out, device, resume),
    }
    # 3. Save as a self-contained transformers CLIP folder (fp16 safetensors), then reload
    #    it the way users will, and calibrate and evaluate that.
    model_dir = out / "model"
    shutil.rmtree(model_dir, ignore_errors=True)
    model.to("cpu").half().save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    for name in ("vocab.json", "merges.txt"):  # self-contained for any CLIPTokenizer version
        shutil.copy(TOKENIZER_DIR / name, model_dir / name)
    settings = settings_for(r)
    (model_dir / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "CLIPImageProcessor",
                "do_resize": True,
                "size": {"shortest_edge": r.image_size},
                "do_center_crop": True,
                "crop_size": {"height": r.image_size, "width": r.image_size},
                "do_normalize": True,
                "image_mean": settings["mean"],
                "image_std": settings["std"],
                "resample": 2,
            },
            indent=2,
        )
    )
    (model_dir / ck.SETTINGS_FILE).write_text(json.dumps(settings, indent=2))
    checker = ck.load_checker(model_dir)
    calib, calib_rows, _ = _load(r.calib_data, r.image_size)
    settings["thresholds"] = ck.calibrate(checker, calib.permute(0, 2, 3, 1).numpy(), calib_rows)
    (model_dir / ck.SETTINGS_FILE).write_text(json.dumps(settings, indent=2))
    checker.settings = settings
    report = ck.evaluate(checker, r.eval_data)
    summary["total_wall_s"] = round(time.perf_counter() - t_start, 1)
    (model_dir / "eval.json").write_text(json.dumps(report, indent=2))
    (model_dir / "recipe.json").write_text(json.dumps(asdict(r), indent=2))
    legs = [*earlier_legs(init, model_dir), leg_record(r, summary, report)]
    (model_dir / LEGS_FILE).write_text(json.dumps(legs, indent=2))
    write_card(model_dir, r, legs, report)
    (out / "summary.json").write_text(json.dumps({**summary, **report["summary"]}, indent=2))
    return model_dir


def _pct(v) -> str:
    return "-" if v is None or v != v else f"{v:.3f}"


# What a leg record copies from the run's summary.
_RUN_KEYS = (
    "command",
    "data",
    "n_images",
    "init",
    "device",
    "steps",
    "train_wall_s",
    "total_wall_s",
)


def leg_record(r: CheckerRecipe, summary: dict, report: dict) -> dict:
    """What the card says about one leg: how it ran and how it scored on its eval split."""
    auc = {o: v for o, v in report["presence_auc"].items() if v == v}
    return {
        **{k: summary.get(k) for k in _RUN_KEYS},
        "batch_size": r.batch_size,
        "lr": r.lr,
        "hard_negatives": r.hard_negatives,
        "hard_negative_weight": r.hard_negative_weight,
        "fragment_p": r.fragment_p,
        "fragment_grids": r.fragment_grids,
        "recipe": "recipe.json",
        "eval_data": r.eval_data,
        "scores": {**report["summary"], "presence_auc_min_object": min(auc, key=auc.get)},
    }


def earlier_legs(init: Path | None, model_dir: Path) -> list[dict]:
    """The legs `init` came from (its legs.json), each one's recipe copied into `model_dir`
    as recipe-legN.json. A checker folder without legs.json counts as one leg."""
    if init is None:
        return []
    init = Path(init)
    try:
        legs = json.loads((init / LEGS_FILE).read_text())
    except FileNotFoundError:
        scores = {}
        if (init / "eval.json").is_file():
            scores = json.loads((init / "eval.json").read_text())["summary"]
        legs = [{"source": str(init), "recipe": "recipe.json", "scores": scores}]
    except (OSError, json.JSONDecodeError) as err:
        raise UsageError("--init", f"cannot read {init / LEGS_FILE}: {err}") from None
    for i, leg in enumerate(legs, 1):
        src = init / leg["recipe"] if leg.get("recipe") else None
        leg["recipe"] = None
        if src is not None and src.is_file():
            leg["recipe"] = f"recipe-leg{i}.json"
            shutil.copy(src, model_dir / leg["recipe"])
    return legs


def _leg_line(i: int, leg: dict) -> str:
    if leg.get("steps") is None:  # a checker folder from before legs.json
        return f"{i}. `{leg.get('source', '?')}` (no record of how it was trained)"
    wall = ", ".join(
        f"{name} {leg[k]:,.0f} s"
        for name, k in (("training", "train_wall_s"), ("whole run", "total_wall_s"))
        if leg.get(k) is not None
    )
    hard = (
        f"; hard negatives x{leg['hard_negative_weight']:g}: "
        + ", ".join(f"no {o} beside {' or '.join(v)}" for o, v in leg["hard_negatives"].items())
        if leg.get("hard_negatives")
        else ""
    )
    if leg.get("fragment_p"):
        grids = ", ".join(f"{k}x{k}" for k in leg["fragment_grids"])
        hard += f"; {leg['fragment_p']:.0%} of each batch cut into {grids} tiles (fragments)"
    start = f"from `{leg['init']}`" if leg.get("init") else "from random weights"
    return (
        f"{i}. {f'`{cmd}`: ' if (cmd := leg.get('command')) else ''}{start}, on "
        f"`{leg['data']}` ({leg['n_images']:,} rendered "
        f"catalog images of the checker's own split; never the generator's); {leg['steps']:,} "
        f"steps at batch {leg['batch_size']:,}, learning rate {leg['lr']:g}{hard}, on "
        f"{leg['device']}; {wall}; recipe `{leg['recipe'] or 'not kept'}`"
        + (f". {leg['note']}" if leg.get("note") else "")
    )


def write_card(model_dir: Path, r: CheckerRecipe, legs: list[dict], report: dict) -> None:
    """README.md: what it is, how each leg made it, how well it scores, and the folder's
    notes.md (hand-written findings), if any."""
    s = report["summary"]
    many = len(legs) > 1
    lines = [
        "# genimg-checker",
        "",
        "A small transformers `CLIPModel` that scores whether each requested catalog object "
        "is in an image, with the right material, colour and count (`genimg check`).",
        "",
        "## How it was trained",
        "",
        *(
            [f"{len(legs)} legs; each starts from the weights of the one before.", ""]
            if many
            else []
        ),
        *(_leg_line(i, leg) for i, leg in enumerate(legs, 1)),
        "",
        "Every leg augments with blur, downscaling, noise and colour jitter. Thresholds are "
        f"calibrated on `{r.calib_data}`; the scores below are on `{r.eval_data}` "
        f"({report['n_images']:,} images), which no leg trained on.",
        "",
    ]
    if many:
        lines += [
            "| after leg | presence AUC min | AUC mean | material | colour | count |",
            "|---|---|---|---|---|---|",
        ]
        for i, leg in enumerate(legs, 1):
            g = leg.get("scores") or {}
            worst = f" ({g['presence_auc_min_object']})" if "presence_auc_min_object" in g else ""
            lines.append(
                f"| {i}{' (shipped)' if i == len(legs) else ''} | "
                f"{_pct(g.get('presence_auc_min'))}{worst} | {_pct(g.get('presence_auc_mean'))}"
                f" | {_pct(g.get('material_acc'))} | {_pct(g.get('color_acc'))} | "
                f"{_pct(g.get('count_acc'))} |"
            )
        lines.append("")
    lines += [
        "## Accuracy (held-out rendered images with ground truth)",
        "",
        f"Presence ROC AUC min {_pct(s['presence_auc_min'])} (target >= 0.97), mean "
        f"{_pct(s['presence_auc_mean'])}; material accuracy {_pct(s['material_acc'])}, colour "
        f"{_pct(s['color_acc'])} (among the true material's colours; "
        f"{_pct(s['color_any_acc'])} among all the object's) (targets >= 0.90); count "
        f"{_pct(s['count_acc'])} (target >= 0.85). Presence AUC negatives are images of rooms "
        "that may hold the object.",
        "",
        "| object | presence AUC | presence acc | material | colour | count |",
        "|---|---|---|---|---|---|",
    ]
    for o in OBJECTS:
        lines.append(
            f"| {o} | {_pct(report['presence_auc'].get(o))} | "
            f"{_pct(report['presence_acc'].get(o))} | "
            f"{_pct(report['material_acc'].get(o))} | "
            f"{_pct(report['color_acc'].get(o))} | {_pct(report['count_acc'].get(o))} |"
        )
    lines += ["", "Confusions (true -> predicted, counts) are in `eval.json`.", ""]
    if (model_dir / NOTES_FILE).is_file():
        lines += [(model_dir / NOTES_FILE).read_text().strip(), ""]
    (model_dir / "README.md").write_text("\n".join(lines))


def rewrite_card(model_dir: Path) -> None:
    """Regenerate a checker folder's README.md from its recipe.json, legs.json, eval.json
    and notes.md (after editing the notes, say)."""
    model_dir = Path(model_dir)
    r = CheckerRecipe(**json.loads((model_dir / "recipe.json").read_text()))
    legs = json.loads((model_dir / LEGS_FILE).read_text())
    write_card(model_dir, r, legs, json.loads((model_dir / "eval.json").read_text()))


def configure(parser) -> None:
    parser.epilog = (
        "example:\n  genimg train-checker --out runs/checker\n"
        "  genimg train-checker --data catalog:40000:5000:checker --out runs/checker "
        "--device cuda\n\nThe model lands in OUT/model; copy it to assets/models/genimg-checker."
    )
    parser.add_argument("--recipe", default=str(RECIPE), help="TOML recipe (default: %(default)s)")
    parser.add_argument(
        "--data",
        help="override the recipe's data: DIR or catalog:N:SEED:checker (rendered in memory)",
    )
    parser.add_argument("--out", required=True, help="run folder (checkpoints, logs, model/)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    parser.add_argument("--steps", type=int, help="override the recipe's steps")
    parser.add_argument(
        "--init",
        metavar="DIR",
        help="start from this checker folder's weights (same architecture) instead of random",
    )
    parser.add_argument("--max-minutes", type=float, help="stop training after this long")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")


def run(args) -> int:
    import sys

    recipe = CheckerRecipe.from_toml(args.recipe)
    if args.data:
        recipe.data = args.data
    if args.steps is not None:
        if args.steps < 1:
            raise UsageError("--steps", f"must be a positive integer, got {args.steps}")
        recipe.steps = args.steps
    if args.max_minutes is not None:
        recipe.max_minutes = check_float("--max-minutes", args.max_minutes, 0, 1e6)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.resume:
        raise UsageError("--out", f"{out} is not empty; pass --resume to continue that run")
    if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        raise UsageError("--device", f"expected cpu or cuda, got {args.device!r}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device", f"{args.device} requested but no CUDA device is available")
    torch.backends.cuda.matmul.allow_tf32 = True
    command = "genimg train-checker " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else ""
    init = Path(args.init) if args.init else None
    model_dir = train_checker(recipe, out, args.device, args.resume, command, init)
    print(f"saved {model_dir}")
    print((model_dir / "README.md").read_text().split("## Accuracy")[1].split("|")[0].strip())
    return 0
