"""RankListBrowser: pick a query (or sort queries by AP), a feature mode and a protocol; see its top-k."""

from __future__ import annotations

import html
import math
from typing import Mapping

import ipywidgets as W
import plotly.graph_objects as go

from agreid_kit import VIEW_NAMES
from agreid_kit.analysis import per_query_scores, rank_list, sort_queries
from agreid_kit.data.records import DatasetSplit
from agreid_kit.viz import rank_list_figure

from ._common import WidgetView, replace_figure

ORDERS = ("query order", "worst AP first", "best AP first")


class RankListBrowser(WidgetView):
    """Rank lists of one FeatureSet under one or several protocols.

    ``splits`` is a DatasetSplit or ``{protocol name: DatasetSplit}``. Child widgets:
    ``protocol_dropdown``, ``mode_dropdown``, ``order_dropdown``, ``query_dropdown`` (value = query
    index in the protocol's query list), ``k_slider``; output: ``fig`` (``go.FigureWidget`` of
    ``viz.rank_list_figure``: green match, red non-match, grey junk borders) and ``summary_html``
    (AP, INP, first-match rank). ``ranklist`` is the ``analysis.RankList`` on show.
    """

    def __init__(self, fs, splits: DatasetSplit | Mapping[str, DatasetSplit], mode: str = "real", k: int = 10,
                 metric: str = "cosine", thumb_size: tuple[int, int] = (128, 64), query_index: int = 0):
        if isinstance(splits, DatasetSplit):
            splits = {splits.protocol: splits}
        if not splits:
            raise ValueError("RankListBrowser: splits is empty; pass a DatasetSplit or {protocol: DatasetSplit}")
        modes = fs.available_modes()
        if mode not in modes:
            raise ValueError(f"RankListBrowser: mode {mode!r} is not available for this FeatureSet; available: {modes}")
        self.fs, self.splits, self.metric, self.thumb_size = fs, dict(splits), metric, thumb_size
        self._scores: dict[tuple[str, str], object] = {}
        self.protocol_dropdown = W.Dropdown(options=list(self.splits), description="protocol")
        self.mode_dropdown = W.Dropdown(options=modes, value=mode, description="features")
        self.order_dropdown = W.Dropdown(options=list(ORDERS), value=ORDERS[0], description="sort")
        self.query_dropdown = W.Dropdown(description="query", layout=W.Layout(width="420px"))
        self.k_slider = W.IntSlider(value=k, min=1, max=50, description="top-k")
        self.summary_html = W.HTML()
        self.fig = go.FigureWidget()
        self.ranklist = None
        self._updating = False
        self._fill_queries(query_index)
        self._show()
        for w in (self.protocol_dropdown, self.mode_dropdown, self.order_dropdown):
            w.observe(lambda _change: self._on_context_change(), names="value")
        for w in (self.query_dropdown, self.k_slider):
            w.observe(lambda _change: self._show(), names="value")
        self.widget = W.VBox([
            W.HBox([self.protocol_dropdown, self.mode_dropdown, self.order_dropdown]),
            W.HBox([self.query_dropdown, self.k_slider]),
            self.summary_html, self.fig,
        ])

    @property
    def split(self) -> DatasetSplit:
        return self.splits[self.protocol_dropdown.value]

    def scores(self):
        """``analysis.per_query_scores`` of the current protocol and mode (cached)."""
        key = (self.protocol_dropdown.value, self.mode_dropdown.value)
        if key not in self._scores:
            self._scores[key] = per_query_scores(self.fs, self.split, self.mode_dropdown.value, self.metric)
        return self._scores[key]

    def _fill_queries(self, keep: int | None) -> None:
        scores = self.scores()
        order = self.order_dropdown.value
        if order != ORDERS[0]:
            scores = sort_queries(scores, "worst" if order.startswith("worst") else "best")
        options = []
        for r in scores.itertuples():
            ap = "no positive" if not r.valid else f"AP {r.ap:.3f}"
            options.append((f"q{r.query_index}: pid {r.pid} cam {r.camid} {VIEW_NAMES[r.view]} ({ap})",
                            int(r.query_index)))
        self._updating = True  # one redraw after the options change, not one per intermediate value
        try:
            self.query_dropdown.options = options
            values = [v for _, v in options]
            self.query_dropdown.value = keep if keep in values else values[0]
        finally:
            self._updating = False

    def _on_context_change(self) -> None:
        keep = self.query_dropdown.value if self.order_dropdown.value == ORDERS[0] else None
        self._fill_queries(keep)
        self._show()

    def _show(self) -> None:
        if self._updating or self.query_dropdown.value is None:
            return
        rl = rank_list(self.fs, self.split, int(self.query_dropdown.value), k=int(self.k_slider.value),
                       mode=self.mode_dropdown.value, metric=self.metric)
        self.ranklist = rl
        replace_figure(self.fig, rank_list_figure(rl, self.thumb_size))
        ap = "-" if math.isnan(rl.ap) else f"{rl.ap:.4f}"
        inp = "-" if math.isnan(rl.inp) else f"{rl.inp:.4f}"
        first = rl.first_match_rank if rl.first_match_rank is not None else "none (query skipped by the metrics)"
        self.summary_html.value = (
            f"<b>query {rl.query_index}</b> pid {rl.query.pid}, camera {rl.query.camid}, {VIEW_NAMES[rl.query.view]} "
            f"&mdash; <b>AP {ap}</b>, <b>INP {inp}</b>, first match at rank {first}; "
            f"{rl.n_positives} positives, {rl.n_junk} junk (same id and camera: shown grey, not ranked) "
            f"<br><small>{html.escape(rl.query.path)}</small>"
        )
