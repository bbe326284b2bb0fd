"""Generated-feature throughput of SD-ReID stage 2 vs stage-1 extraction, on the same images, in one run.

Usage:
  python bench/generate_speed.py [--images 2048] [--batch-size 512] [--tau 5] [--guidance 2.0] [--repeats 3] [--out
  speed.json]
  python bench/generate_speed.py --run RUN2            # a trained stage-2 run (its UNet and centres)
  python bench/generate_speed.py --sd15 --device cuda  # SD-1.5-shaped UNet (random weights), paper ViT-B stage 1

Stage 1: ``model.embed`` of the sdreid model (``--preset``; random weights, input size of the preset)
on random images: one forward per image gives the real feature and the ID-condition tokens.
Stage 2: from those tokens, every view of the dataset (``--views``, 2 by default) x both CFG
branches, ``--tau`` DDIM steps, one batched UNet call per step. Both timings are the best of
``--repeats`` (the machine may be shared), model compute only (no image decoding), images/s and
seconds per 1,000 images; ``ratio`` = generation time / extraction time (goal on CPU: <= 1).
Sampling projects the context's cross-attention K/V once per batch, so generation gets cheaper per
image with bigger batches; the small UNet's many small ops also gain less from a second CPU thread
than the ViT's large matmuls do, so ``--threads 1`` and the default give different ratios.
On a GPU, ``--amp`` (bf16 where supported, else fp16) autocasts both stages.
"""

from __future__ import annotations

import argparse
import json
import time


def _best(fn, repeats: int, sync) -> float:
    best = float("inf")
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> dict:
    import torch

    from agreid_kit.diffusion.config import Stage2ModelConfig
    from agreid_kit.diffusion.model import SDReIDStage2
    from agreid_kit.diffusion.sample import generate_latent_features
    from agreid_kit.models import create_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--tau", type=int, default=5)
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--views", type=int, default=2, help="number of views generated (3 for AG-ReID.v2)")
    ap.add_argument("--batch-size", type=int, default=512,
                    help="images per batch in both stages (512: generate_features' default)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--preset", choices=("cpu", "paper"), default=None,
                    help="stage-1 preset (default: cpu, paper with --sd15)")
    ap.add_argument("--run", help="trained stage-2 run to time instead of a random-weight model of the default config")
    ap.add_argument("--sd15", action="store_true", help="SD-1.5-shaped UNet with random weights (use with a GPU)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", choices=("auto", "no", "bf16", "fp16"), default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--model-opt", action="append", default=[], metavar="KEY=JSON",
                    help="Stage2ModelConfig override for the random-weight model, e.g. unet_channels=[8,16,32]")
    ap.add_argument("--out", help="write the result JSON here")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    from agreid_kit.diffusion.loading import load_stage2, resolve_device

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    amp = None
    if cuda and args.amp != "no":
        amp = torch.float16 if args.amp == "fp16" or not torch.cuda.is_bf16_supported() else torch.bfloat16
    preset = args.preset or ("paper" if args.sd15 else "cpu")
    torch.manual_seed(0)
    stage1 = create_model("sdreid", preset, num_classes=100, num_views=args.views, pretrained=None).to(device).eval()
    h, w = stage1.input_size
    images = torch.randn(args.images, 3, h, w)
    dim = int(stage1.embed_dim) if hasattr(stage1, "embed_dim") else None

    out: dict = {}

    def extract():
        for i in range(0, args.images, args.batch_size):
            x = images[i:i + args.batch_size].to(device)
            views = torch.zeros(len(x), dtype=torch.long, device=device)
            with torch.no_grad(), torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                o = stage1.embed({"images": x, "views": views})
            out.setdefault("id_cond", []).append(o["id_cond"].float().cpu())

    t_extract = _best(extract, args.repeats, sync)
    id_cond = torch.cat(out["id_cond"][-((args.images + args.batch_size - 1) // args.batch_size):])
    dim = id_cond.shape[-1]

    if args.run:
        model, run_cfg = load_stage2(args.run, device=str(device))
        if model.config.dim != dim or model.config.num_id_layers != id_cond.shape[1]:
            raise SystemExit(f"--run {args.run} is a {model.config.dim}-d stage-2 model; the {preset} stage 1 is "
                             f"{dim}-d")
        T = int(run_cfg["num_train_timesteps"])
    else:
        unet = None
        opts = {k: json.loads(v) for k, _, v in (o.partition("=") for o in args.model_opt)}
        cfg = Stage2ModelConfig(**{**opts, "dim": dim, "num_id_layers": id_cond.shape[1], "num_views": args.views})
        if args.sd15:
            from diffusers import UNet2DConditionModel

            from agreid_kit.diffusion.unet import sd15_unet_config

            unet = UNet2DConditionModel(**sd15_unet_config())
        model = SDReIDStage2(cfg, unet=unet).to(device).eval()
        with torch.no_grad():
            model.view_centres.normal_()
        T = 1000
    n_params = sum(p.numel() for p in model.parameters())

    def generate():
        generate_latent_features(model, id_cond, list(range(args.views)), tau=args.tau, guidance=args.guidance,
                                 num_train_timesteps=T, batch_size=args.batch_size, device=device,
                                 amp=amp is not None, progress=False)

    t_generate = _best(generate, args.repeats, sync)

    # FLOPs per image (independent of machine load): one stage-1 forward vs the generation of one image.
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.no_grad():
        stage1.embed({"images": images[:1].to(device), "views": torch.zeros(1, dtype=torch.long, device=device)})
    flops_extract = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc:
        generate_latent_features(model, id_cond[:1], list(range(args.views)), tau=args.tau, guidance=args.guidance,
                                 num_train_timesteps=T, batch_size=1, device=device, amp=False, progress=False)
    flops_generate = fc.get_total_flops()
    result = {
        "device": str(device) if not cuda else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "stage1_preset": preset,
        "dim": dim,
        "unet": "sd15-shaped (random)" if args.sd15 else (args.run or f"small (random) {args.model_opt or 'default'}"),
        "stage2_params_M": round(n_params / 1e6, 2),
        "amp": str(amp).replace("torch.", "") if amp else "fp32",
        "images": args.images,
        "tau": args.tau,
        "views": args.views,
        "cfg_branches": 1 if args.guidance == 1.0 else 2,
        "unet_evals_per_image": args.tau * args.views * (1 if args.guidance == 1.0 else 2),
        "extract_images_per_s": args.images / t_extract,
        "generate_images_per_s": args.images / t_generate,
        "extract_s_per_1000": 1000 * t_extract / args.images,
        "generate_s_per_1000": 1000 * t_generate / args.images,
        "ratio_generate_to_extract": t_generate / t_extract,
        "extract_gflop_per_image": flops_extract / 1e9,
        "generate_gflop_per_image": flops_generate / 1e9,
        "flop_ratio_generate_to_extract": flops_generate / flops_extract,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        from agreid_kit.utils.io import atomic_write_json

        atomic_write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
