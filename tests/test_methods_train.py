"""Each method trains a few iterations on SynthAG tiny through the engine and yields a FeatureSet and
metrics; compare_methods tabulates the runs on the same protocols."""

import json
import math
import warnings

import pytest
import torch

from agreid_kit.features import FeatureSet
from agreid_kit.models import available_methods

# Small widths keep each run to a few seconds on 2 cores; the presets' structure is unchanged.
SMALL_VIT = dict(embed_dim=64, depth=2, num_heads=2, pretrained=None)
SMALL_CLIP = dict(vision_width=64, vision_layers=2, vision_head_width=32, text_width=64, text_layers=1, text_heads=2,
                  clip_embed_dim=32)
SMALL_OPTS = {"svpr": SMALL_CLIP}  # the methods that are not ViTs
# every engine method of the method table but SD-ReID stage 1 (trained below as part of its pipeline)
MODEL_OPTS = {m: SMALL_OPTS.get(m, SMALL_VIT) for m in available_methods("engine") if m != "sdreid"}
BUDGET = dict(epochs=1, max_iters_per_epoch=2, p=4, k=4, num_workers=0, eval_batch_size=100, val_fraction=0.0)


@pytest.fixture(scope="module")
def synth_split(tmp_path_factory):
    from agreid_kit.data.registry import load_dataset
    from agreid_kit.synth import ensure_synthag

    root = ensure_synthag("tiny", root=tmp_path_factory.mktemp("synthag") / "tiny")
    return load_dataset("synthag", root, "ALL")


@pytest.fixture(scope="module")
def svpr_engine_batches():
    """The attribute tensors of the batches SVPR's loss received in the engine run of ``trained``."""
    return []


@pytest.fixture(scope="module")
def trained(synth_split, tmp_path_factory, svpr_engine_batches):
    from agreid_kit.engine.config import make_config
    from agreid_kit.engine.train import train
    from agreid_kit.models.svpr import SVPR

    out = tmp_path_factory.mktemp("runs")
    runs = {}
    svpr_loss = SVPR.loss

    def recording_loss(self, out, batch):
        svpr_engine_batches.append(batch["attributes"].detach().cpu())
        return svpr_loss(self, out, batch)

    SVPR.loss = recording_loss
    try:
        for method, opts in MODEL_OPTS.items():
            cfg = make_config(method, str(out / method), "cpu", model=dict(opts), seed=0, **BUDGET)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # svpr's untrained-text warning is checked in test_methods.py
                runs[method] = train(cfg, split=synth_split)
    finally:
        SVPR.loss = svpr_loss
    return runs


@pytest.mark.parametrize("method", [m for m in MODEL_OPTS if m != "vit"])
def test_method_trains_and_yields_features_and_metrics(method, trained, synth_split):
    from agreid_kit.engine.run import load_run

    run_dir = trained[method]
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert log[-1]["iters"] == 2 and math.isfinite(log[-1]["loss_total"])
    fs = FeatureSet.load(run_dir / "features" / "test")
    assert len(fs) == len(synth_split.test_records)
    run = load_run(run_dir)
    assert fs.dim == run.model.feature_dim and torch.isfinite(fs.features).all()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    m = metrics["ALL"]["real"]
    assert 0.0 <= m["mAP"] <= 1.0 and 0.0 <= m["rank1"] <= 1.0 and m["n_query"] == len(synth_split.query)


def test_method_specific_training_signals(trained):
    log = lambda m: json.loads((trained[m] / "log.jsonl").read_text().splitlines()[-1])  # noqa: E731
    assert {"loss_view_ce", "loss_orth"} <= set(log("vdt"))
    assert "loss_vial" in log("vif")
    assert {"loss_local_ce", "loss_balance"} <= set(log("visa"))
    assert {"loss_view_ce", "loss_orth"} <= set(log("svpr"))


def test_svpr_run_is_labelled_untrained_text(trained):
    from agreid_kit.engine.run import load_run

    run = load_run(trained["svpr"])
    assert run.meta["model_config"]["text_encoder"].startswith("UNTRAINED")
    assert run.model.feature_meta["svpr_untrained_text"] is True
    fs = FeatureSet.load(trained["svpr"] / "features" / "test")
    assert fs.meta.get("svpr_untrained_text") is True, "the engine must copy model.feature_meta into FeatureSet meta"


def test_vif_seeded_batch_augment_is_deterministic(trained):
    from agreid_kit.engine.run import load_run

    model = load_run(trained["vif"]).model
    images = torch.randn(8, 3, *model.input_size)
    torch.manual_seed(4)
    a = model.batch_augment(images, torch.zeros(8, dtype=torch.long))
    torch.manual_seed(4)
    b = model.batch_augment(images, torch.zeros(8, dtype=torch.long))
    assert torch.equal(a, b) and not torch.equal(a, images)


def test_compare_methods_table(trained, synth_split, tmp_path):
    from agreid_kit.compare import COLUMNS, MethodEntry, compare_methods

    ablation = MethodEntry("vif without PLRM", "vif", dict(SMALL_VIT, augment="none"))
    stage1 = MethodEntry("sdreid stage 1", "sdreid", dict(SMALL_VIT, depth=3))
    methods = [*MODEL_OPTS, ablation, stage1, "sdreid-stage2"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table, fig = compare_methods(
            out=tmp_path, methods=methods, split=synth_split, budget=BUDGET, runs={m: trained[m] for m in MODEL_OPTS},
            throughput_batch_size=16, stage2_budget=dict(epochs=1), seeds=[0],
        )
    assert list(table.columns) == list(COLUMNS)
    labels = [*MODEL_OPTS, "vif without PLRM", "sdreid stage 1", "sdreid stage 2"]
    assert table["method"].tolist() == labels and (table["protocol"] == "ALL").all()
    assert table["mode"].tolist() == ["real"] * (len(labels) - 1) + ["real+gen"]
    assert (table["seeds"] == 1).all() and table["within_noise_of_best"].all()  # one seed: no spread, all within noise
    assert (tmp_path / "vif_without_PLRM" / "seed0" / "metrics.json").is_file()  # the missing runs were trained
    s1, s2 = table.iloc[-2], table.iloc[-1]
    assert s2["train_seconds"] > s1["train_seconds"] and s2["inference_images_per_s"] < s1["inference_images_per_s"]
    assert s2["feature_dim"] == 3 * s1["feature_dim"]  # real + gen:aerial + gen:ground
    for _, row in table.iloc[:-2].iterrows():
        m = json.loads((trained.get(row["method"],
                                    tmp_path / "vif_without_PLRM" / "seed0") / "metrics.json").read_text())
        assert row["mAP"] == pytest.approx(m["ALL"]["real"]["mAP"])
        assert row["trainable_params_M"] > 0 and row["inference_images_per_s"] > 0 and row["train_seconds"] > 0
    svpr = table[table["method"] == "svpr"].iloc[0]
    assert "UNTRAINED text encoder" in svpr["note"] and svpr["trainable_params_M"] < svpr["total_params_M"]
    vit = table[table["method"] == "vit"].iloc[0]
    # the only frozen tensor of the ViT baseline is BNNeck's zero bias (embed_dim = 64 values)
    assert (vit["total_params_M"] - vit["trainable_params_M"]) * 1e6 == pytest.approx(64)
    assert fig.data[0].type == "table" and len(fig.data[0].cells.values[0]) == len(labels)
    with pytest.raises(ValueError, match="needs the stage-1 method 'sdreid' earlier"):
        compare_methods(out=tmp_path, methods=["sdreid-stage2"], split=synth_split)
    with pytest.raises(ValueError, match="not among the methods"):
        compare_methods(out=tmp_path, methods=["vit"], runs={"svpr": trained["svpr"]}, split=synth_split)


def test_svpr_attribute_branch_on_synthag_records(synth_split):
    """SynthAG records carry 16 string attributes: the vocabulary turns them into labels and the
    attribute branch trains on real images (the engine passes them once its dataset maps values)."""
    from agreid_kit.data.torchdata import load_image
    from agreid_kit.data.transforms import TransformConfig, test_transform
    from agreid_kit.models import create_model
    from agreid_kit.models.svpr import svpr_attribute_options

    opts = svpr_attribute_options(synth_split.train)
    assert len(opts["attribute_names"]) == 16 and "upper_colour" in opts["attribute_names"]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = create_model("svpr", "cpu", num_classes=20, **SMALL_CLIP, **opts)
    recs = sorted(synth_split.train, key=lambda r: (r.pid, r.path))[:8]
    tf = test_transform(TransformConfig(model.input_size, model.mean, model.std))
    labels = [[opts["attribute_values"][a].index(str(r.attributes[n])) for a,
               n in enumerate(opts["attribute_names"])] for r in recs]
    batch = {
        "images": torch.stack([tf(load_image(r.path)) for r in recs]),
        "pids": torch.tensor([r.pid for r in recs]),
        "views": torch.tensor([r.view for r in recs]),
        "attributes": torch.tensor(labels),
    }
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(2):
        parts = model.loss(model(batch), batch)
        opt.zero_grad()
        parts["total"].backward()
        opt.step()
        losses.append(parts["attribute"].item())
    assert all(math.isfinite(v) and v > 0 for v in losses)
    assert losses[-1] < losses[0]  # the per-attribute classifiers learn the labels of these 8 images
    model.eval()
    with torch.no_grad():
        assert model.embed(batch)["features"].shape == (8, 4 * model.embed_dim)


def test_svpr_engine_run_trains_the_attribute_branch_on_synthag(trained, svpr_engine_batches, synth_split):
    """The engine maps SynthAG's string attributes through the vocabulary of the train records, the
    attribute loss trains, and load_run rebuilds the same attribute classifiers from the checkpoint."""
    from agreid_kit.engine.run import load_run
    from agreid_kit.models.svpr import svpr_attribute_options

    assert len(svpr_engine_batches) == 2  # max_iters_per_epoch=2
    for attrs in svpr_engine_batches:
        assert attrs.shape == (16, 16) and (attrs >= 0).all()  # P x K = 16 images, 16 attributes, all known
    assert len({tuple(row) for a in svpr_engine_batches for row in a.tolist()}) > 1  # real per-image labels
    log = [json.loads(line) for line in (trained["svpr"] / "log.jsonl").read_text().splitlines()]
    assert math.isfinite(log[-1]["loss_attribute"]) and log[-1]["loss_attribute"] > 0
    run = load_run(trained["svpr"])
    opts = svpr_attribute_options(synth_split.train)  # val_fraction=0: the engine saw every train record
    assert run.meta["model_config"]["attribute_names"] == opts["attribute_names"]
    model = run.model
    assert model.use_attributes and model.config.attribute_values == opts["attribute_values"]
    assert [c.out_features for c in model.moe.classifiers] == [len(v) for v in opts["attribute_values"]]
    fs = FeatureSet.load(trained["svpr"] / "features" / "test")
    assert fs.dim == model.feature_dim == 4 * model.embed_dim and fs.meta["svpr_attribute_branch"] is True


def test_compare_methods_over_seeds_reuses_only_runs_of_its_budget(synth_split, tmp_path):
    """Two seeds per method: mean +- std per protocol, within-noise marks, and a run trained with another
    budget is not taken for this one."""
    from agreid_kit.compare import MethodEntry, compare_methods
    from agreid_kit.run import Run

    entries = [MethodEntry(m, m, dict(SMALL_VIT)) for m in ("vit", "vdt")]
    result = compare_methods(out=tmp_path, methods=entries, split=synth_split, budget=BUDGET, seeds=[0, 1],
                             throughput=False)
    table = result.table
    assert table["method"].tolist() == ["vit", "vdt"] and (table["seeds"] == 2).all()
    maps = [Run(tmp_path / "vit" / f"seed{s}").read_metrics()["ALL"]["real"]["mAP"] for s in (0, 1)]
    vit = table.iloc[0]
    assert vit["mAP"] == pytest.approx(sum(maps) / 2)
    assert vit["mAP_std"] == pytest.approx(abs(maps[0] - maps[1]) / math.sqrt(2))
    best = table.loc[table["mAP"].idxmax()]
    assert best["within_noise_of_best"]
    assert result.results["vit"]["ALL"]["real"]["mAP"]["n"] == 2
    assert len(result.noise) == 1 and result.noise.iloc[0]["comparison"].endswith(f"vs {best['method']}")
    assert result.noise.iloc[0]["verdict"] in ("within noise", "a better", "b better")
    # the same settings again: every run is reused (no checkpoint rewritten)
    ckpt = tmp_path / "vit" / "seed0" / "checkpoints" / "last.pt"
    before = ckpt.stat().st_mtime_ns
    compare_methods(out=tmp_path, methods=entries[:1], split=synth_split, budget=BUDGET, seeds=[0], throughput=False)
    assert ckpt.stat().st_mtime_ns == before
    # another budget: that run is trained again, not reused
    shorter = {**BUDGET, "max_iters_per_epoch": 1}
    again = compare_methods(out=tmp_path, methods=entries[:1], split=synth_split, budget=shorter, seeds=[0],
                            throughput=False)
    assert Run(tmp_path / "vit" / "seed0").read_log()[-1]["iters"] == 1 and again.table.iloc[0]["iters"] == 1
