"""View-Refine Decoder (VRD): an instance view token -> residuals injected into the UNet.

The D-dim view token is laid out as a one-channel map (1, 2H, 2W) (4HW = D, so this is a pure
reshape: 768 -> 32 x 24). Each target feature map (C, h, w) of the UNet at pyramid level l
(h = ceil(H / 2^l)) gets its own small head; the mechanisms of the paper's Tab. 9:

- ``conv`` (default, "Down-Conv"): Conv2d(1 -> C, kernel = stride = 2^(l+1)) on the map, zero-padded
  at the bottom/right so odd sizes (the 4x3 -> 2x2 step of the UNet) come out exactly (h, w);
- ``pool``: adaptive average pooling of the map to (h, w), then a 1x1 conv 1 -> C;
- ``proj``: a linear projection of the token to C channels, broadcast over (h, w) (no spatial layout).

Heads are zero-initialised so the VRD starts as a no-op and the UNet is not disturbed at step 0.
Where residuals go (``down`` / ``up`` / ``both``, Fig. 12) is decided by ``unet_residual_targets``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from agreid_kit.diffusion.config import VRD_MECHANISMS


@dataclass(frozen=True)
class ResidualTarget:
    """One UNet feature map a residual is added to: pyramid level, channels, spatial size."""

    level: int
    channels: int
    height: int
    width: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)


def level_sizes(latent_hw: tuple[int, int], levels: int) -> list[tuple[int, int]]:
    """Spatial size per UNet level: diffusers' stride-2, pad-1, 3x3 downsampler gives ceil(x / 2)."""
    h, w = latent_hw
    out = []
    for _ in range(levels):
        out.append((h, w))
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return out


def unet_residual_targets(unet_config, latent_hw: tuple[int, int]) -> dict[str, list[ResidualTarget]]:
    """Residual targets of a ``UNet2DConditionModel`` config.

    ``down``: T2I-adapter residuals (``down_intrablock_additional_residuals``), one per down block for
    the first three blocks (the paper's 2/4/8 kernels); a cross-attention block adds it before its
    downsampler, a plain block after it (diffusers' rule). ``up``: one residual per skip connection
    the up path reads (conv_in, every down resnet, every downsampler) followed by one for the mid
    block (``down_block_additional_residuals`` + ``mid_block_additional_residual``).
    """
    channels = list(unet_config.block_out_channels)
    block_types = list(unet_config.down_block_types)
    per_block = unet_config.layers_per_block
    per_block = list(per_block) if isinstance(per_block, (list, tuple)) else [per_block] * len(channels)
    sizes = level_sizes(latent_hw, len(channels))
    n = len(channels)
    down: list[ResidualTarget] = []
    for i in range(min(3, n)):
        final = i == n - 1
        if "CrossAttn" in block_types[i] or final:
            lvl = i
        else:
            lvl = i + 1
        down.append(ResidualTarget(lvl, channels[i], *sizes[lvl]))
    up: list[ResidualTarget] = [ResidualTarget(0, channels[0], *sizes[0])]  # conv_in output
    for i in range(n):
        up.extend(ResidualTarget(i, channels[i], *sizes[i]) for _ in range(per_block[i]))
        if i < n - 1:
            up.append(ResidualTarget(i + 1, channels[i], *sizes[i + 1]))
    up.append(ResidualTarget(n - 1, channels[-1], *sizes[n - 1]))  # mid block output
    return {"down": down, "up": up}


class _ResidualHead(nn.Module):
    def __init__(self, dim: int, map_hw: tuple[int, int], target: ResidualTarget, mechanism: str) -> None:
        super().__init__()
        self.map_hw = map_hw
        self.target = target
        self.mechanism = mechanism
        if mechanism == "conv":
            self.kernel = 2 ** (target.level + 1)
            self.layer = nn.Conv2d(1, target.channels, kernel_size=self.kernel, stride=self.kernel)
        elif mechanism == "pool":
            self.layer = nn.Conv2d(1, target.channels, kernel_size=1)
        else:
            self.layer = nn.Linear(dim, target.channels)
        nn.init.zeros_(self.layer.weight)
        nn.init.zeros_(self.layer.bias)

    def forward(self, token: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        t = self.target
        if self.mechanism == "conv":
            k = self.kernel
            pad_h, pad_w = k * t.height - grid.shape[-2], k * t.width - grid.shape[-1]
            if pad_h < 0 or pad_w < 0:
                raise ValueError(f"VRD: map {tuple(grid.shape[-2:])} is larger than level {t.level} needs "
                                 f"({k}x{t.height}, {k}x{t.width})")
            return self.layer(F.pad(grid, (0, pad_w, 0, pad_h)))
        if self.mechanism == "pool":
            return self.layer(F.adaptive_avg_pool2d(grid, (t.height, t.width)))
        return self.layer(token)[:, :, None, None].expand(-1, -1, t.height, t.width)


class ViewRefineDecoder(nn.Module):
    """Instance view token (B, D) -> one residual (B, C, h, w) per target."""

    def __init__(self, dim: int, latent_hw: tuple[int, int], targets: list[ResidualTarget],
                 mechanism: str = "conv") -> None:
        super().__init__()
        if mechanism not in VRD_MECHANISMS:
            raise ValueError(f"VRD mechanism must be one of {VRD_MECHANISMS}, got {mechanism!r}")
        h, w = latent_hw
        if 4 * h * w != dim:
            raise ValueError(f"VRD: a {dim}-dim view token cannot be laid out as a (1, {2 * h}, {2 * w}) map (needs "
                             "4HW = D)")
        self.dim = dim
        self.map_hw = (2 * h, 2 * w)
        self.targets = list(targets)
        self.heads = nn.ModuleList(_ResidualHead(dim, self.map_hw, t, mechanism) for t in targets)

    def forward(self, token: torch.Tensor) -> list[torch.Tensor]:
        if token.ndim != 2 or token.shape[1] != self.dim:
            raise ValueError(f"VRD: view token must be (B, {self.dim}), got {tuple(token.shape)}")
        grid = token.reshape(token.shape[0], 1, *self.map_hw)
        return [head(token, grid) for head in self.heads]
