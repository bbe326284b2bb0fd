"""``agreid pretrain``: make or reproduce a kit-trained initialisation of the cpu presets' backbone."""

from __future__ import annotations

import argparse

from agreid_kit.cli import CLIError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "pretrain",
        help="pretrain the cpu presets' ViT backbone on SynthAG-pretrain (the kit init the cpu presets start from)",
        description=(
            "Render SynthAG-pretrain (preset pretrain, seed 1: identities independent of SynthAG-small's), train the "
            "plain ViT (cpu preset backbone, random init) on it, and write the backbone as "
            "agreid_kit/weights/NAME.safetensors with its card NAME.json (recipe, data hash, metrics, SHA-256). "
            "Interrupted pretraining resumes from its run folder."
        ),
    )
    p.add_argument("--name", default=None, help="kit init name (default synthag-vit128)")
    p.add_argument("--data", default=None, help="SynthAG-pretrain folder (default data/synthag-pretrain-s1)")
    p.add_argument("--data-seed", type=int, default=None,
                   help="SynthAG seed of the pretraining set (default 1; 0 is refused)")
    p.add_argument("--run", default=None, help="pretraining run folder (default runs/pretrain/NAME)")
    p.add_argument("--out-dir", default=None,
                   help="where NAME.safetensors and NAME.json go (default agreid_kit/weights)")
    p.add_argument("--epochs", type=int, default=None, help="pretraining epochs (default: the recipe's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--num-workers", type=int, default=2, help="processes decoding images for the image cache")
    p.add_argument("--export-only", action="store_true",
                   help="only write the weights/card of a finished pretraining run")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from agreid_kit.engine.pretrain import PretrainConfig, export_kit_init, pretrain

    if args.epochs is not None and args.epochs < 1:
        raise CLIError(f"--epochs must be >= 1, got {args.epochs}")
    values = {k: v for k, v in dict(name=args.name, data_root=args.data, data_seed=args.data_seed, run_dir=args.run,
                                    out_dir=args.out_dir).items() if v is not None}
    cfg = PretrainConfig(**values, seed=args.seed, threads=args.threads, num_workers=args.num_workers,
                         recipe={"epochs": args.epochs} if args.epochs else {})
    if args.export_only:
        from agreid_kit.run import Run

        if not Run(cfg.run_path).metrics_path.is_file():
            raise CLIError(f"--export-only: {cfg.run_path} holds no finished pretraining run (no metrics.json)")
        export_kit_init(cfg, Path(cfg.data_root))
    else:
        pretrain(cfg)
    return 0
