"""``SDReIDStage2``: condition learner + View-Refine Decoder + UNet, as one module.

The diffusion target is a stage-1 ReID feature (pre-BNNeck, D-dim), standardised per dimension with
training statistics, reshaped channel-major to a (4, H, W) latent (no VAE). The model predicts the noise epsilon given a
noisy latent,
its timestep, the cross-attention context (from the ID-condition tokens and the target view's
memory centre) and an instance view token (through the VRD residuals).
"""

from __future__ import annotations

import torch
from torch import nn

from agreid_kit.diffusion.condition import ConditionLearner
from agreid_kit.diffusion.config import Stage2ModelConfig
from agreid_kit.diffusion.unet import build_small_unet, freeze_for_sd_preset, load_sd_unet
from agreid_kit.diffusion.vrd import ViewRefineDecoder, unet_residual_targets


def to_latent(features: torch.Tensor, latent: tuple[int, int, int]) -> torch.Tensor:
    return features.reshape(features.shape[0], *latent)


def from_latent(latents: torch.Tensor) -> torch.Tensor:
    return latents.reshape(latents.shape[0], -1)


def moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std over the first axis, in double precision; the std is floored so a
    dimension that never varies maps to ~0 instead of amplifying rounding noise."""
    x = x.double()
    return x.mean(0), x.std(0).clamp_min(1e-6)


class SDReIDStage2(nn.Module):
    def __init__(self, config: Stage2ModelConfig, load_unet_weights: bool = True,
                 unet: nn.Module | None = None) -> None:
        """``unet``: a prebuilt UNet2DConditionModel to use instead (benchmarks: SD-1.5-shaped, random weights)."""
        super().__init__()
        self.config = config
        self.latent = config.latent
        if unet is not None:
            self.unet = unet
        elif config.unet_path:
            self.unet = load_sd_unet(config.unet_path, self.latent, load_weights=load_unet_weights)
        else:
            self.unet = build_small_unet(
                self.latent, config.dim, config.unet_channels, config.unet_layers_per_block,
                config.unet_heads, config.unet_norm_groups, config.unet_cross_attention,
            )
        self.context_dim = int(self.unet.config.cross_attention_dim)
        self.id_layers = config.selected_id_layers()
        self.learner = ConditionLearner(
            config.dim, len(self.id_layers) + 1, self.context_dim, config.learner_depth, config.heads
        )
        targets = unet_residual_targets(self.unet.config, self.latent[1:])
        loc = config.vrd_location
        self.vrd_down = (
            ViewRefineDecoder(config.dim, self.latent[1:], targets["down"], config.vrd_mechanism)
            if loc in ("down", "both") else None
        )
        self.vrd_up = (
            ViewRefineDecoder(config.dim, self.latent[1:], targets["up"], config.vrd_mechanism)
            if loc in ("up", "both") else None
        )
        # Frozen stage-1 per-view memory centres, saved with the stage-2 checkpoint.
        self.register_buffer("view_centres", torch.zeros(config.num_views, config.dim))
        # Per-dimension statistics of the stage-1 training targets. Pre-BNNeck features share a large
        # common component (cosine ~0.999 between different people for a small from-scratch ViT), so
        # diffusing them raw spends the model on that constant and drowns the identity-bearing residual:
        # the target is standardised (an affine reparametrisation, like SD's latent scaling).
        self.register_buffer("target_mean", torch.zeros(config.dim))
        self.register_buffer("target_std", torch.ones(config.dim))
        # Stage 1's BNNeck in eval mode is a per-dimension affine map pre-BN -> retrieval feature; applying
        # it to generated features puts them in the same space as the real feature they are compared with.
        self.register_buffer("neck_scale", torch.ones(config.dim))
        self.register_buffer("neck_shift", torch.zeros(config.dim))
        # Per-dimension statistics of the conditions (identity until fit_condition_spaces).
        self.register_buffer("id_cond_mean", torch.zeros(config.num_id_layers, config.dim))
        self.register_buffer("id_cond_std", torch.ones(config.num_id_layers, config.dim))
        self.register_buffer("view_mean", torch.zeros(config.dim))
        self.register_buffer("view_std", torch.ones(config.dim))
        if config.unet_path:
            freeze_for_sd_preset(self.unet)

    # ---- feature spaces ------------------------------------------------------------------
    @torch.no_grad()
    def fit_feature_spaces(self, prebn: torch.Tensor, retrieval: torch.Tensor) -> None:
        """Set the target statistics and the neck affine from stage-1 training features (N, D) each."""
        prebn, retrieval = prebn.double(), retrieval.double()
        mean, std = moments(prebn)
        self.target_mean.copy_(mean.float())
        self.target_std.copy_(std.float())
        # least squares per dimension: retrieval = scale * prebn + shift (exact for a BatchNorm in eval mode)
        centred = prebn - mean
        scale = (centred * (retrieval - retrieval.mean(0))).mean(0) / centred.pow(2).mean(0).clamp_min(1e-12)
        self.neck_scale.copy_(scale.float())
        self.neck_shift.copy_((retrieval.mean(0) - scale * mean).float())

    @torch.no_grad()
    def fit_condition_spaces(self, id_cond: torch.Tensor, view_tokens: torch.Tensor) -> None:
        """Condition statistics from stage-1 training tokens: id_cond (N, L-1, D), view tokens (N, D).

        A no-op when ``config.standardise_conditions`` is off (the buffers stay the identity)."""
        if not self.config.standardise_conditions:
            return
        if id_cond.shape[1:] != self.id_cond_mean.shape or view_tokens.shape[1:] != self.view_mean.shape:
            raise ValueError(
                f"fit_condition_spaces: expected id_cond (N, {self.config.num_id_layers}, {self.config.dim}) and view "
                f"tokens (N, {self.config.dim}), got {tuple(id_cond.shape)} and {tuple(view_tokens.shape)}"
            )
        for (mean_buf, std_buf), x in (((self.id_cond_mean, self.id_cond_std), id_cond),
                                       ((self.view_mean, self.view_std), view_tokens)):
            mean, std = moments(x)
            mean_buf.copy_(mean.float())
            std_buf.copy_(std.float())

    def standardise(self, prebn: torch.Tensor) -> torch.Tensor:
        return (prebn - self.target_mean) / self.target_std

    def to_retrieval(self, standardised: torch.Tensor) -> torch.Tensor:
        """Generated (standardised) features -> stage-1 retrieval space (pre-BN un-standardised, then the neck)."""
        return (standardised * self.target_std + self.target_mean) * self.neck_scale + self.neck_shift

    # ---- conditions ----------------------------------------------------------------------
    def context(self, id_cond: torch.Tensor, view_centre: torch.Tensor) -> torch.Tensor:
        """Stage-1 ID-condition tokens (B, L-1, D) + target-view centre (B, D) -> (B, K+1, context_dim)."""
        if id_cond.ndim != 3 or id_cond.shape[1] != self.config.num_id_layers:
            raise ValueError(
                f"id_cond must be (B, {self.config.num_id_layers}, {self.config.dim}) (the stage-1 ID-condition "
                f"tokens), got {tuple(id_cond.shape)}"
            )
        id_cond = (id_cond - self.id_cond_mean) / self.id_cond_std
        return self.learner(id_cond[:, self.id_layers], self.standardise_view(view_centre))

    def standardise_view(self, view: torch.Tensor) -> torch.Tensor:
        """A view token or centre in the standardised view space the learner and the VRD read."""
        return (view - self.view_mean) / self.view_std

    def residuals(self, view_token: torch.Tensor) -> dict[str, object]:
        """UNet keyword arguments carrying the VRD residuals for the configured locations."""
        kw: dict[str, object] = {}
        view_token = self.standardise_view(view_token)
        if self.vrd_down is not None:
            kw["down_intrablock_additional_residuals"] = self.vrd_down(view_token)
        if self.vrd_up is not None:
            res = self.vrd_up(view_token)
            kw["down_block_additional_residuals"] = tuple(res[:-1])
            kw["mid_block_additional_residual"] = res[-1]
        return kw

    def centres_for(self, views: torch.Tensor) -> torch.Tensor:
        if int(views.max()) >= self.view_centres.shape[0] or int(views.min()) < 0:
            raise ValueError(
                f"view ids {sorted(set(views.tolist()))} out of range: this model has {self.view_centres.shape[0]} "
                "view centres"
            )
        return self.view_centres[views]

    # ---- denoiser ------------------------------------------------------------------------
    def denoise(self, latents: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                residuals: dict[str, object]) -> torch.Tensor:
        # diffusers pops from the intrablock list: hand it a fresh list every call.
        kw = dict(residuals)
        if "down_intrablock_additional_residuals" in kw:
            kw["down_intrablock_additional_residuals"] = list(kw["down_intrablock_additional_residuals"])
        return self.unet(latents, timesteps, encoder_hidden_states=context, return_dict=False, **kw)[0]

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, id_cond: torch.Tensor, view_centre: torch.Tensor,
                view_token: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """Predict epsilon for noisy latents; ``drop`` (B,) bool swaps in the learned null context (CFG dropout)."""
        ctx = self.context(id_cond, view_centre)
        if drop is not None:
            ctx = self.learner.with_cfg_dropout(ctx, drop)
        return self.denoise(noisy, timesteps, ctx, self.residuals(view_token))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]
