"""Batch augmentations applied by the engine to normalised training batches (``model.batch_augment``).

- **PLRM** (Patch-Level RotateMix, VIF-AGReID Eqs. 1-5): with probability ``p_img`` an image is
  transformed; it is cut into ``patch_size`` x ``patch_size`` pixel patches; patch (i, j) is chosen
  with a probability that grows from the edges to the centre; a chosen patch is rotated by
  theta ~ U(-theta_max, theta_max) and blended ``alpha * rot + (1 - alpha) * patch``.
  The printed Eq. 3 measures the distance to (H/n, W/n), which is the bottom-right corner of the
  patch grid, while the text says probabilities rise towards the *centre*: we measure the distance
  to the centre of the patch grid and normalise by the centre-to-corner-patch distance, so corner
  patches get ``p0`` and the central patches ``p0 + centre_weight`` (clipped to [0, 1]).
- **random rotation** of the whole image (the paper's Tab. 4 alternative);
- **PatchShuffle** (pixels shuffled inside small non-overlapping patches; the paper's other alternative).

All functions take an optional ``torch.Generator`` so that tests and seeded runs are reproducible;
without one they draw from torch's global RNG (seeded by ``agreid_kit.utils.seed``). The random
numbers are drawn on the generator's device (the CPU for the global RNG) and then moved to the
images' device, so every tensor that meets the images (masks, angles, permutations) lives on their
device (a GPU batch works) and a seeded run makes the same choices on CPU and GPU.
Rotations are bilinear; pixels that rotate in from outside a patch/image are 0, which in the
normalised space the engine feeds is the dataset mean colour (no black corners).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

AUGMENT_KINDS = ("none", "plrm", "rotation", "patchshuffle")


@dataclass
class PLRMConfig:
    """PLRM hyper-parameters (paper values as defaults)."""

    p_img: float = 0.5  # probability that an image is transformed at all (Eq. 1)
    p0: float = 0.3  # base patch probability (Eq. 3)
    patch_size: int = 16  # n: patches are n x n pixels (Eq. 2)
    centre_weight: float = 0.8  # C_weight (Eq. 3)
    theta_max: float = 45.0  # degrees, theta ~ U(-theta_max, theta_max) (Eq. 4)
    alpha: float = 0.5  # blend of rotated and original patch (Eq. 5)

    def __post_init__(self) -> None:
        for name in ("p_img", "p0", "alpha"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"PLRM parameter {name} must lie in [0, 1], got {v}")
        if not 0.0 <= self.theta_max <= 180.0:
            raise ValueError(f"PLRM parameter theta_max must lie in [0, 180] degrees, got {self.theta_max}")
        if self.patch_size < 1:
            raise ValueError(f"PLRM parameter patch_size must be >= 1 pixel, got {self.patch_size}")


def plrm_patch_probabilities(grid_h: int, grid_w: int, p0: float, centre_weight: float) -> torch.Tensor:
    """P_ij (grid_h, grid_w): ``clip(p0 + centre_weight * (1 - d_ij / d_max), 0, 1)``.

    ``d_ij`` is the distance of patch (i, j) to the grid centre ((grid_h-1)/2, (grid_w-1)/2) in patch
    units and ``d_max`` the distance of a corner patch; a 1 x 1 grid has d = 0 everywhere.
    """
    if grid_h < 1 or grid_w < 1:
        raise ValueError(f"PLRM patch grid must be at least 1 x 1, got {grid_h} x {grid_w}")
    ci, cj = (grid_h - 1) / 2.0, (grid_w - 1) / 2.0
    i = torch.arange(grid_h, dtype=torch.float64)[:, None]
    j = torch.arange(grid_w, dtype=torch.float64)[None, :]
    dist = torch.sqrt((i - ci) ** 2 + (j - cj) ** 2)
    d_max = math.sqrt(ci**2 + cj**2)
    ratio = dist / d_max if d_max > 0 else torch.zeros_like(dist)
    return (p0 + centre_weight * (1.0 - ratio)).clamp(0.0, 1.0).float()


def rotate(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each (C, h, w) image of ``images`` (M, C, h, w) about its centre by ``degrees`` (M,).

    Positive angles turn clockwise as displayed (row 0 at the top); 90 degrees equals
    ``torch.rot90(x, -1, (-2, -1))``. Works in pixel units so that non-square inputs are not
    sheared; outside pixels are 0.
    """
    m, _, h, w = images.shape
    if degrees.shape != (m,):
        raise ValueError(f"rotate: expected {m} angles, got shape {tuple(degrees.shape)}")
    rad = degrees.to(images.dtype).to(images.device) * (math.pi / 180.0)
    cos, sin = torch.cos(rad), torch.sin(rad)
    # affine_grid maps output coords to input coords in [-1, 1]; rescale by the aspect ratio so the
    # rotation is rigid in pixels: x_in = cos*x + sin*(h/w)*y, y_in = -sin*(w/h)*x + cos*y.
    theta = torch.zeros(m, 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = sin * (h / w)
    theta[:, 1, 0] = -sin * (w / h)
    theta[:, 1, 1] = cos
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _rand(shape: tuple[int, ...], generator: Optional[torch.Generator], device: torch.device) -> torch.Tensor:
    """U[0, 1) numbers of ``shape`` on ``device``.

    Drawn where the generator lives (the global CPU RNG without one: the stream, hence seeded CPU
    results, are those of a plain ``torch.rand``) and then moved, so the numbers do not depend on
    the images' device.
    """
    if generator is not None and generator.device.type != "cpu":
        return torch.rand(shape, generator=generator, device=generator.device).to(device)
    return torch.rand(shape, generator=generator).to(device)


def _uniform(
    shape: tuple[int, ...], low: float, high: float, generator: Optional[torch.Generator], device: torch.device
) -> torch.Tensor:
    return _rand(shape, generator, device) * (high - low) + low


def plrm_with_mask(
    images: torch.Tensor, config: PLRMConfig, generator: Optional[torch.Generator] = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """PLRM on a batch (B, C, H, W); returns (augmented images, chosen-patch mask (B, H/n, W/n) bool).

    Only whole patches are used: rows/columns beyond the last full patch are never touched. Pixels
    of patches that were not chosen are returned bit-for-bit unchanged.
    """
    if images.ndim != 4:
        raise ValueError(f"PLRM expects images (B, C, H, W), got shape {tuple(images.shape)}")
    b, c, h, w = images.shape
    n = config.patch_size
    gh, gw = h // n, w // n
    if gh < 1 or gw < 1:
        raise ValueError(f"PLRM patch_size={n} is larger than the image ({h} x {w}); use a smaller patch_size")
    dev = images.device
    probs = plrm_patch_probabilities(gh, gw, config.p0, config.centre_weight).to(dev)
    image_on = _rand((b,), generator, dev) < config.p_img
    patch_on = _rand((b, gh, gw), generator, dev) < probs
    mask = patch_on & image_on[:, None, None]
    out = images.clone()
    if not bool(mask.any()):
        return out, mask
    # (B, C, gh, n, gw, n) -> (B, gh, gw, C, n, n): one row per patch.
    region = images[:, :, : gh * n, : gw * n]
    patches = region.reshape(b, c, gh, n, gw, n).permute(0, 2, 4, 1, 3, 5)
    chosen = patches[mask]  # (M, C, n, n)
    angles = _uniform((chosen.shape[0],), -config.theta_max, config.theta_max, generator, dev)
    mixed = config.alpha * rotate(chosen, angles) + (1.0 - config.alpha) * chosen
    new_patches = patches.clone()
    new_patches[mask] = mixed
    out[:, :, : gh * n, : gw * n] = new_patches.permute(0, 3, 1, 4, 2, 5).reshape(b, c, gh * n, gw * n)
    return out, mask


def plrm(images: torch.Tensor, config: PLRMConfig | None = None,
         generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """PLRM-augmented copy of ``images`` (see :func:`plrm_with_mask`)."""
    return plrm_with_mask(images, config or PLRMConfig(), generator)[0]


def random_rotation(
    images: torch.Tensor, p_img: float = 0.5, theta_max: float = 45.0, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """Rotate whole images by U(-theta_max, theta_max) degrees, each with probability ``p_img``."""
    b = images.shape[0]
    on = _rand((b,), generator, images.device) < p_img
    angles = _uniform((b,), -theta_max, theta_max, generator, images.device)
    out = images.clone()
    if bool(on.any()):
        out[on] = rotate(images[on], angles[on])
    return out


def patch_shuffle(
    images: torch.Tensor, p_img: float = 0.5, patch_size: int = 2, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """PatchShuffle: inside every non-overlapping ``patch_size`` x ``patch_size`` patch, permute the
    pixel positions at random (the same permutation for all channels of a pixel), per image with
    probability ``p_img``. Rows/columns beyond the last full patch are left as they are."""
    if patch_size < 1:
        raise ValueError(f"patch_shuffle: patch_size must be >= 1, got {patch_size}")
    b, c, h, w = images.shape
    n = patch_size
    gh, gw = h // n, w // n
    out = images.clone()
    on = _rand((b,), generator, images.device) < p_img
    # Draw the permutations for every image so the RNG stream does not depend on which are chosen.
    keys = _rand((b, gh, gw, n * n), generator, images.device)
    if not bool(on.any()) or gh == 0 or gw == 0:
        return out
    perm = keys.argsort(dim=-1)  # (B, gh, gw, n*n)
    region = images[:, :, : gh * n, : gw * n].reshape(b, c, gh, n, gw, n).permute(0, 1, 2, 4, 3, 5)
    flat = region.reshape(b, c, gh, gw, n * n)
    shuffled = torch.gather(flat, -1, perm[:, None].expand(b, c, gh, gw, n * n))
    shuffled = shuffled.reshape(b, c, gh, gw, n, n).permute(0, 1, 2, 4, 3, 5).reshape(b, c, gh * n, gw * n)
    out[on, :, : gh * n, : gw * n] = shuffled[on]
    return out


@dataclass
class BatchAugmentSpec:
    """Which batch augmentation a model applies and its parameters (VIF's ablation switch)."""

    kind: str = "plrm"
    plrm: PLRMConfig | None = None
    rotation_p_img: float = 0.5
    rotation_theta_max: float = 45.0
    shuffle_p_img: float = 0.5
    shuffle_patch_size: int = 2

    def __post_init__(self) -> None:
        if self.kind not in AUGMENT_KINDS:
            raise ValueError(f"batch augmentation kind must be one of {AUGMENT_KINDS}, got {self.kind!r}")
        if self.plrm is None:
            self.plrm = PLRMConfig()
        elif isinstance(self.plrm, dict):
            self.plrm = PLRMConfig(**self.plrm)


def apply_batch_augment(
    images: torch.Tensor, spec: BatchAugmentSpec, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """Apply ``spec`` to a batch; ``kind='none'`` returns the images unchanged."""
    if spec.kind == "none":
        return images
    if spec.kind == "plrm":
        return plrm(images, spec.plrm, generator)
    if spec.kind == "rotation":
        return random_rotation(images, spec.rotation_p_img, spec.rotation_theta_max, generator)
    return patch_shuffle(images, spec.shuffle_p_img, spec.shuffle_patch_size, generator)
