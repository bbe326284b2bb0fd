"""The training loop every method shares (``agreid train``).

One code path for CPU, one GPU or many (HF accelerate: ``accelerate launch -m agreid_kit.cli train ...``).
Each epoch appends a line to RUN/log.jsonl (and RUN/log.csv): loss parts, lr, validation metrics,
seconds. Checkpoints (model incl. buffers such as SD-ReID's memory bank, optimiser, scheduler, AMP
scaler, sampler and RNG state) are written atomically every ``ckpt_every`` epochs; ``resume=True``
continues from RUN/checkpoints/last.pt and reproduces the uninterrupted run exactly on CPU.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from agreid_kit.data.records import DatasetSplit, Record
from agreid_kit.engine.checkpoint import capture_rng, load_checkpoint, load_model_state, restore_rng, save_checkpoint
from agreid_kit.engine.config import TrainConfig
from agreid_kit.engine.data import carve_validation, load_split
from agreid_kit.engine.schedule import make_optimizer, make_scheduler
from agreid_kit.run import Run
from agreid_kit.utils.progress import progress_bar
from agreid_kit.utils.seed import seed_everything

IterationHook = Callable[[int, int], None]  # (epoch, iteration) -> None, called before each step
# (epoch number, model in training state) -> extra log fields, called after each epoch's validation
EpochHook = Callable[[int, Any], dict]


def _mixed_precision(cfg: TrainConfig) -> str:
    if not torch.cuda.is_available() or cfg.device == "cpu":
        return "no"
    if cfg.amp == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return cfg.amp


def _make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator

    return Accelerator(mixed_precision=_mixed_precision(cfg), cpu=cfg.device == "cpu")


def build_model_for(
    cfg: TrainConfig, num_classes: int, num_views: int, train_records: Sequence[Record] = (), dataset: str = ""
):
    """The model ``cfg`` asks for, with the options its method derives from the data.

    ``dataset`` is the split's dataset name (``DatasetSplit.dataset``) and ``train_records`` its
    training records; the method's ``dataset_options`` turns them into model options (SVPR: the
    attribute vocabulary, none when the records carry no attributes; ViSA: the router top-k of its
    paper, 3 on CARGO / LAGPeR and 2 elsewhere). Options in ``cfg.model`` win over them. They
    become part of the model config (saved in run_meta.json and every checkpoint), so ``load_run``
    rebuilds the same model.
    """
    from agreid_kit.models import create_model, model_class

    overrides = dict(cfg.model)
    cls = model_class(cfg.method)
    if cfg.preset == "paper" and not overrides.get("pretrained"):
        raise ValueError(
            f"the paper preset of {cfg.method!r} starts from pretrained weights: pass --pretrained PATH to "
            f"{cls.paper_weights}; nothing is downloaded at run time. To train from scratch use --preset cpu."
        )
    derived = cls.dataset_options(dataset, train_records, overrides)
    return create_model(cfg.method, cfg.preset, num_classes=num_classes, num_views=num_views,
                        **{**derived, **overrides})


def model_attribute_vocabulary(model) -> dict[str, list[str]]:
    """Attribute name -> value list of a model built with attributes (SVPR); empty otherwise."""
    config = getattr(model, "config", None)
    names = list(getattr(config, "attribute_names", None) or [])
    values = list(getattr(config, "attribute_values", None) or [])
    return {n: list(v) for n, v in zip(names, values)}


def open_image_cache(records: Sequence[Record], size, setting: str, workers: int, verbose: bool = True):
    """The decoded-image cache of ``records`` at ``size`` (None when ``setting`` or the environment turns it off)."""
    from agreid_kit.data.image_cache import ImageCache, resolve_cache_dir

    folder = resolve_cache_dir(setting)
    if folder is None:
        return None
    return ImageCache.open([r.path for r in records], tuple(size), folder, workers=workers, verbose=verbose)


def _to_device(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def validate(model, val: DatasetSplit, cfg: TrainConfig, device, cache=None) -> dict[str, float]:
    """Rank-1 / mAP / mINP of the held-out train ids (never the test set)."""
    from agreid_kit.engine.evaluate import evaluate_featureset_split, metrics_dict
    from agreid_kit.engine.extract import embed_records
    from agreid_kit.features import FeatureSet

    records = val.test_records
    out = embed_records(model, records, cfg.eval_batch_size, 0, device, flip=False, keys=("features", "view_token"),
                        desc="validate", cache=cache)
    fs = FeatureSet(out["features"], records, "val", "validation")
    m = metrics_dict(evaluate_featureset_split(fs, val))
    row = {f"val_{k}": v for k, v in m.items() if k in ("rank1", "mAP", "mINP")}
    head = getattr(model, "view_head", None)
    if head is not None and "view_token" in out:
        # how much view the view token carries: the view head's accuracy on the held-out ids
        was_training = head.training
        head.eval()  # BatchNorm statistics must not move during validation
        with torch.no_grad():
            logits = head(out["view_token"].to(device))
        head.train(was_training)
        logits = logits[1] if isinstance(logits, tuple) else logits
        views = torch.tensor([r.view for r in records], device=logits.device)
        row["val_view_acc"] = float((logits.argmax(1) == views).float().mean())
    return row


def train(
    cfg: TrainConfig,
    split: DatasetSplit | None = None,
    resume: bool = False,
    hook: IterationHook | None = None,
    on_epoch_end: EpochHook | None = None,
    extend_epochs: bool = False,
) -> Path:
    """Train ``cfg.method`` and return the run directory.

    ``split`` overrides loading ``cfg.data``/``cfg.protocol`` (tests, notebooks). ``hook(epoch, it)``
    runs before each optimisation step (progress widgets; tests use it to simulate a crash).
    ``on_epoch_end(epoch, model)`` runs after each epoch (the convergence study scores the test set
    there); the fields it returns are logged with the epoch. It must not draw from torch's RNG.
    ``extend_epochs``: on resume, ``cfg.epochs`` may exceed the run's (the schedule is stretched to the new
    total from here on, logged as ``extended_from``); every other setting must still match.
    """
    threads = torch.get_num_threads()
    try:
        return _train(cfg, split, resume, hook, on_epoch_end, extend_epochs)
    finally:
        torch.set_num_threads(threads)  # cfg.threads applies to this run only


def _train(cfg: TrainConfig, split: DatasetSplit | None, resume: bool, hook: IterationHook | None,
           on_epoch_end: EpochHook | None = None, extend_epochs: bool = False) -> Path:
    from agreid_kit.data.batch_transforms import BatchAugmentConfig, batch_train_augment
    from agreid_kit.data.sampler import PKBatchSampler
    from agreid_kit.data.torchdata import ReIDImageDataset, batch_loader

    run = Run(cfg.out)
    run_dir = run.dir
    extended_from = None
    if resume:
        # Only the run's own settings continue it (the error names the setting and its flag); --extend-epochs
        # lets the epochs grow (the schedule is stretched to the new total from here on).
        extended_from = run.check_resume(cfg, extend_epochs)
    elif run.has_checkpoint:
        raise FileExistsError(f"{run_dir} already holds a training run; pass --resume to continue it or choose another "
                              "--out")

    stale = run.remove_stale_temporaries()
    if stale:
        print(f"{run_dir}: removed {stale} temporary file(s) left by an interrupted write")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    split = split if split is not None else load_split(cfg.data, cfg.protocol)
    train_records, val_split, held_out = carve_validation(split.train, cfg.val_fraction, cfg.min_val_ids, cfg.seed)
    num_classes = len({r.pid for r in train_records})

    accelerator = _make_accelerator(cfg)
    is_main = accelerator.is_main_process
    model = build_model_for(cfg, num_classes, split.num_views, train_records, split.dataset)
    augment = BatchAugmentConfig(model.mean, model.std, cfg.flip_prob, cfg.pad, cfg.erasing_prob)
    cache = open_image_cache(split.train, model.input_size, cfg.image_cache, cfg.num_workers, is_main)
    dataset = ReIDImageDataset(train_records, model.input_size, cache,
                               attribute_values=model_attribute_vocabulary(model))
    sampler = PKBatchSampler(
        [r.pid for r in train_records], cfg.p, cfg.k, cfg.seed, accelerator.num_processes, accelerator.process_index
    )
    loader = batch_loader(dataset, sampler, 0 if cache is not None else cfg.num_workers)
    iters_per_epoch = len(sampler) if cfg.max_iters_per_epoch is None else min(len(sampler), cfg.max_iters_per_epoch)
    if iters_per_epoch == 0:
        raise ValueError(f"P x K = {cfg.p} x {cfg.k}: the training set of {len(train_records)} images yields no full "
                         "batch")
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, iters_per_epoch)
    model, optimizer = accelerator.prepare(model, optimizer)
    core = accelerator.unwrap_model(model)

    start_epoch, log_rows = 0, []
    if resume:
        ckpt_path = run.last_checkpoint_path
        state = load_checkpoint(ckpt_path, method=cfg.method)
        load_model_state(core, state["model"], ckpt_path)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler") is not None and accelerator.scaler is not None:
            accelerator.scaler.load_state_dict(state["scaler"])
        sampler.load_state_dict(state["sampler"])
        restore_rng(state["rng"])
        start_epoch = int(state["epoch"])
        log_rows = [r for r in run.read_log() if r["epoch"] <= start_epoch]
        if is_main:
            print(f"resuming {run_dir} after epoch {start_epoch} of {cfg.epochs}"
                  + (f" (extended from {extended_from} epochs)" if extended_from else ""))
            if extended_from:
                run.write_config(cfg)
                if log_rows:
                    log_rows[-1]["extended_from"] = extended_from
    elif is_main:
        run.write_config(cfg)

    meta = {
        "method": cfg.method,
        "model_config": dataclasses.asdict(core.config),
        "num_classes": num_classes,
        "num_views": split.num_views,
        "val_pids": held_out,
        "num_train_images": len(train_records),
        "dataset": split.dataset,
    }
    if is_main:
        run.write_meta(meta)
        n_params = sum(p.numel() for p in core.parameters())
        print(
            f"{cfg.method} [{cfg.preset}] {n_params / 1e6:.2f}M params; {len(train_records)} train images of "
            f"{num_classes} ids "
            f"(+{len(held_out)} held-out val ids); {iters_per_epoch} iters/epoch of {cfg.p}x{cfg.k}; "
            f"{accelerator.num_processes} process(es) on {accelerator.device}, AMP {accelerator.mixed_precision}"
        )

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        model.train()
        sampler.set_epoch(epoch)
        # every random augmentation choice of the epoch comes from here, in this process: the batches do
        # not depend on the number of loader workers, nor on whether the image cache is used
        aug_gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        sums: dict[str, float] = {}
        n_seen = 0
        bar = progress_bar(total=iters_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", enabled=is_main)
        for it, batch in enumerate(loader):
            if it >= iters_per_epoch:
                break
            if hook is not None:
                hook(epoch, it)
            batch["images"] = batch_train_augment(batch["images"], augment, aug_gen)
            batch = _to_device(batch, accelerator.device)
            batch["images"] = core.batch_augment(batch["images"], batch["views"])
            with accelerator.autocast():
                out = model(batch)
                parts = core.loss(out, batch)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(parts["total"])
            if cfg.grad_clip:
                accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            n_seen += 1
            bar.update(1)
            bar.set_postfix(loss=f"{sums['total'] / n_seen:.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        bar.close()
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": scheduler.get_last_lr()[0], "iters": n_seen}
        row.update({f"loss_{k}": v / max(1, n_seen) for k, v in sums.items()})
        row["train_seconds"] = time.perf_counter() - t0
        last = epoch + 1 == cfg.epochs
        if val_split is not None and is_main and ((epoch + 1) % cfg.val_every == 0 or last):
            row.update(validate(core, val_split, cfg, accelerator.device, cache))
        if on_epoch_end is not None and is_main:
            row.update(on_epoch_end(epoch + 1, core))
        row["seconds"] = time.perf_counter() - t0
        log_rows.append(row)
        if is_main:
            run.write_log(log_rows)
            summary = " ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float) and k != "seconds")
            print(f"epoch {epoch + 1}/{cfg.epochs} {summary} ({row['seconds']:.1f}s)")
        if (epoch + 1) % cfg.ckpt_every == 0 or last:
            accelerator.wait_for_everyone()
            if is_main:
                _save(run, cfg, core, optimizer, scheduler, accelerator, sampler, epoch + 1, meta)
    accelerator.wait_for_everyone()
    if cfg.extract_after and is_main:
        from agreid_kit.engine.evaluate import evaluate_run
        from agreid_kit.engine.extract import extract_features
        from agreid_kit.run import load_run

        done = load_run(run_dir, device=str(accelerator.device))
        for which in cfg.extract_splits:
            extract_features(done, which, data=split, num_workers=cfg.num_workers, image_cache=cfg.image_cache)
        protocols = cfg.eval_protocols or [cfg.protocol]
        splits = {cfg.protocol: split}  # the others load through the data spec
        metrics = evaluate_run(run_dir, protocols, splits=splits)
        from agreid_kit.engine.evaluate import format_table

        print(format_table(metrics))
    return run_dir


def _save(run: Run, cfg: TrainConfig, core, optimizer, scheduler, accelerator, sampler, epoch: int, meta: dict) -> None:
    state = {
        "method": cfg.method,
        "model_config": meta["model_config"],
        "meta": meta,
        "epoch": epoch,
        "model": {k: v.detach().cpu() for k, v in core.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
        "sampler": {"seed": sampler.seed, "epoch": epoch},
        "rng": capture_rng(),
    }
    last = run.last_checkpoint_path
    save_checkpoint(last, state)
    if cfg.keep_epoch_checkpoints > 0:
        import os

        target = run.epoch_checkpoint_path(epoch)
        if target.exists():
            target.unlink()
        try:
            os.link(last, target)  # a hard link: no second copy on disk
        except OSError:
            import shutil

            shutil.copy2(last, target)
        old = sorted(run.checkpoints_dir.glob("epoch_*.pt"))[: -cfg.keep_epoch_checkpoints]
        for path in old:
            path.unlink()
