"""Contact sheets of a SynthAG dataset: one identity across cameras, many identities per camera.

Both return a PIL image (optionally saved as PNG); ``contact_sheet_figure`` wraps one in a plotly
figure for the notebooks and the app.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from agreid_kit.synth.generate import read_manifest, read_meta
from agreid_kit.utils.io import atomic_path

_LABEL_H = 14
_GAP = 2
_VIEW = {0: "aerial", 1: "ground", 2: "wearable"}


def _camera_label(cam: dict) -> str:
    return f"Cam{cam['camid']} {_VIEW[cam['view']]} {cam['altitude']:.0f}m {cam['pitch']:.0f}deg"


def _grid(cells: list[list[Image.Image | None]], col_labels: list[str], row_labels: list[str],
          tile: tuple[int, int]) -> Image.Image:
    th, tw = tile
    font = ImageFont.load_default()
    left = 96 if any(row_labels) else 0
    rows, cols = len(cells), max((len(r) for r in cells), default=0)
    sheet = Image.new("RGB", (left + cols * (tw + _GAP), _LABEL_H * 2 + rows * (th + _GAP)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for j, text in enumerate(col_labels):
        # Two short lines so the label fits over a 128-pixel column.
        words = text.split(" ")
        draw.text((left + j * (tw + _GAP) + 2, 0), " ".join(words[:2]), fill=(0, 0, 0), font=font)
        draw.text((left + j * (tw + _GAP) + 2, _LABEL_H - 2), " ".join(words[2:]), fill=(60, 60, 60), font=font)
    for i, row in enumerate(cells):
        y = _LABEL_H * 2 + i * (th + _GAP)
        if row_labels and row_labels[i]:
            draw.text((2, y + th // 2 - 6), row_labels[i], fill=(0, 0, 0), font=font)
        for j, img in enumerate(row):
            if img is not None:
                sheet.paste(img.convert("RGB").resize((tw, th)), (left + j * (tw + _GAP), y))
    return sheet


def _save(img: Image.Image, out: str | os.PathLike | None) -> None:
    if out is not None:
        with atomic_path(out) as tmp:
            img.save(tmp, format="PNG")


def contact_sheet_identity(
    root: str | os.PathLike, pid: int, per_camera: int = 3, tile: tuple[int, int] = (256, 128),
    out: str | os.PathLike | None = None,
) -> Image.Image:
    """Identity ``pid`` in every camera (columns, aerial first), up to ``per_camera`` images each (rows)."""
    root = Path(root)
    cams = read_manifest(root)["cameras"]
    rows = [r for r in read_meta(root) if int(r["pid"]) == int(pid)]
    if not rows:
        raise ValueError(f"identity {pid} has no images in {root / 'meta.csv'}")
    by_cam: dict[int, list[dict]] = defaultdict(list)
    for r in sorted(rows, key=lambda r: int(r["index"])):
        by_cam[int(r["camera"])].append(r)
    cells = [[(Image.open(root / by_cam[c["camid"]][i]["path"]) if i < len(by_cam[c["camid"]]) else None) for c in cams]
             for i in range(per_camera)]
    sheet = _grid(cells, [_camera_label(c) for c in cams], [], tile)
    _save(sheet, out)
    return sheet


def contact_sheet_cameras(
    root: str | os.PathLike, n_ids: int = 8, subset: str | None = None, seed: int = 0,
    tile: tuple[int, int] = (128, 64),
    out: str | os.PathLike | None = None,
) -> Image.Image:
    """``n_ids`` identities (columns) in every camera (rows, aerial first): one image each where seen."""
    root = Path(root)
    cams = read_manifest(root)["cameras"]
    rows = read_meta(root)
    if subset is not None:
        rows = [r for r in rows if r["subset"] == subset]
    pids = sorted({int(r["pid"]) for r in rows})
    if not pids:
        raise ValueError(f"no images in subset {subset!r} of {root}")
    chosen = sorted(np.random.default_rng(seed).choice(pids, size=min(n_ids, len(pids)), replace=False).tolist())
    first: dict[tuple[int, int], dict] = {}
    for r in sorted(rows, key=lambda r: int(r["index"])):
        first.setdefault((int(r["camera"]), int(r["pid"])), r)
    cells = [[(Image.open(root / first[(c["camid"], p)]["path"]) if (c["camid"], p) in first else None) for p in chosen]
             for c in cams]
    sheet = _grid(cells, [f"id {p}" for p in chosen], [_camera_label(c).replace(" ", "\n", 1) for c in cams], tile)
    _save(sheet, out)
    return sheet


def contact_sheet_figure(sheet: Image.Image, title: str = "SynthAG contact sheet"):
    """A plotly figure showing a contact sheet at its pixel size."""
    import plotly.graph_objects as go

    arr = np.asarray(sheet.convert("RGB"))
    fig = go.Figure(go.Image(z=arr))
    fig.update_layout(title=title, width=min(1600, arr.shape[1] + 60), height=min(2400, arr.shape[0] + 80),
                      margin=dict(l=10, r=10, t=40, b=10))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig
