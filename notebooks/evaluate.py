# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Evaluate runs per protocol
# Scores the test features of one or more runs (stage 1, stage 2, any method) on each protocol under
# each feature mode with the kit's evaluator (Rank-1/5/10, mAP, mINP), and writes one table per protocol.

# %%
from agreid_kit.notebook import ParameterGuard

guard = ParameterGuard(globals())

# %% tags=["parameters"]
# made by `make report` (agreid report)
run_dirs = ["runs/synthag-small/seed0/sdreid", "runs/synthag-small/seed0/sdreid-stage2"]
protocols = ["ALL", "A<->G", "A<->A", "G<->G"]
modes = ["real", "gen:all", "real+gen"]  # modes a run lacks (no generated features) are skipped
out_dir = "runs/notebooks/evaluate"
png = "auto"
guard.freeze(globals(),
             inputs={"run_dirs": "made by `make report` (agreid report), or the train_stage1 / train_stage2 notebooks"},
             outputs=("out_dir",), choices={"png": ("require", "auto", "skip")})

# %%
params = guard.validate(globals())

from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from agreid_kit import analysis, viz
from agreid_kit.engine.evaluate import evaluate_run
from agreid_kit.engine.run import load_run
from agreid_kit.features import FeatureSet
from agreid_kit.utils.io import atomic_write_json

OUT = Path(out_dir)
OUT.mkdir(parents=True, exist_ok=True)
if not run_dirs:
    raise ValueError("run_dirs is empty: give at least one run directory")

# %%
results, frames = {}, []
for d in run_dirs:
    run = load_run(d)
    have = FeatureSet.load(run.features_path("test")).available_modes()
    run_modes = [m for m in modes if m in have]
    if not run_modes:
        raise ValueError(f"{d}: none of the modes {modes} is available; it has {have}")
    label = f"{run.method} ({Path(d).name})"
    results[label] = evaluate_run(d, list(protocols), run_modes)
    frames.append(analysis.metrics_table(results[label]).assign(run=label))
table = pd.concat(frames, ignore_index=True)
figures = []
for protocol, part in table.groupby("protocol", sort=False):
    display(Markdown(f"### {protocol}"))
    shown = part[["run", "mode", "rank1", "rank5", "rank10", "mAP", "mINP", "n_valid"]]
    display(shown.set_index(["run",
                             "mode"]).style.format({c: "{:.2%}" for c in ("rank1", "rank5", "rank10", "mAP", "mINP")}))
    fig = viz.metrics_table_figure(shown, title=f"{protocol}")
    figures += viz.save_figure(fig, OUT / f"table_{protocol.replace('<->', '-').replace('>', '')}", png=png)

# %%
import plotly.express as px

fig = px.bar(table.assign(label=table["run"] + " " + table["mode"]), x="protocol", y="mAP", color="label",
             barmode="group", title="mAP per protocol", template="plotly_white")
fig.update_yaxes(tickformat=".0%")
figures += viz.save_figure(fig, OUT / "map_per_protocol", png=png)
fig.show()
atomic_write_json(OUT / "evaluation.json", {"parameters": params, "results": results,
                                            "figures": [str(p) for p in figures]})
