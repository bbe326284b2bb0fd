"""SynthAG reader: CARGO's layout plus per-image geometry and identity attributes from meta.csv.

The images are read by the CARGO reader (same names, same protocols); a record hook looks each
image up in ``ROOT/meta.csv`` and fills ``Record.view`` (wearable cameras are view 2 here, though
CARGO's name rule alone would call them ground), ``Record.altitude``, ``Record.scene``,
``Record.attributes`` (the identity's attributes) and ``Record.extra`` (pitch, elevation, distance,
yaw, heading, occlusion, native size, ...). Registered as dataset ``synthag``.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from agreid_kit.data.cargo import CARGO_PROTOCOLS, load_cargo
from agreid_kit.data.errors import DatasetError
from agreid_kit.data.records import DatasetSplit, Record
from agreid_kit.data.registry import register_dataset

# Keep in step with agreid_kit.synth.people.ATTRIBUTE_NAMES and agreid_kit.synth.generate.META_COLUMNS
# (not imported: the data package must not pull the renderer in).
_NUMERIC = ("altitude", "pitch", "elevation", "distance", "yaw", "relative_yaw", "occlusion", "native_height",
            "native_width", "sun_azimuth", "sun_elevation", "walk_phase", "x", "y")
_INTEGER = ("camera", "view", "scene", "pid", "index")
_TEXT = ("heading", "time", "occluder", "subset")
_GEOMETRY = ("pitch", "elevation", "distance", "yaw", "relative_yaw", "heading", "occluder", "occlusion",
             "native_height", "native_width", "sun_azimuth", "sun_elevation", "walk_phase", "x", "y", "camera",
             "index", "subset")


def read_synthag_meta(root: str | Path) -> dict[str, dict[str, Any]]:
    """meta.csv as {relative path: typed row}."""
    root = Path(root)
    path = root / "meta.csv"
    if not (root / "manifest.json").is_file() or not path.is_file():
        raise DatasetError(
            f"SynthAG root {root} has no manifest.json/meta.csv: it is not a complete SynthAG dataset. "
            f"Render it first: `agreid synth --preset small --out {root}`"
        )
    rows: dict[str, dict[str, Any]] = {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"path", "view", "camera", "altitude"} - set(reader.fieldnames or [])
        if missing:
            raise DatasetError(f"SynthAG {path}: missing column(s) {sorted(missing)}")
        for line_no, raw in enumerate(reader, start=2):
            try:
                row: dict[str, Any] = dict(raw)
                for k in _NUMERIC:
                    if k in row:
                        row[k] = float(row[k])
                for k in _INTEGER:
                    if k in row:
                        row[k] = int(row[k])
            except ValueError as e:
                raise DatasetError(f"SynthAG {path} line {line_no}: {e}") from e
            rows[row["path"]] = row
    return rows


def synthag_record_hook(root: str | Path) -> Callable[[Record], Record]:
    """A CARGO record hook attaching meta.csv's view, altitude, attributes and geometry."""
    root = Path(root).expanduser().resolve()
    meta = read_synthag_meta(root)
    attr_names: list[str] | None = None

    def hook(r: Record) -> Record:
        nonlocal attr_names
        rel = Path(r.path).resolve().relative_to(root).as_posix()
        row = meta.get(rel)
        if row is None:
            raise DatasetError(f"SynthAG image {r.path} has no row in {root / 'meta.csv'} (the dataset is incomplete "
                               "or edited)")
        if attr_names is None:
            known = set(_NUMERIC) | set(_INTEGER) | set(_TEXT) | {"path"}
            attr_names = [k for k in row if k not in known]
        return replace(
            r,
            view=int(row["view"]),
            altitude=float(row["altitude"]),
            scene=f"scene{row['scene']}",
            attributes={k: row[k] for k in attr_names},
            extra={k: row[k] for k in _GEOMETRY if k in row},
        )

    return hook


def load_synthag(root, protocol: str, **options: Any) -> DatasetSplit:
    """SynthAG under a CARGO protocol; records carry geometry (``extra``) and attributes."""
    if "record_hook" in options:
        raise DatasetError("dataset 'synthag': the record_hook option is set by the SynthAG reader itself")
    return load_cargo(root, protocol, record_hook=synthag_record_hook(root),
                      dataset_name=options.pop("dataset_name", "synthag"),
                      **options)


register_dataset(
    "synthag",
    load_synthag,
    {k: v[-1] for k, v in CARGO_PROTOCOLS.items()},
    "SynthAG: the kit's own rendered aerial-ground benchmark (CARGO layout + meta.csv geometry/attributes)",
)

__all__ = ["load_synthag", "read_synthag_meta", "synthag_record_hook"]
