"""The main job (``agreid report`` / ``make report``): SynthAG -> ViT baseline and SD-ReID -> report.

Steps, in order (each one skipped when its outputs exist and were made with the same settings):

``data``      render SynthAG (``data/synthag-<preset>-s<data_seed>``; the renderer itself reuses a complete set);
``vit``       the ViT baseline, one run per training seed (``runs/synthag-<preset>/seed<s>/vit``);
``sdreid``    SD-ReID stage 1 per seed (``runs/synthag-<preset>/seed<s>/sdreid``);
``stage2``    SD-ReID stage 2 plus generated test features per seed (``.../seed<s>/sdreid-stage2``);
``evaluate``  every run on ALL, A<->G, A<->A, G<->G under its feature modes, per seed and as mean +- std
              over the seeds, plus the view-condition measures -> ``REPORT/metrics.json``;
``tradeoff``  accuracy and generation cost per number of sampling steps tau, per seed -> ``REPORT/tradeoff.csv``;
``report``    the ``report`` notebook executed with papermill -> ``REPORT/report.ipynb`` and ``report.html``.

Every training seed gets its own runs; the SynthAG data (``data_seed``) is the same for all of them.
A step is reused only when its outputs were made with the same settings *and* from the same inputs
(each step's record names the fingerprints of what it read), and a step that ran makes every step
depending on it run again. Wall-clock seconds of every step go to ``REPORT/timings.json`` (the
report shows them); the run's parameters, thread count, commit and library versions go to
``REPORT/job.json``. The thread count is pinned (2 by default) because seeded CPU runs are
identical only for the same number of threads.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from agreid_kit.notebook import strip_remote_scripts  # noqa: F401 - part of this module's API
from agreid_kit.presets import apply_preset, preset_values
from agreid_kit.run import Run
from agreid_kit.utils.io import atomic_write_json, file_signature

STEPS = ("data", "vit", "sdreid", "stage2", "evaluate", "tradeoff", "report")
# Which steps' outputs each step reads: a step re-runs when one of these ran in this job.
DEPENDS_ON: dict[str, tuple[str, ...]] = {
    "data": (),
    "vit": ("data",),
    "sdreid": ("data",),
    "stage2": ("sdreid",),
    "evaluate": ("vit", "sdreid", "stage2"),
    "tradeoff": ("stage2",),
    "report": ("evaluate", "tradeoff"),
}
PROTOCOLS = ("ALL", "A<->G", "A<->A", "G<->G")
STAGE1_MODES = ("real",)
STAGE2_MODES = ("real", "gen:aerial", "gen:ground", "gen:all", "real+gen")
RUN_LABELS = {"vit": "ViT baseline", "sdreid": "SD-ReID stage 1", "stage2": "SD-ReID stage 2"}

# Budgets per SynthAG preset, sized for the 25-minute target on 2 CPU cores (small, set-up included) and
# for CI (tiny). Measured on the 2-core machine: see README / the report's timings table.
JOB_PRESETS: dict[str, dict[str, Any]] = {
    # stage-1 epochs: TRAIN_PRESETS["cpu"]; stage-2 epochs: 40, chosen on validation ids (scripts/stage2_ablations.py).
    # The trade-off runs on a 50-identity test subset (labelled as such in the report): the 32/64/64 UNet costs
    # ~40 s per 1,000 images at tau = 5 on 2 cores, so the full test set at every tau would dominate the job.
    # Stage 2 is scored on its validation ids every 10 epochs (4 points per curve) instead of every 5: each
    # scoring costs ~1.5 training epochs, and validation draws nothing from the training's random streams, so
    # the trained model and every test number are the same (tests/test_diffusion_train.py checks it).
    "small": dict(epochs=4, stage2_epochs=40, stage2_val_every=10, max_iters_per_epoch=None, seeds=[0, 1, 2],
                  taus=[1, 2, 5, 10], tradeoff_protocols=["ALL", "A<->G"], tradeoff_max_ids=50, embed_method="umap",
                  embed_max_points=1200, n_rank_queries=3),
    "tiny": dict(epochs=2, stage2_epochs=3, stage2_val_every=5, max_iters_per_epoch=None, seeds=[0, 1], taus=[1, 2, 5],
                 tradeoff_protocols=["ALL"], tradeoff_max_ids=0, embed_method="tsne", embed_max_points=300,
                 n_rank_queries=2),
}
DEFAULT_THREADS = 2


@dataclass
class MainJobConfig:
    """Everything the main job depends on. ``None`` fields take the ``preset``'s value (``JOB_PRESETS``)."""

    preset: str = "small"  # SynthAG preset: small (the demo) or tiny (CI / smoke)
    data_seed: int = 0  # the SynthAG seed (the benchmark itself); every training seed uses the same data
    seeds: list[int] | None = None  # training seeds: one ViT, stage-1 and stage-2 run each
    data_root: str | None = None  # default data/synthag-<preset>-s<data_seed>
    runs_root: str | None = None  # default runs/synthag-<preset>
    out: str | None = None  # report folder; default reports/<YYYY-MM-DD>
    train_preset: str = "cpu"  # engine / stage-2 preset (cpu: small ViT from the kit init)
    epochs: int | None = None  # stage-1 epochs of both the ViT baseline and SD-ReID stage 1
    stage2_epochs: int | None = None
    stage2_val_every: int | None = None  # stage 2 scores its validation ids every N epochs and at the last one
    max_iters_per_epoch: int | None = None
    taus: list[int] | None = None
    tradeoff_protocols: list[str] | None = None
    tradeoff_max_ids: int | None = None  # trade-off on this many test identities (0: all); preset default
    protocols: list[str] = field(default_factory=lambda: list(PROTOCOLS))
    tau: int = 5  # sampling steps of the generated features in the tables (the paper's SynthAG/CARGO value)
    guidance: float = 2.0
    embed_method: str | None = None  # umap | tsne | pca for the real-vs-generated map
    embed_max_points: int | None = None
    n_rank_queries: int | None = None
    device: str = "cpu"
    num_workers: int = 2
    threads: int = DEFAULT_THREADS  # torch CPU threads, pinned: seeded CPU runs repeat only at the same count
    render_workers: int | None = None
    png: str = "auto"  # PNG copies of the figures: require | auto | skip
    reuse: bool = True  # False: every step runs again (--no-reuse)
    redo: list[str] = field(default_factory=list)  # steps to run again even when their outputs exist
    progress: bool = True
    notebook_timeout: int | None = 1800

    def __post_init__(self) -> None:
        apply_preset(self, preset_values(JOB_PRESETS, self.preset, "MainJobConfig"), none_is_unset=True)
        bad = [s for s in self.redo if s not in STEPS]
        if bad:
            raise ValueError(f"MainJobConfig.redo: unknown step(s) {bad}; steps are {list(STEPS)}")
        if self.epochs < 1 or self.stage2_epochs < 1:
            raise ValueError(f"epochs ({self.epochs}) and stage2_epochs ({self.stage2_epochs}) must be >= 1")
        if self.stage2_val_every < 1:
            raise ValueError(f"stage2_val_every must be >= 1, got {self.stage2_val_every}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"seeds must be a non-empty list of distinct integers >= 0, got {self.seeds}")
        if not self.taus or min(self.taus) < 1:
            raise ValueError(f"taus must be a non-empty list of integers >= 1, got {self.taus}")
        if self.threads is None or self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.embed_method not in ("umap", "tsne", "pca"):
            raise ValueError(f"embed_method must be umap, tsne or pca, got {self.embed_method!r}")
        if self.png not in ("require", "auto", "skip"):
            raise ValueError(f"png must be require, auto or skip, got {self.png!r}")
        from agreid_kit.data import available_protocols

        valid = available_protocols("synthag")
        for p in [*self.protocols, *self.tradeoff_protocols]:
            if p not in valid:
                raise ValueError(f"protocol {p!r} is not a SynthAG protocol; valid: {valid}")

    # ---- locations -------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return Path(self.data_root or f"data/synthag-{self.preset}-s{self.data_seed}")

    @property
    def data_spec(self) -> str:
        return f"synthag:{self.data_dir}"

    @property
    def runs_dir(self) -> Path:
        return Path(self.runs_root or f"runs/synthag-{self.preset}")

    def run_dir(self, step: str, seed: int | None = None) -> Path:
        """The run of ``step`` (vit / sdreid / stage2) for training ``seed`` (default: the first seed)."""
        seed = self.seeds[0] if seed is None else seed
        return self.runs_dir / f"seed{seed}" / {"vit": "vit", "sdreid": "sdreid", "stage2": "sdreid-stage2"}[step]

    @property
    def report_dir(self) -> Path:
        return Path(self.out or f"reports/{_dt.date.today().isoformat()}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# Step bookkeeping
# ---------------------------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _features_signature(run_dir: Path) -> str | None:
    # the FeatureSet header holds the fingerprint of the checkpoint and records, and the generation settings
    return file_signature(Run(run_dir).features_path("test").with_suffix(".json"))


def _remove_run(run_dir: Path, why: str) -> None:
    if run_dir.exists():
        print(f"[report] {run_dir}: {why}; training it again")
        shutil.rmtree(run_dir)


class _Timer:
    """Runs the steps, records {step: {status, seconds}} into REPORT/timings.json after each one."""

    def __init__(self, cfg: MainJobConfig):
        self.cfg = cfg
        self.path = cfg.report_dir / "timings.json"
        self.ran: set[str] = set()
        self.t0 = time.perf_counter()
        self.record: dict[str, Any] = {"started": _dt.datetime.now().isoformat(timespec="seconds"), "steps": {}}
        previous = _read_json(self.path) or {}
        self.previous: dict[str, Any] = previous.get("steps", {})

    def forced(self, step: str) -> bool:
        """A step must run: no reuse, asked to redo, or something it depends on ran in this job."""
        return (not self.cfg.reuse) or step in self.cfg.redo or any(d in self.ran for d in DEPENDS_ON[step])

    def step(self, name: str, fn: Callable[[bool], bool]) -> None:
        """``fn(forced) -> ran`` does the step (or decides its outputs are reusable)."""
        t = time.perf_counter()
        ran = fn(self.forced(name))
        seconds = time.perf_counter() - t
        if ran:
            self.ran.add(name)
        # ran_seconds: what the step cost when its outputs were computed (kept across reuses).
        ran_seconds = round(seconds, 2) if ran else self.previous.get(name, {}).get("ran_seconds")
        self.record["steps"][name] = {"status": "ran" if ran else "reused", "seconds": round(seconds, 2),
                                      "ran_seconds": ran_seconds}
        self.record["total_seconds"] = round(time.perf_counter() - self.t0, 2)
        atomic_write_json(self.path, self.record)
        print(f"[report] step {name}: {'ran' if ran else 'reused'} ({seconds:.1f} s)")


# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------
def _step_data(cfg: MainJobConfig, forced: bool) -> bool:
    from agreid_kit.synth import render_dataset

    root = cfg.data_dir
    complete = (root / "manifest.json").is_file()
    if complete and forced and (not cfg.reuse or "data" in cfg.redo):
        print(f"[report] {root}: rendering again (--no-reuse / --redo data)")
        shutil.rmtree(root)
        complete = False
    # The renderer checks that a complete folder matches preset and seed (and resumes a partial one).
    render_dataset(cfg.preset, root, seed=cfg.data_seed, workers=cfg.render_workers, progress=cfg.progress)
    return not complete


def stage1_config(cfg: MainJobConfig, method: str, seed: int | None = None):
    """The TrainConfig of the ``vit`` / ``sdreid`` run of training ``seed``."""
    from agreid_kit.engine.config import make_config

    seed = cfg.seeds[0] if seed is None else seed
    return make_config(
        method, str(cfg.run_dir(method, seed)), preset=cfg.train_preset, data=cfg.data_spec, protocol="ALL",
        epochs=cfg.epochs, max_iters_per_epoch=cfg.max_iters_per_epoch, seed=seed, device=cfg.device,
        num_workers=cfg.num_workers, threads=cfg.threads, eval_protocols=list(cfg.protocols),
        # stage 2 and the view probes read sdreid's train features; the baseline's would go unused
        extract_splits=["train", "test"] if method == "sdreid" else ["test"],
    )


def _stage1_seed(cfg: MainJobConfig, method: str, seed: int, forced: bool) -> bool:
    from agreid_kit.engine.train import train

    tcfg = stage1_config(cfg, method, seed)
    run = Run(cfg.run_dir(method, seed))
    if not forced and run.is_finished(tcfg):
        return False
    # an interrupted run of the same settings continues; anything else starts again
    resume = not forced and run.has_checkpoint and not run.settings_diff(tcfg)
    if not resume:
        _remove_run(run.dir, "forced" if forced else "settings changed or incomplete")
    train(tcfg, resume=resume)
    return True


def _step_stage1(cfg: MainJobConfig, method: str, forced: bool) -> bool:
    ran = [_stage1_seed(cfg, method, seed, forced) for seed in cfg.seeds]
    return any(ran)


def stage2_config(cfg: MainJobConfig, seed: int | None = None):
    from agreid_kit.diffusion.config import Stage2Config

    seed = cfg.seeds[0] if seed is None else seed
    return Stage2Config(
        stage1=str(cfg.run_dir("sdreid", seed)), out=str(cfg.run_dir("stage2", seed)), preset=cfg.train_preset,
        epochs=cfg.stage2_epochs, seed=seed, device=cfg.device, tau=cfg.tau, guidance=cfg.guidance,
        threads=cfg.threads, val_every=cfg.stage2_val_every,
    )


def _stage2_seed(cfg: MainJobConfig, seed: int, forced: bool) -> bool:
    from agreid_kit.diffusion.train import stage2_run_config, train_stage2

    s2 = stage2_config(cfg, seed)
    run = Run(cfg.run_dir("stage2", seed))
    # what a run of these settings holds: the stage-1 facts and signature, the resolved network (a kit with
    # other model defaults retrains the run rather than loading a checkpoint of another architecture)
    wanted = stage2_run_config(s2)
    if not forced and run.is_finished(wanted):
        return False
    if forced or (run.exists and run.settings_diff(wanted)):
        _remove_run(run.dir, "forced" if forced else "settings changed")
    train_stage2(s2, progress=cfg.progress)  # resumes an interrupted run of the same settings, regenerates
    return True


def _step_stage2(cfg: MainJobConfig, forced: bool) -> bool:
    ran = [_stage2_seed(cfg, seed, forced) for seed in cfg.seeds]
    return any(ran)


def _run_modes(step: str) -> tuple[str, ...]:
    return STAGE2_MODES if step == "stage2" else STAGE1_MODES


def _step_evaluate(cfg: MainJobConfig, forced: bool) -> bool:
    """Per seed and run: metrics under every protocol/mode; then mean +- std over seeds; view measures."""
    from agreid_kit.diffusion.analyses import generated_view_probe, view_token_measures
    from agreid_kit.engine.evaluate import evaluate_run
    from agreid_kit.seeds import aggregate_results

    path = cfg.report_dir / "metrics.json"
    inputs = {str(seed): {s: _features_signature(cfg.run_dir(s, seed)) for s in RUN_LABELS} for seed in cfg.seeds}
    wanted = {"protocols": list(cfg.protocols), "seeds": list(cfg.seeds), "inputs": inputs,
              "runs": {s: {"dirs": [str(cfg.run_dir(s, seed)) for seed in cfg.seeds], "modes": list(_run_modes(s))}
                       for s in RUN_LABELS}}
    saved = _read_json(path)
    if not forced and saved is not None and saved.get("settings") == wanted:
        return False
    per_seed: dict[str, dict[str, Any]] = {}
    views: dict[str, dict[str, Any]] = {}
    for seed in cfg.seeds:
        per_seed[str(seed)] = {step: evaluate_run(cfg.run_dir(step, seed), list(cfg.protocols), list(_run_modes(step)))
                               for step in RUN_LABELS}
        views[str(seed)] = {"stage1": view_token_measures(cfg.run_dir("sdreid", seed)),
                            "generated": generated_view_probe(cfg.run_dir("stage2", seed))}
    results = {step: aggregate_results({seed: r[step] for seed, r in per_seed.items()}) for step in RUN_LABELS}
    atomic_write_json(path, {"settings": wanted, "labels": RUN_LABELS, "seeds": list(cfg.seeds), "results": results,
                             "per_seed": per_seed, "view_measures": views})
    return True


def subset_stage2_run(run_dir: Path, out_dir: Path, pids: set[int]) -> Path:
    """A stage-2 run restricted to the test images of ``pids``: same config and weights, fewer features.

    The trade-off regenerates every test image once per tau; on a subset of identities it costs a
    fraction of the time and measures the same thing. The checkpoint is hard-linked (no second copy).
    """
    import os

    from agreid_kit.features import FeatureSet

    fs = FeatureSet.load(Run(run_dir).features_path("test"))
    rows = [i for i, r in enumerate(fs.records) if r.pid in pids]
    if not rows:
        raise ValueError(f"{run_dir}: none of the {len(pids)} chosen identities has test features")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    src, dst = Run(run_dir), Run(out_dir)
    dst.checkpoints_dir.mkdir(parents=True)
    dst.write_config(src.config)
    try:
        os.link(src.last_checkpoint_path, dst.last_checkpoint_path)
    except OSError:  # another file system: copy
        shutil.copy2(src.last_checkpoint_path, dst.last_checkpoint_path)
    fs.subset(rows).save(dst.features_path("test"))
    return out_dir


def restrict_split(split, pids: set[int]):
    """``split`` with only the query and gallery images of ``pids``."""
    return dataclasses.replace(split, query=[r for r in split.query if r.pid in pids],
                               gallery=[r for r in split.gallery if r.pid in pids])


def _step_tradeoff(cfg: MainJobConfig, forced: bool) -> bool:
    """Accuracy and cost per tau for every seed's stage-2 run, on the same identity subset."""
    import numpy as np
    import pandas as pd

    from agreid_kit.data import load_dataset
    from agreid_kit.diffusion.analyses import timestep_tradeoff
    from agreid_kit.utils.io import atomic_write_text

    out = cfg.report_dir
    csv = out / "tradeoff.csv"
    settings_path = out / "tradeoff.json"
    wanted = {"runs": [str(cfg.run_dir("stage2", seed)) for seed in cfg.seeds], "seeds": list(cfg.seeds),
              "taus": list(cfg.taus), "protocols": list(cfg.tradeoff_protocols), "modes": ["real+gen", "gen:all"],
              "guidance": cfg.guidance, "data_seed": cfg.data_seed, "max_ids": cfg.tradeoff_max_ids,
              "inputs": {str(seed): file_signature(Run(cfg.run_dir("stage2", seed)).last_checkpoint_path)
                         for seed in cfg.seeds}}
    saved = _read_json(settings_path)
    if not forced and csv.is_file() and saved is not None and saved.get("settings") == wanted:
        return False
    splits = {p: load_dataset("synthag", cfg.data_dir, p) for p in cfg.tradeoff_protocols}
    test_pids = sorted({r.pid for s in splits.values() for r in s.query + s.gallery})
    subset = bool(cfg.tradeoff_max_ids and cfg.tradeoff_max_ids < len(test_pids))
    if subset:
        rng = np.random.default_rng(cfg.data_seed)
        chosen = set(rng.choice(test_pids, cfg.tradeoff_max_ids, replace=False).tolist())
        splits = {p: restrict_split(s, chosen) for p, s in splits.items()}
    else:
        chosen = set(test_pids)
    frames = []
    for seed in cfg.seeds:
        run = cfg.run_dir("stage2", seed)
        if subset:
            run = subset_stage2_run(run, out / "tradeoff-run", chosen)
        df, _ = timestep_tradeoff(run, taus=cfg.taus, protocols=cfg.tradeoff_protocols, modes=wanted["modes"],
                                  guidance=cfg.guidance, seed=seed, device=cfg.device, splits=splits,
                                  progress=cfg.progress)
        if subset:
            shutil.rmtree(run)
        frames.append(df.assign(seed=seed))
    atomic_write_text(csv, pd.concat(frames, ignore_index=True).to_csv(index=False))
    n_images = len({r.path for s in splits.values() for r in s.query + s.gallery})
    atomic_write_json(settings_path, {"settings": wanted, "n_ids": len(chosen), "n_test_ids": len(test_pids),
                                      "n_images": n_images})
    return True


def report_parameters(cfg: MainJobConfig) -> dict[str, Any]:
    """The ``report`` notebook's parameters for this job (absolute paths: papermill runs elsewhere)."""
    return {
        "data": f"synthag:{cfg.data_dir.resolve()}",
        "report_dir": str(cfg.report_dir.resolve()),
        "runs_root": str(cfg.runs_dir.resolve()),
        "seeds": list(cfg.seeds),
        "protocols": list(cfg.protocols),
        "taus": list(cfg.taus),
        "tradeoff_protocols": list(cfg.tradeoff_protocols),
        "embed_method": cfg.embed_method,
        "embed_max_points": int(cfg.embed_max_points),
        "n_rank_queries": int(cfg.n_rank_queries),
        "device": cfg.device,
        "png": cfg.png,
    }


def export_report_html(ipynb: Path, html: Path) -> Path:
    """The executed report as one offline HTML file (code hidden, plotly.js embedded once)."""
    from agreid_kit.notebook import notebook_to_html

    return notebook_to_html(ipynb, html)


def _step_report(cfg: MainJobConfig, forced: bool) -> bool:
    from agreid_kit.notebook import execute_notebook

    out = cfg.report_dir
    html = out / "report.html"
    params = report_parameters(cfg)
    inputs = {name: file_signature(out / name) for name in ("metrics.json", "tradeoff.csv", "job.json")}
    record = {"parameters": params, "inputs": inputs}
    if not forced and html.is_file() and _read_json(out / "report_parameters.json") == record:
        return False
    # cwd: the job's own folder, where the runs' relative data specs (synthag:data/...) resolve.
    ipynb = execute_notebook("report", params, out / "report.ipynb", cwd=Path.cwd(), timeout=cfg.notebook_timeout,
                             progress=cfg.progress)
    export_report_html(ipynb, html)
    (out / "report.failed.ipynb").unlink(missing_ok=True)  # a failed earlier attempt is no longer the story
    atomic_write_json(out / "report_parameters.json", record)
    return True


# ---------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------
def versions() -> dict[str, str]:
    """Versions of Python and the libraries the results depend on, and the kit's git commit."""
    import importlib.metadata as md
    import os
    import subprocess

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("agreid-kit", "torch", "timm", "diffusers", "numpy", "scikit-learn", "umap-learn",
                "plotly", "papermill"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    out["cpu_count"] = str(os.cpu_count())
    try:
        root = Path(__file__).resolve().parent.parent
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True,
                                timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            out["commit"] = commit.stdout.strip() + ("+modified" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    out.setdefault("commit", "unknown")
    return out


def _point_latest(report: Path) -> None:
    """``reports/latest`` -> the dated report folder of this job (the notebooks' and the app's default)."""
    import os

    link = report.parent / "latest"
    try:
        if link.is_symlink() or not link.exists():
            tmp = report.parent / f".latest.{os.getpid()}.tmp"
            tmp.unlink(missing_ok=True)
            os.symlink(report.name, tmp)
            os.replace(tmp, link)
    except OSError:  # a file system without symlinks: the dated folder is still there
        pass


def run_main_job(cfg: MainJobConfig) -> Path:
    """Run (or reuse) every step and return the path of ``report.html``."""
    import os

    import torch

    out = cfg.report_dir
    out.mkdir(parents=True, exist_ok=True)
    if cfg.out is None:
        _point_latest(out)
    # Pinned thread count: seeded CPU runs repeat exactly only at the same count (and oversubscribed cores
    # make torch's threads spin). The env var reaches the report's kernel and the loader workers.
    os.environ["OMP_NUM_THREADS"] = str(cfg.threads)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        job = {"config": cfg.to_dict(), "threads": cfg.threads, "versions": versions(), "data": cfg.data_spec,
               "runs": {s: [str(cfg.run_dir(s, seed)) for seed in cfg.seeds] for s in RUN_LABELS}}
        atomic_write_json(out / "job.json", job)
        timer = _Timer(cfg)
        timer.step("data", lambda f: _step_data(cfg, f))
        timer.step("vit", lambda f: _step_stage1(cfg, "vit", f))
        timer.step("sdreid", lambda f: _step_stage1(cfg, "sdreid", f))
        timer.step("stage2", lambda f: _step_stage2(cfg, f))
        timer.step("evaluate", lambda f: _step_evaluate(cfg, f))
        timer.step("tradeoff", lambda f: _step_tradeoff(cfg, f))
        timer.step("report", lambda f: _step_report(cfg, f))
        timer.record["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
        atomic_write_json(timer.path, timer.record)
    finally:
        torch.set_num_threads(previous_threads)
    return out / "report.html"
