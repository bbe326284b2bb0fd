"""Image transforms: the ReID training recipe and the deterministic test transform.

Sizes and normalisation come from the model (``model.input_size``, ``model.mean``, ``model.std``).
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
    """Resize -> flip -> pad + random crop -> tensor -> normalise -> random erasing."""
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


def test_transform(cfg: TransformConfig):
    from torchvision import transforms as T

    return T.Compose(
        [
            T.Resize(tuple(cfg.input_size), interpolation=T.InterpolationMode.BICUBIC),
            T.ToTensor(),
            T.Normalize(cfg.mean, cfg.std),
        ]
    )
