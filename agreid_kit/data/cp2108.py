"""CP2108 reader (2,108 ids; 17 UAVs + 22 CCTVs; identity attributes; cross-time identities).

Two layouts are accepted:
- the authors' code: ``ROOT/split_v100/{train,query,gallery}_v100.txt`` + ``ROOT/images_v100/<path>``;
- the public download: ``ROOT/{train,query,gallery}.txt`` + ``ROOT/images/<path>``.
Each list line starts with an image path relative to the image folder. File names are
``{pid}_{cam}_{time}_{scene}...``; cameras 1-22 are ground (CCTV), 23-39 aerial (UAV).

Time modes act per query, so they are stored as gallery rules in ``split.options['gallery_rules']``
(applied by ``agreid_kit.eval``): ``mix`` (none), ``cross`` (drop gallery images with the query's
time id), ``same`` (keep only gallery images with the query's time id). ``A<->G-strict`` adds
``exclude_same view`` the same way.

Attributes (optional): ``attribute_file`` = JSON ``{"{pid}_{view}_{time}": {attribute: value}}`` and
``attribute_map_file`` = JSON ``{attribute: {value: index}}``; Record.attributes gets the indices.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agreid_kit.data.errors import DatasetError
from agreid_kit.data.layout import (
    NameParser,
    assemble_split,
    by_view,
    check_options,
    read_list_file,
    root_path,
)
from agreid_kit.data.records import DatasetSplit, Record

NUM_GROUND = 22
NUM_CAMERAS = 39

CP2108_TREE = """ROOT/                                  (public download)
  train.txt  query.txt  gallery.txt      one image path per line, relative to images/
  images/<path>/{pid}_{cam}_{time}_{scene}....jpg
or (authors' code)
ROOT/
  split_v100/train_v100.txt  split_v100/query_v100.txt  split_v100/gallery_v100.txt
  images_v100/<path>"""

CP2108_PROTOCOLS = {
    "ALL": ((0, 1), (0, 1), [], "all queries vs the full gallery"),
    "A->G": ((0,), (1,), [], "aerial (UAV) queries vs ground (CCTV) gallery"),
    "G->A": ((1,), (0,), [], "ground (CCTV) queries vs aerial (UAV) gallery"),
    "A<->A": ((0,), (0,), [], "aerial queries vs aerial gallery"),
    "G<->G": ((1,), (1,), [], "ground queries vs ground gallery"),
    "A<->G-strict": (
        (0, 1), (0, 1), [["exclude_same", "view"]],
        "both directions, every gallery image of the query's own view removed (= A->G and G->A pooled)",
    ),
}
TIME_MODES = {
    "mix": [],
    "cross": [["exclude_same", "time"]],
    "same": [["require_same", "time"]],
}
_VIEW_TOKENS = {"0": 0, "aerial": 0, "a": 0, "uav": 0, "drone": 0, "1": 1, "ground": 1, "g": 1, "cctv": 1}


def _layout(root: Path) -> tuple[dict[str, Path], Path]:
    if (root / "split_v100").is_dir() or (root / "images_v100").is_dir():
        lists = {s: root / "split_v100" / f"{s}_v100.txt" for s in ("train", "query", "gallery")}
        images = root / "images_v100"
    else:
        lists = {s: root / f"{s}.txt" for s in ("train", "query", "gallery")}
        images = root / "images"
    if not images.is_dir():
        raise DatasetError(f"cp2108: image folder {images} is missing. Expected layout:\n{CP2108_TREE}")
    return lists, images


def parse_cp2108_name(path: Path) -> Record:
    parts = path.stem.split("_")
    if len(parts) < 4:
        raise DatasetError(
            f"CP2108 file name {path.name!r} ({path}) does not parse: expected {{pid}}_{{cam}}_{{time}}_{{scene}}..."
        )
    try:
        pid, cam = int(parts[0]), int(parts[1])
    except ValueError:
        raise DatasetError(f"CP2108 file name {path.name!r} ({path}): pid and camera must be integers") from None
    if not 1 <= cam <= NUM_CAMERAS:
        raise DatasetError(f"CP2108 file {path}: unknown camera {cam}; expected 1-22 (CCTV) or 23-39 (UAV)")
    view = 1 if cam <= NUM_GROUND else 0
    return Record(path=str(path), pid=pid, camid=cam - 1, view=view, raw_camid=cam, time=parts[2], scene=parts[3])


def load_cp2108_attributes(attr_file: Path, map_file: Path | None) -> dict[tuple[int, int, str], dict[str, Any]]:
    def read(p: Path) -> Any:
        if not p.is_file():
            raise DatasetError(f"cp2108: attribute file {p} does not exist")
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DatasetError(f"cp2108: attribute file {p} is not valid JSON: {e}") from e

    raw, value_map = read(attr_file), (read(map_file) if map_file is not None else None)
    out = {}
    for key, attrs in raw.items():
        fields = str(key).split("_", 2)
        if len(fields) != 3 or fields[1].lower() not in _VIEW_TOKENS or not fields[0].lstrip("-").isdigit():
            raise DatasetError(f"cp2108: attribute file {attr_file}: key {key!r} is not pid_view_time (view "
                               "aerial/ground/0/1)")
        if not isinstance(attrs, dict):
            raise DatasetError(f"cp2108: attribute file {attr_file}: value of {key!r} must be an object of attributes")
        if value_map is not None:
            mapped = {}
            for a, v in attrs.items():
                if a not in value_map or str(v) not in value_map[a]:
                    raise DatasetError(
                        f"cp2108: attribute {a!r} = {v!r} (key {key!r}) has no index in map file {map_file}"
                    )
                mapped[a] = int(value_map[a][str(v)])
            attrs = mapped
        out[(int(fields[0]), _VIEW_TOKENS[fields[1].lower()], fields[2])] = attrs
    return out


def load_cp2108(root, protocol: str, **options: Any) -> DatasetSplit:
    check_options("cp2108", options, ("time_mode", "attribute_file", "attribute_map_file"))
    if protocol not in CP2108_PROTOCOLS:
        raise DatasetError(f"cp2108: unknown protocol {protocol!r}; valid: {list(CP2108_PROTOCOLS)}")
    time_mode = options.get("time_mode", "mix")
    if time_mode not in TIME_MODES:
        raise DatasetError(f"cp2108: unknown time_mode {time_mode!r}; valid: {list(TIME_MODES)}")
    root = root_path(root, "cp2108", CP2108_TREE)
    lists, images = _layout(root)
    attrs = None
    if options.get("attribute_file"):
        mf = options.get("attribute_map_file")
        attrs = load_cp2108_attributes(Path(options["attribute_file"]), Path(mf) if mf else None)
    parser = NameParser("cp2108", parse_cp2108_name, options.get("on_bad_name", "error"))
    sets: dict[str, list[Record]] = {}
    missing_attr = 0
    for subset, list_file in lists.items():
        recs = []
        for n, rel in read_list_file(list_file, CP2108_TREE):
            path = images / rel
            if not path.is_file():
                raise DatasetError(f"{list_file}:{n}: listed image {path} does not exist")
            for r in parser([path]):
                if attrs is not None:
                    a = attrs.get((r.pid, r.view, r.time))
                    missing_attr += a is None
                    r = Record(**{**r.to_dict(), "attributes": a})
                recs.append(r)
        sets[subset] = recs
    qv, gv, rules, desc = CP2108_PROTOCOLS[protocol]
    query, gallery = by_view(sets["query"], qv), by_view(sets["gallery"], gv)
    rules = rules + TIME_MODES[time_mode]
    if time_mode != "mix":
        desc += f"; time mode {time_mode}"
    notes: dict[str, Any] = {"time_mode": time_mode, "layout": images.name}
    if rules:
        notes["gallery_rules"] = rules
    if attrs is not None:
        notes["images_without_attributes"] = missing_attr
        if missing_attr:
            import warnings

            warnings.warn(f"cp2108: {missing_attr} image(s) have no entry in {options['attribute_file']}", stacklevel=2)
    return assemble_split("cp2108", protocol, root, sets["train"], query, gallery, 2, desc, options, parser, notes)
