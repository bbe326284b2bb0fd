"""The denoiser: a diffusers ``UNet2DConditionModel``, small-from-config or a local SD-1.5 ``unet/``.

Small (default): built from kwargs for the (4, H, W) latent of a D-dim feature (the 8x6 -> 4x3 -> 2x2
levels of the 192-d cpu preset), cross-attention at the levels ``cross_attention`` selects, trained fully.
Sampling projects the fixed context's cross-attention K/V once per batch (``cached_cross_attention``).
SD-1.5 (``unet_path``): loaded from ``PATH/unet`` with ``local_files_only``; the paper trains only the
cross-attention K/V projections of the up blocks that have cross-attention (10.3 M parameters).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    import torch


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
        raise FileNotFoundError(f"--unet {root}: no such folder (expected a local Stable Diffusion 1.5 folder with "
                                "unet/config.json)")
    cfg = root / "unet" / "config.json"
    if not cfg.is_file():
        if (root / "config.json").is_file() and (root.name == "unet"):
            raise ValueError(f"--unet {root}: pass the SD folder that contains unet/ (its parent {root.parent}), not "
                             "unet/ itself")
        raise ValueError(f"--unet {root}: no unet/config.json inside (expected a local Stable Diffusion 1.5 folder "
                         "layout)")
    return cfg


def load_sd_unet(path: str | Path, latent: tuple[int, int, int], load_weights: bool = True):
    """Load ``PATH/unet`` (SD-1.5 layout) offline; ``load_weights=False`` builds it from the config only."""
    from diffusers import UNet2DConditionModel

    cfg_path = sd_unet_config_path(path)
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("in_channels") != latent[0] or cfg.get("out_channels", cfg.get("in_channels")) != latent[0]:
        raise ValueError(f"{cfg_path}: in/out_channels must be {latent[0]} for the (4, H, W) feature latent, got "
                         f"{cfg.get('in_channels')}")
    if load_weights:
        return UNet2DConditionModel.from_pretrained(str(Path(path).expanduser()), subfolder="unet",
                                                    local_files_only=True)
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


class StepInvariantCrossAttention:
    """Cross-attention processor whose keys/values are computed once per sampling batch.

    In sampling the context (condition learner output and the learned null context) is the same at
    every denoising step, yet a UNet call recomputes ``to_k`` / ``to_v`` of it in every cross-attention
    layer: for a feature-sized latent (4x3 and 2x2 token maps against 13 context tokens) those two
    projections are the largest matmuls of the step. This processor holds K/V for one context tensor
    (matched by identity); rows ``[:shared_rows]`` hold one repeated context (CFG's null branch), so
    their K/V are projected once and broadcast. Anything else (self-attention, another context, a
    mask, norms this shortcut does not cover) falls through to the layer's own processor, so the
    output is the layer's output either way.
    """

    def __init__(self, base, context, key: "torch.Tensor", value: "torch.Tensor") -> None:
        self.base = base
        self.context = context
        self.key, self.value = key, value

    @classmethod
    def build(cls, attn, context: "torch.Tensor", shared_rows: int = 0):
        import torch

        ctx = attn.norm_encoder_hidden_states(context) if attn.norm_cross else context
        b = ctx.shape[0]

        def project(linear):
            if shared_rows:
                shared = linear(ctx[:1]).expand(shared_rows, -1, -1)
                return torch.cat([shared, linear(ctx[shared_rows:])])
            return linear(ctx)

        key, value = project(attn.to_k), project(attn.to_v)
        head_dim = key.shape[-1] // attn.heads
        key = key.view(b, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(b, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        return cls(attn.processor, context, key, value)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        import torch.nn.functional as F

        if (encoder_hidden_states is not self.context or attention_mask is not None or args or kwargs
                or attn.spatial_norm is not None or attn.group_norm is not None or attn.norm_q is not None
                or attn.residual_connection or hidden_states.shape[0] != self.key.shape[0]):
            return self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        four_d = hidden_states.ndim == 4
        if four_d:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        b = hidden_states.shape[0]
        query = attn.to_q(hidden_states)
        head_dim = query.shape[-1] // attn.heads
        query = query.view(b, -1, attn.heads, head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(query, self.key.to(query.dtype), self.value.to(query.dtype))
        out = out.transpose(1, 2).reshape(b, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if four_d:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        return out / attn.rescale_output_factor


@contextmanager
def cached_cross_attention(unet: nn.Module, context, shared_rows: int = 0):
    """``with cached_cross_attention(unet, context, shared_rows):`` K/V of ``context`` projected once.

    Installs :class:`StepInvariantCrossAttention` on every cross-attention layer (``attn2``) for the
    duration of the block and restores the original processors afterwards, also on error.
    """
    import torch

    saved = []
    try:
        with torch.no_grad():
            for name, module in unet.named_modules():
                if name.endswith(
                    "attn2") and hasattr(module, "processor") and getattr(module, "is_cross_attention", True):
                    saved.append((module, module.processor))
                    module.processor = StepInvariantCrossAttention.build(module, context, shared_rows)
        yield
    finally:
        for module, processor in saved:
            module.processor = processor
