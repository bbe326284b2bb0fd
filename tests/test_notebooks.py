"""Every notebook in notebooks/ executed headless with papermill on the tiny main job's data and runs.

The report notebook is executed by the main job itself (tests/_mainjob.py; its outputs are checked
in tests/test_pipeline.py and again here). Widgets are displayed but inert in a headless kernel;
each notebook also writes its figures and a JSON summary, which the tests check.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _mainjob import tiny_job

from agreid_kit.notebook import execute_notebook, notebooks_dir
from agreid_kit.viz import find_browser

NOTEBOOKS = ("quickstart", "train_stage1", "train_stage2", "evaluate", "feature_views", "rank_lists",
             "view_conditions", "timestep_tradeoff", "report", "compare_methods")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    cfg, html = tiny_job(tmp_path_factory)
    return {"cfg": cfg, "root": str(cfg.data_dir), "data": cfg.data_spec, "vit": str(cfg.run_dir("vit")),
            "sdreid": str(cfg.run_dir("sdreid")), "stage2": str(cfg.run_dir("stage2")), "html": html}


def run_nb(name: str, params: dict, tmp_path: Path) -> Path:
    return execute_notebook(name, params, tmp_path / f"{name}.ipynb", cwd=tmp_path, timeout=300, progress=False)


def read(path: Path) -> dict:
    assert path.is_file(), f"{path} was not written"
    return json.loads(path.read_text())


def assert_figures(paths: list[str], n_min: int) -> None:
    assert len(paths) >= n_min, paths
    for p in paths:
        assert Path(p).is_file() and Path(p).stat().st_size > 1000, p


def assert_metrics(m: dict) -> None:
    for k in ("rank1", "rank5", "rank10", "mAP", "mINP"):
        assert 0.0 <= m[k] <= 1.0, (k, m)
    assert m["rank1"] <= m["rank5"] <= m["rank10"]
    assert 0 < m["n_valid"] <= m["n_query"]


def test_every_notebook_is_tested_and_has_a_guarded_parameters_cell():
    found = sorted(p.stem for p in notebooks_dir().glob("*.py"))
    assert found == sorted(NOTEBOOKS)
    for name in NOTEBOOKS:
        text = (notebooks_dir() / f"{name}.py").read_text()
        assert text.count('# %% tags=["parameters"]') == 1, name
        assert "guard.freeze(globals()" in text and "guard.validate(globals())" in text, name


def test_mistyped_parameter_fails_with_the_valid_list(tmp_path):
    from papermill.exceptions import PapermillExecutionError

    with pytest.raises(PapermillExecutionError) as e:
        run_nb("quickstart", {"protocol": "ALL"}, tmp_path)
    msg = str(e.value)
    assert "NotebookParameterError" in msg and "'protocol'" in msg and "did you mean 'protocols'" in msg
    assert "valid parameters:" in msg and "synth_preset" in msg
    assert (tmp_path / "quickstart.failed.ipynb").is_file()
    with pytest.raises(PapermillExecutionError, match="must be int"):
        run_nb("rank_lists", {"k": "ten"}, tmp_path)


def test_quickstart(job, tmp_path):
    run_nb("quickstart", {"root": job["root"], "out_dir": str(tmp_path / "qs"), "png": "skip"}, tmp_path)
    s = read(tmp_path / "qs" / "summary.json")
    from agreid_kit.data import available_protocols

    assert [r["protocol"] for r in s["protocols"]] == available_protocols("synthag")
    for r in s["protocols"]:
        assert r["train images"] > 0 and r["query images"] > 0 and r["gallery images"] > 0
    assert_figures(s["figures"], 4)


def test_train_stage1(job, tmp_path):
    run_dir = tmp_path / "vit"
    run_nb("train_stage1", {"root": job["root"], "method": "vit", "epochs": 1, "max_iters_per_epoch": 1,
                            "eval_protocols": ["ALL"], "num_workers": 0, "run_dir": str(run_dir), "png": "skip"},
           tmp_path)
    s = read(run_dir / "notebook_summary.json")
    assert s["config"]["method"] == "vit" and s["epochs_logged"] == 1 and s["final_loss"] > 0
    assert_metrics(s["metrics"]["ALL"]["real"])
    assert_figures(s["figures"], 2)


def test_train_stage2(job, tmp_path):
    run_dir = tmp_path / "s2"
    run_nb("train_stage2", {"stage1_run": job["sdreid"], "run_dir": str(run_dir), "epochs": 1, "tau": 2,
                            "protocols": ["A<->G"], "png": "skip"}, tmp_path)
    s = read(run_dir / "notebook_summary.json")
    assert set(s["metrics"]["A<->G"]) == {"real", "gen:all", "real+gen"}
    for m in s["metrics"]["A<->G"].values():
        assert_metrics(m)
    assert s["epochs_logged"] == 1 and s["final_loss"] > 0
    assert_figures(s["figures"], 2)


def test_evaluate(job, tmp_path):
    run_nb("evaluate", {"run_dirs": [job["vit"], job["stage2"]], "protocols": ["ALL", "G<->G"],
                        "out_dir": str(tmp_path / "ev"), "png": "skip"}, tmp_path)
    s = read(tmp_path / "ev" / "evaluation.json")
    vit, s2 = (s["results"][k] for k in sorted(s["results"], key=lambda k: "stage2" in k))
    assert set(vit["ALL"]) == {"real"} and set(s2["ALL"]) == {"real", "gen:all", "real+gen"}
    for res in (vit, s2):
        for by_mode in res.values():
            for m in by_mode.values():
                assert_metrics(m)
    assert_figures(s["figures"], 3)


def test_feature_views(job, tmp_path):
    run_nb("feature_views", {"run_dir": job["stage2"], "method": "pca", "max_points": 60,
                             "out_dir": str(tmp_path / "fv"), "png": "skip"}, tmp_path)
    s = read(tmp_path / "fv" / "feature_views.json")
    assert s["points"] == 180 and s["kinds"] == ["gen:aerial", "gen:ground", "real"] and s["xy_finite"]
    assert {(r["generated_view"], r["image_view"]) for r in s["real_vs_generated_cosine"]} == {
        (g, v) for g in ("aerial", "ground") for v in ("aerial", "ground")}
    assert all(-1.0 <= r["mean_cosine"] <= 1.0 for r in s["real_vs_generated_cosine"])
    assert_figures(s["figures"], 2)


def test_rank_lists(job, tmp_path):
    run_nb("rank_lists", {"run_dir": job["stage2"], "protocols": ["A<->G"], "k": 5, "n_queries": 2,
                          "out_dir": str(tmp_path / "rl"), "png": "skip"}, tmp_path)
    s = read(tmp_path / "rl" / "rank_lists.json")
    e = s["protocols"]["A<->G"]
    assert 0.0 <= e["mean_ap"] <= 1.0 and 0 < e["n_valid"] <= e["n_query"]
    assert len(e["best"]) == len(e["worst"]) == 2
    assert e["best"][0]["ap"] >= e["best"][1]["ap"] >= e["worst"][1]["ap"] >= e["worst"][0]["ap"]
    assert all(q["shown"] >= 5 for q in e["best"] + e["worst"])
    assert_figures(s["figures"], 5)  # histogram + 2 best + 2 worst


def test_view_conditions(job, tmp_path):
    # The one notebook test that also asks for PNGs (one figure: a single kaleido/Chromium start).
    png = "require" if find_browser() else "skip"
    run_nb("view_conditions", {"run_dir": job["sdreid"], "max_instances": 40, "out_dir": str(tmp_path / "vc"),
                               "png": png, "space": "standardised"}, tmp_path)
    s = read(tmp_path / "vc" / "view_conditions.json")
    assert s["parameters"]["space"] == "standardised"
    views = ("aerial", "ground")
    assert {(r["view"], r["centre"]) for r in s["stats"]} == {(v, c) for v in views for c in views}
    assert all(-1.0 <= r["mean"] <= 1.0 and r["count"] > 0 for r in s["stats"])
    assert 0 < s["instances"] <= 40
    assert_figures(s["figures"], 2 if png == "require" else 1)
    if png == "require":
        assert any(p.endswith(".png") for p in s["figures"])


def test_timestep_tradeoff(job, tmp_path):
    run_nb("timestep_tradeoff", {"run_dir": job["stage2"], "taus": [1, 3], "protocols": ["ALL"],
                                 "modes": ["real+gen"], "out_dir": str(tmp_path / "tt"), "png": "skip"}, tmp_path)
    s = read(tmp_path / "tt" / "tradeoff.json")
    assert [r["tau"] for r in s["rows"]] == [1, 3]
    for r in s["rows"]:
        assert r["sec_per_1000"] > 0 and 0.0 <= r["mINP"] <= 1.0 and 0.0 <= r["mAP"] <= 1.0
    assert (tmp_path / "tt" / "tradeoff.csv").is_file()
    assert_figures(s["figures"], 1)


def test_report_notebook_ran_in_the_main_job(job):
    nb = json.loads(job["html"].with_suffix(".ipynb").read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    params = json.loads((job["cfg"].report_dir / "report_parameters.json").read_text())
    assert params["parameters"]["runs_root"] == str(job["cfg"].runs_dir.resolve())
    assert params["parameters"]["seeds"] == job["cfg"].seeds


def test_compare_methods(job, tmp_path):
    runs = {"vit": job["vit"], "sdreid stage 1": job["sdreid"], "sdreid stage 2": job["stage2"]}
    run_nb("compare_methods",
           {"data": job["data"], "out": str(tmp_path / "cmp"), "methods": ["vit", "sdreid", "sdreid-stage2"],
                               "runs": runs, "protocols": ["ALL", "A<->G"], "throughput": False,
                               "png": "skip"}, tmp_path)
    s = read(tmp_path / "cmp" / "comparison.json")
    rows = s["rows"]
    assert {(r["method"], r["protocol"]) for r in rows} == {(m, p) for m in runs for p in ("ALL", "A<->G")}
    for r in rows:
        assert all(0.0 <= r[k] <= 1.0 for k in ("rank1", "mAP", "mINP"))
    assert {r["mode"] for r in rows if r["method"] == "sdreid stage 2"} == {"real+gen"}
    assert_figures(s["figures"], 1)
