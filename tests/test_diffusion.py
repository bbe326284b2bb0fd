"""SD-ReID stage 2 on synthetic stage-1 FeatureSets (random tensors with identity and view structure)."""

from __future__ import annotations

import json

import pytest
import torch

from agreid_kit.data.records import DatasetSplit, Record
from agreid_kit.diffusion.config import Stage2ModelConfig, latent_shape
from agreid_kit.diffusion.model import SDReIDStage2
from agreid_kit.features import FeatureSet

TINY_UNET = dict(unet_channels=[8, 16, 16], unet_cross_attention=[False, True, True], unet_heads=1, unet_norm_groups=4)


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: one intra-op thread avoids sync overhead on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _records(n_ids: int, per_view: int, num_views: int, prefix: str, pid0: int = 0) -> list[Record]:
    out = []
    for p in range(n_ids):
        for v in range(num_views):
            for k in range(per_view):
                out.append(Record(path=f"{prefix}/{p}_{v}_{k}.png", pid=pid0 + p, camid=v * 2 + k % 2, view=v))
    return out


def _stage1_tensors(records: list[Record], dim: int, layers: int, num_views: int, g: torch.Generator, flip: bool):
    ids = torch.randn(max(r.pid for r in records) + 1, dim, generator=g)
    view_dirs = torch.randn(num_views, dim, generator=g)
    pid = torch.tensor([r.pid for r in records])
    view = torch.tensor([r.view for r in records])

    def one():
        noise = 0.5 * torch.randn(len(records), dim, generator=g)
        prebn = ids[pid] + view_dirs[view] + noise
        id_cond = torch.stack(
            [ids[pid] * (i + 1) / layers + 0.5 * torch.randn(len(records), dim, generator=g) for i in range(layers)], 1)
        token = view_dirs[view] + 0.3 * torch.randn(len(records), dim, generator=g)
        return {"prebn": prebn, "id_cond": id_cond, "view_token": token}

    t = one()
    if flip:
        t.update({k + "_flip": v for k, v in one().items()})
    return t, view_dirs


def make_stage1_run(root, dim: int = 32, layers: int = 3, num_views: int = 2, n_ids: int = 6, per_view: int = 3,
                    dataset: str = "synthag") -> "Path":  # noqa: F821
    """A fake stage-1 run dir: config.json + features/train.* (with flips) + features/test.*."""
    g = torch.Generator().manual_seed(1)
    run = root / "stage1"
    (run / "features").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"method": "sdreid", "data": f"{dataset}:nowhere", "protocol": "ALL"}))
    train_recs = _records(n_ids, per_view, num_views, "train")
    test_recs = _records(n_ids, per_view, num_views, "test", pid0=100)
    for split, recs, flip in (("train", train_recs, True), ("test", test_recs, False)):
        t, view_dirs = _stage1_tensors(recs, dim, layers, num_views, g, flip)
        fs = FeatureSet(
            features=t["prebn"].clone(), records=recs, split=split, fingerprint="fake", extras=t,
            globals={"view_centres": view_dirs},
            meta={"method": "sdreid", "dataset": dataset, "protocol": "ALL", "flip": flip},
        )
        fs.save(run / "features" / split)
    return run


def fake_split(stage1_run) -> DatasetSplit:
    fs = FeatureSet.load(stage1_run / "features" / "test")
    q = [r for r in fs.records if r.view == 0]
    gal = [r for r in fs.records if r.view != 0]
    return DatasetSplit("synthag", "A->G", str(stage1_run), train=[], query=q, gallery=gal, num_views=2)




@pytest.mark.parametrize("dim", [32, 64, 192])
def test_shapes_for_several_widths(dim):
    torch.manual_seed(0)
    cfg = Stage2ModelConfig(dim=dim, num_id_layers=3, **TINY_UNET)
    model = SDReIDStage2(cfg).eval()
    latent = latent_shape(dim)
    assert latent[0] == 4 and latent[0] * latent[1] * latent[2] == dim
    b = 3
    eps = model(torch.randn(b, *latent), torch.tensor([1, 50, 999]), torch.randn(b, 3, dim), torch.randn(b, dim),
                torch.randn(b, dim))
    assert eps.shape == (b, *latent)
    assert model.context(torch.randn(b, 3, dim), torch.randn(b, dim)).shape == (b, 4, dim)


def test_latent_shape_rule():
    assert latent_shape(768) == (4, 16, 12)
    assert latent_shape(192) == (4, 8, 6)
    with pytest.raises(ValueError, match="multiple of 4"):
        latent_shape(190)


@pytest.mark.parametrize("mechanism", ["conv", "pool", "proj"])
@pytest.mark.parametrize("location", ["down", "up", "both"])
def test_vrd_residual_shapes_match_every_unet_level(mechanism, location):
    """Every residual equals the UNet feature map it is added to (captured with forward hooks)."""
    torch.manual_seed(0)
    dim = 192  # latent (4, 8, 6): levels 8x6 -> 4x3 -> 2x2 (odd size rounds up)
    cfg = Stage2ModelConfig(dim=dim, num_id_layers=2, vrd_mechanism=mechanism, vrd_location=location, **TINY_UNET)
    model = SDReIDStage2(cfg).eval()
    # Make the heads non-zero so the residuals actually change the output.
    for p in list(
        model.vrd_down.parameters() if model.vrd_down else []) + list(
            model.vrd_up.parameters() if model.vrd_up else []):
        torch.nn.init.normal_(p, std=0.5)
    b = 2
    token = torch.randn(b, dim)
    res = model.residuals(token)
    seen = []
    hooks = [blk.register_forward_hook(lambda m, i, o: seen.append(o)) for blk in model.unet.down_blocks]
    x, t = torch.randn(b, 4, 8, 6), torch.tensor([10, 10])
    ctx = model.context(torch.randn(b, 2, dim), torch.randn(b, dim))
    out_with = model.denoise(x, t, ctx, res)
    for h in hooks:
        h.remove()
    skips = [model.unet.conv_in(x)]
    for out in seen:
        skips.extend(out[1])
    if "down_intrablock_additional_residuals" in res:
        down = res["down_intrablock_additional_residuals"]
        assert len(down) == 3
        # CrossAttn blocks add before their downsampler (res_samples[0]); a plain block after it.
        for r, out, blk in zip(down, seen, model.unet.down_blocks):
            target = out[1][0] if getattr(blk, "has_cross_attention", False) else out[0]
            assert r.shape == target.shape
    if "down_block_additional_residuals" in res:
        up = res["down_block_additional_residuals"]
        assert [r.shape for r in up] == [s.shape for s in skips]
        assert res["mid_block_additional_residual"].shape == seen[-1][0].shape
    out_without = model.denoise(x, t, ctx, {})
    assert not torch.allclose(out_with, out_without)


def test_condition_learner_attends_within_each_sample():
    """A sample's context must not depend on the other samples of its batch (the public code's bug)."""
    torch.manual_seed(0)
    model = SDReIDStage2(Stage2ModelConfig(dim=32, num_id_layers=3, learner_depth=2, **TINY_UNET)).eval()
    idc, c = torch.randn(5, 3, 32), torch.randn(5, 32)
    full = model.context(idc, c)
    alone = model.context(idc[2:3], c[2:3])
    assert torch.allclose(full[2:3], alone, atol=1e-5)


def test_null_context_used_in_training_dropout_and_sampling(monkeypatch):
    torch.manual_seed(0)
    model = SDReIDStage2(Stage2ModelConfig(dim=32, num_id_layers=3, **TINY_UNET)).eval()
    with torch.no_grad():
        model.learner.null_context.normal_()
    seen = []
    real_denoise = model.denoise

    def spy(latents, t, context, residuals):
        seen.append(context.detach().clone())
        return real_denoise(latents, t, context, residuals)

    monkeypatch.setattr(model, "denoise", spy)
    b = 4
    drop = torch.tensor([True, False, True, False])
    model(torch.randn(b, 4, 4, 2), torch.tensor([5] * b), torch.randn(b, 3, 32), torch.randn(b, 32),
          torch.randn(b, 32), drop=drop)
    null = model.learner.null_context[0]
    assert torch.equal(seen[0][0], null) and torch.equal(seen[0][2], null)
    assert not torch.allclose(seen[0][1], null)

    from agreid_kit.diffusion.sample import generate_latent_features

    seen.clear()
    generate_latent_features(model, torch.randn(3, 3, 32), [0, 1], tau=2, guidance=2.0, num_train_timesteps=100,
                             progress=False)
    assert len(seen) == 2  # one batched UNet call per step
    ctx = seen[0]
    assert ctx.shape[0] == 2 * 2 * 3  # both CFG branches x 2 views x 3 images
    assert all(torch.equal(ctx[i], null) for i in range(6))  # unconditional half = learned null context
    assert not any(torch.allclose(ctx[i], null) for i in range(6, 12))


@pytest.mark.parametrize("sampler,spacing", [("ddim", "leading"), ("ddpm", "trailing"), ("ddim", "linspace")])
def test_sampling_is_deterministic_and_chunk_independent(sampler, spacing):
    from agreid_kit.diffusion.sample import generate_latent_features

    torch.manual_seed(0)
    model = SDReIDStage2(Stage2ModelConfig(dim=32, num_id_layers=3, **TINY_UNET)).eval()
    idc = torch.randn(6, 3, 32)
    kw = dict(views=[0, 1], tau=3, guidance=2.0, sampler=sampler, timestep_spacing=spacing, num_train_timesteps=200,
              seed=7, progress=False)
    a = generate_latent_features(model, idc, batch_size=6, **kw)
    b = generate_latent_features(model, idc, batch_size=6, **kw)
    assert set(a) == {0, 1} and a[0].shape == (6, 32)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.allclose(a[0], a[1])  # different views give different features
    c = generate_latent_features(model, idc, **{**kw, "seed": 8}, batch_size=6)
    assert not torch.allclose(a[0], c[0])
    if sampler == "ddim":  # no per-step noise: a sample does not depend on its batch
        d = generate_latent_features(model, idc, batch_size=4, **kw)
        assert torch.allclose(a[0], d[0], atol=1e-5)


def test_conditions_are_standardised_with_training_statistics():
    """Context and VRD residuals read conditions relative to the stage-1 training statistics."""
    torch.manual_seed(0)
    model = SDReIDStage2(Stage2ModelConfig(dim=32, num_id_layers=3, **TINY_UNET)).eval()
    idc, tokens = torch.randn(40, 3, 32), torch.randn(40, 32)
    # a shared offset and a per-dimension scale, as in a small ViT's nearly constant tokens
    offset, scale = 5.0 * torch.randn(3, 32), torch.rand(32) * 0.1 + 0.01
    shifted_idc, shifted_tokens = idc * scale + offset, tokens * scale + offset[0]
    model.fit_condition_spaces(idc, tokens)
    twin = SDReIDStage2(Stage2ModelConfig(dim=32, num_id_layers=3, **TINY_UNET)).eval()
    twin.load_state_dict(model.state_dict())
    twin.fit_condition_spaces(shifted_idc, shifted_tokens)
    with torch.no_grad():
        assert torch.allclose(model.context(idc[:4], tokens[:4]),
                              twin.context(shifted_idc[:4], shifted_tokens[:4]), atol=1e-4)
        a, b = model.residuals(tokens[:4]), twin.residuals(shifted_tokens[:4])
        for ra, rb in zip(a["down_intrablock_additional_residuals"], b["down_intrablock_additional_residuals"]):
            assert torch.allclose(ra, rb, atol=1e-4)
    standardised = (idc - idc.mean(0)) / idc.std(0)
    assert torch.allclose((idc - model.id_cond_mean) / model.id_cond_std, standardised, atol=1e-5)
    # switched off: fitting leaves the identity in place
    plain = SDReIDStage2(Stage2ModelConfig(dim=32, num_id_layers=3, standardise_conditions=False, **TINY_UNET))
    plain.fit_condition_spaces(shifted_idc, shifted_tokens)
    assert torch.equal(plain.id_cond_std, torch.ones(3, 32)) and torch.equal(plain.view_mean, torch.zeros(32))
    with pytest.raises(ValueError, match="fit_condition_spaces"):
        model.fit_condition_spaces(torch.randn(4, 2, 32), torch.randn(4, 32))


@pytest.mark.parametrize("guidance", [2.0, 1.0])
def test_cached_cross_attention_matches_the_unet_and_is_removed_after(guidance, monkeypatch):
    """Sampling projects the context's K/V once per batch; the features equal the plain UNet's."""
    import contextlib

    from agreid_kit.diffusion import unet as unet_module
    from agreid_kit.diffusion.sample import generate_latent_features
    from agreid_kit.diffusion.unet import StepInvariantCrossAttention, cached_cross_attention

    torch.manual_seed(0)
    model = SDReIDStage2(Stage2ModelConfig(dim=32, num_id_layers=3, **TINY_UNET)).eval()
    with torch.no_grad():
        model.view_centres.normal_()
    before = {n: type(m.processor) for n, m in model.unet.named_modules() if n.endswith("attn2")}
    assert before
    idc = torch.randn(5, 3, 32)
    kw = dict(views=[0, 1], tau=3, guidance=guidance, num_train_timesteps=100, seed=3, progress=False)
    calls = []
    original_call = StepInvariantCrossAttention.__call__

    def counting_call(self, attn, hidden_states, **kwargs):
        calls.append(kwargs.get("encoder_hidden_states") is self.context)
        return original_call(self, attn, hidden_states, **kwargs)

    monkeypatch.setattr(StepInvariantCrossAttention, "__call__", counting_call)
    cached = generate_latent_features(model, idc, **kw)
    # every cross-attention call of every step took the cached path (2 layers per level x 2 levels + mid)
    assert calls and all(calls) and len(calls) == 3 * len(before)
    assert {n: type(m.processor) for n, m in model.unet.named_modules() if n.endswith("attn2")} == before
    monkeypatch.setattr(unet_module, "cached_cross_attention", lambda *a, **k: contextlib.nullcontext())
    plain = generate_latent_features(model, idc, **kw)
    for v in (0, 1):
        assert torch.allclose(cached[v], plain[v], atol=1e-5)
    # a different context (or self-attention) falls through to the layer's own processor
    ctx = torch.randn(4, 4, 32)
    other = torch.randn(4, 4, 32)
    x, t = torch.randn(4, 4, 4, 2), torch.tensor([3] * 4)
    with torch.no_grad():
        want = model.unet(x, t, encoder_hidden_states=other).sample
        with cached_cross_attention(model.unet, ctx):
            got = model.unet(x, t, encoder_hidden_states=other).sample
    assert torch.allclose(want, got, atol=1e-6)


def test_bad_inputs_give_clear_errors(tmp_path):
    from agreid_kit.diffusion.loading import load_stage1
    from agreid_kit.diffusion.sample import generate_latent_features, parse_views
    from agreid_kit.diffusion.unet import sd_unet_config_path

    model = SDReIDStage2(Stage2ModelConfig(dim=32, num_id_layers=3, **TINY_UNET)).eval()
    with pytest.raises(ValueError, match="tau"):
        generate_latent_features(model, torch.randn(2, 3, 32), [0], tau=0, progress=False)
    with pytest.raises(ValueError, match="wearable.*2 views|2 views"):
        parse_views(["wearable"], 2, "synthag")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_stage1(tmp_path / "nope")
    (tmp_path / "sd").mkdir()
    with pytest.raises(ValueError, match="unet/config.json"):
        sd_unet_config_path(tmp_path / "sd")
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="features/train.json|train"):
        load_stage1(empty)


def test_sd_folder_preset_trains_only_up_cross_attention_kv(tmp_path):
    """A local SD-style unet/ folder (tiny, random) loads offline; only up-block attn2 K/V train in the UNet."""
    from diffusers import UNet2DConditionModel

    small = UNet2DConditionModel(
        in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16), norm_num_groups=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=24, attention_head_dim=2,
    )
    small.save_pretrained(tmp_path / "sd" / "unet")
    cfg = Stage2ModelConfig(dim=32, num_id_layers=3, unet_path=str(tmp_path / "sd"))
    model = SDReIDStage2(cfg)
    names = [n for n, p in model.named_parameters() if p.requires_grad and n.startswith("unet.")]
    assert names and all(".attn2.to_k." in n or ".attn2.to_v." in n for n in names)
    assert all(n.startswith("unet.up_blocks.") for n in names)
    assert all(p.requires_grad for p in model.learner.parameters())
    ctx = model.context(torch.randn(2, 3, 32), torch.randn(2, 32))
    assert ctx.shape == (2, 4, 24)  # the learner maps D = 32 to the UNet's cross-attention width
    eps = model(torch.randn(2, 4, 4, 2), torch.tensor([3, 9]), torch.randn(2, 3, 32), torch.randn(2, 32),
                torch.randn(2, 32))
    assert eps.shape == (2, 4, 4, 2)
