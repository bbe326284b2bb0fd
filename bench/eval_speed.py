"""Evaluator speed and memory: distance computation vs our metrics vs the plain-loop reference.

    .venv/bin/python bench/eval_speed.py                   # both sizes, CPU
    .venv/bin/python bench/eval_speed.py --sizes 2000x20000 --ref-queries 500
    .venv/bin/python bench/eval_speed.py --device cuda

Synthetic but realistically structured data: test identities with several cameras each, every query
id present in the gallery with a few images per camera, plus distractor identities; 768-d features
= identity centre + noise, so rankings are neither trivial nor random. Peak memory is the extra
resident memory (CPU, sampled every 2 ms) or the extra CUDA allocation a phase needs on top of its
inputs. The reference loop is timed on the first ``--ref-queries`` queries and extrapolated linearly
to all queries when that is fewer than Q (said in the table). Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from contextlib import contextmanager

import numpy as np
import torch

from agreid_kit.eval import compute_distance, evaluate_ranking, reference_evaluate


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _trim() -> None:
    """Hand freed heap pages back to the OS so the next phase's peak is measured from a true baseline."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


@contextmanager
def measure(device: str, out: dict):
    """Wall time and peak extra memory (bytes) of the block."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t = time.perf_counter()
        yield
        torch.cuda.synchronize()
        out["seconds"] = time.perf_counter() - t
        out["peak_bytes"] = torch.cuda.max_memory_allocated() - base
        return
    _trim()
    base = _rss()
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.002)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t = time.perf_counter()
    try:
        yield
    finally:
        out["seconds"] = time.perf_counter() - t
        stop.set()
        th.join()
        out["peak_bytes"] = max(peak[0], _rss()) - base


def make_data(nq: int, ng: int, dim: int, seed: int = 0):
    """Query ids each with images under 2-6 of 13 cameras; gallery = their other images + distractor ids."""
    rng = np.random.default_rng(seed)
    n_test_ids = max(1, nq // 4)  # ~4 queries per identity
    q_pids = rng.integers(0, n_test_ids, nq)
    n_cams = 13
    q_cams = rng.integers(0, n_cams, nq)
    # half the gallery belongs to the query identities (~ng/2/n_test_ids images each), the rest to distractors
    n_true = ng // 2
    g_pids = np.concatenate([rng.integers(0, n_test_ids, n_true), n_test_ids + rng.integers(0, max(1, ng // 20), ng - n_true)])
    g_cams = rng.integers(0, n_cams, ng)
    gen = torch.Generator().manual_seed(seed)
    n_all = int(max(q_pids.max(), g_pids.max())) + 1
    centres = torch.randn(n_all, dim, generator=gen)
    cam_bias = 0.8 * torch.randn(n_cams, dim, generator=gen)  # camera/view shift: makes positives hard
    qf = centres[q_pids] + cam_bias[q_cams] + 1.8 * torch.randn(nq, dim, generator=gen)
    gf = centres[g_pids] + cam_bias[g_cams] + 1.8 * torch.randn(ng, dim, generator=gen)
    return qf, gf, q_pids, g_pids, q_cams, g_cams


def run_case(nq: int, ng: int, dim: int, device: str, ref_queries: int) -> dict:
    qf, gf, qp, gp, qc, gc = make_data(nq, ng, dim)
    qf, gf = qf.to(device), gf.to(device)
    row: dict = {"case": f"{nq} x {ng}"}
    m: dict = {}
    with measure(device, m):
        dist = compute_distance(qf, gf, "cosine")
    row["distance"] = dict(m)
    m = {}
    with measure(device, m):
        fast = evaluate_ranking(dist, qp, gp, qc, gc, max_rank=50)
    row["metrics"] = dict(m)
    n_ref = min(nq, ref_queries)
    dist_cpu = dist[:n_ref].cpu().numpy()
    m = {}
    with measure("cpu", m):
        ref = reference_evaluate(dist_cpu, qp[:n_ref], gp, qc[:n_ref], gc, max_rank=50)
    m["measured_queries"] = n_ref
    m["seconds_all"] = m["seconds"] * nq / n_ref
    row["reference"] = m
    sub = evaluate_ranking(dist[:n_ref], qp[:n_ref], gp, qc[:n_ref], gc, max_rank=50)
    row["identical"] = bool(
        np.array_equal(fast.ap[:n_ref], ref.ap, equal_nan=True)
        and np.array_equal(fast.inp[:n_ref], ref.inp, equal_nan=True)
        and np.array_equal(sub.cmc, ref.cmc)
        and sub.mAP == ref.mAP
        and sub.mINP == ref.mINP
    )
    row["result"] = fast.summary()
    del dist
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="2000x20000,10000x50000", help="comma-separated QxG")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--ref-queries", type=int, default=1000, help="queries the reference loop is timed on")
    args = ap.parse_args()
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, dim {args.dim}")
    rows = []
    for size in args.sizes.split(","):
        nq, ng = (int(x) for x in size.lower().split("x"))
        rows.append(run_case(nq, ng, args.dim, args.device, args.ref_queries))
    head = f"{'case':>14s} | {'distance s':>10s} {'MB':>7s} | {'metrics s':>9s} {'MB':>7s} | {'reference s':>11s} {'(measured on)':>14s} | {'ref/ours':>8s} | identical"
    print(head)
    print("-" * len(head))
    for r in rows:
        d, mt, rf = r["distance"], r["metrics"], r["reference"]
        on = "all" if rf["measured_queries"] >= int(r["case"].split(" x ")[0]) else f"{rf['measured_queries']} q, extrap."
        print(
            f"{r['case']:>14s} | {d['seconds']:10.2f} {d['peak_bytes'] / 2**20:7.0f} | {mt['seconds']:9.2f} "
            f"{mt['peak_bytes'] / 2**20:7.0f} | {rf['seconds_all']:11.2f} {on:>14s} | {rf['seconds_all'] / mt['seconds']:8.1f} | {r['identical']}"
        )
    for r in rows:
        print(f"{r['case']}: {r['result']}")


if __name__ == "__main__":
    main()
