"""One comparison table of every method of the kit on the same data, protocols and budget.

``compare_methods`` trains (or reuses) one engine run per method with the *same* TrainConfig budget
(epochs, P x K, iterations per epoch, optimiser, seed) and data, evaluates every run on the same
protocols with the same evaluator, and returns a tidy DataFrame plus a plotly table:
one row per (method, protocol, feature mode) with Rank-1/5/10, mAP, mINP, trainable parameters,
training time (sum of the run's epoch ``seconds`` in log.jsonl) and inference images/s.

Inference images/s is the model's own throughput: ``model.embed`` on batches of random images of
the model's input size on the run's device after one warm-up batch, excluding image decoding
(which is the same for every method). SD-ReID stage 2 is trained by its own trainer, so its run
is passed in ``runs`` (its row reports the ``real+gen`` descriptor; its training time is stage 2's
own log, and stage 1's is in the ``sdreid`` row).

Example (what the compare_methods notebook does)::

    from agreid_kit.compare import compare_methods
    from agreid_kit.viz import save_figure

    table, fig = compare_methods(
        data="synthag:data/synthag-small", out="runs/compare", preset="cpu",
        protocols=["A->G", "G->A"], budget=dict(epochs=4, max_iters_per_epoch=50),
        runs={"sdreid stage 2": "runs/sdreid-stage2"},  # optional: finished runs to reuse
    )
    table.pivot_table(index="method", columns="protocol", values="mAP")
    save_figure(fig, "runs/compare/table")
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Sequence

from tqdm.auto import tqdm

DEFAULT_METHODS = ("vit", "vdt", "vif", "visa", "svpr", "sdreid", "sdreid-stage2")
STAGE2 = "sdreid-stage2"
LABELS = {"sdreid": "sdreid stage 1", STAGE2: "sdreid stage 2"}
METRIC_COLUMNS = ("rank1", "rank5", "rank10", "mAP", "mINP")
COLUMNS = (
    "method", "protocol", "mode", *METRIC_COLUMNS, "n_query", "trainable_params_M", "total_params_M",
    "train_seconds", "epochs", "iters", "inference_images_per_s", "feature_dim", "device", "run", "note",
)


class Comparison(NamedTuple):
    """``table`` (pandas DataFrame, columns ``COLUMNS``) and ``figure`` (plotly table of it)."""

    table: Any
    figure: Any


@dataclass
class MethodEntry:
    """One row group: ``label`` in the table, engine ``method`` and model overrides (e.g. VIF ablations)."""

    label: str
    method: str
    model: dict[str, Any] = field(default_factory=dict)


def _entries(methods: Sequence[str | MethodEntry]) -> list[MethodEntry]:
    out = []
    for m in methods:
        out.append(m if isinstance(m, MethodEntry) else MethodEntry(LABELS.get(m, m), m))
    labels = [e.label for e in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ValueError(f"compare_methods: method labels must be unique, repeated: {dup}")
    return out


def _log_totals(run_dir: Path) -> tuple[float, int, int]:
    """(training seconds, epochs, iterations) from RUN/log.jsonl."""
    path = run_dir / "log.jsonl"
    if not path.is_file():
        return math.nan, 0, 0
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    secs = sum(float(r.get("seconds", r.get("train_seconds", 0.0))) for r in rows)
    return secs, len(rows), int(sum(int(r.get("iters", 0)) for r in rows))


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts (SVPR's frozen text encoder counts only in total)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def inference_throughput(model, batch_size: int = 64, batches: int = 3, device: str | None = None, seed: int = 0) -> float:
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


def _run_finished(run_dir: Path) -> bool:
    return (run_dir / "checkpoints" / "last.pt").is_file() and (run_dir / "features" / "test.json").is_file()


def _train_run(entry: MethodEntry, run_dir: Path, data: str, protocol: str, preset: str, budget: dict, seed: int, split) -> None:
    from agreid_kit.engine.config import make_config
    from agreid_kit.engine.train import train

    cfg = make_config(entry.method, str(run_dir), preset, data=data, protocol=protocol, model=dict(entry.model), seed=seed, **budget)
    train(cfg, split=split)


def _rows_for_run(
    label: str, run_dir: Path, protocols: Sequence[str] | None, splits: dict | None, throughput: bool, device: str
) -> list[dict[str, Any]]:
    from agreid_kit.engine.evaluate import evaluate_run
    from agreid_kit.engine.run import load_run
    from agreid_kit.features import FeatureSet

    run = load_run(run_dir, device=device)
    stage2 = run.method == STAGE2
    protos = list(protocols) if protocols else [run.protocol]
    modes = ("real+gen",) if stage2 else ("real",)
    results = evaluate_run(run_dir, protos, modes=modes, splits=splits)
    secs, epochs, iters = _log_totals(run_dir)
    fs = FeatureSet.load(run.features_path("test"))
    note = []
    trainable = total = 0
    ips = math.nan
    if not stage2:
        model = run.model
        trainable, total = count_parameters(model)
        if throughput:
            ips = inference_throughput(model, device=device)
        meta = getattr(model, "feature_meta", {}) or {}
        if meta.get("svpr_untrained_text"):
            note.append("UNTRAINED text encoder (small CLIP from config)")
        if "svpr_attribute_branch" in meta and not meta["svpr_attribute_branch"]:
            note.append("attribute branch off")
    else:
        note.append("stage-2 generator on the stage-1 run; params/throughput not measured here")
    rows = []
    for protocol, by_mode in results.items():
        for mode, m in by_mode.items():
            rows.append(
                {
                    "method": label, "protocol": protocol, "mode": mode,
                    **{k: float(m.get(k, math.nan)) for k in METRIC_COLUMNS},
                    "n_query": m.get("n_valid", m.get("n_query")),
                    "trainable_params_M": trainable / 1e6 if trainable else math.nan,
                    "total_params_M": total / 1e6 if total else math.nan,
                    "train_seconds": secs, "epochs": epochs, "iters": iters,
                    "inference_images_per_s": ips, "feature_dim": fs.dim, "device": device,
                    "run": str(run_dir), "note": "; ".join(note),
                }
            )
    return rows


def comparison_figure(table) -> Any:
    """A plotly table of a comparison DataFrame (metrics in percent)."""
    import plotly.graph_objects as go

    shown = ["method", "protocol", "mode", "rank1", "mAP", "mINP", "trainable_params_M", "train_seconds", "inference_images_per_s", "note"]
    headers = ["method", "protocol", "mode", "R1 %", "mAP %", "mINP %", "trainable M", "train s", "infer img/s", "note"]

    def fmt(col: str, v: Any) -> str:
        if isinstance(v, float):
            if math.isnan(v):
                return "-"
            return f"{100 * v:.2f}" if col in METRIC_COLUMNS else (f"{v:.2f}" if col.endswith("_M") else f"{v:.1f}")
        return str(v)

    cells = [[fmt(c, v) for v in table[c].tolist()] for c in shown]
    fig = go.Figure(go.Table(header=dict(values=headers, align="left"), cells=dict(values=cells, align="left")))
    fig.update_layout(title="Methods x protocols (same data, budget and evaluator)", margin=dict(l=10, r=10, t=40, b=10))
    return fig


def compare_methods(
    data: str = "",
    out: str | Path = "runs/compare",
    methods: Sequence[str | MethodEntry] = DEFAULT_METHODS,
    preset: str = "cpu",
    protocols: Sequence[str] | None = None,
    budget: dict[str, Any] | None = None,
    runs: dict[str, str | Path] | None = None,
    seed: int = 0,
    split=None,
    train_missing: bool = True,
    throughput: bool = True,
    device: str = "cpu",
) -> Comparison:
    """Train/reuse one run per method and tabulate them on the same protocols.

    ``data``: a data spec (``synthag:DIR``); ``split`` (a DatasetSplit) replaces loading it.
    ``methods``: names or ``MethodEntry`` (label, method, model overrides); ``sdreid-stage2`` needs a
    finished stage-2 run in ``runs``. ``budget``: TrainConfig overrides shared by every method
    (``epochs``, ``max_iters_per_epoch``, ``p``, ``k``, ``lr``, ...). ``runs`` maps a label to an
    existing run directory to reuse; otherwise ``OUT/<label>`` is reused when finished, else trained
    (``train_missing``). ``protocols`` default to the first run's protocol. Returns
    ``Comparison(table, figure)``, unpackable as ``table, fig = compare_methods(...)``.
    """
    import pandas as pd

    entries = _entries(methods)
    out = Path(out)
    budget = dict(budget or {})
    runs = {k: Path(v) for k, v in (runs or {}).items()}
    unknown = set(runs) - {e.label for e in entries}
    if unknown:
        raise ValueError(f"compare_methods: runs given for {sorted(unknown)}, which are not among the methods {[e.label for e in entries]}")
    protocol = protocols[0] if protocols else (split.protocol if split is not None else "ALL")
    splits = {split.protocol: split} if split is not None else None
    rows: list[dict[str, Any]] = []
    for entry in tqdm(entries, desc="compare methods"):
        run_dir = runs.get(entry.label, out / entry.label.replace(" ", "_"))
        if not _run_finished(run_dir):
            if entry.method == STAGE2:
                raise ValueError(
                    f"compare_methods: '{entry.label}' needs a finished SD-ReID stage-2 run; none at {run_dir}. "
                    "Train stage 2 on the sdreid run first and pass runs={'%s': DIR}, or leave it out of methods" % entry.label
                )
            if not train_missing:
                raise FileNotFoundError(f"compare_methods: no finished run for {entry.label!r} at {run_dir} (train_missing=False)")
            if not data and split is None:
                raise ValueError("compare_methods: pass data='kind:DIR' (or split=...) to train the missing runs")
            _train_run(entry, run_dir, data, protocol, preset, budget, seed, split)
        rows.extend(_rows_for_run(entry.label, run_dir, protocols, splits, throughput, device))
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return Comparison(table, comparison_figure(table))
