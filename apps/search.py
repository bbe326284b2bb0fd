"""Top-k gallery search for the ranking app: exact for test-set galleries, faiss for huge ones.

Both back-ends return the same top-k, ties included: the ranking key is (cosine distance, gallery
row) computed by one function, :func:`cosine_distances`, in float64. The faiss back-end
(``IndexFlatIP``, exact inner product on CPU) only proposes candidates: everything down to the
k-th score (minus a margin that covers float32 rounding) is re-scored with the same function and
sorted with the same key, so an item tied with the k-th one is resolved exactly as the exact
back-end resolves it (lower gallery row first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

FAISS_MIN_GALLERY = 100_000
"""Galleries with at least this many images are searched with a faiss index."""

_CHUNK_ROWS = 8192  # float64 scoring in chunks keeps memory flat for large galleries
_CANDIDATE_MARGIN = 1e-4  # float32 inner products of unit vectors are accurate to ~1e-6; be generous


def normalize_rows(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise rows (float32); zero rows stay zero instead of becoming NaN."""
    x = torch.as_tensor(x).float()
    if x.ndim != 2:
        raise ValueError(f"expected descriptors of shape (N, D), got {tuple(x.shape)}")
    return torch.nn.functional.normalize(x, dim=1)


def cosine_distances(query: torch.Tensor, gallery_rows: torch.Tensor) -> torch.Tensor:
    """``1 - cos`` between one unit query (D,) and unit gallery rows (M, D), in float64.

    The same distance as ``agreid_kit.eval.compute_distance`` (cosine), but computed row by row
    (product and sum, not a BLAS matmul): a float32 matmul's last bits depend on the matrix shape
    and a row's position (even duplicate rows can differ), so a candidate re-scored inside a subset
    would not get the value it gets in the full pass. Orders agree with the kit's up to float32
    near-ties (distance gaps below ~2e-7).
    """
    q = query.double().reshape(1, -1)
    out = [1.0 - (chunk.double() * q).sum(dim=1) for chunk in torch.split(gallery_rows, _CHUNK_ROWS)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


@dataclass(frozen=True)
class TopK:
    """Gallery rows of the k nearest items (best first) and their cosine distances."""

    rows: np.ndarray  # (k,) int64
    distances: np.ndarray  # (k,) float64


def _select(rows: np.ndarray, dist: np.ndarray, k: int) -> TopK:
    # lexsort's last key is the primary one: distance first, then the gallery row for ties.
    order = np.lexsort((rows, dist))[:k]
    return TopK(rows=rows[order].astype(np.int64), distances=dist[order])


class GallerySearch:
    """Nearest gallery items of a query descriptor under cosine distance.

    ``backend="auto"`` uses the exact full pass below :data:`FAISS_MIN_GALLERY` items and a faiss
    ``IndexFlatIP`` from there on; ``"exact"`` and ``"faiss"`` force one.
    """

    def __init__(self, descriptors: torch.Tensor, backend: str = "auto", faiss_min_gallery: int = FAISS_MIN_GALLERY):
        if backend not in ("auto", "exact", "faiss"):
            raise ValueError(f"GallerySearch backend must be 'auto', 'exact' or 'faiss', got {backend!r}")
        self.gallery = normalize_rows(descriptors).contiguous()
        if self.gallery.shape[0] == 0:
            raise ValueError("GallerySearch: the gallery is empty (no descriptors to search)")
        if backend == "auto":
            backend = "faiss" if self.gallery.shape[0] >= faiss_min_gallery else "exact"
        self.backend = backend
        self._index = None
        if backend == "faiss":
            import faiss

            self._index = faiss.IndexFlatIP(self.gallery.shape[1])
            self._index.add(np.ascontiguousarray(self.gallery.numpy(), dtype=np.float32))

    def __len__(self) -> int:
        return int(self.gallery.shape[0])

    @property
    def dim(self) -> int:
        return int(self.gallery.shape[1])

    def all_distances(self, query: torch.Tensor) -> torch.Tensor:
        """Cosine distance of the query to every gallery item (float64, (N,)); used for AP/INP."""
        return cosine_distances(self._unit_query(query), self.gallery)

    def topk(self, query: torch.Tensor, k: int, exclude: Sequence[int] | np.ndarray = ()) -> TopK:
        """The ``k`` nearest gallery rows, skipping the rows in ``exclude`` (e.g. same id and camera)."""
        if k < 1:
            raise ValueError(f"top-k needs k >= 1, got {k}")
        q = self._unit_query(query)
        excluded = np.unique(np.asarray(exclude, dtype=np.int64))
        k = min(k, len(self) - len(excluded))
        if k <= 0:
            return TopK(rows=np.zeros(0, np.int64), distances=np.zeros(0, np.float64))
        if self.backend == "exact":
            rows = np.arange(len(self), dtype=np.int64)
            dist = cosine_distances(q, self.gallery).numpy()
        else:
            rows = self._faiss_candidates(q, k + len(excluded))
            dist = cosine_distances(q, self.gallery[torch.from_numpy(rows)]).numpy()
        keep = ~np.isin(rows, excluded)
        return _select(rows[keep], dist[keep], k)

    def _faiss_candidates(self, q: torch.Tensor, k: int) -> np.ndarray:
        qn = np.ascontiguousarray(q.reshape(1, -1).numpy(), dtype=np.float32)
        scores, rows = self._index.search(qn, k)
        kth = float(scores[0, k - 1])
        # Everything that could tie with (or, after exact re-scoring, overtake) the k-th item.
        _, _, extra = self._index.range_search(qn, kth - _CANDIDATE_MARGIN)
        return np.unique(np.concatenate([rows[0], extra.astype(np.int64)]))

    def _unit_query(self, query: torch.Tensor) -> torch.Tensor:
        q = torch.as_tensor(query).float().reshape(-1)
        if q.shape[0] != self.dim:
            raise ValueError(f"query descriptor has {q.shape[0]} dims, the gallery has {self.dim}")
        return torch.nn.functional.normalize(q, dim=0)
