"""k-reciprocal re-ranking: a plain-loop reference, shapes, determinism, direction, the evaluator entry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agreid_kit.eval import compute_distance, evaluate_ranking
from agreid_kit.rerank import RerankParams, evaluate_distances, rerank_distances, rerank_features


def reference_rerank(qf, gf, k1, k2, lam):
    """The paper's steps one item at a time, with dense numpy arrays and Python sets (tiny N only)."""
    x = torch.cat([qf, gf]).float()
    d = compute_distance(x, x).double().numpy()
    n, nq = d.shape[0], qf.shape[0]
    d = d / d.max(1, keepdims=True)  # each row scaled to [0, 1]
    order = []
    for i in range(n):
        row = d[i].copy()
        row[i] = -1.0  # itself first
        order.append(list(np.argsort(row, kind="stable")))

    def nn(i, k):
        return set(order[i][: k + 1])

    def recip(i, k):
        return {j for j in nn(i, k) if i in nn(j, k)}

    kh = int(round(k1 / 2))
    v = np.zeros((n, n))
    for i in range(n):
        r = recip(i, k1)
        rstar = set(r)
        for q in r:
            rq = recip(q, kh)
            if len(r & rq) >= 2 / 3 * len(rq):
                rstar |= rq
        idx = sorted(rstar)
        w = np.exp(-d[i, idx])
        v[i, idx] = w / w.sum()
    v = np.stack([v[order[i][:k2]].mean(0) for i in range(n)])
    out = np.zeros((nq, n - nq))
    for p in range(nq):
        for g in range(nq, n):
            mn, mx = np.minimum(v[p], v[g]).sum(), np.maximum(v[p], v[g]).sum()
            out[p, g - nq] = (1 - lam) * (1 - mn / mx) + lam * d[p, g]
    return out


def clusters(n_ids=8, per_id=5, dim=16, noise=0.6, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_ids, dim, generator=g) * 1.5
    pids = torch.arange(n_ids).repeat_interleave(per_id)
    feats = centres[pids] + noise * torch.randn(len(pids), dim, generator=g)
    return feats, pids


def test_matches_the_plain_loop_reference():
    feats, pids = clusters()
    qf, gf = feats[::5], torch.cat([feats[i::5] for i in range(1, 5)])
    for k1, k2, lam in ((6, 3, 0.3), (4, 1, 0.0), (5, 2, 1.0)):
        got = rerank_features(qf, gf, k1=k1, k2=k2, lambda_value=lam).numpy()
        np.testing.assert_allclose(got, reference_rerank(qf, gf, k1, k2, lam), atol=2e-5, err_msg=f"{k1=} {k2=} {lam=}")


def test_shape_dtype_determinism_and_distance_input():
    feats, _ = clusters(n_ids=10, per_id=6, dim=32, seed=1)
    qf, gf = feats[:12], feats[12:]
    a = rerank_features(qf, gf, k1=8, k2=3)
    b = rerank_features(qf.clone(), gf.clone(), k1=8, k2=3)
    assert a.shape == (12, 48) and a.dtype == torch.float32
    assert torch.equal(a, b)  # deterministic
    assert torch.isfinite(a).all() and (a >= 0).all() and (a <= 1 + 1e-6).all()
    c = rerank_distances(compute_distance(qf, gf), compute_distance(qf, qf), compute_distance(gf, gf), k1=8, k2=3)
    torch.testing.assert_close(c, a, atol=1e-5, rtol=0)
    e = rerank_features(qf, gf, k1=8, k2=3, metric="euclidean")
    assert e.shape == a.shape and not torch.equal(e, a)


def test_lambda_one_keeps_the_original_order():
    feats, _ = clusters(seed=2)
    qf, gf = feats[:5], feats[5:]
    base = compute_distance(qf, gf)
    rr = rerank_features(qf, gf, k1=6, k2=1, lambda_value=1.0)
    # lambda = 1: only the (row-scaled) original distance is left, so each row ranks the same way
    assert torch.equal(torch.argsort(rr, dim=1, stable=True), torch.argsort(base, dim=1, stable=True))


def test_rerank_fixes_a_known_bad_ranking():
    """Points in the plane (Euclidean distances): the query's nearest neighbour is an impostor whose own
    neighbourhood is its tight cluster (the query is not among the impostor's k1 nearest), while the
    query's true matches have it among theirs. Re-ranking must then put a true match first."""
    q = torch.tensor([[0.0, 0.0]])
    impostors = torch.tensor([[-0.5, 0], [-0.9, 0], [-0.8, 0.1], [-0.8, -0.1], [-0.7, 0], [-0.95, 0]])  # pid 2
    matches = torch.tensor([[0.55, 0], [0.65, 0.2], [0.65, -0.2], [0.8, 0], [0.75, 0.1]])  # pid 0
    others = torch.tensor([[0, 2.0], [0.1, 2.1], [-0.1, 2.1], [0, 2.2]])  # pid 3, far away
    gal = torch.cat([impostors, matches, others])
    g_pids = [2] * 6 + [0] * 5 + [3] * 4
    base = torch.cdist(q, gal)
    plain = evaluate_ranking(base, [0], g_pids, [0], [1] * 15)
    assert int(base[0].argmin()) == 0 and plain.cmc[0] == 0  # the impostor is nearest before re-ranking
    for k2 in (1, 3):
        rr = rerank_distances(base, torch.cdist(q, q), torch.cdist(gal, gal), k1=5, k2=k2, lambda_value=0.3)
        after = evaluate_ranking(rr, [0], g_pids, [0], [1] * 15)
        assert g_pids[int(rr[0].argmin())] == 0, k2  # a true match is nearest after it
        assert after.cmc[0] == 1.0 and after.mAP > plain.mAP + 0.3, k2


def test_bad_parameters_and_inputs_are_clear():
    feats, _ = clusters()
    with pytest.raises(ValueError, match="k1 = 40 needs"):
        rerank_features(feats[:2], feats[2:], k1=40)
    with pytest.raises(ValueError, match="k2 must be"):
        rerank_features(feats[:2], feats[2:], k1=4, k2=9)
    with pytest.raises(ValueError, match="lambda"):
        RerankParams(lambda_value=1.5).check()
    with pytest.raises(ValueError, match="expected"):
        rerank_features(feats[:2, :3], feats[2:])
    bad = feats.clone()
    bad[3, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        rerank_features(bad[:2], bad[2:], k1=4)
    with pytest.raises(ValueError, match="unknown metric"):
        rerank_features(feats[:2], feats[2:], k1=4, metric="manhattan")
    with pytest.raises(ValueError, match=">= 0"):
        d = -compute_distance(feats, feats)
        rerank_distances(d[:2, 2:], d[:2, :2], d[2:, 2:], k1=4)
    assert "k1=20, k2=6, lambda=0.3" in RerankParams().label()


def test_evaluate_distances_checks_the_split_shape():
    from agreid_kit.data.records import DatasetSplit, Record

    recs = [Record(path=f"{i}.jpg", pid=i // 2, camid=i % 2, view=1) for i in range(6)]
    split = DatasetSplit("toy", "ALL", "", [], recs[:2], recs)
    with pytest.raises(ValueError, match="does not match the split's 2 queries x 6"):
        evaluate_distances(split, torch.zeros(3, 6))
    d = torch.rand(2, 6, generator=torch.Generator().manual_seed(0))
    reference = evaluate_ranking(d, [0, 0], [r.pid for r in recs], [0, 1], [r.camid for r in recs])
    assert evaluate_distances(split, d).mAP == reference.mAP


def test_chunking_does_not_change_the_result(monkeypatch):
    import agreid_kit.rerank as rr

    feats, _ = clusters(n_ids=10, per_id=6, dim=16, seed=4)
    qf, gf = feats[:15], feats[15:]
    whole = rerank_features(qf, gf, k1=6, k2=3)
    monkeypatch.setattr(rr, "_CELLS", 200)  # a few rows per neighbour chunk
    monkeypatch.setattr(rr, "_PAIRS", 300)  # a query or two per Jaccard chunk
    # equal up to float rounding (a matmul over fewer rows may round its last bit differently)
    torch.testing.assert_close(rerank_features(qf, gf, k1=6, k2=3), whole, atol=1e-6, rtol=0)
