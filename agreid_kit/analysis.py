"""Analyses behind the workbench's figures and widgets: embeddings, rank lists, accuracy by geometry.

Every function here is pure (inputs in, numbers or a DataFrame out) so that tests call it directly
and the widgets, the report notebook and the app are thin views over it. Heavy or slow imports
(scikit-learn's t-SNE, ``umap``) happen inside the functions that need them.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd

from agreid_kit import VIEW_NAMES
from agreid_kit.data.records import DatasetSplit, Record

if TYPE_CHECKING:  # annotation only: agreid_kit.eval imports torch
    from agreid_kit.eval import RankItem

EMBED_METHODS = ("umap", "tsne", "pca")
GEOMETRY_KEYS = ("altitude", "pitch", "distance", "yaw")
PER_QUERY_CHUNK = 1024
"""Queries per distance-matrix product in ``per_query_scores`` and ``rank_list`` (the same blocks in both)."""


# ---------------------------------------------------------------------------------------------
# 2-D embeddings
# ---------------------------------------------------------------------------------------------
def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().float().numpy()
    return np.asarray(x, dtype=np.float32)


def embed_2d(
    features: Any,
    method: str = "umap",
    seed: int = 0,
    pca_dims: int = 50,
    n_neighbors: int = 15,
    perplexity: float = 30.0,
    max_iter: int = 1000,
) -> np.ndarray:
    """Project (N, D) features to (N, 2) with PCA, t-SNE or UMAP.

    Features are L2-normalised first (retrieval uses the cosine distance, so the norm carries no
    identity information), then reduced to ``pca_dims`` with PCA (what t-SNE and UMAP then see:
    faster and less noisy). ``n_neighbors`` and ``perplexity`` shrink automatically for tiny sets.
    Seeded runs are deterministic (UMAP is then single-threaded).
    """
    if method not in EMBED_METHODS:
        raise ValueError(f"embed_2d: unknown method {method!r}; expected one of {EMBED_METHODS}")
    x = _as_numpy(features)
    if x.ndim != 2:
        raise ValueError(f"embed_2d: features must be a 2-D (N, D) array, got shape {x.shape}")
    n = x.shape[0]
    if n < 3:
        raise ValueError(f"embed_2d: need at least 3 points to embed, got {n}")
    if not np.isfinite(x).all():
        raise ValueError("embed_2d: features contain NaN or Inf values")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    from sklearn.decomposition import PCA

    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(x).astype(np.float32)
    dims = min(pca_dims, x.shape[1], n)
    if dims < x.shape[1]:
        x = PCA(n_components=dims, random_state=seed).fit_transform(x).astype(np.float32)
    if method == "tsne":
        from sklearn.manifold import TSNE

        # t-SNE requires perplexity < n; a third of n keeps tiny sets well-conditioned.
        perp = float(min(perplexity, max(1.0, (n - 1) / 3.0)))
        tsne = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed, max_iter=max_iter)
        return tsne.fit_transform(x).astype(np.float32)
    import umap  # lazy: ~20 s cold import plus JIT on first fit

    # A fixed random_state makes UMAP deterministic but single-threaded: say so with n_jobs=1.
    reducer = umap.UMAP(n_components=2, n_neighbors=int(min(n_neighbors, n - 1)), random_state=seed,
                        metric="euclidean", n_jobs=1)
    return np.asarray(reducer.fit_transform(x), dtype=np.float32)


def _geometry(record: Record, key: str) -> float:
    """A record's altitude / pitch / distance / yaw (SynthAG keeps all but altitude in ``extra``)."""
    if key == "altitude" and record.altitude is not None:
        return float(record.altitude)
    value = (record.extra or {}).get(key)
    return float(value) if value is not None else math.nan


def _record_columns(record: Record) -> dict[str, Any]:
    return {
        "pid": record.pid,
        "camid": record.camid,
        "view": record.view,
        "view_name": VIEW_NAMES[record.view],
        "altitude": _geometry(record, "altitude"),
        "pitch": _geometry(record, "pitch"),
        "distance": _geometry(record, "distance"),
        "path": record.path,
    }


def embedding_frame(
    fs,
    method: str = "umap",
    include_generated: bool = False,
    real_tensor: str = "auto",
    rows: Sequence[int] | None = None,
    max_points: int | None = None,
    seed: int = 0,
    pca_dims: int = 50,
    **embed_options: Any,
) -> pd.DataFrame:
    """A 2-D embedding of a FeatureSet as a DataFrame (one row per plotted point).

    Columns: ``x, y, pid, camid, view, view_name, altitude, pitch, distance, kind, path, row``
    where ``row`` is the FeatureSet row and ``kind`` is ``real`` or ``gen:<view name>``.
    With ``include_generated`` every generated view ``gen:<v>`` of the chosen rows adds one
    point per image, embedded jointly with the real points. Generated features live in the
    retrieval space of the real ``features`` (stage 2 maps them through stage 1's neck), so
    ``real_tensor="auto"`` means ``features``. ``rows`` restricts the images; ``max_points`` subsamples them (seeded).
    ``embed_options`` (``n_neighbors``, ``perplexity``, ``max_iter``) go to ``embed_2d``.
    """
    n = len(fs)
    idx = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"embedding_frame: rows must lie in [0, {n}), got range [{idx.min()}, {idx.max()}]")
    if max_points is not None and idx.size > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=max_points, replace=False))
    gen_views = fs.generated_views() if include_generated else []
    if include_generated and not gen_views:
        raise ValueError(
            f"embedding_frame: include_generated=True but FeatureSet {fs.split!r} has no gen:<view> features; "
            "run `agreid generate RUN` first"
        )
    if real_tensor == "auto":
        real_tensor = "features"
    blocks = [_as_numpy(fs.get(real_tensor)[idx])]
    kinds = ["real"] * idx.size
    for v in gen_views:
        blocks.append(_as_numpy(fs.get(f"gen:{v}")[idx]))
        kinds += [f"gen:{VIEW_NAMES[v]}"] * idx.size
    dims = {b.shape[1] for b in blocks}
    if len(dims) > 1:
        raise ValueError(
            f"embedding_frame: real tensor {real_tensor!r} and generated features have different widths "
            f"{sorted(dims)}; "
            "pass real_tensor='features' (the space generated features are stored in)"
        )
    xy = embed_2d(np.concatenate(blocks), method=method, seed=seed, pca_dims=pca_dims, **embed_options)
    base = pd.DataFrame([_record_columns(fs.records[int(i)]) for i in idx])
    df = pd.concat([base] * len(blocks), ignore_index=True)
    df.insert(0, "x", xy[:, 0])
    df.insert(1, "y", xy[:, 1])
    df["kind"] = kinds
    df["row"] = np.tile(idx, len(blocks))
    df.attrs.update(method=method, real_tensor=real_tensor, split=fs.split)
    return df


def identity_rows(fs, n_ids: int = 8, seed: int = 0, views: Sequence[int] = (0, 1)) -> np.ndarray:
    """Rows of ``n_ids`` seeded identities of ``fs`` seen in every view of ``views`` (Fig. 6's handful of people)."""
    by_pid: dict[int, set[int]] = {}
    for r in fs.records:
        by_pid.setdefault(int(r.pid), set()).add(int(r.view))
    eligible = sorted(p for p, v in by_pid.items() if set(views) <= v)
    if not eligible:
        raise ValueError(f"identity_rows: no identity of FeatureSet {fs.split!r} is seen in every view of "
                         f"{list(views)}")
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(eligible, size=min(n_ids, len(eligible)), replace=False).tolist())
    return np.array([i for i, r in enumerate(fs.records) if int(r.pid) in chosen], dtype=np.int64)


def descriptor_frame(fs, mode: str, rows: Sequence[int], method: str = "umap", seed: int = 0,
                     **embed_options: Any) -> pd.DataFrame:
    """``embedding_frame``'s columns for one retrieval descriptor (e.g. ``real+gen``, whose width differs
    from the real feature's, so it gets its own 2-D map); ``kind`` is the mode."""
    import torch

    idx = np.asarray(rows, dtype=np.int64)
    xy = embed_2d(_as_numpy(fs.descriptor(mode, torch.as_tensor(idx))), method=method, seed=seed, **embed_options)
    df = pd.DataFrame([_record_columns(fs.records[int(i)]) for i in idx])
    df.insert(0, "x", xy[:, 0])
    df.insert(1, "y", xy[:, 1])
    df["kind"] = mode
    df["row"] = idx
    df.attrs.update(method=method, real_tensor=mode, split=fs.split)
    return df


def cmc_table(fs_by_label: Mapping[str, Any], split: DatasetSplit, modes: Mapping[str, str],
              max_rank: int = 20) -> pd.DataFrame:
    """CMC curves (rank 1..``max_rank``) of several FeatureSets on one protocol: ``label, mode, rank, cmc``."""
    from agreid_kit.features import evaluate_featureset

    rows = []
    for label, fs in fs_by_label.items():
        mode = modes.get(label, "real")
        res = evaluate_featureset(fs, split, mode=mode, max_rank=max_rank)
        cmc = _as_numpy(res.cmc)[:max_rank]
        rows += [{"label": label, "mode": mode, "rank": k + 1, "cmc": float(v)} for k, v in enumerate(cmc)]
    return pd.DataFrame(rows)


def accuracy_by_camera(fs, split: DatasetSplit, mode: str = "real", metric: str = "cosine") -> pd.DataFrame:
    """Rank-1 / mAP / mINP per query camera with its view and geometry (SynthAG: each drone camera flies at
    one altitude, so per-camera rows are the honest form of "accuracy vs altitude").

    Columns: ``camera, view_name, altitude, pitch, n, n_valid, rank1, mAP, mINP`` (altitude / pitch:
    the median over the camera's queries; NaN where the records carry none)."""
    scores = per_query_scores(fs, split, mode, metric)
    cams = [q.raw_camid if q.raw_camid is not None else q.camid for q in split.query]
    scores = scores.assign(camera=cams, altitude=[_geometry(q, "altitude") for q in split.query],
                           pitch=[_geometry(q, "pitch") for q in split.query])
    out = []
    for cam, sel in scores.groupby("camera", sort=True):
        val = sel[sel["valid"]]
        out.append({
            "camera": int(cam), "view_name": str(sel["view_name"].iloc[0]),
            "altitude": float(np.nanmedian(sel["altitude"])) if np.isfinite(sel["altitude"]).any() else math.nan,
            "pitch": float(np.nanmedian(sel["pitch"])) if np.isfinite(sel["pitch"]).any() else math.nan,
            "n": int(len(sel)), "n_valid": int(len(val)),
            "rank1": float((val["first_match_rank"] == 1).mean()) if len(val) else math.nan,
            "mAP": float(val["ap"].mean()) if len(val) else math.nan,
            "mINP": float(val["inp"].mean()) if len(val) else math.nan,
        })
    return pd.DataFrame(out)


# ---------------------------------------------------------------------------------------------
# Rank lists
# ---------------------------------------------------------------------------------------------
def __getattr__(name: str):
    # ``RankItem`` is the evaluator's ranked-item dataclass; resolved lazily so that importing this
    # module does not import torch.
    if name == "RankItem":
        from agreid_kit.eval import RankItem

        return RankItem
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class RankList:
    """The displayed top of one query's ranking plus its scores (``rank_list``)."""

    query_index: int
    query: Record
    items: list[RankItem]  # agreid_kit.eval.RankItem
    ap: float  # NaN when the query has no valid positive
    inp: float
    first_match_rank: int | None
    n_positives: int
    n_junk: int
    mode: str
    metric: str
    protocol: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return self.n_positives > 0


def _check_query_index(split: DatasetSplit, q: int) -> None:
    if not 0 <= int(q) < len(split.query):
        raise IndexError(f"query index {q} is out of range: split {split.dataset!r} [{split.protocol}] has "
                         f"{len(split.query)} queries")


def _split_descriptors(fs, split: DatasetSplit, mode: str, query_rows: Sequence[int] | None = None):
    if query_rows is None:
        qrecs = split.query
    else:
        for q in query_rows:
            _check_query_index(split, q)
        qrecs = [split.query[int(q)] for q in query_rows]
    qf = fs.descriptor(mode, fs.index_of(qrecs))
    gf = fs.descriptor(mode, fs.index_of(split.gallery))
    return qrecs, qf, gf


def rank_list(
    fs, split: DatasetSplit, query_index: int, k: int = 10, mode: str = "real", metric: str = "cosine",
    chunk: int = PER_QUERY_CHUNK,
) -> RankList:
    """The top-``k`` ranking of one query of ``split`` under a feature mode.

    ``k`` counts rankable items; junk items (same pid and camera) that fall among them are shown
    in their position and flagged rather than hidden. Gallery items the protocol's
    ``gallery_rules`` take out of this query's gallery (e.g. same-view items in ``A<->G-strict``)
    are not shown; their count is ``extra["n_excluded"]``. Order, AP and INP come from the
    evaluator's per-query core (``agreid_kit.eval.rank_row``).

    The query's distances are computed within its block of ``chunk`` queries, the very matrix
    product ``per_query_scores`` (same ``chunk``) and, for splits of up to ``chunk`` queries, the
    evaluation compute: a one-row product rounds differently (BLAS picks another kernel) and could
    break float32 near-ties differently, so AP / INP here equal theirs bit for bit.
    """
    from agreid_kit.eval import compute_distance, query_rules, rank_row, ranking_inputs, top_items

    if k < 1:
        raise ValueError(f"rank_list: k must be >= 1, got {k}")
    qi = int(query_index)
    _check_query_index(split, qi)
    start = qi // chunk * chunk
    qrecs, qf, gf = _split_descriptors(fs, split, mode, range(start, min(start + chunk, len(split.query))))
    dist = compute_distance(qf, gf, metric=metric)[qi - start].cpu().numpy()
    inputs = ranking_inputs(split)
    q = qrecs[qi - start]
    rk = rank_row(dist, q.pid, q.camid, inputs["g_pids"], inputs["g_camids"],
                  query_rules(inputs.get("gallery_rules"), qi))
    items = top_items(rk.order, dist[rk.order], rk.junk, rk.match, split.gallery, k)
    return RankList(
        query_index=qi, query=q, items=items, ap=rk.ap, inp=rk.inp, first_match_rank=rk.first_match_rank,
        n_positives=rk.n_positives, n_junk=int(rk.junk.sum()), mode=mode, metric=metric, protocol=split.protocol,
        extra={"n_excluded": rk.n_excluded},
    )


def per_query_scores(fs, split: DatasetSplit, mode: str = "real", metric: str = "cosine",
                     chunk: int = PER_QUERY_CHUNK) -> pd.DataFrame:
    """AP, INP and first-match rank of every query, for sorting queries best / worst first.

    Columns: ``query_index, pid, camid, view, view_name, altitude, pitch, distance, path, ap, inp,
    first_match_rank, n_positives, valid``. Queries without a valid positive keep NaN scores
    (and ``valid = False``) rather than being dropped. The scores are the evaluator's
    (``agreid_kit.eval.score_queries``) on ``chunk`` queries' distances at a time.
    """
    from agreid_kit.eval import compute_distance, ranking_inputs, score_queries
    from agreid_kit.utils.progress import progress_bar

    inputs = ranking_inputs(split)
    rules = inputs.get("gallery_rules", [])
    rows = []
    starts = range(0, len(split.query), chunk)
    for s in progress_bar(starts, desc="per-query scores", enabled=len(starts) >= 4):
        qidx = list(range(s, min(s + chunk, len(split.query))))
        qrecs, qf, gf = _split_descriptors(fs, split, mode, qidx)
        e = s + len(qidx)
        sc = score_queries(compute_distance(qf, gf, metric=metric), inputs["q_pids"][s:e], inputs["g_pids"],
                           inputs["q_camids"][s:e], inputs["g_camids"],
                           gallery_rules=[(m, qk[s:e], gk) for m, qk, gk in rules], progress=False)
        for j, (qi, q) in enumerate(zip(qidx, qrecs)):
            n_pos = int(sc.n_positives[j])
            rows.append({"query_index": qi, **_record_columns(q), "ap": float(sc.ap[j]), "inp": float(sc.inp[j]),
                         "first_match_rank": int(sc.first_match_rank[j]) if n_pos else np.nan,
                         "n_positives": n_pos, "valid": n_pos > 0})
    df = pd.DataFrame(rows)
    df.attrs.update(mode=mode, metric=metric, protocol=split.protocol)
    return df


def sort_queries(scores: pd.DataFrame, order: str = "worst") -> pd.DataFrame:
    """Valid queries sorted by AP (``best`` or ``worst`` first; ties by first-match rank), then invalid ones."""
    if order not in ("best", "worst"):
        raise ValueError(f"sort_queries: order must be 'best' or 'worst', got {order!r}")
    valid = scores[scores["valid"]]
    asc = order == "worst"
    valid = valid.sort_values(["ap", "first_match_rank", "query_index"], ascending=[asc, not asc, True], kind="stable")
    return pd.concat([valid, scores[~scores["valid"]]])


# ---------------------------------------------------------------------------------------------
# Accuracy by geometry (SynthAG)
# ---------------------------------------------------------------------------------------------
def accuracy_by_geometry(
    fs,
    split: DatasetSplit,
    mode: str = "real",
    by: str = "altitude",
    bins: int | Sequence[float] = 5,
    metric: str = "cosine",
) -> pd.DataFrame:
    """Rank-1, mAP and mINP of the queries binned by their altitude, pitch, distance or yaw.

    ``bins`` is a number of equal-width bins or explicit edges. Queries without the value (e.g.
    ground images with no altitude) are left out; how many is in ``df.attrs["n_missing"]``.
    Columns: ``bin, left, right, centre, n, n_valid, rank1, mAP, mINP`` (fractions in [0, 1]).
    """
    if by not in GEOMETRY_KEYS:
        raise ValueError(f"accuracy_by_geometry: by must be one of {GEOMETRY_KEYS}, got {by!r}")
    scores = per_query_scores(fs, split, mode, metric)
    values = np.array([_geometry(q, by) for q in split.query])
    have = np.isfinite(values)
    if not have.any():
        raise ValueError(
            f"accuracy_by_geometry: no query of {split.dataset!r} [{split.protocol}] has a {by!r} value "
            "(Record.altitude or Record.extra[...]); only SynthAG records carry geometry"
        )
    scores = scores.assign(value=values)[have]
    if isinstance(bins, int):
        if bins < 1:
            raise ValueError(f"accuracy_by_geometry: bins must be >= 1, got {bins}")
        lo, hi = float(scores["value"].min()), float(scores["value"].max())
        if hi == lo:
            hi = lo + 1.0
        edges = np.linspace(lo, hi, bins + 1)
    else:
        edges = np.asarray(bins, dtype=float)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError(f"accuracy_by_geometry: bin edges must be increasing, got {list(edges)}")
    cat = pd.cut(scores["value"], edges, include_lowest=True)
    out = []
    for i, interval in enumerate(cat.cat.categories):
        sel = scores[cat == interval]
        val = sel[sel["valid"]]
        out.append({
            "bin": f"{interval.left:g}-{interval.right:g}",
            "left": float(edges[i]), "right": float(edges[i + 1]),
            "centre": float((edges[i] + edges[i + 1]) / 2),
            "n": int(len(sel)), "n_valid": int(len(val)),
            "rank1": float((val["first_match_rank"] == 1).mean()) if len(val) else math.nan,
            "mAP": float(val["ap"].mean()) if len(val) else math.nan,
            "mINP": float(val["inp"].mean()) if len(val) else math.nan,
        })
    df = pd.DataFrame(out)
    df.attrs.update(by=by, mode=mode, n_missing=int((~have).sum()), n_outside=int(cat.isna().sum()))
    return df


# ---------------------------------------------------------------------------------------------
# Tables and logs
# ---------------------------------------------------------------------------------------------
_METRIC_ORDER = ("rank1", "rank5", "rank10", "mAP", "mINP", "n_query", "n_valid")


def metrics_table(results: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> pd.DataFrame:
    """``{protocol: {mode: metrics}}`` (as in ``RUN/metrics.json``) -> one row per protocol and mode.

    Known metrics come first in the field's order (rank1, rank5, rank10, mAP, mINP, n_query,
    n_valid); any other scalar keys follow.
    """
    rows = []
    for protocol, modes in results.items():
        if not isinstance(modes, Mapping):
            raise ValueError(f"metrics_table: results[{protocol!r}] must map feature mode -> metrics dict, got "
                             f"{type(modes).__name__}")
        for mode, metrics in modes.items():
            if not isinstance(metrics, Mapping):
                raise ValueError(f"metrics_table: results[{protocol!r}][{mode!r}] must be a metrics dict, got "
                                 f"{type(metrics).__name__}")
            scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float, np.integer, np.floating))}
            rows.append({"protocol": protocol, "mode": mode, **scalars})
    if not rows:
        raise ValueError("metrics_table: results are empty")
    df = pd.DataFrame(rows)
    known = [c for c in _METRIC_ORDER if c in df.columns]
    rest = [c for c in df.columns if c not in ("protocol", "mode", *known)]
    return df[["protocol", "mode", *known, *rest]]


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def read_training_log(run_dir: str | os.PathLike) -> pd.DataFrame:
    """``RUN/log.jsonl`` (one JSON object per epoch) -> DataFrame sorted by epoch.

    Nested objects are flattened with ``/`` (``{"val": {"mAP": .5}}`` -> ``val/mAP``). A resumed run
    may log an epoch twice: the last entry wins.
    """
    from agreid_kit.run import Run

    path = Path(run_dir)
    if path.is_dir():
        path = Run(path).log_path
    if not path.is_file():
        raise FileNotFoundError(f"no training log at {path} (a run folder holds log.jsonl, written by `agreid train`)")
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: not valid JSON ({e})") from e
        if not isinstance(obj, dict) or "epoch" not in obj:
            raise ValueError(f"{path}:{lineno}: expected a JSON object with an 'epoch' field")
        rows.append(_flatten(obj))
    if not rows:
        raise ValueError(f"{path} holds no epochs")
    df = pd.DataFrame(rows).drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)
    return df


def view_similarity_data(obj: Any) -> dict[str, Any]:
    """Normalise view-condition similarity data to the dict ``view_similarity_figure`` draws:
    ``{"instance_vs_centre": DataFrame(view, target_view, cosine), "instance_matrix": (N, N) array,
    "views": per-row view names of the matrix}``.

    Also accepts what ``agreid_kit.diffusion.analyses.view_condition_similarity`` returns (the
    ``(data, figure)`` pair or its data dict with ``to_centres`` (view, centre, cosine) and
    ``instance_views``), or any object with the documented attributes. View ids become names.
    """
    if isinstance(obj, tuple) and len(obj) == 2 and not isinstance(obj[0], (str, int)):
        obj = obj[0]  # (data, figure) as stage 2 returns it
    get = (lambda k: obj.get(k)) if isinstance(obj, Mapping) else (lambda k: getattr(obj, k, None))
    ivc, mat, views = get("instance_vs_centre"), get("instance_matrix"), get("views")
    if ivc is None and get("to_centres") is not None:
        ivc = pd.DataFrame(get("to_centres")).rename(columns={"centre": "target_view"})
    if views is None:
        views = get("instance_views")
    missing = [k for k, v in (("instance_vs_centre", ivc), ("instance_matrix", mat), ("views", views)) if v is None]
    if missing:
        raise ValueError(f"view similarity data lacks {missing}; expected instance_vs_centre, instance_matrix, views")
    ivc = pd.DataFrame(ivc)
    for col in ("view", "target_view", "cosine"):
        if col not in ivc.columns:
            raise ValueError(f"view similarity data: instance_vs_centre needs a {col!r} column, has "
                             f"{list(ivc.columns)}")
    mat = _as_numpy(mat)
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
        raise ValueError(f"view similarity data: instance_matrix must be square (N, N), got {mat.shape}")
    views = [_view_name(v) for v in list(views)]
    if len(views) != mat.shape[0]:
        raise ValueError(f"view similarity data: views has {len(views)} entries for an instance_matrix of "
                         f"{mat.shape[0]} rows")
    ivc = ivc.assign(view=[_view_name(v) for v in ivc["view"]], target_view=[_view_name(v) for v in ivc["target_view"]])
    return {"instance_vs_centre": ivc, "instance_matrix": mat, "views": views}


def _view_name(v: Any) -> str:
    return VIEW_NAMES[int(v)] if isinstance(v, (int, np.integer)) else str(v)
