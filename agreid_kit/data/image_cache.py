"""Decoded-image cache: every image of a record list, resized to a model's input size, as one uint8 array.

Training a small model on 2 CPU cores is otherwise bound by JPEG decoding and PIL resizing in worker
processes that compete with the model's threads for the same cores. The cache decodes each image
once (bicubic resize to ``(H, W)``, exactly what :func:`agreid_kit.data.transforms.test_transform`
does), stores the pixels as a memory-mapped ``uint8`` array of shape ``(N, 3, H, W)`` and hands out
batches by index; augmentation then runs on whole batches as tensor operations
(:mod:`agreid_kit.data.batch_transforms`).

Key and invalidation. A cache file is named by the SHA-256 of: the cache format version, the size,
and, for every image (in order), its resolved path, byte size and modification time (ns). Rewriting,
adding, removing or moving an image, or asking for another size, gives another key and so another
file; a stale file is simply never opened again. (Hashing every image's bytes would cost a full read
of the dataset per run; the file's size and ``mtime_ns`` change whenever its content is rewritten.)

Where and how big. Files live in ``$AGREID_IMAGE_CACHE`` if set, else ``$XDG_CACHE_HOME/agreid-kit/images``,
else ``~/.cache/agreid-kit/images``; each is ``N * 3 * H * W`` bytes plus a small JSON index:
SynthAG-small's 5,000 train + 5,000 test images at 128 x 64 take 2 x 123 MB; CARGO's ~108k images at
256 x 128 (the paper preset) take ~10.6 GB, at 128 x 64 ~2.7 GB. The array is memory-mapped, so RAM
holds only the pages in use. ``AGREID_IMAGE_CACHE=off`` (or ``--image-cache off`` /
``TrainConfig.image_cache="off"``) turns it off: images are then decoded per batch, in the loader's
worker processes; results are identical either way (tested).

Files are written atomically (a temporary file renamed into place once complete), so an interrupted
build leaves no half-written cache; stale temporaries of a killed build are removed on the next one.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from agreid_kit.data.errors import DatasetError

CACHE_FORMAT = 1
OFF_VALUES = ("off", "0", "none", "no", "false")


def decode_resized(path: str, size: tuple[int, int]) -> np.ndarray:
    """One image as ``uint8 (3, H, W)``: RGB, bicubic resize to ``size = (H, W)`` (PIL, as the test transform)."""
    from agreid_kit.data.torchdata import load_image
    from agreid_kit.data.transforms import resize_uint8

    return resize_uint8(load_image(path), size).numpy()


def default_cache_dir() -> Path | None:
    """The cache folder (see the module docstring), or None when ``AGREID_IMAGE_CACHE`` turns it off."""
    env = os.environ.get("AGREID_IMAGE_CACHE", "").strip()
    if env:
        return None if env.lower() in OFF_VALUES else Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    return Path(
        base).expanduser() / "agreid-kit" / "images" if base else Path.home() / ".cache" / "agreid-kit" / "images"


def resolve_cache_dir(setting: str | None) -> Path | None:
    """``setting`` is ``auto`` (the default folder, or off when the environment says so), ``off`` or a folder."""
    if setting is None or str(setting).strip().lower() in ("", "auto"):
        return default_cache_dir()
    if str(setting).strip().lower() in OFF_VALUES:
        return None
    return Path(setting).expanduser()


def images_fingerprint(paths: Sequence[str], size: tuple[int, int]) -> str:
    """The cache key of ``paths`` at ``size`` (format version, size, and every file's path, bytes and mtime)."""
    h = hashlib.sha256()
    h.update(json.dumps({"format": CACHE_FORMAT, "size": [int(size[0]), int(size[1])]}).encode())
    for p in paths:
        try:
            st = os.stat(p)
        except FileNotFoundError as e:
            raise DatasetError(f"image file {p} does not exist (was the dataset moved?)") from e
        h.update(f"\n{os.path.realpath(p)}\t{st.st_size}\t{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _decode_job(args: tuple[str, tuple[int, int]]) -> np.ndarray:
    return decode_resized(*args)


class ImageCache:
    """The decoded images of ``paths`` at ``size``: ``cache[rows] -> uint8 ndarray (len(rows), 3, H, W)``.

    Build or open one with :meth:`ImageCache.open`; ``row_of`` maps a path to its row, so a subset of
    the records (e.g. the validation ids carved from train) reads from the same file.
    """

    def __init__(self, array: np.ndarray, paths: Sequence[str], size: tuple[int, int], file: Path | None) -> None:
        self.array = array
        self.paths = list(paths)
        self.size = (int(size[0]), int(size[1]))
        self.file = file
        self.row_of = {p: i for i, p in enumerate(self.paths)}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, rows) -> np.ndarray:
        return self.array[rows]

    @property
    def nbytes(self) -> int:
        return int(len(self.paths) * 3 * self.size[0] * self.size[1])

    @classmethod
    def open(
        cls,
        paths: Sequence[str],
        size: tuple[int, int],
        cache_dir: str | os.PathLike,
        workers: int = 0,
        progress: bool = True,
        verbose: bool = True,
    ) -> "ImageCache":
        """Open the cache of ``paths`` at ``size`` in ``cache_dir``, building it first if needed."""
        paths = [str(p) for p in paths]
        if not paths:
            raise ValueError("ImageCache.open: no images given")
        if len(set(paths)) != len(paths):
            raise ValueError("ImageCache.open: the same image path is listed twice")
        size = (int(size[0]), int(size[1]))
        cache_dir = Path(cache_dir)
        key = images_fingerprint(paths, size)
        stem = cache_dir / f"{key[:32]}-{size[0]}x{size[1]}"
        npy, index = stem.with_suffix(".npy"), stem.with_suffix(".json")
        if not (npy.is_file() and index.is_file() and _index_matches(index, key, len(paths), size)):
            _build(paths, size, npy, index, key, workers, progress, verbose)
        array = np.load(npy, mmap_mode="r")
        if array.shape != (len(paths), 3, size[0], size[1]) or array.dtype != np.uint8:
            raise DatasetError(
                f"image cache {npy} holds an array of shape {array.shape} ({array.dtype}), expected "
                f"{(len(paths), 3, *size)} uint8: delete the file and run again"
            )
        return cls(array, paths, size, npy)


def _index_matches(index: Path, key: str, n: int, size: tuple[int, int]) -> bool:
    try:
        meta = json.loads(index.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return meta.get("key") == key and meta.get("n") == n and tuple(meta.get("size", ())) == size


def _worker_default_signals() -> None:
    """Pool initializer: forked decoders drop the parent's handlers. The CLI turns SIGTERM into a
    KeyboardInterrupt (clean-up in the parent); inherited by a worker blocked on the pool's task-queue lock,
    it made ``Pool.terminate`` wait forever. Workers die on SIGTERM and leave Ctrl-C to the parent."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _build(paths: list[str], size: tuple[int, int], npy: Path, index: Path, key: str, workers: int,
           progress: bool, verbose: bool) -> None:
    from agreid_kit.utils.io import atomic_path, atomic_write_json, remove_stale_temporaries
    from agreid_kit.utils.progress import progress_bar

    npy.parent.mkdir(parents=True, exist_ok=True)
    # the cache folder is shared by concurrent runs: only temporaries of builds killed over an hour ago go
    stale = remove_stale_temporaries(npy.parent, min_age_s=3600.0)
    n = len(paths)
    mb = n * 3 * size[0] * size[1] / 1e6
    if verbose:
        extra = f"; removed {stale} stale temporary file(s) of an interrupted build" if stale else ""
        print(f"image cache: decoding {n:,} images at {size[0]}x{size[1]} into {npy} ({mb:,.0f} MB){extra}")
    t0 = time.perf_counter()
    with atomic_path(npy) as tmp:
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, 3, size[0], size[1]))
        jobs = ((p, size) for p in paths)
        bar = progress_bar(total=n, desc="image cache", enabled=progress)
        if workers and workers > 0 and n > 256:
            import multiprocessing as mp

            ctx = mp.get_context("spawn" if os.name == "nt" else "fork")
            with ctx.Pool(workers, initializer=_worker_default_signals) as pool:
                for i, arr in enumerate(pool.imap(_decode_job, jobs, chunksize=64)):
                    mm[i] = arr
                    bar.update(1)
                # a clean end: the workers exit on their own (Pool.__exit__ would terminate them)
                pool.close()
                pool.join()
        else:
            for i, job in enumerate(jobs):
                mm[i] = _decode_job(job)
                bar.update(1)
        bar.close()
        mm.flush()
        del mm
    atomic_write_json(index, {"key": key, "n": n, "size": list(size), "format": CACHE_FORMAT,
                              "first": paths[0], "last": paths[-1], "seconds": round(time.perf_counter() - t0, 2)})
