"""Retrieval metrics as the AG-ReID field computes them: CMC, mAP, mINP; and the one ranking core.

Rules (the evaluator, the per-query core and the plain-loop ``reference_evaluate`` agree on all of them):
- gallery items with the query's pid AND camid are removed for that query (the usual
  same-camera rule; protocols that collapse camids to views remove same-view positives);
- optional per-query gallery rules (``gallery_rules``) remove more: ``("exclude_same", q_keys, g_keys)``
  drops gallery items whose key equals the query's (e.g. views for ``A<->G-strict``, time ids for
  CP2108 ``cross``), ``("require_same", ...)`` keeps only equal keys (CP2108 ``same``);
- the ranking is by ascending distance; ties are broken by gallery order (stable);
- NaN distances rank last (as numpy's argsort puts them); a NaN distance to a positive is an error;
- a query with no remaining positive is *skipped*: it is counted in ``n_query - n_valid``, its
  ``ap``/``inp`` are NaN and ``valid`` is False; means are over valid queries only;
- AP = mean over positives of (precision at that positive's rank); INP = #positives / rank of the
  last positive; CMC[k] = fraction of valid queries whose first positive is within rank k+1.

One ranking core, three users: ``score_queries`` (behind ``evaluate_ranking``) finds the positives'
ranks of a whole distance matrix, vectorised (``agreid_kit.eval_ranks``: no row is sorted);
``rank_row`` ranks one query's row in full for display (``analysis.rank_list``, the ranking app).
Both turn ranks into AP / INP with :func:`_ap_inp` (the only place, besides the reference loop's
deliberately independent check), remove items with :func:`removal_masks` semantics, and describe
displayed items with :class:`RankItem` (built by :func:`top_items`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from agreid_kit.eval_ranks import PidIndex, Workspace, positive_ranks

RULE_MODES = ("exclude_same", "require_same")


@dataclass
class EvalResult:
    """Metrics of one evaluation. ``cmc``, ``mAP``, ``mINP`` are fractions in [0, 1]."""

    cmc: np.ndarray  # (max_rank,) fraction of valid queries with a positive within rank k+1
    mAP: float
    mINP: float
    ap: np.ndarray  # (n_query,) per query; NaN for skipped queries
    inp: np.ndarray  # (n_query,) per query; NaN for skipped queries
    valid: np.ndarray  # (n_query,) bool: the query had at least one positive left in the gallery
    n_query: int
    n_valid: int
    max_rank: int
    first_match_rank: np.ndarray | None = None  # (n_query,) int: rank of the first positive, 0 when skipped
    n_positives: np.ndarray | None = None  # (n_query,) int: positives left after the removal rules

    @property
    def n_skipped(self) -> int:
        return self.n_query - self.n_valid

    def rank(self, k: int) -> float | None:
        """Rank-k accuracy (fraction); None when k exceeds ``max_rank``."""
        return float(self.cmc[k - 1]) if 1 <= k <= self.max_rank else None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able metrics; rank1/rank5/rank10/mAP/mINP are fractions in [0, 1] (not percent)."""
        return {
            "rank1": self.rank(1),
            "rank5": self.rank(5),
            "rank10": self.rank(10),
            "mAP": self.mAP,
            "mINP": self.mINP,
            "n_query": self.n_query,
            "n_valid": self.n_valid,
            "n_skipped": self.n_skipped,
            "scale": "fraction",
        }

    def summary(self) -> str:
        """One line in percent, saying how many queries were skipped."""
        parts = [f"R{k} {100 * self.rank(k):.2f}" for k in (1, 5, 10) if self.rank(k) is not None]
        return (
            " | ".join(parts + [f"mAP {100 * self.mAP:.2f}", f"mINP {100 * self.mINP:.2f}"])
            + f" (%; {self.n_valid}/{self.n_query} queries evaluated, {self.n_skipped} skipped: no positive in gallery)"
        )


def compute_distance(qf: torch.Tensor, gf: torch.Tensor, metric: str = "cosine") -> torch.Tensor:
    """(Q, G) distance matrix. ``cosine`` = 1 - <q/|q|, g/|g|>; ``euclidean`` = |q - g|."""
    qf, gf = torch.as_tensor(qf), torch.as_tensor(gf)
    if qf.ndim != 2 or gf.ndim != 2 or qf.shape[1] != gf.shape[1]:
        raise ValueError(f"compute_distance: expected (Q, D) and (G, D) features, got {tuple(qf.shape)} and "
                         f"{tuple(gf.shape)}")
    if not qf.is_floating_point() or qf.dtype in (torch.float16, torch.bfloat16):
        qf = qf.float()
    gf = gf.to(device=qf.device, dtype=qf.dtype)
    if metric == "cosine":
        qn = torch.nn.functional.normalize(qf, dim=1)
        gn = torch.nn.functional.normalize(gf, dim=1)
        # In place: one (Q, G) buffer instead of two (the matrix can be gigabytes).
        return (qn @ gn.T).neg_().add_(1.0)
    if metric == "euclidean":
        sq = (qf @ gf.T).mul_(-2.0)
        sq.add_((qf * qf).sum(1, keepdim=True)).add_((gf * gf).sum(1)[None, :])
        return sq.clamp_(min=0).sqrt_()
    raise ValueError(f"compute_distance: unknown metric {metric!r}; expected 'cosine' or 'euclidean'")


def _as_long(x: Any, name: str, n: int, device: torch.device, who: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(device=device).long().reshape(-1)
    if t.numel() != n:
        raise ValueError(f"{who}: {name} has {t.numel()} entries, expected {n}")
    return t


def _check_rules(rules, nq: int, ng: int, device, who: str) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    out = []
    for i, rule in enumerate(rules or ()):
        if len(rule) != 3 or rule[0] not in RULE_MODES:
            raise ValueError(f"gallery_rules[{i}] must be (mode, q_keys, g_keys) with mode in {RULE_MODES}, got "
                             f"{rule!r:.80}")
        out.append((rule[0], _as_long(rule[1], f"gallery_rules[{i}] q_keys", nq, device, who),
                    _as_long(rule[2], f"gallery_rules[{i}] g_keys", ng, device, who)))
    return out


CHUNK_CELLS = {"cpu": 1 << 21, "other": 1 << 24}
"""(query, gallery) cells per chunk by default. On a CPU, 2^21 cells keep each elementwise pass's buffers
(8 MB of float32) in the L2/L3 caches: at 2,000 x 20,000 weak rankings one chunk of 2^21 takes ~0.75x the
time of 2^24, and fewer, larger chunks cost more again. On a GPU, larger chunks mean fewer kernel launches."""


def _default_chunk(num_gallery: int, device: torch.device | str = "cpu") -> int:
    cells = CHUNK_CELLS["cpu" if torch.device(device).type == "cpu" else "other"]
    return max(1, cells // max(1, num_gallery))


@dataclass
class QueryScores:
    """Per-query scores of a distance matrix (``score_queries``): what ``evaluate_ranking`` averages."""

    ap: np.ndarray  # (n_query,) float; NaN when the query has no positive left
    inp: np.ndarray  # (n_query,) float; NaN when the query has no positive left
    first_match_rank: np.ndarray  # (n_query,) int: 1-based rank of the first positive, 0 when none
    n_positives: np.ndarray  # (n_query,) int: positives left after the removal rules

    @property
    def valid(self) -> np.ndarray:
        return self.n_positives > 0


def score_queries(
    distmat: torch.Tensor | np.ndarray,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    chunk_size: int | None = None,
    gallery_rules: Sequence[tuple[str, Any, Any]] | None = None,
    progress: bool | None = None,
    who: str = "score_queries",
) -> QueryScores:
    """AP, INP, first-match rank and positive count of every query of a (Q, G) distance matrix.

    The evaluator's per-query path: vectorised torch, chunked over queries (memory O(chunk_size x G),
    ``chunk_size`` defaults to ``CHUNK_CELLS``: 2M cells on a CPU, 16M elsewhere), on the matrix's device.
    Queries without a positive get NaN scores; nothing is raised for them (``evaluate_ranking`` does when
    no query is valid).
    """
    dist = torch.as_tensor(distmat)
    if dist.ndim != 2:
        raise ValueError(f"{who}: distmat must be (Q, G), got shape {tuple(dist.shape)}")
    if not dist.is_floating_point():
        dist = dist.double()
    nq, ng = dist.shape
    if nq == 0 or ng == 0:
        raise ValueError(f"{who}: empty query or gallery (distmat {tuple(dist.shape)})")
    dev = dist.device
    qp, gp = _as_long(q_pids, "q_pids", nq, dev, who), _as_long(g_pids, "g_pids", ng, dev, who)
    qc, gc = _as_long(q_camids, "q_camids", nq, dev, who), _as_long(g_camids, "g_camids", ng, dev, who)
    rules = _check_rules(gallery_rules, nq, ng, dev, who)
    chunk = int(chunk_size) if chunk_size else _default_chunk(ng, dev)
    if chunk < 1:
        raise ValueError(f"{who}: chunk_size must be >= 1, got {chunk_size}")

    out = QueryScores(np.full(nq, np.nan), np.full(nq, np.nan), np.zeros(nq, np.int64), np.zeros(nq, np.int64))
    starts = range(0, nq, chunk)
    if progress is None:
        progress = len(starts) >= 50
    from agreid_kit.utils.progress import progress_bar

    g_index, ws = PidIndex(gp), Workspace(dev)
    for s in progress_bar(starts, desc="evaluate", enabled=progress):
        e = min(s + chunk, nq)
        chunk_rules = [(m, qk[s:e], gk) for m, qk, gk in rules]
        ranks, npos = positive_ranks(dist[s:e], qp[s:e], g_index, qc[s:e], gc, chunk_rules, ws, row_offset=s, who=who)
        out.n_positives[s:e] = npos.cpu().numpy()
        if ranks is None:
            continue
        ap, inp = _ap_inp(ranks, npos)
        out.ap[s:e], out.inp[s:e] = ap.cpu().numpy(), inp.cpu().numpy()
        out.first_match_rank[s:e] = torch.where(npos > 0, ranks[:, 0], 0).cpu().numpy()
    return out


def _ap_inp(ranks: torch.Tensor, npos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """AP and INP per row from the 1-based ranks of its positives (row i: the first ``npos[i]`` of ``ranks``).

    The one place AP and INP are computed (``score_queries`` and ``rank_row`` both call it; only the
    reference loop keeps its own, as the independent check). NaN for rows without a positive.
    """
    dev = ranks.device
    k = torch.arange(1, ranks.shape[1] + 1, device=dev, dtype=torch.float64)
    counted = k[None, :] <= npos[:, None]
    zero = torch.zeros((), dtype=torch.float64, device=dev)
    # A sequential cumulative sum: each AP is summed in positive order, as the reference loop does, so
    # the floats agree bit for bit whatever the row's padding.
    prec_cum = torch.where(counted, k[None, :] / ranks.double(), zero).cumsum(1)
    last = (npos - 1).clamp(min=0)[:, None]
    ap = prec_cum.gather(1, last)[:, 0] / npos.clamp(min=1).double()
    inp = npos.double() / ranks.gather(1, last)[:, 0].double()
    nan = torch.full((), math.nan, dtype=torch.float64, device=dev)
    return torch.where(npos > 0, ap, nan), torch.where(npos > 0, inp, nan)


def evaluate_ranking(
    distmat: torch.Tensor | np.ndarray,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    max_rank: int = 50,
    chunk_size: int | None = None,
    gallery_rules: Sequence[tuple[str, Any, Any]] | None = None,
    progress: bool | None = None,
) -> EvalResult:
    """CMC / mAP / mINP of a (Q, G) distance matrix: ``score_queries`` averaged over the valid queries.

    Memory is O(chunk_size x G); runs on the distance matrix's device (GPU tensors stay on GPU).
    ``chunk_size`` defaults to ``CHUNK_CELLS`` (2M cells per chunk on a CPU, 16M elsewhere).
    """
    if max_rank < 1:
        raise ValueError(f"evaluate_ranking: max_rank must be >= 1, got {max_rank}")
    sc = score_queries(distmat, q_pids, g_pids, q_camids, g_camids, chunk_size=chunk_size,
                       gallery_rules=gallery_rules, progress=progress, who="evaluate_ranking")
    valid = sc.valid
    nq, n_valid = valid.size, int(valid.sum())
    if n_valid == 0:
        raise ValueError(
            f"evaluate_ranking: none of the {nq} queries has a positive left in the gallery after the "
            "same-pid-same-camera rule (and gallery rules); check that pids/camids are the right ones"
        )
    # Last bin: first positive beyond max_rank.
    first_hits = np.bincount(np.minimum(sc.first_match_rank[valid], max_rank + 1) - 1, minlength=max_rank + 1)
    return EvalResult(
        cmc=first_hits[:max_rank].cumsum() / n_valid,
        mAP=float(np.mean(sc.ap[valid])),
        mINP=float(np.mean(sc.inp[valid])),
        ap=sc.ap,
        inp=sc.inp,
        valid=valid,
        n_query=nq,
        n_valid=n_valid,
        max_rank=max_rank,
        first_match_rank=sc.first_match_rank,
        n_positives=sc.n_positives,
    )


# ---------------------------------------------------------------------------------------------
# One query: the full ranked list, for display (analysis.rank_list, the ranking app)
# ---------------------------------------------------------------------------------------------
def query_rules(gallery_rules, query_index: int) -> list[tuple[str, int, np.ndarray]]:
    """Query ``query_index``'s share of (Q-wide) ``gallery_rules``: ``[(mode, its key, g_keys)]``."""
    out = []
    for i, rule in enumerate(gallery_rules or ()):
        if len(rule) != 3 or rule[0] not in RULE_MODES:
            raise ValueError(f"gallery_rules[{i}] must be (mode, q_keys, g_keys) with mode in {RULE_MODES}, got "
                             f"{rule!r:.80}")
        mode, qk, gk = rule
        out.append((mode, int(_np(qk).reshape(-1)[query_index]), _np(gk).reshape(-1)))
    return out


def removal_masks(q_pid: int, q_camid: int, g_pids, g_camids, rules=()) -> tuple[np.ndarray, np.ndarray]:
    """What the evaluation takes out of one query's gallery, as (G,) bool masks ``(junk, removed)``.

    ``junk``: same pid and same camera. ``removed``: taken out by the query's gallery rules
    (``rules`` as :func:`query_rules` gives them: ``[(mode, query key, g_keys)]``).
    """
    g_pids, g_camids = _np(g_pids).reshape(-1), _np(g_camids).reshape(-1)
    junk = (g_pids == int(q_pid)) & (g_camids == int(q_camid))
    removed = np.zeros(g_pids.shape[0], dtype=bool)
    for i, (mode, q_key, g_keys) in enumerate(rules):
        if mode not in RULE_MODES:
            raise ValueError(f"gallery rule {i}: unknown mode {mode!r}; expected one of {RULE_MODES}")
        same = _np(g_keys).reshape(-1) == q_key
        removed |= same if mode == "exclude_same" else ~same
    return junk, removed


@dataclass(frozen=True)
class QueryRanking:
    """One query's gallery ranked under the evaluation rules; ``ap`` / ``inp`` are the evaluator's for this row."""

    order: np.ndarray  # gallery indices, ascending distance (ties: gallery order; NaN last), rule-removed ones left out
    junk: np.ndarray  # (len(order),) bool: same pid and camera (listed in place, never ranked)
    match: np.ndarray  # (len(order),) bool: a positive (same pid, not junk)
    ap: float  # NaN without a positive
    inp: float
    first_match_rank: int | None
    n_positives: int
    n_excluded: int  # gallery items the gallery rules removed

    @property
    def valid(self) -> bool:
        return self.n_positives > 0


def rank_row(dist_row, q_pid: int, q_camid: int, g_pids, g_camids, rules=()) -> QueryRanking:
    """Rank one query's (G,) distance row: order, junk and match flags, AP, INP, first-match rank.

    ``rules`` are this query's gallery rules (:func:`query_rules`). AP and INP come from the same
    ranks-to-scores code as ``score_queries``, so for the same row they are equal bit for bit.
    """
    d = _np(dist_row).reshape(-1)
    g_pids = _np(g_pids).reshape(-1)
    if g_pids.shape[0] != d.shape[0]:
        raise ValueError(f"rank_row: g_pids has {g_pids.shape[0]} entries for a distance row of {d.shape[0]}")
    junk_all, removed = removal_masks(q_pid, q_camid, g_pids, g_camids, rules)
    order = np.argsort(d, kind="stable")  # ascending, ties in gallery order, NaN last
    if removed.any():
        order = order[~removed[order]]
    junk = junk_all[order]
    match = (g_pids[order] == int(q_pid)) & ~junk
    ranks = np.flatnonzero(match[~junk]) + 1  # 1-based ranks of the positives among ranked items
    if np.isnan(d[order[match]]).any():
        raise ValueError(f"rank_row: a positive of query pid {q_pid} has a NaN distance")
    ap = inp = math.nan
    if ranks.size:
        ap_t, inp_t = _ap_inp(torch.from_numpy(ranks.astype(np.int64))[None], torch.tensor([ranks.size]))
        ap, inp = float(ap_t[0]), float(inp_t[0])
    return QueryRanking(order=order, junk=junk, match=match, ap=ap, inp=inp,
                        first_match_rank=int(ranks[0]) if ranks.size else None, n_positives=int(ranks.size),
                        n_excluded=int(removed.sum()))


@dataclass(frozen=True)
class RankItem:
    """One displayed gallery item of a query's ranking.

    ``position`` counts every displayed item (junk included, 1-based); ``rank`` is the rank the
    metrics use (junk removed), ``None`` for junk items. ``is_match`` is None when the query's
    identity is unknown (an uploaded image).
    """

    position: int
    rank: int | None
    gallery_index: int
    record: Any  # the gallery Record
    distance: float
    is_match: bool | None
    is_junk: bool

    @property
    def status(self) -> str:
        """``junk``, ``unknown`` (no query identity), ``match`` or ``non-match``."""
        if self.is_junk:
            return "junk"
        if self.is_match is None:
            return "unknown"
        return "match" if self.is_match else "non-match"


def top_items(rows, distances, junk, matches, records: Sequence[Any], k: int) -> list[RankItem]:
    """The displayed head of a ranking: items in ``rows`` order until ``k`` ranked (non-junk) ones.

    ``distances``, ``junk`` and ``matches`` are per entry of ``rows``; ``matches`` None means the
    query's identity is unknown. Junk items among them are shown in place, flagged, with no rank.
    """
    items: list[RankItem] = []
    rank = 0
    for pos, gi in enumerate(rows):
        if rank >= k:
            break
        is_junk = bool(junk[pos])
        if not is_junk:
            rank += 1
        items.append(RankItem(
            position=pos + 1, rank=None if is_junk else rank, gallery_index=int(gi), record=records[int(gi)],
            distance=float(distances[pos]), is_match=None if matches is None else bool(matches[pos]), is_junk=is_junk,
        ))
    return items


def _np(x: Any) -> np.ndarray:
    return np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x)


def reference_evaluate(
    distmat,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    max_rank: int = 50,
    gallery_rules: Sequence[tuple[str, Any, Any]] | None = None,
    progress: bool = False,
) -> EvalResult:
    """The same metrics from their definitions: one query at a time, a full stable sort of its row,
    numpy masks for the removal rules, and a plain loop over the positives for AP.

    The independent check of the ranking core: it deliberately shares no code with ``score_queries``
    / ``rank_row`` (its own masks, its own AP / INP sums), so the tests comparing them mean something.
    """
    from agreid_kit.utils.progress import progress_bar

    dist = np.asarray(distmat.detach().cpu() if isinstance(distmat, torch.Tensor) else distmat)
    nq, ng = dist.shape

    def arr(x):
        return np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x).astype(np.int64).reshape(-1)

    qp, gp, qc, gc = arr(q_pids), arr(g_pids), arr(q_camids), arr(g_camids)
    rules = [(m, arr(a), arr(b)) for m, a, b in (gallery_rules or ())]
    ap = np.full(nq, np.nan)
    inp = np.full(nq, np.nan)
    cmc_counts = np.zeros(max_rank, dtype=np.int64)
    first_rank = np.zeros(nq, dtype=np.int64)
    n_pos = np.zeros(nq, dtype=np.int64)
    for i in progress_bar(range(nq), desc="reference", enabled=progress):
        order = np.argsort(dist[i], kind="stable")  # ascending distance, ties in gallery order
        junk = (gp[order] == qp[i]) & (gc[order] == qc[i])  # same person seen by the same camera
        for mode, qk, gk in rules:
            same = gk[order] == qk[i]
            junk |= same if mode == "exclude_same" else ~same
        matches = gp[order][~junk] == qp[i]  # the query's ranked list after removals
        positions = np.flatnonzero(matches) + 1  # 1-based ranks of the positives
        if positions.size == 0:
            continue  # no positive left: skipped (counted through ``valid``)
        first_rank[i], n_pos[i] = positions[0], positions.size
        total = 0.0
        for k, r in enumerate(positions.tolist(), 1):
            total += k / r  # precision at the k-th positive
        ap[i] = total / positions.size
        inp[i] = positions.size / positions[-1]
        if positions[0] <= max_rank:
            cmc_counts[positions[0] - 1 :] += 1
    valid = ~np.isnan(ap)
    n_valid = int(valid.sum())
    if n_valid == 0:
        raise ValueError("reference_evaluate: no query has a positive in the gallery")
    return EvalResult(
        cmc=cmc_counts / n_valid,
        mAP=float(np.mean(ap[valid])),
        mINP=float(np.mean(inp[valid])),
        ap=ap,
        inp=inp,
        valid=valid,
        n_query=nq,
        n_valid=n_valid,
        max_rank=max_rank,
        first_match_rank=first_rank,
        n_positives=n_pos,
    )


def ranking_inputs(split) -> dict[str, Any]:
    """pids, camids and gallery rules of a ``DatasetSplit`` as ``evaluate_ranking`` keyword arguments.

    Protocols needing a per-query gallery restriction (``A<->G-strict``, CP2108 time modes) list
    ``[mode, record_field]`` pairs in ``split.options['gallery_rules']``; the field values are mapped
    to integer codes shared by query and gallery.
    """
    out: dict[str, Any] = {
        "q_pids": torch.tensor([r.pid for r in split.query]),
        "g_pids": torch.tensor([r.pid for r in split.gallery]),
        "q_camids": torch.tensor([r.camid for r in split.query]),
        "g_camids": torch.tensor([r.camid for r in split.gallery]),
    }
    rules = []
    for mode, field in split.options.get("gallery_rules", []) or []:
        codes: dict[Any, int] = {}

        def code(r, field=field, codes=codes):
            v = getattr(r, field)
            if v is None:
                raise ValueError(f"gallery rule on {field!r}: record {r.path} has no {field}")
            return codes.setdefault(v, len(codes))

        rules.append((mode, torch.tensor([code(r) for r in split.query]),
                      torch.tensor([code(r) for r in split.gallery])))
    if rules:
        out["gallery_rules"] = rules
    return out


def evaluate_split(split, query_features, gallery_features, metric: str = "cosine", max_rank: int = 50,
                   **kwargs) -> EvalResult:
    """Evaluate features given in ``split.query`` / ``split.gallery`` order under the split's protocol."""
    qf, gf = torch.as_tensor(query_features), torch.as_tensor(gallery_features)
    if qf.shape[0] != len(split.query) or gf.shape[0] != len(split.gallery):
        raise ValueError(
            f"evaluate_split: {qf.shape[0]} query / {gf.shape[0]} gallery features for a split with "
            f"{len(split.query)} query / {len(split.gallery)} gallery records"
        )
    dist = compute_distance(qf, gf, metric=metric)
    return evaluate_ranking(dist, **ranking_inputs(split), max_rank=max_rank, **kwargs)
