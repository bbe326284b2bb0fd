"""The main job (agreid_kit.pipeline / `agreid report`) on SynthAG-tiny: outputs, reuse, validation."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from _mainjob import tiny_job

from agreid_kit import pipeline
from agreid_kit.pipeline import STEPS, MainJobConfig, run_main_job, strip_remote_scripts


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    return tiny_job(tmp_path_factory)


def test_main_job_writes_the_report_and_its_evidence(job):
    cfg, html = job
    out = cfg.report_dir
    assert html == out / "report.html" and html.is_file() and (out / "report.ipynb").is_file()
    text = html.read_text()
    # Self-contained: plotly.js embedded once, no script fetched from the network.
    assert not re.findall(r"<script[^>]*\bsrc=[\"']https?://", text)
    assert text.count("plotly.js v") == 1 and "Plotly.newPlot" in text
    for heading in ("Results per protocol", "Real vs generated", "View conditions", "Timestep trade-off",
                    "Best and worst queries", "View-condition similarity", "Training curves",
                    "CMC and accuracy per camera", "Parameters, versions and timings"):
        assert heading in text, heading
    assert "mean ± std" in text and "within noise" in text and "Initialisation" in text

    timings = json.loads((out / "timings.json").read_text())
    assert set(timings["steps"]) == set(STEPS)
    assert all(s["status"] == "ran" and s["seconds"] >= 0 and s["ran_seconds"] == s["seconds"]
               for s in timings["steps"].values())

    summary = json.loads((out / "report_summary.json").read_text())
    table = summary["main_table"]
    assert {(r["protocol"], r["method"]) for r in table} == {
        (p, m) for p in cfg.protocols for m in ("ViT baseline", "SD-ReID stage 1", "SD-ReID stage 2")}
    for r in table:
        for k in ("Rank-1", "Rank-5", "Rank-10", "mAP", "mINP"):
            assert 0.0 <= r[k] <= 100.0, r
        assert r["seeds"] == len(cfg.seeds) and r["mAP std"] is not None  # two seeds: a spread
    assert {r["verdict"] for r in summary["comparisons"]} <= {"within noise", "a better", "b better"}
    modes = {r["features"] for r in summary["real_vs_generated"]}
    assert modes == set(pipeline.STAGE2_MODES)
    assert {r["protocol"] for r in summary["stage2_gain"]} == set(cfg.protocols)
    assert sorted({r["tau"] for r in summary["tradeoff"]}) == cfg.taus
    assert sorted({r["seed"] for r in summary["tradeoff"]}) == cfg.seeds
    assert all(r["sec_per_1000"] > 0 for r in summary["tradeoff"])
    assert {k["protocol"] for k in summary["tradeoff_knee"]} == set(cfg.tradeoff_protocols)
    assert all(k["tau"] in cfg.taus for k in summary["tradeoff_knee"])
    assert len(summary["view_measures"]) == len(cfg.seeds)
    for vm in summary["view_measures"]:
        assert 0.0 <= vm["head_accuracy"] <= 1.0 and -1.0 <= vm["centre_cosine_raw"] <= 1.0
    assert summary["embedding"]["points"] == 3 * cfg.embed_max_points  # real + two generated views
    assert summary["embedding"]["fig6_points"] > 0 and set(summary["cmc"]) == set(cfg.protocols)
    assert len(summary["best_queries"]) == len(summary["worst_queries"]) == cfg.n_rank_queries
    assert summary["best_queries"][0]["ap"] >= summary["worst_queries"][0]["ap"]
    assert {(r["space"], r["view"], r["centre"]) for r in summary["view_similarity"]} == {
        (s, v, c) for s in ("raw", "standardised") for v in ("aerial", "ground") for c in ("aerial", "ground")}
    cams = {r["camera"] for r in summary["accuracy_by_camera"]}
    assert cams and all(r["n"] > 0 for r in summary["accuracy_by_camera"])  # per camera: no empty bins
    assert summary["versions"]["torch"] and summary["parameters"]["embed_method"] == "pca"
    for f in summary["figures"]:
        assert Path(f).is_file() and Path(f).suffix == ".html"

    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["results"]) == {"vit", "sdreid", "stage2"} and metrics["seeds"] == cfg.seeds
    assert set(metrics["results"]["stage2"]["A<->G"]) == set(pipeline.STAGE2_MODES)
    assert metrics["results"]["sdreid"]["ALL"]["real"]["mAP"]["n"] == len(cfg.seeds)
    assert set(metrics["per_seed"]) == {str(s) for s in cfg.seeds}
    job_json = json.loads((out / "job.json").read_text())
    assert job_json["config"]["epochs"] == 1 and job_json["config"]["stage2_epochs"] == 2
    assert job_json["threads"] == cfg.threads and job_json["versions"]["commit"]


def test_rerun_reuses_every_step(job):
    cfg, html = job
    before = html.stat().st_mtime_ns
    t0 = time.perf_counter()
    run_main_job(cfg)
    elapsed = time.perf_counter() - t0
    steps = json.loads((cfg.report_dir / "timings.json").read_text())["steps"]
    assert {s["status"] for s in steps.values()} == {"reused"}, steps
    assert html.stat().st_mtime_ns == before
    assert elapsed < 30


def test_forced_steps_follow_dependencies(job):
    cfg, _ = job
    timer = pipeline._Timer(MainJobConfig(**{**cfg.to_dict(), "redo": ["stage2"]}))
    assert timer.forced("stage2") and not timer.forced("sdreid")
    timer.ran.add("stage2")
    assert timer.forced("evaluate") and timer.forced("tradeoff") and not timer.forced("vit")
    no_reuse = pipeline._Timer(MainJobConfig(**{**cfg.to_dict(), "reuse": False}))
    assert all(no_reuse.forced(s) for s in STEPS)
    # A changed setting makes a step's outputs stale even without --redo.
    changed = MainJobConfig(**{**cfg.to_dict(), "protocols": ["ALL", "A<->G"]})
    assert pipeline._step_evaluate(changed, forced=False) is True
    assert pipeline._step_evaluate(changed, forced=False) is False
    assert pipeline._step_evaluate(cfg, forced=False) is True  # back to the job's own settings


def test_stage2_run_of_other_model_defaults_is_not_reused(job, tmp_path):
    """A stage-2 run saved by a kit with other model defaults is retrained, not loaded."""
    import shutil

    from agreid_kit.diffusion.train import stage2_run_config
    from agreid_kit.run import Run

    cfg, _ = job
    wanted = stage2_run_config(pipeline.stage2_config(cfg))
    assert Run(cfg.run_dir("stage2")).is_finished(wanted)
    saved = json.loads((cfg.run_dir("stage2") / "config.json").read_text())
    # saved before that field existed
    older = {k: v for k, v in saved["model"].items() if k != "standardise_conditions"}
    for model in ({**saved["model"], "unet_channels": [8, 8, 8]}, older):
        copy = tmp_path / f"copy{len(model)}"
        shutil.copytree(cfg.run_dir("stage2"), copy)
        (copy / "config.json").write_text(json.dumps({**saved, "model": model}))
        run = Run(copy)
        assert not run.is_finished(wanted) and any(k.startswith("model.") for k in run.settings_diff(wanted))


@pytest.mark.parametrize("bad, match", [
    (dict(preset="huge"), "preset must be one of"),
    (dict(redo=["train"]), "unknown step"),
    (dict(protocols=["A<->X"]), "not a SynthAG protocol"),
    (dict(taus=[0, 5]), "taus"),
    (dict(embed_method="lda"), "embed_method"),
])
def test_config_errors_name_the_field(bad, match):
    with pytest.raises(ValueError, match=match):
        MainJobConfig(**bad)


def test_preset_defaults_and_locations():
    cfg = MainJobConfig()
    assert cfg.data_dir == Path("data/synthag-small-s0")
    assert cfg.run_dir("stage2") == Path("runs/synthag-small/seed0/sdreid-stage2")  # the app's default run
    assert cfg.run_dir("vit", 2) == Path("runs/synthag-small/seed2/vit")
    assert re.fullmatch(r"reports/\d{4}-\d{2}-\d{2}", cfg.report_dir.as_posix())
    assert cfg.seeds == [0, 1, 2] and cfg.threads == 2 and cfg.embed_method == "umap"
    assert MainJobConfig(preset="tiny", epochs=3).epochs == 3
    with pytest.raises(ValueError, match="seeds"):
        MainJobConfig(seeds=[1, 1])


def test_strip_remote_scripts_keeps_inline_scripts():
    html = ('<script src="https://cdn.example/require.js"></script><script>var a = 1;</script>'
            "<script type='text/javascript' src='http://x/y.js' ></script><script src=\"local.js\"></script>")
    assert strip_remote_scripts(html) == '<script>var a = 1;</script><script src="local.js"></script>'


def test_cli_report_rejects_bad_steps(capsys):
    from agreid_kit.cli import main

    assert main(["report", "--redo", "bogus"]) == 2
    assert "unknown step" in capsys.readouterr().err
    assert main(["report", "--epochs", "0"]) == 2
    with pytest.raises(SystemExit):
        main(["report", "--preset", "huge"])


def test_cli_steps_match_the_pipeline():
    from agreid_kit.cli.report import STEP_NAMES

    assert STEP_NAMES == STEPS


def test_tradeoff_on_a_subset_of_identities(job, tmp_path):
    cfg, _ = job
    sub = MainJobConfig(**{**cfg.to_dict(), "out": str(tmp_path / "rep"), "taus": [1], "tradeoff_max_ids": 6})
    assert pipeline._step_tradeoff(sub, forced=False) is True
    scope = json.loads((tmp_path / "rep" / "tradeoff.json").read_text())
    assert scope["n_ids"] == 6 and scope["n_test_ids"] > 6 and scope["n_images"] > 0
    import pandas as pd

    df = pd.read_csv(tmp_path / "rep" / "tradeoff.csv")
    assert set(df["tau"]) == {1} and (df["n_query"] <= 6 * 10).all()
    assert not (tmp_path / "rep" / "tradeoff-run").exists()  # the temporary subset run is removed
    assert pipeline._step_tradeoff(sub, forced=False) is False  # same settings: reused


def test_interrupted_job_after_a_settings_change_recomputes_what_changed(job, tmp_path, monkeypatch):
    """B4: a job stopped after a settings change must not reuse the old evaluation / report on its rerun."""
    import shutil

    cfg, _ = job
    for part in ("data_dir", "runs_dir"):
        shutil.copytree(getattr(cfg, part), tmp_path / part)
    shutil.copytree(cfg.report_dir, tmp_path / "report")
    changed = MainJobConfig(**{**cfg.to_dict(), "epochs": 2, "data_root": str(tmp_path / "data_dir"),
                               "runs_root": str(tmp_path / "runs_dir"), "out": str(tmp_path / "report")})
    real = pipeline._step_stage1

    def dies_in_stage1(c, method, forced):
        if method == "sdreid":
            raise KeyboardInterrupt("killed")
        return real(c, method, forced)

    monkeypatch.setattr(pipeline, "_step_stage1", dies_in_stage1)
    with pytest.raises(KeyboardInterrupt):
        run_main_job(changed)
    monkeypatch.setattr(pipeline, "_step_stage1", real)
    run_main_job(changed)
    steps = json.loads((changed.report_dir / "timings.json").read_text())["steps"]
    assert steps["vit"]["status"] == "reused"  # finished with the new settings before the kill
    assert all(steps[s]["status"] == "ran" for s in ("sdreid", "stage2", "evaluate", "tradeoff", "report")), steps
    metrics = json.loads((changed.report_dir / "metrics.json").read_text())
    for seed in changed.seeds:
        run_metrics = json.loads((changed.run_dir("sdreid", seed) / "metrics.json").read_text())
        assert metrics["per_seed"][str(seed)]["sdreid"]["ALL"]["real"]["mAP"] == run_metrics["ALL"]["real"]["mAP"]
        assert json.loads((changed.run_dir("sdreid", seed) / "config.json").read_text())["epochs"] == 2
