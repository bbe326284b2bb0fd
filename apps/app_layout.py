"""The ranking page (``build_app``: a ``gr.Blocks`` over ``AppHandlers``) and its local-only server (``launch_app``).

Layout: the controls sit in one column that fits a 1400 x 900 window (query or upload and its button
first, then protocol and feature mode, top-k, tau / guidance with a note on what they change, the
gallery filter); results, the clicked item and the metrics to its right; embedding and trade-off tabs.
"""

from __future__ import annotations

import os
import socket
import sys

from agreid_kit import VIEW_NAMES
from agreid_kit.features import FeatureSetError

from .app_errors import AppError
from .app_handlers import AppHandlers, warn
from .app_render import tau_note
from .app_runs import default_run_dir
from .app_state import FEATURE_MODES_HELP, RankingBackend

APP_TITLE = "agreid-kit · aerial-ground ReID ranking demo"
APP_CSS = """
#status-box p { color: #b00020; font-weight: 600; }
#run-summary p, #tau-note p { font-size: 12px; line-height: 1.3; margin: 0; }
#app-title h2 { margin: 0 0 2px 0; }
/* Tall ReID crops with their full caption under them (Gradio overlays and truncates captions by default). */
#results .thumbnail-item { aspect-ratio: auto; height: auto; display: flex; flex-direction: column; overflow: visible; }
#results .thumbnail-item img { height: 176px; width: 100%; object-fit: contain; }
#results .caption-label { position: static; max-width: none; white-space: pre-line; overflow: visible;
  text-overflow: clip; font-size: 12px; line-height: 1.25; text-align: left; margin: 2px 0 0 0; }
#detail table { font-size: 12px; }
#controls { gap: 6px; }
#controls .form, #controls .row { gap: 6px; }
"""
EMBED_METHODS = ("tsne", "umap", "pca")
EMBED_COLOURS = ("kind", "view_name", "camid", "pid", "altitude", "pitch", "distance")


def build_app(
    run_dir: str | os.PathLike | None = None,
    data: str | None = None,
    protocol: str | None = None,
    backend: RankingBackend | None = None,
    report: str | os.PathLike | None = None,
):
    """The Blocks app over a ``RankingBackend`` (built from ``run_dir`` unless one is given).

    A missing or mismatched run gives a page that says what is wrong and how to make the run,
    instead of an exception: the server keeps serving either way. ``demo.backend`` is the backend
    (None on such a page), ``demo.handlers`` its ``AppHandlers``.
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    error = None
    if backend is None:
        try:
            backend = RankingBackend(run_dir if run_dir is not None else default_run_dir(), data=data,
                                     protocol=protocol, report=report)
        except (AppError, FeatureSetError) as e:
            error = str(e)

    with gr.Blocks(title=APP_TITLE, analytics_enabled=False) as demo:
        gr.Markdown(f"## {APP_TITLE}", elem_id="app-title")
        if backend is None:
            gr.Markdown(warn(error), elem_id="run-error")
            demo.backend = demo.handlers = None
            return demo
        demo.backend = b = backend
        demo.handlers = h = AppHandlers(b)
        gen_ok = b.has_generator
        split = b.split()
        state = gr.State(None)
        header = gr.Markdown(b.run_summary(), elem_id="run-summary")

        with gr.Tab("Rank"):
            with gr.Row():
                with gr.Column(scale=1, min_width=360, elem_id="controls"):
                    with gr.Tab("Query set"):
                        choices = b.query_choices()
                        query_dd = gr.Dropdown(choices, value=choices[0][1], label="query", elem_id="query-pick")
                        with gr.Row():
                            view_dd = gr.Dropdown(["all", *b.views()], value="all", label="query view", min_width=100)
                            cam_dd = gr.Dropdown([("all", "all"), *b.camera_choices(b.cameras())], value="all",
                                                 label="query camera", min_width=100)
                        rank_btn = gr.Button("Rank", variant="primary", elem_id="rank-button")
                    with gr.Tab("Upload"):
                        upload = gr.File(label="person image (JPEG / PNG / WebP)", type="filepath", elem_id="upload",
                                         height=110)
                        upload_view = gr.Radio(list(VIEW_NAMES[:max(2, split.num_views)]), value="ground",
                                               label="view of the uploaded image")
                        upload_btn = gr.Button("Rank upload", variant="primary", elem_id="upload-button")
                    with gr.Row():
                        protocol_dd = gr.Dropdown(b.protocols, value=split.protocol, label="protocol",
                                                  elem_id="protocol", min_width=100)
                        mode_dd = gr.Dropdown(b.modes, value="real+gen" if "real+gen" in b.modes else "real",
                                              label="feature mode", elem_id="mode", min_width=100)
                    k_sl = gr.Slider(1, 50, value=10, step=1, label="top-k")
                    with gr.Row(visible=gen_ok):
                        tau_sl = gr.Slider(1, 50, value=b.stored_tau or 5, step=1, label="tau",
                                           min_width=100)
                        guid_sl = gr.Slider(0.0, 10.0, value=b.stored_guidance if b.stored_guidance is not None else 2.0,
                                            step=0.5, label="guidance", min_width=100)
                    gr.Markdown(tau_note(b.stored_tau, b.stored_guidance), elem_id="tau-note", visible=gen_ok)
                    with gr.Row():
                        gview_dd = gr.Dropdown(["all", *VIEW_NAMES[:max(2, split.num_views)]], value="all",
                                               label="gallery view", min_width=100)
                        gcams_dd = gr.Dropdown(b.camera_choices(b.gallery_cameras()), value=[], multiselect=True,
                                               label="gallery cameras (none: all)", min_width=100)
                with gr.Column(scale=3):
                    status = gr.Markdown("", elem_id="status-box")
                    with gr.Row():
                        query_img = gr.Image(label="query", type="pil", height=220, interactive=False, scale=1)
                        summary_md = gr.Markdown("Pick a query and press **Rank**, or upload an image.  \n"
                                                 f"Feature modes: {FEATURE_MODES_HELP}.", elem_id="summary")
                    gallery = gr.Gallery(label="top-k (green frame: match, red: non-match, grey: junk)", columns=5,
                                         height="auto", format="png", elem_id="results", allow_preview=False,
                                         object_fit="contain")
                    with gr.Row():
                        detail_img = gr.Image(label="selected result", type="pil", height=256, interactive=False,
                                              scale=1, elem_id="detail-image")
                        detail_md = gr.Markdown("Click a result to see it large.", elem_id="detail")
                    with gr.Accordion("metrics (JSON)", open=False):
                        metrics_json = gr.JSON(label="metrics")
                    detail_index = gr.Number(visible=False, precision=0)

        with gr.Tab("Embedding"):
            with gr.Row():
                method_rd = gr.Radio(list(EMBED_METHODS), value="tsne", label="method")
                color_dd = gr.Dropdown(list(EMBED_COLOURS), value="kind" if gen_ok else "view_name", label="colour by")
                embed_btn = gr.Button("Compute embedding", elem_id="embed-button")
            embed_status = gr.Markdown("Rank a query, then compute the embedding: the query (star) and its "
                                       "generated views (open diamonds) are drawn over the gallery.")
            embed_plot = gr.Plot(label="gallery embedding")

        with gr.Tab("Trade-off"):
            trade_status = gr.Markdown("", elem_id="tradeoff-status")
            trade_plot = gr.Plot(label="accuracy / latency over tau (batched)", elem_id="tradeoff-plot")
            latency_md = gr.Markdown("Run a ranking to measure this query's latency.", elem_id="latency")

        rank_outputs = [state, status, query_img, summary_md, gallery, metrics_json, detail_img, detail_md]
        settings = [protocol_dd, mode_dd, k_sl, tau_sl, guid_sl, gview_dd, gcams_dd]
        rerank_inputs = [state, query_dd, upload, upload_view, *settings]
        trade_outputs = [trade_plot, trade_status, latency_md]
        model_limit = dict(concurrency_limit=1, concurrency_id="model")  # one model call at a time

        def select_detail(current, evt: gr.SelectData):
            return h.detail(current, evt.index)

        # Gradio finds the event argument by its annotation; with postponed annotations it sees a string.
        select_detail.__annotations__["evt"] = gr.SelectData

        def then_tradeoff(event):
            event.then(h.tradeoff, [state, protocol_dd], trade_outputs, api_name=False)

        then_tradeoff(rank_btn.click(h.rank_query, [query_dd, *settings, state], rank_outputs, api_name="rank_query",
                                     **model_limit))
        then_tradeoff(upload_btn.click(h.rank_upload, [upload, upload_view, *settings, state], rank_outputs,
                                       api_name="rank_upload", **model_limit))
        for control in (mode_dd, k_sl, tau_sl, guid_sl, gview_dd, gcams_dd):
            then_tradeoff(control.input(h.rerank, rerank_inputs, rank_outputs,
                                        api_name="rerank" if control is mode_dd else False, **model_limit))
        then_tradeoff(upload_view.input(h.rerank_upload_view, rerank_inputs, rank_outputs, api_name=False, **model_limit))
        then_tradeoff(query_dd.input(h.pick_query, rerank_inputs, rank_outputs, api_name=False, **model_limit))
        upload.change(h.upload_changed, [state, upload], rank_outputs, api_name=False)
        then_tradeoff(protocol_dd.input(
            h.protocol_changed,
            [state, protocol_dd, view_dd, cam_dd, upload, upload_view, mode_dd, k_sl, tau_sl, guid_sl, gview_dd],
            [header, view_dd, cam_dd, query_dd, gcams_dd, *rank_outputs], api_name="protocol", **model_limit))
        for control in (view_dd, cam_dd):
            control.input(h.filter_queries, [protocol_dd, view_dd, cam_dd, state], [query_dd, cam_dd, gcams_dd, status],
                          api_name="filter_queries" if control is view_dd else False)
        gallery.select(select_detail, state, [detail_img, detail_md], api_name=False)
        detail_index.change(h.detail, [state, detail_index], [detail_img, detail_md], api_name="detail")
        embed_btn.click(h.embedding, [state, method_rd, color_dd], [embed_plot, embed_status], api_name="embedding",
                        concurrency_limit=1, concurrency_id="embedding")
        demo.load(h.tradeoff, [state, protocol_dd], trade_outputs, api_name=False)
    return demo


# ---------------------------------------------------------------------------------------------
# Serving
# ---------------------------------------------------------------------------------------------
HOST = "127.0.0.1"


def port_in_use_message(port: int) -> str:
    return f"--port {port} is already in use on {HOST}; pass another --port (--port 0 picks a free one)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _check_port(port: int) -> None:
    """Fail in one line, naming --port, if ``port`` is taken (the same probe Gradio makes)."""
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((HOST, int(port)))
    except OSError as e:
        raise AppError(port_in_use_message(port)) from e
    finally:
        s.close()


def _blocked_paths(backend: RankingBackend | None) -> list[str]:
    """The run, stage-1 and dataset folders, unless one of them holds Gradio's own upload / output folder."""
    from gradio.utils import get_upload_folder

    if backend is None:
        return []
    cache = os.path.realpath(get_upload_folder()).lower()
    return [p for p in backend.blocked_paths()
            if not (cache + os.sep).startswith(os.path.realpath(p).lower().rstrip(os.sep) + os.sep)]


def launch_app(demo, port: int | None = None, prevent_thread_lock: bool = False, quiet: bool = False):
    """Serve on 127.0.0.1 only: no share link, no analytics, and no file of the run or dataset folders.

    Every image the page shows (thumbnails, the query, the clicked result) is a copy the app hands to
    Gradio, which serves it from its own output folder; ``allowed_paths`` is empty and the run (its
    checkpoints and config), its stage-1 run and the dataset are blocked outright. ``port`` None or 0
    picks a free port; a busy port is an ``AppError`` naming ``--port``. Returns Gradio's
    ``(app, local_url, share_url)``.
    """
    import gradio as gr

    port = _free_port() if not port else int(port)
    _check_port(port)
    demo.queue(max_size=64)
    try:
        out = demo.launch(
            server_name=HOST,
            server_port=port,
            share=False,
            allowed_paths=[],
            blocked_paths=_blocked_paths(getattr(demo, "backend", None)),
            footer_links=[],
            max_file_size="50mb",  # uploads are person crops; the handler refuses more than 20 MB in words
            prevent_thread_lock=True,
            quiet=True,  # Gradio's own banner suggests share links; this app is local only
            theme=gr.themes.Soft(spacing_size="sm", text_size="sm"),  # dense: the controls fit a 1400 x 900 window
            css=APP_CSS,
            show_error=False,
        )
    except OSError as e:
        if "port" in str(e).lower():
            raise AppError(port_in_use_message(port)) from e
        raise
    except ValueError as e:
        if "localhost is not accessible" in str(e):
            raise AppError(f"The app started but {HOST}:{port} does not answer; check that no proxy setting "
                           "(http_proxy / no_proxy) intercepts 127.0.0.1. The app serves locally only.") from e
        raise
    if not quiet:
        print(f"agreid app: serving on {out[1]} (local only; Ctrl+C stops it)", file=sys.stdout, flush=True)
    if not prevent_thread_lock:
        demo.block_thread()
    return out
