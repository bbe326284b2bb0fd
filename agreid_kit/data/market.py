"""Generic Market-1501-style reader: any dataset laid out like Market-1501, from the CLI, without code.

Layout (Market-1501, DukeMTMC-reID and most custom exports)::

    ROOT/
      bounding_box_train/   {pid}_c{cam}[anything].jpg   e.g. 0002_c1s1_000451_01.jpg
      query/                {pid}_c{cam}[anything].jpg
      bounding_box_test/    {pid}_c{cam}[anything].jpg   (the gallery)

The file name starts with the identity (digits, or ``-1``), then ``_c`` and the camera number; the
rest (Market's ``s<seq>_<frame>_<box>``, Duke's ``_f<frame>``) is ignored. ``.jpg .jpeg .png .bmp``.

Special identities follow the Market-1501 convention (its README and devkit):

- ``-1`` ("junk", badly detected boxes that must have no influence on the scores) is dropped from
  every set: removing an item from the gallery is exactly "no influence";
- ``0000`` ("distractors", false detections) stays in the gallery as a negative for every query;
  it is dropped from training (it is not one identity) and from the query set (it has no match).

``camid = camera number - 1`` (0-based, the id the same-pid-same-camera rule uses); ``raw_camid``
keeps the number in the name.

Aerial cameras: option ``aerial_cams`` (camera numbers as written in the names, e.g. ``"1,2"`` or
``[1, 2]``) marks those cameras' images ``view = 0`` (aerial); every other camera is ground
(``view = 1``). From the command line put the option in the data spec, after ``?``::

    agreid train --data "market:/data/MyDrone?aerial_cams=1,2" --protocol "A->G" ...
    agreid data info market:/data/MyDrone --option aerial_cams=1,2 --protocol ALL

Protocols: ``ALL`` (every query vs the full gallery, real camera ids) always; with aerial cameras
also CARGO's cross-view set: ``A->G``, ``G->A`` (one view's queries vs the other view's gallery),
``A<->G`` (all queries vs the full gallery with ``camid = view``, so same-view positives are removed),
``A<->G-strict`` (each query's own view removed from its gallery), ``A<->A``, ``G<->G``.

For layouts this reader does not cover, write a loader and ``register_dataset`` it (docs/CUSTOM_DATASETS.md).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from agreid_kit.data.errors import DatasetError
from agreid_kit.data.layout import (
    NameParser,
    assemble_split,
    by_view,
    check_options,
    list_images,
    require_dir,
    root_path,
    with_camid,
)
from agreid_kit.data.records import DatasetSplit, Record

MARKET_TREE = """ROOT/
  bounding_box_train/{pid}_c{cam}....jpg    e.g. 0002_c1s1_000451_01.jpg (pid 0002, camera 1)
  query/{pid}_c{cam}....jpg
  bounding_box_test/{pid}_c{cam}....jpg     the gallery; pid 0000 = distractor, -1 = junk (dropped)
options: aerial_cams=1,2 (camera numbers that are aerial; in a data spec: market:ROOT?aerial_cams=1,2)"""

SUBSETS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
_NAME_RE = re.compile(r"^(-1|\d+)_c(\d+)")
JUNK_PID, DISTRACTOR_PID = -1, 0

# name -> (query views, gallery views, camid mode, gallery rules, needs aerial cameras, description)
MARKET_PROTOCOLS: dict[str, tuple[tuple[int, ...], tuple[int, ...], str, list, bool, str]] = {
    "ALL": ((0, 1), (0, 1), "camera", [], False, "all queries vs the full gallery, real camera ids"),
    "A->G": ((0,), (1,), "camera", [], True, "aerial queries vs ground-only gallery (needs aerial_cams)"),
    "G->A": ((1,), (0,), "camera", [], True, "ground queries vs aerial-only gallery (needs aerial_cams)"),
    "A<->G": ((0, 1), (0, 1), "view", [], True,
              "all queries vs full gallery, camid = view: same-view positives removed (needs aerial_cams)"),
    "A<->G-strict": ((0, 1), (0, 1), "camera", [["exclude_same", "view"]], True,
                     "both directions, the query's own view removed from its gallery (needs aerial_cams)"),
    "A<->A": ((0,), (0,), "camera", [], True, "aerial queries vs aerial-only gallery (needs aerial_cams)"),
    "G<->G": ((1,), (1,), "camera", [], True, "ground queries vs ground-only gallery (needs aerial_cams)"),
}


def split_root_options(root: str | Path) -> tuple[str, dict[str, str]]:
    """``"ROOT?key=value&key2=value2"`` -> (ROOT, options). A root without ``?`` has no options."""
    root = str(root)
    if "?" not in root:
        return root, {}
    path, query = root.split("?", 1)
    options: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        if "=" not in part:
            raise DatasetError(f"market data spec {root!r}: option {part!r} after '?' must be KEY=VALUE, e.g. "
                               "aerial_cams=1,2")
        key, value = part.split("=", 1)
        options[key.strip()] = value.strip()
    return path, options


def parse_cameras(value: Any, option: str = "aerial_cams") -> tuple[int, ...]:
    """``"1,2"``, ``"1 2"``, ``1`` or ``[1, 2]`` -> (1, 2); anything else is an error naming the value."""
    if value is None or value == "":
        return ()
    items = value if isinstance(value, (list, tuple, set)) else re.split(r"[,\s]+", str(value).strip())
    try:
        cams = tuple(sorted({int(v) for v in items if str(v) != ""}))
    except (TypeError, ValueError):
        raise DatasetError(f"market: option {option}={value!r} must list camera numbers, e.g. {option}=1,2") from None
    if any(c < 0 for c in cams):
        raise DatasetError(f"market: option {option}={value!r}: camera numbers must be >= 0")
    return cams


def make_name_parser(aerial: tuple[int, ...]):
    """A parse function ``Path -> Record`` for ``{pid}_c{cam}...`` names (aerial cameras -> view 0)."""

    def parse(path: Path) -> Record:
        m = _NAME_RE.match(path.stem)
        if m is None:
            raise DatasetError(
                f"market file name {path.name!r} ({path}) does not parse: expected {{pid}}_c{{camera}}..., "
                "e.g. 0002_c1s1_000451_01.jpg"
            )
        pid, cam = int(m.group(1)), int(m.group(2))
        return Record(path=str(path), pid=pid, camid=cam - 1, view=0 if cam in aerial else 1, raw_camid=cam)

    return parse


def load_market(root, protocol: str, **options: Any) -> DatasetSplit:
    """Read a Market-1501-style tree under ``protocol`` (see the module docstring for options and rules)."""
    root, spec_options = split_root_options(root)
    options = {**spec_options, **options}  # an explicit keyword option wins over the spec's
    name = options.get("dataset_name") or "market"
    check_options(name, options, ("aerial_cams",))
    if protocol not in MARKET_PROTOCOLS:
        raise DatasetError(f"{name}: unknown protocol {protocol!r}; valid: {list(MARKET_PROTOCOLS)}")
    aerial = parse_cameras(options.get("aerial_cams"))
    qv, gv, cam_mode, rules, needs_aerial, desc = MARKET_PROTOCOLS[protocol]
    if needs_aerial and not aerial:
        raise DatasetError(
            f"{name}: protocol {protocol!r} needs to know which cameras are aerial: pass the option aerial_cams, "
            f"e.g. --data \"market:{root}?aerial_cams=1,2\" (or --option aerial_cams=1,2 for `agreid data info`)"
        )
    root = root_path(root, name, MARKET_TREE)
    parser = NameParser(name, make_name_parser(aerial), options.get("on_bad_name", "error"))
    sets = {}
    for subset, folder in SUBSETS.items():
        recs = parser(list_images(require_dir(root / folder, f"{name} {subset} set", MARKET_TREE)))
        drop = {JUNK_PID} if subset == "gallery" else {JUNK_PID, DISTRACTOR_PID}
        sets[subset] = [r for r in recs if r.pid not in drop]
    if aerial:
        seen = {r.raw_camid for rs in sets.values() for r in rs}
        unknown = sorted(set(aerial) - seen)
        if unknown:
            raise DatasetError(
                f"{name} at {root}: aerial_cams lists camera(s) {unknown} that no image names (cameras found: "
                f"{sorted(seen)})"
            )
    query, gallery = by_view(sets["query"], qv), by_view(sets["gallery"], gv)
    if cam_mode == "view":
        query = with_camid(query, lambda r: r.view)
        gallery = with_camid(gallery, lambda r: r.view)
    notes: dict[str, Any] = {"aerial_cams": list(aerial)}
    if rules:
        notes["gallery_rules"] = rules
    opts = {k: v for k, v in options.items() if k != "aerial_cams"}
    return assemble_split(name, protocol, root, sets["train"], query, gallery, 2, desc, opts, parser, notes)


__all__ = ["MARKET_PROTOCOLS", "MARKET_TREE", "load_market", "parse_cameras", "split_root_options"]
