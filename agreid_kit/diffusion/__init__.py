"""SD-ReID stage 2: view-conditioned diffusion of ID features.

Modules (import them directly; this package imports nothing heavy):
- ``config``: ``Stage2ModelConfig`` (network), ``Stage2Config`` (training run), ``latent_shape``;
- ``condition``: ``ConditionLearner`` (ID tokens + view centre -> context; learned null context);
- ``vrd``: ``ViewRefineDecoder`` (instance view token -> UNet residuals; conv / pool / proj);
- ``unet``: small UNet from kwargs, local SD-1.5 ``unet/`` loading and the paper's K/V-only training;
- ``model``: ``SDReIDStage2`` (the three above as one module);
- ``schedule``: noise schedulers (DDPM / DDIM, scaled_linear), cubic timestep sampling, lr schedule;
- ``train``: ``train_stage2(Stage2Config) -> Path``, ``stage2_run_config`` (what RUN2/config.json holds);
- ``loading``: ``load_stage1`` (a stage-1 run's cached features), ``load_stage2`` (a trained stage-2 run);
- ``sample``: ``generate_features(run_dir, tau, guidance, sampler, timestep_spacing, views, seed) -> FeatureSet``;
- ``analyses``: ``timestep_tradeoff``, ``view_condition_similarity``, ``ablation`` (data + plotly figure).

The names below are re-exported lazily (``from agreid_kit.diffusion import train_stage2``): importing this
package stays cheap.
"""

from __future__ import annotations

from agreid_kit.utils.lazy import lazy_getattr

_EXPORTS = {
    "Stage2Config": "agreid_kit.diffusion.config",
    "Stage2ModelConfig": "agreid_kit.diffusion.config",
    "Stage2RunConfig": "agreid_kit.diffusion.config",
    "train_stage2": "agreid_kit.diffusion.train",
    "stage2_run_config": "agreid_kit.diffusion.train",
    "load_stage1": "agreid_kit.diffusion.loading",
    "load_stage2": "agreid_kit.diffusion.loading",
    "generate_features": "agreid_kit.diffusion.sample",
    "timestep_tradeoff": "agreid_kit.diffusion.analyses",
    "view_condition_similarity": "agreid_kit.diffusion.analyses",
    "ablation": "agreid_kit.diffusion.analyses",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr("agreid_kit.diffusion", _EXPORTS)
