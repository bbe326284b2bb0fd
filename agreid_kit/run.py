"""``Run``: one run folder and everything the kit knows about it, for stage 1 and stage 2 alike.

A run folder holds (``Run`` owns every path; nothing else in the kit spells them)::

    RUN/config.json            the run's config, versioned (below)
    RUN/run_meta.json          stage 1: the built model's config, class count, held-out validation ids
    RUN/log.jsonl, log.csv     one row per epoch (loss, lr, validation metrics, seconds)
    RUN/checkpoints/last.pt    the latest checkpoint (atomic); epoch_XXX.pt snapshots next to it
    RUN/features/<split>.*     FeatureSets (safetensors + JSON header)
    RUN/metrics.json           {protocol: {mode: metrics}}, merged by every evaluation

``config.json`` is versioned like a diffusers config: ``format_version`` (``FORMAT_VERSION``),
``config_class`` (the class that reads it: ``TrainConfig`` for engine methods, ``Stage2RunConfig`` for
``sdreid-stage2``) and ``kit_version`` sit next to the config's own fields. Files written before the
versioning (no ``format_version``) still load: their ``method`` names the schema through the method
table (``agreid_kit.models``), an explicit rule rather than trying one class after the other.

A run's identity is where it lives now: its config is always read as located in its folder (a copied run
resumes in its own folder). Resuming continues only with the settings the run was trained with
(:meth:`Run.check_resume`); :meth:`Run.is_finished` says whether the folder holds a finished run of a
given config (same settings, every epoch, the outputs that config produces).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from agreid_kit import __version__

FORMAT_VERSION = 1
HEADER_KEYS = ("format_version", "config_class", "kit_version")
CONFIG_FILE = "config.json"
META_FILE = "run_meta.json"
LOG_FILE = "log.jsonl"
LOG_CSV = "log.csv"
METRICS_FILE = "metrics.json"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
FEATURES_DIR = "features"
_MISSING = "<missing>"


def run_config_classes() -> dict[str, type]:
    """Class name -> class of every config a run folder can hold (one per kind of the method table)."""
    from agreid_kit.models import KINDS, resolve

    classes = (resolve(kind.run_config) for kind in KINDS.values())
    return {cls.__name__: cls for cls in classes}


def settings_diff(saved: Any, wanted: Any) -> dict[str, tuple[Any, Any]]:
    """``{setting: (saved value, wanted value)}`` of the settings that differ between two run configs."""
    if type(saved) is not type(wanted):
        return {"config_class": (type(saved).__name__, type(wanted).__name__)}
    a, b = saved.settings(), wanted.settings()
    pairs = {k: (a.get(k, _MISSING), b.get(k, _MISSING)) for k in sorted(set(a) | set(b))}
    return {k: (old, new) for k, (old, new) in pairs.items() if old != new}


def flag_of(config: Any, setting: str) -> str:
    """The ``agreid train`` flag that sets ``setting`` of ``config`` (``model.x`` settings: the model's flag)."""
    flags = getattr(config, "FLAGS", {})
    name = setting.split(".", 1)[0]
    return flags.get(setting, flags.get(name, "--" + name.replace("_", "-")))


class Run:
    """A run folder (it need not exist yet: trainers create theirs through it).

    ``device`` and ``checkpoint`` choose where and from which checkpoint ``model`` loads (lazily, eval mode).
    """

    def __init__(self, dir: str | Path, device: str = "cpu", checkpoint: str = LAST_CHECKPOINT) -> None:
        self.dir = Path(dir).expanduser()
        self.device = device
        self.checkpoint = checkpoint
        self._config: Any = None
        self._model: Any = None

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r})"

    # ---- paths -------------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.dir / CONFIG_FILE

    @property
    def meta_path(self) -> Path:
        return self.dir / META_FILE

    @property
    def log_path(self) -> Path:
        return self.dir / LOG_FILE

    @property
    def metrics_path(self) -> Path:
        return self.dir / METRICS_FILE

    @property
    def checkpoints_dir(self) -> Path:
        return self.dir / CHECKPOINT_DIR

    @property
    def last_checkpoint_path(self) -> Path:
        return self.checkpoints_dir / LAST_CHECKPOINT

    @property
    def checkpoint_path(self) -> Path:
        """The checkpoint ``model`` loads (``last.pt`` unless another was chosen)."""
        return self.checkpoints_dir / self.checkpoint

    def epoch_checkpoint_path(self, epoch: int) -> Path:
        return self.checkpoints_dir / f"epoch_{epoch:03d}.pt"

    def features_path(self, split: str) -> Path:
        """The FeatureSet stem of ``split`` (``.json`` / ``.safetensors`` are added by FeatureSet)."""
        return self.dir / FEATURES_DIR / split

    def has_features(self, split: str) -> bool:
        return self.features_path(split).with_suffix(".json").is_file()

    @property
    def exists(self) -> bool:
        """Whether the folder holds a run (its config.json)."""
        return self.config_path.is_file()

    @property
    def has_checkpoint(self) -> bool:
        return self.last_checkpoint_path.is_file()

    # ---- config ------------------------------------------------------------------------------------
    def raw_config(self) -> dict[str, Any]:
        """config.json's fields without the version header, unvalidated ({} when there is none)."""
        if not self.exists:
            return {}
        raw = json.loads(self.config_path.read_text())
        return {k: v for k, v in raw.items() if k not in HEADER_KEYS}

    def config_class(self) -> type:
        """The class config.json is read with: named in its header, or (unversioned files) by its method."""
        if not self.exists:
            raise FileNotFoundError(f"{self.dir} is not a run directory: {CONFIG_FILE} is missing")
        raw = json.loads(self.config_path.read_text())
        version = raw.get("format_version")
        classes = run_config_classes()
        if version is None:
            # Unversioned (written before format_version 1). Two schemas exist: a TrainConfig (engine methods)
            # and a stage-2 run config; the method names which, through the method table.
            from agreid_kit.models import method_spec

            if "method" not in raw:
                raise ValueError(f"{self.config_path}: neither a format_version nor a method; not an agreid-kit run "
                                 "config")
            return method_spec(str(raw["method"])).run_config_class()
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(
                f"{self.config_path} has format_version {version!r} (kit {raw.get('kit_version')}); this kit "
                f"({__version__}) reads format_version <= {FORMAT_VERSION}: upgrade agreid-kit"
            )
        name = raw.get("config_class")
        if name not in classes:
            raise ValueError(f"{self.config_path}: unknown config_class {name!r}; expected one of {sorted(classes)}")
        return classes[name]

    @property
    def config(self) -> Any:
        """The typed config (``TrainConfig`` / ``Stage2RunConfig``), located in this folder."""
        if self._config is None:
            cls = self.config_class()
            self._config = cls.from_dict(self.raw_config()).located(self.dir)
        return self._config

    def write_config(self, config: Any) -> None:
        """Write ``config`` (located here) as a versioned config.json."""
        from agreid_kit.utils.io import atomic_write_json

        config = config.located(self.dir)
        header = {"format_version": FORMAT_VERSION, "config_class": type(config).__name__, "kit_version": __version__}
        clash = set(HEADER_KEYS) & set(config.to_dict())
        if clash:
            raise TypeError(f"{type(config).__name__} has fields {sorted(clash)} reserved for the config.json header")
        atomic_write_json(self.config_path, {**header, **config.to_dict()})
        self._config = config

    @property
    def method(self) -> str:
        return str(self.raw_config().get("method", ""))

    @property
    def method_spec(self):
        from agreid_kit.models import method_spec

        return method_spec(self.method)

    @property
    def data(self) -> str:
        return self.config.data

    @property
    def protocol(self) -> str:
        return self.config.protocol

    def load_split(self, protocol: str | None = None):
        """The DatasetSplit of the run's data spec at ``protocol`` (default: the run's)."""
        from agreid_kit.engine.data import load_split

        return load_split(self.data, protocol or self.protocol)

    # ---- meta, log, metrics ------------------------------------------------------------------------
    @property
    def meta(self) -> dict[str, Any]:
        return json.loads(self.meta_path.read_text()) if self.meta_path.is_file() else {}

    def write_meta(self, meta: dict[str, Any]) -> None:
        from agreid_kit.utils.io import atomic_write_json

        atomic_write_json(self.meta_path, meta)

    def read_log(self) -> list[dict[str, Any]]:
        """The epoch rows of log.jsonl ([] when there is none)."""
        if not self.log_path.is_file():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def write_log(self, rows: list[dict[str, Any]]) -> None:
        """Replace log.jsonl (and its spreadsheet copy log.csv) with ``rows``."""
        from agreid_kit.utils.io import atomic_write_text

        atomic_write_text(self.log_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        keys = sorted({k for r in rows for k in r})
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.dir / LOG_CSV, buf.getvalue())

    def last_epoch(self) -> int:
        """The last epoch the log records (0 when none)."""
        return max((int(r.get("epoch", 0)) for r in self.read_log()), default=0)

    def training_totals(self) -> tuple[float, int, int]:
        """(training seconds, epochs, iterations) of the log (NaN seconds when there is no log)."""
        rows = self.read_log()
        if not rows:
            return float("nan"), 0, 0
        seconds = sum(float(r.get("seconds", r.get("train_seconds", 0.0))) for r in rows)
        if any("iters" in r for r in rows):  # stage 1: iterations of each epoch
            iters = sum(int(r.get("iters", 0)) for r in rows)
        else:  # stage 2: the running iteration count
            iters = int(rows[-1].get("iterations", 0))
        return seconds, len(rows), iters

    def read_metrics(self) -> dict[str, Any]:
        return json.loads(self.metrics_path.read_text()) if self.metrics_path.is_file() else {}

    def merge_metrics(self, results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
        """Merge ``{protocol: {mode: metrics}}`` into metrics.json; returns the merged content."""
        from agreid_kit.utils.io import atomic_write_json

        merged = self.read_metrics()
        for protocol, by_mode in results.items():
            merged.setdefault(protocol, {}).update(by_mode)
        atomic_write_json(self.metrics_path, merged)
        return merged

    def remove_stale_temporaries(self) -> int:
        """Remove temporary files an interrupted atomic write left; returns how many."""
        from agreid_kit.utils.io import remove_stale_temporaries

        if not self.dir.is_dir():
            return 0
        return sum(remove_stale_temporaries(d) for d in (self.dir, self.checkpoints_dir, self.dir / FEATURES_DIR))

    # ---- identity and resume -----------------------------------------------------------------------
    def settings_diff(self, wanted: Any) -> dict[str, tuple[Any, Any]]:
        """Settings of ``wanted`` that differ from the ones this run was made with (all of them when none)."""
        if not self.exists:
            return {"config.json": (None, "present")}
        return settings_diff(self.config, wanted.located(self.dir))

    def check_resume(self, wanted: Any, extend_epochs: bool = False) -> int | None:
        """Refuse to continue this run with settings other than its own; returns the epochs it is extended
        from (``extend_epochs``: ``wanted`` may have more epochs than the run), else None.

        Every refusal names the setting and the flag that sets it."""
        if not self.has_checkpoint:
            raise FileNotFoundError(f"--resume: no checkpoint at {self.last_checkpoint_path}; start without --resume")
        saved = self.config
        wanted = wanted.located(self.dir)
        if type(saved) is not type(wanted):
            raise ValueError(f"{self.dir} holds a {saved.RUN_KIND} run ({type(saved).__name__}), not a "
                             f"{wanted.RUN_KIND} run")
        diff = settings_diff(saved, wanted)
        for key in wanted.IDENTITY:
            if key in diff:
                old, new = diff[key]
                raise ValueError(
                    f"{self.dir} belongs to another {wanted.RUN_KIND} run ({key} = {old!r}, now {new!r}); use a new "
                    "--out "
                    "folder (or start this one again from scratch with --overwrite)"
                )
        extended_from = None
        if "epochs" in diff:
            old, new = diff["epochs"]
            if new < old:
                raise ValueError(
                    f"{self.config_path}: the run was trained for {old} epochs; --epochs {new} would shorten it. "
                    "Use a new --out folder for a shorter run"
                )
            if extend_epochs:
                extended_from = old
                del diff["epochs"]
        if diff:
            shown = ", ".join(f"{k}: {a!r} -> {b!r} ({flag_of(wanted, k)})" for k, (a, b) in diff.items())
            flags = sorted({flag_of(wanted, k) for k in diff})
            hint = " or add --extend-epochs to train it further" if "epochs" in diff else ""
            raise ValueError(
                f"{self.config_path} was trained with other settings ({shown}); a resumed run continues with its own "
                f"settings: drop {', '.join(flags)}{hint}, or start a new run with another --out"
            )
        return extended_from

    def is_finished(self, wanted: Any) -> bool:
        """Whether this folder holds a finished run of ``wanted``: the same settings, every epoch trained,
        a checkpoint, and the outputs ``wanted`` produces (features, metrics, generated features)."""
        if not self.exists or not self.has_checkpoint or self.settings_diff(wanted):
            return False
        if self.last_epoch() < wanted.epochs:
            return False
        if not all((self.dir / rel).is_file() for rel in wanted.expected_outputs()):
            return False
        generation = getattr(wanted, "expected_generation", lambda: None)()
        if generation is not None:
            head = json.loads(self.features_path("test").with_suffix(".json").read_text())
            made = (head.get("meta") or {}).get("generation") or {}
            has_gen = any(k.startswith("gen:") for k in head.get("tensors", {}))
            if not has_gen or any(made.get(k) != v for k, v in generation.items()):
                return False
        return True

    # ---- the model ---------------------------------------------------------------------------------
    @property
    def model(self):
        """The trained model in eval mode on ``device`` (loaded once, by the method's kind)."""
        if self._model is None:
            self._model = self.method_spec.load_model(self)
        return self._model


def load_run(run_dir: str | Path, device: str = "cpu", checkpoint: str = LAST_CHECKPOINT) -> Run:
    """The run in ``run_dir`` (stage 1 or stage 2), its config read now (a missing or unreadable one raises)."""
    run = Run(run_dir, device=device, checkpoint=checkpoint)
    if not run.exists:
        raise FileNotFoundError(f"{run.dir} is not a run directory: {CONFIG_FILE} is missing")
    run.config  # noqa: B018 - validates config.json now, with a message naming the file
    return run
