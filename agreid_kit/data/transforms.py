"""Image transforms: the deterministic test transform and the per-image reference training recipe.

Sizes and normalisation come from the model (``model.input_size``, ``model.mean``, ``model.std``).
Training does not use :func:`train_transform`: the engine reads resized ``uint8`` images (from the
decoded-image cache, :mod:`agreid_kit.data.image_cache`) and augments whole batches with
:func:`agreid_kit.data.batch_transforms.batch_train_augment`, which draws from the same distributions.
``train_transform`` stays as the torchvision reference those distributions are tested against.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TransformConfig:
    input_size: tuple[int, int]
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    flip_prob: float = 0.5
    pad: int = 10
    erasing_prob: float = 0.5


def train_transform(cfg: TransformConfig):
    """Reference per-image recipe: Resize -> flip -> pad + random crop -> tensor -> normalise -> random erasing."""
    from torchvision import transforms as T

    steps = [T.Resize(tuple(cfg.input_size), interpolation=T.InterpolationMode.BICUBIC)]
    if cfg.flip_prob > 0:
        steps.append(T.RandomHorizontalFlip(cfg.flip_prob))
    if cfg.pad > 0:
        steps += [T.Pad(cfg.pad), T.RandomCrop(tuple(cfg.input_size))]
    steps += [T.ToTensor(), T.Normalize(cfg.mean, cfg.std)]
    if cfg.erasing_prob > 0:
        # value 0 after normalisation = the mean pixel, as the ReID recipe fills erased boxes.
        steps.append(T.RandomErasing(p=cfg.erasing_prob, value=0))
    return T.Compose(steps)


def resize_uint8(image, size: tuple[int, int]):
    """A PIL image -> ``uint8 (3, H, W)`` tensor, bicubic resize (the decoded-image cache's pixels)."""
    import numpy as np
    import torch
    from PIL import Image

    h, w = int(size[0]), int(size[1])
    rgb = image.convert("RGB")
    if rgb.size != (w, h):
        rgb = rgb.resize((w, h), Image.BICUBIC)
    return torch.from_numpy(np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)))


def test_transform(cfg: TransformConfig):
    """PIL image -> normalised float (3, H, W): bicubic resize, /255, normalise (= cached pixels, normalised)."""
    from agreid_kit.data.batch_transforms import normalise_uint8

    def transform(image):
        return normalise_uint8(resize_uint8(image, cfg.input_size), cfg.mean, cfg.std)

    return transform
