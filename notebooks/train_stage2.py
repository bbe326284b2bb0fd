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
# # Train SD-ReID stage 2 and generate view-specific features
# Stage 2 learns to generate, from a stage-1 run's ID-condition tokens, the feature each identity would
# have in every view. Training reads the stage-1 run's cached features only (no images). At the end the
# test images get generated features `gen:<view>`, scored here against the real ones.

# %%
from agreid_kit.notebook import ParameterGuard

guard = ParameterGuard(globals())

# %% tags=["parameters"]
stage1_run = "runs/notebooks/sdreid"  # a finished sdreid stage-1 run
run_dir = "runs/notebooks/sdreid-stage2"
preset = "cpu"  # cpu | paper
unet = ""  # local Stable Diffusion 1.5 folder; empty: the small UNet trained from scratch
epochs = 3
tau = 5  # sampling steps at generation
guidance = 2.0  # classifier-free guidance scale w
protocols = ["ALL", "A<->G"]
modes = ["real", "gen:all", "real+gen"]
device = "cpu"
seed = 0
png = "auto"
guard.freeze(globals(),
             inputs={"stage1_run": "run the train_stage1 notebook first (or use runs/synthag-small/seed0/sdreid from "
                                   "`make report`)"},
             outputs=("run_dir",), choices={"png": ("require", "auto", "skip"), "preset": ("cpu", "paper")})

# %%
params = guard.validate(globals())

from pathlib import Path

from IPython.display import display

from agreid_kit import analysis, viz
from agreid_kit.diffusion.config import Stage2Config
from agreid_kit.diffusion.train import stage2_run_config, train_stage2
from agreid_kit.engine.evaluate import evaluate_run
from agreid_kit.run import Run
from agreid_kit.utils.io import atomic_write_json

cfg = Stage2Config(stage1=stage1_run, out=run_dir, preset=preset, epochs=epochs, tau=tau, guidance=guidance,
                   device=device, seed=seed, model={"unet_path": unet} if unet else {})
RUN = Path(run_dir)

# %%
# Reuses a finished run of these settings, resumes an interrupted one; refuses a folder holding another run.
if Run(RUN).is_finished(stage2_run_config(cfg)):
    print(f"reusing the finished stage-2 run {RUN}")
else:
    train_stage2(cfg)

# %% [markdown]
# ## Loss curve and real vs generated features

# %%
log = analysis.read_training_log(RUN)
fig = viz.training_curves_figure(log, title="SD-ReID stage 2: diffusion loss")
figures = viz.save_figure(fig, RUN / "figures" / "training_curves", png=png)
fig.show()
results = evaluate_run(RUN, list(protocols), list(modes))
table = analysis.metrics_table(results)
display(table)
fig = viz.metrics_table_figure(table, title="Stage 2: real, generated and combined features")
figures += viz.save_figure(fig, RUN / "figures" / "metrics", png=png)
fig.show()
atomic_write_json(RUN / "notebook_summary.json", {
    "parameters": params, "metrics": results, "epochs_logged": int(log["epoch"].max()),
    "final_loss": float(log["loss"].iloc[-1]), "figures": [str(p) for p in figures],
})
