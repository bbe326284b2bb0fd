"""Training engine: sampler, schedule, validation carve-out, checkpoints, exact resume, run layout, CLI."""

import json

import numpy as np
import pytest
import torch

from agreid_kit.data.records import Record

TINY_MODEL = dict(embed_dim=32, depth=2, num_heads=2, img_size=(32, 16), pretrained=None)


def make_cargo_tree(root, n_train=10, n_test=4, per_cam=1, size=(32, 16), seed=0):
    """A tiny CARGO-layout tree: each identity has its own colour pattern, seen by 2 aerial + 2 ground cams."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    cams = (1, 3, 6, 9)

    def person(pid):
        r = np.random.default_rng(1000 + pid)
        return r.integers(0, 255, size=(2, 3))  # upper / lower body colour

    def write(subset, pid, cam, idx):
        top, bottom = person(pid)
        h, w = size
        img = np.empty((h, w, 3), dtype=np.float32)
        img[: h // 2] = top
        img[h // 2 :] = bottom
        img += rng.normal(0, 20 if cam <= 5 else 10, size=img.shape)
        folder = root / subset / f"Cam{cam}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"Cam{cam}_day_{pid}_{idx}.jpg")

    idx = 0
    for pid in range(1, n_train + 1):
        for cam in cams:
            for _ in range(per_cam):
                write("train", pid, cam, idx)
                idx += 1
    for pid in range(100, 100 + n_test):
        write("query", pid, cams[0], idx)
        write("query", pid, cams[2], idx + 1)
        for cam in cams[1:]:
            write("gallery", pid, cam, idx + 2 + cam)
        write("gallery", pid, cams[0], idx + 20)
        idx += 30
    return root


@pytest.fixture(scope="module")
def cargo_root(tmp_path_factory):
    return make_cargo_tree(tmp_path_factory.mktemp("cargo") / "CARGO", n_train=12, per_cam=2)


def tiny_config(out, method="vit", **over):
    from agreid_kit.engine.config import make_config

    values = dict(
        epochs=3, p=4, k=2, num_workers=0, warmup_iters=2, lr=1e-3, model=dict(TINY_MODEL), val_fraction=0.2,
        val_every=1, ckpt_every=1, eval_batch_size=32, pad=2, keep_epoch_checkpoints=1, threads=1,
    )
    values.update(over)
    return make_config(method, str(out), preset="cpu", **values)


def load(root, protocol="ALL"):
    from agreid_kit.data.cargo import load_cargo

    return load_cargo(root, protocol)


# ---- pieces ---------------------------------------------------------------------------------
def test_pk_sampler_batches_and_determinism():
    from agreid_kit.data.sampler import PKBatchSampler

    pids = [i // 3 for i in range(30)]  # 10 ids x 3 images (K = 4 needs replacement)
    s = PKBatchSampler(pids, p=4, k=4, seed=7)
    batches = list(s)
    assert len(batches) == len(s) > 0
    for b in batches:
        assert len(b) == 16
        ids = [pids[i] for i in b]
        assert len(set(ids)) == 4 and all(ids.count(x) == 4 for x in set(ids))
    assert list(PKBatchSampler(pids, 4, 4, seed=7)) == batches
    s.set_epoch(1)
    assert list(s) != batches
    s0 = PKBatchSampler(pids, 4, 4, 7, num_replicas=2, rank=0)
    s1 = PKBatchSampler(pids, 4, 4, 7, num_replicas=2, rank=1)
    assert not set(map(tuple, s0)) & set(map(tuple, s1))
    with pytest.raises(ValueError, match="fewer than P=12"):
        PKBatchSampler(pids, p=12, k=2)
    with pytest.raises(ValueError, match="K >= 2"):
        PKBatchSampler(pids, p=4, k=1)


def test_warmup_cosine_schedule_values():
    from agreid_kit.engine.schedule import warmup_cosine_factor

    def f(it):
        return warmup_cosine_factor(it, total_iters=110, warmup_iters=10, warmup_factor=0.01, min_ratio=0.0002)

    assert f(0) == pytest.approx(0.01)
    assert f(5) == pytest.approx(0.01 + 0.99 * 0.5)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.0002 + (1 - 0.0002) * 0.5)
    assert f(110) == pytest.approx(0.0002)


def test_validation_carve_out_holds_out_train_ids_only():
    from agreid_kit.engine.data import carve_validation

    recs = [Record(f"/x/{p}_{c}_{i}.jpg", p, c, int(c > 4)) for p in range(20) for c in (1, 7) for i in range(2)]
    train, val, held = carve_validation(recs, 0.1, 2, seed=0)
    assert len(held) == 2 and {r.raw_pid for r in train}.isdisjoint(held)
    assert sorted({r.pid for r in train}) == list(range(18))
    assert {r.pid for r in val.query} == set(held) and len(val.query) == 4 and len(val.gallery) == 4
    assert carve_validation(recs, 0.1, 2, seed=0)[2] == held
    with pytest.raises(ValueError, match="held-out ids leave"):
        carve_validation(recs, 0.95, 2, seed=0)


def test_dataset_names_a_corrupt_image(tmp_path):
    from agreid_kit.data.errors import DatasetError
    from agreid_kit.data.torchdata import ReIDImageDataset

    bad = tmp_path / "Cam1_day_1_0.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    ds = ReIDImageDataset([Record(str(bad), 0, 0, 0)], size=(8, 4))
    with pytest.raises(DatasetError, match="Cam1_day_1_0.jpg is corrupt"):
        ds[0]


def test_dataset_maps_attribute_values_through_the_vocabulary(tmp_path):
    import warnings

    from agreid_kit.data.errors import DatasetError
    from agreid_kit.data.torchdata import ReIDImageDataset
    from agreid_kit.engine.config import make_config
    from agreid_kit.engine.train import build_model_for, model_attribute_vocabulary

    vocab = {"build": ["medium", "slim"], "bag": ["-1", "1"]}  # AG-ReID's -1 ("absent") is a real value
    recs = [
        Record("/x/a.jpg", 0, 0, 0, attributes={"build": "slim", "bag": -1}),
        Record("/x/b.jpg", 1, 0, 1, attributes={"build": "medium", "bag": None}),
        Record("/x/c.jpg", 1, 0, 1),
    ]
    ds = ReIDImageDataset(recs, size=(8, 4), attribute_values=vocab)
    assert ds.attribute_names == ["build", "bag"]
    assert [ds._attributes(r).tolist() for r in recs] == [[1, 0], [0, -1], [-1, -1]]
    assert ReIDImageDataset(recs, (8, 4), None, ["bag"], vocab)._attributes(recs[0]).tolist() == [0]
    assert ReIDImageDataset(recs, (8, 4), None)._attributes(recs[0]).shape == (0,)  # no attributes: A = 0
    odd = Record("/x/odd.jpg", 0, 0, 0, attributes={"build": "huge", "bag": 1})
    with pytest.raises(DatasetError, match=r"/x/odd.jpg: attribute 'build' has value 'huge', which is not in"):
        ReIDImageDataset([odd], (8, 4), attribute_values=vocab)._attributes(odd)
    with pytest.raises(ValueError, match=r"attribute\(s\) \['hat'\] have no vocabulary"):
        ReIDImageDataset(recs, (8, 4), None, ["hat"], vocab)

    # the engine gives SVPR the train records' vocabulary; records without attributes leave the branch off
    small = dict(vision_width=32, vision_layers=1, vision_head_width=16, text_width=32, text_layers=1, text_heads=2,
                 clip_embed_dim=16)
    cfg = make_config("svpr", str(tmp_path / "run"), "cpu", model=small)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the untrained-text warning is tested with the method
        with_attrs = build_model_for(cfg, 2, 2, recs)
        without = build_model_for(cfg, 2, 2, [Record("/x/d.jpg", 0, 0, 0)])
    assert model_attribute_vocabulary(with_attrs) == {"bag": ["-1"], "build": ["medium", "slim"]}  # values seen in recs
    assert with_attrs.use_attributes and not without.use_attributes
    assert model_attribute_vocabulary(without) == {}


# ---- end to end -----------------------------------------------------------------------------
def _metrics_rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]


def test_interrupted_and_resumed_run_equals_uninterrupted(cargo_root, tmp_path):
    from agreid_kit.engine.train import train

    split = load(cargo_root)
    full = train(tiny_config(tmp_path / "full", method="sdreid"), split=split)

    class Crash(Exception):
        pass

    def crash(epoch, it):
        if epoch == 2 and it == 1:  # dies mid-epoch 3, after the epoch-2 checkpoint
            raise Crash

    cfg = tiny_config(tmp_path / "resumed", method="sdreid")
    with pytest.raises(Crash):
        train(cfg, split=split, hook=crash)
    assert json.loads((tmp_path / "resumed" / "log.jsonl").read_text().splitlines()[-1])["epoch"] == 2
    train(cfg, split=split, resume=True)

    assert _metrics_rows(full) == _metrics_rows(tmp_path / "resumed")
    resumed = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert json.loads((full / "metrics.json").read_text()) == resumed
    a = torch.load(full / "checkpoints" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=False)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert torch.count_nonzero(a["view_centres"]) > 0


def test_cache_workers_and_decoding_give_identical_runs(cargo_root, tmp_path):
    """The decoded-image cache and the number of loader workers change speed only, never the numbers."""
    from agreid_kit.engine.train import train

    split = load(cargo_root)
    runs = {
        "cache": tiny_config(tmp_path / "cache", epochs=2, image_cache=str(tmp_path / "img-cache")),
        "decode": tiny_config(tmp_path / "decode", epochs=2, image_cache="off"),
        "decode_2_workers": tiny_config(tmp_path / "decode2", epochs=2, image_cache="off", num_workers=2),
    }
    dirs = {name: train(cfg, split=split) for name, cfg in runs.items()}
    assert list((tmp_path / "img-cache").glob("*.npy"))  # the cached run did use the cache
    ref = dirs["cache"]
    a = torch.load(ref / "checkpoints" / "last.pt", weights_only=False)["model"]
    for name, d in dirs.items():
        assert _metrics_rows(d) == _metrics_rows(ref), name
        assert json.loads((d / "metrics.json").read_text()) == json.loads((ref / "metrics.json").read_text()), name
        b = torch.load(d / "checkpoints" / "last.pt", weights_only=False)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_run_layout_features_and_evaluation(cargo_root, tmp_path):
    from agreid_kit.engine import evaluate_run, format_table, load_run
    from agreid_kit.engine.train import train
    from agreid_kit.features import FeatureSet

    split = load(cargo_root)
    run_dir = train(tiny_config(tmp_path / "run", method="sdreid", epochs=2), split=split)
    for name in ("config.json", "log.jsonl", "log.csv", "metrics.json", "checkpoints/last.pt",
                 "checkpoints/epoch_002.pt"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "checkpoints" / "epoch_001.pt").exists()  # keep_epoch_checkpoints=1
    rows = _metrics_rows(run_dir)
    assert {"loss_ce", "loss_triplet", "loss_view", "loss_total", "lr", "val_rank1", "val_mAP",
            "val_mINP"} <= set(rows[-1])
    train_fs = FeatureSet.load(run_dir / "features" / "train")
    assert len(train_fs) == len(split.train)
    for name in ("prebn", "id_cond", "view_token", "features_flip", "prebn_flip", "id_cond_flip", "view_token_flip"):
        assert name in train_fs.extras, name
    assert train_fs.extras["id_cond"].shape[1:] == (1, 32)
    assert train_fs.globals["view_centres"].shape == (2, 32)
    test_fs = FeatureSet.load(run_dir / "features" / "test")
    assert len(test_fs) == len(split.test_records) and "features_flip" not in test_fs.extras
    run = load_run(run_dir)
    torch.testing.assert_close(run.model.view_centres, train_fs.globals["view_centres"])
    res = evaluate_run(run_dir, ["ALL", "A<->G"], splits={"ALL": split, "A<->G": load(cargo_root, "A<->G")})
    m = res["A<->G"]["real"]
    assert 0 <= m["mINP"] <= m["mAP"] <= 1 and m["n_query"] == len(split.query)
    assert "A<->G" in json.loads((run_dir / "metrics.json").read_text())
    assert "R1" in format_table(res)


def test_bad_inputs_are_clear_errors(cargo_root, tmp_path):
    from agreid_kit.engine.train import train

    split = load(cargo_root)
    with pytest.raises(ValueError, match="fewer than P=40"):
        train(tiny_config(tmp_path / "a", p=40), split=split)
    with pytest.raises(ValueError, match="--pretrained PATH"):
        from agreid_kit.engine.config import make_config

        train(make_config("vit", str(tmp_path / "b"), preset="paper", num_workers=0), split=split)
    run = train(tiny_config(tmp_path / "c", epochs=1, extract_after=False), split=split)
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_config(tmp_path / "c", epochs=1), split=split)
    with pytest.raises(ValueError, match="other settings .*epochs: 1 -> 2"):
        train(tiny_config(tmp_path / "c", epochs=2), split=split, resume=True)
    # a checkpoint of another model
    import shutil

    shutil.copytree(run, tmp_path / "d")
    cfg = json.loads((tmp_path / "d" / "config.json").read_text())
    cfg["method"] = "sdreid"
    cfg["out"] = str(tmp_path / "d")
    (tmp_path / "d" / "config.json").write_text(json.dumps(cfg))
    from agreid_kit.run import Run

    with pytest.raises(ValueError, match="trained with method 'vit', not 'sdreid'"):
        train(Run(tmp_path / "d").config, split=split, resume=True)
    from agreid_kit.engine.checkpoint import load_model_state
    from agreid_kit.models import create_model

    state = torch.load(run / "checkpoints" / "last.pt", weights_only=False)["model"]
    with pytest.raises(ValueError, match="does not match this model"):
        load_model_state(create_model("sdreid", "cpu", num_classes=8, **TINY_MODEL), state,
                         run / "checkpoints" / "last.pt")
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        from agreid_kit.engine import load_run

        load_run(tmp_path / "nowhere")


def test_paper_preset_trains_from_a_local_weights_file(cargo_root, tmp_path, capsys):
    import timm
    from safetensors.torch import save_file

    from agreid_kit.engine.config import make_config
    from agreid_kit.engine.train import train

    src = timm.create_model("vit_base_patch16_224", pretrained=False, embed_dim=32, depth=2, num_heads=2)
    weights = tmp_path / "imagenet_fake.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(weights))
    cfg = make_config(
        "sdreid", str(tmp_path / "paper"), preset="paper", model=dict(TINY_MODEL, pretrained=str(weights)),
        epochs=1, p=4, k=2, num_workers=0, threads=1, max_iters_per_epoch=1, warmup_iters=1, extract_after=False,
        val_fraction=0,
    )
    assert cfg.optimizer == "sgd" and cfg.lr == 0.008 and cfg.grad_clip == 5.0
    run = train(cfg, split=load(cargo_root))
    out = capsys.readouterr().out
    assert f"loaded pretrained weights {weights}" in out and "missing keys (0)" in out
    from agreid_kit.engine import load_run

    model = load_run(run).model  # rebuilt from the checkpoint alone (weights file not re-read)
    assert model.config.pretrained is None
    assert model.backbone.pos_embed.shape == (1, 1 + 2 * 1, 32)
