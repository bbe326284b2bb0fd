"""The engine's view of data: loading a split from a data spec, the validation carve-out, loaders."""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from agreid_kit.data.records import DatasetSplit, Record, relabel_train


def load_split(data: str, protocol: str) -> DatasetSplit:
    """``data`` is a spec such as ``synthag:DIR`` or ``cargo:DIR`` (see agreid_kit.data.parse_data_spec)."""
    from agreid_kit import data as data_pkg

    if not data:
        raise ValueError("no dataset given: pass --data NAME:DIR (e.g. synthag:runs/synthag-small)")
    name, root = data_pkg.parse_data_spec(data)
    return data_pkg.load_dataset(name, root, protocol)


def all_test_records(data: str, first: DatasetSplit | None = None) -> list[Record]:
    """Test images of every protocol of the dataset (each path once, ``first``'s records first).

    One extraction then serves every protocol: evaluation takes pids/camids from the protocol's
    split and looks rows up by path, so protocols that collapse camera ids still score correctly.
    """
    from agreid_kit import data as data_pkg

    name, root = data_pkg.parse_data_spec(data)
    splits = [first] if first is not None else []
    for protocol in data_pkg.available_protocols(name):
        if first is not None and protocol == first.protocol:
            continue
        try:
            splits.append(data_pkg.load_dataset(name, root, protocol))
        except ValueError:
            # a protocol whose subset is empty in this copy of the data (e.g. no wearable images) has no images to add
            continue
    seen: set[str] = set()
    records: list[Record] = []
    for split in splits:
        for r in split.test_records:
            if r.path not in seen:
                seen.add(r.path)
                records.append(r)
    return records


def carve_validation(
    train: Sequence[Record], fraction: float, min_ids: int, seed: int
) -> tuple[list[Record], DatasetSplit | None, list[int]]:
    """Hold out ``max(min_ids, round(fraction * n_ids))`` train ids as a query/gallery split.

    Per held-out id, the first image (by path) of each camera is a query and the rest are the
    gallery; the evaluator drops same-id-same-camera gallery items, so positives are cross-camera.
    Returns (training records relabelled 0..N-1, validation split or None, held-out pids).
    Never touches the test set.
    """
    pids = sorted({r.pid for r in train})
    if fraction <= 0:
        return relabel_train(train), None, []
    n_val = max(min_ids, int(round(fraction * len(pids))))
    if n_val >= len(pids) - 1:
        raise ValueError(
            f"validation carve-out: {n_val} held-out ids leave {len(pids) - n_val} of {len(pids)} train ids to train "
            "on; "
            "lower val_fraction/min_val_ids (or set val_fraction=0)"
        )
    rng = np.random.default_rng(seed)
    held = sorted(int(p) for p in rng.choice(pids, size=n_val, replace=False))
    held_set = set(held)
    # Validation records keep the dataset pid; relabelling only matters for the classifier.
    val = validation_split([replace(r, raw_pid=r.raw_pid if r.raw_pid is not None else r.pid)
                            for r in train if r.pid in held_set])
    kept = [r for r in train if r.pid not in held_set]
    return relabel_train(kept), val, held


def validation_split(records: Sequence[Record]) -> DatasetSplit:
    """Held-out records as a query/gallery split: per identity, the first image (by path) of each
    camera is a query, the rest are the gallery (positives are then cross-camera)."""
    query, gallery, seen = [], [], set()
    for r in sorted(records, key=lambda r: r.path):
        key = (r.pid, r.camid)
        (gallery if key in seen else query).append(r)
        seen.add(key)
    if not gallery:
        raise ValueError("validation carve-out: held-out ids have one image per camera, so the gallery is empty")
    return DatasetSplit(dataset="validation", protocol="val", root="", train=[], query=query, gallery=gallery)


# The validation counterparts of the test protocols every aerial-ground dataset shares: the same query/gallery
# views and camid rule as CARGO's definitions (agreid_kit.data.cargo), applied to the held-out identities.
VALIDATION_PROTOCOLS = ("ALL", "A<->G", "A<->A", "G<->G")


def validation_protocol_split(records: Sequence[Record], protocol: str) -> DatasetSplit:
    """:func:`validation_split` under ``protocol``: ``A<->A`` / ``G<->G`` keep one view, ``A<->G`` sets
    camid = view so a query's same-view positives are junk and only cross-view matches count."""
    from agreid_kit.data.layout import by_view, with_camid

    if protocol not in VALIDATION_PROTOCOLS:
        raise ValueError(f"validation protocol must be one of {VALIDATION_PROTOCOLS}, got {protocol!r}")
    base = validation_split(records)
    q, g = base.query, base.gallery
    if protocol in ("A<->A", "G<->G"):
        view = 0 if protocol == "A<->A" else 1
        q, g = by_view(q, (view,)), by_view(g, (view,))
    elif protocol == "A<->G":
        q, g = with_camid(q, lambda r: r.view), with_camid(g, lambda r: r.view)
    return replace(base, protocol=f"val {protocol}", query=q, gallery=g)
