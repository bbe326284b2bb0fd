"""Training throughput of the engine against the bare model, side by side in one run (target: >= 0.9x).

Usage: python bench/engine_speed.py [--data synthag:data/synthag-small-s0] [--method sdreid] [--iters 40] [--threads 2]

- bare model: forward + loss + backward + optimiser step of the ``cpu`` preset on one real training batch
  (P x K images already decoded, augmented and normalised), repeated ``--iters`` times;
- engine: ``agreid_kit.engine.train`` for one epoch of ``--iters`` iterations on the same data (sampler,
  decoded-image cache, batched augmentation, PLRM where the method has it, loss parts, schedule,
  logging; its epoch time, which excludes validation and checkpoint writing);
- engine without the image cache: the same with JPEG decoding in 2 loader worker processes (what the
  engine did before the cache), for contrast.
Without ``--data`` (or when the folder is missing) SynthAG-tiny is rendered into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def _engine_seconds(method: str, data: str, iters: int, threads: int, out: Path, image_cache: str,
                    workers: int) -> tuple[float, int, int]:
    from agreid_kit.engine.config import make_config
    from agreid_kit.engine.train import train

    cfg = make_config(method, str(out), preset="cpu", data=data, epochs=1, max_iters_per_epoch=iters, threads=threads,
                      num_workers=workers, image_cache=image_cache, val_fraction=0.0, extract_after=False,
                      keep_epoch_checkpoints=0)
    train(cfg)
    row = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    return float(row["train_seconds"]), int(row["iters"]), cfg.batch_size


def main(argv: list[str] | None = None) -> dict:
    import torch

    from agreid_kit.data.batch_transforms import BatchAugmentConfig, batch_train_augment
    from agreid_kit.data.records import relabel_train
    from agreid_kit.data.torchdata import ReIDImageDataset
    from agreid_kit.engine.config import make_config
    from agreid_kit.engine.data import load_split
    from agreid_kit.engine.schedule import make_optimizer
    from agreid_kit.engine.train import build_model_for

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="synthag:data/synthag-small-s0")
    ap.add_argument("--method", default="sdreid")
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-decode-baseline", action="store_true", help="skip the engine run without the image cache")
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="agreid-engine-speed-"))
    data = args.data
    if not Path(data.partition(":")[2]).is_dir():
        from agreid_kit.synth import render_dataset

        data = f"synthag:{render_dataset('tiny', tmp / 'synthag-tiny', seed=0, progress=False, difficulty=False)}"

    # ---- bare model on one real batch --------------------------------------------------------
    split = load_split(data, "ALL")
    train_records = relabel_train(split.train)
    cfg = make_config(args.method, str(tmp / "bare"), preset="cpu", data=data)
    torch.manual_seed(0)
    model = build_model_for(cfg, len({r.pid for r in train_records}), split.num_views, train_records, split.dataset)
    model.train()
    optimizer = make_optimizer(model, cfg)
    ds = ReIDImageDataset(train_records, model.input_size)
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(ds), generator=g)[: cfg.batch_size].tolist()
    batch = ds.__getitems__(idx)
    batch["images"] = batch_train_augment(batch["images"], BatchAugmentConfig(model.mean, model.std), g)

    def step():
        images = model.batch_augment(batch["images"], batch["views"])
        parts = model.loss(model({**batch, "images": images}), batch)
        optimizer.zero_grad(set_to_none=True)
        parts["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(args.iters):
        step()
    bare = cfg.batch_size * args.iters / (time.perf_counter() - t0)

    # ---- the engine, with and without the decoded-image cache ---------------------------------
    seconds, iters, bs = _engine_seconds(args.method, data, args.iters, args.threads, tmp / "engine",
                                         str(tmp / "cache"), 2)
    engine = bs * iters / seconds
    rows = {"method": args.method, "data": data, "threads": args.threads, "batch": bs, "iters": iters,
            "bare_img_per_s": round(bare, 1), "engine_img_per_s": round(engine, 1),
            "engine_over_bare": round(engine / bare, 3)}
    if not args.no_decode_baseline:
        seconds, iters, bs = _engine_seconds(args.method, data, args.iters, args.threads, tmp / "decode", "off", 2)
        rows["engine_decoding_img_per_s"] = round(bs * iters / seconds, 1)
        rows["engine_decoding_over_bare"] = round(bs * iters / seconds / bare, 3)
    print(f"{'bare model (fwd+bwd+step)':32s} {rows['bare_img_per_s']:8.1f} img/s")
    print(f"{'engine (image cache)':32s} {rows['engine_img_per_s']:8.1f} img/s   ratio {rows['engine_over_bare']:.3f}  "
          "(target >= 0.9)")
    if "engine_decoding_img_per_s" in rows:
        print(f"{'engine (decoding, 2 workers)':32s} {rows['engine_decoding_img_per_s']:8.1f} img/s   "
              f"ratio {rows['engine_decoding_over_bare']:.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
