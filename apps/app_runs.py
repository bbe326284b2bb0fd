"""Finding what the ranking app serves: the run, its data, its trade-off table, and its models.

The trade-off table is looked up from the run's folder, never from the working folder alone: the main job
(``agreid report``) writes ``<project>/runs/...`` and ``<project>/reports/<date>/tradeoff.csv`` with
``tradeoff.json`` naming the runs it swept (relative to ``<project>``) and ``reports/latest`` pointing at
the newest report; so the app walks up from the run to every ancestor holding ``reports/`` and takes the
newest report that names this run (``latest`` first). ``agreid tradeoff RUN`` writes
``RUN/analysis/tradeoff.csv``, which wins; an explicit ``--report`` (a report folder or a CSV) wins over both.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import torch

from agreid_kit.data.records import DatasetSplit

from .app_errors import AppError, ModelError, describe

DEFAULT_RUN = "runs/synthag-small/seed0/sdreid-stage2"
"""Where ``make report`` writes the first seed's SD-ReID stage-2 run (relative to the working directory)."""
LEGACY_RUN = "runs/synthag-small/sdreid-stage2"
"""Where older main jobs wrote it; served when it exists and ``DEFAULT_RUN`` does not."""
MAKE_RUN_COMMAND = "make report"
"""The one command that makes the default run."""

# An embedder maps one RGB image to the model's embed() outputs for a batch of one
# (``features`` and, for SD-ReID, ``prebn``, ``id_cond``, ``view_token``); it may carry ``input_size`` (H, W).
Embedder = Callable[[Any], dict[str, torch.Tensor]]
# A generator maps ID conditions (B, L-1, D) to generated features (retrieval space) per target view.
Generator = Callable[[torch.Tensor, int, float], dict[int, torch.Tensor]]


def default_run_dir() -> Path:
    """The run the app serves without ``--run``: ``$AGREID_RUN``, else the main job's first stage-2 run."""
    env = os.environ.get("AGREID_RUN")
    if env:
        return Path(env)
    if not Path(DEFAULT_RUN).is_dir() and Path(LEGACY_RUN).is_dir():
        return Path(LEGACY_RUN)
    return Path(DEFAULT_RUN)


def missing_run_message(run_dir: str | os.PathLike) -> str:
    return (
        f"No run found at `{run_dir}` (expected `{Path(run_dir) / 'config.json'}` and `features/test.*`).\n\n"
        f"Make the default SynthAG run with one command:\n\n```\n{MAKE_RUN_COMMAND}\n```\n\n"
        "or point the app at another run: `agreid app --run RUN` (or set `AGREID_RUN`)."
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise AppError(f"{path} is not valid JSON ({e}); the run is damaged, re-make it") from e


def _stage1_dir(run_dir: Path, config: dict[str, Any]) -> Path | None:
    """The stage-1 run behind a stage-2 run (its config names it), or the run itself."""
    ref = config.get("stage1")
    if not ref:
        return run_dir
    p = Path(ref)
    for candidate in (p, run_dir / p, run_dir.parent / p.name):
        if (candidate / "config.json").is_file():
            return candidate
    return None


def _data_spec(config: dict[str, Any]) -> str | None:
    for key in ("data", "data_spec", "dataset"):
        value = config.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _stored_generation(fs) -> tuple[int | None, float | None]:
    """tau and guidance the stored gen:<view> features were made with (from the FeatureSet meta)."""
    meta = fs.meta or {}
    gen = meta.get("generation") if isinstance(meta.get("generation"), dict) else meta
    tau = gen.get("tau")
    guidance = gen.get("guidance", gen.get("guidance_scale"))
    return (int(tau) if tau is not None else None, float(guidance) if guidance is not None else None)


def _dataset_name(spec: str) -> str:
    return spec.split(":", 1)[0].strip().lower()


# ---------------------------------------------------------------------------------------------
# Trade-off table
# ---------------------------------------------------------------------------------------------
def _report_roots(run_dir: Path, reports_root: Path | None) -> list[Path]:
    """``reports/`` folders that may hold this run's report: the given one, those of the run's ancestors, ./reports."""
    roots = [reports_root] if reports_root is not None else []
    roots += [a / "reports" for a in Path(os.path.abspath(run_dir)).parents]
    roots.append(Path("reports"))
    out, seen = [], set()
    for r in roots:
        key = os.path.abspath(r)
        if key not in seen and r.is_dir():
            seen.add(key)
            out.append(r)
    return out


def _seed_of_run(settings: dict[str, Any], run_dir: Path, project: Path) -> tuple[bool, int | None]:
    """Whether a report's trade-off settings name ``run_dir`` (and the seed of that run, if they list seeds)."""
    target = os.path.realpath(run_dir)
    runs = settings.get("runs") or ([settings["run"]] if settings.get("run") else [])
    seeds = settings.get("seeds") or []
    for i, ref in enumerate(runs):
        p = Path(ref)
        places = [p] if p.is_absolute() else [project / p, Path.cwd() / p]
        if any(os.path.realpath(q) == target for q in places):
            return True, (int(seeds[i]) if i < len(seeds) and len(runs) > 1 else None)
    return False, None


def _tradeoff_sources(run_dir: Path, reports_root: Path | None = None,
                      report: str | os.PathLike | None = None) -> list[tuple[Path, int | None]]:
    """(table, seed to keep or None) in the order they are tried; see the module docstring."""
    run_dir = Path(run_dir)
    out: list[tuple[Path, int | None]] = []
    if report is not None:
        p = Path(report)
        out.append((p / "tradeoff.csv" if p.is_dir() else p, None))
    out += [(run_dir / "analysis" / "tradeoff.csv", None), (run_dir / "tradeoff.csv", None)]
    seen = {os.path.realpath(p) for p, _ in out}
    for root in _report_roots(run_dir, Path(reports_root) if reports_root is not None else None):
        tables = list(root.glob("*/tradeoff.csv"))
        latest = [c for c in tables if c.parent.name == "latest"]
        dated = sorted((c for c in tables if c.parent.name != "latest"), key=lambda c: c.parent.name, reverse=True)
        for csv in latest + dated:
            real = os.path.realpath(csv)
            if real in seen:
                continue
            try:
                settings = json.loads((csv.parent / "tradeoff.json").read_text()).get("settings", {})
            except (OSError, ValueError, AttributeError):
                continue
            named, seed = _seed_of_run(settings, run_dir, root.parent)
            if named:
                seen.add(real)
                out.append((csv, seed))
    return out


def _tradeoff_candidates(run_dir: Path, reports_root: Path | None = None) -> list[Path]:
    """Where a trade-off table of this run may be, in the order they are tried (see the module docstring)."""
    return [p for p, _ in _tradeoff_sources(run_dir, reports_root)]


def _load_tradeoff(run_dir: Path, report: str | os.PathLike | None = None, reports_root: Path | None = None):
    """The stage-2 trade-off table (tau, protocol, mode, rank1, mAP, mINP, sec_per_1000) if the run has one.

    Returns ``(DataFrame, path)`` or ``(None, None)``. An explicit ``report`` that holds no table is an error.
    """
    import pandas as pd

    sources = _tradeoff_sources(run_dir, reports_root, report)
    if report is not None and not sources[0][0].is_file():
        raise AppError(f"--report {report}: no trade-off table there (expected {sources[0][0]}).")
    for p, seed in sources:
        if not p.is_file():
            continue
        try:
            df = pd.read_csv(p) if p.suffix == ".csv" else pd.DataFrame(json.loads(p.read_text()))
        except (ValueError, OSError) as e:
            raise AppError(f"The trade-off table {p} cannot be read ({e}).") from e
        if "sec_per_1000" not in df and "sec_per_1k" in df:
            df = df.rename(columns={"sec_per_1k": "sec_per_1000"})
        missing = [c for c in ("tau", "rank1", "mAP", "mINP", "sec_per_1000") if c not in df]
        if missing:
            raise AppError(f"The trade-off table {p} lacks columns {missing}; it has {list(df.columns)}")
        if seed is not None and "seed" in df and (df["seed"] == seed).any():
            df = df[df["seed"] == seed].reset_index(drop=True)  # the report sweeps every seed's run
        for col, default in (("protocol", ""), ("mode", "real+gen")):
            if col not in df:
                df[col] = default
        return df, p
    return None, None


# ---------------------------------------------------------------------------------------------
# Data and models
# ---------------------------------------------------------------------------------------------
def _ranking_inputs(split: DatasetSplit) -> dict[str, Any]:
    from agreid_kit.eval import ranking_inputs

    return ranking_inputs(split)


def _load_split(spec: str, protocol: str | None) -> DatasetSplit:
    from agreid_kit.data import load_dataset, parse_data_spec

    name, root = parse_data_spec(spec)
    return load_dataset(name, root, protocol or "ALL")


def run_embedder(stage1_dir: str | os.PathLike) -> Embedder:
    """Embed one PIL image with a stage-1 run's model, through the same test transform extraction used.

    Any failure to rebuild the model (missing or corrupted checkpoint, mismatched config) is a ``ModelError``.
    """
    from agreid_kit.data.transforms import TransformConfig, test_transform
    from agreid_kit.engine import load_run

    try:
        model = load_run(stage1_dir).model  # eval mode
        transform = test_transform(TransformConfig(tuple(model.input_size), tuple(model.mean), tuple(model.std)))
        device = next(model.parameters()).device
    except Exception as e:  # noqa: BLE001 - whatever torch / pickle raise on a damaged checkpoint
        raise ModelError(
            f"The model of run {stage1_dir} could not be loaded ({describe(e)}). Its checkpoint may be damaged: "
            f"re-make the run (`{MAKE_RUN_COMMAND}`) or serve another one."
        ) from e

    def embed(img) -> dict[str, torch.Tensor]:
        x = transform(img.convert("RGB")).unsqueeze(0).to(device)
        zero = torch.zeros(1, dtype=torch.long, device=device)
        batch = {"images": x, "pids": zero, "camids": zero, "views": zero,
                 "attributes": torch.zeros(1, 0, dtype=torch.long, device=device), "index": zero}
        with torch.no_grad():
            return {k: v.detach().float().cpu() for k, v in model.embed(batch).items()}

    embed.input_size = tuple(int(s) for s in model.input_size)  # (H, W): uploads are shrunk to it at once
    return embed


def run_generator(stage2_dir: str | os.PathLike, seed: int | None = None) -> Generator:
    """Generate every view's feature (retrieval space) from ID conditions with a stage-2 run's model.

    Sampler, timestep spacing and seed follow the generation recorded with the run's test features,
    so a live query is generated the way its gallery was.
    """
    from agreid_kit.diffusion.loading import load_stage2
    from agreid_kit.diffusion.sample import generate_latent_features, parse_views

    try:
        model, run_cfg = load_stage2(stage2_dir)
        stem = Path(stage2_dir) / "features" / "test.json"
        recorded = (json.loads(stem.read_text()).get("meta") or {}).get("generation", {}) if stem.is_file() else {}
        views = parse_views(None, model.config.num_views, run_cfg.get("dataset", ""))
    except Exception as e:  # noqa: BLE001
        raise ModelError(
            f"The stage-2 model of run {stage2_dir} could not be loaded ({describe(e)}). Its checkpoint may be "
            f"damaged: re-make the run (`{MAKE_RUN_COMMAND}`) or serve another one."
        ) from e

    def generate(id_cond: torch.Tensor, tau: int, guidance: float) -> dict[int, torch.Tensor]:
        return generate_latent_features(
            model, id_cond.float(), views, tau=int(tau), guidance=float(guidance),
            sampler=recorded.get("sampler", "ddim"), timestep_spacing=recorded.get("timestep_spacing", "leading"),
            num_train_timesteps=int(run_cfg["num_train_timesteps"]),
            seed=int(recorded.get("seed", 0) if seed is None else seed), batch_size=64, progress=False,
        )

    return generate
