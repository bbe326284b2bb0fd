"""Presets: the one way every config of the kit takes a preset's values.

A preset table maps a preset name (``paper``, ``cpu``, ...) to field values. Two helpers apply one:

- :func:`preset_values` looks a preset up; an unknown name is a ``ValueError`` naming the bad value and
  the valid ones (it never falls back to another preset);
- :func:`apply_preset` gives a config dataclass the preset's value for every field the caller did not set.
  "Did not set" is exact: the classes decorated with :func:`remembers_given_fields` record which fields
  were passed to their constructor, so ``TrainConfig(method, out, preset="paper", lr=5e-4)`` keeps the
  explicit ``lr`` although it equals the ``cpu`` default. Classes whose documented API lets callers pass
  ``None`` for "the preset's value" (``Stage2Config``, ``MainJobConfig``) say so with ``none_is_unset``.

Model configs (``agreid_kit.models.model_config``) are built as ``{**preset_values(...), **overrides}``,
the same rule: the preset under what the caller set. The preset tables themselves live next to what they
configure (``TRAIN_PRESETS`` in engine/config.py, ``STAGE2_PRESETS`` in diffusion/config.py, each model's
``presets``, ``JOB_PRESETS`` in pipeline.py).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from typing import Any, Mapping


def preset_values(presets: Mapping[str, Mapping[str, Any]], name: str, what: str) -> dict[str, Any]:
    """A copy of ``presets[name]``; an unknown ``name`` raises naming it and the valid presets of ``what``."""
    if name not in presets:
        raise ValueError(f"{what} has no preset {name!r}: the preset must be one of {sorted(presets)}")
    return copy.deepcopy(dict(presets[name]))


def remembers_given_fields(cls: type) -> type:
    """Class decorator (above ``@dataclass``): instances remember the fields their caller passed (``given_fields``)."""
    init = cls.__init__
    names = [f.name for f in dataclasses.fields(cls) if f.init]

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        object.__setattr__(self, "_given_fields", frozenset(names[: len(args)]) | frozenset(kwargs))
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


def given_fields(config: Any) -> frozenset[str]:
    """The fields the caller passed to ``config``'s constructor (every field for undecorated classes)."""
    return getattr(config, "_given_fields", frozenset(f.name for f in dataclasses.fields(config)))


def apply_preset(config: Any, values: Mapping[str, Any], none_is_unset: bool = False) -> None:
    """Set each field of ``values`` that the caller did not pass (or passed as None, with ``none_is_unset``)."""
    given = given_fields(config)
    names = {f.name for f in dataclasses.fields(config)}
    unknown = set(values) - names
    if unknown:
        raise TypeError(f"preset values {sorted(unknown)} are not fields of {type(config).__name__}")
    for key, value in values.items():
        if key not in given or (none_is_unset and getattr(config, key) is None):
            setattr(config, key, copy.deepcopy(value))
