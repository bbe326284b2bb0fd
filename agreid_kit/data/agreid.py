"""AG-ReID.v1 and AG-ReID.v2 readers (official layouts).

File names look like ``P0006T02140A0C0F1831.jpg``. The identity is the digits of P, T and A
*concatenated* (the same person on another day or altitude is another identity, as in the official
reader); ``C`` is the camera: 0 UAV (aerial), 3 CCTV (ground), 2 wearable. ``camid`` is the view
(one camera type per view, so the same-pid-same-camera rule is unchanged) and ``raw_camid`` the C number.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from agreid_kit.data.errors import DatasetError
from agreid_kit.data.layout import (
    NameParser,
    assemble_split,
    check_options,
    is_query_line,
    list_images,
    read_list_file,
    require_dir,
    root_path,
)
from agreid_kit.data.records import DatasetSplit, Record

_PID_RE = re.compile(r"P([-\d]+)T([-\d]+)A([-\d]+)")
_CAM_RE = re.compile(r"C([-\d]+)F([-\d]+)")
CAMERA_TO_VIEW = {0: 0, 3: 1, 2: 2}

V1_TREE = """ROOT/
  bounding_box_train/            P0001T04041A0C0F31.jpg ...  (or bounding_box_train/image/*.jpg)
  query_all_c0/                  aerial queries   (A->G)
  bounding_box_test_all_c3/      ground gallery   (A->G)
  query_all_c3/                  ground queries   (G->A)
  bounding_box_test_all_c0/      aerial gallery   (G->A)
  qut_attribute_v4_88_attributes.mat   (optional)"""

V2_TREE = """ROOT/                          (or ROOT/AG-ReID.v2/ with the same content)
  train_all/<P..T..A..>/*.jpg
  query/<P..T..A..>/*.jpg
  gallery/<P..T..A..>/*.jpg
  exp1_aerial_to_cctv.txt  exp2_aerial_to_wearable.txt  exp4_cctv_to_aerial.txt  exp5_wearable_to_aerial.txt
  qut_attribute_v8.mat           (optional)"""

V1_PROTOCOLS = {
    "A->G": ("query_all_c0", "bounding_box_test_all_c3", "aerial (UAV) queries vs ground (CCTV) gallery"),
    "G->A": ("query_all_c3", "bounding_box_test_all_c0", "ground (CCTV) queries vs aerial (UAV) gallery"),
}
V2_PROTOCOLS = {
    "A->C": ("exp1_aerial_to_cctv.txt", "aerial queries vs CCTV gallery (official exp1 list)"),
    "A->W": ("exp2_aerial_to_wearable.txt", "aerial queries vs wearable gallery (official exp2 list)"),
    "C->A": ("exp4_cctv_to_aerial.txt", "CCTV queries vs aerial gallery (official exp4 list)"),
    "W->A": ("exp5_wearable_to_aerial.txt", "wearable queries vs aerial gallery (official exp5 list)"),
}


def parse_agreid_name(path: Path, attributes: dict[int, dict[str, int]] | None = None) -> Record:
    name = path.name
    m, c = _PID_RE.search(name), _CAM_RE.search(name)
    if m is None or c is None:
        raise DatasetError(
            f"AG-ReID file name {name!r} ({path}) does not parse: expected "
            "P<pid>T<date><day/night>A<alt>C<cam>F<frame>, "
            "e.g. P0006T02140A0C0F1831.jpg"
        )
    p, t, a = m.groups()
    try:
        pid = int(p + t + a)
        cam = int(c.group(1))
    except ValueError:
        raise DatasetError(f"AG-ReID file name {name!r} ({path}): P/T/A/C fields are not integers") from None
    if cam not in CAMERA_TO_VIEW:
        raise DatasetError(
            f"AG-ReID file {path}: unknown camera C{cam}; expected C0 (UAV), C3 (CCTV) or C2 (wearable)"
        )
    view = CAMERA_TO_VIEW[cam]
    return Record(
        path=str(path),
        pid=pid,
        camid=view,
        view=view,
        raw_camid=cam,
        time=t,
        altitude=float(a),
        attributes=None if attributes is None else attributes.get(pid),
    )


def load_qut_attributes(path: Path) -> dict[int, dict[str, int]]:
    """Identity-level attributes from a QUT ``.mat`` file: {pid: {attribute: -1 | +1}}.

    The file holds one struct (e.g. ``qut_attribute``) with ``train`` and ``test`` structs; each has an
    ``image_index`` column (the concatenated P/T/A identity) and one column per attribute, stored as
    1/2 meaning -1/+1.
    """
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path), simplify_cells=True)
    except Exception as e:  # scipy raises several types for corrupt files
        raise DatasetError(f"attribute file {path} could not be read as a .mat file: {e}") from e
    tops = [k for k in mat if not k.startswith("__")]
    if len(tops) != 1 or not isinstance(mat[tops[0]], dict):
        raise DatasetError(f"attribute file {path}: expected one struct variable with train/test fields, found {tops}")
    top = mat[tops[0]]
    out: dict[int, dict[str, int]] = {}
    for part in ("train", "test"):
        if part not in top:
            raise DatasetError(f"attribute file {path}: struct {tops[0]!r} has no field {part!r} (has {sorted(top)})")
        table = top[part]
        if "image_index" not in table:
            raise DatasetError(f"attribute file {path}: {tops[0]}.{part} has no 'image_index' field")
        ids = [int(str(x).strip()) for x in _column(table["image_index"])]
        names = [k for k in table if k != "image_index"]
        cols = {k: [int(v) for v in _column(table[k])] for k in names}
        for k, col in cols.items():
            if len(col) != len(ids):
                raise DatasetError(f"attribute file {path}: {part}.{k} has {len(col)} rows, image_index has {len(ids)}")
            bad = sorted(set(col) - {1, 2})
            if bad:
                raise DatasetError(f"attribute file {path}: {part}.{k} holds values {bad[:5]}; expected 1 or 2")
        for i, pid in enumerate(ids):
            out[pid] = {k: 2 * cols[k][i] - 3 for k in names}  # 1 -> -1, 2 -> +1
    return out


def _column(x: Any) -> list:
    import numpy as np

    arr = np.asarray(x).reshape(-1)
    return arr.tolist()


def _image_folder(folder: Path) -> Path:
    """v1 copies keep images directly in the folder or inside an ``image/`` subfolder."""
    sub = folder / "image"
    return sub if sub.is_dir() else folder


def _attributes(root: Path, filename: str, options: dict[str, Any]) -> tuple[dict | None, str | None]:
    if not options.get("attributes", True):
        return None, None
    path = root / filename
    return (load_qut_attributes(path), str(path)) if path.is_file() else (None, None)


def _attribute_notes(recs: list[Record], attr_file: str | None) -> dict[str, Any]:
    if attr_file is None:
        return {"attribute_file": None}
    missing = sum(r.attributes is None for r in recs)
    if missing:
        import warnings

        warnings.warn(f"{attr_file}: {missing} image(s) have an identity absent from the attribute file", stacklevel=3)
    return {"attribute_file": attr_file, "images_without_attributes": missing}


def load_agreid_v1(root, protocol: str, **options: Any) -> DatasetSplit:
    check_options("agreid_v1", options, ("attributes",))
    if protocol not in V1_PROTOCOLS:
        raise DatasetError(f"agreid_v1: unknown protocol {protocol!r}; valid: {list(V1_PROTOCOLS)}")
    root = root_path(root, "agreid_v1", V1_TREE)
    attrs, attr_file = _attributes(root, "qut_attribute_v4_88_attributes.mat", options)
    parser = NameParser("agreid_v1", lambda p: parse_agreid_name(p, attrs), options.get("on_bad_name", "error"))
    qdir, gdir, desc = V1_PROTOCOLS[protocol]
    sets = {}
    for key, sub in (("train", "bounding_box_train"), ("query", qdir), ("gallery", gdir)):
        folder = _image_folder(require_dir(root / sub, f"agreid_v1 {key} set", V1_TREE))
        sets[key] = parser(list_images(folder))
    allrecs = sets["train"] + sets["query"] + sets["gallery"]
    notes = _attribute_notes(allrecs, attr_file)
    # Some v1 copies hold stray C2 (wearable) images: keep them as view 2, say so, and widen num_views.
    strays = sum(r.view == 2 for r in allrecs)
    if strays:
        import warnings

        warnings.warn(f"agreid_v1 at {root}: {strays} wearable (C2) image(s) found; read as view 2", stacklevel=2)
        notes["wearable_images"] = strays
    return assemble_split(
        "agreid_v1", protocol, root, sets["train"], sets["query"], sets["gallery"], 3 if strays else 2, desc,
        options, parser, notes,
    )


def _v2_root(root: Path) -> Path:
    """Accept ``ROOT`` or a doubled ``ROOT/AG-ReID.v2`` (some copies unpack one level deeper)."""
    if (root / "train_all").is_dir():
        return root
    for name in ("AG-ReID.v2", root.name):
        if (root / name / "train_all").is_dir():
            return root / name
    return root


def load_agreid_v2(root, protocol: str, **options: Any) -> DatasetSplit:
    check_options("agreid_v2", options, ("attributes",))
    if protocol not in V2_PROTOCOLS:
        raise DatasetError(f"agreid_v2: unknown protocol {protocol!r}; valid: {list(V2_PROTOCOLS)}")
    root = _v2_root(root_path(root, "agreid_v2", V2_TREE))
    attrs, attr_file = _attributes(root, "qut_attribute_v8.mat", options)
    parser = NameParser("agreid_v2", lambda p: parse_agreid_name(p, attrs), options.get("on_bad_name", "error"))
    train_dir = require_dir(root / "train_all", "agreid_v2 training set", V2_TREE)
    train = parser(list_images(train_dir, recursive=True))
    list_name, desc = V2_PROTOCOLS[protocol]
    query, gallery = _from_list(root, root / list_name, parser, V2_TREE)
    return assemble_split(
        "agreid_v2", protocol, root, train, query, gallery, 3, desc, options, parser,
        _attribute_notes(train + query + gallery, attr_file),
    )


def _from_list(root: Path, list_file: Path, parser: NameParser, tree: str) -> tuple[list[Record], list[Record]]:
    """Query/gallery records from an official list file (paths relative to the root)."""
    query, gallery = [], []
    for n, rel in read_list_file(list_file, tree):
        path = root / rel
        if not path.is_file():
            raise DatasetError(f"{list_file}:{n}: listed image {path} does not exist")
        recs = parser([path])
        (query if is_query_line(rel) else gallery).extend(recs)
    return query, gallery
