"""The training engine shared by every method.

- ``TrainConfig`` / ``make_config`` (config.py): a run's options, with ``paper`` and ``cpu`` presets;
- ``agreid_kit.engine.train.train(cfg, split=None, resume=False)``: the loop (accelerate, AMP, logs,
  checkpoints). Import it from the submodule: ``agreid_kit.engine.train`` is the module's name;
- ``load_run(RUN) -> Run`` (``agreid_kit.run``), ``extract_features(run, split)`` (extract.py),
  ``evaluate_run(RUN, protocols, modes)`` (evaluate.py).

Submodules import torch; this package only re-exports lazily so ``import agreid_kit.engine`` is cheap.
"""

from __future__ import annotations

from agreid_kit.utils.lazy import lazy_getattr

_EXPORTS = {
    "TrainConfig": "agreid_kit.engine.config",
    "make_config": "agreid_kit.engine.config",
    "TRAIN_PRESETS": "agreid_kit.engine.config",
    "Run": "agreid_kit.run",
    "load_run": "agreid_kit.run",
    "load_model": "agreid_kit.engine.run",
    "extract_features": "agreid_kit.engine.extract",
    "evaluate_run": "agreid_kit.engine.evaluate",
    "format_table": "agreid_kit.engine.evaluate",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr("agreid_kit.engine", _EXPORTS)
