"""The app's top-k search: the exact pass and the faiss index return the same top-k, ties included."""

import numpy as np
import pytest
import torch

from agreid_kit.apps.search import FAISS_MIN_GALLERY, GallerySearch, cosine_distances
from agreid_kit.eval import compute_distance


def _gallery_with_ties(n=3000, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    # Exact duplicates (and a rescaled copy, equal under cosine) give distance ties at any precision.
    for src, dups in ((5, (17, 400, 2999)), (40, (41, 1200)), (777, (3, 10))):
        for j in dups:
            x[j] = x[src]
    x[2000] = 3.0 * x[5]
    return x


@pytest.mark.parametrize("k", [1, 3, 4, 5, 10, 50])
def test_faiss_equals_exact_including_ties(k):
    x = _gallery_with_ties()
    exact, fa = GallerySearch(x, backend="exact"), GallerySearch(x, backend="faiss")
    assert (exact.backend, fa.backend) == ("exact", "faiss")
    queries = [x[5], x[40], x[777], x[5] + 1e-3 * torch.randn(32, generator=torch.Generator().manual_seed(1))]
    queries += list(torch.randn(6, 32, generator=torch.Generator().manual_seed(2)))
    for q in queries:
        a, b = exact.topk(q, k), fa.topk(q, k)
        np.testing.assert_array_equal(a.rows, b.rows)
        np.testing.assert_array_equal(a.distances, b.distances)
        assert len(a.rows) == k
        # Best first, ties broken by the lower gallery row.
        keys = list(zip(a.distances.tolist(), a.rows.tolist()))
        assert keys == sorted(keys)


def test_ties_resolved_by_gallery_row_at_the_cut():
    x = _gallery_with_ties()
    # x[5] has copies at rows 17, 400, 2999 and a rescaled copy at 2000: five items at distance ~0.
    for backend in ("exact", "faiss"):
        top = GallerySearch(x, backend=backend).topk(x[5], 3)
        assert top.rows.tolist() == [5, 17, 400]
        top5 = GallerySearch(x, backend=backend).topk(x[5], 5)
        assert sorted(top5.rows.tolist()) == [5, 17, 400, 2000, 2999]


def test_exclusion_skips_rows_in_both_backends():
    x = _gallery_with_ties()
    for backend in ("exact", "faiss"):
        top = GallerySearch(x, backend=backend).topk(x[5], 3, exclude=[5, 17])
        # Left among the near-zero items: the exact copies 400, 2999 and the rescaled copy 2000.
        assert top.rows[0] == 400 and set(top.rows.tolist()) == {400, 2000, 2999}
    a = GallerySearch(x, "exact").topk(x[40], 8, exclude=np.arange(0, 3000, 3))
    b = GallerySearch(x, "faiss").topk(x[40], 8, exclude=np.arange(0, 3000, 3))
    np.testing.assert_array_equal(a.rows, b.rows)
    assert not np.isin(a.rows, np.arange(0, 3000, 3)).any()


def test_distances_are_the_kits_cosine_distance_and_order():
    x = torch.randn(500, 24, generator=torch.Generator().manual_seed(3))
    q = torch.randn(24, generator=torch.Generator().manual_seed(4))
    ours = cosine_distances(torch.nn.functional.normalize(q, dim=0), torch.nn.functional.normalize(x, dim=1))
    kit = compute_distance(q[None], x)[0].double()
    assert torch.allclose(ours, kit, atol=1e-6)
    top = GallerySearch(x).topk(q, 20)
    assert top.rows.tolist() == torch.argsort(kit, stable=True)[:20].tolist()


def test_auto_backend_switches_to_faiss_for_large_galleries_with_same_results():
    x = torch.randn(FAISS_MIN_GALLERY, 16, generator=torch.Generator().manual_seed(5))
    x[12345] = x[99]
    auto = GallerySearch(x)
    assert auto.backend == "faiss"
    assert GallerySearch(x[: FAISS_MIN_GALLERY - 1]).backend == "exact"
    exact = GallerySearch(x, backend="exact")
    for q in (x[99], torch.randn(16, generator=torch.Generator().manual_seed(6))):
        a, b = exact.topk(q, 10), auto.topk(q, 10)
        np.testing.assert_array_equal(a.rows, b.rows)
    assert auto.topk(x[99], 2).rows.tolist() == [99, 12345]


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="backend"):
        GallerySearch(torch.randn(4, 3), backend="annoy")
    with pytest.raises(ValueError, match="empty"):
        GallerySearch(torch.zeros(0, 3))
    s = GallerySearch(torch.randn(10, 3))
    with pytest.raises(ValueError, match="4 dims, the gallery has 3"):
        s.topk(torch.randn(4), 2)
    with pytest.raises(ValueError, match="k >= 1"):
        s.topk(torch.randn(3), 0)
    assert len(s.topk(torch.randn(3), 50).rows) == 10
    assert len(s.topk(torch.randn(3), 5, exclude=range(10)).rows) == 0
