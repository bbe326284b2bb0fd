"""Batched tensor augmentation against torchvision's per-image reference, in distribution (seeded)."""

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from agreid_kit.data import transforms as tfm
from agreid_kit.data.batch_transforms import (
    BatchAugmentConfig,
    batch_train_augment,
    erasing_boxes,
    normalise_uint8,
    random_pad_crop,
)
from agreid_kit.data.transforms import TransformConfig, resize_uint8, train_transform

H, W, N = 64, 32, 1500


def _two_colour_image():
    """Left half reddish, right half bluish: flips are visible, padding is black (-1), erasing is 0."""
    a = np.zeros((H, W, 3), dtype=np.uint8)
    a[:, : W // 2] = (230, 40, 40)
    a[:, W // 2 :] = (40, 40, 230)
    return a


def _describe(x: torch.Tensor) -> dict[str, np.ndarray]:
    """Per image: share of padded pixels, share of erased pixels, and whether it was flipped."""
    pad = (x == -1.0).all(dim=1).flatten(1).float().mean(1)
    erased = (x == 0.0).all(dim=1).flatten(1).float().mean(1)
    valid = (x != -1.0).any(dim=1) & (x != 0.0).any(dim=1)
    red = x[:, 0]
    left = torch.where(valid[:, :, : W // 4], red[:, :, : W // 4], torch.nan).nanmean(dim=(1, 2))
    right = torch.where(valid[:, :, -W // 4 :], red[:, :, -W // 4 :], torch.nan).nanmean(dim=(1, 2))
    return {"pad": pad.numpy(), "erased": erased.numpy(), "flipped": (right > left).numpy()}


@pytest.fixture(scope="module")
def samples():
    img = _two_colour_image()
    torch.manual_seed(0)
    ref_tf = train_transform(TransformConfig((H, W), flip_prob=0.5, pad=6, erasing_prob=0.5))
    pil = Image.fromarray(img)
    reference = torch.stack([ref_tf(pil) for _ in range(N)])
    batch = torch.from_numpy(img.transpose(2, 0, 1).copy())[None].repeat(N, 1, 1, 1)
    g = torch.Generator().manual_seed(1)
    ours = batch_train_augment(batch, BatchAugmentConfig(flip_prob=0.5, pad=6, erasing_prob=0.5), g)
    return _describe(reference), _describe(ours)


def test_flip_rate_matches_the_reference(samples):
    ref, ours = samples
    assert abs(ref["flipped"].mean() - 0.5) < 0.05 and abs(ours["flipped"].mean() - 0.5) < 0.05
    assert abs(ref["flipped"].mean() - ours["flipped"].mean()) < 0.06


def test_pad_crop_offsets_match_the_reference_in_distribution(samples):
    ref, ours = samples
    assert abs(ref["pad"].mean() - ours["pad"].mean()) < 0.01
    assert stats.ks_2samp(ref["pad"], ours["pad"]).pvalue > 1e-3
    assert (ours["pad"] == 0).mean() == pytest.approx((ref["pad"] == 0).mean(), abs=0.03)  # offset (pad, pad)


def test_random_erasing_matches_the_reference_in_distribution(samples):
    ref, ours = samples
    assert abs((ref["erased"] > 0).mean() - (ours["erased"] > 0).mean()) < 0.06
    assert abs((ours["erased"] > 0).mean() - 0.5) < 0.05
    assert stats.ks_2samp(ref["erased"][ref["erased"] > 0], ours["erased"][ours["erased"] > 0]).pvalue > 1e-3


def test_erasing_boxes_fit_and_follow_the_scale_range():
    g = torch.Generator().manual_seed(0)
    boxes = erasing_boxes(4000, H, W, 1.0, g)
    on, top, left, eh, ew = boxes.unbind(1)
    assert on.float().mean() > 0.95  # 10 attempts nearly always find a box that fits
    assert ((top + eh) <= H).all() and ((left + ew) <= W).all() and (top >= 0).all() and (left >= 0).all()
    area = (eh * ew).float()[on.bool()] / (H * W)
    assert area.min() >= 0.01 and area.max() <= 0.36  # U(0.02, 0.33) up to rounding of h and w
    assert erasing_boxes(100, H, W, 0.0, g)[:, 0].sum() == 0


def test_pad_crop_is_a_shift_with_black_borders():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).reshape(2, 3, 4, 4)
    g = torch.Generator().manual_seed(3)
    out = random_pad_crop(x, 2, g)
    g = torch.Generator().manual_seed(3)
    oy = torch.randint(0, 5, (2,), generator=g)
    ox = torch.randint(0, 5, (2,), generator=g)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        assert torch.equal(out[i], padded[i, :, oy[i]:oy[i] + 4, ox[i]:ox[i] + 4])


def test_same_generator_same_batch_and_no_augmentation_is_the_test_transform():
    img = _two_colour_image()
    batch = torch.from_numpy(img.transpose(2, 0, 1).copy())[None].repeat(8, 1, 1, 1)
    cfg = BatchAugmentConfig()
    a = batch_train_augment(batch, cfg, torch.Generator().manual_seed(5))
    b = batch_train_augment(batch, cfg, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    off = BatchAugmentConfig(flip_prob=0.0, pad=0, erasing_prob=0.0)
    plain = batch_train_augment(batch, off, torch.Generator().manual_seed(5))
    pil = Image.fromarray(img)
    expected = tfm.test_transform(TransformConfig((H, W)))(pil)
    assert torch.equal(plain[0], expected)
    # the test transform equals torchvision's Resize -> ToTensor -> Normalize exactly
    from torchvision import transforms as T

    tv = T.Compose([T.Resize((H, W), interpolation=T.InterpolationMode.BICUBIC), T.ToTensor(),
                    T.Normalize((0.5,) * 3, (0.5,) * 3)])
    big = Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 64, 3), dtype=np.uint8))
    torch.testing.assert_close(tfm.test_transform(TransformConfig((H, W)))(big), tv(big), rtol=0, atol=1e-6)
    assert torch.equal(normalise_uint8(resize_uint8(big, (H, W)), (0.5,) * 3, (0.5,) * 3),
                       tfm.test_transform(TransformConfig((H, W)))(big))
    with pytest.raises(TypeError, match="uint8"):
        normalise_uint8(torch.zeros(1, 3, 2, 2), (0.5,) * 3, (0.5,) * 3)
