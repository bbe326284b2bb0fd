"""`agreid train / extract / evaluate` end to end on SynthAG tiny (rendered once per module)."""

import json

import pytest

from agreid_kit.cli import main

pytestmark = pytest.mark.slow

TINY_OPTS = ["--pretrained", "none", "--model-opt", "embed_dim=32", "--model-opt", "depth=2", "--model-opt",
             "num_heads=2", "--model-opt", "img_size=[64,32]"]


@pytest.fixture(scope="module")
def synthag_tiny(tmp_path_factory):
    from agreid_kit.synth.generate import render_dataset

    return render_dataset("tiny", tmp_path_factory.mktemp("synthag") / "tiny", seed=0, workers=1, progress=False,
                          difficulty=False)


def test_train_extract_evaluate_cli(synthag_tiny, tmp_path, capsys):
    run = tmp_path / "run"
    args = [
        "train", "--method", "sdreid", "--data", f"synthag:{synthag_tiny}", "--protocol", "ALL",
        "--eval-protocols", "ALL", "A<->G", "--preset", "cpu", "--out", str(run), "--epochs", "1",
        "--batch-size", "4", "2", "--num-workers", "0", "--max-iters-per-epoch", "3", "--threads", "1", *TINY_OPTS,
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "A<->G" in out and "mINP" in out
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["embed_dim"] == 32 and cfg["max_iters_per_epoch"] == 3
    assert main(["extract", str(run), "--split", "test", "--num-workers", "0"]) == 0
    assert main(["evaluate", str(run), "--protocol", "A<->A", "G<->G"]) == 0
    out = capsys.readouterr().out
    assert "A<->A" in out and "G<->G" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"ALL", "A<->G", "A<->A", "G<->G"} <= set(metrics)
    # --resume of a finished run trains nothing more and keeps its log
    assert main(["train", "--out", str(run), "--resume", "--num-workers", "0"]) == 0
    assert len((run / "log.jsonl").read_text().splitlines()) == 1


def test_cli_bad_inputs_name_the_thing(synthag_tiny, tmp_path, capsys):
    base = ["train", "--method", "vit", "--preset", "cpu", "--out", str(tmp_path / "r"), "--num-workers", "0"]
    assert main(base + ["--data", f"synthag:{tmp_path / 'missing'}"]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(base + ["--data", f"synthag:{synthag_tiny}", "--protocol", "A-G"]) == 2
    assert "protocol 'A-G'" in capsys.readouterr().err
    assert main(base + ["--data", f"nosuch:{synthag_tiny}"]) == 2
    assert "unknown dataset 'nosuch'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--method", "resnet", "--out", str(tmp_path / "r")])
    assert main(base + ["--data", f"synthag:{synthag_tiny}", "--batch", "100", "2", *TINY_OPTS]) == 2
    assert "fewer than P=100" in capsys.readouterr().err
    assert main(base + ["--data", f"synthag:{synthag_tiny}", "--preset", "paper"]) == 2
    assert "--pretrained PATH" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nowhere")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def _tiny_train(synthag_tiny, out, *extra):
    return ["train", "--method", "vit", "--data", f"synthag:{synthag_tiny}", "--preset", "cpu", "--out", str(out),
            "--epochs", "2", "--batch-size", "4", "2", "--num-workers", "0", "--max-iters-per-epoch", "2", "--threads",
            "1",
            "--no-extract", *TINY_OPTS, *extra]


def test_copied_run_resumes_in_its_own_folder_and_refuses_other_settings(synthag_tiny, tmp_path, capsys):
    """B1: a copy resumes where it lives now; B3: resume never silently ignores --epochs/--lr/--seed."""
    import shutil

    orig = tmp_path / "orig"
    args = _tiny_train(synthag_tiny, orig)
    args[args.index("--epochs") + 1] = "1"
    assert main(args) == 0
    copy = tmp_path / "copy"
    shutil.copytree(orig, copy)
    before = (orig / "log.jsonl").read_text()
    for flag, value, hint in (("--epochs", "3", "--extend-epochs"), ("--lr", "0.5", "--lr"), ("--seed", "7", "--seed")):
        assert main(["train", "--out", str(copy), "--resume", flag, value]) == 2
        assert hint in capsys.readouterr().err
    assert main(["train", "--out", str(copy), "--resume", "--epochs", "2", "--extend-epochs"]) == 0
    out = capsys.readouterr().out
    assert f"resuming {copy}" in out and "extended from 1" in out
    rows = [json.loads(line) for line in (copy / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[0]["extended_from"] == 1
    assert json.loads((copy / "config.json").read_text())["out"] == str(copy)
    assert (orig / "log.jsonl").read_text() == before  # the original is untouched
    # train into an existing run without --resume: a one-line error naming the flag, no traceback
    assert main(_tiny_train(synthag_tiny, copy)) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "Traceback" not in err


def test_features_copied_from_another_run_are_refused(synthag_tiny, tmp_path, capsys):
    import shutil

    a, b = tmp_path / "a", tmp_path / "b"
    for run, seed in ((a, "0"), (b, "1")):
        args = _tiny_train(synthag_tiny, run, "--seed", seed)
        args.remove("--no-extract")
        args[args.index("--epochs") + 1] = "1"
        assert main(args) == 0
    assert main(["evaluate", str(b), "--protocol", "ALL"]) == 0
    shutil.copy2(a / "features" / "test.json", b / "features" / "test.json")
    shutil.copy2(a / "features" / "test.safetensors", b / "features" / "test.safetensors")
    capsys.readouterr()
    assert main(["evaluate", str(b), "--protocol", "ALL"]) == 2
    err = capsys.readouterr().err
    assert "another checkpoint" in err and f"agreid extract {b}" in err
    assert main(["extract", str(b), "--split", "test", "--num-workers", "0"]) == 0
    assert main(["evaluate", str(b), "--protocol", "ALL"]) == 0
