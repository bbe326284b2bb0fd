"""The method table (one entry per method, duplicates refused, everything derived from it), presets applied
one way for every config, and the CLI vocabulary (one spelling per idea, KEY=VALUE checked). No training."""

from __future__ import annotations

import dataclasses

import pytest

from agreid_kit.models import available_methods, method_spec, register_method, unregister_method


def _train_choices() -> list[str]:
    from agreid_kit.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    return list(next(a for a in sub["train"]._actions if a.dest == "method").choices)


# ---- the method table ------------------------------------------------------------------------------
def test_table_holds_every_method_in_order_stage2_included():
    assert available_methods() == ["vit", "vdt", "vif", "visa", "svpr", "sdreid", "sdreid-stage2"]
    assert available_methods("stage2") == ["sdreid-stage2"]
    s2 = method_spec("sdreid-stage2")
    assert s2.kind == "stage2" and s2.requires == "sdreid" and s2.display_label == "sdreid stage 2"
    assert s2.trainer().__name__ == "train_stage2" and s2.run_config_class().__name__ == "Stage2RunConfig"
    assert method_spec(
        "vit").trainer().__name__ == "train" and method_spec("vit").config_class().__name__ == "TrainConfig"
    with pytest.raises(ValueError, match="unknown method 'resnet'"):
        method_spec("resnet")
    from agreid_kit.models import create_model

    with pytest.raises(ValueError, match="stage2 method"):
        create_model("sdreid-stage2")


def test_registering_a_duplicate_raises():
    with pytest.raises(ValueError, match="'vit' is already registered"):
        register_method("vit", "agreid_kit.models.vit:ViTReID")
    with pytest.raises(ValueError, match="unknown kind"):
        register_method("x-kind", "agreid_kit.models.vit:ViTReID", kind="gan")
    with pytest.raises(ValueError, match="requires 'nothing'"):
        register_method("x-req", "agreid_kit.models.vit:ViTReID", requires="nothing")


def test_a_registered_method_appears_everywhere_the_table_is_read():
    from agreid_kit import compare
    from agreid_kit.models import create_model

    assert compare.DEFAULT_METHODS == tuple(available_methods())
    assert _train_choices() == available_methods()
    register_method("dummy-vit", "agreid_kit.models.vit:ViTReID", summary="a test entry")
    try:
        assert "dummy-vit" in available_methods() and "dummy-vit" in _train_choices()
        assert [e.method for e in compare._entries(available_methods())][-1] == "dummy-vit"
        model = create_model("dummy-vit", "cpu", embed_dim=32, depth=1, num_heads=2, pretrained=None, num_classes=3)
        assert model.config.embed_dim == 32
        with pytest.raises(ValueError, match="already registered"):
            register_method("dummy-vit", "agreid_kit.models.vit:ViTReID")
    finally:
        unregister_method("dummy-vit")
    assert "dummy-vit" not in _train_choices()
    with pytest.raises(ValueError, match="required by"):
        unregister_method("sdreid")


def test_cli_lists_come_from_the_table():
    from agreid_kit.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    convergence = next(a for a in sub["convergence"]._actions if a.dest == "methods")
    assert list(convergence.choices) == available_methods("engine")
    compare = next(a for a in sub["compare"]._actions if a.dest == "methods")
    assert list(compare.choices) == available_methods()


# ---- presets ---------------------------------------------------------------------------------------
def test_train_config_defaults_are_the_cpu_preset():
    from agreid_kit.engine.config import TRAIN_PRESETS, TrainConfig, make_config

    cpu = TRAIN_PRESETS["cpu"]
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    assert {k: defaults[k] for k in cpu} == cpu
    cfg = TrainConfig("vit", "x")
    assert {k: getattr(cfg, k) for k in cpu} == cpu
    assert make_config("vit", "x") == cfg


def test_train_config_applies_its_preset_and_keeps_what_the_caller_set():
    from agreid_kit.engine.config import TRAIN_PRESETS, TrainConfig, make_config

    paper = TRAIN_PRESETS["paper"]
    cfg = TrainConfig("vit", "x", preset="paper")
    assert {k: getattr(cfg, k) for k in paper} == paper
    assert cfg == make_config("vit", "x", "paper")
    # an explicit value wins, even one equal to the cpu default
    mine = TrainConfig("vit", "x", preset="paper", lr=TRAIN_PRESETS["cpu"]["lr"])
    assert mine.lr == TRAIN_PRESETS["cpu"]["lr"] and mine.optimizer == paper["optimizer"]
    assert TrainConfig("svpr", "x", preset="paper").lr == 5e-6  # the method's own recipe
    assert dataclasses.replace(cfg, epochs=3).lr == paper["lr"]  # a copy keeps its values
    with pytest.raises(ValueError, match=r"TrainConfig has no preset 'gpu': the preset must be one of \['cpu', "
                                         r"'paper'\]"):
        TrainConfig("vit", "x", preset="gpu")
    with pytest.raises(ValueError, match="unknown method 'resnet'"):
        TrainConfig("resnet", "x")


def test_every_config_takes_presets_the_same_way_and_names_bad_ones(tmp_path):
    from agreid_kit.diffusion.config import STAGE2_PRESETS, Stage2Config
    from agreid_kit.models import model_config
    from agreid_kit.pipeline import MainJobConfig

    cpu = STAGE2_PRESETS["cpu"]
    defaults = {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
                for f in dataclasses.fields(Stage2Config)}
    assert {k: defaults[k] for k in cpu} == cpu
    paper = Stage2Config("s1", "o", preset="paper", model={"unet_path": str(tmp_path)}, batch_size=None)
    assert {k: getattr(paper, k) for k in STAGE2_PRESETS["paper"]} == STAGE2_PRESETS["paper"]
    assert Stage2Config("s1", "o", preset="paper", model={"unet_path": str(tmp_path)}, lr=1e-3).lr == 1e-3
    for make, what in ((lambda: Stage2Config("s1", "o", preset="gpu"), "Stage2Config"),
                       (lambda: model_config("vit", "gpu"), "method 'vit'"),
                       (lambda: MainJobConfig(preset="gpu"), "MainJobConfig")):
        with pytest.raises(ValueError, match=f"{what} has no preset 'gpu': the preset must be one of"):
            make()


def test_an_unknown_stage2_preset_never_becomes_cpu(tmp_path, capsys):
    from agreid_kit.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--method", "sdreid-stage2", "--stage1", str(tmp_path), "--out", str(tmp_path / "o"),
              "--preset", "gpu"])
    assert "invalid choice: 'gpu'" in capsys.readouterr().err


# ---- CLI vocabulary --------------------------------------------------------------------------------
def _parse(argv):
    from agreid_kit.cli import build_parser

    return build_parser().parse_args(["train", "--out", "o", *argv])


def test_old_spellings_are_hidden_aliases_of_the_new_ones(capsys):
    from agreid_kit.cli._options import DEPRECATED_ALIASES

    pairs = [
        (["--model-opts", "depth=2", "embed_dim=8"], ["--model-opt", "depth=2", "--model-opt", "embed_dim=8"]),
        (["--ckpt-every", "3"], ["--checkpoint-every", "3"]),
        (["--batch", "4", "2"], ["--batch-size", "4", "2"]),
        (["--no-resume"], ["--overwrite"]),
    ]
    for old, new in pairs:
        assert vars(_parse(old)) == vars(_parse(new)), old
        assert f"{old[0]} is deprecated; use {DEPRECATED_ALIASES[old[0]]}" in capsys.readouterr().err
    from agreid_kit.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    text = sub["train"].format_help() + sub["synth"].format_help()
    assert not any(f"{old} " in text or f"{old}\n" in text for old in DEPRECATED_ALIASES)  # hidden from --help
    synth_old = build_parser().parse_args(["synth", "--out", "x", "--workers", "2", "--no-progress"])
    synth_new = build_parser().parse_args(["synth", "--out", "x", "--num-workers", "2", "--quiet"])
    assert vars(synth_old) == vars(synth_new)


def test_batch_size_means_samples_per_step():
    from agreid_kit.cli.train import _stage1_batch

    assert _stage1_batch(_parse(["--batch-size", "8", "2"]), "vit", "cpu") == {"p": 8, "k": 2}
    assert _stage1_batch(_parse(["--batch-size", "32"]), "vit", "cpu") == {"p": 8, "k": 4}  # K = the preset's 4
    from agreid_kit.cli import CLIError

    with pytest.raises(CLIError, match="multiple of 4"):
        _stage1_batch(_parse(["--batch-size", "30"]), "vit", "cpu")


def test_model_opt_keys_are_checked_against_the_config(tmp_path, capsys):
    from agreid_kit.cli import CLIError, main
    from agreid_kit.cli._options import parse_key_values

    assert parse_key_values(["depth=8", "arch=vit_small", "img_size=[64,32]"], ["arch", "depth", "img_size"], "--x",
                            "t") == {
        "depth": 8, "arch": "vit_small", "img_size": [64, 32]}
    with pytest.raises(CLIError, match="expected KEY=VALUE"):
        parse_key_values(["depth"], ["depth"], "--model-opt", "t")
    data = tmp_path / "data"
    assert main(["train", "--method", "vit", "--data", f"synthag:{data}", "--out", str(tmp_path / "r"),
                 "--model-opt", "widht=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'widht'" in err and "valid keys:" in err and "embed_dim" in err and "num_classes" not in err
    stage1 = tmp_path / "s1"
    assert main(["train", "--method", "sdreid-stage2", "--stage1", str(stage1), "--out", str(tmp_path / "r2"),
                 "--model-opt", "vrd_locaton=both"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'vrd_locaton'" in err and "vrd_location" in err and "Stage2ModelConfig" in err
    assert main(["train", "--method", "sdreid-stage2", "--stage1", str(stage1), "--out", str(tmp_path / "r2"),
                 "--data", "synthag:x"]) == 2
    assert "stage-1 option" in capsys.readouterr().err
