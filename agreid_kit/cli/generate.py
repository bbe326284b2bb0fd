"""``agreid generate RUN``: SD-ReID stage 2 generates every view's feature for every test image."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate gen:<view> features of a stage-2 run's test images into RUN/features/test.*",
        description="For every test image and every view of the dataset, sample the stage-2 diffusion model "
        "(classifier-free guidance with the learned null context; all views and both CFG branches in one "
        "batched UNet call per step). Then `agreid evaluate RUN --mode real+gen`.",
    )
    p.add_argument("run", help="stage-2 run directory (from `agreid train --method sdreid-stage2`)")
    p.add_argument("--tau", type=int, default=5, help="denoising steps (paper: 5; 10 for AG-ReID.v2)")
    p.add_argument("--guidance", type=float, default=2.0,
                   help="classifier-free guidance scale w (1 = conditional only)")
    p.add_argument("--sampler", choices=("ddim", "ddpm"), default="ddim")
    p.add_argument("--spacing", choices=("leading", "trailing", "linspace"), default="leading", help="timestep spacing")
    p.add_argument("--views",
                   help="comma list of views (ids or names: aerial, ground, wearable); default: all of the dataset's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=512,
                   help="images per batch (x views x 2 CFG branches per UNet call)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agreid_kit.diffusion.sample import generate_features

    views = [v.strip() for v in args.views.split(",")] if args.views else None
    fs = generate_features(args.run, tau=args.tau, guidance=args.guidance, sampler=args.sampler,
                           timestep_spacing=args.spacing, views=views, seed=args.seed,
                           batch_size=args.batch_size, device=args.device)
    g = fs.meta["generation"]
    print(f"generated {', '.join(f'gen:{v}' for v in g['views'])} for {len(fs)} images "
          f"(tau={g['tau']}, w={g['guidance']}, {g['sampler']}/{g['timestep_spacing']}): "
          f"{g['seconds_per_1000']:.2f} s per 1,000 images on {g['device']}")
    return 0
