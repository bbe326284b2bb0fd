"""Base class, BNNeck helper and registration API shared by every ReID model of the kit.

How to add a method (for the engineers writing ``vdt``, ``vif``, ``visa``, ``svpr``):

1. Write a config dataclass whose fields are the model's constructor arguments (JSON-able).
2. Subclass :class:`ReIDModel`; ``__init__(self, config)`` stores ``self.config = config``.
   Implement ``forward(batch) -> {"logits", "feat", ...}`` and ``embed(batch) -> {"features", ...}``;
   override ``loss(out, batch)`` if the method adds loss terms (call ``super().loss`` for CE + triplet),
   and ``batch_augment(images, views)`` for batch-level augmentations (identity by default).
3. Decorate the class with ``@register_model("name", config_class=MyConfig, presets={"paper": {...}, "cpu": {...}})``.
   ``create_model(name, preset, num_classes=..., num_views=..., **overrides)`` imports the module lazily
   (``agreid_kit.models._METHOD_MODULES`` maps the name to it), merges preset and overrides into the
   config and calls ``cls(config)``. A method whose paper trains with another recipe than the shared
   one of ``agreid_kit.engine.config.TRAIN_PRESETS`` passes ``train_presets={"paper": {"optimizer": ...}}``
   (TrainConfig fields); ``make_config(method, out, preset)`` merges them over the shared preset. The
   ``cpu`` preset cannot be overridden: it is the one recipe of the method comparison.
   Options a method derives from the training data (SVPR's attribute vocabulary, ViSA's per-dataset
   router top-k) come from the classmethod ``dataset_options``; ``paper_weights`` says which local
   file the ``paper`` preset needs (the engine's error message when none is given).
4. Build the backbone with :func:`agreid_kit.models.vit.build_vit` (timm ViT, local pretrained weights,
   ``input_size``/``mean``/``std`` from the model's config) so every preset works at any width/depth.

Persistent state (e.g. SD-ReID's view memory bank) must be a registered buffer so checkpoints carry it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import torch
from torch import nn

from agreid_kit.losses.reid import cross_entropy, triplet_soft_margin_batch_hard

_REGISTRY: dict[str, tuple[type, type, dict[str, dict[str, Any]]]] = {}
_TRAIN_PRESETS: dict[str, dict[str, dict[str, Any]]] = {}
# The preset every method trains with in the method comparison: one shared recipe keeps it fair.
SHARED_TRAIN_PRESET = "cpu"


def register_model(
    name: str,
    config_class: type,
    presets: dict[str, dict[str, Any]],
    train_presets: dict[str, dict[str, Any]] | None = None,
) -> Callable[[type], type]:
    """Class decorator: make ``create_model(name, preset, ...)`` build this class.

    ``presets`` maps a preset name (at least ``paper`` and ``cpu``) to config field values; the
    keys must be fields of ``config_class`` (checked here, so a typo fails at import time).
    ``train_presets`` maps a preset name to the method's own training hyper-parameters (TrainConfig
    fields, e.g. the optimiser of its paper), merged by ``make_config`` over the shared
    ``TRAIN_PRESETS[preset]``; the shared ``cpu`` preset may not be overridden.
    """
    from agreid_kit.engine.config import TRAIN_PRESETS, TrainConfig

    fields = {f.name for f in dataclasses.fields(config_class)}
    for preset, values in presets.items():
        unknown = set(values) - fields
        if unknown:
            raise TypeError(f"model {name!r} preset {preset!r}: {sorted(unknown)} are not fields of {config_class.__name__}")
    train_presets = {k: dict(v) for k, v in (train_presets or {}).items()}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"method", "out", "preset"}
    for preset, values in train_presets.items():
        if preset == SHARED_TRAIN_PRESET:
            raise TypeError(
                f"model {name!r} train_presets[{preset!r}]: the {preset!r} preset is the shared recipe of the method "
                "comparison and cannot be overridden per method"
            )
        if preset not in TRAIN_PRESETS:
            raise TypeError(f"model {name!r} train_presets: unknown preset {preset!r}; expected one of {sorted(TRAIN_PRESETS)}")
        unknown = set(values) - train_fields
        if unknown:
            raise TypeError(f"model {name!r} train_presets[{preset!r}]: {sorted(unknown)} are not TrainConfig fields")

    def decorate(cls: type) -> type:
        _REGISTRY[name] = (cls, config_class, presets)
        _TRAIN_PRESETS[name] = train_presets
        cls.method = name
        return cls

    return decorate


def registered(name: str) -> tuple[type, type, dict[str, dict[str, Any]]] | None:
    return _REGISTRY.get(name)


def registered_train_presets(name: str) -> dict[str, dict[str, Any]]:
    """The per-preset training overrides ``name`` registered (empty when it has none)."""
    return {k: dict(v) for k, v in _TRAIN_PRESETS.get(name, {}).items()}


class BNNeckHead(nn.Module):
    """BNNeck: BatchNorm1d with a frozen zero bias, then a bias-free linear classifier.

    Returns ``(bn_feature, logits)``; the BN feature is the retrieval feature at test time, the
    feature before it feeds the triplet loss.
    """

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.bn.bias.requires_grad_(False)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        self.classifier = nn.Linear(dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bn = self.bn(feat)
        return bn, self.classifier(bn)


class ReIDModel(nn.Module):
    """Base of every model: the batch-dict contract of docs/ARCHITECTURE.md.

    Subclasses set ``self.config`` and a backbone exposing ``input_size``, ``mean``, ``std`` (see
    ``build_vit``); the default ``loss`` is CE (label smoothing ``config.label_smoothing``) on
    ``out["logits"]`` + soft-margin batch-hard triplet on ``out["feat"]``.
    """

    method = "base"
    config: Any
    # What ``--pretrained PATH`` must point at for the ``paper`` preset (the engine's missing-file message).
    paper_weights = (
        "a local timm ViT-B/16 file (e.g. model.safetensors of timm/vit_base_patch16_224.augreg2_in21k_ft_in1k, "
        "downloaded beforehand)"
    )

    @classmethod
    def dataset_options(cls, dataset: str, train_records: Sequence[Any], options: dict[str, Any]) -> dict[str, Any]:
        """Model options this method derives from the training data: ``dataset`` is the split's dataset
        name (``DatasetSplit.dataset``), ``train_records`` its training records, ``options`` what the
        user set (which the engine applies over the returned values, so an explicit option wins)."""
        return {}

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.config.img_size)

    @property
    def mean(self) -> tuple[float, float, float]:
        return tuple(self._mean)

    @property
    def std(self) -> tuple[float, float, float]:
        return tuple(self._std)

    @property
    def feature_dim(self) -> int:
        return int(self.embed_dim)

    def batch_augment(self, images: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """Batch-level augmentation applied by the engine to training batches (identity here)."""
        return images

    def loss(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pids = batch["pids"].to(out["logits"].device)
        parts = {
            "ce": cross_entropy(out["logits"], pids, getattr(self.config, "label_smoothing", 0.0)),
            "triplet": triplet_soft_margin_batch_hard(out["feat"], pids),
        }
        parts["total"] = sum(parts.values())
        return parts

    def embed(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement embed(batch)")
