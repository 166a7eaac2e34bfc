"""Recommendations per priority (accuracy, compute, size/sparsity, small data), each naming its numbers.

- Accuracy: selection by validation, confirmation by test. Among the techniques that beat the
  baseline significantly on test (Holm-adjusted), the one with the highest replicate validation
  accuracy is chosen (``accuracy_choice``, made once: the registry registers that choice).
- "As accurate as the baseline" (compute, size, sparsity) needs equivalence: the 95% CI of the
  paired difference above ``-margin``; otherwise the text says the evidence is insufficient.
- "Cheaper" needs the interleaved timing's whole CI below 1.
- An inconclusive result states what these seeds could detect (MDE) and how many seeds would
  detect the observed difference.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from ..stats import Ratio
from .rows import BASELINE, Row

SPARSE_ENOUGH = 0.05  # below this share of weights no technique counts as "making the model sparse"


def pts(x: float) -> str:
    return f"{x * 100:+.2f} points"


def ci_pts(lo: float | None, hi: float | None) -> str:
    return "" if lo is None or hi is None else f" [{lo * 100:+.2f}, {hi * 100:+.2f}]"


def ratio_text(r: Ratio | None) -> str:
    if r is None:
        return "not measured"
    ci = f" [{r.ci_low:.2f}, {r.ci_high:.2f}]" if r.ci_low is not None and r.ci_high is not None else ""
    return f"{r.median:.2f}x{ci}"


def _acc(row: Row) -> str:
    s = row.test
    ci = f" [{s.ci_low:.4f}, {s.ci_high:.4f}]" if s.ci_low is not None else ""
    return f"test acc {s.mean:.4f}{ci} (n={s.n})"


def _versus(row: Row) -> str:
    c = row.comparison
    if c is None:
        return "the baseline"
    return f"{pts(c.diff)}{ci_pts(c.ci_low, c.ci_high)} vs baseline, {c.reason}"


def power_text(row: Row) -> str:
    """What an inconclusive comparison could detect, and what it would take."""
    c = row.comparison
    if c is None or c.significant or c.mde is None:
        return ""
    text = f"with {c.n} seeds only differences of {c.mde * 100:.2f} points or more are detectable (80% power)"
    if c.seeds_needed is not None and c.diff > 0:
        text += f"; about {c.seeds_needed} seeds would detect the observed {pts(c.diff)}"
    return text


def _validation(row: Row) -> float:
    if row.val_rep is not None:
        return row.val_rep.mean
    return row.val_acc if row.val_acc is not None else float("-inf")


def accuracy_choice(rows: list[Row]) -> str | None:
    """The configuration the accuracy priority recommends (and the registry registers): among the techniques
    significantly better than the baseline on test, the highest replicate validation accuracy; else the baseline."""
    better = [
        r
        for r in rows
        if r.key != BASELINE and not r.key.startswith("ref:") and r.comparison and r.comparison.significant and r.comparison.diff > 0
    ]
    if better:
        return max(better, key=_validation).key
    return BASELINE if any(r.key == BASELINE for r in rows) else None


def chance_warning(rows: list[Row], classes: int | None, test_rows: int | None) -> str | None:
    """Every replicated configuration within two standard errors of guessing (1/classes, the binomial error over the
    test rows): the model learned nothing (a learning rate that blew the weights up, too few epochs), and no
    recommendation, significant or not, says anything about regularization. None when something learned."""
    if not rows or not classes or classes < 2 or not test_rows:
        return None
    guess = 1 / classes
    limit = guess + 2 * math.sqrt(guess * (1 - guess) / test_rows)
    best = max(rows, key=lambda r: r.test.mean)
    if best.test.mean > limit:
        return None
    return (
        f"Every replicated configuration is at chance level: the best, {best.key}, has test acc {best.test.mean:.4f}, within "
        f"two standard errors of guessing (1/{classes} = {guess:.4f}, {test_rows} test rows). Nothing was learned, so no "
        f"recommendation below holds and no model is registered; check optim.lr, trainer.max_epochs and the data."
    )


def deleted_warning(deleted: list, uri: str) -> str | None:
    """Runs of the study that someone deleted in MLflow are invisible to its searches: a deleted replicate silently
    removes a seed from its comparison (and can turn a verdict). Say so, and how to bring them back."""
    if not deleted:
        return None
    roles = Counter(r.data.tags.get("role", "other") for r in deleted)
    ids = [r.info.run_id for r in deleted]
    listed = " ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
    return (
        f"{len(ids)} run(s) of this study are in MLflow's trash ({', '.join(f'{n} {role}' for role, n in sorted(roles.items()))}: "
        f"{listed}) and are left out of every number below; a deleted replicate is a seed missing from its comparison. "
        f"To count them, restore them (`MLFLOW_TRACKING_URI={uri} mlflow runs restore --run-id <id>`) and re-run the report "
        f"(`python -m sweeper.report` or the same sweep command)."
    )


def recommend(
    rows: list[Row], axis_rows: list[dict[str, Any]] | None = None, axis: str | None = None, choice: str | None = None, margin: float = 0.5
) -> list[tuple[str, str]]:
    """(priority, recommendation naming its numbers). ``choice`` is ``accuracy_choice(rows)``, computed once by
    the caller (here when omitted); ``margin`` is the equivalence margin in accuracy points."""
    techs = [r for r in rows if r.key != BASELINE and not r.key.startswith("ref:")]
    base = next((r for r in rows if r.key == BASELINE), None)
    if base is None or not techs:
        return [("best accuracy", "No replicated baseline and technique to compare.")]
    m = margin / 100
    out = [
        ("best accuracy", _best_accuracy(rows, techs, base, choice or accuracy_choice(rows))),
        ("least compute", _least_compute(techs, base, m, margin)),
        ("smallest/sparsest model", _smallest(techs, base, m, margin)),
        ("small data", _small_data(axis_rows, axis)),
    ]
    return out


def _best_accuracy(rows: list[Row], techs: list[Row], base: Row, choice: str | None) -> str:
    better = [r for r in techs if r.comparison and r.comparison.significant and r.comparison.diff > 0]
    if choice != BASELINE:
        best = next(r for r in rows if r.key == choice)
        val = f"{best.val_rep.mean:.4f}" if best.val_rep else "n/a"
        return (
            f"Use {best.key} ({best.params}): {_acc(best)}, {_versus(best)}. Chosen among the {len(better)} "
            f"technique(s) significantly better than the baseline on test by replicate validation accuracy ({val}); "
            f"the test numbers confirm the choice, they did not make it."
        )
    top = max(techs, key=lambda r: r.comparison.diff if r.comparison else float("-inf"))
    power = power_text(top)
    return (
        f"No technique beats the baseline beyond noise (Holm over {len(techs) + sum(r.key.startswith('ref:') for r in rows)} "
        f"comparisons): the closest searched technique, {top.key}, is {_versus(top)}"
        + (f"; {power}" if power else "")
        + f". Keep the baseline ({_acc(base)}) unless another priority decides."
    )


def _least_compute(techs: list[Row], base: Row, m: float, margin: float) -> str:
    measured = [r for r in techs if r.training_cost is not None]
    if not measured:
        return "Not measured in this study (sweep.timing_repeats=0): no compute claim is made."
    cheaper = sorted((r for r in measured if r.training_cost and r.training_cost.measurably_lower), key=lambda r: r.training_cost.median)  # type: ignore[union-attr]
    equivalent = [r for r in cheaper if r.comparison and r.comparison.equivalent(m)]

    def costs(r: Row) -> str:
        return (
            f"training cost {ratio_text(r.training_cost)} the baseline's (epoch time {ratio_text(r.epoch_cost)}, "
            f"{r.epochs_trained:.1f} vs {base.epochs_trained:.1f} epochs trained), inference {ratio_text(r.inference_cost)}"
        )

    if equivalent:
        r = equivalent[0]
        return f"{r.key}: {costs(r)}; as accurate as the baseline within {margin:g} points ({_versus(r)})."
    if cheaper:
        r = cheaper[0]
        return (
            f"{r.key} is measurably cheaper ({costs(r)}), but the evidence that it is as accurate is insufficient: "
            f"{_versus(r)} (equivalence needs the CI above -{margin:g} points). Otherwise keep the baseline."
        )
    return (
        "No technique is measurably cheaper to train than the baseline (every training-cost 95% CI reaches 1 or more; "
        "interleaved timings): the baseline is the least compute."
    )


def _smallest(techs: list[Row], base: Row, m: float, margin: float) -> str:
    sparse = sorted(
        (r for r in techs if max(r.sparsity_zero, r.sparsity_1e3) >= SPARSE_ENOUGH),
        key=lambda r: (r.sparsity_zero, r.sparsity_1e3),
        reverse=True,
    )
    equivalent = [r for r in sparse if r.comparison and r.comparison.equivalent(m)]
    if equivalent:
        r = equivalent[0]
        return (
            f"{r.key}: {r.sparsity_zero * 100:.1f}% of weights exactly zero (prunable), {r.sparsity_1e3 * 100:.1f}% below 1e-3, "
            f"as accurate as the baseline within {margin:g} points ({_versus(r)})."
        )
    if sparse:
        r = sparse[0]
        return (
            f"{r.key} makes {r.sparsity_zero * 100:.1f}% of weights exactly zero ({r.sparsity_1e3 * 100:.1f}% below 1e-3), "
            f"but the evidence that it is as accurate is insufficient: {_versus(r)} (equivalence needs the CI above "
            f"-{margin:g} points)."
        )
    most = max([base, *techs], key=lambda r: (r.sparsity_1e3, r.sparsity_zero))
    small = min([base, *[r for r in techs if r.comparison and r.comparison.equivalent(m)]], key=lambda r: r.n_params)
    return (
        f"No technique made the weights sparse (most: {most.key} with {most.sparsity_1e3 * 100:.1f}% of |w| < 1e-3); "
        f"the smallest model as accurate as the baseline is {small.key} with {small.n_params:.0f} parameters "
        f"({small.extra_params:+.0f} vs baseline)."
    )


def _small_data(axis_rows: list[dict[str, Any]] | None, axis: str | None) -> str:
    if not axis_rows or axis != "data.train_fraction":
        return "Not measured in this study: run `python -m sweeper +sweep=data_size` for gains by training-set size."
    smallest = min((r["axis"] for r in axis_rows), key=float)
    at = [r for r in axis_rows if r["axis"] == smallest and r["key"] != BASELINE]
    metric = "test" if axis_rows[0].get("metric") == "test_acc" else "validation"
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
        f"{metric} accuracy over the baseline ({best['comparison'].reason}, n={best['n']} seeds)."
    )
