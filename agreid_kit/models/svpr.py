"""SVPR-ReID (AAAI 2026) on an open_clip CLIP: trained image encoder, frozen text encoder.

Parts (facts from the seed, built in our own words):
- **View-decoupled feature extractor.** Text "A photo of a X X X X person from {view} view." with
  4 learnable context vectors in place of the X's goes through the frozen text encoder; an MLP
  turns the text feature of the image's view into a *view token* inserted before the last visual
  block. After the block, bidirectional decoupling with cross-attention:
  ``cls <- cls - CA(cls, view)`` and ``view <- view - CA(view, cls)``.
- **Attribute-scattered MoE** (only when the dataset has attributes). Text "A photo of a X X X X
  person with attributes: a1 is v1, ...." (training; at test the text has no attributes) -> MLP ->
  attribute token, which cross-attends to the patches (the *attribute feature*). A prompt longer
  than the text context (77 tokens) is cut by the tokenizer: SynthAG's 16-attribute sentence is
  about 89 tokens, so its last two or three attributes do not reach the text (their prompts and
  classifiers in the MoE still train). For each attribute
  a learnable prompt + cls + attribute feature goes through a shared MoE (MLP experts, linear softmax
  gate); per-attribute classifiers read the expert output; a router keeps the top 70 % of the
  attributes and mixes them (softmax over the kept scores) into one *local* feature.
- **Context-vision progressive refinement.** A learnable query (+ cls [+ attribute feature]) is
  refined over ``refine_stages`` stages; each keeps the top half of the remaining patches by the
  query's attention and updates ``q <- (1 - gamma) q + gamma * CA(q, kept)``.
- Retrieval feature: concat of the BNNeck features of [cls_inv, refined query, local, attribute
  feature] (the last two only with attributes).
- Loss: 0.25 ID CE (label smoothing) + 1.0 triplet (each averaged over the heads) + 1.0 view
  (view CE + |cos(cls_inv, view)|) + 0.1 attribute CE.

Weights: ``pretrained`` is a local CLIP file (open_clip state dict, ``.safetensors``, or an OpenAI
TorchScript ``.pt``) for ``clip_arch`` (an open_clip config name such as ``ViT-B-16``, read from the
package, never downloaded). With ``clip_arch="small"`` and no file a small CLIP is built from the
config fields: its text encoder is **random and frozen**, which the model states in
``model.text_encoder_status``, a warning, and ``model.feature_meta`` (copied into FeatureSet meta).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from agreid_kit import VIEW_NAMES
from agreid_kit.losses.methods import attribute_loss, orthogonality_loss
from agreid_kit.losses.reid import cross_entropy, triplet_soft_margin_batch_hard
from agreid_kit.models.base import BNNeckHead, ReIDModel, register_model

PRETRAINED_PREFIX = "pretrained CLIP text encoder:"
UNTRAINED_TEXT = "UNTRAINED: random small CLIP text encoder (no --pretrained CLIP file given); text prompts carry no language prior"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VIEW_TEMPLATE = "A photo of a X X X X person from {view} view."
ATTRIBUTE_TEMPLATE = "A photo of a X X X X person with attributes: {attributes}."


# ---- attributes -------------------------------------------------------------------------------
def attribute_vocabulary(records: Sequence[Any], names: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Attribute name -> sorted list of its values (as strings) over ``records`` (``Record.attributes``).

    The index of a value in its list is the class label the attribute classifiers use. ``names``
    fixes which attributes (and their order); by default every attribute name seen, sorted.
    """
    seen: dict[str, set[str]] = {}
    for r in records:
        for k, v in (r.attributes or {}).items():
            if v is None:  # only a missing value is unknown: AG-ReID's -1 means "absent", a real class
                continue
            seen.setdefault(k, set()).add(str(v))
    order = list(names) if names is not None else sorted(seen)
    missing = [n for n in order if n not in seen]
    if missing:
        raise ValueError(f"attribute_vocabulary: no record has a value for attribute(s) {missing}")
    return {n: sorted(seen[n]) for n in order}


def svpr_attribute_options(records: Sequence[Any], names: Sequence[str] | None = None) -> dict[str, Any]:
    """Model options (``attribute_names``, ``attribute_values``) for ``create_model("svpr", ...)``."""
    vocab = attribute_vocabulary(records, names)
    return {"attribute_names": list(vocab), "attribute_values": [list(v) for v in vocab.values()]}


def _value_word(values: Sequence[str], value: str) -> str:
    # Binary +-1 attributes (AG-ReID's QUT files) read better as no/yes in a sentence.
    if sorted(values) == ["-1", "1"]:
        return "yes" if value == "1" else "no"
    return value.replace("_", " ")


def attribute_text(names: Sequence[str], values: Sequence[Sequence[str]], labels: Sequence[int]) -> str:
    """The attribute prompt of one image; ``labels`` index ``values`` and -1 (unknown) is left out."""
    parts = [
        f"{n.replace('_', ' ')} is {_value_word(values[a], values[a][int(lab)])}"
        for a, (n, lab) in enumerate(zip(names, labels))
        if int(lab) >= 0
    ]
    return ATTRIBUTE_TEMPLATE.format(attributes=", ".join(parts))


def router_keep_count(num_attributes: int, keep_ratio: float) -> int:
    """How many attributes the router keeps: ceil(ratio * A), at least 1."""
    return max(1, math.ceil(keep_ratio * num_attributes - 1e-9))


# ---- CLIP -------------------------------------------------------------------------------------
def _read_clip_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        try:  # the OpenAI release is a TorchScript archive
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception as e:
            raise ValueError(f"CLIP weights {path} could not be read as a state dict or an OpenAI TorchScript file: {e}") from e
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    # OpenAI archives store a few scalars beside the tensors.
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor) and k not in ("input_resolution", "context_length", "vocab_size")}


def build_clip(config: "SVPRConfig") -> tuple[nn.Module, str]:
    """The open_clip CLIP of ``config`` and a line saying where its weights came from."""
    import open_clip
    from open_clip.factory import get_model_config
    from open_clip.model import resize_pos_embed

    if config.clip_arch == "small":
        vision = open_clip.CLIPVisionCfg(
            layers=config.vision_layers, width=config.vision_width, head_width=config.vision_head_width,
            patch_size=config.patch_size, image_size=tuple(config.img_size),
        )
        text = open_clip.CLIPTextCfg(
            context_length=config.context_length, width=config.text_width, heads=config.text_heads, layers=config.text_layers
        )
        model = open_clip.CLIP(config.clip_embed_dim, vision, text, quick_gelu=config.quick_gelu)
    else:
        cfg = get_model_config(config.clip_arch)
        if cfg is None:
            raise ValueError(f"svpr: clip_arch {config.clip_arch!r} is not an open_clip model config (e.g. ViT-B-16) nor 'small'")
        cfg = dict(cfg)
        cfg["vision_cfg"] = dict(cfg["vision_cfg"], image_size=tuple(config.img_size))
        model = open_clip.CLIP(cfg["embed_dim"], open_clip.CLIPVisionCfg(**cfg["vision_cfg"]),
                               open_clip.CLIPTextCfg(**cfg["text_cfg"]), quick_gelu=config.quick_gelu)
    if config.pretrained is None:
        if config.text_encoder.startswith(PRETRAINED_PREFIX):
            # Rebuilt from a checkpoint: the weights (pretrained text tower included) are loaded next.
            return model, f"{config.text_encoder} (restored from checkpoint)"
        if config.clip_arch != "small":
            raise ValueError(
                f"svpr: clip_arch {config.clip_arch!r} needs a local CLIP weights file: pass --pretrained PATH "
                "(e.g. OpenAI ViT-B-16.pt or open_clip_pytorch_model.bin of ViT-B-16/openai); "
                "or use clip_arch='small' (cpu preset) for an untrained demo model"
            )
        return model, UNTRAINED_TEXT
    path = Path(config.pretrained).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"svpr: CLIP weights file {path} does not exist (pass --pretrained PATH to a local file)")
    state = _read_clip_state(path)
    resize_pos_embed(state, model)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"svpr: CLIP weights {path} do not fit clip_arch {config.clip_arch!r}: {str(e)[:600]}") from e
    return model, f"{PRETRAINED_PREFIX} {path}"


class PromptTextEncoder(nn.Module):
    """The frozen CLIP text tower with ``n_ctx`` learnable context vectors replacing the X's."""

    def __init__(self, clip: nn.Module, n_ctx: int = 4) -> None:
        super().__init__()
        from open_clip.tokenizer import SimpleTokenizer

        self.tokenizer = SimpleTokenizer(context_length=clip.context_length)
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.register_buffer("attn_mask", clip.attn_mask, persistent=False)
        for p in self.frozen_parameters():
            p.requires_grad_(False)
        self.n_ctx = n_ctx
        self.placeholder = self.tokenizer.encoder["x</w>"]
        self._cache: dict[str, torch.Tensor] = {}

    def frozen_parameters(self) -> list[nn.Parameter]:
        mods = [self.token_embedding, self.transformer, self.ln_final]
        ps = [p for m in mods for p in m.parameters()]
        for p in (self.positional_embedding, self.text_projection):
            if isinstance(p, nn.Parameter):
                ps.append(p)
            elif isinstance(p, nn.Module):
                ps.extend(p.parameters())
        return ps

    @property
    def width(self) -> int:
        return int(self.token_embedding.weight.shape[1])

    @property
    def out_dim(self) -> int:
        tp = self.text_projection
        if tp is None:
            return self.width
        return int(tp.out_features if isinstance(tp, nn.Linear) else tp.shape[1])

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        rows = []
        for t in texts:
            if t not in self._cache:
                ids = self.tokenizer([t])[0]
                if int((ids == self.placeholder).sum()) < self.n_ctx:
                    raise ValueError(f"prompt {t!r} has fewer than {self.n_ctx} 'X' placeholders")
                self._cache[t] = ids
            rows.append(self._cache[t])
        return torch.stack(rows)

    def forward(self, texts: Sequence[str], ctx: torch.Tensor) -> torch.Tensor:
        """Text features (S, out_dim) of ``texts`` with ``ctx`` (n_ctx, width) at the X positions."""
        device = ctx.device
        ids = self.tokenize(texts).to(device)
        x = self.token_embedding(ids).to(ctx.dtype)
        # The first n_ctx placeholder positions of each prompt take the learnable vectors.
        is_x = ids == self.placeholder
        first = is_x.int().cumsum(1) <= self.n_ctx
        slots = is_x & first
        x = x.masked_scatter(slots[..., None], ctx[None].expand(ids.shape[0], -1, -1).contiguous())
        x = x + self.positional_embedding.to(x.dtype)
        x = self.transformer(x, attn_mask=self.attn_mask)
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=device), ids.argmax(dim=-1)]  # end-of-text token
        tp = self.text_projection
        if tp is not None:
            x = tp(x) if isinstance(tp, nn.Linear) else x @ tp
        return x


class CrossAttention(nn.Module):
    """Pre-norm cross-attention returning only the attended values (no residual)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, q: torch.Tensor, kv: torch.Tensor, need_weights: bool = False):
        k = self.norm_kv(kv)
        out, w = self.attn(self.norm_q(q), k, k, need_weights=need_weights, average_attn_weights=True)
        return out, w


def bidirectional_decouple(cls: torch.Tensor, view: torch.Tensor, ca_cls: CrossAttention, ca_view: CrossAttention):
    """``cls - CA(cls, view)`` and ``view - CA(view, cls)`` for (B, D) tokens."""
    c, v = cls[:, None], view[:, None]
    return cls - ca_cls(c, v)[0][:, 0], view - ca_view(v, c)[0][:, 0]


class AttributeMoE(nn.Module):
    """Shared MoE over per-attribute inputs, per-attribute classifiers and the top-ratio router."""

    def __init__(self, dim: int, num_classes_per_attribute: Sequence[int], num_experts: int, keep_ratio: float) -> None:
        super().__init__()
        a = len(num_classes_per_attribute)
        self.keep_ratio = keep_ratio
        self.prompts = nn.Parameter(torch.zeros(a, dim))
        nn.init.trunc_normal_(self.prompts, std=0.02)
        self.norm = nn.LayerNorm(dim)
        self.gate = nn.Linear(dim, num_experts)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)) for _ in range(num_experts)
        )
        self.classifiers = nn.ModuleList(nn.Linear(dim, n) for n in num_classes_per_attribute)
        self.router = nn.Linear(dim, 1)

    def forward(self, cls: torch.Tensor, attr_feat: torch.Tensor) -> dict[str, Any]:
        x = self.prompts[None] + (cls + attr_feat)[:, None]  # (B, A, D)
        h = self.norm(x)
        gate = self.gate(h).softmax(-1)  # (B, A, E)
        mixed = torch.stack([e(h) for e in self.experts], dim=-1)  # (B, A, D, E)
        out = x + (mixed * gate[:, :, None]).sum(-1)
        logits = [clf(out[:, a]) for a, clf in enumerate(self.classifiers)]
        scores = self.router(out)[..., 0]  # (B, A)
        keep = router_keep_count(out.shape[1], self.keep_ratio)
        top = scores.topk(keep, dim=1)
        weights = torch.zeros_like(scores).scatter(1, top.indices, top.values.softmax(-1))
        local = (weights[..., None] * out).sum(1)
        return {"attr_logits": logits, "local": local, "router_weights": weights}


class ProgressiveRefinement(nn.Module):
    """A query refined over stages; each keeps the top half of the remaining patches by attention."""

    def __init__(self, dim: int, heads: int, stages: int, momentum: float) -> None:
        super().__init__()
        self.momentum = momentum
        self.stages = nn.ModuleList(CrossAttention(dim, heads) for _ in range(stages))

    def forward(self, query: torch.Tensor, patches: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        q = query[:, None]
        remaining = patches
        kept_counts = []
        for ca in self.stages:
            _, w = ca(q, remaining, need_weights=True)  # (B, 1, M)
            keep = max(1, remaining.shape[1] // 2)
            idx = w[:, 0].topk(keep, dim=1).indices
            remaining = torch.gather(remaining, 1, idx[..., None].expand(-1, -1, remaining.shape[-1]))
            kept_counts.append(keep)
            q = (1.0 - self.momentum) * q + self.momentum * ca(q, remaining)[0]
        return q[:, 0], kept_counts


# ---- model ------------------------------------------------------------------------------------
@dataclass
class SVPRConfig:
    num_classes: int = 1
    num_views: int = 2
    img_size: tuple[int, int] = (256, 128)
    clip_arch: str = "ViT-B-16"  # an open_clip config name, or "small" (built from the fields below)
    pretrained: str | None = None  # local CLIP weights file
    # What the (frozen) text encoder is: filled in at construction ("pretrained: PATH" or the
    # UNTRAINED label) and kept in saved configs, so a model reloaded from a checkpoint (which
    # passes pretrained=None) still says whether its text encoder was ever trained.
    text_encoder: str = ""
    quick_gelu: bool = True  # OpenAI CLIP weights use QuickGELU
    # the small CLIP (clip_arch="small")
    patch_size: int = 16
    vision_width: int = 192
    vision_layers: int = 6
    vision_head_width: int = 64
    text_width: int = 128
    text_layers: int = 2
    text_heads: int = 2
    clip_embed_dim: int = 128
    context_length: int = 77
    # method
    n_ctx: int = 4
    attribute_names: list[str] = field(default_factory=list)
    attribute_values: list[list[str]] = field(default_factory=list)
    moe_experts: int = 4
    attribute_keep_ratio: float = 0.7
    refine_stages: int = 3
    refine_momentum: float = 0.1
    label_smoothing: float = 0.1
    w_id: float = 0.25
    w_triplet: float = 1.0
    w_view: float = 1.0
    w_attribute: float = 0.1  # the authors' code uses 0.05

    def __post_init__(self) -> None:
        if len(self.attribute_names) != len(self.attribute_values):
            raise ValueError(
                f"svpr: {len(self.attribute_names)} attribute_names but {len(self.attribute_values)} attribute_values lists"
            )
        for n, vals in zip(self.attribute_names, self.attribute_values):
            if not vals:
                raise ValueError(f"svpr: attribute {n!r} has no values in attribute_values")
        if not 0.0 < self.attribute_keep_ratio <= 1.0:
            raise ValueError(f"svpr: attribute_keep_ratio must be in (0, 1], got {self.attribute_keep_ratio}")

    @property
    def untrained_text(self) -> bool:
        if self.pretrained is not None:
            return False
        return not self.text_encoder.startswith(PRETRAINED_PREFIX)


SVPR_PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(clip_arch="ViT-B-16", img_size=(256, 128), quick_gelu=True),
    "cpu": dict(clip_arch="small", img_size=(128, 64), quick_gelu=False, vision_width=192, vision_layers=6,
                vision_head_width=64, text_width=128, text_layers=2, text_heads=2, clip_embed_dim=128),
}


@register_model("svpr", config_class=SVPRConfig, presets=SVPR_PRESETS)
class SVPR(ReIDModel):
    def __init__(self, config: SVPRConfig) -> None:
        super().__init__()
        self.config = config
        clip, self.text_encoder_status = build_clip(config)
        if config.pretrained is not None or not config.text_encoder:
            config.text_encoder = self.text_encoder_status
        if config.untrained_text:
            warnings.warn(f"svpr: {self.text_encoder_status}", stacklevel=2)
        self._mean, self._std = CLIP_MEAN, CLIP_STD
        self.visual = clip.visual
        self.visual.proj = None  # ReID features are read at the visual width
        self.text = PromptTextEncoder(clip, config.n_ctx)
        d = int(self.visual.class_embedding.shape[0])
        # The method's attention modules use the visual tower's head count (width / head_width).
        heads = int(getattr(self.visual.transformer.resblocks[0].attn, "num_heads", max(1, d // 64)))
        self.embed_dim = d
        tw, to = self.text.width, self.text.out_dim
        self.view_ctx = nn.Parameter(torch.randn(config.n_ctx, tw) * 0.02)
        self.view_mlp = nn.Sequential(nn.Linear(to, d), nn.GELU(), nn.Linear(d, d))
        self.ca_cls, self.ca_view = CrossAttention(d, heads), CrossAttention(d, heads)
        self.view_head = nn.Linear(d, config.num_views)
        self.use_attributes = bool(config.attribute_names)
        names = ["global", "refined"]
        if self.use_attributes:
            self.attr_ctx = nn.Parameter(torch.randn(config.n_ctx, tw) * 0.02)
            self.attr_mlp = nn.Sequential(nn.Linear(to, d), nn.GELU(), nn.Linear(d, d))
            self.ca_attr = CrossAttention(d, heads)
            self.moe = AttributeMoE(d, [len(v) for v in config.attribute_values], config.moe_experts, config.attribute_keep_ratio)
            names += ["local", "attribute"]
        self.query = nn.Parameter(torch.zeros(d))
        nn.init.trunc_normal_(self.query, std=0.02)
        self.refine = ProgressiveRefinement(d, heads, config.refine_stages, config.refine_momentum)
        self.heads = nn.ModuleDict({n: BNNeckHead(d, config.num_classes) for n in names})

    # ---- contract extras ------------------------------------------------------------------
    @property
    def feature_dim(self) -> int:
        return len(self.heads) * self.embed_dim

    @property
    def feature_meta(self) -> dict[str, Any]:
        """Metadata the engine copies into FeatureSet meta (labels the untrained-text configuration)."""
        return {
            "svpr_text_encoder": self.text_encoder_status,
            "svpr_untrained_text": self.config.untrained_text,
            "svpr_attribute_branch": self.use_attributes,
        }

    def train(self, mode: bool = True) -> "SVPR":
        super().train(mode)
        # The text encoder is frozen: keep its dropout/normalisation in eval behaviour.
        self.text.transformer.eval()
        return self

    # ---- parts ----------------------------------------------------------------------------
    def _view_tokens(self, views: torch.Tensor) -> torch.Tensor:
        if views.numel() and (int(views.min()) < 0 or int(views.max()) >= self.config.num_views):
            raise ValueError(f"svpr: view labels {sorted(set(views.tolist()))} outside 0..{self.config.num_views - 1}")
        texts = [VIEW_TEMPLATE.format(view=VIEW_NAMES[v]) for v in range(self.config.num_views)]
        return self.view_mlp(self.text(texts, self.view_ctx).to(self.view_ctx.dtype))[views]

    def _visual_tokens(self, images: torch.Tensor, view_tokens: torch.Tensor) -> torch.Tensor:
        vis = self.visual
        x = vis._embeds(images)  # [cls, patches] + pos, ln_pre
        blocks = list(vis.transformer.resblocks)
        batch_first = getattr(vis.transformer, "batch_first", True)
        x = x if batch_first else x.transpose(0, 1)
        for blk in blocks[:-1]:
            x = blk(x)
        x = x if batch_first else x.transpose(0, 1)
        x = torch.cat([x[:, :1], view_tokens[:, None].to(x.dtype), x[:, 1:]], dim=1)  # before the last block
        x = x if batch_first else x.transpose(0, 1)
        x = blocks[-1](x)
        x = x if batch_first else x.transpose(0, 1)
        return vis.ln_post(x)

    def _attribute_texts(self, batch: dict[str, torch.Tensor]) -> list[str]:
        c = self.config
        b = batch["images"].shape[0]
        attrs = batch.get("attributes")
        if not self.training or attrs is None or attrs.numel() == 0:
            return [attribute_text(c.attribute_names, c.attribute_values, [-1] * len(c.attribute_names))] * b
        if attrs.shape[1] != len(c.attribute_names):
            raise ValueError(
                f"svpr: the batch has {attrs.shape[1]} attribute columns but the model was built for "
                f"{len(c.attribute_names)} ({c.attribute_names})"
            )
        return [attribute_text(c.attribute_names, c.attribute_values, row.tolist()) for row in attrs.cpu()]

    def _run(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        images = batch["images"]
        views = batch["views"].to(images.device)
        x = self._visual_tokens(images, self._view_tokens(views))
        cls, view, patches = x[:, 0], x[:, 1], x[:, 2:]
        cls_inv, view_spe = bidirectional_decouple(cls, view, self.ca_cls, self.ca_view)
        out: dict[str, Any] = {"cls_inv": cls_inv, "view_spe": view_spe}
        query = self.query[None] + cls_inv
        if self.use_attributes:
            t = self.text(self._attribute_texts(batch), self.attr_ctx).to(cls.dtype)
            attr_tok = self.attr_mlp(t)[:, None]
            attr_feat = (attr_tok + self.ca_attr(attr_tok, patches)[0])[:, 0]
            moe = self.moe(cls_inv, attr_feat)
            out.update(attr_feat=attr_feat, local=moe["local"], attr_logits=moe["attr_logits"])
            query = query + attr_feat
        out["refined"], _ = self.refine(query, patches)
        return out

    def _branch_features(self, r: dict[str, Any]) -> dict[str, torch.Tensor]:
        feats = {"global": r["cls_inv"], "refined": r["refined"]}
        if self.use_attributes:
            feats.update(local=r["local"], attribute=r["attr_feat"])
        return feats

    # ---- contract -------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        r = self._run(batch)
        out: dict[str, Any] = {}
        for name, feat in self._branch_features(r).items():
            bn, logits = self.heads[name](feat)
            out[f"{name}_logits"], out[f"{name}_feat"] = logits, feat
        out["logits"], out["feat"] = out["global_logits"], out["global_feat"]
        out["view_feat"], out["view_logits"] = r["view_spe"], self.view_head(r["view_spe"])
        if self.use_attributes:
            out["attr_logits"] = r["attr_logits"]
        return out

    def loss(self, out: dict[str, Any], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        c = self.config
        device = out["logits"].device
        pids, views = batch["pids"].to(device), batch["views"].to(device)
        names = list(self.heads)
        ce = torch.stack([cross_entropy(out[f"{n}_logits"], pids, c.label_smoothing) for n in names]).mean()
        tri = torch.stack([triplet_soft_margin_batch_hard(out[f"{n}_feat"], pids) for n in names]).mean()
        parts = {
            "ce": c.w_id * ce,
            "triplet": c.w_triplet * tri,
            "view_ce": c.w_view * cross_entropy(out["view_logits"], views),
            "orth": c.w_view * orthogonality_loss(out["feat"], out["view_feat"]),
        }
        if self.use_attributes:
            attrs = batch.get("attributes")
            if attrs is not None and attrs.numel():
                parts["attribute"] = c.w_attribute * attribute_loss(out["attr_logits"], attrs.to(device))
        parts["total"] = sum(parts.values())
        return parts

    def embed(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        r = self._run(batch)
        feats = self._branch_features(r)
        bn = [self.heads[n].bn(f) for n, f in feats.items()]
        return {"features": torch.cat(bn, dim=1), "prebn": r["cls_inv"], "view_token": r["view_spe"]}
