"""Evaluator: hand-worked cases, equality with the plain-loop reference, chunking, metrics, errors."""

import math

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
    ref = reference_evaluate(*args, max_rank=30, gallery_rules=gr)
    # Same positive ranks and the same summation order -> bit-identical floats, whichever path is taken.
    assert_same(evaluate_ranking(*args, max_rank=30, chunk_size=17, gallery_rules=gr), ref)


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
    assert not np.allclose(a.ap, evaluate_ranking(compute_distance(qf, gf, "euclidean"), qp, gp, qc, gc).ap,
                           equal_nan=True)


def test_compute_distance_values():
    q = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    g = torch.tensor([[0.0, 2.0], [6.0, 8.0]])
    # cosine: q0.g0 = 0 -> 1; q0.g1 = 6/10 -> 0.4; q1.g0 = 8/10 -> 0.2; q1 // g1 -> 0
    # euclidean: |(1,-2)| = sqrt 5, |(-5,-8)| = sqrt 89, |(3,2)| = sqrt 13, |(-3,-4)| = 5
    torch.testing.assert_close(compute_distance(q, g, "cosine"), torch.tensor([[1.0, 0.4], [0.2, 0.0]]),
                               atol=1e-6, rtol=0)
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


PATHS = {"sparse": 2.0, "binned": -1.0}  # DENSE_FRACTION that forces each placement path


def assert_same(fast, ref):
    """Bit-identical per-query scores and aggregates (same ranks, same summation order)."""
    assert fast.n_valid == ref.n_valid and np.array_equal(fast.valid, ref.valid)
    assert np.array_equal(fast.ap, ref.ap, equal_nan=True) and np.array_equal(fast.inp, ref.inp, equal_nan=True)
    assert np.array_equal(fast.first_match_rank, ref.first_match_rank)
    assert np.array_equal(fast.n_positives, ref.n_positives)
    assert np.array_equal(fast.cmc, ref.cmc) and fast.mAP == ref.mAP and fast.mINP == ref.mINP


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("separated,dtype", [(True, torch.float32), (True, torch.float64), (False, torch.float32),
                                             (False, torch.float64)])
def test_both_placement_paths_equal_reference(monkeypatch, path, separated, dtype):
    """Good rankings take the sparse-candidate path, weak ones the binned path; each must be exact on both."""
    import agreid_kit.eval_ranks as er

    used = []
    binned = er._ranks_binned
    monkeypatch.setattr(er, "_ranks_binned", lambda *a: used.append("binned") or binned(*a))
    rng = np.random.default_rng(11)
    nq, ng = 60, 600
    qp, gp = rng.integers(0, 30, nq), rng.integers(0, 60, ng)  # half the gallery: distractor ids
    qc, gc = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
    base = rng.integers(0, 5, (nq, ng)) / 10  # coarse values: many exact ties
    if separated:  # positives within [0, 0.4], negatives from 0.4 on (a few tie with the farthest positives)
        base = base + (gp[None, :] != qp[:, None]) * (0.4 + rng.integers(0, 10, (nq, ng)) / 10)
    dist = torch.from_numpy(base.astype(np.float32)).to(dtype)
    ref = reference_evaluate(dist, qp, gp, qc, gc)
    # The automatic choice first, then each path forced.
    auto = evaluate_ranking(dist, qp, gp, qc, gc, chunk_size=16)
    assert ("binned" in used) == (not separated)
    assert_same(auto, ref)
    monkeypatch.setattr(er, "DENSE_FRACTION", PATHS[path])
    used.clear()
    assert_same(evaluate_ranking(dist, qp, gp, qc, gc, chunk_size=16), ref)
    assert ("binned" in used) == (path == "binned")


def edge_case_matrix():
    """Distances built to break a placement: ties, signed zeros, infinities, NaN negatives, lone and tied positives."""
    g_pids = np.array([1, 1, 1, 2, 2, 3, 3, 3, 4, 5, 1, 2])
    g_cams = np.array([0, 1, 2, 0, 1, 0, 1, 2, 0, 1, 1, 2])
    q_pids = np.array([1, 1, 2, 3, 4, 9, 1, 5, 3])
    q_cams = np.array([0, 0, 0, 1, 1, 0, 2, 0, 0])
    inf, nan = math.inf, math.nan
    dist = np.array([
        [0.0, 0.2, 0.2, 0.2, 0.1, 0.2, nan, 0.3, -0.0, 0.2, 0.5, inf],  # ties with positives, NaN / inf negatives
        [9.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],  # everything tied
        [0.5, 0.4, -inf, 0.3, 0.3, 0.3, 0.1, 0.2, 0.6, 0.7, 0.8, 0.3],  # -inf negative first
        [-0.0, 0.0, 0.0, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.0, 0.0],  # signed zeros tie
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0, 1.0, 1.1],  # lone positive (pid 4, cam 0 vs q cam 1)
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2],  # pid 9: no positive
        [inf, inf, 0.2, 0.1, 0.3, inf, 0.0, 0.5, 0.5, 0.5, inf, 0.5],  # infinite positives
        [1e-30, 2e-30, 0.0, 1e-30, 3e-30, 0.0, 1e-30, 0.0, 0.0, 1e-30, 0.0, 0.0],  # tiny spans, lone positive
        [3e38, -3e38, 3e38, 1.0, 2.0, -3e38, 3e38, 3e38, 0.0, 1.0, -3e38, 3e38],  # huge span
    ])
    return dist, q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_edge_cases_equal_reference(monkeypatch, path, dtype):
    import agreid_kit.eval_ranks as er

    monkeypatch.setattr(er, "DENSE_FRACTION", PATHS[path])
    dist, qp, gp, qc, gc = edge_case_matrix()
    d = torch.from_numpy(dist).to(dtype)
    rules = [("exclude_same", [0, 1, 0, 1, 0, 1, 0, 1, 0], [1, 0, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1])]
    for gr in (None, rules):
        for chunk in (1, 4, 9):
            assert_same(evaluate_ranking(d, qp, gp, qc, gc, max_rank=12, chunk_size=chunk, gallery_rules=gr),
                        reference_evaluate(d, qp, gp, qc, gc, max_rank=12, gallery_rules=gr))


@pytest.mark.parametrize("path", PATHS)
def test_few_bins_many_shared_items_stay_exact(monkeypatch, path):
    """With 16 bins per row most items share a positive's bin: the exact placement carries the load."""
    import agreid_kit.eval_ranks as er

    monkeypatch.setattr(er, "N_BINS", 16)
    monkeypatch.setattr(er, "DENSE_FRACTION", PATHS[path])
    for seed, levels in ((21, None), (22, 5), (23, 50)):
        args = random_case(seed, 40, 700, 12, 4, levels)
        assert_same(evaluate_ranking(*args, chunk_size=13), reference_evaluate(*args))


# ---- the per-query core ---------------------------------------------------------------------
@pytest.mark.parametrize("levels,rules", [(None, False), (4, True), (3, False)])
def test_rank_row_equals_the_evaluator_on_each_row(levels, rules):
    """The display core and the vectorised evaluator share one ranks-to-scores path: equal bit for bit."""
    from agreid_kit.eval import query_rules, rank_row, score_queries

    dist, qp, gp, qc, gc = random_case(31, 30, 250, 25, 3, levels)
    rng = np.random.default_rng(32)
    gr = [("require_same", rng.integers(0, 3, 30), rng.integers(0, 3, 250))] if rules else None
    sc = score_queries(dist, qp, gp, qc, gc, chunk_size=7, gallery_rules=gr)
    ref = reference_evaluate(dist, qp, gp, qc, gc, gallery_rules=gr)
    assert not sc.valid.all()  # some queries without a positive are part of the check
    for i in range(30):
        rk = rank_row(dist[i], qp[i], qc[i], gp, gc, query_rules(gr, i))
        assert np.array_equal([rk.ap, rk.inp], [sc.ap[i], sc.inp[i]], equal_nan=True)
        assert np.array_equal([rk.ap, rk.inp], [ref.ap[i], ref.inp[i]], equal_nan=True)
        assert (rk.first_match_rank or 0, rk.n_positives) == (sc.first_match_rank[i], sc.n_positives[i])
        # The order: ascending distance, ties by gallery index, rule-removed items left out.
        d = dist[i].numpy()[rk.order]
        assert np.all((np.diff(d) > 0) | ((np.diff(d) == 0) & (np.diff(rk.order) > 0)))
        assert len(rk.order) + rk.n_excluded == 250
        assert np.array_equal(rk.match, (gp[rk.order] == qp[i]) & ~rk.junk)
        assert not (rk.junk & rk.match).any()
        assert rk.junk.sum() == ((gp[rk.order] == qp[i]) & (gc[rk.order] == qc[i])).sum()


def test_rank_row_hand_case_and_top_items():
    from agreid_kit.eval import rank_row, top_items

    dist, qp, gp, qc, gc = hand_case()
    rk = rank_row(dist[0], qp[0], qc[0], gp, gc)
    # q0: g0 junk (same pid, same cam) first, then g1 .2, g2 .3, g3 .3 (tie: gallery order), g5 .4, g4 .5
    assert rk.order.tolist() == [0, 1, 2, 3, 5, 4]
    assert rk.junk.tolist() == [True, False, False, False, False, False]
    assert rk.match.tolist() == [False, False, True, False, False, True]
    assert (rk.ap, rk.inp, rk.first_match_rank, rk.n_positives) == (pytest.approx(0.45), pytest.approx(0.4), 2, 2)
    items = top_items(rk.order, dist[0].numpy()[rk.order], rk.junk, rk.match, [f"g{j}" for j in range(6)], k=2)
    assert [(it.position, it.rank, it.record, it.status) for it in items] == [
        (1, None, "g0", "junk"), (2, 1, "g1", "non-match"), (3, 2, "g2", "match")]
    unknown = top_items([1, 2], [0.2, 0.3], [False, False], None, ["a", "b", "c"], k=5)
    assert [it.status for it in unknown] == ["unknown", "unknown"] and unknown[1].rank == 2
    lonely = rank_row(dist[1], qp[1], qc[1], gp, gc)  # both pid-2 items are junk: no positive
    assert not lonely.valid and math.isnan(lonely.ap) and lonely.first_match_rank is None
    bad = dist[0].clone()
    bad[2] = math.nan
    with pytest.raises(ValueError, match="positive of query pid 1 has a NaN distance"):
        rank_row(bad, qp[0], qc[0], gp, gc)
    with pytest.raises(ValueError, match="unknown mode 'drop'"):
        rank_row(dist[0], qp[0], qc[0], gp, gc, [("drop", 0, gp)])
    with pytest.raises(ValueError, match="g_pids has 5 entries for a distance row of 6"):
        rank_row(dist[0], qp[0], qc[0], gp[:5], gc)


def test_score_queries_keeps_queries_without_positive():
    from agreid_kit.eval import score_queries

    dist, qp, gp, qc, gc = hand_case()
    sc = score_queries(dist[1:2], qp[1:2], gp, qc[1:2], gc)  # evaluate_ranking raises here; score_queries does not
    assert sc.valid.tolist() == [False] and np.isnan(sc.ap[0]) and sc.first_match_rank[0] == 0
    with pytest.raises(ValueError, match="score_queries: q_pids has 2 entries, expected 1"):
        score_queries(dist[1:2], qp[:2], gp, qc[1:2], gc)


def test_default_chunk_keeps_cpu_chunks_cache_sized():
    from agreid_kit.eval import CHUNK_CELLS, _default_chunk

    assert CHUNK_CELLS["cpu"] < CHUNK_CELLS["other"]
    assert _default_chunk(20000, "cpu") == CHUNK_CELLS["cpu"] // 20000 == 104
    assert _default_chunk(20000, torch.device("cuda")) == CHUNK_CELLS["other"] // 20000 == 838
    assert _default_chunk(10**9, "cpu") == 1  # a huge gallery still gets one query per chunk
