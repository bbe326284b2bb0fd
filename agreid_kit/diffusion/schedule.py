"""Noise schedules, timestep sampling and the stage-2 learning-rate schedule."""

from __future__ import annotations

import torch

from agreid_kit.diffusion.config import BETA_END, BETA_START, SAMPLERS, TIMESTEP_SAMPLING, TIMESTEP_SPACINGS


def make_scheduler(sampler: str, num_train_timesteps: int, timestep_spacing: str = "leading"):
    """A diffusers DDPM/DDIM scheduler with the paper's scaled_linear betas and epsilon prediction.

    ``clip_sample`` is off: the latent is a feature, not an image in [-1, 1]. ``steps_offset`` is 1
    for leading spacing (SD-1.5's convention), 0 otherwise.
    """
    from diffusers import DDIMScheduler, DDPMScheduler

    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if timestep_spacing not in TIMESTEP_SPACINGS:
        raise ValueError(f"timestep_spacing must be one of {TIMESTEP_SPACINGS}, got {timestep_spacing!r}")
    common = dict(
        num_train_timesteps=num_train_timesteps, beta_start=BETA_START, beta_end=BETA_END,
        beta_schedule="scaled_linear", prediction_type="epsilon", clip_sample=False,
        timestep_spacing=timestep_spacing, steps_offset=1 if timestep_spacing == "leading" else 0,
    )
    if sampler == "ddim":
        return DDIMScheduler(set_alpha_to_one=False, **common)
    return DDPMScheduler(variance_type="fixed_small", **common)


def alphas_cumprod(num_train_timesteps: int) -> torch.Tensor:
    return make_scheduler("ddpm", num_train_timesteps).alphas_cumprod.clone()


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """q(x_t | x_0) = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps."""
    a = abar.to(x0.device)[t].to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def sample_timesteps(n: int, num_train_timesteps: int, mode: str, generator: torch.Generator) -> torch.Tensor:
    """``cubic``: t = floor((1 - u^3) T), u ~ U(0, 1), biased to large t (the paper); ``uniform``: U{0..T-1}."""
    if mode not in TIMESTEP_SAMPLING:
        raise ValueError(f"timestep sampling must be one of {TIMESTEP_SAMPLING}, got {mode!r}")
    if mode == "uniform":
        return torch.randint(0, num_train_timesteps, (n,), generator=generator)
    u = torch.rand(n, generator=generator)
    return ((1 - u**3) * num_train_timesteps).floor().long().clamp_(0, num_train_timesteps - 1)


def lr_factor(iteration: int, epoch: int, warmup_iters: int, warmup_factor: float, decay_epochs: list[int],
              decay_gamma: float) -> float:
    """Linear warm-up from ``warmup_factor`` over ``warmup_iters`` iterations, x gamma at each decay epoch."""
    f = decay_gamma ** sum(1 for e in decay_epochs if epoch > e)  # "x0.1 after epoch 50": from epoch 51
    if warmup_iters > 0 and iteration < warmup_iters:
        f *= warmup_factor + (1 - warmup_factor) * iteration / warmup_iters
    return f
