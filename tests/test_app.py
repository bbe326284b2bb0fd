"""The ranking app: backend handlers on a real tiny SD-ReID run, the served app over HTTP, and a real browser.

One module-scoped fixture builds the run the way the main job does, only tiny: SynthAG ``tiny`` ->
stage-1 ``sdreid`` (cpu preset with 3 blocks, 1 epoch of 2 iterations) -> stage 2 (1 epoch) with generated views
at tau = 2 -> the timestep trade-off table for tau in {1, 2}.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from agreid_kit.apps.ranking_app import (
    MATCH_COLOUR,
    NONMATCH_COLOUR,
    AppError,
    AppHandlers,
    ModelError,
    RankingBackend,
    _load_split,
    build_app,
    caption,
    default_run_dir,
    launch_app,
    load_upload,
)

PROTOCOL = "A->G"
TAU = 2


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from agreid_kit.diffusion.analyses import timestep_tradeoff
    from agreid_kit.diffusion.config import Stage2Config
    from agreid_kit.diffusion.train import train_stage2
    from agreid_kit.engine.config import make_config
    from agreid_kit.engine.train import train
    from agreid_kit.synth.generate import ensure_synthag
    from agreid_kit.utils.io import atomic_write_text

    root = tmp_path_factory.mktemp("app_run")
    data = ensure_synthag("tiny", root=root / "synthag-tiny")
    stage1, stage2 = root / "sdreid", root / "sdreid-stage2"
    train(make_config("sdreid", str(stage1), preset="cpu", data=f"synthag:{data}", protocol=PROTOCOL, epochs=1,
                      # 3 blocks from scratch: half the CPU time
                      max_iters_per_epoch=2, num_workers=0, model={"depth": 3, "pretrained": None}))
    train_stage2(Stage2Config(stage1=str(stage1), out=str(stage2), epochs=1, tau=TAU), progress=False)
    df, _ = timestep_tradeoff(stage2, taus=(1, TAU), protocols=(PROTOCOL,), progress=False)
    atomic_write_text(stage2 / "analysis" / "tradeoff.csv", df.to_csv(index=False))
    return SimpleNamespace(root=root, data=Path(data), stage1=stage1, stage2=stage2)


@pytest.fixture(scope="module")
def backend(tiny_run):
    return RankingBackend(tiny_run.stage2)


def three_protocols(spec, protocol):
    """The tiny run's A->G images under three protocols (the run extracted only A->G's test images):
    ``A<->G`` collapses camera ids to views (CARGO's cross-view protocol) over every other gallery image,
    ``G->A`` ranks ground images against the aerial ones."""
    from dataclasses import replace

    base = _load_split(spec, "A->G")
    if protocol in (None, "A->G"):
        return base
    if protocol == "A<->G":
        return replace(base, protocol="A<->G", query=[replace(r, camid=r.view) for r in base.query],
                       gallery=[replace(r, camid=r.view) for r in base.gallery[::2]])
    if protocol == "G->A":
        return replace(base, protocol="G->A", query=list(base.gallery[:20]), gallery=list(base.query))
    raise ValueError(f"the tiny run has no features for protocol {protocol}")


@pytest.fixture(scope="module")
def backend3(tiny_run):
    return RankingBackend(tiny_run.stage2, split_loader=three_protocols)


# ---------------------------------------------------------------------------------------------
# Backend handlers
# ---------------------------------------------------------------------------------------------
def test_startup_loads_the_run_once(backend, tiny_run):
    assert backend.method == "sdreid-stage2"
    assert backend.stage1_dir == tiny_run.stage1
    assert backend.protocols == [PROTOCOL]  # the run extracted only its own protocol's test images
    assert backend.modes == ["real", "gen:aerial", "gen:ground", "gen:all", "real+gen"]
    assert (backend.stored_tau, backend.stored_guidance) == (TAU, 2.0)
    assert "sdreid-stage2" in backend.run_summary() and PROTOCOL in backend.run_summary()
    assert backend.tradeoff is not None and sorted(backend.tradeoff["tau"].unique()) == [1, TAU]


@pytest.mark.parametrize("mode", ["real", "gen:ground", "real+gen"])
def test_rank_query_equals_the_kits_rank_list(backend, mode):
    from agreid_kit.analysis import rank_list

    split = backend.split()
    for qi in range(0, len(split.query), 3):
        ours = backend.rank_query(qi, mode, k=8)
        ref = rank_list(backend.fs, split, qi, k=8, mode=mode)
        d_ours = np.array([it.distance for it in ours.items])
        d_ref = np.array([it.distance for it in ref.items])
        np.testing.assert_allclose(d_ours, d_ref, atol=1e-6)
        assert np.all(np.diff(d_ours) >= 0)
        for a, b in zip(ours.items, ref.items):
            # The kit scores in float32 and we in float64: items may only swap where the kit cannot tell them apart.
            if a.gallery_index != b.gallery_index:
                assert abs(a.distance - b.distance) < 1e-6
            else:
                assert (a.is_match, a.rank, a.is_junk) == (b.is_match, b.rank, b.is_junk)
        # Both score the evaluator's distance matrix with the one ranking core: equal, not approximately.
        assert (ours.ap, ours.inp, ours.first_match_rank) == (ref.ap, ref.inp, ref.first_match_rank)
        assert ours.n_positives == ref.n_positives
        assert not ours.generated_live and ours.search_backend == "exact"


def test_query_ap_matches_the_run_metrics(backend):
    # The mean of the per-query APs is the mAP that evaluation wrote to the stage-1 run's metrics.json.
    metrics = json.loads((backend.stage1_dir / "metrics.json").read_text())[PROTOCOL]["real"]
    aps = [backend.rank_query(qi, "real", k=1).ap for qi in range(len(backend.split().query))]
    # Bit-equal: the app's scores are the evaluator's own over the split, as `agreid evaluate` computes them.
    assert np.mean([a for a in aps if a is not None]) == metrics["mAP"]
    assert sum(a is not None for a in aps) == metrics["n_valid"]


@pytest.mark.parametrize("mode", ["real", "gen:ground", "real+gen"])
def test_query_scores_equal_the_evaluators_exactly(backend, mode):
    from agreid_kit.engine.evaluate import evaluate_featureset_split

    split = backend.split()
    res = evaluate_featureset_split(backend.fs, split, mode)  # what `agreid evaluate` writes to metrics.json
    for qi in range(len(split.query)):
        r = backend.rank_query(qi, mode, k=3)
        if res.valid[qi]:
            assert (r.ap, r.inp) == (res.ap[qi], res.inp[qi])  # exact, not approximate
            assert (r.first_match_rank, r.n_positives) == (res.first_match_rank[qi], res.n_positives[qi])
        else:
            assert r.ap is None and r.inp is None and r.n_positives == 0


def test_faiss_backend_gives_the_same_ranking(tiny_run, backend):
    fa = RankingBackend(tiny_run.stage2, search_backend="faiss")
    for qi in (0, 5, 11):
        a, b = backend.rank_query(qi, "real+gen", k=10), fa.rank_query(qi, "real+gen", k=10)
        assert b.search_backend == "faiss"
        assert [i.gallery_index for i in a.items] == [i.gallery_index for i in b.items]
        assert a.ap == b.ap


def test_live_generation_at_another_tau(backend):
    stored = backend.rank_query(4, "gen:all", k=5)
    live = backend.rank_query(4, "gen:all", k=5, tau=1, guidance=2.0)
    assert live.generated_live and live.tau == 1 and "generate" in live.latency_ms
    assert not stored.generated_live and "generate" not in stored.latency_ms
    q_stored, q_live = stored.query_parts["gen:0"], live.query_parts["gen:0"]
    assert q_stored.shape == q_live.shape == (1, backend.fs.dim)
    assert not torch.allclose(q_stored, q_live)  # one step instead of two: another generated feature
    assert "generated live" in live.summary_markdown()
    # A live query is scored by the same core on its own row: same positives, a valid AP.
    assert live.n_positives == stored.n_positives and 0 < live.ap <= 1 and 0 < live.inp <= 1
    assert backend.rank_query(4, "real", k=5, tau=1).tau is None  # real mode ignores tau


def test_rank_upload_of_a_gallery_image_finds_itself(backend):
    split = backend.split()
    g = split.gallery[7]
    res = backend.rank_upload(g.path, "real", k=5)
    assert res.items[0].gallery_index == 7 and res.items[0].distance < 1e-5
    assert res.ap is None and res.items[0].is_match is None and res.items[0].status == "unknown"
    assert "extract" in res.latency_ms and "no identity label" in res.summary_markdown()
    gen = backend.rank_upload(g.path, "real+gen", k=5, tau=TAU, guidance=2.0, view="aerial")
    assert gen.generated_live and set(gen.query_parts) >= {"features", "gen:0", "gen:1"}
    assert len(gen.items) == 5


def test_bad_uploads_are_friendly(backend, tmp_path):
    from PIL import Image

    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(AppError, match="not an image"):
        backend.rank_upload(text)
    good = Path(backend.split().gallery[0].path).read_bytes()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(good[: len(good) // 3])
    with pytest.raises(AppError, match="corrupt or truncated"):
        backend.rank_upload(broken)
    huge = tmp_path / "huge.png"
    Image.new("1", (9000, 5000)).save(huge)  # 45 MP, a few kB on disk
    with pytest.raises(AppError, match="limit is 40 MP"):
        load_upload(huge)
    with pytest.raises(AppError, match="No image uploaded"):
        backend.rank_upload(None)
    with pytest.raises(AppError, match="Upload view must be one of"):
        backend.rank_upload(backend.split().gallery[0].path, view="satellite")


def test_query_filters_and_empty_filter(backend):
    split = backend.split()
    aerial = backend.query_choices(view="aerial")
    assert len(aerial) == sum(r.view == 0 for r in split.query) > 0
    cam = backend.cameras(view="aerial")[0]
    by_cam = backend.query_choices(view="aerial", camera=str(cam))
    assert all(split.query[i].camid == cam for _, i in by_cam) and "cam" in by_cam[0][0]
    with pytest.raises(AppError, match="No query of protocol"):
        backend.query_choices(view="ground")  # A->G queries are all aerial
    with pytest.raises(AppError, match="out of range"):
        backend.rank_query(10_000)
    with pytest.raises(AppError, match="not available"):
        backend.rank_query(0, "gen:wearable")


def test_gallery_filter(backend):
    split = backend.split()
    cams = backend.gallery_cameras()
    full = backend.rank_query(2, "real", k=10)
    only = backend.rank_query(2, "real", k=10, gallery_cameras=[str(cams[0])])
    assert all(it.record.camid == cams[0] for it in only.items) and len(only.items) > 0
    expected = [it.gallery_index for it in backend.rank_query(2, "real", k=len(split.gallery)).items
                if it.record.camid == cams[0]][: len(only.items)]
    assert [it.gallery_index for it in only.items] == expected  # same order, other cameras skipped
    assert only.ap == full.ap  # AP / INP always score the protocol's whole gallery
    assert only.gallery_shown == sum(r.camid == cams[0] for r in split.gallery) < only.gallery_size
    assert "gallery filter: ranking" in only.summary_markdown() and "gallery filter" not in full.summary_markdown()
    with pytest.raises(AppError, match="Widen the gallery filter"):
        backend.rank_query(2, "real", gallery_view="aerial")
    with pytest.raises(AppError, match="Widen the gallery filter"):
        backend.rank_upload(split.gallery[0].path, gallery_cameras=[999])


def test_gallery_items_detail_and_marking(backend):
    res = backend.rank_query(0, "real", k=len(backend.split().gallery))  # the whole gallery: matches included
    items = backend.gallery_items(res)
    assert len(items) == len(res.items)
    statuses = {it.status for it in res.items}
    assert "match" in statuses and "non-match" in statuses
    for (img, text), it in zip(items, res.items):
        colour = MATCH_COLOUR if it.status == "match" else NONMATCH_COLOUR
        if it.status in ("match", "non-match"):
            assert img.getpixel((1, 1)) == colour
        assert f"pid {it.record.pid}" in text and f"cam {it.record.camid}" in text and "d=" in text
        assert ("✓ match" in text) == (it.status == "match")
    assert items[0][1].startswith("#1 ")
    img, table = backend.item_detail(res, 2)
    assert img.size[0] > 0 and f"| pid | {res.items[2].record.pid} |" in table and "| view |" in table
    with pytest.raises(AppError, match="Run a ranking first"):
        backend.item_detail(None, 0)
    with pytest.raises(AppError, match="does not exist"):
        backend.item_detail(res, 10_000)


def test_embedding_and_tradeoff_figures(backend):
    res = backend.rank_query(1, "real+gen", k=5)
    fig = backend.embedding_figure(res, method="pca", color_by="kind")
    names = [t.name for t in fig.data]
    assert names[-1] == "query"
    assert list(fig.data[-1].text) == ["real", "gen:aerial", "gen:ground"]
    assert sum(len(t.x) for t in fig.data[:-1]) == 3 * len(backend.split().gallery)  # real + 2 generated views
    real_up = backend.rank_upload(backend.split().gallery[3].path, "real", k=3)  # no generated views
    fig2 = backend.embedding_figure(real_up, method="pca", color_by="kind")
    assert fig2.data[-1].name == "query" and list(fig2.data[-1].text) == ["real"]
    assert sum(len(t.x) for t in fig2.data[:-1]) == len(backend.split().gallery)
    up = backend.rank_upload(backend.split().gallery[3].path, "real+gen", k=3, tau=1)
    tfig = backend.tradeoff_figure(up)
    assert any(s.x0 == 1 for s in tfig.layout.shapes)  # the current tau marked
    md = backend.live_latency_markdown(up)
    assert "generate" in md and "ms for one image" in md and "not drawn" in md


def test_a_live_query_is_not_plotted_on_the_batched_curve(backend):
    # Batch-1 generation (ms per image) is not the curve's batched s / 1,000 images: putting it on that axis
    # flattened the curve (a ~5,000 "s / 1,000" point over a ~10 one). It goes into an annotation instead.
    up = backend.rank_upload(backend.split().gallery[3].path, "real+gen", k=3, tau=1)
    tfig = backend.tradeoff_figure(up)
    table = backend.tradeoff
    assert [t.name for t in tfig.data] == [t.name for t in backend.tradeoff_figure(None).data]  # no extra trace
    latency = [t for t in tfig.data if t.name == "s / 1,000 images"][0]
    assert max(latency.y) == pytest.approx(table["sec_per_1000"].max())
    notes = [a.text for a in tfig.layout.annotations if "this query" in a.text]
    assert len(notes) == 1 and f"{up.latency_ms['generate']:.0f} ms" in notes[0] and "batch 1" in notes[0]


def test_run_problems_are_friendly(tiny_run, tmp_path, monkeypatch):
    with pytest.raises(AppError, match="make report"):
        RankingBackend(tmp_path / "nowhere")
    with pytest.raises(AppError, match="another dataset"):
        RankingBackend(tiny_run.stage2, data="cargo:/data/CARGO")
    # Same dataset name, other images (e.g. a re-rendered SynthAG): the run's FeatureSet does not cover them.
    from dataclasses import replace

    def other_images(spec, protocol):
        split = _load_split(spec, protocol)
        split.query = [replace(r, path=r.path.replace(".jpg", "_v2.jpg")) for r in split.query]
        return split

    with pytest.raises(AppError, match="does not match the data"):
        RankingBackend(tiny_run.stage2, split_loader=other_images)
    page = build_app(tiny_run.stage2, data="cargo:/data/CARGO")
    assert page.backend is None
    assert any("another dataset" in str(getattr(blk, "value", "")) for blk in page.blocks.values())
    monkeypatch.setenv("AGREID_RUN", str(tmp_path / "elsewhere"))
    assert default_run_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("AGREID_RUN")
    monkeypatch.chdir(tmp_path)
    assert default_run_dir() == Path("runs/synthag-small/seed0/sdreid-stage2")  # where `make report` writes it
    (tmp_path / "runs/synthag-small/sdreid-stage2").mkdir(parents=True)  # an older main job's layout
    assert default_run_dir() == Path("runs/synthag-small/sdreid-stage2")


# ---------------------------------------------------------------------------------------------
# Page handlers (what every control does)
# ---------------------------------------------------------------------------------------------
def _rank(h, qi=0, protocol=PROTOCOL, mode="real", k=5, gview="all", gcams=()):
    return h.rank_query(qi, protocol, mode, k, TAU, 2.0, gview, list(gcams))


def _is_skip(x) -> bool:
    return isinstance(x, dict) and x.get("__type__") == "update" and set(x) == {"__type__"}


def test_protocol_change_reranks_and_updates_the_header(backend3):
    h = AppHandlers(backend3)
    assert backend3.protocols == ["A<->G", "A->G", "G->A"]
    shown = _rank(h, qi=3)[0]
    assert shown.protocol == PROTOCOL and "active protocol **A->G**" in backend3.run_summary(PROTOCOL)
    out = h.protocol_changed(shown, "A<->G", "all", "all", None, "ground", "real", 5, TAU, 2.0, "all")
    header, _, _, query_dd, gcams_dd, *rank = out
    assert "active protocol **A<->G**" in header and "A->G" in header  # the active one, and the run's own
    result = rank[0]
    assert result.protocol == "A<->G" and result.query_index == 3 and query_dd["value"] == 3  # same image re-ranked
    assert rank[1] == "" and rank[5]["protocol"] == "A<->G"
    direct = backend3.rank_query(3, "real", k=5, protocol="A<->G")
    assert [it.gallery_index for it in result.items] == [it.gallery_index for it in direct.items]
    assert result.ap == direct.ap != shown.ap  # another gallery: another AP, the evaluator's under A<->G
    assert gcams_dd["value"] == [] and all("camid = view" in label for label, _ in gcams_dd["choices"])
    # The shown query is no query of G->A (its queries are ground images): the result is kept, marked stale.
    stale = h.protocol_changed(shown, "G->A", "all", "all", None, "ground", "real", 5, TAU, 2.0, "all")
    assert "active protocol **G->A**" in stale[0]
    state, status, _, summary, *rest = stale[5:]
    assert state is shown and status.startswith("🕓 Stale") and "A->G" in status and "press **Rank**" in status
    assert "Stale" in summary and all(_is_skip(x) for x in rest)
    # An upload is re-ranked as it is under the new protocol.
    up = h.rank_upload(backend3.split().gallery[4].path, "ground", PROTOCOL, "real", 4, TAU, 2.0, "all", [])[0]
    again = h.protocol_changed(up, "A<->G", "all", "all", backend3.split().gallery[4].path, "ground", "real", 4,
                               TAU, 2.0, "all")[5]
    assert again.source == "upload" and again.protocol == "A<->G"
    # Nothing shown yet: only the filters and the header change.
    fresh = h.protocol_changed(None, "G->A", "all", "all", None, "ground", "real", 5, TAU, 2.0, "all")
    assert fresh[5] is None and fresh[6] == "" and fresh[3]["value"] == 0


def test_every_other_control_reranks_or_marks_stale(backend):
    h = AppHandlers(backend)
    shown = _rank(h, qi=1)[0]
    args = (None, "ground", PROTOCOL, "real", 5, TAU, 2.0, "all", [])
    picked = h.pick_query(shown, 6, *args)[0]  # picking another query re-ranks it
    assert picked.query_index == 6 and picked is not shown
    assert all(_is_skip(x) for x in h.pick_query(None, 6, *args)[1:])  # nothing shown: nothing to redo
    # A query filter that leaves another query picked says the shown ranking is stale.
    cams = backend.cameras(view="aerial")
    other = next(c for c in cams if backend.split().query[1].camid != c)
    query_dd, _, gcams, status = h.filter_queries(PROTOCOL, "aerial", str(other), shown)
    assert query_dd["value"] != 1 and status.startswith("🕓 Stale") and "q1" in status and _is_skip(gcams)
    query_dd, _, _, status = h.filter_queries(PROTOCOL, "aerial", str(backend.split().query[1].camid), shown)
    assert query_dd["value"] == 1 and status == ""  # the shown query is still picked
    # The upload view re-ranks an upload, never a query; a new file marks an upload's ranking stale.
    assert all(_is_skip(x) for x in h.rerank_upload_view(shown, 1, None, "aerial", PROTOCOL, "real", 5, TAU, 2.0,
                                                          "all", [])[1:])
    path = backend.split().gallery[5].path
    up = h.rank_upload(path, "ground", PROTOCOL, "real", 4, TAU, 2.0, "all", [])[0]
    assert h.rerank_upload_view(up, 1, path, "aerial", PROTOCOL, "real", 4, TAU, 2.0, "all", [])[0].query_record is None
    stale = h.upload_changed(up, backend.split().gallery[6].path)
    assert stale[0] is up and stale[1].startswith("🕓 Stale") and "Rank upload" in stale[1]
    assert all(_is_skip(x) for x in h.upload_changed(up, path)[1:])


def test_view_protocols_say_view_not_cam(backend3):
    # Under A<->G camid is the view: "cam 0 / cam 1" would only repeat it. Captions, query labels, camera
    # filters and the detail table say "view" and name the sensor (raw_camid) the way the kit's rank lists do.
    from agreid_kit.viz import camera_words

    res = backend3.rank_query(0, "real", k=6, protocol="A<->G")
    assert res.view_ids and res.metrics()["camid_is_view"]
    for (_, text), it in zip(backend3.gallery_items(res), res.items):
        line = text.splitlines()[2]
        assert line == f"view {it.record.view_name} · {camera_words(it.record)}"
        assert f"cam {it.record.camid} " not in line + " "
    label = backend3.query_choices("A<->G")[0][0]
    assert "view aerial" in label and "cam 0" not in label
    assert backend3.camera_choices(backend3.gallery_cameras("A<->G"), "A<->G") == [("ground (camid = view)", "1")]
    _, table = backend3.item_detail(res, 0)
    assert "camid = view" in table and "view" in table
    assert "camera id is the view" in res.summary_markdown()
    # Camera protocols keep the camera ids the filters use.
    plain = backend3.rank_query(0, "real", k=3, protocol=PROTOCOL)
    assert not plain.view_ids and all(f"cam {it.record.camid} · " in caption(it) for it in plain.items)


def test_detail_table_is_short(backend):
    res = backend.rank_query(0, "real", k=5)
    _, table = backend.item_detail(res, 1)
    rows = dict(line.strip("|").split("|", 1) for line in table.splitlines()[2:])
    rows = {k.strip(): v.strip() for k, v in rows.items()}
    assert 6 <= len(rows) <= 9  # the record's dozens of camera / render fields are not repeated
    assert {"rank", "status", "distance", "pid", "view", "camera"} <= set(rows)
    assert rows["pid"] == str(res.items[1].record.pid) and rows["distance"] == f"{res.items[1].distance:.4f}"
    assert not any(k.startswith("extra") for k in rows)


def test_tau_applies_to_the_query_only_and_says_so(backend, tiny_run):
    live = backend.rank_query(4, "gen:all", k=5, tau=1, guidance=2.0)
    text = live.summary_markdown()
    assert "generated live" in text and f"gallery keeps its stored views at tau = {TAU}" in text
    assert live.metrics()["gallery_tau"] == TAU and live.metrics()["tau"] == 1
    page = build_app(backend=backend)
    notes = [blk for blk in page.blocks.values() if getattr(blk, "elem_id", None) == "tau-note"]
    assert len(notes) == 1 and notes[0].visible
    assert "query only" in notes[0].value and f"tau = {TAU}" in notes[0].value and "gallery keeps" in notes[0].value


def test_a_corrupted_checkpoint_is_its_own_message(tiny_run, tmp_path):
    bad = tmp_path / "sdreid"
    shutil.copytree(tiny_run.stage1, bad, ignore=shutil.ignore_patterns("features", "epoch_*.pt"))
    (bad / "checkpoints" / "last.pt").write_bytes(b"\x00 not a checkpoint " * 64)
    b = RankingBackend(tiny_run.stage2)
    b.stage1_dir = bad
    with pytest.raises(ModelError, match="could not be loaded"):
        b.rank_upload(b.split().gallery[0].path)
    out = AppHandlers(b).rank_upload(b.split().gallery[0].path, "ground", PROTOCOL, "real", 3, TAU, 2.0, "all", [])
    assert out[1].startswith("⚠️") and "could not be loaded" in out[1] and str(bad) in out[1]
    assert out[4] == [] and "error" in out[5]

    def exploding(img):
        raise RuntimeError("CUDA out of memory (simulated)")

    b2 = RankingBackend(tiny_run.stage2, embedder=exploding)
    out = AppHandlers(b2).rank_upload(b2.split().gallery[0].path, "ground", PROTOCOL, "real", 3, TAU, 2.0, "all", [])
    assert "failed on this image" in out[1] and "RuntimeError: CUDA out of memory (simulated)" in out[1]
    # Over HTTP the page gets that message, not Gradio's generic "upstream app raised an exception".
    from gradio_client import Client, handle_file

    demo = build_app(backend=b)
    _, url, _ = launch_app(demo, port=None, prevent_thread_lock=True, quiet=True)
    try:
        status, *_ = Client(url, verbose=False).predict(handle_file(b.split().gallery[0].path), "ground", PROTOCOL,
                                                        "real", 3, TAU, 2.0, "all", [], api_name="/rank_upload")
    finally:
        demo.close()
    assert "could not be loaded" in status and "upstream" not in status


def test_a_huge_upload_is_shrunk_at_once(backend, tmp_path):
    import gc

    from PIL import Image

    big_size = (7000, 5500)  # 38.5 MP: under the 40 MP limit, ~115 MB once decoded as RGB
    big = tmp_path / "big.png"
    Image.new("L", big_size, 90).save(big)
    res = backend.rank_upload(big, "real", k=3)
    h, w = backend.upload_size()
    assert (h, w) == tuple(backend.embedder().input_size)
    assert res.query_image.size == (w, h)  # the session keeps the model-sized copy only
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, Image.Image) and o.size == big_size]
    state_bytes = sum(len(v.tobytes()) if isinstance(v, Image.Image) else
                      v.numel() * v.element_size() if isinstance(v, torch.Tensor) else 0
                      for v in [res.query_image, *res.query_parts.values()])
    assert state_bytes < 4 * h * w * 3
    # Shrinking first changes nothing for the model: the test transform resizes with the same filter.
    same = backend.rank_upload(backend.split().gallery[7].path, "real", k=3)
    assert same.items[0].gallery_index == 7 and same.items[0].distance < 1e-5


def test_tradeoff_table_is_found_from_any_working_folder(tiny_run, tmp_path, monkeypatch):
    # The main job's layout: PROJECT/runs/.../seed<s>/sdreid-stage2 and PROJECT/reports/<date>/tradeoff.csv
    # (tradeoff.json lists the runs relative to PROJECT), reports/latest -> the newest report.
    import pandas as pd

    project = tmp_path / "project"
    runs = [project / "runs" / "synthag-tiny" / f"seed{s}" / "sdreid-stage2" for s in (0, 1)]
    shutil.copytree(tiny_run.stage2, runs[0], ignore=shutil.ignore_patterns("analysis", "checkpoints"))
    table = pd.read_csv(tiny_run.stage2 / "analysis" / "tradeoff.csv")
    for day, scale in (("2026-01-01", 1.0), ("2026-01-02", 2.0)):
        out = project / "reports" / day
        out.mkdir(parents=True)
        both = pd.concat([table.assign(seed=0, sec_per_1000=table["sec_per_1000"] * scale), table.assign(seed=1)])
        both.to_csv(out / "tradeoff.csv", index=False)
        (out / "tradeoff.json").write_text(json.dumps({"settings": {
            "runs": [str(r.relative_to(project)) for r in runs], "seeds": [0, 1]}}))
    (project / "reports" / "latest").symlink_to("2026-01-02")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no reports/ here: the table is found from the run's folder
    b = RankingBackend(runs[0])
    assert b.tradeoff_error is None and b.tradeoff_path == project / "reports" / "latest" / "tradeoff.csv"
    assert set(b.tradeoff["seed"]) == {0}  # this run's seed only
    assert b.tradeoff["sec_per_1000"].tolist() == pytest.approx((table["sec_per_1000"] * 2.0).tolist())
    assert len(b.tradeoff_figure(None).data) > 0
    # Relative run paths work too (the CLI passes what the user typed).
    monkeypatch.chdir(project)
    assert RankingBackend(Path("runs/synthag-tiny/seed0/sdreid-stage2")).tradeoff_path is not None
    # An explicit report wins; one without a table says so on the tab, the ranking page still works.
    explicit = RankingBackend(runs[0], report=project / "reports" / "2026-01-01")
    assert explicit.tradeoff_path == project / "reports" / "2026-01-01" / "tradeoff.csv"
    missing = RankingBackend(runs[0], report=tmp_path / "nowhere")
    assert missing.tradeoff is None and "--report" in missing.tradeoff_error
    with pytest.raises(AppError, match="--report"):
        missing.tradeoff_figure(None)
    assert missing.rank_query(0, "real", k=2).items


# ---------------------------------------------------------------------------------------------
# Served over HTTP
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(backend):
    demo = build_app(backend=backend)
    _, url, _ = launch_app(demo, port=None, prevent_thread_lock=True, quiet=True)
    yield SimpleNamespace(demo=demo, url=url)
    demo.close()


def test_launch_is_local_only(served):
    assert served.url.startswith("http://127.0.0.1:")
    assert served.demo.share is False and served.demo.analytics_enabled is False
    assert served.demo.allowed_paths == []  # every image shown is a copy in Gradio's own output folder
    b = served.demo.backend
    blocked = {str(Path(p).resolve()) for p in served.demo.blocked_paths}
    assert blocked == {str(b.run_dir.resolve()), str(b.stage1_dir.resolve()), str(Path(b.split().root).resolve())}


def test_file_route_serves_only_the_images_shown(served, backend, tiny_run):
    import httpx
    from gradio_client import Client

    refused = [tiny_run.stage2 / "checkpoints" / "last.pt", tiny_run.stage2 / "config.json",
               tiny_run.stage1 / "checkpoints" / "last.pt", tiny_run.stage1 / "config.json",
               tiny_run.stage2 / "features" / "test.safetensors", Path(backend.split().gallery[0].path)]
    for path in refused:
        assert path.is_file()
        r = httpx.get(f"{served.url}gradio_api/file={path.resolve()}", timeout=30)
        assert r.status_code == 403, (path, r.status_code)
        assert r.content[:4] != b"PK\x03\x04" and len(r.content) < 1000  # not the checkpoint's bytes
    # What a ranking shows is served: the thumbnails come back from their own (cache) URLs.
    c = Client(served.url, verbose=False, download_files=False)
    _, _, _, gallery, _, _, _ = c.predict(2, PROTOCOL, "real", 3, TAU, 2.0, "all", [], api_name="/rank_query")
    assert len(gallery) == 3
    for g in gallery:
        url = g["image"]["url"]
        assert str(backend.run_dir.resolve()) not in url and httpx.get(url, timeout=30).status_code == 200


def test_http_query_upload_mode_switch(served, backend):
    from gradio_client import Client, handle_file

    c = Client(served.url, verbose=False)
    status, _, summary, gallery, metrics, _, _ = c.predict(3, PROTOCOL, "real", 6, TAU, 2.0, "all", [],
                                                           api_name="/rank_query")
    direct = backend.rank_query(3, "real", k=6)
    assert status == "" and len(gallery) == 6 and metrics["mode"] == "real"
    assert metrics["AP"] == pytest.approx(direct.ap) and metrics["INP"] == pytest.approx(direct.inp)
    assert [g["caption"] for g in gallery] == [caption(it) for it in direct.items]
    assert all(Path(g["image"]).is_file() for g in gallery)
    assert "AP" in summary
    # Mode switch re-ranks the same query (session state) with the new descriptor.
    _, _, _, gallery2, metrics2, _, _ = c.predict(3, None, "ground", PROTOCOL, "gen:all", 6, TAU, 2.0, "all", [],
                                           api_name="/rerank")
    assert metrics2["mode"] == "gen:all" and metrics2["query"] == metrics["query"]
    assert metrics2["gallery"] == backend.rank_query(3, "gen:all", k=6).metrics()["gallery"]
    img, table = c.predict(1, api_name="/detail")
    assert Path(img).is_file() and f"| pid | {metrics2['gallery'][1]['pid']} |" in table
    # Upload: a gallery image finds itself first.
    g = backend.split().gallery[12]
    status, _, _, gallery3, metrics3, _, _ = c.predict(handle_file(g.path), "ground", PROTOCOL, "real", 4, TAU, 2.0,
                                                       "all", [], api_name="/rank_upload")
    assert status == "" and metrics3["source"] == "upload" and metrics3["gallery"][0]["gallery_index"] == 12
    assert len(gallery3) == 4 and metrics3["AP"] is None


def test_http_bad_input_keeps_serving(served, backend, tmp_path):
    from gradio_client import Client, handle_file

    c = Client(served.url, verbose=False)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\x00\x01 definitely not a jpeg")
    status, _, _, gallery, metrics, _, _ = c.predict(handle_file(str(junk)), "ground", PROTOCOL, "real", 4, TAU, 2.0,
                                                     "all", [], api_name="/rank_upload")
    assert status.startswith("⚠️") and "junk.jpg" in status and gallery == [] and "error" in metrics
    # A->G galleries are ground-only: filtering them to aerial leaves nothing to rank.
    status, _, _, gallery, metrics, _, _ = c.predict(0, PROTOCOL, "real", 3, TAU, 2.0, "aerial", [],
                                                     api_name="/rank_query")
    assert status.startswith("⚠️") and "Widen the gallery filter" in status and gallery == []
    cam = backend.cameras(view="aerial")[0]
    query_dd, cam_dd, _, status = c.predict(PROTOCOL, "aerial", str(cam), api_name="/filter_queries")
    assert status == "" and query_dd["value"] == backend.query_choices(view="aerial", camera=cam)[0][1]
    _, _, _, gallery, metrics, _, _ = c.predict(0, PROTOCOL, "real", 3, TAU, 2.0, "all", [], api_name="/rank_query")
    assert len(gallery) == 3 and metrics["AP"] is not None  # still serving
    fig, msg = c.predict("pca", "kind", api_name="/embedding")
    assert msg == "" and fig["type"] == "plotly" and '"query"' in fig["plot"]


def test_missing_run_page_says_how_to_make_it(tmp_path):
    import httpx

    demo = build_app(tmp_path / "no-run")
    assert demo.backend is None
    _, url, _ = launch_app(demo, port=None, prevent_thread_lock=True, quiet=True)
    try:
        config = httpx.get(url + "config", timeout=30).text
        assert "make report" in config and "No run found" in config
    finally:
        demo.close()


# ---------------------------------------------------------------------------------------------
# Real browser
# ---------------------------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class _CDP:
    """A minimal Chrome DevTools Protocol session (websocket-client, synchronous)."""

    def __init__(self, ws_url: str):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"CDP {method}: {msg['error']}")
                return msg.get("result", {})

    def js(self, expression: str):
        out = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return out.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 60.0):
        end = time.time() + timeout
        while time.time() < end:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.25)
        raise TimeoutError(f"page never satisfied: {expression}")


@contextlib.contextmanager
def _chromium(profile: Path, window: str = "1500,1900"):
    """Headless Chromium on its own profile; yields a CDP session on its page."""
    import httpx

    proc = subprocess.Popen(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--remote-debugging-port=0", "--remote-allow-origins=*", f"--user-data-dir={profile}",
         f"--window-size={window}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        end = time.time() + 30
        while not port_file.is_file() or not port_file.read_text().strip():
            assert time.time() < end, "chromium did not open its DevTools port"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        pages = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        target = next(t for t in pages if t["type"] == "page")
        cdp = _CDP(target["webSocketDebuggerUrl"])
        cdp.call("Page.enable")
        try:
            yield cdp
        finally:
            cdp.ws.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _save_screenshot(cdp: _CDP, name: str, tmp_path: Path) -> bytes:
    png = base64.b64decode(cdp.call("Page.captureScreenshot", format="png")["data"])
    out_dir = Path(os.environ.get("AGREID_APP_SCREENSHOTS", tmp_path))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / name).write_bytes(png)
    return png


def _click(cdp: _CDP, element_js: str) -> None:
    """A real mouse click (press and release) at the middle of the element ``element_js`` evaluates to."""
    x, y = cdp.wait_for(f"(() => {{ const e = {element_js}; if (!e) return null; const r = e.getBoundingClientRect();"
                        " return [r.left + r.width / 2, r.top + r.height / 2]; })()", 30)
    for kind in ("mousePressed", "mouseReleased"):
        cdp.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)


def _bottom(cdp: _CDP, selector: str) -> float:
    return cdp.js(f"document.querySelector('{selector}').getBoundingClientRect().bottom")


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None,
                    reason="headless Chromium is not installed (Debian package `chromium`; CI installs it)")
def test_browser_runs_a_ranking_and_shows_the_gallery(served, tmp_path):
    with _chromium(tmp_path / "chromium-profile") as cdp:
        cdp.call("Page.navigate", url=served.url)
        cdp.wait_for("!!document.querySelector('#rank-button')")
        cdp.js("document.querySelector('#rank-button').click()")
        n = cdp.wait_for("(() => { const imgs = document.querySelectorAll('#results img');"
                         " return imgs.length >= 10 && [...imgs].every(i => i.complete && i.naturalWidth > 0)"
                         " ? imgs.length : 0 })()")
        assert n == 10
        text = cdp.wait_for("(() => { const s = document.querySelector('#summary'); "
                            "return s && s.innerText.includes('AP') ? s.innerText : '' })()")
        assert "INP" in text and "q0" in text
        gallery_text = cdp.js("document.querySelector('#results').innerText")
        assert "#1" in gallery_text and "pid" in gallery_text and "d=" in gallery_text
        assert ("match" in gallery_text) and ("cam" in gallery_text)
        # Clicking a result shows it large with its metadata.
        cdp.js("document.querySelectorAll('#results .thumbnail-item')[2].click()")
        detail = cdp.wait_for("(() => { const d = document.querySelector('#detail'); "
                              "return d && d.innerText.includes('distance') ? d.innerText : '' })()")
        third = served.demo.backend.rank_query(0, "real+gen", k=10).items[2]  # the page's defaults
        rows = dict(line.split("\t", 1) for line in detail.splitlines() if "\t" in line)
        assert rows["rank"].strip() == "3" and rows["pid"].strip() == str(third.record.pid)
        assert rows["status"].strip() == third.status and rows["view"].strip() == third.record.view_name
        cdp.wait_for("(() => { const i = document.querySelector('#detail-image img'); return !!(i && i.complete && "
                     "i.naturalWidth > 0) })()")
        time.sleep(0.5)
        png = _save_screenshot(cdp, "app_ranking.png", tmp_path)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


@pytest.fixture(scope="module")
def served3(backend3):
    demo = build_app(backend=backend3)
    _, url, _ = launch_app(demo, port=None, prevent_thread_lock=True, quiet=True)
    yield SimpleNamespace(demo=demo, url=url)
    demo.close()


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None,
                    reason="headless Chromium is not installed (Debian package `chromium`; CI installs it)")
def test_browser_controls_fit_and_the_protocol_reranks(served3, tmp_path):
    with _chromium(tmp_path / "chromium-profile", window="1400,900") as cdp:
        # The viewport itself 1400 x 900 (a headless window of that size has a shorter viewport).
        cdp.call("Emulation.setDeviceMetricsOverride", width=1400, height=900, deviceScaleFactor=1, mobile=False)
        cdp.call("Page.navigate", url=served3.url)
        cdp.wait_for("!!document.querySelector('#rank-button') && !!document.querySelector('#tau-note')")
        time.sleep(0.5)
        assert cdp.js("[window.innerWidth, window.innerHeight]") == [1400, 900]
        # Above the fold: the Rank button and every control (the tau note included).
        assert _bottom(cdp, "#rank-button") <= 900 and _bottom(cdp, "#controls") <= 900
        note = cdp.js("document.querySelector('#tau-note').innerText")
        assert "query only" in note and f"tau = {TAU}" in note and _bottom(cdp, "#tau-note") <= 900
        _save_screenshot(cdp, "app_controls_1400x900.png", tmp_path)
        cdp.js("document.querySelector('#rank-button').click()")
        cdp.wait_for("document.querySelectorAll('#results img').length >= 10")
        summary = cdp.wait_for("(() => { const s = document.querySelector('#summary').innerText;"
                               " return s.includes('protocol A->G') ? s : '' })()")
        assert "AP" in summary and "active protocol A->G" in cdp.js("document.querySelector('#run-summary').innerText")
        # Switch the protocol in the dropdown: the header and the ranking follow, nothing stale stays.
        _click(cdp, "document.querySelector('#protocol input')")
        _click(cdp, "[...document.querySelectorAll('ul[role=listbox] li')].find(l => l.innerText.trim() === 'A<->G')")
        header = cdp.wait_for("(() => { const s = document.querySelector('#run-summary').innerText;"
                              " return s.includes('active protocol A<->G') ? s : '' })()")
        assert "run made on A->G" in header
        summary = cdp.wait_for("(() => { const s = document.querySelector('#summary').innerText;"
                               " return s.includes('protocol A<->G') ? s : '' })()")
        assert "q0" in summary and "Stale" not in summary
        cdp.wait_for("(() => { const c = [...document.querySelectorAll('#results .caption-label')];"
                     " return c.length >= 10 && c.every(e => e.innerText.includes('view ')) })()")
        captions = cdp.js("[...document.querySelectorAll('#results .caption-label')].map(e => e.innerText)")
        expected = served3.demo.backend.rank_query(0, "real+gen", k=10, protocol="A<->G")
        assert captions == [caption(it, view_ids=True) for it in expected.items]
        assert all(line.splitlines()[2].startswith("view ground · cam ") for line in captions)
        # The clicked result: a short key / value table.
        cdp.js("document.querySelectorAll('#results .thumbnail-item')[1].click()")
        detail = cdp.wait_for("(() => { const d = document.querySelector('#detail'); "
                              "return d && d.innerText.includes('distance') ? d.innerText : '' })()")
        rows = dict(line.split("\t", 1) for line in detail.splitlines() if "\t" in line)
        assert len(rows) <= 9 and "camid = view" in rows["camera"]
        assert rows["pid"].strip() == str(expected.items[1].record.pid)
        _save_screenshot(cdp, "app_protocol_a-g.png", tmp_path)
        # The upload tab fits too.
        _click(cdp, "[...document.querySelectorAll('button[role=tab]')].find(b => b.innerText.trim() === 'Upload')")
        cdp.wait_for("(() => { const b = document.querySelector('#upload-button'); return !!(b && b.offsetParent) })()")
        assert _bottom(cdp, "#upload-button") <= 900 and _bottom(cdp, "#controls") <= 900
