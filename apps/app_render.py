"""What the ranking app shows in words and figures: captions, the result's summary and metrics, the
clicked item's key facts, the header, the tau note and the trade-off figure.

Camera words: under protocols that collapse camera ids to views (CARGO / SynthAG ``A<->G``: ``camid =
view``) a "cam 0 / cam 1" would only repeat the view; there the app says "view" and names the sensor the
way the kit's rank-list figures do (``agreid_kit.viz.camera_words``: ``raw_camid``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from agreid_kit import VIEW_NAMES
from agreid_kit.data.records import Record
from agreid_kit.eval import RankItem
from agreid_kit.viz import camera_words

RankedItem = RankItem
"""One displayed gallery item: the evaluator's :class:`agreid_kit.eval.RankItem` (``rank`` None for junk)."""


def camid_is_view(records: Sequence[Record]) -> bool:
    """Whether ``camid`` is the view in these records (several sensors collapsed onto one id per view)."""
    records = list(records)
    if not records or any(r.camid != r.view for r in records):
        return False
    sensors = {r.raw_camid for r in records if r.raw_camid is not None}
    return len(sensors) > len({r.view for r in records})


def camera_text(record: Record, view_ids: bool = False) -> str:
    """``cam 3 · aerial`` (camid and view), or under a view protocol ``view aerial · cam 7`` (view, then sensor)."""
    view = VIEW_NAMES[record.view]
    if view_ids:
        return f"view {view}" + (f" · {camera_words(record)}" if record.raw_camid is not None else "")
    return f"cam {record.camid} · {view}"


def caption(item: RankItem, view_ids: bool = False) -> str:
    """The three short lines under a thumbnail: rank and status, distance and pid, camera and view."""
    mark = {"match": "✓ match", "non-match": "✗ non-match", "junk": "· junk (dropped)", "unknown": ""}[item.status]
    rank = f"#{item.rank}" if item.rank is not None else f"({item.position})"
    return f"{rank} {mark}".strip() + f"\nd={item.distance:.3f} · pid {item.record.pid}\n{camera_text(item.record, view_ids)}"


def query_label(index: int, record: Record, view_ids: bool = False) -> str:
    return f"q{index} · pid {record.pid} · {camera_text(record, view_ids)}"


def _pct(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.1f}%"


@dataclass
class RankResult:
    """What one ranking produced: the top-k, the query's AP / INP and where the time went."""

    source: str  # "query" or "upload"
    query_label: str
    query_record: Record | None
    protocol: str
    mode: str
    k: int
    items: list[RankedItem]
    ap: float | None
    inp: float | None
    first_match_rank: int | None
    n_positives: int | None
    tau: int | None
    guidance: float | None
    generated_live: bool
    search_backend: str
    latency_ms: dict[str, float] = field(default_factory=dict)
    query_parts: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)  # real / prebn / gen:<v> (1, D)
    query_image_path: str | None = None
    query_image: Any = field(default=None, repr=False)  # the upload, already shrunk to the model's input size
    gallery_shown: int | None = None  # gallery items the filter lets through (of gallery_size)
    gallery_size: int | None = None
    query_index: int | None = None
    view_ids: bool = False  # camid is the view under this protocol (captions say "view")
    stored_tau: int | None = None  # tau / guidance of the gallery's stored generated views
    stored_guidance: float | None = None

    def metrics(self) -> dict[str, Any]:
        """JSON-able summary (what the page's metrics box and the HTTP API return)."""
        return {
            "source": self.source,
            "query": self.query_label,
            "protocol": self.protocol,
            "mode": self.mode,
            "k": self.k,
            "AP": self.ap,
            "INP": self.inp,
            "first_match_rank": self.first_match_rank,
            "n_positives": self.n_positives,
            "matches_in_top_k": sum(1 for it in self.items if it.is_match),
            "tau": self.tau,
            "guidance": self.guidance,
            "generated_live": self.generated_live,
            "gallery_tau": self.stored_tau if self.tau is not None else None,
            "search": self.search_backend,
            "gallery_shown": self.gallery_shown,
            "gallery_size": self.gallery_size,
            "camid_is_view": self.view_ids,
            "latency_ms": {k: round(v, 2) for k, v in self.latency_ms.items()},
            "gallery": [
                {"rank": it.rank, "position": it.position, "gallery_index": it.gallery_index, "pid": it.record.pid,
                 "camid": it.record.camid, "view": VIEW_NAMES[it.record.view], "distance": round(it.distance, 6),
                 "status": it.status}
                for it in self.items
            ],
        }

    def summary_markdown(self) -> str:
        lines = [f"**Query** {self.query_label} · protocol **{self.protocol}** · mode **{self.mode}**"]
        if self.source == "upload":
            lines.append("AP / INP: n/a (an uploaded image has no identity label)")
        elif not self.n_positives:
            lines.append("AP / INP: n/a (this query has no true match in the gallery; the evaluator skips it)")
        else:
            lines.append(
                f"**AP {_pct(self.ap)}** · **INP {_pct(self.inp)}** · first match at rank {self.first_match_rank} · "
                f"{self.n_positives} true matches in the gallery"
            )
        if self.tau is not None:
            if self.generated_live:
                gallery = f"tau = {self.stored_tau}" if self.stored_tau is not None else "their stored tau"
                lines.append(f"query's generated views: tau = {self.tau}, guidance = {self.guidance} (generated live "
                             f"for this query; the gallery keeps its stored views at {gallery})")
            else:
                lines.append(f"generated views: tau = {self.tau}, guidance = {self.guidance} (precomputed, as the gallery's)")
        if self.view_ids:
            lines.append(f"under {self.protocol} the camera id is the view: same-view gallery images of the query's "
                         "identity are dropped as junk")
        if self.gallery_shown is not None and self.gallery_shown < (self.gallery_size or 0):
            lines.append(f"gallery filter: ranking {self.gallery_shown} of {self.gallery_size} gallery images "
                         "(AP / INP score the whole gallery)")
        lat = ", ".join(f"{k} {v:.1f} ms" for k, v in self.latency_ms.items())
        lines.append(f"latency: {lat} · search: {self.search_backend}")
        return "  \n".join(lines)


def detail_table(item: RankItem, view_ids: bool = False) -> str:
    """The clicked result's essentials as a short key/value table (not every camera field of the record)."""
    r = item.record
    rows: list[tuple[str, Any]] = [
        ("rank", item.rank if item.rank is not None else f"junk (position {item.position})"),
        ("status", item.status), ("distance", f"{item.distance:.4f}"), ("pid", r.pid), ("view", VIEW_NAMES[r.view]),
    ]
    if view_ids:
        rows.append(("camera", f"sensor {camera_words(r)} (camid = view)" if r.raw_camid is not None else "camid = view"))
    else:
        rows.append(("camera", r.camid if r.raw_camid is None else f"{r.camid} (sensor {camera_words(r)})"))
    if r.altitude is not None:
        rows.append(("altitude", f"{r.altitude:g} m"))
    rows.append(("file", Path(r.path).name))
    return "| field | value |\n| --- | --- |\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def tau_note(stored_tau: int | None, stored_guidance: float | None) -> str:
    """The visible note under the tau / guidance sliders: what they change and what they do not."""
    tau = stored_tau if stored_tau is not None else "?"
    guid = stored_guidance if stored_guidance is not None else "?"
    return (f"ℹ️ **tau / guidance apply to the query only**: its generated views are made live at these values; "
            f"the gallery keeps its stored generated views (tau = {tau}, guidance = {guid}).")


def live_latency_markdown(result: RankResult | None) -> str:
    if result is None:
        return "Run a ranking to measure this query's latency."
    lines = [f"**This query** ({result.query_label}, mode {result.mode}"
             + (f", tau {result.tau}, guidance {result.guidance}" if result.tau is not None else "") + "):"]
    lines += [f"- {k}: {v:.1f} ms" for k, v in result.latency_ms.items()]
    if "generate" in result.latency_ms:
        lines.append(f"- generation at batch 1: {result.latency_ms['generate']:.0f} ms for one image. The curve's "
                     "latency is batched (seconds per 1,000 images), so this single-image time is not drawn on it.")
    return "\n".join(lines)


def tradeoff_plot(df, protocol: str | None, tau: int | None, result: RankResult | None, source: str | None = None):
    """The precomputed accuracy / latency curves over tau (``agreid_kit.diffusion.analyses.tradeoff_figure``).

    The current tau is marked with a dotted line. A live query's generation time (one image, batch 1)
    is not a point of the batched curve: it goes into an annotation box and leaves the axes alone.
    """
    from agreid_kit.diffusion.analyses import tradeoff_figure

    if protocol and "protocol" in df and (df["protocol"] == protocol).any():
        df = df[df["protocol"] == protocol]
    fig = tradeoff_figure(df)
    if tau is not None:
        fig.add_vline(x=tau, line=dict(color="#d62728", width=2, dash="dot"))
    if result is not None and "generate" in result.latency_ms and result.tau is not None:
        fig.add_annotation(
            xref="paper", yref="paper", x=0.99, y=0.98, xanchor="right", yanchor="top", showarrow=False, align="right",
            text=(f"this query: tau {result.tau}, {result.latency_ms['generate']:.0f} ms for one image (batch 1)"
                  "<br>not on the curve's scale: the curve is batched s / 1,000 images"),
            bgcolor="rgba(255,255,255,0.85)", bordercolor="#d62728", borderwidth=1, font=dict(size=11),
        )
    if source:
        fig.update_layout(title=dict(text=f"{fig.layout.title.text}<br><sup>table: {source}</sup>"))
    return fig
