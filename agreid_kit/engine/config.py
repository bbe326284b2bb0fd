"""``TrainConfig``: everything a training run depends on (written to RUN/config.json)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OPTIMIZERS = ("sgd", "adam", "adamw")
# Fields that change how fast a run goes, never its numbers: they may differ when a run is resumed or reused.
# Fields that do not change a run's numbers: where it lives now (a copied run resumes in its own folder),
# worker count and image cache (augmentation is drawn in the main process).
RUNTIME_ONLY = ("out", "num_workers", "image_cache")
AMP_MODES = ("auto", "no", "bf16", "fp16")


@dataclass
class TrainConfig:
    method: str
    out: str
    data: str = ""  # data spec "synthag:DIR", "cargo:DIR", ...
    protocol: str = "ALL"
    preset: str = "cpu"
    model: dict[str, Any] = field(default_factory=dict)  # model config overrides (pretrained, depth, ...)
    epochs: int = 6
    p: int = 16  # identities per batch
    k: int = 4  # images per identity
    optimizer: str = "adam"
    lr: float = 3.5e-4
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_iters: int = 100
    warmup_factor: float = 0.01
    min_lr: float = 1.6e-6
    grad_clip: float | None = 5.0
    amp: str = "auto"  # auto = bf16 on a GPU that supports it, else fp16 on GPU, no on CPU
    device: str = "auto"  # auto | cpu | cuda (accelerate places multi-GPU processes)
    seed: int = 0
    num_workers: int = 2
    threads: int | None = None  # torch CPU threads (None: torch's default); 1 avoids thrashing on a busy machine
    val_fraction: float = 0.1  # share of train ids held out as a validation query/gallery split
    min_val_ids: int = 2
    val_every: int = 1
    ckpt_every: int = 1
    keep_epoch_checkpoints: int = 2  # how many epoch_XXX.pt to keep besides last.pt (0: none)
    eval_protocols: list[str] = field(default_factory=list)  # evaluated after training; default [protocol]
    eval_batch_size: int = 128
    max_iters_per_epoch: int | None = None  # cap for smoke runs and benchmarks
    flip_prob: float = 0.5
    pad: int = 10
    erasing_prob: float = 0.5
    extract_after: bool = True  # extract features and write metrics.json at the end
    extract_splits: list[str] = field(default_factory=lambda: ["train", "test"])  # which features/<split> to write
    # decoded-image cache (agreid_kit.data.image_cache): auto (the default folder, unless AGREID_IMAGE_CACHE=off),
    # off, or a folder. Results are identical with and without it.
    image_cache: str = "auto"

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"TrainConfig.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"TrainConfig.amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.epochs < 1:
            raise ValueError(f"TrainConfig.epochs must be >= 1, got {self.epochs}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"TrainConfig.val_fraction must be in [0, 1), got {self.val_fraction}")
        bad = [x for x in self.extract_splits if x not in ("train", "test")]
        if bad or not self.extract_splits:
            raise ValueError(f"TrainConfig.extract_splits must list 'train' and/or 'test', got {self.extract_splits}")
        if self.ckpt_every < 1 or self.val_every < 1:
            raise ValueError("TrainConfig.ckpt_every and val_every must be >= 1")

    @property
    def batch_size(self) -> int:
        return self.p * self.k

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"training config has unknown fields {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no training config at {path} (is {path.parent} a run directory?)")
        return cls.from_dict(json.loads(path.read_text()))


# Training hyper-parameters per preset (the model side lives in agreid_kit.models.*). A method whose paper
# trains otherwise registers its own values for a preset (register_model(..., train_presets=...)), which
# make_config merges over these; "cpu" is shared by every method so the method comparison stays fair.
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    # SD-ReID / VDT recipe: SGD 0.008, warm-up 2000 iters from x0.01, cosine to 1.6e-6, 120 epochs, 32 x 4.
    "paper": dict(
        epochs=120, p=32, k=4, optimizer="sgd", lr=0.008, weight_decay=1e-4, momentum=0.9,
        warmup_iters=2000, warmup_factor=0.01, min_lr=1.6e-6, grad_clip=5.0, amp="auto", num_workers=8,
        ckpt_every=10, val_every=10,
    ),
    # The small conv-stem ViT fine-tuned from the kit init (models/vit.py VIT_PRESETS["cpu"]). Chosen on SynthAG-small
    # validation ids (val_fraction 0.3 = 60 ids, sdreid, seeds 0/1; README "A recipe that converges"): AdamW 1e-3
    # beat 3e-4 by ~1 val-mAP point at 1, 2 and 4 epochs; 4 epochs (81.4 +- 0.6) are within noise of 8
    # (81.9 +- 0.0) and above 2 (80.2 +- 0.1) and 1 (78.4 +- 0.2).
    "cpu": dict(
        epochs=4, p=16, k=4, optimizer="adamw", lr=1e-3, weight_decay=0.05, warmup_iters=50,
        warmup_factor=0.01, min_lr=1e-6, grad_clip=5.0, amp="no", num_workers=2, ckpt_every=1, val_every=2,
    ),
}


def method_recipe(method: str, preset: str) -> dict[str, Any]:
    """The training hyper-parameters of ``method`` at ``preset``: the shared ``TRAIN_PRESETS[preset]``
    with the method's own values for that preset (its paper's recipe) merged over them.

    Names that are not model methods (e.g. ``sdreid-stage2``, trained by its own loop) get the shared preset.
    """
    if preset not in TRAIN_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(TRAIN_PRESETS)}")
    from agreid_kit.models import _METHOD_MODULES, method_train_presets

    own = method_train_presets(method).get(preset, {}) if method in _METHOD_MODULES else {}
    return {**TRAIN_PRESETS[preset], **own}


def make_config(method: str, out: str, preset: str = "cpu", **overrides: Any) -> TrainConfig:
    """A TrainConfig from ``method_recipe(method, preset)`` plus ``overrides`` (None values are ignored)."""
    values = {**method_recipe(method, preset), **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig(method=method, out=str(out), preset=preset, **values)
