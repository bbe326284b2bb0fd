"""VDT, VIF, ViSA and SVPR: building blocks against hand-computed values, and the model contract."""

import dataclasses
import math
import warnings

import pytest
import torch

from agreid_kit.models import available_methods, create_model, model_class, model_from_config
from agreid_kit.models.vit import ViTReIDConfig

TINY = dict(embed_dim=32, depth=2, num_heads=2, img_size=(64, 32), pretrained=None)
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
    q, kept = ref(torch.randn(2, 16), torch.randn(2, 128, 16), torch.randn(2, 16))
    assert kept == [64, 32, 16] and q.shape == (2, 16)
    text = attribute_text(["hair_colour", "bag"], [["black", "grey"], ["backpack", "none"]], [1, -1])
    assert text == "A photo of a X X X X person with attributes: hair colour is grey."
    assert attribute_text(["hat"], [["-1", "1"]], [0]).endswith("attributes: hat is no.")


# ---- model contract ----------------------------------------------------------------------------
# every ViT-backbone method of the method table (svpr, a CLIP model, has its own contract tests below)
VIT_METHODS = [m for m in available_methods("engine") if issubclass(model_class(m).config_class, ViTReIDConfig)]


@pytest.mark.parametrize("method", VIT_METHODS)
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
    got = (spec.p_img, spec.p0, spec.patch_size, spec.centre_weight, spec.theta_max, spec.alpha)
    assert got == (0.5, 0.3, 16, 0.8, 45.0, 0.5)
    assert (paper.config.vial_lambda, paper.config.vial_beta, paper.config.vial_margin) == (0.5, 5.0, 0.5)
    with pytest.raises(ValueError, match="augment must be one of"):
        create_model("vif", "cpu", augment="cutmix", pretrained=None)
    with pytest.raises(ValueError, match="p0 must lie in"):
        create_model("vif", "cpu", plrm_p0=2.0, pretrained=None)


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
    # prompts learn through the frozen text
    assert model.view_ctx.grad is not None and model.view_ctx.grad.abs().sum() > 0
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
    # the kit's default text names the attributes, no values, in training and at test alike
    names_text = "A photo of a X X X X person with attributes: build, bag."
    assert model.config.attribute_prompt == "names" and model._attribute_texts(b) == [names_text]
    paper, _ = _svpr(**ATTR_OPTS, attribute_prompt="labels")
    # the paper's training text carries the labels, its test text none
    assert paper._attribute_texts(b)[0] == "A photo of a X X X X person with attributes: build is medium, bag is none."
    paper.eval()
    assert paper._attribute_texts(b) == ["A photo of a X X X X person with attributes: ."]
    paper.train()
    model.eval()
    assert model._attribute_texts(b) == [names_text]
    emb = model.embed(b)
    assert emb["features"].shape == (6, 128)
    with pytest.raises(ValueError, match="2 attribute_names but 1"):
        create_model("svpr", "cpu", attribute_names=["a", "b"], attribute_values=[["x"]])
    with pytest.raises(ValueError, match="3 attribute columns"):
        paper(_batch(attributes=torch.zeros(6, 3, dtype=torch.long)))
    with pytest.raises(ValueError, match="attribute_prompt must be one of"):
        create_model("svpr", "cpu", attribute_prompt="values", **SVPR_TINY)


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


# ---- SVPR: the paper's equations on hand-computed tensors ---------------------------------------
class _StubStage(torch.nn.Module):
    """A refinement stage with known outputs: scores favour the listed patches, the refined query is
    ``2 * query + 1`` and the refined patches ``patches + 10``; it records what it was given."""

    def __init__(self, favoured):
        super().__init__()
        self.favoured, self.seen = favoured, []

    def scores(self, query, patches):
        self.seen.append((query.clone(), patches.clone()))
        s = torch.zeros(patches.shape[:2])
        s[:, self.favoured] = torch.arange(len(self.favoured), 0, -1, dtype=torch.float32)
        return s

    def forward(self, query, kept):
        return 2 * query + 1, kept + 10


def test_svpr_eq8_stage_output_is_momentum_towards_cls_by_hand():
    from agreid_kit.models.svpr import ProgressiveRefinement

    ref = ProgressiveRefinement(2, 1, stages=2, momentum=0.1)
    ref.stages = torch.nn.ModuleList([_StubStage([3, 1]), _StubStage([1])])
    query = torch.tensor([[1.0, -1.0]])
    cls = torch.tensor([[10.0, 20.0]])
    patches = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]])
    out, kept = ref(query, patches, cls)
    assert kept == [2, 1]
    # stage 1 keeps patches 3 and 1 (top-2 scores); refined query 2q + 1 = (3, -1)
    q1 = 0.1 * torch.tensor([[3.0, -1.0]]) + 0.9 * cls  # Eq. 8: (9.3, 17.9)
    torch.testing.assert_close(q1, torch.tensor([[9.3, 17.9]]))
    # the kept patches are updated with the same momentum, 0.1 * (p + 10) + 0.9 * p = p + 1, and are
    # all that the next stage sees
    q_seen, kept_seen = ref.stages[1].seen[0]
    torch.testing.assert_close(q_seen, q1)
    torch.testing.assert_close(kept_seen, torch.tensor([[[4.0, 4.0], [2.0, 2.0]]]))
    # stage 2 keeps the second of them (index 1 of its input) and re-anchors to cls again
    torch.testing.assert_close(out, 0.1 * (2 * q1 + 1) + 0.9 * cls)


def test_svpr_eq8_with_the_decoder_block():
    """A real stage: the top half of the patches by the block's attention scores, the decoder block
    (self-attention, cross-attention, FFN) on [query, kept], then 0.1 * refined + 0.9 * cls."""
    from agreid_kit.models.svpr import CVAttention, ProgressiveRefinement

    torch.manual_seed(0)
    ref = ProgressiveRefinement(8, 2, stages=1, momentum=0.1).eval()
    block = ref.stages[0]
    assert isinstance(block, CVAttention)
    assert isinstance(block.self_attn,
                      torch.nn.MultiheadAttention) and block.cross is not None and block.ffn is not None
    q, patches, cls = torch.randn(3, 8), torch.randn(3, 10, 8), torch.randn(3, 8)
    with torch.no_grad():
        out, kept = ref(q, patches, cls)
        idx = block.scores(q, patches).topk(5, dim=1).indices
        chosen = torch.stack([patches[b, idx[b]] for b in range(3)])
        refined, refined_patches = block(q, chosen)
    assert kept == [5] and refined_patches.shape == (3, 5, 8)
    torch.testing.assert_close(out, 0.1 * refined + 0.9 * cls)
    assert not torch.allclose(refined_patches, chosen)  # the block refines the kept patches too


def test_svpr_eq3_eq4_bidirectional_decoupling_by_hand():
    from agreid_kit.models.svpr import bidirectional_decouple

    class Echo(torch.nn.Module):  # CA(q, kv) = kv: the decoupling then subtracts the key token itself
        def forward(self, q, kv, need_weights=False):
            return kv.expand_as(q), None

    cls, view, cls_entry = torch.tensor([[5.0, 1.0]]), torch.tensor([[2.0, 2.0]]), torch.tensor([[0.5, -1.0]])
    c, v = bidirectional_decouple(cls, view, cls_entry, Echo(), Echo())
    torch.testing.assert_close(c, torch.tensor([[3.0, -1.0]]))  # Eq. 3: f_cls - f_view
    torch.testing.assert_close(v, torch.tensor([[1.5, 3.0]]))  # Eq. 4: f_view - f_cls^i (the entering CLS)


def test_svpr_eq1_and_eq5_wiring():
    from agreid_kit import VIEW_NAMES
    from agreid_kit.models.svpr import VIEW_TEMPLATE, attribute_names_text

    model, _ = _svpr(**ATTR_OPTS)
    model.eval()
    with torch.no_grad():
        # Eq. 1: P^ = P + CA(P, T_view, T_view) over both views' texts; phi(mean P^) is the one view token
        t_view = model.text([VIEW_TEMPLATE.format(view=VIEW_NAMES[v]) for v in range(2)], model.view_ctx)
        p = model.view_ctx[None]
        expected = model.view_mlp((p + model.view_prompt_ca(p, t_view[None])[0]).mean(1))[0]
        torch.testing.assert_close(model._view_token(), expected)
        # Eq. 5: f_attr^t = phi(T_attr + Mean(P_attr)); the text width (32) differs from the text output
        # (16) in this config, so the prompt mean goes through the frozen text projection
        t_attr = model.text([attribute_names_text(["build", "bag"])], model.attr_ctx)
        tok = model.attr_mlp(t_attr + model.attr_ctx.mean(0) @ model.text.text_projection)
        b = _batch()
        x, _ = model._visual_tokens(b["images"], model._view_token())
        f_attr = model.ca_attr(tok.expand(6, -1)[:, None], x[:, 2:])[0][:, 0]  # no residual, as printed
        torch.testing.assert_close(model._run(b)["attr_feat"], f_attr)


def test_svpr_eq11_attribute_loss_is_the_sum_over_attributes():
    import torch.nn.functional as F

    attrs = torch.tensor([[0, 1], [0, 1], [1, -1], [1, 0], [-1, 0], [0, 0]])
    model, _ = _svpr(**ATTR_OPTS)
    b = _batch(attributes=attrs)
    out = model(b)
    per_attribute = [
        F.cross_entropy(lg[attrs[:, m] >= 0], attrs[attrs[:, m] >= 0, m]) for m, lg in enumerate(out["attr_logits"])
    ]
    expected = model.config.w_attribute * (per_attribute[0] + per_attribute[1])
    assert model.loss(out, b)["attribute"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_svpr_features_do_not_depend_on_view_labels():
    """f_view is discarded after training: the view token attends over every view's text, so a batch's
    view labels only enter the loss (view CE), never the features."""
    model, _ = _svpr(**ATTR_OPTS)
    model.eval()
    b = _batch()
    with torch.no_grad():
        a = model.embed(b)["features"]
        swapped = model.embed({**b, "views": 1 - b["views"]})["features"]
        no_views = model.embed({k: v for k, v in b.items() if k != "views"})["features"]
    assert torch.equal(a, swapped) and torch.equal(a, no_views)
    model.train()
    out = model(b)
    assert model.loss(out, b)["view_ce"].item() != model.loss(out, {**b, "views": 1 - b["views"]})["view_ce"].item()
    with pytest.raises(ValueError, match="view labels"):
        model.loss(out, {**b, "views": torch.tensor([0, 0, 2, 1, 1, 0])})


@pytest.mark.parametrize("prompt", ["names", "labels"])
def test_svpr_attribute_prompt_and_the_features(prompt):
    """With the kit's label-free prompt nothing but the loss sees the attribute labels, in training as at
    test; the paper's prompt feeds them to the forward pass in training (the shortcut the kit avoids)."""
    model, _ = _svpr(**ATTR_OPTS, attribute_prompt=prompt)
    model.eval()  # no dropout, BN on running statistics: the same function in both passes
    a = _batch(attributes=torch.tensor([[0, 1], [0, 1], [1, 0], [1, 0], [0, 0], [0, 0]]))
    other = {**a, "attributes": 1 - a["attributes"]}
    with torch.no_grad():
        assert torch.equal(model.embed(a)["features"], model.embed(other)["features"])  # test: never
        model.training = True  # the training prompt, without BatchNorm's batch statistics
        fa, fo = model._run(a), model._run(other)
        model.training = False
    keys = ["cls_inv", "refined", "local", "attr_feat"]
    same = all(torch.equal(fa[k], fo[k]) for k in keys)
    assert same == (prompt == "names")
    assert torch.equal(fa["cls_inv"], fo["cls_inv"])  # the global branch never reads text attributes


# ---- per-method training presets and engine-derived options ---------------------------------------
def test_svpr_paper_preset_uses_its_own_optimiser_and_cpu_stays_shared(tmp_path):
    from agreid_kit.engine.config import TRAIN_PRESETS, make_config, method_recipe
    from agreid_kit.models import available_methods, method_train_presets

    cfg = make_config("svpr", str(tmp_path), "paper")
    assert (cfg.optimizer, cfg.lr, cfg.p * cfg.k, cfg.p) == ("adam", 5e-6, 128, 32)
    assert cfg.epochs == TRAIN_PRESETS["paper"]["epochs"]  # not in the seed: the shared value
    assert make_config("svpr", str(tmp_path), "paper", lr=1e-5).lr == 1e-5  # an explicit option wins
    vdt = make_config("vdt", str(tmp_path), "paper")
    assert (vdt.optimizer, vdt.lr) == ("sgd", 0.008)  # the VDT recipe stays with the methods that share it
    for method in available_methods():
        assert method_recipe(method, "cpu") == TRAIN_PRESETS["cpu"], method  # the comparison's one recipe
        assert "cpu" not in method_train_presets(method)
    assert make_config("sdreid-stage2", str(tmp_path), "cpu").optimizer == TRAIN_PRESETS["cpu"]["optimizer"]


def test_method_presets_are_checked_when_the_class_loads():
    from agreid_kit.models import model_class, register_method, unregister_method
    from agreid_kit.models.base import validate_presets
    from agreid_kit.models.svpr import SVPR, SVPRConfig

    cpu = {"cpu": {}}
    with pytest.raises(TypeError, match="shared recipe"):
        validate_presets("x", SVPRConfig, cpu, train_presets={"cpu": {"lr": 1.0}})
    with pytest.raises(TypeError, match=r"\['learning_rate'\] are not TrainConfig fields"):
        validate_presets("x", SVPRConfig, cpu, train_presets={"paper": {"learning_rate": 1.0}})
    with pytest.raises(TypeError, match="unknown preset 'gpu'"):
        validate_presets("x", SVPRConfig, cpu, train_presets={"gpu": {"lr": 1.0}})
    with pytest.raises(TypeError, match=r"preset 'cpu': \['widht'\] are not fields of SVPRConfig"):
        validate_presets("x", SVPRConfig, {"cpu": {"widht": 3}})
    # the method table checks a class the first time it loads it
    register_method("bad-svpr", "test_methods:_BadSVPR")
    try:
        with pytest.raises(TypeError, match="bad-svpr"):
            model_class("bad-svpr")
    finally:
        unregister_method("bad-svpr")
    assert SVPR.method == "svpr"


class _BadSVPR:
    from agreid_kit.models.svpr import SVPRConfig as config_class

    presets = {"cpu": {}}
    train_presets = {"cpu": {"lr": 1.0}}


def test_paper_preset_without_weights_names_the_file_each_method_needs(tmp_path):
    from agreid_kit.engine.config import make_config
    from agreid_kit.engine.train import build_model_for

    with pytest.raises(ValueError, match="--pretrained PATH to a local CLIP ViT-B/16 file") as e:
        build_model_for(make_config("svpr", str(tmp_path), "paper"), 3, 2)
    assert "not a timm ImageNet ViT" in str(e.value)
    with pytest.raises(ValueError, match="--pretrained PATH to a local timm ViT-B/16 file"):
        build_model_for(make_config("visa", str(tmp_path), "paper"), 3, 2)


def test_visa_router_top_k_follows_the_dataset_unless_set(tmp_path):
    from agreid_kit.engine.config import make_config
    from agreid_kit.engine.train import build_model_for
    from agreid_kit.models.visa import visa_expert_top_k

    assert visa_expert_top_k("cargo") == visa_expert_top_k("lagper") == 3
    assert visa_expert_top_k("agreid_v2") == visa_expert_top_k("synthag") == visa_expert_top_k("") == 2
    cfg = make_config("visa", str(tmp_path), "cpu", model=dict(TINY))
    for dataset, k in [("cargo", 3), ("lagper", 3), ("synthag", 2), ("cp2108", 2)]:
        model = build_model_for(cfg, 3, 2, dataset=dataset)
        assert model.config.expert_top_k == k == model.shared_pool.top_k, dataset
    explicit = make_config("visa", str(tmp_path), "cpu", model=dict(TINY, expert_top_k=1))
    assert build_model_for(explicit, 3, 2, dataset="cargo").config.expert_top_k == 1  # the user's value wins
    assert create_model("visa", "cpu", **TINY).config.expert_top_k == 2  # outside the engine: the default


def test_train_passes_the_split_dataset_name_to_the_model(tmp_path, monkeypatch):
    import agreid_kit.engine.train as engine_train
    from agreid_kit.data.records import DatasetSplit, Record
    from agreid_kit.engine.config import make_config

    seen = {}

    def capture(cfg, num_classes, num_views, train_records=(), dataset=""):
        seen["dataset"] = dataset
        raise KeyboardInterrupt  # stop before any data is read

    monkeypatch.setattr(engine_train, "build_model_for", capture)
    recs = [Record(f"/x/{i}.jpg", i % 3, i % 2, i % 2) for i in range(6)]
    split = DatasetSplit("cargo", "ALL", "/x", recs, recs[:1], recs[1:])
    cfg = make_config("visa", str(tmp_path / "run"), "cpu", model=dict(TINY), val_fraction=0.0, num_workers=0)
    with pytest.raises(KeyboardInterrupt):
        engine_train.train(cfg, split=split)
    assert seen["dataset"] == "cargo"
