"""Dataset registry: one name per dataset, each with its reader and protocols.

``load_dataset("cargo", ROOT, "A<->G")`` returns a ``DatasetSplit``; ``available_protocols(name)``
lists protocol names, ``DATASETS[name].protocols`` maps them to one-line descriptions.
``agreid_kit.data.synthag`` (when present) registers itself on import.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Callable

from agreid_kit.data.errors import DatasetError
from agreid_kit.data.records import DatasetSplit


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    loader: Callable[..., DatasetSplit]
    protocols: dict[str, str]  # protocol name -> one-line description
    description: str


DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(
    name: str,
    loader: Callable[..., DatasetSplit],
    protocols: dict[str, str] | list[str],
    description: str,
) -> None:
    """Register ``loader(root, protocol, **options) -> DatasetSplit`` under ``name``.

    ``protocols`` maps each protocol name to a one-line description (a plain list is accepted and
    gets empty descriptions). Re-registering a name replaces it (so a module reload is harmless).
    """
    if not isinstance(protocols, dict):
        protocols = {p: "" for p in protocols}
    if not protocols:
        raise ValueError(f"register_dataset({name!r}): at least one protocol is required")
    DATASETS[name] = DatasetEntry(name, loader, dict(protocols), description)


def _entry(name: str) -> DatasetEntry:
    _ensure_builtin()
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; valid: {sorted(DATASETS)}")
    return DATASETS[name]


def available_protocols(name: str) -> list[str]:
    return list(_entry(name).protocols)


def protocol_descriptions(name: str) -> dict[str, str]:
    return dict(_entry(name).protocols)


def load_dataset(name: str, root: str | os.PathLike, protocol: str, **options: Any) -> DatasetSplit:
    entry = _entry(name)
    if protocol not in entry.protocols:
        raise DatasetError(f"dataset {name!r}: unknown protocol {protocol!r}; valid: {list(entry.protocols)}")
    return entry.loader(root, protocol, **options)


def parse_data_spec(spec: str) -> tuple[str, str]:
    """``"name:ROOT"`` -> (name, root). Only the first ``:`` splits, so Windows drive letters in ROOT survive."""
    _ensure_builtin()
    if ":" not in spec:
        raise DatasetError(f"data spec {spec!r} must be NAME:ROOT, e.g. cargo:/data/CARGO; datasets: "
                           f"{sorted(DATASETS)}")
    name, root = spec.split(":", 1)
    if name not in DATASETS:
        raise DatasetError(f"data spec {spec!r}: unknown dataset {name!r}; valid: {sorted(DATASETS)}")
    if not root:
        raise DatasetError(f"data spec {spec!r}: the root folder after ':' is empty")
    return name, root


_BUILTIN_DONE = False


def _ensure_builtin() -> None:
    """Register the built-in readers (and synthag when its module exists) once."""
    global _BUILTIN_DONE
    if _BUILTIN_DONE:
        return
    _BUILTIN_DONE = True
    from agreid_kit.data import agreid, cargo, cp2108, lagper, market

    register_dataset(
        "agreid_v1", agreid.load_agreid_v1, {k: v[2] for k, v in agreid.V1_PROTOCOLS.items()},
        "AG-ReID.v1: 388 ids, UAV + CCTV (official folders; optional QUT attributes)",
    )
    register_dataset(
        "agreid_v2", agreid.load_agreid_v2, {k: v[1] for k, v in agreid.V2_PROTOCOLS.items()},
        "AG-ReID.v2: 1,615 ids, UAV + CCTV + wearable (official exp list files)",
    )
    register_dataset(
        "cargo", cargo.load_cargo, {k: v[-1] for k, v in cargo.CARGO_PROTOCOLS.items()},
        "CARGO: synthetic, 5,000 ids, 13 cameras (Cam1-5 aerial, Cam6-13 ground)",
    )
    register_dataset(
        "lagper", lagper.load_lagper, {k: v[1] for k, v in lagper.LAGPER_PROTOCOLS.items()},
        "LAGPeR: 4,231 ids, 21 cameras in 7 scenes (official exp list files)",
    )
    register_dataset(
        "g2aps", lagper.load_g2aps, {k: v[1] for k, v in lagper.G2APS_PROTOCOLS.items()},
        "G2APS-ReID: 2,788 ids (official exp3/exp4 list files)",
    )
    register_dataset(
        "cp2108", cp2108.load_cp2108, {k: v[-1] for k, v in cp2108.CP2108_PROTOCOLS.items()},
        "CP2108: 2,108 ids, 17 UAVs + 22 CCTVs, attributes; option time_mode=mix|cross|same",
    )
    register_dataset(
        "market", market.load_market, {k: v[-1] for k, v in market.MARKET_PROTOCOLS.items()},
        "any Market-1501-style tree (bounding_box_train/, query/, bounding_box_test/); option aerial_cams=1,2",
    )
    if importlib.util.find_spec("agreid_kit.data.synthag") is not None:
        importlib.import_module("agreid_kit.data.synthag")
