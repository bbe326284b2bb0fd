"""The Gradio ranking demo: pick or upload a person, see whom the model returns from the other platform.

This module is the app's public face (``agreid app`` and the tests import from here); the code lives in

* ``app_state``    ``RankingBackend``: the loaded run, features, splits, search indexes and models;
* ``app_handlers`` ``AppHandlers``: the page's event handlers as plain methods (tested directly);
* ``app_layout``   ``build_app`` (the ``gr.Blocks`` wiring) and ``launch_app`` (127.0.0.1 only);
* ``app_render``   captions, summaries, the detail table, the tau note and the trade-off figure;
* ``app_runs``     run / data / trade-off-table resolution and the models built from a run;
* ``app_images``   uploads (checked, shrunk at once to the model input) and thumbnails.
"""

from __future__ import annotations

from .app_errors import AppError, ModelError
from .app_handlers import AppHandlers
from .app_images import (
    JUNK_COLOUR, MATCH_COLOUR, MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS, MIN_UPLOAD_SIDE, NONMATCH_COLOUR, QUERY_COLOUR,
    THUMB_SIZE, bordered_thumbnail, load_upload, open_record_image,
)
from .app_layout import APP_CSS, APP_TITLE, EMBED_COLOURS, EMBED_METHODS, build_app, launch_app, port_in_use_message
from .app_render import RankedItem, RankResult, caption, camera_text, camid_is_view, detail_table, tau_note
from .app_runs import (
    DEFAULT_RUN, LEGACY_RUN, MAKE_RUN_COMMAND, Embedder, Generator, _load_split, _load_tradeoff, _tradeoff_candidates,
    _tradeoff_sources, default_run_dir, missing_run_message, run_embedder, run_generator,
)
from .app_state import FEATURE_MODES_HELP, RankingBackend

__all__ = [
    "APP_CSS", "APP_TITLE", "AppError", "AppHandlers", "DEFAULT_RUN", "EMBED_COLOURS", "EMBED_METHODS", "Embedder",
    "FEATURE_MODES_HELP", "Generator", "JUNK_COLOUR", "LEGACY_RUN", "MAKE_RUN_COMMAND", "MATCH_COLOUR",
    "MAX_UPLOAD_BYTES", "MAX_UPLOAD_PIXELS", "MIN_UPLOAD_SIDE", "ModelError", "NONMATCH_COLOUR", "QUERY_COLOUR",
    "RankResult", "RankedItem", "RankingBackend", "THUMB_SIZE", "bordered_thumbnail", "build_app", "camera_text",
    "camid_is_view", "caption", "default_run_dir", "detail_table", "launch_app", "load_upload", "missing_run_message",
    "open_record_image", "port_in_use_message", "run_embedder", "run_generator", "tau_note",
    "_load_split", "_load_tradeoff", "_tradeoff_candidates", "_tradeoff_sources",
]
