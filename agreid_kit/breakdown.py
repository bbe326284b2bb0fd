"""Per camera-pair metrics: mAP / Rank-1 / mINP of each (query camera, gallery camera) pair.

For a pair (a, b), the queries seen by camera a are ranked against the gallery restricted to camera
b, with the evaluator's rules unchanged (``eval.evaluate_ranking``: same pid AND same camid removed,
the split's gallery rules applied). A query with no positive left in that restricted gallery is
skipped, so a pair where every positive is junk (a == b under the real-camera rule) shows no value
rather than zero. The margins ``all`` are the full gallery (per query camera) and all queries (per
gallery camera); the ``(all, all)`` cell is the usual overall result.

``key`` chooses what "camera" means: ``camid`` (the split's camera id, the one the junk rule uses;
protocols that collapse cameras to views make this the view), ``raw_camid`` (the sensor, falling
back to ``camid`` when a reader does not set it) or ``view`` (aerial / ground / wearable).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from agreid_kit import VIEW_NAMES

CAMERA_KEYS = ("camid", "raw_camid", "view")
ALL = "all"


def _camera_labels(records: Sequence[Any], key: str) -> np.ndarray:
    if key == "camid":
        return np.array([str(r.camid) for r in records], dtype=object)
    if key == "raw_camid":
        return np.array([str(r.raw_camid if r.raw_camid is not None else r.camid) for r in records], dtype=object)
    if key == "view":
        return np.array([VIEW_NAMES[r.view] for r in records], dtype=object)
    raise ValueError(f"camera breakdown: key must be one of {CAMERA_KEYS}, got {key!r}")


def _sort_labels(labels) -> list[str]:
    def order(v: str):
        if v in VIEW_NAMES:
            return (0, VIEW_NAMES.index(v), v)
        return (1, int(v), v) if v.lstrip("-").isdigit() else (2, 0, v)

    return sorted(set(labels), key=order)


def camera_pair_table(fs, split, mode: str = "real", metric: str = "cosine", key: str = "camid",
                      dist=None, margins: bool = True) -> pd.DataFrame:
    """One row per (query_cam, gallery_cam): n_query, n_valid, n_gallery, mAP, rank1, mINP (fractions).

    ``dist``: a precomputed (Q, G) distance matrix in split order (e.g. re-ranked); else the plain
    ``compute_distance`` of ``fs``'s ``mode`` descriptors. Pairs without a valid query have NaN metrics.
    """
    import torch

    from agreid_kit.eval import evaluate_ranking, ranking_inputs
    from agreid_kit.rerank import split_distance

    q_lab, g_lab = _camera_labels(split.query, key), _camera_labels(split.gallery, key)
    d = torch.as_tensor(dist) if dist is not None else split_distance(fs, split, mode, metric)
    if tuple(d.shape) != (len(split.query), len(split.gallery)):
        raise ValueError(f"camera breakdown: distances {tuple(d.shape)} do not match the split's "
                         f"{len(split.query)} x {len(split.gallery)}")
    inputs = ranking_inputs(split)
    qp, gp = inputs["q_pids"].numpy(), inputs["g_pids"].numpy()
    qc, gc = inputs["q_camids"].numpy(), inputs["g_camids"].numpy()
    rules = [(m, qk.numpy(), gk.numpy()) for m, qk, gk in inputs.get("gallery_rules", [])]
    q_groups = [(c, np.flatnonzero(q_lab == c)) for c in _sort_labels(q_lab)]
    g_groups = [(c, np.flatnonzero(g_lab == c)) for c in _sort_labels(g_lab)]
    if margins:
        q_groups.append((ALL, np.arange(len(q_lab))))
        g_groups.append((ALL, np.arange(len(g_lab))))
    rows = []
    for gcam, cols in g_groups:
        for qcam, qrows in q_groups:
            row = {"query_cam": qcam, "gallery_cam": gcam, "n_query": int(qrows.size), "n_gallery": int(cols.size),
                   "n_valid": 0, "mAP": np.nan, "rank1": np.nan, "mINP": np.nan}
            # Positives left after the junk rule and gallery rules: without one the evaluator would refuse the pair.
            pos = (qp[qrows, None] == gp[None, cols]) & (qc[qrows, None] != gc[None, cols])
            for m, qk, gk in rules:
                same = qk[qrows, None] == gk[None, cols]
                pos &= ~same if m == "exclude_same" else same
            if pos.any():
                res = evaluate_ranking(
                    d[torch.as_tensor(qrows)][:, torch.as_tensor(cols)], qp[qrows], gp[cols], qc[qrows], gc[cols],
                    max_rank=1, gallery_rules=[(m, qk[qrows], gk[cols]) for m, qk, gk in rules] or None,
                )
                row.update(n_valid=res.n_valid, mAP=res.mAP, rank1=float(res.cmc[0]), mINP=res.mINP)
            rows.append(row)
    df = pd.DataFrame(rows)
    df.attrs.update(key=key, protocol=split.protocol, mode=mode)
    return df


def camera_pair_matrix(df: pd.DataFrame, value: str = "mAP") -> pd.DataFrame:
    """``camera_pair_table`` pivoted: rows query camera, columns gallery camera, cells ``value``."""
    if value not in df.columns:
        raise ValueError(f"camera_pair_matrix: no column {value!r}; have {list(df.columns)}")
    q_order = list(dict.fromkeys(df["query_cam"]))
    g_order = list(dict.fromkeys(df["gallery_cam"]))
    q_order = _sort_labels([c for c in q_order if c != ALL]) + ([ALL] if ALL in q_order else [])
    g_order = _sort_labels([c for c in g_order if c != ALL]) + ([ALL] if ALL in g_order else [])
    mat = df.pivot(index="query_cam", columns="gallery_cam", values=value)
    return mat.reindex(index=q_order, columns=g_order)


def format_camera_matrix(df: pd.DataFrame, value: str = "mAP") -> str:
    """The pivot of ``value`` in percent as fixed-width text ('-' where no query was valid)."""
    mat = camera_pair_matrix(df, value)
    width = max(6, *(len(str(c)) + 1 for c in mat.columns))
    corner = "q \\ g"
    head = f"{corner:>8s}" + "".join(f"{str(c):>{width}s}" for c in mat.columns)
    lines = [head]
    for idx, row in mat.iterrows():
        cells = "".join(f"{'-':>{width}s}" if pd.isna(v) else f"{100 * v:{width}.1f}" for v in row)
        lines.append(f"{str(idx):>8s}{cells}")
    return "\n".join(lines)


def camera_pair_figure(df: pd.DataFrame, value: str = "mAP", title: str | None = None) -> go.Figure:
    """Plotly heatmap of ``value`` (percent) per (query camera, gallery camera), valid-query counts in the hover."""
    mat = camera_pair_matrix(df, value)
    valid = camera_pair_matrix(df, "n_valid")
    z = (100 * mat).to_numpy(dtype=float)
    text = [["" if np.isnan(v) else f"{v:.1f}" for v in row] for row in z]
    hover = [[f"query cam {q}<br>gallery cam {g}<br>{value} {'-' if np.isnan(z[i, j]) else f'{z[i, j]:.2f}'}%"
              f"<br>{int(valid.iloc[i, j]) if not pd.isna(valid.iloc[i, j]) else 0} valid queries"
              for j, g in enumerate(mat.columns)] for i, q in enumerate(mat.index)]
    fig = go.Figure(go.Heatmap(
        z=z, x=[str(c) for c in mat.columns], y=[str(i) for i in mat.index], text=text, texttemplate="%{text}",
        hovertext=hover, hoverinfo="text", colorscale="Viridis", zmin=0, zmax=100, colorbar=dict(title=f"{value} %"),
    ))
    key = df.attrs.get("key", "camid")
    fig.update_layout(
        title=title or f"{value} per camera pair ({df.attrs.get('protocol', '')}, {df.attrs.get('mode', '')}; camera = "
                       f"{key})",
        xaxis_title="gallery camera", yaxis_title="query camera", yaxis_autorange="reversed",
        template="plotly_white",
    )
    return fig


__all__ = ["camera_pair_table", "camera_pair_matrix", "camera_pair_figure", "format_camera_matrix", "CAMERA_KEYS"]
