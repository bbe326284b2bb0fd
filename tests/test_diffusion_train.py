"""Stage-2 training, resume, generation and analyses end to end on a fake stage-1 run."""

from __future__ import annotations

import json

import pytest
import torch
from test_diffusion import TINY_UNET, fake_split, make_stage1_run

from agreid_kit.diffusion.config import Stage2Config
from agreid_kit.features import FeatureSet


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny: one intra-op thread avoids sync overhead on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cfg(stage1, out, **kw) -> Stage2Config:
    base = dict(stage1=str(stage1), out=str(out), preset="cpu", model=dict(TINY_UNET), epochs=5, batch_size=12,
                lr=3e-3, warmup_iters=0, decay_epochs=[100], num_train_timesteps=1000, generate_after=False)
    base.update(kw)
    return Stage2Config(**base)


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    return make_stage1_run(tmp_path_factory.mktemp("s1"))


@pytest.fixture(scope="module")
def trained(stage1, tmp_path_factory):
    from agreid_kit.diffusion.train import train_stage2

    out = tmp_path_factory.mktemp("s2") / "run"
    train_stage2(_cfg(stage1, out), progress=False)
    return out


def test_loss_decreases_and_run_layout(trained, stage1):
    log = [json.loads(line) for line in (trained / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == list(range(1, 6))
    assert log[-1]["loss"] < 0.8 * log[0]["loss"], [e["loss"] for e in log]
    cfg = json.loads((trained / "config.json").read_text())
    assert cfg["method"] == "sdreid-stage2" and cfg["stage1"] == str(stage1.resolve())
    assert cfg["data"] == "synthag:nowhere" and cfg["num_train_timesteps"] == 1000
    assert (trained / "checkpoints" / "last.pt").is_file()
    fs = FeatureSet.load(trained / "features" / "test")
    assert fs.meta["method"] == "sdreid-stage2" and not fs.generated_views()


def test_resume_is_exact(stage1, tmp_path):
    from agreid_kit.diffusion.train import train_stage2

    straight = train_stage2(_cfg(stage1, tmp_path / "a", epochs=2, batch_size=18), progress=False)
    part = train_stage2(_cfg(stage1, tmp_path / "b", epochs=1, batch_size=18), progress=False)
    resumed = train_stage2(_cfg(stage1, part, epochs=2, batch_size=18), progress=False)
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(resumed / "checkpoints" / "last.pt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 2
    assert [e["loss"] for e in a["log"]] == [e["loss"] for e in b["log"]]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_resume_into_a_run_of_another_stage1_is_refused(stage1, trained, tmp_path):
    from agreid_kit.diffusion.train import train_stage2

    other = make_stage1_run(tmp_path, dim=64)
    with pytest.raises(ValueError, match="another stage-2 run"):
        train_stage2(_cfg(other, trained), progress=False)


def test_generate_evaluate_and_analyses(trained, stage1):
    from agreid_kit.diffusion.analyses import timestep_tradeoff, view_condition_similarity
    from agreid_kit.diffusion.sample import generate_features
    from agreid_kit.features import evaluate_featureset

    fs = generate_features(trained, tau=2, guidance=2.0, device="cpu", progress=False)
    assert fs.generated_views() == [0, 1]
    again = FeatureSet.load(trained / "features" / "test")
    assert torch.equal(again.extras["gen:0"], fs.extras["gen:0"])
    assert again.meta["generation"]["tau"] == 2
    split = fake_split(stage1)
    for mode in ("real", "gen:aerial", "gen:ground", "gen:all", "real+gen"):
        res = evaluate_featureset(again, split, mode=mode)
        assert res is not None
    with pytest.raises(ValueError, match="view"):
        generate_features(trained, tau=2, views=["wearable"], save=False, progress=False)
    with pytest.raises(ValueError, match="tau"):
        generate_features(trained, tau=0, save=False, progress=False)

    df, fig = timestep_tradeoff(trained, taus=[1, 3], protocols=["A->G"], modes=["real", "real+gen"],
                                splits={"A->G": split}, progress=False)
    assert list(df["tau"].unique()) == [1, 3] and (df["sec_per_1000"] > 0).all()
    real = df[df["mode"] == "real"]["rank1"].tolist()
    assert real[0] == real[1]  # the real feature does not depend on tau
    assert len(fig.data) == 2 * 3 + 1

    data, fig2 = view_condition_similarity(again, max_instances=20)
    assert set(data["to_centres"]["view"]) == {"aerial", "ground"}
    # The synthetic view tokens sit near their own view's centre: own-centre similarity is higher.
    d = data["to_centres"]
    own = d[d["view"] == d["centre"]]["cosine"].mean()
    cross = d[d["view"] != d["centre"]]["cosine"].mean()
    assert own > cross
    assert data["instance_matrix"].shape == (20, 20)

    # Tokens sharing a large constant component: raw cosines are all ~1, standardised ones separate the views.
    offset = 100.0 * torch.ones(again.extras["view_token"].shape[1])
    shifted = FeatureSet(again.features, again.records, again.split, again.fingerprint,
                         {**again.extras, "view_token": again.extras["view_token"] + offset},
                         {**again.globals, "view_centres": again.globals["view_centres"] + offset}, dict(again.meta))
    raw, _ = view_condition_similarity(shifted, max_instances=20, space="raw")
    std, fig3 = view_condition_similarity(shifted, max_instances=20, space="standardised")
    assert raw["to_centres"]["cosine"].min() > 0.99
    d = std["to_centres"]
    assert d[d["view"] == d["centre"]]["cosine"].mean() > d[d["view"] != d["centre"]]["cosine"].mean() + 0.2
    assert "standardised" in fig3.layout.title.text
    with pytest.raises(ValueError, match="space"):
        view_condition_similarity(again, space="whitened")


def test_cli_generate(trained, capsys):
    from agreid_kit.cli import main

    assert main(["generate", str(trained), "--tau", "1", "--views", "ground", "--device", "cpu"]) == 0
    assert "gen:1" in capsys.readouterr().out
    assert FeatureSet.load(trained / "features" / "test").generated_views() == [1]
    assert main(["generate", str(trained), "--tau", "0"]) == 2
    assert "tau" in capsys.readouterr().err
    assert main(["generate", str(trained), "--views", "wearable"]) == 2
    assert "wearable" in capsys.readouterr().err


def test_guidance_ablation_and_lr_schedule(trained, stage1):
    from agreid_kit.diffusion.analyses import ablation
    from agreid_kit.diffusion.schedule import lr_factor, sample_timesteps

    split = fake_split(stage1)
    df, fig = ablation("guidance", trained, values=[1.0, 3.0], tau=1, protocols=["A->G"], modes=["gen:all"],
                       splits={"A->G": split}, progress=False)
    assert list(df["guidance"]) == ["1.0", "3.0"] and len(fig.data) == 3
    with pytest.raises(ValueError, match="unknown ablation"):
        ablation("nope", trained)
    assert lr_factor(0, 1, 10, 0.01, [50], 0.1) == pytest.approx(0.01)
    assert lr_factor(10, 50, 10, 0.01, [50], 0.1) == pytest.approx(1.0)
    assert lr_factor(10, 51, 10, 0.01, [50], 0.1) == pytest.approx(0.1)
    t = sample_timesteps(20000, 1000, "cubic", torch.Generator().manual_seed(0))
    assert 0 <= int(t.min()) and int(t.max()) <= 999 and float(t.float().mean()) > 700  # E[1 - u^3] = 0.75


def test_model_ablation_retrains_one_run_per_value(stage1, tmp_path):
    from agreid_kit.diffusion.analyses import ablation

    base = _cfg(stage1, tmp_path / "unused", epochs=1, batch_size=36)
    df, fig = ablation("id_layers", base, values=[1, "all"], out_root=tmp_path / "abl", tau=1, protocols=["A->G"],
                       modes=["real+gen"], splits={"A->G": fake_split(stage1)}, progress=False)
    assert list(df["id_layers"]) == ["1", "all"]
    cfg = json.loads((tmp_path / "abl" / "id_layers=1" / "config.json").read_text())
    assert cfg["model"]["id_layers"] == [-1]
    assert FeatureSet.load(tmp_path / "abl" / "id_layers=all" / "features" / "test").generated_views() == [0, 1]


# ---- the paper path and recovery (issue: SD-ReID stage 2 earns its place) ----------------------------------
def _tiny_sd_folder(root):
    from diffusers import UNet2DConditionModel

    small = UNet2DConditionModel(
        in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16), norm_num_groups=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=24, attention_head_dim=2,
    )
    small.save_pretrained(root / "unet")
    return root


def test_finished_run_generates_after_its_sd_folder_is_deleted(stage1, tmp_path):
    import shutil

    from agreid_kit.diffusion.sample import generate_features
    from agreid_kit.diffusion.train import train_stage2

    sd = _tiny_sd_folder(tmp_path / "sd15")
    out = train_stage2(_cfg(stage1, tmp_path / "run", epochs=1, model={"unet_path": str(sd)}), progress=False)
    before = generate_features(out, tau=2, device="cpu", save=False, progress=False)
    shutil.rmtree(sd)  # moved or deleted after training
    after = generate_features(out, tau=2, device="cpu", save=False, progress=False)
    assert torch.equal(before.extras["gen:0"], after.extras["gen:0"])


def test_paper_preset_without_unet_names_the_flag(stage1, tmp_path):
    with pytest.raises(ValueError, match="--unet PATH"):
        Stage2Config(stage1=str(stage1), out=str(tmp_path / "x"), preset="paper")
    from agreid_kit.cli import main

    assert main(["train", "--method", "sdreid-stage2", "--stage1", str(stage1), "--out", str(tmp_path / "y"),
                 "--preset", "paper"]) == 2


def test_stage2_honours_threads_and_restores_them(stage1, tmp_path, monkeypatch):
    from agreid_kit.diffusion import train as train_mod

    seen = []
    real = train_mod._train_stage2
    monkeypatch.setattr(train_mod, "_train_stage2", lambda cfg,
                        progress: seen.append(torch.get_num_threads()) or real(cfg, progress))
    before = torch.get_num_threads()
    train_mod.train_stage2(_cfg(stage1, tmp_path / "t", epochs=1, threads=2), progress=False)
    assert seen == [2] and torch.get_num_threads() == before
    import argparse

    from agreid_kit.cli.train import register  # the CLI passes --threads through to the stage-2 config

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["train", "--method", "sdreid-stage2", "--stage1", str(stage1), "--out",
                              str(tmp_path / "c"),
                              "--threads", "2", "--epochs", "1", "--no-generate"])
    from agreid_kit.cli.train import stage2_config_from_args

    assert stage2_config_from_args(args).threads == 2


def test_rerun_with_other_settings_is_refused_not_mixed(stage1, tmp_path):
    from agreid_kit.diffusion.train import train_stage2

    out = train_stage2(_cfg(stage1, tmp_path / "r", epochs=2), progress=False)
    saved = (out / "config.json").read_text()
    for change, name in ((dict(seed=1), "seed"), (dict(lr=0.01), "lr"), (dict(batch_size=7), "batch_size")):
        with pytest.raises(ValueError, match=f"other settings \\({name}"):
            train_stage2(_cfg(stage1, out, epochs=2, **change), progress=False)
    with pytest.raises(ValueError, match="would shorten it"):
        train_stage2(_cfg(stage1, out, epochs=1), progress=False)
    assert (out / "config.json").read_text() == saved  # nothing rewritten by the refused attempts
    assert json.loads(saved)["stage2"]["epochs"] == 2


def _stage1_run_holding_out_ids_4_and_5(tmp_path):
    """A stage-1 run whose train features mark pids 4 and 5 as validation identities."""
    run = make_stage1_run(tmp_path)
    train_fs = FeatureSet.load(run / "features" / "train")
    train_fs.meta = {**train_fs.meta, "val_pids": [4, 5]}
    train_fs.save(run / "features" / "train")
    return run, train_fs


def test_stage2_validates_on_the_identities_stage1_held_out(tmp_path):
    from agreid_kit.diffusion.train import stage2_validation_rows, train_stage2

    run, train_fs = _stage1_run_holding_out_ids_4_and_5(tmp_path)
    fit, val_split, val_rows = stage2_validation_rows(train_fs)
    assert {train_fs.records[i].pid for i in val_rows} == {4, 5}
    assert {train_fs.records[i].pid for i in fit} == {0, 1, 2, 3}
    assert {r.pid for r in val_split.query} == {4, 5} and len(val_split.query) + len(val_split.gallery) == len(val_rows)
    out = train_stage2(_cfg(run, tmp_path / "v", epochs=2, val_every=1, tau=2), progress=False)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    for entry in log:
        for mode in ("real", "gen:all", "real+gen"):
            assert 0.0 <= entry[f"val_{mode}_mAP"] <= 1.0
    off = train_stage2(_cfg(run, tmp_path / "nv", epochs=1, validate=False), progress=False)
    assert "val_real_mAP" not in json.loads((off / "log.jsonl").read_text().splitlines()[0])


def test_validation_frequency_changes_no_trained_weight_or_test_feature(tmp_path):
    """The main job scores stage 2 less often than the preset to save time: that must change no number."""
    import torch

    from agreid_kit.diffusion.train import train_stage2
    from agreid_kit.run import Run

    run, _ = _stage1_run_holding_out_ids_4_and_5(tmp_path)
    often, rarely = (train_stage2(_cfg(run, tmp_path / name, epochs=3, val_every=every, tau=2, generate_after=True),
                                  progress=False) for name, every in (("often", 1), ("rarely", 3)))
    logs = [[json.loads(line) for line in (r / "log.jsonl").read_text().splitlines()] for r in (often, rarely)]
    assert ["val_real_mAP" in e for e in logs[0]] == [True, True, True]
    assert ["val_real_mAP" in e for e in logs[1]] == [False, False, True]
    assert [e["loss"] for e in logs[0]] == [e["loss"] for e in logs[1]]
    assert logs[0][-1]["val_real+gen_mAP"] == logs[1][-1]["val_real+gen_mAP"]
    a, b = (torch.load(Run(r).last_checkpoint_path, map_location="cpu", weights_only=False)["model"]
            for r in (often, rarely))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    fa, fb = FeatureSet.load(often / "features" / "test"), FeatureSet.load(rarely / "features" / "test")
    gen = [k for k in fa.extras if k.startswith("gen:")]
    assert gen and all(torch.equal(fa.extras[k], fb.extras[k]) for k in gen)


def test_paper_preset_uses_the_papers_vrd_location_and_weight_decay(stage1, tmp_path):
    from agreid_kit.diffusion.loading import load_stage1
    from agreid_kit.diffusion.train import build_model_config

    s1 = load_stage1(stage1)
    paper = Stage2Config(stage1=str(stage1), out=str(tmp_path / "p"), preset="paper",
                         model={"unet_path": str(tmp_path)})
    assert paper.weight_decay == 0.1 and paper.lr == 1e-4 and paper.epochs == 120
    assert build_model_config(paper, s1).vrd_location == "both"
    cpu = Stage2Config(stage1=str(stage1), out=str(tmp_path / "c"), preset="cpu")
    assert cpu.weight_decay == 0.0
    mine = Stage2Config(stage1=str(stage1), out=str(tmp_path / "m"), preset="cpu", model={"vrd_location": "none"})
    assert build_model_config(mine, s1).vrd_location == "none"  # the user's option wins over the preset's
    with pytest.raises(ValueError, match="preset must be one of"):
        Stage2Config(stage1=str(stage1), out=str(tmp_path / "x"), preset="gpu")


def test_load_run_reads_a_stage2_run(trained, stage1):
    from agreid_kit.diffusion.config import Stage2RunConfig
    from agreid_kit.diffusion.model import SDReIDStage2
    from agreid_kit.run import load_run

    run = load_run(trained)
    assert run.method == "sdreid-stage2" and run.method_spec.kind == "stage2"
    assert isinstance(run.config, Stage2RunConfig) and run.config.stage1 == str(stage1.resolve())
    assert run.data == "synthag:nowhere" and run.protocol == "ALL" and run.last_epoch() == 5
    assert isinstance(run.model, SDReIDStage2) and not run.model.training
    assert json.loads((trained / "config.json").read_text())["config_class"] == "Stage2RunConfig"


def test_cli_resumes_stage2_like_stage1(stage1, tmp_path, capsys):
    """`--resume` continues a stage-2 run from --out alone with its own settings; another setting is an error
    naming the flag; without --resume a run folder is continued only with a deprecation note."""
    from agreid_kit.cli import main
    from agreid_kit.run import Run

    out = tmp_path / "cli"
    base = ["train", "--method", "sdreid-stage2", "--stage1", str(stage1), "--out", str(out), "--epochs", "1",
            "--batch-size", "36", "--no-generate", "--threads", "1", "--model-opt", "unet_channels=[8,8,8]",
            "--model-opt", "unet_norm_groups=4"]
    assert main(base) == 0
    assert Run(out).last_epoch() == 1 and Run(out).config.model["unet_channels"] == [8, 8, 8]
    assert main(["train", "--out", str(out), "--resume", "--seed", "5"]) == 2
    assert "--seed" in capsys.readouterr().err
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2"]) == 0
    assert Run(out).last_epoch() == 2
    capsys.readouterr()
    assert main([*base[:base.index("--epochs")], "--epochs", "3", *base[base.index("--epochs") + 2:]]) == 0
    assert "without --resume is deprecated" in capsys.readouterr().err and Run(out).last_epoch() == 3
    assert main([*base, "--no-resume"]) == 0  # the old spelling of --overwrite: trained again from scratch
    assert "--no-resume is deprecated; use --overwrite" in capsys.readouterr().err and Run(out).last_epoch() == 1
