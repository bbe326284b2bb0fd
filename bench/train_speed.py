"""Training throughput (images/s) of each preset: forward + loss + backward + optimiser step.

Usage: python bench/train_speed.py [--methods vit sdreid] [--presets cpu paper] [--iters 5] [--out speed.json]

Random images and labels of the preset's input size, so the number is the model's training speed
(data loading runs in parallel workers and is measured separately by the engine's epoch timings).
On CPU the paper preset uses random init (no weights file needed) and a smaller batch; on a GPU it
runs with AMP (bf16 where supported, else fp16) at the paper batch of 32 x 4.
"""

from __future__ import annotations

import argparse
import time


def measure(method: str, preset: str, device: str, batch: int, iters: int, warmup: int, amp: str) -> dict:
    import torch

    from agreid_kit.models import create_model

    torch.manual_seed(0)
    model = create_model(method, preset, num_classes=batch // 4, num_views=2).to(device).train()
    h, w = model.input_size
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    images = torch.randn(batch, 3, h, w, device=device)
    b = {
        "images": images,
        "pids": torch.arange(batch, device=device) // 4,
        "views": torch.arange(batch, device=device) % 2,
        "camids": torch.zeros(batch, dtype=torch.long, device=device),
    }
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None

    def step():
        with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            loss = model.loss(model(b), b)["total"]
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()

    for _ in range(warmup):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {
        "method": method, "preset": preset, "device": device, "amp": amp, "batch": batch, "input": [h, w],
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2), "iters": iters,
        "images_per_s": round(batch * iters / seconds, 1), "threads": torch.get_num_threads(),
    }


def main(argv=None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=["vit", "sdreid"])
    ap.add_argument("--presets", nargs="+", default=["cpu", "paper"])
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--cpu-paper-batch", type=int, default=16,
                    help="paper preset batch on CPU (kept small: it is slow)")
    ap.add_argument("--no-gpu", action="store_true")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    runs = [("cpu", p, {"cpu": 64, "paper": args.cpu_paper_batch}[p], "no") for p in args.presets]
    if torch.cuda.is_available() and not args.no_gpu:
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        runs += [("cuda", p, 128, amp) for p in args.presets]
    for device, preset, batch, amp in runs:
        for method in args.methods:
            iters = args.iters if device == "cpu" else max(args.iters, 20)
            row = measure(method, preset, device, batch, iters, warmup=1 if device == "cpu" else 5, amp=amp)
            rows.append(row)
            print(f"{method:7s} {preset:6s} {device:5s} amp={amp:4s} batch={batch:4d} {row['input']} "
                  f"{row['params_M']:7.2f}M params  {row['images_per_s']:9.1f} img/s", flush=True)
    if args.out:
        from agreid_kit.utils.io import atomic_write_json

        atomic_write_json(args.out,
                          {"rows": rows, "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
