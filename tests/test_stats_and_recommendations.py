"""Statistics against scipy on constructed samples; recommendation logic on constructed tables."""

import math

import pytest
from scipy import stats as sps

from sweeper.report import Row, accuracy_choice, recommend
from sweeper.stats import Comparison, summarize, welch

A = [0.91, 0.93, 0.92, 0.94, 0.925]
B = [0.90, 0.89, 0.905, 0.895, 0.9]


def test_mean_and_t_confidence_interval_match_scipy():
    s = summarize(A)
    lo, hi = sps.t.interval(0.95, len(A) - 1, loc=sps.tmean(A), scale=sps.sem(A))
    assert s.mean == pytest.approx(sum(A) / 5) and s.ci_low == pytest.approx(lo) and s.ci_high == pytest.approx(hi)
    assert s.std == pytest.approx(sps.tstd(A))
    one = summarize([0.5])
    assert one.n == 1 and one.ci_low is None and one.std is None


def test_welch_matches_scipy_and_gives_a_verdict():
    c = welch(A, B, alpha=0.05)
    ref = sps.ttest_ind(A, B, equal_var=False)
    assert c.p_value == pytest.approx(ref.pvalue) and c.diff == pytest.approx(sum(A) / 5 - sum(B) / 5)
    assert c.significant and c.reason.startswith("significant")
    noisy = welch([0.90, 0.95, 0.85], [0.91, 0.88, 0.93])
    assert not noisy.significant and noisy.reason.startswith("not significant")


def test_fewer_than_two_replicates_says_why_instead_of_nan():
    c = welch([0.9], B)
    assert c.p_value is None and not c.significant and "needs >= 2 replicates" in c.reason
    same = welch([0.9, 0.9], [0.8, 0.8])
    assert same.p_value is None and "zero variance" in same.reason
    assert not any(isinstance(v, float) and math.isnan(v) for v in (c.diff, same.diff))


def row(key, mean, diff=None, p=None, sig=False, time=10.0, sparse=0.0, zeros=0.0, params=1000):
    comp = None if diff is None else Comparison(diff, p, sig, f"{'significant' if sig else 'not significant'} (p={p})")
    return Row(
        key,
        "x",
        0.9,
        summarize([mean - 0.001, mean + 0.001]),
        comp,
        0.02,
        zeros,
        sparse,
        3.0,
        time / 20,
        time,
        0.5,
        params,
        10.0,
        epoch_time_rel=time / 10,
        inference_rel=1.0,
        extra_params=params - 1000,
    )


def test_recommendations_when_a_technique_really_helps():
    rows = [
        row("none", 0.90),
        row("dropout", 0.93, 0.03, 0.001, True, time=12),
        row("l2", 0.95, 0.05, 0.2, False),
        row("l1", 0.91, 0.01, 0.4, False, time=8, sparse=0.6, zeros=0.3),
        row("batchnorm", 0.80, -0.10, 0.001, True, time=5),
    ]
    recs = dict(recommend(rows))
    assert recs["best accuracy"].startswith("Use dropout") and "+3.00 points" in recs["best accuracy"]
    assert accuracy_choice(rows) == "dropout"  # l2 has a higher mean but is not significant
    assert recs["least compute"].startswith("l1:")  # batchnorm is cheaper but significantly worse
    assert recs["smallest/sparsest model"].startswith("l1: 60.0% of weights below 1e-3, 30.0% exactly zero")
    assert "Not measured in this study" in recs["small data"]


def test_recommendations_when_nothing_is_significant():
    rows = [row("none", 0.90), row("dropout", 0.905, 0.005, 0.5), row("l2", 0.91, 0.01, 0.3)]
    recs = dict(recommend(rows))
    assert recs["best accuracy"].startswith("No technique beats the baseline beyond noise")
    assert "l2" in recs["best accuracy"] and "Keep the baseline" in recs["best accuracy"]
    assert accuracy_choice(rows) == "none"
    assert recs["smallest/sparsest model"].startswith("No technique made the weights sparse")


def test_small_data_recommendation_from_axis_rows():
    def cell(key, axis, diff, p, sig):
        return {"key": key, "axis": axis, "n": 3, "summary": summarize([0.8, 0.81, 0.82]), "comparison": Comparison(diff, p, sig, f"p={p}")}

    axis_rows = [cell("dropout", "0.1", 0.04, 0.01, True), cell("l2", "0.1", 0.02, 0.02, True), cell("dropout", "1.0", 0.0, 0.9, False)]
    rows = [row("none", 0.90), row("dropout", 0.905, 0.005, 0.5)]
    recs = dict(recommend(rows, axis_rows, "data.train_fraction"))
    assert recs["small data"].startswith("At 10% of the training data use dropout: +4.00 points")
