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
runs_root = "runs/synthag-small"  # seed<s>/{vit,sdreid,sdreid-stage2} under it
seeds = [0, 1, 2]  # training seeds of the runs (tables: mean +- std over them)
protocols = ["ALL", "A<->G", "A<->A", "G<->G"]
taus = [1, 2, 5, 10]  # used only when report_dir has no tradeoff.csv
tradeoff_protocols = ["ALL", "A<->G"]
embed_method = "umap"  # umap | tsne | pca
embed_max_points = 1200  # real images embedded (x3 with the two generated views)
n_rank_queries = 3  # best and worst queries shown
rank_protocol = "A<->G"
stage2_ablations = "runs/stage2-ablations/ablations.csv"  # scripts/stage2_ablations.py writes it; shown if present
convergence_csv = "reports/convergence/convergence.csv"  # `agreid convergence` writes it; shown if present
device = "cpu"
png = "auto"  # PNG copies of the figures: require | auto | skip
guard.freeze(globals(),
             inputs={"report_dir": "made by `make report` (agreid report)",
                     "runs_root": "made by `make report` (agreid report)"},
             data_specs={"data": "made by `make report` (agreid report)"},
             choices={"png": ("require", "auto", "skip"), "embed_method": ("umap", "tsne", "pca")})

# %%
params = guard.validate(globals())

import html
import json
import time
from pathlib import Path

import pandas as pd
import plotly.io as pio
from IPython.display import HTML, Markdown, display

from agreid_kit import VIEW_NAMES, analysis, tables, viz
from agreid_kit.data import load_dataset, parse_data_spec
from agreid_kit.features import FeatureSet
from agreid_kit.utils.io import atomic_write_json

# plotly.js is embedded once, in this cell's output: the exported HTML works offline.
pio.renderers.default = "notebook"
pd.set_option("display.precision", 2)

OUT = Path(report_dir)
FIG = OUT / "figures"
FIG.mkdir(parents=True, exist_ok=True)
RUN_NAMES = {"vit": "vit", "sdreid": "sdreid", "stage2": "sdreid-stage2"}
LABELS = {"vit": "ViT baseline", "sdreid": "SD-ReID stage 1", "stage2": "SD-ReID stage 2"}
SEED_RUNS = {s: {k: Path(runs_root) / f"seed{s}" / v for k, v in RUN_NAMES.items()} for s in seeds}
first = seeds[0]
RUNS = {LABELS[k]: d for k, d in SEED_RUNS[first].items()}  # figures that show one run: the first seed's
for label, d in RUNS.items():
    if not (d / "features" / "test.json").is_file():
        raise FileNotFoundError(f"{label} run {d} has no features/test.json: train and evaluate it first (agreid "
                                "report)")
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
job = read_json(OUT / "job.json") or {}
versions = job.get("versions", {})
display(Markdown(
    f"**Data** `{data}` — {len(splits['ALL'].train)} train / {len(splits['ALL'].query)} query / "
    f"{len(splits['ALL'].gallery)} gallery images (protocol ALL). **Seeds** {seeds} (every model trained once per "
    f"seed; tables show mean ± std over them). **Threads** {job.get('threads', '?')}. **Commit** "
    f"`{versions.get('commit', '?')}`. Generated features: tau = {gen.get('tau')}, guidance w = {gen.get('guidance')}, "
    f"views {[VIEW_NAMES[v] for v in fs2.generated_views()]}."
))
stage1_cfg = read_json(SEED_RUNS[first]["sdreid"] / "config.json") or {}
stage1_meta = read_json(SEED_RUNS[first]["sdreid"] / "run_meta.json") or {}
init = (stage1_cfg.get("model") or {}).get("pretrained") or stage1_meta.get("model_config", {}).get("pretrained")
display(Markdown(
    f"**Initialisation** of the stage-1 backbones: `{init or 'random (from scratch)'}`"
    + (" — a ViT the kit pretrained on SynthAG-pretrain (seed 1; identities independent of SynthAG-small's), "
       "as the paper starts from ImageNet (see `agreid_kit/weights/*.json` for its recipe and data hash)."
       if str(init).startswith("kit:") else ".")
))

# %% [markdown]
# ## 1. Results per protocol
# Rank-1/5/10, mAP and mINP (%), mean ± std over the training seeds, of the ViT baseline, SD-ReID stage 1
# (real features) and SD-ReID stage 2 (real + generated features, the paper's descriptor), each protocol on
# its own. The comparisons below say whether a difference exceeds the spread over seeds (within noise when
# the two mean ± std intervals overlap).

# %%
job_metrics = read_json(OUT / "metrics.json")
if job_metrics is None:
    raise FileNotFoundError(f"{OUT / 'metrics.json'} is missing: the report reads the main job's evaluation (agreid "
                            "report)")
results = job_metrics["results"]
MAIN_ROWS = [("ViT baseline", "vit", "real"), ("SD-ReID stage 1", "sdreid", "real"),
             ("SD-ReID stage 2", "stage2", "real+gen")]
MAIN_MODE = {label: mode for label, _, mode in MAIN_ROWS}
main_table = tables.seed_table(results, MAIN_ROWS, protocols)
summary["main_table"] = main_table.to_dict(orient="records")
display(HTML(tables.display_table(main_table).set_index(["protocol", "method"]).to_html()))
show(viz.seed_bars_figure(main_table, metric="mAP", title="mAP (%) per protocol, mean ± std over seeds"), "main_table")
PAIRS = [("stage 1 - ViT baseline", ("sdreid", "real"), ("vit", "real")),
         ("stage 2 real+gen - stage 1 real", ("stage2", "real+gen"), ("sdreid", "real"))]
verdicts = pd.concat([tables.comparisons(results, PAIRS, protocols, metric=m) for m in ("mAP", "rank1")],
                     ignore_index=True)
summary["comparisons"] = verdicts.to_dict(orient="records")
display(HTML(verdicts.to_html(index=False, float_format=lambda v: f"{v:+.2f}")))
noise = verdicts[verdicts["verdict"] == "within noise"]
display(Markdown(
    f"{len(noise)} of {len(verdicts)} differences are **within noise** over {len(seeds)} seed(s)"
    + (" (with one seed there is no spread: no difference can be called)." if len(seeds) < 2 else ".")
))

# %% [markdown]
# ## 2. Real vs generated features (Tab. 5) and the stage-2 gain
# The stage-2 runs' test images described by the real stage-1 feature, by one generated view, by all
# generated views, and by real + generated (each part L2-normalised, then concatenated), mean ± std over seeds.

# %%
mode_order = [m for m in ("real", "gen:aerial", "gen:ground", "gen:wearable", "gen:all", "real+gen")
              if m in results["stage2"][protocols[0]]]
modes_table = tables.seed_table(results, [("SD-ReID stage 2", "stage2", m) for m in mode_order], protocols)
summary["real_vs_generated"] = modes_table.to_dict(orient="records")
shown = tables.display_table(modes_table)
display(HTML(shown.pivot(index="features", columns="protocol", values="mAP").reindex(mode_order)[list(protocols)]
             .to_html()))
show(viz.seed_bars_figure(modes_table, metric="mAP", group="features",
                          title="mAP (%) of real, generated and combined features (stage 2), mean ± std"),
     "real_vs_generated")
gain = tables.comparisons(results, [("real+gen - real", ("stage2", "real+gen"), ("stage2", "real"))], protocols)
summary["stage2_gain"] = gain.to_dict(orient="records")
display(Markdown("**Stage-2 gain** (`real+gen` minus `real`, mAP points, mean over seeds; paired std of the per-seed "
                 "differences):"))
display(HTML(gain.to_html(index=False, float_format=lambda v: f"{v:+.2f}")))

# %% [markdown]
# ### Why (or why not): stage 2 on the validation identities
# Every stage-2 run scores `real`, `gen:all` and `real+gen` on the identities its stage-1 run held out of training
# (never the test split), every few epochs. Stage 2 can only add to `real` once its generated features are about as
# good as the real ones: the curves show where each seed's stage 2 stands at the end of its budget. The ablations
# that chose the stage-2 defaults (UNet width, epochs, VRD location, standardised conditions, guidance, tau, the
# weight of the generated parts) are `scripts/stage2_ablations.py`'s table, shown below when it exists.

# %%
val_rows = []
for s in seeds:
    log_path = SEED_RUNS[s]["stage2"] / "log.jsonl"
    for line in log_path.read_text().splitlines() if log_path.is_file() else []:
        entry = json.loads(line)
        for key, value in entry.items():
            if key.startswith("val_") and key.endswith("_mAP"):
                name = key[len("val_"):-len("_mAP")]
                protocol, mode = (name.split("_", 1) if "<->" in name else ("ALL", name))
                val_rows.append({"seed": s, "epoch": entry["epoch"], "protocol": protocol, "mode": mode,
                                 "mAP": 100 * value})
if val_rows:
    val_df = pd.DataFrame(val_rows)
    last = val_df[val_df.epoch == val_df.epoch.max()]
    table = last.pivot_table(index=["protocol", "mode"], columns="seed", values="mAP")
    table["mean"], table["std"] = table.mean(axis=1), table.std(axis=1)
    summary["stage2_validation"] = last.to_dict(orient="records")
    display(Markdown(f"Validation mAP (%) at the last stage-2 epoch ({int(val_df.epoch.max())}), per seed:"))
    display(HTML(table.reset_index().to_html(index=False, float_format=lambda v: f"{v:.2f}")))
    mean_curve = val_df.groupby(["epoch", "protocol", "mode"], as_index=False)["mAP"].mean()
    import plotly.express as px

    show(px.line(mean_curve, x="epoch", y="mAP", color="mode", facet_col="protocol", markers=True,
                 title="Stage 2 on validation ids: mAP (%) against epoch, mean over seeds", template="plotly_white"),
         "stage2_validation")
else:
    display(Markdown("The stage-2 runs hold no validation scores (their stage-1 runs held out no identities)."))
from agreid_kit.notebook import project_root

ablations = Path(stage2_ablations) if Path(stage2_ablations).is_absolute() else project_root() / stage2_ablations
if ablations.is_file():
    abl = pd.read_csv(ablations)
    display(Markdown(f"**Stage-2 ablations on validation ids** (`{ablations}`; seed 0; mAP %):"))
    display(HTML(abl.to_html(index=False, float_format=lambda v: f"{v:.2f}")))
else:
    display(Markdown(f"No ablation table at `{ablations}`: `.venv/bin/python scripts/stage2_ablations.py` writes it "
                     "(~25 min on 2 cores); the README lists its results."))

# %% [markdown]
# ## 3. View conditions: do they carry the view? (Fig. 14 measures)
# Per stage-1 run: the view head's accuracy on the instance view tokens, a linear probe's (fitted on the
# train split's tokens), the cosine between the two view centres, and how much closer a token is to its own
# view's centre than to the other (raw tokens and standardised per dimension, the space stage 2 reads).
# Per stage-2 run: whether the generated features carry their target view (a view probe fitted on real
# train features, applied to `gen:<view>`).

# %%
vm_rows = []
for seed, m in job_metrics.get("view_measures", {}).items():
    row = {"seed": int(seed), **{k: v for k, v in m["stage1"].items()}}
    row.update({f"gen:{v} -> {v}": acc for v, acc in m["generated"]["accuracy"].items()})
    row["probe on real test"] = m["generated"]["real_accuracy"]
    vm_rows.append(row)
view_measures = pd.DataFrame(vm_rows)
summary["view_measures"] = view_measures.to_dict(orient="records")
if len(view_measures):
    agg = view_measures.drop(columns="seed").agg(["mean", "std"]).T
    display(HTML(agg.to_html(float_format=lambda v: f"{v:.3f}")))
else:
    display(Markdown("No view measures in metrics.json (an older evaluation): re-run `agreid report --redo evaluate`."))

# %% [markdown]
# ## 4. Timestep trade-off (Figs. 4/5)
# Accuracy and measured generation cost (all generated views, both classifier-free-guidance branches,
# seconds per 1,000 test images on this machine) against the number of DDIM sampling steps tau, mean ± std
# over seeds. The knee is the smallest tau whose mean is within one std of the best tau's.

# %%
tradeoff_csv = OUT / "tradeoff.csv"
if tradeoff_csv.is_file():
    tradeoff = pd.read_csv(tradeoff_csv)
else:
    from agreid_kit.diffusion.analyses import timestep_tradeoff

    parts = [timestep_tradeoff(SEED_RUNS[s]["stage2"], taus=taus, protocols=tradeoff_protocols,
                               modes=("real+gen", "gen:all"), seed=s, device=device, progress=False)[0].assign(seed=s)
             for s in seeds]
    tradeoff = pd.concat(parts, ignore_index=True)
summary["tradeoff"] = tradeoff.to_dict(orient="records")
scope = read_json(OUT / "tradeoff.json")
subset_note = ""
if scope and "n_ids" in scope and scope["n_ids"] < scope.get("n_test_ids", scope["n_ids"]):
    subset_note = (f"on a subset of {scope['n_ids']} of the {scope['n_test_ids']} test identities "
                   f"({scope['n_images']} query + gallery images)")
    display(Markdown(f"Measured {subset_note}, regenerated at every tau: its mAP is **not** comparable with the "
                     "full-test-set tables above (a smaller gallery is easier); compare taus with each other."))
tsum = tables.tradeoff_summary(tradeoff)
knees = [tables.tradeoff_knee(tsum, p, "real+gen") for p in tradeoff_protocols]
summary["tradeoff_knee"] = knees
display(HTML(tsum.to_html(index=False, float_format=lambda v: f"{v:.2f}")))
display(Markdown("; ".join(f"**{k['protocol']}**: knee tau = {k['tau']} (best tau {k['best_tau']}: "
                           f"{k['best']:.2f} ± {k['best_std']:.2f} mAP)" for k in knees)))
show(viz.tradeoff_seeds_figure(tsum, knees, mode="real+gen",
                               title="real + generated mAP and generation cost vs tau (mean ± std over seeds)"
                               + (f" — {subset_note}" if subset_note else "")), "timestep_tradeoff")

# %% [markdown]
# ## 5. Real and generated features in 2-D (Fig. 6)
# As the paper draws it: a handful of test identities (one colour each), their real retrieval features
# (circles) and the features generated for each view (diamonds: aerial, squares: ground), embedded jointly;
# then the `real+gen` descriptors of the same images on their own map. Generated features that land with
# their identity's real ones carry identity; a split by marker shows what the target view adds.

# %%
METHOD_NAME = {"umap": "UMAP", "tsne": "t-SNE", "pca": "PCA"}[embed_method]
t0 = time.perf_counter()
fig6_rows = analysis.identity_rows(fs2, n_ids=8, seed=first)
emb = analysis.embedding_frame(fs2, method=embed_method, include_generated=True, rows=fig6_rows, seed=first)
show(viz.embedding_figure(emb, color_by="pid", title=f"{METHOD_NAME}: real (circles) and generated features of 8 "
                                                     "identities (diamond: aerial view, square: ground view)"),
                                                     "fig6_identities")
emb_rg = analysis.descriptor_frame(fs2, "real+gen", fig6_rows, method=embed_method, seed=first)
show(viz.embedding_figure(emb_rg, color_by="pid", title=f"{METHOD_NAME}: real+gen descriptors of the same images"),
     "fig6_real_plus_gen")
emb_all = analysis.embedding_frame(fs2, method=embed_method, include_generated=True,
                                   max_points=embed_max_points, seed=first)
summary["embedding"] = {"method": embed_method, "points": len(emb_all), "fig6_points": len(emb),
                        "seconds": round(time.perf_counter() - t0, 1)}
show(viz.embedding_figure(emb_all, color_by="kind", title=f"{METHOD_NAME} of real and generated features "
                                                        f"({embed_max_points} test images)"), "embedding_kind")

# %% [markdown]
# ## 6. Best and worst queries (Figs. 15/16)
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
# ## 7. View-condition similarity (Fig. 14)
# Cosine similarity of each test image's view token to the per-view centres of stage 1's memory bank,
# and between instances (sorted by view): first as stage 1 emits the tokens, then standardised per
# dimension, the space stage 2 reads its view conditions in (a small ViT's tokens share a large
# constant component that makes every raw cosine ~1).

# %%
from agreid_kit.diffusion.analyses import view_condition_similarity

summary["view_similarity"] = []
for space in ("raw", "standardised"):
    vc_data, _ = view_condition_similarity(fs["SD-ReID stage 1"], max_instances=200, seed=first, space=space)
    vc_stats = vc_data["to_centres"].groupby(["view", "centre"])["cosine"].agg(["mean", "std", "count"]).reset_index()
    vc_stats.insert(0, "space", space)
    summary["view_similarity"] += vc_stats.to_dict(orient="records")
    display(vc_stats.style.format(precision=3))
    fig = viz.view_similarity_figure(vc_data, title=f"View-condition similarity ({space} tokens)")
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.2, x=0))  # keep it clear of the colour bar
    show(fig, "view_similarity" if space == "raw" else "view_similarity_standardised")

# %% [markdown]
# ## 8. Training curves

# %%
for label, d in RUNS.items():
    log = analysis.read_training_log(d)
    show(viz.training_curves_figure(log, title=f"{label}: training curves ({len(log)} epochs)"),
         f"curves_{label.lower().replace(' ', '_').replace('-', '')}")

# %% [markdown]
# ### Where the budget stops: the convergence curve
# `agreid convergence` trains vit and sdreid once for many epochs with the same recipe (seed 0) and scores the test
# split every few epochs: a measurement only, nothing is chosen on it. The stars are this job's stage-1 runs (mean
# over seeds) at their epoch budget.

# %%
from agreid_kit.convergence import convergence_figure
from agreid_kit.notebook import project_root

conv_path = Path(convergence_csv) if Path(convergence_csv).is_absolute() else project_root() / convergence_csv
if conv_path.is_file():
    conv = pd.read_csv(conv_path)
    budget = int((job.get("config") or {}).get("epochs") or 0)
    for p in [p for p in ("ALL", "A<->G") if p in set(conv["protocol"])]:
        stars = {m: (budget, 100 * results[m][p]["real"]["mAP"]["mean"]) for m in ("vit", "sdreid")
                 if m in set(conv["method"]) and p in results.get(m, {})}
        show(convergence_figure(conv, main_job=stars, protocol=p), f"convergence_{p.replace('<->', '_')}")
    last = conv.sort_values("epoch").groupby(["method", "protocol"]).tail(1)
    last = last[["method", "protocol", "epoch", "mAP", "rank1", "cpu_minutes"]].assign(
        mAP=lambda d: 100 * d.mAP, rank1=lambda d: 100 * d.rank1)
    display(HTML(last.to_html(index=False, float_format=lambda v: f"{v:.1f}")))
else:
    display(Markdown(f"No convergence study at `{conv_path}`: `agreid convergence` writes it (about 20 min per method "
                     "for 16 epochs on 2 cores; run it in the background). The README shows its curve."))

# %% [markdown]
# ## 9. CMC and accuracy per camera (SynthAG geometry)
# CMC curves (rank 1-20) on every protocol, then Rank-1 and mAP per query camera (protocol ALL) with each
# camera's view, altitude and pitch: SynthAG's drones fly one altitude per camera, so per-camera bars are
# the honest form of "accuracy vs altitude" (binning three fixed altitudes would leave empty bins).

# %%
for protocol in protocols:
    cmc = analysis.cmc_table(fs, splits[protocol], MAIN_MODE, max_rank=20)
    summary.setdefault("cmc", {})[protocol] = cmc.to_dict(orient="records")
    show(viz.cmc_figure(cmc, title=f"CMC on {protocol} (seed {first})"),
         f"cmc_{protocol.replace('<->', '_').replace('->', '_')}")
cam_parts = [analysis.accuracy_by_camera(fs[label], splits["ALL"], mode=mode).assign(method=label)
             for label, mode in MAIN_MODE.items()]
by_camera = pd.concat(cam_parts, ignore_index=True)
summary["accuracy_by_camera"] = by_camera.to_dict(orient="records")
show(viz.accuracy_camera_figure(by_camera, title=f"Accuracy per query camera (protocol ALL, seed {first})"),
     "accuracy_by_camera")
display(HTML(by_camera.pivot_table(index=["camera", "view_name", "altitude", "pitch"], columns="method", values="mAP")
             .mul(100).to_html(float_format=lambda v: f"{v:.1f}")))

# %% [markdown]
# ## 10. Parameters, versions and timings

# %%
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
    display(HTML(f"<details><summary>{label}: "
                 f"{d}/config.json</summary><pre>{html.escape(json.dumps(cfg, indent=1))}</pre></details>"))
summary["timings"] = timings
summary["versions"] = job.get("versions")
atomic_write_json(OUT / "report_summary.json", summary)
display(Markdown(f"Report notebook done in {time.perf_counter() - t_start:.0f} s; figures in `{FIG}`."))
