"""``TrainConfig``: everything a training run depends on (written to RUN/config.json)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from agreid_kit.presets import apply_preset, given_fields, preset_values, remembers_given_fields

OPTIMIZERS = ("sgd", "adam", "adamw")
# Fields that change how fast a run goes, never its numbers: they may differ when a run is resumed or reused.
# Fields that do not change a run's numbers: where it lives now (a copied run resumes in its own folder),
# worker count and image cache (augmentation is drawn in the main process).
RUNTIME_ONLY = ("out", "num_workers", "image_cache")
AMP_MODES = ("auto", "no", "bf16", "fp16")
# The preset every method trains with in the method comparison: one shared recipe keeps it fair (a method's
# own train_presets may not override it).
SHARED_TRAIN_PRESET = "cpu"


# Training hyper-parameters per preset (the model side lives in agreid_kit.models.*). A method whose paper
# trains otherwise sets its own values for a preset (its model class's ``train_presets``), which TrainConfig
# merges over these; "cpu" is shared by every method so the method comparison stays fair.
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


_CPU = TRAIN_PRESETS["cpu"]  # the dataclass defaults below are the cpu preset's values


@remembers_given_fields
@dataclass
class TrainConfig:
    """A stage-1 training run. ``preset`` fills every preset field the caller does not set (the method's
    recipe for that preset: ``method_recipe``); the defaults written here are the ``cpu`` preset's."""

    method: str
    out: str
    data: str = ""  # data spec "synthag:DIR", "cargo:DIR", ...
    protocol: str = "ALL"
    preset: str = "cpu"
    model: dict[str, Any] = field(default_factory=dict)  # model config overrides (pretrained, depth, ...)
    epochs: int = _CPU["epochs"]
    p: int = _CPU["p"]  # identities per batch
    k: int = _CPU["k"]  # images per identity
    optimizer: str = _CPU["optimizer"]
    lr: float = _CPU["lr"]
    weight_decay: float = _CPU["weight_decay"]
    momentum: float = 0.9  # SGD only (the cpu preset's Adam ignores it)
    warmup_iters: int = _CPU["warmup_iters"]
    warmup_factor: float = _CPU["warmup_factor"]
    min_lr: float = _CPU["min_lr"]
    grad_clip: float | None = _CPU["grad_clip"]
    amp: str = _CPU["amp"]  # auto = bf16 on a GPU that supports it, else fp16 on GPU, no on CPU
    device: str = "auto"  # auto | cpu | cuda (accelerate places multi-GPU processes)
    seed: int = 0
    num_workers: int = _CPU["num_workers"]
    threads: int | None = None  # torch CPU threads (None: torch's default); 1 avoids thrashing on a busy machine
    val_fraction: float = 0.1  # share of train ids held out as a validation query/gallery split
    min_val_ids: int = 2
    val_every: int = _CPU["val_every"]
    ckpt_every: int = _CPU["ckpt_every"]
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

    # ---- what a run folder needs to know (agreid_kit.run.Run) ----
    RUN_KIND: ClassVar[str] = "training"
    RUNTIME_ONLY: ClassVar[tuple[str, ...]] = RUNTIME_ONLY
    IDENTITY: ClassVar[tuple[str, ...]] = ("method",)  # a run of another method is another run, not other settings
    # the `agreid train` flag of each field whose flag is not --<field-with-dashes>
    FLAGS: ClassVar[dict[str, str]] = {
        "p": "--batch-size", "k": "--batch-size", "model": "--model-opt", "ckpt_every": "--checkpoint-every",
        "extract_after": "--no-extract",
    }

    def __post_init__(self) -> None:
        from agreid_kit.models import method_spec

        method_spec(self.method)  # an unknown method names the valid ones
        if set(TRAIN_PRESETS.get(self.preset, {})) - given_fields(self) or self.preset not in TRAIN_PRESETS:
            apply_preset(self, method_recipe(self.method, self.preset))
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
        """The config of a run folder's config.json (``path``), read through ``agreid_kit.run.Run``."""
        from agreid_kit.run import Run

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no training config at {path} (is {path.parent} a run directory?)")
        cfg = Run(path.parent).config
        if not isinstance(cfg, cls):
            raise ValueError(f"{path} holds a {type(cfg).__name__}, not a {cls.__name__}")
        return cfg

    def settings(self) -> dict[str, Any]:
        """The fields that shape the run's numbers (JSON values), what resume and reuse compare."""
        return {k: v for k, v in json.loads(json.dumps(self.to_dict())).items() if k not in self.RUNTIME_ONLY}

    def located(self, run_dir: str | Path) -> "TrainConfig":
        """This config for the run folder where it lives now (a copied run resumes in its own folder)."""
        return dataclasses.replace(self, out=str(run_dir))

    def expected_outputs(self) -> list[str]:
        """Files (relative to the run folder) a finished run of this config holds besides its checkpoint."""
        if not self.extract_after:
            return []
        return [f"features/{split}.json" for split in self.extract_splits] + ["metrics.json"]


def method_recipe(method: str, preset: str) -> dict[str, Any]:
    """The training hyper-parameters of ``method`` at ``preset``: the shared ``TRAIN_PRESETS[preset]``
    with the method's own values for that preset (its paper's recipe) merged over them.

    Methods that are not engine methods (``sdreid-stage2``, trained by its own loop) get the shared preset;
    so does every method at the shared ``cpu`` preset (per-method values for it are refused).
    """
    from agreid_kit.models import method_train_presets

    shared = preset_values(TRAIN_PRESETS, preset, "TrainConfig")
    if preset == SHARED_TRAIN_PRESET:
        return shared
    return {**shared, **method_train_presets(method).get(preset, {})}


def make_config(method: str, out: str, preset: str = "cpu", **overrides: Any) -> TrainConfig:
    """A TrainConfig of ``method`` at ``preset`` with ``overrides`` (None values are ignored: the preset's stay)."""
    return TrainConfig(method=method, out=str(out), preset=preset,
                       **{k: v for k, v in overrides.items() if v is not None})
