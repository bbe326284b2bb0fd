"""SVPR-ReID (AAAI 2026) on an open_clip CLIP: trained image encoder, frozen text encoder.

Parts (facts from the seed, built in our own words; "Eq. n" are the paper's equations):
- **View-decoupled feature extractor.** The view descriptions "A photo of a X X X X person from
  {view} view." of *every* view (aerial, ground[, wearable]) with the same 4 learnable view prompts
  ``P_view`` in place of the X's go through the frozen text encoder: ``T_view`` (V, text dim).
  Eq. 1, a residual cross-attention of the prompts to the descriptions:
  ``P^ = P_view + CA(P_view, T_view, T_view)``; an MLP phi turns the mean of the 4 vectors of P^
  into the *view token* (our reading of "inverse P^ into the visual space to form a view-aware
  token"), inserted before the last visual block (Eq. 2). After the block, view-aware bidirectional
  decoupling: ``f_cls <- f_cls - CA(f_cls, f_view)`` (Eq. 3) and ``f_view <- f_view - CA(f_view,
  f_cls^i)`` (Eq. 4: f_cls^i is the CLS token *entering* the remaining block, as the paper writes).
  The view token depends on no view label (it attends over all views' descriptions), so the view
  CE on f_view asks the image to reveal its view, f_view is discarded after training as the paper
  says, and features at test are the same whatever view labels the batch carries.
- **Attribute-scattered MoE** (only when the dataset has attributes). Text "A photo of a X X X X
  person with attributes: ..." (see *attribute prompt* below) with 4 learnable prompts ``P_attr``
  -> ``T_attr``; Eq. 5 ``f_attr^t = phi(T_attr + Mean(P_attr))`` (when the text width differs from
  the text output width, small configs only, Mean(P_attr) goes through the frozen text projection);
  ``f_attr = CA(f_attr^t, F_patch, F_patch)`` (no residual, as printed: the attribute feature is a
  mixture of patch values that the text chooses). A prompt longer than the text context (77
  tokens) is cut by the tokenizer. For each attribute m, ``MoE(f_cls + f_attr + P_attr,m^vis)``
  (Eq. 6: 4 MLP experts, linear softmax gate); per-attribute classifiers read the expert outputs; a
  router keeps the top 70 % of the attributes and mixes them (softmax over the kept scores) into
  ``f_asmoe`` (Eq. 7), the *local* feature.
- **Context-vision progressive refinement** (Eq. 8). Initial query = learnable query + f_cls +
  f_asmoe. Each of ``refine_stages`` stages keeps the top half of the remaining patches by the
  query's attention score (128 -> 64 -> 32 -> 16 at 256x128), runs a decoder *CVAttention* block
  (self-attention over [query, kept patches], cross-attention to the kept patches, FFN) for the
  refined query and patches, then re-anchors with momentum gamma = ``refine_momentum`` (0.1):
  ``f_cvpr <- gamma * refined + (1 - gamma) * f_cls`` and, for the kept patches,
  ``F_pp <- gamma * refined_pp + (1 - gamma) * F_pp``; the updated patches feed the next stage.
- **Attribute prompt** (``attribute_prompt``; the kit's one departure, named and switchable).
  The paper's training text lists the image's annotated attributes ("Pose is working, Upper Color
  is White, ...") and its test text lists none. Attributes are annotated per identity (CP2108,
  AG-ReID and SynthAG alike), so the training sentence is close to an identity code that the test
  sentence lacks: any path from it to the retrieval feature lets the ID and triplet losses read the
  identity off the text, and at test that path carries nothing (on SynthAG: 100 % validation mAP
  with the training prompt, 8 % with the test prompt). ``"names"`` (both presets) lists the
  attribute *names* without values ("... with attributes: pose, upper colour, ..."), in training
  and at test alike: one sentence for every image, so the forward pass never sees a label,
  training and test features are the same function of the image, and the attributes teach the
  model only through Eq. 11, whose classifiers must read them from the image. ``"labels"`` is the
  paper's text (labels in training, none at test).
- Retrieval feature: concat of the BNNeck features of [f_cls, f_cvpr, f_asmoe, f_attr] (the last two
  only with attributes).
- Loss: 0.25 ID CE (label smoothing) + 1.0 triplet (each averaged over the heads) + 1.0 view
  (view CE + |cos(f_cls, f_view)|) + 0.1 attribute CE summed over the attributes (Eq. 11).
- Training: the ``paper`` preset trains with the paper's Adam at lr 5e-6 (``SVPR_TRAIN_PRESETS``,
  registered with the model and merged by ``make_config``); ``cpu`` keeps the shared recipe.

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
from agreid_kit.models.base import BNNeckHead, ReIDModel

PRETRAINED_PREFIX = "pretrained CLIP text encoder:"
UNTRAINED_TEXT = ("UNTRAINED: random small CLIP text encoder (no --pretrained CLIP file given); text prompts carry "
                  "no language prior")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VIEW_TEMPLATE = "A photo of a X X X X person from {view} view."
ATTRIBUTE_TEMPLATE = "A photo of a X X X X person with attributes: {attributes}."
# What the attribute text lists: "names" (train and test: the attribute names, no values; the kit's
# default) or "labels" (the paper: the image's annotated values in training, nothing at test).
ATTRIBUTE_PROMPTS = ("names", "labels")


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


def attribute_names_text(names: Sequence[str]) -> str:
    """The label-free attribute prompt (``attribute_prompt="names"``): the names, no values."""
    return ATTRIBUTE_TEMPLATE.format(attributes=", ".join(n.replace("_", " ") for n in names))


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
            raise ValueError(f"CLIP weights {path} could not be read as a state dict or an OpenAI TorchScript file: "
                             f"{e}") from e
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    # OpenAI archives store a few scalars beside the tensors.
    skip = ("input_resolution", "context_length", "vocab_size")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor) and k not in skip}


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
            context_length=config.context_length, width=config.text_width, heads=config.text_heads,
            layers=config.text_layers
        )
        model = open_clip.CLIP(config.clip_embed_dim, vision, text, quick_gelu=config.quick_gelu)
    else:
        cfg = get_model_config(config.clip_arch)
        if cfg is None:
            raise ValueError(f"svpr: clip_arch {config.clip_arch!r} is not an open_clip model config (e.g. ViT-B-16) "
                             "nor 'small'")
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
        raise FileNotFoundError(f"svpr: CLIP weights file {path} does not exist (pass --pretrained PATH to a local "
                                "file)")
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

    @property
    def heads(self) -> int:
        return int(getattr(self.transformer.resblocks[0].attn, "num_heads", max(1, self.width // 64)))

    def to_output_space(self, x: torch.Tensor) -> torch.Tensor:
        """Vectors of the token-embedding width in the text-feature space: unchanged when the two
        widths agree (CLIP ViT-B/16: 512 and 512), else through the frozen text projection."""
        tp = self.text_projection
        if tp is None or self.width == self.out_dim:
            return x
        return tp(x) if isinstance(tp, nn.Linear) else x @ tp.to(x.dtype)

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
    """Pre-norm cross-attention returning only the attended values (no residual); ``kv_dim`` is the
    width of the keys/values when it differs from the queries' (Eq. 1: prompts attend to text features)."""

    def __init__(self, dim: int, heads: int, kv_dim: int | None = None) -> None:
        super().__init__()
        kv_dim = kv_dim or dim
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(kv_dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True, kdim=kv_dim, vdim=kv_dim)

    def forward(self, q: torch.Tensor, kv: torch.Tensor, need_weights: bool = False):
        k = self.norm_kv(kv)
        out, w = self.attn(self.norm_q(q), k, k, need_weights=need_weights, average_attn_weights=True)
        return out, w


def bidirectional_decouple(
    cls: torch.Tensor, view: torch.Tensor, cls_entry: torch.Tensor, ca_cls: CrossAttention, ca_view: CrossAttention
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 3 ``cls - CA(cls, view)`` and Eq. 4 ``view - CA(view, cls_entry)`` for (B, D) tokens, where
    ``cls_entry`` is f_cls^i, the CLS token that entered the blocks after the view token's insertion."""
    c, v, ci = cls[:, None], view[:, None], cls_entry[:, None]
    return cls - ca_cls(c, v)[0][:, 0], view - ca_view(v, ci)[0][:, 0]


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


class CVAttention(nn.Module):
    """The decoder block of a refinement stage: self-attention over [query, kept patches],
    cross-attention of every token to the kept patches, FFN (pre-norm, residual)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross = CrossAttention(dim, heads)
        self.norm_ffn = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.ffn = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    @torch.no_grad()  # the scores only pick patches (top-k): no gradient would reach them
    def scores(self, query: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """Attention of the query (B, D) over the patches (B, M, D), averaged over heads: (B, M)."""
        return self.cross(query[:, None], patches, need_weights=True)[1][:, 0]

    def forward(self, query: torch.Tensor, kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The refined query (B, D) and refined patches (B, k, D)."""
        x = torch.cat([query[:, None], kept], dim=1)
        h = self.norm_self(x)
        x = x + self.self_attn(h, h, h, need_weights=False)[0]
        x = x + self.cross(x, kept)[0]
        x = x + self.ffn(self.norm_ffn(x))
        return x[:, 0], x[:, 1:]


class ProgressiveRefinement(nn.Module):
    """Eq. 8 over ``stages`` CVAttention stages; each keeps the top half of the remaining patches."""

    def __init__(self, dim: int, heads: int, stages: int, momentum: float) -> None:
        super().__init__()
        self.momentum = momentum
        self.stages = nn.ModuleList(CVAttention(dim, heads) for _ in range(stages))

    def forward(self, query: torch.Tensor, patches: torch.Tensor,
                anchor: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """Refine ``query`` (B, D) on ``patches`` (B, N, D); ``anchor`` is f_cls (B, D), to which every
        stage's query is pulled back. Returns f_cvpr and the number of patches each stage kept."""
        g = self.momentum
        q, remaining, kept_counts = query, patches, []
        for block in self.stages:
            keep = max(1, remaining.shape[1] // 2)
            idx = block.scores(q, remaining).topk(keep, dim=1).indices
            kept = torch.gather(remaining, 1, idx[..., None].expand(-1, -1, remaining.shape[-1]))
            refined, refined_patches = block(q, kept)
            q = g * refined + (1.0 - g) * anchor  # Eq. 8
            remaining = g * refined_patches + (1.0 - g) * kept  # the kept patches, updated alike
            kept_counts.append(keep)
        return q, kept_counts


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
    # "names" (the kit: label-free text in training and at test) or "labels" (the paper's training text
    # lists the image's attribute values); see the module docstring for why the default departs.
    attribute_prompt: str = "names"
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
    w_attribute: float = 0.1  # times the sum over attributes (Eq. 11); the authors' code uses 0.05

    def __post_init__(self) -> None:
        if len(self.attribute_names) != len(self.attribute_values):
            raise ValueError(
                f"svpr: {len(self.attribute_names)} attribute_names but {len(self.attribute_values)} attribute_values "
                "lists"
            )
        for n, vals in zip(self.attribute_names, self.attribute_values):
            if not vals:
                raise ValueError(f"svpr: attribute {n!r} has no values in attribute_values")
        if not 0.0 < self.attribute_keep_ratio <= 1.0:
            raise ValueError(f"svpr: attribute_keep_ratio must be in (0, 1], got {self.attribute_keep_ratio}")
        if self.attribute_prompt not in ATTRIBUTE_PROMPTS:
            raise ValueError(f"svpr: attribute_prompt must be one of {ATTRIBUTE_PROMPTS}, got "
                             f"{self.attribute_prompt!r}")
        if not 0.0 <= self.refine_momentum <= 1.0:
            raise ValueError(f"svpr: refine_momentum (gamma of Eq. 8) must be in [0, 1], got {self.refine_momentum}")

    @property
    def untrained_text(self) -> bool:
        if self.pretrained is not None:
            return False
        return not self.text_encoder.startswith(PRETRAINED_PREFIX)


SVPR_PRESETS: dict[str, dict[str, Any]] = {
    # attribute_prompt="names" in both presets: the label-free text (the kit's named departure, see the
    # module docstring); attribute_prompt="labels" gives the paper's training text.
    "paper": dict(clip_arch="ViT-B-16", img_size=(256, 128), quick_gelu=True, attribute_prompt="names"),
    "cpu": dict(clip_arch="small", img_size=(128, 64), quick_gelu=False, vision_width=192, vision_layers=6,
                vision_head_width=64, text_width=128, text_layers=2, text_heads=2, clip_embed_dim=128,
                attribute_prompt="names"),
}

# The paper's optimiser (Implementation Details: "the optimizer is Adam with a learning rate of 5e-6",
# batch 128 from 32 identities) over the shared paper recipe. The seed gives no schedule or epoch count:
# those stay the shared ones, with min_lr scaled to keep the cosine's end at the shared ratio
# (1.6e-6 / 0.008 = 2e-4 of the peak). The cpu preset is the shared recipe of the comparison.
SVPR_TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(optimizer="adam", lr=5e-6, min_lr=1e-9, p=32, k=4),
}


class SVPR(ReIDModel):
    config_class = SVPRConfig
    presets = SVPR_PRESETS
    train_presets = SVPR_TRAIN_PRESETS

    paper_weights = (
        "a local CLIP ViT-B/16 file (OpenAI ViT-B-16.pt, or open_clip_pytorch_model.bin / .safetensors of "
        "open_clip ViT-B-16 'openai'), not a timm ImageNet ViT: SVPR's backbone and frozen text encoder are CLIP's"
    )

    @classmethod
    def dataset_options(cls, dataset: str, train_records: Sequence[Any], options: dict[str, Any]) -> dict[str, Any]:
        """The attribute vocabulary of ``train_records`` (none when they carry no attributes, which leaves
        the attribute branch off); ``attribute_names`` given alone picks a subset, the values come from the data."""
        if "attribute_values" in options or not any(r.attributes for r in train_records):
            return {}
        return svpr_attribute_options(train_records, options.get("attribute_names") or None)

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
        self.view_ctx = nn.Parameter(torch.randn(config.n_ctx, tw) * 0.02)  # P_view: the X's of every view's text
        self.view_prompt_ca = CrossAttention(tw, self.text.heads, kv_dim=to)  # Eq. 1
        self.view_mlp = nn.Sequential(nn.Linear(tw, d), nn.GELU(), nn.Linear(d, d))  # phi of Eq. 1 -> view token
        self.ca_cls, self.ca_view = CrossAttention(d, heads), CrossAttention(d, heads)
        self.view_head = nn.Linear(d, config.num_views)
        self.use_attributes = bool(config.attribute_names)
        names = ["global", "refined"]
        if self.use_attributes:
            self.attr_ctx = nn.Parameter(torch.randn(config.n_ctx, tw) * 0.02)
            self.attr_mlp = nn.Sequential(nn.Linear(to, d), nn.GELU(), nn.Linear(d, d))  # phi of Eq. 5
            self.ca_attr = CrossAttention(d, heads)
            self.moe = AttributeMoE(d, [len(v) for v in config.attribute_values], config.moe_experts,
                                    config.attribute_keep_ratio)
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
    def _view_token(self) -> torch.Tensor:
        """Eq. 1 and phi: the view token (D,), one for every image (it attends over all views' texts)."""
        texts = [VIEW_TEMPLATE.format(view=VIEW_NAMES[v]) for v in range(self.config.num_views)]
        t_view = self.text(texts, self.view_ctx).to(self.view_ctx.dtype)  # T_view (V, text out)
        p = self.view_ctx[None]
        p_hat = p + self.view_prompt_ca(p, t_view[None])[0]  # (1, n_ctx, text width)
        return self.view_mlp(p_hat.mean(1))[0]

    def _visual_tokens(self, images: torch.Tensor, view_token: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ln_post([cls, view, patches]) after the last block, and f_cls^i: the CLS entering that block."""
        vis = self.visual
        x = vis._embeds(images)  # [cls, patches] + pos, ln_pre
        blocks = list(vis.transformer.resblocks)
        batch_first = getattr(vis.transformer, "batch_first", True)
        x = x if batch_first else x.transpose(0, 1)
        for blk in blocks[:-1]:
            x = blk(x)
        x = x if batch_first else x.transpose(0, 1)
        cls_entry = x[:, 0]
        view = view_token.to(x.dtype)[None, None].expand(x.shape[0], 1, -1)
        x = torch.cat([x[:, :1], view, x[:, 1:]], dim=1)  # before the last block (Eq. 2)
        x = x if batch_first else x.transpose(0, 1)
        x = blocks[-1](x)
        x = x if batch_first else x.transpose(0, 1)
        return vis.ln_post(x), cls_entry

    def _attribute_texts(self, batch: dict[str, torch.Tensor]) -> list[str]:
        """The attribute prompt(s): one sentence for the whole batch, or (``"labels"`` in training) one per image."""
        c = self.config
        if c.attribute_prompt == "names":
            return [attribute_names_text(c.attribute_names)]
        attrs = batch.get("attributes")
        if not self.training or attrs is None or attrs.numel() == 0:
            return [attribute_text(c.attribute_names, c.attribute_values, [-1] * len(c.attribute_names))]
        if attrs.shape[1] != len(c.attribute_names):
            raise ValueError(
                f"svpr: the batch has {attrs.shape[1]} attribute columns but the model was built for "
                f"{len(c.attribute_names)} ({c.attribute_names})"
            )
        return [attribute_text(c.attribute_names, c.attribute_values, row.tolist()) for row in attrs.cpu()]

    def _run(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        images = batch["images"]
        x, cls_entry = self._visual_tokens(images, self._view_token())
        cls, view, patches = x[:, 0], x[:, 1], x[:, 2:]
        cls_inv, view_spe = bidirectional_decouple(cls, view, cls_entry, self.ca_cls, self.ca_view)
        out: dict[str, Any] = {"cls_inv": cls_inv, "view_spe": view_spe}
        query = self.query[None] + cls_inv
        if self.use_attributes:
            t_attr = self.text(self._attribute_texts(batch), self.attr_ctx).to(cls.dtype)  # (1 or B, text out)
            prompt_mean = self.text.to_output_space(self.attr_ctx.mean(0)).to(cls.dtype)
            attr_tok = self.attr_mlp(t_attr + prompt_mean).expand(images.shape[0], -1)  # Eq. 5
            attr_feat = self.ca_attr(attr_tok[:, None], patches)[0][:, 0]  # f_attr = CA(f_attr^t, F_patch)
            moe = self.moe(cls_inv, attr_feat)
            out.update(attr_feat=attr_feat, local=moe["local"], attr_logits=moe["attr_logits"])
            query = query + moe["local"]  # f_cvpr^1 = query + f_cls + f_asmoe
        out["refined"], _ = self.refine(query, patches, cls_inv)
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
        if views.numel() and (int(views.min()) < 0 or int(views.max()) >= c.num_views):
            raise ValueError(
                f"svpr: view labels {sorted(set(views.tolist()))} outside 0..{c.num_views - 1} "
                f"(num_views={c.num_views})"
            )
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
