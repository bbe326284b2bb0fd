"""``agreid train``: train any method of the method table (``agreid_kit.models``): the engine methods
(vit, sdreid stage 1, vdt, vif, visa, svpr) through the shared engine, SD-ReID stage 2 through its own trainer.

Both stages speak one vocabulary: ``--resume`` continues RUN with its own settings (a different setting is
an error naming the flag), ``--overwrite`` starts it again from scratch, ``--batch-size``,
``--checkpoint-every`` and ``--model-opt KEY=VALUE`` (KEY checked against the model config) mean the same
in both. Old spellings keep working, hidden (``agreid_kit.cli._options.DEPRECATED_ALIASES``).

Multi-GPU: ``accelerate launch -m agreid_kit.cli train ...`` runs the same code on every process.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from agreid_kit.cli import CLIError
from agreid_kit.cli._options import add_deprecated_alias, config_keys, parse_key_values


def register(subparsers) -> None:
    from agreid_kit.engine.config import AMP_MODES, OPTIMIZERS, TRAIN_PRESETS
    from agreid_kit.models import available_methods, method_spec

    methods = available_methods()
    p = subparsers.add_parser(
        "train",
        help="train a model (" + ", ".join(methods) + ")",
        description="Train a method into RUN (config.json, log.jsonl/csv, checkpoints/, features/, metrics.json). "
        "An interrupted run continues with `agreid train --out RUN --resume`. Methods: "
        + "; ".join(f"{m}: {method_spec(m).summary}" for m in methods),
    )
    p.add_argument("--method", choices=methods, help="which method to train")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--preset", choices=tuple(TRAIN_PRESETS), default=None,
                   help="paper: the method's paper recipe at ViT-B/16 (needs --pretrained; SVPR: a CLIP file, Adam "
                        "5e-6; "
                   "stage 2: --unet); cpu (default): the shared small-model recipe")
    p.add_argument("--resume", action="store_true",
                   help="continue RUN from checkpoints/last.pt with its saved settings (a different setting is an "
                        "error)")
    p.add_argument("--overwrite", action="store_true", help="train RUN again from scratch, replacing the run it holds")
    p.add_argument("--extend-epochs", action="store_true",
                   help="with --resume and --epochs N: train a finished or running run further, to N epochs (logged)")
    p.add_argument("--epochs", type=int, help="number of epochs (preset default otherwise)")
    p.add_argument("--batch-size", type=int, nargs="+", metavar="N",
                   help="samples per step: N (stage 1: N = P x K images, K from the preset), or stage 1's P K "
                   "(identities per batch, images per identity)")
    p.add_argument("--lr", type=float, help="base learning rate")
    p.add_argument("--weight-decay", type=float, help="weight decay (decoupled for adamw)")
    p.add_argument("--warmup-iters", type=int, help="linear warm-up iterations")
    p.add_argument("--amp", choices=AMP_MODES, help="mixed precision on GPU (auto: bf16 where supported)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="auto uses a GPU when there is one")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest on an oversubscribed machine)")
    p.add_argument("--val-every", type=int, help="validate every N epochs")
    p.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="checkpoint every N epochs (stage 2: last.pt every epoch, an epoch_XXX.pt every N)")
    p.add_argument("--model-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="model config option, VALUE as JSON (e.g. depth=8, lambda_view=0.001, vrd_location=both); "
                   "KEY must be a field of the method's model config; repeatable")
    s1 = p.add_argument_group("stage 1 (engine methods)")
    s1.add_argument("--data", help="dataset spec NAME:DIR, e.g. synthag:runs/synthag-small or cargo:/data/CARGO")
    s1.add_argument("--protocol", default=None,
                    help="protocol whose train split is used (default ALL); also evaluated at the end")
    s1.add_argument("--optimizer", choices=OPTIMIZERS)
    s1.add_argument("--num-workers", type=int, help="DataLoader worker processes")
    s1.add_argument("--image-cache", metavar="auto|off|DIR",
                    help="decoded-image cache: auto (default: $AGREID_IMAGE_CACHE or ~/.cache/agreid-kit/images), off, "
                         "or a folder")
    s1.add_argument("--pretrained",
                    help="local timm ImageNet ViT weights file (.safetensors/.pth); required by --preset paper")
    s1.add_argument("--val-fraction", type=float, help="share of train ids held out for validation (0 disables)")
    s1.add_argument("--max-iters-per-epoch", type=int, help="cap iterations per epoch (smoke runs)")
    s1.add_argument("--eval-protocols", nargs="+", help="protocols evaluated at the end (default: --protocol)")
    s1.add_argument("--no-extract", action="store_true", help="skip feature extraction and evaluation at the end")
    s2 = p.add_argument_group("SD-ReID stage 2 (--method sdreid-stage2)")
    s2.add_argument("--stage1", help="finished sdreid stage-1 run directory")
    s2.add_argument("--unet",
                    help="local Stable Diffusion 1.5 folder (its unet/ is loaded); omit for a small UNet from scratch")
    s2.add_argument("--timesteps", type=int, help="diffusion steps T")
    s2.add_argument("--timestep-sampling", choices=("cubic", "uniform"))
    s2.add_argument("--vrd-mechanism", help="View-Refine Decoder mechanism (conv|pool|proj)")
    s2.add_argument("--vrd-location", help="where VRD residuals go (down|up|both|none)")
    s2.add_argument("--learner-depth", type=int, help="condition-learner transformer layers")
    s2.add_argument("--id-layers", help="ID-condition layers, comma list, e.g. -3,-2,-1")
    s2.add_argument("--p-uncond", type=float, help="classifier-free-guidance dropout probability")
    s2.add_argument("--tau", type=int, help="denoising steps at generation")
    s2.add_argument("--guidance", type=float, help="CFG scale w")
    s2.add_argument("--no-generate", action="store_true", help="do not generate test features after training")
    # the old spellings (hidden; they print what to type instead)
    add_deprecated_alias(p, "--model-opts", "model_opt", mode="extend", nargs="*")
    add_deprecated_alias(p, "--ckpt-every", "checkpoint_every", type=int)
    add_deprecated_alias(p, "--batch", "batch_size", type=int, nargs=2)
    add_deprecated_alias(p, "--no-resume", "overwrite", mode="store_true")
    p.set_defaults(func=run)


# ---- stage 1 ---------------------------------------------------------------------------------------
# flag dest -> TrainConfig field, for the flags that set one field directly
_STAGE1_FIELDS = {
    "epochs": "epochs", "lr": "lr", "weight_decay": "weight_decay", "warmup_iters": "warmup_iters",
    "optimizer": "optimizer", "amp": "amp", "device": "device", "seed": "seed", "num_workers": "num_workers",
    "threads": "threads", "image_cache": "image_cache", "val_fraction": "val_fraction", "val_every": "val_every",
    "checkpoint_every": "ckpt_every", "max_iters_per_epoch": "max_iters_per_epoch", "eval_protocols": "eval_protocols",
    "data": "data", "protocol": "protocol", "method": "method", "preset": "preset",
}


def _stage1_batch(args, method: str, preset: str) -> dict[str, int]:
    if not args.batch_size:
        return {}
    if len(args.batch_size) == 2:
        return {"p": args.batch_size[0], "k": args.batch_size[1]}
    if len(args.batch_size) != 1:
        raise CLIError(f"--batch-size takes N or P K, got {len(args.batch_size)} values")
    from agreid_kit.engine.config import method_recipe

    n, k = args.batch_size[0], method_recipe(method, preset)["k"]
    if n % k or n < k:
        raise CLIError(f"--batch-size {n}: stage-1 batches are P identities x K = {k} images; give a multiple of {k} "
                       "or --batch-size P K")
    return {"p": n // k, "k": k}


def _stage1_model_opts(args, method: str) -> dict[str, Any]:
    from agreid_kit.models import model_class

    cls = model_class(method)
    # the engine sets the class and view counts from the data
    valid = config_keys(cls.config_class, exclude=("num_classes", "num_views"))
    model = parse_key_values(args.model_opt, valid, "--model-opt", f"{method}'s {cls.config_class.__name__}")
    if args.pretrained:
        model["pretrained"] = args.pretrained
    return model


def _stage1_values(args, method: str, preset: str) -> dict[str, Any]:
    """The TrainConfig fields the typed flags set (nothing for flags not typed)."""
    values = {field: getattr(args, dest) for dest,
              field in _STAGE1_FIELDS.items() if getattr(args, dest, None) is not None}
    values.update(_stage1_batch(args, method, preset))
    if args.no_extract:
        values["extract_after"] = False
    return values


def config_from_args(args):
    """A TrainConfig from parsed CLI arguments (preset defaults for anything not given)."""
    from agreid_kit.engine.config import TrainConfig

    if not args.method:
        raise CLIError("--method is required (one of the method table: `agreid train --help` lists them)")
    if not args.data:
        raise CLIError("--data NAME:DIR is required, e.g. --data synthag:runs/synthag-small")
    from agreid_kit.data import available_protocols, parse_data_spec

    name, _ = parse_data_spec(args.data)
    protocol = args.protocol or "ALL"
    valid = available_protocols(name)
    for proto in [protocol, *(args.eval_protocols or [])]:
        if proto not in valid:
            raise ValueError(f"protocol {proto!r} is not a protocol of dataset {name!r}; valid: {valid}")
    preset = args.preset or "cpu"
    values = {**_stage1_values(args, args.method, preset), "protocol": protocol, "preset": preset}
    return TrainConfig(out=str(args.out), model=_stage1_model_opts(args, args.method), **values)


def resume_config(run, args: argparse.Namespace):
    """The saved config of ``run`` (located where it lives now) with the typed flags applied; ``train``'s
    resume check then refuses any that change the run's settings, naming the flag."""
    cfg = run.config
    values = _stage1_values(args, cfg.method, cfg.preset)
    if args.model_opt or args.pretrained:
        values["model"] = {**cfg.model, **_stage1_model_opts(args, cfg.method)}
    return dataclasses.replace(cfg, **values)


# ---- stage 2 ---------------------------------------------------------------------------------------
_STAGE2_FIELDS = {
    "epochs": "epochs", "lr": "lr", "weight_decay": "weight_decay", "warmup_iters": "warmup_iters", "seed": "seed",
    "device": "device", "threads": "threads", "val_every": "val_every", "checkpoint_every": "checkpoint_every",
    "timesteps": "num_train_timesteps", "timestep_sampling": "timestep_sampling", "tau": "tau", "guidance": "guidance",
    "preset": "preset", "stage1": "stage1",
}
_STAGE2_MODEL_FLAGS = ("vrd_mechanism", "vrd_location", "learner_depth", "p_uncond")
_STAGE1_ONLY = ("data", "protocol", "optimizer", "num_workers", "image_cache", "pretrained", "val_fraction",
                "max_iters_per_epoch", "eval_protocols")


def _stage2_model_opts(args) -> dict[str, Any]:
    from agreid_kit.diffusion.config import Stage2ModelConfig

    # dim, token count and views come from the stage-1 run
    valid = config_keys(Stage2ModelConfig, exclude=("dim", "num_id_layers", "num_views"))
    model = parse_key_values(args.model_opt, valid, "--model-opt", "the stage-2 model (Stage2ModelConfig)")
    if args.unet:
        from pathlib import Path

        from agreid_kit.diffusion.unet import sd_unet_config_path

        sd_unet_config_path(args.unet)
        model["unet_path"] = str(Path(args.unet).expanduser().resolve())
    for name in _STAGE2_MODEL_FLAGS:
        if getattr(args, name, None) is not None:
            model[name] = getattr(args, name)
    if args.id_layers:
        model["id_layers"] = [int(v) for v in args.id_layers.split(",")]
    return model


def _stage2_values(args) -> dict[str, Any]:
    """The Stage2Config fields the typed flags set."""
    typed = [f"--{d.replace('_', '-')}" for d in _STAGE1_ONLY if getattr(args, d, None)]
    if typed:
        raise CLIError(f"{', '.join(typed)}: stage-1 option(s); stage 2 reads its data from --stage1 RUN")
    values = {field: getattr(args, dest) for dest,
              field in _STAGE2_FIELDS.items() if getattr(args, dest, None) is not None}
    if args.batch_size:
        if len(args.batch_size) != 1:
            raise CLIError("--batch-size: stage-2 batches are N features (--batch-size N)")
        values["batch_size"] = args.batch_size[0]
    if args.amp is not None:
        values["amp"] = args.amp != "no"  # the dtype follows the GPU
    if args.no_generate:
        values["generate_after"] = False
    return values


def stage2_config_from_args(args, saved=None):
    """A Stage2Config from parsed CLI arguments; ``saved`` (a stage-2 run's config) for ``--resume``."""
    from agreid_kit.diffusion.config import Stage2Config

    values = _stage2_values(args)
    model = _stage2_model_opts(args)
    if saved is not None:
        base = Stage2Config.from_dict(saved.stage2)
        return dataclasses.replace(base, **values, model={**base.model, **model}, out=str(args.out), resume=True)
    if not args.stage1:
        raise CLIError("--method sdreid-stage2 needs --stage1 RUN (a finished sdreid stage-1 run dir)")
    return Stage2Config(out=str(args.out), model=model, **values)


# ---- the command -----------------------------------------------------------------------------------
def _interrupted(run) -> int:
    from agreid_kit.engine.checkpoint import last_epoch

    done = last_epoch(run.dir) if run.has_checkpoint else 0
    print(f"\ninterrupted: {run.dir} holds a checkpoint after epoch {done}; continue with `agreid train --out "
          f"{run.dir} "
          "--resume`" if done else "\ninterrupted before the first checkpoint", file=sys.stderr)
    return 130


def run(args: argparse.Namespace) -> int:
    import shutil

    from agreid_kit.models import method_spec
    from agreid_kit.run import Run

    target = Run(args.out)
    if args.resume and args.overwrite:
        raise CLIError("--resume continues RUN, --overwrite starts it again: pass one of them")
    if args.resume:
        if not target.exists:
            raise CLIError(f"--resume: {args.out} is not a run folder (config.json is missing); start it without "
                           "--resume")
        if args.method and args.method != target.method:
            raise CLIError(f"--resume: {args.out} is a run of --method {target.method}, you gave --method "
                           f"{args.method}")
        method = target.method
    else:
        if not args.method:
            raise CLIError("--method is required (one of the method table: `agreid train --help` lists them)")
        method = args.method
    spec = method_spec(method)
    implicit_resume = False
    if not args.resume and target.has_checkpoint:
        if args.overwrite:
            print(f"--overwrite: removing the run in {target.dir}", file=sys.stderr)
            shutil.rmtree(target.dir)
        elif spec.kind == "stage2":
            # Stage 2 used to resume without a flag: still does, with a note (like stage 1, type --resume).
            print(f"agreid train: {target.dir} holds a stage-2 run: continuing it; resuming without --resume is "
                  "deprecated (pass --resume, or --overwrite to start again)", file=sys.stderr)
            implicit_resume = True
        else:
            raise CLIError(f"--out {args.out} already holds a training run: continue it with `agreid train --out "
                           f"{args.out} "
                           "--resume`, start it again with --overwrite, or choose another --out")
    trainer = spec.trainer()
    try:
        if spec.kind == "stage2":
            cfg = stage2_config_from_args(args, saved=target.config if args.resume else None)
            if args.resume and not target.has_checkpoint:
                raise CLIError(f"--resume: no checkpoint in {target.dir}; start without --resume")
            if not (args.resume or implicit_resume):
                cfg = dataclasses.replace(cfg, resume=False)
            run_dir = trainer(cfg)
        elif args.resume:
            run_dir = trainer(resume_config(target, args), resume=True, extend_epochs=bool(args.extend_epochs))
        else:
            run_dir = trainer(config_from_args(args))
    except KeyboardInterrupt:
        return _interrupted(target)
    print(f"run written to {run_dir}")
    return 0
