"""The ``agreid`` console command.

Each subcommand lives in its own module of this package and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` (called with the parsed args, returns an exit code).
Modules import heavy dependencies inside ``func`` so ``agreid --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from agreid_kit import __version__


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agreid",
        description="agreid-kit: aerial-ground person re-identification workbench (SD-ReID and the field's systems).",
    )
    parser.add_argument("--version", action="version", version=f"agreid-kit {__version__}")
    parser.add_argument(
        "--progress", choices=("auto", "bar", "lines", "off"),
        help="progress display of every command (default: $AGREID_PROGRESS or auto = a bar on a terminal, "
        "one line per 25%% of a loop in a log or CI)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(sub)
    return parser


def _stop_on_sigterm() -> None:
    """SIGTERM ends a command like Ctrl-C: the same clean-up runs (checkpoint notes, notebook kernels and
    loader workers shut down by their context managers) instead of an abrupt exit that orphans children."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum, frame):  # noqa: ARG001 - signal handler signature
        raise KeyboardInterrupt(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, stop)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _stop_on_sigterm()
    if getattr(args, "progress", None):
        from agreid_kit.utils.progress import set_progress_mode

        set_progress_mode(args.progress)
    if getattr(args, "quiet", False):
        from agreid_kit.utils.progress import set_progress_mode

        set_progress_mode("off")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"agreid {args.command}: interrupted", file=sys.stderr)
        return 130
    except CLIError as e:
        print(f"agreid {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, KeyError) as e:
        # Library errors carry messages that name the file/field at fault; show them without a traceback.
        if getattr(args, "debug", False):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"agreid {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
