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
# # Timestep trade-off (Figs. 4/5)
# Regenerates a stage-2 run's test features for each number of DDIM sampling steps tau, scores them and
# measures the generation time. The `TimestepTradeoff` widget then slides over tau and shows how one
# query's rank list changes. The run's saved features are not modified.

# %%
from agreid_kit.notebook import ParameterGuard

guard = ParameterGuard(globals())

# %% tags=["parameters"]
run_dir = "runs/synthag-small/seed0/sdreid-stage2"  # made by `make report` (agreid report)
taus = [1, 2, 5, 10, 20, 50]
protocols = ["ALL", "A<->G"]
modes = ["real+gen", "gen:all"]
guidance = 2.0
device = "cpu"
seed = 0
query_index = 0  # query shown in the widget
out_dir = "runs/notebooks/timestep_tradeoff"
png = "auto"
guard.freeze(globals(), inputs={"run_dir": "made by `make report` (agreid report), or the train_stage2 notebook"},
             outputs=("out_dir",),
             choices={"png": ("require", "auto", "skip")})

# %%
params = guard.validate(globals())

from pathlib import Path

from IPython.display import display

from agreid_kit import viz
from agreid_kit.diffusion.analyses import timestep_tradeoff
from agreid_kit.diffusion.sample import generate_features
from agreid_kit.engine.run import load_run
from agreid_kit.utils.io import atomic_write_json, atomic_write_text
from agreid_kit.widgets import TimestepTradeoff

OUT = Path(out_dir)
OUT.mkdir(parents=True, exist_ok=True)

# %%
df, _ = timestep_tradeoff(run_dir, taus=taus, protocols=protocols, modes=modes, guidance=guidance, seed=seed,
                          device=device)
atomic_write_text(OUT / "tradeoff.csv", df.to_csv(index=False))
display(df)
fig = viz.tradeoff_figure(df, title="Accuracy and generation cost vs tau")
figures = viz.save_figure(fig, OUT / "tradeoff", png=png)
fig.show()

# %%
split = load_run(run_dir).load_split(protocols[0])
first = df[(df["protocol"] == protocols[0]) & (df["mode"] == modes[0])]
widget = TimestepTradeoff(first,
                          lambda t: generate_features(run_dir, tau=t, guidance=guidance, seed=seed, device=device,
                                                             save=False, progress=False),
                          split, mode=modes[0], query_index=query_index)
display(widget)

# %%
atomic_write_json(OUT / "tradeoff.json", {"parameters": params, "rows": df.to_dict(orient="records"),
                                          "figures": [str(p) for p in figures]})
