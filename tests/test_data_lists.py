"""LAGPeR, G2APS-ReID and CP2108 readers (list-file layouts) on fake official trees."""

import json
from pathlib import Path

import pytest
import torch

from agreid_kit.data import DatasetError, load_dataset
from agreid_kit.eval import evaluate_split, ranking_inputs


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def write_list(path: Path, lines: list[str], root: Path) -> None:
    for rel in lines:
        touch(root / rel)
    path.write_text("\n".join(lines) + "\n")


def make_lagper(root: Path) -> Path:
    for rel in ["s1/0001_c3_0001.jpg", "s1/0001_c1_0002.jpg", "s5/0002_c13_0001.jpg", "s5/0002_c11_0005.jpg",
                "s5/-1_c12_0009.jpg"]:
        touch(root / "bounding_box_train" / rel)
    a2g = ["query/0010_c3_0001.jpg", "bounding_box_test/0010_c1_0002.jpg", "bounding_box_test/-1_c2_0003.jpg"]
    g2a = ["query/0010_c1_0002.jpg", "bounding_box_test/0010_c22_0004.jpg"]
    write_list(root / "exp3_A2G+.txt", a2g, root)
    write_list(root / "exp1_A2G.txt", a2g[:2], root)
    write_list(root / "exp4_G2A+.txt", g2a, root)
    write_list(root / "exp2_G2A.txt", g2a, root)
    write_list(root / "exp5_G2A+G.txt", g2a + ["bounding_box_test/0011_c14_0001.jpg"], root)
    return root


def test_lagper_protocols(tmp_path):
    root = make_lagper(tmp_path / "LAGPeR")
    s = load_dataset("lagper", root, "A->G")
    # pid -1 is dropped from training and counted
    assert len(s.train) == 4 and s.options["train_dropped_pid_minus1"] == 1
    assert s.options["list_file"] == "exp3_A2G+.txt"
    assert [(r.pid, r.raw_camid, r.camid, r.view) for r in s.query] == [(10, 3, 3, 0)]
    assert [(r.pid, r.view) for r in s.gallery] == [(10, 1), (-1, 1)] and s.options["test_images_pid_minus1"] == 1
    cams = {r.raw_camid: (r.camid, r.view, r.scene) for r in s.train}
    assert cams[13] == (12, 0, "scene4") and cams[11] == (10, 1, "scene4")  # raw ids > 10 shift down by one
    assert len(load_dataset("lagper", root, "A->G-exp1").gallery) == 1
    ga = load_dataset("lagper", root, "G->A")
    assert [r.view for r in ga.query] == [1] and [(r.camid, r.view) for r in ga.gallery] == [(21, 0)]
    assert len(load_dataset("lagper", root, "G->A-exp2").gallery) == 1
    assert sorted(r.view for r in load_dataset("lagper", root, "G->A+G").gallery) == [0, 1]


def test_lagper_bad_inputs(tmp_path):
    root = make_lagper(tmp_path / "LAGPeR")
    touch(root / "bounding_box_train" / "s9" / "0003_c10_0001.jpg")
    with pytest.raises(DatasetError, match="unknown camera c10"):
        load_dataset("lagper", root, "A->G")
    (root / "bounding_box_train" / "s9" / "0003_c10_0001.jpg").unlink()
    touch(root / "bounding_box_train" / "s9" / "img.jpg")
    with pytest.raises(DatasetError, match="'bounding_box_train/s9/img.jpg'.*does not parse"):
        load_dataset("lagper", root, "A->G")
    (root / "bounding_box_train" / "s9" / "img.jpg").unlink()
    (root / "exp5_G2A+G.txt").unlink()
    with pytest.raises(DatasetError, match="exp5_G2A\\+G.txt is missing. Expected layout:\nROOT/"):
        load_dataset("lagper", root, "G->A+G")
    (root / "exp4_G2A+.txt").write_text("\n\n")
    with pytest.raises(DatasetError, match="exp4_G2A\\+.txt is empty"):
        load_dataset("lagper", root, "G->A")
    (root / "exp1_A2G.txt").write_text("bounding_box_test/0010_c1_0002.jpg\n")
    with pytest.raises(DatasetError, match="query set is empty"):
        load_dataset("lagper", root, "A->G-exp1")


def test_g2aps(tmp_path):
    root = tmp_path / "G2APS"
    for rel in ["a/0001_c0v1_01.jpg", "a/0001_c2v1_02.jpg", "b/0002_c1v3_01.jpg"]:
        touch(root / "bounding_box_train" / rel)
    write_list(root / "exp3_A2G+.txt",
               ["query/0005_c0v2_01.jpg", "gallery/0005_c3v2_02.jpg", "gallery/0006_c1v2_02.jpg"], root)
    write_list(root / "exp4_G2A+.txt", ["query/0005_c3v2_02.jpg", "gallery/0005_c0v2_01.jpg"], root)
    s = load_dataset("g2aps", root, "A->G")
    assert len(s.train) == 3 and sorted({r.pid for r in s.train}) == [0, 1]
    assert [(r.pid, r.camid, r.view, r.raw_camid) for r in s.query] == [(5, 0, 0, 0)]
    assert [(r.camid, r.view, r.raw_camid) for r in s.gallery] == [(1, 1, 3), (1, 1, 1)]  # camera id = view
    assert [r.view for r in load_dataset("g2aps", root, "G->A").query] == [1]
    with pytest.raises(DatasetError, match="unknown protocol 'G->A\\+G'.*'A->G', 'G->A'"):
        load_dataset("g2aps", root, "G->A+G")


# CP2108: {pid}_{cam}_{time}_{scene}; cameras 1-22 ground, 23-39 aerial.
CP_TRAIN = ["train/0001_23_1_2_0001.jpg", "train/0001_5_1_2_0002.jpg", "train/0002_30_2_4_0001.jpg"]
CP_QUERY = ["query/0100_25_1_3_0001.jpg", "query/0100_7_1_3_0002.jpg", "query/0101_26_2_5_0001.jpg"]
CP_GALLERY = [
    "gallery/0100_24_1_3_0003.jpg",  # aerial, same time as the pid-100 queries
    "gallery/0100_8_2_3_0004.jpg",  # ground, other time
    "gallery/0101_9_1_5_0002.jpg",  # ground, time 1 (query 101 has time 2)
    "gallery/0102_31_2_6_0001.jpg",  # aerial distractor
]


def make_cp2108(root: Path, authors_layout: bool) -> Path:
    images = root / ("images_v100" if authors_layout else "images")
    for subset, lines in (("train", CP_TRAIN), ("query", CP_QUERY), ("gallery", CP_GALLERY)):
        lst = root / "split_v100" / f"{subset}_v100.txt" if authors_layout else root / f"{subset}.txt"
        lst.parent.mkdir(parents=True, exist_ok=True)
        write_list(lst, lines, images)
    return root


@pytest.mark.parametrize("authors_layout", [False, True])
def test_cp2108_layouts_and_protocols(tmp_path, authors_layout):
    root = make_cp2108(tmp_path / "CP2108", authors_layout)
    s = load_dataset("cp2108", root, "ALL")
    assert (len(s.train), len(s.query), len(s.gallery)) == (3, 3, 4)
    assert s.options["layout"] == ("images_v100" if authors_layout else "images")
    q = s.query[0]
    assert (q.pid, q.raw_camid, q.camid, q.view, q.time, q.scene) == (100, 25, 24, 0, "1", "3")
    assert s.query[1].view == 1  # camera 7 < 23: ground
    assert [r.view for r in load_dataset("cp2108", root, "A->G").gallery] == [1, 1]
    assert [r.view for r in load_dataset("cp2108", root, "G->A").query] == [1]
    assert len(load_dataset("cp2108", root, "A<->A").gallery) == 2
    assert len(load_dataset("cp2108", root, "G<->G").query) == 1
    strict = load_dataset("cp2108", root, "A<->G-strict", time_mode="cross")
    assert strict.options["gallery_rules"] == [["exclude_same", "view"], ["exclude_same", "time"]]
    assert "time mode cross" in strict.description


def test_cp2108_time_modes_evaluate(tmp_path):
    root = make_cp2108(tmp_path / "CP2108", False)
    feats = torch.eye(7)  # every image orthogonal: the ranking is gallery order (ties), enough to count positives

    def run(mode):
        s = load_dataset("cp2108", root, "ALL", time_mode=mode)
        return s, evaluate_split(s, feats[: len(s.query)], feats[3 : 3 + len(s.gallery)])

    s, mix = run("mix")
    assert mix.n_valid == 3
    # cross: query 100 (time 1) keeps only its time-2 positive; query 101 (time 2) keeps its time-1 positive
    _, cross = run("cross")
    assert cross.n_valid == 3
    # same: query 101 (time 2) has no time-2 positive -> skipped, and counted
    s_same, same = run("same")
    assert same.n_valid == 2 and same.n_skipped == 1 and not same.valid[2]
    rules = ranking_inputs(s_same)["gallery_rules"]
    assert rules[0][0] == "require_same" and rules[0][1].tolist() == [0, 0, 1]
    with pytest.raises(DatasetError, match="unknown time_mode 'night'; valid: \\['mix', 'cross', 'same'\\]"):
        load_dataset("cp2108", root, "ALL", time_mode="night")


def test_cp2108_attributes_and_bad_inputs(tmp_path):
    root = make_cp2108(tmp_path / "CP2108", False)
    attr = tmp_path / "attrs.json"
    amap = tmp_path / "map.json"
    attr.write_text(json.dumps({"100_aerial_1": {"gender": "male"}, "100_ground_1": {"gender": "female"}}))
    amap.write_text(json.dumps({"gender": {"male": 0, "female": 1}}))
    with pytest.warns(UserWarning, match="7 image\\(s\\) have no entry"):
        s = load_dataset("cp2108", root, "ALL", attribute_file=str(attr), attribute_map_file=str(amap))
    assert [r.attributes for r in s.query] == [{"gender": 0}, {"gender": 1}, None]
    # keys exist for (100, aerial, 1) and (100, ground, 1): 2 queries + 1 gallery image; the other 7 have none
    assert s.options["images_without_attributes"] == 7
    attr.write_text(json.dumps({"100_aerial_1": {"gender": "robot"}}))
    with pytest.raises(DatasetError, match="'gender' = 'robot'.*no index in map file"):
        load_dataset("cp2108", root, "ALL", attribute_file=str(attr), attribute_map_file=str(amap))
    attr.write_text(json.dumps({"100-aerial": {}}))
    with pytest.raises(DatasetError, match="key '100-aerial' is not pid_view_time"):
        load_dataset("cp2108", root, "ALL", attribute_file=str(attr))
    (root / "query.txt").write_text("query/0100_99_1_3_0001.jpg\n")
    touch(root / "images" / "query" / "0100_99_1_3_0001.jpg")
    with pytest.raises(DatasetError, match="unknown camera 99"):
        load_dataset("cp2108", root, "ALL")
    (root / "query.txt").write_text("query/0100_x_1_3.jpg\n")
    touch(root / "images" / "query" / "0100_x_1_3.jpg")
    with pytest.raises(DatasetError, match="pid and camera must be integers"):
        load_dataset("cp2108", root, "ALL")
    (root / "query.txt").unlink()
    with pytest.raises(DatasetError, match="query.txt is missing. Expected layout:\nROOT/"):
        load_dataset("cp2108", root, "ALL")
    import shutil

    shutil.rmtree(root / "images")
    with pytest.raises(DatasetError, match="image folder .*images is missing"):
        load_dataset("cp2108", root, "ALL")
