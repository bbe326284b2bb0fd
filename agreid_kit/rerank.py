"""k-reciprocal re-ranking (Zhong, Zheng, Cao and Li, "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017), written from the paper's description, off unless asked for.

With all N = Q + G query and gallery items pooled:

1. ``N(i, k)``: the k + 1 nearest items of i (i itself first);
   ``R(i, k) = {j in N(i, k) : i in N(j, k)}``: the k-reciprocal neighbours;
2. expansion: ``R*(i) = R(i, k1)`` united with ``R(q, k1/2)`` of every ``q in R(i, k1)`` for which
   ``|R(i, k1) & R(q, k1/2)| >= 2/3 |R(q, k1/2)|`` (the paper's condition; k1/2 rounds half to even);
3. ``V[i, j] = exp(-d(i, j))`` for ``j in R*(i)``, else 0, each row scaled to sum 1 (``d`` is the
   original distance with each row divided by its maximum, so the kernel sees [0, 1] whatever the metric);
4. local query expansion: ``V[i] <- mean of V[j]`` over the ``k2`` nearest items j of i (i included);
5. Jaccard distance ``d_J(p, g) = 1 - sum_j min(V[p,j], V[g,j]) / sum_j max(V[p,j], V[g,j])``;
6. final ``d*(p, g) = (1 - lambda) d_J(p, g) + lambda d(p, g)``.

Defaults ``k1 = 20, k2 = 6, lambda = 0.3`` (the paper's Market-1501 setting).

Cost (``rerank_features``): one chunked pass over the N x N distances (N^2 D multiply-adds, about
``2^24`` cells = 64 MB alive at a time) keeping only the k1 + 1 nearest of each item; the neighbour
sets are scipy sparse matrices (a few hundred non-zeros a row after query expansion); the Jaccard step
touches only pairs sharing a non-zero column, in chunks of about ``2^22`` pairs. Peak memory is the
(Q, G) float32 result plus O(N) sparse rows. Measured on one CPU thread (random features, defaults):

- SynthAG-small size, 400 x 4,600: 0.7 s at 128-d (1.5-2 s on a loaded machine), 5 s at 768-d;
  about 200 MB above the process's baseline;
- 2,000 x 20,000: 23 s at 128-d, 66 s at 768-d; about 650 MB above baseline;
- a CARGO-sized test set (N ~ 60k) scales as N^2 D for the first pass: ~ 10 minutes at 768-d on one
  core, and the Q x G result (a few thousand x 57k: ~ 0.5 GB). GPU tensors run that pass on the GPU.

``rerank_distances`` (precomputed q-g, q-q, g-g matrices) builds the full N x N matrix: N^2 x 4 bytes
(100 MB at N = 5,000; 14 GB at N = 60k, so prefer features there).

Re-ranked numbers are never mixed with plain ones: the evaluation helpers here store them under
the feature mode ``<mode>+rerank`` (``real+rerank``) with the parameters beside them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

RERANK_SUFFIX = "+rerank"
_CELLS = 1 << 24  # distance cells alive per chunk of the N x N pass (64 MB in float32)
_PAIRS = 1 << 22  # (query, gallery, column) triples per Jaccard chunk (~ 200 MB of temporaries)


@dataclass(frozen=True)
class RerankParams:
    """k-reciprocal re-ranking parameters (paper defaults)."""

    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3

    def check(self, n_items: int | None = None) -> "RerankParams":
        """Validate; ``n_items`` (Q + G) bounds k1, since every item needs k1 + 1 neighbours."""
        if int(self.k1) != self.k1 or self.k1 < 1:
            raise ValueError(f"re-ranking: k1 must be an integer >= 1, got {self.k1!r}")
        if int(self.k2) != self.k2 or not 1 <= self.k2 <= self.k1 + 1:
            raise ValueError(f"re-ranking: k2 must be an integer in 1..k1+1 = {self.k1 + 1}, got {self.k2!r}")
        if not 0.0 <= float(self.lambda_value) <= 1.0:
            raise ValueError(f"re-ranking: lambda must be in [0, 1], got {self.lambda_value!r}")
        if n_items is not None and self.k1 + 1 > n_items:
            raise ValueError(
                f"re-ranking: k1 = {self.k1} needs k1 + 1 = {self.k1 + 1} items, but query + gallery hold {n_items}; "
                "lower k1"
            )
        return self

    def as_dict(self) -> dict[str, Any]:
        """JSON-able parameters (stored beside re-ranked metrics)."""
        return {"method": "k-reciprocal", "k1": int(self.k1), "k2": int(self.k2), "lambda": float(self.lambda_value)}

    def label(self) -> str:
        """One line for command output."""
        return f"k-reciprocal re-ranking ON (k1={self.k1}, k2={self.k2}, lambda={self.lambda_value:g})"


# ---------------------------------------------------------------------------------------------
# Distance sources: the N x N original distance, as chunks of rows and at given pairs
# ---------------------------------------------------------------------------------------------
class _FeatureSource:
    """Distances computed on the fly from pooled (query; gallery) features (never N x N at once)."""

    def __init__(self, qf, gf, metric: str):
        from agreid_kit.eval import compute_distance

        qf, gf = torch.as_tensor(qf), torch.as_tensor(gf)
        if qf.ndim != 2 or gf.ndim != 2 or qf.shape[1] != gf.shape[1]:
            raise ValueError(f"re-ranking: expected (Q, D) and (G, D) features, got {tuple(qf.shape)} and "
                             f"{tuple(gf.shape)}")
        x = torch.cat([qf.float(), gf.to(qf.device).float()])
        if not torch.isfinite(x).all():
            raise ValueError("re-ranking: the features contain NaN or inf")
        if metric == "cosine":
            # Normalised once here, so pair distances below are plain dot products.
            x = torch.nn.functional.normalize(x, dim=1)
        elif metric != "euclidean":
            compute_distance(x[:1], x[:1], metric=metric)  # raises the evaluator's unknown-metric error
        self.x, self.metric, self.n, self._dist = x, metric, x.shape[0], compute_distance

    def rows(self, s: int, e: int) -> torch.Tensor:
        return self._dist(self.x[s:e], self.x, metric=self.metric).float()

    def pairs(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        out = np.empty(len(i), dtype=np.float64)
        step = max(1, (1 << 22) // self.x.shape[1])  # bounds the (pairs, D) gather
        for s in range(0, len(i), step):
            a = self.x[torch.from_numpy(i[s:s + step]).to(self.x.device)]
            b = self.x[torch.from_numpy(j[s:s + step]).to(self.x.device)]
            if self.metric == "cosine":
                d = 1.0 - (a * b).sum(1)
            else:
                d = (a - b).norm(dim=1)
            out[s:s + step] = d.clamp(min=0).double().cpu().numpy()
        return out


class _DenseSource:
    """The full N x N matrix assembled from q-g, q-q and g-g distances (N^2 x 4 bytes)."""

    def __init__(self, dist_qg, dist_qq, dist_gg):
        qg, qq, gg = (torch.as_tensor(np.asarray(d) if not isinstance(d, torch.Tensor) else d).float()
                      for d in (dist_qg, dist_qq, dist_gg))
        nq, ng = qg.shape if qg.ndim == 2 else (-1, -1)
        if qg.ndim != 2 or tuple(qq.shape) != (nq, nq) or tuple(gg.shape) != (ng, ng):
            raise ValueError(
                f"re-ranking: expected dist_qg (Q, G), dist_qq (Q, Q), dist_gg (G, G); got {tuple(qg.shape)}, "
                f"{tuple(qq.shape)}, {tuple(gg.shape)}"
            )
        full = torch.cat([torch.cat([qq, qg], 1), torch.cat([qg.T, gg.to(qg.device)], 1)])
        if not torch.isfinite(full).all():
            raise ValueError("re-ranking: the distance matrices contain NaN or inf")
        # Rounding leaves cosine distances of near-duplicates at about -1e-7: clip those, refuse real negatives.
        if (full < -1e-4).any():
            raise ValueError("re-ranking: distances must be >= 0 (got negative entries; pass distances, not "
                             "similarities)")
        self.full, self.n = full.clamp_(min=0), full.shape[0]

    def rows(self, s: int, e: int) -> torch.Tensor:
        return self.full[s:e].clone()  # the caller overwrites the diagonal

    def pairs(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return self.full[torch.from_numpy(i), torch.from_numpy(j)].double().cpu().numpy()


# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------
def rerank_features(qf, gf, k1: int = 20, k2: int = 6, lambda_value: float = 0.3, metric: str = "cosine",
                    progress: bool | None = None) -> torch.Tensor:
    """Re-ranked (Q, G) float32 distance matrix (CPU) of query features ``qf`` (Q, D) against ``gf`` (G, D).

    ``metric`` is the original distance (``cosine`` as the kit's evaluator, or ``euclidean``). Memory
    stays O(chunk x N + Q x G) (see the module docstring for measured costs).
    """
    source = _FeatureSource(qf, gf, metric)
    return _rerank(source, int(torch.as_tensor(qf).shape[0]), RerankParams(k1, k2, lambda_value), progress)


def rerank_distances(dist_qg, dist_qq, dist_gg, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                     progress: bool | None = None) -> torch.Tensor:
    """Re-ranked (Q, G) distances from precomputed q-g (Q, G), q-q (Q, Q) and g-g (G, G) distances.

    Holds the pooled N x N matrix (N = Q + G) in memory; use ``rerank_features`` for large sets.
    """
    source = _DenseSource(dist_qg, dist_qq, dist_gg)
    return _rerank(source, int(torch.as_tensor(dist_qg).shape[0]), RerankParams(k1, k2, lambda_value), progress)


def _rerank(source, nq: int, params: RerankParams, progress: bool | None) -> torch.Tensor:
    """Steps 1-6 of the module docstring over a distance source (queries are its first ``nq`` items)."""
    import scipy.sparse as sp

    from agreid_kit.utils.progress import progress_bar

    n = source.n
    params.check(n)
    ng = n - nq
    if nq < 1 or ng < 1:
        raise ValueError(f"re-ranking: empty query or gallery ({nq} queries, {ng} gallery items)")
    k = params.k1 + 1
    kh = max(1, int(round(params.k1 / 2))) + 1

    # Pass 1: each item's k1 + 1 nearest (itself first), its row maximum, and the q-g block of queries.
    nbr = np.empty((n, k), dtype=np.int64)
    row_max = np.empty(n, dtype=np.float64)
    out = torch.empty((nq, ng), dtype=torch.float32)
    chunk = max(1, _CELLS // n)
    starts = range(0, n, chunk)
    for s in progress_bar(starts, desc="re-rank neighbours",
                          enabled=len(starts) >= 50 if progress is None else progress):
        e = min(s + chunk, n)
        d = source.rows(s, e)  # a fresh (e - s, N) tensor, ours to modify
        m = d.max(1).values.clamp(min=1e-12)
        row_max[s:e] = m.double().cpu().numpy()
        if s < nq:
            q_end = min(e, nq)
            out[s:q_end] = (d[: q_end - s, nq:] / m[: q_end - s, None]).cpu()
        # Self first even when a duplicate image ties at distance 0.
        d[torch.arange(e - s), torch.arange(s, e)] = -1.0
        nbr[s:e] = torch.topk(d, k, dim=1, largest=False, sorted=True).indices.cpu().numpy()

    def neighbour_matrix(cols: np.ndarray, value=1.0):
        rows = np.repeat(np.arange(n), cols.shape[1])
        data = np.full(rows.size, value, dtype=np.float64)
        return sp.csr_matrix((data, (rows, cols.ravel())), shape=(n, n))

    def reciprocal(cols: np.ndarray):
        nk = neighbour_matrix(cols)
        return nk.multiply(nk.T).tocsr()  # j in N(i) and i in N(j)

    r = reciprocal(nbr)
    rh = reciprocal(nbr[:, :kh])
    # overlap[i, q] = |R(i, k1) & R(q, k1/2)|, kept only for candidates q in R(i, k1).
    overlap = (r @ rh.T).multiply(r).tocoo()
    size_h = np.diff(rh.indptr)
    ok = 3 * overlap.data >= 2 * size_h[overlap.col]  # the paper's >= 2/3, in integers
    cand = sp.csr_matrix((np.ones(int(ok.sum())), (overlap.row[ok], overlap.col[ok])), shape=(n, n))
    rstar = ((r + cand @ rh) > 0).tocsr()
    rstar.sort_indices()
    ri = np.repeat(np.arange(n), np.diff(rstar.indptr))
    ci = rstar.indices.astype(np.int64)
    w = np.exp(-source.pairs(ri, ci) / row_max[ri])
    v = sp.csr_matrix((w, (ri, ci)), shape=(n, n))
    v = sp.diags(1.0 / np.asarray(v.sum(1)).ravel()) @ v
    if params.k2 > 1:
        v = neighbour_matrix(nbr[:, : params.k2], 1.0 / params.k2) @ v
    v = v.tocsr()
    v.sort_indices()

    # Jaccard: only gallery items sharing a non-zero column with the query contribute to sum(min).
    vq = v[:nq].tocsr()
    vg = v[nq:].tocsc()
    vg.sort_indices()
    col_cnt = np.diff(vg.indptr)
    q_row = np.repeat(np.arange(nq), np.diff(vq.indptr))
    cost = np.bincount(q_row, weights=col_cnt[vq.indices], minlength=nq)
    lam = float(params.lambda_value)
    blocks = _chunk_rows(cost, _PAIRS, max(1, _PAIRS // ng))
    for s, e in progress_bar(blocks, desc="re-rank jaccard",
                             enabled=len(blocks) >= 50 if progress is None else progress):
        a, b = vq.indptr[s], vq.indptr[e]
        rr, jj, vv = q_row[a:b] - s, vq.indices[a:b], vq.data[a:b]
        cnt = col_cnt[jj]
        rep = np.repeat(np.arange(jj.size), cnt)
        offs = np.arange(rep.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        pos = vg.indptr[jj][rep] + offs
        mins = np.minimum(vv[rep], vg.data[pos])
        sum_min = np.bincount(rr[rep] * ng + vg.indices[pos], weights=mins, minlength=(e - s) * ng).reshape(e - s, ng)
        jac = 1.0 - sum_min / (2.0 - sum_min)  # rows of V sum to 1, so sum(max) = 2 - sum(min)
        out[s:e] = torch.from_numpy(((1.0 - lam) * jac).astype(np.float32)) + lam * out[s:e]
    return out


def _chunk_rows(cost: np.ndarray, budget: int, max_rows: int) -> list[tuple[int, int]]:
    """Consecutive (start, end) row blocks whose summed ``cost`` stays within ``budget`` (one row at least)."""
    blocks, s, acc = [], 0, 0.0
    for i, c in enumerate(cost):
        if i > s and (acc + c > budget or i - s >= max_rows):
            blocks.append((s, i))
            s, acc = i, 0.0
        acc += c
    blocks.append((s, len(cost)))
    return blocks


# ---------------------------------------------------------------------------------------------
# Evaluation with the kit's rules
# ---------------------------------------------------------------------------------------------
def split_distance(fs, split, mode: str = "real", metric: str = "cosine", rerank: RerankParams | None = None,
                   progress: bool | None = None) -> torch.Tensor:
    """(Q, G) distances of FeatureSet ``fs`` on ``split`` (rows = split.query, columns = split.gallery).

    Plain ``eval.compute_distance`` unless ``rerank`` is given, then ``rerank_features``.
    """
    from agreid_kit.eval import compute_distance

    qf = fs.descriptor(mode, fs.index_of(split.query))
    gf = fs.descriptor(mode, fs.index_of(split.gallery))
    if rerank is None:
        return compute_distance(qf, gf, metric=metric)
    return rerank_features(qf, gf, rerank.k1, rerank.k2, rerank.lambda_value, metric=metric, progress=progress)


def evaluate_distances(split, distmat, max_rank: int = 50, **kwargs):
    """Score a precomputed (Q, G) distance matrix (split.query x split.gallery order) with the kit's rules.

    ``eval.evaluate_ranking`` already takes a distance matrix; this adds the split's pids, camids and
    gallery rules (``eval.ranking_inputs``) and checks the shape against the split.
    """
    from agreid_kit.eval import evaluate_ranking, ranking_inputs

    shape = tuple(distmat.shape)
    if shape != (len(split.query), len(split.gallery)):
        raise ValueError(
            f"evaluate_distances: distance matrix {shape} does not match the split's "
            f"{len(split.query)} queries x {len(split.gallery)} gallery items (protocol {split.protocol!r})"
        )
    return evaluate_ranking(distmat, **ranking_inputs(split), max_rank=max_rank, **kwargs)


def rerank_mode(mode: str) -> str:
    """The metrics key of re-ranked results of feature ``mode`` (``real`` -> ``real+rerank``)."""
    return mode + RERANK_SUFFIX


def evaluate_run_reranked(
    run_dir: str | Path,
    protocols: Sequence[str],
    modes: Sequence[str] = ("real",),
    params: RerankParams | None = None,
    splits: dict | None = None,
    keep_distances: bool = False,
):
    """Re-ranked metrics of RUN/features/test.* per protocol, stored as ``<mode>+rerank`` in RUN/metrics.json.

    Returns ``{protocol: {"<mode>+rerank": metrics}}`` (each with a ``rerank`` entry holding the
    parameters); with ``keep_distances`` also ``{(protocol, mode): (Q, G) re-ranked distances}``.
    """
    from agreid_kit.engine.evaluate import metrics_dict
    from agreid_kit.features import FeatureSet
    from agreid_kit.run import load_run

    params = (params or RerankParams()).check()
    run = load_run(run_dir)
    fs = FeatureSet.load(run.features_path("test"))
    results: dict[str, dict[str, dict[str, Any]]] = {}
    kept: dict[tuple[str, str], torch.Tensor] = {}
    for protocol in protocols:
        split = (splits or {}).get(protocol) or run.load_split(protocol)
        for mode in modes:
            dist = split_distance(fs, split, mode, rerank=params)
            m = metrics_dict(evaluate_distances(split, dist))
            m["rerank"] = params.as_dict()
            results.setdefault(protocol, {})[rerank_mode(mode)] = m
            if keep_distances:
                kept[(protocol, mode)] = dist
    run.merge_metrics(results)
    return (results, kept) if keep_distances else results


__all__ = [
    "RerankParams",
    "rerank_features",
    "rerank_distances",
    "split_distance",
    "evaluate_distances",
    "evaluate_run_reranked",
    "rerank_mode",
]
