"""One row per replicated configuration (baseline first) and the axis table of grid sweeps, with statistics.

Every row is compared with the baseline on test accuracy, paired by seed (all rows are replicated
on the same fresh seeds); the rows form one family, Holm-adjusted at alpha / looks. Validation
accuracy of the replicates is kept for selection among significant rows; costs come from the
interleaved timing probes (``costs.py``), never from the replicates' own wall times.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from ..stats import ACCURACY, Comparison, Ratio, Summary, adjust_family, compare, summarize
from .collect import StudyData

BASELINE = "none"  # the baseline row's key (the enqueued baseline trial's replicates), whatever its technique
UNREGULARIZED = "unregularized"  # a searched unregularized trial's key when the baseline is regularized


@dataclass
class Row:
    key: str
    params: str
    val_acc: float | None  # the search trial's validation accuracy (what selected this configuration)
    test: Summary  # replicates' test accuracy
    comparison: Comparison | None  # vs the baseline; None for the baseline itself
    gen_gap: float
    sparsity_zero: float
    sparsity_1e3: float
    weight_l2: float
    n_params: float
    epochs_trained: float  # mean over seeds: what was paid for
    val_rep: Summary | None = None  # replicates' validation accuracy: ranks significant rows for the recommendation
    seeds: list[int] = field(default_factory=list)
    best_epoch: float = 0.0  # mean epoch (1-based) of the highest validation accuracy
    train_time_s: float = 0.0  # mean wall time of its replicate runs (context only; not a cost claim)
    epoch_cost: Ratio | None = None  # epoch time / baseline's, interleaved probe
    inference_cost: Ratio | None = None  # inference latency / baseline's, interleaved probe
    training_cost: Ratio | None = None  # epoch-time ratio x epochs-trained ratio
    extra_params: float = 0.0


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _trial_params(run: Any, searched: list[str]) -> str:
    """The values Optuna chose for this trial (conditional parameters that did not apply are absent)."""
    from ..config import GROUPS

    chosen = json.loads(run.data.tags.get("searched", "{}"))
    shown = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in chosen.items() if k not in GROUPS]
    return ", ".join(shown) or "defaults"


def _baseline_params(trial: Any, replicate: Any) -> str:
    """``baseline``, plus what it is when it is regularized (``sweep.baseline=[regularizer=l2, ...]``): the row's
    key says ``none`` for every baseline."""
    technique = trial.data.tags.get("technique", BASELINE)
    if technique == BASELINE:
        return "baseline"
    return f"baseline ({technique}: {replicate.data.tags.get('overrides') or 'defaults'})"


def _ratio(metrics: dict[str, float] | None, name: str) -> Ratio | None:
    if not metrics or name not in metrics:
        return None
    return Ratio(metrics[name], metrics.get(f"{name}_lo"), metrics.get(f"{name}_hi"), int(metrics.get("repeats", 0)))


def build_rows(data: StudyData) -> list[Row]:
    """One row per replicated configuration, baseline first; paired, Holm-adjusted comparisons with the baseline."""
    by_key: dict[str, list[Any]] = {}
    for r in data.replicates:
        by_key.setdefault(r.data.tags["replicate_of"], []).append(r)
    trial_by_number = {r.data.tags.get("trial_number"): r for r in data.trials}
    rows = []
    for key, reps in by_key.items():
        m = lambda name, reps=reps: [r.data.metrics[name] for r in reps if name in r.data.metrics]
        source = trial_by_number.get(reps[0].data.tags.get("source_trial"))
        if source is not None:
            is_base = source.data.tags.get("baseline") == "True"
            params = _baseline_params(source, reps[0]) if is_base else _trial_params(source, data.searched)
            val = source.data.metrics.get("final_val_acc")
        else:
            params, val = "reference: " + (reps[0].data.tags.get("overrides") or "defaults"), None
        vals = m("final_val_acc")
        rows.append(
            Row(
                key,
                params,
                val,
                summarize(m("test_acc"), bounds=ACCURACY),
                None,
                _mean(m("final_gen_gap")),
                _mean(m("sparsity_zero")),
                _mean(m("sparsity_1e-3")),
                _mean(m("weight_l2")),
                _mean(m("n_params")),
                _mean(m("epochs_trained")),
                val_rep=summarize(vals, bounds=ACCURACY) if vals else None,
                seeds=sorted(int(r.data.tags["seed"]) for r in reps),
                best_epoch=_mean(m("best_epoch")),
                train_time_s=_mean(m("train_time_s")),
                epoch_cost=_ratio(data.costs.get(key), "epoch_time_ratio"),
                inference_cost=_ratio(data.costs.get(key), "inference_ratio"),
            )
        )
    rows.sort(key=lambda r: (r.key != BASELINE, r.key.startswith("ref:"), r.key))
    base = next((r for r in rows if r.key == BASELINE), None)
    if base is None:
        return rows
    base_acc = {int(r.data.tags["seed"]): r.data.metrics["test_acc"] for r in by_key[BASELINE]}
    family = []
    for row in rows:
        row.extra_params = row.n_params - base.n_params
        if row is base:
            continue
        acc = {int(r.data.tags["seed"]): r.data.metrics["test_acc"] for r in by_key[row.key]}
        row.comparison = compare(acc, base_acc, data.alpha_per_look)
        family.append(row.comparison)
        if row.epoch_cost is not None and base.epochs_trained > 0:
            scale = row.epochs_trained / base.epochs_trained  # epochs paid for: e.g. early stopping trains fewer
            c = row.epoch_cost
            row.training_cost = Ratio(c.median * scale, c.ci_low and c.ci_low * scale, c.ci_high and c.ci_high * scale, c.n)
    adjust_family(family, data.alpha_per_look)
    base.epoch_cost = base.inference_cost = base.training_cost = Ratio(1.0, 1.0, 1.0, 0)
    return rows


def axis_table(data: StudyData) -> list[dict[str, Any]]:
    """technique x axis value: test accuracy over the grid's seeds and the paired gain over the baseline there.

    Grid sweeps select nothing, so their trials evaluate the test split (never the validation split that
    early stopping used to pick its epoch); every cell is one comparison of one Holm family."""
    if not data.axis:
        return []
    metric = (
        "test_acc" if all("test_acc" in r.data.metrics for r in data.trials if r.data.tags.get("state") == "completed") else "final_val_acc"
    )
    cells: dict[tuple[str, str], dict[int, float]] = {}
    for r in data.trials:
        if r.data.tags.get("state") != "completed":
            continue
        key = (r.data.tags["technique"], _axis_value(r, data.axis))
        seed = int(r.data.params.get("seed", r.data.tags.get("trial_number", 0)))
        cells.setdefault(key, {})[seed] = r.data.metrics[metric]
    out: list[dict[str, Any]] = []
    for (tech, value), accs in sorted(cells.items(), key=lambda kv: (kv[0][0] != BASELINE, kv[0][0], _num(kv[0][1]))):
        base = cells.get((BASELINE, value))
        comp = compare(accs, base, data.alpha) if base and tech != BASELINE else None
        out.append(
            {
                "key": tech,
                "axis": value,
                "n": len(accs),
                "summary": summarize(list(accs.values()), bounds=ACCURACY),
                "comparison": comp,
                "metric": metric,
            }
        )
    out = [r for r in out if r["comparison"] is not None or r["key"] == BASELINE]
    adjust_family([r["comparison"] for r in out if r["comparison"] is not None], data.alpha)
    return out


def _axis_value(run: Any, axis: str) -> str:
    if axis == "model":  # depth sweeps: the number of hidden layers of the chosen model
        return str(len(json.loads(run.data.params["model.hidden"])))
    return str(run.data.params.get(axis) or run.data.tags.get("axis_value", "?"))


def _num(v: Any) -> Any:
    try:
        return float(v)
    except (TypeError, ValueError):
        return len(str(v))  # e.g. "[64, 32]": depth by list length
