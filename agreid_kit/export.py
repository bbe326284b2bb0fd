"""Feature export (.npy / .mat / .csv) and feature extraction over a plain image folder.

``export_features(fs, OUT, "npy" | "mat" | "csv")`` writes a FeatureSet's descriptors with each
record's path, pid, camid and view alongside, for tools outside the kit (MATLAB evaluation kits,
scikit-learn, spreadsheets):

- ``npy``: ``<name>_features.npy`` (N, D) float32 and ``<name>_records.csv`` (index, path, pid,
  camid, view, raw_camid), the CSV's rows in the array's row order;
- ``mat``: ``<name>.mat`` (scipy.io.savemat) with ``features`` (N, D) single, ``pid``, ``camid``,
  ``view`` (N, 1) int64 columns and ``path`` (N, 1) cell array of char;
- ``csv``: ``<name>.csv`` with path, pid, camid, view, raw_camid then ``f0 .. f{D-1}``.

``extract_folder(run, FOLDER)`` embeds every image file under FOLDER (recursively; .jpg .jpeg .png
.bmp, sorted by path) with the run's model. A plain folder has no identities or cameras, so its
records follow one convention: ``pid = -1`` and ``camid = -1`` (unknown; such features cannot be
scored by the evaluator, only compared or exported) and ``view`` as given (default 1 = ground,
0 = aerial, 2 = wearable), since the model's view-aware parts need one.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

EXPORT_FORMATS = ("npy", "mat", "csv")
RECORD_FIELDS = ("path", "pid", "camid", "view", "raw_camid")


def _record_rows(records) -> list[list[Any]]:
    return [[r.path, r.pid, r.camid, r.view, "" if r.raw_camid is None else r.raw_camid] for r in records]


def export_features(fs, out_dir: str | os.PathLike, fmt: str, mode: str = "real",
                    name: str | None = None) -> list[Path]:
    """Write FeatureSet ``fs``'s ``mode`` descriptors (see ``FeatureSet.descriptor``) to ``out_dir`` as ``fmt``.

    ``name`` defaults to the FeatureSet's split name (``test``, ``train``, ``folder``). Every file is
    written atomically. Returns the paths written.
    """
    from agreid_kit.utils.io import atomic_path, atomic_write_text

    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"export: unknown format {fmt!r}; expected one of {EXPORT_FORMATS}")
    out = Path(out_dir)
    name = name or fs.split
    feats = fs.descriptor(mode).detach().float().cpu().numpy()
    rows = _record_rows(fs.records)
    written: list[Path] = []
    if fmt == "npy":
        path = out / f"{name}_features.npy"
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, feats)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(("index", *RECORD_FIELDS))
        w.writerows([i, *row] for i, row in enumerate(rows))
        atomic_write_text(out / f"{name}_records.csv", buf.getvalue())
        written += [path, out / f"{name}_records.csv"]
    elif fmt == "mat":
        from scipy.io import savemat

        path = out / f"{name}.mat"
        paths = np.empty((len(rows), 1), dtype=object)
        paths[:, 0] = [r.path for r in fs.records]  # an object array becomes a MATLAB cell array
        data = {
            "features": feats,
            "pid": np.array([[r.pid] for r in fs.records], dtype=np.int64).reshape(-1, 1),
            "camid": np.array([[r.camid] for r in fs.records], dtype=np.int64).reshape(-1, 1),
            "view": np.array([[r.view] for r in fs.records], dtype=np.int64).reshape(-1, 1),
            "path": paths,
            "mode": mode,
        }
        with atomic_path(path) as tmp:
            # A file object: savemat would otherwise append ".mat" to the temporary name.
            with open(tmp, "wb") as fh:
                savemat(fh, data, do_compression=True)
        written.append(path)
    else:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow((*RECORD_FIELDS, *(f"f{j}" for j in range(feats.shape[1]))))
        for row, f in zip(rows, feats):
            w.writerow((*row, *(f"{v:.7g}" for v in f)))
        path = out / f"{name}.csv"
        atomic_write_text(path, buf.getvalue())
        written.append(path)
    return written


def folder_records(folder: str | os.PathLike, view: int = 1) -> list:
    """One ``Record`` per image file under ``folder`` (recursive, sorted): pid = camid = -1, ``view`` as given."""
    from agreid_kit.data.layout import IMAGE_EXTENSIONS, list_images
    from agreid_kit.data.records import Record

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ValueError(f"extract --folder: {root} is not a folder")
    if view not in (0, 1, 2):
        raise ValueError(f"extract --view: must be 0 (aerial), 1 (ground) or 2 (wearable), got {view!r}")
    paths = list_images(root, recursive=True)
    if not paths:
        raise ValueError(f"extract --folder: no image files ({', '.join(IMAGE_EXTENSIONS)}) under {root}")
    return [Record(path=str(p.resolve()), pid=-1, camid=-1, view=view) for p in paths]


def extract_folder(run, folder: str | os.PathLike, view: int = 1, batch_size: int = 128, num_workers: int = 2,
                   out_stem: str | os.PathLike | None = None):
    """Embed every image under ``folder`` with the run's model -> FeatureSet (split ``folder``).

    Saved to ``out_stem`` (``<stem>.safetensors`` + ``<stem>.json``) when given. Images that cannot
    be decoded raise the loader's error naming the file.
    """
    import dataclasses

    from agreid_kit.engine.extract import embed_records
    from agreid_kit.engine.run import Run, load_run
    from agreid_kit.features import FeatureSet, compute_fingerprint, records_manifest

    if not isinstance(run, Run):
        run = load_run(run)
    records = folder_records(folder, view)
    model = run.model
    device = next(model.parameters()).device
    out = embed_records(model, records, batch_size, num_workers, device, desc="extract folder")
    features = out.pop("features")
    fingerprint = compute_fingerprint(dataclasses.asdict(model.config), run.checkpoint_path, records_manifest(records))
    fs = FeatureSet(
        features=features, records=records, split="folder", fingerprint=fingerprint, extras=out,
        meta={"method": run.method, "run": str(run.dir), "folder": str(Path(folder).resolve()), "view": view,
              "labels": "pid = camid = -1 (a plain folder has no identities or cameras)"},
    )
    if out_stem is not None:
        fs.save(out_stem)
    return fs


def export_many(fs, out_dir: str | os.PathLike, formats: Sequence[str], mode: str = "real",
                name: str | None = None) -> list[Path]:
    """``export_features`` for each format in ``formats``; returns every path written."""
    paths: list[Path] = []
    for fmt in formats:
        paths += export_features(fs, out_dir, fmt, mode=mode, name=name)
    return paths


__all__ = ["export_features", "export_many", "extract_folder", "folder_records", "EXPORT_FORMATS"]
