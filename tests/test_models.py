"""Model contracts: create_model registry, ViT baseline, SD-ReID stage 1, local pretrained weights."""

import dataclasses

import pytest
import torch

from agreid_kit.models import available_methods, create_model

TINY = dict(embed_dim=32, depth=3, num_heads=2, img_size=(64, 32), pretrained=None)


def _batch(b=6, h=64, w=32, views=(0, 0, 1, 1, 1, 0)):
    g = torch.Generator().manual_seed(0)
    return {
        "images": torch.randn(b, 3, h, w, generator=g),
        "pids": torch.tensor([0, 0, 1, 1, 2, 2])[:b],
        "views": torch.tensor(views)[:b],
        "camids": torch.zeros(b, dtype=torch.long),
    }


def test_registry_lists_every_method_and_rejects_bad_names():
    assert {"vit", "sdreid", "vdt", "vif", "visa", "svpr"} <= set(available_methods())
    with pytest.raises(ValueError, match="unknown method 'resnet'"):
        create_model("resnet", "cpu")
    with pytest.raises(ValueError, match="no preset 'huge'"):
        create_model("vit", "huge")
    with pytest.raises(ValueError, match="unknown model option"):
        create_model("vit", "cpu", widht=3)


@pytest.mark.parametrize("method", ["vit", "sdreid"])
def test_shapes_follow_the_model_width(method):
    model = create_model(method, "cpu", num_classes=3, **TINY)
    assert model.input_size == (64, 32) and model.mean == (0.5, 0.5, 0.5)
    out = model(_batch())
    assert out["logits"].shape == (6, 3) and out["feat"].shape == (6, 32)
    parts = model.loss(out, _batch())
    assert torch.isfinite(parts["total"]) and parts["total"].requires_grad
    assert parts["total"].item() == pytest.approx(sum(v.item() for k, v in parts.items() if k != "total"), rel=1e-6)
    model.eval()
    emb = model.embed(_batch())
    assert emb["features"].shape == (6, 32) and emb["prebn"].shape == (6, 32)
    assert not torch.allclose(emb["features"], emb["prebn"])  # features are post-BNNeck
    assert dataclasses.asdict(model.config)["embed_dim"] == 32


def test_sdreid_tokens_conditions_and_view_head():
    model = create_model("sdreid", "cpu", num_classes=3, num_views=3, **TINY).eval()
    emb = model.embed(_batch())
    assert emb["id_cond"].shape == (6, 2, 32)  # raw CLS after blocks 1..L-1
    assert emb["view_token"].shape == (6, 32)
    # id_cond[-1] is the raw CLS entering the last block: recompute it by hand
    from agreid_kit.models.vit import run_blocks

    x, cls_after = run_blocks(model.backbone, _batch()["images"], upto=2)
    torch.testing.assert_close(emb["id_cond"][:, 1], x[:, 0])
    # the view token enters only the last block: blocks 1..L-1 ignore it
    with torch.no_grad():
        model.view_token.add_(1.0)
    emb2 = model.embed(_batch())
    torch.testing.assert_close(emb2["id_cond"], emb["id_cond"])
    assert not torch.allclose(emb2["view_token"], emb["view_token"])
    # the instance view feature has no final LayerNorm (its mean over channels is not ~0)
    normed = model.backbone.norm(emb["view_token"])
    assert not torch.allclose(normed, emb["view_token"], atol=1e-3)
    out = model.train()(_batch())
    assert out["view_logits"].shape == (6, 3)
    assert "view" in model.loss(out, _batch())


def test_sdreid_memory_bank_update_rule():
    model = create_model("sdreid", "cpu", num_classes=3, **TINY)
    assert torch.count_nonzero(model.view_centres) == 0 and "view_centres" in model.state_dict()
    tokens = torch.tensor([[1.0] * 32, [3.0] * 32, [10.0] * 32])
    views = torch.tensor([0, 0, 1])  # view 1 has a single image
    model.update_memory(tokens, views)
    torch.testing.assert_close(model.view_centres[0], torch.full((32,), 0.8 * 2.0))
    torch.testing.assert_close(model.view_centres[1], torch.full((32,), 0.8 * 10.0))
    model.update_memory(torch.tensor([[0.0] * 32]), torch.tensor([0]))
    torch.testing.assert_close(model.view_centres[0], torch.full((32,), 0.2 * 1.6))
    torch.testing.assert_close(model.view_centres[1], torch.full((32,), 8.0))  # untouched
    before = model.view_centres.clone()
    model.eval()(_batch())
    torch.testing.assert_close(model.view_centres, before)  # no update at eval
    model.train()(_batch())
    assert not torch.allclose(model.view_centres, before)
    assert not model.view_centres.requires_grad


def _fake_imagenet_file(tmp_path, embed_dim=32):
    import timm
    from safetensors.torch import save_file

    src = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=10, embed_dim=embed_dim,
                            depth=3, num_heads=2)
    path = tmp_path / "vit_tiny_fake.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    return src, path


def test_local_pretrained_weights_load_with_pos_embed_resize(tmp_path, capsys):
    src, path = _fake_imagenet_file(tmp_path)
    model = create_model("vit", "cpu", num_classes=3, **{**TINY, "stem": "patch", "pretrained": str(path)})
    printed = capsys.readouterr().out
    assert "missing keys (0)" in printed and "unexpected keys (0)" in printed
    torch.testing.assert_close(model.backbone.blocks[1].attn.qkv.weight, src.blocks[1].attn.qkv.weight)
    torch.testing.assert_close(model.backbone.cls_token, src.cls_token)
    assert model.backbone.pos_embed.shape == (1, 1 + 4 * 2, 32)  # 224 -> 64x32: resized, not dropped


def test_bad_pretrained_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*--pretrained"):
        create_model("vit", "cpu", num_classes=3,
                     **{**TINY, "stem": "patch", "pretrained": str(tmp_path / "nope.safetensors")})
    _, wrong_width = _fake_imagenet_file(tmp_path, embed_dim=64)
    with pytest.raises(ValueError, match="do not fit"):
        create_model("vit", "cpu", num_classes=3, **{**TINY, "stem": "patch", "pretrained": str(wrong_width)})
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not be read"):
        create_model("vit", "cpu", num_classes=3, **{**TINY, "stem": "patch", "pretrained": str(junk)})


# ---- kit-trained initialisations ---------------------------------------------------------------------------
def test_pretrain_exports_a_kit_init_that_the_cpu_presets_load(tmp_path, monkeypatch):
    import json

    import torch

    from agreid_kit import pretrained
    from agreid_kit.engine.pretrain import PretrainConfig, pretrain

    tiny = dict(embed_dim=32, depth=2, num_heads=2, img_size=(64, 32))
    cfg = PretrainConfig(name="test-init", data_root=str(tmp_path / "pre"), synth_preset="tiny",
                         run_dir=str(tmp_path / "run"),
                         out_dir=str(tmp_path / "weights"), threads=1, num_workers=0, model=tiny,
                         recipe=dict(epochs=1, p=4, k=2, val_fraction=0.1, val_every=1))
    weights = pretrain(cfg, progress=False)
    card = json.loads((tmp_path / "weights" / "test-init.json").read_text())
    assert card["architecture"]["embed_dim"] == 32 and card["architecture"]["stem"] == "conv"
    assert card["data"]["seed"] == 1 and card["data"]["content_hash"] and card["sha256"]
    assert card["recipe"]["train_config"]["model"]["pretrained"] is None  # pretrained from random weights
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path / "weights")
    model = create_model("vit", "cpu", num_classes=3, pretrained="kit:test-init", **tiny)
    from safetensors.torch import load_file

    saved = load_file(str(weights))
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, saved[k]), k
    with pytest.raises(ValueError, match=r"differs in \['embed_dim'\]"):
        create_model("vit", "cpu", num_classes=3, pretrained="kit:test-init",
                     **{**tiny, "embed_dim": 64, "num_heads": 2})
    with pytest.raises(FileNotFoundError, match="kit init 'nothere' is not installed"):
        create_model("vit", "cpu", num_classes=3, pretrained="kit:nothere", **tiny)
    with pytest.raises(ValueError, match="seed 0 is the benchmark"):
        PretrainConfig(data_seed=0)


def test_the_shipped_kit_init_matches_its_card():
    import json

    from agreid_kit.pretrained import DEFAULT_KIT_INIT, kit_init_files
    from agreid_kit.utils.io import sha256_file

    weights, card = kit_init_files(DEFAULT_KIT_INIT)
    meta = json.loads(card.read_text())
    assert sha256_file(weights) == meta["sha256"]
    assert meta["data"]["seed"] != 0  # never SynthAG-small's identities
    model = create_model("sdreid", "cpu", num_classes=5, num_views=2)  # the cpu preset loads it
    assert model.config.pretrained == f"kit:{DEFAULT_KIT_INIT}"


def _bank_worker(rank: int, world: int, port: int, tokens, views, out_path: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = create_model("sdreid", "cpu", num_classes=3, **TINY)
        half = tokens.shape[1] // world
        for step in range(3):  # three updates, each process holding its slice of the global batch
            sl = slice(rank * half, (rank + 1) * half)
            model.update_memory(tokens[step][sl], views[step][sl])
        if rank == 0:
            torch.save(model.view_centres, out_path)
    finally:
        dist.destroy_process_group()


def test_memory_bank_is_the_global_batch_update_across_two_processes(tmp_path):
    """DDP broadcasts rank 0's buffers, so a local bank update would count rank 0's images only: the per-view
    sums and counts are all-reduced first. Two gloo processes on halves of each batch give the bank of one
    process on the whole batch (rank 0 has no view-1 image in the first batch, rank 1 has no view-0 image)."""
    import socket

    import torch.multiprocessing as mp

    g = torch.Generator().manual_seed(1)
    tokens = torch.randn(3, 8, 32, generator=g)
    views = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1], [0, 1, 0, 1, 1, 0, 1, 1], [1, 1, 1, 0, 0, 0, 0, 0]])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "bank.pt"
    mp.spawn(_bank_worker, args=(2, port, tokens, views, str(out)), nprocs=2, join=True)
    single = create_model("sdreid", "cpu", num_classes=3, **TINY)
    for step in range(3):
        single.update_memory(tokens[step], views[step])
    torch.testing.assert_close(torch.load(out), single.view_centres)
    # and a rank-0-only update (the bug) would differ
    local = create_model("sdreid", "cpu", num_classes=3, **TINY)
    for step in range(3):
        local.update_memory(tokens[step][:4], views[step][:4])
    assert not torch.allclose(local.view_centres, single.view_centres)
