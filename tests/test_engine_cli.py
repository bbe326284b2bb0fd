"""`agreid train / extract / evaluate` end to end on SynthAG tiny (rendered once per module)."""

import json

import pytest

from agreid_kit.cli import main

pytestmark = pytest.mark.slow

TINY_OPTS = ["--model-opt", "embed_dim=32", "--model-opt", "depth=2", "--model-opt", "num_heads=2", "--model-opt", "img_size=[64,32]"]


@pytest.fixture(scope="module")
def synthag_tiny(tmp_path_factory):
    from agreid_kit.synth.generate import render_dataset

    return render_dataset("tiny", tmp_path_factory.mktemp("synthag") / "tiny", seed=0, workers=1, progress=False, difficulty=False)


def test_train_extract_evaluate_cli(synthag_tiny, tmp_path, capsys):
    run = tmp_path / "run"
    args = [
        "train", "--method", "sdreid", "--data", f"synthag:{synthag_tiny}", "--protocol", "ALL",
        "--eval-protocols", "ALL", "A<->G", "--preset", "cpu", "--out", str(run), "--epochs", "1",
        "--batch", "4", "2", "--num-workers", "0", "--max-iters-per-epoch", "3", "--threads", "1", *TINY_OPTS,
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
