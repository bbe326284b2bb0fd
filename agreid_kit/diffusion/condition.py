"""Condition learner: ID-condition tokens + the target view's centre -> cross-attention context.

The tokens of one sample are [selected ID-condition tokens (K x D); target-view memory centre (1 x D)].
R pre-norm transformer layers mix them **within each sample** (batch_first attention over the
K + 1 tokens; never across the batch, so a generated feature does not depend on which other images
share its batch), then a linear map gives the UNet's cross-attention width. A learned null context
replaces the context with probability ``p_uncond`` in training and is the unconditional branch of
classifier-free guidance at test, so both phases see the same "no condition" input.
"""

from __future__ import annotations

import torch
from torch import nn


class ConditionLearner(nn.Module):
    def __init__(self, dim: int, num_tokens: int, context_dim: int, depth: int = 1, heads: int = 12) -> None:
        super().__init__()
        self.dim = dim
        self.num_tokens = num_tokens  # K ID tokens + 1 view token
        self.context_dim = context_dim
        # Which slot a token sits in (layer k or the view token) is information the learner needs.
        self.pos = nn.Parameter(torch.zeros(1, num_tokens, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d_model=dim, nhead=heads, dim_feedforward=4 * dim, dropout=0.0,
                activation="gelu", batch_first=True, norm_first=True,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, context_dim)
        self.null_context = nn.Parameter(torch.zeros(1, num_tokens, context_dim))
        nn.init.normal_(self.null_context, std=0.02)

    def tokens(self, id_cond: torch.Tensor, view_centre: torch.Tensor) -> torch.Tensor:
        """[ID tokens (B, K, D); view centre (B, D)] -> (B, K + 1, D)."""
        if id_cond.ndim != 3 or id_cond.shape[-1] != self.dim or id_cond.shape[1] != self.num_tokens - 1:
            raise ValueError(
                f"ConditionLearner: id_cond must be (B, {self.num_tokens - 1}, {self.dim}), got {tuple(id_cond.shape)}"
            )
        if view_centre.shape != (id_cond.shape[0], self.dim):
            raise ValueError(
                f"ConditionLearner: view_centre must be ({id_cond.shape[0]}, {self.dim}), got "
                f"{tuple(view_centre.shape)}"
            )
        return torch.cat([id_cond, view_centre[:, None, :]], dim=1)

    def forward(self, id_cond: torch.Tensor, view_centre: torch.Tensor) -> torch.Tensor:
        x = self.tokens(id_cond, view_centre) + self.pos.to(id_cond.dtype)
        for layer in self.layers:
            x = layer(x)
        return self.out(self.norm(x))

    def null(self, batch: int) -> torch.Tensor:
        """The learned unconditional context, expanded to (batch, K + 1, context_dim)."""
        return self.null_context.expand(batch, -1, -1)

    def with_cfg_dropout(self, context: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        """Replace the rows of ``context`` where ``drop`` (B,) is True by the learned null context."""
        return torch.where(drop[:, None, None], self.null(context.shape[0]).to(context.dtype), context)
