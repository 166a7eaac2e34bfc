"""One training run (no sweep): prepare, train, record in MLflow, print a short summary."""

from __future__ import annotations

from omegaconf import DictConfig

from .masking import mask
from .stores import check_tracking, experiment_name, tracking_uri
from .tracking import Tracker
from .trial import prepare, run_trial

SUMMARY_KEYS = (
    "val_acc",
    "test_acc",
    "best_val_acc",
    "best_epoch",
    "epochs_trained",
    "final_gen_gap",
    "sparsity_zero",
    "sparsity_1e-3",
    "n_params",
    "epoch_time_s",
    "inference_ms_per_1k",
)


def run_single(cfg: DictConfig) -> int:
    prepared = prepare(cfg)  # all bad input surfaces here, before a run exists
    check_tracking(cfg)
    experiment = experiment_name(cfg)
    tracker = Tracker(tracking_uri(cfg), experiment, cfg.tracking.artifact_root)
    result = run_trial(cfg, tracker, prepared=prepared, tags={"role": "single"})
    print(
        f"run {result.run_id} [{prepared.technique}] on {cfg.data.name}/{cfg.model.name}: {result.status}"
        + (f" ({result.reason})" if result.reason else "")
    )
    for k in SUMMARY_KEYS:
        if k in result.metrics:
            v = result.metrics[k]
            print(f"  {k:<20} {v:.4f}" if isinstance(v, float) and not float(v).is_integer() else f"  {k:<20} {v:g}")
    print(f"  tracking: {mask(tracker.uri)}  experiment: {experiment}")
    return 0 if result.status == "completed" else 1
