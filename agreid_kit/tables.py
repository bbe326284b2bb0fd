"""Result tables over training seeds (the main job's report, the method comparison, the README).

Every number is a mean over seeds with its sample std (:mod:`agreid_kit.seeds`); comparisons say
whether a difference exceeds that spread. Inputs are the JSON the kit writes: ``REPORT/metrics.json``
(``results``: ``{run: {protocol: {mode: {metric: {mean, std, n, values}}}}}``) and
``REPORT/tradeoff.csv`` (one row per seed, tau, protocol and mode).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import pandas as pd

from agreid_kit.seeds import as_stat, difference, stat

SHOWN_METRICS = (("rank1", "Rank-1"), ("rank5", "Rank-5"), ("rank10", "Rank-10"), ("mAP", "mAP"), ("mINP", "mINP"))


def seed_table(results: Mapping[str, Any], rows: Sequence[tuple[str, str, str]],
               protocols: Sequence[str]) -> pd.DataFrame:
    """One row per protocol and ``(label, run, mode)``: ``<metric>`` (mean %), ``<metric> std`` and the
    display column ``<metric> (mean ± std)``; ``seeds`` is the number of seeds behind each row."""
    out = []
    for protocol in protocols:
        for label, run, mode in rows:
            cell = results.get(run, {}).get(protocol, {}).get(mode)
            if cell is None:
                raise KeyError(f"no {mode!r} results for {label} ({run}) on {protocol!r}: evaluate that run on it")
            row: dict[str, Any] = {"protocol": protocol, "method": label, "features": mode}
            for key, name in SHOWN_METRICS:
                if key not in cell:
                    continue
                s = as_stat(cell[key])
                row[name] = 100 * s.mean
                row[f"{name} std"] = None if math.isnan(s.std) else 100 * s.std
                row[f"{name} (mean ± std)"] = s.format()
            row["seeds"] = as_stat(cell["mAP"]).n
            out.append(row)
    return pd.DataFrame(out)


def display_table(df: pd.DataFrame) -> pd.DataFrame:
    """The ``mean ± std`` columns of a :func:`seed_table`, named by metric, indexed for display."""
    shown = [c for c in df.columns if c.endswith("(mean ± std)")]
    keep = [c for c in ("protocol", "method", "features") if c in df.columns]
    out = df[keep + shown + (["seeds"] if "seeds" in df.columns else [])].copy()
    out.columns = [c.replace(" (mean ± std)", "") for c in out.columns]
    return out


def comparisons(results: Mapping[str, Any], pairs: Sequence[tuple[str, tuple[str, str], tuple[str, str]]],
                protocols: Sequence[str], metric: str = "mAP") -> pd.DataFrame:
    """``a - b`` per protocol for each ``(name, (run_a, mode_a), (run_b, mode_b))``, in points, with the
    paired per-seed std of the difference and the within-noise verdict."""
    out = []
    for protocol in protocols:
        for name, (ra, ma), (rb, mb) in pairs:
            a = as_stat(results[ra][protocol][ma][metric])
            b = as_stat(results[rb][protocol][mb][metric])
            d = difference(a, b)
            paired = d.get("paired") or {}
            out.append({
                "protocol": protocol, "comparison": name, "metric": metric, "delta": 100 * d["delta"],
                "delta std (paired)": None if paired.get("std") is None else 100 * paired["std"],
                "a": a.format(), "b": b.format(), "seeds": min(a.n, b.n),
                "verdict": "within noise" if d["within_noise"] else ("a better" if d["delta"] > 0 else "b better"),
            })
    return pd.DataFrame(out)


def tradeoff_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per tau, protocol and mode: mean and std over seeds of Rank-1 / mAP and of the latency."""
    if "seed" not in df.columns:
        df = df.assign(seed=0)
    rows = []
    for (tau, protocol, mode), part in df.groupby(["tau", "protocol", "mode"], sort=True):
        row: dict[str, Any] = {"tau": int(tau), "protocol": protocol, "mode": mode,
                               "seeds": int(part["seed"].nunique())}
        for col in ("rank1", "mAP", "sec_per_1000"):
            s = stat(part[col].tolist())
            scale = 1.0 if col == "sec_per_1000" else 100.0
            row[col] = scale * s.mean
            row[f"{col}_std"] = None if math.isnan(s.std) else scale * s.std
        rows.append(row)
    return pd.DataFrame(rows)


def tradeoff_knee(summary: pd.DataFrame, protocol: str, mode: str = "real+gen", metric: str = "mAP") -> dict[str, Any]:
    """The smallest tau whose mean is within one std (over seeds) of the best tau's mean.

    With a single seed there is no spread: the knee is then the best tau itself. Returns
    ``{"tau", "best_tau", "best", "best_std", "threshold"}`` (accuracy in %)."""
    part = summary[(summary["protocol"] == protocol) & (summary["mode"] == mode)].sort_values("tau")
    if part.empty:
        raise ValueError(f"trade-off has no rows for protocol {protocol!r} and mode {mode!r}")
    best = part.loc[part[metric].idxmax()]
    spread = best.get(f"{metric}_std")
    spread = 0.0 if spread is None or (isinstance(spread, float) and math.isnan(spread)) else float(spread)
    threshold = float(best[metric]) - spread
    knee = part[part[metric] >= threshold - 1e-9].iloc[0]
    return {"tau": int(knee["tau"]), "best_tau": int(best["tau"]), "best": float(best[metric]), "best_std": spread,
            "threshold": threshold, "protocol": protocol, "mode": mode, "metric": metric}

