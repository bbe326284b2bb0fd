"""``agreid export``: a run's features as .npy / .mat / .csv with each image's path, pid, camid and view.

    agreid export RUN --format mat --out exports/
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export RUN/features/<split>.* (or any FeatureSet) to .npy, .mat or .csv with path/pid/camid/view",
        description="npy: <split>_features.npy + <split>_records.csv; mat: <split>.mat (features, pid, camid, view, "
        "path); csv: <split>.csv (path, pid, camid, view, raw_camid, f0..). See agreid_kit.export.",
    )
    p.add_argument("run", nargs="?", help="run directory (omit with --features)")
    p.add_argument("--format", nargs="+", choices=("npy", "mat", "csv"), required=True, help="one or more formats")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--split", choices=("test", "train"), default="test",
                   help="which RUN/features/<split> (default test)")
    p.add_argument("--features", help="export this FeatureSet (stem or .json path) instead of RUN/features/<split>")
    p.add_argument("--mode", default="real", help="feature mode: real, gen:<view>, gen:all, real+gen")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agreid_kit.cli import CLIError
    from agreid_kit.export import export_many
    from agreid_kit.features import FeatureSet

    if args.features:
        fs = FeatureSet.load(args.features)
    elif not args.run:
        raise CLIError("give a run directory or --features STEM")
    else:
        from agreid_kit.engine.run import load_run

        fs = FeatureSet.load(load_run(args.run).features_path(args.split))
    paths = export_many(fs, args.out, args.format, mode=args.mode)
    print(
        f"{len(fs)} images, {fs.descriptor(args.mode).shape[1]}-d ({args.mode}) -> " + ", ".join(str(p) for p in paths))
    return 0
