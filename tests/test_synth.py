"""SynthAG: determinism, CARGO layout and view labels, geometry ranges, resume/skip, bad input, sheets, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agreid_kit.cli import main as agreid_main
from agreid_kit.data import DatasetError, load_dataset
from agreid_kit.synth import (
    PRESETS,
    contact_sheet_cameras,
    contact_sheet_figure,
    contact_sheet_identity,
    ensure_synthag,
    make_config,
    read_manifest,
    render_dataset,
)
from agreid_kit.synth import generate as gen
from agreid_kit.synth.people import ATTRIBUTE_NAMES

# A small config used by the determinism and resume tests (64 images: enough for the process pool).
SMALL_RUN = dict(n_ids=8, images_per_id=8, n_aerial=2, n_ground=3, n_scenes=2)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> tuple[Path, str]:
    """The tiny preset rendered through the CLI once (with the difficulty card)."""
    root = tmp_path_factory.mktemp("synth") / "tiny"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = agreid_main(["synth", "--preset", "tiny", "--out", str(root), "--seed", "1", "--num-workers",
                          "2", "--quiet"])
    assert rc == 0
    return root, buf.getvalue()


def _meta(root: Path) -> list[dict[str, str]]:
    with open(root / "meta.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_presets_match_the_issue():
    tiny, small, full = (make_config(p) for p in ("tiny", "small", "full"))
    assert (tiny.n_ids, tiny.images_per_id) == (40, 10)
    assert small.n_ids == 400 and small.n_images == 10_000 and small.test_fraction == 0.5
    assert full.n_ids == 5000 and full.n_aerial == 5 and full.n_ground == 8
    from agreid_kit.cli.synth import PRESET_NAMES

    assert set(PRESET_NAMES) == set(PRESETS)


def test_tiny_layout_reads_with_cargo_reader_and_views_are_right(tiny_root):
    root, _ = tiny_root
    meta = {r["path"]: r for r in _meta(root)}
    assert len(meta) == 400
    cargo = load_dataset("cargo", root, "ALL")
    synth = load_dataset("synthag", root, "ALL")
    for split in (cargo, synth):
        for r in split.query + split.gallery:
            row = meta[Path(r.path).relative_to(root.resolve()).as_posix()]
            assert r.view == int(row["view"])
            assert r.pid == int(row["pid"]) and r.raw_camid == int(row["camera"]) and r.time == row["time"]
    # CARGO's rule: aerial cameras first (Cam1..Cam5), ground from Cam6.
    cams = read_manifest(root)["cameras"]
    assert [c["view"] for c in cams] == sorted(c["view"] for c in cams)
    assert all((c["camid"] <= 5) == (c["view"] == 0) for c in cams)
    # synthag records carry the identity attributes and the geometry.
    r = synth.query[0]
    assert set(ATTRIBUTE_NAMES) <= set(r.attributes) and len(r.attributes) >= 12
    assert {"pitch", "distance", "yaw", "occlusion", "heading"} <= set(r.extra)
    assert r.altitude == float(meta[Path(r.path).relative_to(root.resolve()).as_posix()]["altitude"])
    assert synth.num_train_pids == 20 and len({x.pid for x in synth.query}) == 20


def test_every_protocol_has_a_positive_for_every_query(tiny_root):
    root, _ = tiny_root
    for protocol in ("ALL", "A<->A", "G<->G", "A<->G", "A->G", "G->A"):
        split = load_dataset("synthag", root, protocol)
        gallery = {(g.pid, g.camid) for g in split.gallery}
        for q in split.query:
            assert any(p == q.pid and c != q.camid for p, c in gallery), (protocol, q.path)
    # A<->G collapses camids to views.
    split = load_dataset("synthag", root, "A<->G")
    assert {r.camid for r in split.gallery} == {0, 1}


def test_geometry_ranges_and_images(tiny_root):
    root, _ = tiny_root
    rows = _meta(root)
    aerial = [r for r in rows if r["view"] == "0"]
    ground = [r for r in rows if r["view"] == "1"]
    assert len(aerial) == 40 * 4 and len(ground) == 40 * 6
    for r in aerial:
        assert 15 <= float(r["altitude"]) <= 75 and 30 <= float(r["pitch"]) <= 90
        assert float(r["elevation"]) > 15  # a drone looks down at the person
    for r in ground:
        assert 1.5 <= float(r["altitude"]) <= 5 and 0 <= float(r["pitch"]) <= 25
        assert float(r["elevation"]) < 30
    for r in rows:
        assert 0 <= float(r["occlusion"]) <= 1 and float(r["distance"]) > 0 and 0 <= float(r["yaw"]) < 360
        assert r["time"] in ("day", "night") and f"_{r['time']}_" in r["path"]
    # Aerial crops come from far fewer native pixels than ground crops.
    def native(rows):
        return np.median([float(r["native_height"]) for r in rows])

    assert native(aerial) < 0.5 * native(ground)
    assert {r["heading"] for r in ground} >= {"front", "back", "side"}
    with Image.open(root / rows[0]["path"]) as im:
        assert im.size == (128, 256) and im.format == "JPEG"
    # Identities share attributes (confusable) but are not all alike.
    per_id = {r["pid"]: tuple(r[a] for a in ATTRIBUTE_NAMES) for r in rows}
    colours = [v[ATTRIBUTE_NAMES.index("upper_colour")] for v in per_id.values()]
    assert 1 < len(set(colours)) < len(colours)


def test_manifest_hash_and_difficulty_card(tiny_root):
    root, printed = tiny_root
    manifest = read_manifest(root)
    rows = _meta(root)
    assert manifest["content_hash"] == gen.content_hash(root, [r["path"] for r in rows])
    assert manifest["parameters"]["preset"] == "tiny" and manifest["parameters"]["generator"] == gen.GENERATOR_VERSION
    assert not (root / gen.JOURNAL).exists() and not (root / gen.RUN_FILE).exists()
    card = json.loads((root / "difficulty.json").read_text())
    assert set(card["protocols"]) == {"ALL", "G<->G", "A<->A", "A<->G"}
    for m in card["protocols"].values():
        assert 0 <= m["rank1"] <= 100 and 0 < m["mAP"] <= 100
    assert "difficulty card" in printed and "A<->G" in printed and manifest["content_hash"] in printed


def test_deterministic_across_worker_counts_and_resume(tmp_path, monkeypatch):
    a = render_dataset("tiny", tmp_path / "a", seed=5, workers=1, progress=False, difficulty=False, **SMALL_RUN)
    b = render_dataset("tiny", tmp_path / "b", seed=5, workers=2, progress=False, difficulty=False, **SMALL_RUN)
    fa, fb = _files(a), _files(b)
    assert len(fa) == 64 + 2 and fa == fb
    other = render_dataset("tiny", tmp_path / "c", seed=6, workers=1, progress=False, difficulty=False, **SMALL_RUN)
    assert read_manifest(other)["content_hash"] != read_manifest(a)["content_hash"]

    # Interrupt a run after two chunks, then resume: only the rest is rendered, the result is identical.
    calls = {"n": 0}
    real = gen._run_chunk

    def flaky(jobs):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt
        return real(jobs)

    monkeypatch.setattr(gen, "_run_chunk", flaky)
    with pytest.raises(KeyboardInterrupt):
        render_dataset("tiny", tmp_path / "r", seed=5, workers=1, progress=False, difficulty=False, **SMALL_RUN)
    assert (tmp_path / "r" / gen.RUN_FILE).is_file() and not (tmp_path / "r" / "manifest.json").exists()
    rendered = []
    monkeypatch.setattr(gen, "_run_chunk", lambda jobs: rendered.extend(jobs) or real(jobs))
    render_dataset("tiny", tmp_path / "r", seed=5, workers=1, progress=False, difficulty=False, **SMALL_RUN)
    assert len(rendered) == 64 - 32
    assert _files(tmp_path / "r") == fa

    # A complete run whose manifest matches is reused without rendering anything.
    rendered.clear()
    render_dataset("tiny", tmp_path / "r", seed=5, workers=1, progress=False, difficulty=False, **SMALL_RUN)
    assert ensure_synthag("tiny", root=tmp_path / "r", seed=5, progress=False, difficulty=False,
                          **SMALL_RUN) == tmp_path / "r"
    assert rendered == [] and _files(tmp_path / "r") == fa


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(preset="huge"), "unknown SynthAG preset 'huge'"),
        (dict(preset="tiny", pitch_range=(10.0, 80.0)), "pitch_range"),
        (dict(preset="tiny", n_ids=0), "n_ids"),
        (dict(preset="tiny", n_aerial=6), "n_aerial"),
        (dict(preset="tiny", colour="red"), "unknown SynthAG parameter"),
    ],
)
def test_bad_parameters_fail_before_writing(tmp_path, kwargs, match):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=match):
        render_dataset(out=out, progress=False, **kwargs)
    assert not out.exists()


def test_bad_output_folders_are_refused_untouched(tmp_path, monkeypatch):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        render_dataset("tiny", other, progress=False, **SMALL_RUN)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]

    done = render_dataset("tiny", tmp_path / "done", seed=0, workers=1, progress=False, difficulty=False, **SMALL_RUN)
    before = _files(done)
    with pytest.raises(ValueError, match="different parameters"):
        render_dataset("tiny", done, seed=1, progress=False, difficulty=False, **SMALL_RUN)
    assert _files(done) == before

    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(ValueError, match="not enough disk space"):
        render_dataset("tiny", tmp_path / "nospace", progress=False)
    assert not (tmp_path / "nospace").exists()


def test_cli_errors_are_clear(tmp_path, capsys):
    assert agreid_main(["synth", "--preset", "huge", "--out", str(tmp_path / "x")]) == 2
    assert "unknown --preset 'huge'" in capsys.readouterr().err
    assert agreid_main(["synth", "--preset", "tiny", "--out", str(tmp_path / "x"), "--size", "big"]) == 2
    assert not (tmp_path / "x").exists()


def test_synthag_reader_needs_a_complete_dataset(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetError, match="not a complete SynthAG dataset"):
        load_dataset("synthag", tmp_path, "ALL")


def test_contact_sheets(tiny_root, tmp_path):
    root, _ = tiny_root
    cams = read_manifest(root)["cameras"]
    pid = int(_meta(root)[0]["pid"])
    sheet = contact_sheet_identity(root, pid, per_camera=2, out=tmp_path / "id.png")
    assert sheet.size[0] >= len(cams) * 128 and (tmp_path / "id.png").is_file()
    grid = contact_sheet_cameras(root, n_ids=5, out=tmp_path / "cams.png")
    assert grid.size[1] >= len(cams) * 128
    # Cells hold real images, not blank paper.
    assert np.asarray(grid.convert("L")).std() > 20
    fig = contact_sheet_figure(grid)
    assert fig.data[0].type == "image"
    with pytest.raises(ValueError, match="identity 999999"):
        contact_sheet_identity(root, 999999)


def test_wearable_camera_view_comes_from_meta(tmp_path):
    root = render_dataset("tiny", tmp_path / "w", seed=2, workers=1, progress=False, difficulty=False,
                          n_ids=6, images_per_id=8, n_aerial=2, n_ground=2, n_wearable=1, wearable_images_per_id=1)
    wear = [c for c in read_manifest(root)["cameras"] if c["view"] == 2]
    assert [c["camid"] for c in wear] == [8]  # after the ground cameras Cam6, Cam7
    synth = load_dataset("synthag", root, "ALL")
    cargo = load_dataset("cargo", root, "ALL")
    assert {r.view for r in synth.train if r.raw_camid == 8} == {2}
    assert {r.view for r in cargo.train if r.raw_camid == 8} == {1}  # CARGO's name rule alone cannot know
    # CARGO protocols pick views 0/1 for query/gallery: wearable images only train.
    assert all(r.view in (0, 1) for r in synth.query + synth.gallery)
