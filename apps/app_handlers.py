"""The ranking page's event handlers, as plain methods over a ``RankingBackend`` (the tests call them).

Every ranking handler returns the page's rank outputs in order: session state, status line, query
image, summary, gallery, metrics, detail image, detail text (``RANK_OUTPUTS``). Rules:

* every control that changes what a ranking would show re-ranks the shown result (mode, top-k, tau,
  guidance, gallery filter, protocol, upload view) or, where it cannot, marks it stale in the status line and
  the summary (a query filter that leaves another query picked, a new upload, a protocol under which the
  shown query is not a query);
* a problem the user can fix comes back in words in the status line; so does a model failure (its
  own message) and, as a last resort, any other exception (type and message, traceback to the log):
  never Gradio's generic "upstream app raised an exception".
"""

from __future__ import annotations

import logging
from typing import Any

from agreid_kit import VIEW_NAMES
from agreid_kit.features import FeatureSetError

from .app_errors import AppError, describe
from .app_render import RankResult

log = logging.getLogger("agreid_kit.apps")

RANK_OUTPUTS = ("state", "status", "query_image", "summary", "gallery", "metrics", "detail_image", "detail")
STALE_MARK = "🕓 Stale"


def warn(message: str) -> str:
    return f"⚠️ {message}"


def _skip():
    import gradio as gr

    return gr.skip()


def _update(**kw):
    import gradio as gr

    return gr.update(**kw)


class AppHandlers:
    """The handlers of one page; ``b`` is the shared backend, ``gen_ok`` whether tau / guidance apply."""

    def __init__(self, backend) -> None:
        self.b = backend
        self.gen_ok = backend.has_generator

    # ---- outputs ----------------------------------------------------------------------------
    def present(self, result: RankResult) -> list[Any]:
        return [result, "", self.b.query_image(result), result.summary_markdown(), self.b.gallery_items(result),
                result.metrics(), None, "Click a result to see it large."]

    def failed(self, message: str, keep: RankResult | None) -> list[Any]:
        # The previous result stays in the session state; the page says what went wrong.
        return [keep, warn(message), None, "", [], {"error": message}, None, ""]

    def stale(self, current: RankResult, reason: str) -> list[Any]:
        """Keep the shown result on screen, marked stale in the status line and at the top of the summary."""
        note = f"{STALE_MARK}: {reason}"
        return [current, note, _skip(), f"**{note}**  \n" + current.summary_markdown(), _skip(), _skip(), _skip(), _skip()]

    def _guard(self, fn, keep: RankResult | None) -> list[Any]:
        try:
            return fn()
        except (AppError, FeatureSetError) as e:
            return self.failed(str(e), keep)
        except Exception as e:  # noqa: BLE001 - the page says what broke, the log keeps the traceback
            log.exception("ranking failed")
            return self.failed(f"The ranking failed unexpectedly ({describe(e)}).", keep)

    # ---- ranking ----------------------------------------------------------------------------
    def rank_query(self, query_index, protocol, mode, k, tau, guidance, gview, gcams, current=None):
        def run():
            if query_index is None:
                raise AppError("Choose a query first (the filter may have left none).")
            return self.present(self.b.rank_query(
                int(query_index), mode, int(k), protocol, tau if self.gen_ok else None,
                guidance if self.gen_ok else None, gallery_view=gview, gallery_cameras=gcams))
        return self._guard(run, current)

    def rank_upload(self, path, view, protocol, mode, k, tau, guidance, gview, gcams, current=None):
        return self._guard(lambda: self.present(self.b.rank_upload(
            path, mode, int(k), protocol, tau if self.gen_ok else None, guidance if self.gen_ok else None,
            view=view, gallery_view=gview, gallery_cameras=gcams)), current)

    def rerank(self, current, query_index, path, view, protocol, mode, k, tau, guidance, gview, gcams):
        """A change of mode / k / tau / guidance / gallery filter re-runs whatever was ranked last."""
        if current is None:
            return [None, "", *[_skip()] * 6]
        if current.source == "upload":
            return self.rank_upload(path, view, protocol, mode, k, tau, guidance, gview, gcams, current)
        return self.rank_query(query_index, protocol, mode, k, tau, guidance, gview, gcams, current)

    def rerank_upload_view(self, current, query_index, path, view, protocol, mode, k, tau, guidance, gview, gcams):
        """The upload's view matters to an upload's ranking only."""
        if current is None or current.source != "upload":
            return [current, _skip(), *[_skip()] * 6]
        return self.rerank(current, query_index, path, view, protocol, mode, k, tau, guidance, gview, gcams)

    def pick_query(self, current, query_index, path, view, protocol, mode, k, tau, guidance, gview, gcams):
        """Picking another query re-ranks when a ranking is on screen (the page never shows one query, names another)."""
        if current is None:
            return [None, _skip(), *[_skip()] * 6]
        return self.rank_query(query_index, protocol, mode, k, tau, guidance, gview, gcams, current)

    def upload_changed(self, current, path):
        if current is not None and current.source == "upload" and str(path or "") != str(current.query_image_path or ""):
            return self.stale(current, f"it ranks {current.query_label}; press **Rank upload** for the new file.")
        return [current, *[_skip()] * 7]

    # ---- filters ----------------------------------------------------------------------------
    def _query_filter(self, protocol, view, camera):
        b = self.b
        views = ["all", *b.views(protocol)]
        view = view if view in views else "all"
        cams = b.camera_choices(b.cameras(protocol, view), protocol)
        camera = camera if camera in {v for _, v in cams} else "all"
        return views, view, [("all", "all"), *cams], camera, b.query_choices(protocol, view, camera)

    def filter_queries(self, protocol, view, camera, current=None):
        """Query view / camera filter -> (query dropdown, camera dropdown, gallery cameras, status)."""
        try:
            _, _, cams, camera, choices = self._query_filter(protocol, view, camera)
        except (AppError, FeatureSetError) as e:
            return _update(choices=[], value=None), _skip(), _skip(), warn(str(e))
        value = choices[0][1]
        if current is not None and current.source == "query" and current.query_index in {i for _, i in choices}:
            value = current.query_index  # the shown query is still in the list: keep it picked
        status = ""
        if current is not None and current.source == "query" and value != current.query_index:
            status = (f"{STALE_MARK}: the ranking shown is for {current.query_label}; the filter picked another "
                      "query, press **Rank** to rank it.")
        return _update(choices=choices, value=value), _update(choices=cams, value=camera), _skip(), status

    def protocol_changed(self, current, protocol, view, camera, path, upload_view, mode, k, tau, guidance, gview):
        """A new protocol: new header, filters and query list, and the shown result re-ranked under it.

        Outputs: header, query view, query camera, query, gallery cameras, then the rank outputs. The
        shown query keeps its place when it is a query of the new protocol too; an upload is re-ranked
        as it is; otherwise the shown result is marked stale.
        """
        b = self.b
        try:
            views, view, cams, camera, choices = self._query_filter(protocol, view, camera)
            header = b.run_summary(protocol)
            gcams = b.camera_choices(b.gallery_cameras(protocol), protocol)
        except (AppError, FeatureSetError) as e:
            return [_skip(), _skip(), _skip(), _update(choices=[], value=None), _skip(), *self.failed(str(e), current)]
        qi = b.find_query(protocol, current.query_record) if current is not None and current.source == "query" else None
        if qi is not None and qi not in {i for _, i in choices}:
            views, view, cams, camera, choices = self._query_filter(protocol, "all", "all")
        value = qi if qi is not None else choices[0][1]
        gview = gview if gview in ("all", *VIEW_NAMES) else "all"
        filters = [header, _update(choices=views, value=view), _update(choices=cams, value=camera),
                   _update(choices=choices, value=value), _update(choices=gcams, value=[])]
        if current is None:
            rank = [None, "", *[_skip()] * 6]
        elif current.source == "upload":
            rank = self.rank_upload(path, upload_view, protocol, mode, k, tau, guidance, gview, [], current)
        elif qi is not None:
            rank = self.rank_query(qi, protocol, mode, k, tau, guidance, gview, [], current)
        else:
            rank = self.stale(current, f"it ranks {current.query_label} under protocol {current.protocol}, and that "
                              f"image is not a query of {protocol}; pick a query and press **Rank**.")
        return filters + rank

    # ---- views of a result --------------------------------------------------------------------
    def detail(self, current, index):
        try:
            return self.b.item_detail(current, int(index) if index is not None else -1)
        except AppError as e:
            return None, warn(str(e))

    def embedding(self, current, method, color_by):
        try:
            return self.b.embedding_figure(current, method=method, color_by=color_by), ""
        except AppError as e:
            return None, warn(str(e))
        except Exception as e:  # noqa: BLE001
            log.exception("embedding failed")
            return None, warn(f"The embedding failed unexpectedly ({describe(e)}).")

    def tradeoff(self, current, protocol=None):
        latency = self.b.live_latency_markdown(current)
        try:
            return self.b.tradeoff_figure(current, protocol=protocol), "", latency
        except AppError as e:
            return None, warn(str(e)), latency
