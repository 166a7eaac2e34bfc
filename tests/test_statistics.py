"""Paired t, Holm, MDE, seeds needed and cost ratios against scipy and closed forms on fixed arrays."""

from __future__ import annotations

import math
import random

import pytest
from scipy import stats as sps

from sweeper.stats import ACCURACY, Comparison, adjust_family, compare, holm, mde, paired, power_at, ratio, seeds_needed, summarize, welch

A = [0.91, 0.93, 0.92, 0.94, 0.925]
B = [0.90, 0.915, 0.905, 0.93, 0.9]


def test_paired_t_matches_scipy_with_ci_of_the_mean_difference():
    c = paired(A, B)
    d = [a - b for a, b in zip(A, B)]
    ref = sps.ttest_rel(A, B)
    assert c.test == "paired t" and c.n == 5
    assert c.p_value == pytest.approx(ref.pvalue) and c.diff == pytest.approx(sum(d) / 5)
    lo, hi = sps.t.interval(0.95, 4, loc=sps.tmean(d), scale=sps.sem(d))
    assert (c.ci_low, c.ci_high) == (pytest.approx(lo), pytest.approx(hi))
    # pairing removes the seed-to-seed spread that both rows share: a smaller p than Welch's here
    assert c.p_value < welch(A, B).p_value


def test_welch_keeps_its_scipy_p_value_and_gains_a_ci():
    c = welch(A, B)
    ref = sps.ttest_ind(A, B, equal_var=False)
    assert c.test == "welch" and c.p_value == pytest.approx(ref.pvalue)
    ci = ref.confidence_interval(0.95)
    assert (c.ci_low, c.ci_high) == (pytest.approx(ci.low), pytest.approx(ci.high))


def test_compare_pairs_by_seed_when_it_can_and_falls_back_to_welch():
    a, b = dict(zip(range(5), A)), dict(zip(range(5), B))
    assert compare(a, b).test == "paired t"
    assert compare(a, {**b, 7: 0.9}).test == "paired t"  # baseline has extra seeds: paired on the shared ones
    assert compare({10 + k: v for k, v in a.items()}, b).test == "welch"  # no shared seeds


def test_holm_matches_the_textbook_step_down():
    p = [0.01, 0.04, 0.03, 0.005, None]
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06
    assert holm(p) == [pytest.approx(0.03), pytest.approx(0.06), pytest.approx(0.06), pytest.approx(0.02), None]
    assert holm([0.9, 0.8]) == [1.0, 1.0]


def test_family_adjustment_changes_the_verdict_and_keeps_both_p_values():
    comps = [Comparison(0.01, p, p < 0.05, "", "paired t", 5, se=0.004, df=4) for p in (0.02, 0.03, 0.2, 0.5)]
    adjust_family(comps, alpha=0.05)
    assert [c.p_value for c in comps] == [0.02, 0.03, 0.2, 0.5]
    assert comps[0].p_adjusted == pytest.approx(0.08) and not any(c.significant for c in comps)
    assert "Holm p=0.08" in comps[0].reason and "p=0.02" in comps[0].reason


def test_mde_has_80_percent_power_and_is_near_the_closed_form():
    se, df, alpha = 0.004, 4, 0.05
    d = mde(se, df, alpha)
    assert power_at(d, se, df, alpha) == pytest.approx(0.8, abs=1e-6)
    closed = (sps.t.ppf(1 - alpha / 2, df) + sps.t.ppf(0.8, df)) * se  # the usual approximation
    assert d == pytest.approx(closed, rel=0.1)
    # Monte Carlo: a true difference of d is detected ~80% of the time with 5 paired seeds
    rng = random.Random(0)
    sd = se * math.sqrt(5)
    hits = sum(sps.ttest_1samp([rng.gauss(d, sd) for _ in range(5)], 0).pvalue < alpha for _ in range(4000))
    assert hits / 4000 == pytest.approx(0.8, abs=0.03)


def test_seeds_needed_is_the_smallest_n_with_enough_power():
    sd, delta, alpha = 0.01, 0.005, 0.05
    n = seeds_needed(sd, delta, alpha)
    assert n is not None
    assert power_at(delta, sd / math.sqrt(n), n - 1, alpha) >= 0.8 > power_at(delta, sd / math.sqrt(n - 1), n - 2, alpha)
    assert seeds_needed(sd, 0.0, alpha) is None


def test_zero_variance_comparisons_get_one_consistent_verdict():
    same = paired([0.9, 0.9, 0.9], [0.9, 0.9, 0.9])
    shifted = paired([0.91, 0.92, 0.93], [0.90, 0.91, 0.92])  # every seed differs by exactly +0.01
    flat = welch([0.9, 0.9], [0.8, 0.8])
    assert same.p_value == 1.0 and not same.significant and "identical" in same.reason
    for c in (shifted, flat):
        assert c.p_value is None and not c.significant and "zero variance" in c.reason
    assert not any(isinstance(v, float) and math.isnan(v) for v in (same.diff, shifted.diff, flat.diff))


def test_equivalence_needs_the_ci_above_minus_margin():
    c = paired(A, B)
    assert c.equivalent(0.005)
    tight_loss = paired([x - 0.004 for x in B], B[:4] + [B[4] - 0.0041])
    assert not Comparison(-0.001, 0.5, False, "", ci_low=-0.02, ci_high=0.01).equivalent(0.005)
    assert tight_loss.diff < 0


def test_cost_ratio_median_and_interval():
    r = ratio([1.1, 1.2, 1.0, 1.15, 1.05], [1.0, 1.0, 1.0, 1.0, 1.0])
    assert r.median == pytest.approx(1.1) and r.ci_low > 1.0 and r.measurably_higher and not r.measurably_lower
    noisy = ratio([0.9, 1.1, 0.95, 1.08], [1.0, 1.0, 1.0, 1.0])
    assert not noisy.measurably_lower and not noisy.measurably_higher


def _scipy_power(delta: float, se: float, df: float, alpha: float) -> float:
    """power_at as it was written with scipy.stats (the reference for the scipy.special formulas)."""
    crit = sps.t.ppf(1 - alpha / 2, df)
    out = float(sps.nct.sf(crit, df, delta / se) + sps.nct.cdf(-crit, df, delta / se))
    return out if not math.isnan(out) else float(sps.norm.sf(crit - delta / se) + sps.norm.cdf(-crit - delta / se))


@pytest.mark.parametrize("df", [1, 2, 4, 4.7, 9, 49])
def test_scipy_special_formulas_give_scipy_stats_numbers(df):
    """stats uses scipy.special (t.ppf = stdtrit, t.sf = stdtr at -x, nct.cdf = nctdtr) to spare the command
    scipy.stats' import; the CI half-width, p-values and power are those of scipy.stats."""
    from sweeper.stats import t_ppf

    assert t_ppf(0.975, df) == sps.t.ppf(0.975, df)
    for alpha in (0.05, 0.05 / 3, 0.001):
        for nc in (0.0, 0.5, 2.0, 5.0, 12.0, 40.0):
            assert power_at(nc * 0.01, 0.01, df, alpha) == pytest.approx(_scipy_power(nc * 0.01, 0.01, df, alpha), rel=1e-12, abs=1e-15)
    rng = random.Random(df)
    a, b = [rng.gauss(0.9, 0.01) for _ in range(6)], [rng.gauss(0.905, 0.02) for _ in range(4)]
    assert welch(a, b).p_value == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-12)
    assert paired(a[:4], b).p_value == pytest.approx(sps.ttest_rel(a[:4], b).pvalue, rel=1e-12)


def test_brentq_takes_scipys_steps():
    """The port of scipy's brentq lands on the same root to the last bit, also where the function is not monotone
    (power at df 1, where the noncentral t falls back to the normal) and another root finder lands elsewhere."""
    from scipy.optimize import brentq as scipy_brentq

    from sweeper.stats import brentq

    cases = [(lambda x: x**3 - 2.0, 0.0, 3.0), (lambda x: math.cos(x) - x, 0.0, 1.0), (lambda x: math.exp(x) - 5.0, -1.0, 4.0)]
    for se, alpha in ((0.0127, 0.05 / 3), (0.0073, 0.05 / 3), (0.0069, 0.05)):
        hi = se * (sps.t.ppf(1 - alpha / 2, 1) + sps.t.ppf(0.8, 1)) * 4 + 1e-12
        cases.append((lambda d, se=se, alpha=alpha: power_at(d, se, 1, alpha) - 0.8, 0.0, hi))
    for f, lo, hi in cases:
        assert brentq(f, lo, hi, xtol=1e-10) == scipy_brentq(f, lo, hi, xtol=1e-10)
    reference = scipy_brentq(lambda d: _scipy_power(d, 0.0127, 1, 0.05 / 3) - 0.8, 0.0, cases[3][2], xtol=1e-10)
    assert mde(0.0127, 1, 0.05 / 3) == pytest.approx(reference, rel=1e-12)


def test_an_accuracy_interval_is_cut_to_what_an_accuracy_can_be():
    """Two seeds far apart: the t interval (12.7 standard errors wide each way) leaves [0, 1]; an accuracy's is cut
    to it, the mean and standard deviation are untouched, and an interval inside [0, 1] is not changed."""
    wide, cut = summarize([0.2, 0.8]), summarize([0.2, 0.8], bounds=ACCURACY)
    assert wide.ci_low < 0 and wide.ci_high > 1
    assert (cut.ci_low, cut.ci_high, cut.mean, cut.std) == (0.0, 1.0, wide.mean, wide.std)
    inside = [0.90, 0.91, 0.92]
    assert summarize(inside, bounds=ACCURACY) == summarize(inside)
