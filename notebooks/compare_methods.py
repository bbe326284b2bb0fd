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
# # All methods x protocols in one table
# `agreid_kit.compare.compare_methods` trains (or reuses) one run per method and seed with the same data,
# budget and evaluator, then tabulates Rank-1/5/10, mAP, mINP as mean ± std over the seeds, marks the methods
# within noise of each protocol's best, and adds parameters, training time and inference speed. A run in
# `out` is reused only when it was trained with exactly these settings. SD-ReID stage 2 is trained by its own
# trainer on the `sdreid` runs; finished runs can be passed in `runs` (one per seed, reused as they are).

# %%
from agreid_kit.notebook import ParameterGuard

guard = ParameterGuard(globals())

# %% tags=["parameters"]
data = "synthag:data/synthag-small-s0"  # rendered by `make report` (or `agreid synth`)
out = "runs/compare"  # one run per method and seed under OUT/<label>/seed<s> (reused when finished with these settings)
methods = []  # empty: every method of the kit's method table (agreid_kit.models.available_methods())
seeds = [0, 1, 2]  # training seeds: each method is trained once per seed
runs = {}  # label -> finished run(s) to reuse, e.g. {"sdreid stage 2": ["runs/synthag-small/seed0/sdreid-stage2"]}
protocols = ["ALL", "A<->G", "A<->A", "G<->G"]
preset = "cpu"
epochs = 2
max_iters_per_epoch = 0  # 0: full epochs
device = "cpu"
throughput = True  # measure inference images/s
png = "auto"
guard.freeze(globals(), outputs=("out",), data_specs={"data": "render it with `make report` or `agreid synth --preset "
                                                              "small --out data/synthag-small-s0`"},
             choices={"png": ("require", "auto", "skip"), "preset": ("cpu", "paper")})

# %%
params = guard.validate(globals())

from pathlib import Path

from IPython.display import display

from agreid_kit.compare import compare_methods
from agreid_kit.utils.io import atomic_write_json, atomic_write_text
from agreid_kit.viz import save_figure

OUT = Path(out)
budget = {"epochs": epochs}
if max_iters_per_epoch:
    budget["max_iters_per_epoch"] = max_iters_per_epoch

# %%
result = compare_methods(data=data, out=OUT, methods=methods or None, preset=preset, protocols=protocols,
                         budget=budget, runs=runs, seeds=seeds, throughput=throughput, device=device)
table, fig = result
figures = save_figure(fig, OUT / "comparison", png=png)
fig.show()

# %% [markdown]
# Each method against the best one of its protocol (mAP, in points): the verdict says whether the difference
# exceeds the spread over the seeds (`agreid_kit.seeds.within_noise`).

# %%
display(result.noise)

# %%
pivot = table.pivot_table(index="method", columns="protocol", values=["rank1", "mAP", "mINP"], sort=False)
display(pivot.style.format("{:.2%}"))
atomic_write_text(OUT / "comparison.csv", table.to_csv(index=False))
atomic_write_text(OUT / "noise.csv", result.noise.to_csv(index=False))
atomic_write_json(OUT / "comparison.json", {"parameters": params, "rows": table.to_dict(orient="records"),
                                            "noise": result.noise.to_dict(orient="records"),
                                            "figures": [str(p) for p in figures]})
