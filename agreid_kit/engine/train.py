"""The training loop every method shares (``agreid train``).

One code path for CPU, one GPU or many (HF accelerate: ``accelerate launch -m agreid_kit.cli train ...``).
Each epoch appends a line to RUN/log.jsonl (and RUN/log.csv): loss parts, lr, validation metrics,
seconds. Checkpoints (model incl. buffers such as SD-ReID's memory bank, optimiser, scheduler, AMP
scaler, sampler and RNG state) are written atomically every ``ckpt_every`` epochs; ``resume=True``
continues from RUN/checkpoints/last.pt and reproduces the uninterrupted run exactly on CPU.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from agreid_kit.data.records import DatasetSplit, Record
from agreid_kit.engine.checkpoint import capture_rng, load_checkpoint, load_model_state, restore_rng, save_checkpoint
from agreid_kit.engine.config import TrainConfig
from agreid_kit.engine.data import carve_validation, load_split
from agreid_kit.engine.schedule import make_optimizer, make_scheduler
from agreid_kit.utils.io import atomic_write_json, atomic_write_text
from agreid_kit.utils.seed import seed_everything

IterationHook = Callable[[int, int], None]  # (epoch, iteration) -> None, called before each step


def _mixed_precision(cfg: TrainConfig) -> str:
    if not torch.cuda.is_available() or cfg.device == "cpu":
        return "no"
    if cfg.amp == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return cfg.amp


def _make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator

    return Accelerator(mixed_precision=_mixed_precision(cfg), cpu=cfg.device == "cpu")


def build_model_for(cfg: TrainConfig, num_classes: int, num_views: int, train_records: Sequence[Record] = ()):
    """The model ``cfg`` asks for; SVPR also gets the attribute vocabulary of ``train_records``.

    The vocabulary becomes part of the model config (saved in run_meta.json and every checkpoint),
    so ``load_run`` rebuilds the same attribute classifiers. Records without attributes leave
    SVPR's attribute branch off (A = 0).
    """
    from agreid_kit.models import create_model

    overrides = dict(cfg.model)
    if cfg.preset == "paper" and not overrides.get("pretrained"):
        raise ValueError(
            "the paper preset starts from ImageNet weights: pass --pretrained PATH to a local timm ViT-B/16 file "
            "(e.g. model.safetensors of timm/vit_base_patch16_224.augreg2_in21k_ft_in1k, downloaded beforehand); "
            "nothing is downloaded at run time. To train from scratch use --preset cpu."
        )
    if cfg.method == "svpr" and "attribute_values" not in overrides and any(r.attributes for r in train_records):
        from agreid_kit.models.svpr import svpr_attribute_options

        # attribute_names given alone (--model attribute_names=[...]) picks a subset; the values come from the data
        overrides.update(svpr_attribute_options(train_records, overrides.get("attribute_names") or None))
    return create_model(cfg.method, cfg.preset, num_classes=num_classes, num_views=num_views, **overrides)


def model_attribute_vocabulary(model) -> dict[str, list[str]]:
    """Attribute name -> value list of a model built with attributes (SVPR); empty otherwise."""
    config = getattr(model, "config", None)
    names = list(getattr(config, "attribute_names", None) or [])
    values = list(getattr(config, "attribute_values", None) or [])
    return {n: list(v) for n, v in zip(names, values)}


def _to_device(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_log(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(run_dir / "log.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    keys = sorted({k for r in rows for k in r})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(run_dir / "log.csv", buf.getvalue())


def validate(model, val: DatasetSplit, cfg: TrainConfig, device) -> dict[str, float]:
    """Rank-1 / mAP / mINP of the held-out train ids (never the test set)."""
    from agreid_kit.engine.extract import embed_records
    from agreid_kit.engine.evaluate import evaluate_featureset_split, metrics_dict
    from agreid_kit.features import FeatureSet

    records = val.test_records
    out = embed_records(model, records, cfg.eval_batch_size, 0, device, flip=False, keys=("features",), desc="validate")
    fs = FeatureSet(out["features"], records, "val", "validation")
    m = metrics_dict(evaluate_featureset_split(fs, val))
    return {f"val_{k}": v for k, v in m.items() if k in ("rank1", "mAP", "mINP")}


def train(
    cfg: TrainConfig,
    split: DatasetSplit | None = None,
    resume: bool = False,
    hook: IterationHook | None = None,
) -> Path:
    """Train ``cfg.method`` and return the run directory.

    ``split`` overrides loading ``cfg.data``/``cfg.protocol`` (tests, notebooks). ``hook(epoch, it)``
    runs before each optimisation step (progress widgets; tests use it to simulate a crash).
    """
    threads = torch.get_num_threads()
    try:
        return _train(cfg, split, resume, hook)
    finally:
        torch.set_num_threads(threads)  # cfg.threads applies to this run only


def _train(cfg: TrainConfig, split: DatasetSplit | None, resume: bool, hook: IterationHook | None) -> Path:
    from tqdm.auto import tqdm

    from agreid_kit.data.sampler import PKBatchSampler
    from agreid_kit.data.torchdata import ReIDImageDataset, train_loader
    from agreid_kit.data.transforms import TransformConfig, train_transform

    run_dir = Path(cfg.out)
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    if resume:
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}; start without --resume")
        saved = json.loads((run_dir / "config.json").read_text())
        given = json.loads(json.dumps(cfg.to_dict()))  # tuples -> lists, as config.json stores them
        # num_workers does not change the result (workers are seeded), so it may differ on resume.
        diff = {k: (v, given.get(k)) for k, v in saved.items() if given.get(k) != v and k != "num_workers"}
        if diff:
            raise ValueError(f"--resume: the options differ from the run's config.json in {run_dir}: {diff} (saved, given)")
    elif ckpt_path.is_file():
        raise FileExistsError(f"{run_dir} already holds a training run; pass --resume to continue it or choose another --out")

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    split = split if split is not None else load_split(cfg.data, cfg.protocol)
    train_records, val_split, held_out = carve_validation(split.train, cfg.val_fraction, cfg.min_val_ids, cfg.seed)
    num_classes = len({r.pid for r in train_records})

    accelerator = _make_accelerator(cfg)
    is_main = accelerator.is_main_process
    model = build_model_for(cfg, num_classes, split.num_views, train_records)
    tcfg = TransformConfig(model.input_size, model.mean, model.std, cfg.flip_prob, cfg.pad, cfg.erasing_prob)
    dataset = ReIDImageDataset(train_records, train_transform(tcfg), attribute_values=model_attribute_vocabulary(model))
    sampler = PKBatchSampler(
        [r.pid for r in train_records], cfg.p, cfg.k, cfg.seed, accelerator.num_processes, accelerator.process_index
    )
    loader = train_loader(dataset, sampler, cfg.num_workers, cfg.seed)
    iters_per_epoch = len(sampler) if cfg.max_iters_per_epoch is None else min(len(sampler), cfg.max_iters_per_epoch)
    if iters_per_epoch == 0:
        raise ValueError(f"P x K = {cfg.p} x {cfg.k}: the training set of {len(train_records)} images yields no full batch")
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, iters_per_epoch)
    model, optimizer = accelerator.prepare(model, optimizer)
    core = accelerator.unwrap_model(model)

    start_epoch, log_rows = 0, []
    if resume:
        state = load_checkpoint(ckpt_path, method=cfg.method)
        load_model_state(core, state["model"], ckpt_path)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler") is not None and accelerator.scaler is not None:
            accelerator.scaler.load_state_dict(state["scaler"])
        sampler.load_state_dict(state["sampler"])
        restore_rng(state["rng"])
        start_epoch = int(state["epoch"])
        log_rows = [r for r in _read_log(run_dir / "log.jsonl") if r["epoch"] <= start_epoch]
        if is_main:
            print(f"resuming {run_dir} after epoch {start_epoch} of {cfg.epochs}")
    elif is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "config.json", cfg.to_dict())

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
        atomic_write_json(run_dir / "run_meta.json", meta)
        n_params = sum(p.numel() for p in core.parameters())
        print(
            f"{cfg.method} [{cfg.preset}] {n_params / 1e6:.2f}M params; {len(train_records)} train images of {num_classes} ids "
            f"(+{len(held_out)} held-out val ids); {iters_per_epoch} iters/epoch of {cfg.p}x{cfg.k}; "
            f"{accelerator.num_processes} process(es) on {accelerator.device}, AMP {accelerator.mixed_precision}"
        )

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        model.train()
        sampler.set_epoch(epoch)
        loader.generator.manual_seed(cfg.seed * 100_003 + epoch)  # deterministic worker seeds per epoch
        sums: dict[str, float] = {}
        n_seen = 0
        bar = tqdm(total=iters_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not is_main, leave=False)
        for it, batch in enumerate(loader):
            if it >= iters_per_epoch:
                break
            if hook is not None:
                hook(epoch, it)
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
            row.update(validate(core, val_split, cfg, accelerator.device))
        row["seconds"] = time.perf_counter() - t0
        log_rows.append(row)
        if is_main:
            _write_log(run_dir, log_rows)
            summary = " ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float) and k != "seconds")
            print(f"epoch {epoch + 1}/{cfg.epochs} {summary} ({row['seconds']:.1f}s)")
        if (epoch + 1) % cfg.ckpt_every == 0 or last:
            accelerator.wait_for_everyone()
            if is_main:
                _save(run_dir, cfg, core, optimizer, scheduler, accelerator, sampler, epoch + 1, meta)
    accelerator.wait_for_everyone()
    if cfg.extract_after and is_main:
        from agreid_kit.engine.evaluate import evaluate_run
        from agreid_kit.engine.extract import extract_features
        from agreid_kit.engine.run import load_run

        run = load_run(run_dir, device=str(accelerator.device))
        extract_features(run, "train", data=split, num_workers=cfg.num_workers)
        extract_features(run, "test", data=split, num_workers=cfg.num_workers)
        protocols = cfg.eval_protocols or [cfg.protocol]
        splits = {cfg.protocol: split}  # the others load through the data spec
        metrics = evaluate_run(run_dir, protocols, splits=splits)
        from agreid_kit.engine.evaluate import format_table

        print(format_table(metrics))
    return run_dir


def _save(run_dir: Path, cfg: TrainConfig, core, optimizer, scheduler, accelerator, sampler, epoch: int, meta: dict) -> None:
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
    ckpt_dir = run_dir / "checkpoints"
    save_checkpoint(ckpt_dir / "last.pt", state)
    if cfg.keep_epoch_checkpoints > 0:
        import os

        target = ckpt_dir / f"epoch_{epoch:03d}.pt"
        if target.exists():
            target.unlink()
        try:
            os.link(ckpt_dir / "last.pt", target)  # a hard link: no second copy on disk
        except OSError:
            import shutil

            shutil.copy2(ckpt_dir / "last.pt", target)
        old = sorted(ckpt_dir.glob("epoch_*.pt"))[: -cfg.keep_epoch_checkpoints]
        for path in old:
            path.unlink()
