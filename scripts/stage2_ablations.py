"""Stage-2 ablations on validation identities: how the kit's stage-2 defaults were chosen (README, "Stage 2").

Trains one SD-ReID stage-1 run with 30 % of the training identities held out (60 ids on SynthAG-small), then
stage-2 variants on it (VRD location none/down/up/both, standardised conditions on/off, training length,
UNet width, the view-loss weight of stage 1), and scores each on the held-out ids for ALL and A<->G:
``real``, ``gen:all`` and ``real + w_gen * gen`` (the generated parts scaled by w_gen before concatenation;
w_gen = 1 is the paper's descriptor), over sampling steps tau and guidance w. The test split is never read.

    .venv/bin/python scripts/stage2_ablations.py --out runs/stage2-ablations      # ~25 min on 2 cores

Writes OUT/ablations.csv (one row per variant x tau x guidance x w_gen) and prints the table. Resumable:
finished runs are reused.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch

VARIANTS: dict[str, dict] = {
    "default (cpu preset)": {},
    "VRD none": {"model": {"vrd_location": "none"}},
    "VRD up": {"model": {"vrd_location": "up"}},
    "VRD both": {"model": {"vrd_location": "both"}},
    "no standardised conditions": {"model": {"standardise_conditions": False}},
    "10 epochs": {"epochs": 10},
    "40 epochs": {"epochs": 40},
    "100 epochs": {"epochs": 100},
    "UNet [32, 64, 64], 40 epochs": {"epochs": 40, "model": {"unet_channels": [32, 64, 64]}},
}
SAMPLING = [(5, 2.0), (5, 1.0), (5, 4.0), (2, 2.0), (10, 2.0)]
W_GEN = [0.0, 0.25, 0.5, 1.0]


def score(stage2_run: Path, protocols=("ALL", "A<->G")) -> list[dict]:
    from agreid_kit.diffusion.loading import load_stage1, load_stage2
    from agreid_kit.diffusion.sample import generate_latent_features
    from agreid_kit.diffusion.train import stage2_validation_rows
    from agreid_kit.engine.data import validation_protocol_split
    from agreid_kit.engine.evaluate import evaluate_featureset_split, metrics_dict
    from agreid_kit.features import FeatureSet

    model, cfg = load_stage2(stage2_run, device="cpu")
    s1 = load_stage1(cfg["stage1"])
    _, val_split, val_rows = stage2_validation_rows(s1.train)
    val = s1.train.subset(val_rows)
    records = list(val_split.query) + list(val_split.gallery)
    splits = {p: val_split if p == "ALL" else validation_protocol_split(records, p) for p in protocols}
    norm = lambda x: torch.nn.functional.normalize(x.float(), dim=1)  # noqa: E731
    rows = []
    for tau, w in SAMPLING:
        gen = generate_latent_features(model, val.extras["id_cond"], list(range(model.config.num_views)), tau=tau,
                                       guidance=w, num_train_timesteps=int(cfg["num_train_timesteps"]), seed=0,
                                       progress=False)
        for w_gen in W_GEN if (tau, w) == SAMPLING[0] else [1.0]:
            fused = torch.cat([norm(val.features), *(w_gen * norm(g) for g in gen.values())], dim=1)
            row = {"tau": tau, "guidance": w, "w_gen": w_gen}
            for p, split in splits.items():
                fs = FeatureSet(fused, val.records, "val", "ablation")
                row[f"{p} real+gen mAP"] = 100 * metrics_dict(evaluate_featureset_split(fs, split, "real"))["mAP"]
                only = FeatureSet(val.features, val.records, "val", "ablation",
                                  extras={f"gen:{v}": g for v, g in gen.items()})
                row[f"{p} real mAP"] = 100 * metrics_dict(evaluate_featureset_split(only, split, "real"))["mAP"]
                row[f"{p} gen:all mAP"] = 100 * metrics_dict(evaluate_featureset_split(only, split, "gen:all"))["mAP"]
            rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="synthag:data/synthag-small-s0")
    ap.add_argument("--out", default="runs/stage2-ablations")
    ap.add_argument("--stage1-epochs", type=int, default=None, help="default: the cpu preset's")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from agreid_kit.diffusion.config import Stage2Config
    from agreid_kit.diffusion.train import train_stage2
    from agreid_kit.engine.config import make_config
    from agreid_kit.engine.train import train

    out = Path(args.out)
    s1 = out / "stage1"
    if not (s1 / "metrics.json").is_file():
        train(make_config("sdreid", str(s1), preset="cpu", data=args.data, epochs=args.stage1_epochs, val_fraction=0.3,
                          threads=args.threads), resume=(s1 / "checkpoints" / "last.pt").is_file())
    table = []
    for i, (name, opts) in enumerate(VARIANTS.items()):
        run = out / f"stage2-{i}"
        train_stage2(Stage2Config(stage1=str(s1), out=str(run), model=opts.get("model", {}),
                                  epochs=opts.get("epochs", 20),
                                  threads=args.threads, generate_after=False), progress=False)
        for row in score(run):
            table.append({"variant": name, **{k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}})
            print(table[-1], flush=True)
    with open(out / "ablations.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    print(f"wrote {out / 'ablations.csv'}")


if __name__ == "__main__":
    main()
