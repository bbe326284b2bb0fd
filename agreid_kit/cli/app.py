"""``agreid app``: serve the Gradio ranking demo of a run on 127.0.0.1."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "app",
        help="serve the query-gallery ranking demo (Gradio, local only)",
        description=(
            "Pick or upload a person and see whom the model returns from the other platform's cameras, with the "
            "generated-view features of an SD-ReID stage-2 run. Serves on 127.0.0.1 only (no share link, analytics "
            "off). Without --run it serves $AGREID_RUN or runs/synthag-small/seed0/sdreid-stage2 (what `make report` "
            "writes); if that run does not exist the page says how to make it. The trade-off tab finds the run's "
            "table in RUN/analysis/ or in the reports/ folder of a project above the run (newest report naming "
            "the run, reports/latest first), from any working folder; --report names one explicitly."
        ),
    )
    p.add_argument("--run", default=None,
                   help="run directory (stage-1 or sdreid-stage2); default $AGREID_RUN or "
                        "runs/synthag-small/seed0/sdreid-stage2")
    p.add_argument("--data", default=None, help="data spec NAME:ROOT (default: the one in the run's config.json)")
    p.add_argument("--protocol", default=None, help="protocol shown first (default: the run's)")
    p.add_argument("--report", default=None,
                   help="report folder (or its tradeoff.csv) for the trade-off tab; default: found from the run")
    p.add_argument("--port", type=int, default=7860, help="port on 127.0.0.1 (default 7860; 0 picks a free one)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agreid_kit.cli import CLIError

    if args.port is not None and not 0 <= args.port <= 65535:
        raise CLIError(f"--port must be in 0..65535, got {args.port}")
    # Lazy: gradio and the model stack load only when the app is actually served.
    from agreid_kit.apps.ranking_app import AppError, build_app, default_run_dir, launch_app

    run_dir = args.run if args.run is not None else default_run_dir()
    demo = build_app(run_dir, data=args.data, protocol=args.protocol, report=getattr(args, "report", None))
    if getattr(demo, "backend", None) is None:
        print(f"agreid app: no usable run at {run_dir}; the page explains how to make one")
    elif demo.backend.tradeoff_error:
        print(f"agreid app: trade-off tab: {demo.backend.tradeoff_error}")
    try:
        launch_app(demo, port=args.port or None)
    except AppError as e:  # e.g. a busy --port: one line, no Gradio traceback
        raise CLIError(str(e)) from e
    return 0
