"""``agreid data``: inspect datasets and protocols.

    agreid data info cargo:/data/CARGO --protocol "A<->G"
    agreid data info cp2108:/data/CP2108 --protocol A->G --option time_mode=cross
    agreid data protocols lagper
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="inspect datasets: counts per protocol, protocol list")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    info = sub.add_parser("info", help="read NAME:ROOT under one protocol and print the split's counts")
    info.add_argument("spec", metavar="NAME:ROOT", help="dataset name and root folder, e.g. cargo:/data/CARGO")
    info.add_argument("--protocol", "-p", required=True, help="protocol name (see `agreid data protocols NAME`)")
    info.add_argument(
        "--option", "-o", action="append", default=[], metavar="KEY=VALUE",
        help="reader option, repeatable (e.g. time_mode=cross, on_bad_name=skip)",
    )
    info.set_defaults(func=run_info)

    protocols = sub.add_parser("protocols", help="list a dataset's protocols with one-line descriptions")
    protocols.add_argument("name", nargs="?", help="dataset name; all datasets when omitted")
    protocols.set_defaults(func=run_protocols)


def _options(pairs: list[str]) -> dict[str, object]:
    from agreid_kit.cli import CLIError

    out: dict[str, object] = {}
    for pair in pairs:
        if "=" not in pair:
            raise CLIError(f"--option {pair!r} must be KEY=VALUE")
        key, value = pair.split("=", 1)
        out[key] = {"true": True, "false": False}.get(value.lower(), value)
    return out


def run_info(args: argparse.Namespace) -> int:
    from agreid_kit.data import load_dataset, parse_data_spec

    name, root = parse_data_spec(args.spec)
    split = load_dataset(name, root, args.protocol, **_options(args.option))
    print(split.summary())
    extra = {k: v for k, v in split.options.items() if k not in ("skipped_examples",)}
    if extra:
        print("  options/notes: " + ", ".join(f"{k}={v}" for k, v in sorted(extra.items())))
    return 0


def run_protocols(args: argparse.Namespace) -> int:
    from agreid_kit.data import DATASETS, protocol_descriptions

    names = [args.name] if args.name else sorted(DATASETS)
    for name in names:
        descs = protocol_descriptions(name)
        if not args.name:
            print(f"{name}: {DATASETS[name].description}")
        width = max(len(p) for p in descs)
        for proto, desc in descs.items():
            print(f"  {proto:{width}s}  {desc}")
    return 0
