"""CARGO reader (synthetic; 13 cameras: Cam1-5 aerial, Cam6-13 ground).

Layout ``ROOT/{train,query,gallery}/Cam{n}/Cam{n}_{day|night}_{pid}_{index}.jpg``. Every protocol
shares the training set; they differ in which query/gallery images take part and in what ``camid``
means (the real camera, ``n - 1``, or the view). ``raw_camid`` always keeps ``n``.

``A<->G-strict`` needs a per-query gallery restriction (drop every gallery image of the query's own
view). It keeps the full query/gallery lists and records the rule in
``split.options['gallery_rules'] = [['exclude_same', 'view']]``, which ``agreid_kit.eval`` applies
(``ranking_inputs`` / ``evaluate_split``). The result equals pooling the queries of ``A->G`` and
``G->A`` into one average.

``load_cargo`` also serves SynthAG (same layout): ``record_hook`` (Record -> Record) attaches
per-image metadata, ``dataset_name`` names the split.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from agreid_kit.data.errors import DatasetError
from agreid_kit.data.layout import (
    NameParser,
    apply_record_hook,
    assemble_split,
    by_view,
    check_options,
    list_images,
    require_dir,
    root_path,
    with_camid,
)
from agreid_kit.data.records import DatasetSplit, Record

NUM_CAMERAS = 13
AERIAL_CAMERAS = range(1, 6)
_NAME_RE = re.compile(r"^Cam(\d+)_(day|night)_(-?\d+)_(\d+)$")

CARGO_TREE = """ROOT/
  train/Cam{n}/Cam{n}_{day|night}_{pid}_{index}.jpg     n = 1..13 (1-5 aerial, 6-13 ground)
  query/Cam{n}/...
  gallery/Cam{n}/..."""

# name -> (query views, gallery views, camid mode, gallery rules, description)
CARGO_PROTOCOLS: dict[str, tuple[tuple[int, ...], tuple[int, ...], str, list, str]] = {
    "ALL": ((0, 1), (0, 1), "camera", [], "all queries vs the full gallery, real camera ids"),
    "A<->A": ((0,), (0,), "camera", [], "aerial queries vs aerial-only gallery"),
    "G<->G": ((1,), (1,), "camera", [], "ground queries vs ground-only gallery"),
    "A<->G": (
        (0, 1), (0, 1), "view", [],
        "VDT's cross-view protocol: all queries vs full gallery, camid = view, so same-view positives are "
        "removed and same-view negatives stay as distractors",
    ),
    "A->G": ((0,), (1,), "camera", [], "aerial queries vs ground-only gallery (SeCap/ViSA's 'A<->G')"),
    "G->A": ((1,), (0,), "camera", [], "ground queries vs aerial-only gallery"),
    "A<->G-strict": (
        (0, 1), (0, 1), "camera", [["exclude_same", "view"]],
        "both directions, every gallery image of the query's own view removed (SVPR's 'AGAG'; = A->G and G->A pooled)",
    ),
}


def parse_cargo_name(path: Path) -> Record:
    m = _NAME_RE.match(path.stem)
    if m is None:
        raise DatasetError(
            f"CARGO file name {path.name!r} ({path}) does not parse: expected "
            "Cam{n}_{day|night}_{pid}_{index}.jpg, "
            "e.g. Cam2_day_2519_320.jpg"
        )
    cam, time, pid = int(m.group(1)), m.group(2), int(m.group(3))
    if not 1 <= cam <= NUM_CAMERAS:
        raise DatasetError(f"CARGO file {path}: unknown camera Cam{cam}; expected Cam1..Cam{NUM_CAMERAS}")
    view = 0 if cam in AERIAL_CAMERAS else 1
    return Record(path=str(path), pid=pid, camid=cam - 1, view=view, raw_camid=cam, time=time)


def _read_subset(root: Path, subset: str, parser: NameParser) -> list[Record]:
    folder = require_dir(root / subset, f"CARGO {subset} set", CARGO_TREE)
    cams = sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: p.name)
    if not cams:
        raise DatasetError(f"CARGO {subset} folder {folder} has no Cam{{n}} subfolders. Expected layout:\n{CARGO_TREE}")
    records = []
    for cam_dir in cams:
        recs = parser(list_images(cam_dir))
        for r in recs:
            if f"Cam{r.raw_camid}" != cam_dir.name:
                raise DatasetError(f"CARGO file {r.path} names camera Cam{r.raw_camid} but lies in folder "
                                   f"{cam_dir.name}")
        records.extend(recs)
    return records


def load_cargo(root, protocol: str, **options: Any) -> DatasetSplit:
    name = options.get("dataset_name") or "cargo"
    check_options(name, options, ())
    if protocol not in CARGO_PROTOCOLS:
        raise DatasetError(f"{name}: unknown protocol {protocol!r}; valid: {list(CARGO_PROTOCOLS)}")
    root = root_path(root, name, CARGO_TREE)
    parser = NameParser(name, parse_cargo_name, options.get("on_bad_name", "error"))
    train, query, gallery = (_read_subset(root, s, parser) for s in ("train", "query", "gallery"))
    hook = options.get("record_hook")
    if hook is not None:
        # Apply the hook before protocol filtering so it can see (and set) every record's fields.
        train, query, gallery = ([apply_record_hook(hook, r) for r in rs] for rs in (train, query, gallery))
        options = {k: v for k, v in options.items() if k != "record_hook"}
    qv, gv, cam_mode, rules, desc = CARGO_PROTOCOLS[protocol]
    query, gallery = by_view(query, qv), by_view(gallery, gv)
    if cam_mode == "view":
        query = with_camid(query, lambda r: r.view)
        gallery = with_camid(gallery, lambda r: r.view)
    notes = {"gallery_rules": rules} if rules else None
    return assemble_split(name, protocol, root, train, query, gallery, 2, desc, options, parser, notes)


__all__ = ["CARGO_PROTOCOLS", "load_cargo", "parse_cargo_name", "CARGO_TREE"]
