"""Evaluator speed and memory: the distance GEMM vs our metrics, weak and strong rankings side by side.

    .venv/bin/python bench/eval_speed.py                   # 2000x20000 and 10000x50000, weak + strong, CPU
    .venv/bin/python bench/eval_speed.py --sizes 2000x20000 --ref-queries 200
    .venv/bin/python bench/eval_speed.py --rankings weak,mixed,strong --device cuda

Synthetic data with the structure of a ReID test set: test identities with several cameras each,
every query id present in the gallery with a few images per camera, plus distractor identities;
768-d features. Rankings:

- ``weak``: random features (no identity signal): the last positive sits near the end of almost
  every row, the evaluator's worst case;
- ``strong``: identity centre + small noise: positives are the nearest items;
- ``mixed``: centre + camera shift + large noise (hard positives, mAP ~ 45 %).

Per case it prints the distance computation (``compute_distance``: the GEMM plus normalisation),
the metrics (``evaluate_ranking``), their ratio, the peak extra memory of each phase (CPU: resident
memory sampled every 2 ms; CUDA: extra allocation), and whether the results on the first
``--ref-queries`` queries equal the plain-loop ``reference_evaluate`` exactly (per-query AP, INP,
first-match rank, #positives; CMC, mAP, mINP of that subset). The reference's time is extrapolated
linearly to all queries. Asserts nothing.
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

RANKINGS = ("weak", "mixed", "strong")


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


def make_data(nq: int, ng: int, dim: int, ranking: str = "mixed", seed: int = 0):
    """Query ids each with images under 2-6 of 13 cameras; gallery = their other images + distractor ids."""
    if ranking not in RANKINGS:
        raise ValueError(f"make_data: ranking must be one of {RANKINGS}, got {ranking!r}")
    rng = np.random.default_rng(seed)
    n_test_ids = max(1, nq // 4)  # ~4 queries per identity
    q_pids = rng.integers(0, n_test_ids, nq)
    n_cams = 13
    q_cams = rng.integers(0, n_cams, nq)
    # half the gallery belongs to the query identities (~ng/2/n_test_ids images each), the rest to distractors
    n_true = ng // 2
    g_pids = np.concatenate([rng.integers(0, n_test_ids, n_true),
                             n_test_ids + rng.integers(0, max(1, ng // 20), ng - n_true)])
    g_cams = rng.integers(0, n_cams, ng)
    gen = torch.Generator().manual_seed(seed)
    if ranking == "weak":
        return torch.randn(nq, dim, generator=gen), torch.randn(ng, dim, generator=gen), q_pids, g_pids, q_cams, g_cams
    n_all = int(max(q_pids.max(), g_pids.max())) + 1
    centres = torch.randn(n_all, dim, generator=gen)
    # mixed: a camera/view shift and large noise make positives hard; strong: positives are the nearest items.
    shift, noise = (0.8, 1.8) if ranking == "mixed" else (0.0, 0.35)
    cam_bias = shift * torch.randn(n_cams, dim, generator=gen)
    qf = centres[q_pids] + cam_bias[q_cams] + noise * torch.randn(nq, dim, generator=gen)
    gf = centres[g_pids] + cam_bias[g_cams] + noise * torch.randn(ng, dim, generator=gen)
    return qf, gf, q_pids, g_pids, q_cams, g_cams


def run_case(nq: int, ng: int, dim: int, ranking: str, device: str, ref_queries: int) -> dict:
    qf, gf, qp, gp, qc, gc = make_data(nq, ng, dim, ranking)
    qf, gf = qf.to(device), gf.to(device)
    row: dict = {"case": f"{nq} x {ng}", "ranking": ranking, "nq": nq}
    m: dict = {}
    with measure(device, m):
        dist = compute_distance(qf, gf, "cosine")
    row["distance"] = dict(m)
    del qf, gf
    m = {}
    with measure(device, m):
        fast = evaluate_ranking(dist, qp, gp, qc, gc, max_rank=50)
    row["metrics"] = dict(m)
    n_ref = min(nq, ref_queries)
    dist_cpu = dist[:n_ref].cpu().numpy()
    m = {}
    with measure("cpu", m):
        ref = reference_evaluate(dist_cpu, qp[:n_ref], gp, qc[:n_ref], gc, max_rank=50)
    row["reference"] = {**m, "measured_queries": n_ref, "seconds_all": m["seconds"] * nq / n_ref}
    sub = evaluate_ranking(dist[:n_ref], qp[:n_ref], gp, qc[:n_ref], gc, max_rank=50)
    same = lambda a, b: np.array_equal(a, b, equal_nan=True)  # noqa: E731
    row["identical"] = bool(
        same(fast.ap[:n_ref], ref.ap) and same(fast.inp[:n_ref], ref.inp)
        and same(fast.first_match_rank[:n_ref], ref.first_match_rank)
        and same(fast.n_positives[:n_ref], ref.n_positives)
        and same(sub.cmc, ref.cmc) and sub.mAP == ref.mAP and sub.mINP == ref.mINP
    )
    row["result"] = fast.summary()
    row["dist_bytes"] = dist.numel() * dist.element_size()
    del dist
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="2000x20000,10000x50000", help="comma-separated QxG")
    ap.add_argument("--rankings", default="weak,strong", help=f"comma-separated, of {', '.join(RANKINGS)}")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--ref-queries", type=int, default=300,
                    help="queries checked against (and timed on) the reference loop")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, dim {args.dim}, float32 distances")
    rows = []
    for size in args.sizes.split(","):
        nq, ng = (int(x) for x in size.lower().split("x"))
        for ranking in args.rankings.split(","):
            rows.append(run_case(nq, ng, args.dim, ranking.strip(), args.device, args.ref_queries))
    head = (f"{'case':>14s} {'ranking':>7s} | {'distance s':>10s} {'MB':>6s} | {'metrics s':>9s} {'MB':>6s} | "
            f"{'metrics/dist':>12s} | {'reference s':>11s} {'(on)':>12s} | {'ref/ours':>8s} | equal to reference")
    print(head)
    print("-" * len(head))
    for r in rows:
        d, mt, rf = r["distance"], r["metrics"], r["reference"]
        on = "all" if rf["measured_queries"] >= r["nq"] else f"{rf['measured_queries']} q, extr."
        print(
            f"{r['case']:>14s} {r['ranking']:>7s} | {d['seconds']:10.2f} {d['peak_bytes'] / 2**20:6.0f} | "
            f"{mt['seconds']:9.2f} {mt['peak_bytes'] / 2**20:6.0f} | {mt['seconds'] / d['seconds']:11.2f}x | "
            f"{rf['seconds_all']:11.1f} {on:>12s} | {rf['seconds_all'] / mt['seconds']:8.0f} | "
            f"{'yes' if r['identical'] else 'NO'} (first {rf['measured_queries']} queries)"
        )
    print("MB: peak extra memory of the phase (the distance matrix itself is the distance phase's; the metrics "
          "phase works in chunks of ~2M cells on a CPU, agreid_kit.eval.CHUNK_CELLS)")
    for r in rows:
        print(f"{r['case']} {r['ranking']}: {r['result']}")


if __name__ == "__main__":
    main()
