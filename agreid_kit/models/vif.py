"""VIF-AGReID (ICCV 2025): the ViT baseline + PLRM batch augmentation + the VIAL-HNM loss.

Total = CE + gamma * soft-margin triplet + delta * VIAL-HNM (Eq. 13). The paper gives no values for
gamma and delta; both default to 1 (say otherwise with ``--model-opt gamma=...``).

Ablation switches (the paper's Tabs. 3 and 4), all config fields:
- ``augment``: ``plrm`` (default), ``none`` (PLRM off), ``rotation`` (whole-image random rotation
  instead of PLRM), ``patchshuffle`` (PatchShuffle instead of PLRM);
- ``vial``: False turns the angular loss off; ``vial_hnm``: False keeps VIAL without hard negatives.
The augmentation runs in ``batch_augment``, which the engine applies to training batches only;
it draws from torch's global RNG, which the engine seeds, so seeded runs repeat exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from agreid_kit.augment import AUGMENT_KINDS, BatchAugmentSpec, PLRMConfig, apply_batch_augment
from agreid_kit.losses.methods import vial_hnm_loss
from agreid_kit.losses.reid import cross_entropy, triplet_soft_margin_batch_hard
from agreid_kit.models.vit import VIT_PRESETS, ViTReID, ViTReIDConfig


@dataclass
class VIFConfig(ViTReIDConfig):
    # batch augmentation (Tab. 4 switch) and PLRM's six hyper-parameters (paper values)
    augment: str = "plrm"
    plrm_p_img: float = 0.5
    plrm_p0: float = 0.3
    plrm_patch_size: int = 16
    plrm_centre_weight: float = 0.8
    plrm_theta_max: float = 45.0
    plrm_alpha: float = 0.5
    # alternatives of Tab. 4 (same image probability and angle range as PLRM by default)
    rotation_p_img: float = 0.5
    rotation_theta_max: float = 45.0
    shuffle_p_img: float = 0.5
    shuffle_patch_size: int = 2
    # VIAL-HNM (Tab. 3 switches) and the loss weights of Eq. 13
    vial: bool = True
    vial_hnm: bool = True
    vial_lambda: float = 0.5
    vial_beta: float = 5.0
    vial_margin: float = 0.5
    gamma: float = 1.0
    delta: float = 1.0

    def __post_init__(self) -> None:
        if self.augment not in AUGMENT_KINDS:
            raise ValueError(f"vif: augment must be one of {AUGMENT_KINDS}, got {self.augment!r}")

    def augment_spec(self) -> BatchAugmentSpec:
        return BatchAugmentSpec(
            kind=self.augment,
            plrm=PLRMConfig(
                p_img=self.plrm_p_img,
                p0=self.plrm_p0,
                patch_size=self.plrm_patch_size,
                centre_weight=self.plrm_centre_weight,
                theta_max=self.plrm_theta_max,
                alpha=self.plrm_alpha,
            ),
            rotation_p_img=self.rotation_p_img,
            rotation_theta_max=self.rotation_theta_max,
            shuffle_p_img=self.shuffle_p_img,
            shuffle_patch_size=self.shuffle_patch_size,
        )


VIF_PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(VIT_PRESETS["paper"]),
    # 128x64 inputs: 16-pixel patches give an 8 x 4 grid, the paper's patch size is kept.
    "cpu": dict(VIT_PRESETS["cpu"]),
}

# Named ablations of the paper (apply with create_model("vif", preset, **VIF_ABLATIONS[name])).
VIF_ABLATIONS: dict[str, dict[str, Any]] = {
    "full": dict(augment="plrm", vial=True, vial_hnm=True),
    "baseline": dict(augment="none", vial=False),
    "plrm_only": dict(augment="plrm", vial=False),
    "vial_only": dict(augment="none", vial=True),
    "rotation": dict(augment="rotation", vial=True),
    "patchshuffle": dict(augment="patchshuffle", vial=True),
    "vial_without_hnm": dict(augment="plrm", vial=True, vial_hnm=False),
}


class VIF(ViTReID):
    """ViT + BNNeck whose training batches go through PLRM and whose loss adds VIAL-HNM."""

    config_class = VIFConfig
    presets = VIF_PRESETS

    def __init__(self, config: VIFConfig) -> None:
        super().__init__(config)
        self._augment = config.augment_spec()  # validates the PLRM parameters at construction

    def batch_augment(self, images: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        return apply_batch_augment(images, self._augment)

    def loss(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c = self.config
        pids = batch["pids"].to(out["logits"].device)
        parts = {
            "ce": cross_entropy(out["logits"], pids, c.label_smoothing),
            "triplet": c.gamma * triplet_soft_margin_batch_hard(out["feat"], pids),
        }
        if c.vial:
            parts["vial"] = c.delta * vial_hnm_loss(
                out["feat"], pids, c.vial_lambda, c.vial_beta, c.vial_margin, hard_negatives=c.vial_hnm
            )
        parts["total"] = sum(parts.values())
        return parts
