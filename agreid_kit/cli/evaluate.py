"""``agreid evaluate``: Rank-1/5/10, mAP, mINP of a run's test features on one or more protocols."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score RUN/features/test.* on protocols (Rank-1/5/10, mAP, mINP) and write RUN/metrics.json",
        description="Cosine distance, same-id-same-camera gallery items removed, no re-ranking, no flip-TTA. "
        "Queries without a positive are skipped and counted in the table.",
    )
    p.add_argument("run", help="run directory (with features/test.*: run `agreid extract RUN` first if missing)")
    p.add_argument("--protocol", nargs="+", help="protocols (default: the run's eval protocols); 'all' = every protocol of the dataset")
    p.add_argument("--mode", nargs="+", default=["real"], help="feature modes: real, gen:<view>, gen:all, real+gen")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agreid_kit.engine.evaluate import evaluate_run, format_table
    from agreid_kit.engine.run import load_run

    run_ = load_run(args.run)
    protocols = args.protocol
    if protocols == ["all"]:
        from agreid_kit.data import available_protocols, parse_data_spec

        protocols = available_protocols(parse_data_spec(run_.data)[0])
    if not protocols:
        cfg = run_.config
        protocols = (getattr(cfg, "eval_protocols", None) or [run_.protocol]) if cfg else [run_.protocol]
    print(format_table(evaluate_run(args.run, protocols, modes=tuple(args.mode))))
    return 0
