"""SD-ReID stage 2: view-conditioned diffusion of ID features.

Modules (import them directly; this package imports nothing heavy):
- ``config``: ``Stage2ModelConfig`` (network), ``Stage2Config`` (training run), ``latent_shape``;
- ``condition``: ``ConditionLearner`` (ID tokens + view centre -> context; learned null context);
- ``vrd``: ``ViewRefineDecoder`` (instance view token -> UNet residuals; conv / pool / proj);
- ``unet``: small UNet from kwargs, local SD-1.5 ``unet/`` loading and the paper's K/V-only training;
- ``model``: ``SDReIDStage2`` (the three above as one module);
- ``schedule``: noise schedulers (DDPM / DDIM, scaled_linear), cubic timestep sampling, lr schedule;
- ``train``: ``train_stage2(Stage2Config) -> Path``, ``load_stage2``, ``main_from_args`` (``agreid train``);
- ``sample``: ``generate_features(run_dir, tau, guidance, sampler, timestep_spacing, views, seed) -> FeatureSet``;
- ``analyses``: ``timestep_tradeoff``, ``view_condition_similarity``, ``ablation`` (data + plotly figure).
"""
