"""The method table: every method of the kit, one entry each, and ``create_model(method, preset, **overrides)``.

The table drives everything that lists or dispatches on methods: ``agreid train --method`` and
``agreid convergence --methods`` choices, ``compare.DEFAULT_METHODS``, the trainer and config class a
run of a method uses (``agreid_kit.run.Run``), and the tests' parametrisations. Entries are cheap: a
method's module is imported only when its model class is first needed, so ``agreid --help`` and
``import agreid_kit.models`` stay free of torch.

Adding a method is one edit here: a ``register_method("name", "module:Class", ...)`` line. The class
(a :class:`agreid_kit.models.base.ReIDModel` for ``kind="engine"``) carries its own ``config_class``,
``presets`` (model config values per preset) and optional ``train_presets`` (its paper's training recipe
over the shared ``TRAIN_PRESETS``); they are checked the first time the class is loaded (see
``agreid_kit.models.base.validate_presets``). A second entry with a name already in the table raises.

Kinds of method (``KINDS``): ``engine`` models train on images through ``agreid_kit.engine.train.train``
from a ``TrainConfig``; ``stage2`` (SD-ReID stage 2) trains on the cached features of a finished run of
the method it ``requires`` through ``agreid_kit.diffusion.train.train_stage2`` from a ``Stage2Config``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

PRESETS = ("paper", "cpu")


@dataclass(frozen=True)
class Kind:
    """How methods of one kind train and what their run folders hold (``module:attribute`` references)."""

    config: str  # the config a run is started from
    run_config: str  # what RUN/config.json holds (a class with from_dict / to_dict / settings)
    trainer: str  # trainer(config, ...) -> run dir
    loader: str  # loader(run) -> the trained model in eval mode


KINDS: dict[str, Kind] = {
    "engine": Kind(
        config="agreid_kit.engine.config:TrainConfig",
        run_config="agreid_kit.engine.config:TrainConfig",
        trainer="agreid_kit.engine.train:train",
        loader="agreid_kit.engine.run:load_run_model",
    ),
    "stage2": Kind(
        config="agreid_kit.diffusion.config:Stage2Config",
        run_config="agreid_kit.diffusion.config:Stage2RunConfig",
        trainer="agreid_kit.diffusion.train:train_stage2",
        loader="agreid_kit.diffusion.loading:load_run_model",
    ),
}


def resolve(ref: str) -> Any:
    """The object a ``"package.module:attribute"`` reference names (the module is imported now)."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class MethodSpec:
    """One row of the method table.

    ``model``: ``"module:Class"`` of the model; ``kind``: a key of ``KINDS``; ``label``: its row label in
    comparison tables (default: the name); ``requires``: the method whose finished run this one trains
    from (stage 2: ``sdreid``); ``summary``: one line for ``--help`` and docs.
    """

    name: str
    model: str
    kind: str = "engine"
    label: str = ""
    requires: str | None = None
    summary: str = ""

    @property
    def display_label(self) -> str:
        return self.label or self.name

    @property
    def kind_spec(self) -> Kind:
        return KINDS[self.kind]

    def model_class(self) -> type:
        """The model class (imported now; an engine class's presets are checked once)."""
        module = self.model.partition(":")[0]
        try:
            cls = resolve(self.model)
        except ModuleNotFoundError as e:
            if e.name == module:
                raise ValueError(f"method {self.name!r} is registered but its module {module} is not installed") from e
            raise
        except AttributeError as e:
            raise ValueError(f"method {self.name!r}: {self.model} does not exist ({e})") from e
        if self.kind == "engine" and cls not in _CHECKED:
            from agreid_kit.models.base import validate_presets

            validate_presets(self.name, getattr(cls, "config_class", None), getattr(cls, "presets", None),
                             getattr(cls, "train_presets", None))
            _CHECKED.add(cls)
        if self.kind == "engine" and cls.__dict__.get("method") != self.name:
            cls.method = self.name
        return cls

    def config_class(self) -> type:
        return resolve(self.kind_spec.config)

    def run_config_class(self) -> type:
        return resolve(self.kind_spec.run_config)

    def trainer(self):
        return resolve(self.kind_spec.trainer)

    def load_model(self, run):
        return resolve(self.kind_spec.loader)(run)


_TABLE: dict[str, MethodSpec] = {}
_CHECKED: set[type] = set()


def register_method(name: str, model: str, *, kind: str = "engine", label: str = "", requires: str | None = None,
                    summary: str = "") -> MethodSpec:
    """Add a method to the table; a name already in it raises (names are unique, one entry per method)."""
    if name in _TABLE:
        raise ValueError(f"method {name!r} is already registered (model {_TABLE[name].model}); method names must be "
                         "unique")
    if kind not in KINDS:
        raise ValueError(f"method {name!r}: unknown kind {kind!r}; expected one of {sorted(KINDS)}")
    if ":" not in model:
        raise ValueError(f"method {name!r}: model must be 'package.module:Class', got {model!r}")
    if requires is not None and requires not in _TABLE:
        raise ValueError(f"method {name!r} requires {requires!r}, which is not in the method table (register it first)")
    spec = MethodSpec(name, model, kind, label, requires, summary)
    _TABLE[name] = spec
    return spec


def unregister_method(name: str) -> None:
    """Remove a method (tests and plugins that registered one temporarily)."""
    if any(s.requires == name for s in _TABLE.values()):
        raise ValueError(f"method {name!r} is required by {[s.name for s in _TABLE.values() if s.requires == name]}")
    _TABLE.pop(name, None)


def available_methods(kind: str | None = None) -> list[str]:
    """Method names in table order (a method comes after the one it requires); ``kind`` filters."""
    return [n for n, s in _TABLE.items() if kind is None or s.kind == kind]


def method_spec(method: str) -> MethodSpec:
    spec = _TABLE.get(method)
    if spec is None:
        raise ValueError(f"unknown method {method!r}; expected one of {available_methods()}")
    return spec


def method_labels() -> dict[str, str]:
    """Method name -> its row label in comparison tables."""
    return {n: s.display_label for n, s in _TABLE.items()}


def _engine_spec(method: str) -> MethodSpec:
    spec = method_spec(method)
    if spec.kind != "engine":
        raise ValueError(
            f"method {method!r} is a {spec.kind} method: it is trained from a {spec.requires} run's features by "
            f"{spec.kind_spec.trainer.replace(':', '.')}, not built with create_model"
        )
    return spec


def model_class(method: str) -> type:
    """The model class of an engine ``method``."""
    return _engine_spec(method).model_class()


def method_presets(method: str) -> dict[str, dict[str, Any]]:
    return dict(model_class(method).presets)


def method_train_presets(method: str) -> dict[str, dict[str, Any]]:
    """The training hyper-parameters ``method`` sets per preset over the shared ``TRAIN_PRESETS``
    (its paper's recipe); empty for methods that train with the shared recipe (and for non-engine methods)."""
    if method_spec(method).kind != "engine":
        return {}
    return {k: dict(v) for k, v in (getattr(model_class(method), "train_presets", None) or {}).items()}


def _tuples(values: dict[str, Any]) -> dict[str, Any]:
    for key in ("img_size", "mean", "std"):
        if isinstance(values.get(key), list):
            values[key] = tuple(values[key])
    return values


def model_config(method: str, preset: str = "cpu", **overrides: Any):
    """The config dataclass of ``method`` for ``preset`` with ``overrides`` applied over the preset's values."""
    import dataclasses

    from agreid_kit.presets import preset_values

    cls = model_class(method)
    values = preset_values(cls.presets, preset, f"method {method!r}")
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    unknown = set(overrides) - fields
    if unknown:
        raise ValueError(f"method {method!r}: unknown model option(s) {sorted(unknown)}; valid: {sorted(fields)}")
    return cls.config_class(**_tuples({**values, **overrides}))


def create_model(method: str, preset: str = "cpu", **overrides: Any):
    """Build ``method`` at ``preset`` (``paper`` or ``cpu``); ``overrides`` set config fields
    (``num_classes``, ``num_views``, ``pretrained``, ``embed_dim``, ``depth``, ...)."""
    return model_class(method)(model_config(method, preset, **overrides))


def model_from_config(method: str, config: dict[str, Any]):
    """Rebuild a model from ``dataclasses.asdict(model.config)`` (what runs store)."""
    cls = model_class(method)
    return cls(cls.config_class(**_tuples(dict(config))))


# ---- the table ---------------------------------------------------------------------------------------
# Order matters: it is the order of tables and CLI choices, and a method follows the one it requires.
register_method("vit", "agreid_kit.models.vit:ViTReID",
                summary="ViT + BNNeck, CE + soft-margin triplet (the baseline)")
register_method("vdt", "agreid_kit.models.vdt:VDT",
                summary="View-decoupled Transformer: CLS <- CLS - view after every block, orthogonality loss")
register_method("vif", "agreid_kit.models.vif:VIF", summary="VIF-AGReID: PLRM augmentation + VIAL-HNM loss")
register_method("visa", "agreid_kit.models.visa:ViSA",
                summary="ViSA: view tokens, prompt-expert pools with top-k routing, top-k patch GCN branches")
register_method("svpr", "agreid_kit.models.svpr:SVPR",
                summary="SVPR-ReID: CLIP image encoder, frozen text encoder, view prompts, attribute MoE")
register_method("sdreid", "agreid_kit.models.sdreid:SDReIDStage1", label="sdreid stage 1",
                summary="SD-ReID stage 1: view token before the last block, per-view memory bank")
register_method("sdreid-stage2", "agreid_kit.diffusion.model:SDReIDStage2", kind="stage2", label="sdreid stage 2",
                requires="sdreid",
                summary="SD-ReID stage 2: view-conditioned diffusion of the stage-1 run's ID features")
