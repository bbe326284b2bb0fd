"""ViewConditionMap: how similar instance view tokens are to the per-view memory centres, and to each other."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as W
import plotly.graph_objects as go

from agreid_kit.analysis import view_similarity_data
from agreid_kit.viz import view_similarity_figure

from ._common import WidgetView, replace_figure


class ViewConditionMap(WidgetView):
    """Similarity distributions (instance vs view centre) and the instance-instance heatmap per view.

    ``data``: what ``analysis.view_similarity_data`` accepts (the documented dict or an object with
    ``instance_vs_centre``, ``instance_matrix`` and ``views``). Child widgets: ``views_select``
    (which instances' views to show), ``bins_slider``; output ``fig`` and ``stats_html`` (mean,
    std and count per (view, target view)).
    """

    def __init__(self, data: Any, nbins: int = 40):
        self.data = view_similarity_data(data)
        names = sorted(set(self.data["views"]) | set(self.data["instance_vs_centre"]["view"]))
        self.views_select = W.SelectMultiple(options=names, value=tuple(names), description="views",
                                             rows=min(4, len(names)))
        self.bins_slider = W.IntSlider(value=nbins, min=5, max=200, step=5, description="bins")
        self.stats_html = W.HTML()
        self.fig = go.FigureWidget()
        self._show()
        for w in (self.views_select, self.bins_slider):
            w.observe(lambda _change: self._show(), names="value")
        self.widget = W.VBox([W.HBox([self.views_select, self.bins_slider]), self.stats_html, self.fig])

    def _show(self) -> None:
        views = list(self.views_select.value)
        replace_figure(self.fig, view_similarity_figure(self.data, views=views, nbins=int(self.bins_slider.value)))
        ivc = self.data["instance_vs_centre"]
        ivc = ivc[ivc["view"].isin(views)]
        stats = ivc.groupby(["view", "target_view"])["cosine"].agg(["mean", "std", "count"]).reset_index()
        rows = "".join(
            f"<tr><td>{html.escape(r.view)}</td><td>{html.escape(r.target_view)}</td>"
            f"<td>{r.mean:.3f}</td><td>{r.std:.3f}</td><td>{r.count}</td></tr>"
            for r in stats.itertuples()
        )
        self.stats_html.value = (
            "<table style='font-size:12px'><tr><th>instance view</th><th>centre of</th><th>mean cos</th>"
            f"<th>std</th><th>n</th></tr>{rows}</table>" if rows else "<i>no instances of the selected views</i>"
        )
