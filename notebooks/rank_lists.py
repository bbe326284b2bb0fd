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
# # Rank lists: best and worst queries (Figs. 15/16)
# Browse any query's top-k gallery with the `RankListBrowser` widget (protocol, feature mode, best/worst
# ordering). The cells below write the rank lists of the best and worst queries and the AP distribution.

# %%
from agreid_kit.notebook import ParameterGuard

guard = ParameterGuard(globals())

# %% tags=["parameters"]
run_dir = "runs/synthag-small/seed0/sdreid-stage2"  # made by `make report` (agreid report)
protocols = ["A<->G", "ALL"]
mode = "real+gen"  # real | gen:<view> | gen:all | real+gen (falls back to real without generated features)
k = 10
n_queries = 3  # best and worst queries written per protocol
out_dir = "runs/notebooks/rank_lists"
png = "auto"
guard.freeze(globals(), inputs={"run_dir": "made by `make report` (agreid report), or the train_stage2 notebook"},
             outputs=("out_dir",),
             choices={"png": ("require", "auto", "skip")})

# %%
params = guard.validate(globals())

from pathlib import Path

import plotly.express as px
from IPython.display import display

from agreid_kit import analysis, viz
from agreid_kit.engine.run import load_run
from agreid_kit.features import FeatureSet
from agreid_kit.run import Run
from agreid_kit.utils.io import atomic_write_json
from agreid_kit.widgets import RankListBrowser

OUT = Path(out_dir)
OUT.mkdir(parents=True, exist_ok=True)
fs = FeatureSet.load(Run(run_dir).features_path("test"))
if mode not in fs.available_modes():
    raise ValueError(f"mode {mode!r} is not available for {run_dir}; available: {fs.available_modes()}")
run = load_run(run_dir)
splits = {p: run.load_split(p) for p in protocols}

# %%
display(RankListBrowser(fs, splits, mode=mode, k=k))

# %%
figures, summary = [], {}
for protocol, split in splits.items():
    scores = analysis.per_query_scores(fs, split, mode=mode)
    valid = scores[scores["valid"]]
    fig = px.histogram(valid, x="ap", color="view_name", nbins=20, template="plotly_white",
                       title=f"Per-query AP [{protocol}, {mode}]")
    tag = protocol.replace("<->", "-")
    figures += viz.save_figure(fig, OUT / f"ap_histogram_{tag}", png=png)
    fig.show()
    entry = {"n_query": int(len(scores)), "n_valid": int(len(valid)), "mean_ap": float(valid["ap"].mean()),
             "rank1": float((valid["first_match_rank"] == 1).mean())}
    for order in ("best", "worst"):
        picked = analysis.sort_queries(scores, order).head(n_queries)
        entry[order] = []
        for i, qi in enumerate(picked["query_index"]):
            rl = analysis.rank_list(fs, split, int(qi), k=k, mode=mode)
            entry[order].append({"query_index": int(qi), "pid": rl.query.pid, "ap": rl.ap,
                                 "first_match_rank": rl.first_match_rank, "shown": len(rl.items)})
            fig = viz.rank_list_figure(rl, title=f"{order} #{i + 1} [{protocol}]: query {qi}, AP {rl.ap:.3f}")
            figures += viz.save_figure(fig, OUT / f"ranklist_{tag}_{order}_{i + 1}", png=png)
            fig.show()
    summary[protocol] = entry
atomic_write_json(OUT / "rank_lists.json", {"parameters": params, "protocols": summary,
                                            "figures": [str(p) for p in figures]})
