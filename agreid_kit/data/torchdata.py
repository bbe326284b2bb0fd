"""Torch Dataset yielding the kit's per-image dicts (collated into batch dicts) and loader helpers."""

from __future__ import annotations

import random
from typing import Any, Callable, Sequence

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

    ``attribute_names`` fixes the order of ``Record.attributes`` values (ints; -1 where unknown);
    leave it empty for datasets without attributes (A = 0).
    """

    def __init__(self, records: Sequence[Record], transform: Callable, attribute_names: Sequence[str] = ()) -> None:
        self.records = list(records)
        self.transform = transform
        self.attribute_names = list(attribute_names)

    def __len__(self) -> int:
        return len(self.records)

    def _attributes(self, r: Record) -> torch.Tensor:
        values = [int((r.attributes or {}).get(name, -1)) for name in self.attribute_names]
        return torch.tensor(values, dtype=torch.long)

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
