"""SD-ReID stage 1: a view-aware ViT (view token before the last block, per-view memory bank)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from agreid_kit.losses.reid import view_cross_entropy
from agreid_kit.models.base import BNNeckHead
from agreid_kit.models.vit import VIT_PRESETS, ViTReIDConfig, _ViTBase, run_blocks


@dataclass
class SDReIDConfig(ViTReIDConfig):
    lambda_view: float = 0.001
    memory_momentum: float = 0.8  # weight of the new batch mean in the memory update


SDREID_PRESETS: dict[str, dict[str, Any]] = {
    # The paper trains stage 1 with label smoothing (value not printed: the field's 0.1).
    "paper": dict(VIT_PRESETS["paper"], label_smoothing=0.1),
    # From scratch the view head needs a stronger signal than 0.001 to shape the view token quickly.
    "cpu": dict(VIT_PRESETS["cpu"], lambda_view=0.1),
}


class SDReIDStage1(_ViTBase):
    """Blocks 1..L-1 on [CLS, patches]; block L on [view, CLS, patches].

    - ReID feature: final-LayerNorm CLS (pre-BN ``feat``; post-BNNeck ``features`` for retrieval);
    - instance view feature: block-L output at the view position, no final LayerNorm;
    - ID conditions: the raw CLS after blocks 1..L-1, shape (B, L-1, D);
    - ``view_centres`` (V, D) buffer: c_v <- m * mean(view tokens of view v) + (1 - m) * c_v each
      training forward, without gradient (saved in checkpoints, frozen after stage 1).
    """

    config_class = SDReIDConfig
    presets = SDREID_PRESETS

    def __init__(self, config: SDReIDConfig) -> None:
        super().__init__()
        self.config = config
        self._build_backbone(config)
        if self.num_layers < 2:
            raise ValueError(f"sdreid needs a ViT with at least 2 blocks, got depth {self.num_layers}")
        self.view_token = nn.Parameter(torch.zeros(1, 1, self.embed_dim))
        self.id_head = BNNeckHead(self.embed_dim, config.num_classes)
        self.view_head = BNNeckHead(self.embed_dim, config.num_views)
        self.register_buffer("view_centres", torch.zeros(config.num_views, self.embed_dim))

    def _tokens(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x, cls_after = run_blocks(self.backbone, images, upto=self.num_layers - 1)
        view = self.view_token.expand(x.shape[0], -1, -1).to(x.dtype)
        x = self.backbone.blocks[-1](torch.cat([view, x], dim=1))
        return {
            "feat": self.backbone.norm(x[:, 1]),
            "view_token": x[:, 0],
            "id_cond": torch.stack(cls_after, dim=1),
        }

    @torch.no_grad()
    def update_memory(self, view_tokens: torch.Tensor, views: torch.Tensor) -> None:
        """c_v <- m * mean + (1 - m) * c_v over the **global** batch.

        Under data parallelism each process sees a slice of the batch and DDP broadcasts rank 0's buffers at the
        next forward, so a local update would count only rank 0's images. The per-view sums and counts are
        therefore summed over processes first (one all-reduce); every process then applies the same update,
        equal to a single process's on the whole batch."""
        import torch.distributed as dist

        m = self.config.memory_momentum
        tokens = view_tokens.detach().float()
        if views.numel() and (int(views.min()) < 0 or int(views.max()) >= self.config.num_views):
            bad = int(views.min()) if int(views.min()) < 0 else int(views.max())
            raise ValueError(f"batch view id {bad} outside 0..{self.config.num_views - 1} (num_views)")
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            for v in views.unique().tolist():
                # A view with a single image in the batch simply uses that image's token as its mean.
                self.view_centres[v] = m * tokens[views == v].mean(0) + (1.0 - m) * self.view_centres[v]
            return
        onehot = torch.nn.functional.one_hot(views.long(), self.config.num_views).to(tokens.dtype)  # (B, V)
        stats = torch.cat([onehot.T @ tokens, onehot.sum(0)[:, None]], dim=1)  # (V, D + 1): sums, counts
        dist.all_reduce(stats)
        sums, counts = stats[:, :-1], stats[:, -1]
        for v in torch.nonzero(counts > 0).flatten().tolist():
            self.view_centres[v] = m * (sums[v] / counts[v]) + (1.0 - m) * self.view_centres[v]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tok = self._tokens(batch["images"])
        bn, logits = self.id_head(tok["feat"])
        _, view_logits = self.view_head(tok["view_token"])
        if self.training:
            self.update_memory(tok["view_token"], batch["views"].to(tok["view_token"].device))
        return {"logits": logits, "feat": tok["feat"], "bn_feat": bn, "view_logits": view_logits, **tok}

    def loss(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        parts = super().loss(out, batch)
        parts.pop("total")
        views = batch["views"].to(out["view_logits"].device)
        parts["view"] = view_cross_entropy(out["view_logits"], views, self.config.lambda_view)
        parts["total"] = sum(parts.values())
        return parts

    def embed(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tok = self._tokens(batch["images"])
        return {
            "features": self.id_head.bn(tok["feat"]),
            "prebn": tok["feat"],
            "id_cond": tok["id_cond"],
            "view_token": tok["view_token"],
        }
