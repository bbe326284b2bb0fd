"""Loading what stage 2 reads and writes: a stage-1 run's cached features and a trained stage-2 run.

Its own module so that training (``diffusion.train``) and sampling (``diffusion.sample``) both use it
without importing each other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from agreid_kit.diffusion.config import Stage2ModelConfig
from agreid_kit.features import FeatureSet, FeatureSetError

METHOD = "sdreid-stage2"
STAGE1_TRAIN_EXTRAS = ("prebn", "id_cond", "view_token")


@dataclass
class Stage1Features:
    """What stage 2 reads from a stage-1 run."""

    run: Path
    train: FeatureSet
    test_stem: Path
    config: dict[str, Any]
    dataset: str
    dim: int
    num_id_layers: int
    num_views: int
    view_centres: torch.Tensor


def resolve_device(device: str = "auto") -> torch.device:
    """``auto``: cuda when present. Asking for cuda without one says so once and falls back to CPU."""
    if device in ("auto", "", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print(f"agreid: no GPU available (asked for {device!r}); continuing on CPU")
        return torch.device("cpu")
    return dev


def load_stage1(stage1: str | Path, need_train: bool = True) -> Stage1Features:
    """Validate a stage-1 sdreid run and read its cached features."""
    run = Path(stage1).expanduser()
    if not run.is_dir():
        raise FileNotFoundError(f"stage-1 run {run} does not exist (expected a run dir from `agreid train --method "
                                "sdreid`)")
    from agreid_kit.run import Run

    s1_run = Run(run)
    config = s1_run.raw_config()  # what stage 2 records of it: its data spec and protocol
    stems = {"train": s1_run.features_path("train"), "test": s1_run.features_path("test")}
    for split, stem in stems.items():
        if split == "train" and not need_train:
            continue
        if not stem.with_suffix(".json").is_file():
            raise FileNotFoundError(
                f"stage-1 run {run}: {stem.with_suffix('.json')} is missing; stage 2 needs the cached {split} "
                f"FeatureSet of a finished sdreid run (re-run `agreid extract {run} --split {split}`)"
            )
    test_head = json.loads(stems["test"].with_suffix(".json").read_text())
    test_meta = test_head.get("meta", {})
    method = test_meta.get("method", config.get("method"))
    if method not in (None, "sdreid"):
        raise ValueError(f"stage-1 run {run} was trained with method {method!r}; stage 2 needs an sdreid stage-1 run")
    for name in ("id_cond", "view_token", "prebn", "global/view_centres"):
        if name not in test_head.get("tensors", {}):
            raise FeatureSetError(f"stage-1 FeatureSet {stems['test']}.json has no tensor {name!r} (is it an sdreid "
                                  "run?)")
    dim = int(test_head["tensors"]["prebn"][1])
    num_id_layers = int(test_head["tensors"]["id_cond"][1])
    dataset = str(test_meta.get("dataset", ""))
    train = None
    if need_train:
        train = FeatureSet.load(stems["train"])
        missing = [n for base in STAGE1_TRAIN_EXTRAS for n in (base, base + "_flip") if n not in train.extras]
        if missing:
            raise FeatureSetError(
                f"stage-1 train FeatureSet {stems['train']}.json lacks {missing}; stage 2 needs "
                "prebn/id_cond/view_token "
                "and their _flip variants (extract the train split with flip on)"
            )
        if train.extras["prebn"].shape[1] != dim or train.extras["id_cond"].shape[1] != num_id_layers:
            raise FeatureSetError(
                f"stage-1 run {run}: train features are {train.extras['prebn'].shape[1]}-d with "
                f"{train.extras['id_cond'].shape[1]} ID tokens but test features are {dim}-d with {num_id_layers}"
            )
        if train.meta.get("dataset", dataset) != dataset:
            raise FeatureSetError(
                f"stage-1 run {run}: train features are from dataset {train.meta.get('dataset')!r}, test from "
                f"{dataset!r}"
            )
        centres = train.globals.get("view_centres")
    else:
        centres = FeatureSet.load(stems["test"]).globals.get("view_centres")
    if centres is None or centres.ndim != 2 or centres.shape[1] != dim:
        raise FeatureSetError(f"stage-1 run {run}: global view_centres must be (V, {dim}), got "
                              f"{None if centres is None else tuple(centres.shape)}")
    return Stage1Features(run, train, stems["test"], config, dataset, dim, num_id_layers, int(centres.shape[0]),
                          centres.float())


def load_stage2(run_dir: str | Path, device: str = "cpu", checkpoint: str = "last.pt"):
    """(model in eval mode, run config dict) of a stage-2 run; checks it still matches its stage-1 run."""
    from agreid_kit.diffusion.model import SDReIDStage2
    from agreid_kit.engine.checkpoint import load_checkpoint, load_model_state
    from agreid_kit.run import Run

    run = Run(run_dir, checkpoint=checkpoint)
    if not run.exists:
        raise FileNotFoundError(f"{run.dir} is not a stage-2 run: {run.config_path} is missing")
    if run.method != METHOD:
        raise ValueError(f"{run.config_path}: method is {run.method!r}, expected {METHOD!r} (a stage-2 run)")
    run_cfg = run.config.to_dict()
    state = load_checkpoint(run.checkpoint_path, method=METHOD)
    mcfg = Stage2ModelConfig.from_dict(state["model_config"])
    # Every weight (the frozen SD ones included) is in the checkpoint, and so is the UNet's config: the
    # SD-1.5 folder the run started from may have been moved or deleted since.
    unet = None
    if state.get("unet_config"):
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel.from_config(dict(state["unet_config"]))
    elif mcfg.unet_path and not Path(mcfg.unet_path).is_dir():
        raise FileNotFoundError(
            f"stage-2 run {run.dir} was trained on the SD-1.5 UNet at {mcfg.unet_path}, which no longer exists, and "
            "its "
            "checkpoint predates stored UNet configs: put the folder back or train the run again"
        )
    model = SDReIDStage2(mcfg, load_unet_weights=False, unet=unet)
    load_model_state(model, state["model"], run.checkpoint_path)
    return model.to(resolve_device(device)).eval(), run_cfg


def load_run_model(run):
    """The model of a stage-2 ``Run`` (the method table's loader for ``kind="stage2"``)."""
    return load_stage2(run.dir, run.device, run.checkpoint)[0]
