"""Atomic checkpoints and RNG state capture for exact resume."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agreid_kit.utils.io import atomic_torch_save

CHECKPOINT_VERSION = 1


def capture_rng() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` (+ version) atomically: a crash mid-write leaves the previous file intact."""
    atomic_torch_save({"version": CHECKPOINT_VERSION, **state}, path)


def load_checkpoint(path: str | Path, method: str | None = None) -> dict[str, Any]:
    """Read a checkpoint; a missing/corrupt file or one from another method raises a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        # Our checkpoints hold numpy RNG state and configs as well as tensors: trusted local files.
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ValueError(f"checkpoint {path} is corrupt or not a torch file: {e}") from e
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"checkpoint {path} is not an agreid-kit training checkpoint (no 'model' entry)")
    if method is not None and state.get("method") != method:
        raise ValueError(f"checkpoint {path} was trained with method {state.get('method')!r}, not {method!r}")
    return state


def load_model_state(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str | Path) -> None:
    """Strictly load weights; a mismatch names the checkpoint and the first differing keys/shapes."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
              for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(
            f"checkpoint {source} does not match this model ({type(model).__name__}): "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}, shape mismatches {shapes[:5]}"
        )
    model.load_state_dict(state_dict)


def last_epoch(run_dir: str | Path) -> int:
    """The epoch of RUN/checkpoints/last.pt (0 when there is none)."""
    from agreid_kit.run import Run

    path = Run(run_dir).last_checkpoint_path
    return int(load_checkpoint(path)["epoch"]) if path.is_file() else 0
