"""Recommendations per priority (accuracy, compute, size/sparsity, small data), each naming its numbers.

The accuracy choice is made once (``accuracy_choice``): the report states it and the registry
registers that configuration's model.
"""

from __future__ import annotations

from .rows import BASELINE, Row

SPARSE_ENOUGH = 0.05  # below this share of |w| < 1e-3 no technique counts as "making the model sparse"


def pts(x: float) -> str:
    return f"{x * 100:+.2f} points"


def _acc(row: Row) -> str:
    s = row.test
    ci = f" [{s.ci_low:.4f}, {s.ci_high:.4f}]" if s.ci_low is not None else ""
    return f"test acc {s.mean:.4f}{ci} (n={s.n})"


def _versus(row: Row) -> str:
    c = row.comparison
    return f"{pts(c.diff)} vs baseline, {c.reason}" if c else "the baseline"


def accuracy_choice(rows: list[Row]) -> str | None:
    """The configuration the accuracy priority recommends (and the registry registers): the best
    significantly-better technique, else the baseline; None without a replicated baseline."""
    better = [
        r
        for r in rows
        if r.key != BASELINE and not r.key.startswith("ref:") and r.comparison and r.comparison.significant and r.comparison.diff > 0
    ]
    if better:
        return max(better, key=lambda r: r.test.mean).key
    return BASELINE if any(r.key == BASELINE for r in rows) else None


def recommend(
    rows: list[Row], axis_rows: list[dict] | None = None, axis: str | None = None, choice: str | None = None
) -> list[tuple[str, str]]:
    """(priority, recommendation naming its numbers) for accuracy, compute, size/sparsity, small data.
    ``choice`` is ``accuracy_choice(rows)``, computed once by the caller (computed here when omitted)."""
    techs = [r for r in rows if r.key != BASELINE and not r.key.startswith("ref:")]
    base = next((r for r in rows if r.key == BASELINE), None)
    out: list[tuple[str, str]] = []
    if base is None or not techs:
        return [("best accuracy", "No replicated baseline and technique to compare.")]
    choice = choice or accuracy_choice(rows)
    if choice != BASELINE:
        best = next(r for r in rows if r.key == choice)
        out.append(("best accuracy", f"Use {best.key} ({best.params}): {_acc(best)}, {_versus(best)}."))
    else:
        top = max(techs, key=lambda r: r.test.mean)
        out.append(
            (
                "best accuracy",
                f"No technique beats the baseline beyond noise: the best, {top.key}, is "
                f"{_versus(top)}. Keep the baseline ({_acc(base)}) unless another priority decides.",
            )
        )
    not_worse = [r for r in [base, *techs] if not (r.comparison and r.comparison.significant and r.comparison.diff < 0)]
    cheap = min(not_worse, key=lambda r: r.train_time_s)
    out.append(
        (
            "least compute",
            f"{cheap.key}: {cheap.train_time_s:.2f} s to train ({cheap.train_time_s / base.train_time_s:.2f}x "
            f"the baseline; {cheap.epoch_time_rel:.2f}x per epoch, {cheap.epochs_to_best:.1f} epochs "
            f"to best/stop), inference {cheap.inference_rel:.2f}x, {_acc(cheap)}, {_versus(cheap)}.",
        )
    )
    sparse = max(not_worse, key=lambda r: (r.sparsity_1e3, r.sparsity_zero))
    if sparse.sparsity_1e3 < SPARSE_ENOUGH:
        small = min(not_worse, key=lambda r: r.n_params)
        out.append(
            (
                "smallest/sparsest model",
                f"No technique made the weights sparse (most: {sparse.key} with "
                f"{sparse.sparsity_1e3 * 100:.1f}% of |w| < 1e-3); the smallest model is {small.key} "
                f"with {small.n_params:.0f} parameters ({small.extra_params:+.0f} vs baseline).",
            )
        )
    else:
        out.append(
            (
                "smallest/sparsest model",
                f"{sparse.key}: {sparse.sparsity_1e3 * 100:.1f}% of weights below 1e-3, "
                f"{sparse.sparsity_zero * 100:.1f}% exactly zero (prunable), {_acc(sparse)}, {_versus(sparse)}.",
            )
        )
    out.append(("small data", _small_data(axis_rows, axis)))
    return out


def _small_data(axis_rows: list[dict] | None, axis: str | None) -> str:
    if not axis_rows or axis != "data.train_fraction":
        return "Not measured in this study: run `python -m sweeper +sweep=data_size` for gains by training-set size."
    smallest = min(r["axis"] for r in axis_rows)
    at = [r for r in axis_rows if r["axis"] == smallest and r["key"] != BASELINE]
    sig = [r for r in at if r["comparison"].significant and r["comparison"].diff > 0]
    if not sig:
        top = max(at, key=lambda r: r["comparison"].diff)
        return (
            f"At {float(smallest) * 100:.0f}% of the training data no technique beats the baseline beyond noise "
            f"(best: {top['key']}, {pts(top['comparison'].diff)}, {top['comparison'].reason})."
        )
    best = max(sig, key=lambda r: r["comparison"].diff)
    return (
        f"At {float(smallest) * 100:.0f}% of the training data use {best['key']}: {pts(best['comparison'].diff)} "
        f"validation accuracy over the baseline ({best['comparison'].reason}, n={best['n']} seeds)."
    )
