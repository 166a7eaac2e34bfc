"""Statistics for "is this gain real or seed noise": means, t-based 95% CIs, Welch's t-test."""
from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats as sps


@dataclass
class Summary:
    n: int
    mean: float
    ci_low: float | None  # None when n < 2: no interval from one sample
    ci_high: float | None
    std: float | None


def summarize(values: list[float], confidence: float = 0.95) -> Summary:
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n < 2:
        return Summary(n, mean, None, None, None)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = sps.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    return Summary(n, mean, mean - half, mean + half, std)


@dataclass
class Comparison:
    diff: float  # mean(a) - mean(b)
    p_value: float | None
    significant: bool
    reason: str  # why there is no p-value, or the verdict in words


def welch(a: list[float], b: list[float], alpha: float = 0.05) -> Comparison:
    """Welch's unequal-variance t-test of a vs b (two-sided)."""
    diff = sum(a) / len(a) - sum(b) / len(b)
    if len(a) < 2 or len(b) < 2:
        return Comparison(diff, None, False, f"no p-value: needs >= 2 replicates per group (have {len(a)} and {len(b)})")
    if max(a) == min(a) and max(b) == min(b):
        if diff == 0:
            return Comparison(diff, 1.0, False, "not significant (identical results)")
        return Comparison(diff, None, False, "no p-value: every replicate gave the same value (zero variance)")
    p = float(sps.ttest_ind(a, b, equal_var=False).pvalue)
    sig = p < alpha
    return Comparison(diff, p, sig, f"{'significant' if sig else 'not significant'} (p={p:.3g}, alpha={alpha})")
