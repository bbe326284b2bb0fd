"""Mean +- std over seeds, the within-noise rule, the seed tables and the trade-off knee, on hand-made numbers."""

import math

import pandas as pd
import pytest

from agreid_kit import tables
from agreid_kit.seeds import aggregate_results, difference, stat, within_noise


def test_seed_stat_mean_std_and_format():
    s = stat([0.40, 0.42, 0.44])
    assert s.mean == pytest.approx(0.42) and s.std == pytest.approx(0.02)
    assert s.format() == "42.0 ± 2.0"
    one = stat([0.5])
    assert math.isnan(one.std) and one.format() == "50.0 ± n/a" and one.to_dict()["std"] is None


def test_within_noise_rule():
    a, b = stat([0.40, 0.42, 0.44]), stat([0.45, 0.46, 0.47])  # 46 +- 1 vs 42 +- 2: gap 4 > 3
    assert not within_noise(a, b)
    c = stat([0.43, 0.44, 0.45])  # 44 +- 1 vs 42 +- 2: gap 2 <= 3
    assert within_noise(a, c)
    assert within_noise(stat([0.1]), stat([0.9]))  # one seed: no spread, nothing can be called
    d = difference(b, a)
    assert d["delta"] == pytest.approx(0.04) and not d["within_noise"]
    assert d["paired"]["mean"] == pytest.approx(0.04) and d["paired"]["std"] == pytest.approx(0.01)


def _results():
    per_seed = {
        0: {"ALL": {"real": {"mAP": 0.40, "rank1": 0.6}, "real+gen": {"mAP": 0.45, "rank1": 0.62}}},
        1: {"ALL": {"real": {"mAP": 0.42, "rank1": 0.7}, "real+gen": {"mAP": 0.46, "rank1": 0.66}}},
        2: {"ALL": {"real": {"mAP": 0.44, "rank1": 0.8}, "real+gen": {"mAP": 0.47, "rank1": 0.70}}},
    }
    return {"stage2": aggregate_results(per_seed)}


def test_aggregate_results_and_seed_table():
    res = _results()
    cell = res["stage2"]["ALL"]["real"]["mAP"]
    assert cell["mean"] == pytest.approx(0.42) and cell["n"] == 3 and cell["values"] == [0.40, 0.42, 0.44]
    t = tables.seed_table(res, [("stage 2", "stage2", "real"), ("stage 2", "stage2", "real+gen")], ["ALL"])
    assert list(t["features"]) == ["real", "real+gen"] and list(t["seeds"]) == [3, 3]
    assert t.loc[0, "mAP"] == pytest.approx(42.0) and t.loc[0, "mAP std"] == pytest.approx(2.0)
    assert t.loc[1, "mAP (mean ± std)"] == "46.0 ± 1.0"
    shown = tables.display_table(t)
    assert "mAP" in shown.columns and "mAP std" not in shown.columns
    with pytest.raises(KeyError, match="no 'gen:all' results"):
        tables.seed_table(res, [("stage 2", "stage2", "gen:all")], ["ALL"])


def test_comparisons_mark_the_verdict():
    res = _results()
    c = tables.comparisons(res, [("gain", ("stage2", "real+gen"), ("stage2", "real"))], ["ALL"], metric="mAP")
    row = c.iloc[0]
    assert row["delta"] == pytest.approx(4.0) and row["verdict"] == "a better"
    assert row["delta std (paired)"] == pytest.approx(1.0)
    c1 = tables.comparisons(res, [("gain", ("stage2", "real+gen"), ("stage2", "real"))], ["ALL"], metric="rank1")
    assert c1.iloc[0]["verdict"] == "within noise"  # 66 +- 4 vs 70 +- 10


def test_tradeoff_summary_and_knee():
    rows = []
    for seed, noise in ((0, -0.01), (1, 0.0), (2, 0.01)):
        for tau, m in ((1, 0.20), (2, 0.39), (5, 0.40), (10, 0.40)):
            rows.append({"tau": tau, "protocol": "ALL", "mode": "real+gen", "rank1": m, "mAP": m + noise,
                         "sec_per_1000": tau * 1.0, "seed": seed})
    summary = tables.tradeoff_summary(pd.DataFrame(rows))
    assert summary[summary["tau"] == 5]["mAP"].iloc[0] == pytest.approx(40.0)
    knee = tables.tradeoff_knee(summary, "ALL")
    # best is tau 5 (or 10) at 40 +- 1: tau 2 (39) is within one std, tau 1 is not
    assert knee["tau"] == 2 and knee["best"] == pytest.approx(40.0) and knee["best_std"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no rows"):
        tables.tradeoff_knee(summary, "A<->G")
