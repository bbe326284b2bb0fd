"""One comparison table of every method of the kit on the same data, protocols and budget.

``compare_methods`` trains (or reuses) one engine run per method with the *same* TrainConfig budget
(epochs, P x K, iterations per epoch, optimiser, seed) and data, evaluates every run on the same
protocols with the same evaluator, and returns a tidy DataFrame plus a plotly table:
one row per (method, protocol, feature mode) with Rank-1/5/10, mAP, mINP, trainable parameters,
training time (sum of the run's epoch ``seconds`` in log.jsonl) and inference images/s.

Inference images/s is the model's own throughput: ``model.embed`` on batches of random images of
the model's input size on the run's device after one warm-up batch, excluding image decoding
(which is the same for every method). SD-ReID stage 2 is trained by the diffusion trainer on the
``sdreid`` (stage 1) run of the same comparison (or a run given in ``runs``); its row reports the
``real+gen`` descriptor, and its training time and images/s are those of the whole pipeline
(stage 1 + stage 2 training; stage-1 embedding + the measured generation time per image).

Example (what the compare_methods notebook does)::

    from agreid_kit.compare import compare_methods
    from agreid_kit.viz import save_figure

    table, fig = compare_methods(
        data="synthag:data/synthag-small", out="runs/compare", preset="cpu",
        protocols=["A->G", "G->A"], budget=dict(epochs=4, max_iters_per_epoch=50),
        stage2_budget=dict(epochs=10),  # Stage2Config overrides for the SD-ReID stage-2 row
        runs={"sdreid stage 1": "runs/sdreid"},  # optional: finished runs to reuse
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

from agreid_kit.utils.progress import progress_bar

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


def _stage2_finished(run_dir: Path) -> bool:
    if not (run_dir / "checkpoints" / "last.pt").is_file() or not (run_dir / "features" / "test.json").is_file():
        return False
    head = json.loads((run_dir / "features" / "test.json").read_text())
    return any(k.startswith("gen:") for k in head.get("tensors", {}))


def _train_stage2(run_dir: Path, stage1_dir: Path, preset: str, budget: dict, seed: int) -> None:
    from agreid_kit.diffusion.config import Stage2Config
    from agreid_kit.diffusion.train import train_stage2

    train_stage2(Stage2Config(stage1=str(stage1_dir), out=str(run_dir), preset=preset, seed=seed, **budget))


def _stage2_costs(run_dir: Path, stage1_row: dict[str, Any] | None, device: str) -> dict[str, Any]:
    """Parameters of the stage-2 model; pipeline training time and images/s (stage 1 + stage 2)."""
    from agreid_kit.diffusion.loading import load_stage2

    model, _ = load_stage2(run_dir, device=device)
    trainable, total = count_parameters(model)
    secs, epochs, iters = _log_totals(run_dir)
    head = json.loads((run_dir / "features" / "test.json").read_text())
    gen = (head.get("meta") or {}).get("generation") or {}
    s1_ips = stage1_row["inference_images_per_s"] if stage1_row else math.nan
    s1_secs = stage1_row["train_seconds"] if stage1_row else math.nan
    per_image = 1.0 / s1_ips + float(gen.get("seconds_per_1000", math.nan)) / 1000.0
    return {
        "trainable_params_M": trainable / 1e6, "total_params_M": total / 1e6,
        "train_seconds": s1_secs + secs, "epochs": epochs, "iters": iters,
        "inference_images_per_s": 1.0 / per_image if per_image > 0 else math.nan,
        "note": "stage 1 + stage 2: training time and images/s cover the whole pipeline; params are stage 2's",
    }


def _rows_for_run(
    label: str, run_dir: Path, protocols: Sequence[str] | None, splits: dict | None, throughput: bool, batch_size: int,
    device: str, stage1_row: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    from agreid_kit.engine.evaluate import evaluate_run
    from agreid_kit.engine.run import load_run
    import torch

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
    costs: dict[str, Any] = {}
    if stage2:
        costs = _stage2_costs(run_dir, stage1_row, device)
    else:
        model = run.model
        trainable, total = count_parameters(model)
        if throughput:
            ips = inference_throughput(model, batch_size=batch_size, device=device)
        meta = getattr(model, "feature_meta", {}) or {}
        if meta.get("svpr_untrained_text"):
            note.append("UNTRAINED text encoder (small CLIP from config)")
        if "svpr_attribute_branch" in meta and not meta["svpr_attribute_branch"]:
            note.append("attribute branch off")
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
                    "inference_images_per_s": ips, "feature_dim": int(fs.descriptor(mode, torch.arange(1)).shape[1]),
                    "device": device,
                    "run": str(run_dir), "note": "; ".join(note),
                    **costs,
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
    throughput_batch_size: int = 64,
    device: str = "cpu",
    stage2_budget: dict[str, Any] | None = None,
) -> Comparison:
    """Train/reuse one run per method and tabulate them on the same protocols.

    ``data``: a data spec (``synthag:DIR``); ``split`` (a DatasetSplit) replaces loading it.
    ``methods``: names or ``MethodEntry`` (label, method, model overrides); ``sdreid-stage2`` needs an
    ``sdreid`` entry earlier in the list (its stage-1 run); ``stage2_budget``: ``Stage2Config``
    overrides for it (``epochs``, ``batch_size``, ``model``, ...). ``budget``: TrainConfig overrides shared by every method
    (``epochs``, ``max_iters_per_epoch``, ``p``, ``k``, ``lr``, ...). ``runs`` maps a label to an
    existing run directory to reuse; otherwise ``OUT/<label>`` is reused when finished, else trained
    (``train_missing``). ``protocols`` default to the first run's protocol. Returns
    ``Comparison(table, figure)``, unpackable as ``table, fig = compare_methods(...)``.
    ``throughput``/``throughput_batch_size``: measure inference images/s with batches of that size
    on ``device`` (the device the runs are loaded on for evaluation).
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
    stage1: tuple[Path, dict[str, Any] | None] | None = None  # the sdreid run and its first row
    for entry in progress_bar(entries, desc="compare methods"):
        run_dir = runs.get(entry.label, out / entry.label.replace(" ", "_"))
        if entry.method == STAGE2:
            if stage1 is None:
                raise ValueError(
                    f"compare_methods: '{entry.label}' (SD-ReID stage 2) needs the stage-1 method 'sdreid' earlier in "
                    "methods (it trains on that run's features)"
                )
            if not _stage2_finished(run_dir):
                if not train_missing:
                    raise FileNotFoundError(f"compare_methods: no finished stage-2 run for {entry.label!r} at {run_dir}")
                _train_stage2(run_dir, stage1[0], preset, dict(stage2_budget or {}), seed)
            rows.extend(_rows_for_run(entry.label, run_dir, protocols, splits, throughput, throughput_batch_size, device,
                                      stage1_row=stage1[1]))
            continue
        if not _run_finished(run_dir):
            if not train_missing:
                raise FileNotFoundError(f"compare_methods: no finished run for {entry.label!r} at {run_dir} (train_missing=False)")
            if not data and split is None:
                raise ValueError("compare_methods: pass data='kind:DIR' (or split=...) to train the missing runs")
            _train_run(entry, run_dir, data, protocol, preset, budget, seed, split)
        new_rows = _rows_for_run(entry.label, run_dir, protocols, splits, throughput, throughput_batch_size, device)
        if entry.method == "sdreid":
            stage1 = (run_dir, new_rows[0] if new_rows else None)
        rows.extend(new_rows)
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return Comparison(table, comparison_figure(table))
