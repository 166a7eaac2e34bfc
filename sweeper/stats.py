"""Statistics for "is this gain real or seed noise".

Rules (docs/statistics.md): rows replicated on the same seeds are compared paired (per-seed
differences, paired t); otherwise Welch. One report is one family of comparisons against the
baseline, so p-values are Holm-adjusted and verdicts use the adjusted value. A non-significant
result is not "as good as": equivalence needs the difference's 95% CI above ``-margin``. Every
comparison states its minimum detectable difference (MDE) at 80% power and, when inconclusive,
the seeds that would detect the observed difference.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from scipy import special

POWER = 0.8
FLOAT64_EPS = 2.220446049250313e-16  # float64's machine epsilon (scipy's brentq default rtol is 4 of them)


# The t, noncentral t and normal distributions from scipy.special, the functions scipy.stats' own distributions call
# (t.ppf is stdtrit, t.sf is stdtr at -x, nct.cdf is nctdtr): importing scipy.stats took 0.46 s more of every sweep
# command's report on a 2-core machine (scipy.special 0.12 s), for the same numbers (tested against scipy.stats).
def t_ppf(q: float, df: float) -> float:
    return float(special.stdtrit(df, q))


def _t_two_sided_p(t: float, df: float) -> float:
    return float(2.0 * special.stdtr(df, -abs(t)))


@dataclass
class Summary:
    n: int
    mean: float
    ci_low: float | None  # None when n < 2: no interval from one sample
    ci_high: float | None
    std: float | None


def summarize(values: list[float], confidence: float = 0.95, bounds: tuple[float, float] | None = None) -> Summary:
    """Mean and t interval. ``bounds``: the quantity's possible range (an accuracy's [0, 1]); the interval is cut to
    it, which loses no coverage (the true mean is inside) and avoids a printed [-0.78, 1.76] from two seeds."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n < 2:
        return Summary(n, mean, None, None, None)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Summary(n, mean, low, high, std)


ACCURACY = (0.0, 1.0)  # ``summarize(..., bounds=ACCURACY)``


@dataclass
class Comparison:
    diff: float  # mean(a) - mean(b) (paired: mean of the per-seed differences)
    p_value: float | None  # raw two-sided p; None when no test is possible (reason says why)
    significant: bool
    reason: str  # the verdict in words, or why there is no p-value
    test: str = "welch"  # "paired t" | "welch" | "none"
    n: int = 0  # seeds (paired) or the smaller group's size (Welch)
    ci_low: float | None = None  # 95% CI of the difference
    ci_high: float | None = None
    se: float | None = None  # standard error of the difference
    df: float | None = None
    p_adjusted: float | None = None  # Holm over the report's family; set by adjust_family
    mde: float | None = None  # minimum detectable difference at 80% power (two-sided, at the family's level)
    seeds_needed: int | None = None  # seeds that would detect the observed difference at that level

    def equivalent(self, margin: float) -> bool:
        """As good as the baseline: the whole 95% CI of the difference lies above -margin."""
        return self.ci_low is not None and self.ci_low > -margin


def _ci(diff: float, se: float, df: float, confidence: float = 0.95) -> tuple[float, float]:
    half = t_ppf(0.5 + confidence / 2, df) * se
    return diff - half, diff + half


def paired(a: list[float], b: list[float], alpha: float = 0.05) -> Comparison:
    """Paired t-test of a vs b, where a[i] and b[i] share seed i (two-sided)."""
    if len(a) != len(b):
        raise ValueError(f"paired samples need equal lengths ({len(a)} vs {len(b)})")
    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    diff = sum(d) / n
    if n < 2:
        return Comparison(diff, None, False, f"no p-value: needs >= 2 paired seeds (have {n})", "paired t", n)
    sd = math.sqrt(sum((x - diff) ** 2 for x in d) / (n - 1))
    if sd == 0:
        return _zero_variance(diff, "paired t", n, "every seed gave the same difference")
    se = sd / math.sqrt(n)
    p = _t_two_sided_p(diff / se, n - 1)
    lo, hi = _ci(diff, se, n - 1)
    return _verdict(Comparison(diff, p, False, "", "paired t", n, lo, hi, se, n - 1), alpha)


def welch(a: list[float], b: list[float], alpha: float = 0.05) -> Comparison:
    """Welch's unequal-variance t-test of a vs b (two-sided), for rows that cannot be paired."""
    diff = sum(a) / len(a) - sum(b) / len(b)
    n = min(len(a), len(b))
    if len(a) < 2 or len(b) < 2:
        return Comparison(diff, None, False, f"no p-value: needs >= 2 replicates per group (have {len(a)} and {len(b)})", "welch", n)
    va, vb = (summarize(x).std ** 2 for x in (a, b))  # type: ignore[operator]
    se2 = va / len(a) + vb / len(b)
    if se2 == 0:
        return _zero_variance(diff, "welch", n, "every replicate gave the same value")
    se = math.sqrt(se2)
    df = se2**2 / ((va / len(a)) ** 2 / (len(a) - 1) + (vb / len(b)) ** 2 / (len(b) - 1))
    p = _t_two_sided_p(diff / se, df)
    lo, hi = _ci(diff, se, df)
    return _verdict(Comparison(diff, p, False, "", "welch", n, lo, hi, se, df), alpha)


def compare(a: dict[int, float], b: dict[int, float], alpha: float = 0.05) -> Comparison:
    """a vs b keyed by seed: paired on the seeds both have when every seed of ``a`` is among them, else Welch."""
    common = sorted(set(a) & set(b))
    if len(common) >= 2 and set(a) <= set(b):
        return paired([a[s] for s in common], [b[s] for s in common], alpha)
    return welch(list(a.values()), list(b.values()), alpha)


def _zero_variance(diff: float, test: str, n: int, what: str) -> Comparison:
    """No noise estimate: never significant, whatever the difference; the reason says so."""
    if diff == 0:
        return Comparison(0.0, 1.0, False, "not significant (identical results on every seed)", test, n, 0.0, 0.0, 0.0)
    return Comparison(diff, None, False, f"no p-value: zero variance ({what}); cannot tell from seed noise", test, n)


def _verdict(c: Comparison, alpha: float) -> Comparison:
    p = c.p_adjusted if c.p_adjusted is not None else c.p_value
    assert p is not None
    c.significant = p < alpha
    adj = f", Holm p={c.p_adjusted:.3g}" if c.p_adjusted is not None else ""
    c.reason = f"{'significant' if c.significant else 'not significant'} ({c.test}, p={c.p_value:.3g}{adj}, alpha={alpha:g})"
    return c


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (None entries are not tests and stay None)."""
    idx = sorted((i for i, p in enumerate(p_values) if p is not None), key=lambda i: p_values[i])  # type: ignore[arg-type,return-value]
    m = len(idx)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, i in enumerate(idx):
        p = p_values[i]
        assert p is not None
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def adjust_family(comparisons: list[Comparison], alpha: float, power: float = POWER) -> None:
    """Holm-adjust a report's family in place, re-judge each at ``alpha`` and add MDE and seeds needed.

    The MDE and the seeds needed are computed at the Bonferroni level alpha/m, the level the
    strictest Holm step must reach, so they are honest about what the corrected procedure can detect.
    """
    adjusted = holm([c.p_value for c in comparisons])
    m = max(1, sum(p is not None for p in adjusted))
    for c, p_adj in zip(comparisons, adjusted):
        if p_adj is not None:
            c.p_adjusted = p_adj
            _verdict(c, alpha)
        if c.se is not None and c.se > 0 and c.df is not None:
            c.mde = mde(c.se, c.df, alpha / m, power)
            if not c.significant and c.diff != 0 and c.test == "paired t":
                c.seeds_needed = seeds_needed(c.se * math.sqrt(c.n), abs(c.diff), alpha / m, power)


def power_at(delta: float, se: float, df: float, alpha: float) -> float:
    """Exact power of a two-sided t-test (noncentral t) to detect a true difference ``delta``."""
    crit = t_ppf(1 - alpha / 2, df)
    nc = delta / se
    out = float(1.0 - special.nctdtr(df, nc, crit) + special.nctdtr(df, nc, -crit))
    if math.isnan(out):  # scipy's noncentral t fails far in the tail, where power is ~0 or ~1 anyway
        out = float(special.ndtr(nc - crit) + special.ndtr(-crit - nc))
    return out


def mde(se: float, df: float, alpha: float, power: float = POWER) -> float:
    """The smallest true difference detected with probability ``power`` (solved on the noncentral t)."""
    hi = se * (t_ppf(1 - alpha / 2, df) + t_ppf(power, df)) * 4 + 1e-12
    return brentq(lambda d: power_at(d, se, df, alpha) - power, 0.0, hi, xtol=1e-10)


def brentq(f: Callable[[float], float], xa: float, xb: float, xtol: float, rtol: float = 4 * FLOAT64_EPS, maxiter: int = 100) -> float:
    """scipy.optimize.brentq, step for step (scipy's Zeros/brentq.c, by Charles Harris, in Python): the same root to
    the last bit, without importing scipy.optimize (0.16 s). Where the noncentral t falls back to the normal (df 1-2)
    power is not monotone, and another root finder would land on another crossing: this one keeps the numbers."""
    xpre, xcur = xa, xb
    xblk = fblk = spre = scur = 0.0
    fpre, fcur = f(xpre), f(xcur)
    if fpre == 0:
        return xpre
    if fcur == 0:
        return xcur
    if math.copysign(1, fpre) == math.copysign(1, fcur):
        raise ValueError("f(a) and f(b) must have different signs")
    for _ in range(maxiter):
        if fpre != 0 and fcur != 0 and math.copysign(1, fpre) != math.copysign(1, fcur):
            xblk, fblk = xpre, fpre
            spre = scur = xcur - xpre
        if abs(fblk) < abs(fcur):
            xpre, xcur, xblk = xcur, xblk, xcur
            fpre, fcur, fblk = fcur, fblk, fcur
        delta = (xtol + rtol * abs(xcur)) / 2
        sbis = (xblk - xcur) / 2
        if fcur == 0 or abs(sbis) < delta:
            return xcur
        if abs(spre) > delta and abs(fcur) < abs(fpre):
            if xpre == xblk:  # interpolate
                stry = -fcur * (xcur - xpre) / (fcur - fpre)
            else:  # extrapolate
                dpre = (fpre - fcur) / (xpre - xcur)
                dblk = (fblk - fcur) / (xblk - xcur)
                stry = -fcur * (fblk * dblk - fpre * dpre) / (dblk * dpre * (fblk - fpre))
            if 2 * abs(stry) < min(abs(spre), 3 * abs(sbis) - delta):  # good short step
                spre, scur = scur, stry
            else:
                spre = scur = sbis
        else:
            spre = scur = sbis
        xpre, fpre = xcur, fcur
        xcur += scur if abs(scur) > delta else (delta if sbis > 0 else -delta)
        fcur = f(xcur)
    raise RuntimeError(f"brentq did not converge in {maxiter} iterations")


def seeds_needed(sd: float, delta: float, alpha: float, power: float = POWER, cap: int = 10_000) -> int | None:
    """Paired seeds that would detect ``delta`` given the per-seed SD of the differences; None past ``cap``."""
    if delta <= 0 or sd <= 0:
        return None

    def ok(n: int) -> bool:
        return power_at(delta, sd / math.sqrt(n), n - 1, alpha) >= power

    if not ok(cap):
        return None
    lo, hi = 2, cap
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


@dataclass
class Ratio:
    """A cost ratio (technique / baseline) from interleaved repeats: median and 95% CI (t on log ratios)."""

    median: float
    ci_low: float | None
    ci_high: float | None
    n: int

    @property
    def measurably_lower(self) -> bool:
        return self.ci_high is not None and self.ci_high < 1.0

    @property
    def measurably_higher(self) -> bool:
        return self.ci_low is not None and self.ci_low > 1.0


def ratio(technique: list[float], baseline: list[float]) -> Ratio:
    """Paired repeats (technique[i] measured right next to baseline[i])."""
    logs = [math.log(t / b) for t, b in zip(technique, baseline) if t > 0 and b > 0]
    if not logs:
        raise ValueError("no positive timings")
    med = math.exp(sorted(logs)[len(logs) // 2] if len(logs) % 2 else sum(sorted(logs)[len(logs) // 2 - 1 : len(logs) // 2 + 1]) / 2)
    s = summarize(logs)
    if s.ci_low is None or s.ci_high is None:
        return Ratio(med, None, None, len(logs))
    return Ratio(med, math.exp(s.ci_low), math.exp(s.ci_high), len(logs))
