"""One row per replicated configuration (baseline first) and the axis table of grid sweeps, with statistics."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..stats import Comparison, Summary, summarize, welch
from .collect import StudyData

BASELINE = "none"


@dataclass
class Row:
    key: str
    params: str
    val_acc: float | None
    test: Summary
    comparison: Comparison | None  # vs the baseline; None for the baseline itself
    gen_gap: float
    sparsity_zero: float
    sparsity_1e3: float
    weight_l2: float
    epoch_time_s: float
    train_time_s: float
    inference_ms: float
    n_params: float
    epochs_to_best: float
    epoch_time_rel: float = 1.0
    inference_rel: float = 1.0
    extra_params: float = 0.0


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _trial_params(run, searched: list[str]) -> str:
    """The values Optuna chose for this trial (conditional parameters that did not apply are absent)."""
    from ..config import GROUPS

    chosen = json.loads(run.data.tags.get("searched", "{}"))
    shown = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in chosen.items() if k not in GROUPS]
    return ", ".join(shown) or "defaults"


def build_rows(data: StudyData) -> list[Row]:
    """One row per replicated configuration, baseline first; comparisons against the baseline."""
    by_key: dict[str, list] = {}
    for r in data.replicates:
        by_key.setdefault(r.data.tags["replicate_of"], []).append(r)
    trial_by_number = {r.data.tags.get("trial_number"): r for r in data.trials}
    rows = []
    for key, reps in by_key.items():
        m = lambda name, reps=reps: [r.data.metrics[name] for r in reps if name in r.data.metrics]
        source = trial_by_number.get(reps[0].data.tags.get("source_trial"))
        if source is not None:
            params = "baseline" if source.data.tags.get("baseline") == "True" else _trial_params(source, data.searched)
            val = source.data.metrics.get("final_val_acc")
        else:
            params, val = "reference: " + (reps[0].data.tags.get("overrides") or "defaults"), None
        stops = [r.data.metrics.get("restored_epoch", r.data.metrics.get("best_epoch", 0)) for r in reps]
        rows.append(
            Row(
                key,
                params,
                val,
                summarize(m("test_acc")),
                None,
                _mean(m("final_gen_gap")),
                _mean(m("sparsity_zero")),
                _mean(m("sparsity_1e-3")),
                _mean(m("weight_l2")),
                _mean(m("epoch_time_s")),
                _mean(m("train_time_s")),
                _mean(m("inference_ms_per_1k")),
                _mean(m("n_params")),
                _mean(stops),
            )
        )
    rows.sort(key=lambda r: (r.key != BASELINE, r.key.startswith("ref:"), r.key))
    base = next((r for r in rows if r.key == BASELINE), None)
    if base is not None:
        base_acc = [r.data.metrics["test_acc"] for r in by_key[BASELINE]]
        for row in rows:
            row.epoch_time_rel = row.epoch_time_s / base.epoch_time_s
            row.inference_rel = row.inference_ms / base.inference_ms
            row.extra_params = row.n_params - base.n_params
            if row is not base:
                acc = [r.data.metrics["test_acc"] for r in by_key[row.key]]
                row.comparison = welch(acc, base_acc, data.alpha)
    return rows


def axis_table(data: StudyData) -> list[dict]:
    """technique x axis value: mean validation accuracy over seeds and the gain over the baseline there."""
    if not data.axis:
        return []
    cells: dict[tuple[str, str], list[float]] = {}
    for r in data.trials:
        if r.data.tags.get("state") != "completed":
            continue
        key = (r.data.tags["technique"], _axis_value(r, data.axis))
        cells.setdefault(key, []).append(r.data.metrics["final_val_acc"])
    out = []
    for (tech, value), accs in sorted(cells.items(), key=lambda kv: (kv[0][0] != BASELINE, kv[0][0], _num(kv[0][1]))):
        base = cells.get((BASELINE, value))
        comp = welch(accs, base, data.alpha) if base and tech != BASELINE else None
        out.append({"key": tech, "axis": value, "n": len(accs), "summary": summarize(accs), "comparison": comp})
    return [r for r in out if r["comparison"] is not None or r["key"] == BASELINE]


def _axis_value(run, axis: str) -> str:
    if axis == "model":  # depth sweeps: the number of hidden layers of the chosen model
        return str(len(json.loads(run.data.params["model.hidden"])))
    return run.data.params.get(axis) or run.data.tags.get("axis_value", "?")


def _num(v: Any) -> Any:
    try:
        return float(v)
    except (TypeError, ValueError):
        return len(str(v))  # e.g. "[64, 32]": depth by list length
