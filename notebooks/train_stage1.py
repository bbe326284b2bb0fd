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
# # Train a stage-1 model (SD-ReID stage 1, the ViT baseline or another method)
# One engine run: `config.json`, `log.jsonl`, checkpoints, features and `metrics.json` in `run_dir`.
# A finished run with the same settings is reused; an interrupted one is resumed.

# %%
from agreid_kit.notebook import ParameterGuard

guard = ParameterGuard(globals())

# %% tags=["parameters"]
dataset = "synthag"
root = "data/synthag-tiny-s0"
protocol = "ALL"  # protocol whose train split is used
eval_protocols = ["ALL", "A<->G"]  # evaluated at the end
method = "sdreid"  # vit | sdreid | vdt | vif | visa | svpr
preset = "cpu"  # cpu: small conv-stem ViT from the kit init | paper: ViT-B/16 (needs pretrained)
pretrained = ""  # local timm ViT weights file (paper preset); empty: the preset's own (cpu: the kit init)
epochs = 2
max_iters_per_epoch = 0  # 0: full epochs
batch_p = 16  # identities per batch
batch_k = 4  # images per identity
device = "cpu"  # cpu | cuda | auto
seed = 0
num_workers = 2
run_dir = "runs/notebooks/sdreid"
png = "auto"
guard.freeze(globals(), outputs=("run_dir",), choices={"png": ("require", "auto", "skip"), "preset": ("cpu", "paper")})

# %%
params = guard.validate(globals())

from pathlib import Path

from IPython.display import display

from agreid_kit import analysis, viz
from agreid_kit.data import available_protocols
from agreid_kit.engine.config import make_config
from agreid_kit.engine.train import train
from agreid_kit.run import Run
from agreid_kit.utils.io import atomic_write_json

valid = available_protocols(dataset)
for p in [protocol, *eval_protocols]:
    if p not in valid:
        raise ValueError(f"protocol {p!r} is not a protocol of {dataset!r}; valid: {valid}")
cfg = make_config(
    method, run_dir, preset=preset, data=f"{dataset}:{root}", protocol=protocol,
    model={"pretrained": pretrained} if pretrained else {}, epochs=epochs,
    max_iters_per_epoch=max_iters_per_epoch or None, p=batch_p, k=batch_k, device=device, seed=seed,
    num_workers=num_workers, eval_protocols=list(eval_protocols),
)
RUN = Path(run_dir)
run = Run(RUN)

# %%
# Reuses a finished run of these settings, resumes an interrupted one; a run of other settings is refused
# (the error names them).
if run.is_finished(cfg):
    print(f"reusing the finished run {RUN}")
else:
    train(cfg, resume=run.has_checkpoint)

# %% [markdown]
# ## Training curves and test metrics

# %%
log = analysis.read_training_log(RUN)
fig = viz.training_curves_figure(log, title=f"{method} [{preset}] on {dataset}")
figures = viz.save_figure(fig, RUN / "figures" / "training_curves", png=png)
fig.show()
metrics = run.read_metrics()
table = analysis.metrics_table(metrics)
display(table)
fig = viz.metrics_table_figure(table, title=f"{method}: test metrics")
figures += viz.save_figure(fig, RUN / "figures" / "metrics", png=png)
fig.show()
atomic_write_json(RUN / "notebook_summary.json", {
    "parameters": params, "config": run.config.to_dict(), "metrics": metrics,
    "epochs_logged": int(log["epoch"].max()), "final_loss": float(log["loss_total"].iloc[-1]),
    "figures": [str(p) for p in figures],
})
