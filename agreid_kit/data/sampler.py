"""P x K identity sampler: every batch holds P identities with K images each."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterator, Sequence

import numpy as np


class PKBatchSampler:
    """Yields index batches of P identities x K images (a ``batch_sampler`` for DataLoader).

    The order of epoch ``e`` depends only on ``(seed, e)``: the sampler's state is ``{seed, epoch}``,
    so a resumed run replays exactly. Identities with fewer than K images are sampled with
    replacement; each identity contributes ceil(n / K) groups per epoch. With ``num_replicas > 1``
    (multi-GPU) rank r takes batches r, r + R, ... of the same global order.
    """

    def __init__(
        self,
        pids: Sequence[int],
        p: int,
        k: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if p < 2 or k < 2:
            raise ValueError("P x K sampler needs P >= 2 identities and K >= 2 images per identity (triplet), got "
                             f"P={p}, K={k}")
        self.index_by_pid: dict[int, list[int]] = defaultdict(list)
        for i, pid in enumerate(pids):
            self.index_by_pid[int(pid)].append(i)
        if len(self.index_by_pid) < p:
            raise ValueError(
                f"P x K sampler: the training set has {len(self.index_by_pid)} identities, fewer than P={p} per batch; "
                "lower P (--batch P K) or use more training identities"
            )
        self.p, self.k, self.seed = p, k, seed
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0

    @property
    def batch_size(self) -> int:
        return self.p * self.k

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])

    def _global_batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        groups: dict[int, list[list[int]]] = {}
        for pid in sorted(self.index_by_pid):
            idx = list(self.index_by_pid[pid])
            n_groups = -(-len(idx) // self.k)
            need = n_groups * self.k
            chosen = rng.permutation(idx).tolist()
            if need > len(idx):
                chosen += rng.choice(idx, size=need - len(idx), replace=True).tolist()
            groups[pid] = [chosen[j * self.k : (j + 1) * self.k] for j in range(n_groups)]
        batches: list[list[int]] = []
        active = [pid for pid in groups if groups[pid]]
        while len(active) >= self.p:
            picked = rng.choice(active, size=self.p, replace=False)
            batch: list[int] = []
            for pid in picked.tolist():
                batch += groups[pid].pop()
            batches.append(batch)
            active = [pid for pid in active if groups[pid]]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._global_batches()
        usable = len(batches) - len(batches) % self.num_replicas
        yield from batches[self.rank : usable : self.num_replicas]

    def __len__(self) -> int:
        n = len(self._global_batches())
        return (n - n % self.num_replicas) // self.num_replicas
