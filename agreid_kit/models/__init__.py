"""Models behind one entry point, ``create_model(method, preset, **overrides)``.

Methods are registered lazily: ``_METHOD_MODULES`` maps a method name to the module that defines
it; the module is imported on first use and registers its class with
``agreid_kit.models.base.register_model`` (see that module's docstring for how to add a method).
"""

from __future__ import annotations

import importlib
from typing import Any

_METHOD_MODULES = {
    "vit": "agreid_kit.models.vit",
    "sdreid": "agreid_kit.models.sdreid",
    "vdt": "agreid_kit.models.vdt",
    "vif": "agreid_kit.models.vif",
    "visa": "agreid_kit.models.visa",
    "svpr": "agreid_kit.models.svpr",
}

PRESETS = ("paper", "cpu")


def available_methods() -> list[str]:
    return sorted(_METHOD_MODULES)


def method_presets(method: str) -> dict[str, dict[str, Any]]:
    return dict(_lookup(method)[2])


def method_train_presets(method: str) -> dict[str, dict[str, Any]]:
    """The training hyper-parameters ``method`` sets per preset over the shared ``TRAIN_PRESETS``
    (its paper's recipe); empty for methods that train with the shared recipe."""
    from agreid_kit.models.base import registered_train_presets

    _lookup(method)
    return registered_train_presets(method)


def model_class(method: str) -> type:
    """The registered model class of ``method``."""
    return _lookup(method)[0]


def _lookup(method: str):
    from agreid_kit.models.base import registered

    if method not in _METHOD_MODULES:
        raise ValueError(f"unknown method {method!r}; expected one of {available_methods()}")
    try:
        importlib.import_module(_METHOD_MODULES[method])
    except ModuleNotFoundError as e:
        if e.name == _METHOD_MODULES[method]:
            raise ValueError(f"method {method!r} is registered but its module {_METHOD_MODULES[method]} is not installed") from e
        raise
    entry = registered(method)
    if entry is None:
        raise ValueError(f"module {_METHOD_MODULES[method]} did not register method {method!r} (missing @register_model)")
    return entry


def model_config(method: str, preset: str = "cpu", **overrides: Any):
    """The config dataclass of ``method`` for ``preset`` with ``overrides`` applied."""
    import dataclasses

    _, config_class, presets = _lookup(method)
    if preset not in presets:
        raise ValueError(f"method {method!r} has no preset {preset!r}; expected one of {sorted(presets)}")
    fields = {f.name for f in dataclasses.fields(config_class)}
    unknown = set(overrides) - fields
    if unknown:
        raise ValueError(f"method {method!r}: unknown model option(s) {sorted(unknown)}; valid: {sorted(fields)}")
    values = {**presets[preset], **overrides}
    for key in ("img_size", "mean", "std"):
        if isinstance(values.get(key), list):
            values[key] = tuple(values[key])
    return config_class(**values)


def create_model(method: str, preset: str = "cpu", **overrides: Any):
    """Build ``method`` at ``preset`` (``paper`` or ``cpu``); ``overrides`` set config fields
    (``num_classes``, ``num_views``, ``pretrained``, ``embed_dim``, ``depth``, ...)."""
    cls, _, _ = _lookup(method)
    return cls(model_config(method, preset, **overrides))


def model_from_config(method: str, config: dict[str, Any]):
    """Rebuild a model from ``dataclasses.asdict(model.config)`` (what runs store)."""
    cls, config_class, _ = _lookup(method)
    values = dict(config)
    for key in ("img_size", "mean", "std"):
        if isinstance(values.get(key), list):
            values[key] = tuple(values[key])
    return cls(config_class(**values))
