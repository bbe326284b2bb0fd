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
# # Real and generated features in 2-D (Fig. 6)
# Explore a run's test features with the `EmbeddingExplorer` widget (method, colouring, generated points,
# click a point for its image, lasso a group for a gallery). The cells below also write the static
# figures and how close each generated view lands to the real features of the same identity.

# %%
from agreid_kit.notebook import ParameterGuard

guard = ParameterGuard(globals())

# %% tags=["parameters"]
run_dir = "runs/synthag-small/seed0/sdreid-stage2"  # a stage-2 run (generated features) or any stage-1 run
method = "umap"  # umap | tsne | pca
max_points = 1000  # real images embedded (seeded subsample)
color_by = "view_name"  # view_name | kind | pid | camid | altitude | pitch | distance
seed = 0
out_dir = "runs/notebooks/feature_views"
png = "auto"
guard.freeze(globals(), inputs={"run_dir": "made by `make report` (agreid report), or the train_stage2 notebook"},
             outputs=("out_dir",),
             choices={"png": ("require", "auto", "skip"), "method": ("umap", "tsne", "pca")})

# %%
params = guard.validate(globals())

from pathlib import Path

import numpy as np
import torch
from IPython.display import display

from agreid_kit import VIEW_NAMES, analysis, viz
from agreid_kit.features import FeatureSet
from agreid_kit.run import Run
from agreid_kit.utils.io import atomic_write_json
from agreid_kit.widgets import EmbeddingExplorer

OUT = Path(out_dir)
OUT.mkdir(parents=True, exist_ok=True)
fs = FeatureSet.load(Run(run_dir).features_path("test"))
has_gen = bool(fs.generated_views())

# %%
explorer = EmbeddingExplorer(fs, method=method, color_by=color_by, include_generated=has_gen, max_points=max_points,
                             seed=seed)
display(explorer)

# %%
# The widget's current frame is the same analysis.embedding_frame (computed once).
df = explorer.df if explorer.df is not None else analysis.embedding_frame(
    fs, method=method, include_generated=has_gen, max_points=max_points, seed=seed)
figures = []
for colour in dict.fromkeys([color_by, "kind", "view_name"]):
    fig = viz.embedding_figure(df, color_by=colour)
    figures += viz.save_figure(fig, OUT / f"embedding_{colour}", png=png)
    fig.show()

# %% [markdown]
# ## How close are generated features to the real ones?
# Cosine similarity of each generated view to the real (retrieval) feature of the same image, split by the
# image's own view (a generated *aerial* feature of an aerial image should sit close to its real feature).

# %%
rows = []
if has_gen:
    real = torch.nn.functional.normalize(fs.get("features").float(), dim=1)
    for v in fs.generated_views():
        g = torch.nn.functional.normalize(fs.get(f"gen:{v}").float(), dim=1)
        cos = (real * g).sum(1)
        for own in sorted(set(fs.views.tolist())):
            sel = fs.views == own
            rows.append({"generated_view": VIEW_NAMES[v], "image_view": VIEW_NAMES[own],
                         "mean_cosine": float(cos[sel].mean()), "n": int(sel.sum())})
    import pandas as pd

    display(pd.DataFrame(rows))
atomic_write_json(OUT / "feature_views.json", {
    "parameters": params, "points": int(len(df)), "kinds": sorted(df["kind"].unique().tolist()),
    "generated_views": [VIEW_NAMES[v] for v in fs.generated_views()], "real_vs_generated_cosine": rows,
    "xy_finite": bool(np.isfinite(df[["x", "y"]].to_numpy()).all()), "figures": [str(p) for p in figures],
})
