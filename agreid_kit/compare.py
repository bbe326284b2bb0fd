"""One comparison table of every method of the kit on the same data, protocols, budget and seeds.

``compare_methods`` trains (or reuses) one engine run per method and training seed with the *same*
TrainConfig budget (epochs, P x K, iterations per epoch, optimiser) and data, evaluates every run on the
same protocols with the same evaluator, and returns a tidy DataFrame plus a plotly table: one row per
(method, protocol, feature mode) with Rank-1/5/10, mAP, mINP as the mean over the seeds and their sample
std (``agreid_kit.seeds``), the number of seeds, whether the method is **within noise** of the protocol's
best method on mAP (``seeds.within_noise``: the two mean +- std intervals overlap; always with fewer than
two seeds), trainable parameters, training time (mean over seeds of the epoch ``seconds`` in log.jsonl)
and inference images/s. The methods default to the whole method table (``agreid_kit.models``) and the
seeds to ``DEFAULT_SEEDS`` (3).

A run under ``OUT/<label>/seed<s>`` is reused only when it is finished *for this comparison's config*
(``Run.is_finished``: same settings and budget, every epoch, its outputs); an interrupted one of the
same settings resumes, one of other settings is trained again.

Inference images/s is the model's own throughput: ``model.embed`` on batches of random images of
the model's input size on the run's device after one warm-up batch, excluding image decoding
(which is the same for every method), measured on the first seed's model. A method of kind ``stage2``
(SD-ReID stage 2) is trained by its own trainer on the runs of the method it requires (``sdreid``,
earlier in the list; seed by seed); its row reports the ``real+gen`` descriptor, and its training time
and images/s are those of the whole pipeline (stage 1 + stage 2 training; stage-1 embedding + the
measured generation time per image).

Example (what the compare_methods notebook does)::

    from agreid_kit.compare import compare_methods
    from agreid_kit.viz import save_figure

    result = compare_methods(
        data="synthag:data/synthag-small", out="runs/compare", preset="cpu", seeds=[0, 1, 2],
        protocols=["A->G", "G->A"], budget=dict(epochs=4, max_iters_per_epoch=50),
        stage2_budget=dict(epochs=10),  # Stage2Config overrides for the SD-ReID stage-2 rows
        runs={"sdreid stage 1": ["runs/s0/sdreid", "runs/s1/sdreid"]},  # optional: finished runs to reuse as they are
    )
    table, fig = result  # result.noise: each method against the best per protocol (tables.comparisons)
    table.pivot_table(index="method", columns="protocol", values="mAP")
    save_figure(fig, "runs/compare/table")
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from agreid_kit.models import available_methods, method_labels, method_spec
from agreid_kit.run import Run
from agreid_kit.seeds import METRIC_KEYS, aggregate_results, as_stat, within_noise
from agreid_kit.utils.progress import progress_bar

DEFAULT_METHODS = tuple(available_methods())  # the method table when this module was imported
DEFAULT_SEEDS = (0, 1, 2)
METRIC_COLUMNS = METRIC_KEYS
COLUMNS = (
    "method", "protocol", "mode", *METRIC_COLUMNS, *(f"{k}_std" for k in METRIC_COLUMNS), "seeds",
    "within_noise_of_best", "n_query", "trainable_params_M", "total_params_M", "train_seconds", "epochs", "iters",
    "inference_images_per_s", "feature_dim", "device", "run", "note",
)
NOISE_METRIC = "mAP"  # the metric "within noise of the best" is judged on


class Comparison:
    """``table`` (pandas DataFrame, columns ``COLUMNS``), ``figure`` (plotly table of it), ``results``
    (``{label: {protocol: {mode: {metric: {mean, std, n, values}}}}}``, over the seeds) and ``noise``
    (``tables.comparisons`` of every method against the protocol's best on mAP). Unpacks as
    ``table, figure = compare_methods(...)``."""

    def __init__(self, table: Any, figure: Any, results: dict[str, Any], noise: Any) -> None:
        self.table, self.figure, self.results, self.noise = table, figure, results, noise

    def __iter__(self):
        return iter((self.table, self.figure))


@dataclass
class MethodEntry:
    """One row group: ``label`` in the table, ``method`` of the method table and model overrides (e.g. VIF
    ablations)."""

    label: str
    method: str
    model: dict[str, Any] = field(default_factory=dict)


def _entries(methods: Sequence[str | MethodEntry]) -> list[MethodEntry]:
    labels_of = method_labels()
    out = []
    for m in methods:
        entry = m if isinstance(m, MethodEntry) else MethodEntry(labels_of.get(m, m), m)
        method_spec(entry.method)  # unknown methods name the valid ones
        out.append(entry)
    labels = [e.label for e in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ValueError(f"compare_methods: method labels must be unique, repeated: {dup}")
    return out


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts (SVPR's frozen text encoder counts only in total)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def inference_throughput(model, batch_size: int = 64, batches: int = 3, device: str | None = None,
                         seed: int = 0) -> float:
    """Images/s of ``model.embed`` on random inputs of the model's size (one warm-up batch first)."""
    import torch

    dev = torch.device(device) if device else next(model.parameters()).device
    was_training = model.training
    model.eval()
    h, w = model.input_size
    g = torch.Generator().manual_seed(seed)
    num_views = int(getattr(model.config, "num_views", 2))
    batch = {
        "images": torch.randn(batch_size, 3, h, w, generator=g).to(dev),
        "views": (torch.arange(batch_size) % num_views).to(dev),
        "pids": torch.zeros(batch_size, dtype=torch.long, device=dev),
        "camids": torch.zeros(batch_size, dtype=torch.long, device=dev),
        "attributes": torch.zeros(batch_size, 0, dtype=torch.long, device=dev),
        "index": torch.arange(batch_size, device=dev),
    }

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    with torch.no_grad():
        model.embed(batch)
        sync()
        t0 = time.perf_counter()
        for _ in range(batches):
            model.embed(batch)
        sync()
        elapsed = time.perf_counter() - t0
    model.train(was_training)
    return batch_size * batches / max(elapsed, 1e-9)


def _fresh(run: Run, wanted: Any, what: str) -> bool:
    """Prepare ``run`` for training ``wanted``: True to resume it, False to start it (a run of other
    settings is removed: this comparison's folder must not hold runs of another budget)."""
    if not run.exists:
        return False
    diff = run.settings_diff(wanted)
    if not diff:
        return run.has_checkpoint
    print(f"[compare] {run.dir}: a {what} run of other settings ({', '.join(sorted(diff))}); training it again")
    shutil.rmtree(run.dir)
    return False


def _ensure_engine_run(entry: MethodEntry, run_dir: Path, data: str, protocol: str, preset: str,
                       budget: dict, seed: int,
                       split, train_missing: bool) -> Path:
    from agreid_kit.engine.config import make_config

    cfg = make_config(entry.method, str(run_dir), preset, data=data, protocol=protocol, model=dict(entry.model),
                      seed=seed, **budget)
    run = Run(run_dir)
    if run.is_finished(cfg):
        return run_dir
    if not train_missing:
        raise FileNotFoundError(f"compare_methods: no finished run of these settings for {entry.label!r} at {run_dir} "
                                "(train_missing=False)")
    if not data and split is None:
        raise ValueError("compare_methods: pass data='kind:DIR' (or split=...) to train the missing runs")
    method_spec(entry.method).trainer()(cfg, split=split, resume=_fresh(run, cfg, entry.method))
    return run_dir


def _ensure_stage2_run(entry: MethodEntry, run_dir: Path, stage1_dir: Path, preset: str, budget: dict, seed: int,
                       train_missing: bool) -> Path:
    from agreid_kit.diffusion.config import Stage2Config
    from agreid_kit.diffusion.train import stage2_run_config

    budget = dict(budget)
    if entry.model:
        budget["model"] = {**entry.model, **budget.get("model", {})}
    cfg = Stage2Config(stage1=str(stage1_dir), out=str(run_dir), preset=preset, seed=seed, **budget)
    wanted = stage2_run_config(cfg)
    run = Run(run_dir)
    if run.is_finished(wanted):
        return run_dir
    if not train_missing:
        raise FileNotFoundError(f"compare_methods: no finished stage-2 run of these settings for {entry.label!r} at "
                                f"{run_dir}")
    _fresh(run, wanted, entry.method)
    method_spec(entry.method).trainer()(cfg)  # resumes an interrupted run of the same settings
    return run_dir


def _stage2_costs(run: Run, stage1_costs: dict[str, Any] | None, device: str) -> dict[str, Any]:
    """Parameters of the stage-2 model; pipeline images/s (stage-1 embedding + generation per image)."""
    trainable, total = count_parameters(run.model)
    head = json.loads(run.features_path("test").with_suffix(".json").read_text())
    gen = (head.get("meta") or {}).get("generation") or {}
    s1_ips = stage1_costs["inference_images_per_s"] if stage1_costs else math.nan
    per_image = 1.0 / s1_ips + float(gen.get("seconds_per_1000", math.nan)) / 1000.0
    return {
        "trainable_params_M": trainable / 1e6, "total_params_M": total / 1e6,
        "inference_images_per_s": 1.0 / per_image if per_image > 0 else math.nan,
        "note": "stage 1 + stage 2: training time and images/s cover the whole pipeline; params are stage 2's",
    }


def _engine_costs(run: Run, throughput: bool, batch_size: int, device: str) -> dict[str, Any]:
    model = run.model
    trainable, total = count_parameters(model)
    note = []
    meta = getattr(model, "feature_meta", {}) or {}
    if meta.get("svpr_untrained_text"):
        note.append("UNTRAINED text encoder (small CLIP from config)")
    if "svpr_attribute_branch" in meta and not meta["svpr_attribute_branch"]:
        note.append("attribute branch off")
    return {
        "trainable_params_M": trainable / 1e6 if trainable else math.nan,
        "total_params_M": total / 1e6 if total else math.nan,
        "inference_images_per_s": inference_throughput(model, batch_size=batch_size,
                                                       device=device) if throughput else math.nan,
        "note": "; ".join(note),
    }


def _group_rows(label: str, dirs: list[Path], protocols: Sequence[str], splits: dict | None, costs: dict[str, Any],
                train_seconds: list[float], device: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows of one method over its seed runs, and its aggregated results (``seeds.aggregate_results``)."""
    import torch

    from agreid_kit.engine.evaluate import evaluate_run
    from agreid_kit.features import FeatureSet

    first = Run(dirs[0])
    modes = ("real+gen",) if first.method_spec.kind == "stage2" else ("real",)
    per_seed = {i: evaluate_run(d, list(protocols), modes=modes, splits=splits) for i, d in enumerate(dirs)}
    results = aggregate_results(per_seed)
    totals = [Run(d).training_totals() for d in dirs]
    fs = FeatureSet.load(first.features_path("test"))
    rows = []
    for protocol, by_mode in results.items():
        for mode, agg in by_mode.items():
            row: dict[str, Any] = {"method": label, "protocol": protocol, "mode": mode}
            for k in METRIC_COLUMNS:
                s = as_stat(agg[k]) if k in agg else None
                row[k] = s.mean if s else math.nan
                row[f"{k}_std"] = s.std if s else math.nan
            row.update({
                "seeds": len(dirs),
                "n_query": per_seed[0][protocol][mode].get("n_valid", per_seed[0][protocol][mode].get("n_query")),
                "train_seconds": sum(train_seconds) / len(train_seconds), "epochs": totals[0][1], "iters": totals[0][2],
                "feature_dim": int(fs.descriptor(mode, torch.arange(1)).shape[1]), "device": device,
                "run": "; ".join(str(d) for d in dirs), **costs,
            })
            rows.append(row)
    return rows, results


def _mark_noise(table, results: dict[str, Any]):
    """``within_noise_of_best`` per row, and the comparisons of every method against its protocol's best."""
    import pandas as pd

    from agreid_kit.tables import comparisons

    marks, frames = [], []
    best: dict[str, tuple[str, str]] = {}
    for protocol, part in table.groupby("protocol", sort=False):
        top = part.loc[part[NOISE_METRIC].idxmax()]
        best[protocol] = (top["method"], top["mode"])
        pairs = [(f"{r['method']} vs {top['method']}", (r["method"], r["mode"]), (top["method"], top["mode"]))
                 for _, r in part.iterrows() if r["method"] != top["method"]]
        if pairs:
            frames.append(comparisons(results, pairs, [protocol], metric=NOISE_METRIC))
    for _, r in table.iterrows():
        b_label, b_mode = best[r["protocol"]]
        a = as_stat(results[r["method"]][r["protocol"]][r["mode"]][NOISE_METRIC])
        b = as_stat(results[b_label][r["protocol"]][b_mode][NOISE_METRIC])
        marks.append(True if r["method"] == b_label else within_noise(a, b))
    noise = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return marks, noise


def comparison_figure(table) -> Any:
    """A plotly table of a comparison DataFrame (metrics in percent, mean ± std over the seeds)."""
    import plotly.graph_objects as go

    def pm(col: str):
        out = []
        for mean, std in zip(table[col].tolist(), table[f"{col}_std"].tolist()):
            if isinstance(mean, float) and math.isnan(mean):
                out.append("-")
            else:
                out.append(f"{100 * mean:.2f} ± {'n/a' if std is None or math.isnan(std) else f'{100 * std:.2f}'}")
        return out

    def num(col: str, digits: int):
        return ["-" if isinstance(v, float) and math.isnan(v) else f"{v:.{digits}f}" for v in table[col].tolist()]

    headers = ["method", "protocol", "mode", "R1 %", "mAP %", "mINP %", "seeds", "mAP within noise of best",
               "trainable M", "train s", "infer img/s", "note"]
    cells = [table["method"].tolist(), table["protocol"].tolist(), table["mode"].tolist(), pm("rank1"), pm("mAP"),
             pm("mINP"), [str(v) for v in table["seeds"].tolist()],
             ["yes" if v else "no" for v in table["within_noise_of_best"].tolist()], num("trainable_params_M", 2),
             num("train_seconds", 1), num("inference_images_per_s", 1), [str(v) for v in table["note"].tolist()]]
    fig = go.Figure(go.Table(header=dict(values=headers, align="left"), cells=dict(values=cells, align="left")))
    fig.update_layout(title="Methods x protocols (same data, budget, seeds and evaluator; mean ± std over seeds)",
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig


def compare_methods(
    data: str = "",
    out: str | Path = "runs/compare",
    methods: Sequence[str | MethodEntry] | None = None,
    preset: str = "cpu",
    protocols: Sequence[str] | None = None,
    budget: dict[str, Any] | None = None,
    runs: dict[str, str | Path | Sequence[str | Path]] | None = None,
    seeds: Sequence[int] | None = None,
    split=None,
    train_missing: bool = True,
    throughput: bool = True,
    throughput_batch_size: int = 64,
    device: str = "cpu",
    stage2_budget: dict[str, Any] | None = None,
    seed: int | None = None,
) -> Comparison:
    """Train/reuse one run per method and seed and tabulate them on the same protocols.

    ``data``: a data spec (``synthag:DIR``); ``split`` (a DatasetSplit) replaces loading it.
    ``methods``: names of the method table or ``MethodEntry`` (label, method, model overrides); default: the
    whole table. A ``stage2`` method (``sdreid-stage2``) needs the method it requires (``sdreid``) earlier in
    the list (it trains on those runs' features); ``stage2_budget``: ``Stage2Config`` overrides for it
    (``epochs``, ``batch_size``, ``model``, ...). ``budget``: TrainConfig overrides shared by every method
    (``epochs``, ``max_iters_per_epoch``, ``p``, ``k``, ``lr``, ...). ``seeds``: the training seeds (default
    ``DEFAULT_SEEDS``; ``seed`` is the one-seed spelling of older code). ``runs`` maps a label to finished runs
    to reuse as they are (one path, or one per seed: they are that method's seeds); otherwise
    ``OUT/<label>/seed<s>`` is reused when finished for this config, else trained (``train_missing``).
    ``protocols`` default to the first run's protocol. ``throughput``/``throughput_batch_size``: measure
    inference images/s with batches of that size on ``device`` (the device the runs are loaded on).
    """
    import pandas as pd

    entries = _entries(available_methods() if methods is None else methods)
    seeds = list(seeds) if seeds is not None else ([seed] if seed is not None else list(DEFAULT_SEEDS))
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"compare_methods: seeds must be distinct, got {seeds}")
    out = Path(out)
    budget = dict(budget or {})
    given = {k: [Path(v)] if isinstance(v, (str, Path)) else [Path(p) for p in v] for k, v in (runs or {}).items()}
    unknown = set(given) - {e.label for e in entries}
    if unknown:
        raise ValueError(f"compare_methods: runs given for {sorted(unknown)}, which are not among the methods "
                         f"{[e.label for e in entries]}")
    protocol = protocols[0] if protocols else (split.protocol if split is not None else "ALL")
    splits = {split.protocol: split} if split is not None else None
    rows: list[dict[str, Any]] = []
    results: dict[str, Any] = {}
    # per method name: its runs, per-seed training seconds and costs (what a stage-2 method builds on)
    done: dict[str, tuple[list[Path], list[float], dict[str, Any]]] = {}
    for entry in progress_bar(entries, desc="compare methods"):
        spec = method_spec(entry.method)
        folder = out / entry.label.replace(" ", "_")
        if spec.kind == "stage2":
            if spec.requires not in done:
                raise ValueError(
                    f"compare_methods: '{entry.label}' ({spec.summary or spec.name}) needs the stage-1 method "
                    f"'{spec.requires}' earlier in methods (it trains on that method's runs)"
                )
            base_dirs, base_secs, base_costs = done[spec.requires]
            dirs = given.get(entry.label) or [
                _ensure_stage2_run(entry, folder / f"seed{s}", base_dirs[i], preset, dict(stage2_budget or {}), s,
                                   train_missing)
                for i, s in enumerate(seeds[: len(base_dirs)])
            ]
            secs = [base_secs[min(i, len(base_secs) - 1)] + Run(d).training_totals()[0] for i, d in enumerate(dirs)]
            costs = _stage2_costs(Run(dirs[0], device=device), base_costs, device)
        else:
            dirs = given.get(entry.label) or [
                _ensure_engine_run(entry, folder / f"seed{s}", data, protocol, preset, budget, s, split, train_missing)
                for s in seeds
            ]
            secs = [Run(d).training_totals()[0] for d in dirs]
            costs = _engine_costs(Run(dirs[0], device=device), throughput, throughput_batch_size, device)
        protos = list(protocols) if protocols else [Run(dirs[0]).protocol]
        group, results[entry.label] = _group_rows(entry.label, dirs, protos, splits, costs, secs, device)
        rows.extend(group)
        done[entry.method] = (dirs, secs, costs)  # a later entry of the same method is what follows it
    table = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "within_noise_of_best"])
    marks, noise = _mark_noise(table, results) if len(table) else ([], pd.DataFrame())
    table.insert(COLUMNS.index("within_noise_of_best"), "within_noise_of_best", marks)
    return Comparison(table, comparison_figure(table), results, noise)
