"""Tests of agreid_kit.viz: figure contents, thumbnails, and save_figure (HTML always, PNG with Chromium)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from test_analysis import tiny_featureset

from agreid_kit import analysis, viz


@pytest.fixture()
def tiny(tmp_path):
    return tiny_featureset(tmp_path / "imgs")


def _frame(n, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "x": rng.normal(size=n), "y": rng.normal(size=n), "pid": rng.integers(0, 4, n), "camid": rng.integers(0, 3, n),
        "view": rng.integers(0, 2, n), "altitude": rng.uniform(10, 50, n), "pitch": rng.uniform(-90, 0, n),
        "distance": rng.uniform(5, 20, n), "kind": np.where(rng.uniform(size=n) < 0.3, "gen:aerial", "real"),
        "path": [f"/x/{i}.jpg" for i in range(n)], "row": np.arange(n),
    })
    df["view_name"] = np.where(df.view == 0, "aerial", "ground")
    df.attrs["method"] = "umap"
    return df


def test_embedding_figure_categorical_customdata_maps_back():
    df = _frame(60)
    fig = viz.embedding_figure(df, color_by="view_name")
    assert [t.name for t in fig.data] == ["view_name=aerial", "view_name=ground"]
    assert all(isinstance(t, go.Scatter) for t in fig.data)
    for t in fig.data:
        rows = np.asarray(t.customdata)
        np.testing.assert_allclose(np.asarray(t.x), df.x.to_numpy()[rows])
        assert set(df.view_name.iloc[rows]) == {t.name.split("=")[1]}
    assert sum(len(t.x) for t in fig.data) == 60
    # generated points are diamonds
    t0 = fig.data[0]
    kinds = df.kind.to_numpy()[np.asarray(t0.customdata)]
    assert [s == "diamond" for s in t0.marker.symbol] == [k.startswith("gen") for k in kinds]
    assert "UMAP" in fig.layout.title.text


def test_embedding_figure_continuous_and_scattergl():
    big = _frame(viz.SCATTERGL_THRESHOLD + 1)
    fig = viz.embedding_figure(big, color_by="altitude")
    assert len(fig.data) == 1 and isinstance(fig.data[0], go.Scattergl)
    assert fig.data[0].marker.showscale and len(fig.data[0].x) == len(big)
    with pytest.raises(ValueError, match="color_by"):
        viz.embedding_figure(big, color_by="colour")
    many = _frame(200).assign(pid=np.arange(200))
    fig = viz.embedding_figure(many, color_by="pid")  # 200 identities: one trace, palette cycled
    assert len(fig.data) == 1 and list(fig.data[0].customdata) == list(range(200))
    assert fig.data[0].marker.color[0] == fig.data[0].marker.color[len(viz.CATEGORICAL)] != fig.data[0].marker.color[1]


def test_rank_list_figure_borders_and_captions(tiny):
    fs, split = tiny
    rl = analysis.rank_list(fs, split, 0, k=5)
    fig = viz.rank_list_figure(rl, thumb_size=(64, 32))
    assert len(fig.layout.images) == len(rl.items) + 1
    assert all(im.source.startswith("data:image/png;base64,") for im in fig.layout.images)
    colours = [s.line.color for s in fig.layout.shapes]
    assert colours[0] == viz.MATCH_COLOURS["query"]
    for it, c in zip(rl.items, colours[1:]):
        want = "junk" if it.is_junk else ("match" if it.is_match else "nonmatch")
        assert c == viz.MATCH_COLOURS[want]
    texts = [a.text for a in fig.layout.annotations]
    assert "AP" in texts[0] and "INP" in texts[0]
    assert texts[1].startswith("<b>junk</b>")  # the query's own image: same id and camera
    first_ranked = next(i for i, it in enumerate(rl.items) if not it.is_junk)
    it = rl.items[first_ranked]
    assert f"d={it.distance:.3f}" in texts[
        first_ranked + 1] and f"pid {it.record.pid} cam {it.record.camid}" in texts[first_ranked + 1]
    assert "#1" in texts[first_ranked + 1]


def test_thumbnail_placeholder_for_missing_file(tiny, tmp_path):
    fs, _ = tiny
    missing = fs.records[5].path
    tile = viz.load_thumbnail(missing, (64, 32))
    assert tile.size == (32, 64) and tile.getpixel((31, 63)) == (190, 190, 190)
    real = viz.load_thumbnail(fs.records[0].path, (64, 32))
    assert real.size == (32, 64) and real.getpixel((16, 32)) != (190, 190, 190)
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    assert viz.load_thumbnail(tmp_path / "bad.jpg", (20, 10)).getpixel((9, 19)) == (190, 190, 190)


def test_tables_and_curves():
    df = analysis.metrics_table({"ALL": {"real": {"rank1": 0.812, "mAP": 0.7, "mINP": 0.4}}})
    t = viz.metrics_table_figure(df)
    assert t.data[0].cells.values[2] == ("81.2",) or list(t.data[0].cells.values[2]) == ["81.2"]
    log = pd.DataFrame({"epoch": [1, 2], "lr": [1e-3, 5e-4], "loss/ce": [2.0, 1.0], "loss/triplet": [1.0, .5],
                        "val/mAP": [.1, .2]})
    curves = viz.training_curves_figure(log)
    assert {t.name for t in curves.data} == {"lr", "loss/ce", "loss/triplet", "val/mAP"}
    trade = pd.DataFrame({"tau": [10, 1, 5], "rank1": [.7, .5, .65], "mAP": [.6, .4, .5], "mINP": [.3, .1, .2],
                          "sec_per_1k": [9.0, 1.0, 4.5]})
    fig = viz.tradeoff_figure(trade, highlight_tau=5)
    lat = next(t for t in fig.data if t.name.startswith("s / 1k"))
    assert lat.yaxis == "y2" and list(lat.x) == [1, 5, 10]
    assert list(next(t for t in fig.data if t.name == "rank1").y) == pytest.approx([50, 65, 70])
    assert fig.layout.shapes[0].x0 == 5
    geo = pd.DataFrame({"bin": ["10-20", "20-30"], "n": [3, 4], "rank1": [.5, .25], "mAP": [.4, .2], "mINP": [.1, .1]})
    g = viz.accuracy_geometry_figure(geo)
    assert g.data[0].type == "bar" and list(g.data[0].y) == [3, 4]


def test_view_similarity_figure():
    rng = np.random.default_rng(0)
    views = ["ground", "aerial", "ground", "aerial"]
    ivc = pd.DataFrame({"view": [v for v in views for _ in (0, 1)], "target_view": ["aerial", "ground"] * 4,
                        "cosine": rng.uniform(-1, 1, 8)})
    mat = np.corrcoef(rng.normal(size=(4, 6)))
    fig = viz.view_similarity_figure({"instance_vs_centre": ivc, "instance_matrix": mat, "views": views})
    hists = [t for t in fig.data if t.type == "histogram"]
    assert len(hists) == 4 and {t.name for t in hists} >= {"aerial -> centre ground"}
    heat = next(t for t in fig.data if t.type == "heatmap")
    assert list(heat.x) == ["0:aerial", "1:aerial", "2:ground", "3:ground"]  # sorted by view
    only = viz.view_similarity_figure({"instance_vs_centre": ivc, "instance_matrix": mat, "views": views},
                                      views=["aerial"])
    assert np.asarray(next(t for t in only.data if t.type == "heatmap").z).shape == (2, 2)
    np.testing.assert_allclose(np.asarray(next(t for t in only.data if t.type == "heatmap").z),
                               mat[np.ix_([1, 3], [1, 3])])


def test_save_figure_html_is_self_contained_and_atomic(tmp_path):
    fig = go.Figure(go.Scatter(x=[1, 2], y=[2, 1]))
    paths = viz.save_figure(fig, tmp_path / "out" / "fig.html", formats=("html",))
    assert paths == [tmp_path / "out" / "fig.html"]
    text = paths[0].read_text()
    assert re.search(r"<script[^>]*src=[\"']https?://", text) is None  # nothing fetched from a CDN
    assert len(text) > 1_000_000  # plotly.js embedded
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["fig.html"]  # no temp files left
    with pytest.raises(ValueError, match="unsupported formats"):
        viz.save_figure(fig, tmp_path / "x", formats=("svg",))


def test_save_figure_without_browser(tmp_path, monkeypatch):
    monkeypatch.setattr(viz, "find_browser", lambda: None)
    fig = go.Figure(go.Scatter(x=[1], y=[1]))
    with pytest.raises(viz.PNGExportError, match="apt-get install -y chromium"):
        viz.save_figure(fig, tmp_path / "a")
    with pytest.warns(RuntimeWarning, match="skipped"):
        paths = viz.save_figure(fig, tmp_path / "b", png="auto")
    assert [p.name for p in paths] == ["b.html"] and not (tmp_path / "b.png").exists()


@pytest.mark.browser
@pytest.mark.skipif(viz.find_browser() is None,
                    reason="no Chrome/Chromium for kaleido (Debian: apt-get install -y chromium)")
def test_save_figure_png(tmp_path, tiny):
    fs, split = tiny
    fig = viz.rank_list_figure(analysis.rank_list(fs, split, 3, k=4), thumb_size=(64, 32))
    paths = viz.save_figure(fig, tmp_path / "rank", formats=("png",), scale=1)
    data = paths[0].read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(paths[0]) as im:
        assert im.size == (fig.layout.width, fig.layout.height)
