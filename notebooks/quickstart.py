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
# # Quickstart: data, cameras and identities
# Render (or reuse) SynthAG, or point at an official dataset folder; load every protocol; look at the
# cameras, one identity across cameras, and the difficulty card (a training-free colour baseline).

# %%
from agreid_kit.notebook import ParameterGuard

guard = ParameterGuard(globals())

# %% tags=["parameters"]
dataset = "synthag"  # synthag | cargo | agreid_v1 | agreid_v2 | lagper | g2aps | cp2108
root = "data/synthag-tiny-s0"  # dataset folder (SynthAG is rendered there when missing)
synth_preset = "tiny"  # SynthAG preset when rendering: tiny | small | full
protocols = []  # empty: every protocol of the dataset
seed = 0
out_dir = "runs/notebooks/quickstart"  # summary.json and figures
png = "auto"  # PNG copies of figures: require | auto | skip
guard.freeze(globals(), outputs=("out_dir", "root"), choices={"png": ("require", "auto", "skip")})

# %%
params = guard.validate(globals())

from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from agreid_kit import VIEW_NAMES
from agreid_kit.data import available_protocols, load_dataset, protocol_descriptions
from agreid_kit.utils.io import atomic_write_json
from agreid_kit.viz import save_figure

OUT = Path(out_dir)
OUT.mkdir(parents=True, exist_ok=True)
if dataset == "synthag":
    from agreid_kit.synth import ensure_synthag

    root = str(ensure_synthag(synth_preset, root, seed=seed))
valid = available_protocols(dataset)
bad = [p for p in protocols if p not in valid]
if bad:
    raise ValueError(f"protocols {bad} are not protocols of {dataset!r}; valid: {valid}")
chosen = protocols or valid
figures = []

# %% [markdown]
# ## Protocols and split sizes

# %%
rows, splits = [], {}
for p in chosen:
    s = load_dataset(dataset, root, p)
    splits[p] = s
    row = {"protocol": p, "description": protocol_descriptions(dataset)[p]}
    for part in ("train", "query", "gallery"):
        recs = getattr(s, part)
        row[f"{part} images"] = len(recs)
        row[f"{part} ids"] = len({r.pid for r in recs})
        row[f"{part} cameras"] = len({r.camid for r in recs})
        for v in sorted({r.view for r in recs}):
            row[f"{part} {VIEW_NAMES[v]}"] = sum(r.view == v for r in recs)
    rows.append(row)
table = pd.DataFrame(rows).set_index("protocol")
display(table)

# %% [markdown]
# ## Cameras and identities

# %%
import plotly.express as px

first = splits[chosen[0]]
recs = first.train + first.query + first.gallery
cams = pd.DataFrame([{"camera": r.camid, "view": VIEW_NAMES[r.view], "altitude": r.altitude,
                      "pitch": (r.extra or {}).get("pitch")} for r in recs])
per_cam = cams.groupby(["camera", "view"]).size().reset_index(name="images")
fig = px.bar(per_cam, x="camera", y="images", color="view", title=f"{dataset}: images per camera",
             template="plotly_white")
figures += save_figure(fig, OUT / "images_per_camera", png=png)
fig.show()
aerial = cams[(cams["view"] == "aerial") & cams["altitude"].notna()]
if len(aerial):
    fig = px.histogram(aerial, x="altitude", color="camera", nbins=30,
                       title="Altitude of the aerial images (m)", template="plotly_white")
    figures += save_figure(fig, OUT / "altitude_histogram", png=png)
    fig.show()

# %%
if dataset == "synthag":
    from agreid_kit.synth import (
        contact_sheet_cameras,
        contact_sheet_figure,
        contact_sheet_identity,
        format_difficulty_card,
    )

    sheet = contact_sheet_cameras(root, n_ids=6, seed=seed)
    fig = contact_sheet_figure(sheet, title="Six identities (columns) in every camera (rows)")
    figures += save_figure(fig, OUT / "contact_sheet_cameras", png=png)
    fig.show()
    pid = first.query[0].pid
    fig = contact_sheet_figure(contact_sheet_identity(root, pid, per_camera=2), title=f"Identity {pid} in every camera")
    figures += save_figure(fig, OUT / "contact_sheet_identity", png=png)
    fig.show()
    import json

    card_path = Path(root) / "difficulty.json"
    if card_path.is_file():
        display(Markdown("**Difficulty card** (colour-histogram baseline, no training)\n```\n"
                         + format_difficulty_card(json.loads(card_path.read_text())) + "\n```"))

# %%
atomic_write_json(OUT / "summary.json", {
    "parameters": params, "root": root, "protocols": table.reset_index().to_dict(orient="records"),
    "figures": [str(p) for p in figures],
})
print(f"wrote {OUT / 'summary.json'} and {len(figures)} figure files")
