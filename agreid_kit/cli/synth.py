"""``agreid synth``: render the SynthAG benchmark (CARGO layout + meta.csv + manifest + difficulty card)."""

from __future__ import annotations

import argparse

from agreid_kit.cli import CLIError
from agreid_kit.cli._options import add_deprecated_alias

PRESET_NAMES = ("tiny", "small", "pretrain", "full")  # kept in step with agreid_kit.synth.PRESETS (checked in tests)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "synth",
        help="render the SynthAG aerial-ground benchmark",
        description=(
            "Render SynthAG procedurally on the CPU: tiny (40 ids x 10 images, CI), small (400 ids, 10,000 images, the "
            "default demo) or full (5,000 ids, CARGO scale). Same preset and seed give byte-identical files; an "
            "interrupted run resumes, a complete one is reused. Prints the difficulty card at the end."
        ),
    )
    p.add_argument("--preset", default="small", help=f"one of {', '.join(PRESET_NAMES)} (default small)")
    p.add_argument("--out", required=True, help="output folder (new, empty, or a previous run of the same preset/seed)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--num-workers", type=int, default=None, help="rendering processes (default: CPU count, at most 8)")
    p.add_argument("--ids", type=int, default=None, help="override the preset's number of identities")
    p.add_argument("--images-per-id", type=int, default=None, help="override the preset's images per identity")
    p.add_argument("--size", default=None, help="output image size HxW, e.g. 256x128 (default 256x128)")
    p.add_argument("--no-card", action="store_true", help="skip the difficulty card (colour-histogram baseline)")
    p.add_argument("--quiet", action="store_true", help="no progress output (same as agreid --progress off)")
    add_deprecated_alias(p, "--workers", "num_workers", type=int)
    add_deprecated_alias(p, "--no-progress", "quiet", mode="store_true")
    p.set_defaults(func=run)


def _overrides(args: argparse.Namespace) -> dict:
    over = {}
    if args.ids is not None:
        over["n_ids"] = args.ids
    if args.images_per_id is not None:
        over["images_per_id"] = args.images_per_id
    if args.size:
        try:
            h, w = (int(x) for x in args.size.lower().split("x"))
        except ValueError as e:
            raise CLIError(f"--size {args.size!r}: expected HxW, e.g. 256x128") from e
        over.update(height=h, width=w)
    return over


def run(args: argparse.Namespace) -> int:
    import json
    import time
    from pathlib import Path

    from agreid_kit.synth import PRESETS, format_difficulty_card, read_manifest, render_dataset, write_difficulty_card

    if args.preset not in PRESETS:
        raise CLIError(f"unknown --preset {args.preset!r}; valid: {', '.join(sorted(PRESETS))}")
    if args.num_workers is not None and args.num_workers < 1:
        raise CLIError(f"--num-workers must be >= 1, got {args.num_workers}")
    reused = (Path(args.out) / "manifest.json").is_file()
    t0 = time.perf_counter()
    root = render_dataset(args.preset, args.out, seed=args.seed, workers=args.num_workers, progress=not args.quiet,
                          difficulty=False, **_overrides(args))
    seconds = time.perf_counter() - t0
    manifest = read_manifest(root)
    counts = manifest["counts"]
    n = sum(c["images"] for c in counts.values())
    print(f"SynthAG {args.preset} (seed {args.seed}) at {root}: {n} images ("
          + ", ".join(f"{k} {v['images']} imgs / {v['ids']} ids" for k, v in counts.items())
          + ("); reused (manifest matches)" if reused else f"); rendered in {seconds:.1f} s "
                                                           f"({n / max(seconds, 1e-9):.0f} images/s)"))
    print(f"content hash {manifest['content_hash']}")
    if not args.no_card:
        card_path = Path(root) / "difficulty.json"
        if card_path.is_file():
            card = json.loads(card_path.read_text())
        else:
            t1 = time.perf_counter()
            card = write_difficulty_card(root, progress=not args.quiet)
            print(f"difficulty card computed in {time.perf_counter() - t1:.1f} s")
        print(format_difficulty_card(card))
    return 0
