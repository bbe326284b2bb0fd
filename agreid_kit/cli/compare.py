"""``agreid compare``: every method (or ``--methods``) with the same data, budget and seeds, in one table."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from agreid_kit.compare import DEFAULT_SEEDS
    from agreid_kit.engine.config import TRAIN_PRESETS
    from agreid_kit.models import available_methods

    p = subparsers.add_parser(
        "compare",
        help="train (or reuse) every method with the same budget and seeds; mean +- std per protocol",
        description=(
            "Train or reuse OUT/<method>/seed<s> for every method and seed with one budget, evaluate each on the "
            "protocols and write OUT/comparison.csv (mean and std over the seeds, whether each method is within "
            "noise of the protocol's best on mAP, training time, inference images/s) and OUT/noise.csv (each method "
            "against the best). A run is reused only when it was trained with exactly this comparison's settings."
        ),
    )
    p.add_argument("--data", required=True, help="dataset spec NAME:DIR, e.g. synthag:data/synthag-small-s0")
    p.add_argument("--out", default="runs/compare", help="folder of the runs and tables (default runs/compare)")
    p.add_argument("--methods", nargs="+", choices=available_methods(), metavar="METHOD",
                   help=f"methods to compare (default: all of {', '.join(available_methods())})")
    p.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS),
                   help=f"training seeds (default {' '.join(map(str, DEFAULT_SEEDS))})")
    p.add_argument("--protocol", nargs="+", default=None, help="protocols to evaluate (default ALL)")
    p.add_argument("--preset", choices=tuple(TRAIN_PRESETS), default="cpu")
    p.add_argument("--epochs", type=int, help="stage-1 epochs of every method (preset default otherwise)")
    p.add_argument("--max-iters-per-epoch", type=int, help="cap stage-1 iterations per epoch (smoke runs)")
    p.add_argument("--stage2-epochs", type=int, help="stage-2 epochs (stage-2 preset default otherwise)")
    p.add_argument("--threads", type=int, help="torch CPU threads of every run")
    p.add_argument("--num-workers", type=int, help="DataLoader worker processes")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    p.add_argument("--no-throughput", action="store_true", help="skip the inference images/s measurement")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from agreid_kit.compare import compare_methods
    from agreid_kit.utils.io import atomic_write_text

    budget = {k: v for k, v in dict(epochs=args.epochs, max_iters_per_epoch=args.max_iters_per_epoch,
                                     threads=args.threads, num_workers=args.num_workers).items() if v is not None}
    stage2 = {k: v for k, v in dict(epochs=args.stage2_epochs, threads=args.threads).items() if v is not None}
    result = compare_methods(data=args.data, out=args.out, methods=args.methods, preset=args.preset,
                             protocols=args.protocol, budget=budget, seeds=args.seeds,
                             throughput=not args.no_throughput,
                             device=args.device, stage2_budget=stage2)
    out = Path(args.out)
    atomic_write_text(out / "comparison.csv", result.table.to_csv(index=False))
    atomic_write_text(out / "noise.csv", result.noise.to_csv(index=False))
    shown = result.table.assign(**{
        "mAP %": [f"{100 * m:.1f} ± {'n/a' if s != s else f'{100 * s:.1f}'}" for m, s in zip(result.table["mAP"],
                                                                                        result.table["mAP_std"])],
        "within noise of best": result.table["within_noise_of_best"],
    })
    print(shown[["method", "protocol", "mode", "mAP %", "seeds", "within noise of best",
                 "train_seconds"]].to_string(index=False))
    print(f"tables written to {out / 'comparison.csv'} and {out / 'noise.csv'}")
    return 0
