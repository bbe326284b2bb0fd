"""Retrieval metrics as the AG-ReID field computes them: CMC, mAP, mINP.

Rules (``evaluate_ranking`` and the plain-loop ``reference_evaluate`` agree on all of them):
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

``evaluate_ranking`` never sorts a gallery row: for each query it sorts only its (few) positives,
keeps the gallery items no farther than the last positive (the only ones that can precede one) and
places each between the positives with ``searchsorted``; a positive's rank is then a cumulative
count. That is exact (ties included) and costs O(G) per query plus O(log P) per candidate, instead
of O(G log G).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

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
        raise ValueError(f"compute_distance: expected (Q, D) and (G, D) features, got {tuple(qf.shape)} and {tuple(gf.shape)}")
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


def _as_long(x: Any, name: str, n: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(device=device).long().reshape(-1)
    if t.numel() != n:
        raise ValueError(f"evaluate_ranking: {name} has {t.numel()} entries, expected {n}")
    return t


def _check_rules(rules, nq: int, ng: int, device) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    out = []
    for i, rule in enumerate(rules or ()):
        if len(rule) != 3 or rule[0] not in RULE_MODES:
            raise ValueError(f"gallery_rules[{i}] must be (mode, q_keys, g_keys) with mode in {RULE_MODES}, got {rule!r:.80}")
        out.append((rule[0], _as_long(rule[1], f"gallery_rules[{i}] q_keys", nq, device),
                    _as_long(rule[2], f"gallery_rules[{i}] g_keys", ng, device)))
    return out


def _default_chunk(num_gallery: int) -> int:
    # About 2^24 (query, gallery) cells per chunk: a few hundred MB of temporaries at most.
    return max(1, (1 << 24) // max(1, num_gallery))


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
    """CMC / mAP / mINP of a (Q, G) distance matrix; vectorised torch, chunked over queries.

    Memory is O(chunk_size x G); runs on the distance matrix's device (GPU tensors stay on GPU).
    ``chunk_size`` defaults to about 16M cells per chunk.
    """
    dist = torch.as_tensor(distmat)
    if dist.ndim != 2:
        raise ValueError(f"evaluate_ranking: distmat must be (Q, G), got shape {tuple(dist.shape)}")
    if not dist.is_floating_point():
        dist = dist.double()
    nq, ng = dist.shape
    if nq == 0 or ng == 0:
        raise ValueError(f"evaluate_ranking: empty query or gallery (distmat {tuple(dist.shape)})")
    if max_rank < 1:
        raise ValueError(f"evaluate_ranking: max_rank must be >= 1, got {max_rank}")
    dev = dist.device
    qp, gp = _as_long(q_pids, "q_pids", nq, dev), _as_long(g_pids, "g_pids", ng, dev)
    qc, gc = _as_long(q_camids, "q_camids", nq, dev), _as_long(g_camids, "g_camids", ng, dev)
    rules = _check_rules(gallery_rules, nq, ng, dev)
    chunk = int(chunk_size) if chunk_size else _default_chunk(ng)
    if chunk < 1:
        raise ValueError(f"evaluate_ranking: chunk_size must be >= 1, got {chunk_size}")

    ap = np.full(nq, np.nan)
    inp = np.full(nq, np.nan)
    first_hits = torch.zeros(max_rank + 1, dtype=torch.long)  # last bin: first positive beyond max_rank
    starts = range(0, nq, chunk)
    if progress is None:
        progress = len(starts) >= 50
    from tqdm.auto import tqdm

    g_index = _PidIndex(gp)
    for s in tqdm(starts, desc="evaluate", unit="chunk", disable=not progress):
        e = min(s + chunk, nq)
        d = dist[s:e]
        ranks, npos = _positive_ranks(
            d, qp[s:e], g_index, qc[s:e], gc, [(m, qk[s:e], gk) for m, qk, gk in rules]
        )
        if ranks is None:
            continue
        valid = npos > 0
        k = torch.arange(1, ranks.shape[1] + 1, device=dev, dtype=torch.float64)
        counted = k[None, :] <= npos[:, None]
        # Sequential cumulative sum, so the AP of each query is summed in positive order (as the reference does).
        prec_cum = torch.where(counted, k[None, :] / ranks.double(), torch.zeros((), dtype=torch.float64, device=dev)).cumsum(1)
        last = (npos - 1).clamp(min=0)[:, None]
        ap_c = prec_cum.gather(1, last)[:, 0] / npos.clamp(min=1).double()
        inp_c = npos.double() / ranks.gather(1, last)[:, 0].double()
        v = valid.cpu().numpy()
        ap[s:e][v] = ap_c.cpu().numpy()[v]
        inp[s:e][v] = inp_c.cpu().numpy()[v]
        first = ranks[:, 0][valid].clamp(max=max_rank + 1) - 1
        first_hits += torch.bincount(first.cpu(), minlength=max_rank + 1)
    valid = ~np.isnan(ap)
    n_valid = int(valid.sum())
    if n_valid == 0:
        raise ValueError(
            f"evaluate_ranking: none of the {nq} queries has a positive left in the gallery after the "
            "same-pid-same-camera rule (and gallery rules); check that pids/camids are the right ones"
        )
    cmc = first_hits[:max_rank].cumsum(0).double().numpy() / n_valid
    return EvalResult(
        cmc=cmc,
        mAP=float(np.mean(ap[valid])),
        mINP=float(np.mean(inp[valid])),
        ap=ap,
        inp=inp,
        valid=valid,
        n_query=nq,
        n_valid=n_valid,
        max_rank=max_rank,
    )


class _PidIndex:
    """Gallery positions grouped by pid, so a query's same-pid cells are found without a (c, G) pass."""

    def __init__(self, g_pids: torch.Tensor):
        self.order = torch.argsort(g_pids, stable=True)  # stable: gallery order within each pid
        self.pids, self.counts = torch.unique_consecutive(g_pids[self.order], return_counts=True)
        self.starts = self.counts.cumsum(0) - self.counts

    def same_pid_cells(self, q_pids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.searchsorted(self.pids, q_pids).clamp(max=self.pids.numel() - 1)
        found = self.pids[idx] == q_pids
        cnt = torch.where(found, self.counts[idx], torch.zeros_like(idx))
        rows = torch.repeat_interleave(torch.arange(q_pids.numel(), device=q_pids.device), cnt)
        first = torch.repeat_interleave(self.starts[idx] - (cnt.cumsum(0) - cnt), cnt)
        cols = self.order[first + torch.arange(rows.numel(), device=q_pids.device)]
        return rows, cols


def _positive_ranks(d, qp, gp: "_PidIndex", qc, gc, rules):
    """Ranks (1-based, among the query's kept gallery items) of each query's positives, in order.

    Returns ``(ranks (c, P), npos (c,))``; row i's first ``npos[i]`` entries are valid. Two full
    (c, G) passes ("no farther than the last positive", nonzero) plus one per gallery rule; positives,
    same-camera junk and (for useful rankings) candidate placement work on sparse lists.
    """
    c, ng = d.shape
    dev = d.device
    rows, cols = gp.same_pid_cells(qp)  # row-major, gallery order within a row
    junk = gc[cols] == qc[rows]  # same pid AND same camera: removed for this query
    keep = None
    if rules:
        keep = torch.ones((c, ng), dtype=torch.bool, device=dev)
        for mode, qk, gk in rules:
            eq = gk[None, :] == qk[:, None]
            keep &= ~eq if mode == "exclude_same" else eq
        junk |= ~keep[rows, cols]
    pr, pc = rows[~junk], cols[~junk]  # positives, in gallery order within each row
    npos = torch.bincount(pr, minlength=c)
    p_max = int(npos.max()) if pr.numel() else 0
    if p_max == 0:
        return None, npos
    # Each row's positives padded to p_max (+1 spare column): distance +inf, gallery index ng (after everything real).
    slot = torch.arange(pr.numel(), device=dev) - (npos.cumsum(0) - npos)[pr]
    pd = torch.full((c, p_max + 1), math.inf, dtype=d.dtype, device=dev)
    pidx = torch.full((c, p_max + 1), ng, dtype=torch.long, device=dev)
    pd[pr, slot] = d[pr, pc]
    pidx[pr, slot] = pc
    if torch.isnan(pd).any():
        bad = int(torch.isnan(pd).any(1).nonzero()[0, 0])
        raise ValueError(f"evaluate_ranking: a positive of query row {bad} (of this chunk) has a NaN distance")
    pd, order = torch.sort(pd, dim=1, stable=True)  # stable: equal distances stay in gallery order
    pidx = pidx.gather(1, order)
    # Only kept items no farther than the query's last positive can precede a positive ("candidates").
    dc = d.contiguous()
    last = pd.gather(1, (npos - 1).clamp(min=0)[:, None])
    last[npos == 0] = -math.inf
    cand = dc <= last
    if keep is not None:
        cand &= keep
    cand[rows[junk], cols[junk]] = False
    cr, cg = cand.nonzero(as_tuple=True)
    if cr.numel() * 8 > c * ng:
        hist = _hist_dense(dc, cand, pd, pidx, p_max)  # weak rankings: most items are candidates
    else:
        hist = _hist_sparse(dc, cr, cg, pd, pidx, npos, p_max)  # useful rankings: few candidates
    # Rank of the k-th positive = number of kept items whose bucket is <= k (it counts itself).
    ranks = hist.cumsum(1)[:, :p_max]
    return ranks, npos


def _place(seq, pidx_rows, val, g, p_max):
    """Bucket of each item: positives (rows of ``seq``, sorted) ranked before it, ties by gallery index."""
    lo = torch.searchsorted(seq, val, right=False)
    hi = torch.searchsorted(seq, val, right=True)
    tie_r, tie_c = (hi > lo).nonzero(as_tuple=True)
    if tie_r.numel():
        j = torch.arange(p_max + 1, device=seq.device)[None, :]
        l, h = lo[tie_r, tie_c], hi[tie_r, tie_c]
        gi = g[tie_r, tie_c] if g.dim() == 2 else g[tie_c]
        before = (j >= l[:, None]) & (j < h[:, None]) & (pidx_rows[tie_r] < gi[:, None])
        lo[tie_r, tie_c] = l + before.sum(1)
    return lo


def _hist_dense(dc, cand, pd, pidx, p_max):
    """Histogram of candidate buckets, placing every cell of the chunk at once (row-batched searchsorted)."""
    c, ng = dc.shape
    bucket = _place(pd[:, :p_max].contiguous(), pidx, dc, torch.arange(ng, device=dc.device), p_max)
    bucket.masked_fill_(~cand, p_max)  # non-candidates cannot precede a positive: overflow bucket
    hist = torch.zeros((c, p_max + 1), dtype=torch.long, device=dc.device)
    hist.scatter_add_(1, bucket, torch.ones((1, 1), dtype=torch.long, device=dc.device).expand(c, ng))
    return hist


def _hist_sparse(dc, cr, cg, pd, pidx, npos, p_max):
    """Histogram of candidate buckets from the sparse list of candidates (rows ``cr``, columns ``cg``)."""
    c = dc.shape[0]
    if dc.dtype != torch.float32:
        return _hist_sparse_rows(dc, cr, cg, pd, pidx, p_max)
    # One sorted 1-D array of (row, distance) keys for all positives of the chunk: a candidate's bucket is
    # its insertion point minus the row's offset. float32 bits (made order-preserving) fit beside the row.
    real = torch.arange(p_max + 1, device=dc.device)[None, :] < npos[:, None]
    rows_all = torch.arange(c, device=dc.device)[:, None].expand(c, p_max + 1)
    pos_keys = _row_keys(rows_all[real], pd[real])
    pos_gidx = pidx[real]
    offset = npos.cumsum(0) - npos
    keys = _row_keys(cr, dc[cr, cg])
    lo = torch.searchsorted(pos_keys, keys, right=False)
    # A tie (equal distance to a positive) shows as the key found at the insertion point; then the tied
    # positives with a smaller gallery index come first.
    tie = (pos_keys[lo.clamp(max=pos_keys.numel() - 1)] == keys).nonzero(as_tuple=True)[0]
    if tie.numel():
        hi = torch.zeros_like(lo)
        hi[tie] = torch.searchsorted(pos_keys, keys[tie], right=True)
        width = int((hi[tie] - lo[tie]).max())
        j = lo[tie, None] + torch.arange(width, device=dc.device)[None, :]
        inside = j < hi[tie, None]
        before = inside & (pos_gidx[j.clamp(max=pos_gidx.numel() - 1)] < cg[tie, None])
        lo[tie] += before.sum(1)
    bucket = lo - offset[cr]
    hist = torch.zeros(c * (p_max + 1), dtype=torch.long, device=dc.device)
    hist.scatter_add_(0, cr * (p_max + 1) + bucket, torch.ones_like(bucket))
    return hist.view(c, p_max + 1)


def _row_keys(rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """int64 keys ordered like (row, float32 value): row in the high 32 bits, order-preserving bits below."""
    bits = (values + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into +0.0 (they compare equal)
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # negative floats: reverse magnitude order
    return (rows.long() << 32) + (bits.long() + (1 << 31))


def _hist_sparse_rows(dc, cr, cg, pd, pidx, p_max):
    """Sparse placement for non-float32 distances: each candidate searches its own row of positives."""
    c = dc.shape[0]
    hist = torch.zeros(c * (p_max + 1), dtype=torch.long, device=dc.device)
    step = max(1, (1 << 22) // (p_max + 1))  # bounds the (candidates, p_max + 1) temporaries
    for s in range(0, cr.numel(), step):
        r, g = cr[s : s + step], cg[s : s + step]
        lo = _place(pd[r, :p_max].contiguous(), pidx[r], dc[r, g][:, None], g[:, None], p_max)[:, 0]
        hist.scatter_add_(0, r * (p_max + 1) + lo, torch.ones_like(lo))
    return hist.view(c, p_max + 1)


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
    numpy masks for the removal rules, and a plain loop over the positives for AP."""
    from tqdm.auto import tqdm

    dist = np.asarray(distmat.detach().cpu() if isinstance(distmat, torch.Tensor) else distmat)
    nq, ng = dist.shape

    def arr(x):
        return np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x).astype(np.int64).reshape(-1)

    qp, gp, qc, gc = arr(q_pids), arr(g_pids), arr(q_camids), arr(g_camids)
    rules = [(m, arr(a), arr(b)) for m, a, b in (gallery_rules or ())]
    ap = np.full(nq, np.nan)
    inp = np.full(nq, np.nan)
    cmc_counts = np.zeros(max_rank, dtype=np.int64)
    for i in tqdm(range(nq), desc="reference", disable=not progress):
        order = np.argsort(dist[i], kind="stable")  # ascending distance, ties in gallery order
        junk = (gp[order] == qp[i]) & (gc[order] == qc[i])  # same person seen by the same camera
        for mode, qk, gk in rules:
            same = gk[order] == qk[i]
            junk |= same if mode == "exclude_same" else ~same
        matches = gp[order][~junk] == qp[i]  # the query's ranked list after removals
        positions = np.flatnonzero(matches) + 1  # 1-based ranks of the positives
        if positions.size == 0:
            continue  # no positive left: skipped (counted through ``valid``)
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

        rules.append((mode, torch.tensor([code(r) for r in split.query]), torch.tensor([code(r) for r in split.gallery])))
    if rules:
        out["gallery_rules"] = rules
    return out


def evaluate_split(split, query_features, gallery_features, metric: str = "cosine", max_rank: int = 50, **kwargs) -> EvalResult:
    """Evaluate features given in ``split.query`` / ``split.gallery`` order under the split's protocol."""
    qf, gf = torch.as_tensor(query_features), torch.as_tensor(gallery_features)
    if qf.shape[0] != len(split.query) or gf.shape[0] != len(split.gallery):
        raise ValueError(
            f"evaluate_split: {qf.shape[0]} query / {gf.shape[0]} gallery features for a split with "
            f"{len(split.query)} query / {len(split.gallery)} gallery records"
        )
    dist = compute_distance(qf, gf, metric=metric)
    return evaluate_ranking(dist, **ranking_inputs(split), max_rank=max_rank, **kwargs)
