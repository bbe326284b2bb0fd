"""ReID losses: cross-entropy with label smoothing, soft-margin batch-hard triplet, view CE."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean CE; with ``label_smoothing`` eps the target is (1 - eps) one-hot + eps / C uniform."""
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)


def pairwise_euclidean(x: torch.Tensor) -> torch.Tensor:
    """(B, B) Euclidean distances, clamped before the sqrt so the gradient stays finite at 0."""
    x = x.float()
    sq = (x * x).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * x @ x.t()
    return d2.clamp_min(1e-12).sqrt()


def triplet_soft_margin_batch_hard(feat: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
    """Batch-hard triplet with the soft margin: mean_i softplus(max_pos d(i, p) - min_neg d(i, n)).

    Anchors without a positive or a negative in the batch are skipped (a P x K batch has both).
    """
    dist = pairwise_euclidean(feat)
    same = pids[:, None] == pids[None, :]
    eye = torch.eye(len(pids), dtype=torch.bool, device=feat.device)
    pos = same & ~eye
    neg = ~same
    valid = pos.any(1) & neg.any(1)
    if not valid.any():
        return feat.sum() * 0.0
    hardest_pos = dist.masked_fill(~pos, float("-inf")).amax(1)
    hardest_neg = dist.masked_fill(~neg, float("inf")).amin(1)
    return F.softplus(hardest_pos[valid] - hardest_neg[valid]).mean()


def view_cross_entropy(view_logits: torch.Tensor, views: torch.Tensor, lambda_view: float) -> torch.Tensor:
    """``lambda_view`` x CE of the view classifier (SD-ReID's view-token supervision)."""
    return lambda_view * F.cross_entropy(view_logits.float(), views)
