"""``agreid report``: the main job (SynthAG -> ViT baseline, SD-ReID stages 1 and 2 -> HTML report)."""

from __future__ import annotations

import argparse

from agreid_kit.cli import CLIError

STEP_NAMES = ("data", "vit", "sdreid", "stage2", "evaluate", "tradeoff", "report")  # = agreid_kit.pipeline.STEPS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="reproduce SD-ReID on SynthAG end to end and write an HTML report (the main job)",
        description=(
            "Render SynthAG, train the ViT baseline and SD-ReID stage 1 (cpu preset), train stage 2 and generate "
            "features, evaluate every run on ALL / A<->G / A<->A / G<->G, measure the timestep trade-off, and execute "
            "the report notebook into REPORT/report.ipynb and a self-contained REPORT/report.html. Finished steps "
            "are reused when run again with the same settings (--no-reuse / --redo STEP to recompute)."
        ),
    )
    p.add_argument("--preset", choices=("small", "tiny"), default="small",
                   help="SynthAG size: small (400 ids, ~25 min on 2 cores with set-up) or tiny (CI smoke run)")
    p.add_argument("--seeds", type=int, nargs="+",
                   help="training seeds: every model is trained once per seed and tables show mean +- std "
                        "(default 0 1 2)")
    p.add_argument("--epochs", type=int,
                   help="stage-1 epochs of the ViT baseline and SD-ReID (preset default otherwise)")
    p.add_argument("--stage2-epochs", type=int, help="stage-2 epochs (preset default otherwise)")
    p.add_argument("--max-iters-per-epoch", type=int, help="cap stage-1 iterations per epoch (smoke runs)")
    p.add_argument("--taus", type=int, nargs="+",
                   help="sampling steps of the trade-off (preset default: 1 2 5 10 for small)")
    p.add_argument("--embed-method", choices=("umap", "tsne", "pca"), help="2-D map of real vs generated features")
    p.add_argument("--data-seed", type=int, default=0, help="SynthAG seed of the benchmark (default 0: SynthAG-small)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    p.add_argument("--threads", type=int, default=2,
                   help="torch CPU threads, pinned (default 2): seeded CPU runs repeat exactly only at the same count")
    p.add_argument("--data", help="SynthAG folder (default data/synthag-<preset>-s<seed>)")
    p.add_argument("--runs", help="folder of the three runs (default runs/synthag-<preset>)")
    p.add_argument("--out", help="report folder (default reports/<YYYY-MM-DD>)")
    p.add_argument("--png", choices=("require", "auto", "skip"), default="auto",
                   help="PNG copies of the figures (need Chromium): require, auto (skip with a warning) or skip")
    p.add_argument("--no-reuse", action="store_true", help="run every step again, ignoring finished outputs")
    p.add_argument("--redo", nargs="+", default=[], metavar="STEP",
                   help=f"run these steps again: {', '.join(STEP_NAMES)}")
    p.add_argument("--quiet", action="store_true", help="no progress output (same as agreid --progress off)")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    from agreid_kit.pipeline import MainJobConfig

    bad = [s for s in args.redo if s not in STEP_NAMES]
    if bad:
        raise CLIError(f"--redo: unknown step(s) {bad}; steps are {', '.join(STEP_NAMES)}")
    for name in ("epochs", "stage2_epochs", "max_iters_per_epoch", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    return MainJobConfig(
        preset=args.preset, data_seed=args.data_seed, seeds=args.seeds, data_root=args.data,
        runs_root=args.runs, out=args.out,
        epochs=args.epochs, stage2_epochs=args.stage2_epochs, max_iters_per_epoch=args.max_iters_per_epoch,
        taus=args.taus, embed_method=args.embed_method, device=args.device, png=args.png, threads=args.threads,
        reuse=not args.no_reuse, redo=list(args.redo), progress=not args.quiet,
    )


def run(args: argparse.Namespace) -> int:
    import time

    from agreid_kit.pipeline import run_main_job

    cfg = config_from_args(args)
    t0 = time.perf_counter()
    html = run_main_job(cfg)
    minutes = (time.perf_counter() - t0) / 60
    print(f"\nreport written in {minutes:.1f} min:\n  {html.resolve()}\n  {html.with_suffix('.ipynb').resolve()}")
    return 0
