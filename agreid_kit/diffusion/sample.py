"""Sampling: every view's feature for every image, DDPM or DDIM, with classifier-free guidance.

Per image and target view v, both the view token of the condition learner and the VRD's instance
token are the memory centre c_v (an image's features under other views do not exist at test).
One batched UNet call per denoising step carries all views x both CFG branches; the unconditional
branch uses the learned null context that CFG dropout trained. The VRD residuals are applied at
every step, and the cross-attention keys/values of the context, which no step changes, are
projected once per batch (the null branch's once: it is one context repeated). Initial noise is
drawn once for all (view, image) pairs from a seeded generator, so a feature does not depend on the
chunk size; DDIM (eta = 0) is then fully deterministic, DDPM draws its per-step noise from the same
generator (deterministic for a given batch size on CPU).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import torch

from agreid_kit import VIEW_NAMES
from agreid_kit.features import FeatureSet, checkpoint_digest
from agreid_kit.run import Run


def parse_views(views: Sequence[int | str] | None, num_views: int, dataset: str = "") -> list[int]:
    """View ids from ids or names; a view the dataset lacks is an error naming the dataset's views."""
    have = list(range(num_views))
    if views is None:
        return have
    out = []
    for v in views:
        if isinstance(v, str) and v in VIEW_NAMES:
            vid = VIEW_NAMES.index(v)
        else:
            vid = int(v) if str(v).lstrip("-").isdigit() else None
        if vid is None or vid not in have:
            names = ", ".join(f"{i} ({VIEW_NAMES[i]})" for i in have)
            raise ValueError(f"view {v!r} does not exist in dataset {dataset or '?'}, which has {num_views} views: "
                             f"{names}")
        if vid not in out:
            out.append(vid)
    return out


@torch.no_grad()
def generate_latent_features(
    model,
    id_cond: torch.Tensor,
    views: Sequence[int],
    tau: int = 5,
    guidance: float = 2.0,
    sampler: str = "ddim",
    timestep_spacing: str = "leading",
    num_train_timesteps: int = 1000,
    seed: int = 0,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    amp: bool = True,
    progress: bool = True,
) -> dict[int, torch.Tensor]:
    """{view: (N, D) generated features} from stage-1 ID-condition tokens (N, L-1, D).

    The UNet generates standardised pre-BNNeck features; they are returned in the stage-1 retrieval
    space (un-standardised, then stage 1's neck), the space of the real feature they are compared with."""
    from agreid_kit.diffusion.model import from_latent
    from agreid_kit.diffusion.schedule import make_scheduler
    from agreid_kit.diffusion.unet import cached_cross_attention
    from agreid_kit.utils.progress import progress_bar

    if tau < 1:
        raise ValueError(f"tau (number of denoising steps) must be >= 1, got {tau}")
    if tau > num_train_timesteps:
        raise ValueError(f"tau = {tau} exceeds the {num_train_timesteps} training timesteps")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    views = list(views)
    n, V = id_cond.shape[0], len(views)
    latent = model.latent
    gen = torch.Generator().manual_seed(seed)
    init = torch.randn((V, n, *latent), generator=gen)
    scheduler = make_scheduler(sampler, num_train_timesteps, timestep_spacing)
    view_ids = torch.tensor(views, dtype=torch.long, device=device)
    cfg = guidance != 1.0  # w = 1 is the conditional branch alone
    out = torch.empty(V, n, model.config.dim)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
        if device.type == "cuda" and amp else None
    )
    for start in progress_bar(range(0, n, batch_size), desc=f"generate tau={tau}", enabled=progress):
        rows = slice(start, min(start + batch_size, n))
        b = rows.stop - rows.start
        idc = id_cond[rows].to(device).float().repeat(V, 1, 1)  # view-major: (V * b, L-1, D)
        centres = model.view_centres[view_ids].repeat_interleave(b, dim=0)
        ctx = model.context(idc, centres)
        if cfg:
            ctx = torch.cat([model.learner.null(V * b).to(ctx.dtype), ctx])
            tokens = torch.cat([centres, centres])
        else:
            tokens = centres
        residuals = model.residuals(tokens)
        x = init[:, rows].reshape(V * b, *latent).to(device)
        scheduler.set_timesteps(tau, device=device)
        with cached_cross_attention(model.unet, ctx, shared_rows=V * b if cfg else 0):
            for t in scheduler.timesteps:
                inp = torch.cat([x, x]) if cfg else x
                inp = scheduler.scale_model_input(inp, t)
                tt = t.expand(inp.shape[0]).to(device)
                if autocast is not None:
                    with autocast:
                        eps = model.denoise(inp, tt, ctx, residuals).float()
                else:
                    eps = model.denoise(inp, tt, ctx, residuals)
                if cfg:
                    eps_u, eps_c = eps.chunk(2)
                    eps = eps_u + guidance * (eps_c - eps_u)
                x = scheduler.step(eps, t, x, generator=gen).prev_sample
        out[:, rows] = model.to_retrieval(from_latent(x.float())).view(V, b, -1).cpu()
    return {v: out[i] for i, v in enumerate(views)}


def load_real_test_features(run: Path, run_cfg: dict) -> FeatureSet:
    """The stage-2 run's test FeatureSet, or, when it is missing or half-written (a generation killed between
    its two files), a fresh copy of its stage-1 run's test features: ``generate`` owns this file."""
    from agreid_kit.features import FeatureSetError

    stem = Run(run).features_path("test")
    try:
        return FeatureSet.load(stem)
    except FeatureSetError as e:
        stage1 = Run(run_cfg.get("stage1", "")).features_path("test")
        if not stage1.with_suffix(".json").is_file():
            raise
        print(f"agreid generate: {e}; starting again from the stage-1 test features {stage1}")
        fs = FeatureSet.load(stage1)
        fs.meta = {**fs.meta, "method": "sdreid-stage2", "run": str(run), "stage1_run": str(stage1.parent.parent)}
        return fs


def generate_features(
    run_dir: str | Path,
    tau: int = 5,
    guidance: float = 2.0,
    sampler: str = "ddim",
    timestep_spacing: str = "leading",
    views: Sequence[int | str] | None = None,
    seed: int = 0,
    batch_size: int = 512,
    device: str = "auto",
    save: bool = True,
    progress: bool = True,
) -> FeatureSet:
    """Generate ``gen:<view>`` for every test image of a stage-2 run; save into RUN/features/test.*.

    Earlier ``gen:*`` extras are replaced (a FeatureSet holds one generation setting, recorded in
    ``meta["generation"]`` with the measured seconds per 1,000 images).
    """
    from agreid_kit.diffusion.loading import load_stage2, resolve_device

    if tau < 1:
        raise ValueError(f"tau (number of denoising steps) must be >= 1, got {tau}")
    dev = resolve_device(device)
    model, run_cfg = load_stage2(run_dir, device=str(dev))
    stem = Run(run_dir).features_path("test")
    fs = load_real_test_features(Run(run_dir).dir, run_cfg)
    if "id_cond" not in fs.extras:
        raise ValueError(f"{stem}.json has no id_cond extra: it is not an sdreid stage-1 test FeatureSet")
    if fs.extras["id_cond"].shape[1:] != (model.config.num_id_layers, model.config.dim):
        raise ValueError(
            f"{stem}.json: id_cond is {tuple(fs.extras['id_cond'].shape[1:])} but the stage-2 model expects "
            f"({model.config.num_id_layers}, {model.config.dim}) (features from another stage-1 run/width?)"
        )
    dataset = run_cfg.get("dataset", "")
    if fs.meta.get("dataset", dataset) != dataset:
        raise ValueError(f"{stem}.json is from dataset {fs.meta.get('dataset')!r} but stage-2 run {run_dir} was "
                         f"trained on {dataset!r}")
    view_ids = parse_views(views, model.config.num_views, dataset)
    t0 = time.perf_counter()
    gen = generate_latent_features(
        model, fs.extras["id_cond"], view_ids, tau=tau, guidance=guidance, sampler=sampler,
        timestep_spacing=timestep_spacing, num_train_timesteps=int(run_cfg["num_train_timesteps"]), seed=seed,
        batch_size=batch_size, device=dev, progress=progress,
    )
    seconds = time.perf_counter() - t0
    extras = {k: v for k, v in fs.extras.items() if not k.startswith("gen:")}
    extras.update({f"gen:{v}": f for v, f in gen.items()})
    meta = dict(fs.meta)
    meta["generation"] = {
        "checkpoint_sha256": checkpoint_digest(Run(run_dir).last_checkpoint_path),
        "tau": tau, "guidance": guidance, "sampler": sampler, "timestep_spacing": timestep_spacing,
        "views": view_ids, "seed": seed, "batch_size": batch_size, "device": str(dev),
        "seconds": seconds, "seconds_per_1000": 1000 * seconds / max(len(fs), 1),
    }
    out = FeatureSet(fs.features, fs.records, fs.split, fs.fingerprint, extras, dict(fs.globals), meta)
    if save:
        out.save(stem)
    return out
