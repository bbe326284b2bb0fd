"""Atomic file writing and hashing.

Every artifact the kit writes goes through these helpers: the file appears under its final name
only once it is complete, so an interrupted run never leaves a half-written checkpoint, manifest
or feature file behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give artifacts the usual umask-based mode (reports are shared).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=True, default=_json_default) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _json_default(obj: Any) -> Any:
    # numpy scalars and paths show up in configs and metrics; write them as plain JSON values.
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hash of a JSON-able object, independent of key order."""
    blob = json.dumps(obj, sort_keys=True, default=_json_default, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def file_signature(path: str | os.PathLike) -> str | None:
    """A short hash of a small file's bytes (None when it does not exist): what a step read, for reuse checks."""
    path = Path(path)
    if not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def sha256_file_cached(path: str | os.PathLike) -> str:
    """``sha256_file`` of a large file (a checkpoint), remembered in ``<path>.sha256`` next to it.

    The remembered digest is reused only while the file's size and modification time are the ones
    it was computed for; the sidecar is written atomically and is tiny.
    """
    path = Path(path)
    st = path.stat()
    side = path.with_name(path.name + ".sha256")
    key = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if side.is_file():
        try:
            saved = json.loads(side.read_text())
            if {k: saved.get(k) for k in key} == key and isinstance(saved.get("sha256"), str):
                return saved["sha256"]
        except (OSError, json.JSONDecodeError):
            pass
    digest = sha256_file(path)
    try:
        atomic_write_json(side, {**key, "sha256": digest})
    except OSError:  # a read-only run folder: compute it each time
        pass
    return digest


def remove_stale_temporaries(folder: str | os.PathLike, pattern: str = ".*.tmp", recursive: bool = False,
                             min_age_s: float = 0.0) -> int:
    """Delete temporaries that interrupted atomic writes left in ``folder`` (``.<name>.<random>.tmp``).

    Called when a command starts work in a folder it owns (a run, a dataset, a cache): any such file
    is then debris of a killed earlier process. ``min_age_s`` spares files younger than that (for folders
    another live process may be writing to). Returns how many files were removed."""
    import time

    folder = Path(folder)
    if not folder.is_dir():
        return 0
    now = time.time()
    removed = 0
    for tmp in (folder.rglob(pattern) if recursive else folder.glob(pattern)):
        try:
            if tmp.is_file() and now - tmp.stat().st_mtime >= min_age_s:
                tmp.unlink()
                removed += 1
        except FileNotFoundError:
            pass
    return removed
