"""The two data types every part of the kit speaks: ``Record`` and ``DatasetSplit``."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from agreid_kit import VIEW_NAMES


@dataclass(frozen=True)
class Record:
    """One image of a person.

    ``camid`` is the camera id the evaluator's same-pid-same-camera rule uses. Protocols that
    collapse cameras to views (e.g. CARGO ``A<->G``) set ``camid = view`` and keep the sensor's own
    id in ``raw_camid``. ``pid`` is relabelled 0..N-1 in training sets and kept as the dataset's
    identity in test sets.
    """

    path: str
    pid: int
    camid: int
    view: int  # 0 aerial / 1 ground / 2 wearable
    raw_camid: int | None = None
    time: str | None = None  # "day"/"night", a capture date, or a time id, as the dataset has it
    scene: str | None = None
    altitude: float | None = None
    raw_pid: int | None = None  # the dataset's identity for relabelled training records
    # Free-form extras: identity attributes, SynthAG geometry (pitch, distance, yaw, occlusion, ...).
    attributes: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    extra: dict[str, Any] | None = field(default=None, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.view not in (0, 1, 2):
            raise ValueError(f"Record {self.path!r}: view must be 0 (aerial), 1 (ground) or 2 (wearable), got "
                             f"{self.view!r}")

    @property
    def view_name(self) -> str:
        return VIEW_NAMES[self.view]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Record":
        return cls(**d)


@dataclass
class DatasetSplit:
    """Train / query / gallery record lists of one dataset under one protocol."""

    dataset: str
    protocol: str
    root: str
    train: list[Record]
    query: list[Record]
    gallery: list[Record]
    num_views: int = 2
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.query:
            raise ValueError(f"dataset {self.dataset!r} protocol {self.protocol!r} at {self.root}: the query set is "
                             "empty")
        if not self.gallery:
            raise ValueError(f"dataset {self.dataset!r} protocol {self.protocol!r} at {self.root}: the gallery set is "
                             "empty")

    @property
    def num_train_pids(self) -> int:
        return len({r.pid for r in self.train})

    @property
    def num_train_cams(self) -> int:
        return len({r.camid for r in self.train})

    @property
    def test_records(self) -> list[Record]:
        """Query then gallery records, each path once (the set one feature extraction covers)."""
        seen: set[str] = set()
        out: list[Record] = []
        for r in list(self.query) + list(self.gallery):
            if r.path not in seen:
                seen.add(r.path)
                out.append(r)
        return out

    def counts(self) -> dict[str, dict[str, int]]:
        """Images, identities and cameras per subset, and images per view."""
        out: dict[str, dict[str, int]] = {}
        for name, recs in (("train", self.train), ("query", self.query), ("gallery", self.gallery)):
            views = Counter(r.view for r in recs)
            out[name] = {
                "images": len(recs),
                "ids": len({r.pid for r in recs}),
                "cameras": len({r.camid for r in recs}),
                **{f"{VIEW_NAMES[v]}_images": n for v, n in sorted(views.items())},
            }
        return out

    def summary(self) -> str:
        lines = [f"{self.dataset} [{self.protocol}] at {self.root}"]
        if self.description:
            lines.append(f"  {self.description}")
        lines.append(f"  {'subset':8s} {'images':>8s} {'ids':>6s} {'cams':>5s}")
        for name, c in self.counts().items():
            lines.append(f"  {name:8s} {c['images']:8d} {c['ids']:6d} {c['cameras']:5d}")
        return "\n".join(lines)


def relabel_train(records: Iterable[Record]) -> list[Record]:
    """Map training pids to 0..N-1 in order of first sorted pid; keep the original in ``raw_pid``."""
    records = list(records)
    pids = sorted({r.pid for r in records})
    mapping = {p: i for i, p in enumerate(pids)}
    from dataclasses import replace

    return [replace(r, pid=mapping[r.pid], raw_pid=r.pid if r.raw_pid is None else r.raw_pid) for r in records]
