"""The Gradio ranking demo: pick or upload a person, see whom the model returns from the other platform.

``RankingBackend`` holds everything loaded once at startup (run config, test FeatureSet, dataset
split per protocol, one search index per protocol and feature mode, and lazily the models for live
extraction / generation); its methods are the handlers' logic and are tested directly.
``build_app`` is a thin Gradio view over it; ``launch_app`` serves it on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from agreid_kit import VIEW_NAMES
from agreid_kit.data.records import DatasetSplit, Record
from agreid_kit.eval import (
    QueryScores, RankItem, compute_distance, query_rules, rank_row, removal_masks, score_queries, top_items,
)
from agreid_kit.features import FeatureSet, FeatureSetError

from .search import GallerySearch

DEFAULT_RUN = "runs/synthag-small/sdreid-stage2"
"""Where the main job writes its SynthAG run (relative to the working directory)."""
MAKE_RUN_COMMAND = "make report"
"""The one command that makes the default run."""
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_UPLOAD_PIXELS = 40_000_000  # ~ 7,000 x 5,700; anything larger is refused, not decoded
MIN_UPLOAD_SIDE = 8
THUMB_SIZE = (128, 64)  # (H, W) of gallery thumbnails, the ReID aspect ratio
MATCH_COLOUR = (44, 160, 44)
NONMATCH_COLOUR = (214, 39, 40)
JUNK_COLOUR = (150, 150, 150)
QUERY_COLOUR = (31, 119, 180)
FEATURE_MODES_HELP = "real: the stage-1 feature; gen:<view>: one generated view; gen:all: all generated views; real+gen: SD-ReID's descriptor"

# An embedder maps one RGB image to the model's embed() outputs for a batch of one
# (``features`` and, for SD-ReID, ``prebn``, ``id_cond``, ``view_token``).
Embedder = Callable[["PIL.Image.Image"], dict[str, torch.Tensor]]
# A generator maps ID conditions (B, L-1, D) to generated features (retrieval space) per target view.
Generator = Callable[[torch.Tensor, int, float], dict[int, torch.Tensor]]


class AppError(ValueError):
    """A problem the page reports to the user in words (bad upload, empty filter, missing run)."""


def default_run_dir() -> Path:
    """The run the app serves without ``--run``: ``$AGREID_RUN`` or ``runs/synthag-small/sdreid-stage2``."""
    return Path(os.environ.get("AGREID_RUN") or DEFAULT_RUN)


def missing_run_message(run_dir: str | os.PathLike) -> str:
    return (
        f"No run found at `{run_dir}` (expected `{Path(run_dir) / 'config.json'}` and `features/test.*`).\n\n"
        f"Make the default SynthAG run with one command:\n\n```\n{MAKE_RUN_COMMAND}\n```\n\n"
        "or point the app at another run: `agreid app --run RUN` (or set `AGREID_RUN`)."
    )


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------
def load_upload(path: str | os.PathLike | None):
    """Open an uploaded file as an RGB image, refusing non-images, corrupt files and huge images."""
    from PIL import Image, UnidentifiedImageError

    if path is None or str(path) == "":
        raise AppError("No image uploaded: drop an image file (JPEG, PNG, WebP, ...) into the upload box first.")
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise AppError(f"The uploaded file {name!r} could not be found on the server; upload it again.")
    size = path.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise AppError(f"The uploaded file {name!r} is {size / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB.")
    try:
        with Image.open(path) as probe:
            w, h = probe.size
            if w * h > MAX_UPLOAD_PIXELS:
                raise AppError(
                    f"The uploaded image {name!r} is {w} x {h} pixels ({w * h / 1e6:.0f} MP); the limit is "
                    f"{MAX_UPLOAD_PIXELS / 1e6:.0f} MP. Crop it to the person first."
                )
            probe.verify()  # catches truncated / corrupt files without decoding everything twice
        with Image.open(path) as img:
            img.load()
            rgb = img.convert("RGB")
    except AppError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise AppError(f"The uploaded file {name!r} is not an image this app can read ({type(e).__name__}).") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise AppError(f"The uploaded image {name!r} is corrupt or truncated ({e}).") from e
    if min(rgb.size) < MIN_UPLOAD_SIDE:
        raise AppError(f"The uploaded image {name!r} is {rgb.size[0]} x {rgb.size[1]} pixels; it needs at least {MIN_UPLOAD_SIDE} per side.")
    return rgb


def open_record_image(path: str):
    """A dataset image as RGB; an unreadable file becomes a grey tile that says so."""
    from PIL import Image, ImageDraw

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError):
        tile = Image.new("RGB", (THUMB_SIZE[1], THUMB_SIZE[0]), (200, 200, 200))
        ImageDraw.Draw(tile).text((4, THUMB_SIZE[0] // 2 - 6), "missing", fill=(80, 80, 80))
        return tile


def bordered_thumbnail(img, colour: tuple[int, int, int], size: tuple[int, int] = THUMB_SIZE, border: int = 5):
    """Resize to ``size`` (H, W) and frame it in ``colour`` (green match, red non-match, grey junk)."""
    from PIL import ImageOps

    h, w = size
    thumb = img.convert("RGB").resize((w - 2 * border, h - 2 * border))
    return ImageOps.expand(thumb, border=border, fill=colour)


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------
RankedItem = RankItem
"""One displayed gallery item: the evaluator's :class:`agreid_kit.eval.RankItem` (``rank`` None for junk)."""


def caption(item: RankItem) -> str:
    """The three short lines the page shows under a thumbnail: rank and status, distance and pid, camera and view."""
    mark = {"match": "✓ match", "non-match": "✗ non-match", "junk": "· junk (dropped)", "unknown": ""}[item.status]
    rank = f"#{item.rank}" if item.rank is not None else f"({item.position})"
    return f"{rank} {mark}".strip() + f"\nd={item.distance:.3f} · pid {item.record.pid}\ncam {item.record.camid} · {VIEW_NAMES[item.record.view]}"


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
    query_image: Any = field(default=None, repr=False)  # the uploaded PIL image
    gallery_shown: int | None = None  # gallery items the filter lets through (of gallery_size)
    gallery_size: int | None = None

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
            "search": self.search_backend,
            "gallery_shown": self.gallery_shown,
            "gallery_size": self.gallery_size,
            "latency_ms": {k: round(v, 2) for k, v in self.latency_ms.items()},
            "gallery": [
                {"rank": it.rank, "position": it.position, "gallery_index": it.gallery_index, "pid": it.record.pid,
                 "camid": it.record.camid, "view": VIEW_NAMES[it.record.view], "distance": round(it.distance, 6),
                 "status": it.status}
                for it in self.items
            ],
        }

    def summary_markdown(self) -> str:
        def pct(v):
            return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.1f}%"

        lines = [f"**Query** {self.query_label} · protocol **{self.protocol}** · mode **{self.mode}**"]
        if self.source == "upload":
            lines.append("AP / INP: n/a (an uploaded image has no identity label)")
        elif not self.n_positives:
            lines.append("AP / INP: n/a (this query has no true match in the gallery; the evaluator skips it)")
        else:
            lines.append(
                f"**AP {pct(self.ap)}** · **INP {pct(self.inp)}** · first match at rank {self.first_match_rank} · "
                f"{self.n_positives} true matches in the gallery"
            )
        if self.tau is not None:
            how = "generated live for this query" if self.generated_live else "precomputed"
            lines.append(f"generated views: tau = {self.tau}, guidance = {self.guidance} ({how})")
        if self.gallery_shown is not None and self.gallery_shown < (self.gallery_size or 0):
            lines.append(f"gallery filter: ranking {self.gallery_shown} of {self.gallery_size} gallery images "
                         "(AP / INP score the whole gallery)")
        lat = ", ".join(f"{k} {v:.1f} ms" for k, v in self.latency_ms.items())
        lines.append(f"latency: {lat} · search: {self.search_backend}")
        return "  \n".join(lines)


# ---------------------------------------------------------------------------------------------
# Run resolution
# ---------------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise AppError(f"{path} is not valid JSON ({e}); the run is damaged, re-make it") from e


def _stage1_dir(run_dir: Path, config: dict[str, Any]) -> Path | None:
    """The stage-1 run behind a stage-2 run (its config names it), or the run itself."""
    ref = config.get("stage1")
    if not ref:
        return run_dir
    p = Path(ref)
    for candidate in (p, run_dir / p, run_dir.parent / p.name):
        if (candidate / "config.json").is_file():
            return candidate
    return None


def _data_spec(config: dict[str, Any]) -> str | None:
    for key in ("data", "data_spec", "dataset"):
        value = config.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _stored_generation(fs: FeatureSet) -> tuple[int | None, float | None]:
    """tau and guidance the stored gen:<view> features were made with (from the FeatureSet meta)."""
    meta = fs.meta or {}
    gen = meta.get("generation") if isinstance(meta.get("generation"), dict) else meta
    tau = gen.get("tau")
    guidance = gen.get("guidance", gen.get("guidance_scale"))
    return (int(tau) if tau is not None else None, float(guidance) if guidance is not None else None)


def _dataset_name(spec: str) -> str:
    return spec.split(":", 1)[0].strip().lower()


# ---------------------------------------------------------------------------------------------
# Backend
# ---------------------------------------------------------------------------------------------
class RankingBackend:
    """The loaded run and everything a ranking needs; one instance serves all sessions.

    Parameters: ``run_dir`` (a stage-1 or stage-2 run), ``data`` (data spec such as
    ``synthag:DIR``; default: the one in the run's config), ``protocol`` (default: the run's),
    ``embedder`` / ``generator`` (override the models built from the run, e.g. in tests),
    ``search_backend`` (``auto``: exact below 100k gallery images, faiss above).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        data: str | None = None,
        protocol: str | None = None,
        embedder: Embedder | None = None,
        generator: Generator | None = None,
        search_backend: str = "auto",
        split_loader: Callable[[str, str | None], DatasetSplit] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        if not (self.run_dir / "config.json").is_file() or not (self.run_dir / "features" / "test.json").is_file():
            raise AppError(missing_run_message(self.run_dir))
        self.config = _read_json(self.run_dir / "config.json")
        self.method = str(self.config.get("method", "?"))
        self.stage1_dir = _stage1_dir(self.run_dir, self.config)
        stage1_config = self.config if self.stage1_dir in (None, self.run_dir) else _read_json(self.stage1_dir / "config.json")
        run_spec = _data_spec(self.config) or _data_spec(stage1_config)
        self.data_spec = data or run_spec
        if self.data_spec is None:
            raise AppError(f"{self.run_dir / 'config.json'} names no data spec; pass --data NAME:ROOT")
        if data and run_spec and _dataset_name(data) != _dataset_name(run_spec):
            raise AppError(
                f"The run {self.run_dir} was trained and extracted on {run_spec!r}, but the app was given data "
                f"{data!r} (another dataset). Serve it with its own data (drop --data) or choose a run made on "
                f"{_dataset_name(data)}."
            )
        self.default_protocol = protocol or self.config.get("protocol") or stage1_config.get("protocol")
        self._split_loader = split_loader or _load_split
        self.metrics_file = _read_json(self.run_dir / "metrics.json") if (self.run_dir / "metrics.json").is_file() else {}
        self.fs = FeatureSet.load(self.run_dir / "features" / "test")  # loaded once, at startup
        self.stored_tau, self.stored_guidance = _stored_generation(self.fs)
        self._embedder = embedder
        self._generator = generator
        self._search_backend = search_backend
        self._model_lock = threading.RLock()  # re-entered: a handler holds it while the model loads
        self._splits: dict[str, DatasetSplit] = {}
        self._rows: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._search: dict[tuple[str, str], GallerySearch] = {}
        self._rank_inputs: dict[str, dict[str, Any]] = {}
        self._scores: dict[tuple[str, str], QueryScores] = {}
        self._protocols: list[str] | None = None
        self.tradeoff_error: str | None = None
        try:
            self.tradeoff = _load_tradeoff(self.run_dir)
        except AppError as e:  # a damaged table must not take the ranking page down
            self.tradeoff, self.tradeoff_error = None, str(e)
        self.split(self.default_protocol)  # fail at startup, in words, if the run does not match the data

    # ---- data -------------------------------------------------------------------------------
    def split(self, protocol: str | None = None) -> DatasetSplit:
        key = protocol or self.default_protocol or ""
        if key not in self._splits:
            try:
                split = self._split_loader(self.data_spec, protocol or self.default_protocol)
            except (ValueError, FileNotFoundError) as e:
                raise AppError(f"Cannot load data {self.data_spec!r} (protocol {key!r}): {e}") from e
            try:
                qrows = self.fs.index_of(split.query)
                grows = self.fs.index_of(split.gallery)
            except FeatureSetError as e:
                raise AppError(
                    f"The run {self.run_dir} does not match the data {self.data_spec!r} under protocol {key!r}: {e}. "
                    "Serve the run with the data it was made on, or make a run on this data."
                ) from e
            self._splits[key] = split
            self._rows[key] = (qrows, grows)
            self._rank_inputs[key] = _ranking_inputs(split)
        return self._splits[key]

    def _key(self, protocol: str | None) -> str:
        return protocol or self.default_protocol or ""

    def excluded(self, protocol: str | None, query_index: int) -> np.ndarray:
        """Gallery items the evaluator drops for this query: same pid and camera, plus protocol gallery rules."""
        self.split(protocol)
        inp = self._rank_inputs[self._key(protocol)]
        qi = int(query_index)
        junk, removed = removal_masks(int(inp["q_pids"][qi]), int(inp["q_camids"][qi]), inp["g_pids"], inp["g_camids"],
                                      query_rules(inp.get("gallery_rules"), qi))
        return junk | removed

    @property
    def protocols(self) -> list[str]:
        """The dataset's protocols whose query and gallery images all have features in this run."""
        if self._protocols is None:
            from agreid_kit.data import available_protocols

            try:
                names = list(available_protocols(_dataset_name(self.data_spec)))
            except (ValueError, KeyError):
                names = []
            ok = []
            for name in names:
                try:
                    self.split(name)
                    ok.append(name)
                except AppError:
                    continue  # e.g. the run extracted only the test images of its own protocol
            self._protocols = ok or [self.split().protocol]
        return self._protocols

    @property
    def modes(self) -> list[str]:
        return self.fs.available_modes()

    @property
    def has_generator(self) -> bool:
        return bool(self.fs.generated_views())

    def views(self, protocol: str | None = None) -> list[str]:
        return sorted({VIEW_NAMES[r.view] for r in self.split(protocol).query}, key=VIEW_NAMES.index)

    def cameras(self, protocol: str | None = None, view: str | None = None) -> list[int]:
        recs = self.split(protocol).query
        return sorted({r.camid for r in recs if view in (None, "", "all") or VIEW_NAMES[r.view] == view})

    def gallery_cameras(self, protocol: str | None = None) -> list[int]:
        return sorted({r.camid for r in self.split(protocol).gallery})

    def gallery_filter(self, protocol: str | None = None, view: str | None = None,
                       cameras: Sequence[int | str] | None = None) -> np.ndarray:
        """Mask of the gallery items a ranking shows (view name and camera ids; None / "all" / [] = every one).

        AP / INP still use the whole gallery of the protocol (what the evaluator scores).
        """
        split = self.split(protocol)
        keep = np.ones(len(split.gallery), dtype=bool)
        if view not in (None, "", "all"):
            if view not in VIEW_NAMES:
                raise AppError(f"Gallery view must be one of {['all', *VIEW_NAMES]}, got {view!r}")
            keep &= np.array([VIEW_NAMES[r.view] == view for r in split.gallery])
        cams = [int(c) for c in (cameras or []) if str(c) not in ("", "all")]
        if cams:
            keep &= np.isin(np.array([r.camid for r in split.gallery]), cams)
        if not keep.any():
            raise AppError(
                f"The gallery of protocol {split.protocol!r} has no image with view {view or 'any'} and camera(s) "
                f"{cams or 'any'}; it holds views {sorted({VIEW_NAMES[r.view] for r in split.gallery})} and cameras "
                f"{self.gallery_cameras(protocol)}. Widen the gallery filter."
            )
        return keep

    def query_choices(self, protocol: str | None = None, view: str | None = None, camera: int | str | None = None) -> list[tuple[str, int]]:
        """(label, query index) of the queries of a protocol, filtered by view name and camera id."""
        split = self.split(protocol)
        cam = None if camera in (None, "", "all") else int(camera)
        out = []
        for i, r in enumerate(split.query):
            if view not in (None, "", "all") and VIEW_NAMES[r.view] != view:
                continue
            if cam is not None and r.camid != cam:
                continue
            out.append((f"q{i} · pid {r.pid} · cam {r.camid} · {VIEW_NAMES[r.view]}", i))
        if not out:
            raise AppError(
                f"No query of protocol {split.protocol!r} has view {view or 'any'} and camera {camera if cam is not None else 'any'}; "
                "widen the filter."
            )
        return out

    def run_summary(self) -> str:
        split = self.split()
        c = split.counts()
        gens = ", ".join(f"gen:{VIEW_NAMES[v]}" for v in self.fs.generated_views()) or "none"
        parts = [
            f"**Run** `{self.run_dir}` · method **{self.method}** · data `{self.data_spec}` · protocol **{split.protocol}**",
            f"{c['query']['images']} queries ({c['query']['ids']} ids) vs {c['gallery']['images']} gallery images "
            f"({c['gallery']['ids']} ids) · generated views: {gens}",
        ]
        return "  \n".join(parts)

    # ---- search -----------------------------------------------------------------------------
    def searcher(self, protocol: str | None, mode: str) -> GallerySearch:
        key = (protocol or self.default_protocol or "", mode)
        if key not in self._search:
            self.split(protocol)
            _, grows = self._rows[key[0]]
            try:
                desc = self.fs.descriptor(mode, grows)
            except FeatureSetError as e:
                raise AppError(str(e)) from e
            self._search[key] = GallerySearch(desc, backend=self._search_backend)
        return self._search[key]

    def _check_mode(self, mode: str) -> None:
        if mode not in self.modes:
            raise AppError(f"Feature mode {mode!r} is not available for this run; choose one of {self.modes}. ({FEATURE_MODES_HELP})")

    def _needs_generation(self, mode: str) -> bool:
        return mode != "real"

    def _live_tau(self, tau: int | None, guidance: float | None) -> tuple[int | None, float | None]:
        return (int(tau) if tau else self.stored_tau, float(guidance) if guidance is not None else self.stored_guidance)

    # ---- models (lazy, one at a time) ---------------------------------------------------------
    def embedder(self) -> Embedder:
        with self._model_lock:
            if self._embedder is None:
                if self.stage1_dir is None:
                    raise AppError(f"The stage-1 run named in {self.run_dir / 'config.json'} is missing; cannot embed uploads.")
                self._embedder = run_embedder(self.stage1_dir)
            return self._embedder

    def generator(self) -> Generator:
        with self._model_lock:
            if self._generator is None:
                if self.method != "sdreid-stage2":
                    raise AppError(
                        f"This run ({self.method}) has no generator; generated views need an SD-ReID stage-2 run."
                    )
                self._generator = run_generator(self.run_dir)
            return self._generator

    def _generate(self, id_cond: torch.Tensor, tau: int, guidance: float) -> dict[str, torch.Tensor]:
        if tau is None or tau < 1:
            raise AppError(f"tau (denoising steps) must be >= 1, got {tau}")
        gen = self.generator()(id_cond, int(tau), float(guidance))
        return {f"gen:{int(v)}": t.reshape(1, -1).float() for v, t in gen.items()}

    # ---- ranking ----------------------------------------------------------------------------
    def rank_query(
        self, query_index: int, mode: str = "real", k: int = 10, protocol: str | None = None,
        tau: int | None = None, guidance: float | None = None,
        gallery_view: str | None = None, gallery_cameras: Sequence[int | str] | None = None,
    ) -> RankResult:
        """Rank the gallery for a query of the query set.

        With the stored tau/guidance (or mode ``real``) the descriptor comes from the FeatureSet;
        another tau/guidance regenerates the query's views live (the gallery keeps its stored ones).
        """
        t0 = time.perf_counter()
        self._check_mode(mode)
        split = self.split(protocol)
        if not 0 <= int(query_index) < len(split.query):
            raise AppError(f"Query index {query_index} is out of range: protocol {split.protocol!r} has {len(split.query)} queries.")
        qi = int(query_index)
        record = split.query[qi]
        qrows, _ = self._rows[self._key(protocol)]
        row = int(qrows[qi])
        shown = self.gallery_filter(protocol, gallery_view, gallery_cameras)  # an empty gallery fails before any work
        tau_, guid_ = self._live_tau(tau, guidance) if self._needs_generation(mode) else (None, None)
        live = self._needs_generation(mode) and (tau_ != self.stored_tau or guid_ != self.stored_guidance)
        latency: dict[str, float] = {}
        parts = {"features": self.fs.features[row:row + 1]}
        for name in ("prebn", "id_cond", "view_token"):
            if name in self.fs.extras:
                parts[name] = self.fs.extras[name][row:row + 1]
        if live:
            if "id_cond" not in parts:
                raise AppError("This run stores no ID conditions (id_cond), so views cannot be regenerated at another tau.")
            self.generator()  # load outside the timed region: latency is the generation alone
            t1 = time.perf_counter()
            with self._model_lock:
                parts.update(self._generate(parts["id_cond"], tau_, guid_))
            latency["generate"] = 1000 * (time.perf_counter() - t1)
        else:
            for v in self.fs.generated_views():
                parts[f"gen:{v}"] = self.fs.extras[f"gen:{v}"][row:row + 1]
        result = self._rank(parts, record, mode, k, protocol, source="query", query_index=qi, shown=shown, live=live,
                            label=f"q{qi} (pid {record.pid}, cam {record.camid}, {VIEW_NAMES[record.view]})")
        result.tau, result.guidance, result.generated_live = tau_, guid_, live
        result.query_image_path = self._resolve_path(record.path, split)
        result.latency_ms = {**latency, **result.latency_ms, "total": 1000 * (time.perf_counter() - t0)}
        return result

    def rank_upload(
        self, image_path: str | os.PathLike | None, mode: str = "real", k: int = 10, protocol: str | None = None,
        tau: int | None = None, guidance: float | None = None, view: str = "ground",
        gallery_view: str | None = None, gallery_cameras: Sequence[int | str] | None = None,
    ) -> RankResult:
        """Rank the gallery for an uploaded image: features extracted live, generated views computed live."""
        t0 = time.perf_counter()
        self._check_mode(mode)
        self.gallery_filter(protocol, gallery_view, gallery_cameras)  # an empty gallery fails before the model runs
        img = load_upload(image_path)
        if view not in VIEW_NAMES:
            raise AppError(f"Upload view must be one of {list(VIEW_NAMES)}, got {view!r}")
        embed = self.embedder()
        t1 = time.perf_counter()
        with self._model_lock:
            out = embed(img)
        latency = {"extract": 1000 * (time.perf_counter() - t1)}
        parts = {name: out[name].detach().float().reshape(1, *out[name].shape[1:]) for name in ("features", "prebn", "id_cond", "view_token") if name in out}
        if parts["features"].shape[1] != self.fs.dim:
            raise AppError(
                f"The model embeds to {parts['features'].shape[1]} dims but the run's features have {self.fs.dim}: "
                "the model and the FeatureSet come from different runs."
            )
        tau_, guid_ = self._live_tau(tau, guidance) if self._needs_generation(mode) else (None, None)
        if self._needs_generation(mode):
            if "id_cond" not in parts:
                raise AppError("The model returns no ID conditions (id_cond), so generated views cannot be computed.")
            self.generator()
            t2 = time.perf_counter()
            with self._model_lock:
                parts.update(self._generate(parts["id_cond"], tau_, guid_))
            latency["generate"] = 1000 * (time.perf_counter() - t2)
        record = Record(path=Path(str(image_path)).name, pid=-1, camid=-1, view=VIEW_NAMES.index(view))
        result = self._rank(parts, record, mode, k, protocol, source="upload", label=f"upload {record.path}",
                            shown=self.gallery_filter(protocol, gallery_view, gallery_cameras))
        result.tau, result.guidance, result.generated_live = tau_, guid_, self._needs_generation(mode)
        result.query_image = img
        result.latency_ms = {**latency, **result.latency_ms, "total": 1000 * (time.perf_counter() - t0)}
        return result

    def _rank(self, parts: dict[str, torch.Tensor], record: Record, mode: str, k: int, protocol: str | None,
              source: str, label: str, query_index: int | None = None,
              shown: np.ndarray | None = None, live: bool = False) -> RankResult:
        if k < 1:
            raise AppError(f"top-k must be at least 1, got {k}")
        split = self.split(protocol)
        one = FeatureSet(
            features=parts["features"], records=[record], split="query", fingerprint=self.fs.fingerprint,
            extras={n: t for n, t in parts.items() if n != "features"},
        )
        try:
            qdesc = one.descriptor(mode)[0]  # the kit's own composition of the feature mode
        except FeatureSetError as e:
            raise AppError(str(e)) from e
        search = self.searcher(protocol, mode)
        t = time.perf_counter()
        known = query_index is not None
        g_pids = self._rank_inputs[self._key(protocol)]["g_pids"].numpy()
        drop = self.excluded(protocol, query_index) if known else np.zeros(len(split.gallery), dtype=bool)
        shown = np.ones(len(split.gallery), dtype=bool) if shown is None else shown
        hidden = np.flatnonzero(~shown)
        n_drop = int((drop & shown).sum())
        # Junk items (dropped by the evaluator) are shown flagged in their place, as the rank-list browser does:
        # fetch k + n_drop. Items outside the gallery filter are not shown at all.
        top = search.topk(qdesc, min(len(search), k + n_drop), exclude=hidden)
        junk = drop[top.rows]
        matches = (g_pids[top.rows] == record.pid) & ~junk if known else None
        items = top_items(top.rows, top.distances, junk, matches, split.gallery, k)
        search_ms = 1000 * (time.perf_counter() - t)
        ap = inp = first = None
        n_pos = None
        if known:
            ap, inp, first, n_pos = self._query_scores(qdesc, mode, protocol, int(query_index), live)
        return RankResult(
            source=source, query_label=label, query_record=record if known else None, protocol=split.protocol,
            mode=mode, k=k, items=items, ap=ap, inp=inp, first_match_rank=first, n_positives=n_pos, tau=None,
            guidance=None, generated_live=False, search_backend=search.backend, latency_ms={"search": search_ms},
            query_parts={n: t for n, t in parts.items() if n != "id_cond"},
            gallery_shown=int(shown.sum()), gallery_size=len(split.gallery),
        )

    def _query_scores(self, qdesc: torch.Tensor, mode: str, protocol: str | None, qi: int, live: bool):
        """AP / INP / first-match rank / #positives of query ``qi``, as the kit's evaluator scores it.

        A stored query's scores are the evaluator's own over the whole split (one evaluation per
        protocol and mode, cached), computed exactly as ``agreid evaluate`` computes the run's
        metrics.json, so they equal its per-query values bit for bit (and their mean its mAP). A query
        whose views were regenerated live gets the same per-query core on its own distance row. Both
        use the float32 distances of ``compute_distance``, not the display's float64 ones, so at a
        float32 near-tie the first-match rank may differ from the displayed order by a swap.
        """
        if live:
            inp = self._rank_inputs[self._key(protocol)]
            dist = compute_distance(qdesc[None], self._descriptors(protocol, mode, "gallery"))[0]
            rk = rank_row(dist, int(inp["q_pids"][qi]), int(inp["q_camids"][qi]), inp["g_pids"], inp["g_camids"],
                          query_rules(inp.get("gallery_rules"), qi))
            ap, inp_, first, n_pos = rk.ap, rk.inp, rk.first_match_rank, rk.n_positives
        else:
            sc = self.query_scores(protocol, mode)
            ap, inp_, first, n_pos = float(sc.ap[qi]), float(sc.inp[qi]), int(sc.first_match_rank[qi]), int(sc.n_positives[qi])
        if n_pos == 0:
            return None, None, None, 0
        return ap, inp_, first, n_pos

    def query_scores(self, protocol: str | None, mode: str) -> QueryScores:
        """The evaluator's per-query scores of every stored query under ``mode`` (cached per protocol and mode)."""
        key = (self._key(protocol), mode)
        if key not in self._scores:
            self.split(protocol)
            dist = compute_distance(self._descriptors(protocol, mode, "query"), self._descriptors(protocol, mode, "gallery"))
            self._scores[key] = score_queries(dist, **self._rank_inputs[key[0]], progress=False)
        return self._scores[key]

    def _descriptors(self, protocol: str | None, mode: str, side: str) -> torch.Tensor:
        """Stored query or gallery descriptors of the split under ``mode``, as evaluation builds them."""
        qrows, grows = self._rows[self._key(protocol)]
        try:
            return self.fs.descriptor(mode, qrows if side == "query" else grows)
        except FeatureSetError as e:
            raise AppError(str(e)) from e

    # ---- views of a result --------------------------------------------------------------------
    def _resolve_path(self, path: str, split: DatasetSplit | None = None) -> str:
        p = Path(path)
        if p.is_absolute():
            return str(p)
        root = Path((split or self.split()).root)
        return str(root / p)

    def gallery_items(self, result: RankResult) -> list[tuple[Any, str]]:
        """(thumbnail framed by match status, caption) per displayed item."""
        colours = {"match": MATCH_COLOUR, "non-match": NONMATCH_COLOUR, "junk": JUNK_COLOUR, "unknown": QUERY_COLOUR}
        out = []
        for it in result.items:
            img = open_record_image(self._resolve_path(it.record.path))
            out.append((bordered_thumbnail(img, colours[it.status]), caption(it)))
        return out

    def query_image(self, result: RankResult):
        if result.query_image is not None:
            return result.query_image
        return open_record_image(result.query_image_path or "")

    def item_detail(self, result: RankResult | None, index: int) -> tuple[Any, str]:
        """The large image and metadata of the ``index``-th displayed result."""
        if result is None:
            raise AppError("Run a ranking first, then click a result to see it large.")
        if not 0 <= int(index) < len(result.items):
            raise AppError(f"Result {index} does not exist; the ranking shows {len(result.items)} items.")
        it = result.items[int(index)]
        r = it.record
        rows = [
            ("rank", it.rank if it.rank is not None else f"junk (position {it.position})"),
            ("status", it.status), ("distance", f"{it.distance:.4f}"), ("pid", r.pid), ("camera", r.camid),
            ("view", VIEW_NAMES[r.view]), ("raw camera", r.raw_camid), ("altitude", r.altitude), ("time", r.time),
            ("scene", r.scene), ("path", r.path),
        ]
        rows += [(f"extra · {k}", v) for k, v in sorted((r.extra or {}).items()) if isinstance(v, (int, float, str))]
        table = "| field | value |\n| --- | --- |\n" + "\n".join(f"| {k} | {v} |" for k, v in rows if v is not None)
        return open_record_image(self._resolve_path(r.path)), table

    def embedding_figure(self, result: RankResult | None, method: str = "pca", color_by: str = "view_name",
                         max_points: int = 600, seed: int = 0):
        """UMAP / t-SNE / PCA of the gallery (and the query and its generated views, highlighted).

        Large galleries are subsampled (seeded) to ``max_points`` images so t-SNE / UMAP answer in
        seconds on a CPU; with generated views every image adds one point per view.
        """
        import plotly.graph_objects as go
        from agreid_kit.analysis import embedding_frame
        from agreid_kit.viz import embedding_figure

        protocol = result.protocol if result is not None else None
        split = self.split(protocol)
        _, grows = self._rows[self._key(protocol)]
        gens = [f"gen:{v}" for v in self.fs.generated_views()]
        q = result.query_parts if result is not None else {}
        # Generated points only when the query has them too (an upload ranked in mode real has none).
        include_gen = bool(gens) and (result is None or all(g in q for g in gens))
        # Generated features live in the real feature's retrieval space: embed them together.
        real_tensor = "features"
        rows = grows.numpy()
        if len(rows) > max_points:
            rows = np.sort(np.random.default_rng(seed).choice(rows, size=max_points, replace=False))
        gallery = self.fs.subset(torch.from_numpy(rows))
        needed = [real_tensor, *(gens if include_gen else [])]
        tensors = {name: gallery.get(name).float() for name in needed}
        records = list(gallery.records)
        if result is not None and all(name in q for name in needed):
            qrec = result.query_record or Record(path="upload", pid=-1, camid=-1, view=1)
            records.append(Record(path=f"QUERY::{qrec.path}", pid=qrec.pid, camid=qrec.camid, view=qrec.view))
            tensors = {name: torch.cat([t, q[name].float().reshape(1, -1)]) for name, t in tensors.items()}
        fs = FeatureSet(tensors.pop(real_tensor), records, gallery.split, gallery.fingerprint, tensors)
        if len(fs) < 3:
            raise AppError("The gallery has fewer than 3 images; nothing to embed.")
        try:
            df = embedding_frame(fs, method=method, include_generated=include_gen, real_tensor="features", seed=seed)
        except (ValueError, FeatureSetError) as e:
            raise AppError(f"Embedding failed: {e}") from e
        n_gallery = len(gallery)
        is_query = df["path"].astype(str).str.startswith("QUERY::").to_numpy()
        fig = embedding_figure(df[~is_query].reset_index(drop=True), color_by=color_by,
                               title=f"{method.upper()} of {n_gallery} of {len(grows)} gallery images ({split.protocol})")
        if is_query.any():
            qdf = df[is_query]
            fig.add_trace(go.Scatter(
                x=qdf["x"], y=qdf["y"], mode="markers+text", name="query", text=qdf["kind"].tolist(),
                textposition="top center",
                marker=dict(size=16, color="black", symbol=["star" if k == "real" else "diamond-open" for k in qdf["kind"]],
                            line=dict(width=2, color="gold")),
            ))
        return fig

    def tradeoff_figure(self, result: RankResult | None = None):
        """The precomputed accuracy / latency curves over tau, with the current query's tau and live latency.

        The curves are the stage-2 trade-off table (``agreid tradeoff RUN``: seconds per 1,000 images,
        batched); the live point is this query's generation time in ms per image (= s per 1,000) at batch 1.
        """
        import plotly.graph_objects as go
        from agreid_kit.diffusion.analyses import tradeoff_figure

        if self.tradeoff_error:
            raise AppError(self.tradeoff_error)
        if self.tradeoff is None:
            raise AppError(
                f"No timestep trade-off table for {self.run_dir} (looked for RUN/analysis/tradeoff.csv and "
                "reports/*/tradeoff.csv naming this run); make it with "
                f"`agreid tradeoff {self.run_dir}` (part of `{MAKE_RUN_COMMAND}`)."
            )
        df = self.tradeoff
        protocol = result.protocol if result is not None else self.split().protocol
        if "protocol" in df and (df["protocol"] == protocol).any():
            df = df[df["protocol"] == protocol]
        fig = tradeoff_figure(df)
        tau = result.tau if result is not None and result.tau is not None else self.stored_tau
        if tau is not None:
            fig.add_vline(x=tau, line=dict(color="#d62728", width=2, dash="dot"))
        if result is not None and "generate" in result.latency_ms and result.tau is not None:
            fig.add_trace(go.Scatter(
                x=[result.tau], y=[result.latency_ms["generate"]], mode="markers", name="this query (batch 1)",
                marker=dict(size=14, color="#d62728", symbol="star"),
            ), secondary_y=True)
        return fig

    def live_latency_markdown(self, result: RankResult | None) -> str:
        if result is None:
            return "Run a ranking to measure this query's latency."
        lines = [f"**This query** ({result.query_label}, mode {result.mode}"
                 + (f", tau {result.tau}, guidance {result.guidance}" if result.tau is not None else "") + "):"]
        lines += [f"- {k}: {v:.1f} ms" for k, v in result.latency_ms.items()]
        if "generate" in result.latency_ms:
            lines.append(f"- generation at batch 1: {result.latency_ms['generate']:.0f} ms per image "
                         "(= s per 1,000 images, the unit of the trade-off curve's latency axis)")
        return "\n".join(lines)


def _tradeoff_candidates(run_dir: Path, reports_root: Path = Path("reports")) -> list[Path]:
    """Where a trade-off table of this run may be: ``agreid tradeoff RUN`` writes RUN/analysis/tradeoff.csv;
    the main job writes reports/<date>/tradeoff.csv with tradeoff.json naming the run (newest first)."""
    out = [run_dir / "analysis" / "tradeoff.csv", run_dir / "tradeoff.csv"]
    target = run_dir.resolve()
    for csv in sorted(reports_root.glob("*/tradeoff.csv"), reverse=True):
        try:
            settings = json.loads((csv.parent / "tradeoff.json").read_text()).get("settings", {})
        except (OSError, ValueError):
            continue
        if settings.get("run") and Path(settings["run"]).resolve() == target:
            out.append(csv)
    return out


def _load_tradeoff(run_dir: Path):
    """The stage-2 trade-off table (tau, protocol, mode, rank1, mAP, mINP, sec_per_1000) if the run has one."""
    import pandas as pd

    for p in _tradeoff_candidates(run_dir):
        if p.is_file():
            try:
                df = pd.read_csv(p) if p.suffix == ".csv" else pd.DataFrame(json.loads(p.read_text()))
            except (ValueError, OSError) as e:
                raise AppError(f"The trade-off table {p} cannot be read ({e}).") from e
            if "sec_per_1000" not in df and "sec_per_1k" in df:
                df = df.rename(columns={"sec_per_1k": "sec_per_1000"})
            missing = [c for c in ("tau", "rank1", "mAP", "mINP", "sec_per_1000") if c not in df]
            if missing:
                raise AppError(f"The trade-off table {p} lacks columns {missing}; it has {list(df.columns)}")
            for col, default in (("protocol", ""), ("mode", "real+gen")):
                if col not in df:
                    df[col] = default
            return df
    return None


def _ranking_inputs(split: DatasetSplit) -> dict[str, Any]:
    from agreid_kit.eval import ranking_inputs

    return ranking_inputs(split)


def _load_split(spec: str, protocol: str | None) -> DatasetSplit:
    from agreid_kit.data import load_dataset, parse_data_spec

    name, root = parse_data_spec(spec)
    return load_dataset(name, root, protocol or "ALL")


def run_embedder(stage1_dir: str | os.PathLike) -> Embedder:
    """Embed one PIL image with a stage-1 run's model, through the same test transform extraction used."""
    from agreid_kit.data.transforms import TransformConfig, test_transform
    from agreid_kit.engine import load_run

    model = load_run(stage1_dir).model  # eval mode
    transform = test_transform(TransformConfig(tuple(model.input_size), tuple(model.mean), tuple(model.std)))
    device = next(model.parameters()).device

    def embed(img) -> dict[str, torch.Tensor]:
        x = transform(img.convert("RGB")).unsqueeze(0).to(device)
        zero = torch.zeros(1, dtype=torch.long, device=device)
        batch = {"images": x, "pids": zero, "camids": zero, "views": zero,
                 "attributes": torch.zeros(1, 0, dtype=torch.long, device=device), "index": zero}
        with torch.no_grad():
            return {k: v.detach().float().cpu() for k, v in model.embed(batch).items()}

    return embed


def run_generator(stage2_dir: str | os.PathLike, seed: int | None = None) -> Generator:
    """Generate every view's feature (retrieval space) from ID conditions with a stage-2 run's model.

    Sampler, timestep spacing and seed follow the generation recorded with the run's test features,
    so a live query is generated the way its gallery was.
    """
    from agreid_kit.diffusion.sample import generate_latent_features, parse_views
    from agreid_kit.diffusion.loading import load_stage2

    model, run_cfg = load_stage2(stage2_dir)
    stem = Path(stage2_dir) / "features" / "test.json"
    recorded = (json.loads(stem.read_text()).get("meta") or {}).get("generation", {}) if stem.is_file() else {}
    views = parse_views(None, model.config.num_views, run_cfg.get("dataset", ""))

    def generate(id_cond: torch.Tensor, tau: int, guidance: float) -> dict[int, torch.Tensor]:
        return generate_latent_features(
            model, id_cond.float(), views, tau=int(tau), guidance=float(guidance),
            sampler=recorded.get("sampler", "ddim"), timestep_spacing=recorded.get("timestep_spacing", "leading"),
            num_train_timesteps=int(run_cfg["num_train_timesteps"]),
            seed=int(recorded.get("seed", 0) if seed is None else seed), batch_size=64, progress=False,
        )

    return generate


# ---------------------------------------------------------------------------------------------
# Gradio view
# ---------------------------------------------------------------------------------------------
APP_TITLE = "agreid-kit · aerial-ground ReID ranking demo"
APP_CSS = """
#status-box p { color: #b00020; font-weight: 600; }
/* Tall ReID crops with their full caption under them (Gradio overlays and truncates captions by default). */
#results .thumbnail-item { aspect-ratio: auto; height: auto; display: flex; flex-direction: column; overflow: visible; }
#results .thumbnail-item img { height: 176px; width: 100%; object-fit: contain; }
#results .caption-label { position: static; max-width: none; white-space: pre-line; overflow: visible;
  text-overflow: clip; font-size: 12px; line-height: 1.25; text-align: left; margin: 2px 0 0 0; }
"""
EMBED_METHODS = ("tsne", "umap", "pca")
EMBED_COLOURS = ("kind", "view_name", "camid", "pid", "altitude", "pitch", "distance")


def _warn(message: str) -> str:
    return f"⚠️ {message}"


def build_app(
    run_dir: str | os.PathLike | None = None,
    data: str | None = None,
    protocol: str | None = None,
    backend: RankingBackend | None = None,
):
    """The Blocks app over a ``RankingBackend`` (built from ``run_dir`` unless one is given).

    A missing or mismatched run gives a page that says what is wrong and how to make the run,
    instead of an exception: the server keeps serving either way. ``demo.backend`` is the backend
    (None on such a page).
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    error = None
    if backend is None:
        try:
            backend = RankingBackend(run_dir if run_dir is not None else default_run_dir(), data=data, protocol=protocol)
        except (AppError, FeatureSetError) as e:
            error = str(e)

    with gr.Blocks(title=APP_TITLE, analytics_enabled=False) as demo:
        gr.Markdown(f"# {APP_TITLE}")
        if backend is None:
            gr.Markdown(_warn(error), elem_id="run-error")
            demo.backend = None
            return demo
        demo.backend = b = backend
        gen_ok = b.has_generator
        split = b.split()
        state = gr.State(None)
        gr.Markdown(b.run_summary(), elem_id="run-summary")

        with gr.Tab("Rank"):
            with gr.Row():
                with gr.Column(scale=1, min_width=300):
                    protocol_dd = gr.Dropdown(b.protocols, value=split.protocol, label="protocol")
                    mode_dd = gr.Dropdown(b.modes, value="real+gen" if "real+gen" in b.modes else "real",
                                          label="feature mode", info=FEATURE_MODES_HELP)
                    k_sl = gr.Slider(1, 50, value=10, step=1, label="top-k")
                    tau_sl = gr.Slider(1, 50, value=b.stored_tau or 5, step=1, visible=gen_ok,
                                       label="tau: denoising steps of the generated views")
                    guid_sl = gr.Slider(0.0, 10.0, value=b.stored_guidance if b.stored_guidance is not None else 2.0,
                                        step=0.5, label="guidance scale", visible=gen_ok)
                    with gr.Row():
                        gview_dd = gr.Dropdown(["all", *VIEW_NAMES[:max(2, split.num_views)]], value="all",
                                               label="gallery view")
                        gcams_dd = gr.Dropdown([str(c) for c in b.gallery_cameras()], value=[], multiselect=True,
                                               label="gallery cameras (none: all)")
                    with gr.Tab("Query set"):
                        view_dd = gr.Dropdown(["all", *b.views()], value="all", label="query view")
                        cam_dd = gr.Dropdown(["all", *map(str, b.cameras())], value="all", label="query camera")
                        choices = b.query_choices()
                        query_dd = gr.Dropdown(choices, value=choices[0][1], label="query", elem_id="query-pick")
                        rank_btn = gr.Button("Rank", variant="primary", elem_id="rank-button")
                    with gr.Tab("Upload"):
                        upload = gr.File(label="person image (JPEG / PNG / WebP)", type="filepath", elem_id="upload")
                        upload_view = gr.Radio(list(VIEW_NAMES[:max(2, split.num_views)]), value="ground",
                                               label="view of the uploaded image")
                        upload_btn = gr.Button("Rank upload", variant="primary", elem_id="upload-button")
                with gr.Column(scale=3):
                    status = gr.Markdown("", elem_id="status-box")
                    with gr.Row():
                        query_img = gr.Image(label="query", type="pil", height=256, interactive=False, scale=1)
                        summary_md = gr.Markdown("Pick a query and press **Rank**, or upload an image.",
                                                 elem_id="summary")
                    gallery = gr.Gallery(label="top-k (green frame: match, red: non-match, grey: junk)", columns=5,
                                         height="auto", format="png", elem_id="results", allow_preview=False,
                                         object_fit="contain")
                    with gr.Row():
                        detail_img = gr.Image(label="selected result", type="pil", height=384, interactive=False,
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
            trade_status = gr.Markdown("")
            trade_plot = gr.Plot(label="accuracy / latency over tau")
            latency_md = gr.Markdown("Run a ranking to measure this query's latency.", elem_id="latency")

        rank_outputs = [state, status, query_img, summary_md, gallery, metrics_json, detail_img, detail_md]

        def present(result: RankResult):
            return [result, "", b.query_image(result), result.summary_markdown(), b.gallery_items(result),
                    result.metrics(), None, "Click a result to see it large."]

        def failed(message: str, keep):
            # The previous result stays in the session state; the page says what went wrong.
            return [keep, _warn(message), None, "", [], {"error": message}, None, ""]

        def rank_query(query_index, protocol, mode, k, tau, guidance, gview, gcams, current=None):
            try:
                if query_index is None:
                    raise AppError("Choose a query first (the filter may have left none).")
                return present(b.rank_query(int(query_index), mode, int(k), protocol, tau if gen_ok else None,
                                            guidance if gen_ok else None, gallery_view=gview, gallery_cameras=gcams))
            except (AppError, FeatureSetError) as e:
                return failed(str(e), current)

        def rank_upload(path, view, protocol, mode, k, tau, guidance, gview, gcams, current=None):
            try:
                return present(b.rank_upload(path, mode, int(k), protocol, tau if gen_ok else None,
                                             guidance if gen_ok else None, view=view, gallery_view=gview,
                                             gallery_cameras=gcams))
            except (AppError, FeatureSetError) as e:
                return failed(str(e), current)

        def rerank(current, query_index, path, view, protocol, mode, k, tau, guidance, gview, gcams):
            # A change of mode / k / tau / guidance / gallery filter re-runs whatever was ranked last.
            if current is None:
                return [None, "", *[gr.skip()] * 6]
            if current.source == "upload":
                return rank_upload(path, view, protocol, mode, k, tau, guidance, gview, gcams, current)
            return rank_query(query_index, protocol, mode, k, tau, guidance, gview, gcams, current)

        def filter_queries(protocol, view, camera):
            try:
                cams = ["all", *map(str, b.cameras(protocol, view))]
                camera = camera if camera in cams else "all"
                choices = b.query_choices(protocol, view, camera)
                gcams = [str(c) for c in b.gallery_cameras(protocol)]
                return (gr.update(choices=choices, value=choices[0][1]), gr.update(choices=cams, value=camera),
                        gr.update(choices=gcams, value=[]), "")
            except (AppError, FeatureSetError) as e:
                return gr.update(choices=[], value=None), gr.skip(), gr.skip(), _warn(str(e))

        def detail(current, index):
            try:
                return b.item_detail(current, int(index) if index is not None else -1)
            except AppError as e:
                return None, _warn(str(e))

        def select_detail(current, evt: gr.SelectData):
            return detail(current, evt.index)

        # Gradio finds the event argument by its annotation; with postponed annotations it sees a string.
        select_detail.__annotations__["evt"] = gr.SelectData

        def embedding(current, method, color_by):
            try:
                return b.embedding_figure(current, method=method, color_by=color_by), ""
            except AppError as e:
                return None, _warn(str(e))

        def tradeoff(current):
            latency = b.live_latency_markdown(current)
            try:
                return b.tradeoff_figure(current), "", latency
            except AppError as e:
                return None, _warn(str(e)), latency

        settings = [protocol_dd, mode_dd, k_sl, tau_sl, guid_sl, gview_dd, gcams_dd]
        trade_outputs = [trade_plot, trade_status, latency_md]
        model_limit = dict(concurrency_limit=1, concurrency_id="model")  # one model call at a time
        rank_btn.click(rank_query, [query_dd, *settings, state], rank_outputs, api_name="rank_query", **model_limit
                       ).then(tradeoff, state, trade_outputs, api_name=False)
        upload_btn.click(rank_upload, [upload, upload_view, *settings, state], rank_outputs, api_name="rank_upload",
                         **model_limit).then(tradeoff, state, trade_outputs, api_name=False)
        for control in (mode_dd, k_sl, tau_sl, guid_sl, gview_dd, gcams_dd):
            control.input(rerank, [state, query_dd, upload, upload_view, *settings], rank_outputs,
                          api_name="rerank" if control is mode_dd else False, **model_limit
                          ).then(tradeoff, state, trade_outputs, api_name=False)
        for control in (protocol_dd, view_dd, cam_dd):
            control.input(filter_queries, [protocol_dd, view_dd, cam_dd], [query_dd, cam_dd, gcams_dd, status],
                          api_name="filter_queries" if control is view_dd else False)
        gallery.select(select_detail, state, [detail_img, detail_md], api_name=False)
        detail_index.change(detail, [state, detail_index], [detail_img, detail_md], api_name="detail")
        embed_btn.click(embedding, [state, method_rd, color_dd], [embed_plot, embed_status], api_name="embedding",
                        concurrency_limit=1, concurrency_id="embedding")
        demo.load(tradeoff, state, trade_outputs, api_name=False)
    return demo


def launch_app(demo, port: int | None = None, prevent_thread_lock: bool = False, quiet: bool = False):
    """Serve on 127.0.0.1 only: no share link, no analytics, files only from the run and dataset folders."""
    import gradio as gr

    allowed: list[str] = []
    backend: RankingBackend | None = getattr(demo, "backend", None)
    if backend is not None:
        allowed += [str(backend.run_dir.resolve()), str(Path(backend.split().root).resolve())]
    demo.queue(max_size=64)
    return demo.launch(
        server_name="127.0.0.1",
        server_port=port,
        share=False,
        allowed_paths=allowed,
        footer_links=[],
        max_file_size="50mb",  # uploads are person crops; the handler refuses more than 20 MB in words
        prevent_thread_lock=prevent_thread_lock,
        quiet=quiet,
        theme=gr.themes.Soft(),
        css=APP_CSS,
        show_error=False,
    )
