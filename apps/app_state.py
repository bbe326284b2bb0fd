"""``RankingBackend``: what the ranking app loads once at startup and ranks with.

It holds the run config, the test FeatureSet, the dataset split per protocol, one search index per
protocol and feature mode, and lazily the models for live extraction / generation. Rankings go
through the evaluator's core (``agreid_kit.eval``: ``query_rules``, ``removal_masks``,
``score_queries``, ``rank_row``, ``top_items``), so a query's AP / INP are the evaluator's own.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from agreid_kit import VIEW_NAMES
from agreid_kit.data.records import DatasetSplit, Record
from agreid_kit.eval import QueryScores, compute_distance, query_rules, rank_row, removal_masks, score_queries, top_items
from agreid_kit.features import FeatureSet, FeatureSetError

from .app_errors import AppError, ModelError, describe
from .app_images import JUNK_COLOUR, MATCH_COLOUR, NONMATCH_COLOUR, QUERY_COLOUR, bordered_thumbnail, load_upload, open_record_image
from .app_render import (
    RankResult, caption, camid_is_view, detail_table, live_latency_markdown, query_label, tradeoff_plot,
)
from .app_runs import (
    MAKE_RUN_COMMAND, Embedder, Generator, _data_spec, _dataset_name, _load_split, _load_tradeoff, _ranking_inputs,
    _read_json, _stage1_dir, _stored_generation, missing_run_message, run_embedder, run_generator,
)
from .search import GallerySearch

FEATURE_MODES_HELP = "real: stage-1 feature · gen:<view>: one generated view · gen:all: all views · real+gen: SD-ReID's descriptor"
UPLOAD_MAX_SIDE = 512  # uploads for an embedder that names no input size are shrunk to this longer side


class RankingBackend:
    """The loaded run and everything a ranking needs; one instance serves all sessions.

    Parameters: ``run_dir`` (a stage-1 or stage-2 run), ``data`` (data spec such as
    ``synthag:DIR``; default: the one in the run's config), ``protocol`` (default: the run's),
    ``embedder`` / ``generator`` (override the models built from the run, e.g. in tests),
    ``search_backend`` (``auto``: exact below 100k gallery images, faiss above), ``report`` (a
    report folder or trade-off CSV; default: found from the run, see ``app_runs``).
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
        report: str | os.PathLike | None = None,
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
        self._view_ids: dict[str, bool] = {}
        self._protocols: list[str] | None = None
        self.report = report
        self.tradeoff_error: str | None = None
        self.tradeoff_path: Path | None = None
        try:
            self.tradeoff, self.tradeoff_path = _load_tradeoff(self.run_dir, report=report)
        except AppError as e:  # a damaged table must not take the ranking page down
            self.tradeoff, self.tradeoff_error = None, str(e)
        self.split(self.default_protocol)  # fail at startup, in words, if the run does not match the data

    # ---- data -------------------------------------------------------------------------------
    def split(self, protocol: str | None = None) -> DatasetSplit:
        key = self._key(protocol)
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
            self._view_ids[key] = camid_is_view([*split.query, *split.gallery])
        return self._splits[key]

    def _key(self, protocol: str | None) -> str:
        return protocol or self.default_protocol or ""

    def view_ids(self, protocol: str | None = None) -> bool:
        """Whether the protocol's camera ids are views (then the page says "view", not "cam 0 / 1")."""
        self.split(protocol)
        return self._view_ids[self._key(protocol)]

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

    def camera_choices(self, cams: Sequence[int], protocol: str | None = None) -> list[tuple[str, str]]:
        """(label, value) of camera ids for a dropdown: under a view protocol the label says it is the view."""
        if self.view_ids(protocol):
            return [(f"{VIEW_NAMES[c]} (camid = view)" if 0 <= c < len(VIEW_NAMES) else str(c), str(c)) for c in cams]
        return [(str(c), str(c)) for c in cams]

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
        view_ids = self.view_ids(protocol)
        cam = None if camera in (None, "", "all") else int(camera)
        out = []
        for i, r in enumerate(split.query):
            if view not in (None, "", "all") and VIEW_NAMES[r.view] != view:
                continue
            if cam is not None and r.camid != cam:
                continue
            out.append((query_label(i, r, view_ids), i))
        if not out:
            raise AppError(
                f"No query of protocol {split.protocol!r} has view {view or 'any'} and camera {camera if cam is not None else 'any'}; "
                "widen the filter."
            )
        return out

    def find_query(self, protocol: str | None, record: Record | None) -> int | None:
        """The index of the same image among the queries of ``protocol`` (None when it is not a query there)."""
        if record is None:
            return None
        for i, r in enumerate(self.split(protocol).query):
            if r.path == record.path:
                return i
        return None

    def run_summary(self, protocol: str | None = None) -> str:
        """The header: the run, and the counts of the active protocol."""
        split = self.split(protocol)
        c = split.counts()
        gens = ", ".join(f"gen:{VIEW_NAMES[v]}" for v in self.fs.generated_views()) or "none"
        made = self.split().protocol
        parts = [
            f"**Run** `{self.run_dir}` · method **{self.method}** · data `{self.data_spec}` · "
            f"active protocol **{split.protocol}**" + (f" (run made on {made})" if split.protocol != made else ""),
            f"{c['query']['images']} queries ({c['query']['ids']} ids) vs {c['gallery']['images']} gallery images "
            f"({c['gallery']['ids']} ids) · generated views: {gens}",
        ]
        return "  \n".join(parts)

    # ---- search -----------------------------------------------------------------------------
    def searcher(self, protocol: str | None, mode: str) -> GallerySearch:
        key = (self._key(protocol), mode)
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

    # ---- models (lazy, one at a time; any failure is a ModelError in words) -------------------
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

    def _embed(self, img) -> dict[str, torch.Tensor]:
        embed = self.embedder()
        with self._model_lock:
            try:
                return embed(img)
            except AppError:
                raise
            except Exception as e:  # noqa: BLE001 - a model failure reaches the page as its own message
                raise ModelError(f"The model of run {self.stage1_dir} failed on this image ({describe(e)}).") from e

    def _generate(self, id_cond: torch.Tensor, tau: int, guidance: float) -> dict[str, torch.Tensor]:
        if tau is None or tau < 1:
            raise AppError(f"tau (denoising steps) must be >= 1, got {tau}")
        gen_fn = self.generator()
        with self._model_lock:
            try:
                gen = gen_fn(id_cond, int(tau), float(guidance))
            except AppError:
                raise
            except Exception as e:  # noqa: BLE001
                raise ModelError(f"The stage-2 model of run {self.run_dir} failed to generate views ({describe(e)}).") from e
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
            parts.update(self._generate(parts["id_cond"], tau_, guid_))
            latency["generate"] = 1000 * (time.perf_counter() - t1)
        else:
            for v in self.fs.generated_views():
                parts[f"gen:{v}"] = self.fs.extras[f"gen:{v}"][row:row + 1]
        view_ids = self.view_ids(protocol)
        cam = f"view {VIEW_NAMES[record.view]}" if view_ids else f"cam {record.camid}, {VIEW_NAMES[record.view]}"
        result = self._rank(parts, record, mode, k, protocol, source="query", query_index=qi, shown=shown, live=live,
                            label=f"q{qi} (pid {record.pid}, {cam})")
        result.tau, result.guidance, result.generated_live = tau_, guid_, live
        result.query_image_path = self._resolve_path(record.path, split)
        result.latency_ms = {**latency, **result.latency_ms, "total": 1000 * (time.perf_counter() - t0)}
        return result

    def upload_size(self) -> tuple[int, int] | None:
        """(H, W) uploads are shrunk to at once: the embedder's input size (None: bound the longer side)."""
        size = getattr(self.embedder(), "input_size", None)
        return (int(size[0]), int(size[1])) if size is not None else None

    def rank_upload(
        self, image_path: str | os.PathLike | None, mode: str = "real", k: int = 10, protocol: str | None = None,
        tau: int | None = None, guidance: float | None = None, view: str = "ground",
        gallery_view: str | None = None, gallery_cameras: Sequence[int | str] | None = None,
    ) -> RankResult:
        """Rank the gallery for an uploaded image: features extracted live, generated views computed live.

        The upload is shrunk to the model's input size as it is decoded; only that copy is kept.
        """
        t0 = time.perf_counter()
        self._check_mode(mode)
        if view not in VIEW_NAMES:
            raise AppError(f"Upload view must be one of {list(VIEW_NAMES)}, got {view!r}")
        shown = self.gallery_filter(protocol, gallery_view, gallery_cameras)  # an empty gallery fails before the model runs
        img = load_upload(image_path, size=self.upload_size(), max_side=UPLOAD_MAX_SIDE)
        t1 = time.perf_counter()
        out = self._embed(img)
        latency = {"extract": 1000 * (time.perf_counter() - t1)}
        parts = {name: out[name].detach().float().reshape(1, *out[name].shape[1:]) for name in ("features", "prebn", "id_cond", "view_token") if name in out}
        if "features" not in parts or parts["features"].shape[1] != self.fs.dim:
            got = parts["features"].shape[1] if "features" in parts else "no"
            raise ModelError(
                f"The model embeds to {got} dims but the run's features have {self.fs.dim}: "
                "the model and the FeatureSet come from different runs."
            )
        tau_, guid_ = self._live_tau(tau, guidance) if self._needs_generation(mode) else (None, None)
        if self._needs_generation(mode):
            if "id_cond" not in parts:
                raise AppError("The model returns no ID conditions (id_cond), so generated views cannot be computed.")
            self.generator()
            t2 = time.perf_counter()
            parts.update(self._generate(parts["id_cond"], tau_, guid_))
            latency["generate"] = 1000 * (time.perf_counter() - t2)
        record = Record(path=Path(str(image_path)).name, pid=-1, camid=-1, view=VIEW_NAMES.index(view))
        result = self._rank(parts, record, mode, k, protocol, source="upload", label=f"upload {record.path}", shown=shown)
        result.tau, result.guidance, result.generated_live = tau_, guid_, self._needs_generation(mode)
        result.query_image = img
        result.query_image_path = str(image_path)
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
            gallery_shown=int(shown.sum()), gallery_size=len(split.gallery), query_index=query_index,
            view_ids=self.view_ids(protocol), stored_tau=self.stored_tau, stored_guidance=self.stored_guidance,
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
        split = self.split(result.protocol)
        out = []
        for it in result.items:
            img = open_record_image(self._resolve_path(it.record.path, split))
            out.append((bordered_thumbnail(img, colours[it.status]), caption(it, result.view_ids)))
        return out

    def query_image(self, result: RankResult):
        if result.query_image is not None:
            return result.query_image
        return open_record_image(result.query_image_path or "")

    def item_detail(self, result: RankResult | None, index: int) -> tuple[Any, str]:
        """The large image and the key facts of the ``index``-th displayed result."""
        if result is None:
            raise AppError("Run a ranking first, then click a result to see it large.")
        if not 0 <= int(index) < len(result.items):
            raise AppError(f"Result {index} does not exist; the ranking shows {len(result.items)} items.")
        it = result.items[int(index)]
        return open_record_image(self._resolve_path(it.record.path, self.split(result.protocol))), detail_table(it, result.view_ids)

    def embedding_figure(self, result: RankResult | None, method: str = "pca", color_by: str = "view_name",
                         max_points: int = 600, seed: int = 0, protocol: str | None = None):
        """UMAP / t-SNE / PCA of the gallery (and the query and its generated views, highlighted).

        Large galleries are subsampled (seeded) to ``max_points`` images so t-SNE / UMAP answer in
        seconds on a CPU; with generated views every image adds one point per view.
        """
        import plotly.graph_objects as go
        from agreid_kit.analysis import embedding_frame
        from agreid_kit.viz import embedding_figure

        protocol = result.protocol if result is not None else protocol
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

    def tradeoff_figure(self, result: RankResult | None = None, protocol: str | None = None):
        """The precomputed accuracy / latency curves over tau, the current tau marked (see ``tradeoff_plot``)."""
        if self.tradeoff_error:
            raise AppError(self.tradeoff_error)
        if self.tradeoff is None:
            raise AppError(
                f"No timestep trade-off table for {self.run_dir} (looked for RUN/analysis/tradeoff.csv and for "
                "reports/*/tradeoff.csv naming this run in every folder above the run); make it with "
                f"`agreid tradeoff {self.run_dir}` (part of `{MAKE_RUN_COMMAND}`) or pass `--report REPORT_DIR`."
            )
        protocol = result.protocol if result is not None else self.split(protocol).protocol
        tau = result.tau if result is not None and result.tau is not None else self.stored_tau
        return tradeoff_plot(self.tradeoff, protocol, tau, result, source=str(self.tradeoff_path or ""))

    def live_latency_markdown(self, result: RankResult | None) -> str:
        return live_latency_markdown(result)

    def blocked_paths(self) -> list[str]:
        """Folders no file route may serve: the run, its stage-1 run, and the dataset."""
        out = [self.run_dir, self.stage1_dir, Path(self.split().root)]
        return [str(Path(p).resolve()) for p in out if p is not None]
