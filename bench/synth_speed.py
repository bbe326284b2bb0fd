"""Images per second of the SynthAG renderer on this machine (rendering + JPEG encoding + writing).

    python bench/synth_speed.py --images 400 --workers 2

Renders a temporary dataset with the `small` preset's cameras and settings (fewer identities) and
prints images/s overall, per worker, and the time `small` (10,000 images) would take.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

from agreid_kit.synth import make_config, render_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=400, help="images to render (default 400)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--size", default="256x128", help="output HxW (default 256x128)")
    args = ap.parse_args()
    h, w = (int(x) for x in args.size.split("x"))
    per_id = make_config("small").images_per_id
    n_ids = max(4, args.images // per_id)
    with tempfile.TemporaryDirectory() as tmp:
        cpu0 = _cpu_seconds()
        t0 = time.perf_counter()
        render_dataset("small", f"{tmp}/bench", seed=0, workers=args.workers, progress=False, difficulty=False,
                       n_ids=n_ids, height=h, width=w)
        seconds = time.perf_counter() - t0
        cpu = _cpu_seconds() - cpu0
    n = n_ids * per_id
    rate = n / seconds
    print(f"SynthAG render: {n} images at {h}x{w} with {args.workers} workers in {seconds:.2f} s "
          f"= {rate:.1f} images/s ({rate / args.workers:.1f} per worker); small (10,000 images) ~ {10000 / rate:.0f} s")
    # Wall-clock rates depend on what else the machine runs; CPU time per image does much less.
    print(f"CPU time {1000 * cpu / n:.1f} ms per image (workers included, start-up too); "
          f"on {args.workers} otherwise idle cores that is ~{args.workers * n / cpu:.0f} images/s "
          f"(load average now {os.getloadavg()[0]:.1f})")


def _cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


if __name__ == "__main__":
    main()
