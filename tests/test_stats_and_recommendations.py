"""Statistics against scipy on constructed samples; recommendation logic on constructed tables."""

import math

import pytest
from scipy import stats as sps

from sweeper.report import Row, accuracy_choice, recommend
from sweeper.stats import Comparison, Ratio, summarize, welch

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


def row(
    key,
    mean,
    diff=None,
    p=None,
    sig=False,
    cost=1.0,
    cost_ci=(0.9, 1.1),
    sparse=0.0,
    zeros=0.0,
    params=1000,
    val=0.9,
    ci=None,
    mde=0.01,
    needed=None,
    epochs=10.0,
):
    """A report row with a paired comparison; ``ci`` is the difference's 95% CI (default diff +- 0.004)."""
    comp = None
    if diff is not None:
        lo, hi = ci if ci is not None else (diff - 0.004, diff + 0.004)
        comp = Comparison(
            diff,
            p,
            sig,
            f"{'significant' if sig else 'not significant'} (p={p})",
            "paired t",
            5,
            lo,
            hi,
            p_adjusted=p,
            mde=mde,
            seeds_needed=needed,
        )
    tc = Ratio(cost, cost * cost_ci[0], cost * cost_ci[1], 5)
    return Row(
        key,
        "x",
        val,
        summarize([mean - 0.001, mean + 0.001]),
        comp,
        0.02,
        zeros,
        sparse,
        3.0,
        params,
        epochs,
        val_rep=summarize([val - 0.001, val + 0.001]),
        seeds=[1000, 1001],
        epoch_cost=tc,
        inference_cost=tc,
        training_cost=tc,
        extra_params=params - 1000,
    )


BASE = row("none", 0.90, cost_ci=(1.0, 1.0))


def test_accuracy_choice_is_made_on_validation_among_test_significant_rows():
    """l2 has the larger test gain, dropout the higher validation accuracy: validation selects, test confirms."""
    rows = [
        BASE,
        row("dropout", 0.93, 0.03, 0.001, True, val=0.95),
        row("l2", 0.95, 0.05, 0.001, True, val=0.92),
        row("l1", 0.97, 0.07, 0.2, False, val=0.99),
    ]  # highest of all, but not significant: never chosen
    assert accuracy_choice(rows) == "dropout"
    recs = dict(recommend(rows))
    assert recs["best accuracy"].startswith("Use dropout") and "+3.00 points" in recs["best accuracy"]
    assert "Chosen among the 2 technique(s)" in recs["best accuracy"]


def test_accuracy_choice_ties_on_validation_go_to_the_first_row_in_report_order():
    rows = [BASE, row("dropout", 0.93, 0.03, 0.001, True, val=0.95), row("l2", 0.95, 0.05, 0.001, True, val=0.95)]
    assert accuracy_choice(rows) == "dropout"


def test_significantly_worse_or_references_are_never_the_accuracy_choice():
    rows = [BASE, row("batchnorm", 0.80, -0.10, 0.001, True, val=0.99), row("ref:seed", 0.95, 0.05, 0.001, True, val=0.99)]
    assert accuracy_choice(rows) == "none"


def test_nothing_significant_states_what_the_seeds_could_detect():
    rows = [BASE, row("dropout", 0.905, 0.005, 0.5, mde=0.012, needed=37), row("l2", 0.902, 0.002, 0.7)]
    recs = dict(recommend(rows))
    text = recs["best accuracy"]
    assert text.startswith("No technique beats the baseline beyond noise (Holm over 2 comparisons)")
    assert "the closest searched technique, dropout" in text and "only differences of 1.20 points or more" in text
    assert "about 37 seeds would detect the observed +0.50 points" in text and "Keep the baseline" in text
    assert accuracy_choice(rows) == "none"


def test_least_compute_needs_a_measurably_lower_cost_and_equivalent_accuracy():
    equivalent = row("early_stopping", 0.899, -0.001, 0.6, cost=0.6, cost_ci=(0.9, 1.1), ci=(-0.004, 0.002))
    noisy_cheap = row("weight_decay", 0.90, 0.0, 0.9, cost=0.89, cost_ci=(0.8, 1.2))  # CI reaches above 1
    recs = dict(recommend([BASE, equivalent, noisy_cheap], margin=0.5))
    assert recs["least compute"].startswith("early_stopping: training cost 0.60x")
    assert "as accurate as the baseline within 0.5 points" in recs["least compute"]
    # the same cheaper technique whose accuracy CI reaches below -margin: insufficient evidence
    worse_maybe = row("early_stopping", 0.895, -0.005, 0.2, cost=0.6, ci=(-0.012, 0.002))
    recs = dict(recommend([BASE, worse_maybe, noisy_cheap], margin=0.5))
    assert "evidence that it is as accurate is insufficient" in recs["least compute"]
    recs = dict(recommend([BASE, noisy_cheap]))
    assert recs["least compute"].startswith("No technique is measurably cheaper")


def test_sparsity_needs_equivalence_not_a_non_significant_test():
    sparse_ok = row("l1", 0.899, -0.001, 0.6, sparse=0.6, zeros=0.3, ci=(-0.003, 0.001))
    recs = dict(recommend([BASE, sparse_ok]))
    assert recs["smallest/sparsest model"].startswith("l1: 30.0% of weights exactly zero (prunable), 60.0% below 1e-3")
    sparse_unsure = row("l1", 0.89, -0.01, 0.3, sparse=0.6, zeros=0.3, ci=(-0.03, 0.01))  # not significant, not equivalent
    recs = dict(recommend([BASE, sparse_unsure]))
    assert "l1 makes 30.0% of weights exactly zero" in recs["smallest/sparsest model"]
    assert "insufficient" in recs["smallest/sparsest model"]
    recs = dict(recommend([BASE, row("dropout", 0.9, 0.0, 0.9)]))
    assert recs["smallest/sparsest model"].startswith("No technique made the weights sparse")
    assert "Not measured in this study" in recs["small data"]


def test_small_data_recommendation_from_axis_rows():
    def cell(key, axis, diff, p, sig):
        return {
            "key": key,
            "axis": axis,
            "n": 3,
            "summary": summarize([0.8, 0.81, 0.82]),
            "comparison": Comparison(diff, p, sig, f"p={p}"),
            "metric": "test_acc",
        }

    axis_rows = [cell("dropout", "0.1", 0.04, 0.01, True), cell("l2", "0.1", 0.02, 0.02, True), cell("dropout", "1.0", 0.0, 0.9, False)]
    recs = dict(recommend([BASE, row("dropout", 0.905, 0.005, 0.5)], axis_rows, "data.train_fraction"))
    assert recs["small data"].startswith("At 10% of the training data use dropout: +4.00 points test accuracy")
