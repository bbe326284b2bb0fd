"""``agreid ranks``: every query's top-k gallery list as OUT/ranks.csv (+ a few composite JPEGs).

    agreid ranks RUN --protocol "A->G" --out ranks/ --top-k 10 --images 20
"""

from __future__ import annotations

import argparse

from agreid_kit.cli._toolkit_args import add_rerank_args, rerank_params


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "ranks",
        help="dump each query's top-k ranked gallery (OUT/ranks.csv, OUT/queries.csv, optional JPEGs), like torchreid "
             "visrank",
        description="Ranks the gallery exactly as `agreid evaluate` scores it (same-pid-same-camera junk and the "
        "protocol's gallery rules removed, stable ties). ranks.csv: one row per query and rank with paths, ids, "
        "cameras, views, match/junk flags and distance; queries.csv: per-query AP and first-match rank.",
    )
    p.add_argument("run", help="run directory with features/test.*")
    p.add_argument("--protocol", help="protocol (default: the run's protocol)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--top-k", type=int, default=10, help="gallery items per query (default 10; 0 = the whole gallery)")
    p.add_argument("--images", type=int, nargs="?", const=20, default=0, metavar="N",
                   help="also write OUT/images/*.jpg for the first N queries (no number: 20; default: none)")
    p.add_argument("--mode", default="real", help="feature mode: real, gen:<view>, gen:all, real+gen")
    p.add_argument("--include-junk", action="store_true",
                   help="list the removed (junk / gallery-rule) items inside each top-k span too, flagged junk=1")
    add_rerank_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agreid_kit.cli import CLIError
    from agreid_kit.engine.run import load_run
    from agreid_kit.rankdump import dump_ranks, split_for_ranks

    if args.top_k < 0:
        raise CLIError(f"--top-k {args.top_k}: must be >= 0 (0 = the whole gallery)")
    if args.images < 0:
        raise CLIError(f"--images {args.images}: must be >= 0")
    params = rerank_params(args)
    run_ = load_run(args.run)
    fs, split = split_for_ranks(run_, args.protocol)
    if params is not None:
        print(params.label())
    info = dump_ranks(fs, split, args.out, top_k=args.top_k, mode=args.mode, images=args.images,
                      include_junk=args.include_junk, rerank=params)
    label = args.mode + ("+rerank" if params is not None else "")
    print(f"{split.protocol} [{label}]: top-{info['top_k']} of {info['n_query']} queries -> {info['ranks_csv']}, "
          f"{info['queries_csv']}; mAP of this ranking {100 * info['mAP']:.2f}% over {info['n_valid']} valid queries")
    if info["images"]:
        print(f"{len(info['images'])} composite images -> {args.out}/images/")
    return 0
