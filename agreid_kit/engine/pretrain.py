"""``agreid pretrain``: make (or reproduce) a kit-trained initialisation (see :mod:`agreid_kit.pretrained`).

Steps: render SynthAG-pretrain (preset ``pretrain``, seed 1: independent identity draws, never the
identities of SynthAG-small seed 0), train the plain ``vit`` method on it with the cpu preset's
backbone from random weights (its own validation ids carved from its train split choose nothing
here but are logged), then export the backbone (timm ViT state dict, no heads) as
``<out_dir>/<name>.safetensors`` plus ``<name>.json``: architecture, recipe, data hash, metrics on
SynthAG-pretrain's test identities, the command, versions and the file's SHA-256. Interrupted
pretraining resumes where it stopped (the run folder holds checkpoints like any training run).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agreid_kit.pretrained import DEFAULT_KIT_INIT, WEIGHTS_DIR, architecture_of

PRETRAIN_SYNTH_PRESET = "pretrain"
PRETRAIN_DATA_SEED = 1
# SynthAG-small (the default benchmark) is rendered with seed 0: its identities must not be pretrained on.
RESERVED_DATA_SEEDS = (0,)

# The pretraining recipe (the cpu preset's optimiser family, longer): chosen on SynthAG-small's validation
# ids by short from-scratch runs (README, "A recipe that converges"), never on a test split.
PRETRAIN_RECIPE: dict[str, Any] = dict(
    epochs=16, p=16, k=4, optimizer="adamw", lr=1e-3, weight_decay=0.05, warmup_iters=500, warmup_factor=0.01,
    min_lr=1e-5, grad_clip=5.0, val_fraction=0.02, val_every=5, ckpt_every=1, keep_epoch_checkpoints=0,
)
PRETRAIN_MODEL: dict[str, Any] = dict(pretrained=None, label_smoothing=0.1)


@dataclass
class PretrainConfig:
    """Where and how a kit init is made. Recipe fields left None take ``PRETRAIN_RECIPE``'s values."""

    name: str = DEFAULT_KIT_INIT
    data_root: str = f"data/synthag-pretrain-s{PRETRAIN_DATA_SEED}"
    data_seed: int = PRETRAIN_DATA_SEED
    synth_preset: str = PRETRAIN_SYNTH_PRESET  # the SynthAG preset rendered for pretraining (tests: tiny)
    run_dir: str | None = None  # default runs/pretrain/<name>
    out_dir: str = str(WEIGHTS_DIR)
    seed: int = 0
    threads: int | None = None
    num_workers: int = 2
    recipe: dict[str, Any] = field(default_factory=dict)  # overrides of PRETRAIN_RECIPE (epochs=..., lr=...)
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the backbone (the cpu preset's otherwise)

    def __post_init__(self) -> None:
        if self.data_seed in RESERVED_DATA_SEEDS:
            raise ValueError(
                f"pretrain data_seed={self.data_seed}: SynthAG seed {self.data_seed} is the benchmark's own data "
                "(SynthAG-small), whose identities must never be pretrained on; use another seed"
            )
        unknown = set(self.recipe) - set(PRETRAIN_RECIPE)
        if unknown:
            raise ValueError(f"pretrain recipe: unknown field(s) {sorted(unknown)}; known: {sorted(PRETRAIN_RECIPE)}")

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir or f"runs/pretrain/{self.name}")

    def train_config(self):
        from agreid_kit.engine.config import make_config

        recipe = {**PRETRAIN_RECIPE, **self.recipe}
        return make_config(
            "vit", str(self.run_path), preset="cpu", data=f"synthag:{self.data_root}", protocol="ALL",
            model={**PRETRAIN_MODEL, **self.model}, seed=self.seed, threads=self.threads, num_workers=self.num_workers,
            eval_protocols=["ALL", "A<->G", "A<->A", "G<->G"], **recipe,
        )


def pretrain(cfg: PretrainConfig, progress: bool = True) -> Path:
    """Render, train (or resume), export; returns the weights file."""
    from agreid_kit.engine.train import train
    from agreid_kit.run import Run
    from agreid_kit.synth import render_dataset

    t0 = time.perf_counter()
    root = render_dataset(cfg.synth_preset, cfg.data_root, seed=cfg.data_seed, progress=progress)
    tcfg = cfg.train_config()
    run = Run(cfg.run_path)
    if not run.is_finished(tcfg):
        # an interrupted pretraining continues; one of other settings is refused (naming them) by the resume check
        train(tcfg, resume=run.has_checkpoint)
    return export_kit_init(cfg, root, time.perf_counter() - t0)


def export_kit_init(cfg: PretrainConfig, data_root: Path, seconds: float | None = None) -> Path:
    """Write the backbone of the finished pretraining run and its card; returns the weights file."""
    from safetensors.torch import save_file

    from agreid_kit.pipeline import versions
    from agreid_kit.run import load_run
    from agreid_kit.utils.io import atomic_path, atomic_write_json, sha256_file

    run = load_run(cfg.run_path)
    model = run.model
    state = {k: v.detach().contiguous().float() for k, v in model.backbone.state_dict().items()}
    out_dir = Path(cfg.out_dir)
    weights = out_dir / f"{cfg.name}.safetensors"
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp), metadata={"name": cfg.name, "format": "timm-vit-backbone"})
    manifest = json.loads((Path(data_root) / "manifest.json").read_text())
    log = run.read_log()
    card = {
        "name": cfg.name,
        "format": "timm ViT backbone state dict (no heads), float32 safetensors",
        "architecture": architecture_of(model.config),
        "parameters": int(sum(v.numel() for v in state.values())),
        "data": {
            "name": f"SynthAG-{cfg.synth_preset}", "preset": cfg.synth_preset, "seed": cfg.data_seed,
            "content_hash": manifest.get("content_hash"), "generator": manifest.get("parameters", {}).get("generator"),
            "n_ids": manifest.get("parameters", {}).get("config", {}).get("n_ids"),
            "n_train_images": run.meta.get("num_train_images"), "train_ids": run.meta.get("num_classes"),
            "disjoint_from": "SynthAG-small seed 0 (identity draws are seeded by (dataset seed, pid))",
        },
        "recipe": {"train_config": run.config.to_dict(), "model_config": dataclasses.asdict(model.config)},
        "command": f"agreid pretrain --name {cfg.name}" + (f" --threads {cfg.threads}" if cfg.threads else ""),
        "curve": [{k: r.get(k) for k in ("epoch", "loss_ce", "loss_triplet", "val_mAP", "val_rank1",
                                         "train_seconds") if k in r}
                  for r in log],
        "metrics_pretrain_test": run.read_metrics(),
        "seconds": round(seconds, 1) if seconds is not None else None,
        "versions": versions(),
        "sha256": sha256_file(weights),
    }
    atomic_write_json(out_dir / f"{cfg.name}.json", card)
    print(f"kit init {cfg.name!r} written to {weights} ({weights.stat().st_size / 1e6:.1f} MB, sha256 "
          f"{card['sha256'][:12]})")
    return weights
