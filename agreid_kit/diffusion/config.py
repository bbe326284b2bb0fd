"""Typed configs of SD-ReID stage 2 and the small facts they are derived from.

``Stage2ModelConfig`` describes the network (condition learner, View-Refine Decoder, UNet);
``Stage2Config`` describes a training run (which stage-1 run, optimisation, noise schedule).
Both are dataclasses whose fields are the constructor arguments and round-trip through JSON.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from agreid_kit.presets import apply_preset, preset_values, remembers_given_fields

VRD_MECHANISMS = ("conv", "pool", "proj")
VRD_LOCATIONS = ("down", "up", "both", "none")  # none: no View-Refine Decoder (the ablation "VRD off")
TIMESTEP_SAMPLING = ("cubic", "uniform")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
SAMPLERS = ("ddim", "ddpm")

# Noise schedule of the paper (SD-1.5's): scaled_linear betas from 0.00085 to 0.012.
BETA_START = 0.00085
BETA_END = 0.012


def latent_shape(dim: int) -> tuple[int, int, int]:
    """The (4, H, W) latent a D-dim feature is reshaped to (channel-major), 4HW = D.

    Among the factorisations H x W = D / 4 with H >= W, pick the one closest to the paper's 4:3
    (768 -> (4, 16, 12), 192 -> (4, 8, 6)).
    """
    if dim <= 0 or dim % 4:
        raise ValueError(f"feature width D = {dim} cannot be reshaped to a (4, H, W) latent: D must be a positive "
                         "multiple of 4")
    area = dim // 4
    best = None
    for w in range(1, int(math.isqrt(area)) + 1):
        if area % w:
            continue
        h = area // w
        score = abs(math.log((h / w) / (4 / 3)))
        if best is None or score < best[0]:
            best = (score, h, w)
    assert best is not None
    return (4, best[1], best[2])


def default_train_timesteps(dataset: str) -> int:
    """T of the forward process per dataset: 600 AG-ReID.v1, 800 AG-ReID.v2, 1000 CARGO / SynthAG / other."""
    name = dataset.lower().replace("_", "-").replace(".", "-")
    if "agreid" in name.replace("-", "") or "ag-reid" in name:
        return 800 if "v2" in name else 600
    return 1000


def default_tau(dataset: str) -> int:
    """Sampling steps of the paper: 10 for AG-ReID.v2, 5 otherwise."""
    name = dataset.lower().replace("_", "-").replace(".", "-")
    return 10 if ("agreid" in name.replace("-", "") and "v2" in name) else 5


def auto_heads(dim: int, preferred: int = 12) -> int:
    """The largest head count <= ``preferred`` that divides ``dim`` (12 for ViT-B's 768)."""
    for h in range(min(preferred, dim), 0, -1):
        if dim % h == 0:
            return h
    return 1


def _from_known_fields(cls, d: dict[str, Any]):
    """``cls(**d)``, refusing keys that are not fields of the dataclass ``cls`` (named in the error)."""
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}; expected some of {sorted(names)}")
    return cls(**d)


@dataclass
class Stage2ModelConfig:
    """The stage-2 network.

    ``dim``: stage-1 feature width D; ``num_id_layers``: how many ID-condition tokens stage 1 stores
    (L - 1); ``id_layers``: which of them feed the condition learner (None = all; negative indices
    count from the last block, as the Fig. 10 ablation uses the last K); ``learner_depth``: R;
    ``unet_path``: a local SD-1.5 folder (its ``unet/`` subfolder is loaded) or None for the small
    UNet built from ``unet_channels`` / ``unet_layers_per_block`` / ``unet_heads``.
    """

    dim: int
    num_id_layers: int
    num_views: int = 2
    id_layers: list[int] | None = None
    learner_depth: int = 1
    learner_heads: int = 0  # 0: auto (largest <= 12 dividing D)
    p_uncond: float = 0.05
    vrd_mechanism: str = "conv"
    vrd_location: str = "both"
    unet_path: str | None = None
    # Small UNet from scratch, sized on SynthAG-small validation ids (scripts/stage2_ablations.py; README "Stage 2"):
    # at 40 epochs [32, 64, 64] generates features as good as the real ones (gen:all val mAP 85.1 vs real 85.2;
    # real+gen 85.4) where [16, 16, 16] stays at 79.3 (real+gen 83.3, below real); 100 epochs of the narrow UNet
    # reach only 82.7. Wider was not measured: generation already costs ~40 s per 1,000 images at tau = 5 on
    # 2 cores. Cross-attention sits at the 4x2 and 2x1 levels.
    unet_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    unet_cross_attention: list[bool] = field(default_factory=lambda: [False, True, True])
    unet_layers_per_block: int = 1
    unet_heads: int = 1
    unet_norm_groups: int = 8
    # Standardise the conditions per dimension with stage-1 training statistics (ID-condition tokens per layer,
    # view tokens and centres). A small ViT's tokens share a large constant component (mean cosine 0.98-0.9996
    # between people), which the learner's LayerNorm does not remove. Chosen on validation ids: without it the
    # generated features' val mAP is 8.1 instead of 58.2 (20 epochs, [16, 16, 16] UNet).
    standardise_conditions: bool = True

    def __post_init__(self) -> None:
        latent_shape(self.dim)  # validates D
        if self.vrd_mechanism not in VRD_MECHANISMS:
            raise ValueError(f"vrd_mechanism must be one of {VRD_MECHANISMS}, got {self.vrd_mechanism!r}")
        if self.vrd_location not in VRD_LOCATIONS:
            raise ValueError(f"vrd_location must be one of {VRD_LOCATIONS}, got {self.vrd_location!r}")
        if not 0.0 <= self.p_uncond < 1.0:
            raise ValueError(f"p_uncond (CFG dropout probability) must be in [0, 1), got {self.p_uncond}")
        if self.learner_depth < 0:
            raise ValueError(f"learner_depth (R) must be >= 0, got {self.learner_depth}")
        if self.num_views not in (2, 3):
            raise ValueError(f"num_views must be 2 or 3, got {self.num_views}")
        if self.num_id_layers < 1:
            raise ValueError("num_id_layers must be >= 1 (stage 1 stores L-1 ID-condition tokens), got "
                             f"{self.num_id_layers}")
        self.selected_id_layers()  # validates id_layers
        if len(self.unet_cross_attention) != len(self.unet_channels):
            raise ValueError(
                f"unet_cross_attention {self.unet_cross_attention} must have one entry per level of unet_channels "
                f"{self.unet_channels}"
            )
        for c in self.unet_channels:
            if c % self.unet_norm_groups or c % self.unet_heads:
                raise ValueError(
                    f"unet_channels {self.unet_channels}: every width must be divisible by unet_norm_groups "
                    f"({self.unet_norm_groups}) and unet_heads ({self.unet_heads})"
                )

    @property
    def latent(self) -> tuple[int, int, int]:
        return latent_shape(self.dim)

    @property
    def heads(self) -> int:
        h = self.learner_heads or auto_heads(self.dim)
        if self.dim % h:
            raise ValueError(f"learner_heads = {h} does not divide the feature width D = {self.dim}")
        return h

    def selected_id_layers(self) -> list[int]:
        """Indices (0..L-2) of the ID-condition tokens the learner reads."""
        n = self.num_id_layers
        if self.id_layers is None:
            return list(range(n))
        out = []
        for i in self.id_layers:
            j = i + n if i < 0 else i
            if not 0 <= j < n:
                raise ValueError(f"id_layers entry {i} is out of range for {n} ID-condition tokens (0..{n - 1} or "
                                 f"-{n}..-1)")
            out.append(j)
        if not out:
            raise ValueError("id_layers must select at least one ID-condition token")
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Stage2ModelConfig":
        return _from_known_fields(cls, d)


# Optimisation presets. "paper": Adam 1e-4, 1000 warm-up iters from x0.01, x0.1 after epoch 50,
# 120 epochs. "cpu": the same shape scaled to a few minutes on 2 cores for SynthAG-small.
STAGE2_PRESETS: dict[str, dict[str, Any]] = {
    # The paper's Adam with weight decay 0.1 (Sec. 4.1), applied as torch's Adam does (L2 on the gradient).
    "paper": dict(epochs=120, batch_size=128, lr=1e-4, warmup_iters=1000, decay_epochs=[50], amp=True,
                  weight_decay=0.1),
    "cpu": dict(epochs=40, batch_size=256, lr=1e-3, warmup_iters=50, decay_epochs=[30], amp=False, weight_decay=0.0),
}
# Model defaults per preset (user options win). The paper's main View-Refine Decoder location is "both"
# (Sec. 4.3). On SynthAG-small validation ids the four locations are within 0.7 mAP of each other
# (A<->G real+gen: none 68.7, down 68.6, up 68.7, both 69.3; one seed): the cpu preset takes the paper's.
STAGE2_MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(vrd_location="both"),
    "cpu": dict(vrd_location="both"),
}


_S2_CPU = STAGE2_PRESETS["cpu"]  # the dataclass defaults below are the cpu preset's values


@remembers_given_fields
@dataclass
class Stage2Config:
    """A stage-2 training run. ``stage1``: the stage-1 run dir; ``out``: the stage-2 run dir.

    ``preset`` fills every ``STAGE2_PRESETS`` field the caller does not set (or sets to None); the defaults
    written here are the ``cpu`` preset's.
    """

    stage1: str
    out: str
    preset: str = "cpu"
    model: dict[str, Any] = field(default_factory=dict)  # Stage2ModelConfig overrides (dim etc. come from stage 1)
    epochs: int = _S2_CPU["epochs"]
    batch_size: int = _S2_CPU["batch_size"]
    lr: float = _S2_CPU["lr"]
    warmup_iters: int = _S2_CPU["warmup_iters"]
    warmup_factor: float = 0.01
    decay_epochs: list[int] = field(default_factory=lambda: list(_S2_CPU["decay_epochs"]))
    decay_gamma: float = 0.1
    weight_decay: float = _S2_CPU["weight_decay"]
    num_train_timesteps: int | None = None  # None: per dataset (600 v1, 800 v2, 1000 otherwise)
    timestep_sampling: str = "cubic"
    flip: bool = True  # use the cached flipped-image features as augmentation
    amp: bool = _S2_CPU["amp"]  # autocast on GPU only
    seed: int = 0
    device: str = "auto"
    threads: int | None = None  # torch CPU threads for this run (None: torch's default); restored afterwards
    checkpoint_every: int = 0  # also keep epoch_XXX.pt every N epochs (0: only last.pt)
    # Hold stage 1's validation identities out of stage-2 training and score real / gen:all / real+gen on them
    # every val_every epochs (and at the end): stage-2 settings are chosen on these, never on the test split.
    validate: bool = True
    val_every: int = 5
    resume: bool = True  # continue RUN2's checkpoint when it holds one of the same settings (False: start over)
    generate_after: bool = True  # write gen:<view> test features at the end (tau/guidance below)
    tau: int | None = None
    guidance: float = 2.0

    def __post_init__(self) -> None:
        apply_preset(self, preset_values(STAGE2_PRESETS, self.preset, "Stage2Config"), none_is_unset=True)
        if self.timestep_sampling not in TIMESTEP_SAMPLING:
            raise ValueError(f"timestep_sampling must be one of {TIMESTEP_SAMPLING}, got {self.timestep_sampling!r}")
        if self.preset == "paper" and not self.model.get("unet_path"):
            raise ValueError(
                "stage-2 --preset paper fine-tunes the pretrained Stable Diffusion 1.5 UNet: pass --unet PATH to a "
                "local "
                "SD-1.5 folder (with unet/config.json and weights; nothing is downloaded). For a small UNet trained "
                "from "
                "scratch use --preset cpu"
            )
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.tau is not None and self.tau < 1:
            raise ValueError(f"tau (sampling steps) must be >= 1, got {self.tau}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Stage2Config":
        return _from_known_fields(cls, d)


# Stage-2 settings that never change the numbers of a run (they may differ when it is resumed): where it
# lives, whether to resume, the device, the generation settings after training and extra snapshots.
STAGE2_RUNTIME_ONLY = ("resume", "device", "generate_after", "tau", "guidance", "checkpoint_every", "out")


@dataclass
class Stage2RunConfig:
    """What RUN2/config.json holds: the stage-2 run's ``Stage2Config`` (``stage2``), the resolved network
    (``model``, a ``Stage2ModelConfig`` dict) and the facts of the stage-1 run it was trained from."""

    method: str
    stage1: str  # the stage-1 run folder (resolved)
    data: str
    protocol: str
    dataset: str
    dim: int
    num_train_timesteps: int
    stage2: dict[str, Any]
    model: dict[str, Any]
    stage1_features: str | None  # signature of the stage-1 test features (a retrained stage 1 makes the run stale)

    RUN_KIND: ClassVar[str] = "stage-2"
    # settings that make it another run altogether (a resume is refused as "belongs to another stage-2 run")
    IDENTITY: ClassVar[tuple[str, ...]] = ("method", "stage1", "dataset", "dim", "stage1_features")
    FLAGS: ClassVar[dict[str, str]] = {
        "num_train_timesteps": "--timesteps", "model": "--model-opt", "stage1_features": "--stage1",
        "dataset": "--stage1", "dim": "--stage1", "data": "--stage1", "protocol": "--stage1",
        "generate_after": "--no-generate",
    }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Stage2RunConfig":
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(names))
        missing = [n for n in names if n not in d]
        if unknown or missing:
            raise ValueError(f"stage-2 run config: unknown fields {unknown}, missing fields {missing}")
        return cls(**d)

    @property
    def out(self) -> str:
        return str(self.stage2.get("out", ""))

    @property
    def epochs(self) -> int:
        return int(self.stage2.get("epochs") or 0)

    def settings(self) -> dict[str, Any]:
        """The settings that shape the run's numbers, flat: the stage-1 facts, the ``Stage2Config`` fields
        (``stage2``) but the runtime-only ones, and the resolved network as ``model.<field>``."""
        import json

        d = json.loads(json.dumps(self.to_dict()))
        out = {k: v for k, v in d.items() if k not in ("stage2", "model")}
        # the user's model overrides and stage-1 path are covered by the resolved model and the stage1 fact
        skip = set(STAGE2_RUNTIME_ONLY) | {"model", "stage1"}
        out.update({k: v for k, v in d["stage2"].items() if k not in skip})
        out.update({f"model.{k}": v for k, v in d["model"].items()})
        return out

    def located(self, run_dir) -> "Stage2RunConfig":
        from dataclasses import replace

        return replace(self, stage2={**self.stage2, "out": str(run_dir)})

    def expected_outputs(self) -> list[str]:
        return ["features/test.json"]

    def expected_generation(self) -> dict[str, Any] | None:
        """What the generated test features of a finished run were made with (None: no generation asked)."""
        if not self.stage2.get("generate_after", True):
            return None
        return {"tau": self.stage2.get("tau") or default_tau(self.dataset),
                "guidance": self.stage2.get("guidance", 2.0),
                "seed": self.stage2.get("seed", 0)}
