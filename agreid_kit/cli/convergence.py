"""``agreid convergence``: train to convergence once and record test mAP against epoch and CPU minutes."""

from __future__ import annotations

import argparse

from agreid_kit.cli import CLIError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convergence",
        help="train vit and sdreid for many epochs, scoring the test set every few epochs (the recipe's ceiling)",
        description=(
            "Train each method once with the cpu recipe for --epochs epochs (resumable; takes long: run it in the "
            "background) and score the test split on every protocol every --eval-every epochs: OUT/convergence.csv "
            "holds test mAP / Rank-1 per method, epoch and protocol with train and CPU minutes. A measurement only: "
            "nothing is chosen on it. The report and README place the main job's budget on this curve."
        ),
    )
    p.add_argument("--out", default="reports/convergence", help="folder for the runs and convergence.csv")
    p.add_argument("--data", default="synthag:data/synthag-small-s0", help="dataset spec (default SynthAG-small)")
    from agreid_kit.models import available_methods

    p.add_argument("--methods", nargs="+", default=["vit", "sdreid"], choices=available_methods("engine"),
                   metavar="METHOD",
                   help="engine methods to train (default vit sdreid; any of "
                        f"{', '.join(available_methods('engine'))})")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--eval-every", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--from-scratch", action="store_true", help="random initial weights instead of the kit init")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agreid_kit.convergence import convergence_study

    if args.epochs < 1 or args.eval_every < 1:
        raise CLIError("--epochs and --eval-every must be >= 1")
    model = {"pretrained": None} if args.from_scratch else None
    df = convergence_study(args.out, args.methods, args.data, args.epochs, args.eval_every, args.seed, args.threads,
                           model=model, label="from scratch" if args.from_scratch else None)
    last = df.sort_values("epoch").groupby(["method", "protocol"]).tail(1)
    print(last[["method", "protocol", "epoch", "mAP", "rank1", "train_minutes"]].to_string(index=False))
    return 0
