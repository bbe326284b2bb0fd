"""Convergence curves: how far a training budget stops from what the recipe can reach.

``convergence_study`` trains each method once for many epochs with the cpu recipe and, after every
``eval_every`` epochs, scores the **test** split on every protocol, logging test mAP against epoch and
CPU minutes. This is a measurement artefact only: nothing is chosen on it (recipes and budgets are
chosen on the validation ids carved from train, which the log also records); its purpose is to place
the main job's budget on the curve of the same recipe. Results go to ``OUT/convergence.csv`` (one row per
method, epoch and protocol) and ``OUT/convergence.json`` (settings), next to the runs in ``OUT/runs/``.
An interrupted study resumes (each run resumes from its checkpoint; finished runs are reused).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

DEFAULT_PROTOCOLS = ("ALL", "A<->G", "A<->A", "G<->G")


def _test_scorer(data: str, protocols: Sequence[str], image_cache: str, batch_size: int = 256):
    """A callable (epoch, model) -> {test_<protocol>_mAP, test_<protocol>_rank1, cpu_seconds}."""
    from agreid_kit.data import load_dataset, parse_data_spec
    from agreid_kit.engine.data import all_test_records
    from agreid_kit.engine.evaluate import evaluate_featureset_split, metrics_dict
    from agreid_kit.engine.extract import embed_records
    from agreid_kit.engine.train import open_image_cache
    from agreid_kit.features import FeatureSet

    name, root = parse_data_spec(data)
    splits = {p: load_dataset(name, root, p) for p in protocols}
    records = all_test_records(data, first=splits[protocols[0]])
    state: dict[str, Any] = {"cache": None, "cpu0": time.process_time()}

    def score(epoch: int, model) -> dict[str, float]:
        if state["cache"] is None:
            state["cache"] = open_image_cache(records, model.input_size, image_cache, 0, verbose=False)
        device = next(model.parameters()).device
        out = embed_records(model, records, batch_size, 0, device, keys=("features",), desc="test",
                            cache=state["cache"],
                            progress=False)
        fs = FeatureSet(out["features"], records, "test", "convergence")
        row: dict[str, float] = {"cpu_seconds": time.process_time() - state["cpu0"]}
        for p, split in splits.items():
            m = metrics_dict(evaluate_featureset_split(fs, split))
            row[f"test_{p}_mAP"] = m["mAP"]
            row[f"test_{p}_rank1"] = m["rank1"]
        return row

    return score


def convergence_study(
    out: str | Path,
    methods: Sequence[str] = ("vit", "sdreid"),
    data: str = "synthag:data/synthag-small-s0",
    epochs: int = 30,
    eval_every: int = 2,
    seed: int = 0,
    threads: int | None = 2,
    protocols: Sequence[str] = DEFAULT_PROTOCOLS,
    model: dict[str, Any] | None = None,
    label: str | None = None,
):
    """Train ``methods`` for ``epochs`` (cpu recipe, ``model`` overrides) scoring the test set every
    ``eval_every`` epochs; returns the curve DataFrame (also written to ``OUT/convergence.csv``)."""
    import pandas as pd

    from agreid_kit.engine.config import make_config
    from agreid_kit.engine.train import train
    from agreid_kit.run import Run
    from agreid_kit.utils.io import atomic_write_json, atomic_write_text

    if epochs < 1 or eval_every < 1:
        raise ValueError(f"epochs ({epochs}) and eval_every ({eval_every}) must be >= 1")
    out = Path(out)
    label = label or ("kit init" if not model or "pretrained" not in model else f"pretrained={model['pretrained']}")
    frames = []
    for method in methods:
        run_dir = out / "runs" / method
        cfg = make_config(method, str(run_dir), preset="cpu", data=data, protocol="ALL", epochs=epochs, seed=seed,
                          threads=threads, val_every=eval_every, model=dict(model or {}), extract_after=False)
        scorer = _test_scorer(data, list(protocols), cfg.image_cache)

        def every(epoch: int, core, scorer=scorer) -> dict:
            return scorer(epoch, core) if epoch % eval_every == 0 or epoch == epochs else {}

        run = Run(run_dir)
        if not run.is_finished(cfg):
            # an interrupted study continues; a run of other settings is refused (naming them) by the resume check
            train(cfg, resume=run.has_checkpoint, on_epoch_end=every)
        rows = run.read_log()
        elapsed = 0.0
        for r in rows:
            elapsed += float(r.get("train_seconds", 0.0))
            for p in protocols:
                if f"test_{p}_mAP" in r:
                    frames.append({"method": method, "label": label, "epoch": r["epoch"], "protocol": p,
                                   "mAP": r[f"test_{p}_mAP"], "rank1": r[f"test_{p}_rank1"],
                                   "train_minutes": elapsed / 60, "cpu_minutes": r["cpu_seconds"] / 60,
                                   "val_mAP": r.get("val_mAP"), "loss_ce": r.get("loss_ce")})
    df = pd.DataFrame(frames)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "convergence.csv", df.to_csv(index=False))
    atomic_write_json(out / "convergence.json", {"methods": list(methods), "data": data, "epochs": epochs,
                                                 "eval_every": eval_every, "seed": seed, "threads": threads,
                                                 "protocols": list(protocols), "model": model or {}, "label": label})
    return df


def convergence_figure(df, main_job: dict[str, Any] | None = None, protocol: str = "ALL", x: str = "epoch"):
    """Test mAP against ``x`` (epoch or train_minutes) per method; ``main_job`` = {method: (x, mAP %)}
    marks where the main job's budget stops on the curve."""
    import plotly.graph_objects as go

    part = df[df["protocol"] == protocol]
    if part.empty:
        raise ValueError(f"convergence_figure: no rows for protocol {protocol!r}")
    fig = go.Figure()
    for (method, label), rows in part.groupby(["method", "label"], sort=False):
        rows = rows.sort_values(x)
        fig.add_trace(go.Scatter(x=rows[x], y=100 * rows["mAP"], mode="lines+markers", name=f"{method} ({label})"))
    for method, (xv, yv) in (main_job or {}).items():
        fig.add_trace(go.Scatter(x=[xv], y=[yv], mode="markers", marker=dict(symbol="star", size=16),
                                 name=f"main job: {method}"))
    fig.update_layout(template="plotly_white", height=420,
                      title=f"Test mAP on {protocol} against {x.replace('_', ' ')}",
                      xaxis_title=x.replace("_", " "), yaxis_title="test mAP (%)")
    return fig
