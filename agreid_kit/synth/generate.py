"""Writing a SynthAG dataset: plan, render in parallel, resume, manifest.

Layout (CARGO's, so the CARGO reader and every CARGO protocol work unchanged)::

    OUT/{train,query,gallery}/Cam{n}/Cam{n}_{day|night}_{pid}_{index}.jpg   aerial Cam1..CamA, ground from Cam6
    OUT/meta.csv        one row per image: camera, view, geometry, time, occlusion, identity attributes
    OUT/manifest.json   generator version, parameters, seed, cameras, counts, content hash
    OUT/difficulty.json training-free baseline on ALL / G<->G / A<->A / A<->G (see difficulty.py)

Every image is seeded from (seed, pid, index), never from worker order, so any worker count gives
byte-identical files. While rendering, ``OUT/.synthag-run.json`` (the parameters) and
``OUT/.synthag-journal.jsonl`` (one line per finished image) let an interrupted run resume; both
are removed once the manifest is written.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from agreid_kit.synth.cameras import Camera, build_cameras
from agreid_kit.synth.people import ATTRIBUTE_NAMES, draw_identity
from agreid_kit.synth.presets import SynthConfig, make_config
from agreid_kit.synth.render import RenderSettings, render_image
from agreid_kit.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_file, sha256_json

GENERATOR_VERSION = "synthag-1.0"
MANIFEST = "manifest.json"
META = "meta.csv"
RUN_FILE = ".synthag-run.json"
JOURNAL = ".synthag-journal.jsonl"
DIFFICULTY = "difficulty.json"
SUBSETS = ("train", "query", "gallery")
META_GEOMETRY = (
    "camera", "view", "scene", "altitude", "pitch", "elevation", "distance", "yaw", "relative_yaw", "heading", "time",
    "occluder", "occlusion", "native_height", "native_width", "sun_azimuth", "sun_elevation", "walk_phase", "x", "y",
)
META_COLUMNS = ("path", "subset", "pid", "index") + META_GEOMETRY + ATTRIBUTE_NAMES


@dataclass(frozen=True)
class ImageJob:
    pid: int
    index: int
    camid: int
    subset: str
    time: str

    @property
    def relpath(self) -> str:
        return f"{self.subset}/Cam{self.camid}/Cam{self.camid}_{self.time}_{self.pid}_{self.index}.jpg"


def plan_dataset(config: SynthConfig, seed: int, cameras: list[Camera]) -> list[ImageJob]:
    """Which identity is seen by which camera, in which subset, at which time of day.

    Identities split train/test; every identity gets >= 2 aerial images from 2 different aerial
    cameras and >= 2 ground images from 2 different ground cameras. A test identity contributes one
    aerial and one ground query; its remaining images (including another camera of each view) are
    gallery, so ALL, A<->A, G<->G and the cross-view protocols all have positives for every query.
    """
    rng = np.random.default_rng([int(seed), 31337])
    pids = np.arange(1, config.n_ids + 1)
    order = rng.permutation(pids)
    n_test = int(round(config.n_ids * config.test_fraction))
    test_ids = set(int(p) for p in order[:n_test])
    aerial = [c.camid for c in cameras if c.view == 0]
    ground = [c.camid for c in cameras if c.view == 1]
    wearable = [c.camid for c in cameras if c.view == 2]
    n_a, n_g = config.view_counts()
    jobs: list[ImageJob] = []
    index = 0
    for pid in pids:
        pid = int(pid)
        prng = np.random.default_rng([int(seed), pid, 2718])

        def cams_for(pool: list[int], n: int) -> list[int]:
            first = list(prng.choice(pool, size=min(2, len(pool)), replace=False))
            return [int(c) for c in first + list(prng.choice(pool, size=n - len(first)))]

        views = [("a", c) for c in cams_for(aerial, n_a)] + [("g", c) for c in cams_for(ground, n_g)]
        views += [("w", int(c)) for c in prng.choice(wearable, size=config.wearable_images_per_id)] if wearable else []
        test = pid in test_ids
        for k, (kind, cam) in enumerate(views):
            index += 1
            # The first image of each view lies in a different camera than the second: make it the query.
            is_query = test and ((kind == "a" and k == 0) or (kind == "g" and k == n_a))
            subset = "query" if is_query else ("gallery" if test else "train")
            night = np.random.default_rng([int(seed), pid, index, 1]).random() < config.night_fraction
            jobs.append(ImageJob(pid, index, cam, subset, "night" if night else "day"))
    return jobs


def _settings(config: SynthConfig) -> RenderSettings:
    return RenderSettings(height=config.height, width=config.width, night_fraction=config.night_fraction,
                          occlusion_fraction=config.occlusion_fraction)


@lru_cache(maxsize=4096)
def _identity(seed: int, pid: int):
    return draw_identity(seed, pid)


def render_job(seed: int, config: SynthConfig, cam: Camera, job: ImageJob) -> tuple[bytes, dict[str, Any]]:
    """JPEG bytes and the meta row of one planned image (pure: same inputs, same bytes)."""
    ident = _identity(int(seed), int(job.pid))
    rng = np.random.default_rng([int(seed), job.pid, job.index])
    img, info = render_image(seed, ident, cam, rng, _settings(config), night=job.time == "night")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=config.jpeg_quality, subsampling=0, optimize=False)
    row = {"path": job.relpath, "subset": job.subset, "pid": job.pid, "index": job.index, **info, **ident.attributes()}
    return buf.getvalue(), row


# Worker state, set once per process by the pool initialiser (avoids pickling cameras per task).
_WORKER: dict[str, Any] = {}


def _init_worker(seed: int, config: SynthConfig, cameras: list[Camera], out: str) -> None:
    _WORKER.update(seed=seed, config=config, cams={c.camid: c for c in cameras}, out=Path(out))


def _run_chunk(jobs: list[ImageJob]) -> list[dict[str, Any]]:
    rows = []
    for job in jobs:
        data, row = render_job(_WORKER["seed"], _WORKER["config"], _WORKER["cams"][job.camid], job)
        atomic_write_bytes(_WORKER["out"] / job.relpath, data)
        rows.append(row)
    return rows


def _run_parameters(config: SynthConfig, seed: int, preset: str) -> dict[str, Any]:
    return {"generator": GENERATOR_VERSION, "preset": preset, "seed": int(seed), "config": config.to_dict()}


def _estimate_bytes(config: SynthConfig) -> int:
    # A 256x128 JPEG at quality 92 is 8-14 kB; scale by pixel count, plus meta and slack.
    per_image = 16_000 * (config.height * config.width) / (256 * 128)
    return int(config.n_images * per_image * 1.2) + 10_000_000


def _existing_parent(path: Path) -> Path:
    p = path.resolve()
    while not p.exists():
        p = p.parent
    return p


def _check_output(out: Path, params: dict[str, Any], config: SynthConfig) -> str:
    """'fresh', 'resume' or 'complete'; raises before anything is written if OUT cannot be used."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"SynthAG output {out} exists and is not a folder")
    state = "fresh"
    if out.is_dir():
        manifest, run = out / MANIFEST, out / RUN_FILE
        if manifest.is_file():
            try:
                old = json.loads(manifest.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"SynthAG output {out}: {manifest} is not valid JSON ({e}); "
                                 "use an empty folder") from e
            if old.get("parameters") != params:
                raise ValueError(
                    f"SynthAG output {out} already holds a SynthAG dataset with different parameters "
                    f"(preset {old.get('parameters', {}).get('preset')!r}, seed "
                    f"{old.get('parameters', {}).get('seed')!r}); "
                    "choose another --out or delete it"
                )
            return "complete"
        if run.is_file():
            try:
                old_run = json.loads(run.read_text())
            except json.JSONDecodeError:
                old_run = None
            if old_run != params:
                raise ValueError(
                    f"SynthAG output {out} holds a partial SynthAG run with different parameters ({run}); "
                    "choose another --out or delete it"
                )
            state = "resume"
        elif any(out.iterdir()):
            raise ValueError(
                f"SynthAG output folder {out} is not empty and holds no SynthAG run ({MANIFEST} / {RUN_FILE} missing): "
                "refusing to write into other data; give an empty or new folder"
            )
    need = _estimate_bytes(config)
    free = shutil.disk_usage(_existing_parent(out)).free
    if free < need:
        raise ValueError(
            f"not enough disk space for SynthAG at {out}: about {need / 1e9:.2f} GB needed, {free / 1e9:.2f} GB free"
        )
    return state


def _read_journal(out: Path) -> dict[str, dict[str, Any]]:
    path = out / JOURNAL
    done: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return done
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by an interruption: that image is simply rendered again
        if (out / row["path"]).is_file():
            done[row["path"]] = row
    return done


def _chunks(items: list[ImageJob], size: int) -> Iterable[list[ImageJob]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _write_meta(out: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(META_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: r["path"]):
        writer.writerow({k: row[k] for k in META_COLUMNS})
    atomic_write_text(out / META, buf.getvalue())


def content_hash(out: Path, relpaths: Iterable[str]) -> str:
    """SHA-256 over every image's path and bytes hash, plus meta.csv."""
    lines = [f"{p} {sha256_file(out / p)}" for p in sorted(relpaths)]
    lines.append(f"{META} {sha256_file(out / META)}")
    return sha256_json(lines)


def render_dataset(
    preset: str,
    out: str | os.PathLike,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    difficulty: bool = True,
    **overrides: Any,
) -> Path:
    """Render (or resume, or reuse) SynthAG ``preset`` into ``out``; returns the dataset root.

    ``overrides`` change any ``SynthConfig`` field (e.g. ``n_ids=100``). Bad parameters, an output
    folder holding other data, or too little disk raise ValueError before anything is written.
    ``difficulty`` also writes the training-free baseline card (``difficulty.json``).

    With ``workers > 1`` rendering runs in a ``spawn`` process pool: a script calling this at top
    level needs the usual ``if __name__ == "__main__":`` guard (notebooks and the CLI need nothing).
    """
    from agreid_kit.utils.progress import progress_bar

    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"SynthAG seed must be a non-negative integer, got {seed!r}")
    config = make_config(preset, **overrides)
    out = Path(out).expanduser()
    params = _run_parameters(config, int(seed), preset)
    state = _check_output(out, params, config)
    if state == "complete":
        if difficulty and not (out / DIFFICULTY).is_file():
            from agreid_kit.synth.difficulty import write_difficulty_card

            write_difficulty_card(out, progress=progress)
        return out
    cameras = build_cameras(
        int(seed), config.n_aerial, config.n_ground, config.n_wearable, config.altitude_range, config.pitch_range,
        config.ground_height_range, config.ground_pitch_range, config.aerial_person_px, config.ground_person_px,
        config.n_scenes,
    )
    jobs = plan_dataset(config, int(seed), cameras)
    out.mkdir(parents=True, exist_ok=True)
    if state == "fresh":
        atomic_write_json(out / RUN_FILE, params)
    if state == "resume":
        from agreid_kit.utils.io import remove_stale_temporaries

        stale = remove_stale_temporaries(out, recursive=True)  # half-written images of the killed render
        if stale and progress:
            print(f"SynthAG {out}: removed {stale} temporary file(s) left by the interrupted render")
    done = _read_journal(out)
    todo = [j for j in jobs if j.relpath not in done]
    workers = max(1, int(workers if workers is not None else min(os.cpu_count() or 1, 8)))
    bar = progress_bar(total=len(jobs), initial=len(jobs) - len(todo), desc=f"SynthAG {preset}", unit="img",
                       enabled=progress)
    with open(out / JOURNAL, "a") as journal:
        def record(rows: list[dict[str, Any]]) -> None:
            for row in rows:
                done[row["path"]] = row
                journal.write(json.dumps(row) + "\n")
            journal.flush()
            bar.update(len(rows))

        if workers == 1 or len(todo) < 64:
            _init_worker(int(seed), config, cameras, str(out))
            for chunk in _chunks(todo, 16):
                record(_run_chunk(chunk))
        else:
            import multiprocessing as mp

            # spawn: the caller may hold threads (torch, Jupyter); forking those is unsafe.
            ctx = mp.get_context("spawn")
            with ctx.Pool(workers, initializer=_init_worker, initargs=(int(seed), config, cameras, str(out))) as pool:
                for rows in pool.imap_unordered(_run_chunk, list(_chunks(todo, 16))):
                    record(rows)
    bar.close()
    rows = [done[j.relpath] for j in jobs]
    _write_meta(out, rows)
    manifest = {
        "parameters": params,
        "cameras": [c.to_dict() for c in cameras],
        "counts": _counts(jobs),
        "meta_columns": list(META_COLUMNS),
        "attributes": list(ATTRIBUTE_NAMES),
        "layout": "CARGO: {train,query,gallery}/Cam{n}/Cam{n}_{day|night}_{pid}_{index}.jpg; Cam1-5 aerial, Cam6+ "
                  "ground; "
                  "wearable cameras (view 2) follow the ground ones and are named in meta.csv",
        "content_hash": content_hash(out, [j.relpath for j in jobs]),
    }
    atomic_write_json(out / MANIFEST, manifest)
    (out / JOURNAL).unlink(missing_ok=True)
    (out / RUN_FILE).unlink(missing_ok=True)
    if difficulty:
        from agreid_kit.synth.difficulty import write_difficulty_card

        write_difficulty_card(out, progress=progress)
    return out


def _counts(jobs: list[ImageJob]) -> dict[str, dict[str, int]]:
    out = {}
    for s in SUBSETS:
        js = [j for j in jobs if j.subset == s]
        out[s] = {"images": len(js), "ids": len({j.pid for j in js}), "cameras": len({j.camid for j in js})}
    return out


def default_root(preset: str, seed: int) -> Path:
    return Path("data") / f"synthag-{preset}-s{seed}"


def ensure_synthag(preset: str = "small", root: str | os.PathLike | None = None, seed: int = 0, **kwargs: Any) -> Path:
    """The SynthAG dataset folder for ``preset``/``seed``: rendered if missing or partial, else reused.

    Default root: ``./data/synthag-<preset>-s<seed>``.
    """
    root = Path(root) if root is not None else default_root(preset, seed)
    return render_dataset(preset, root, seed=seed, **kwargs)


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {root} is not a complete SynthAG dataset (render it with `agreid "
                                "synth`)")
    return json.loads(path.read_text())


def read_meta(root: str | os.PathLike) -> list[dict[str, str]]:
    """meta.csv rows as dicts of strings (the adapter converts types)."""
    path = Path(root) / META
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {root} is not a complete SynthAG dataset (render it with `agreid "
                                "synth`)")
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
