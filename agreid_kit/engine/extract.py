"""Feature extraction: ``extract_features(run, split) -> FeatureSet`` (RUN/features/<split>.*)."""

from __future__ import annotations

from typing import Sequence

import torch

from agreid_kit.data.records import DatasetSplit, Record, relabel_train
from agreid_kit.features import FeatureSet, checkpoint_digest, compute_fingerprint, records_manifest


@torch.no_grad()
def embed_records(
    model,
    records: Sequence[Record],
    batch_size: int,
    num_workers: int,
    device,
    flip: bool = False,
    keys: Sequence[str] | None = None,
    desc: str = "extract",
    cache=None,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """``model.embed`` over ``records`` (test transform); with ``flip`` also ``<key>_flip`` of the mirrored image.

    ``cache``: a decoded-image cache holding every record's path (else the images are decoded by
    ``num_workers`` loader processes); the features are the same either way.
    """
    from agreid_kit.data.batch_transforms import normalise_uint8
    from agreid_kit.data.torchdata import ReIDImageDataset, batch_loader
    from agreid_kit.utils.progress import progress_bar

    was_training = model.training
    model.eval()
    dataset = ReIDImageDataset(records, model.input_size, cache)
    chunks_idx = [list(range(i, min(i + batch_size, len(records)))) for i in range(0, len(records), batch_size)]
    loader = batch_loader(dataset, chunks_idx, 0 if cache is not None else num_workers)
    chunks: dict[str, list[torch.Tensor]] = {}
    for batch in progress_bar(loader, total=len(chunks_idx), desc=desc, enabled=progress):
        batch["images"] = normalise_uint8(batch["images"], model.mean, model.std)
        batch = {k: v.to(device) for k, v in batch.items()}
        outs = {"": model.embed(batch)}
        if flip:
            outs["_flip"] = model.embed({**batch, "images": batch["images"].flip(-1)})
        for suffix, out in outs.items():
            for k, v in out.items():
                if keys is None or k in keys:
                    chunks.setdefault(k + suffix, []).append(v.float().cpu())
    model.train(was_training)
    return {k: torch.cat(v) for k, v in chunks.items()}


def extract_features(
    run,
    split: str = "test",
    flip: bool | None = None,
    batch_size: int = 128,
    num_workers: int = 2,
    data: DatasetSplit | None = None,
    save: bool = True,
    image_cache: str = "auto",
) -> FeatureSet:
    """Embed the run's ``train`` or ``test`` images (query + gallery, each once) and save the FeatureSet.

    Per image: ``features`` (retrieval feature), extras ``prebn`` and, for sdreid, ``id_cond``
    (N, L-1, D) and ``view_token``; globals ``view_centres`` (V, D) for sdreid. ``flip`` adds
    ``<name>_flip`` extras (default: on for sdreid's train split, which stage 2 trains from).
    Train records are relabelled 0..N-1 over the whole train split (``meta["val_pids"]`` lists the
    ids the engine held out for validation).
    """
    from agreid_kit.engine.run import Run, load_run

    if not isinstance(run, Run):
        run = load_run(run)
    if split not in ("train", "test"):
        raise ValueError(f"extract_features: split must be 'train' or 'test', got {split!r}")
    if data is None:
        from agreid_kit.engine.data import all_test_records

        data = run.load_split()
        records = relabel_train(data.train) if split == "train" else all_test_records(run.data, first=data)
    else:
        records = relabel_train(data.train) if split == "train" else data.test_records
    model = run.model
    if flip is None:
        flip = split == "train" and run.method == "sdreid"
    device = next(model.parameters()).device
    from agreid_kit.engine.train import open_image_cache

    cache = open_image_cache(records, model.input_size, image_cache, num_workers)
    out = embed_records(model, records, batch_size, num_workers, device, flip=flip,
                        desc=f"extract {split}", cache=cache)
    features = out.pop("features")
    globals_ = {}
    if hasattr(model, "view_centres"):
        globals_["view_centres"] = model.view_centres.detach().float().cpu()
    import dataclasses

    fingerprint = compute_fingerprint(dataclasses.asdict(model.config), run.checkpoint_path, records_manifest(records))
    fs = FeatureSet(
        features=features,
        records=list(records),
        split=split,
        fingerprint=fingerprint,
        extras=out,
        globals=globals_,
        meta={
            "method": run.method,
            "run": str(run.dir),
            "dataset": data.dataset,
            "protocol": data.protocol,
            "flip": bool(flip),
            "val_pids": run.meta.get("val_pids", []),
            "num_layers": getattr(model, "num_layers", None),
            # method-specific labels, e.g. SVPR's "untrained text encoder" flag, travel with the features
            **getattr(model, "feature_meta", {}),
            # the features' origin: evaluation refuses them in a run whose checkpoint is another
            "checkpoint_sha256": checkpoint_digest(run.checkpoint_path),
        },
    )
    if save:
        fs.save(run.features_path(split))
    return fs
