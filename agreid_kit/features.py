"""``FeatureSet``: the feature artifact written once and read by metrics, plots, widgets and the app.

On disk a FeatureSet is two files side by side, ``<stem>.safetensors`` (tensors) and ``<stem>.json``
(records, split name, fingerprint, metadata and the SHA-256 of the tensor file). Both are written
atomically, the JSON last, so a reader either sees a complete pair or an error that says why not.

Tensor names:
- ``features``: the retrieval feature per image (N, D);
- per-image extras (first dimension N), e.g. ``prebn``, ``id_cond`` (N, L-1, D), ``view_token``,
  ``features_flip``, and generated features ``gen:<view id>`` (N, D) written by stage 2 (in the
  retrieval space of ``features``: stage 2 maps them through stage 1's BNNeck);
- globals (any shape), e.g. ``view_centres`` (V, D), stored under the prefix ``global/``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from agreid_kit import VIEW_NAMES
from agreid_kit.data.records import DatasetSplit, Record
from agreid_kit.utils.io import atomic_path, atomic_write_json, sha256_file, sha256_json

FORMAT_VERSION = 1
_GLOBAL_PREFIX = "global/"


class FeatureSetError(ValueError):
    """A feature artifact is missing, stale, corrupt or does not match what the caller expects."""


def compute_fingerprint(model_config: dict[str, Any], checkpoint: str | os.PathLike | None, manifest: Any) -> str:
    """Fingerprint of what produced features: model config + checkpoint file content + data manifest."""
    ckpt_hash = checkpoint_digest(checkpoint) if checkpoint is not None and Path(checkpoint).is_file() else None
    return sha256_json({"model": model_config, "checkpoint": ckpt_hash, "data": manifest})[:16]


def checkpoint_digest(checkpoint: str | os.PathLike) -> str:
    """SHA-256 of a checkpoint file (remembered beside it while the file is unchanged)."""
    from agreid_kit.utils.io import sha256_file_cached

    return sha256_file_cached(checkpoint)


def verify_origin(stem: str | os.PathLike, checkpoint: str | os.PathLike, digest: str | None, what: str,
                  owner: str) -> None:
    """Refuse features whose recorded checkpoint digest is not ``checkpoint``'s: they belong to another run.

    ``what`` names the features (e.g. "test features"), ``owner`` the command that rebuilds them."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FeatureSetError(f"{Path(stem)}.json: the checkpoint {checkpoint} that should have made these {what} is "
                              "missing")
    if digest is None:
        raise FeatureSetError(
            f"{Path(stem)}.json records no checkpoint digest (made by an older kit): its {what} cannot be tied to "
            f"{checkpoint}; rebuild them with `{owner}`"
        )
    if digest != checkpoint_digest(checkpoint):
        raise FeatureSetError(
            f"{Path(stem)}.json holds {what} made by another checkpoint than {checkpoint} (copied from another run, or "
            f"the run was retrained since); rebuild them with `{owner}`"
        )


def records_manifest(records: Sequence[Record]) -> str:
    """A hash of the image list and labels (what the data side of a fingerprint means)."""
    return sha256_json([(r.path, r.pid, r.camid, r.view) for r in records])[:16]


def _paths(stem: str | os.PathLike) -> tuple[Path, Path]:
    stem = Path(stem)
    if stem.suffix in (".json", ".safetensors"):
        stem = stem.with_suffix("")
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


@dataclass
class FeatureSet:
    features: torch.Tensor
    records: list[Record]
    split: str
    fingerprint: str
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    globals: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.records)
        if self.features.ndim != 2 or self.features.shape[0] != n:
            raise FeatureSetError(
                f"FeatureSet {self.split!r}: features must be (N, D) with N = {n} records, got "
                f"{tuple(self.features.shape)}"
            )
        for name, t in self.extras.items():
            if t.shape[0] != n:
                raise FeatureSetError(f"FeatureSet {self.split!r}: extra {name!r} has {t.shape[0]} rows, expected {n}")
        self._index: dict[str, int] | None = None

    # ---- lookup -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def pids(self) -> torch.Tensor:
        return torch.tensor([r.pid for r in self.records], dtype=torch.long)

    @property
    def camids(self) -> torch.Tensor:
        return torch.tensor([r.camid for r in self.records], dtype=torch.long)

    @property
    def views(self) -> torch.Tensor:
        return torch.tensor([r.view for r in self.records], dtype=torch.long)

    def index_of(self, records: Iterable[Record]) -> torch.Tensor:
        """Row indices of ``records`` (matched by path); an absent path is an error naming it."""
        if self._index is None:
            self._index = {r.path: i for i, r in enumerate(self.records)}
        rows = []
        for r in records:
            i = self._index.get(r.path)
            if i is None:
                raise FeatureSetError(
                    f"FeatureSet {self.split!r} has no features for {r.path!r}: it was extracted from other data "
                    f"(fingerprint {self.fingerprint}); re-run extraction for this dataset/protocol"
                )
            rows.append(i)
        return torch.tensor(rows, dtype=torch.long)

    def get(self, name: str) -> torch.Tensor:
        if name == "features":
            return self.features
        if name in self.extras:
            return self.extras[name]
        raise FeatureSetError(
            f"FeatureSet {self.split!r} has no tensor {name!r}; it has: {['features', *sorted(self.extras)]}"
        )

    def generated_views(self) -> list[int]:
        return sorted(int(k.split(":", 1)[1]) for k in self.extras if k.startswith("gen:"))

    def descriptor(self, mode: str = "real", rows: torch.Tensor | None = None) -> torch.Tensor:
        """The retrieval descriptor of a feature mode.

        ``real``: the real feature; ``gen:<view>`` (name or id): one generated view; ``gen:all``:
        every generated view concatenated; ``real+gen``: real then every generated view (SD-ReID's
        descriptor). Each part is L2-normalised before concatenation so that every view weighs
        equally under the cosine distance.
        """
        parts = [self.get(name) for name in self.mode_parts(mode)]
        if rows is not None:
            parts = [p[rows] for p in parts]
        if len(parts) == 1:
            return parts[0]
        return torch.cat([torch.nn.functional.normalize(p.float(), dim=1) for p in parts], dim=1)

    def mode_parts(self, mode: str) -> list[str]:
        gens = [f"gen:{v}" for v in self.generated_views()]
        if mode == "real":
            return ["features"]
        if mode in ("gen:all", "real+gen"):
            if not gens:
                raise FeatureSetError(
                    f"feature mode {mode!r} needs generated features, but FeatureSet {self.split!r} has none; "
                    "run `agreid generate RUN` first"
                )
            return gens if mode == "gen:all" else ["features", *gens]
        if mode.startswith("gen:"):
            key = mode.split(":", 1)[1]
            view = VIEW_NAMES.index(key) if key in VIEW_NAMES else (int(key) if key.isdigit() else -1)
            if f"gen:{view}" not in self.extras:
                raise FeatureSetError(
                    f"feature mode {mode!r}: no generated features for that view in FeatureSet {self.split!r}; "
                    f"available: {[f'gen:{VIEW_NAMES[v]}' for v in self.generated_views()] or 'none'}"
                )
            return [f"gen:{view}"]
        raise FeatureSetError(
            f"unknown feature mode {mode!r}; expected one of real, gen:<view>, gen:all, real+gen"
        )

    def available_modes(self) -> list[str]:
        gens = self.generated_views()
        if not gens:
            return ["real"]
        return ["real", *[f"gen:{VIEW_NAMES[v]}" for v in gens], "gen:all", "real+gen"]

    def subset(self, rows: torch.Tensor | Sequence[int], split: str | None = None) -> "FeatureSet":
        rows = torch.as_tensor(rows, dtype=torch.long)
        return FeatureSet(
            features=self.features[rows],
            records=[self.records[int(i)] for i in rows],
            split=split or self.split,
            fingerprint=self.fingerprint,
            extras={k: v[rows] for k, v in self.extras.items()},
            globals=dict(self.globals),
            meta=dict(self.meta),
        )

    def with_extras(self, **tensors: torch.Tensor) -> "FeatureSet":
        extras = dict(self.extras)
        extras.update(tensors)
        return FeatureSet(self.features, self.records, self.split, self.fingerprint, extras, dict(self.globals),
                          dict(self.meta))

    # ---- disk ---------------------------------------------------------------------------
    def save(self, stem: str | os.PathLike) -> Path:
        """Write ``<stem>.safetensors`` then ``<stem>.json`` atomically; return the JSON path."""
        from safetensors.torch import save_file

        st_path, js_path = _paths(stem)
        tensors = {"features": self.features}
        tensors.update(self.extras)
        tensors.update({_GLOBAL_PREFIX + k: v for k, v in self.globals.items()})
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        with atomic_path(st_path) as tmp:
            save_file(tensors, str(tmp))
        atomic_write_json(
            js_path,
            {
                "format_version": FORMAT_VERSION,
                "split": self.split,
                "fingerprint": self.fingerprint,
                "tensor_file": st_path.name,
                "tensor_sha256": sha256_file(st_path),
                "tensors": {k: list(v.shape) for k, v in tensors.items()},
                "meta": self.meta,
                "records": [r.to_dict() for r in self.records],
            },
        )
        return js_path

    @classmethod
    def load(
        cls,
        stem: str | os.PathLike,
        expected_fingerprint: str | None = None,
        map_location: str = "cpu",
    ) -> "FeatureSet":
        """Read a FeatureSet; a missing, stale or mismatched artifact raises ``FeatureSetError``."""
        from safetensors.torch import load_file

        st_path, js_path = _paths(stem)
        if not js_path.is_file():
            raise FeatureSetError(f"no FeatureSet at {js_path} (expected {js_path.name} beside {st_path.name})")
        if not st_path.is_file():
            raise FeatureSetError(f"FeatureSet {js_path} names tensor file {st_path}, which is missing")
        try:
            head = json.loads(js_path.read_text())
        except json.JSONDecodeError as e:
            raise FeatureSetError(f"FeatureSet metadata {js_path} is not valid JSON: {e}") from e
        if head.get("format_version") != FORMAT_VERSION:
            raise FeatureSetError(
                f"FeatureSet {js_path} has format version {head.get('format_version')!r}; this kit reads "
                f"{FORMAT_VERSION}"
            )
        digest = sha256_file(st_path)
        if digest != head.get("tensor_sha256"):
            raise FeatureSetError(
                f"FeatureSet {st_path} is stale: its content does not match {js_path.name} "
                "(written by another run, or the pair was interrupted or edited); re-run extraction"
            )
        if expected_fingerprint is not None and head["fingerprint"] != expected_fingerprint:
            raise FeatureSetError(
                f"FeatureSet {js_path} was made by another model/checkpoint/data (fingerprint {head['fingerprint']}, "
                f"expected {expected_fingerprint}); re-run extraction"
            )
        tensors = load_file(str(st_path), device=map_location)
        features = tensors.pop("features")
        glob = {k[len(_GLOBAL_PREFIX):]: tensors.pop(k) for k in list(tensors) if k.startswith(_GLOBAL_PREFIX)}
        return cls(
            features=features,
            records=[Record.from_dict(d) for d in head["records"]],
            split=head["split"],
            fingerprint=head["fingerprint"],
            extras=tensors,
            globals=glob,
            meta=head.get("meta", {}),
        )


def evaluate_featureset(
    fs: FeatureSet,
    split: DatasetSplit,
    mode: str = "real",
    metric: str = "cosine",
    query_fs: FeatureSet | None = None,
    max_rank: int = 50,
):
    """Score a FeatureSet (holding the split's test images) on one protocol and feature mode.

    Rows are looked up by path, so one FeatureSet of all test images serves every protocol of a
    dataset; pids/camids come from the split (protocols may collapse camera ids to views).
    """
    from agreid_kit.eval import compute_distance, evaluate_ranking, ranking_inputs

    qsrc = query_fs or fs
    qrows = qsrc.index_of(split.query)
    grows = fs.index_of(split.gallery)
    qf = qsrc.descriptor(mode, qrows)
    gf = fs.descriptor(mode, grows)
    dist = compute_distance(qf, gf, metric=metric)
    # ranking_inputs: pids/camids plus the per-query gallery rules some protocols need (A<->G-strict, CP2108 time
    # modes).
    return evaluate_ranking(dist, **ranking_inputs(split), max_rank=max_rank)
