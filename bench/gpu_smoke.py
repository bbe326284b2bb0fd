"""GPU smoke test of the paper presets: a few AMP training iterations of stage 1 and stage 2, img/s and peak memory.

Usage (on a machine with a GPU; a CPU-only machine prints "no GPU" and exits 0, use --allow-cpu to run tiny):
  python bench/gpu_smoke.py [--iters 20] [--batch 128] [--amp auto|bf16|fp16|no] [--out smoke.json]

Stage 1: SD-ReID stage 1 at the ``paper`` preset (ViT-B/16 at 256x128) with its optimiser (SGD 0.008,
momentum 0.9, grad clip 5) on random images, the engine's autocast. Its weights come from a random
ViT-B/16 written as a timm weights file, so the paper preset's loading path (``--pretrained FILE``)
runs too; nothing is downloaded. Stage 2: the paper stage-2 model with an SD-1.5-shaped UNet
(random weights saved and reloaded as a local ``unet/`` folder, only the up blocks' cross-attention
K/V trained) on random latents; then generation of both views at tau = 5 with CFG. Prints images/s
and peak GPU memory of each, side by side, so the first lent GPU gives the figures in minutes.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def _timed(step, iters: int, sync) -> float:
    step()  # warm-up (kernels, allocator)
    sync()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    sync()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--batch", type=int, default=128, help="paper batch (32 x 4)")
    ap.add_argument("--amp", choices=("auto", "bf16", "fp16", "no"), default="auto")
    ap.add_argument("--allow-cpu", action="store_true", help="run on the CPU (tiny batch; checks the script itself)")
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print("gpu_smoke: no GPU on this machine: skipped (use --allow-cpu to exercise the script on the CPU)")
        return {}
    device = torch.device("cuda" if cuda else "cpu")
    batch = args.batch if cuda else 4
    iters = args.iters if cuda else 1
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    dtype = None
    if cuda and args.amp != "no":
        dtype = torch.float16 if args.amp == "fp16" or not torch.cuda.is_bf16_supported() else torch.bfloat16
    results: dict = {"device": torch.cuda.get_device_name() if cuda else "cpu", "amp": str(dtype), "batch": batch}

    import timm
    from safetensors.torch import save_file

    from agreid_kit.diffusion.config import Stage2ModelConfig
    from agreid_kit.diffusion.model import SDReIDStage2
    from agreid_kit.diffusion.sample import generate_latent_features
    from agreid_kit.diffusion.unet import sd15_unet_config
    from agreid_kit.models import create_model

    tmp = Path(tempfile.mkdtemp(prefix="agreid-gpu-smoke-"))
    torch.manual_seed(0)
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
    weights = tmp / "vit_b16.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(weights))
    del vit

    # ---- stage 1 ---------------------------------------------------------------------------
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    model = create_model("sdreid", "paper", num_classes=batch // 4, num_views=2,
                         pretrained=str(weights)).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.008, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    h, w = model.input_size
    b = {"images": torch.randn(batch, 3, h, w, device=device), "pids": torch.arange(batch, device=device) // 4,
         "views": torch.arange(batch, device=device) % 2, "camids": torch.zeros(batch, dtype=torch.long, device=device)}

    def step1():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model.loss(model(b), b)["total"]
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()

    seconds = _timed(step1, iters, sync)
    results["stage1_train_img_per_s"] = round(batch * iters / seconds, 1)
    results["stage1_peak_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2) if cuda else None
    with torch.no_grad():
        model.eval()
        id_cond = model.embed({"images": b["images"]})["id_cond"].float()
    dim, layers = int(id_cond.shape[2]), int(id_cond.shape[1])
    model = opt = None  # free stage 1's memory before stage 2

    # ---- stage 2 ---------------------------------------------------------------------------
    from diffusers import UNet2DConditionModel

    UNet2DConditionModel(**sd15_unet_config()).save_pretrained(tmp / "sd15" / "unet")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    cfg = Stage2ModelConfig(dim=dim, num_id_layers=layers, unet_path=str(tmp / "sd15"), vrd_location="both")
    s2 = SDReIDStage2(cfg).to(device).train()
    opt2 = torch.optim.Adam(s2.trainable_parameters(), lr=1e-4, weight_decay=0.1)
    latent = s2.latent
    x = torch.randn(batch, *latent, device=device)
    t = torch.randint(0, 1000, (batch,), device=device)
    tokens = torch.randn(batch, dim, device=device)
    if id_cond.shape[0] < batch:
        id_cond = id_cond.repeat(batch // id_cond.shape[0] + 1, 1, 1)
    idc = id_cond[:batch].to(device)

    def step2():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            pred = s2(x, t, idc, tokens, tokens)
            loss = torch.nn.functional.mse_loss(pred.float(), x)
        opt2.zero_grad(set_to_none=True)
        loss.backward()
        opt2.step()

    seconds = _timed(step2, iters, sync)
    results["stage2_train_img_per_s"] = round(batch * iters / seconds, 1)
    results["stage2_trainable_M"] = round(sum(p.numel() for p in s2.trainable_parameters()) / 1e6, 2)
    results["stage2_peak_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2) if cuda else None
    s2.eval()
    sync()
    t0 = time.perf_counter()
    generate_latent_features(s2, idc.cpu(), [0, 1], tau=5, guidance=2.0, batch_size=batch, device=device,
                             progress=False)
    sync()
    results["generate_tau5_img_per_s"] = round(batch / (time.perf_counter() - t0), 1)
    for k, v in results.items():
        print(f"{k:28s} {v}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
