"""AG-ReID.v1 / v2 readers on fake trees in the official layouts (zero-byte images; readers never open them)."""

from pathlib import Path

import numpy as np
import pytest

from agreid_kit.data import DatasetError, load_dataset


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


V1 = {
    "bounding_box_train": ["P0001T04041A0C0F31.jpg", "P0001T04041A0C3F61.jpg", "P0002T04041A1C0F10.jpg",
                           "P0002T04041A1C3F20.jpg"],
    "query_all_c0": ["P0000T02140A0C0F91.jpg", "P0003T02140A2C0F5.jpg"],
    "bounding_box_test_all_c3": ["P0000T02140A0C3F691.jpg", "P0003T02140A2C3F7.jpg", "P0004T02140A0C3F8.jpg"],
    "query_all_c3": ["P0000T02140A0C3F751.jpg"],
    "bounding_box_test_all_c0": ["P0000T02140A0C0F31.jpg", "P0004T02140A0C0F1.jpg"],
}


def make_v1(root: Path, image_subfolder: bool = False) -> Path:
    for folder, names in V1.items():
        for n in names:
            touch(root / folder / ("image" if image_subfolder else "") / n)
    return root


@pytest.mark.parametrize("image_subfolder", [False, True])
def test_v1_protocols(tmp_path, image_subfolder):
    root = make_v1(tmp_path / "AG-ReID", image_subfolder)
    s = load_dataset("agreid_v1", root, "A->G")
    assert (len(s.train), len(s.query), len(s.gallery)) == (4, 2, 3)
    # identity = P, T and A digits concatenated: "0000"+"02140"+"0" -> 21400, "0003"+"02140"+"2" -> 3021402
    assert sorted({r.pid for r in s.query}) == [21400, 3021402]
    assert {r.view for r in s.query} == {0} and {r.view for r in s.gallery} == {1}
    assert {r.raw_camid for r in s.gallery} == {3} and {r.camid for r in s.gallery} == {1}
    assert sorted({r.pid for r in s.train}) == [0, 1]
    assert sorted({r.raw_pid for r in s.train}) == [104041 * 10 + 0, 204041 * 10 + 1]
    assert s.query[1].altitude == 2.0 and s.query[0].time == "02140"
    g = load_dataset("agreid_v1", root, "G->A")
    assert (len(g.query), len(g.gallery)) == (1, 2)
    assert {r.view for r in g.query} == {1} and {r.view for r in g.gallery} == {0}
    assert s.options["attribute_file"] is None and s.num_views == 2
    touch(root / "bounding_box_train" / ("image" if image_subfolder else "") / "P0002T04041A1C2F30.jpg")
    with pytest.warns(UserWarning, match="1 wearable \\(C2\\) image"):
        s = load_dataset("agreid_v1", root, "A->G")
    assert s.num_views == 3 and s.options["wearable_images"] == 1 and len(s.train) == 5


def test_v1_attributes_mat(tmp_path):
    from scipy.io import savemat

    root = make_v1(tmp_path / "v1")
    table = {
        "train": {"image_index": np.array([1040410, 2040411]), "gender": np.array([1, 2]), "hat": np.array([2, 2])},
        "test": {"image_index": np.array([21400, 3021402, 4021400]), "gender": np.array([2, 1, 1]),
                 "hat": np.array([1, 1, 2])},
    }
    savemat(root / "qut_attribute_v4_88_attributes.mat", {"qut_attribute": table})
    s = load_dataset("agreid_v1", root, "A->G")
    by_pid = {r.pid: r.attributes for r in s.query}
    assert by_pid[21400] == {"gender": 1, "hat": -1}  # stored 2 -> +1, 1 -> -1
    assert by_pid[3021402] == {"gender": -1, "hat": -1}
    assert {r.raw_pid: r.attributes["gender"] for r in s.train}[1040410] == -1
    assert s.options["images_without_attributes"] == 0
    assert load_dataset("agreid_v1", root, "A->G", attributes=False).query[0].attributes is None
    table["test"]["hat"] = np.array([1, 3, 2])
    savemat(root / "qut_attribute_v4_88_attributes.mat", {"qut_attribute": table})
    with pytest.raises(DatasetError, match=r"test\.hat holds values \[3\]"):
        load_dataset("agreid_v1", root, "A->G")


def test_v1_bad_inputs(tmp_path):
    root = make_v1(tmp_path / "v1")
    with pytest.raises(DatasetError, match="unknown protocol 'A->C'.*'A->G', 'G->A'"):
        load_dataset("agreid_v1", root, "A->C")
    touch(root / "query_all_c0" / "P0005T02140A0C7F1.jpg")
    with pytest.raises(DatasetError, match="unknown camera C7"):
        load_dataset("agreid_v1", root, "A->G")
    (root / "query_all_c0" / "P0005T02140A0C7F1.jpg").unlink()
    touch(root / "query_all_c0" / "snapshot.jpg")
    with pytest.raises(DatasetError, match="'snapshot.jpg'.*does not parse"):
        load_dataset("agreid_v1", root, "A->G")
    with pytest.warns(UserWarning, match="skipped 1 file"):
        s = load_dataset("agreid_v1", root, "A->G", on_bad_name="skip")
    assert s.options["skipped"] == 1 and len(s.query) == 2
    (root / "query_all_c0" / "snapshot.jpg").unlink()
    for f in (root / "bounding_box_test_all_c3").iterdir():
        f.unlink()
    with pytest.raises(DatasetError, match="gallery set is empty"):
        load_dataset("agreid_v1", root, "A->G")
    (root / "bounding_box_test_all_c3").rmdir()
    with pytest.raises(DatasetError, match=r"bounding_box_test_all_c3 is missing. Expected layout:\nROOT/"):
        load_dataset("agreid_v1", root, "A->G")


def make_v2(root: Path) -> Path:
    train = ["P0001T04041A0C0F31.jpg", "P0001T04041A0C2F40.jpg", "P0002T04041A1C3F20.jpg"]
    for n in train:
        touch(root / "train_all" / n[:13] / n)
    query = ["P0000T02140A0C0F91.jpg", "P0000T02140A0C3F92.jpg", "P0003T02140A2C2F5.jpg"]
    gallery = ["P0000T02140A0C3F691.jpg", "P0000T02140A0C2F693.jpg", "P0000T02140A0C0F11.jpg", "P0003T02140A2C0F7.jpg"]
    for sub, names in (("query", query), ("gallery", gallery)):
        for n in names:
            touch(root / sub / n[:13] / n)
    lists = {
        "exp1_aerial_to_cctv.txt": ["query/P0000T02140A0/P0000T02140A0C0F91.jpg",
                                    "gallery/P0000T02140A0/P0000T02140A0C3F691.jpg"],
        "exp2_aerial_to_wearable.txt": ["query/P0000T02140A0/P0000T02140A0C0F91.jpg",
                                        "gallery/P0000T02140A0/P0000T02140A0C2F693.jpg"],
        "exp4_cctv_to_aerial.txt": ["query/P0000T02140A0/P0000T02140A0C3F92.jpg",
                                    "gallery/P0000T02140A0/P0000T02140A0C0F11.jpg"],
        "exp5_wearable_to_aerial.txt": [
            "query/P0003T02140A2/P0003T02140A2C2F5.jpg", "", "gallery/P0003T02140A2/P0003T02140A2C0F7.jpg",
            "gallery/P0000T02140A0/P0000T02140A0C0F11.jpg",
        ],
    }
    for name, lines in lists.items():
        (root / name).write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("doubled", [False, True])
def test_v2_protocols(tmp_path, doubled):
    inner = make_v2(tmp_path / "AG-ReID.v2" / "AG-ReID.v2" if doubled else tmp_path / "AG-ReID.v2")
    root = tmp_path / "AG-ReID.v2"
    s = load_dataset("agreid_v2", root, "A->C")
    assert s.root == str(inner.resolve()) and s.num_views == 3
    assert len(s.train) == 3 and sorted({r.view for r in s.train}) == [0, 1, 2]
    assert [(r.view, r.raw_camid) for r in s.query] == [(0, 0)]
    assert [(r.view, r.raw_camid) for r in s.gallery] == [(1, 3)]
    assert [r.view for r in load_dataset("agreid_v2", root, "A->W").gallery] == [2]
    assert [r.view for r in load_dataset("agreid_v2", root, "C->A").query] == [1]
    w = load_dataset("agreid_v2", root, "W->A")
    assert [r.pid for r in w.query] == [3021402] and [r.pid for r in w.gallery] == [3021402, 21400]
    assert [r.view for r in w.query] == [2] and [r.camid for r in w.query] == [2]


def test_v2_bad_inputs(tmp_path):
    root = make_v2(tmp_path / "v2")
    with (root / "exp1_aerial_to_cctv.txt").open("a") as fh:
        fh.write("gallery/P0009T02140A0/P0009T02140A0C3F1.jpg\n")
    with pytest.raises(DatasetError,
                       match=r"exp1_aerial_to_cctv.txt:3: listed image .*P0009T02140A0C3F1.jpg does not exist"):
        load_dataset("agreid_v2", root, "A->C")
    (root / "exp2_aerial_to_wearable.txt").unlink()
    with pytest.raises(DatasetError, match="exp2_aerial_to_wearable.txt is missing. Expected layout"):
        load_dataset("agreid_v2", root, "A->W")
    with pytest.raises(DatasetError, match="train_all is missing"):
        load_dataset("agreid_v2", tmp_path, "A->W")
