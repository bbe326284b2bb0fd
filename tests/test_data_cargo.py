"""CARGO reader: every protocol's membership, camids and views on a fake official tree."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from agreid_kit.data import DatasetError, load_dataset
from agreid_kit.data.cargo import load_cargo
from agreid_kit.eval import evaluate_split, ranking_inputs

FILES = {
    "train": ["Cam1_day_1_0", "Cam6_night_1_1", "Cam3_day_5_2", "Cam9_day_5_3"],
    "query": ["Cam2_day_10_0", "Cam7_night_10_1", "Cam4_day_11_2"],
    "gallery": ["Cam1_day_10_3", "Cam8_day_10_4", "Cam12_night_11_5", "Cam5_day_11_6", "Cam13_day_12_7"],
}


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def make_cargo(root: Path) -> Path:
    for subset, names in FILES.items():
        for n in names:
            touch(root / subset / n.split("_")[0] / f"{n}.jpg")
    return root


def names(records):
    return sorted(Path(r.path).stem for r in records)


def test_all_and_view_filters(tmp_path):
    root = make_cargo(tmp_path / "CARGO")
    s = load_dataset("cargo", root, "ALL")
    assert (len(s.train), len(s.query), len(s.gallery)) == (4, 3, 5)
    assert sorted({r.pid for r in s.train}) == [0, 1] and sorted({r.raw_pid for r in s.train}) == [1, 5]
    cam2 = next(r for r in s.query if r.raw_camid == 2)
    assert (cam2.pid, cam2.camid, cam2.view, cam2.time) == (10, 1, 0, "day")  # camid = n - 1
    assert next(r for r in s.gallery if r.raw_camid == 12).view == 1  # Cam6-13 ground
    aa = load_dataset("cargo", root, "A<->A")
    assert names(aa.query) == ["Cam2_day_10_0", "Cam4_day_11_2"]
    assert names(aa.gallery) == ["Cam1_day_10_3", "Cam5_day_11_6"]
    gg = load_dataset("cargo", root, "G<->G")
    assert names(gg.query) == ["Cam7_night_10_1"] and len(gg.gallery) == 3
    ag = load_dataset("cargo", root, "A->G")
    assert {r.view for r in ag.query} == {0} and {r.view for r in ag.gallery} == {1} and len(ag.gallery) == 3
    ga = load_dataset("cargo", root, "G->A")
    assert {r.view for r in ga.query} == {1} and {r.view for r in ga.gallery} == {0}


def test_vdt_cross_view_collapses_camids(tmp_path):
    root = make_cargo(tmp_path / "CARGO")
    s = load_dataset("cargo", root, "A<->G")
    assert (len(s.query), len(s.gallery)) == (3, 5)
    assert all(r.camid == r.view for r in s.query + s.gallery)
    assert sorted(r.raw_camid for r in s.gallery) == [1, 5, 8, 12, 13]
    assert "gallery_rules" not in s.options


def test_strict_equals_pooled_directions(tmp_path):
    root = make_cargo(tmp_path / "CARGO")
    strict = load_dataset("cargo", root, "A<->G-strict")
    assert strict.options["gallery_rules"] == [["exclude_same", "view"]]
    assert ranking_inputs(strict)["gallery_rules"][0][0] == "exclude_same"
    feats = {r.path: torch.randn(8, generator=torch.Generator().manual_seed(i)) for i,
             r in enumerate(strict.test_records)}

    def run(split):
        qf = torch.stack([feats[r.path] for r in split.query])
        gf = torch.stack([feats[r.path] for r in split.gallery])
        return evaluate_split(split, qf, gf)

    res = run(strict)
    pooled = [run(load_dataset("cargo", root, p)) for p in ("A->G", "G->A")]
    ap_pooled = np.concatenate([p.ap[p.valid] for p in pooled])
    assert res.n_valid == sum(p.n_valid for p in pooled) == 3
    assert sorted(res.ap[res.valid]) == pytest.approx(sorted(ap_pooled), abs=1e-12)
    assert res.mAP == pytest.approx(float(np.mean(ap_pooled)), abs=1e-12)


def test_record_hook_and_dataset_name(tmp_path):
    root = make_cargo(tmp_path / "SYN")
    s = load_cargo(root, "ALL", dataset_name="synthag", record_hook=lambda r: replace(r, extra={"pitch": 30.0}))
    assert s.dataset == "synthag" and all(r.extra == {"pitch": 30.0} for r in s.train + s.query + s.gallery)
    assert "record_hook" not in s.options
    with pytest.raises(DatasetError, match="record_hook returned dict"):
        load_cargo(root, "ALL", record_hook=lambda r: {})


def test_bad_inputs(tmp_path):
    root = make_cargo(tmp_path / "CARGO")
    with pytest.raises(DatasetError, match="unknown option\\(s\\) \\['time_mode'\\]"):
        load_dataset("cargo", root, "ALL", time_mode="cross")
    with pytest.raises(DatasetError, match="unknown protocol 'AGAG'.*'A<->G-strict'"):
        load_dataset("cargo", root, "AGAG")
    touch(root / "query" / "Cam14" / "Cam14_day_3_1.jpg")
    with pytest.raises(DatasetError, match="unknown camera Cam14"):
        load_dataset("cargo", root, "ALL")
    (root / "query" / "Cam14" / "Cam14_day_3_1.jpg").unlink()
    touch(root / "query" / "Cam14" / "Cam3_day_3_1.jpg")
    with pytest.raises(DatasetError, match="names camera Cam3 but lies in folder Cam14"):
        load_dataset("cargo", root, "ALL")
    (root / "query" / "Cam14" / "Cam3_day_3_1.jpg").unlink()
    touch(root / "query" / "Cam2" / "Cam2_dusk_3_1.jpg")
    with pytest.raises(DatasetError, match="'Cam2_dusk_3_1.jpg'.*does not parse"):
        load_dataset("cargo", root, "ALL")
    with pytest.warns(UserWarning, match="skipped 1 file"):
        assert load_dataset("cargo", root, "ALL", on_bad_name="skip").options["skipped"] == 1
    (root / "query" / "Cam2" / "Cam2_dusk_3_1.jpg").unlink()
    for f in (root / "query" / "Cam7").iterdir():
        f.unlink()
    with pytest.raises(DatasetError, match="protocol 'G<->G'.*query set is empty"):
        load_dataset("cargo", root, "G<->G")
    import shutil

    shutil.rmtree(root / "gallery")
    with pytest.raises(DatasetError,
                       match="CARGO gallery set: folder .*gallery is missing. Expected layout:\nROOT/\n  train/Cam"):
        load_dataset("cargo", root, "ALL")
