"""VDT, VIF, ViSA and SVPR: building blocks against hand-computed values, and the model contract."""

import dataclasses
import math
import warnings

import pytest
import torch

from agreid_kit.models import create_model, model_from_config

TINY = dict(embed_dim=32, depth=2, num_heads=2, img_size=(64, 32))
SVPR_TINY = dict(img_size=(64, 32), vision_width=32, vision_layers=2, vision_head_width=16, text_width=32,
                 text_layers=1, text_heads=2, clip_embed_dim=16)


def _batch(b=6, h=64, w=32, views=(0, 0, 1, 1, 1, 0), attributes=None):
    g = torch.Generator().manual_seed(0)
    out = {
        "images": torch.randn(b, 3, h, w, generator=g),
        "pids": torch.tensor([0, 0, 1, 1, 2, 2])[:b],
        "views": torch.tensor(views)[:b],
        "camids": torch.zeros(b, dtype=torch.long),
        "index": torch.arange(b),
        "attributes": torch.zeros(b, 0, dtype=torch.long) if attributes is None else attributes,
    }
    return out


# ---- building blocks ---------------------------------------------------------------------------
def test_inner_subtraction_by_hand():
    from agreid_kit.models.vdt import inner_subtraction

    tokens = torch.tensor([[[1.0, 2.0], [0.5, 1.0], [7.0, 8.0]]])
    out = inner_subtraction(tokens)
    torch.testing.assert_close(out, torch.tensor([[[0.5, 1.0], [0.5, 1.0], [7.0, 8.0]]]))


def test_vdt_subtracts_the_view_token_after_every_block():
    from agreid_kit.models.vdt import embed_with_view_token, run_view_decoupled

    model = create_model("vdt", "cpu", num_classes=3, **TINY).eval()
    images = _batch()["images"]
    view = model.view_token.expand(6, -1)
    with torch.no_grad():
        x = embed_with_view_token(model.backbone, images, view)
        assert x.shape == (6, 2 + 8, 32)  # CLS, view, 4 x 2 patches
        for blk in model.backbone.blocks:
            y = blk(x)
            x = torch.cat([(y[:, 0] - y[:, 1])[:, None], y[:, 1:]], dim=1)
        expected = model.backbone.norm(x)
        torch.testing.assert_close(run_view_decoupled(model.backbone, images, view), expected)
        emb = model.embed(_batch())
        torch.testing.assert_close(emb["prebn"], expected[:, 0] - expected[:, 1])


def test_gcn_normalisation_by_hand():
    from agreid_kit.models.visa import GCNLayer, normalized_cosine_adjacency

    nodes = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    a = normalized_cosine_adjacency(nodes)
    s = 1 / math.sqrt(2)
    # A = max(cos, 0) + I: rows [2,0,s,0], [0,2,s,0], [s,s,2,0], [0,0,0,2]  (cos(x0, x3) = -1 is clipped)
    raw = torch.tensor([[2, 0, s, 0], [0, 2, s, 0], [s, s, 2, 0], [0, 0, 0, 2]], dtype=torch.float32)
    d = raw.sum(1)
    torch.testing.assert_close(a, raw / torch.sqrt(d[:, None] * d[None, :]))
    assert a[0, 0].item() == pytest.approx(2 / (2 + s), abs=1e-6)
    assert a[0, 2].item() == pytest.approx(s / math.sqrt((2 + s) * (2 + 2 * s)), abs=1e-6)
    assert a[3, 3].item() == pytest.approx(1.0) and a[0, 3].item() == 0.0
    torch.testing.assert_close(a, a.T)
    gcn = GCNLayer(2)
    with torch.no_grad():
        gcn.weight.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    torch.testing.assert_close(gcn(nodes, a), torch.tanh(a @ (nodes * torch.tensor([1.0, 2.0]))))


def test_router_top_k_and_balance_by_hand():
    from agreid_kit.losses.methods import load_balance_loss
    from agreid_kit.models.visa import top_k_routing

    r = top_k_routing(torch.tensor([[1.0, 2.0, 3.0, 0.0], [0.0, 0.0, 5.0, 4.0]]), k=2)
    e = math.e
    torch.testing.assert_close(r.weights[0], torch.tensor([0.0, 1 / (1 + e), e / (1 + e), 0.0]))
    torch.testing.assert_close(r.weights[1], torch.tensor([0.0, 0.0, e / (1 + e), 1 / (1 + e)]))
    assert r.indices.tolist() == [[2, 1], [2, 3]]
    torch.testing.assert_close(r.probs.sum(1), torch.ones(2))
    mean = r.probs.mean(0)
    assert load_balance_loss(r.probs).item() == pytest.approx(4 * float((mean**2).sum()), abs=1e-6)
    assert top_k_routing(torch.zeros(1, 3), k=5).indices.shape == (1, 3)  # k capped at E


def test_top_similar_patches_and_graph_refine():
    from agreid_kit.models.visa import GraphRefine, top_similar_patches

    patches = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [-1.0, 0.0]]])
    chosen, idx = top_similar_patches(patches, torch.tensor([[1.0, 0.1]]), k=2)
    assert idx.tolist() == [[0, 2]] and torch.equal(chosen[0], patches[0, [0, 2]])
    assert top_similar_patches(patches, torch.tensor([[1.0, 0.0]]), k=64)[1].shape == (1, 4)  # capped
    refine = GraphRefine(2, topk_patches=2)
    q = torch.randn(1, 3, 2)
    assert refine(q, patches, torch.tensor([[1.0, 0.1]])).shape == (1, 3, 2)


def test_svpr_router_keep_count_and_refinement_stages():
    from agreid_kit.models.svpr import ProgressiveRefinement, attribute_text, router_keep_count

    assert router_keep_count(16, 0.7) == 12 and router_keep_count(12, 0.7) == 9 and router_keep_count(10, 0.7) == 7
    assert router_keep_count(1, 0.7) == 1
    ref = ProgressiveRefinement(16, 2, stages=3, momentum=0.1)
    q, kept = ref(torch.randn(2, 16), torch.randn(2, 128, 16))
    assert kept == [64, 32, 16] and q.shape == (2, 16)
    text = attribute_text(["hair_colour", "bag"], [["black", "grey"], ["backpack", "none"]], [1, -1])
    assert text == "A photo of a X X X X person with attributes: hair colour is grey."
    assert attribute_text(["hat"], [["-1", "1"]], [0]).endswith("attributes: hat is no.")


# ---- model contract ----------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["vdt", "vif", "visa"])
def test_vit_methods_contract(method):
    model = create_model(method, "cpu", num_classes=3, **TINY)
    assert model.input_size == (64, 32)
    b = _batch()
    out = model(b)
    assert out["logits"].shape == (6, 3) and out["feat"].shape == (6, 32)
    parts = model.loss(out, b)
    assert parts["total"].item() == pytest.approx(sum(v.item() for k, v in parts.items() if k != "total"), rel=1e-5)
    parts["total"].backward()
    model.eval()
    emb = model.embed(b)
    assert emb["features"].shape == (6, model.feature_dim)
    rebuilt = model_from_config(method, dataclasses.asdict(model.config))
    assert type(rebuilt) is type(model)


def test_vdt_and_visa_loss_parts_and_weights():
    vdt = create_model("vdt", "cpu", num_classes=3, **TINY)
    parts = vdt.loss(vdt(_batch()), _batch())
    assert set(parts) == {"ce", "triplet", "view_ce", "orth", "total"}
    assert parts["view_ce"].item() < 0.01  # lambda = 0.001 x CE(view) ~ 0.001 x ln 2
    visa = create_model("visa", "cpu", num_classes=3, **TINY)
    assert visa.config.num_experts == 4 and visa.feature_dim == 64
    parts = visa.loss(visa(_batch()), _batch())
    assert {"local_ce", "local_triplet", "balance", "orth"} <= set(parts)
    assert parts["balance"].item() >= visa.config.lambda_balance * 2 * 0.999  # each pool's balance term >= 1
    with pytest.raises(ValueError, match="view labels"):
        visa(_batch(views=(0, 0, 2, 1, 1, 0)))
    paper = create_model("visa", "paper", num_classes=3, embed_dim=32, depth=1, num_heads=2)
    assert paper.config.num_experts == 8 and paper.config.expert_top_k == 2 and paper.config.topk_patches == 64


def test_visa_view_token_is_chosen_by_view_label():
    model = create_model("visa", "cpu", num_classes=3, **TINY).eval()
    b = _batch()
    with torch.no_grad():
        a = model.embed(b)["features"]
        flipped = model.embed({**b, "views": 1 - b["views"]})["features"]
    assert not torch.allclose(a, flipped)


def test_vif_ablation_switches():
    from agreid_kit.models.vif import VIF_ABLATIONS

    torch.manual_seed(0)
    images = torch.randn(4, 3, 64, 32)
    for name, opts in VIF_ABLATIONS.items():
        model = create_model("vif", "cpu", num_classes=3, **TINY, **opts)
        out = model.batch_augment(images, torch.zeros(4, dtype=torch.long))
        if opts["augment"] == "none":
            assert torch.equal(out, images), name
        parts = model.loss(model(_batch()), _batch())
        assert ("vial" in parts) == opts["vial"], name
    full = create_model("vif", "cpu", num_classes=3, **TINY, plrm_p_img=1.0, plrm_p0=1.0)
    assert not torch.allclose(full.batch_augment(images, torch.zeros(4, dtype=torch.long)), images)
    paper = create_model("vif", "paper", num_classes=3, embed_dim=32, depth=1, num_heads=2)
    spec = paper.config.augment_spec().plrm
    assert (spec.p_img, spec.p0, spec.patch_size, spec.centre_weight, spec.theta_max, spec.alpha) == (0.5, 0.3, 16, 0.8, 45.0, 0.5)
    assert (paper.config.vial_lambda, paper.config.vial_beta, paper.config.vial_margin) == (0.5, 5.0, 0.5)
    with pytest.raises(ValueError, match="augment must be one of"):
        create_model("vif", "cpu", augment="cutmix")
    with pytest.raises(ValueError, match="p0 must lie in"):
        create_model("vif", "cpu", plrm_p0=2.0)


# ---- SVPR ----------------------------------------------------------------------------------------
ATTR_OPTS = dict(attribute_names=["build", "bag"], attribute_values=[["medium", "slim"], ["backpack", "none"]])


def _svpr(**kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = create_model("svpr", "cpu", num_classes=3, **SVPR_TINY, **kw)
    return model, caught


def test_svpr_untrained_text_is_labelled_and_text_is_frozen():
    model, caught = _svpr()
    assert any("UNTRAINED" in str(w.message) for w in caught)
    assert model.config.untrained_text and model.feature_meta["svpr_untrained_text"] is True
    assert model.feature_meta["svpr_text_encoder"].startswith("UNTRAINED")
    assert dataclasses.asdict(model.config)["text_encoder"].startswith("UNTRAINED")  # saved with every run
    assert not model.use_attributes and model.feature_dim == 2 * 32
    b = _batch()
    out = model(b)
    parts = model.loss(out, b)
    assert set(parts) == {"ce", "triplet", "view_ce", "orth", "total"}
    parts["total"].backward()
    assert model.view_ctx.grad is not None and model.view_ctx.grad.abs().sum() > 0  # prompts learn through the frozen text
    assert all(p.grad is None for p in model.text.frozen_parameters())
    assert all(not p.requires_grad for p in model.text.frozen_parameters())


def test_svpr_attribute_branch():
    attrs = torch.tensor([[0, 1], [0, 1], [1, -1], [1, 0], [-1, 0], [0, 0]])
    model, _ = _svpr(**ATTR_OPTS)
    assert model.use_attributes and model.feature_dim == 4 * 32
    b = _batch(attributes=attrs)
    out = model(b)
    assert [lg.shape for lg in out["attr_logits"]] == [(6, 2), (6, 2)]
    parts = model.loss(out, b)
    assert "attribute" in parts and parts["attribute"].item() > 0
    parts["total"].backward()
    assert model.attr_ctx.grad.abs().sum() > 0
    # training text carries the labels, test text none: the same image embeds differently in train mode
    assert model._attribute_texts(b)[0] == "A photo of a X X X X person with attributes: build is medium, bag is none."
    model.eval()
    assert model._attribute_texts(b)[0] == "A photo of a X X X X person with attributes: ."
    emb = model.embed(b)
    assert emb["features"].shape == (6, 128)
    with pytest.raises(ValueError, match="2 attribute_names but 1"):
        create_model("svpr", "cpu", attribute_names=["a", "b"], attribute_values=[["x"]])
    model.train()
    with pytest.raises(ValueError, match="3 attribute columns"):
        model(_batch(attributes=torch.zeros(6, 3, dtype=torch.long)))


def test_svpr_attribute_vocabulary_from_records():
    from agreid_kit.data.records import Record
    from agreid_kit.models.svpr import attribute_vocabulary, svpr_attribute_options

    recs = [
        Record("a.jpg", 0, 0, 0, attributes={"bag": "none", "build": "slim"}),
        Record("b.jpg", 1, 0, 1, attributes={"bag": "backpack"}),
        Record("c.jpg", 2, 0, 1),
        Record("d.jpg", 3, 0, 1, attributes={"bag": None}),  # None is unknown
    ]
    assert attribute_vocabulary(recs) == {"bag": ["backpack", "none"], "build": ["slim"]}
    # AG-ReID's +-1 values are both classes
    pm = [Record("e.jpg", 0, 0, 0, attributes={"hat": -1}), Record("f.jpg", 1, 0, 0, attributes={"hat": 1})]
    assert attribute_vocabulary(pm) == {"hat": ["-1", "1"]}
    assert svpr_attribute_options(recs, ["build"]) == {"attribute_names": ["build"], "attribute_values": [["slim"]]}
    with pytest.raises(ValueError, match="no record has a value for attribute"):
        attribute_vocabulary(recs, ["glasses"])


def test_svpr_loads_a_local_clip_file_and_keeps_the_label_after_reload(tmp_path):
    from agreid_kit.models.svpr import SVPRConfig, build_clip

    clip, status = build_clip(SVPRConfig(clip_arch="small", quick_gelu=False, **SVPR_TINY))
    assert status.startswith("UNTRAINED")
    path = tmp_path / "clip.pt"
    torch.save(clip.state_dict(), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no untrained-text warning with a weights file
        model = create_model("svpr", "cpu", num_classes=3, pretrained=str(path), **SVPR_TINY)
    assert not model.config.untrained_text and model.feature_meta["svpr_untrained_text"] is False
    assert model.config.text_encoder == f"pretrained CLIP text encoder: {path}"
    torch.testing.assert_close(model.text.token_embedding.weight, clip.token_embedding.weight)
    # a checkpoint reload passes pretrained=None; the saved config still says where the text came from
    cfg = dataclasses.asdict(model.config)
    cfg["pretrained"] = None
    reloaded = model_from_config("svpr", cfg)
    assert not reloaded.config.untrained_text and "restored from checkpoint" in reloaded.text_encoder_status
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_model("svpr", "cpu", pretrained=str(tmp_path / "missing.pt"), **SVPR_TINY)
    with pytest.raises(ValueError, match="needs a local CLIP weights file"):
        create_model("svpr", "paper", num_classes=3)
    bad = tmp_path / "bad.pt"
    torch.save({"x": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="do not fit"):
        create_model("svpr", "cpu", pretrained=str(bad), **SVPR_TINY)


def test_svpr_tokenizer_needs_no_download():
    import os

    from open_clip.tokenizer import SimpleTokenizer, default_bpe

    assert os.path.isfile(default_bpe())  # the BPE vocabulary ships inside the package
    ids = SimpleTokenizer()(["A photo of a X X X X person from aerial view."])
    assert ids.shape == (1, 77) and int((ids == SimpleTokenizer().encoder["x</w>"]).sum()) == 4
