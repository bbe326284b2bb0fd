"""``load_run(RUN) -> Run``: a finished (or in-progress) run directory as one object."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agreid_kit.data.records import DatasetSplit
from agreid_kit.engine.config import TrainConfig


@dataclass
class Run:
    """A run directory: its config, metadata and (lazily) its model in eval mode.

    ``config`` is a TrainConfig for engine runs and the raw dict for other runs (stage 2).
    """

    dir: Path
    method: str
    config: Any
    meta: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    checkpoint: str = "last.pt"
    _model: Any = field(default=None, repr=False)

    @property
    def data(self) -> str:
        return self.config.data if isinstance(self.config, TrainConfig) else self.config.get("data", "")

    @property
    def protocol(self) -> str:
        return self.config.protocol if isinstance(self.config, TrainConfig) else self.config.get("protocol", "ALL")

    @property
    def checkpoint_path(self) -> Path:
        return self.dir / "checkpoints" / self.checkpoint

    @property
    def model(self):
        if self._model is None:
            self._model = load_model(self.checkpoint_path, self.device)
        return self._model

    def load_split(self, protocol: str | None = None) -> DatasetSplit:
        from agreid_kit.engine.data import load_split

        return load_split(self.data, protocol or self.protocol)

    def features_path(self, split: str) -> Path:
        return self.dir / "features" / split


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


def load_run(run_dir: str | Path, device: str = "cpu", checkpoint: str = "last.pt") -> Run:
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory: {cfg_path.name} is missing")
    raw = json.loads(cfg_path.read_text())
    method = raw.get("method", "")
    config: Any = raw
    try:
        config = TrainConfig.from_dict(raw)
    except (TypeError, ValueError):
        pass  # a run of another trainer (e.g. sdreid-stage2) keeps its own config layout
    meta_path = run_dir / "run_meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return Run(dir=run_dir, method=method, config=config, meta=meta, device=device, checkpoint=checkpoint)
