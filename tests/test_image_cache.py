"""The decoded-image cache: same pixels as decoding, invalidated by edits and by size, atomic, optional."""

import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from agreid_kit.data.errors import DatasetError
from agreid_kit.data.image_cache import ImageCache, decode_resized, images_fingerprint, resolve_cache_dir
from agreid_kit.data.records import Record
from agreid_kit.data.torchdata import ReIDImageDataset, batch_loader


def _images(folder, n=6, size=(40, 20)):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"Cam1_day_{i}_0.jpg"
        Image.fromarray(rng.integers(0, 255, (size[0], size[1], 3), dtype=np.uint8)).save(p, quality=90)
        paths.append(str(p))
    return paths


def test_cache_holds_the_decoded_pixels_and_is_reused(tmp_path):
    paths = _images(tmp_path)
    cache = ImageCache.open(paths, (16, 8), tmp_path / "cache", verbose=False)
    assert cache.array.shape == (6, 3, 16, 8) and cache.array.dtype == np.uint8
    for i, p in enumerate(paths):
        np.testing.assert_array_equal(cache[i], decode_resized(p, (16, 8)))
    mtime = cache.file.stat().st_mtime_ns
    again = ImageCache.open(paths, (16, 8), tmp_path / "cache", verbose=False)
    assert again.file == cache.file and again.file.stat().st_mtime_ns == mtime  # opened, not rebuilt
    assert not list((tmp_path / "cache").glob(".*.tmp"))  # no temporaries left behind


def test_cache_is_invalidated_when_an_image_or_the_size_changes(tmp_path):
    paths = _images(tmp_path)
    key = images_fingerprint(paths, (16, 8))
    assert images_fingerprint(paths, (32, 16)) != key  # another size, another file
    assert images_fingerprint(paths[::-1], (16, 8)) != key  # another order, another row mapping
    first = ImageCache.open(paths, (16, 8), tmp_path / "cache", verbose=False)
    time.sleep(0.01)
    Image.new("RGB", (20, 40), (255, 0, 0)).save(paths[2])  # rewrite one image
    assert images_fingerprint(paths, (16, 8)) != key
    second = ImageCache.open(paths, (16, 8), tmp_path / "cache", verbose=False)
    assert second.file != first.file
    assert (second[2][0] > 200).all() and not np.array_equal(first[2], second[2])  # the new pixels
    np.testing.assert_array_equal(first[0], second[0])
    bigger = ImageCache.open(paths, (32, 16), tmp_path / "cache", verbose=False)
    assert bigger.array.shape == (6, 3, 32, 16)


def test_cache_names_a_missing_or_corrupt_image_and_leaves_no_file(tmp_path):
    paths = _images(tmp_path)
    os.remove(paths[1])
    with pytest.raises(DatasetError, match="Cam1_day_1_0.jpg does not exist"):
        ImageCache.open(paths, (16, 8), tmp_path / "cache", verbose=False)
    Image.new("RGB", (20, 40)).save(paths[1])
    with open(paths[3], "wb") as fh:
        fh.write(b"\xff\xd8 truncated")
    with pytest.raises(DatasetError, match="Cam1_day_3_0.jpg is corrupt"):
        ImageCache.open(paths, (16, 8), tmp_path / "cache", verbose=False)
    assert not list((tmp_path / "cache").glob("*.npy")) and not list((tmp_path / "cache").glob(".*.tmp"))


def test_cache_settings_and_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("AGREID_IMAGE_CACHE", "off")
    assert resolve_cache_dir("auto") is None
    assert resolve_cache_dir(str(tmp_path)) == tmp_path  # an explicit folder wins over the environment
    monkeypatch.setenv("AGREID_IMAGE_CACHE", str(tmp_path / "c"))
    assert resolve_cache_dir("auto") == tmp_path / "c"
    assert resolve_cache_dir("off") is None
    monkeypatch.delenv("AGREID_IMAGE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_cache_dir(None) == tmp_path / "xdg" / "agreid-kit" / "images"


def test_dataset_batches_are_identical_with_and_without_the_cache_and_with_workers(tmp_path):
    paths = _images(tmp_path, n=8)
    recs = [Record(p, i // 2, i % 2, i % 2) for i, p in enumerate(paths)]
    cache = ImageCache.open(paths, (16, 8), tmp_path / "cache", verbose=False)
    batches = [[5, 1, 7, 0], [2, 3, 6, 4]]
    with_cache = list(batch_loader(ReIDImageDataset(recs, (16, 8), cache), batches))
    decoded = list(batch_loader(ReIDImageDataset(recs, (16, 8)), batches, num_workers=2))
    for a, b in zip(with_cache, decoded):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
    assert with_cache[0]["pids"].tolist() == [2, 0, 3, 0]
    subset = ReIDImageDataset(recs[2:5], (16, 8), cache)  # a subset reads its rows from the same file
    assert torch.equal(subset.images([0]), with_cache[1]["images"][0:1])
    with pytest.raises(ValueError, match="not in the image cache"):
        ReIDImageDataset([Record(str(tmp_path / "other.jpg"), 0, 0, 0)], (16, 8), cache)
    with pytest.raises(ValueError, match="holds \\(16, 8\\) images"):
        ReIDImageDataset(recs, (32, 16), cache)


def test_parallel_build_under_the_cli_signal_handler_finishes_and_resets_worker_signals(tmp_path):
    """`agreid` turns SIGTERM into KeyboardInterrupt; forked decoders inherited it and Pool.terminate then
    hung on a worker blocked on the task-queue lock (seen: `agreid train` stuck after its last epoch).
    Workers now restore the default SIGTERM (and leave SIGINT to the parent); a clean build joins them."""
    import signal
    import subprocess
    import sys

    paths = _images(tmp_path, n=300, size=(20, 10))
    script = (
        "import signal, sys\n"
        "from agreid_kit.cli import _stop_on_sigterm\n"
        "from agreid_kit.data import image_cache as ic\n"
        "_stop_on_sigterm()\n"
        "real_init = ic._worker_default_signals\n"
        "paths = sys.argv[2:]\n"
        "c = ic.ImageCache.open(paths, (8, 4), sys.argv[1], workers=2, verbose=False)\n"
        "assert c.array.shape == (300, 3, 8, 4)\n"
        "real_init()\n"
        "assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL\n"
        "assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "cache"), *paths], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]
    assert signal.getsignal(signal.SIGTERM) != signal.SIG_IGN  # the test process itself is untouched
