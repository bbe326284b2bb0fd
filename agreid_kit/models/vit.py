"""timm ViT backbone builder (local pretrained weights only) and the ViT + BNNeck baseline."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from agreid_kit.models.base import BNNeckHead, ReIDModel


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable file is the user's input at fault
        raise ValueError(f"pretrained weights {path} could not be read as a torch/safetensors file: {e}") from e
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"pretrained weights {path} do not hold a state dict of tensors")
    return state


def pretrained_key_report(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Missing and unexpected keys of a weights file's ``state`` for ``model`` after timm's ViT filter."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    state = checkpoint_filter_fn(dict(state), model)
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own and not k.startswith("head."))
    return missing, unexpected


STEMS = ("patch", "conv")


def conv_stem_embed(**kwargs: Any) -> nn.Module:
    """timm's ``PatchEmbed`` whose single patch-sized convolution is replaced by a convolutional stem.

    Early convolutions make a ViT trained from scratch learn far faster and more stably (Xiao et al.,
    "Early convolutions help transformers see better", 2021): log2(patch) 3x3 stride-2 convolutions
    with BatchNorm and ReLU, widths doubling up to the embedding width, then a 1x1 projection. The
    token grid, position embeddings and everything after the embedding are the plain ViT's, so
    per-block CLS tokens and an inserted view token work unchanged.
    """
    import math

    from timm.layers import PatchEmbed

    embed = PatchEmbed(**kwargs)
    ph, pw = embed.patch_size
    if ph != pw or ph < 2 or 2 ** int(round(math.log2(ph))) != ph:
        raise ValueError(f"the conv stem needs a square power-of-two patch size, got {embed.patch_size}")
    dim = kwargs.get("embed_dim", 768)
    n = int(round(math.log2(ph)))
    widths = [max(8, dim // 2 ** (n - 1 - i)) for i in range(n)]
    layers: list[nn.Module] = []
    c_in = kwargs.get("in_chans", 3)
    for c_out in widths:
        layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                   nn.ReLU(inplace=True)]
        c_in = c_out
    layers.append(nn.Conv2d(c_in, dim, 1))
    embed.proj = nn.Sequential(*layers)
    return embed


def build_vit(
    arch: str,
    img_size: tuple[int, int],
    embed_dim: int | None = None,
    depth: int | None = None,
    num_heads: int | None = None,
    drop_path: float = 0.0,
    pretrained: str | None = None,
    verbose: bool = True,
    stem: str = "patch",
) -> nn.Module:
    """A timm ViT without classifier at ``img_size``; width/depth/heads override the arch's.

    ``stem``: ``patch`` (the ViT's patch embedding) or ``conv`` (:func:`conv_stem_embed`).
    ``pretrained`` is a local weights file (``.safetensors``/``.pth``/``.bin``): a timm ImageNet
    checkpoint, or a kit-trained backbone (``agreid pretrain``). It is loaded through timm
    (``pretrained_cfg_overlay=dict(file=...)``: checkpoint filter, position-embedding resize to
    ``img_size``) strictly, and the missing/unexpected keys are printed. A wrong or absent file
    raises; nothing is ever downloaded.
    """
    import timm

    if stem not in STEMS:
        raise ValueError(f"ViT stem must be one of {STEMS}, got {stem!r}")
    kwargs: dict[str, Any] = dict(num_classes=0, img_size=tuple(img_size), drop_path_rate=drop_path)
    if stem == "conv":
        kwargs["embed_layer"] = conv_stem_embed
    for name, value in (("embed_dim", embed_dim), ("depth", depth), ("num_heads", num_heads)):
        if value is not None:
            kwargs[name] = int(value)
    if embed_dim is not None and num_heads is not None and embed_dim % num_heads:
        raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
    if pretrained is None or str(pretrained).lower() == "none":
        return timm.create_model(arch, pretrained=False, **kwargs)
    from agreid_kit.pretrained import KIT_PREFIX, is_kit_init, load_kit_backbone

    if is_kit_init(pretrained):
        model = timm.create_model(arch, pretrained=False, **kwargs)
        architecture = {"arch": arch, "img_size": list(img_size), "embed_dim": embed_dim, "depth": depth,
                        "num_heads": num_heads, "stem": stem}
        load_kit_backbone(model, str(pretrained)[len(KIT_PREFIX):], architecture, verbose=verbose)
        return model
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained weights file {path} does not exist; pass --pretrained PATH to a local timm "
            f"ImageNet checkpoint of {arch} (e.g. model.safetensors of timm/{arch}.augreg2_in21k_ft_in1k)"
        )
    state = _read_state_dict(path)  # fail on an unreadable file before timm does, with a clear message
    try:
        model = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
    except (RuntimeError, KeyError) as e:
        raise ValueError(
            f"pretrained weights {path} do not fit {arch} (embed_dim={embed_dim}, depth={depth}): {str(e)[:600]}"
        ) from e
    missing, unexpected = pretrained_key_report(model, state)
    if verbose:
        print(f"loaded pretrained weights {path}: {len(model.state_dict()) - len(missing)} tensors")
        print(f"  missing keys ({len(missing)}): {missing}")
        print(f"  unexpected keys ({len(unexpected)}): {unexpected}")
    return model


def run_blocks(
    backbone: nn.Module, images: torch.Tensor, upto: int | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Embed ``images`` and run blocks ``[0, upto)``; return the tokens and the raw CLS after each block."""
    x = backbone.patch_embed(images)
    x = backbone._pos_embed(x)
    x = backbone.patch_drop(x)
    x = backbone.norm_pre(x)
    cls_after: list[torch.Tensor] = []
    blocks = backbone.blocks if upto is None else backbone.blocks[:upto]
    for blk in blocks:
        x = blk(x)
        cls_after.append(x[:, 0])
    return x, cls_after


@dataclass
class ViTReIDConfig:
    """ViT + BNNeck. ``arch`` is a timm ViT name; width/depth/heads override it (None keeps the arch's)."""

    num_classes: int = 1
    num_views: int = 2
    arch: str = "vit_base_patch16_224"
    img_size: tuple[int, int] = (256, 128)
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    drop_path: float = 0.1
    pretrained: str | None = None
    label_smoothing: float = 0.0
    stem: str = "patch"  # patch | conv (see build_vit)


VIT_PRESETS: dict[str, dict[str, Any]] = {
    # ViT-B/16 at 256x128 from a local ImageNet checkpoint (--pretrained PATH is required by the engine).
    "paper": dict(arch="vit_base_patch16_224", img_size=(256, 128), drop_path=0.1),
    # A small ViT with a convolutional stem (width 128, 6 blocks, 2 heads, 8 x 4 tokens at 128x64), started
    # from the kit-trained initialisation (agreid_kit.pretrained): the backbone of every cpu preset. Chosen on
    # SynthAG-small validation ids at equal CPU time, from scratch (README, "A recipe that converges"):
    # the conv stem beat the patch embedding by 14-23 val-mAP points at widths 128 and 192; width 128 matched
    # 192 at half the training and inference cost.
    "cpu": dict(arch="vit_base_patch16_224", img_size=(128, 64), embed_dim=128, depth=6, num_heads=2, drop_path=0.0,
                stem="conv", pretrained="kit:synthag-vit128", label_smoothing=0.1),
}


class _ViTBase(ReIDModel):
    def _build_backbone(self, config: Any) -> None:
        self.backbone = build_vit(
            config.arch, config.img_size, config.embed_dim, config.depth, config.num_heads, config.drop_path,
            config.pretrained,
            stem=config.stem,
        )
        self.embed_dim = int(self.backbone.embed_dim)
        self.num_layers = len(self.backbone.blocks)
        cfg = getattr(self.backbone, "pretrained_cfg", {}) or {}
        # Normalisation follows the arch's pretrained config (0.5/0.5 for the augreg ViT-B/16).
        self._mean = tuple(cfg.get("mean", (0.5, 0.5, 0.5)))
        self._std = tuple(cfg.get("std", (0.5, 0.5, 0.5)))


class ViTReID(_ViTBase):
    """The baseline: final-LayerNorm CLS -> BNNeck -> ID classifier; CE + triplet."""

    config_class = ViTReIDConfig
    presets = VIT_PRESETS

    def __init__(self, config: ViTReIDConfig) -> None:
        super().__init__()
        self.config = config
        self._build_backbone(config)
        self.head = BNNeckHead(self.embed_dim, config.num_classes)

    def _cls(self, images: torch.Tensor) -> torch.Tensor:
        x, _ = run_blocks(self.backbone, images)
        return self.backbone.norm(x)[:, 0]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        feat = self._cls(batch["images"])
        bn, logits = self.head(feat)
        return {"logits": logits, "feat": feat, "bn_feat": bn}

    def embed(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        feat = self._cls(batch["images"])
        return {"features": self.head.bn(feat), "prebn": feat}


def config_dict(model: ReIDModel) -> dict[str, Any]:
    return dataclasses.asdict(model.config)
