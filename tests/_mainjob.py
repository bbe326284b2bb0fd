"""The tiny main job shared by tests/test_pipeline.py and tests/test_notebooks.py.

One SynthAG-tiny render, a ViT and an SD-ReID stage-1 run (1 epoch, 2 iterations), a stage-2 run
(2 epochs) with generated features, evaluation, a 2-tau trade-off and the executed report notebook.
Built once per test session (cached here, whichever test module asks first).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TINY_JOB = dict(preset="tiny", epochs=1, stage2_epochs=2, max_iters_per_epoch=2, taus=[1, 2],
                tradeoff_protocols=["ALL"], embed_method="pca", embed_max_points=120, n_rank_queries=1,
                png="skip", progress=False, num_workers=0)

_CACHE: dict[str, Any] = {}


def tiny_job(tmp_path_factory) -> tuple[Any, Path]:
    """(MainJobConfig, report.html) of the tiny main job, run once per session."""
    if "job" not in _CACHE:
        from agreid_kit.pipeline import MainJobConfig, run_main_job

        base = tmp_path_factory.mktemp("mainjob")
        cfg = MainJobConfig(data_root=str(base / "data" / "synthag-tiny-s0"), runs_root=str(base / "runs"),
                            out=str(base / "report"), **TINY_JOB)
        html = run_main_job(cfg)
        _CACHE["job"] = (cfg, html)
    return _CACHE["job"]
