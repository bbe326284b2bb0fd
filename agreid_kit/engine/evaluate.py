"""``evaluate_run(RUN, protocols, modes)``: score RUN/features/test.* and write RUN/metrics.json.

Works for any run whose features/test.* exists (stage-1 engine runs and stage-2 runs alike).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

from agreid_kit.data.records import DatasetSplit

METRIC_KEYS = ("rank1", "rank5", "rank10", "mAP", "mINP", "n_query", "n_valid", "n_skipped")


def metrics_dict(result: Any) -> dict[str, Any]:
    """The evaluator's result as a plain dict of the reported metrics."""
    if hasattr(result, "as_dict"):
        result = result.as_dict()
    elif dataclasses.is_dataclass(result):
        result = dataclasses.asdict(result)
    elif not isinstance(result, dict):
        result = {k: getattr(result, k) for k in METRIC_KEYS if hasattr(result, k)}
    out = {}
    for k in METRIC_KEYS:
        if k in result:
            v = result[k]
            out[k] = v.item() if hasattr(v, "item") else v
    if "rank1" not in out and "cmc" in result:
        cmc = result["cmc"]
        for r in (1, 5, 10):
            out[f"rank{r}"] = float(cmc[r - 1])
    return out


def evaluate_featureset_split(fs, split: DatasetSplit, mode: str = "real"):
    """Score FeatureSet ``fs`` (holding the split's test images) on ``split`` under feature ``mode``.

    Like ``features.evaluate_featureset`` but through ``eval.evaluate_split``, so protocols with
    per-query gallery rules (``A<->G-strict``, CP2108 time modes) are honoured.
    """
    from agreid_kit.eval import evaluate_split

    qf = fs.descriptor(mode, fs.index_of(split.query))
    gf = fs.descriptor(mode, fs.index_of(split.gallery))
    return evaluate_split(split, qf, gf)


def evaluate_run(
    run_dir: str | Path,
    protocols: Sequence[str],
    modes: Sequence[str] = ("real",),
    splits: dict[str, DatasetSplit] | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """{protocol: {mode: {rank1, rank5, rank10, mAP, mINP, n_query, n_valid}}}; merged into RUN/metrics.json.

    ``splits`` supplies DatasetSplits by protocol instead of loading the run's data spec.
    """
    from agreid_kit.features import FeatureSet
    from agreid_kit.run import load_run

    run = load_run(run_dir)
    fs = FeatureSet.load(run.features_path("test"))
    verify_run_features(run, fs, modes)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for protocol in protocols:
        split = (splits or {}).get(protocol) or run.load_split(protocol)
        results[protocol] = {mode: metrics_dict(evaluate_featureset_split(fs, split, mode)) for mode in modes}
    run.merge_metrics(results)
    return results


def verify_run_features(run, fs, modes: Sequence[str] = ("real",)) -> None:
    """Refuse test features that this run did not make (copied from another run, or stale after a retrain).

    The real features must come from the checkpoint of the run that extracted them (a stage-2 run's
    real features are its stage-1 run's); generated ones from the stage-2 run's own checkpoint."""
    from agreid_kit.features import verify_origin
    from agreid_kit.run import Run

    stem = run.features_path("test")
    if run.method_spec.kind == "stage2":
        stage1 = Run(run.config.stage1)
        verify_origin(stem, stage1.last_checkpoint_path, fs.meta.get("checkpoint_sha256"), "real (stage-1) features",
                      f"agreid train --method {run.method} --stage1 {stage1.dir} --out {run.dir} --overwrite")
        if any(m != "real" for m in modes):
            verify_origin(stem, run.checkpoint_path, fs.meta.get("generation", {}).get("checkpoint_sha256"),
                          "generated features", f"agreid generate {run.dir}")
    else:
        verify_origin(stem, run.checkpoint_path, fs.meta.get("checkpoint_sha256"), "test features",
                      f"agreid extract {run.dir} --split test")


def format_table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """A fixed-width Rank-1/5/10, mAP, mINP table (percent), one row per protocol and mode."""
    # The mode column widens for long keys such as "real+gen+rerank" so the numbers stay aligned.
    w = max([10, *(len(mode) for by_mode in results.values() for mode in by_mode)])
    lines = [f"{'protocol':<12s} {'mode':<{w}s} {'R1':>6s} {'R5':>6s} {'R10':>6s} {'mAP':>6s} {'mINP':>6s} "
             f"{'queries':>8s}"]
    for protocol, by_mode in results.items():
        for mode, m in by_mode.items():
            vals = [100 * float(m.get(k, float("nan"))) for k in ("rank1", "rank5", "rank10", "mAP", "mINP")]
            q = f"{m.get('n_valid', '?')}/{m.get('n_query', '?')}"
            lines.append(f"{protocol:<12s} {mode:<{w}s} " + " ".join(f"{v:6.2f}" for v in vals) + f" {q:>8s}")
    return "\n".join(lines)
