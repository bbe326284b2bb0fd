"""``agreid train``: train a ReID model (vit, sdreid stage 1, vdt, vif, visa, svpr) or SD-ReID stage 2.

Multi-GPU: ``accelerate launch -m agreid_kit.cli train ...`` runs the same code on every process.
"""

from __future__ import annotations

import argparse
import json
import sys

from agreid_kit.cli import CLIError

STAGE2 = "sdreid-stage2"
_METHODS = ("vit", "sdreid", "vdt", "vif", "visa", "svpr", STAGE2)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model (stage-1 methods through the shared engine; sdreid-stage2 through the diffusion trainer)",
        description="Train a ReID model into RUN (config.json, log.jsonl/csv, checkpoints/, features/, metrics.json). "
        "An interrupted run continues with `agreid train --out RUN --resume`.",
    )
    p.add_argument("--method", choices=_METHODS, help="which system to train")
    p.add_argument("--data", help="dataset spec NAME:DIR, e.g. synthag:runs/synthag-small or cargo:/data/CARGO")
    p.add_argument("--protocol", default=None, help="protocol whose train split is used (default ALL); also evaluated at the end")
    p.add_argument("--preset", choices=("paper", "cpu"), default="cpu", help="paper: the method's paper recipe at ViT-B/16 (needs --pretrained; SVPR: a CLIP file, Adam 5e-6); cpu: the shared small-model recipe")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--resume", action="store_true", help="continue RUN from checkpoints/last.pt with its saved config")
    p.add_argument("--extend-epochs", action="store_true",
                   help="with --resume and --epochs N: train a finished or running run further, to N epochs (logged)")
    p.add_argument("--epochs", type=int, help="number of epochs (preset default otherwise)")
    p.add_argument("--batch", type=int, nargs=2, metavar=("P", "K"), help="identities per batch and images per identity")
    p.add_argument("--lr", type=float, help="base learning rate")
    p.add_argument("--weight-decay", type=float, help="weight decay (decoupled for adamw)")
    p.add_argument("--warmup-iters", type=int, help="linear warm-up iterations")
    p.add_argument("--optimizer", choices=("sgd", "adam", "adamw"))
    p.add_argument("--amp", choices=("auto", "no", "bf16", "fp16"), help="mixed precision on GPU (auto: bf16 where supported)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="auto uses a GPU when there is one")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--num-workers", type=int, help="DataLoader worker processes")
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest on an oversubscribed machine)")
    p.add_argument("--image-cache", metavar="auto|off|DIR",
                   help="decoded-image cache: auto (default: $AGREID_IMAGE_CACHE or ~/.cache/agreid-kit/images), off, or a folder")
    p.add_argument("--pretrained", help="local timm ImageNet ViT weights file (.safetensors/.pth); required by --preset paper")
    p.add_argument("--val-fraction", type=float, help="share of train ids held out for validation (0 disables)")
    p.add_argument("--val-every", type=int, help="validate every N epochs")
    p.add_argument("--ckpt-every", type=int, help="checkpoint every N epochs")
    p.add_argument("--max-iters-per-epoch", type=int, help="cap iterations per epoch (smoke runs)")
    p.add_argument("--eval-protocols", nargs="+", help="protocols evaluated at the end (default: --protocol)")
    p.add_argument("--no-extract", action="store_true", help="skip feature extraction and evaluation at the end")
    p.add_argument("--model-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="model config override, VALUE as JSON (e.g. depth=8, lambda_view=0.001); repeatable")
    s2 = p.add_argument_group("SD-ReID stage 2 (--method sdreid-stage2)")
    s2.add_argument("--stage1", help="finished sdreid stage-1 run directory")
    s2.add_argument("--unet", help="local Stable Diffusion 1.5 folder (its unet/ is loaded); omit for a small UNet from scratch")
    s2.add_argument("--batch-size", type=int)
    s2.add_argument("--timesteps", type=int, help="diffusion steps T")
    s2.add_argument("--timestep-sampling", choices=("cubic", "uniform"))
    s2.add_argument("--vrd-mechanism", help="View-Refine Decoder mechanism (conv|pool|proj)")
    s2.add_argument("--vrd-location", help="where VRD residuals go (down|up|both)")
    s2.add_argument("--learner-depth", type=int, help="condition-learner transformer layers")
    s2.add_argument("--id-layers", help="ID-condition layers, comma list, e.g. -3,-2,-1")
    s2.add_argument("--p-uncond", type=float, help="classifier-free-guidance dropout probability")
    s2.add_argument("--tau", type=int, help="denoising steps at generation")
    s2.add_argument("--guidance", type=float, help="CFG scale w")
    s2.add_argument("--no-generate", action="store_true", help="do not generate test features after training")
    s2.add_argument("--no-resume", action="store_true", help="stage 2: start over instead of resuming")
    s2.add_argument("--checkpoint-every", type=int)
    s2.add_argument("--model-opts", nargs="*", metavar="KEY=VALUE", help="stage-2 model overrides (JSON values)")
    p.set_defaults(func=run)


def _model_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--model-opt {item!r}: expected KEY=VALUE, e.g. depth=8")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a bare string such as an arch name
    return out


def config_from_args(args):
    """A TrainConfig from parsed CLI arguments (preset defaults for anything not given)."""
    from agreid_kit.engine.config import make_config

    if not args.method:
        raise ValueError("--method is required (vit, sdreid, vdt, vif, visa, svpr or sdreid-stage2)")
    if not args.data:
        raise ValueError("--data NAME:DIR is required, e.g. --data synthag:runs/synthag-small")
    from agreid_kit.data import available_protocols, parse_data_spec

    name, _ = parse_data_spec(args.data)
    protocol = args.protocol or "ALL"
    valid = available_protocols(name)
    for proto in [protocol, *(args.eval_protocols or [])]:
        if proto not in valid:
            raise ValueError(f"protocol {proto!r} is not a protocol of dataset {name!r}; valid: {valid}")
    model = _model_overrides(args.model_opt)
    if args.pretrained:
        model["pretrained"] = args.pretrained
    p, k = args.batch if args.batch else (None, None)
    return make_config(
        args.method, args.out, preset=args.preset, data=args.data, protocol=protocol, model=model,
        epochs=args.epochs, p=p, k=k, lr=args.lr, weight_decay=args.weight_decay, warmup_iters=args.warmup_iters,
        image_cache=args.image_cache, optimizer=args.optimizer, amp=args.amp, device=args.device,
        seed=args.seed, num_workers=args.num_workers, threads=args.threads, val_fraction=args.val_fraction, val_every=args.val_every,
        ckpt_every=args.ckpt_every, max_iters_per_epoch=args.max_iters_per_epoch,
        eval_protocols=args.eval_protocols, extract_after=False if args.no_extract else None,
    )


# flag -> TrainConfig field, for the flags that may be typed again with --resume
_RESUME_FLAGS = {
    "epochs": "epochs", "lr": "lr", "weight_decay": "weight_decay", "warmup_iters": "warmup_iters", "optimizer": "optimizer",
    "seed": "seed", "threads": "threads", "amp": "amp", "val_fraction": "val_fraction", "val_every": "val_every",
    "ckpt_every": "ckpt_every", "max_iters_per_epoch": "max_iters_per_epoch", "data": "data", "protocol": "protocol",
    "method": "method", "preset": "preset", "num_workers": "num_workers", "image_cache": "image_cache",
}


def resume_config(args: argparse.Namespace):
    """The saved config of ``--out`` (now living there, wherever it was made), checked against typed flags.

    Settings that shape the numbers must equal the run's: a different one is an error naming the flag
    (``--epochs`` may grow with ``--extend-epochs``); speed-only settings (workers, image cache) may change.
    """
    import dataclasses
    from pathlib import Path

    from agreid_kit.engine.config import RUNTIME_ONLY, TrainConfig

    path = Path(args.out) / "config.json"
    if not path.is_file():
        raise CLIError(f"--resume: {args.out} is not a run folder ({path.name} is missing); start it without --resume")
    cfg = TrainConfig.load(path)
    cfg = dataclasses.replace(cfg, out=str(args.out))  # a copied run resumes where it is now, not where it was made
    changes: dict = {}
    for flag, field in _RESUME_FLAGS.items():
        given = getattr(args, flag, None)
        if given is None or (flag == "preset" and given == "cpu" and cfg.preset != "cpu"):
            continue  # not typed (the preset flag has a default: only an explicit other value counts)
        saved = getattr(cfg, field)
        if given == saved:
            continue
        if field in RUNTIME_ONLY:
            changes[field] = given
        elif field == "epochs" and getattr(args, "extend_epochs", False):
            if given < saved:
                raise CLIError(f"--extend-epochs: the run already has {saved} epochs; --epochs {given} would shorten it")
            changes[field] = given
        else:
            hint = " or add --extend-epochs to train it further" if field == "epochs" else ""
            raise CLIError(
                f"--resume: {args.out} was trained with --{flag.replace('_', '-')} {saved!r}, you gave {given!r}. A resumed "
                f"run continues with its own settings: drop --{flag.replace('_', '-')}{hint}, or start a new run "
                "with another --out"
            )
    if args.batch and list(args.batch) != [cfg.p, cfg.k]:
        raise CLIError(f"--resume: {args.out} was trained with --batch {cfg.p} {cfg.k}, you gave {' '.join(map(str, args.batch))}")
    return dataclasses.replace(cfg, **changes)


def run(args: argparse.Namespace) -> int:
    if args.method == STAGE2:
        from agreid_kit.diffusion.train import main_from_args

        return int(main_from_args(args) or 0)
    from pathlib import Path

    from agreid_kit.engine.train import train

    if args.resume:
        cfg = resume_config(args)
    else:
        cfg = config_from_args(args)
        if (Path(cfg.out) / "checkpoints" / "last.pt").is_file():
            raise CLIError(f"--out {cfg.out} already holds a training run: continue it with `agreid train --out {cfg.out} "
                           "--resume`, or choose another --out")
    try:
        run_dir = train(cfg, resume=args.resume, extend_epochs=bool(getattr(args, "extend_epochs", False)))
    except KeyboardInterrupt:
        from agreid_kit.engine.checkpoint import last_epoch

        done = last_epoch(Path(cfg.out))
        print(
            f"\ninterrupted: {cfg.out} holds a checkpoint after epoch {done} of {cfg.epochs}; "
            f"continue with `agreid train --out {cfg.out} --resume`" if done else "\ninterrupted before the first checkpoint",
            file=sys.stderr,
        )
        return 130
    print(f"run written to {run_dir}")
    return 0
