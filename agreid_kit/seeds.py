"""Results over several training seeds: mean +- std, and whether a difference is within noise.

Conventions used by every table of the kit (the main job's report, ``compare_methods``, the README):

- a cell is ``mean +- std`` over the seeds, the std being the sample standard deviation (ddof = 1);
  with one seed there is no spread and the cell says so (``+- n/a``);
- a difference between two settings counts only when it exceeds the spread: it is **within noise**
  when ``|mean_a - mean_b| <= std_a + std_b`` (the two mean +- std intervals overlap), and always
  with fewer than two seeds on either side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

METRIC_KEYS = ("rank1", "rank5", "rank10", "mAP", "mINP")


@dataclass(frozen=True)
class SeedStat:
    """One metric over seeds."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values) if self.values else math.nan

    @property
    def std(self) -> float:
        if len(self.values) < 2:
            return math.nan
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (len(self.values) - 1))

    def format(self, scale: float = 100.0, digits: int = 1) -> str:
        if not self.values:
            return "-"
        std = self.std
        spread = "n/a" if math.isnan(std) else f"{scale * std:.{digits}f}"
        return f"{scale * self.mean:.{digits}f} ± {spread}"

    def to_dict(self) -> dict[str, Any]:
        std = self.std
        return {"mean": self.mean, "std": None if math.isnan(std) else std, "n": self.n, "values": list(self.values)}


def stat(values: Iterable[float]) -> SeedStat:
    return SeedStat(tuple(float(v) for v in values))


def within_noise(a: SeedStat, b: SeedStat) -> bool:
    """Whether the difference of the means is inside the spread over seeds (see the module docstring)."""
    if a.n < 2 or b.n < 2:
        return True
    return abs(a.mean - b.mean) <= a.std + b.std


def difference(a: SeedStat, b: SeedStat) -> dict[str, Any]:
    """``a - b`` with its noise verdict (paired per seed when both have the same number of values)."""
    out: dict[str, Any] = {"delta": a.mean - b.mean, "within_noise": within_noise(a, b)}
    if a.n == b.n and a.n >= 2:
        out["paired"] = stat(x - y for x, y in zip(a.values, b.values)).to_dict()
    return out


def aggregate_metrics(per_seed: Mapping[Any, Mapping[str, Any]],
                      keys: Sequence[str] = METRIC_KEYS) -> dict[str, SeedStat]:
    """``{seed: {metric: value}}`` -> ``{metric: SeedStat}`` for the metrics every seed has."""
    rows = list(per_seed.values())
    if not rows:
        return {}
    common = [k for k in keys if all(k in r and r[k] is not None for r in rows)]
    return {k: stat(r[k] for r in rows) for k in common}


def aggregate_results(
    per_seed: Mapping[Any, Mapping[str, Mapping[str, Mapping[str, Any]]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{seed: {protocol: {mode: metrics}}}`` (one ``evaluate_run`` per seed) -> the same nesting of
    ``{metric: {"mean", "std", "n", "values"}}``, over the protocols and modes every seed has."""
    seeds = list(per_seed)
    if not seeds:
        return {}
    first = per_seed[seeds[0]]
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for protocol, modes in first.items():
        for mode in modes:
            if not all(mode in per_seed[s].get(protocol, {}) for s in seeds):
                continue
            agg = aggregate_metrics({s: per_seed[s][protocol][mode] for s in seeds})
            out.setdefault(protocol, {})[mode] = {k: v.to_dict() for k, v in agg.items()}
    return out


def as_stat(d: Mapping[str, Any]) -> SeedStat:
    """A ``SeedStat`` back from its ``to_dict()`` form."""
    return stat(d.get("values", []))
