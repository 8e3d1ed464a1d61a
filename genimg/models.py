"""The base model's architecture: Stable Diffusion's components, small.

diffusers `AutoencoderKL` (8x downsampling, 4 latent channels), transformers
`CLIPTextModel` with CLIP's own BPE tokenizer, diffusers `UNet2DConditionModel` with
cross-attention. Sizes follow ../shared/notes/feasibility.md: at 128x128 this UNet renders
one image in well under a second on 2 CPU cores.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "MAX_PROMPT_TOKENS",
    "TOKENIZER_DIR",
    "ModelConfig",
    "build_components",
    "encode_chunked",
    "load_tokenizer",
    "padding_mask",
    "token_chunks",
    "tokenize",
    "window_mask",
]

TOKENIZER_DIR = Path(__file__).resolve().parent.parent / "assets" / "tokenizer"
# A prompt is read in chunks of window - 2 tokens (75 for CLIP's 77), each with its own
# BOS/EOS, as the common SD web UIs do, up to this many tokens; training reads captions the
# same way, so a long Japanese caption keeps its tail there too.
MAX_PROMPT_TOKENS = 300


@dataclass
class ModelConfig:
    sample_size: int = 128  # image side in pixels
    # VAE: 3 downsamplings -> 8x; 128px images become 16x16x4 latents.
    vae_channels: tuple[int, ...] = (32, 64, 128, 128)
    vae_layers_per_block: int = 1
    # GroupNorm groups in the VAE. 32 groups on a 32-channel level is instance norm: it
    # strips each channel's spatial mean, and a VAE built that way learned shapes but not
    # colour (sepia reconstructions after 2,140 steps). 8 groups keep 4+ channels a group.
    vae_norm_groups: int = 8
    latent_channels: int = 4  # Stable Diffusion's own latent width
    # Text encoder: a 4-layer CLIP text transformer with CLIP's 77-token window. Longer
    # text (a Japanese catalog caption takes ~90-170 tokens) is encoded in 75-token chunks
    # (`tokenize`, `encode_chunked`). A 256-token window was tried first: its ~250 padding
    # states, nearly equal for every caption, diluted the few that carry the prompt, and
    # the models trained with it ignored the prompt.
    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 4
    text_max_length: int = 77
    # UNet: attention only at the two finer of three levels (16 and 8 latent cells);
    # attention at full resolution would cost 2x for little gain (feasibility notes).
    unet_channels: tuple[int, ...] = (64, 128, 128)
    unet_layers_per_block: int = 1
    unet_heads: int = 4  # diffusers calls this attention_head_dim; for SD 1.x it is the head count
    # SD's training noise schedule (scaled_linear, 1000 steps).
    beta_start: float = 0.00085
    beta_end: float = 0.012
    extra: dict = field(default_factory=dict)  # reserved; must stay empty

    def __post_init__(self) -> None:
        self.vae_channels = tuple(self.vae_channels)
        self.unet_channels = tuple(self.unet_channels)
        if self.sample_size % (2 ** (len(self.vae_channels) - 1)):
            raise ValueError(f"sample_size {self.sample_size} not divisible by the VAE factor")
        if any(c % self.vae_norm_groups for c in self.vae_channels):
            raise ValueError("vae_channels must be multiples of vae_norm_groups")
        if self.text_hidden % self.text_heads:
            raise ValueError("text_hidden must be a multiple of text_heads")
        if len(self.unet_channels) != 3:
            raise ValueError("unet_channels must have 3 levels")
        if self.extra:
            raise ValueError(f"unknown model settings {sorted(self.extra)}")

    @property
    def latent_size(self) -> int:
        return self.sample_size // 2 ** (len(self.vae_channels) - 1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_tokenizer(path: Path | str = TOKENIZER_DIR, max_length: int = 256):
    """CLIP's tokenizer from vocab.json + merges.txt (built offline, see scripts/)."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(path), model_max_length=max_length)


def build_components(cfg: ModelConfig) -> dict:
    """Fresh, randomly initialised pipeline components (seed torch before calling)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    n = len(cfg.vae_channels)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=cfg.vae_channels,
        layers_per_block=cfg.vae_layers_per_block,
        latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.vae_norm_groups,
        sample_size=cfg.sample_size,
    )
    tokenizer = load_tokenizer(max_length=cfg.text_max_length)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=cfg.text_hidden,
            intermediate_size=4 * cfg.text_hidden,
            num_hidden_layers=cfg.text_layers,
            num_attention_heads=cfg.text_heads,
            max_position_embeddings=cfg.text_max_length,
            projection_dim=cfg.text_hidden,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=cfg.latent_size,
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        block_out_channels=cfg.unet_channels,
        layers_per_block=cfg.unet_layers_per_block,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cfg.text_hidden,
        attention_head_dim=cfg.unet_heads,
        norm_num_groups=32,
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
        beta_schedule="scaled_linear",
        clip_sample=False,
        prediction_type="epsilon",
        steps_offset=1,  # what diffusers expects of SD 1.x configs; avoids its warning
    )
    return {
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "unet": unet,
        "scheduler": scheduler,
    }


def token_chunks(tokenizer, text: str, max_tokens: int = MAX_PROMPT_TOKENS) -> tuple[list, list]:
    """`text`'s token ids (no BOS/EOS) in chunks of window - 2, at most `max_tokens` of them
    (at least one window's worth), and the ids cut from the tail (empty if none)."""
    chunk = tokenizer.model_max_length - 2
    limit = max(chunk, max_tokens // chunk * chunk)
    # An explicit max_length far past any prompt: without one transformers warns about
    # "indexing errors" for any text longer than one window, which chunking makes harmless.
    ids = tokenizer(text, add_special_tokens=False, truncation=True, max_length=1 << 20).input_ids
    ids, cut = ids[:limit], ids[limit:]
    return [ids[i : i + chunk] for i in range(0, len(ids), chunk)] or [[]], cut


def chunk_rows(tokenizer, chunks: list, n: int) -> list[int]:
    """One flat row of n windows: each chunk as BOS, ids, EOS, padding; empty ones after."""
    chunk = tokenizer.model_max_length - 2
    row = []
    for ids in chunks + [[]] * (n - len(chunks)):
        row += [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id]
        row += [tokenizer.pad_token_id] * (chunk - len(ids))
    return row


def tokenize(tokenizer, captions: list[str], max_tokens: int = MAX_PROMPT_TOKENS):
    """Token ids (N, k * window) for training, k the most chunks any caption needs; a
    shorter caption's extra windows are empty (BOS, EOS, padding), as `encode_chunked`
    and the render path expect."""
    import torch

    chunked = [token_chunks(tokenizer, c, max_tokens)[0] for c in captions]
    n = max(len(c) for c in chunked)
    return torch.tensor([chunk_rows(tokenizer, c, n) for c in chunked], dtype=torch.long)


def padding_mask(input_ids, window: int, eos_token_id: int):
    """(B, T) bool of token rows of whole windows: True from each window's BOS to its first
    EOS, False for the padding after it (CLIP pads with EOS itself, so position decides)."""
    b, total = input_ids.shape
    eos = (input_ids.reshape(b, total // window, window) == eos_token_id).int()
    before = eos.cumsum(-1) - eos  # EOS tokens strictly before each position
    return (before == 0).reshape(b, total)


def _windows_with_text(input_ids, window: int, eos_token_id: int):
    """(B, k) bool of token rows of k whole windows: window j of the row holds text. An empty
    window (BOS, EOS, padding) has EOS right after its BOS."""
    b, total = input_ids.shape
    return input_ids.reshape(b, total // window, window)[:, :, 1] != eos_token_id


def window_mask(input_ids, window: int, eos_token_id: int):
    """(B, T) bool of token rows of whole windows: True in each row's first window and in
    every window with text, False in the empty windows (BOS, EOS, padding) that a row carries
    only because a longer row shares its batch. Rendered alone, a prompt has none of them."""
    text = _windows_with_text(input_ids, window, eos_token_id)
    text[:, 0] = True
    return text[:, :, None].expand(-1, -1, window).reshape(input_ids.shape)


def encode_chunked(text_encoder, input_ids, trim: bool = True, visible=None):
    """Hidden states (B, k * window, D) of rows of k windows, each window encoded on its own
    and the results concatenated along the sequence (the UNet's cross-attention takes any
    length). With `trim`, trailing windows that are empty in every row are dropped first.
    `visible` (B, T) bool, the caller's cross-attention mask: a window whose BOS it hides
    (`window_mask`'s empty windows, about half of a training batch's) is not encoded, and
    its states are zeros."""
    window = text_encoder.config.max_position_embeddings
    b, total = input_ids.shape
    if total % window:
        raise ValueError(f"token rows of {total} are not whole {window}-token windows")
    k = total // window
    if trim:
        text = _windows_with_text(input_ids, window, text_encoder.config.eos_token_id)
        while k > 1 and not bool(text[:, k - 1].any()):
            k -= 1
    ids = input_ids[:, : k * window].reshape(b * k, window)
    if visible is None:
        hidden = text_encoder(ids)[0]  # (B * k, window, D)
        return hidden.reshape(b, k * window, hidden.shape[-1])
    keep = visible[:, : k * window : window].reshape(-1)
    states = text_encoder(ids[keep])[0]
    hidden = states.new_zeros(b * k, window, states.shape[-1])
    hidden[keep] = states
    return hidden.reshape(b, k * window, hidden.shape[-1])
