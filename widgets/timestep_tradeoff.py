"""TimestepTradeoff: accuracy and latency against tau, and how one query's rank list moves with tau."""

from __future__ import annotations

import html
import math
from typing import Any, Callable

import ipywidgets as W
import pandas as pd
import plotly.graph_objects as go

from agreid_kit import VIEW_NAMES
from agreid_kit.analysis import RankList, rank_list
from agreid_kit.data.records import DatasetSplit
from agreid_kit.features import FeatureSet
from agreid_kit.viz import normalise_tradeoff, rank_list_figure, tradeoff_figure

from ._common import WidgetView, replace_figure


class TimestepTradeoff(WidgetView):
    """A tau slider over a precomputed trade-off table and the rank list of one query at that tau.

    ``tradeoff``: DataFrame with ``tau``, ``rank1``, ``mAP``, ``mINP``, ``sec_per_1k`` (one row per
    tau, e.g. from the stage-2 trade-off analysis; ``seconds_per_1000`` is accepted for ``sec_per_1k``).
    ``features_for_tau(tau)`` returns the FeatureSet of the split's test images at that tau, e.g.
    ``lambda t: generate_features(run_dir, tau=t, save=False)`` (``save=False`` so browsing does not
    overwrite ``RUN/features/test.*``),
    or an (N, D) descriptor aligned with ``base_fs`` rows (then ranked in ``real`` mode). Results
    are cached per tau. Child widgets: ``tau_slider``, ``query_dropdown``; outputs ``curve_fig``,
    ``rank_fig``, ``change_html`` (what changed since the previously shown tau).
    """

    def __init__(self, tradeoff: pd.DataFrame, features_for_tau: Callable[[int], Any], split: DatasetSplit,
                 mode: str = "real+gen", k: int = 10, query_index: int = 0, base_fs: FeatureSet | None = None,
                 metric: str = "cosine", thumb_size: tuple[int, int] = (128, 64)):
        if not 0 <= query_index < len(split.query):
            raise IndexError(f"TimestepTradeoff: query_index {query_index} outside 0..{len(split.query) - 1}")
        self.tradeoff = normalise_tradeoff(tradeoff)
        self.features_for_tau, self.split, self.mode, self.k = features_for_tau, split, mode, k
        self.base_fs, self.metric, self.thumb_size = base_fs, metric, thumb_size
        self._features: dict[int, FeatureSet] = {}
        self._previous: RankList | None = None
        taus = sorted({int(t) for t in self.tradeoff["tau"]})
        self.tau_slider = W.SelectionSlider(options=taus, value=taus[0], description="tau")
        self.query_dropdown = W.Dropdown(
            options=[(f"q{i}: pid {q.pid} cam {q.camid} {VIEW_NAMES[q.view]}", i) for i, q in enumerate(split.query)],
            value=query_index, description="query",
        )
        self.curve_fig = go.FigureWidget()
        self.rank_fig = go.FigureWidget()
        self.change_html = W.HTML()
        self.ranklist: RankList | None = None
        self._show()
        self.tau_slider.observe(lambda _change: self._show(), names="value")
        self.query_dropdown.observe(lambda _change: self._show(reset=True), names="value")
        self.widget = W.VBox([W.HBox([self.tau_slider, self.query_dropdown]), self.curve_fig,
                              self.change_html, self.rank_fig])

    def features_at(self, tau: int) -> FeatureSet:
        """The FeatureSet at ``tau`` (computed once through ``features_for_tau``)."""
        if tau not in self._features:
            out = self.features_for_tau(tau)
            if not isinstance(out, FeatureSet):
                if self.base_fs is None:
                    raise TypeError(
                        f"features_for_tau({tau}) returned {type(out).__name__}, not a FeatureSet; "
                        "pass base_fs= so a descriptor tensor can be aligned with its records"
                    )
                out = FeatureSet(features=out, records=self.base_fs.records, split=self.base_fs.split,
                                 fingerprint=f"{self.base_fs.fingerprint}-tau{tau}")
            self._features[tau] = out
        return self._features[tau]

    def _mode_for(self, fs: FeatureSet) -> str:
        return self.mode if self.mode in fs.available_modes() else "real"

    def _show(self, reset: bool = False) -> None:
        tau = int(self.tau_slider.value)
        replace_figure(self.curve_fig, tradeoff_figure(self.tradeoff, highlight_tau=tau))
        fs = self.features_at(tau)
        rl = rank_list(fs, self.split, int(self.query_dropdown.value), k=self.k, mode=self._mode_for(fs),
                       metric=self.metric)
        replace_figure(self.rank_fig,
                       rank_list_figure(rl, self.thumb_size, title=f"tau = {tau}: query {rl.query_index}"))
        previous = None if reset else self._previous
        self.change_html.value = describe_change(previous, rl, self._previous_tau if previous else None, tau)
        self.ranklist, self._previous, self._previous_tau = rl, rl, tau

    _previous_tau: int | None = None


def describe_change(before: RankList | None, after: RankList, tau_before: int | None, tau_after: int) -> str:
    """HTML summary of how a query's top-k changed between two taus (AP, first match, items in and out)."""
    def f(v: float) -> str:
        return "-" if math.isnan(v) else f"{v:.3f}"

    if before is None:
        return (f"<b>tau {tau_after}</b>: AP {f(after.ap)}, INP {f(after.inp)}, "
                f"first match at rank {after.first_match_rank}")
    old = [it.gallery_index for it in before.items if not it.is_junk]
    new = [it.gallery_index for it in after.items if not it.is_junk]
    entered = [g for g in new if g not in old]
    left = [g for g in old if g not in new]
    moved = sum(1 for g in new if g in old and new.index(g) != old.index(g))
    return (
        f"<b>tau {tau_before} &rarr; {tau_after}</b>: AP {f(before.ap)} &rarr; {f(after.ap)}, "
        f"INP {f(before.inp)} &rarr; {f(after.inp)}, first match rank {before.first_match_rank} &rarr; "
        f"{after.first_match_rank}; {len(entered)} entered the top-{len(new)}, {len(left)} left, {moved} moved"
        f"<br><small>entered gallery rows {html.escape(str(entered))}, left {html.escape(str(left))}</small>"
    )
