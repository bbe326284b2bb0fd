"""VDT, the View-decoupled Transformer (CVPR 2024).

Tokens ``[CLS, view, patches]`` with one learnable view token shared by all views. After every
block the CLS token has the view token subtracted (the "inner subtraction"), so view information
accumulates in the view token and is removed from the identity path. After the final LayerNorm the
identity feature is ``CLS - view``; a view head classifies the view token; an orthogonality loss
(mean |cos|) pushes identity and view features apart.

Loss = CE(id) + triplet(id) + lambda * CE(view) + lambda * mean|cos(id, view)|, lambda = 0.001.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from agreid_kit.losses.methods import orthogonality_loss
from agreid_kit.losses.reid import cross_entropy, triplet_soft_margin_batch_hard
from agreid_kit.models.base import BNNeckHead
from agreid_kit.models.vit import VIT_PRESETS, ViTReIDConfig, _ViTBase


def inner_subtraction(tokens: torch.Tensor, cls_index: int = 0, view_index: int = 1) -> torch.Tensor:
    """Return ``tokens`` (B, L, D) with the CLS token replaced by CLS - view (other tokens unchanged)."""
    cls = tokens[:, cls_index] - tokens[:, view_index]
    return torch.cat([tokens[:, :cls_index], cls[:, None], tokens[:, cls_index + 1 :]], dim=1)


def embed_with_view_token(backbone: nn.Module, images: torch.Tensor, view_tokens: torch.Tensor) -> torch.Tensor:
    """timm ViT embedding with a view token inserted after CLS: (B, 2 + N, D).

    ``view_tokens`` is (B, D), one per image (VDT: the shared token; ViSA: picked by view label).
    CLS and patches get their position embeddings as usual; the view token is a free parameter
    and needs none.
    """
    x = backbone.patch_embed(images)
    x = backbone._pos_embed(x)  # [CLS, patches] + pos
    x = torch.cat([x[:, :1], view_tokens[:, None].to(x.dtype), x[:, 1:]], dim=1)
    x = backbone.patch_drop(x)
    return backbone.norm_pre(x)


def run_view_decoupled(backbone: nn.Module, images: torch.Tensor, view_tokens: torch.Tensor) -> torch.Tensor:
    """All blocks with the inner subtraction after each; returns the final-LayerNorm tokens."""
    x = embed_with_view_token(backbone, images, view_tokens)
    for blk in backbone.blocks:
        x = inner_subtraction(blk(x))
    return backbone.norm(x)


@dataclass
class VDTConfig(ViTReIDConfig):
    """VDT on a timm ViT; ``lambda_view`` weighs both the view CE and the orthogonality loss."""

    lambda_view: float = 0.001


VDT_PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(VIT_PRESETS["paper"], lambda_view=0.001),
    "cpu": dict(VIT_PRESETS["cpu"], lambda_view=0.001),
}


class VDT(_ViTBase):
    config_class = VDTConfig
    presets = VDT_PRESETS

    def __init__(self, config: VDTConfig) -> None:
        super().__init__()
        self.config = config
        self._build_backbone(config)
        d = self.embed_dim
        self.view_token = nn.Parameter(torch.zeros(1, d))
        nn.init.trunc_normal_(self.view_token, std=0.02)
        self.head = BNNeckHead(d, config.num_classes)
        self.view_head = nn.Linear(d, config.num_views)

    def _features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = run_view_decoupled(self.backbone, images, self.view_token.expand(images.shape[0], -1))
        view = x[:, 1]
        return x[:, 0] - view, view

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        feat, view = self._features(batch["images"])
        bn, logits = self.head(feat)
        return {"logits": logits, "feat": feat, "bn_feat": bn, "view_feat": view, "view_logits": self.view_head(view)}

    def loss(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pids = batch["pids"].to(out["logits"].device)
        views = batch["views"].to(out["logits"].device)
        lam = self.config.lambda_view
        parts = {
            "ce": cross_entropy(out["logits"], pids, self.config.label_smoothing),
            "triplet": triplet_soft_margin_batch_hard(out["feat"], pids),
            "view_ce": lam * cross_entropy(out["view_logits"], views),
            "orth": lam * orthogonality_loss(out["feat"], out["view_feat"]),
        }
        parts["total"] = sum(parts.values())
        return parts

    def embed(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        feat, view = self._features(batch["images"])
        return {"features": self.head.bn(feat), "prebn": feat, "view_token": view}
