"""The toolkit commands end to end on a tiny run trained from a Market-1501-style tree given as
``market:ROOT?aerial_cams=1,2``: evaluate --rerank / --by-camera, ranks, export, extract --folder."""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest

from agreid_kit.cli import main

pytestmark = pytest.mark.slow

TINY_OPTS = ["--pretrained", "none", "--model-opt", "embed_dim=32", "--model-opt", "depth=2",
             "--model-opt", "num_heads=2",
             "--model-opt", "img_size=[32,16]"]
CAMS = (1, 2, 3, 4)  # 1-2 aerial, 3-4 ground


def make_market_images(root, n_train=8, n_test=5, size=(32, 16), seed=0):
    """Market-style tree of small JPEGs: each identity a two-colour pattern, noisier on aerial cameras."""
    from PIL import Image

    rng = np.random.default_rng(seed)

    def write(folder, pid, cam, idx):
        top, bottom = np.random.default_rng(1000 + max(pid, 0)).integers(0, 255, size=(2, 3))
        h, w = size
        img = np.empty((h, w, 3), dtype=np.float32)
        img[: h // 2], img[h // 2:] = top, bottom
        img += rng.normal(0, 20 if cam <= 2 else 10, size=img.shape)
        (root / folder).mkdir(parents=True, exist_ok=True)
        name = f"{pid:04d}" if pid >= 0 else "-1"
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / folder / f"{name}_c{cam}s1_{idx:06d}_01.jpg")

    idx = 0
    for pid in range(1, n_train + 1):
        for cam in CAMS:
            write("bounding_box_train", pid, cam, idx)
            idx += 1
    for pid in range(100, 100 + n_test):
        write("query", pid, 1, idx)
        write("query", pid, 3, idx + 1)
        for cam in CAMS:
            write("bounding_box_test", pid, cam, idx + 2 + cam)
        idx += 10
    write("bounding_box_test", 0, 2, idx)  # a distractor (kept as a negative)
    write("bounding_box_test", -1, 4, idx + 1)  # junk (dropped)
    return root


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("toolkit")
    root = make_market_images(base / "M")
    run = base / "run"
    args = ["train", "--method", "vit", "--data", f"market:{root}?aerial_cams=1,2", "--protocol", "ALL",
            "--eval-protocols", "ALL", "A->G", "--preset", "cpu", "--out", str(run), "--epochs", "1",
            "--batch", "4", "2",
            "--num-workers", "0", "--max-iters-per-epoch", "2", "--threads", "1", "--val-fraction", "0",
            "--image-cache", "off", *TINY_OPTS]
    assert main(args) == 0
    return run, root


def test_evaluate_rerank_is_marked_and_kept_apart(tiny_run, capsys):
    run, _ = tiny_run
    assert main(["evaluate", str(run), "--protocol", "ALL", "A->G"]) == 0
    plain_out = capsys.readouterr().out
    assert "re-ranking" not in plain_out and "+rerank" not in plain_out
    plain = json.loads((run / "metrics.json").read_text())
    assert main(["evaluate", str(run), "--protocol", "ALL", "A->G", "--rerank", "--k1", "4", "--k2", "2"]) == 0
    out = capsys.readouterr().out
    assert "k-reciprocal re-ranking ON (k1=4, k2=2, lambda=0.3)" in out
    assert "real+rerank" in out and "real " in out
    metrics = json.loads((run / "metrics.json").read_text())
    for protocol in ("ALL", "A->G"):
        assert metrics[protocol]["real"] == plain[protocol]["real"]  # plain results untouched
        rr = metrics[protocol]["real+rerank"]
        assert rr["rerank"] == {"method": "k-reciprocal", "k1": 4, "k2": 2, "lambda": 0.3}
        assert 0 <= rr["mAP"] <= 1 and rr["n_query"] == plain[protocol]["real"]["n_query"]
    assert main(["evaluate", str(run), "--rerank", "--k2", "99"]) == 2
    assert "k2 must be" in capsys.readouterr().err


def test_evaluate_by_camera_writes_tables(tiny_run, capsys):
    run, _ = tiny_run
    assert main(["evaluate", str(run), "--protocol", "A->G", "--by-camera", "--camera-key", "raw_camid"]) == 0
    out = capsys.readouterr().out
    assert "A->G [real] per camera pair (raw_camid" in out and "Rank-1 (%)" in out
    table = list(csv.DictReader(open(run / "breakdown" / "A-to-G_real_raw_camid.csv")))
    assert (run / "breakdown" / "A-to-G_real_raw_camid.html").is_file()
    assert {r["query_cam"] for r in table} == {"1", "all"} and {r["gallery_cam"] for r in table} == {"3", "4", "all"}
    overall = next(r for r in table if r["query_cam"] == "all" and r["gallery_cam"] == "all")
    metrics = json.loads((run / "metrics.json").read_text())["A->G"]["real"]
    assert float(overall["mAP"]) == pytest.approx(metrics["mAP"])


def test_ranks_command_agrees_with_evaluate(tiny_run, tmp_path, capsys):
    run, _ = tiny_run
    assert main(["ranks", str(run), "--protocol", "ALL", "--out", str(tmp_path / "r"), "--top-k", "0",
                 "--images", "2"]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())["ALL"]["real"]
    rows = list(csv.DictReader(open(tmp_path / "r" / "ranks.csv")))
    aps = []
    for qi in sorted({int(r["query_index"]) for r in rows}):
        matches = [int(r["match"]) for r in rows if int(r["query_index"]) == qi]
        pos = [i + 1 for i, m in enumerate(matches) if m]
        if pos:
            aps.append(np.mean([k / p for k, p in enumerate(pos, 1)]))
    assert np.mean(aps) == pytest.approx(metrics["mAP"], abs=1e-9) and len(aps) == metrics["n_valid"]
    assert len(list((tmp_path / "r" / "images").glob("*.jpg"))) == 2 and "2 composite images" in out
    assert main(["ranks", str(run), "--out", str(tmp_path / "rr"), "--rerank", "--k1", "4", "--k2", "2"]) == 0
    assert "re-ranking ON" in capsys.readouterr().out
    assert len(list(csv.DictReader(open(tmp_path / "rr" / "ranks.csv")))) == 10 * metrics["n_query"]
    assert main(["ranks", str(run), "--out", str(tmp_path / "x"), "--top-k", "-2"]) == 2


def test_export_and_extract_folder(tiny_run, tmp_path, capsys):
    from agreid_kit.features import FeatureSet

    run, root = tiny_run
    assert main(["export", str(run), "--format", "npy", "mat", "csv", "--out", str(tmp_path / "e")]) == 0
    test_fs = FeatureSet.load(run / "features" / "test")
    np.testing.assert_array_equal(np.load(tmp_path / "e" / "test_features.npy"), test_fs.features.numpy())
    assert (tmp_path / "e" / "test.mat").is_file() and (tmp_path / "e" / "test.csv").is_file()
    # a plain folder (nested, PNG and JPEG): two test images copied in, one converted to PNG
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    src = [test_fs.records[0].path, test_fs.records[3].path]
    shutil.copy(src[0], folder / "a.jpg")
    from PIL import Image

    Image.open(src[1]).save(folder / "sub" / "b.png")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "feats"
    assert main(["extract", str(run), "--folder", str(folder), "--out", str(out), "--view", "0", "--export", "csv",
                 "--num-workers", "0"]) == 0
    assert "2 images (view 0, pid = camid = -1)" in capsys.readouterr().out
    fs = FeatureSet.load(out / "features")
    assert [r.pid for r in fs.records] == [-1, -1] and {r.view for r in fs.records} == {0} and fs.split == "folder"
    # the copied JPEG embeds exactly as in the run's test features (the model ignores pid/camid)
    np.testing.assert_allclose(fs.features[0].numpy(), test_fs.features[0].numpy(), rtol=1e-5, atol=1e-6)
    assert not math.isnan(float(fs.features[1].sum()))
    assert (out / "folder.csv").is_file()
    assert main(["extract", str(run), "--folder", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["extract", str(run), "--folder", str(folder)]) == 2
    assert "--folder needs --out" in capsys.readouterr().err
