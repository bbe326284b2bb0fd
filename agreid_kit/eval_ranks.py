"""Exact ranks of each query's positives, vectorised over a chunk of queries (``agreid_kit.eval``'s engine).

A positive's rank is the number of kept gallery items that come no later than it in the ranking
(ascending distance, ties by gallery index). Nothing here sorts a gallery row: each query's few
positives are sorted and every other kept item only has to be *placed* between them.

- Useful rankings (few items as near as the last positive): the candidates (kept items no farther
  than the query's last positive) are listed sparsely and placed with ``searchsorted``
  (:func:`_hist_sparse`).
- Weak rankings (most items are candidates): a monotone map of the distance onto a few thousand
  bins per row (:func:`_ranks_binned`). An item whose bin holds no positive precedes exactly the
  positives of higher bins, so it is counted through a per-row bin histogram; only the items sharing
  a bin with a positive (a few per positive) are placed exactly. A handful of elementwise passes, one
  histogram and one table lookup per cell instead of a ``searchsorted`` per cell (about 20 ns per
  cell on one CPU core, against about 50 ns per cell for the 768-d distance GEMM itself).

Both are exact, ties included; ``agreid_kit.eval.reference_evaluate`` checks them in the tests.
"""

from __future__ import annotations

import math

import torch

N_BINS = 4096
"""Most bins per row of the weak-ranking path: items sharing a bin with a positive (~P x G / bins) are placed
exactly."""
DENSE_FRACTION = 1 / 16
"""Above this fraction of candidate cells a chunk takes the binned path: placing a candidate costs ~200 ns, a
binned cell ~20 ns, and the sparse path has ~5 ns per cell of fixed passes (one CPU core)."""


class PidIndex:
    """Gallery positions grouped by pid, so a query's same-pid cells are found without a (c, G) pass."""

    def __init__(self, g_pids: torch.Tensor):
        self.order = torch.argsort(g_pids, stable=True)  # stable: gallery order within each pid
        self.pids, self.counts = torch.unique_consecutive(g_pids[self.order], return_counts=True)
        self.starts = self.counts.cumsum(0) - self.counts

    def same_pid_cells(self, q_pids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, cols) of the gallery items sharing each query's pid, row-major, gallery order within a row."""
        idx = torch.searchsorted(self.pids, q_pids).clamp(max=self.pids.numel() - 1)
        found = self.pids[idx] == q_pids
        cnt = torch.where(found, self.counts[idx], torch.zeros_like(idx))
        rows = torch.repeat_interleave(torch.arange(q_pids.numel(), device=q_pids.device), cnt)
        first = torch.repeat_interleave(self.starts[idx] - (cnt.cumsum(0) - cnt), cnt)
        cols = self.order[first + torch.arange(rows.numel(), device=q_pids.device)]
        return rows, cols


def positive_ranks(d, qp, gp: PidIndex, qc, gc, rules, ws: "Workspace | None" = None, row_offset: int = 0,
                   who: str = "evaluate_ranking"):
    """Ranks (1-based, among the query's kept gallery items) of each query's positives, in order.

    ``d`` is a (c, G) chunk of the distance matrix, ``rules`` the chunk's ``(mode, q_keys, g_keys)``
    gallery rules, ``ws`` the buffers reused across chunks; ``row_offset`` (the chunk's first query)
    and ``who`` only word errors. Returns
    ``(ranks (c, P), npos (c,))``; row i's first ``npos[i]`` entries are valid (``ranks`` is None when
    no row has a positive).
    """
    c, ng = d.shape
    dev = d.device
    rows, cols = gp.same_pid_cells(qp)  # row-major, gallery order within a row
    junk = gc[cols] == qc[rows]  # same pid AND same camera: removed for this query
    drop = None  # (c, G) items the gallery rules remove
    if rules:
        drop = torch.zeros((c, ng), dtype=torch.bool, device=dev)
        for mode, qk, gk in rules:
            eq = gk[None, :] == qk[:, None]
            drop |= eq if mode == "exclude_same" else ~eq
        junk |= drop[rows, cols]
    pr, pc = rows[~junk], cols[~junk]  # positives, in gallery order within each row
    jr, jc = rows[junk], cols[junk]
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
        raise ValueError(f"{who}: a positive of query row {row_offset + bad} has a NaN distance")
    pd, order = torch.sort(pd, dim=1, stable=True)  # stable: equal distances stay in gallery order
    pidx = pidx.gather(1, order)
    dc = d.contiguous()
    # Only kept items no farther than the query's last positive can precede a positive ("candidates").
    last = pd.gather(1, (npos - 1).clamp(min=0)[:, None])
    last[npos == 0] = -math.inf
    ws = ws or Workspace(dev)
    if _candidate_fraction(dc, last) > DENSE_FRACTION:
        return _ranks_binned(dc, drop, jr, jc, pr, pc, pd, pidx, npos, p_max, ws), npos
    n = c * ng
    flags = ws.get("flags", _ceil8(n), torch.bool)
    cand = flags[:n].view(c, ng)
    torch.le(dc, last, out=cand)
    if drop is not None:
        cand &= ~drop
    cand[jr, jc] = False
    cells = _nonzero_flat(flags, n)
    hist = _hist_sparse(dc, cells // ng, cells % ng, pd, pidx, npos, p_max)
    # Rank of the k-th positive = number of kept items whose bucket is <= k (it counts itself).
    return hist.cumsum(1)[:, :p_max], npos


def _candidate_fraction(dc: torch.Tensor, last: torch.Tensor) -> float:
    """Estimated fraction of cells no farther than their row's last positive (every 16th column).

    It only chooses between two exact paths, so an estimate is enough, and it costs 1/16 of a pass.
    """
    sample = dc[:, ::16]
    return float((sample <= last).sum()) / max(1, sample.numel())


def _ranks_binned(dc, drop, jr, jc, pr, pc, pd, pidx, npos, p_max, ws):
    """Positive ranks of a chunk where most cells are candidates: bin histogram plus exact placement in shared bins.

    ``t = (d - first positive) * scale``, clamped to [-1, nb] and truncated, is a monotone
    non-decreasing function of the distance (each IEEE step rounds monotonically). So an item in a
    lower bin than a positive's is strictly nearer than it and one in a higher bin strictly farther;
    only items sharing a bin with a positive (ties included) need an exact comparison. Positives' bins
    are read from the same tensor as everybody's, so they agree bit for bit. Bins 0 (everything at
    t <= -1) and nb + 1 (beyond, removed, NaN) never hold a positive, whose t lies in [0, nb - 1].
    """
    c, ng = dc.shape
    n = c * ng
    dev = dc.device
    nb = _n_bins(ng)
    width = nb + 2  # flat bin of (row, j) = row * width + j, j in [0, nb + 1]
    lo = pd[:, :1]
    hi = pd.gather(1, (npos - 1).clamp(min=0)[:, None])
    lo64, hi64 = lo.double(), hi.double()  # the scale in float64: no overflow for any float32 span
    # A floor on the span keeps the scale finite when the positives tie (one positive, or equal distances).
    floor = torch.maximum(lo64.abs(), hi64.abs()) * 2.0**-20 + 1e-30
    scale = ((nb - 1) / torch.maximum(hi64 - lo64, floor)).clamp(max=1e30).float()
    # float32 whatever the input: the map only has to be monotone. Buffers are reused across chunks
    # (fresh (c, G) allocations cost more than the arithmetic).
    t = ws.get("t", n, torch.float32).view(c, ng)
    torch.sub(dc if dc.dtype == torch.float32 else dc.float(), lo.float(), out=t)
    t.mul_(scale).nan_to_num_(nan=nb, posinf=nb, neginf=-1.0).clamp_(-1.0, nb)
    # Positive distances infinite in float32 would break the map: every item of such a row but NaNs is placed exactly.
    usable = torch.isfinite(lo.float()[:, 0]) & torch.isfinite(hi.float()[:, 0]) & (scale[:, 0] > 0)
    bad = ((npos > 0) & ~usable).nonzero()[:, 0]
    if bad.numel():
        t[bad] = torch.where(torch.isnan(dc[bad]), float(nb), 0.0)
    empty = (npos == 0).nonzero()[:, 0]
    if empty.numel():  # rows without a positive: nothing to count
        t.index_fill_(0, empty, nb)
    if drop is not None:
        t.masked_fill_(drop, nb)
    t[jr, jc] = nb
    itype = torch.int32 if c * width < 2**31 else torch.int64  # int32: cheaper to write, count and index with
    bins = ws.get("bins", n, itype).view(c, ng)
    bins.copy_(t)  # truncation: t in (-1, 0) joins bin 1 with the first positive (placed exactly)
    bins.add_(torch.arange(1, c * width, width, device=dev, dtype=itype)[:, None])
    pos_bins = bins[pr, pc].long()
    kth = bins.gather(1, pidx[:, :p_max].clamp(max=ng - 1)).long()  # flat bin of each sorted positive (padding: unused)
    counts = torch.bincount(bins.view(-1), minlength=c * width)
    shared = torch.zeros(c * width, dtype=torch.bool, device=dev)
    shared[pos_bins] = True
    counts[pos_bins] = 0  # items in a positive's bin are counted exactly below
    flags = ws.get("flags", _ceil8(n), torch.bool)
    torch.index_select(shared, 0, bins.view(-1), out=flags[:n])
    cells = _nonzero_flat(flags, n)
    hist = _hist_sparse(dc, cells // ng, cells % ng, pd, pidx, npos, p_max)
    # Items of lower bins than the k-th positive's all precede it: the row's cumulative count up to the bin before.
    below = counts.view(c, width).cumsum(1).view(-1)
    real = torch.arange(p_max, device=dev)[None, :] < npos[:, None]
    coarse = torch.where(real, below[(kth - 1).clamp(min=0)], torch.zeros((), dtype=torch.long, device=dev))
    return hist.cumsum(1)[:, :p_max] + coarse


def _n_bins(ng: int) -> int:
    """Bins per row: up to N_BINS, but no more than a quarter of the gallery (the histogram stays O(G))."""
    nb = 16
    while nb * 2 <= min(N_BINS, ng // 4):
        nb *= 2
    return nb


def _ceil8(n: int) -> int:
    return (n + 7) // 8 * 8


def _nonzero_flat(flags: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the True entries among the first ``n`` of a sparse flat bool buffer (length ``_ceil8(n)``).

    Reads the flags eight at a time as int64 words and expands only the non-zero words: a few times
    cheaper than ``nonzero`` on the whole buffer when few flags are set (and no dearer otherwise: past
    about one word in six set, it falls back to plain ``nonzero``).
    """
    flags[n : _ceil8(n)] = False  # the padding may hold a previous chunk's flags
    words = flags[: _ceil8(n)].view(torch.int64)
    hit = (words != 0).nonzero()[:, 0]
    if hit.numel() * 6 > words.numel():
        return flags[:n].nonzero()[:, 0]
    cells = (hit[:, None] * 8 + torch.arange(8, device=flags.device)[None, :]).view(-1)
    return cells[flags[cells]]


class Workspace:
    """Flat buffers reused across the chunks of one evaluation (grown when a chunk needs more)."""

    def __init__(self, device: torch.device):
        self.device = device
        self._bufs: dict[str, torch.Tensor] = {}

    def get(self, name: str, numel: int, dtype: torch.dtype) -> torch.Tensor:
        buf = self._bufs.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != dtype:
            buf = self._bufs[name] = torch.empty(numel, dtype=dtype, device=self.device)
        return buf[:numel]


def _place(seq, pidx_rows, val, g, p_max):
    """Bucket of each item: positives (rows of ``seq``, sorted) ranked before it, ties by gallery index."""
    lo = torch.searchsorted(seq, val, right=False)
    hi = torch.searchsorted(seq, val, right=True)
    tie_r, tie_c = (hi > lo).nonzero(as_tuple=True)
    if tie_r.numel():
        j = torch.arange(p_max + 1, device=seq.device)[None, :]
        start, stop = lo[tie_r, tie_c], hi[tie_r, tie_c]
        gi = g[tie_r, tie_c] if g.dim() == 2 else g[tie_c]
        before = (j >= start[:, None]) & (j < stop[:, None]) & (pidx_rows[tie_r] < gi[:, None])
        lo[tie_r, tie_c] = start + before.sum(1)
    return lo


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
