"""Stage-2 training from the cached stage-1 FeatureSet (no ViT forward per step).

Run layout (mirrors stage 1; ``agreid_kit.run.Run`` owns the paths):
```
RUN2/config.json           a Stage2RunConfig: method "sdreid-stage2", stage1 (path), data/protocol of stage 1,
                           the Stage2Config, the resolved model config
RUN2/log.jsonl, log.csv    one row per epoch: epoch, lr, loss, iterations, seconds (+ validation metrics)
RUN2/checkpoints/last.pt   model, optimiser, scaler, epoch, RNG state (atomic); epoch_XXX.pt every N epochs
RUN2/features/test.*       the stage-1 test FeatureSet + gen:<view> extras (written by ``generate_features``)
```
Every random draw of the loop (order, flip choice, timesteps, noise, CFG dropout) comes from a
generator seeded by (seed, epoch), so a run resumed from ``last.pt`` continues bit-identically on CPU.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Sequence

import torch

from agreid_kit.diffusion.config import (
    Stage2Config,
    Stage2ModelConfig,
    Stage2RunConfig,
    default_tau,
    default_train_timesteps,
)
from agreid_kit.diffusion.loading import METHOD, STAGE1_TRAIN_EXTRAS, Stage1Features, load_stage1, resolve_device
from agreid_kit.features import FeatureSet, FeatureSetError
from agreid_kit.run import Run
from agreid_kit.utils.io import file_signature


def stage2_validation_rows(train_fs: FeatureSet):
    """(training rows, validation split, validation rows) of a stage-1 train FeatureSet.

    The validation identities are the ones stage 1 carved out of its train split (``meta["val_pids"]``,
    dataset ids): per identity the first image of each camera is a query, the rest gallery, as
    stage 1 validated. None, None, None when the stage-1 run held out nothing.
    """
    from agreid_kit.engine.data import validation_split

    held = {int(p) for p in train_fs.meta.get("val_pids", [])}
    if not held:
        return None, None, None
    raw = [r.raw_pid if r.raw_pid is not None else r.pid for r in train_fs.records]
    val_rows = [i for i, p in enumerate(raw) if p in held]
    fit_rows = [i for i, p in enumerate(raw) if p not in held]
    if not val_rows or not fit_rows:
        return None, None, None
    from dataclasses import replace

    records = [replace(train_fs.records[i], pid=raw[i]) for i in val_rows]
    return fit_rows, validation_split(records), val_rows


def validate_stage2(model, val_fs: FeatureSet, val_split, tau: int, guidance: float, seed: int, T: int,
                    device, protocols: Sequence[str] = ("ALL", "A<->G")) -> dict[str, float]:
    """Validation mAP / Rank-1 of ``real``, ``gen:all`` and ``real+gen`` on the held-out train identities.

    ``val_split`` is the held-out ids' ALL split (keys ``val_<mode>_mAP``); every other protocol in
    ``protocols`` is scored too (keys ``val_<protocol>_<mode>_mAP``, e.g. ``val_A<->G_real+gen_mAP``), so
    the cross-view gain that stage 2 is for is chosen on validation ids as well.
    """
    from agreid_kit.diffusion.sample import generate_latent_features
    from agreid_kit.engine.data import validation_protocol_split
    from agreid_kit.engine.evaluate import evaluate_featureset_split, metrics_dict

    was_training = model.training
    model.eval()
    views = list(range(model.config.num_views))
    gen = generate_latent_features(model, val_fs.extras["id_cond"], views, tau=tau, guidance=guidance,
                                   num_train_timesteps=T, seed=seed, device=device,
                                   progress=False)
    model.train(was_training)
    # the split carries the identities (looked up by path): the FeatureSet only supplies the features
    fs = FeatureSet(val_fs.features, val_fs.records, "val", "stage2-validation",
                    extras={f"gen:{v}": f for v, f in gen.items()})
    records = list(val_split.query) + list(val_split.gallery)
    splits = {"ALL": val_split}
    splits.update({p: validation_protocol_split(records, p) for p in protocols if p != "ALL"})
    out: dict[str, float] = {}
    for protocol, split in splits.items():
        prefix = "val_" if protocol == "ALL" else f"val_{protocol}_"
        for mode in ("real", "gen:all", "real+gen"):
            m = metrics_dict(evaluate_featureset_split(fs, split, mode))
            out[f"{prefix}{mode}_mAP"] = m["mAP"]
            out[f"{prefix}{mode}_rank1"] = m["rank1"]
    return out


def build_model_config(cfg: Stage2Config, s1: Stage1Features) -> Stage2ModelConfig:
    """The preset's model defaults, the user's options over them, the stage-1 facts over both."""
    from agreid_kit.diffusion.config import STAGE2_MODEL_PRESETS
    from agreid_kit.presets import preset_values

    fixed = dict(dim=s1.dim, num_id_layers=s1.num_id_layers, num_views=s1.num_views)
    clash = {k: v for k, v in cfg.model.items() if k in fixed and v != fixed[k]}
    if clash:
        raise ValueError(f"stage-2 model options {clash} contradict the stage-1 run {s1.run} ({fixed})")
    preset = preset_values(STAGE2_MODEL_PRESETS, cfg.preset, "Stage2ModelConfig")
    return Stage2ModelConfig(**{**preset, **cfg.model, **fixed})


def stage2_run_config(cfg: Stage2Config, s1: Stage1Features | None = None) -> Stage2RunConfig:
    """What RUN2/config.json of a run of ``cfg`` holds (``s1``: the stage-1 run, read now when not given).

    It is also what ``Run.is_finished`` and ``Run.check_resume`` compare a run folder with."""
    s1 = s1 if s1 is not None else load_stage1(cfg.stage1, need_train=False)
    mcfg = build_model_config(cfg, s1)
    return Stage2RunConfig(
        method=METHOD,
        stage1=str(s1.run.resolve()),
        data=s1.config.get("data", ""),
        protocol=s1.config.get("protocol", "ALL"),
        dataset=s1.dataset,
        dim=s1.dim,
        num_train_timesteps=cfg.num_train_timesteps or default_train_timesteps(s1.dataset),
        stage2=cfg.to_dict(),
        model=mcfg.to_dict(),
        # which stage-1 features this run was trained from (a retrained stage 1 makes it stale)
        stage1_features=file_signature(s1.test_stem.with_suffix(".json")),
    )


def _lr(cfg: Stage2Config, iteration: int, epoch: int) -> float:
    from agreid_kit.diffusion.schedule import lr_factor

    return cfg.lr * lr_factor(iteration, epoch, cfg.warmup_iters, cfg.warmup_factor, cfg.decay_epochs, cfg.decay_gamma)


def _autocast(device: torch.device, enabled: bool):
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    import contextlib

    return contextlib.nullcontext()


def train_epoch(model, batch_iter, optimizer, scaler, device, cfg: Stage2Config, T: int, abar: torch.Tensor,
                epoch: int, iteration: int, train: dict[str, torch.Tensor], generator: torch.Generator,
                progress: bool = True) -> tuple[float, int]:
    """One pass over the cached training features; returns (mean loss, next iteration index)."""
    from agreid_kit.diffusion.model import to_latent
    from agreid_kit.diffusion.schedule import add_noise, sample_timesteps
    from agreid_kit.utils.progress import progress_bar

    model.train()
    total, count = 0.0, 0
    for rows in progress_bar(batch_iter, desc=f"stage2 epoch {epoch}", enabled=progress):
        b = len(rows)
        flip = (torch.rand(b, generator=generator) < 0.5) if cfg.flip else torch.zeros(b, dtype=torch.bool)
        pick = lambda name: torch.where(  # noqa: E731 - original or flipped image's cached tensor
            flip.view(-1, *([1] * (train[name].ndim - 1))), train[name + "_flip"][rows], train[name][rows]
        )
        x0 = to_latent(model.standardise(pick("prebn").to(model.target_mean.device)).cpu(), model.latent)
        id_cond, token = pick("id_cond"), pick("view_token")
        views = train["views"][rows]
        t = sample_timesteps(b, T, cfg.timestep_sampling, generator)
        noise = torch.randn(x0.shape, generator=generator)
        drop = torch.rand(b, generator=generator) < model.config.p_uncond
        x0, noise, t, id_cond, token, views, drop = (v.to(device) for v in (x0, noise, t, id_cond, token, views, drop))
        lr = _lr(cfg, iteration, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with _autocast(device, cfg.amp):
            pred = model(add_noise(x0, noise, t, abar), t, id_cond, model.centres_for(views), token, drop=drop)
            loss = torch.nn.functional.mse_loss(pred.float(), noise)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"stage-2 loss became {loss.item()} at epoch {epoch}, iteration {iteration}")
        total += loss.item() * b
        count += b
        iteration += 1
    return total / max(count, 1), iteration


def train_stage2(config: Stage2Config, progress: bool = True) -> Path:
    """Train stage 2 on a stage-1 run's cached features; return the stage-2 run dir.

    ``config.threads`` applies to this call only (the previous torch thread count is restored)."""
    previous = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _train_stage2(config, progress)
    finally:
        torch.set_num_threads(previous)


def _train_stage2(config: Stage2Config, progress: bool = True) -> Path:
    from agreid_kit.diffusion.model import SDReIDStage2
    from agreid_kit.diffusion.schedule import alphas_cumprod
    from agreid_kit.engine.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
    from agreid_kit.utils.seed import seed_everything

    cfg = config
    s1 = load_stage1(cfg.stage1)
    run_cfg = stage2_run_config(cfg, s1)
    mcfg = Stage2ModelConfig.from_dict(run_cfg.model)
    T = run_cfg.num_train_timesteps
    run = Run(cfg.out)
    out = run.dir
    device = resolve_device(cfg.device)
    stale = run.remove_stale_temporaries()
    if stale:
        print(f"{out}: removed {stale} temporary file(s) left by an interrupted write")
    resume = cfg.resume and run.has_checkpoint
    if resume:
        # Only the run's own settings continue it. More epochs continue the same run exactly (the lr schedule
        # does not depend on the total), so they are always allowed; fewer are refused.
        run.check_resume(run_cfg, extend_epochs=True)
    run.write_config(run_cfg)

    seed_everything(cfg.seed)
    model = SDReIDStage2(mcfg)
    model.view_centres.copy_(s1.view_centres)
    # the identities stage 1 held out for validation stay out of stage 2's training too: they validate it
    fit_rows, val_split, val_rows = stage2_validation_rows(s1.train) if cfg.validate else (None, None, None)
    tr_fs = s1.train if fit_rows is None else s1.train.subset(fit_rows)
    if "features_flip" in tr_fs.extras:
        model.fit_feature_spaces(torch.cat([tr_fs.extras["prebn"], tr_fs.extras["prebn_flip"]]),
                                 torch.cat([tr_fs.features, tr_fs.extras["features_flip"]]))
    else:
        model.fit_feature_spaces(tr_fs.extras["prebn"], tr_fs.features)
    # The flipped tokens are training inputs too (flip augmentation), so they enter the statistics.
    model.fit_condition_spaces(torch.cat([tr_fs.extras["id_cond"], tr_fs.extras["id_cond_flip"]]),
                               torch.cat([tr_fs.extras["view_token"], tr_fs.extras["view_token_flip"]]))
    model.to(device)
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    use_scaler = device.type == "cuda" and cfg.amp and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    abar = alphas_cumprod(T)

    start_epoch, iteration, log = 1, 0, []
    ckpt_path = run.last_checkpoint_path
    if resume:
        state = load_checkpoint(ckpt_path, method=METHOD)
        from agreid_kit.engine.checkpoint import load_model_state

        load_model_state(model, state["model"], ckpt_path)
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch, iteration, log = state["epoch"] + 1, state["iteration"], list(state["log"])
        restore_rng(state["rng"])

    tr = tr_fs
    train = {k: tr.extras[k].float() for base in STAGE1_TRAIN_EXTRAS for k in (base, base + "_flip")}
    train["views"] = tr.views
    if int(train["views"].max()) >= s1.num_views:
        raise FeatureSetError(f"stage-1 train features have view ids {sorted(set(train['views'].tolist()))} but only "
                              f"{s1.num_views} view centres")
    n = len(tr)
    for epoch in range(start_epoch, cfg.epochs + 1):
        t0 = time.time()
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=g)
        batches = [order[i:i + cfg.batch_size] for i in range(0, n, cfg.batch_size)]
        if len(batches) > 1 and len(batches[-1]) < cfg.batch_size // 2:
            batches = batches[:-1]  # a tiny last batch only adds noise to the gradient
        loss, iteration = train_epoch(model, batches, optimizer, scaler, device, cfg, T, abar, epoch, iteration,
                                      train, g, progress)
        entry = {"epoch": epoch, "lr": _lr(cfg, iteration - 1, epoch), "loss": loss, "iterations": iteration,
                 "seconds": round(time.time() - t0, 3)}
        if val_split is not None and cfg.val_every and (epoch % cfg.val_every == 0 or epoch == cfg.epochs):
            entry.update(validate_stage2(model, s1.train.subset(val_rows), val_split,
                                         cfg.tau or default_tau(s1.dataset),
                                         cfg.guidance, cfg.seed, T, device))
        log.append(entry)
        run.write_log(log)
        state = {
            "method": METHOD, "model_config": mcfg.to_dict(), "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler else None,
            "epoch": epoch, "iteration": iteration, "log": log, "rng": capture_rng(), "run_config": run_cfg.to_dict(),
            # the UNet's own config: a finished run loads without the SD-1.5 folder it was started from
            "unet_config": dict(model.unet.config),
        }
        save_checkpoint(ckpt_path, state)
        if cfg.checkpoint_every and epoch % cfg.checkpoint_every == 0:
            save_checkpoint(run.epoch_checkpoint_path(epoch), state)

    # The stage-2 run's test features start as the stage-1 test features (real), then gain gen:<view>.
    test_stem = run.features_path("test")
    if not run.has_features("test"):
        fs = FeatureSet.load(s1.test_stem)
        fs.meta = {**fs.meta, "method": METHOD, "run": str(out), "stage1_run": str(s1.run)}
        fs.save(test_stem)
    if cfg.generate_after:
        from agreid_kit.diffusion.sample import generate_features

        generate_features(out, tau=cfg.tau or default_tau(s1.dataset), guidance=cfg.guidance, seed=cfg.seed,
                          device=str(device), progress=progress)
    return out
