"""``agreid extract``: write RUN/features/{train,test}.* from a trained run."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "extract",
        help="extract features of a trained run (RUN/features/train.*, test.*)",
        description="Embed the run's train and/or test images with its last checkpoint. sdreid runs also store "
        "prebn, id_cond (L-1 ID-condition tokens), view_token and view_centres; train features of sdreid "
        "include the flipped image (stage 2 trains from them).",
    )
    p.add_argument("run", help="run directory")
    p.add_argument("--split", choices=("train", "test", "both"), default="both")
    flip = p.add_mutually_exclusive_group()
    flip.add_argument("--flip", dest="flip", action="store_const", const=True, help="also store *_flip extras")
    flip.add_argument("--no-flip", dest="flip", action="store_const", const=False)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agreid_kit.engine.extract import extract_features
    from agreid_kit.engine.run import load_run

    run_ = load_run(args.run, device=args.device)
    for split in (("train", "test") if args.split == "both" else (args.split,)):
        fs = extract_features(run_, split, flip=args.flip, batch_size=args.batch_size, num_workers=args.num_workers)
        extras = ", ".join(f"{k} {tuple(v.shape[1:])}" for k, v in sorted(fs.extras.items()))
        print(f"{split}: {len(fs)} images, features {fs.dim}-d; extras: {extras or 'none'} -> {run_.features_path(split)}")
    return 0
