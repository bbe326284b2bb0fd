# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # SD-ReID on SynthAG: reproduction report
#
# Written by `agreid report` (`agreid_kit.pipeline.run_main_job`), which trains the runs and then executes
# this notebook with papermill. It mirrors the paper's evidence: per-protocol tables (ViT baseline, SD-ReID
# stage 1, stage 2), real vs generated features (Tab. 5), the timestep trade-off (Figs. 4/5), embeddings of
# real and generated features (Fig. 6), best and worst rank lists (Figs. 15/16), view-condition similarity
# (Fig. 14), training curves, accuracy vs altitude and pitch, and the run's parameters, versions and timings.

# %%
from agreid_kit.notebook import ParameterGuard

guard = ParameterGuard(globals())

# %% tags=["parameters"]
data = "synthag:data/synthag-small-s0"  # dataset spec NAME:ROOT
report_dir = "reports/latest"  # where metrics.json, tradeoff.csv, timings.json, job.json are and figures go
vit_run = "runs/synthag-small/vit"
sdreid_run = "runs/synthag-small/sdreid"
stage2_run = "runs/synthag-small/sdreid-stage2"
protocols = ["ALL", "A<->G", "A<->A", "G<->G"]
taus = [1, 2, 5, 10, 20, 50]  # used only when report_dir has no tradeoff.csv
tradeoff_protocols = ["ALL", "A<->G"]
embed_method = "umap"  # umap | tsne | pca
embed_max_points = 1200  # real images embedded (x3 with the two generated views)
n_rank_queries = 3  # best and worst queries shown
rank_protocol = "A<->G"
seed = 0
device = "cpu"
png = "auto"  # PNG copies of the figures: require | auto | skip
guard.freeze(globals())

# %%
params = guard.validate(globals())

import html
import json
import time
from pathlib import Path

import pandas as pd
import plotly.io as pio
from IPython.display import HTML, Markdown, display

from agreid_kit import VIEW_NAMES, analysis, viz
from agreid_kit.data import load_dataset, parse_data_spec
from agreid_kit.features import FeatureSet
from agreid_kit.utils.io import atomic_write_json

# plotly.js is embedded once, in this cell's output: the exported HTML works offline.
pio.renderers.default = "notebook"
pd.set_option("display.precision", 2)

OUT = Path(report_dir)
FIG = OUT / "figures"
FIG.mkdir(parents=True, exist_ok=True)
RUNS = {"ViT baseline": Path(vit_run), "SD-ReID stage 1": Path(sdreid_run), "SD-ReID stage 2": Path(stage2_run)}
for label, d in RUNS.items():
    if not (d / "features" / "test.json").is_file():
        raise FileNotFoundError(f"{label} run {d} has no features/test.json: train and evaluate it first (agreid report)")
summary: dict = {"parameters": params, "figures": []}
t_start = time.perf_counter()


def show(fig, name):
    """Display a figure and save it as FIG/<name>.html (+ .png)."""
    written = viz.save_figure(fig, FIG / name, png=png)
    summary["figures"] += [str(p) for p in written]
    fig.show()


def read_json(path):
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


name, root = parse_data_spec(data)
splits = {p: load_dataset(name, root, p) for p in dict.fromkeys([*protocols, rank_protocol, "ALL"])}
fs = {label: FeatureSet.load(d / "features" / "test") for label, d in RUNS.items()}
fs2 = fs["SD-ReID stage 2"]
gen = fs2.meta.get("generation", {})
display(Markdown(
    f"**Data** `{data}` — {len(splits['ALL'].train)} train / {len(splits['ALL'].query)} query / "
    f"{len(splits['ALL'].gallery)} gallery images (protocol ALL). Generated features: tau = {gen.get('tau')}, "
    f"guidance w = {gen.get('guidance')}, views {[VIEW_NAMES[v] for v in fs2.generated_views()]}."
))

# %% [markdown]
# ## 1. Results per protocol
# Rank-1, mAP and mINP (%) of the ViT baseline, SD-ReID stage 1 (real features) and SD-ReID stage 2
# (real + generated features, the paper's descriptor), each protocol on its own.

# %%
job_metrics = read_json(OUT / "metrics.json")
if job_metrics is not None:
    results = {label: job_metrics["results"][key] for key, label in job_metrics["labels"].items()}
else:  # run standalone: read each run's metrics.json (written by evaluate_run)
    results = {label: read_json(d / "metrics.json") or {} for label, d in RUNS.items()}
MAIN_MODE = {"ViT baseline": "real", "SD-ReID stage 1": "real", "SD-ReID stage 2": "real+gen"}
rows = []
for protocol in protocols:
    for label, mode in MAIN_MODE.items():
        m = results.get(label, {}).get(protocol, {}).get(mode)
        if m is None:
            raise KeyError(f"no {mode!r} metrics for {label} on {protocol!r}: evaluate the run on that protocol")
        rows.append({"protocol": protocol, "method": label, "features": mode, "Rank-1": 100 * m["rank1"],
                     "mAP": 100 * m["mAP"], "mINP": 100 * m["mINP"], "queries": m["n_valid"]})
main_table = pd.DataFrame(rows)
summary["main_table"] = main_table.to_dict(orient="records")
for protocol, part in main_table.groupby("protocol", sort=False):
    display(Markdown(f"**{protocol}**"))
    display(part.drop(columns="protocol").set_index("method").style.format(precision=2)
            .highlight_max(subset=["Rank-1", "mAP", "mINP"], color="#d7f0d7"))

fig = viz.metrics_table_figure(
    main_table.rename(columns={"Rank-1": "rank1"}).assign(rank1=lambda d: d["rank1"] / 100, mAP=lambda d: d["mAP"] / 100,
                                                           mINP=lambda d: d["mINP"] / 100),
    title="Rank-1 / mAP / mINP (%) per protocol")
summary["figures"] += [str(p) for p in viz.save_figure(fig, FIG / "main_table", png=png)]

# %% [markdown]
# ## 2. Real vs generated features (Tab. 5)
# The stage-2 run's test images described by the real stage-1 feature, by one generated view, by all
# generated views, and by real + generated (each part L2-normalised, then concatenated).

# %%
rows = []
for protocol in protocols:
    for mode, m in results["SD-ReID stage 2"].get(protocol, {}).items():
        rows.append({"protocol": protocol, "features": mode, "Rank-1": 100 * m["rank1"], "mAP": 100 * m["mAP"],
                     "mINP": 100 * m["mINP"]})
modes_table = pd.DataFrame(rows)
summary["real_vs_generated"] = modes_table.to_dict(orient="records")
mode_order = [m for m in ("real", "gen:aerial", "gen:ground", "gen:wearable", "gen:all", "real+gen")
              if m in set(modes_table["features"])]
display(modes_table.pivot_table(index="features", columns="protocol", values=["Rank-1", "mAP"], sort=False)
        .reindex(mode_order).style.format(precision=2))
import plotly.express as px

fig = px.bar(modes_table, x="protocol", y="mAP", color="features", barmode="group", template="plotly_white",
             title="mAP (%) of real, generated and combined features (stage 2)")
show(fig, "real_vs_generated")

# %% [markdown]
# ## 3. Timestep trade-off (Figs. 4/5)
# Accuracy and measured generation cost (all generated views, both classifier-free-guidance branches,
# seconds per 1,000 test images on this machine) against the number of DDIM sampling steps tau.

# %%
tradeoff_csv = OUT / "tradeoff.csv"
if tradeoff_csv.is_file():
    tradeoff = pd.read_csv(tradeoff_csv)
else:
    from agreid_kit.diffusion.analyses import timestep_tradeoff

    tradeoff, _ = timestep_tradeoff(stage2_run, taus=taus, protocols=tradeoff_protocols,
                                    modes=("real+gen", "gen:all"), seed=seed, device=device, progress=False)
summary["tradeoff"] = tradeoff.to_dict(orient="records")
scope = read_json(OUT / "tradeoff.json")
if scope and "n_ids" in scope:
    display(Markdown(f"Measured on {scope['n_ids']} of the {scope['n_test_ids']} test identities "
                     f"({scope['n_images']} query + gallery images), regenerated at every tau."))
tt = tradeoff.pivot_table(index="tau", columns=["protocol", "mode"], values="mAP").mul(100)
tt.columns = [f"mAP {p} {m}" for p, m in tt.columns]
tt["s / 1k images"] = tradeoff.groupby("tau")["sec_per_1000"].first()
display(tt.style.format(precision=2))
# The figure shows the paper's descriptor (real + generated) with Rank-1 and mAP; the table above has gen:all too.
shown = tradeoff[tradeoff["mode"] == "real+gen"].drop(columns="mINP")
fig = viz.tradeoff_figure(shown if len(shown) else tradeoff, highlight_tau=gen.get("tau"),
                          title="Accuracy (real + generated) and generation cost vs tau (dotted: the tables' tau)")
fig.update_xaxes(type="log", tickvals=sorted(tradeoff["tau"].unique().tolist()))
fig.update_layout(legend=dict(orientation="v", x=1.1, y=1, yanchor="top"), margin=dict(t=60))
show(fig, "timestep_tradeoff")

# %% [markdown]
# ## 4. Real and generated features in 2-D (Fig. 6)
# Real retrieval features (circles) and the features generated for each view (diamonds) of a seeded
# subsample of test images, embedded jointly.

# %%
METHOD_NAME = {"umap": "UMAP", "tsne": "t-SNE", "pca": "PCA"}[embed_method]
t0 = time.perf_counter()
emb = analysis.embedding_frame(fs2, method=embed_method, include_generated=True, max_points=embed_max_points, seed=seed)
summary["embedding"] = {"method": embed_method, "points": len(emb), "seconds": round(time.perf_counter() - t0, 1)}
show(viz.embedding_figure(emb, color_by="kind", title=f"{METHOD_NAME} of real and generated features"),
     "embedding_kind")
show(viz.embedding_figure(emb[emb["kind"] == "real"], color_by="view_name",
                          title=f"{METHOD_NAME} of the real features, coloured by view"), "embedding_view")

# %% [markdown]
# ## 5. Best and worst queries (Figs. 15/16)
# Top-10 rankings of SD-ReID stage 2 (real + generated) under the cross-view protocol. Borders: green
# match, red non-match, grey junk (same identity and camera: shown, not ranked), blue the query.

# %%
split_r = splits[rank_protocol]
scores = analysis.per_query_scores(fs2, split_r, mode="real+gen")
valid = scores[scores["valid"]]
summary["per_query"] = {"protocol": rank_protocol, "n_valid": int(len(valid)), "mean_ap": float(valid["ap"].mean())}
for order in ("best", "worst"):
    picked = analysis.sort_queries(scores, order).head(n_rank_queries)
    summary[f"{order}_queries"] = picked[["query_index", "pid", "view_name", "ap"]].to_dict(orient="records")
    for i, qi in enumerate(picked["query_index"]):
        rl = analysis.rank_list(fs2, split_r, int(qi), k=10, mode="real+gen")
        show(viz.rank_list_figure(rl, title=f"{order} query #{i + 1}: q{qi} pid {rl.query.pid} "
                                            f"{VIEW_NAMES[rl.query.view]}, AP {rl.ap:.3f} [{rank_protocol}]"),
             f"ranklist_{order}_{i + 1}")

# %% [markdown]
# ## 6. View-condition similarity (Fig. 14)
# Cosine similarity of each test image's view token to the per-view centres of stage 1's memory bank,
# and between instances (sorted by view): first as stage 1 emits the tokens, then standardised per
# dimension, the space stage 2 reads its view conditions in (a small ViT's tokens share a large
# constant component that makes every raw cosine ~1).

# %%
from agreid_kit.diffusion.analyses import view_condition_similarity

summary["view_similarity"] = []
for space in ("raw", "standardised"):
    vc_data, _ = view_condition_similarity(fs["SD-ReID stage 1"], max_instances=200, seed=seed, space=space)
    vc_stats = vc_data["to_centres"].groupby(["view", "centre"])["cosine"].agg(["mean", "std", "count"]).reset_index()
    vc_stats.insert(0, "space", space)
    summary["view_similarity"] += vc_stats.to_dict(orient="records")
    display(vc_stats.style.format(precision=3))
    fig = viz.view_similarity_figure(vc_data, title=f"View-condition similarity ({space} tokens)")
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.2, x=0))  # keep it clear of the colour bar
    show(fig, "view_similarity" if space == "raw" else "view_similarity_standardised")

# %% [markdown]
# ## 7. Training curves

# %%
for label, d in RUNS.items():
    log = analysis.read_training_log(d)
    show(viz.training_curves_figure(log, title=f"{label}: training curves ({len(log)} epochs)"),
         f"curves_{label.lower().replace(' ', '_').replace('-', '')}")

# %% [markdown]
# ## 8. Accuracy vs altitude and pitch (SynthAG)
# Rank-1 and mAP of the queries binned by their camera's altitude and pitch (protocol ALL). SynthAG's
# ground cameras hang at 1.5-5 m with pitch 0-25 degrees, its drones fly at 15-75 m looking down 30-90
# degrees: the 0-10 m altitude bin and the pitch bins below 30 degrees hold the ground queries.

# %%
GEO_BINS = {"altitude": [0, 10, 30, 45, 60, 75], "pitch": [0, 15, 30, 50, 70, 90]}
geo_rows = []
for by, edges in GEO_BINS.items():
    parts = []
    for label, mode in MAIN_MODE.items():
        g = analysis.accuracy_by_geometry(fs[label], splits["ALL"], mode=mode, by=by, bins=edges)
        g["bin"] = [f"{a:g}-{b:g}" for a, b in zip(g["left"], g["right"])]
        parts.append(g.assign(method=label))
        geo_rows += g.assign(method=label, by=by).to_dict(orient="records")
    df = pd.concat(parts, ignore_index=True).drop(columns="mINP")  # Rank-1 and mAP: 6 lines stay readable
    df.attrs["by"] = by
    fig = viz.accuracy_geometry_figure(df, title=f"Accuracy vs {by} (protocol ALL)")
    fig.update_layout(legend=dict(orientation="v", x=1.08, y=1, yanchor="top"))
    fig.update_xaxes(title_text=f"{by} ({'m' if by == 'altitude' else 'degrees'})")
    show(fig, f"accuracy_{by}")
summary["accuracy_by_geometry"] = geo_rows

# %% [markdown]
# ## 9. Parameters, versions and timings

# %%
job = read_json(OUT / "job.json") or {}
timings = read_json(OUT / "timings.json") or {}
if timings.get("steps"):
    from agreid_kit.pipeline import STEPS

    steps = pd.DataFrame([{"step": k, **timings["steps"][k]} for k in STEPS if k in timings["steps"]])
    steps.loc[len(steps)] = {"step": "report (this notebook, so far)", "status": "ran",
                             "seconds": round(time.perf_counter() - t_start, 1),
                             "ran_seconds": round(time.perf_counter() - t_start, 1)}
    steps = steps.rename(columns={"seconds": "this job (s)", "ran_seconds": "when computed (s)"}).set_index("step")
    display(Markdown(f"**Timings** (wall clock on this machine; job started {timings.get('started')}). A reused step "
                     "shows the time it took when it was computed. The report step's total is in timings.json."))
    display(steps.style.format({"this job (s)": "{:.1f}", "when computed (s)": "{:.1f}"}, na_rep="-"))
display(Markdown("**Versions**"))
display(pd.Series(job.get("versions") or __import__("agreid_kit.pipeline", fromlist=["versions"]).versions(),
                  name="version").to_frame())
display(Markdown("**Job parameters**"))
display(HTML("<pre>" + html.escape(json.dumps(job.get("config", params), indent=1)) + "</pre>"))
for label, d in RUNS.items():
    cfg = read_json(d / "config.json")
    display(HTML(f"<details><summary>{label}: {d}/config.json</summary><pre>{html.escape(json.dumps(cfg, indent=1))}</pre></details>"))
summary["timings"] = timings
summary["versions"] = job.get("versions")
atomic_write_json(OUT / "report_summary.json", summary)
display(Markdown(f"Report notebook done in {time.perf_counter() - t_start:.0f} s; figures in `{FIG}`."))
