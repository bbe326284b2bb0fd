"""The ReID training augmentation on whole uint8 batches, as tensor operations in the training process.

The per-image reference is torchvision's ``Resize -> RandomHorizontalFlip -> Pad -> RandomCrop ->
ToTensor -> Normalize -> RandomErasing(value=0)`` (:func:`agreid_kit.data.transforms.train_transform`).
Here the images arrive already resized (``uint8 (B, 3, H, W)``, from the decoded-image cache or a
decoding loader), and every random choice is drawn per image from one ``torch.Generator``, so:

- the distributions are the reference's: flip with probability ``flip_prob``; zero (black) padding by
  ``pad`` pixels and a crop offset uniform in ``[0, 2 pad]`` on each axis; random erasing with
  probability ``erasing_prob``, area fraction ``U(0.02, 0.33)``, log aspect ratio ``U(log 0.3, log 3.3)``,
  up to 10 attempts for a box that fits, filled with 0 after normalisation (the mean colour);
  ``tests/test_batch_transforms.py`` checks them against torchvision's transforms;
- the result does not depend on how many loader workers decoded the images (the draws happen
  here, seeded per epoch by the engine), nor on whether the cache was used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

ERASING_SCALE = (0.02, 0.33)
ERASING_RATIO = (0.3, 3.3)
ERASING_ATTEMPTS = 10


@dataclass(frozen=True)
class BatchAugmentConfig:
    """Normalisation (the model's ``mean``/``std``) and the three random augmentations."""

    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    flip_prob: float = 0.5
    pad: int = 10
    erasing_prob: float = 0.5

    def __post_init__(self) -> None:
        for name in ("flip_prob", "erasing_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {v}")
        if self.pad < 0:
            raise ValueError(f"pad must be >= 0 pixels, got {self.pad}")


def normalise_uint8(images: torch.Tensor, mean, std) -> torch.Tensor:
    """``uint8 (B, 3, H, W)`` or ``(3, H, W)`` -> float ``(x / 255 - mean) / std`` (ToTensor + Normalize)."""
    if images.dtype != torch.uint8:
        raise TypeError(f"normalise_uint8 expects uint8 images, got {images.dtype}")
    x = images.float().div(255)
    shape = (-1, 1, 1)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(shape)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(shape)
    return x.sub(m).div(s)


def random_flip(images: torch.Tensor, prob: float, generator: torch.Generator | None) -> torch.Tensor:
    flip = torch.rand(images.shape[0], generator=generator) < prob
    if not bool(flip.any()):
        return images
    out = images.clone()
    out[flip] = images[flip].flip(-1)
    return out


def random_pad_crop(images: torch.Tensor, pad: int, generator: torch.Generator | None) -> torch.Tensor:
    """Zero-pad by ``pad`` and crop back to (H, W) at an offset uniform in [0, 2 pad] per axis, per image."""
    if pad <= 0:
        return images
    b, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).tolist()
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator).tolist()
    return torch.stack([padded[i, :, y:y + h, x:x + w] for i, (y, x) in enumerate(zip(oy, ox))])


def erasing_boxes(b: int, h: int, w: int, prob: float, generator: torch.Generator | None) -> torch.Tensor:
    """Per image ``(on, top, left, height, width)`` (B, 5) long, drawn as torchvision's RandomErasing does."""
    on = torch.rand(b, generator=generator) < prob
    area = h * w * (torch.rand(b, ERASING_ATTEMPTS, generator=generator, dtype=torch.float64)
                    * (ERASING_SCALE[1] - ERASING_SCALE[0]) + ERASING_SCALE[0])
    lo, hi = math.log(ERASING_RATIO[0]), math.log(ERASING_RATIO[1])
    aspect = torch.exp(torch.rand(b, ERASING_ATTEMPTS, generator=generator, dtype=torch.float64) * (hi - lo) + lo)
    eh = torch.round(torch.sqrt(area * aspect)).long()
    ew = torch.round(torch.sqrt(area / aspect)).long()
    fits = (eh < h) & (ew < w)
    first = fits.long().argmax(dim=1)  # the first attempt that fits, as the reference's loop returns it
    rows = torch.arange(b)
    eh, ew = eh[rows, first], ew[rows, first]
    on = on & fits.any(dim=1)
    u = torch.rand(b, 2, generator=generator, dtype=torch.float64)
    top = torch.floor(u[:, 0] * (h - eh + 1).clamp(min=1)).long()
    left = torch.floor(u[:, 1] * (w - ew + 1).clamp(min=1)).long()
    return torch.stack([on.long(), top, left, eh, ew], dim=1)


def random_erasing(images: torch.Tensor, prob: float, generator: torch.Generator | None) -> torch.Tensor:
    """Random erasing of normalised images: a box per chosen image set to 0 (the mean colour)."""
    if prob <= 0:
        return images
    b, _, h, w = images.shape
    boxes = erasing_boxes(b, h, w, prob, generator).to(images.device)
    on, top, left, eh, ew = boxes.unbind(1)
    ys = torch.arange(h, device=images.device)[None, :]
    xs = torch.arange(w, device=images.device)[None, :]
    in_rows = (ys >= top[:, None]) & (ys < (top + eh)[:, None])
    in_cols = (xs >= left[:, None]) & (xs < (left + ew)[:, None])
    mask = in_rows[:, :, None] & in_cols[:, None, :] & on.bool()[:, None, None]
    return images.masked_fill(mask[:, None], 0.0)


def batch_train_augment(images: torch.Tensor, cfg: BatchAugmentConfig,
                        generator: torch.Generator | None) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> augmented, normalised float (B, 3, H, W): flip, pad-crop, normalise, erase."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"batch_train_augment expects uint8 images (B, 3, H, W), got shape {tuple(images.shape)}")
    x = random_flip(images, cfg.flip_prob, generator) if cfg.flip_prob > 0 else images
    x = random_pad_crop(x, cfg.pad, generator)
    x = normalise_uint8(x, cfg.mean, cfg.std)
    return random_erasing(x, cfg.erasing_prob, generator)
