"""PLRM, random rotation and PatchShuffle against hand-computed values."""

import math

import pytest
import torch

from agreid_kit.augment import (
    BatchAugmentSpec,
    PLRMConfig,
    apply_batch_augment,
    patch_shuffle,
    plrm_patch_probabilities,
    plrm_with_mask,
    random_rotation,
    rotate,
)


def test_patch_probabilities_rise_from_edges_to_centre_by_hand():
    p = plrm_patch_probabilities(3, 3, p0=0.3, centre_weight=0.8)
    # centre: 0.3 + 0.8 = 1.1 clipped to 1; edge middles: d = 1, d_max = sqrt(2); corners: p0
    edge = 0.3 + 0.8 * (1 - 1 / math.sqrt(2))
    expected = torch.tensor([[0.3, edge, 0.3], [edge, 1.0, edge], [0.3, edge, 0.3]])
    torch.testing.assert_close(p, expected)
    # the 8 x 4 grid of a 128x64 image with 16-pixel patches: centre (3.5, 1.5), d_max = sqrt(14.5)
    p = plrm_patch_probabilities(8, 4, p0=0.3, centre_weight=0.8)
    assert p.shape == (8, 4)
    assert p[0, 0].item() == pytest.approx(0.3) and p[7, 3].item() == pytest.approx(0.3)
    assert p[3, 1].item() == pytest.approx(0.3 + 0.8 * (1 - math.sqrt(0.5) / math.sqrt(14.5)), abs=1e-6)
    assert torch.equal(p, p.flip(0)) and torch.equal(p, p.flip(1))  # symmetric about the centre
    assert plrm_patch_probabilities(1, 1, 0.2, 0.5).item() == pytest.approx(0.7)


def test_rotation_by_90_degrees_matches_rot90_and_zero_is_identity():
    x = torch.arange(32.0).reshape(2, 1, 4, 4)
    torch.testing.assert_close(rotate(x, torch.tensor([90.0, 90.0])), torch.rot90(x, -1, (-2, -1)), atol=1e-4, rtol=0)
    torch.testing.assert_close(rotate(x, torch.tensor([0.0, 0.0])), x, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="expected 2 angles"):
        rotate(x, torch.tensor([1.0]))


def test_plrm_leaves_unchosen_patches_untouched_and_blends_chosen_ones():
    g = torch.Generator().manual_seed(3)
    images = torch.randn(4, 3, 64, 32, generator=g)
    cfg = PLRMConfig(p_img=1.0, p0=0.3, patch_size=16, centre_weight=0.8, theta_max=45.0, alpha=0.5)
    out, mask = plrm_with_mask(images, cfg, torch.Generator().manual_seed(11))
    assert mask.shape == (4, 4, 2) and 0 < int(mask.sum()) < mask.numel()
    for b in range(4):
        for i in range(4):
            for j in range(2):
                sl = (b, slice(None), slice(16 * i, 16 * i + 16), slice(16 * j, 16 * j + 16))
                if mask[b, i, j]:
                    assert not torch.equal(out[sl], images[sl])
                else:
                    assert torch.equal(out[sl], images[sl])  # bit for bit
    # Recompute the chosen patches by hand with the same random stream: rand(B), rand(B, gh, gw), angles.
    g2 = torch.Generator().manual_seed(11)
    torch.rand(4, generator=g2)
    torch.rand(4, 4, 2, generator=g2)
    idx = mask.nonzero().tolist()
    angles = torch.rand(len(idx), generator=g2) * 90.0 - 45.0
    assert angles.abs().max() <= 45.0
    for (b, i, j), a in zip(idx, angles):
        patch = images[b, :, 16 * i : 16 * i + 16, 16 * j : 16 * j + 16][None]
        expected = 0.5 * rotate(patch, a[None]) + 0.5 * patch
        torch.testing.assert_close(out[b, :, 16 * i : 16 * i + 16, 16 * j : 16 * j + 16], expected[0])


def test_plrm_switches_and_remainders():
    images = torch.randn(3, 3, 40, 20)  # 40x20 with 16-px patches: rows 32..39 and cols 16..19 are outside
    out, mask = plrm_with_mask(images, PLRMConfig(p_img=1.0, p0=1.0, centre_weight=0.0),
                               torch.Generator().manual_seed(0))
    assert bool(mask.all())
    assert torch.equal(out[:, :, 32:], images[:, :, 32:]) and torch.equal(out[:, :, :, 16:], images[:, :, :, 16:])
    out, mask = plrm_with_mask(images, PLRMConfig(p_img=0.0, p0=1.0), torch.Generator().manual_seed(0))
    assert not mask.any() and torch.equal(out, images)
    out, mask = plrm_with_mask(images, PLRMConfig(p_img=1.0, p0=0.0, centre_weight=0.0),
                               torch.Generator().manual_seed(0))
    assert not mask.any() and torch.equal(out, images)
    # alpha = 0 keeps the original patch even when it is chosen
    out, mask = plrm_with_mask(images, PLRMConfig(p_img=1.0, p0=1.0, alpha=0.0), torch.Generator().manual_seed(0))
    assert bool(mask.all()) and torch.allclose(out, images)
    with pytest.raises(ValueError, match="p0 must lie in"):
        PLRMConfig(p0=1.5)
    with pytest.raises(ValueError, match="theta_max"):
        PLRMConfig(theta_max=200.0)
    with pytest.raises(ValueError, match="larger than the image"):
        plrm_with_mask(torch.zeros(1, 3, 8, 8), PLRMConfig(patch_size=16))


def test_plrm_image_probability_is_respected_statistically():
    images = torch.randn(400, 1, 32, 32)
    _, mask = plrm_with_mask(images, PLRMConfig(p_img=0.5, p0=1.0, patch_size=16), torch.Generator().manual_seed(5))
    frac = mask.flatten(1).any(1).float().mean().item()
    assert 0.42 < frac < 0.58


def test_random_rotation_and_patch_shuffle():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(6, 3, 8, 8, generator=g)
    assert torch.equal(random_rotation(images, p_img=0.0, generator=g), images)
    rot = random_rotation(images, p_img=1.0, theta_max=45.0, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(rot, images)
    sh = patch_shuffle(images, p_img=1.0, patch_size=2, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(sh, images)
    # every 2x2 patch keeps its pixels (per channel, the same permutation for all channels)
    for b in range(6):
        for i in range(0, 8, 2):
            for j in range(0, 8, 2):
                a = images[b, :, i : i + 2, j : j + 2].reshape(3, 4)
                s = sh[b, :, i : i + 2, j : j + 2].reshape(3, 4)
                order = [int((a[0] == v).nonzero()[0]) for v in s[0]]
                assert torch.equal(s, a[:, order])
    assert torch.equal(patch_shuffle(images, p_img=0.0), images)


def test_batch_augment_spec_dispatch():
    images = torch.randn(2, 3, 32, 16)
    assert apply_batch_augment(images, BatchAugmentSpec(kind="none")) is images
    with pytest.raises(ValueError, match="must be one of"):
        BatchAugmentSpec(kind="mixup")
    spec = BatchAugmentSpec(kind="plrm", plrm={"p_img": 1.0, "p0": 1.0, "patch_size": 8})
    assert isinstance(spec.plrm, PLRMConfig)
    torch.manual_seed(0)
    assert not torch.allclose(apply_batch_augment(images, spec), images)


# ---- device placement ---------------------------------------------------------------------------
class _VirtualDevice(torch.overrides.TorchFunctionMode):
    """Pretend that tagged tensors live on an accelerator, without one.

    The images are tagged; a result is tagged when a tagged tensor went in, or when it was made with an
    explicit ``device=`` / moved by ``.to(device)`` / ``.cuda()``. An op that mixes tagged and untagged
    tensors with more than one element (what fails on a real GPU for ``gather`` and is a silent host
    round trip for indexing) is recorded; 0-dim tensors may mix, as CPU scalars may with CUDA tensors.
    """

    FACTORIES = {torch.rand, torch.randn, torch.randint, torch.randperm, torch.zeros, torch.ones, torch.empty,
                 torch.full, torch.arange, torch.eye, torch.tensor, torch.linspace}

    def __init__(self):
        super().__init__()
        self.mixed: list[str] = []

    @staticmethod
    def tag(t):
        t._on_accelerator = True
        return t

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat = torch.utils._pytree.tree_leaves((args, kwargs))
        tensors = [t for t in flat if isinstance(t, torch.Tensor)]
        places = {getattr(t, "_on_accelerator", False) for t in tensors if t.dim() > 0}
        name = getattr(func, "__name__", repr(func))
        if len(places) > 1:
            self.mixed.append(name)
        out = func(*args, **kwargs)
        if func in self.FACTORIES:
            moved = kwargs.get("device") is not None
        elif name in ("to", "cuda"):
            moved = name == "cuda" or "device" in kwargs or any(isinstance(a, (torch.device, str)) for a in args[1:])
            moved = moved or any(getattr(t, "_on_accelerator", False) for t in tensors)
        else:
            moved = True in places or any(getattr(t, "_on_accelerator", False) for t in tensors)
        if moved:
            for t in torch.utils._pytree.tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    self.tag(t)
        return out


def test_virtual_device_audit_catches_host_tensors():
    images = torch.randn(2, 4)
    with _VirtualDevice() as mode:
        x = mode.tag(images.clone())
        torch.gather(x, 1, torch.zeros(2, 1, dtype=torch.long))  # index made on the host
        torch.gather(x, 1, torch.zeros(2, 1, dtype=torch.long).to(x.device))
        torch.gather(x, 1, torch.zeros(2, 1, dtype=torch.long, device=x.device))
    assert mode.mixed == ["gather"]


@pytest.mark.parametrize("kind", ["plrm", "rotation", "patchshuffle"])
@pytest.mark.parametrize("seeded", [True, False])
def test_augmentations_keep_every_tensor_on_the_images_device(kind, seeded):
    """Every random mask, angle and permutation is on ``images.device`` (the GPU crash of issue 14),
    checked on CPU with a simulated device; the result is the same as without the audit."""
    spec = BatchAugmentSpec(kind=kind, plrm={"p_img": 1.0}, rotation_p_img=1.0, shuffle_p_img=1.0)
    images = torch.randn(4, 3, 64, 32, generator=torch.Generator().manual_seed(0))
    gen = (lambda: torch.Generator().manual_seed(1)) if seeded else (lambda: None)
    torch.manual_seed(2)
    plain = apply_batch_augment(images, spec, gen())
    torch.manual_seed(2)
    with _VirtualDevice() as mode:
        out = apply_batch_augment(mode.tag(images.clone()), spec, gen())
    assert mode.mixed == [], f"{kind}: host tensors met the images in {sorted(set(mode.mixed))}"
    assert getattr(out, "_on_accelerator", False) and torch.equal(out, plain) and not torch.equal(out, images)
