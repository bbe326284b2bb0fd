"""Plotly figures of the workbench and ``save_figure`` (self-contained HTML and PNG).

Each figure function takes the output of an ``agreid_kit.analysis`` function and returns a
``plotly.graph_objects.Figure``; the widgets wrap the same figures in ``go.FigureWidget``.

PNG export uses kaleido 1.x, which drives a Chrome/Chromium binary. ``save_figure`` looks for one
in ``$BROWSER_PATH``, then ``chromium``, ``chromium-browser``, ``google-chrome`` on ``PATH`` and
never downloads one. Without a browser, ``png="require"`` (default) raises ``PNGExportError``
naming what to install; ``png="auto"`` skips the PNG with a warning; ``png="skip"`` never writes one.
"""

from __future__ import annotations

import base64
import io
import math
import os
import shutil
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from agreid_kit import VIEW_NAMES
from agreid_kit.utils.io import atomic_write_bytes, atomic_write_text

SCATTERGL_THRESHOLD = 5000
MATCH_COLOURS = {"match": "#2ca02c", "nonmatch": "#d62728", "junk": "#9e9e9e", "query": "#1f77b4"}
CATEGORICAL = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)
CONTINUOUS_COLUMNS = ("altitude", "pitch", "distance")


class PNGExportError(RuntimeError):
    """PNG export is impossible here (no Chrome/Chromium for kaleido, or kaleido failed)."""


# ---------------------------------------------------------------------------------------------
# Thumbnails
# ---------------------------------------------------------------------------------------------
def _placeholder(path: str, size: tuple[int, int], reason: str):
    from PIL import Image, ImageDraw

    h, w = size
    img = Image.new("RGB", (w, h), (190, 190, 190))
    draw = ImageDraw.Draw(img)
    # Wrap the path so the user sees which file is missing, not just a grey box.
    text = f"{reason}:\n" + "\n".join(path[i:i + max(4, w // 7)] for i in range(0, len(path), max(4, w // 7)))
    draw.multiline_text((3, 3), text, fill=(60, 60, 60), spacing=1)
    return img


@lru_cache(maxsize=4096)
def _thumbnail_cached(path: str, size: tuple[int, int], mtime: float):
    from PIL import Image

    h, w = size
    try:
        with Image.open(path) as im:
            return im.convert("RGB").resize((w, h), Image.BILINEAR)
    except (OSError, ValueError):
        return _placeholder(path, size, "unreadable")


def load_thumbnail(path: str | os.PathLike, size: tuple[int, int] = (128, 64)):
    """An RGB PIL image of ``size`` = (height, width) (cached); a grey tile naming the path if missing."""
    path = os.fspath(path)
    try:
        mtime = os.path.getmtime(path)
    except OSError:
        return _placeholder(path, size, "missing")
    return _thumbnail_cached(path, tuple(size), mtime)


def thumbnail_png(path: str | os.PathLike, size: tuple[int, int] = (128, 64)) -> bytes:
    buf = io.BytesIO()
    load_thumbnail(path, size).save(buf, format="PNG")
    return buf.getvalue()


def thumbnail_uri(path: str | os.PathLike, size: tuple[int, int] = (128, 64)) -> str:
    return "data:image/png;base64," + base64.b64encode(thumbnail_png(path, size)).decode("ascii")


# ---------------------------------------------------------------------------------------------
# Embeddings
# ---------------------------------------------------------------------------------------------
# Fig. 6: the real feature and each generated view get their own marker
KIND_SYMBOLS = {"real": "circle", "gen:aerial": "diamond", "gen:ground": "square", "gen:wearable": "triangle-up"}


def _hover(df: pd.DataFrame) -> list[str]:
    def fmt(v):
        return "-" if (isinstance(v, float) and math.isnan(v)) else (f"{v:.3g}" if isinstance(v, float) else str(v))

    return [
        f"pid {r.pid} cam {r.camid} {r.view_name}<br>{r.kind}<br>alt {fmt(r.altitude)} pitch {fmt(r.pitch)}"
        f"<br>{os.path.basename(str(r.path))}"
        for r in df.itertuples()
    ]


def embedding_figure(df: pd.DataFrame, color_by: str = "view_name", title: str | None = None,
                     marker_size: int = 6) -> go.Figure:
    """Scatter of an ``analysis.embedding_frame`` coloured by a column.

    Categorical columns (view_name, kind, camid, pid) give one trace per value (one trace with
    cycled colours above 20 values); continuous ones (altitude, pitch, distance) one trace with a
    colour bar. ``customdata`` holds the DataFrame's
    positional row of each point (what click and lasso handlers map back through ``df.iloc``).
    Above 5,000 points the traces are ``Scattergl``. Generated points are drawn as diamonds.
    """
    if color_by not in df.columns:
        raise ValueError(f"embedding_figure: color_by {color_by!r} is not a column; have {list(df.columns)}")
    scatter = go.Scattergl if len(df) > SCATTERGL_THRESHOLD else go.Scatter
    pos = np.arange(len(df))
    hover = np.array(_hover(df), dtype=object)
    def symbol(kind: str) -> str:
        return KIND_SYMBOLS.get(kind, "diamond" if kind.startswith("gen") else "circle")

    symbols = np.array([symbol(k) for k in df["kind"].astype(str)]) if "kind" in df else "circle"
    fig = go.Figure()
    if color_by in CONTINUOUS_COLUMNS:
        vals = df[color_by].to_numpy(dtype=float)
        fig.add_trace(scatter(
            x=df["x"].to_numpy(), y=df["y"].to_numpy(), mode="markers", name=color_by, customdata=pos,
            text=hover, hoverinfo="text",
            marker=dict(size=marker_size, color=vals, colorscale="Viridis", showscale=True,
                        colorbar=dict(title=color_by), symbol=symbols),
        ))
    else:
        keys = df[color_by].astype(str).to_numpy()
        values = list(dict.fromkeys(sorted(keys, key=lambda s: (len(s), s))))
        if len(values) > len(CATEGORICAL):
            # Hundreds of identities: one trace with cycled palette colours (hundreds of traces and
            # legend entries would make the widget sluggish and the legend useless).
            code = {v: i for i, v in enumerate(values)}
            colours = [CATEGORICAL[code[k] % len(CATEGORICAL)] for k in keys]
            fig.add_trace(scatter(
                x=df["x"].to_numpy(), y=df["y"].to_numpy(), mode="markers", name=f"{color_by} ({len(values)} values)",
                customdata=pos, text=hover, hoverinfo="text",
                marker=dict(size=marker_size, color=colours, symbol=symbols), showlegend=False,
            ))
        else:
            for i, value in enumerate(values):
                sel = keys == value
                fig.add_trace(scatter(
                    x=df["x"].to_numpy()[sel], y=df["y"].to_numpy()[sel], mode="markers",
                    name=f"{color_by}={value}", customdata=pos[sel], text=hover[sel], hoverinfo="text",
                    marker=dict(size=marker_size, color=CATEGORICAL[i],
                                symbol=symbols[sel] if not isinstance(symbols, str) else symbols),
                ))
    method = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}.get(df.attrs.get("method", ""), "")
    fig.update_layout(
        title=title or f"{method} embedding, coloured by {color_by}",
        xaxis=dict(title=f"{method} 1", showgrid=False, zeroline=False),
        yaxis=dict(title=f"{method} 2", showgrid=False, zeroline=False),
        dragmode="lasso", template="plotly_white", legend=dict(itemsizing="constant"),
    )
    return fig


# ---------------------------------------------------------------------------------------------
# Rank lists
# ---------------------------------------------------------------------------------------------
def camera_words(record) -> str:
    """The camera part of a caption. Protocols that collapse camera ids to views (CARGO A<->G) keep the
    sensor in ``raw_camid``: show that camera, not the collapsed id (which is the view, said beside it)."""
    raw = getattr(record, "raw_camid", None)
    return f"cam {raw}" if raw is not None else f"cam {record.camid}"


def _caption_value(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def rank_list_figure(ranklist, thumb_size: tuple[int, int] = (128, 64), title: str | None = None) -> go.Figure:
    """The query and its displayed top-k items as thumbnails with coloured borders and captions.

    Borders: green match, red non-match, grey junk (same pid and camera: shown, not ranked), blue
    query. Captions: rank (or "junk"), distance, pid, camera and view. Images are embedded as
    data URIs so the figure is self-contained in HTML and PNG.
    """
    h, w = thumb_size
    pad, gap, caption = 6, 14, 58
    cell_w = w + 2 * pad
    cells = [("query", ranklist.query, None)] + [(None, it.record, it) for it in ranklist.items]
    xs = [0.0]
    for i in range(1, len(cells)):
        xs.append(xs[-1] + cell_w + (gap * 2 if i == 1 else gap))
    width_px = xs[-1] + cell_w
    height_px = h + 2 * pad + caption
    fig = go.Figure()
    shapes, annotations = [], []
    for (tag, rec, item), x0 in zip(cells, xs):
        if item is None:
            colour, head = MATCH_COLOURS["query"], "query"
            ap = "-" if math.isnan(ranklist.ap) else f"{ranklist.ap:.3f}"
            inp = "-" if math.isnan(ranklist.inp) else f"{ranklist.inp:.3f}"
            line2 = f"AP {ap} INP {inp}"
        else:
            colour = MATCH_COLOURS["junk" if item.is_junk else ("match" if item.is_match else "nonmatch")]
            head = "junk" if item.is_junk else f"#{item.rank}"
            line2 = f"d={item.distance:.3f}"
        fig.add_layout_image(dict(
            source=thumbnail_uri(rec.path, (h, w)), xref="x", yref="y", x=x0 + pad, y=caption + pad + h,
            sizex=w, sizey=h, sizing="stretch", layer="below", xanchor="left", yanchor="top",
        ))
        shapes.append(dict(type="rect", xref="x", yref="y", x0=x0 + pad - 3, x1=x0 + pad + w + 3,
                           y0=caption + pad - 3, y1=caption + pad + h + 3, line=dict(color=colour, width=4)))
        text = f"<b>{head}</b><br>{line2}<br>pid {rec.pid} {camera_words(rec)}<br>{VIEW_NAMES[rec.view]}"
        annotations.append(dict(x=x0 + cell_w / 2, y=caption - 2, xref="x", yref="y", text=text, showarrow=False,
                                yanchor="top",
                                font=dict(size=9, color=colour if item is None or item.is_junk else "#222")))
    # One invisible point per cell carries hover text and the gallery index (customdata).
    fig.add_trace(go.Scatter(
        x=[x0 + cell_w / 2 for x0 in xs], y=[caption + pad + h / 2] * len(xs), mode="markers",
        marker=dict(size=max(w, h) // 2, opacity=0), hoverinfo="text",
        text=[os.path.basename(str(c[1].path)) for c in cells],
        customdata=[-1] + [it.gallery_index for it in ranklist.items], showlegend=False,
    ))
    fig.update_layout(
        shapes=shapes, annotations=annotations, template="plotly_white",
        title=title or f"query {ranklist.query_index} (pid {ranklist.query.pid}, {VIEW_NAMES[ranklist.query.view]}) "
                       f"[{ranklist.protocol} {ranklist.mode}]",
        xaxis=dict(range=[0, width_px], visible=False, fixedrange=True),
        yaxis=dict(range=[0, height_px], visible=False, scaleanchor="x", fixedrange=True),
        width=int(width_px + 40), height=int(height_px + 90), margin=dict(l=20, r=20, t=50, b=20),
    )
    return fig


# ---------------------------------------------------------------------------------------------
# Tables and curves
# ---------------------------------------------------------------------------------------------
def metrics_table_figure(df: pd.DataFrame, percent: bool = True, title: str = "Retrieval metrics") -> go.Figure:
    """A table of ``analysis.metrics_table``; fractions are shown in percent (one decimal)."""
    cells = []
    for col in df.columns:
        vals = df[col].tolist()
        if col in ("rank1", "rank5", "rank10", "mAP", "mINP") and percent:
            vals = ["-" if pd.isna(v) else f"{100 * v:.1f}" if v <= 1.0 else f"{v:.1f}" for v in vals]
        cells.append(vals)
    fig = go.Figure(go.Table(
        header=dict(values=[f"<b>{c}</b>" for c in df.columns], fill_color="#e8eef7", align="left"),
        cells=dict(values=cells, align="left"),
    ))
    fig.update_layout(title=title, margin=dict(l=10, r=10, t=40, b=10), height=80 + 28 * (len(df) + 1))
    return fig


def seed_bars_figure(table: pd.DataFrame, metric: str = "mAP", group: str = "method",
                     title: str = "Mean ± std over seeds") -> go.Figure:
    """Grouped bars of a ``tables.seed_table`` (mean %, error bars = std over seeds) per protocol."""
    for col in ("protocol", group, metric):
        if col not in table.columns:
            raise ValueError(f"seed_bars_figure: missing column {col!r}; have {list(table.columns)}")
    fig = go.Figure()
    for name, part in table.groupby(group, sort=False):
        std = part.get(f"{metric} std")
        fig.add_trace(go.Bar(
            x=part["protocol"], y=part[metric], name=str(name),
            error_y=dict(type="data",
                         array=[0 if v is None or pd.isna(v) else v for v in std]) if std is not None else None,
            text=[f"{v:.1f}" for v in part[metric]], textposition="outside",
        ))
    n = int(table["seeds"].max()) if "seeds" in table.columns else None
    fig.update_layout(barmode="group", template="plotly_white", title=title, height=420,
                      yaxis_title=f"{metric} (%)" + (f", {n} seed(s)" if n else ""),
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0), margin=dict(t=90))
    return fig


def tradeoff_seeds_figure(summary: pd.DataFrame, knees: Sequence[dict] = (), mode: str = "real+gen",
                          title: str = "Timestep trade-off") -> go.Figure:
    """mAP per tau with seed error bars (one line per protocol) and the generation cost (right axis);
    each protocol's knee (``tables.tradeoff_knee``) is marked with a star."""
    part = summary[summary["mode"] == mode]
    if part.empty:
        raise ValueError(f"tradeoff_seeds_figure: no rows for mode {mode!r}; modes: {sorted(summary['mode'].unique())}")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for protocol, rows in part.groupby("protocol", sort=False):
        rows = rows.sort_values("tau")
        err = [0 if v is None or pd.isna(v) else v for v in rows["mAP_std"]]
        fig.add_trace(go.Scatter(x=rows["tau"], y=rows["mAP"], mode="lines+markers", name=f"{protocol} mAP",
                                 error_y=dict(type="data", array=err)), secondary_y=False)
    for k in knees:
        row = part[(part["protocol"] == k["protocol"]) & (part["tau"] == k["tau"])]
        if len(row):
            fig.add_trace(go.Scatter(x=[k["tau"]], y=[float(row["mAP"].iloc[0])], mode="markers", showlegend=True,
                                     marker=dict(symbol="star", size=16, color="#d62728"),
                                     name=f"{k['protocol']} knee tau={k['tau']}"), secondary_y=False)
    lat = part.drop_duplicates("tau").sort_values("tau")
    lat_err = [0 if v is None or pd.isna(v) else v for v in lat["sec_per_1000_std"]]
    fig.add_trace(go.Scatter(x=lat["tau"], y=lat["sec_per_1000"], mode="lines+markers", name="s / 1,000 images",
                             line=dict(color="#555", dash="dashdot"), error_y=dict(type="data", array=lat_err)),
                  secondary_y=True)
    taus = sorted(part["tau"].unique().tolist())
    fig.update_xaxes(title_text="sampling steps tau", type="log", tickvals=taus, ticktext=[str(t) for t in taus])
    fig.update_yaxes(title_text="mAP (%)", secondary_y=False)
    fig.update_yaxes(title_text="seconds per 1,000 images", secondary_y=True, showgrid=False)
    fig.update_layout(title=title, template="plotly_white", height=440,
                      legend=dict(orientation="h", yanchor="top", y=-0.18, x=0), margin=dict(t=70))
    return fig


def cmc_figure(cmc: pd.DataFrame, title: str = "CMC curve") -> go.Figure:
    """Matching rate (%) against rank, one line per label (from ``analysis.cmc_table``)."""
    fig = go.Figure()
    for (label, mode), part in cmc.groupby(["label", "mode"], sort=False):
        fig.add_trace(go.Scatter(x=part["rank"], y=100 * part["cmc"], mode="lines+markers", name=f"{label} ({mode})"))
    fig.update_layout(title=title, template="plotly_white", height=380, xaxis_title="rank",
                      yaxis_title="matching rate (%)", legend=dict(orientation="h", yanchor="top", y=-0.2, x=0))
    return fig


def accuracy_camera_figure(df: pd.DataFrame, title: str = "Accuracy per query camera") -> go.Figure:
    """Rank-1 and mAP per query camera (``analysis.accuracy_by_camera``, one frame per method in ``method``),
    each camera labelled with its view, altitude and pitch; query counts in the hover."""
    def label(r) -> str:
        geo = "" if math.isnan(r.altitude) else f" {r.altitude:.0f} m / {r.pitch:.0f}°"
        return f"Cam{r.camera} {r.view_name}{geo}"

    fig = make_subplots(rows=1, cols=2, subplot_titles=("Rank-1 (%)", "mAP (%)"), shared_yaxes=False)
    groups = df.groupby("method", sort=False) if "method" in df else [("", df)]
    for i, (method, part) in enumerate(groups):
        xs = [label(r) for r in part.itertuples()]
        hover = [f"{x}: {n} queries ({v} with a positive)" for x, n, v in zip(xs, part["n"], part["n_valid"])]
        for col, metric in ((1, "rank1"), (2, "mAP")):
            fig.add_trace(go.Bar(x=xs, y=100 * part[metric], name=str(method), legendgroup=str(method),
                                 showlegend=col == 1,
                                 marker_color=CATEGORICAL[i % len(CATEGORICAL)], hovertext=hover), row=1, col=col)
    fig.update_layout(title=title, template="plotly_white", barmode="group", height=420,
                      legend=dict(orientation="h", yanchor="bottom", y=1.08, x=0), margin=dict(t=100))
    return fig


def training_curves_figure(log_df: pd.DataFrame, title: str = "Training curves") -> go.Figure:
    """Loss parts, learning rate and validation metrics per epoch (from ``analysis.read_training_log``)."""
    if "epoch" not in log_df.columns:
        raise ValueError(f"training_curves_figure: the log needs an 'epoch' column, has {list(log_df.columns)}")
    num = [c for c in log_df.columns if c != "epoch" and pd.api.types.is_numeric_dtype(log_df[c])]
    losses = [c for c in num if "loss" in c.lower() or c.lower() in ("total", "ce", "triplet")]
    lrs = [c for c in num if c.lower() == "lr" or c.lower().endswith("/lr")]
    vals = [c for c in num if c.lower().startswith("val") and c not in losses]
    fig = make_subplots(rows=1, cols=3, subplot_titles=("losses", "learning rate", "validation"))
    for col, cols in ((1, losses), (2, lrs), (3, vals)):
        for c in cols:
            fig.add_trace(go.Scatter(x=log_df["epoch"], y=log_df[c], mode="lines+markers", name=c), row=1, col=col)
        fig.update_xaxes(title_text="epoch", row=1, col=col)
    fig.update_layout(title=title, template="plotly_white", height=380)
    return fig


def accuracy_geometry_figure(df: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Rank-1 / mAP / mINP per altitude or pitch bin (lines) with query counts (bars, right axis).

    An optional ``mode`` (or ``method``) column draws one set of lines per feature mode.
    """
    for col in ("bin", "n", "rank1", "mAP"):
        if col not in df.columns:
            raise ValueError(f"accuracy_geometry_figure: missing column {col!r}; have {list(df.columns)}")
    group = next((c for c in ("mode", "method") if c in df.columns), None)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    first = df if group is None else df[df[group] == df[group].iloc[0]]
    fig.add_trace(go.Bar(x=first["bin"], y=first["n"], name="queries", marker_color="#dddddd", opacity=0.6),
                  secondary_y=True)
    groups = [(None, df)] if group is None else list(df.groupby(group, sort=False))
    for gname, sub in groups:
        for metric in ("rank1", "mAP", "mINP"):
            if metric in sub:
                fig.add_trace(go.Scatter(x=sub["bin"], y=100 * sub[metric], mode="lines+markers",
                                         name=metric if gname is None else f"{gname} {metric}"), secondary_y=False)
    by = df.attrs.get("by", "geometry")
    fig.update_layout(title=title or f"Accuracy by {by}", template="plotly_white", height=420,
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0))
    fig.update_xaxes(title_text=by)
    fig.update_yaxes(title_text="%", secondary_y=False)
    fig.update_yaxes(title_text="queries", secondary_y=True, showgrid=False)
    return fig


_LATENCY_ALIASES = ("sec_per_1000", "seconds_per_1000")  # what stage 2 writes (diffusion.analyses / FeatureSet meta)


def normalise_tradeoff(df: pd.DataFrame) -> pd.DataFrame:
    """A trade-off table sorted by tau, latency under ``sec_per_1k``.

    Accepts the stage-2 table of ``agreid_kit.diffusion.analyses.timestep_tradeoff`` (``tau,
    protocol, mode, rank1, mAP, mINP, sec_per_1000``) as well as the plain one-row-per-tau form.
    """
    if "sec_per_1k" not in df.columns:
        alias = next((a for a in _LATENCY_ALIASES if a in df.columns), None)
        if alias is not None:
            df = df.rename(columns={alias: "sec_per_1k"})
    for col in ("tau", "sec_per_1k"):
        if col not in df.columns:
            raise ValueError(f"trade-off table: missing column {col!r} (one row per tau with accuracy and "
                             f"sec_per_1k); have {list(df.columns)}")
    return df.sort_values("tau", kind="stable").reset_index(drop=True)


def tradeoff_figure(df: pd.DataFrame, highlight_tau: float | None = None,
                    title: str = "Timestep trade-off") -> go.Figure:
    """Accuracy (left axis, %) and latency in seconds per 1k images (right axis) against tau.

    With ``protocol`` / ``mode`` columns each combination gets its own accuracy lines.
    """
    df = normalise_tradeoff(df)
    groups_by = [c for c in ("protocol", "mode") if c in df.columns]
    groups = list(df.groupby(groups_by, sort=False)) if groups_by else [((), df)]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        prefix = " ".join(str(k) for k in key)
        for metric, dash in (("rank1", "solid"), ("mAP", "dash"), ("mINP", "dot")):
            if metric in part:
                fig.add_trace(go.Scatter(x=part["tau"], y=100 * part[metric], mode="lines+markers",
                                         name=f"{prefix} {metric}".strip(), line=dict(dash=dash)), secondary_y=False)
    lat = df.drop_duplicates("tau")
    fig.add_trace(go.Scatter(x=lat["tau"], y=lat["sec_per_1k"], name="s / 1k images", mode="lines+markers",
                             line=dict(color="#555", dash="dashdot")), secondary_y=True)
    if highlight_tau is not None:
        fig.add_vline(x=highlight_tau, line=dict(color="#d62728", width=2, dash="dot"))
    fig.update_layout(title=title, template="plotly_white", height=400, hovermode="x unified",
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0))
    fig.update_xaxes(title_text="tau (denoising steps)")
    fig.update_yaxes(title_text="accuracy (%)", secondary_y=False)
    fig.update_yaxes(title_text="seconds per 1k images", secondary_y=True, showgrid=False)
    return fig


def view_similarity_figure(data: Any, views: Sequence[str] | None = None, nbins: int = 40,
                           title: str = "View-condition similarity") -> go.Figure:
    """Histograms of instance-to-centre cosine similarity per (view, target view) and the instance heatmap.

    ``data`` is what ``analysis.view_similarity_data`` accepts. ``views`` restricts both panels to
    instances of those views (None: all).
    """
    from agreid_kit.analysis import view_similarity_data

    d = view_similarity_data(data)
    ivc, mat, row_views = d["instance_vs_centre"], d["instance_matrix"], np.array(d["views"])
    if views is not None:
        ivc = ivc[ivc["view"].isin(list(views))]
        keep = np.isin(row_views, list(views))
        mat, row_views = mat[np.ix_(keep, keep)], row_views[keep]
    # Sort the heatmap by view so the blocks of one view sit together.
    order = np.argsort(row_views, kind="stable")
    mat, row_views = mat[np.ix_(order, order)], row_views[order]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.5, 0.5],
                        subplot_titles=("instance vs view centre", "instance-instance cosine"))
    for i, ((v, t), sub) in enumerate(ivc.groupby(["view", "target_view"], sort=True)):
        fig.add_trace(go.Histogram(x=sub["cosine"], nbinsx=nbins, name=f"{v} -> centre {t}", opacity=0.6,
                                   marker_color=CATEGORICAL[i % len(CATEGORICAL)]), row=1, col=1)
    labels = [f"{i}:{v}" for i, v in enumerate(row_views)]
    fig.add_trace(go.Heatmap(z=mat, x=labels, y=labels, colorscale="RdBu_r", zmin=-1, zmax=1,
                             colorbar=dict(title="cos", x=1.02)), row=1, col=2)
    fig.update_layout(barmode="overlay", title=title, template="plotly_white", height=460)
    fig.update_xaxes(title_text="cosine", row=1, col=1)
    fig.update_yaxes(title_text="count", row=1, col=1)
    fig.update_xaxes(showticklabels=False, row=1, col=2)
    fig.update_yaxes(showticklabels=False, autorange="reversed", row=1, col=2)
    return fig


# ---------------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------------
def find_browser() -> str | None:
    """A Chrome/Chromium executable for kaleido, or None (never downloads one)."""
    env = os.environ.get("BROWSER_PATH")
    if env and Path(env).is_file():
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def save_figure(fig: go.Figure, path_stem: str | os.PathLike, formats: Sequence[str] = ("html", "png"),
                png: str = "require", width: int | None = None, height: int | None = None,
                scale: float = 2.0) -> list[Path]:
    """Write ``<stem>.html`` (self-contained: plotly.js embedded) and/or ``<stem>.png``, atomically.

    ``png``: ``"require"`` raises ``PNGExportError`` when no Chrome/Chromium is available (or
    kaleido fails), ``"auto"`` warns and skips the PNG, ``"skip"`` never writes one.
    Returns the paths written.
    """
    formats = tuple(formats)
    bad = [f for f in formats if f not in ("html", "png")]
    if bad:
        raise ValueError(f"save_figure: unsupported formats {bad}; expected 'html' and/or 'png'")
    if png not in ("require", "auto", "skip"):
        raise ValueError(f"save_figure: png must be 'require', 'auto' or 'skip', got {png!r}")
    stem = Path(path_stem)
    if stem.suffix in (".html", ".png"):
        stem = stem.with_suffix("")
    written: list[Path] = []
    if "html" in formats:
        out = stem.with_suffix(".html")
        atomic_write_text(out, fig.to_html(include_plotlyjs=True, full_html=True))
        written.append(out)
    if "png" in formats and png != "skip":
        try:
            data = _to_png(fig, width, height, scale)
        except PNGExportError as e:
            if png == "require":
                raise
            warnings.warn(f"save_figure: skipped {stem.with_suffix('.png')}: {e}", RuntimeWarning, stacklevel=2)
        else:
            out = stem.with_suffix(".png")
            atomic_write_bytes(out, data)
            written.append(out)
    return written


def _to_png(fig: go.Figure, width: int | None, height: int | None, scale: float) -> bytes:
    browser = find_browser()
    if browser is None:
        raise PNGExportError(
            "PNG export needs a Chrome/Chromium binary for kaleido and none was found "
            "($BROWSER_PATH, chromium, chromium-browser, google-chrome); install one "
            "(Debian: `apt-get install -y chromium`) or save with png='auto' / formats=('html',)"
        )
    os.environ.setdefault("BROWSER_PATH", browser)  # where kaleido's choreographer looks first
    try:
        return fig.to_image(format="png", width=width, height=height, scale=scale)
    except Exception as e:  # kaleido raises several types (choreographer, RuntimeError, ValueError)
        raise PNGExportError(f"kaleido failed to render the PNG with {browser}: {type(e).__name__}: {e}") from e
