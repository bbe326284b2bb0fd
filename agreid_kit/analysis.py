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
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from agreid_kit import VIEW_NAMES
from agreid_kit.data.records import DatasetSplit, Record

EMBED_METHODS = ("umap", "tsne", "pca")
GEOMETRY_KEYS = ("altitude", "pitch", "distance", "yaw")


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
            f"embedding_frame: real tensor {real_tensor!r} and generated features have different widths {sorted(dims)}; "
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


# ---------------------------------------------------------------------------------------------
# Rank lists
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RankItem:
    """One displayed gallery item of a query's ranking.

    ``position`` counts every displayed item (junk included, 1-based); ``rank`` is the rank the
    metrics use (junk removed), ``None`` for junk items.
    """

    position: int
    rank: int | None
    gallery_index: int
    record: Record
    distance: float
    is_match: bool
    is_junk: bool


@dataclass
class RankList:
    query_index: int
    query: Record
    items: list[RankItem]
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


def _split_descriptors(fs, split: DatasetSplit, mode: str, query_rows: Sequence[int] | None = None):
    if query_rows is None:
        qrecs = split.query
    else:
        for q in query_rows:
            if not 0 <= int(q) < len(split.query):
                raise IndexError(
                    f"query index {q} is out of range: split {split.dataset!r} [{split.protocol}] has {len(split.query)} queries"
                )
        qrecs = [split.query[int(q)] for q in query_rows]
    qf = fs.descriptor(mode, fs.index_of(qrecs))
    gf = fs.descriptor(mode, fs.index_of(split.gallery))
    return qrecs, qf, gf


def _distances(qf, gf, metric: str) -> np.ndarray:
    from agreid_kit.eval import compute_distance

    d = compute_distance(qf, gf, metric=metric)
    return d.detach().cpu().double().numpy() if hasattr(d, "detach") else np.asarray(d, dtype=np.float64)


def _gallery_rules(split: DatasetSplit) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The protocol's per-query gallery restrictions (e.g. ``A<->G-strict``, CP2108 time modes) as arrays."""
    from agreid_kit.eval import ranking_inputs

    rules = ranking_inputs(split).get("gallery_rules", [])
    return [(mode, np.asarray(q), np.asarray(g)) for mode, q, g in rules]


def _removed_by_rules(rules, qi: int, n_gallery: int) -> np.ndarray:
    removed = np.zeros(n_gallery, dtype=bool)
    for mode, q_codes, g_codes in rules:
        if mode == "exclude_same":
            removed |= g_codes == q_codes[qi]
        elif mode == "require_same":
            removed |= g_codes != q_codes[qi]
        else:
            raise ValueError(f"unknown gallery rule {mode!r}; expected exclude_same or require_same")
    return removed


def _query_scores(dist_row: np.ndarray, q_pid: int, q_cam: int, g_pids: np.ndarray, g_cams: np.ndarray,
                  removed: np.ndarray | None = None):
    """Order, junk/match masks and AP / INP / first-match rank of one query (field convention).

    Gallery items outside the query's gallery under the protocol's rules (``removed``) are dropped
    from the order. Items with the query's pid *and* camera are junk: kept in the order, but not
    counted in ranks. AP averages the precision at every positive; INP = #positives / rank of the
    last positive. Ties keep gallery order (stable sort), as ``agreid_kit.eval`` does.
    """
    order = np.argsort(dist_row, kind="stable")
    if removed is not None and removed.any():
        order = order[~removed[order]]
    junk = (g_pids[order] == q_pid) & (g_cams[order] == q_cam)
    match = (g_pids[order] == q_pid) & ~junk
    valid_match = match[~junk]
    n_pos = int(valid_match.sum())
    if n_pos == 0:
        return order, junk, match, math.nan, math.nan, None, 0
    hit_ranks = np.flatnonzero(valid_match) + 1  # 1-based ranks among non-junk items
    ap = float(np.mean(np.arange(1, n_pos + 1) / hit_ranks))
    inp = float(n_pos / hit_ranks[-1])
    return order, junk, match, ap, inp, int(hit_ranks[0]), n_pos


def rank_list(
    fs, split: DatasetSplit, query_index: int, k: int = 10, mode: str = "real", metric: str = "cosine"
) -> RankList:
    """The top-``k`` ranking of one query of ``split`` under a feature mode.

    ``k`` counts rankable items; junk items (same pid and camera) that fall among them are shown
    in their position and flagged rather than hidden. Gallery items the protocol's
    ``gallery_rules`` take out of this query's gallery (e.g. same-view items in ``A<->G-strict``)
    are not shown; their count is ``extra["n_excluded"]``. AP and INP equal the per-query values
    of ``agreid_kit.eval.evaluate_ranking``.
    """
    if k < 1:
        raise ValueError(f"rank_list: k must be >= 1, got {k}")
    qrecs, qf, gf = _split_descriptors(fs, split, mode, [query_index])
    dist = _distances(qf, gf, metric)[0]
    g_pids = np.array([r.pid for r in split.gallery])
    g_cams = np.array([r.camid for r in split.gallery])
    removed = _removed_by_rules(_gallery_rules(split), int(query_index), len(split.gallery))
    q = qrecs[0]
    order, junk, match, ap, inp, first, n_pos = _query_scores(dist, q.pid, q.camid, g_pids, g_cams, removed)
    items: list[RankItem] = []
    rank = 0
    for pos, gi in enumerate(order):
        if rank >= k:
            break
        is_junk = bool(junk[pos])
        if not is_junk:
            rank += 1
        items.append(
            RankItem(
                position=pos + 1,
                rank=None if is_junk else rank,
                gallery_index=int(gi),
                record=split.gallery[int(gi)],
                distance=float(dist[gi]),
                is_match=bool(match[pos]),
                is_junk=is_junk,
            )
        )
    return RankList(
        query_index=int(query_index), query=q, items=items, ap=ap, inp=inp, first_match_rank=first,
        n_positives=n_pos, n_junk=int(junk.sum()), mode=mode, metric=metric, protocol=split.protocol,
        extra={"n_excluded": int(removed.sum())},
    )


def per_query_scores(fs, split: DatasetSplit, mode: str = "real", metric: str = "cosine", chunk: int = 1024) -> pd.DataFrame:
    """AP, INP and first-match rank of every query, for sorting queries best / worst first.

    Columns: ``query_index, pid, camid, view, view_name, altitude, pitch, distance, path, ap, inp,
    first_match_rank, n_positives, valid``. Queries without a valid positive keep NaN scores
    (and ``valid = False``) rather than being dropped.
    """
    from tqdm.auto import tqdm

    g_pids = np.array([r.pid for r in split.gallery])
    g_cams = np.array([r.camid for r in split.gallery])
    rules = _gallery_rules(split)
    rows = []
    starts = range(0, len(split.query), chunk)
    for s in tqdm(starts, desc="per-query scores", disable=len(starts) < 4):
        qidx = list(range(s, min(s + chunk, len(split.query))))
        qrecs, qf, gf = _split_descriptors(fs, split, mode, qidx)
        dist = _distances(qf, gf, metric)
        for j, (qi, q) in enumerate(zip(qidx, qrecs)):
            removed = _removed_by_rules(rules, qi, len(split.gallery))
            _, _, _, ap, inp, first, n_pos = _query_scores(dist[j], q.pid, q.camid, g_pids, g_cams, removed)
            cols = _record_columns(q)
            rows.append({"query_index": qi, **cols, "ap": ap, "inp": inp,
                         "first_match_rank": first if first is not None else np.nan,
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
            raise ValueError(f"metrics_table: results[{protocol!r}] must map feature mode -> metrics dict, got {type(modes).__name__}")
        for mode, metrics in modes.items():
            if not isinstance(metrics, Mapping):
                raise ValueError(f"metrics_table: results[{protocol!r}][{mode!r}] must be a metrics dict, got {type(metrics).__name__}")
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
    path = Path(run_dir)
    if path.is_dir():
        path = path / "log.jsonl"
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
            raise ValueError(f"view similarity data: instance_vs_centre needs a {col!r} column, has {list(ivc.columns)}")
    mat = _as_numpy(mat)
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
        raise ValueError(f"view similarity data: instance_matrix must be square (N, N), got {mat.shape}")
    views = [_view_name(v) for v in list(views)]
    if len(views) != mat.shape[0]:
        raise ValueError(f"view similarity data: views has {len(views)} entries for an instance_matrix of {mat.shape[0]} rows")
    ivc = ivc.assign(view=[_view_name(v) for v in ivc["view"]], target_view=[_view_name(v) for v in ivc["target_view"]])
    return {"instance_vs_centre": ivc, "instance_matrix": mat, "views": views}


def _view_name(v: Any) -> str:
    return VIEW_NAMES[int(v)] if isinstance(v, (int, np.integer)) else str(v)
