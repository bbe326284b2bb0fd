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
# `agreid_kit.compare.compare_methods` trains (or reuses) one run per method with the same data, budget,
# seed and evaluator, then tabulates Rank-1/5/10, mAP, mINP, parameters, training time and inference speed.
# SD-ReID stage 2 is trained by its own trainer: pass its finished run in `runs`.

# %%
from agreid_kit.notebook import ParameterGuard

guard = ParameterGuard(globals())

# %% tags=["parameters"]
data = "synthag:data/synthag-small-s0"  # rendered by `make report` (or `agreid synth`)
out = "runs/compare"  # one run per method under OUT/<label> (reused when finished)
methods = ["vit", "vdt", "vif", "visa", "svpr", "sdreid", "sdreid-stage2"]
runs = {}  # label -> finished run to reuse, e.g. {"sdreid stage 2": "runs/synthag-small/seed0/sdreid-stage2"}
protocols = ["ALL", "A<->G", "A<->A", "G<->G"]
preset = "cpu"
epochs = 2
max_iters_per_epoch = 0  # 0: full epochs
seed = 0
device = "cpu"
throughput = True  # measure inference images/s
png = "auto"
guard.freeze(globals(), outputs=("out",), data_specs={"data": "render it with `make report` or `agreid synth --preset small --out data/synthag-small-s0`"},
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
table, fig = compare_methods(data=data, out=OUT, methods=methods, preset=preset, protocols=protocols, budget=budget,
                             runs=runs, seed=seed, throughput=throughput, device=device)
figures = save_figure(fig, OUT / "comparison", png=png)
fig.show()

# %%
pivot = table.pivot_table(index="method", columns="protocol", values=["rank1", "mAP", "mINP"], sort=False)
display(pivot.style.format("{:.2%}"))
atomic_write_text(OUT / "comparison.csv", table.to_csv(index=False))
atomic_write_json(OUT / "comparison.json", {"parameters": params, "rows": table.to_dict(orient="records"),
                                            "figures": [str(p) for p in figures]})
