"""Widget tests: build each widget on a tiny FeatureSet, drive its controls and plotly events, check what it shows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from test_analysis import tiny_featureset

from agreid_kit import analysis, viz
from agreid_kit.features import FeatureSet
from agreid_kit.widgets import EmbeddingExplorer, RankListBrowser, TimestepTradeoff, ViewConditionMap


@pytest.fixture()
def tiny(tmp_path):
    return tiny_featureset(tmp_path / "imgs")


def _frontend_event(fig, event_type, selected):
    """Feed the FigureWidget the message plotly.js sends for a click / lasso over ``selected`` (trace, point) pairs."""
    fig._handler_js2py_pointsCallback({"new": {
        "event_type": event_type,
        "points": {
            "trace_indexes": [t for t, _ in selected], "point_indexes": [p for _, p in selected],
            "xs": [fig.data[t].x[p] for t, p in selected], "ys": [fig.data[t].y[p] for t, p in selected],
        },
        "selector": None, "device_state": None,
    }})


# ---- EmbeddingExplorer --------------------------------------------------------------------
def test_embedding_explorer_click_lasso_and_controls(tiny):
    fs, _ = tiny
    w = EmbeddingExplorer(fs, method="pca", color_by="view_name", thumb_size=(32, 16), max_iter=250)
    assert len(w.df) == 24 and [t.name for t in w.fig.data] == ["view_name=aerial", "view_name=ground"]

    # click: the 3rd point of the ground trace -> that record's image and metadata
    row = int(w.fig.data[1].customdata[2])
    rec = fs.records[int(w.df.iloc[row]["row"])]
    before = w.detail_image.value
    _frontend_event(w.fig, "plotly_click", [(1, 2)])
    assert rec.path in w.detail_html.value and f"<td>{rec.pid}</td>" in w.detail_html.value
    assert w.detail_image.value == viz.thumbnail_png(rec.path, (32, 16)) and w.detail_image.value != before

    # lasso across both traces -> gallery of exactly those images
    _frontend_event(w.fig, "plotly_selected", [(0, 0), (0, 1), (1, 4)])
    want = [int(w.fig.data[0].customdata[0]), int(w.fig.data[0].customdata[1]), int(w.fig.data[1].customdata[4])]
    assert w.selected_rows == want
    assert len(w.gallery.children) == 3 and "3 selected" in w.selection_html.value
    shown = [c.children[0].value for c in w.gallery.children]
    assert shown == [viz.thumbnail_png(fs.records[int(w.df.iloc[r]["row"])].path, (32, 16)) for r in want]
    # a new lasso replaces the selection
    _frontend_event(w.fig, "plotly_selected", [(1, 0)])
    assert len(w.gallery.children) == 1 and "1 selected" in w.selection_html.value

    # colour change redraws with one trace per camera; generated points add 2 x 24 points
    w.color_dropdown.value = "camid"
    assert len(w.fig.data) == 4 and w.fig.data[0].name == "camid=0"
    w.generated_checkbox.value = True
    assert len(w.df) == 72 and set(w.df.kind) == {"real", "gen:aerial", "gen:ground"}
    w.color_dropdown.value = "kind"
    assert sorted(t.name for t in w.fig.data) == ["kind=gen:aerial", "kind=gen:ground", "kind=real"]
    # handlers are attached to the redrawn traces too
    gen_trace = next(i for i, t in enumerate(w.fig.data) if t.name == "kind=gen:ground")
    _frontend_event(w.fig, "plotly_click", [(gen_trace, 0)])
    assert "gen:ground" in w.detail_html.value
    w.method_dropdown.value = "tsne"
    assert w.df.attrs["method"] == "tsne" and len(w.df) == 72
    bundle = w._repr_mimebundle_()  # what display(w) shows: the root VBox as a widget view
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == w.widget.model_id


def test_embedding_explorer_missing_image_is_placeholder(tiny):
    fs, _ = tiny
    w = EmbeddingExplorer(fs, method="pca", color_by="pid", thumb_size=(32, 16))
    missing_row = int(np.flatnonzero(w.df["row"].to_numpy() == 5)[0])
    trace = next(i for i, t in enumerate(w.fig.data) if missing_row in list(t.customdata))
    point = list(w.fig.data[trace].customdata).index(missing_row)
    w._on_click(w.fig.data[trace], type("P", (), {"point_inds": [point]})())
    assert "001_c1.jpg" in w.detail_html.value
    assert w.detail_image.value == viz.thumbnail_png(fs.records[5].path, (32, 16))


# ---- RankListBrowser ----------------------------------------------------------------------
def test_rank_list_browser_controls(tiny):
    fs, split = tiny
    w = RankListBrowser(fs, split, k=4, thumb_size=(32, 16))
    rl = w.ranklist
    assert rl.query_index == 0 and sum(not it.is_junk for it in rl.items) == 4
    assert f"AP {rl.ap:.4f}" in w.summary_html.value and f"INP {rl.inp:.4f}" in w.summary_html.value
    assert len(w.fig.layout.images) == len(rl.items) + 1
    assert w.fig.layout.shapes[1].line.color == viz.MATCH_COLOURS["junk"]  # its own image is junk, shown

    w.query_dropdown.value = 3
    assert w.ranklist.query_index == 3 and w.ranklist.query.path == split.query[3].path
    assert "query 3" in w.summary_html.value
    w.k_slider.value = 7
    assert sum(not it.is_junk for it in w.ranklist.items) == 7 and len(w.fig.layout.images) == len(w.ranklist.items) + 1

    scores = analysis.per_query_scores(fs, split)
    w.order_dropdown.value = "worst AP first"
    worst = analysis.sort_queries(scores, "worst").query_index.iloc[0]
    assert w.query_dropdown.options[0][1] == worst and w.ranklist.query_index == worst
    assert w.ranklist.ap == pytest.approx(scores.ap.min())
    w.order_dropdown.value = "best AP first"
    assert w.ranklist.ap == pytest.approx(scores.ap.max())

    w.mode_dropdown.value = "real+gen"
    assert w.ranklist.mode == "real+gen"
    expected = analysis.rank_list(fs, split, w.ranklist.query_index, k=7, mode="real+gen")
    assert [it.gallery_index for it in w.ranklist.items] == [it.gallery_index for it in expected.items]


def test_rank_list_browser_protocols(tiny):
    fs, split = tiny
    from agreid_kit.data.records import DatasetSplit

    a2g = DatasetSplit("tiny", "A->G", split.root, [], [q for q in split.query if q.view == 0],
                       [g for g in split.gallery if g.view == 1])
    w = RankListBrowser(fs, {"ALL": split, "A->G": a2g}, k=3, thumb_size=(32, 16))
    w.protocol_dropdown.value = "A->G"
    assert w.ranklist.protocol == "A->G" and len(w.query_dropdown.options) == len(a2g.query)
    assert all(it.record.view == 1 for it in w.ranklist.items) and w.ranklist.n_junk == 0
    with pytest.raises(ValueError, match="available"):
        RankListBrowser(FeatureSet(fs.features, fs.records, "t", "x"), split, mode="real+gen")


# ---- ViewConditionMap ---------------------------------------------------------------------
def _similarity_data(seed=0):
    rng = np.random.default_rng(seed)
    views = ["aerial"] * 5 + ["ground"] * 7
    rows = []
    for v in views:
        for t in ("aerial", "ground"):
            rows.append({"view": v, "target_view": t, "cosine": rng.normal(0.8 if v == t else 0.1, 0.05)})
    tokens = rng.normal(size=(12, 8))
    tokens /= np.linalg.norm(tokens, axis=1, keepdims=True)
    return {"instance_vs_centre": pd.DataFrame(rows), "instance_matrix": tokens @ tokens.T, "views": views}


def test_view_condition_map(tmp_path):
    w = ViewConditionMap(_similarity_data(), nbins=20)
    hists = [t for t in w.fig.data if t.type == "histogram"]
    assert len(hists) == 4 and hists[0].nbinsx == 20
    assert np.asarray(next(t for t in w.fig.data if t.type == "heatmap").z).shape == (12, 12)
    assert "0.8" in w.stats_html.value and "<td>5</td>" in w.stats_html.value and "<td>7</td>" in w.stats_html.value

    w.views_select.value = ("ground",)
    assert {t.name.split(" ")[0] for t in w.fig.data if t.type == "histogram"} == {"ground"}
    assert np.asarray(next(t for t in w.fig.data if t.type == "heatmap").z).shape == (7, 7)
    assert "aerial</td><td>aerial" not in w.stats_html.value
    w.bins_slider.value = 50
    assert all(t.nbinsx == 50 for t in w.fig.data if t.type == "histogram")


def test_view_condition_map_from_stage2_analysis(tiny):
    """The widget takes what agreid_kit.diffusion.analyses.view_condition_similarity returns, as is."""
    analyses = pytest.importorskip("agreid_kit.diffusion.analyses")
    fs, _ = tiny
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(2, 8, generator=g)
    tokens = centres[fs.views] + 0.3 * torch.randn(len(fs), 8, generator=g)
    fs = FeatureSet(fs.features, fs.records, "test", "x", extras={"view_token": tokens},
                    globals={"view_centres": centres})
    result = analyses.view_condition_similarity(fs, max_instances=10)
    w = ViewConditionMap(result)
    assert np.asarray(next(t for t in w.fig.data if t.type == "heatmap").z).shape == (10, 10)
    hist = {t.name: np.asarray(t.x) for t in w.fig.data if t.type == "histogram"}
    assert len(hist) == 4 and len(hist["aerial -> centre aerial"]) == 12
    # tokens sit near their own view's centre: own-centre similarity beats the other centre's
    assert hist["aerial -> centre aerial"].mean() > hist["aerial -> centre ground"].mean()


# ---- TimestepTradeoff ---------------------------------------------------------------------
def test_timestep_tradeoff(tiny):
    fs, split = tiny
    calls = []

    def fake_generate(tau):
        # More denoising steps -> generated features closer to the real ones (as a trained model would).
        calls.append(tau)
        g = torch.Generator().manual_seed(tau)
        noise = 3.0 / tau
        extras = {f"gen:{v}": fs.features + noise * torch.randn(fs.features.shape, generator=g) for v in (0, 1)}
        return FeatureSet(fs.features, fs.records, "test", f"tau{tau}", extras=extras)

    table = pd.DataFrame({"tau": [1, 5, 10], "rank1": [.5, .7, .72], "mAP": [.4, .6, .61], "mINP": [.2, .3, .31],
                          "sec_per_1k": [2.0, 9.5, 19.0]})
    w = TimestepTradeoff(table, fake_generate, split, mode="real+gen", k=5, query_index=2, thumb_size=(32, 16))
    assert calls == [1] and w.curve_fig.layout.shapes[0].x0 == 1
    assert w.ranklist.mode == "real+gen" and w.ranklist.query_index == 2
    assert "tau 1</b>" in w.change_html.value
    lat = next(t for t in w.curve_fig.data if t.name.startswith("s / 1k"))
    assert list(lat.y) == [2.0, 9.5, 19.0]

    w.tau_slider.value = 10
    assert calls == [1, 10] and w.curve_fig.layout.shapes[0].x0 == 10
    expected = analysis.rank_list(fake_generate(10), split, 2, k=5, mode="real+gen")
    assert [it.gallery_index for it in w.ranklist.items] == [it.gallery_index for it in expected.items]
    assert "tau 1 &rarr; 10" in w.change_html.value and "AP" in w.change_html.value
    w.tau_slider.value = 1
    assert calls == [1, 10, 10]  # tau 1 came from the cache (the extra 10 is the direct call above)
    w.query_dropdown.value = 4
    assert w.ranklist.query_index == 4 and "&rarr;" not in w.change_html.value


def test_timestep_tradeoff_descriptor_callable(tiny):
    fs, split = tiny
    table = pd.DataFrame({"tau": [2, 4], "rank1": [.1, .2], "mAP": [.1, .2], "sec_per_1k": [1.0, 2.0]})
    w = TimestepTradeoff(table, lambda tau: fs.features * tau, split, base_fs=fs, k=3, thumb_size=(32, 16))
    assert w.ranklist.mode == "real"
    ref = analysis.rank_list(fs, split, 0, k=3)
    assert [it.gallery_index for it in w.ranklist.items] == [it.gallery_index for it in ref.items]
    with pytest.raises(TypeError, match="base_fs"):
        TimestepTradeoff(table, lambda tau: fs.features, split)
    with pytest.raises(ValueError, match="sec_per_1k"):
        TimestepTradeoff(table.drop(columns="sec_per_1k"), lambda tau: fs, split)
    # stage 2's table: several protocol/mode rows per tau, latency as sec_per_1000
    stage2 = pd.DataFrame({"tau": [2, 2, 4, 4], "protocol": ["ALL"] * 4, "mode": ["real", "real+gen"] * 2,
                           "rank1": [.1, .2, .1, .3], "mAP": [.1, .2, .1, .3], "mINP": [.1, .1, .1, .1],
                           "sec_per_1000": [1.0, 1.0, 2.0, 2.0]})
    w2 = TimestepTradeoff(stage2, lambda tau: fs, split, k=2)
    assert w2.tau_slider.options == (2, 4)
    names = [t.name for t in w2.curve_fig.data]
    assert "ALL real+gen rank1" in names and "ALL real rank1" in names
    assert list(next(t for t in w2.curve_fig.data if t.name.startswith("s / 1k")).y) == [1.0, 2.0]
    # FeatureSet meta's seconds_per_1000 is accepted too
    renamed = TimestepTradeoff(table.rename(columns={"sec_per_1k": "seconds_per_1000"}), lambda tau: fs, split, k=2)
    assert list(next(t for t in renamed.curve_fig.data if t.name.startswith("s / 1k")).y) == [1.0, 2.0]
