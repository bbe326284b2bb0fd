"""Option helpers shared by the ``agreid`` commands: ``KEY=VALUE`` options checked against a config's
fields, and hidden deprecated aliases of renamed flags (the old spelling keeps working, with a note).

One idea has one spelling across commands (``--model-opt``, ``--checkpoint-every``, ``--batch-size``,
``--resume`` / ``--overwrite``, ``--num-workers``, ``--quiet``); ``DEPRECATED_ALIASES`` lists the old ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any, Iterable

from agreid_kit.cli import CLIError

# old flag -> the flag it is now spelled as (kept working, hidden from --help)
DEPRECATED_ALIASES = {
    "--model-opts": "--model-opt",
    "--ckpt-every": "--checkpoint-every",
    "--batch": "--batch-size",
    "--no-resume": "--overwrite",
    "--workers": "--num-workers",
    "--no-progress": "--quiet",
}


class DeprecatedAlias(argparse.Action):
    """An old spelling of a flag: sets the new flag's ``dest`` and says once on stderr what to type instead.

    ``mode``: ``store`` (the value(s)), ``store_true`` or ``extend`` (values appended to a list)."""

    def __init__(self, option_strings, dest, mode: str = "store", **kwargs: Any) -> None:
        self.mode = mode
        if mode == "store_true":
            kwargs["nargs"] = 0
        kwargs.setdefault("default", argparse.SUPPRESS)
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        new = DEPRECATED_ALIASES.get(option_string, "?")
        print(f"agreid: {option_string} is deprecated; use {new}", file=sys.stderr)
        if self.mode == "store_true":
            setattr(namespace, self.dest, True)
        elif self.mode == "extend":
            setattr(namespace, self.dest, [*(getattr(namespace, self.dest, None) or []), *values])
        else:
            setattr(namespace, self.dest, values)


def add_deprecated_alias(parser, old: str, dest: str, mode: str = "store", **kwargs: Any) -> None:
    """Add ``old`` (a key of ``DEPRECATED_ALIASES``) as a hidden alias writing ``dest``."""
    if old not in DEPRECATED_ALIASES:
        raise KeyError(f"{old} is not listed in DEPRECATED_ALIASES")
    parser.add_argument(old, dest=dest, action=DeprecatedAlias, mode=mode, **kwargs)


def config_keys(config_class: type, exclude: Iterable[str] = ()) -> list[str]:
    """The field names of a config dataclass a user may set (``exclude``: fields the kit sets itself)."""
    skip = set(exclude)
    return sorted(f.name for f in dataclasses.fields(config_class) if f.name not in skip)


def parse_key_values(items: Iterable[str], valid: Iterable[str], flag: str, what: str) -> dict[str, Any]:
    """``["depth=8", "arch=vit_small"]`` -> ``{"depth": 8, "arch": "vit_small"}`` (VALUE as JSON, else a string).

    A KEY outside ``valid`` is an error naming it, ``flag`` and the valid keys of ``what``."""
    valid = sorted(valid)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key:
            raise CLIError(f"{flag} {item!r}: expected KEY=VALUE, e.g. depth=8")
        if key not in valid:
            raise CLIError(f"{flag} {item!r}: unknown key {key!r} for {what}; valid keys: {', '.join(valid)}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a bare string such as an arch name
    return out
