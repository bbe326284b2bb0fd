"""Rank-list dump, camera-pair breakdown and feature export on small hand-built FeatureSets."""

from __future__ import annotations

import csv
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch
from test_analysis import tiny_featureset

from agreid_kit.data.records import DatasetSplit, Record
from agreid_kit.eval import evaluate_split
from agreid_kit.features import FeatureSet


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def ap_from_rows(rows):
    """AP from a query's ranked rows (kept items only), from the match flags alone."""
    matches = [int(r["match"]) for r in sorted(rows, key=lambda r: int(r["rank"]))]
    pos = [i + 1 for i, m in enumerate(matches) if m]
    return float(np.mean([k / p for k, p in enumerate(pos, 1)])) if pos else math.nan


# ---- rank dump --------------------------------------------------------------------------------
@pytest.mark.parametrize("strict", [False, True])
def test_rank_csv_agrees_with_the_evaluator(tmp_path, strict):
    from agreid_kit.rankdump import dump_ranks

    fs, split = tiny_featureset(tmp_path / "imgs")
    if strict:  # a per-query gallery rule, as A<->G-strict has: the query's own view is removed
        split = replace(split, options={"gallery_rules": [["exclude_same", "view"]]})
    info = dump_ranks(fs, split, tmp_path / "out", top_k=0)
    res = evaluate_split(split, fs.descriptor("real", fs.index_of(split.query)),
                         fs.descriptor("real", fs.index_of(split.gallery)))
    rows = read_csv(tmp_path / "out" / "ranks.csv")
    by_q = {}
    for r in rows:
        by_q.setdefault(int(r["query_index"]), []).append(r)
    for qi, q in enumerate(split.query):
        got = ap_from_rows(by_q[qi])
        assert (math.isnan(got) and not res.valid[qi]) or got == pytest.approx(res.ap[qi], abs=1e-12), qi
        for r in by_q[qi]:
            assert not (int(r["gallery_pid"]) == q.pid and int(r["gallery_camid"]) == q.camid)  # junk removed
            if strict:
                assert int(r["gallery_view"]) != q.view
        ranks = [int(r["rank"]) for r in by_q[qi]]
        assert ranks == list(range(1, len(ranks) + 1))
        dists = [float(r["distance"]) for r in by_q[qi]]
        assert dists == sorted(dists)
    assert info["mAP"] == pytest.approx(res.mAP, abs=1e-12) and info["n_valid"] == res.n_valid
    queries = pd.read_csv(tmp_path / "out" / "queries.csv")
    np.testing.assert_allclose(queries["ap"].to_numpy(), res.ap, atol=1e-9)


def test_rank_dump_top_k_images_and_junk(tmp_path):
    from agreid_kit.rankdump import dump_ranks

    fs, split = tiny_featureset(tmp_path / "imgs")
    info = dump_ranks(fs, split, tmp_path / "out", top_k=3, images=2, include_junk=True)
    rows = read_csv(tmp_path / "out" / "ranks.csv")
    kept = [r for r in rows if r["junk"] == "0"]
    assert len(kept) == 3 * len(split.query)
    junk = [r for r in rows if r["junk"] == "1"]
    # every query is itself in the gallery at distance 0 (same pid, same camera): listed as junk, not ranked
    assert len(junk) >= len(split.query) and all(r["rank"] == "" for r in junk)
    assert all(r["query_path"] == r["gallery_path"] for r in junk if float(r["distance"]) < 1e-6)
    assert len(info["images"]) == 2 and sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == [
        "q00000_pid100.jpg", "q00001_pid100.jpg"]
    from PIL import Image

    with Image.open(info["images"][0]) as im:
        assert im.format == "JPEG" and im.width > 4 * im.height / 2  # query + up to 3 + junk tiles side by side
    with pytest.raises(ValueError, match="top_k"):
        dump_ranks(fs, split, tmp_path / "x", top_k=-1)


# ---- camera-pair breakdown --------------------------------------------------------------------
def camera_featureset(n_ids=12, dim=32, seed=0):
    """Cameras 0, 1, 2; one query per id on camera 0; gallery on every camera. Camera 1 images sit on
    their identity's centre (easy), camera 2 images are mostly noise (hard)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_ids, dim, generator=g)
    noise = {0: 0.2, 1: 0.05, 2: 20.0}
    records, feats = [], []
    for subset in ("q", "g"):
        for pid in range(n_ids):
            for cam in ((0,) if subset == "q" else (0, 1, 2)):
                records.append(Record(path=f"{subset}_{pid}_{cam}.jpg", pid=pid, camid=cam, view=0 if cam == 2 else 1))
                feats.append(centres[pid] + noise[cam] * torch.randn(dim, generator=g))
    fs = FeatureSet(torch.stack(feats), records, "test", "cams")
    split = DatasetSplit("toy", "ALL", "", [], [r for r in records if r.path[0] == "q"],
                         [r for r in records if r.path[0] == "g"])
    return fs, split


def test_camera_pairs_easy_hard_and_junk(tmp_path):
    from agreid_kit.breakdown import camera_pair_figure, camera_pair_matrix, camera_pair_table, format_camera_matrix

    fs, split = camera_featureset()
    df = camera_pair_table(fs, split)
    cell = df.set_index(["query_cam", "gallery_cam"])
    assert cell.loc[("0", "1"), "mAP"] > 0.95 and cell.loc[("0", "1"), "rank1"] == 1.0  # the easy pair
    assert cell.loc[("0", "2"), "mAP"] < 0.5 < cell.loc[("0", "1"), "mAP"]  # the hard pair
    assert math.isnan(cell.loc[("0", "0"), "mAP"]) and cell.loc[("0", "0"), "n_valid"] == 0  # all positives junk
    res = evaluate_split(split, fs.features[:12], fs.features[12:])
    assert cell.loc[
        ("all", "all"), "mAP"] == pytest.approx(res.mAP) and cell.loc[("all", "all"), "n_valid"] == res.n_valid
    assert cell.loc[("0", "all"), "rank1"] == pytest.approx(res.cmc[0])
    mat = camera_pair_matrix(df, "mAP")
    assert list(mat.index) == ["0", "all"] and list(mat.columns) == ["0", "1", "2", "all"]
    text = format_camera_matrix(df, "mAP")
    assert "-" in text.splitlines()[1] and "all" in text
    fig = camera_pair_figure(df)
    assert isinstance(fig, go.Figure) and fig.data[0].type == "heatmap"
    assert list(fig.data[0].x) == ["0", "1", "2", "all"]
    by_view = camera_pair_table(fs, split, key="view", margins=False)
    assert set(by_view["gallery_cam"]) == {"aerial", "ground"}
    # a precomputed (e.g. re-ranked) distance matrix is used as given
    flipped = camera_pair_table(fs, split, dist=-torch.cdist(fs.features[:12], fs.features[12:]))
    assert flipped.set_index(["query_cam", "gallery_cam"]).loc[("0", "1"), "mAP"] < 0.5
    with pytest.raises(ValueError, match="key must be one of"):
        camera_pair_table(fs, split, key="scene")


# ---- export -----------------------------------------------------------------------------------
def test_export_npy_mat_csv_round_trip(tmp_path):
    from scipy.io import loadmat

    from agreid_kit.export import export_features

    fs, _ = tiny_featureset(tmp_path / "imgs")
    feats = fs.features.numpy()
    (npy, rec_csv) = export_features(fs, tmp_path / "e", "npy")
    np.testing.assert_array_equal(np.load(npy), feats)
    recs = pd.read_csv(rec_csv)
    assert list(recs["path"]) == [r.path for r in fs.records] and list(recs["pid"]) == [r.pid for r in fs.records]
    (mat,) = export_features(fs, tmp_path / "e", "mat")
    m = loadmat(mat)
    np.testing.assert_array_equal(m["features"], feats)
    assert m["pid"].ravel().tolist() == [r.pid for r in fs.records] and m["view"].shape == (len(fs), 1)
    assert [str(p[0]) for p in m["path"].ravel()] == [r.path for r in fs.records]
    (table,) = export_features(fs, tmp_path / "e", "csv", mode="real+gen", name="both")
    df = pd.read_csv(table)
    assert list(df.columns[:4]) == ["path", "pid", "camid", "view"]
    np.testing.assert_allclose(df.filter(regex=r"^f\d+$").to_numpy(), fs.descriptor("real+gen").numpy(),
                               rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="unknown format 'h5'"):
        export_features(fs, tmp_path / "e", "h5")
