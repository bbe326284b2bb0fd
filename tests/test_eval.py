"""Evaluator: hand-worked cases, equality with the plain-loop reference, chunking, metrics, errors."""

import numpy as np
import pytest
import torch

from agreid_kit.eval import compute_distance, evaluate_ranking, reference_evaluate


def hand_case():
    # gallery:      g0        g1        g2        g3        g4        g5
    g_pids = [1, 2, 1, 3, 1, 2]
    g_cams = [0, 1, 1, 0, 2, 1]
    q_pids = [1, 2, 3]
    q_cams = [0, 1, 1]
    dist = torch.tensor(
        [
            [0.1, 0.2, 0.3, 0.3, 0.5, 0.4],  # q0
            [0.9, 0.1, 0.2, 0.3, 0.4, 0.5],  # q1
            [0.5, 0.5, 0.5, 0.5, 0.5, 0.5],  # q2: all tied -> gallery order
        ]
    )
    return dist, q_pids, g_pids, q_cams, g_cams


def test_hand_worked_case():
    res = evaluate_ranking(*hand_case(), max_rank=6)
    # q0 (pid 1, cam 0): g0 is same pid + same cam -> removed. Kept order: g1 .2, g2 .3, g3 .3 (tie, after g2
    #   by gallery order), g5 .4, g4 .5. Positives g2, g4 at ranks 2 and 5:
    #   AP = (1/2 + 2/5) / 2 = 0.45; INP = 2 / 5 = 0.4; first hit at rank 2.
    assert res.ap[0] == pytest.approx(0.45) and res.inp[0] == pytest.approx(0.4)
    # q1 (pid 2, cam 1): both pid-2 items (g1, g5) are on cam 1 -> removed; no positive: skipped, counted.
    assert not res.valid[1] and np.isnan(res.ap[1]) and np.isnan(res.inp[1])
    # q2 (pid 3, cam 1): all distances tie -> gallery order; g3 (pid 3, cam 0) is kept at rank 4:
    #   AP = 1/4, INP = 1/4, first hit at rank 4.
    assert res.ap[2] == pytest.approx(0.25) and res.inp[2] == pytest.approx(0.25)
    assert (res.n_query, res.n_valid, res.n_skipped) == (3, 2, 1)
    assert res.mAP == pytest.approx((0.45 + 0.25) / 2)  # 0.35
    assert res.mINP == pytest.approx((0.4 + 0.25) / 2)  # 0.325
    # CMC over the 2 valid queries: first hits at ranks 2 and 4
    np.testing.assert_allclose(res.cmc, [0, 0.5, 0.5, 1, 1, 1])
    d = res.as_dict()
    assert d["rank1"] == 0 and d["rank5"] == 1 and d["rank10"] is None and d["n_skipped"] == 1
    assert "2/3 queries evaluated, 1 skipped" in res.summary()
    ref = reference_evaluate(*hand_case(), max_rank=6)
    assert ref.mAP == res.mAP and np.array_equal(ref.cmc, res.cmc)


def test_gallery_rules_hand_case():
    dist, qp, gp, qc, gc = hand_case()
    # exclude gallery items with the query's key; q0 key 0 drops g1 (key 0) and g2 (key 0):
    # kept order g3 .3, g5 .4, g4 .5 -> only positive g4 at rank 3: AP = 1/3
    q_keys, g_keys = [0, 1, 1], [1, 0, 0, 1, 1, 1]
    res = evaluate_ranking(dist, qp, gp, qc, gc, max_rank=6, gallery_rules=[("exclude_same", q_keys, g_keys)])
    assert res.ap[0] == pytest.approx(1 / 3)
    # require_same for q2 (key 1) keeps g0, g3, g4, g5 -> g3 at rank 2 (tie, gallery order): AP = 1/2
    res = evaluate_ranking(dist, qp, gp, qc, gc, max_rank=6, gallery_rules=[("require_same", q_keys, g_keys)])
    assert res.ap[2] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="gallery_rules\\[0\\] must be"):
        evaluate_ranking(dist, qp, gp, qc, gc, gallery_rules=[("drop", q_keys, g_keys)])


def random_case(seed, nq, ng, n_ids, n_cams, levels=None):
    rng = np.random.default_rng(seed)
    q_pids, g_pids = rng.integers(0, n_ids, nq), rng.integers(0, n_ids, ng)
    q_cams, g_cams = rng.integers(0, n_cams, nq), rng.integers(0, n_cams, ng)
    if levels:  # few distinct distance values -> many ties
        dist = rng.integers(0, levels, (nq, ng)).astype(np.float32) / levels
    else:
        dist = rng.random((nq, ng)).astype(np.float32)
    return torch.from_numpy(dist), q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize(
    "seed,nq,ng,n_ids,n_cams,levels,rules",
    [
        (0, 80, 500, 40, 6, None, False),
        (1, 80, 500, 40, 6, 7, False),  # heavy ties
        (2, 50, 300, 120, 2, 3, True),  # many ids, few positives, ties, plus a per-query rule
        (3, 40, 200, 5, 13, None, True),  # many positives per query
    ],
)
def test_equals_reference_exactly(seed, nq, ng, n_ids, n_cams, levels, rules):
    args = random_case(seed, nq, ng, n_ids, n_cams, levels)
    rng = np.random.default_rng(seed + 100)
    gr = [("exclude_same", rng.integers(0, 2, nq), rng.integers(0, 2, ng))] if rules else None
    fast = evaluate_ranking(*args, max_rank=30, chunk_size=17, gallery_rules=gr)
    ref = reference_evaluate(*args, max_rank=30, gallery_rules=gr)
    assert fast.n_valid == ref.n_valid and np.array_equal(fast.valid, ref.valid)
    assert np.array_equal(fast.cmc, ref.cmc)
    # Same positive ranks and the same summation order -> bit-identical floats.
    assert np.array_equal(fast.ap, ref.ap, equal_nan=True) and np.array_equal(fast.inp, ref.inp, equal_nan=True)
    assert fast.mAP == ref.mAP and fast.mINP == ref.mINP


def test_chunked_equals_unchunked_and_float64():
    args = random_case(5, 70, 500, 60, 4, 11)
    whole = evaluate_ranking(*args, chunk_size=70)
    for chunk in (1, 7, 64):
        part = evaluate_ranking(*args, chunk_size=chunk)
        assert np.array_equal(part.ap, whole.ap, equal_nan=True) and np.array_equal(part.cmc, whole.cmc)
    as64 = evaluate_ranking(args[0].double(), *args[1:])
    assert as64.mAP == whole.mAP


def test_cosine_and_euclidean_on_normalised_rank_alike():
    g = torch.Generator().manual_seed(0)
    qf, gf = torch.randn(40, 32, generator=g), torch.randn(300, 32, generator=g)
    rng = np.random.default_rng(0)
    qp, gp = rng.integers(0, 20, 40), rng.integers(0, 20, 300)
    qc, gc = rng.integers(0, 3, 40), rng.integers(0, 3, 300)
    cos = compute_distance(qf, gf, "cosine")
    qn, gn = torch.nn.functional.normalize(qf, dim=1), torch.nn.functional.normalize(gf, dim=1)
    euc = compute_distance(qn, gn, "euclidean")
    torch.testing.assert_close(euc, (2 * cos).clamp(min=0).sqrt(), atol=1e-5, rtol=0)  # |a-b|^2 = 2 - 2cos
    a, b = evaluate_ranking(cos, qp, gp, qc, gc), evaluate_ranking(euc, qp, gp, qc, gc)
    assert np.array_equal(a.cmc, b.cmc) and np.allclose(a.ap, b.ap, equal_nan=True)
    # raw (unnormalised) Euclidean is a different ranking on these features
    assert not np.allclose(a.ap, evaluate_ranking(compute_distance(qf, gf, "euclidean"), qp, gp, qc, gc).ap, equal_nan=True)


def test_compute_distance_values():
    q = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    g = torch.tensor([[0.0, 2.0], [6.0, 8.0]])
    # cosine: q0.g0 = 0 -> 1; q0.g1 = 6/10 -> 0.4; q1.g0 = 8/10 -> 0.2; q1 // g1 -> 0
    # euclidean: |(1,-2)| = sqrt 5, |(-5,-8)| = sqrt 89, |(3,2)| = sqrt 13, |(-3,-4)| = 5
    torch.testing.assert_close(compute_distance(q, g, "cosine"), torch.tensor([[1.0, 0.4], [0.2, 0.0]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(compute_distance(q, g, "euclidean"), torch.tensor([[5**0.5, 89**0.5], [13**0.5, 5.0]]))
    with pytest.raises(ValueError, match="unknown metric 'l1'"):
        compute_distance(q, g, "l1")
    with pytest.raises(ValueError, match="expected \\(Q, D\\) and \\(G, D\\)"):
        compute_distance(q, torch.zeros(3, 5))


def test_bad_inputs():
    dist, qp, gp, qc, gc = hand_case()
    with pytest.raises(ValueError, match="g_pids has 5 entries, expected 6"):
        evaluate_ranking(dist, qp, gp[:5], qc, gc)
    bad = dist.clone()
    bad[0, 2] = float("nan")  # g2 is a positive of q0
    with pytest.raises(ValueError, match="positive of query row 0 .* NaN distance"):
        evaluate_ranking(bad, qp, gp, qc, gc)
    bad[0, 2], bad[0, 1] = 0.3, float("nan")  # a NaN negative ranks last, as in the reference
    nan_neg = evaluate_ranking(bad, qp, gp, qc, gc)
    assert nan_neg.ap[0] == reference_evaluate(bad, qp, gp, qc, gc).ap[0] == pytest.approx((1 + 2 / 4) / 2)
    with pytest.raises(ValueError, match="none of the 1 queries has a positive"):
        evaluate_ranking(dist[1:2], qp[1:2], gp, qc[1:2], gc)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_matches_cpu():
    args = random_case(9, 64, 400, 30, 5, 9)
    cpu = evaluate_ranking(*args)
    gpu = evaluate_ranking(args[0].cuda(), *args[1:])
    assert np.array_equal(cpu.cmc, gpu.cmc) and np.allclose(cpu.ap, gpu.ap, equal_nan=True, rtol=1e-12)


@pytest.mark.parametrize("separated,dtype", [(True, torch.float32), (True, torch.float64), (False, torch.float32)])
def test_both_placement_paths_equal_reference(monkeypatch, separated, dtype):
    """Good rankings take the sparse-candidate path, weak ones the dense path; both must be exact."""
    import agreid_kit.eval as ev

    used = []
    for name in ("_hist_sparse", "_hist_dense"):
        fn = getattr(ev, name)
        monkeypatch.setattr(ev, name, lambda *a, _fn=fn, _n=name: used.append(_n) or _fn(*a))
    rng = np.random.default_rng(11)
    nq, ng = 60, 600
    qp, gp = rng.integers(0, 30, nq), rng.integers(0, 30, ng)
    qc, gc = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
    base = rng.integers(0, 5, (nq, ng)) / 10  # coarse values: many exact ties
    if separated:  # positives within [0, 0.4], negatives mostly beyond
        base = base + (gp[None, :] != qp[:, None]) * (0.35 + rng.integers(0, 5, (nq, ng)) / 10)
    dist = torch.from_numpy(base.astype(np.float32)).to(dtype)
    fast = ev.evaluate_ranking(dist, qp, gp, qc, gc, chunk_size=16)
    ref = ev.reference_evaluate(dist, qp, gp, qc, gc)
    assert set(used) == {"_hist_sparse" if separated else "_hist_dense"}
    assert np.array_equal(fast.ap, ref.ap, equal_nan=True) and np.array_equal(fast.cmc, ref.cmc)
    assert fast.mINP == ref.mINP
