"""Torch Dataset yielding the kit's per-image dicts (collated into batch dicts) and loader helpers."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

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
    """Records -> dicts with ``images`` (uint8, resized), ``pids``, ``camids``, ``views``, ``attributes``, ``index``.

    Images come out as ``uint8 (3, H, W)`` at ``size = (H, W)`` (bicubic resize), read from ``cache``
    (an :class:`~agreid_kit.data.image_cache.ImageCache` holding every record's path) when given, else
    decoded from disk. Normalisation and augmentation happen on whole batches in the training
    process (:mod:`agreid_kit.data.batch_transforms`), so nothing random happens here: the batches
    are the same with any number of loader workers. ``__getitems__`` returns a collated batch dict
    (use :func:`batch_loader`, whose collate function passes it through).

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
        size: tuple[int, int],
        cache=None,
        attribute_names: Sequence[str] = (),
        attribute_values: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.records = list(records)
        self.size = (int(size[0]), int(size[1]))
        self.cache = cache
        if cache is not None:
            if tuple(cache.size) != self.size:
                raise ValueError(f"ReIDImageDataset: the image cache holds {cache.size} images, the model needs "
                                 f"{self.size}")
            missing = [r.path for r in self.records if r.path not in cache.row_of]
            if missing:
                raise ValueError(f"ReIDImageDataset: {len(missing)} image(s) are not in the image cache, e.g. "
                                 f"{missing[0]}")
            self._rows = np.array([cache.row_of[r.path] for r in self.records], dtype=np.int64)
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
        # labels per record, computed once (a bad value fails here, naming the file, before any training)
        self._labels = torch.tensor(
            [[r.pid, r.camid, r.view] for r in self.records], dtype=torch.long
        ).reshape(len(self.records), 3)
        self._attrs = torch.stack([self._attributes(r) for r in self.records]) if self.records else torch.zeros(0, 0)

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

    def images(self, indices: Sequence[int]) -> torch.Tensor:
        """uint8 (B, 3, H, W) of the records at ``indices``."""
        if self.cache is not None:
            rows = self._rows[np.asarray(indices, dtype=np.int64)]
            order = np.argsort(rows, kind="stable")  # read the memory map in file order
            out = np.empty((len(rows), 3, *self.size), dtype=np.uint8)
            out[order] = self.cache[rows[order]]
            return torch.from_numpy(out)
        from agreid_kit.data.image_cache import decode_resized

        return torch.from_numpy(np.stack([decode_resized(self.records[i].path, self.size) for i in indices]))

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        labels = self._labels[idx]
        return {
            "images": self.images(indices),
            "pids": labels[:, 0],
            "camids": labels[:, 1],
            "views": labels[:, 2],
            "attributes": self._attrs[idx] if len(self._attrs) else torch.zeros(len(idx), 0, dtype=torch.long),
            "index": idx,
        }

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}


def _pass_batch(batch):
    """Collate function of :func:`batch_loader`: ``__getitems__`` already returns a batch dict."""
    return batch


def batch_loader(dataset: ReIDImageDataset, batches, num_workers: int = 0) -> torch.utils.data.DataLoader:
    """Batches of ``dataset`` for an iterable of index lists (a P x K sampler or fixed chunks).

    With a decoded-image cache the batches are slices of a memory map: read them in this process
    (``num_workers=0``), leaving both cores to the model. Without one, ``num_workers`` processes
    decode JPEGs ahead of the model. Either way the batches are identical.
    """
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=num_workers,
        collate_fn=_pass_batch,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
    )
