"""Build and fit one trial from a Config and return its metrics. No Hydra, no Optuna decisions here.

Order matters for bad input: everything that can be wrong with the config or the data is found
in ``prepare`` before an MLflow run exists; only then is the run created and the model trained.
"""

from __future__ import annotations

import math
import os
import signal
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf
from optuna.exceptions import TrialPruned, UpdateFinishedTrialError

from . import population_size, runtime
from . import regularizers as regs_mod
from .config import flat_params, to_dict
from .config import max_epochs as config_max_epochs
from .data import Splits, data_source, load_splits
from .errors import ABANDONED, StoreUnavailable, TrialAbandoned, TrialFailed, write_failure
from .models import build_model, count_parameters, evaluate
from .seed_streams import substream
from .tracking import Tracker

if TYPE_CHECKING:
    import lightning.pytorch as pl

EPOCH_METRICS = ("train_loss", "train_penalty", "train_acc", "val_loss", "val_acc", "gen_gap")  # module.epoch_metrics
FINAL_NAMES = {"val_acc": "final_val_acc", "val_loss": "final_val_loss"}


@dataclass
class Prepared:
    cfg: DictConfig
    regularizers: list
    technique: str
    splits: Splits


@dataclass
class TrialResult:
    status: str  # completed | pruned | failed | abandoned (the sweep took the trial from this worker)
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    reason: str | None = None
    run_id: str | None = None
    model: Any = None
    epoch_seconds: list[float] = field(default_factory=list)  # wall time of each epoch's training loop alone


def prepare(cfg: DictConfig) -> Prepared:
    """Validate techniques and load the data (ConfigError on bad input); nothing is written."""
    values = to_dict(cfg.regularizer)
    active = regs_mod.build(values, cfg.optim.name)
    splits = load_splits(cfg.data)
    if cfg.model.name == "cnn":
        build_model(cfg.model, splits.input_shape, splits.n_classes)  # raises for flat data
    population_size.check_model_fits(cfg, splits.input_shape, splits.n_classes)
    return Prepared(cfg, active, regs_mod.label(active), splits)


def sparsity_metrics(model: torch.nn.Module) -> dict[str, float]:
    weights = torch.cat([w.detach().flatten() for w in regs_mod.weight_parameters(model)])
    return {
        "sparsity_zero": (weights == 0).float().mean().item(),
        "sparsity_1e-3": (weights.abs() < 1e-3).float().mean().item(),
        "weight_l1": weights.abs().sum().item(),
        "weight_l2": weights.pow(2).sum().sqrt().item(),
    }


@torch.inference_mode()
def inference_ms_per_1k(model: torch.nn.Module, x: torch.Tensor, repeats: int = 5) -> float:
    """Median wall time of an eval-mode forward pass over 1,000 samples, in milliseconds."""
    model.eval()
    reps = math.ceil(1000 / len(x))
    batch = x.repeat(reps, *([1] * (x.dim() - 1)))[:1000] if reps > 1 else x[:1000]
    sync = torch.cuda.synchronize if batch.is_cuda else (lambda: None)
    model(batch)
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        model(batch)
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def _final_metrics(module, prepared, history, es, fit_seconds, with_test) -> dict[str, float]:
    stopped = bool(es and es.stopped_epoch > 0)
    restored = None if es is None or es.best_epoch is None else es.best_epoch
    return final_metrics(module.model, prepared.splits, module.device, history, stopped, restored, fit_seconds, with_test)


def final_metrics(model, splits, device, history, stopped_early: bool, restored_epoch, fit_seconds: float, with_test: bool):
    """The metrics of a trained model (the one-model path and population members alike)."""
    s = splits
    dev = s.to(device) if s.x_train.device != device else s
    val_loss, val_acc = evaluate(model, dev.x_val, dev.y_val)
    train_loss, train_acc = evaluate(model, dev.x_train, dev.y_train)
    val_accs = [h["val_acc"] for h in history]
    best = max(range(len(val_accs)), key=val_accs.__getitem__)
    epochs = len(history)
    out = {
        "val_acc": val_acc,
        "val_loss": val_loss,
        "final_gen_gap": train_acc - val_acc,
        "best_val_acc": val_accs[best],
        "best_epoch": best + 1,
        "epochs_trained": epochs,
        "stopped_early": float(stopped_early),
        "n_params": count_parameters(model),
        "train_time_s": fit_seconds,
        "epoch_time_s": fit_seconds / max(epochs, 1),
        "inference_ms_per_1k": inference_ms_per_1k(model, dev.x_test),
    }
    if with_test:  # reported for chosen configurations, never used for selection
        out["test_loss"], out["test_acc"] = evaluate(model, dev.x_test, dev.y_test)
    if restored_epoch is not None:
        out["restored_epoch"] = restored_epoch + 1
    out.update(sparsity_metrics(model))
    return out


def _trainer(cfg: DictConfig, callbacks: list) -> pl.Trainer:
    import lightning.pytorch as pl

    return pl.Trainer(
        max_epochs=config_max_epochs(cfg),
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        deterministic=cfg.trainer.deterministic,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )


def device_label(accelerator: str) -> str:
    """Where this run trains, as a tag: ``cuda:0 (CUDA_VISIBLE_DEVICES=3)`` or ``cpu``."""
    if accelerator == "cpu" or not torch.cuda.is_available():
        return "cpu"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return "cuda:0" + (f" (CUDA_VISIBLE_DEVICES={visible})" if visible else "")


def data_order_seed(cfg: DictConfig) -> int:
    """The seed of the training data's shuffling: the run's seed, or with data.order_stream another stream of it
    (the same initial weights, another data order)."""
    if not cfg.data.order_stream:
        return int(cfg.seed)
    return substream(cfg.seed, cfg.data.order_stream)


def open_run(
    tracker: Tracker,
    cfg: DictConfig,
    prepared: Prepared,
    run_name: str | None,
    parent_run_id: str | None,
    tags: dict[str, Any] | None,
    on_run_created: Callable[[str], None] | None = None,
) -> str:
    """The trial's MLflow run: tags, params, dataset input and resolved config (before any training)."""
    tags = {"device": device_label(cfg.trainer.accelerator), **(tags or {})}
    run_id = tracker.start_run(
        run_name or prepared.technique,
        tags={"technique": prepared.technique, "state": "running", **tags},
        parent_run_id=parent_run_id,
    )
    linked = False
    try:
        if on_run_created:  # first, so the link exists even if the next calls fail
            on_run_created(run_id)
        linked = True
        tracker.log_params(run_id, flat_params(cfg))
        s = prepared.splits
        tracker.log_dataset(
            run_id,
            cfg.data.name,
            s.digest(),
            data_source(cfg.data),
            {
                "train": len(s.y_train),
                "val": len(s.y_val),
                "test": len(s.y_test),
                "train_fraction": float(cfg.data.train_fraction),
                "split_seed": int(cfg.data.split_seed),
                "classes": s.n_classes,
            },
        )
        tracker.log_text(run_id, OmegaConf.to_yaml(cfg), "config.yaml")
    except KeyboardInterrupt:  # the caller never gets the run to close, linked or not
        close_run(tracker, run_id, "killed", "KILLED", f"interrupted ({runtime.interrupted_by()})", None, 0)
        raise
    except BaseException as exc:
        if not linked:  # no link, so nobody else can ever close the run (e.g. the trial was taken over meanwhile)
            reason = ABANDONED if isinstance(exc, UpdateFinishedTrialError) else f"{type(exc).__name__} before training"
            close_run(tracker, run_id, "abandoned", "FAILED", reason, None, 0)
        raise
    return run_id


def close_run(
    tracker: Tracker,
    run_id: str,
    status: str,
    mlflow_status: str,
    reason: str | None,
    metrics: dict[str, float] | None,
    epochs: int,
    series: list | None = None,
) -> None:
    """Final metrics and state tags in one call (with ``series``, per-epoch metrics not logged yet), then the run's
    end status (MLflow agrees with Optuna)."""
    state = "failed" if status == "abandoned" else status  # the trial is FAIL in Optuna
    tags_out: dict[str, Any] = {"state": state, **({"failure_reason": reason} if reason else {})}
    if status == "pruned":
        tags_out["pruned_epoch"] = epochs
    # val_acc/val_loss are per-epoch series; the final model's go in as final_*
    tracker.log_final(run_id, {FINAL_NAMES.get(k, k): v for k, v in (metrics or {}).items()}, tags_out, step=epochs, series=series)
    tracker.end_run(run_id, mlflow_status)


def run_trial(
    cfg: DictConfig,
    tracker: Tracker | None = None,
    *,
    prepared: Prepared | None = None,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    tags: dict[str, Any] | None = None,
    callbacks: list | None = None,
    on_run_created: Callable[[str], None] | None = None,
    evaluate_test: bool = True,
    before_end: Callable[[str, torch.nn.Module, Splits], None] | None = None,
    still_owned: Callable[[], bool] | None = None,
    resume_from: str | None = None,
    lost_reason: Callable[[], str] | None = None,
) -> TrialResult:
    """Train one model; returns completed/pruned/failed/abandoned. KeyboardInterrupt ends the run KILLED and
    propagates. ``still_owned`` (sweeps) is asked before the run is closed FINISHED: a worker that lost its trial
    while stalled closes the run FAILED instead (status "abandoned", the reason from ``lost_reason``)."""
    from . import runtime
    from .callbacks import EpochLogger, History, MlflowCheckpoint
    from .module import RegularizedModule, TensorDataModule

    pl = runtime.lightning()
    prepared = prepared or prepare(cfg)
    if cfg.trainer.threads:
        torch.set_num_threads(int(cfg.trainer.threads))
    pl.seed_everything(int(cfg.seed), verbose=False)
    options = regs_mod.model_options(prepared.regularizers)
    model = build_model(cfg.model, prepared.splits.input_shape, prepared.splits.n_classes, **options)
    module = RegularizedModule(model, prepared.regularizers, cfg.optim, cfg.data.batch_size)
    dm = TensorDataModule(prepared.splits, cfg.data.batch_size, cfg.data.eval_batch_size, data_order_seed(cfg))

    run_id: str | None = None
    epoch_logger: EpochLogger | None = None
    history = History()
    all_callbacks: list = [history]

    def finish(status: str, mlflow_status: str, reason: str | None = None, metrics=None) -> TrialResult:
        if tracker is not None and run_id is not None and status == "completed" and before_end is not None:
            before_end(run_id, module.model, prepared.splits)  # e.g. log the model into this run
        if tracker is not None and run_id is not None:
            close_run(tracker, run_id, status, mlflow_status, reason, metrics, len(history.epochs))
        return TrialResult(status, metrics or {}, history.epochs, reason, run_id, epoch_seconds=history.seconds)

    if tracker is not None:
        run_id = open_run(tracker, cfg, prepared, run_name, parent_run_id, tags, on_run_created)  # closes it on Ctrl-C
    # from here on a Ctrl-C anywhere closes the run KILLED and propagates; building the Trainer (~0.1 s) was outside
    # this block, and a Ctrl-C there (just as the next trial starts: the resume test's moment) left the run RUNNING
    try:
        if tracker is not None and run_id is not None:
            epoch_logger = EpochLogger(tracker, run_id)
            all_callbacks.append(epoch_logger)
        es_callbacks = [cb for r in prepared.regularizers for cb in r.callbacks()]
        all_callbacks += es_callbacks + list(callbacks or [])
        if tracker is not None and run_id is not None and cfg.trainer.checkpoint_every:  # last: after every state update
            all_callbacks.append(MlflowCheckpoint(tracker, run_id, int(cfg.trainer.checkpoint_every), epoch_logger))
        es = es_callbacks[0] if es_callbacks else None
        trainer = _trainer(cfg, all_callbacks)
        return _fit_and_measure(trainer, module, dm, prepared, history, es, evaluate_test, finish, still_owned, resume_from, lost_reason)
    except KeyboardInterrupt:
        finish("killed", "KILLED", f"interrupted ({runtime.interrupted_by()})")
        raise


def _fit_and_measure(
    trainer, module, dm, prepared, history, es, evaluate_test, finish, still_owned=None, resume_from=None, lost_reason=None
) -> TrialResult:
    lost = lost_reason or (lambda: ABANDONED)
    t0 = time.perf_counter()
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=resume_from)  # resume_from: a retried trial's last checkpoint
    except SystemExit:  # Lightning turns Ctrl-C into sys.exit(1) after its own cleanup
        if trainer.interrupted:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt from None
        raise
    except TrialAbandoned as exc:
        return finish("abandoned", "FAILED", str(exc), {"epochs_trained": len(history.epochs)})
    except UpdateFinishedTrialError:  # a pruning report to a trial that was taken from this worker
        return finish("abandoned", "FAILED", lost(), {"epochs_trained": len(history.epochs)})
    except TrialPruned as exc:
        if still_owned is not None and not still_owned():
            return finish("abandoned", "FAILED", lost(), {"epochs_trained": len(history.epochs)})
        return finish("pruned", "FINISHED", str(exc), {"epochs_trained": len(history.epochs)})
    except TrialFailed as exc:
        return finish("failed", "FAILED", str(exc), {"epochs_trained": len(history.epochs)})
    except StoreUnavailable:
        raise
    except Exception as exc:
        reason = write_failure(exc)
        if reason is not None:  # e.g. the pruner's report to a read-only Optuna storage: stop, do not blame the trial
            raise StoreUnavailable(
                f"a store cannot be written ({reason}); fix it and re-run the same command: the study resumes where it stopped"
            ) from None
        return finish("failed", "FAILED", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    fit_seconds = time.perf_counter() - t0
    if not history.epochs:
        return finish("failed", "FAILED", "no epoch completed")
    metrics = _final_metrics(module, prepared, history.epochs, es, fit_seconds, evaluate_test)
    if still_owned is not None and not still_owned():
        return finish("abandoned", "FAILED", lost(), metrics)
    result = finish("completed", "FINISHED", None, metrics)
    result.model = module.model  # for callers that log or inspect the model
    return result
