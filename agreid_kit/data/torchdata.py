"""Torch Dataset yielding the kit's per-image dicts (collated into batch dicts) and loader helpers."""

from __future__ import annotations

import random
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from agreid_kit.data.errors import DatasetError
from agreid_kit.data.records import Record


def load_image(path: str):
    """Open an RGB image; an unreadable or corrupt file is a DatasetError naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError as e:
        raise DatasetError(f"image file {path} does not exist (was the dataset moved?)") from e
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DatasetError(f"image file {path} is corrupt or not an image: {e}") from e


class ReIDImageDataset(Dataset):
    """Records -> dicts with ``images``, ``pids``, ``camids``, ``views``, ``attributes``, ``index``.

    ``attribute_values`` (attribute name -> its vocabulary, e.g. a model's ``attribute_vocabulary``)
    turns ``Record.attributes`` into class labels: value ``v`` of attribute ``a`` becomes
    ``values[a].index(str(v))``, a missing or None value becomes -1 (unknown). AG-ReID's -1
    ("absent") is a vocabulary entry like any other value. ``attribute_names`` picks which attributes
    (and their order); by default all of ``attribute_values``. Leave both empty for datasets without
    attributes (A = 0).
    """

    def __init__(
        self,
        records: Sequence[Record],
        transform: Callable,
        attribute_names: Sequence[str] = (),
        attribute_values: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.records = list(records)
        self.transform = transform
        vocab = dict(attribute_values or {})
        self.attribute_names = list(attribute_names) if attribute_names else list(vocab)
        missing = [n for n in self.attribute_names if n not in vocab]
        if missing:
            raise ValueError(
                f"ReIDImageDataset: attribute(s) {missing} have no vocabulary in attribute_values "
                f"(given for {sorted(vocab)})"
            )
        # value string -> label per attribute: a dict lookup per value instead of list.index per item
        self.attribute_values = {n: [str(v) for v in vocab[n]] for n in self.attribute_names}
        self._label_of = {n: {v: i for i, v in enumerate(vals)} for n, vals in self.attribute_values.items()}

    def __len__(self) -> int:
        return len(self.records)

    def _attributes(self, r: Record) -> torch.Tensor:
        given = r.attributes or {}
        labels = []
        for name in self.attribute_names:
            value = given.get(name)
            if value is None:
                labels.append(-1)
                continue
            label = self._label_of[name].get(str(value))
            if label is None:
                raise DatasetError(
                    f"{r.path}: attribute {name!r} has value {str(value)!r}, which is not in its vocabulary "
                    f"{self.attribute_values[name]} (the vocabulary comes from the training records)"
                )
            labels.append(label)
        return torch.tensor(labels, dtype=torch.long)

    def __getitem__(self, i: int) -> dict[str, Any]:
        r = self.records[i]
        return {
            "images": self.transform(load_image(r.path)),
            "pids": torch.tensor(r.pid, dtype=torch.long),
            "camids": torch.tensor(r.camid, dtype=torch.long),
            "views": torch.tensor(r.view, dtype=torch.long),
            "attributes": self._attributes(r),
            "index": torch.tensor(i, dtype=torch.long),
        }


def seed_worker(worker_id: int) -> None:
    """DataLoader worker init: numpy/python RNGs follow the torch seed the loader gave the worker."""
    seed = torch.initial_seed() % (2**32)
    np.random.seed(seed)
    random.seed(seed)


def train_loader(dataset: ReIDImageDataset, batch_sampler, num_workers: int, seed: int) -> torch.utils.data.DataLoader:
    """A loader over a P x K batch sampler; worker seeds come from ``generator`` (re-seeded per epoch)."""
    g = torch.Generator()
    g.manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        worker_init_fn=seed_worker,
        generator=g,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
    )


def eval_loader(dataset: ReIDImageDataset, batch_size: int, num_workers: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=torch.cuda.is_available()
    )
