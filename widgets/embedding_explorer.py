"""EmbeddingExplorer: UMAP / t-SNE / PCA of a FeatureSet; click a point for its image, lasso for a gallery."""

from __future__ import annotations

import html
from typing import Any, Sequence

import ipywidgets as W
import plotly.graph_objects as go

from agreid_kit.analysis import EMBED_METHODS, embedding_frame
from agreid_kit.viz import embedding_figure

from ._common import WidgetView, customdata_of, gallery_tiles, image_widget, record_html, replace_figure

COLOR_CHOICES = ("view_name", "pid", "camid", "kind", "altitude", "pitch", "distance")


class EmbeddingExplorer(WidgetView):
    """Interactive 2-D embedding of a FeatureSet.

    Child widgets (drive them in tests or notebooks): ``method_dropdown``, ``color_dropdown``,
    ``generated_checkbox``, ``fig`` (a ``go.FigureWidget``), ``detail_image``/``detail_html`` (the
    clicked point), ``gallery`` and ``selection_html`` (the lasso selection). ``df`` is the current
    ``analysis.embedding_frame``; embeddings are cached per (method, generated) choice.
    ``embed_options`` (``n_neighbors``, ``perplexity``, ``max_iter``) go to ``analysis.embed_2d``.
    """

    def __init__(self, fs, method: str = "umap", color_by: str = "view_name", include_generated: bool = False,
                 rows: Sequence[int] | None = None, max_points: int | None = None, seed: int = 0,
                 thumb_size: tuple[int, int] = (128, 64), gallery_max: int = 48, **embed_options: Any):
        if method not in EMBED_METHODS:
            raise ValueError(f"EmbeddingExplorer: method must be one of {EMBED_METHODS}, got {method!r}")
        if color_by not in COLOR_CHOICES:
            raise ValueError(f"EmbeddingExplorer: color_by must be one of {COLOR_CHOICES}, got {color_by!r}")
        self.fs, self.rows, self.max_points, self.seed = fs, rows, max_points, seed
        self.thumb_size, self.gallery_max, self.embed_options = thumb_size, gallery_max, embed_options
        self._cache: dict[tuple[str, bool], Any] = {}
        has_gen = bool(fs.generated_views())
        self.method_dropdown = W.Dropdown(options=list(EMBED_METHODS), value=method, description="method")
        self.color_dropdown = W.Dropdown(options=list(COLOR_CHOICES), value=color_by, description="colour by")
        self.generated_checkbox = W.Checkbox(value=include_generated and has_gen, description="generated points",
                                             disabled=not has_gen)
        self.status = W.HTML()
        self.fig = go.FigureWidget()
        self.detail_image = image_widget("", thumb_size)
        self.detail_html = W.HTML("<i>click a point</i>")
        self.selection_html = W.HTML("<i>lasso points to see their images</i>")
        self.gallery = W.Box(layout=W.Layout(flex_flow="row wrap"))
        self.selected_rows: list[int] = []
        self.df = None
        self._refresh()
        for w in (self.method_dropdown, self.generated_checkbox):
            w.observe(lambda _change: self._refresh(), names="value")
        self.color_dropdown.observe(lambda _change: self._redraw(), names="value")
        self.widget = W.VBox([
            W.HBox([self.method_dropdown, self.color_dropdown, self.generated_checkbox, self.status]),
            W.HBox([self.fig, W.VBox([self.detail_image, self.detail_html])]),
            self.selection_html, self.gallery,
        ])

    # ---- data -----------------------------------------------------------------------------
    def _refresh(self) -> None:
        key = (self.method_dropdown.value, bool(self.generated_checkbox.value))
        if key not in self._cache:
            self.status.value = f"computing {key[0]}..."
            self._cache[key] = embedding_frame(self.fs, method=key[0], include_generated=key[1], rows=self.rows,
                                               max_points=self.max_points, seed=self.seed,
                                               **self.embed_options)
        self.df = self._cache[key]
        self.status.value = f"{len(self.df)} points"
        self._redraw()

    def _redraw(self) -> None:
        replace_figure(self.fig, embedding_figure(self.df, color_by=self.color_dropdown.value))
        for trace in self.fig.data:
            trace.on_click(self._on_click)
            trace.on_selection(self._on_selection)

    # ---- events ---------------------------------------------------------------------------
    def _on_click(self, trace, points, state=None) -> None:
        rows = customdata_of(trace, points)
        if not rows:
            return
        point = self.df.iloc[rows[0]]
        rec = self.fs.records[int(point["row"])]
        self.detail_image.value = image_widget(rec.path, self.thumb_size).value
        self.detail_html.value = record_html(rec, title=f"row {int(point['row'])}", kind=point["kind"])

    def _on_selection(self, trace, points, selector=None) -> None:
        # A lasso over several traces fires once per trace: accumulate until the next empty selection.
        rows = customdata_of(trace, points)
        if getattr(points, "trace_index", 0) in (0, None):
            self.selected_rows = []
        self.selected_rows = list(dict.fromkeys(self.selected_rows + rows))
        sel = self.df.iloc[self.selected_rows] if self.selected_rows else self.df.iloc[:0]
        shown = sel.iloc[: self.gallery_max]
        recs = [self.fs.records[int(r)] for r in shown["row"]]
        captions = [f"pid {r.pid} c{r.camid} {k}" for r, k in zip(recs, shown["kind"])]
        self.gallery.children = tuple(gallery_tiles(recs, self.thumb_size, captions))
        ids = sorted(sel["pid"].unique().tolist())
        more = f" (showing {self.gallery_max})" if len(sel) > self.gallery_max else ""
        self.selection_html.value = (f"<b>{len(sel)} selected</b>{more}: {len(ids)} identities "
                                     f"{html.escape(str(ids[:20]))}{'...' if len(ids) > 20 else ''}")
