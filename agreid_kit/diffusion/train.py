"""Stage-2 training from the cached stage-1 FeatureSet (no ViT forward per step).

Run layout (mirrors stage 1):
```
RUN2/config.json           method "sdreid-stage2", stage1 (path), data/protocol of stage 1, Stage2Config, model config
RUN2/log.jsonl             one JSON object per epoch: epoch, lr, loss, seconds
RUN2/checkpoints/last.pt   model, optimiser, scaler, epoch, RNG state (atomic); epoch_XXX.pt every N epochs
RUN2/features/test.*       the stage-1 test FeatureSet + gen:<view> extras (written by ``generate_features``)
```
Every random draw of the loop (order, flip choice, timesteps, noise, CFG dropout) comes from a
generator seeded by (seed, epoch), so a run resumed from ``last.pt`` continues bit-identically on CPU.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from agreid_kit.diffusion.config import Stage2Config, Stage2ModelConfig, default_train_timesteps
from agreid_kit.features import FeatureSet, FeatureSetError

METHOD = "sdreid-stage2"
STAGE1_TRAIN_EXTRAS = ("prebn", "id_cond", "view_token")


@dataclass
class Stage1Features:
    """What stage 2 reads from a stage-1 run."""

    run: Path
    train: FeatureSet
    test_stem: Path
    config: dict[str, Any]
    dataset: str
    dim: int
    num_id_layers: int
    num_views: int
    view_centres: torch.Tensor


def resolve_device(device: str = "auto") -> torch.device:
    """``auto``: cuda when present. Asking for cuda without one says so once and falls back to CPU."""
    if device in ("auto", "", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print(f"agreid: no GPU available (asked for {device!r}); continuing on CPU")
        return torch.device("cpu")
    return dev


def load_stage1(stage1: str | Path, need_train: bool = True) -> Stage1Features:
    """Validate a stage-1 sdreid run and read its cached features."""
    run = Path(stage1).expanduser()
    if not run.is_dir():
        raise FileNotFoundError(f"stage-1 run {run} does not exist (expected a run dir from `agreid train --method sdreid`)")
    cfg_path = run / "config.json"
    config = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    feats = run / "features"
    stems = {"train": feats / "train", "test": feats / "test"}
    for split, stem in stems.items():
        if split == "train" and not need_train:
            continue
        if not stem.with_suffix(".json").is_file():
            raise FileNotFoundError(
                f"stage-1 run {run}: {stem.with_suffix('.json')} is missing; stage 2 needs the cached {split} "
                f"FeatureSet of a finished sdreid run (re-run `agreid extract {run} --split {split}`)"
            )
    test_head = json.loads(stems["test"].with_suffix(".json").read_text())
    test_meta = test_head.get("meta", {})
    method = test_meta.get("method", config.get("method"))
    if method not in (None, "sdreid"):
        raise ValueError(f"stage-1 run {run} was trained with method {method!r}; stage 2 needs an sdreid stage-1 run")
    for name in ("id_cond", "view_token", "prebn", "global/view_centres"):
        if name not in test_head.get("tensors", {}):
            raise FeatureSetError(f"stage-1 FeatureSet {stems['test']}.json has no tensor {name!r} (is it an sdreid run?)")
    dim = int(test_head["tensors"]["prebn"][1])
    num_id_layers = int(test_head["tensors"]["id_cond"][1])
    dataset = str(test_meta.get("dataset", ""))
    train = None
    if need_train:
        train = FeatureSet.load(stems["train"])
        missing = [n for base in STAGE1_TRAIN_EXTRAS for n in (base, base + "_flip") if n not in train.extras]
        if missing:
            raise FeatureSetError(
                f"stage-1 train FeatureSet {stems['train']}.json lacks {missing}; stage 2 needs prebn/id_cond/view_token "
                "and their _flip variants (extract the train split with flip on)"
            )
        if train.extras["prebn"].shape[1] != dim or train.extras["id_cond"].shape[1] != num_id_layers:
            raise FeatureSetError(
                f"stage-1 run {run}: train features are {train.extras['prebn'].shape[1]}-d with "
                f"{train.extras['id_cond'].shape[1]} ID tokens but test features are {dim}-d with {num_id_layers}"
            )
        if train.meta.get("dataset", dataset) != dataset:
            raise FeatureSetError(
                f"stage-1 run {run}: train features are from dataset {train.meta.get('dataset')!r}, test from {dataset!r}"
            )
        centres = train.globals.get("view_centres")
    else:
        centres = FeatureSet.load(stems["test"]).globals.get("view_centres")
    if centres is None or centres.ndim != 2 or centres.shape[1] != dim:
        raise FeatureSetError(f"stage-1 run {run}: global view_centres must be (V, {dim}), got {None if centres is None else tuple(centres.shape)}")
    return Stage1Features(run, train, stems["test"], config, dataset, dim, num_id_layers, int(centres.shape[0]), centres.float())


def build_model_config(cfg: Stage2Config, s1: Stage1Features) -> Stage2ModelConfig:
    fixed = dict(dim=s1.dim, num_id_layers=s1.num_id_layers, num_views=s1.num_views)
    clash = {k: v for k, v in cfg.model.items() if k in fixed and v != fixed[k]}
    if clash:
        raise ValueError(f"stage-2 model options {clash} contradict the stage-1 run {s1.run} ({fixed})")
    return Stage2ModelConfig(**{**cfg.model, **fixed})


def _run_config(cfg: Stage2Config, mcfg: Stage2ModelConfig, s1: Stage1Features, T: int) -> dict[str, Any]:
    return {
        "method": METHOD,
        "stage1": str(s1.run.resolve()),
        "data": s1.config.get("data", ""),
        "protocol": s1.config.get("protocol", "ALL"),
        "dataset": s1.dataset,
        "dim": s1.dim,
        "num_train_timesteps": T,
        "stage2": cfg.to_dict(),
        "model": mcfg.to_dict(),
    }


def _check_same_run(existing: dict[str, Any], new: dict[str, Any], path: Path) -> None:
    for key in ("stage1", "dataset", "dim", "num_train_timesteps", "model"):
        if existing.get(key) != new.get(key):
            raise ValueError(
                f"{path} belongs to another stage-2 run ({key} = {existing.get(key)!r}, now {new.get(key)!r}); "
                "use a new --out folder or pass resume=False"
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
    from tqdm.auto import tqdm

    from agreid_kit.diffusion.model import to_latent
    from agreid_kit.diffusion.schedule import add_noise, sample_timesteps

    model.train()
    total, count = 0.0, 0
    for rows in tqdm(batch_iter, desc=f"stage2 epoch {epoch}", leave=False, disable=not progress):
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
    """Train stage 2 on a stage-1 run's cached features; return the stage-2 run dir."""
    from agreid_kit.diffusion.model import SDReIDStage2
    from agreid_kit.diffusion.schedule import alphas_cumprod
    from agreid_kit.engine.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
    from agreid_kit.utils.io import atomic_write_json, atomic_write_text
    from agreid_kit.utils.seed import seed_everything

    cfg = config
    s1 = load_stage1(cfg.stage1)
    mcfg = build_model_config(cfg, s1)
    T = cfg.num_train_timesteps or default_train_timesteps(s1.dataset)
    out = Path(cfg.out).expanduser()
    device = resolve_device(cfg.device)
    run_cfg = _run_config(cfg, mcfg, s1, T)
    ckpt_path = out / "checkpoints" / "last.pt"
    resume = cfg.resume and ckpt_path.is_file()
    if resume:
        _check_same_run(json.loads((out / "config.json").read_text()), run_cfg, out / "config.json")
    atomic_write_json(out / "config.json", run_cfg)

    seed_everything(cfg.seed)
    model = SDReIDStage2(mcfg)
    model.view_centres.copy_(s1.view_centres)
    tr_fs = s1.train
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
    if resume:
        state = load_checkpoint(ckpt_path, method=METHOD)
        from agreid_kit.engine.checkpoint import load_model_state

        load_model_state(model, state["model"], ckpt_path)
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch, iteration, log = state["epoch"] + 1, state["iteration"], list(state["log"])
        restore_rng(state["rng"])

    tr = s1.train
    train = {k: tr.extras[k].float() for base in STAGE1_TRAIN_EXTRAS for k in (base, base + "_flip")}
    train["views"] = tr.views
    if int(train["views"].max()) >= s1.num_views:
        raise FeatureSetError(f"stage-1 train features have view ids {sorted(set(train['views'].tolist()))} but only {s1.num_views} view centres")
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
        log.append(entry)
        atomic_write_text(out / "log.jsonl", "".join(json.dumps(e) + "\n" for e in log))
        state = {
            "method": METHOD, "model_config": mcfg.to_dict(), "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler else None,
            "epoch": epoch, "iteration": iteration, "log": log, "rng": capture_rng(), "run_config": run_cfg,
        }
        save_checkpoint(ckpt_path, state)
        if cfg.checkpoint_every and epoch % cfg.checkpoint_every == 0:
            save_checkpoint(out / "checkpoints" / f"epoch_{epoch:03d}.pt", state)

    # The stage-2 run's test features start as the stage-1 test features (real), then gain gen:<view>.
    test_stem = out / "features" / "test"
    if not test_stem.with_suffix(".json").is_file():
        fs = FeatureSet.load(s1.test_stem)
        fs.meta = {**fs.meta, "method": METHOD, "run": str(out), "stage1_run": str(s1.run)}
        fs.save(test_stem)
    if cfg.generate_after:
        from agreid_kit.diffusion.config import default_tau
        from agreid_kit.diffusion.sample import generate_features

        generate_features(out, tau=cfg.tau or default_tau(s1.dataset), guidance=cfg.guidance, seed=cfg.seed,
                          device=str(device), progress=progress)
    return out


def load_stage2(run_dir: str | Path, device: str = "cpu"):
    """(model in eval mode, run config dict) of a stage-2 run; checks it still matches its stage-1 run."""
    from agreid_kit.diffusion.model import SDReIDStage2
    from agreid_kit.engine.checkpoint import load_checkpoint, load_model_state

    run = Path(run_dir).expanduser()
    cfg_path = run / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{run} is not a stage-2 run: {cfg_path} is missing")
    run_cfg = json.loads(cfg_path.read_text())
    if run_cfg.get("method") != METHOD:
        raise ValueError(f"{cfg_path}: method is {run_cfg.get('method')!r}, expected {METHOD!r} (a stage-2 run)")
    state = load_checkpoint(run / "checkpoints" / "last.pt", method=METHOD)
    mcfg = Stage2ModelConfig.from_dict(state["model_config"])
    # Every weight (the frozen SD ones included) is in the checkpoint: build the UNet from its config only.
    model = SDReIDStage2(mcfg, load_unet_weights=False)
    load_model_state(model, state["model"], run / "checkpoints" / "last.pt")
    return model.to(resolve_device(device)).eval(), run_cfg


def main_from_args(args) -> int:
    """Entry of ``agreid train --method sdreid-stage2`` (routed here by cli/train.py).

    Reads: ``stage1`` (required), ``out`` (required), and if present: ``unet`` (SD-1.5 folder),
    ``preset`` (paper|cpu), ``epochs``, ``batch_size``, ``lr``, ``seed``, ``device``, ``amp``,
    ``timesteps`` (T), ``timestep_sampling`` (cubic|uniform), ``vrd_mechanism``, ``vrd_location``,
    ``learner_depth``, ``id_layers`` (comma list, e.g. "-3,-2,-1"), ``p_uncond``, ``tau``, ``guidance``,
    ``no_generate``, ``no_resume``, ``checkpoint_every``, ``model_opts`` (list of KEY=VALUE JSON values).
    """
    if not getattr(args, "stage1", None):
        raise ValueError("--method sdreid-stage2 needs --stage1 RUN (a finished sdreid stage-1 run dir)")
    if not getattr(args, "out", None):
        raise ValueError("--method sdreid-stage2 needs --out RUN2 (the stage-2 run dir to write)")
    get = lambda name, default=None: getattr(args, name, default) if getattr(args, name, None) is not None else default  # noqa: E731
    model: dict[str, Any] = {}
    if get("unet"):
        from agreid_kit.diffusion.unet import sd_unet_config_path

        sd_unet_config_path(get("unet"))
        model["unet_path"] = str(Path(get("unet")).expanduser().resolve())
    for name in ("vrd_mechanism", "vrd_location", "learner_depth", "p_uncond"):
        if get(name) is not None:
            model[name] = get(name)
    if get("id_layers"):
        raw = get("id_layers")
        model["id_layers"] = [int(v) for v in raw.split(",")] if isinstance(raw, str) else list(raw)
    for item in get("model_opts", []) or []:
        key, _, value = str(item).partition("=")
        try:
            model[key] = json.loads(value)
        except json.JSONDecodeError:
            model[key] = value
    amp = get("amp")
    if isinstance(amp, str):  # cli/train.py's --amp auto|no|bf16|fp16 (the dtype follows the GPU)
        amp = amp != "no"
    preset = get("preset", "cpu")
    cfg = Stage2Config(
        stage1=str(args.stage1), out=str(args.out), preset=preset if preset in ("cpu", "paper") else "cpu",
        model=model, epochs=get("epochs"), batch_size=get("batch_size"), lr=get("lr"), seed=get("seed", 0),
        device=get("device", "auto"), amp=amp, num_train_timesteps=get("timesteps"),
        timestep_sampling=get("timestep_sampling", "cubic"), tau=get("tau"), guidance=get("guidance", 2.0),
        generate_after=not get("no_generate", False), resume=not get("no_resume", False),
        checkpoint_every=get("checkpoint_every", get("ckpt_every", 0)),
    )
    out = train_stage2(cfg)
    print(f"stage 2 trained: {out}")
    return 0
