"""Rank lists of every query as a CSV (and a few composite JPEGs), like torchreid's ``visrank``.

``dump_ranks(fs, split, OUT)`` ranks the gallery for each query exactly as ``agreid_kit.eval``
scores it: ascending distance, ties in gallery order (stable), NaN last; gallery items with the
query's pid AND camid ("junk") and items removed by the split's gallery rules
(``split.options["gallery_rules"]`` through ``eval.ranking_inputs``) are left out of the ranking.
It writes

- ``OUT/ranks.csv``: one row per (query, top-k kept gallery item): ``query_index, query_path,
  query_pid, query_camid, query_view, rank, position, gallery_index, gallery_path, gallery_pid,
  gallery_camid, gallery_view, match, junk, distance``. ``rank`` is the evaluator's rank (1-based,
  kept items only); ``position`` the place in the full sorted gallery. With ``include_junk`` the
  removed items sorting inside the top-k span are listed too, with ``junk = 1`` and an empty rank;
- ``OUT/queries.csv``: per query ``n_positives``, ``first_match_rank``, ``ap`` (from this ranking;
  they equal the evaluator's) and ``valid``;
- with ``images = N``: ``OUT/images/q<index>_pid<pid>.jpg`` for the first N queries only, the query
  (blue border) followed by its top-k (green: same identity, red: another identity, grey: junk).

Cost: one stable sort of a gallery row per query (Q x G log G; seconds for 400 x 4,600), distances
computed in chunks of queries.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

RANK_COLUMNS = (
    "query_index", "query_path", "query_pid", "query_camid", "query_view", "rank", "position", "gallery_index",
    "gallery_path", "gallery_pid", "gallery_camid", "gallery_view", "match", "junk", "distance",
)
QUERY_COLUMNS = ("query_index", "query_path", "query_pid", "query_camid", "query_view", "n_positives",
                 "first_match_rank", "ap", "valid")
BORDER = {"query": (31, 119, 180), "match": (44, 160, 44), "nonmatch": (214, 39, 40), "junk": (158, 158, 158)}
DEFAULT_IMAGES = 20  # ``--images`` without a number: a small sample, never every query


def query_ranking(dist_row: np.ndarray, qi: int, inputs: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(gallery indices in ranked order, removed flag of each) for query ``qi`` under the evaluator's rules.

    ``inputs`` is ``eval.ranking_inputs(split)`` as numpy arrays (see ``numpy_inputs``).
    """
    order = np.argsort(dist_row, kind="stable")  # ascending, ties in gallery order, NaN last (as numpy sorts)
    gp, gc = inputs["g_pids"][order], inputs["g_camids"][order]
    removed = (gp == inputs["q_pids"][qi]) & (gc == inputs["q_camids"][qi])
    for mode, qk, gk in inputs.get("gallery_rules", ()):
        same = gk[order] == qk[qi]
        removed |= same if mode == "exclude_same" else ~same
    return order, removed


def numpy_inputs(split) -> dict[str, Any]:
    """``eval.ranking_inputs(split)`` with every tensor as an int64 numpy array."""
    from agreid_kit.eval import ranking_inputs

    raw = ranking_inputs(split)
    out: dict[str, Any] = {k: v.numpy().astype(np.int64) for k, v in raw.items() if k != "gallery_rules"}
    out["gallery_rules"] = [(m, q.numpy().astype(np.int64), g.numpy().astype(np.int64))
                            for m, q, g in raw.get("gallery_rules", [])]
    return out


def average_precision(matches: np.ndarray) -> float:
    """AP of a ranked boolean match list (kept items only): mean precision at each match; NaN without one."""
    pos = np.flatnonzero(matches) + 1
    if pos.size == 0:
        return math.nan
    return float(np.mean(np.arange(1, pos.size + 1) / pos))


def dump_ranks(
    fs,
    split,
    out_dir: str | os.PathLike,
    top_k: int | None = 10,
    mode: str = "real",
    metric: str = "cosine",
    images: int = 0,
    include_junk: bool = False,
    rerank=None,
    thumb_size: tuple[int, int] = (128, 64),
    progress: bool | None = None,
) -> dict[str, Any]:
    """Write ranks.csv, queries.csv and (``images`` > 0) composites for the first ``images`` queries.

    ``top_k`` None or 0 lists every kept gallery item. ``rerank``: ``rerank.RerankParams`` to rank by
    k-reciprocal re-ranked distances. Returns a summary dict (paths, counts, mAP of the dump's ranking).
    """
    from agreid_kit.rerank import split_distance
    from agreid_kit.utils.io import atomic_write_text
    from agreid_kit.utils.progress import progress_bar

    if top_k is not None and top_k < 0:
        raise ValueError(f"dump_ranks: top_k must be >= 0 (0 = whole gallery), got {top_k}")
    if images < 0:
        raise ValueError(f"dump_ranks: images must be >= 0, got {images}")
    out = Path(out_dir)
    inputs = numpy_inputs(split)
    nq, ng = len(split.query), len(split.gallery)
    k = ng if not top_k else min(int(top_k), ng)
    dist_all = split_distance(fs, split, mode, metric, rerank=rerank, progress=progress)
    rank_buf, query_buf = io.StringIO(), io.StringIO()
    ranks_w, query_w = csv.writer(rank_buf, lineterminator="\n"), csv.writer(query_buf, lineterminator="\n")
    ranks_w.writerow(RANK_COLUMNS)
    query_w.writerow(QUERY_COLUMNS)
    gal = split.gallery
    aps, written = [], []
    chunk = max(1, (1 << 22) // max(1, ng))
    for s in progress_bar(range(0, nq, chunk), desc="rank lists",
                          enabled=progress if progress is not None else nq > 5000):
        d = dist_all[s:s + chunk].double().cpu().numpy()
        for qi in range(s, min(s + chunk, nq)):
            q = split.query[qi]
            order, removed = query_ranking(d[qi - s], qi, inputs)
            kept = order[~removed]
            matches = inputs["g_pids"][kept] == inputs["q_pids"][qi]
            ap = average_precision(matches)
            first = int(np.argmax(matches)) + 1 if matches.any() else ""
            query_w.writerow([qi, q.path, q.pid, q.camid, q.view, int(matches.sum()), first,
                              "" if math.isnan(ap) else f"{ap:.10g}", int(not math.isnan(ap))])
            if not math.isnan(ap):
                aps.append(ap)
            # Full-gallery positions of the top-k kept items; junk inside that span is listed when asked.
            kept_pos = np.flatnonzero(~removed)[:k]
            span = kept_pos[-1] + 1 if kept_pos.size else 0
            positions = np.arange(span) if include_junk else kept_pos
            rank_of = {int(p): r + 1 for r, p in enumerate(kept_pos)}
            tiles = []
            for p in positions:
                gi = int(order[p])
                g, junk = gal[gi], bool(removed[p])
                match = int(inputs["g_pids"][gi] == inputs["q_pids"][qi])
                dval = float(d[qi - s, gi])
                ranks_w.writerow([qi, q.path, q.pid, q.camid, q.view, "" if junk else rank_of[int(p)], int(p) + 1, gi,
                                  g.path, g.pid, g.camid, g.view, match, int(junk), f"{dval:.6g}"])
                tiles.append((g, "junk" if junk else ("match" if match else "nonmatch"),
                              f"#{rank_of[int(p)]}" if not junk else "junk", dval))
            if qi < images:
                written.append(_composite(q, qi, tiles, out / "images", thumb_size))
    atomic_write_text(out / "ranks.csv", rank_buf.getvalue())
    atomic_write_text(out / "queries.csv", query_buf.getvalue())
    return {
        "ranks_csv": str(out / "ranks.csv"),
        "queries_csv": str(out / "queries.csv"),
        "images": [str(p) for p in written],
        "n_query": nq,
        "n_valid": len(aps),
        "top_k": k,
        "mAP": float(np.mean(aps)) if aps else math.nan,
        "rerank": rerank.as_dict() if rerank is not None else None,
    }


def _composite(query, qi: int, tiles: list[tuple[Any, str, str, float]], folder: Path, size: tuple[int, int]) -> Path:
    """One JPEG: the query then its ranked tiles, each with a coloured border and a caption."""
    from PIL import Image, ImageDraw

    from agreid_kit.utils.io import atomic_path
    from agreid_kit.viz import load_thumbnail

    h, w = size
    b, cap, gap, space = 4, 26, 10, 3  # border, caption strip, gap after the query, space between tiles
    tile_w, tile_h = w + 2 * b + space, h + 2 * b + cap
    canvas = Image.new("RGB", (tile_w * (len(tiles) + 1) + gap, tile_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)

    def put(x: int, rec, kind: str, line1: str, line2: str) -> None:
        draw.rectangle([x, 0, x + w + 2 * b - 1, h + 2 * b - 1], fill=BORDER[kind])
        canvas.paste(load_thumbnail(rec.path, size), (x + b, b))
        draw.text((x + 2, h + 2 * b + 1), line1, fill=(0, 0, 0))
        draw.text((x + 2, h + 2 * b + 13), line2, fill=(0, 0, 0))

    put(0, query, "query", f"query {qi}", f"id {query.pid} c{query.camid}")
    for i, (rec, kind, label, dval) in enumerate(tiles):
        put(tile_w * (i + 1) + gap, rec, kind, f"{label} d={dval:.3g}", f"id {rec.pid} c{rec.camid}")
    path = folder / f"q{qi:05d}_pid{query.pid}.jpg"
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="JPEG", quality=90)
    return path


def split_for_ranks(run, protocol: str | None = None):
    """The run's test FeatureSet and the DatasetSplit of ``protocol`` (default: the run's protocol)."""
    from agreid_kit.features import FeatureSet

    fs = FeatureSet.load(run.features_path("test"))
    return fs, run.load_split(protocol or run.protocol)


__all__ = ["dump_ranks", "query_ranking", "average_precision", "numpy_inputs", "RANK_COLUMNS", "QUERY_COLUMNS"]
