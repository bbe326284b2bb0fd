"""``agreid evaluate``: Rank-1/5/10, mAP, mINP of a run's test features on one or more protocols.

``--rerank`` adds k-reciprocal re-ranked rows (mode ``<mode>+rerank``); ``--by-camera`` writes
per (query camera, gallery camera) tables and heatmaps to RUN/breakdown/.
"""

from __future__ import annotations

import argparse
import re

from agreid_kit.cli._toolkit_args import add_rerank_args, rerank_params


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score RUN/features/test.* on protocols (Rank-1/5/10, mAP, mINP) and write RUN/metrics.json",
        description="Cosine distance, same-id-same-camera gallery items removed, no flip-TTA; no re-ranking unless "
        "--rerank (then re-ranked rows are added under the mode '<mode>+rerank'). "
        "Queries without a positive are skipped and counted in the table.",
    )
    p.add_argument("run", help="run directory (with features/test.*: run `agreid extract RUN` first if missing)")
    p.add_argument("--protocol", nargs="+",
                   help="protocols (default: the run's eval protocols); 'all' = every protocol of the dataset")
    p.add_argument("--mode", nargs="+", default=["real"], help="feature modes: real, gen:<view>, gen:all, real+gen")
    add_rerank_args(p)
    g = p.add_argument_group("per camera-pair breakdown")
    g.add_argument("--by-camera", action="store_true",
                   help="mAP / Rank-1 per (query camera, gallery camera) pair: printed, and written to "
                   "RUN/breakdown/<protocol>_<mode>_<key>.csv/.html")
    g.add_argument("--camera-key", choices=("camid", "raw_camid", "view"), default="camid",
                   help="what a camera is: the protocol's camid (default; the junk rule's id), the sensor id, or the "
                        "view")
    p.set_defaults(func=run)


def slug(text: str) -> str:
    """A file-name-safe form of a protocol or mode name (``A<->G`` -> ``A-vs-G``, ``A->G`` -> ``A-to-G``)."""
    text = text.replace("<->", "-vs-").replace("->", "-to-")
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


def run(args: argparse.Namespace) -> int:
    from agreid_kit.engine.evaluate import evaluate_run, format_table
    from agreid_kit.engine.run import load_run

    params = rerank_params(args)
    run_ = load_run(args.run)
    protocols = args.protocol
    if protocols == ["all"]:
        from agreid_kit.data import available_protocols, parse_data_spec

        protocols = available_protocols(parse_data_spec(run_.data)[0])
    if not protocols:
        cfg = run_.config
        protocols = (getattr(cfg, "eval_protocols", None) or [run_.protocol]) if cfg else [run_.protocol]
    results = evaluate_run(args.run, protocols, modes=tuple(args.mode))
    dists: dict = {}
    if params is not None:
        from agreid_kit.rerank import evaluate_run_reranked

        print(params.label())
        reranked, dists = evaluate_run_reranked(args.run, protocols, tuple(args.mode), params, keep_distances=True)
        for protocol, by_mode in reranked.items():
            results[protocol].update(by_mode)
    print(format_table(results))
    if args.by_camera:
        _by_camera(args, run_, protocols, params, dists)
    return 0


def _by_camera(args, run_, protocols, params, dists) -> None:
    """Print and write the camera-pair tables of every protocol and mode (re-ranked too with --rerank)."""
    from agreid_kit.breakdown import camera_pair_figure, camera_pair_table, format_camera_matrix
    from agreid_kit.features import FeatureSet
    from agreid_kit.rerank import rerank_mode
    from agreid_kit.utils.io import atomic_write_text
    from agreid_kit.viz import save_figure

    fs = FeatureSet.load(run_.features_path("test"))
    out = run_.dir / "breakdown"
    for protocol in protocols:
        split = run_.load_split(protocol)
        for mode in args.mode:
            variants = [(mode, None)]
            if params is not None:
                variants.append((rerank_mode(mode), dists[(protocol, mode)]))
            for label, dist in variants:
                df = camera_pair_table(fs, split, mode, key=args.camera_key, dist=dist)
                df.attrs["mode"] = label
                stem = out / f"{slug(protocol)}_{slug(label)}_{args.camera_key}"
                atomic_write_text(stem.with_suffix(".csv"), df.to_csv(index=False))
                save_figure(camera_pair_figure(df, "mAP"), stem, formats=("html",))
                print(f"\n{protocol} [{label}] per camera pair ({args.camera_key}; rows query, columns gallery; "
                      f"'-' = no query with a positive) -> {stem}.csv/.html")
                print("mAP (%)\n" + format_camera_matrix(df, "mAP"))
                print("Rank-1 (%)\n" + format_camera_matrix(df, "rank1"))
