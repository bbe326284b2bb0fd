"""Rebuilding an engine model from its checkpoint; ``Run`` / ``load_run`` live in :mod:`agreid_kit.run`
(re-exported here, where they used to be)."""

from __future__ import annotations

from pathlib import Path

from agreid_kit.run import Run, load_run

__all__ = ["Run", "load_model", "load_run", "load_run_model"]


def load_model(checkpoint: str | Path, device: str = "cpu"):
    """Rebuild the model a checkpoint was trained as and load its weights (eval mode)."""
    from agreid_kit.engine.checkpoint import load_checkpoint, load_model_state
    from agreid_kit.models import model_from_config

    state = load_checkpoint(checkpoint)
    config = dict(state["model_config"])
    # The weights come from the checkpoint: never re-read the ImageNet file (it may be gone).
    config["pretrained"] = None
    model = model_from_config(state["method"], config)
    load_model_state(model, state["model"], checkpoint)
    return model.to(device).eval()


def load_run_model(run: Run):
    """The model of an engine run (the method table's loader for ``kind="engine"``)."""
    return load_model(run.checkpoint_path, run.device)
