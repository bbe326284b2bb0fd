"""The denoiser: a diffusers ``UNet2DConditionModel``, small-from-config or a local SD-1.5 ``unet/``.

Small (default): built from kwargs for the (4, H, W) latent of a D-dim feature, cross-attention in
every down/up block (the 8x6 -> 4x3 -> 2x2 levels of the 192-d cpu preset all exist), trained fully.
SD-1.5 (``unet_path``): loaded from ``PATH/unet`` with ``local_files_only``; the paper trains only the
cross-attention K/V projections of the up blocks that have cross-attention (10.3 M parameters).
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn


def build_small_unet(latent: tuple[int, int, int], context_dim: int, channels: list[int], layers_per_block: int = 1,
                     heads: int = 1, norm_groups: int = 8, cross_attention: list[bool] | None = None):
    """A fully trainable small UNet for a (C, H, W) latent and ``context_dim`` cross-attention.

    ``cross_attention[i]``: whether level i (and its mirrored up block) has cross-attention.
    """
    from diffusers import UNet2DConditionModel

    n = len(channels)
    attn = list(cross_attention) if cross_attention is not None else [True] * n
    if not any(attn):
        raise ValueError("small UNet: at least one level needs cross-attention, or the ID condition is never read")
    return UNet2DConditionModel(
        sample_size=list(latent[1:]),
        in_channels=latent[0],
        out_channels=latent[0],
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        block_out_channels=tuple(channels),
        layers_per_block=layers_per_block,
        cross_attention_dim=context_dim,
        attention_head_dim=heads,  # diffusers reads this as the number of heads for these blocks
        norm_num_groups=norm_groups,
    )


def sd_unet_config_path(path: str | Path) -> Path:
    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"--unet {root}: no such folder (expected a local Stable Diffusion 1.5 folder with unet/config.json)")
    cfg = root / "unet" / "config.json"
    if not cfg.is_file():
        if (root / "config.json").is_file() and (root.name == "unet"):
            raise ValueError(f"--unet {root}: pass the SD folder that contains unet/ (its parent {root.parent}), not unet/ itself")
        raise ValueError(f"--unet {root}: no unet/config.json inside (expected a local Stable Diffusion 1.5 folder layout)")
    return cfg


def load_sd_unet(path: str | Path, latent: tuple[int, int, int], load_weights: bool = True):
    """Load ``PATH/unet`` (SD-1.5 layout) offline; ``load_weights=False`` builds it from the config only."""
    from diffusers import UNet2DConditionModel

    cfg_path = sd_unet_config_path(path)
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("in_channels") != latent[0] or cfg.get("out_channels", cfg.get("in_channels")) != latent[0]:
        raise ValueError(f"{cfg_path}: in/out_channels must be {latent[0]} for the (4, H, W) feature latent, got {cfg.get('in_channels')}")
    if load_weights:
        return UNet2DConditionModel.from_pretrained(str(Path(path).expanduser()), subfolder="unet", local_files_only=True)
    return UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(cfg_path.parent)))


def sd15_unet_config() -> dict:
    """SD-1.5's UNet shape (for building an SD-1.5-shaped UNet with random weights in benchmarks)."""
    return dict(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
    )


def freeze_for_sd_preset(unet: nn.Module) -> int:
    """Train only the up blocks' cross-attention ``to_k`` / ``to_v``; return the trainable count."""
    unet.requires_grad_(False)
    n = 0
    for name, p in unet.named_parameters():
        if name.startswith("up_blocks.") and ".attn2." in name and (".to_k." in name or ".to_v." in name):
            p.requires_grad_(True)
            n += p.numel()
    if n == 0:
        raise ValueError("SD preset: the UNet has no up-block cross-attention (attn2.to_k / to_v) to train")
    return n
