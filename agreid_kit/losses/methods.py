"""Losses of the field's other methods (VIF-AGReID, VDT/ViSA, SVPR-ReID).

- :func:`vial_hnm_loss`: VIF-AGReID's View-Invariant Angular Loss with hard-negative mining (Eqs. 6-10);
- :func:`orthogonality_loss`: mean |cos| between identity and view features (VDT, ViSA, SVPR);
- :func:`load_balance_loss`: ViSA's expert load balance ``E * sum_j mean_prob_j^2``;
- :func:`attribute_loss`: SVPR-ReID's per-attribute cross-entropy summed over attributes (Eq. 11),
  ignoring unknown (-1) labels.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def _zero_like_graph(t: torch.Tensor) -> torch.Tensor:
    # A zero that stays attached to the graph, so `total.backward()` works when nothing is counted.
    return t.sum() * 0.0


def vial_hnm_loss(
    features: torch.Tensor,
    pids: torch.Tensor,
    lam: float = 0.5,
    beta: float = 5.0,
    margin: float = 0.5,
    hard_negatives: bool = True,
) -> torch.Tensor:
    """VIAL(-HNM) over all unordered pairs (i < j) of a batch.

    Positive pair (same pid): ``(1 - cos) * (1 + lam * exp(-beta * cos))`` (Eq. 9).
    Hard negative (different pid, ``cos > 1 - margin``): ``cos - (1 - margin)`` (Eq. 10).
    The sum is divided by the number of pairs counted (positives + hard negatives). With
    ``hard_negatives=False`` only the positive term is used (the paper's "VIAL" ablation) and the
    sum is divided by the number of positive pairs. Returns 0 (on the graph) when no pair counts.
    """
    if features.ndim != 2 or pids.shape != (features.shape[0],):
        raise ValueError(
            f"vial_hnm_loss: expected features (B, D) and pids (B,), got {tuple(features.shape)} and "
            f"{tuple(pids.shape)}"
        )
    f = F.normalize(features.float(), dim=1)
    cos = f @ f.t()
    b = f.shape[0]
    upper = torch.triu(torch.ones(b, b, dtype=torch.bool, device=f.device), diagonal=1)
    same = pids[:, None] == pids[None, :]
    pos = same & upper
    pos_terms = (1.0 - cos[pos]) * (1.0 + lam * torch.exp(-beta * cos[pos]))
    total = pos_terms.sum()
    count = int(pos.sum())
    if hard_negatives:
        hard = (~same) & upper & (cos > 1.0 - margin)
        total = total + (cos[hard] - (1.0 - margin)).sum()
        count += int(hard.sum())
    if count == 0:
        return _zero_like_graph(features)
    return total / count


def orthogonality_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of |cos(a_i, b_i)| for (B, D) features a and b."""
    if a.shape != b.shape:
        raise ValueError(f"orthogonality_loss: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    return F.cosine_similarity(a.float(), b.float(), dim=-1, eps=1e-8).abs().mean()


def load_balance_loss(router_probs: torch.Tensor) -> torch.Tensor:
    """``E * sum_j (mean_b p_bj)^2`` for full softmax router probabilities (B, E) (1 when balanced)."""
    if router_probs.ndim != 2:
        raise ValueError(f"load_balance_loss expects router probabilities (B, E), got {tuple(router_probs.shape)}")
    e = router_probs.shape[1]
    return e * (router_probs.mean(dim=0) ** 2).sum()


def attribute_loss(
    logits: Sequence[torch.Tensor], targets: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """SVPR-ReID's Eq. 11: the **sum** over attributes m of the cross-entropy of attribute m's
    classifier, each averaged over the batch ("sum_{m=1}^M ( -1/|B| sum_i c_i^m log c^_i^m )").

    ``logits[a]`` is (B, V_a); ``targets`` (B, A) long with -1 for unknown. An attribute's mean runs
    over its known labels (unknown ones are not annotations); attributes without a single known
    label in the batch add nothing; 0 (on the graph) when nothing is known.
    """
    if targets.ndim != 2 or targets.shape[1] != len(logits):
        raise ValueError(
            f"attribute_loss: {len(logits)} attribute classifiers but targets of shape {tuple(targets.shape)}"
        )
    parts = []
    for a, lg in enumerate(logits):
        t = targets[:, a]
        known = t >= 0
        if not bool(known.any()):
            continue
        if int(t[known].max()) >= lg.shape[1]:
            raise ValueError(
                f"attribute_loss: attribute {a} has label {int(t[known].max())} but its classifier has {lg.shape[1]} "
                "classes"
            )
        parts.append(F.cross_entropy(lg[known].float(), t[known], label_smoothing=label_smoothing))
    if not parts:
        return sum(_zero_like_graph(lg) for lg in logits) if logits else targets.float().sum() * 0.0
    return torch.stack(parts).sum()
