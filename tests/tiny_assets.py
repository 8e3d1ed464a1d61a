"""Tiny random assets for fast tests: a diffusers pipeline folder, a LoRA for it, a checker.

Seconds to build; the shipped models are for the slow end-to-end tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from genimg.models import ModelConfig, build_components

TINY = ModelConfig(
    vae_channels=(8, 8, 8, 8),
    unet_channels=(32, 32, 32),
    text_hidden=32,
    text_layers=1,
    text_heads=2,
)
FAST = ["--num-inference-steps", "2", "--height", "64", "--width", "64"]


def make_model(out: Path) -> Path:
    from genimg import pipeline

    torch.manual_seed(0)
    return pipeline.save_pipeline(build_components(TINY), out)


def make_lora(model_dir: Path, out: Path, seed: int = 1) -> Path:
    """A random rank-4 LoRA on the UNet attention, saved as diffusers' training script does."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(model_dir / "unet")
    config = LoraConfig(
        r=4,
        lora_alpha=4,
        init_lora_weights="gaussian",
        target_modules=["to_k", "to_q", "to_v", "to_out.0"],
    )
    unet.add_adapter(config)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)  # B starts at zero; make the adapter do something
    StableDiffusionPipeline.save_lora_weights(
        out,
        unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)),
        unet_lora_adapter_metadata=config.to_dict(),
        safe_serialization=True,
    )
    return out


def make_checker(out: Path) -> Path:
    """A random CLIP checker folder, as `genimg train-checker` writes one."""
    from genimg import checker as ck
    from genimg import checker_train as ct
    from genimg.models import load_tokenizer

    torch.manual_seed(0)
    r = ct.CheckerRecipe(
        image_size=32,
        patch_size=8,
        vision_hidden=32,
        vision_layers=1,
        text_hidden=32,
        text_layers=1,
        heads=2,
        projection_dim=16,
    )
    tok = load_tokenizer(max_length=r.text_max_length)
    ct.build_model(r, tok).save_pretrained(out)
    tok.save_pretrained(out)
    (out / ck.SETTINGS_FILE).write_text(json.dumps(ct.settings_for(r)))
    return out
