"""``agreid extract``: write RUN/features/{train,test}.* from a trained run, or embed any image folder.

    agreid extract RUN                                    # RUN/features/train.*, test.*
    agreid extract RUN --split test --export mat          # ... and RUN/exports/test.mat
    agreid extract RUN --folder photos/ --out feats/ --view 0 --export npy csv
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "extract",
        help="extract features of a trained run (RUN/features/train.*, test.*) or of any image folder (--folder)",
        description="Embed the run's train and/or test images with its last checkpoint. sdreid runs also store "
        "prebn, id_cond (L-1 ID-condition tokens), view_token and view_centres; train features of sdreid "
        "include the flipped image (stage 2 trains from them). --folder embeds every image under a folder "
        "instead (recursively; records get pid = camid = -1 and --view).",
    )
    p.add_argument("run", help="run directory")
    p.add_argument("--split", choices=("train", "test", "both"), default="both")
    flip = p.add_mutually_exclusive_group()
    flip.add_argument("--flip", dest="flip", action="store_const", const=True, help="also store *_flip extras")
    flip.add_argument("--no-flip", dest="flip", action="store_const", const=False)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    g = p.add_argument_group("plain image folders and export")
    g.add_argument("--folder", help="embed every image file under this folder (no dataset layout needed)")
    g.add_argument("--view", type=int, choices=(0, 1, 2), default=1,
                   help="view of --folder images: 0 aerial, 1 ground (default), 2 wearable")
    g.add_argument("--out", help="with --folder: output folder (features.safetensors/.json, exports); "
                   "else the export folder (default RUN/exports)")
    g.add_argument("--export", nargs="+", choices=("npy", "mat", "csv"), metavar="FORMAT",
                   help="also export the features: npy, mat and/or csv (see `agreid export`)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from agreid_kit.cli import CLIError
    from agreid_kit.engine.run import load_run
    from agreid_kit.export import export_many

    run_ = load_run(args.run, device=args.device)
    if args.folder:
        from agreid_kit.export import extract_folder

        if not args.out:
            raise CLIError("--folder needs --out DIR (where the folder's features go)")
        out = Path(args.out)
        fs = extract_folder(run_, args.folder, view=args.view, batch_size=args.batch_size,
                            num_workers=args.num_workers, out_stem=out / "features")
        print(f"folder {args.folder}: {len(fs)} images (view {args.view}, pid = camid = -1), features {fs.dim}-d -> "
              f"{out / 'features'}.safetensors/.json")
        if args.export:
            paths = export_many(fs, out, args.export)
            print("exported: " + ", ".join(str(p) for p in paths))
        return 0
    for split in (("train", "test") if args.split == "both" else (args.split,)):
        from agreid_kit.engine.extract import extract_features

        fs = extract_features(run_, split, flip=args.flip, batch_size=args.batch_size, num_workers=args.num_workers)
        extras = ", ".join(f"{k} {tuple(v.shape[1:])}" for k, v in sorted(fs.extras.items()))
        print(f"{split}: {len(fs)} images, features {fs.dim}-d; extras: {extras or 'none'} -> "
              f"{run_.features_path(split)}")
        if args.export:
            paths = export_many(fs, Path(args.out) if args.out else run_.dir / "exports", args.export)
            print(f"{split} exported: " + ", ".join(str(p) for p in paths))
    return 0
