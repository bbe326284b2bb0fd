"""Tests of agreid_kit.analysis on a tiny hand-built FeatureSet (also used by test_viz / test_widgets)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from agreid_kit import analysis
from agreid_kit.data.records import DatasetSplit, Record
from agreid_kit.features import FeatureSet

N_PIDS = 6
DIM = 16


def tiny_featureset(root: Path, seed: int = 0, missing: int | None = 5) -> tuple[FeatureSet, DatasetSplit]:
    """6 identities x (2 ground cams + 2 aerial cams) = 24 small JPEGs, features clustered by pid.

    Query: one ground (cam 0) and one aerial (cam 2) image per pid; gallery: all 24 images, so each
    query meets itself (same pid, same camera: junk). Aerial records carry altitude, every record
    pitch/distance in ``extra``; ``gen:0``/``gen:1`` and ``prebn`` extras exist. The file of record
    ``missing`` is not written (a missing image must render as a placeholder).
    """
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    centres = torch.randn(N_PIDS, DIM, generator=g) * 2.0
    records, feats = [], []
    for pid in range(N_PIDS):
        for cam in range(4):
            view = 0 if cam >= 2 else 1
            path = root / f"{pid:03d}_c{cam}.jpg"
            i = len(records)
            if i != missing:
                colour = (40 * pid % 255, 60 * cam % 255, 120)
                Image.new("RGB", (8, 16), colour).save(path, quality=90)
            records.append(Record(
                path=str(path), pid=pid + 100, camid=cam, view=view,
                altitude=float(10 + 10 * ((pid + cam) % 4)) if view == 0 else None,
                extra={"pitch": float(-15 * (1 + (pid % 3))) if view == 0 else 0.0, "distance": float(5 + pid)},
            ))
            feats.append(centres[pid] + torch.randn(DIM, generator=g) * (1.6 if pid == 5 else 0.5))
    features = torch.stack(feats)
    extras = {
        "prebn": features + 0.1 * torch.randn(features.shape, generator=g),
        "gen:0": features + 0.3 * torch.randn(features.shape, generator=g),
        "gen:1": features + 0.3 * torch.randn(features.shape, generator=g),
    }
    fs = FeatureSet(features=features, records=records, split="test", fingerprint="tiny", extras=extras)
    query = [r for r in records if r.camid in (0, 2)]
    split = DatasetSplit(dataset="tiny", protocol="ALL", root=str(root), train=[], query=query, gallery=list(records))
    return fs, split


@pytest.fixture()
def tiny(tmp_path):
    return tiny_featureset(tmp_path / "imgs")


def _brute_force_ap(fs, split, qi, mode="real"):
    """AP / INP / first-match rank from a plain double loop (independent of analysis' vectorised code)."""
    q = split.query[qi]
    qf = fs.descriptor(mode, fs.index_of([q]))[0]
    gf = fs.descriptor(mode, fs.index_of(split.gallery))
    qf = qf / qf.norm()
    gf = gf / gf.norm(dim=1, keepdim=True)
    d = (1 - gf @ qf).tolist()
    ranked = sorted(range(len(d)), key=lambda j: (d[j], j))
    ranked = [j for j in ranked if not (split.gallery[j].pid == q.pid and split.gallery[j].camid == q.camid)]
    hits = [r + 1 for r, j in enumerate(ranked) if split.gallery[j].pid == q.pid]
    if not hits:
        return math.nan, math.nan, None
    ap = sum((n + 1) / r for n, r in enumerate(hits)) / len(hits)
    return ap, len(hits) / hits[-1], hits[0]


# ---- embeddings ---------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_embed_2d_shape_and_determinism(method):
    x = np.random.default_rng(0).normal(size=(30, 20)).astype(np.float32)
    a = analysis.embed_2d(x, method=method, seed=3, pca_dims=8, max_iter=250)
    b = analysis.embed_2d(torch.from_numpy(x), method=method, seed=3, pca_dims=8, max_iter=250)
    assert a.shape == (30, 2) and np.isfinite(a).all()
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_embed_2d_umap_is_lazy_and_seeded(monkeypatch):
    """UMAP itself costs ~40 s to import and JIT on 2 cores: check our call into it with a stand-in module."""
    import subprocess
    import sys
    import types

    code = "import sys, agreid_kit.analysis, agreid_kit.viz; print('umap' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # never imported at library import

    seen = {}

    class FakeUMAP:
        def __init__(self, **kw):
            seen.update(kw)

        def fit_transform(self, x):
            seen["input_shape"] = x.shape
            return x[:, :2] * 2

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=FakeUMAP))
    x = np.random.default_rng(0).normal(size=(12, 80)).astype(np.float32)
    xy = analysis.embed_2d(x, method="umap", seed=7, pca_dims=5)
    assert seen["random_state"] == 7 and seen["n_neighbors"] == 11 and seen["n_components"] == 2
    assert seen["input_shape"] == (12, 5)  # PCA first
    assert xy.shape == (12, 2) and xy.dtype == np.float32


def test_embed_2d_separates_clusters():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(size=(15, 10)) + 8, rng.normal(size=(15, 10)) - 8])
    xy = analysis.embed_2d(x, method="pca")
    # Two far-apart clusters must land on opposite sides along the first component.
    assert np.sign(xy[:15, 0]).tolist().count(np.sign(xy[0, 0])) == 15
    assert (np.sign(xy[15:, 0]) == -np.sign(xy[0, 0])).all()


def test_embed_2d_bad_input():
    with pytest.raises(ValueError, match="method"):
        analysis.embed_2d(np.zeros((5, 3)), method="mds")
    with pytest.raises(ValueError, match="at least 3"):
        analysis.embed_2d(np.ones((2, 3)), method="pca")
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        analysis.embed_2d(np.ones(5), method="pca")


def test_embedding_frame_real_and_generated(tiny):
    fs, _ = tiny
    df = analysis.embedding_frame(fs, method="pca")
    assert len(df) == 24 and set(df.kind) == {"real"}
    for col in ("x", "y", "pid", "camid", "view", "view_name", "altitude", "pitch", "kind", "path", "row"):
        assert col in df.columns
    assert df.loc[df.view == 0, "altitude"].notna().all() and df.loc[df.view == 1, "altitude"].isna().all()
    assert df.loc[3, "pitch"] == fs.records[3].extra["pitch"]

    both = analysis.embedding_frame(fs, method="pca", include_generated=True, rows=range(0, 24, 2))
    assert len(both) == 36
    assert both.kind.value_counts().to_dict() == {"real": 12, "gen:aerial": 12, "gen:ground": 12}
    assert both.attrs["real_tensor"] == "features"  # generated features live in the retrieval space
    assert (both[both.kind == "gen:aerial"].row.to_numpy() == np.arange(0, 24, 2)).all()

    sub = analysis.embedding_frame(fs, method="pca", max_points=10, seed=1)
    assert len(sub) == 10 and sub.row.is_unique


def test_embedding_frame_without_generated_is_clear(tiny):
    fs, _ = tiny
    real_only = FeatureSet(fs.features, fs.records, "test", "x")
    with pytest.raises(ValueError, match="no gen:<view> features"):
        analysis.embedding_frame(real_only, method="pca", include_generated=True)


# ---- rank lists ---------------------------------------------------------------------------
def test_rank_list_matches_brute_force_and_flags_junk(tiny):
    fs, split = tiny
    for qi in range(len(split.query)):
        rl = analysis.rank_list(fs, split, qi, k=5)
        ap, inp, first = _brute_force_ap(fs, split, qi)
        assert rl.ap == pytest.approx(ap) and rl.inp == pytest.approx(inp) and rl.first_match_rank == first
        assert rl.n_junk == 1 and rl.n_positives == 3
        ranks = [it.rank for it in rl.items if not it.is_junk]
        assert ranks == list(range(1, 6))  # k counts rankable items only
        assert [it.position for it in rl.items] == list(range(1, len(rl.items) + 1))
        dists = [it.distance for it in rl.items]
        assert dists == sorted(dists)
        for it in rl.items:
            same = it.record.pid == rl.query.pid
            assert it.is_junk == (same and it.record.camid == rl.query.camid)
            assert it.is_match == (same and not it.is_junk)
            assert (it.rank is None) == it.is_junk
    # The query itself is in the gallery at distance ~0: shown first, flagged junk.
    rl = analysis.rank_list(fs, split, 0, k=3)
    assert rl.items[0].is_junk and rl.items[0].record.path == split.query[0].path
    assert rl.items[0].distance == pytest.approx(0.0, abs=1e-5)


def test_rank_list_modes_and_errors(tiny):
    fs, split = tiny
    rl = analysis.rank_list(fs, split, 2, k=4, mode="real+gen")
    ap, inp, _ = _brute_force_ap(fs, split, 2, mode="real+gen")
    assert rl.ap == pytest.approx(ap) and rl.mode == "real+gen"
    with pytest.raises(IndexError, match="12 queries"):
        analysis.rank_list(fs, split, 12)
    with pytest.raises(ValueError, match="k must be"):
        analysis.rank_list(fs, split, 0, k=0)


def test_per_query_scores_consistent_with_evaluate_ranking(tiny):
    from agreid_kit.eval import compute_distance, evaluate_split, ranking_inputs, score_queries

    fs, split = tiny
    inputs = ranking_inputs(split)
    for mode in ("real", "gen:aerial", "real+gen"):
        qf, gf = fs.descriptor(mode, fs.index_of(split.query)), fs.descriptor(mode, fs.index_of(split.gallery))
        res = evaluate_split(split, qf, gf)
        # One chunk: the very distance matrix evaluate_split ranks, so the scores are the evaluator's, bit for bit.
        scores = analysis.per_query_scores(fs, split, mode)
        assert len(scores) == res.n_query and scores.valid.tolist() == res.valid.tolist()
        assert np.array_equal(scores.ap.to_numpy(), res.ap, equal_nan=True)
        assert np.array_equal(scores.inp.to_numpy(), res.inp, equal_nan=True)
        assert np.array_equal(scores.first_match_rank.fillna(0).to_numpy(), res.first_match_rank)
        assert (scores.first_match_rank == 1).mean() == pytest.approx(res.rank(1))
        assert (scores.first_match_rank <= 5).mean() == pytest.approx(res.rank(5))
        for qi in (0, 7):  # rank_list ranks the same block product: the evaluator's scores, bit for bit
            rl = analysis.rank_list(fs, split, qi, mode=mode)
            assert (rl.ap, rl.inp, rl.first_match_rank, rl.n_positives) == (
                res.ap[qi], res.inp[qi], res.first_match_rank[qi], res.n_positives[qi])
        # Chunking must not change anything beyond BLAS rounding of a smaller matrix product; rank_list
        # with the same chunk ranks the same blocks, so it agrees with per_query_scores exactly.
        chunked = analysis.per_query_scores(fs, split, mode, chunk=5)
        np.testing.assert_allclose(chunked.ap.to_numpy(), res.ap, atol=1e-6)
        for qi in (3, 6, 11):
            rl = analysis.rank_list(fs, split, qi, mode=mode, chunk=5)
            assert (rl.ap, rl.inp) == (chunked.ap[qi], chunked.inp[qi])
            # On its own distance row the core and the vectorised evaluator agree exactly (one ranking core).
            s = qi // 5 * 5
            row = score_queries(compute_distance(qf[s:s + 5], gf), inputs["q_pids"][s:s + 5], inputs["g_pids"],
                                inputs["q_camids"][s:s + 5], inputs["g_camids"])
            assert (rl.ap, rl.inp, rl.first_match_rank) == (row.ap[qi - s], row.inp[qi - s],
                                                            row.first_match_rank[qi - s])


def test_rank_list_honours_protocol_gallery_rules(tiny):
    """A strict cross-view protocol removes same-view gallery items per query (split.options gallery_rules)."""
    from dataclasses import replace

    from agreid_kit.eval import evaluate_split

    fs, split = tiny
    strict = replace(split, protocol="A<->G-strict", options={"gallery_rules": [["exclude_same", "view"]]})
    scores = analysis.per_query_scores(fs, strict)
    res = evaluate_split(strict, fs.features[fs.index_of(strict.query)], fs.features[fs.index_of(strict.gallery)])
    assert np.array_equal(scores.ap.to_numpy(), res.ap, equal_nan=True)
    for qi, q in enumerate(strict.query):
        rl = analysis.rank_list(fs, strict, qi, k=12)
        assert all(it.record.view != q.view for it in rl.items) and rl.extra["n_excluded"] == 12
        assert rl.n_junk == 0 and rl.n_positives == 2 and len(rl.items) == 12


def test_sort_queries_best_and_worst(tiny):
    fs, split = tiny
    scores = analysis.per_query_scores(fs, split)
    worst = analysis.sort_queries(scores, "worst")
    best = analysis.sort_queries(scores, "best")
    assert worst.ap.is_monotonic_increasing and best.ap.is_monotonic_decreasing
    assert set(worst.query_index) == set(range(len(split.query)))
    # pid 105 has the noisiest features: its queries are among the worst.
    assert worst.pid.iloc[0] == 105
    with pytest.raises(ValueError, match="best"):
        analysis.sort_queries(scores, "middle")


def test_query_without_positive_is_kept_not_dropped(tiny):
    fs, split = tiny
    lonely = Record(path=fs.records[0].path, pid=100, camid=0, view=1)
    gallery = [r for r in split.gallery if r.pid != 100 or r.camid == 0]  # only its own-camera image remains
    s = DatasetSplit("tiny", "ALL", split.root, [], [lonely, split.query[2]], gallery)
    scores = analysis.per_query_scores(fs, s)
    assert len(scores) == 2 and not scores.valid[0] and math.isnan(scores.ap[0]) and scores.valid[1]
    rl = analysis.rank_list(fs, s, 0, k=3)
    assert not rl.valid and rl.first_match_rank is None and rl.items[0].is_junk


# ---- geometry -----------------------------------------------------------------------------
def test_accuracy_by_geometry(tiny):
    fs, split = tiny
    df = analysis.accuracy_by_geometry(fs, split, by="altitude", bins=[0, 25, 50])
    aerial_q = [q for q in split.query if q.view == 0]
    assert df.n.sum() == len(aerial_q) and df.attrs["n_missing"] == len(split.query) - len(aerial_q)
    scores = analysis.per_query_scores(fs, split).set_index("path")
    low = [q.path for q in aerial_q if q.altitude <= 25]
    assert df.n[0] == len(low)
    assert df.mAP[0] == pytest.approx(scores.loc[low, "ap"].mean())
    assert df.rank1[0] == pytest.approx((scores.loc[low, "first_match_rank"] == 1).mean())
    pitch = analysis.accuracy_by_geometry(fs, split, by="pitch", bins=3)
    assert pitch.n.sum() == len(split.query) and len(pitch) == 3
    with pytest.raises(ValueError, match="by must be"):
        analysis.accuracy_by_geometry(fs, split, by="colour")
    with pytest.raises(ValueError, match="increasing"):
        analysis.accuracy_by_geometry(fs, split, by="altitude", bins=[10, 5])


# ---- tables and logs ----------------------------------------------------------------------
def test_metrics_table():
    res = {"ALL": {"real": {"mAP": 0.5, "rank1": 0.7, "mINP": 0.2, "n_query": 10, "note": "x"},
                   "real+gen": {"mAP": 0.6, "rank1": 0.8, "mINP": 0.3, "n_query": 10}},
           "A->G": {"real": {"rank1": 0.4, "mAP": 0.3}}}
    df = analysis.metrics_table(res)
    assert list(df.columns[:5]) == ["protocol", "mode", "rank1", "mAP", "mINP"]
    assert len(df) == 3 and df.loc[1, "mAP"] == 0.6 and "note" not in df.columns
    assert math.isnan(df.loc[2, "mINP"])
    with pytest.raises(ValueError, match="A->G"):
        analysis.metrics_table({"A->G": [1, 2]})


def test_read_training_log(tmp_path):
    lines = [{"epoch": 1, "lr": 1e-3, "loss": {"ce": 2.0, "triplet": 1.0}, "val": {"mAP": 0.1}},
             {"epoch": 2, "lr": 5e-4, "loss": {"ce": 1.5, "triplet": 0.8}, "val": {"mAP": 0.2}},
             {"epoch": 2, "lr": 5e-4, "loss": {"ce": 1.4, "triplet": 0.7}, "val": {"mAP": 0.25}}]
    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    df = analysis.read_training_log(tmp_path)
    assert df.epoch.tolist() == [1, 2] and df["loss/ce"].tolist() == [2.0, 1.4] and df["val/mAP"].iloc[-1] == 0.25
    (tmp_path / "log.jsonl").write_text('{"epoch": 1}\n{oops\n')
    with pytest.raises(ValueError, match=r"log.jsonl:2"):
        analysis.read_training_log(tmp_path)
    with pytest.raises(FileNotFoundError, match="log.jsonl"):
        analysis.read_training_log(tmp_path / "nowhere")


def test_view_similarity_data_validation():
    ivc = pd.DataFrame({"view": [0, 1], "target_view": [0, 0], "cosine": [0.9, 0.1]})
    d = analysis.view_similarity_data({"instance_vs_centre": ivc, "instance_matrix": np.eye(2), "views": [0, 1]})
    assert d["views"] == ["aerial", "ground"] and d["instance_vs_centre"].view.tolist() == ["aerial", "ground"]
    with pytest.raises(ValueError, match="square"):
        analysis.view_similarity_data({"instance_vs_centre": ivc, "instance_matrix": np.ones((2, 3)), "views": [0, 1]})
    with pytest.raises(ValueError, match="views"):
        analysis.view_similarity_data({"instance_vs_centre": ivc, "instance_matrix": np.eye(2)})
