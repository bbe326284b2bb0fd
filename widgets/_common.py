"""Pieces every widget shares: a display-able base class, image tiles, metadata HTML, figure swapping."""

from __future__ import annotations

import html
import math
import os
from typing import Any, Sequence

import ipywidgets as W
import plotly.graph_objects as go

from agreid_kit import VIEW_NAMES
from agreid_kit.data.records import Record
from agreid_kit.viz import thumbnail_png


class WidgetView:
    """Base of the workbench widgets: ``self.widget`` is the root ipywidget; ``display(w)`` shows it."""

    widget: W.Widget

    def _repr_mimebundle_(self, **kwargs: Any):
        return self.widget._repr_mimebundle_(**kwargs)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def image_widget(path: str | os.PathLike, size: tuple[int, int] = (128, 64), border: str | None = None) -> W.Image:
    """A PNG tile of the image at ``path`` (a grey tile naming the path when the file is missing)."""
    h, w = size
    layout = W.Layout(width=f"{w}px", height=f"{h}px")
    if border:
        layout.border = f"3px solid {border}"
    return W.Image(value=thumbnail_png(path, size), format="png", layout=layout)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.4g}"
    return html.escape(str(v))


def record_html(record: Record, title: str | None = None, **more: Any) -> str:
    """An HTML table of a record's metadata (labels, geometry, extras) plus ``more`` rows."""
    rows = {
        "path": record.path, "pid": record.pid, "camid": record.camid,
        "view": f"{record.view} ({VIEW_NAMES[record.view]})",
    }
    for key in ("raw_camid", "time", "scene", "altitude", "raw_pid"):
        value = getattr(record, key)
        if value is not None:
            rows[key] = value
    for key, value in (record.extra or {}).items():
        rows[key] = value
    rows.update(more)
    body = "".join(f"<tr><td><b>{html.escape(str(k))}</b></td><td>{_fmt(v)}</td></tr>" for k, v in rows.items())
    head = f"<h4>{html.escape(title)}</h4>" if title else ""
    return f"{head}<table style='font-size:12px'>{body}</table>"


def gallery_tiles(records: Sequence[Record], size: tuple[int, int],
                  captions: Sequence[str] | None = None) -> list[W.Widget]:
    captions = captions or [f"pid {r.pid} c{r.camid} {VIEW_NAMES[r.view]}" for r in records]
    return [
        W.VBox([image_widget(r.path, size), W.HTML(f"<span style='font-size:10px'>{html.escape(c)}</span>")])
        for r, c in zip(records, captions)
    ]


def replace_figure(target: go.FigureWidget, source: go.Figure) -> None:
    """Swap a FigureWidget's traces and layout for another figure's, in one front-end update."""
    with target.batch_update():
        target.data = []
        target.add_traces(list(source.data))
        target.layout = source.layout


def customdata_of(trace: Any, points: Any) -> list[int]:
    """The ``customdata`` (DataFrame rows) of the points a plotly click / selection event names."""
    cd = trace.customdata
    return [int(cd[i]) for i in getattr(points, "point_inds", [])]
