"""Generic Market-1501-style reader on fake trees: junk/distractor rules, aerial cameras, protocols, errors."""

from pathlib import Path

import pytest

from agreid_kit.data import DatasetError, available_protocols, load_dataset, parse_data_spec
from agreid_kit.data.market import load_market, parse_cameras, split_root_options

FILES = {
    "bounding_box_train": ["0002_c1s1_000451_01", "0002_c3s1_000551_01", "0007_c2s2_000100_02", "0007_c4s1_000020_01",
                           "-1_c1s1_000001_01", "0000_c2s1_000002_01"],
    "query": ["0010_c1s1_001000_00", "0010_c3s1_001100_00", "0011_c2s1_001200_00", "-1_c3s1_000003_00"],
    "bounding_box_test": ["0010_c1s1_001001_01", "0010_c4s1_001101_01", "0011_c3s1_001201_01", "0011_c2s1_001202_02",
                          "0000_c1s1_000004_01", "0000_c4s1_000005_01", "-1_c2s1_000006_01", "0012_c4_f0001"],
}


def make_market(root: Path, files=FILES) -> Path:
    for folder, names in files.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for n in names:
            (root / folder / f"{n}.jpg").write_bytes(b"")
    return root


def stems(records):
    return sorted(Path(r.path).stem for r in records)


def test_market_convention_junk_dropped_distractors_kept(tmp_path):
    root = make_market(tmp_path / "M")
    s = load_dataset("market", root, "ALL")
    # -1 (junk) is dropped everywhere; 0000 (distractors) is dropped from train and query, kept in the gallery
    assert all(r.raw_pid not in (-1, 0) for r in s.train) and all(r.pid not in (-1, 0) for r in s.query)
    assert sorted(r.raw_pid for r in s.train) == [2, 2, 7, 7] and sorted({r.pid for r in s.train}) == [0, 1]
    assert stems(s.query) == ["0010_c1s1_001000_00", "0010_c3s1_001100_00", "0011_c2s1_001200_00"]
    assert [r.pid for r in s.gallery].count(0) == 2 and -1 not in [r.pid for r in s.gallery]
    assert "0012_c4_f0001" in stems(s.gallery)  # Duke-style names parse too
    r = next(r for r in s.query if r.raw_camid == 3)
    assert (r.pid, r.camid, r.view, r.raw_camid) == (10, 2, 1, 3)  # camid = camera - 1; no aerial cams: ground
    assert s.options["aerial_cams"] == []


def test_aerial_cameras_and_cross_view_protocols(tmp_path):
    root = make_market(tmp_path / "M")
    assert available_protocols("market")[0] == "ALL"
    s = load_dataset("market", root, "ALL", aerial_cams="1,2")
    assert {r.raw_camid for r in s.query + s.gallery if r.view == 0} == {1, 2}
    ag = load_dataset("market", root, "A->G", aerial_cams=[1, 2])
    assert {r.view for r in ag.query} == {0} and {r.view for r in ag.gallery} == {1}
    ga = load_dataset("market", f"{root}?aerial_cams=1,2", "G->A")  # options in the data spec
    assert {r.raw_camid for r in ga.query} == {3} and {r.view for r in ga.gallery} == {0}
    both = load_dataset("market", f"{root}?aerial_cams=1,2", "A<->G")
    assert all(r.camid == r.view for r in both.query + both.gallery)
    strict = load_dataset("market", root, "A<->G-strict", aerial_cams="1 2")
    assert strict.options["gallery_rules"] == [["exclude_same", "view"]]
    name, spec_root = parse_data_spec(f"market:{root}?aerial_cams=1,2")
    assert load_dataset(name, spec_root, "A<->A").options["aerial_cams"] == [1, 2]


def test_market_errors_name_the_thing(tmp_path):
    root = make_market(tmp_path / "M")
    with pytest.raises(DatasetError, match="needs to know which cameras are aerial"):
        load_dataset("market", root, "A->G")
    with pytest.raises(DatasetError, match=r"camera\(s\) \[9\]"):
        load_dataset("market", root, "ALL", aerial_cams="1,9")
    with pytest.raises(DatasetError, match="must list camera numbers"):
        parse_cameras("1,x")
    with pytest.raises(DatasetError, match="must be KEY=VALUE"):
        split_root_options(f"{root}?aerial_cams")
    with pytest.raises(DatasetError, match="unknown option"):
        load_market(f"{root}?aerial=1", "ALL")
    (root / "query" / "bad_name.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match="bad_name.jpg.*expected \\{pid\\}_c\\{camera\\}"):
        load_dataset("market", root, "ALL")
    with pytest.warns(UserWarning, match="skipped 1 file"):
        assert load_dataset("market", root, "ALL", on_bad_name="skip").options["skipped"] == 1
    missing = make_market(tmp_path / "N", {"bounding_box_train": ["0001_c1_0"], "query": ["0002_c1_0"]})
    with pytest.raises(DatasetError, match="bounding_box_test is missing. Expected layout:\nROOT/"):
        load_dataset("market", missing, "ALL")
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("market", tmp_path / "nowhere", "ALL")
