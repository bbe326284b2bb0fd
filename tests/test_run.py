"""``agreid_kit.run.Run``: versioned config.json (old files still load), resume checks that name the
setting and its flag, "finished for this config", and the folder layout it owns. No training here."""

from __future__ import annotations

import json

import pytest

from agreid_kit import __version__
from agreid_kit.engine.config import TrainConfig
from agreid_kit.run import FORMAT_VERSION, HEADER_KEYS, Run, load_run, run_config_classes


def _cfg(out, **kw) -> TrainConfig:
    return TrainConfig(method="vit", out=str(out), data="synthag:nowhere", **{"epochs": 2, **kw})


def _stage2_dict(out, **stage2) -> dict:
    from agreid_kit.diffusion.config import Stage2Config

    s2 = Stage2Config(stage1="s1", out=str(out), **stage2).to_dict()
    return {"method": "sdreid-stage2", "stage1": "/abs/s1", "data": "synthag:nowhere", "protocol": "ALL",
            "dataset": "synthag", "dim": 32, "num_train_timesteps": 1000, "stage2": s2,
            "model": {"dim": 32, "vrd_location": "down"}, "stage1_features": "abc"}


def _finish(run: Run, epochs: int, outputs=()) -> None:
    run.checkpoints_dir.mkdir(parents=True, exist_ok=True)
    run.last_checkpoint_path.write_bytes(b"not read here")
    run.write_log([{"epoch": e, "iters": 3, "seconds": 1.5} for e in range(1, epochs + 1)])
    for rel in outputs:
        (run.dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (run.dir / rel).write_text("{}")


def test_config_json_is_versioned_and_reads_back(tmp_path):
    run = Run(tmp_path / "r")
    cfg = _cfg(tmp_path / "elsewhere")
    run.write_config(cfg)
    raw = json.loads(run.config_path.read_text())
    assert (raw["format_version"], raw["config_class"], raw["kit_version"]) == (FORMAT_VERSION, "TrainConfig",
                                                                                __version__)
    assert raw["out"] == str(run.dir)  # written as located where it lives
    back = Run(run.dir).config
    assert isinstance(back, TrainConfig) and back.lr == cfg.lr and back.out == str(run.dir)
    assert run.raw_config().keys() == cfg.to_dict().keys()  # the header is not part of the config
    assert set(HEADER_KEYS).isdisjoint(f for cls in run_config_classes().values() for f in cls.__dataclass_fields__)


def test_unversioned_config_files_of_both_schemas_still_load(tmp_path):
    from agreid_kit.diffusion.config import Stage2RunConfig

    old1, old2 = tmp_path / "s1", tmp_path / "s2"
    old1.mkdir()
    old2.mkdir()
    (old1 / "config.json").write_text(json.dumps(_cfg(tmp_path / "made-elsewhere").to_dict()))
    (old2 / "config.json").write_text(json.dumps(_stage2_dict(tmp_path / "made-elsewhere")))
    one, two = load_run(old1), load_run(old2)
    assert isinstance(one.config, TrainConfig) and one.config.out == str(old1) and one.method == "vit"
    assert isinstance(two.config, Stage2RunConfig) and two.config.out == str(old2) and two.method == "sdreid-stage2"
    assert two.data == "synthag:nowhere" and two.protocol == "ALL" and two.config.epochs == 40
    assert two.method_spec.kind == "stage2" and one.method_spec.kind == "engine"


def test_unreadable_config_files_are_clear_errors(tmp_path):
    run = Run(tmp_path / "r")
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        load_run(run.dir)
    run.write_config(_cfg(run.dir))
    raw = json.loads(run.config_path.read_text())
    run.config_path.write_text(json.dumps({**raw, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(ValueError, match="upgrade agreid-kit"):
        Run(run.dir).config
    run.config_path.write_text(json.dumps({**raw, "config_class": "Nope"}))
    with pytest.raises(ValueError, match="unknown config_class 'Nope'"):
        Run(run.dir).config
    run.config_path.write_text(json.dumps({"data": "x"}))
    with pytest.raises(ValueError, match="neither a format_version nor a method"):
        Run(run.dir).config


def test_resume_names_the_setting_and_its_flag(tmp_path):
    run = Run(tmp_path / "r")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        run.check_resume(_cfg(run.dir))
    run.write_config(_cfg(run.dir))
    _finish(run, 1)
    assert run.check_resume(_cfg(tmp_path / "copy", num_workers=7)) is None  # where it lives, workers: runtime only
    lr = _cfg(run.dir).lr
    with pytest.raises(ValueError, match=rf"lr: {lr!r} -> 0.125 \(--lr\).*drop --lr"):
        run.check_resume(_cfg(run.dir, lr=0.125))
    with pytest.raises(ValueError, match=r"\(--batch-size\)"):
        run.check_resume(_cfg(run.dir, p=8))
    with pytest.raises(ValueError, match="--extend-epochs"):
        run.check_resume(_cfg(run.dir, epochs=5))
    assert run.check_resume(_cfg(run.dir, epochs=5), extend_epochs=True) == 2
    with pytest.raises(ValueError, match="would shorten it"):
        run.check_resume(_cfg(run.dir, epochs=1), extend_epochs=True)
    with pytest.raises(ValueError, match="belongs to another training run \\(method = 'vit', now 'vdt'"):
        run.check_resume(TrainConfig(method="vdt", out=str(run.dir), data="synthag:nowhere", epochs=2))


def test_stage2_resume_uses_the_same_check(tmp_path):
    from agreid_kit.diffusion.config import Stage2RunConfig

    run = Run(tmp_path / "r2")
    saved = Stage2RunConfig.from_dict(_stage2_dict(run.dir))
    run.write_config(saved)
    _finish(run, 1)
    other = Stage2RunConfig.from_dict(_stage2_dict(run.dir, seed=3))
    with pytest.raises(ValueError, match=r"other settings \(seed: 0 -> 3 \(--seed\)"):
        run.check_resume(other)
    moved = Stage2RunConfig.from_dict({**_stage2_dict(run.dir), "stage1": "/abs/other"})
    with pytest.raises(ValueError, match="belongs to another stage-2 run"):
        run.check_resume(moved)
    model = Stage2RunConfig.from_dict({**_stage2_dict(run.dir), "model": {"dim": 32, "vrd_location": "both"}})
    with pytest.raises(ValueError, match=r"model.vrd_location: 'down' -> 'both' \(--model-opt\)"):
        run.check_resume(model)
    assert run.check_resume(Stage2RunConfig.from_dict(_stage2_dict(run.dir, tau=9, device="cpu"))) is None
    with pytest.raises(ValueError, match="holds a stage-2 run"):
        run.check_resume(_cfg(run.dir))


def test_finished_means_finished_for_this_config(tmp_path):
    run = Run(tmp_path / "r")
    cfg = _cfg(run.dir)
    assert not run.is_finished(cfg)
    run.write_config(cfg)
    _finish(run, 1, outputs=cfg.expected_outputs())
    assert not run.is_finished(cfg)  # one of two epochs
    _finish(run, 2)
    assert run.is_finished(cfg)
    assert not run.is_finished(_cfg(run.dir, max_iters_per_epoch=1))  # another budget is not this run
    assert not run.is_finished(_cfg(run.dir, epochs=3))
    assert run.is_finished(_cfg(tmp_path / "anywhere", image_cache="off"))  # runtime-only settings
    (run.dir / "metrics.json").unlink()
    assert not run.is_finished(cfg)
    assert run.training_totals() == (3.0, 2, 6)


def test_log_metrics_and_paths(tmp_path):
    run = Run(tmp_path / "r")
    assert run.read_log() == [] and run.last_epoch() == 0 and run.read_metrics() == {}
    run.write_log([{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}])
    assert run.last_epoch() == 2 and (run.dir / "log.csv").read_text().splitlines()[0] == "epoch,loss"
    run.merge_metrics({"ALL": {"real": {"mAP": 0.5}}})
    run.merge_metrics({"ALL": {"gen:all": {"mAP": 0.25}}, "A<->G": {"real": {"mAP": 0.125}}})
    assert run.read_metrics() == {"ALL": {"real": {"mAP": 0.5}, "gen:all": {"mAP": 0.25}},
                                  "A<->G": {"real": {"mAP": 0.125}}}
    assert run.features_path("test") == run.dir / "features" / "test"
    assert run.epoch_checkpoint_path(3) == run.dir / "checkpoints" / "epoch_003.pt"
    assert Run(run.dir, checkpoint="epoch_003.pt").checkpoint_path.name == "epoch_003.pt"
