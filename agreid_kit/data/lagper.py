"""LAGPeR and G2APS-ReID readers: a training folder plus official query/gallery list files.

LAGPeR names match ``([-\\d]+)_c([-\\d]+)`` (first match on the path relative to the root): pid, raw
camera. Raw cameras are 1-9 and 11-22 (7 scenes x 3); aerial ones are {3, 6, 9, 13, 16, 19, 22};
raw ids above 10 shift down by one so ``camid`` runs 1..21. Training drops pid -1 (counted).

G2APS names match ``([-\\d]+)_c(\\d)v(\\d)``: c0 aerial, any other c ground; ``camid`` = view.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

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

LAGPER_AERIAL = frozenset({3, 6, 9, 13, 16, 19, 22})
LAGPER_CAMERAS = frozenset(set(range(1, 10)) | set(range(11, 23)))
_LAGPER_RE = re.compile(r"([-\d]+)_c([-\d]+)")
_G2APS_RE = re.compile(r"([-\d]+)_c(\d)v(\d)")

LAGPER_TREE = """ROOT/
  bounding_box_train/<subfolder>/{pid}_c{cam}....jpg
  <test image folders named in the list files, e.g. query*/..., bounding_box_test*/...>
  exp1_A2G.txt  exp2_G2A.txt  exp3_A2G+.txt  exp4_G2A+.txt  exp5_G2A+G.txt"""

G2APS_TREE = """ROOT/
  bounding_box_train/<subfolder>/{pid}_c{cam}v{n}....jpg
  <test image folders named in the list files>
  exp3_A2G+.txt  exp4_G2A+.txt"""

LAGPER_PROTOCOLS = {
    "A->G": ("exp3_A2G+.txt", "aerial queries vs ground gallery (official exp3, 'A2G+'; published numbers)"),
    "G->A": ("exp4_G2A+.txt", "ground queries vs aerial gallery (official exp4, 'G2A+'; published numbers)"),
    "G->A+G": ("exp5_G2A+G.txt", "ground queries vs aerial + ground gallery (official exp5; published numbers)"),
    "A->G-exp1": ("exp1_A2G.txt", "aerial queries vs ground gallery, the smaller exp1 list"),
    "G->A-exp2": ("exp2_G2A.txt", "ground queries vs aerial gallery, the smaller exp2 list"),
}
G2APS_PROTOCOLS = {
    "A->G": ("exp3_A2G+.txt", "aerial queries vs ground gallery (official exp3 list)"),
    "G->A": ("exp4_G2A+.txt", "ground queries vs aerial gallery (official exp4 list)"),
}


def parse_lagper_name(path: Path, root: Path) -> Record:
    rel = _rel(path, root)
    m = _LAGPER_RE.search(rel)
    if m is None:
        raise DatasetError(f"LAGPeR path {rel!r} ({path}) does not parse: expected <pid>_c<camera>..., e.g. "
                           "0012_c3_0001.jpg")
    pid, cam = int(m.group(1)), int(m.group(2))
    if cam not in LAGPER_CAMERAS:
        raise DatasetError(f"LAGPeR file {path}: unknown camera c{cam}; expected 1-9 or 11-22")
    camid = cam - 1 if cam > 10 else cam
    return Record(
        path=str(path), pid=pid, camid=camid, view=0 if cam in LAGPER_AERIAL else 1, raw_camid=cam,
        scene=f"scene{(camid - 1) // 3 + 1}",
    )


def parse_g2aps_name(path: Path, root: Path) -> Record:
    rel = _rel(path, root)
    m = _G2APS_RE.search(rel)
    if m is None:
        raise DatasetError(f"G2APS path {rel!r} ({path}) does not parse: expected <pid>_c<cam>v<n>..., e.g. "
                           "0012_c0v1_0001.jpg")
    pid, cam = int(m.group(1)), int(m.group(2))
    view = 0 if cam == 0 else 1
    return Record(path=str(path), pid=pid, camid=view, view=view, raw_camid=cam, extra={"v": int(m.group(3))})


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def _load(
    name: str, root, protocol: str, protocols: dict, tree: str,
    parse: Callable[[Path, Path], Record], options: dict[str, Any],
) -> DatasetSplit:
    check_options(name, options, ())
    if protocol not in protocols:
        raise DatasetError(f"{name}: unknown protocol {protocol!r}; valid: {list(protocols)}")
    root = root_path(root, name, tree)
    parser = NameParser(name, lambda p: parse(p, root), options.get("on_bad_name", "error"))
    train_dir = require_dir(root / "bounding_box_train", f"{name} training set", tree)
    train_all = parser(list_images(train_dir, recursive=True))
    train = [r for r in train_all if r.pid != -1]
    list_file, desc = protocols[protocol]
    query, gallery = [], []
    for n, rel in read_list_file(root / list_file, tree):
        path = root / rel
        if not path.is_file():
            raise DatasetError(f"{root / list_file}:{n}: listed image {path} does not exist")
        (query if is_query_line(rel) else gallery).extend(parser([path]))
    notes = {
        "list_file": list_file,
        "train_dropped_pid_minus1": len(train_all) - len(train),
        "test_images_pid_minus1": sum(r.pid == -1 for r in query + gallery),
    }
    return assemble_split(name, protocol, root, train, query, gallery, 2, desc, options, parser, notes)


def load_lagper(root, protocol: str, **options: Any) -> DatasetSplit:
    return _load("lagper", root, protocol, LAGPER_PROTOCOLS, LAGPER_TREE, parse_lagper_name, options)


def load_g2aps(root, protocol: str, **options: Any) -> DatasetSplit:
    return _load("g2aps", root, protocol, G2APS_PROTOCOLS, G2APS_TREE, parse_g2aps_name, options)
