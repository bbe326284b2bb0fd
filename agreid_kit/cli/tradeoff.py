"""``agreid tradeoff RUN``: accuracy and generation latency per number of sampling steps tau."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "tradeoff",
        help="SD-ReID timestep trade-off: Rank-1/mAP/mINP and seconds per 1,000 images for each tau",
        description="Regenerates the stage-2 features of RUN at each tau (not saved into the run) and scores them. "
        "Writes OUT/tradeoff.csv and OUT/tradeoff.html/.png.",
    )
    p.add_argument("run", help="stage-2 run directory")
    p.add_argument("--taus", default="1,2,5,10,20,50", help="comma list of denoising step counts")
    p.add_argument("--protocol", nargs="+", help="protocols (default: the run's protocol)")
    p.add_argument("--mode", nargs="+", default=["real+gen"], help="feature modes: real, gen:<view>, gen:all, real+gen")
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--sampler", choices=("ddim", "ddpm"), default="ddim")
    p.add_argument("--spacing", choices=("leading", "trailing", "linspace"), default="leading")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="output folder (default RUN/analysis)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from agreid_kit.cli import CLIError
    from agreid_kit.diffusion.analyses import timestep_tradeoff
    from agreid_kit.engine.run import load_run
    from agreid_kit.utils.io import atomic_write_text

    try:
        taus = [int(t) for t in args.taus.split(",") if t.strip()]
    except ValueError:
        raise CLIError(f"--taus must be a comma list of integers, got {args.taus!r}") from None
    if not taus or min(taus) < 1:
        raise CLIError(f"--taus: every tau must be >= 1, got {taus}")
    protocols = args.protocol or [load_run(args.run).protocol]
    df, fig = timestep_tradeoff(args.run, taus, protocols, modes=args.mode, guidance=args.guidance,
                                sampler=args.sampler,
                                timestep_spacing=args.spacing, seed=args.seed, batch_size=args.batch_size,
                                device=args.device)
    out = Path(args.out) if args.out else Path(args.run) / "analysis"
    atomic_write_text(out / "tradeoff.csv", df.to_csv(index=False))
    from agreid_kit.viz import save_figure

    save_figure(fig, out / "tradeoff", png="auto")
    cols = ["tau", "protocol", "mode", "rank1", "mAP", "mINP", "sec_per_1000"]
    show = df[cols].copy()
    for c in ("rank1", "mAP", "mINP"):
        show[c] = (100 * show[c]).round(2)
    print(show.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"wrote {out / 'tradeoff.csv'} and {out / 'tradeoff'}.html")
    return 0
