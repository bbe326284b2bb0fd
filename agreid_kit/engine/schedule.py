"""Optimisers and the per-iteration learning-rate schedule (linear warm-up, then cosine)."""

from __future__ import annotations

import math

import torch

from agreid_kit.engine.config import TrainConfig


def warmup_cosine_factor(it: int, total_iters: int, warmup_iters: int, warmup_factor: float, min_ratio: float) -> float:
    """LR multiplier at iteration ``it``: warmup_factor -> 1 linearly, then cosine 1 -> min_ratio."""
    if warmup_iters > 0 and it < warmup_iters:
        return warmup_factor + (1.0 - warmup_factor) * it / warmup_iters
    span = max(1, total_iters - warmup_iters)
    t = min(1.0, (it - warmup_iters) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def _no_decay(name: str, p: torch.nn.Parameter) -> bool:
    # Norms, biases and learned tokens/position embeddings are not weight-decayed.
    return p.ndim <= 1 or any(t in name for t in ("pos_embed", "cls_token", "view_token", "reg_token"))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if _no_decay(name, p) else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "adamw":  # decoupled weight decay (the usual choice for a ViT trained from scratch)
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.Adam(groups, lr=cfg.lr)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                   iters_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per iteration; ``min_lr`` is absolute (ratio taken to ``cfg.lr``)."""
    total = cfg.epochs * iters_per_epoch
    warmup = min(cfg.warmup_iters, max(0, total - 1))
    ratio = cfg.min_lr / cfg.lr if cfg.lr > 0 else 0.0
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: warmup_cosine_factor(it, total, warmup, cfg.warmup_factor, ratio)
    )
