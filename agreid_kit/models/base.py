"""Base class, BNNeck helper and preset checks shared by every ReID model of the kit.

How to add a method (for the engineers writing ``vdt``, ``vif``, ``visa``, ``svpr``):

1. Write a config dataclass whose fields are the model's constructor arguments (JSON-able).
2. Subclass :class:`ReIDModel`; ``__init__(self, config)`` stores ``self.config = config``.
   Implement ``forward(batch) -> {"logits", "feat", ...}`` and ``embed(batch) -> {"features", ...}``;
   override ``loss(out, batch)`` if the method adds loss terms (call ``super().loss`` for CE + triplet),
   and ``batch_augment(images, views)`` for batch-level augmentations (identity by default).
3. Give the class ``config_class = MyConfig`` and ``presets = {"paper": {...}, "cpu": {...}}`` (config field
   values per preset). A method whose paper trains with another recipe than the shared one of
   ``agreid_kit.engine.config.TRAIN_PRESETS`` sets ``train_presets = {"paper": {"optimizer": ...}}``
   (TrainConfig fields), which ``TrainConfig`` / ``make_config`` merge over the shared preset. The ``cpu``
   preset cannot be overridden: it is the one recipe of the method comparison.
   Options a method derives from the training data (SVPR's attribute vocabulary, ViSA's per-dataset
   router top-k) come from the classmethod ``dataset_options``; ``paper_weights`` says which local
   file the ``paper`` preset needs (the engine's error message when none is given).
4. Add one line to the method table in ``agreid_kit/models/__init__.py``:
   ``register_method("name", "agreid_kit.models.mymodule:MyModel", summary=...)``. The module is imported
   on first use and the presets above are checked then (:func:`validate_presets`).
5. Build the backbone with :func:`agreid_kit.models.vit.build_vit` (timm ViT, local pretrained weights,
   ``input_size``/``mean``/``std`` from the model's config) so every preset works at any width/depth.

Persistent state (e.g. SD-ReID's view memory bank) must be a registered buffer so checkpoints carry it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import torch
from torch import nn

from agreid_kit.engine.config import SHARED_TRAIN_PRESET
from agreid_kit.losses.reid import cross_entropy, triplet_soft_margin_batch_hard


def validate_presets(
    name: str,
    config_class: type | None,
    presets: dict[str, dict[str, Any]] | None,
    train_presets: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Check a method's presets (a ``TypeError`` names the method, preset and bad keys).

    ``presets`` maps a preset name to ``config_class`` field values; ``train_presets`` maps a preset
    name of ``TRAIN_PRESETS`` other than the shared ``cpu`` one to TrainConfig fields.
    """
    from agreid_kit.engine.config import TRAIN_PRESETS, TrainConfig

    if config_class is None or not dataclasses.is_dataclass(config_class):
        raise TypeError(f"model {name!r}: its class must set config_class to a dataclass, got {config_class!r}")
    if not presets:
        raise TypeError(f"model {name!r}: its class must set presets (config values per preset, e.g. 'paper', 'cpu')")
    fields = {f.name for f in dataclasses.fields(config_class)}
    for preset, values in presets.items():
        unknown = set(values) - fields
        if unknown:
            raise TypeError(f"model {name!r} preset {preset!r}: {sorted(unknown)} are not fields of "
                            f"{config_class.__name__}")
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"method", "out", "preset"}
    for preset, values in (train_presets or {}).items():
        if preset == SHARED_TRAIN_PRESET:
            raise TypeError(
                f"model {name!r} train_presets[{preset!r}]: the {preset!r} preset is the shared recipe of the method "
                "comparison and cannot be overridden per method"
            )
        if preset not in TRAIN_PRESETS:
            raise TypeError(f"model {name!r} train_presets: unknown preset {preset!r}; expected one of "
                            f"{sorted(TRAIN_PRESETS)}")
        unknown = set(values) - train_fields
        if unknown:
            raise TypeError(f"model {name!r} train_presets[{preset!r}]: {sorted(unknown)} are not TrainConfig fields")


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

    method = "base"  # set to the method's name when the method table loads the class
    config: Any
    config_class: type | None = None  # the config dataclass (fields = constructor arguments)
    presets: dict[str, dict[str, Any]] = {}  # config field values per preset
    train_presets: dict[str, dict[str, Any]] = {}  # the method's own TrainConfig values per preset (not "cpu")
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
