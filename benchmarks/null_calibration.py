"""Are the report's verdicts honest? Family-wise false-positive rate on null compare reports.

A null report has a baseline and ``--rows`` "techniques" that are the baseline itself with another
data-order stream (``data.order_stream=k``): nothing can differ in expectation, yet no two rows are
bit-identical. Each report is judged twice on the same numbers:

- today's procedure (sweeper's report): paired t on per-seed differences, Holm over the family at alpha;
- the previous procedure, for contrast: Welch's t-test per row at alpha, unadjusted.

The family-wise rate (reports with any "significant" row) must be <= alpha within its sampling error.
A positive control (default: batch norm, a real effect on this setup) is added to each report's family
to show how often a real effect is detected at the default seed count.

    python benchmarks/null_calibration.py                 # 40 reports x 8 null rows x 5 seeds, digits, 10 epochs
    python benchmarks/null_calibration.py --reports 20 --control regularizer=dropout regularizer.p=0.5
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from scipy import stats as sps

from sweeper import config, runtime
from sweeper.stats import adjust_family, compare, welch
from sweeper.trial import prepare, run_trial


def clopper_pearson(k: int, n: int) -> tuple[float, float]:
    lo = 0.0 if k == 0 else float(sps.beta.ppf(0.025, k, n - k + 1))
    hi = 1.0 if k == n else float(sps.beta.ppf(0.975, k + 1, n - k))
    return lo, hi


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reports", type=int, default=40)
    ap.add_argument("--rows", type=int, default=8, help="null techniques per report (compare has 8)")
    ap.add_argument("--seeds", type=int, default=5, help="replicate seeds per row (sweep.replicates default)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--control", nargs="*", default=["regularizer=batchnorm"], help="overrides of the positive control")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--first-report", type=int, default=0, help="offset of the report seeds (another independent batch)")
    ap.add_argument(
        "--streams",
        choices=["order", "all"],
        default="order",
        help="what differs in a null row: the data order only (same initial weights as the baseline), or "
        "every random stream (another initialization and order; rows then pair by replicate index)",
    )
    a = ap.parse_args()
    runtime.setup()
    torch.set_num_threads(a.threads)
    base_args = ["data=digits", "model.hidden=[32,16]", f"trainer.max_epochs={a.epochs}", "trainer.accelerator=cpu"]

    def accs(overrides: list[str], seeds: list[int], stream: int = 0) -> dict[int, float]:
        """test accuracy keyed by replicate index; ``stream`` > 0 with --streams all: another seed family."""
        out = {}
        for i, s in enumerate(seeds):
            seed = s + 1_000_003 * stream if a.streams == "all" else s
            cfg = config.load([*base_args, *overrides, f"seed={seed}"])
            out[i] = run_trial(cfg, None, prepared=prepare(cfg), evaluate_test=True).metrics["test_acc"]
        return out

    t0 = time.perf_counter()
    new_fp = old_fp = new_hit = old_hit = identical = 0
    effects = []
    for r in range(a.reports):
        seeds = [100_000 + (a.first_report + r) * a.seeds + i for i in range(a.seeds)]  # fresh seeds per report: independent
        base = accs([], seeds)
        nulls = [accs([f"data.order_stream={k}"] if a.streams == "order" else [], seeds, k) for k in range(1, a.rows + 1)]
        control = accs(a.control, seeds)
        identical += sum(all(n[i] == base[i] for i in range(len(seeds))) for n in nulls)
        family = [compare(n, base, a.alpha) for n in nulls]
        adjust_family(family, a.alpha)
        new_fp += any(c.significant for c in family)
        old_fp += any(welch(list(n.values()), list(base.values()), a.alpha).significant for n in nulls)
        with_control = [compare(n, base, a.alpha) for n in nulls] + [compare(control, base, a.alpha)]
        adjust_family(with_control, a.alpha)
        c = with_control[-1]
        effects.append(c.diff)
        new_hit += c.significant and c.diff > 0
        old = welch(list(control.values()), list(base.values()), a.alpha)
        old_hit += old.significant and old.diff > 0
        print(
            f"report {r + 1}/{a.reports}: new any-significant={any(x.significant for x in family)}  "
            f"control {c.diff * 100:+.2f} points {'detected' if c.significant else 'missed'}  ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    n = a.reports
    print()
    what = "data order" if a.streams == "order" else "initialization and data order"
    print(
        f"null calibration: {n} reports x {a.rows} null rows x {a.seeds} seeds (digits, MLP hidden [32, 16], "
        f"{a.epochs} epochs), null rows differ from the baseline in {what}, alpha={a.alpha}; bit-identical null rows: {identical}"
    )
    for name, k in (("paired t + Holm (today)", new_fp), ("Welch, unadjusted (before)", old_fp)):
        lo, hi = clopper_pearson(k, n)
        print(f"  family-wise false-positive rate, {name}: {k}/{n} = {k / n:.3f} (95% CI {lo:.3f}-{hi:.3f})")
    mean_eff = sum(effects) / len(effects)
    print(
        f"  positive control {' '.join(a.control)} (mean effect {mean_eff * 100:+.2f} points): detected in "
        f"{new_hit}/{n} reports today (Holm over {a.rows + 1}), {old_hit}/{n} before"
    )
    expected_old = 1 - (1 - a.alpha) ** a.rows
    print(
        f"  (independent tests would give 1-(1-alpha)^{a.rows} = {expected_old:.2f} for the unadjusted procedure;"
        f" rows sharing the baseline are positively correlated, so less)  total {time.perf_counter() - t0:.0f} s"
    )
    if math.isnan(mean_eff):
        sys.exit(1)


if __name__ == "__main__":
    main()
