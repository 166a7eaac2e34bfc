"""What a configuration costs to train and to serve, measured alone and interleaved with the baseline.

Timings inside a study are noisy (other workers, other processes, warm caches), and a single
measurement per configuration once made "weight decay is cheaper than no regularization". So each
reported configuration is probed separately after replication: in each of ``sweep.timing_repeats``
repeats the baseline and the configuration each train one epoch alone in this process, in
alternating order, on the same data and seed. The per-repeat ratios give a median and a 95% CI (t
on log ratios, ``stats.ratio``); the report calls a technique cheaper only when the whole CI is
below 1. Results are MLflow runs tagged ``role=cost`` under the parent run, found again on resume.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import optuna
from omegaconf import DictConfig
from optuna.storages import RDBStorage

from . import config as config_mod
from .stats import ratio
from .tracking import Tracker

PROBE_SECONDS = 0.25  # a probe trains enough epochs to last this long: a 10 ms epoch alone is mostly timer noise


def _prepared(argv: list[str], epochs: int = 1) -> Any:
    """A configuration composed, validated and with its data loaded: once per configuration, not per repeat."""
    from .trial import prepare

    return prepare(config_mod.load_with(argv, [f"trainer.max_epochs={epochs}"]))


def _probe(prepared: Any) -> tuple[float, float]:
    """(median seconds of one epoch's training loop, eval forward ms per 1,000 samples) of one model, no tracking."""
    import statistics

    from .trial import run_trial

    result = run_trial(prepared.cfg, None, prepared=prepared, evaluate_test=False)
    if result.status != "completed" or not result.epoch_seconds:
        raise RuntimeError(f"timing probe failed: {result.reason}")
    return statistics.median(result.epoch_seconds), float(result.metrics["inference_ms_per_1k"])


def done_costs(tracker: Tracker, parent: str) -> set[str]:
    return {r.data.tags["replicate_of"] for r in tracker.finished_children(parent, "cost")}


def measure_costs(
    cfg: DictConfig, argv: list[str], configs: dict[str, list[str]], tracker: Tracker, parent: str, study_name: str, storage: RDBStorage
) -> int:
    """``configs``: replicate key -> overrides, the baseline ("none") included. Each configuration is a claim slot
    (``claims.py``), so concurrent invocations never time one twice. Returns how many were measured here."""
    from .claims import digest, open_slots, run_slots

    repeats = int(cfg.sweep.timing_repeats)
    if repeats == 0 or "none" not in configs:
        return 0
    seed = config_mod.replicate_seeds(cfg, 1)[0]
    fixed = [f"seed={seed}", "trainer.scale_epochs_by_fraction=false"]
    base = argv + configs["none"] + fixed
    done = done_costs(tracker, parent)
    items = [{"key": k} for k in configs if k != "none" and k not in done]
    studies = [open_slots(storage, f"{study_name}.costs.{digest(sorted(configs.items()))}", items)]
    warm: list[int] = []  # epochs per probe, set by the warm-up

    def job(item: dict, claim: optuna.Trial) -> float | None:
        key = item["key"]
        if not warm:  # data loading and first-use allocations are paid before anything is timed
            epoch_s, _ = _probe(_prepared(base))
            warm.append(max(1, min(20, math.ceil(PROBE_SECONDS / max(epoch_s, 1e-4)))))
        print(f"timing {key} vs baseline, {repeats} interleaved repeats", file=sys.stderr)
        tech, base_run = _prepared(argv + configs[key] + fixed, warm[0]), _prepared(base, warm[0])
        t_epoch: list[float] = []
        b_epoch: list[float] = []
        t_inf: list[float] = []
        b_inf: list[float] = []
        for r in range(repeats):
            pair = [(tech, t_epoch, t_inf), (base_run, b_epoch, b_inf)]
            for prepared, epochs, infs in pair if r % 2 else pair[::-1]:
                e, i = _probe(prepared)
                epochs.append(e)
                infs.append(i)
        er, ir = ratio(t_epoch, b_epoch), ratio(t_inf, b_inf)
        run_id = tracker.start_run(
            f"{study_name}-{key}-cost",
            tags={"role": "cost", "study": study_name, "replicate_of": key, "repeats": repeats},
            parent_run_id=parent,
        )
        claim.set_user_attr("mlflow_run_id", run_id)
        metrics = {
            "epoch_time_ratio": er.median,
            "epoch_time_ratio_lo": er.ci_low,
            "epoch_time_ratio_hi": er.ci_high,
            "inference_ratio": ir.median,
            "inference_ratio_lo": ir.ci_low,
            "inference_ratio_hi": ir.ci_high,
            "epoch_time_s": sorted(t_epoch)[len(t_epoch) // 2],
            "baseline_epoch_time_s": sorted(b_epoch)[len(b_epoch) // 2],
            "inference_ms_per_1k": sorted(t_inf)[len(t_inf) // 2],
        }
        tracker.log_final(run_id, metrics, {"state": "completed"})
        tracker.end_run(run_id, "FINISHED")
        return er.median

    return run_slots(studies, storage, job, int(cfg.sweep.max_retry))
