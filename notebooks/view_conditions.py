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
# # View-condition similarity (Fig. 14)
# SD-ReID stage 1 keeps a memory bank of per-view centres of the view tokens. How similar is each test
# image's view token to the centre of its own view and of the other views, and how do instances of one
# view relate to each other? Explore with the `ViewConditionMap` widget; the cells write the figure and stats.

# %%
from agreid_kit.notebook import ParameterGuard

guard = ParameterGuard(globals())

# %% tags=["parameters"]
run_dir = "runs/synthag-small/seed0/sdreid"  # an sdreid stage-1 run (or its stage-2 run: same test features)
max_instances = 300  # instances in the instance-instance map
nbins = 40
seed = 0
space = "raw"  # raw | standardised (per dimension: the space stage 2 reads its view conditions in)
out_dir = "runs/notebooks/view_conditions"
png = "auto"
guard.freeze(globals(), inputs={"run_dir": "made by `make report` (agreid report), or the train_stage1 notebook"},
             outputs=("out_dir",),
             choices={"png": ("require", "auto", "skip"), "space": ("raw", "standardised")})

# %%
params = guard.validate(globals())

from pathlib import Path

from IPython.display import display

from agreid_kit import viz
from agreid_kit.diffusion.analyses import view_condition_similarity
from agreid_kit.features import FeatureSet
from agreid_kit.run import Run
from agreid_kit.utils.io import atomic_write_json
from agreid_kit.widgets import ViewConditionMap

OUT = Path(out_dir)
OUT.mkdir(parents=True, exist_ok=True)
fs = FeatureSet.load(Run(run_dir).features_path("test"))
data, _ = view_condition_similarity(fs, max_instances=max_instances, seed=seed, space=space)

# %%
display(ViewConditionMap(data, nbins=nbins))

# %%
stats = data["to_centres"].groupby(["view", "centre"])["cosine"].agg(["mean", "std", "count"]).reset_index()
display(stats)
fig = viz.view_similarity_figure(data, nbins=nbins, title=f"View-condition similarity ({space} tokens)")
figures = viz.save_figure(fig, OUT / "view_similarity", png=png)
fig.show()
own = stats[stats["view"] == stats["centre"]]["mean"].mean()
other = stats[stats["view"] != stats["centre"]]["mean"].mean()
print(f"mean cosine to the own-view centre {own:.3f}, to other views' centres {other:.3f}")
atomic_write_json(OUT / "view_conditions.json", {
    "parameters": params, "stats": stats.to_dict(orient="records"), "own_centre_mean": float(own),
    "other_centre_mean": float(other), "instances": int(len(data["instance_views"])),
    "figures": [str(p) for p in figures],
})
